"""``brainpaste imprint``: program a session's connectivity map onto the crossbar rig(s).

``brainpaste imprint SESSION --technology rram|pcm|mram|flash [--resume] [--physical]``
reads the map extraction stored in the session, maps it onto tiles, characterizes and
places, write-verifies every cell (progress bar), verifies the array and writes a report
with plots next to the session file. ``--resume`` continues an interrupted run from the
session's journal; ``--physical`` imprints by driving the recorded spikes instead
(docs/imprint.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from instrument.config import ConfigError, LabConfig, load
from instrument.imprint.connectivity import ConnectivityError
from instrument.imprint.journal import JournalError
from instrument.imprint.settings import TECHNOLOGIES
from instrument.session_files import SessionPathError, find_recording


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "imprint", help="program a session's connectivity map onto the memory crossbar"
    )
    p.add_argument("session", metavar="SESSION", help="session folder or session.h5")
    p.add_argument("--technology", choices=TECHNOLOGIES, help="default: the lab's [crossbar]")
    p.add_argument(
        "--config", metavar="LAB.TOML", help="lab file: its rigs, [crossbar], [imprint] settings"
    )
    p.add_argument(
        "--sim",
        action="store_true",
        help="rigs of the embedded emulated lab, one per tile (with --config: its settings)",
    )
    p.add_argument("--resume", action="store_true", help="continue the session's journal")
    p.add_argument("--restart", action="store_true", help="discard the journal, start over")
    p.add_argument(
        "--physical",
        action="store_true",
        help="physical imprinting: drive rows/columns with the recorded spikes",
    )
    p.add_argument("--map", metavar="FILE.csv", help="a map exported by extraction (CSV)")
    p.add_argument("--report", metavar="DIR", help="report folder (default SESSION/imprint)")
    p.add_argument("--seed", type=int, default=1, help="with --sim: seed of the emulated rigs")
    p.add_argument(
        "--stuck-rate", type=float, default=0.01, help="with --sim: stuck-cell fraction (0.01)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _sim_lab(config: LabConfig, technology: str, count: int, args: argparse.Namespace) -> Any:
    from instrument.embedded_lab import embedded_lab

    rig = {
        "rows": config.crossbar.rows,
        "cols": config.crossbar.cols,
        "architecture": config.crossbar.architecture,
        "technology": technology,
        "stuck_rate": args.stuck_rate,
        "count": count,
    }
    return embedded_lab(config, seed=args.seed, options={"rig": rig})


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from instrument.imprint.run import make_plan, mapping_for
    from instrument.imprint.sources import load_connectivity

    try:
        session_file = find_recording(args.session)
        if session_file.suffix != ".h5":
            raise SessionPathError(f"{session_file}: imprint needs a session .h5 file")
        config = load(args.config) if args.config else load()
        technology = args.technology or config.crossbar.technology
        config = dataclasses.replace(
            config, crossbar=dataclasses.replace(config.crossbar, technology=technology)
        )
        if args.resume and args.sim:
            raise ConfigError(
                "--resume needs the rigs of the interrupted run (--config); a fresh emulated "
                "lab has lost their state"
            )
        make_plan(config, technology)  # unsafe settings are refused before anything starts
        cmap = None if args.resume else load_connectivity(session_file, args.map)
        report_dir = Path(args.report) if args.report else session_file.parent / "imprint"
        if args.sim:
            plan = make_plan(config, technology)
            count = 1 if args.physical else len(mapping_for(config, plan, cmap).tiles)
            with _sim_lab(config, technology, count, args) as (lab_config, _lab):
                lab_config = dataclasses.replace(lab_config, crossbar=config.crossbar)
                return _run(args, lab_config, session_file, technology, cmap, report_dir)
        return _run(args, config, session_file, technology, cmap, report_dir)
    except (ConfigError, SessionPathError, ConnectivityError, JournalError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DriverError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run(
    args: argparse.Namespace,
    config: LabConfig,
    session_file: Path,
    technology: str,
    cmap: Any,
    report_dir: Path,
) -> int:
    from instrument.imprint.service import imprint_session

    outcome = imprint_session(
        config,
        session_file,
        technology,
        cmap=cmap,
        report_dir=report_dir,
        physical=args.physical,
        resume=args.resume,
        restart=args.restart,
        progress=not args.no_progress,
    )
    print(outcome.text)
    for path in outcome.plots:
        print(f"  plot: {path}")
    return 0
