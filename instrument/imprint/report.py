"""The imprint report: a text summary and plots (matplotlib, Agg, PNG).

Plots: target vs read conductance (every programmed cell), the error histogram against
the tolerance, and per tile the array map of the final read with stuck cells marked.
Units at this edge: µS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from instrument.imprint.journal import SKIPPED
from instrument.imprint.mapping import ROLE_PARTNER, ROLE_SYNAPSE

US = 1e6


def write_plots(
    out_dir: Path,
    rows: np.ndarray,
    finals: list[np.ndarray],
    tolerance_s: float,
    title: str,
    status: np.ndarray | None = None,
) -> list[Path]:
    """Target-vs-read, error histogram and array maps into ``out_dir``; the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    g = np.array(
        [
            finals[int(k)][r, c]
            for k, r, c in zip(rows["tile"], rows["row"], rows["col"], strict=True)
        ]
    )
    programmed = (rows["role"] == ROLE_SYNAPSE) | (rows["role"] == ROLE_PARTNER)
    stuck = rows["state"] == SKIPPED
    t, m = rows["target_s"][programmed & ~stuck] * US, g[programmed & ~stuck] * US
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(t, m, ".", ms=3, alpha=0.6, label="synapse and pair cells")
    if (programmed & stuck).any():
        ax[0].plot(rows["target_s"][programmed & stuck] * US, g[programmed & stuck] * US, "rx",
                   ms=4, label="stuck (not programmable)")  # fmt: skip
    lim = [0, max(float(np.nanmax(t, initial=0)), float(np.nanmax(m, initial=0))) * 1.05 or 1]
    ax[0].plot(lim, lim, "k-", lw=0.8)
    ax[0].fill_between(lim, np.array(lim) - tolerance_s * US, np.array(lim) + tolerance_s * US,
                       color="grey", alpha=0.2, label="tolerance")  # fmt: skip
    ax[0].set(
        xlabel="target conductance (µS)", ylabel="read conductance (µS)", title="target vs read"
    )
    ax[0].legend(loc="upper left")
    err = m - t
    span = 6 * tolerance_s * US
    ax[1].hist(np.clip(err, -span, span), bins=60, range=(-span, span), color="C0")
    for x in (-tolerance_s * US, tolerance_s * US):
        ax[1].axvline(x, color="C3", lw=1)
    ax[1].set(xlabel="read - target (µS, clipped at ±6 tolerances)", ylabel="cells",
              title="error (programmable synapse and pair cells)")  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    path = out_dir / "imprint_target_vs_read.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    n = len(finals)
    cols = min(n, 4)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(3.6 * cols, 3.3 * -(-n // cols)),
                             squeeze=False)  # fmt: skip
    for k, final in enumerate(finals):
        a = axes[k // cols][k % cols]
        shown = np.clip(final * US, 1e-3, None)
        norm = LogNorm(vmin=float(np.nanmin(shown)), vmax=float(np.nanmax(shown)))
        im = a.imshow(shown, cmap="viridis", interpolation="nearest", aspect="auto", norm=norm)
        if status is not None:
            rr, cc = np.nonzero(status[k])
            a.plot(cc, rr, "rx", ms=3, label="stuck")
        a.set(title=f"tile {k}: final read (x stuck)", xlabel="column", ylabel="row")
        fig.colorbar(im, ax=a, label="µS (log)", shrink=0.8)
    for k in range(n, axes.size):
        axes.flat[k].axis("off")
    fig.tight_layout()
    path = out_dir / "imprint_array_map.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def summary_text(summary: dict[str, Any], tiles: list[dict[str, Any]]) -> str:
    """A few lines a person reads at the end of a run."""
    s = summary
    lines = [
        f"imprint ({s['technology']}): {s['tiles']} tile(s), {s['cells']} cells "
        f"({s['synapse_cells']} synapse/pair, {s['off_cells']} off), tolerance "
        f"±{s['tolerance_s'] * US:.3g} µS",
        f"  within tolerance at the final read: {s['within']}/{s['programmable']} programmable "
        f"cells = {100 * s['yield_programmable']:.2f} %  (synapse/pair {s['synapse_within']}/"
        f"{s['synapse_cells']}, off {s['off_within']}/{s['off_cells']}; stuck skipped "
        f"{s['skipped']}, failed {s['failed']})",
        f"  stuck cells: {s.get('synapses_on_stuck_before', 0)} synapses touched one as mapped, "
        f"{s.get('synapses_on_stuck_after', 0)} after placement "
        f"({100 * s.get('weight_share_on_stuck_after', 0.0):.2f} % of |weight|); "
        f"{s.get('compensated_pairs', 0)} pair cells retargeted to compensate",
        f"  error of programmed cells: median {s['median_error_s'] * US:.3g} µS, "
        f"95th percentile {s['p95_error_s'] * US:.3g} µS",
        f"  {s['pulses_per_cell']:.2f} pulses and {s['round_trips_per_cell']:.2f} messages per "
        f"cell, {s['trains']} trains; {s['wall_s']:.1f} s wall, {s['busy_s']:.1f} s in trains, "
        f"{s['instrument_s']:.2f} s instrument time",
    ]
    for t in tiles:
        f = t["functional"]
        lines.append(
            f"  tile {t['tile']} ({t['array']}): yield {100 * t['yield_programmable']:.2f} %, "
            f"functional check ({f['source']}): error {100 * f['rms_error_full_scale']:.2f} % "
            f"of full scale ({100 * f['relative_rms_error']:.1f} % of the ideal's RMS), "
            f"correlation {f['correlation']:.4f}"
            + (
                f"; without the {c['rows_left_out']} rows holding stuck cells "
                f"{100 * c['rms_error_full_scale']:.2f} % of full scale, {c['correlation']:.4f}"
                if (c := f.get("without_stuck_rows")) and c["rows_left_out"]
                else ""
            )
        )
    return "\n".join(lines)
