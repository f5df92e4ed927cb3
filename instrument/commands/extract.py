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
from instrument.calibration_use import SessionCalibration, calibration_settings, prepare_session
from instrument.config import ConfigError, LabConfig, load
from instrument.extract.params import load_params
from instrument.extract.pipeline import ExtractionError, ExtractionResult, extract
from instrument.extract.psp import KIND_NAMES
from instrument.recording import open_recording
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


def _calibration(path: Path, config: LabConfig | None, *, write: bool) -> SessionCalibration | None:
    """The board's calibration record for a session file (none for NWB input), said aloud."""
    if path.suffix.lower() == ".nwb":
        return None
    calibration = prepare_session(path, calibration_settings(config or load()), write=write)
    print(f"calibration: {calibration.applied.message}", file=sys.stderr)
    return calibration


def run(args: argparse.Namespace) -> int:
    from instrument.extract import plots, store
    from instrument.extract.score import format_scores, score

    try:
        config = load(args.config) if args.config else None
        params = load_params(config)
        path = find_recording(args.source)
    except (ConfigError, SessionPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else path.parent
    try:
        calibration = _calibration(path, config, write=not args.no_store)
        if args.dask:
            from instrument.extract.distributed import extract_distributed

            if calibration is not None and not calibration.written and calibration.gain is not None:
                print(
                    "warning: --no-store: Dask workers read the file's own gains", file=sys.stderr
                )
            result = extract_distributed(path, params, address=args.dask, progress=not args.quiet)
            with open_recording(path) as rec:
                truth = rec.truth
        else:
            with open_recording(path) as rec:
                truth = rec.truth
                if calibration is not None:
                    calibration.apply(rec)
                result = extract(rec, params, progress=not args.quiet)
    except (ExtractionError, ConfigError, OSError, KeyError, ValueError, CalibrationError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    print(summary_text(result))
    if truth is not None:
        result.scores = score(result, truth)
        print("\nscores against the emulator's ground truth:")
        print(format_scores(result.scores))
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_store:
        target = path if path.suffix.lower() in (".h5", ".hdf5") else out / "extraction.h5"
        try:
            store.write_results(target, result)
        except OSError as exc:
            print(f"error: cannot write results into {target}: {exc}", file=sys.stderr)
            return 1
        print(f"\nstored /spikes and /connectivity in {target}")
    conn_csv, units_csv = store.export_csv(result, out)
    graph = store.export_graphml(result, out / "connectivity.graphml")
    psp_png = plots.plot_average_psp(result, out / "average_psp.png")
    mat_png = plots.plot_connectivity_matrix(result, out / "connectivity_matrix.png")
    print("wrote " + ", ".join(str(p) for p in (conn_csv, units_csv, graph, psp_png, mat_png)))
    return 0
