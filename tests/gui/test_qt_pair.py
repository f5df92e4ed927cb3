"""The pinned Python/PySide6 pair stays up in a pyqtgraph redraw loop.

PySide6 6.12 on Python 3.11 died in this loop within ~1 s (``none_dealloc``); the
pinned pair must run it for 20 s with no crash and bounded memory. The 10-minute
version is ``bench/qt_pair_soak.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

LOOP = Path(__file__).with_name("redraw_loop.py")


def test_pinned_pair():
    assert sys.version_info[:2] == (3, 12)
    assert version("PySide6-Essentials") == "6.12.0"


@pytest.mark.soak
@pytest.mark.slow
def test_redraw_loop_stays_up_with_bounded_memory():
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(LOOP), "20"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(
        r"frames (\d+) fps ([\d.]+) rss_mb_start ([\d.]+) rss_mb_end ([\d.]+)", proc.stdout
    )
    assert match, proc.stdout
    frames, _fps, rss_start, rss_end = map(float, match.groups())
    assert frames > 50
    assert rss_end - rss_start < 50, f"memory grew {rss_end - rss_start:.1f} MB in 20 s"
