"""``brainpaste extract SESSION_OR_FILE [--out DIR]``: the synaptic map of a recording.

Reads a session folder, a session HDF5 file or an NWB file; writes ``/spikes`` and
``/connectivity`` into the session file (an NWB input gets ``extraction.h5`` in the
output folder instead), ``connections.csv``, ``units.csv``, ``connectivity.graphml`` and
two figures into ``--out`` (default: the recording's folder), and prints a summary —
with the scores when the recording carries ground truth (emulated recordings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from calibration.records import CalibrationError
from instrument.config import ConfigError, load
from instrument.extract.params import load_params
from instrument.extract.pipeline import ExtractionError, ExtractionResult
from instrument.extract.psp import KIND_NAMES
from instrument.session_files import SessionPathError, find_recording


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract", help="extract the synaptic connectivity map of a recording"
    )
    p.add_argument("source", metavar="SESSION_OR_FILE", help="session folder, .h5 or .nwb file")
    p.add_argument("--out", metavar="DIR", help="folder for CSV, GraphML and figures")
    p.add_argument("--config", help="lab configuration whose [extraction] table to use")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help='run on Dask: "local" starts a local cluster, tcp://host:port joins one',
    )
    p.add_argument("--no-store", action="store_true", help="do not write into the session file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def summary_text(result: ExtractionResult) -> str:
    """What the command prints (mV and ms at this edge)."""
    c = result.connectivity
    u = result.units
    kinds = np.bincount(c.kind, minlength=3)
    lines = [
        f"recording: {result.source or '(memory)'} — {result.n_channels} channels, "
        f"{result.duration_s:.1f} s at {result.sample_rate_hz:g} Hz",
        f"channels bad: {int(result.summary.bad.sum())}; units: {u.n_units} "
        f"({int(u.intracellular.sum())} intracellular, "
        f"{u.members.size / max(u.n_units, 1):.2f} electrodes per unit)",
        f"pairs tested: {result.n_tested}, candidates: {result.n_candidates}, "
        f"connections: {c.n} ("
        + ", ".join(f"{KIND_NAMES[k]} {int(kinds[k])}" for k in range(3))
        + f"; strong {int(c.strong.sum())})",
    ]
    if c.n:
        w = np.abs(c.weight_v[np.isfinite(c.weight_v)]) * 1e3
        lat = c.latency_s[np.isfinite(c.latency_s)] * 1e3
        if w.size:
            lines.append(
                f"|weight| median {np.median(w):.2f} mV (range {w.min():.2f}–{w.max():.2f}); "
                f"onset latency median {np.median(lat):.1f} ms"
            )
    t = result.timings_s
    if t:
        lines.append(
            "time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items())
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from instrument.extract.score import format_scores
    from instrument.extract.service import extract_session

    try:
        config = load(args.config) if args.config else None
        params = load_params(config)
        path = find_recording(args.source)
    except (ConfigError, SessionPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else path.parent
    try:
        outcome = extract_session(
            path,
            out,
            params,
            config=config,
            dask=args.dask,
            store_results=not args.no_store,
            progress=not args.quiet,
        )
    except (ExtractionError, ConfigError, OSError, KeyError, ValueError, CalibrationError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    if outcome.calibration_message:
        print(f"calibration: {outcome.calibration_message}", file=sys.stderr)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    result = outcome.result
    print(summary_text(result))
    if result.scores is not None:
        print("\nscores against the emulator's ground truth:")
        print(format_scores(result.scores))
    if outcome.stored_in is not None:
        print(f"\nstored /spikes and /connectivity in {outcome.stored_in}")
    print("wrote " + ", ".join(str(p) for p in outcome.written))
    return 0
