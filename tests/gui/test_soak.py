"""A short live soak of the whole window: the same loop as bench/gui_fps.py's 10-minute
soak (recording the emulated board in rotating sessions at 30 Hz), for ~25 s, in its own
process so a crash fails the test instead of killing the test run. The emulated lab runs
in a process of its own (``brainpaste sim``), as a bench instrument would, so the memory
measured is the window's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gui_fps.py"


@pytest.mark.slow
@pytest.mark.soak
def test_live_window_soak_stays_up_with_bounded_memory():
    argv = ["--soak-only", "--soak", "25", "--segment", "12", "--soak-lab", "external"]
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(BENCH), *argv],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    match = re.search(
        r"soak_result passed=(\d) growth_mb=([-\d.]+) frames_per_s=([\d.]+) errors=(\d+)",
        proc.stdout,
    )
    assert match, proc.stdout[-2000:]
    passed, growth, fps, errors = match.groups()
    assert passed == "1" and int(errors) == 0
    assert float(fps) > 0.5  # it kept drawing
    assert float(growth) < 150
