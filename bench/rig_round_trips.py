"""Round trips per pulse+read on the crossbar rig: one at a time against the list/buffer way.

The emulated rig (SMU on pyvisa-py TCP, selector on a serial pty) answers every
exchange 1 ms late (a realistic instrument/bus latency); pulses and readings take
their instrument time (width + settling; settling + NPLC 0.01 at 50 Hz). For N
cells, each gets a 10 us programming pulse then a read:

* one at a time — ``rig.pulse(cell)`` then ``rig.read(cell)`` per cell;
* batched — one ``rig.pulse_train(cells, ..., read=True)``: the selector's scan
  list stepped by the SMU's trigger line, the SMU's source list and reading buffer.

Prints messages and round trips (replies waited for) per pulse+read, wall time per
pulse+read (median of repeats, measured side by side in one run), the instrument-
bound time (pulse time + read time) and the ratios; saves a plot.

    .venv/bin/python bench/rig_round_trips.py [--quick] [--smu keysight_b2900] [--plot PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _isolation import own_calibration_store
from tqdm import tqdm

import hil_sim.lab
from drivers.crossbar_rig import CrossbarRig
from hil_sim.rig import start_rig
from instrument.config import CrossbarConfig, load
from instrument.embedded_lab import embedded_lab
from instrument.rig import open_rig

LATENCY_S = 1e-3
WIDTH_S = 10e-6
AMPLITUDE_V = 1.0  # just above the RRAM SET threshold: gentle, repeatable
ROWS = COLS = 64


class Counter:
    """Counts messages written and replies read on one driver's transport."""

    def __init__(self, instrument: Any) -> None:
        self.transport = instrument.transport
        self.replies = 0
        original = self.transport.read

        def counted_read() -> str:
            self.replies += 1
            return original()

        self.transport.read = counted_read

    def snapshot(self) -> tuple[int, int]:
        return self.transport.exchanges, self.replies


def measure(rig: CrossbarRig, counters: list[Counter], run: Callable[[], None]) -> dict[str, float]:
    before = [c.snapshot() for c in counters]
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = [c.snapshot() for c in counters]
    return {
        "messages": sum(a[0] - b[0] for a, b in zip(after, before, strict=True)),
        "replies": sum(a[1] - b[1] for a, b in zip(after, before, strict=True)),
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cells and repeats")
    parser.add_argument("--smu", default="keithley2450", choices=["keithley2450", "keysight_b2900"])
    parser.add_argument("--plot", default=str(Path(tempfile.gettempdir()) / "rig_round_trips.png"))
    args = parser.parse_args()
    sizes = [16, 64] if args.quick else [16, 64, 256, 1024]
    repeats = 3
    width = WIDTH_S if args.smu == "keithley2450" else 2e-4  # the B2900's pulses are >= 50 us
    options = {
        "rig": {"rows": ROWS, "cols": COLS, "stuck_rate": 0.0, "smu_model": args.smu},
    }
    saved = list(hil_sim.lab.BUILDERS)
    hil_sim.lab.BUILDERS[:] = [start_rig]  # only the rig: the other emulators would share the CPU
    rows: list[dict[str, Any]] = []
    try:
        with embedded_lab(own_calibration_store(load()), latency_s=LATENCY_S, options=options) as (
            config,
            lab,
        ):
            config = dataclasses.replace(config, crossbar=CrossbarConfig(rows=ROWS, cols=COLS))
            timing = lab.instruments["smu"].servers[0].device.timing
            nplc = 0.01
            bound = timing.pulse_time(width) + timing.reading_time(nplc)
            with open_rig(config, nplc=nplc) as rig:
                counters = [Counter(rig.smu), Counter(rig.selector)]
                jobs = [(n, mode) for n in sizes for mode in ("one at a time", "batched")]
                results: dict[tuple[int, str], list[dict[str, float]]] = {}
                for _ in tqdm(range(repeats), desc="repeats", file=sys.stderr):
                    for n, mode in jobs:  # side by side in every repeat
                        cells = [(k // COLS, k % COLS) for k in range(n)]

                        def one_at_a_time(cells: list[tuple[int, int]] = cells) -> None:
                            for cell in cells:
                                rig.pulse(cell, AMPLITUDE_V, width)
                                rig.read(cell)

                        def batched(cells: list[tuple[int, int]] = cells) -> None:
                            rig.pulse_train(cells, [AMPLITUDE_V] * len(cells), width)

                        run = one_at_a_time if mode == "one at a time" else batched
                        results.setdefault((n, mode), []).append(measure(rig, counters, run))
        for (n, mode), runs in results.items():
            wall = statistics.median(r["wall_s"] for r in runs) / n
            rows.append(
                {
                    "n": n,
                    "mode": mode,
                    "messages": statistics.median(r["messages"] for r in runs) / n,
                    "replies": statistics.median(r["replies"] for r in runs) / n,
                    "wall_ms": wall * 1e3,
                    "bound_ms": bound * 1e3,
                    "over_bound": wall / bound,
                }
            )
    finally:
        hil_sim.lab.BUILDERS[:] = saved
    naive = {r["n"]: r["wall_ms"] for r in rows if r["mode"] == "one at a time"}
    print(
        f"\nSMU {args.smu}, latency {LATENCY_S * 1e3:g} ms per exchange, pulse {width * 1e6:g} us, "
        f"read NPLC 0.01; per pulse+read (median of {repeats}):\n"
    )
    header = (
        f"{'mode':<14} {'N':>5} {'messages':>9} {'round trips':>12} {'wall ms':>9} "
        f"{'bound ms':>9} {'wall/bound':>11} {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: (r["n"], r["mode"] != "one at a time")):
        print(
            f"{r['mode']:<14} {r['n']:>5} {r['messages']:>9.2f} {r['replies']:>12.2f} "
            f"{r['wall_ms']:>9.3f} {r['bound_ms']:>9.3f} {r['over_bound']:>11.1f} "
            f"{naive[r['n']] / r['wall_ms']:>9.1f}"
        )
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode, marker in (("one at a time", "o"), ("batched", "s")):
        sel = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"])
        ns = [r["n"] for r in sel]
        ax[0].loglog(ns, [r["messages"] for r in sel], marker=marker, label=mode)
        ax[1].loglog(ns, [r["over_bound"] for r in sel], marker=marker, label=mode)
    ax[0].set(xlabel="cells per train", ylabel="messages per pulse+read")
    ax[1].set(xlabel="cells per train", ylabel="wall time / instrument-bound time")
    ax[1].axhline(1.0, color="grey", lw=0.8)
    ax[0].legend()
    fig.suptitle(f"crossbar rig, {args.smu}, {LATENCY_S * 1e3:g} ms per exchange")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
