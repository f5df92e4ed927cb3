"""Soak the pinned Python/PySide6 pair in a pyqtgraph redraw loop, side by side with others.

Runs tests/gui/redraw_loop.py (a 64 × 64 image + 128 curves redrawn flat out) for
``--duration`` seconds under each interpreter and prints survival, frame rate and
memory growth in one table. The default 600 s is the 10-minute soak.

    .venv/bin/python bench/qt_pair_soak.py [--duration 600] [--python /other/python ...] [--quick]

Seen on this machine (2026-11-29): Python 3.11.7 + PySide6 6.12.0 died after ~1 s with
``Fatal Python error: none_dealloc`` (3 of 3 runs); Python 3.12.1 + PySide6 6.12.0 ran
clean for 120 s.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

LOOP = Path(__file__).resolve().parents[1] / "tests" / "gui" / "redraw_loop.py"


def describe(python: str) -> str:
    code = (
        "import sys, importlib.metadata as m; "
        "print(f'Python {sys.version.split()[0]} + PySide6 {m.version(\"PySide6-Essentials\")}')"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or f"{python} (PySide6 not importable)"


def soak(python: str, duration_s: float) -> dict[str, object]:
    start = time.monotonic()
    proc = subprocess.run(
        [python, "-X", "faulthandler", str(LOOP), str(duration_s)],
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    )
    alive = time.monotonic() - start
    match = re.search(
        r"frames (\d+) fps ([\d.]+) rss_mb_start ([\d.]+) rss_mb_end ([\d.]+)", proc.stdout
    )
    fatal = re.search(r"Fatal Python error: [^\n]*", proc.stderr)
    return {
        "pair": describe(python),
        "rc": proc.returncode,
        "alive_s": alive,
        "fps": float(match.group(2)) if match else 0.0,
        "rss_growth_mb": float(match.group(4)) - float(match.group(3)) if match else float("nan"),
        "fatal": fatal.group(0) if fatal else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per interpreter")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        help="another interpreter to compare (with PySide6 installed)",
    )
    parser.add_argument("--quick", action="store_true", help="30 s instead of 600 s")
    args = parser.parse_args()
    duration = 30.0 if args.quick else args.duration
    rows = [soak(py, duration) for py in [sys.executable, *args.python]]
    base = rows[0]["alive_s"]
    print(f"\nredraw-loop soak, {duration:g} s asked per pair")
    print(
        f"{'pair':<38} {'exit':>5} {'alive s':>8} {'alive/pinned':>13} {'fps':>7} "
        f"{'RSS growth MB':>14}  fatal"
    )
    for r in rows:
        print(
            f"{r['pair']:<38} {r['rc']:>5} {r['alive_s']:>8.1f} "
            f"{r['alive_s'] / base:>13.3f} {r['fps']:>7.1f} {r['rss_growth_mb']:>14.1f}  "
            f"{r['fatal']}"
        )


if __name__ == "__main__":
    main()
