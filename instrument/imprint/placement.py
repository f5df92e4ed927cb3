"""Fault-aware placement: permute a tile's rows and columns so synapses avoid stuck cells.

The error of putting a target on a cell is 0 on a healthy cell and, on a stuck cell
reading ``G``: ``|G - target|`` for a synapse or pair cell (beyond the tolerance), and
``max(0, G - (g_min + tol))`` for a cell that should be off (a stuck-low cell costs an
off cell nothing). Rows (presynaptic units, spare rows included) and columns (post
slots, spares included) are assigned in turn with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on that cost, a few rounds, keeping the best.

Afterwards, with ``pair_compensation``, the healthy half of a differential pair whose other
half is stuck is retargeted so the pair's difference is still the weight, where the window
allows (``G_partner = G_stuck - d`` or ``G_synapse = G_stuck + d``).

The loss is reported: synapses touching a stuck cell and their share of the total |weight|,
before and after placement, and the residual conductance error on stuck cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from instrument.imprint.characterize import Characterization
from instrument.imprint.mapping import ROLE_OFF, ROLE_PARTNER, ROLE_SYNAPSE, Tile, Window


@dataclass
class PlacementReport:
    """What stuck cells cost one tile, before and after placement."""

    tile: int
    synapses: int
    stuck_cells_active_before: int
    stuck_cells_active_after: int
    synapses_on_stuck_before: int
    synapses_on_stuck_after: int
    weight_share_on_stuck_before: float
    """Share of the tile's total |weight| on synapses touching a stuck cell."""
    weight_share_on_stuck_after: float
    error_before_s: float
    """Summed conductance error on stuck cells, S."""
    error_after_s: float
    compensated_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _error(
    target: np.ndarray,
    role: np.ndarray,
    g: np.ndarray,
    bad: np.ndarray,
    off_max_s: float,
    tol: float,
) -> np.ndarray:
    """Conductance error of each (target, cell) pairing (broadcasting), S."""
    t = np.nan_to_num(target)
    programmed = (role == ROLE_SYNAPSE) | (role == ROLE_PARTNER)
    miss = np.abs(g - t)
    err = np.where(programmed, np.where(miss > tol, miss, 0.0), 0.0)
    err = np.where(role == ROLE_OFF, np.maximum(g - off_max_s, 0.0), err)
    return np.where(bad, err, 0.0)


def tile_loss(
    tile: Tile, char: Characterization, window: Window, tol: float, weights: np.ndarray
) -> tuple[int, int, float, float]:
    """(stuck active cells, synapses touching one, their |weight| share, error S) of ``tile``
    as placed; ``weights`` are the map's weights (indexed by ``tile.synapse``)."""
    bad = char.bad & tile.active()
    err = _error(tile.target_s, tile.role, char.final_s, char.bad, window.g_min_s + tol, tol)
    touched = np.unique(tile.synapse[bad & (tile.synapse >= 0)])
    in_tile = np.unique(tile.synapse[tile.role == ROLE_SYNAPSE])
    total = float(np.abs(weights[in_tile]).sum()) or 1.0
    share = float(np.abs(weights[touched]).sum()) / total
    return int(bad.sum()), int(touched.size), share, float(err.sum())


def place(
    tile: Tile,
    char: Characterization,
    window: Window,
    tol: float,
    weights: np.ndarray,
    *,
    enabled: bool = True,
    pair_compensation: bool = True,
    rounds: int = 4,
) -> tuple[Tile, PlacementReport]:
    """``tile`` permuted away from ``char``'s stuck cells (and pairs compensated)."""
    before = tile_loss(tile, char, window, tol, weights)
    best = tile
    if enabled and char.bad.any():
        best = _assign(tile, char, window, tol, rounds)
    compensated = 0
    if pair_compensation:
        best, compensated = compensate_pairs(best, char, window)
    after = tile_loss(best, char, window, tol, weights)
    report = PlacementReport(
        tile.index,
        tile.n_synapses,
        before[0],
        after[0],
        before[1],
        after[1],
        before[2],
        after[2],
        before[3],
        after[3],
        compensated,
    )
    return best, report


def _assign(tile: Tile, char: Characterization, window: Window, tol: float, rounds: int) -> Tile:
    rows, cols = tile.shape
    g, bad = char.final_s, char.bad
    off_max = window.g_min_s + tol
    t, role = tile.target_s, tile.role
    row_of = np.arange(rows)  # logical row a sits on physical row row_of[a]
    col_of = np.arange(cols)

    def total(ro: np.ndarray, co: np.ndarray) -> float:
        gp = g[np.ix_(ro, co)]
        bp = bad[np.ix_(ro, co)]
        return float(_error(t, role, gp, bp, off_max, tol).sum())

    best_cost = total(row_of, col_of)
    best = (row_of.copy(), col_of.copy())
    for _ in range(rounds):
        # rows: cost[a, r] = sum_c err(t[a, c], cell (r, col_of[c]))
        gc, bc = g[:, col_of], bad[:, col_of]
        cost = _error(t[:, None, :], role[:, None, :], gc[None], bc[None], off_max, tol).sum(-1)
        _, row_of = linear_sum_assignment(cost)
        # columns: cost[c, k] = sum_a err(t[a, c], cell (row_of[a], k))
        gr, br = g[row_of, :], bad[row_of, :]
        cost = _error(
            t.T[:, None, :], role.T[:, None, :], gr.T[None], br.T[None], off_max, tol
        ).sum(-1)
        _, col_of = linear_sum_assignment(cost)
        cost_now = total(row_of, col_of)
        if cost_now < best_cost - 1e-15:
            best_cost, best = cost_now, (row_of.copy(), col_of.copy())
        else:
            break
    return tile.permute(best[0], best[1])


def compensate_pairs(tile: Tile, char: Characterization, window: Window) -> tuple[Tile, int]:
    """Retarget the healthy half of each differential pair whose other half is stuck, so the
    pair's difference is still the weight (a stuck-high cell in an off position gets its
    partner raised: ``G+ - G-`` stays near zero instead of the stuck value)."""
    if tile.array != "differential":
        return tile, 0
    target = tile.target_s.copy()
    role = tile.role.copy()
    count = 0
    active = tile.active()
    for r, c in zip(*np.nonzero(char.bad & active), strict=True):
        pc = int(tile.partner_col[c])
        if pc < 0 or char.bad[r, pc] or not active[r, pc]:
            continue
        d = tile.target_s[r, c] - tile.target_s[r, pc]
        wanted = np.clip(char.final_s[r, c] - d, window.g_min_s, window.g_max_s)
        if window.level_s is not None:  # a discrete device holds its levels only
            levels = np.asarray(window.level_s)
            wanted = levels[np.argmin(np.abs(levels - wanted))]
        if abs(wanted - target[r, pc]) <= 0:
            continue
        target[r, pc] = wanted
        if role[r, pc] == ROLE_OFF:
            role[r, pc] = ROLE_PARTNER
        count += 1
    out = Tile(**{**tile.__dict__, "target_s": target, "role": role})
    return out, count
