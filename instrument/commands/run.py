"""``brainpaste run``: the whole loop in one command — check, calibrate, record, extract,
imprint, report — into one resumable session folder.

``--sim`` runs it on the embedded emulated lab; ``--config lab.toml`` on the bench;
both together mix them (instruments the file names are used as they are, the others
are emulated). Rerunning with the same ``--out`` continues from the first stage not
done. ``--json`` prints a machine-readable summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from instrument.config import ConfigError, LabConfig, load
from instrument.connect import make_safe
from instrument.session import (
    STAGES,
    RunOptions,
    Session,
    SessionFailed,
    SessionPaused,
    SessionState,
    StageState,
)
from instrument.session_files import SessionPathError, new_session_dir

EXIT_FAILED, EXIT_PAUSED = 1, 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="the whole loop: record, extract, imprint, report")
    p.add_argument("--sim", action="store_true", help="use the embedded emulated lab")
    p.add_argument("--config", metavar="LAB.TOML", help="the bench's lab configuration")
    p.add_argument("--out", metavar="DIR", help="session folder (rerun it to resume)")
    p.add_argument(
        "--duration", type=float, default=None, metavar="S", help="seconds to record (default 60)"
    )
    p.add_argument(
        "--technology",
        choices=("rram", "pcm", "mram", "flash"),
        help="memory technology to imprint (default: the lab's crossbar)",
    )
    p.add_argument("--physical", action="store_true", help="physical imprinting")
    p.add_argument("--until", choices=STAGES, help="stop after this stage")
    p.add_argument("--seed", type=int, default=1, help="with --sim: seed of the emulated lab")
    p.add_argument(
        "--rigs",
        type=int,
        default=2,
        metavar="N",
        help="with --sim: emulated crossbar rigs, one tile each (2)",
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace, folder: Path) -> RunOptions:
    """New options from the command line, or the ones a resumed session started with."""
    saved = SessionState.load(folder).options if folder.exists() else {}
    options = RunOptions(**saved) if saved else RunOptions()
    changes: dict[str, Any] = {"progress": not args.no_progress}
    if args.duration is not None:
        if not args.duration > 0:
            raise ValueError(f"--duration must be > 0 s, got {args.duration}")
        changes["duration_s"] = args.duration
    if args.technology:
        changes["technology"] = args.technology
    if args.physical:
        changes["physical"] = True
    return dataclasses.replace(options, **changes)


@contextlib.contextmanager
def _lab(args: argparse.Namespace, options: RunOptions) -> Iterator[tuple[LabConfig, Any]]:
    config = load(args.config) if args.config else load()
    if not args.sim:
        yield config, None
        return
    from instrument.embedded_lab import embedded_lab

    technology = options.technology or config.crossbar.technology
    if args.rigs < 1:
        raise ValueError(f"--rigs must be >= 1, got {args.rigs}")
    rig = {
        "technology": technology,
        "rows": config.crossbar.rows,
        "cols": config.crossbar.cols,
        "architecture": config.crossbar.architecture,
        "count": args.rigs,
    }
    with embedded_lab(config, seed=args.seed, options={"rig": rig, "cnea": {"rate": "max"}}) as (
        lab_config,
        lab,
    ):
        yield lab_config, lab


def _print_stage(name: str, stage: StageState) -> None:
    if stage.status == "running":
        print(f"[{name}] running…", file=sys.stderr, flush=True)
    else:
        figures = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in stage.figures.items()
            if not isinstance(v, dict | list) and "\n" not in str(v)
        )
        print(
            f"[{name}] {stage.status} in {stage.duration_s:.1f} s"
            + (f": {figures}" if figures else ""),
            file=sys.stderr,
            flush=True,
        )


def summary(folder: Path, state: SessionState) -> dict[str, Any]:
    """The machine-readable summary ``--json`` prints."""
    report = folder / "report.html"
    return {
        "session": str(folder),
        "report": str(report) if report.exists() else None,
        "stages": {n: dataclasses.asdict(s) for n, s in state.stages.items()},
    }


def run(args: argparse.Namespace) -> int:
    from instrument.session_stages import STAGE_FUNCTIONS

    if not (args.sim or args.config):
        print("error: give --sim (embedded emulated lab) and/or --config LAB.TOML", file=sys.stderr)
        return 2
    try:
        folder = (
            Path(args.out)
            if args.out
            else new_session_dir(load(args.config).lab.data_dir if args.config else "sessions")
        )
        options = _options(args, folder)
        with _lab(args, options) as (config, _lab_handle):
            session = Session(
                folder, config, options, STAGE_FUNCTIONS, make_safe=lambda: make_safe(config)
            )
            state = session.run(until=args.until, on_stage=_print_stage)
    except (ConfigError, SessionPathError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SessionPaused as exc:
        print(f"paused: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary(folder, SessionState.load(folder)), indent=2))
        return EXIT_PAUSED
    except SessionFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps(summary(folder, SessionState.load(folder)), indent=2))
        return EXIT_FAILED
    result = summary(folder, state)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary_text(folder, state))
    return 0


SUMMARY_KEYS = {
    "record": ("recorded_s", "frames_lost", "gaps", "electrodes_with_access"),
    "extract": ("units", "connections"),
    "imprint": (
        "technology",
        "units_imprinted",
        "synapses_imprinted",
        "tiles",
        "yield_programmable",
        "pulses_per_cell",
        "round_trips_per_cell",
    ),
}


def summary_text(folder: Path, state: SessionState) -> str:
    """The few lines printed at the end of a run."""
    lines = [f"{'stage':<10} {'status':<8} {'time':>8}  key figures"]
    for name, stage in state.stages.items():
        keys = SUMMARY_KEYS.get(name, ())
        shown = []
        for key in keys:
            value = stage.figures.get(key)
            if value is not None:
                shown.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        scores = stage.figures.get("scores")
        if isinstance(scores, dict) and "precision" in scores:
            shown.append(f"precision {scores['precision']:.3f} recall {scores['recall']:.3f}")
        lines.append(f"{name:<10} {stage.status:<8} {stage.duration_s:>7.1f}s  {', '.join(shown)}")
    lines.append(f"session: {folder}")
    report = folder / "report.html"
    if report.exists():
        lines.append(f"report:  {report}")
    return "\n".join(lines)
