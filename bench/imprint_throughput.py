"""Write-verify throughput: the naive loop, ours, and the instrument-bound limit, side by side.

The emulated rig (64 x 64 1T1R RRAM, 1 % stuck cells; SMU on pyvisa-py TCP, selector on a
serial pty) answers every exchange 1 ms late. A synthetic signed map fills a tile; the same
RRAM write-verify algorithm programs it three ways in one run:

* **naive** — one cell at a time: one pulse (``rig.pulse``), one read (``rig.read``), a
  round trip or more each, until the cell verifies (timed on a subset of the cells and
  given per cell);
* **ours** — :func:`instrument.imprint.write_verify.program_tile`: every pending cell's
  pulse+read in batched trains, the journal written to the session file after each train;
* **instrument-bound limit** — the instruments' own pulse time + read time of every
  pulse ours sent (``SMU.train_time_s``), i.e. no wire, no computer.

Prints cells per second, pulses per cell, messages (round trips) per programmed cell, and
wall time over the instrument-bound time, medians over repeats; saves a bar plot.

    .venv/bin/python bench/imprint_throughput.py [--quick] [--plot PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _isolation import own_calibration_store
from tqdm import tqdm

import hil_sim.lab
from hil_sim.rig import start_rig
from instrument.config import CrossbarConfig, load
from instrument.embedded_lab import embedded_lab
from instrument.imprint.connectivity import ConnectivityMap
from instrument.imprint.journal import PENDING, VERIFIED
from instrument.imprint.run import _setup, make_plan, mapping_for, open_rigs
from instrument.imprint.write_verify import program_tile

LATENCY_S = 1e-3


def make_map(n_units: int, n_synapses: int, seed: int = 5) -> ConnectivityMap:
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_synapses:
        a, b = rng.choice(n_units, 2, replace=False)
        pairs.add((int(a), int(b)))
    pre, post = np.array(sorted(pairs)).T
    w = rng.choice([-1, 1], n_synapses, p=[0.3, 0.7]) * rng.uniform(0.1e-3, 2e-3, n_synapses)
    return ConnectivityMap.from_arrays(pre, post, w, units=np.arange(n_units))


def session_file(folder: Path) -> Path:
    path = folder / "session.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = "brainpaste-session"
        f.attrs["format_version"] = 1
    return path


def messages(rig: Any) -> int:
    return int(rig.smu.transport.exchanges + rig.selector.transport.exchanges)


def naive(
    rig: Any, rows: np.ndarray, algorithm: Any, visit_s: float, read_s: float
) -> dict[str, float]:
    """One pulse, one read, per round trip, cell after cell."""
    m0, t0 = messages(rig), time.perf_counter()
    pulses = 0
    for k in range(rows.size):
        cell = (int(rows["row"][k]), int(rows["col"][k]))
        idx = np.array([k])
        rows["last_read_s"][k] = rig.read(cell)
        while rows["state"][k] == PENDING:
            if algorithm.verified(rows["last_read_s"][idx], rows["target_s"][idx],
                                  rows["role"][idx], algorithm.verify_margin)[0]:  # fmt: skip
                rows["state"][k] = VERIFIED
                break
            if rows["attempts"][k] >= algorithm.max_pulses:
                break
            amp, width = algorithm.next_pulse(rows, idx)
            g_before = rows["last_read_s"][idx].copy()
            rig.pulse(cell, float(amp[0]), float(width[0]))
            rows["last_read_s"][k] = rig.read(cell)
            rows["attempts"][k] += 1
            pulses += 1
            algorithm.observe(rows, idx, g_before, amp)
    wall = time.perf_counter() - t0
    return {"cells": rows.size, "pulses": pulses, "messages": messages(rig) - m0,
            "wall_s": wall, "bound_s": pulses * visit_s + rows.size * read_s}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller map, fewer repeats")
    parser.add_argument("--plot", default=str(Path(tempfile.gettempdir()) / "imprint_bench.png"))
    parser.add_argument(
        "--pulse-time", type=float, default=0.5e-3, help="SMU time per pulse, s (0.5 ms)"
    )
    parser.add_argument(
        "--reading-time", type=float, default=1e-3, help="SMU time per reading, s (1 ms)"
    )
    args = parser.parse_args()
    n_units, n_syn, naive_cells, repeats = (16, 60, 24, 2) if args.quick else (32, 250, 48, 3)
    rows_cols = 64
    cmap = make_map(n_units, n_syn)
    saved = list(hil_sim.lab.BUILDERS)
    hil_sim.lab.BUILDERS[:] = [start_rig]
    results: dict[str, list[dict[str, float]]] = {"naive": [], "ours": []}
    try:
        for rep in tqdm(range(repeats), desc="repeats", file=sys.stderr):
            options = {"rig": {"rows": rows_cols, "cols": rows_cols, "stuck_rate": 0.01,
                               "count": 2, "pulse_time_s": args.pulse_time,
                               "reading_time_s": args.reading_time}}  # fmt: skip
            with (
                tempfile.TemporaryDirectory() as tmp,
                embedded_lab(
                    own_calibration_store(load()),
                    seed=rep + 1,
                    latency_s=LATENCY_S,
                    options=options,
                ) as (
                    config,
                    _lab,
                ),
            ):
                config = dataclasses.replace(
                    config, crossbar=CrossbarConfig(rows=rows_cols, cols=rows_cols)
                )
                plan = make_plan(config, "rram")
                timing = _lab.instruments["smu"].servers[0].device.timing
                read_s = timing.reading_time(plan.settings.nplc)
                visit_s = timing.pulse_time(plan.settings.rram.width_s) + read_s
                mapping = mapping_for(config, plan, cmap)
                path = session_file(Path(tmp))
                with open_rigs(config, 2, "rram", plan.settings.nplc) as rigs:
                    journal = _setup(path, config, plan, cmap, mapping, rigs[:1], False)
                    try:
                        rows = journal.tile_rows(0)
                        # naive on rig 2 (a fresh array): the same cells and targets
                        subset = rows[rows["state"] == PENDING].copy()
                        pick = np.random.default_rng(rep).choice(
                            subset.size, naive_cells, replace=False
                        )
                        part = subset[np.sort(pick)]
                        plan.algorithm.init_rows(part)
                        results["naive"].append(
                            naive(rigs[1], part, plan.algorithm, visit_s, read_s)
                        )
                        # ours on rig 1
                        pending = int((rows["state"] == PENDING).sum())
                        m0, t0 = messages(rigs[0]), time.perf_counter()
                        c = program_tile(rigs[0], journal, 0, plan.algorithm, plan.access,
                                         train_cells=plan.settings.train_cells)  # fmt: skip
                        wall = time.perf_counter() - t0
                        results["ours"].append({
                            "cells": pending, "pulses": c.pulses,
                            "messages": messages(rigs[0]) - m0, "wall_s": wall,
                            "bound_s": c.pulse_visits * visit_s + c.read_visits * read_s,
                        })  # fmt: skip
                    finally:
                        journal.close()
    finally:
        hil_sim.lab.BUILDERS[:] = saved

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    table = []
    for mode in ("naive", "ours"):
        per_cell = med(mode, "wall_s") / med(mode, "cells")
        table.append({
            "mode": mode,
            "cells_per_s": 1.0 / per_cell,
            "pulses_per_cell": med(mode, "pulses") / med(mode, "cells"),
            "messages_per_cell": med(mode, "messages") / med(mode, "cells"),
            "over_bound": med(mode, "wall_s") / med(mode, "bound_s"),
        })  # fmt: skip
    bound_rate = med("ours", "cells") / med("ours", "bound_s")
    table.append({"mode": "instrument-bound", "cells_per_s": bound_rate,
                  "pulses_per_cell": table[1]["pulses_per_cell"],
                  "messages_per_cell": 0.0, "over_bound": 1.0})  # fmt: skip
    print(
        f"\n64x64 1T1R RRAM, 1 % stuck, {LATENCY_S * 1e3:g} ms per exchange, SMU "
        f"{args.pulse_time * 1e3:g} ms per pulse and {args.reading_time * 1e3:g} ms per reading; "
        f"map {n_units} units, "
        f"{n_syn} synapses -> {med('ours', 'cells'):.0f} cells (synapses, pairs, off); naive on "
        f"{naive_cells} of them; medians of {repeats} repeats\n"
    )
    header = (f"{'mode':<17} {'cells/s':>9} {'pulses/cell':>12} {'round trips/cell':>17} "
              f"{'wall/bound':>11} {'vs naive':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in table:
        print(
            f"{r['mode']:<17} {r['cells_per_s']:>9.1f} {r['pulses_per_cell']:>12.2f} "
            f"{r['messages_per_cell']:>17.2f} {r['over_bound']:>11.2f} "
            f"{r['cells_per_s'] / table[0]['cells_per_s']:>9.1f}"
        )
    print("\nround trips = messages written to the SMU and selector (Transport.exchanges);")
    print(
        "instrument-bound = the emulated SMU's own pulse + read time of every visit ours sent "
        "(incl. the confirm reads near the target); naive: of its pulses and reads."
    )
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["mode"] for r in table]
    ax[0].bar(names, [r["cells_per_s"] for r in table], color=["C3", "C0", "C2"])
    ax[0].set(ylabel="cells per second", yscale="log", title="write-verify throughput")
    ax[1].bar(names[:2], [r["messages_per_cell"] for r in table[:2]], color=["C3", "C0"])
    ax[1].set(ylabel="round trips per programmed cell", yscale="log")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
