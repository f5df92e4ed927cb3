"""The imprint as the GUI sees it: progress read from the journal (live or finished), the
view's maps and histogram, and ``brainpaste imprint`` run as a child process that is paused,
continued, aborted and resumed."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gui.imprint_view import ImprintView
from gui.main_window import MainWindow
from instrument.child_command import ChildCommandError
from instrument.imprint.journal import write_flags
from instrument.imprint.run import run_imprint
from instrument.imprint_control import ImprintProcess, lab_toml
from instrument.imprint_progress import read_progress
from tests.instrument.imprint.helpers import make_session, rig_lab, synthetic_map

REPO = Path(__file__).resolve().parents[2]


def test_progress_of_a_finished_imprint_and_its_view(app, qtbot, tmp_path):
    session = make_session(tmp_path / "s")
    assert read_progress(session) is None
    with rig_lab(rows=16, cols=16, stuck_rate=0.02) as (config, _lab):
        result = run_imprint(config, session, "rram", cmap=synthetic_map(8, 20), progress=False)
    p = read_progress(session)
    s = result.summary
    assert p is not None and p.final and p.pending == 0 and p.in_flight == 0
    assert p.cells == s["cells"] and p.skipped == s["skipped"] and p.verified == s["verified"]
    assert p.error_s.size == s["synapse_cells"]
    assert abs(p.within_tolerance - s["synapse_within"]) <= 1
    assert p.technology == "rram" and p.tolerance_s == pytest.approx(s["tolerance_s"])
    assert p.report is not None and p.report["summary"]["cells"] == s["cells"]
    assert p.target_s.shape == p.read_s.shape == (1, 16, 16)
    np.testing.assert_allclose(p.read_s[0], result.final_read_s[0])
    view = ImprintView()
    qtbot.addWidget(view)
    view.show_progress(p)
    assert view.progress.value() == p.cells and view.progress.maximum() == p.cells
    assert f"{p.verified} verified" in view.state.text() and "final yield" in view.state.text()
    assert np.isfinite(view.read_img.image).all()
    _, counts = view.hist_curve.getData()
    assert counts.sum() == p.error_s.size
    view.show_progress(None)
    assert "no imprint" in view.state.text()

    # the window opens the finished session and shows its imprint
    window = MainWindow(None)
    qtbot.addWidget(window)
    window.tabs.setCurrentWidget(window.imprint_view)
    window.open_session(session.parent)
    qtbot.waitUntil(lambda: window.imprint_view.shown is not None, timeout=30_000)
    assert window.imprint_view.progress.value() == p.cells
    assert not window.imprint_view.start.isEnabled()  # no lab: nothing to imprint with
    window.shutdown()


def test_lab_toml_carries_the_configuration_as_it_is(sim_config, tmp_path):
    from instrument.config import CrossbarConfig, load

    config = dataclasses.replace(
        sim_config,
        crossbar=CrossbarConfig(rows=16, cols=8, technology="pcm"),
        sections={**sim_config.sections, "imprint": {"train_cells": 7, "rram": {"step_v": 0.02}}},
    )
    path = tmp_path / "child.toml"
    path.write_text(lab_toml(config))
    again = load(path)  # as the child loads it: over the defaults
    assert again.instruments == config.instruments
    assert again.crossbar == config.crossbar and again.technology == config.technology
    assert again.sections["imprint"]["train_cells"] == 7
    assert again.sections["imprint"]["rram"]["step_v"] == 0.02
    assert again.lab == config.lab


FIRST_RUN = """
import sys
from pathlib import Path
from instrument.config import load
from instrument.imprint.run import run_imprint
from tests.instrument.imprint.helpers import synthetic_map
run_imprint(load(sys.argv[1]), Path(sys.argv[2]), "rram", cmap=synthetic_map(8, 16),
            progress=False)
"""


def _settled(session: Path) -> int:
    p = read_progress(session)
    return -1 if p is None else p.settled


@pytest.mark.slow
def test_pause_continue_abort_and_resume_a_child_imprint(tmp_path):
    session = make_session(tmp_path / "s")
    with rig_lab(rows=16, cols=16, stuck_rate=0.02, pulse_time_s=2e-3, reading_time_s=2e-3) as (
        config,
        _lab,
    ):
        imprint = {**config.sections.get("imprint", {}), "train_cells": 16}
        config = dataclasses.replace(config, sections={**config.sections, "imprint": imprint})
        toml = tmp_path / "lab.toml"
        toml.write_text(lab_toml(config))
        # a first run, started here and stopped once it programs (the journal is live)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        first = subprocess.Popen(
            [sys.executable, "-c", FIRST_RUN, str(toml), str(session)], env=env
        )
        deadline = time.monotonic() + 60
        while not write_flags(session) & 4 and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended before programming"
            time.sleep(0.02)
        time.sleep(0.3)
        first.kill()
        first.wait()
        before = read_progress(session)
        assert before is not None and before.pending > 0, "the first run finished too soon"

        # resume it as the GUI does; pause: nothing moves; continue; abort; resume again
        proc = ImprintProcess(session, config, "rram", resume=True)
        deadline = time.monotonic() + 60
        while _settled(session) <= before.settled and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.pause()
        time.sleep(0.5)  # a train already sent ends on the instrument
        frozen = _settled(session)
        time.sleep(1.5)
        assert _settled(session) == frozen and proc.running, proc.output()
        proc.proceed()
        deadline = time.monotonic() + 60
        while _settled(session) == frozen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _settled(session) > frozen, f"nothing settled after continuing:\n{proc.output()}"
        code = proc.abort()
        assert code != 0 and proc.aborted and not proc.running
        with pytest.raises(ChildCommandError):
            proc.pause()
        middle = read_progress(session)
        assert middle is not None and not middle.final
        assert "imprint" in proc.output() and not proc.lab_file.exists()

        last = ImprintProcess(session, config, "rram", resume=True)
        assert last.wait(180) == 0, last.output()
    done = read_progress(session)
    assert done is not None and done.final and done.pending == 0 and done.done_fraction == 1.0
    summary = done.report["summary"]  # the resumed run's own final report
    assert done.error_s.size == summary["synapse_cells"]
    assert abs(done.within_tolerance - summary["synapse_within"]) <= 1
