"""Run every benchmark in bench/ and print each one's ratio table, in one go.

    .venv/bin/python bench/run_all.py [--full] [--only NAME ...]

By default each benchmark runs with ``--quick`` (minutes in all); ``--full`` runs
the long versions (the 10-minute soaks, the full extraction workload).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> list[Path]:
    """Every bench/*.py except this runner and private helpers."""
    return sorted(
        p for p in HERE.glob("*.py") if p.stem != "run_all" and not p.stem.startswith("_")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="long runs instead of --quick")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    args = parser.parse_args()
    failures = 0
    for path in benchmarks():
        if args.only and path.stem not in args.only:
            continue
        cmd = [sys.executable, str(path)] + ([] if args.full else ["--quick"])
        print(f"\n{'=' * 78}\n{path.stem}: {' '.join(cmd[1:])}\n{'=' * 78}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=HERE.parent)
        print(f"[{path.stem}: exit {proc.returncode}, {time.monotonic() - start:.0f} s wall]")
        failures += proc.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
