"""Physical imprinting (the paper's second scheme): the recorded activity itself programs
the crossbar, by coincidence.

Unit ``i`` of the crossbar order (:func:`~instrument.imprint.mapping.unit_order`) owns row
``i`` (presynaptic side) and column ``i`` (postsynaptic side). Every spike of unit ``i``
opens a window of ``+V_half`` on row ``i`` (``pre_window_s`` long: it covers the 5-15 ms
PSP latencies of cortical cultures); every spike of unit ``j`` puts a short ``-V_half``
pulse (``post_width_s``) on column ``j``. A cell sees ``V_row - V_col``: ``V_half`` alone
(below its switching threshold, nothing happens) or ``2 V_half`` where a postsynaptic
spike falls inside a presynaptic window — pre-before-post coincidences potentiate the
cell, Hebbian-style, in proportion to how often they happen (Ham, Park, Hwang, Kim,
Nat. Electron. 4, 635 (2021)).

The run: every cell of the N x N block is driven to the off state (batched pulses on the
rig), read, the waveforms are loaded on the line driver (``linedriver``, docs/
line_driver_protocol.md) and played, the array is read again, and the change is
compared with the extracted map (ROC AUC connected vs unconnected pairs, rank
correlation with excitatory weights). Silent stretches longer than ``max_gap_s`` (no
line driven) are shortened to it: nothing switches there, so the physics is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.stats import rankdata, spearmanr

from drivers.crossbar_rig import CrossbarRig
from drivers.line_driver import LineDriver
from instrument.config import ConfigError, LabConfig, parse_section
from instrument.connect import open_instrument
from instrument.imprint.connectivity import ConnectivityError, ConnectivityMap
from instrument.imprint.journal import CELL_DTYPE, open_read
from instrument.imprint.mapping import ROLE_OFF, unit_order
from instrument.imprint.run import make_plan
from instrument.rig import open_rig, safety_limits
from instrument.storage import utc_now

GROUP = "imprint_physical"
Pulse = tuple[float, float, float]
"""(start s, width s, level V)."""


@dataclass(frozen=True)
class PhysicalSettings:
    """The ``[imprint_physical]`` table."""

    rram_half_v: float = 0.5
    """Row and column level of an RRAM array (a coincidence puts 2x on the cell), V."""
    pcm_half_v: float = 0.6
    """Same for PCM, V."""
    mram_half_v: float = 0.22
    """Same for MRAM, V."""
    pre_delay_s: float = 3e-3
    """The row window opens this long after each presynaptic spike, s."""
    pre_window_s: float = 10e-3
    """Row window length, s (delay + window span the 5-15 ms PSP latencies)."""
    post_width_s: float = 1e-4
    """Column pulse at each postsynaptic spike, s."""
    max_gap_s: float = 2e-3
    """Silent stretches (no line driven) are shortened to this, s."""
    reset_rounds: int = 3
    """Batched off-pulse rounds that clear the block before imprinting."""
    calibration_pulses: int = 3
    """Coincidence pulses (2 V_half, post_width_s) every cell gets once, before imprinting,
    to measure its own sensitivity; the imprint is judged on change / sensitivity (cell to
    cell threshold and rate spread is larger than one coincidence). 0: no calibration."""


def load_physical_settings(config: LabConfig) -> PhysicalSettings:
    s = parse_section(PhysicalSettings, config, "imprint_physical")
    if s.pre_delay_s < 0:
        raise ConfigError("must be >= 0 s", key="imprint_physical.pre_delay_s")
    if s.calibration_pulses < 0:
        raise ConfigError("must be >= 0", key="imprint_physical.calibration_pulses")
    for name in ("pre_window_s", "post_width_s", "max_gap_s"):
        if not getattr(s, name) > 0:
            raise ConfigError("must be > 0 s", key=f"imprint_physical.{name}")
    return s


def half_level(settings: PhysicalSettings, technology: str) -> float:
    """The row/column level of ``technology``, V (flash has no two-terminal switching)."""
    if technology == "flash":
        raise ConfigError(
            "physical imprinting needs cells that switch on the voltage between their two "
            "lines; flash cells are programmed through the gate (use write-verify)",
            key="crossbar.technology",
        )
    return float(getattr(settings, f"{technology}_half_v"))


def _merge(intervals: np.ndarray) -> list[tuple[float, float]]:
    """Sorted (start, end) intervals with overlaps joined."""
    out: list[list[float]] = []
    for a, b in intervals[np.argsort(intervals[:, 0])] if len(intervals) else []:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([float(a), float(b)])
    return [(a, b) for a, b in out]


def build_waveforms(
    spikes: Mapping[int, np.ndarray],
    order: np.ndarray,
    settings: PhysicalSettings,
    level_v: float,
) -> tuple[dict[int, list[Pulse]], dict[int, list[Pulse]], float]:
    """Row and column pulse lists ``{line: [(start, width, level)]}`` and the compression
    (played duration / recorded duration)."""
    row_iv, col_iv = {}, {}
    for line, unit in enumerate(order):
        t = np.sort(np.asarray(spikes.get(int(unit), np.zeros(0)), dtype=float))
        if t.size:
            opens = t + settings.pre_delay_s
            row_iv[line] = _merge(np.column_stack([opens, opens + settings.pre_window_s]))
            col_iv[line] = _merge(np.column_stack([t, t + settings.post_width_s]))
    everything = [iv for table in (row_iv, col_iv) for ivs in table.values() for iv in ivs]
    if not everything:
        raise ConnectivityError("no spikes of the imprinted units: nothing to play")
    busy = _merge(np.array(everything))
    # shift: time removed before each busy stretch (gaps longer than max_gap_s shortened)
    starts = np.array([a for a, _ in busy])
    ends = np.array([b for _, b in busy])
    gaps = np.empty(len(busy))
    gaps[0] = starts[0]
    gaps[1:] = starts[1:] - ends[:-1]
    removed = np.cumsum(np.maximum(gaps - settings.max_gap_s, 0.0))

    def shift(t: float) -> float:
        k = int(np.searchsorted(starts, t, side="right")) - 1
        return t - float(removed[max(k, 0)])

    rows = {k: [(shift(a), b - a, level_v) for a, b in ivs] for k, ivs in row_iv.items()}
    cols = {k: [(shift(a), b - a, -level_v) for a, b in ivs] for k, ivs in col_iv.items()}
    recorded = float(ends.max())
    played = recorded - float(removed[-1])
    return rows, cols, played / recorded if recorded > 0 else 1.0


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U) of ``scores`` for ``positive``."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def compare(delta_g: np.ndarray, order: np.ndarray, cmap: ConnectivityMap) -> dict[str, float]:
    """How well the per-cell score (conductance change, over the cell's sensitivity when
    calibrated) recovers the map among the imprinted units."""
    n = len(order)
    w = cmap.dense(order)
    off_diag = ~np.eye(n, dtype=bool)
    connected = (w != 0) & off_diag
    excitatory = (w > 0) & off_diag
    scores = delta_g[off_diag]
    out = {
        "units": n,
        "pairs": int(off_diag.sum()),
        "connected_pairs": int(connected.sum()),
        "auc_connected": roc_auc(scores, connected[off_diag]),
        "auc_excitatory": roc_auc(scores, excitatory[off_diag]),
        "mean_score_connected": float(delta_g[connected].mean()) if connected.any() else 0.0,
        "mean_score_unconnected": float(delta_g[off_diag & ~connected].mean()),
    }
    if excitatory.sum() > 2 and np.ptp(w[excitatory]) > 0:
        rho = spearmanr(delta_g[excitatory], w[excitatory]).statistic
        out["spearman_excitatory_weight"] = float(rho)
    return out


def run_physical(
    config: LabConfig,
    session_file: Path,
    technology: str,
    cmap: ConnectivityMap | None,
    *,
    spikes: Mapping[int, np.ndarray] | None = None,
    report_dir: Path | None = None,
) -> dict[str, Any]:
    """Physical imprinting of ``spikes`` (default: the session's) on rig 0; compared with
    ``cmap``; stored in ``/imprint_physical`` of the session file."""
    plan = make_plan(config, technology)
    settings = load_physical_settings(config)
    level = half_level(settings, technology)
    limits = safety_limits(config, technology)
    limits.check_voltage(2 * level, f"imprint_physical.{technology}_half_v (x2 on a cell)")
    if cmap is None:
        raise ConnectivityError("physical imprinting compares with a map: none given")
    if spikes is None:
        from instrument.imprint.sources import load_spikes

        spikes = load_spikes(session_file)
    if "linedriver" not in config.instruments:
        raise ConfigError(
            "physical imprinting needs a line driver: no [instruments.linedriver]",
            key="instruments.linedriver",
        )
    order_all = unit_order(cmap, plan.settings.ordering)
    n = min(len(order_all), config.crossbar.rows, config.crossbar.cols)
    order = order_all[:n]
    rows_p, cols_p, compression = build_waveforms(spikes, order, settings, level)
    with open_rig(config, technology=technology, nplc=plan.settings.nplc) as rig:
        driver = open_instrument(config, "linedriver")
        if not isinstance(driver, LineDriver):
            driver.close()
            raise ConfigError("instrument 'linedriver' is not a crossbar_line_driver",
                              key="instruments.linedriver.driver")  # fmt: skip
        try:
            driver.configure(limits)
            g_reset = _clear_block(rig, plan, n, settings.reset_rounds)
            sensitivity = np.ones((n, n))
            if settings.calibration_pulses:
                cells = [(r, c) for r in range(n) for c in range(n)]
                visits = [cell for cell in cells for _ in range(settings.calibration_pulses)]
                plan.access.pulse(rig, visits, [2 * level] * len(visits), settings.post_width_s)
                sensitivity = plan.access.read_array(rig)[:n, :n] - g_reset
                g_reset = _clear_block(rig, plan, n, settings.reset_rounds)
            rig.selector.ground_all()  # the line driver takes the lines
            pulses = driver.load_pulses(rows_p, cols_p)
            played_s = driver.run()
            driver.output_off()
            g_after = plan.access.read_array(rig)[:n, :n]
        finally:
            driver.close()
    delta = g_after - g_reset
    floor = 0.01 * plan.window.span_s
    score = delta / np.maximum(sensitivity, floor) if settings.calibration_pulses else delta
    stats = compare(score, order, cmap)
    summary: dict[str, Any] = {
        "technology": technology,
        "units_imprinted": n,
        "units_in_map": len(order_all),
        "pulses": pulses,
        "played_s": played_s,
        "compression": compression,
        "half_level_v": level,
        **stats,
    }
    _store(session_file, order, g_reset, g_after, sensitivity, summary)
    summary["text"] = (
        f"physical imprint ({technology}): {n} of {len(order_all)} units, {pulses} pulses "
        f"played in {played_s:.2f} s (silences compressed to {100 * compression:.1f} %); "
        f"AUC connected vs unconnected {stats['auc_connected']:.3f}, excitatory "
        f"{stats['auc_excitatory']:.3f}"
    )
    if report_dir is not None:
        _plot(report_dir, score, cmap.dense(order), technology)
    return summary


def _clear_block(rig: CrossbarRig, plan: Any, n: int, rounds: int) -> np.ndarray:
    """Drive the n x n block to the off state (batched off pulses); its read, S."""
    cells = [(r, c) for r in range(n) for c in range(n)]
    rows = np.zeros(len(cells), dtype=CELL_DTYPE)
    rows["role"] = ROLE_OFF
    rows["target_s"] = plan.window.g_min_s
    plan.algorithm.init_rows(rows)
    g = plan.access.read_cells(rig, cells)
    for _ in range(rounds):
        high = np.flatnonzero(g > plan.window.g_min_s + plan.tolerance_s)
        if not high.size:
            break
        rows["last_read_s"] = g
        amp, width = plan.algorithm.next_pulse(rows, high)
        plan.access.pulse(rig, [cells[k] for k in high], amp, float(width[0]))
        g[high] = plan.access.read_cells(rig, [cells[k] for k in high])
    return plan.access.read_array(rig)[:n, :n]


def _store(path: Path, order: np.ndarray, before: np.ndarray, after: np.ndarray,
           sensitivity: np.ndarray, summary: dict[str, Any]) -> None:  # fmt: skip
    with open_read(path):
        pass  # clears a stale write mark left by a killed imprint, refuses a live writer
    with h5py.File(path, "r+", locking=False) as f:
        if GROUP in f:
            del f[GROUP]
        g = f.create_group(GROUP)
        g.attrs["created_utc"] = utc_now()
        g.attrs["summary"] = json.dumps({k: v for k, v in summary.items() if k != "text"})
        g.create_dataset("order", data=order)
        g.create_dataset("before_s", data=before)
        g.create_dataset("after_s", data=after)
        g.create_dataset("sensitivity_s", data=sensitivity)


def _plot(out_dir: Path, delta: np.ndarray, w: np.ndarray, technology: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    im = ax[0].imshow(delta, cmap="viridis")
    ax[0].set(title="change / cell sensitivity", xlabel="post unit", ylabel="pre unit")
    fig.colorbar(im, ax=ax[0], shrink=0.8)
    lim = float(np.abs(w).max()) * 1e3 or 1.0
    im = ax[1].imshow(w * 1e3, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[1].set(title="extracted map (mV)", xlabel="post unit", ylabel="pre unit")
    fig.colorbar(im, ax=ax[1], shrink=0.8)
    fig.suptitle(f"physical imprinting, {technology}")
    fig.tight_layout()
    fig.savefig(out_dir / "imprint_physical.png", dpi=110)
    plt.close(fig)
