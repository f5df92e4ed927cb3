"""``brainpaste record`` from the embedded lab and from a lab file, and session folders."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from hil_sim.lab import EmulatedLab, LabSettings
from instrument.cli import main
from instrument.recording import open_recording
from instrument.session_files import (
    SessionPathError,
    find_recording,
    new_session_dir,
    session_file_for_output,
)


def test_record_sim_culture(tmp_path, capsys):
    out = tmp_path / "s1"
    code = main(["record", "--sim", "--duration", "0.3", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "electroporated 4096 electrodes" in captured.err
    assert "stop: duration reached" in captured.out
    with open_recording(out) as rec:
        assert rec.n_samples == 3000 and rec.n_channels == 4096
        assert rec.attrs["complete"] and rec.attrs["frames_lost"] == 0
        settings = json.loads(rec.attrs["board_settings"])
        assert settings["electroporation_before_recording"]["channels_with_access"] > 1000
        assert rec.truth is not None and len(rec.truth.synapse_pre) > 1000
        codes = rec.traces[:, :64]
        assert codes.std() > 5  # the culture is alive
        assert not np.any(codes == -32768)


def test_record_from_a_lab_file(tmp_path, capsys):
    with EmulatedLab(LabSettings(seed=3, options={"cnea": {"rate": "max"}})) as lab:
        lab_toml = tmp_path / "lab.toml"
        lab_toml.write_text(lab.resources_toml())
        out = tmp_path / "s2"
        argv = ["record", "--config", str(lab_toml), "--duration", "0.2", "--out", str(out)]
        code = main([*argv, "--codec", "blosc-lz4-shuffle", "--no-progress"])
        assert code == 0, capsys.readouterr().err
    with open_recording(out / "session.h5") as rec:
        assert rec.n_samples == 2000 and rec.attrs["codec"] == "blosc-lz4-shuffle"
        settings = json.loads(rec.attrs["board_settings"])
        assert "electroporation_before_recording" not in settings


def test_record_refuses_an_existing_session(tmp_path, capsys):
    (tmp_path / "session.h5").write_bytes(b"old")
    assert main(["record", "--sim", "--duration", "1", "--out", str(tmp_path)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert (tmp_path / "session.h5").read_bytes() == b"old"


def test_record_argument_errors(tmp_path, capsys):
    assert main(["record", "--sim", "--duration", "-1"]) == 2
    lab_toml = tmp_path / "lab.toml"
    lab_toml.write_text(
        '[instruments.smu]\ndriver = "keithley2450"\nresource = "TCPIP::1::2::SOCKET"\n'
    )
    out = str(tmp_path / "o")
    assert main(["record", "--config", str(lab_toml), "--instrument", "smu", "--out", out]) == 2
    assert "not cnea_board" in capsys.readouterr().err
    assert main(["record", "--config", str(lab_toml), "--out", out]) == 2
    assert "no [instruments.cnea]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["record", "--duration", "1"])  # neither --sim nor --config


def test_record_unreachable_board_is_a_typed_error(tmp_path, capsys):
    lab_toml = tmp_path / "lab.toml"
    lab_toml.write_text(
        '[instruments.cnea]\ndriver = "cnea_board"\n'
        'resource = "TCPIP::127.0.0.1::1::SOCKET"\ndata_port = 2\ntimeout_s = 1.0\n'
    )
    code = main(["record", "--config", str(lab_toml), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "ConnectionLost" in capsys.readouterr().err
    assert not (tmp_path / "o" / "session.h5").exists()


def test_session_folders(tmp_path):
    now = dt.datetime(2026, 3, 4, 5, 6, 7)
    first = new_session_dir(tmp_path, "culture1", now=now)
    assert first.name == "20260304-050607-culture1"
    first.mkdir()
    assert new_session_dir(tmp_path, "culture1", now=now).name == "20260304-050607-culture1-2"
    with pytest.raises(SessionPathError):
        new_session_dir(tmp_path, "bad/label")
    assert session_file_for_output(first) == first / "session.h5"
    with pytest.raises(SessionPathError):
        session_file_for_output(tmp_path / "x.h5")
    (first / "session.h5").write_bytes(b"")
    assert find_recording(first) == first / "session.h5"
    with pytest.raises(SessionPathError):
        find_recording(tmp_path / "nope")
    other = tmp_path / "nwbonly"
    other.mkdir()
    (other / "a.nwb").write_bytes(b"")
    assert find_recording(other) == other / "a.nwb"


@pytest.mark.slow
def test_record_from_brainpaste_sim_in_another_process(tmp_path, capsys):
    """The bench setup: `brainpaste sim > lab.toml` in one process, record in another;
    the ground truth crosses over the wire (:SIM:TRUT?)."""
    lab_toml = tmp_path / "lab.toml"
    with open(lab_toml, "w") as out:
        sim = subprocess.Popen(
            [sys.executable, "-m", "instrument.cli", "sim", "--seed", "5", "--duration", "120"],
            stdout=out,
            stderr=subprocess.PIPE,
        )
    try:
        deadline = time.monotonic() + 60
        while "data_port" not in lab_toml.read_text():
            assert sim.poll() is None, sim.stderr.read().decode()
            assert time.monotonic() < deadline, "brainpaste sim printed no cnea instrument"
            time.sleep(0.1)
        session = tmp_path / "s"
        argv = ["record", "--config", str(lab_toml), "--duration", "0.2", "--out", str(session)]
        assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    with open_recording(session) as rec:
        assert rec.n_samples == 2000
        assert rec.truth is not None and rec.truth.attrs["culture_seed"] == 5


def test_acquisition_table_of_the_lab_file(tmp_path, capsys):
    from instrument.acquisition import AcquisitionSettings
    from instrument.config import ConfigError, load, parse_section

    defaults = parse_section(AcquisitionSettings, load(), "acquisition")
    assert defaults == AcquisitionSettings()  # default_lab.toml documents the real defaults
    lab_toml = tmp_path / "lab.toml"
    lab_toml.write_text("[acquisition]\nring_s = 0.5\ncodec = 'gzip'\n")
    assert parse_section(AcquisitionSettings, load(lab_toml), "acquisition").ring_s == 0.5
    lab_toml.write_text("[acquisition]\nring = 0.5\n")
    with pytest.raises(ConfigError, match=r"acquisition\.ring"):
        parse_section(AcquisitionSettings, load(lab_toml), "acquisition")
    lab_toml.write_text(
        "[acquisition]\ncodec = 'zip'\n[instruments.cnea]\ndriver = 'cnea_board'\n"
        "resource = 'TCPIP::127.0.0.1::1::SOCKET'\n"
    )
    assert main(["record", "--config", str(lab_toml), "--out", str(tmp_path / "o")]) == 2
    assert "unknown codec" in capsys.readouterr().err
