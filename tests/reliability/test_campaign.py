"""Reliability campaign, session level: ``brainpaste run`` against an emulated lab in this
process (as a bench would be: the instruments outlive the program), with the program
killed (SIGKILL) mid-recording and mid-imprint, an instrument timing out, and a
configuration out of range. Each test says what the user sees and checks that nothing
already taken is lost. The table in docs/reliability.md points at these tests and at the
component-level ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from instrument.embedded_lab import embedded_lab
from instrument.recording import open_recording

RUN = [sys.executable, "-m", "instrument.cli", "run", "--no-progress", "--json"]
SMALL = "\n[crossbar]\nrows = 8\ncols = 8\n"


def _lab_toml(lab, folder: Path, extra: str = "") -> Path:
    path = folder / "lab.toml"
    path.write_text(lab.resources_toml() + extra)
    return path


def _state(out: Path) -> dict:
    try:
        return json.loads((out / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _wait_for(predicate, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.returncode}\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("condition not reached")
        time.sleep(0.2)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_during_recording_keeps_the_partial_file_and_the_rerun_records(tmp_path):
    with embedded_lab(options={"rig": {"rows": 8, "cols": 8}}) as (_config, lab):
        lab_toml = _lab_toml(lab, tmp_path, SMALL)
        out = tmp_path / "session"
        cmd = [*RUN, "--config", str(lab_toml), "--out", str(out), "--until", "record"]
        proc = subprocess.Popen(
            [*cmd, "--duration", "60"],
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait_for(
            lambda: (
                _state(out).get("stages", {}).get("record", {}).get("status") == "running"
                and (out / "session.h5").exists()
            ),
            300,
            proc,
        )
        time.sleep(3.0)  # a few seconds of data on disk
        _kill(proc)
        assert lab.instruments["cnea"].model is not None
        rerun = subprocess.run(
            [*cmd, "--duration", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        figures = json.loads(rerun.stdout)["stages"]["record"]["figures"]
        kept = Path(figures["interrupted_recording_kept"])
        assert kept.name == "session.interrupted-1.h5"
        with open_recording(kept) as partial:  # the killed run's data: readable, not lost
            assert partial.n_samples > partial.sample_rate_hz  # > 1 s of it
            assert not bool(partial.attrs.get("complete", False))
        with h5py.File(out / "session.h5", "r") as f:
            assert bool(f["recording"].attrs["complete"])
        assert figures["frames_lost"] == 0


@pytest.mark.slow
def test_kill_during_imprint_resumes_the_journal(tmp_path):
    with embedded_lab(options={"cnea": {"rate": "max"}}) as (_config, lab):
        lab_toml = _lab_toml(lab, tmp_path)
        out = tmp_path / "session"
        cmd = [*RUN, "--config", str(lab_toml), "--out", str(out)]
        first = subprocess.run(
            [*cmd, "--duration", "8", "--until", "extract"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert first.returncode == 0, first.stderr[-3000:]
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        journal_started = lambda: _journal_rows(out / "session.h5", "verified") > 50  # noqa: E731
        _wait_for(journal_started, 600, proc)
        verified_at_kill = _verified_cells(out / "session.h5")
        _kill(proc)
        smu = lab.instruments["smu"].servers[0].device
        rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        stages = json.loads(rerun.stdout)["stages"]
        assert stages["imprint"]["figures"]["resumed"] is True
        assert stages["imprint"]["figures"]["yield_programmable"] > 0.99
        assert stages["record"]["attempts"] == 1
        assert verified_at_kill <= _verified_cells(out / "session.h5")
        assert not smu.output  # left off


def _journal_rows(path: Path, state: str) -> int:
    try:
        with h5py.File(path, "r", swmr=True, locking=False) as f:
            if "imprint" not in f or "cells" not in f["imprint"]:
                return 0
            cells = f["imprint/cells"][()]
    except (OSError, KeyError):
        return 0
    from instrument.imprint.journal import VERIFIED

    return int((cells["state"] == VERIFIED).sum()) if state == "verified" else 0


def _verified_cells(path: Path) -> set[tuple[int, int, int]]:
    from instrument.imprint.journal import VERIFIED

    with h5py.File(path, "r", swmr=True, locking=False) as f:
        cells = f["imprint/cells"][()]
    keep = cells["state"] == VERIFIED
    return set(
        zip(
            cells["tile"][keep].tolist(),
            cells["row"][keep].tolist(),
            cells["col"][keep].tolist(),
            strict=True,
        )
    )


def test_instrument_timeout_pauses_in_bounded_time(tmp_path):
    with embedded_lab(options={"rig": {"rows": 8, "cols": 8}}) as (_config, lab):
        lab_toml = _lab_toml(lab, tmp_path, SMALL)
        lab.instruments["smu"].servers[0].faults.stop_answering()
        out = tmp_path / "session"
        start = time.monotonic()
        proc = subprocess.run(
            [*RUN, "--config", str(lab_toml), "--out", str(out), "--until", "check"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 3  # paused
        assert time.monotonic() - start < 120
        assert "paused" in proc.stderr and "rerun with --out" in proc.stderr
        check = json.loads(proc.stdout)["stages"]["check"]
        assert check["status"] == "paused" and "InstrumentTimeout" in check["error"]
        lab.instruments["smu"].servers[0].faults.clear()
        again = subprocess.run(
            [*RUN, "--config", str(lab_toml), "--out", str(out), "--until", "check"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr[-2000:]


def test_out_of_range_configuration_is_refused_before_anything_starts(tmp_path):
    lab_toml = tmp_path / "lab.toml"
    lab_toml.write_text(
        "[technology.rram]\nmax_voltage_v = 3.0\ncompliance_a = 5\nread_voltage_v = 4.0\n"
    )
    out = tmp_path / "session"
    proc = subprocess.run(
        [*RUN, "--sim", "--config", str(lab_toml), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{lab_toml}:4: technology.rram.read_voltage_v" in proc.stderr
    assert not (out / "session.h5").exists()
