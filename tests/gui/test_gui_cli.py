"""``brainpaste gui``: found through the entry point, and the real program run on the
embedded lab — connect, electroporate, record, grab the window, quit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from instrument.cli import build_parser


def test_the_gui_command_is_registered():
    parser = build_parser()
    args = parser.parse_args(["gui", "--sim", "--redraw-hz", "20"])
    assert args.sim and args.redraw_hz == 20 and args.func.__module__ == "gui.cli"


def test_bad_window_size_is_refused(capsys):
    from instrument.cli import main

    assert main(["gui", "--size", "big"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


@pytest.mark.slow
def test_gui_sim_records_and_grabs_a_screenshot(tmp_path):
    from PySide6 import QtGui

    shot = tmp_path / "shot.png"
    out = tmp_path / "session"
    argv = ["gui", "--sim", "--electroporate", "--record", "--out", str(out)]
    argv += ["--screenshot", str(shot), "--quit-after", "8", "--size", "1200x800"]
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "instrument.cli", *argv],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = QtGui.QImage(str(shot))
    assert image.width() >= 1200 and image.height() >= 800  # (at least its minimum size)
    # live data on screen: many distinct colours, not an empty window
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }
    assert len(colours) > 200
    assert (out / "session.h5").exists()  # the recording it made (stopped on quit)
