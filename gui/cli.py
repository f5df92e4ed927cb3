"""``brainpaste gui``: the live operator window, on the embedded emulated lab (``--sim``) or
the lab a configuration file names; ``--session DIR`` opens a recorded session.

Registered through the ``brainpaste.commands`` entry-point group (instrument never imports
gui). Scripted runs (screenshots, demos) can connect, electroporate, record, grab the
window to a PNG and quit, all through the same window actions an operator uses.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gui", help="the live operator window (PySide6 + pyqtgraph)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--sim", action="store_true", help="run on the embedded emulated lab")
    source.add_argument("--config", metavar="LAB.TOML", help="the lab this file configures")
    p.add_argument("--session", metavar="DIR", help="open this recorded session")
    p.add_argument("--seed", type=int, default=1, help="with --sim: seed of the emulated lab")
    p.add_argument(
        "--rate", default="1", help="with --sim: emulation speed, multiple of real time (1)"
    )
    p.add_argument("--no-connect", action="store_true", help="do not connect at start")
    p.add_argument(
        "--electroporate",
        action="store_true",
        help="once connected, electroporate every electrode (2.5 V, 1 ms), no question asked",
    )
    p.add_argument("--record", action="store_true", help="start recording once connected")
    p.add_argument("--out", metavar="DIR", help="with --record: the session folder")
    p.add_argument("--redraw-hz", type=float, default=30.0, help="redraws per second (0: flat out)")
    p.add_argument("--screenshot", metavar="PNG", help="grab the window to this file, then quit")
    p.add_argument(
        "--quit-after", type=float, metavar="S", help="quit (after the screenshot) at S seconds"
    )
    p.add_argument("--size", default="1600x1000", help="window size, WIDTHxHEIGHT")
    p.add_argument(
        "--tab",
        choices=("live", "channels", "connectivity", "imprint"),
        default="live",
        help="the view shown first",
    )
    p.set_defaults(func=run)


@contextlib.contextmanager
def _lab_config(args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    from instrument.config import load

    if args.sim:
        from instrument.embedded_lab import embedded_lab

        options = {"cnea": {"rate": args.rate}}
        with embedded_lab(seed=args.seed, options=options) as (config, _lab):
            yield config, f"embedded emulated lab (seed {args.seed}, 127.0.0.1)"
        return
    config = load(args.config) if args.config else load()
    yield config, args.config or "built-in defaults (no instruments: open a session)"


def run(args: argparse.Namespace) -> int:
    from drivers.errors import DriverError
    from instrument.config import ConfigError

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size must be WIDTHxHEIGHT, got {args.size!r}", file=sys.stderr)
        return 2
    try:
        with _lab_config(args) as (config, source):
            return _run_window(args, config, source, (width, height))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DriverError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run_window(args: argparse.Namespace, config: Any, source: str, size: tuple[int, int]) -> int:
    from PySide6 import QtCore

    from gui.app import get_app
    from gui.main_window import MainWindow
    from instrument.live import LiveLab

    app = get_app()
    lab = LiveLab(config, source=source)
    window = MainWindow(lab, redraw_hz=args.redraw_hz)
    window.resize(*size)
    window.show()
    tabs = {
        "live": 0,
        "channels": window.tabs.indexOf(window.paged),
        "connectivity": window.tabs.indexOf(window.connectivity),
        "imprint": window.tabs.indexOf(window.imprint_view),
    }
    window.tabs.setCurrentIndex(tabs[args.tab])
    if args.session:
        window.open_session(args.session)
    script = _Script(window, args)
    if config.instruments and not args.no_connect:
        window.connect_instruments([])
    poll = QtCore.QTimer(window, interval=100)
    poll.timeout.connect(script.step)
    poll.start()
    try:
        app.exec()
    finally:
        window.shutdown()
    return script.status


class _Script:
    """The scripted steps of a run (electroporate, record, screenshot, quit), each taken
    when the window is ready for it."""

    def __init__(self, window: Any, args: argparse.Namespace) -> None:
        self.window = window
        self.args = args
        self.t0 = time.monotonic()
        self.electroporated = not args.electroporate
        self.recording = not args.record
        self.shot = not args.screenshot
        self.quit_at = args.quit_after
        if args.screenshot and self.quit_at is None:
            self.quit_at = 10.0
        self.status = 0

    def step(self) -> None:
        w, lab = self.window, self.window.lab
        elapsed = time.monotonic() - self.t0
        ready = lab is not None and lab.has_board and not w.background.busy
        if not self.electroporated and ready:
            import numpy as np

            self.electroporated = True
            w.confirm = lambda title, text: True  # asked for on the command line
            w.electroporate(np.arange(w.array_map.n_channels), 2.5, 1e-3)
            return
        if not self.recording and ready and self.electroporated:
            self.recording = True
            w.start_recording(self.args.out or "", "", 0.0)
            return
        quit_at = self.quit_at
        if not self.shot and quit_at is not None and elapsed >= quit_at:
            self.shot = True
            path = Path(self.args.screenshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not w.grab().save(str(path)):
                log.error("could not save the screenshot to %s", path)
                self.status = 1
            else:
                print(f"screenshot: {path}", file=sys.stderr)
        if quit_at is not None and elapsed >= quit_at and self.shot:
            w.close()
