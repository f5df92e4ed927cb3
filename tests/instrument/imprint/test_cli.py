"""``brainpaste imprint`` on the command line: refusals come before anything starts."""

from __future__ import annotations

from instrument.cli import main
from tests.instrument.imprint.helpers import make_session


def test_unsafe_settings_are_refused_before_any_lab_starts(tmp_path, capsys):
    session = make_session(tmp_path / "s")
    lab = tmp_path / "lab.toml"
    lab.write_text("[imprint.rram]\nset_max_v = 3.5\n")
    assert main(["imprint", str(session), "--config", str(lab), "--technology", "rram"]) == 2
    assert "imprint.rram.set_max_v" in capsys.readouterr().err


def test_resume_without_a_journal_and_sim_resume_are_refused(tmp_path, capsys):
    session = make_session(tmp_path / "s")
    lab = tmp_path / "lab.toml"
    lab.write_text("")
    assert main(["imprint", str(tmp_path / "s"), "--config", str(lab), "--resume"]) == 2
    assert "no complete imprint to resume" in capsys.readouterr().err
    assert main(["imprint", str(session), "--sim", "--resume"]) == 2
    assert "--resume needs the rigs" in capsys.readouterr().err
    assert main(["imprint", str(tmp_path / "nowhere")]) == 2


def test_sim_takes_the_lab_file_settings_and_needs_a_map(tmp_path, capsys):
    session = make_session(tmp_path / "s")
    lab = tmp_path / "lab.toml"
    lab.write_text("[crossbar]\nrows = 32\ncols = 32\n")
    assert main(["imprint", str(session), "--sim", "--config", str(lab)]) == 2
    assert "brainpaste extract" in capsys.readouterr().err
