"""Copy and paste: a map extracted from the emulated culture, imprinted with every technology.

1. Records the emulated culture (electroporated first) into a cached session
   (``--cache``; recorded once);
2. extracts its connectivity with ``instrument.extract`` (stored in the session when the
   extraction store is there; the map is named by each unit's best electrode);
3. imprints the map on the emulated rigs (1T1R, realistic device variation, 1 % stuck
   cells; one rig per tile) with RRAM, PCM, MRAM and flash write-verify, each into its own
   small session file, and — for RRAM — by physical imprinting of the units' spikes;
4. prints one table (yield of programmable cells, error, pulses and round trips per cell,
   functional check) and writes the plots next to each session.

    .venv/bin/python bench/imprint_culture.py [--quick] [--cache DIR] [--duration 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from _isolation import own_calibration_store

import hil_sim.lab
from hil_sim.cnea_board import build_cnea
from hil_sim.line_driver import build_line_drivers
from hil_sim.rig import start_rig
from instrument.acquisition import Acquisition, AcquisitionSettings
from instrument.config import load, loads, parse_section
from instrument.connect import open_instrument
from instrument.embedded_lab import embedded_lab
from instrument.imprint.connectivity import ConnectivityMap
from instrument.imprint.physical import run_physical
from instrument.imprint.report import summary_text, write_plots
from instrument.imprint.run import make_plan, mapping_for, run_imprint
from instrument.recording import SYNAPSE_KINDS, open_recording

TECHNOLOGIES = ("rram", "pcm", "mram", "flash")


def record(folder: Path, duration_s: float, neurons: int, seed: int) -> Path:
    """The cached emulated recording (electroporated culture), recorded when absent."""
    path = folder / "session.h5"
    if path.exists():
        with h5py.File(path, "r", locking=False) as f:
            if f["recording"].attrs.get("complete"):
                return path
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    saved = list(hil_sim.lab.BUILDERS)
    hil_sim.lab.BUILDERS[:] = [build_cnea]
    try:
        options = {"cnea": {"rate": 1.0, "n_neurons": neurons}}
        with embedded_lab(own_calibration_store(load()), seed=seed, options=options) as (
            config,
            _lab,
        ):
            board = open_instrument(config, "cnea")
            try:
                board.electroporate(None, 2.5, 1e-3)
                settings = parse_section(AcquisitionSettings, config, "acquisition")
                acq = Acquisition(board, path, duration_s=duration_s, settings=settings)
                acq.wait(raise_on_error=True)
            finally:
                board.close()
    finally:
        hil_sim.lab.BUILDERS[:] = saved
    return path


def extracted(session: Path) -> tuple[ConnectivityMap, dict[int, np.ndarray]]:
    """The map and unit spikes of ``session``: stored by extraction, or extracted now."""
    from instrument.extract.params import load_params
    from instrument.extract.pipeline import extract

    result = extract(open_recording(session), load_params(load()), progress=True)
    units, conn = result.units, result.connectivity
    ids = units.best.astype(np.int64)
    kinds = np.array([SYNAPSE_KINDS[int(k)] for k in conn.kind])
    cmap = ConnectivityMap.from_arrays(
        ids[conn.pre], ids[conn.post], conn.weight_v, conn.latency_s, kinds,
        units=ids, source=f"{session} (extracted)",
    )  # fmt: skip
    spikes = {int(ids[u]): units.spikes(u) / result.sample_rate_hz for u in range(units.n_units)}
    return cmap, spikes


def imprint_session(folder: Path) -> Path:
    """A small session file for one imprint (the map is given in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "session.h5"
    if path.exists():
        path.unlink()
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = "brainpaste-session"
        f.attrs["format_version"] = 1
    return path


def run_technology(
    technology: str, cmap: ConnectivityMap, out: Path, rows: int, cols: int, seed: int
) -> dict[str, Any]:
    base = load()
    config = own_calibration_store(
        loads(
            f'[crossbar]\nrows = {rows}\ncols = {cols}\ntechnology = "{technology}"\n',
            "<bench>",
            base=Path(base.source).read_text(),
        )
    )
    plan = make_plan(config, technology)
    tiles = len(mapping_for(config, plan, cmap).tiles)
    saved = list(hil_sim.lab.BUILDERS)
    hil_sim.lab.BUILDERS[:] = [start_rig, build_line_drivers]
    rig = {"rows": rows, "cols": cols, "technology": technology, "stuck_rate": 0.01,
           "count": tiles}  # fmt: skip
    session = imprint_session(out / technology)
    try:
        with embedded_lab(config, seed=seed, options={"rig": rig}) as (lab_config, _lab):
            lab_config = dataclasses.replace(lab_config, crossbar=config.crossbar)
            t0 = time.perf_counter()
            result = run_imprint(lab_config, session, technology, cmap=cmap)
            wall = time.perf_counter() - t0
    finally:
        hil_sim.lab.BUILDERS[:] = saved
    with h5py.File(session, "r", locking=False) as f:
        status = f["imprint/characterization_status"][()]
    title = f"{technology}: {tiles} tile(s)"
    write_plots(out / technology, result.rows, result.final_read_s,
                result.summary["tolerance_s"], title, status)  # fmt: skip
    text = summary_text(result.summary, result.tiles)
    (out / technology / "imprint_report.txt").write_text(text + "\n")
    print(text, file=sys.stderr)
    s = result.summary
    functional = np.mean([t["functional"]["rms_error_full_scale"] for t in result.tiles])
    clean = np.mean(
        [t["functional"]["without_stuck_rows"]["rms_error_full_scale"] for t in result.tiles]
    )
    return {"technology": technology, "tiles": tiles, **s, "functional": functional,
            "clean": clean, "wall": wall}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "brainpaste-imprint-culture")
    )
    parser.add_argument("--duration", type=float, default=60.0, help="recording, s (60)")
    parser.add_argument("--neurons", type=int, default=120, help="neurons of the culture (120)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--technologies", default=",".join(TECHNOLOGIES))
    parser.add_argument(
        "--quick", action="store_true", help="a 20 s recording and RRAM only (bench/run_all.py)"
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.technologies = 20.0, "rram"
    cache = Path(args.cache)
    session = record(cache / f"culture-{args.neurons}-{args.duration:g}s", args.duration,
                     args.neurons, args.seed)  # fmt: skip
    cmap, spikes = extracted(session)
    inhibitory = int((cmap.weight_v < 0).sum())
    print(f"map: {cmap.n_units} units, {cmap.n_synapses} synapses ({inhibitory} inhibitory) "
          f"from {session}", file=sys.stderr)  # fmt: skip
    out = cache / "imprints"
    rows = [
        run_technology(t, cmap, out, args.rows, args.cols, args.seed)
        for t in args.technologies.split(",")
    ]
    physical = None
    if "rram" in args.technologies:
        crossbar = f"[crossbar]\nrows = {args.rows}\ncols = {args.cols}\n"
        base = Path(load().source).read_text()
        config = own_calibration_store(loads(crossbar, "<bench>", base=base))
        saved = list(hil_sim.lab.BUILDERS)
        hil_sim.lab.BUILDERS[:] = [start_rig, build_line_drivers]
        try:
            rig = {"rows": args.rows, "cols": args.cols, "stuck_rate": 0.01}
            options = {"rig": rig, "linedriver": {"realtime": False}}
            with embedded_lab(config, seed=args.seed, options=options) as (lab_config, _lab):
                lab_config = dataclasses.replace(lab_config, crossbar=config.crossbar)
                where = out / "physical"
                physical = run_physical(lab_config, imprint_session(where), "rram", cmap,
                                        spikes=spikes, report_dir=where)  # fmt: skip
        finally:
            hil_sim.lab.BUILDERS[:] = saved
    print(f"\nmap extracted from the emulated culture ({args.neurons} neurons, "
          f"{args.duration:g} s): {cmap.n_units} units, {cmap.n_synapses} synapses; arrays "
          f"{args.rows}x{args.cols}, 1T1R, 1 % stuck cells\n")  # fmt: skip
    header = (f"{'technology':<10} {'tiles':>5} {'cells':>6} {'yield %':>8} {'syn/pair %':>10} "
              f"{'median err':>11} {'pulses/cell':>11} {'trips/cell':>10} {'MVM %FS':>8} "
              f"{'w/o stuck':>9} {'wall s':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in rows:
        syn = 100 * r["synapse_within"] / max(r["synapse_cells"], 1)
        print(
            f"{r['technology']:<10} {r['tiles']:>5} {r['cells']:>6} "
            f"{100 * r['yield_programmable']:>8.2f} {syn:>10.2f} "
            f"{r['median_error_s'] / r['tolerance_s']:>8.2f} tol {r['pulses_per_cell']:>11.2f} "
            f"{r['round_trips_per_cell']:>10.2f} {100 * r['functional']:>8.2f} "
            f"{100 * r['clean']:>9.2f} {r['wall']:>7.1f}"
        )
    if physical is not None:
        print("\n" + physical["text"])
    print("\nyield: programmable (not stuck) cells within tolerance at the final read; syn/pair:")
    print("the synapse and pair cells among them; MVM %FS: RMS error of the weight x input check")
    print("(line driver) over full scale, and without the rows that hold stuck cells.")
    print(f"\nreports and plots: {out}/<technology>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
