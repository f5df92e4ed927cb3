"""From a connectivity map to conductance targets on tiles of the rig's array size.

Neuron ordering (documented in docs/imprint.md): the map's units are put in one order —
ascending unit id (``ordering = "id"``) or reverse Cuthill-McKee of the symmetrized
connection graph (``"rcm"``: connected units end up near each other, so a sparse map
touches fewer tiles). Unit ``order[i]`` is logical row ``i`` (presynaptic side) and
logical post index ``i`` (postsynaptic side).

Signed weights, two layouts:

* ``differential`` — one array; post unit ``j`` owns logical columns ``2j`` (G+) and
  ``2j+1`` (G-). A synapse of weight ``w > 0`` programs G+ to ``g(|w|)`` and its partner
  G- to the off level; ``w < 0`` the other way round. The read weight is ``G+ - G-``.
* ``ei`` — two arrays of the same shape: excitatory (``w > 0``) and inhibitory
  (``|w|`` of ``w < 0``); logical column ``j`` is post unit ``j`` in both.

Magnitudes are scaled into the technology's window: ``|w| = weight_scale`` maps to
``g_max``, and quantized to the ``levels`` the device holds:
``level = clip(round(|w| / scale * (levels - 1)), min_level, levels - 1)``,
``G = g_min + level * (g_max - g_min) / (levels - 1)``; level 0 (``g_min``) is the off state.

The logical matrix is cut into tiles of ``rows x cols`` (a tile is one physical array on
one rig); tiles that hold no synapse are not programmed. Inside a tile the physical
row/column of each logical line starts as the identity and may be permuted by
:mod:`~instrument.imprint.placement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from instrument.imprint.connectivity import ConnectivityError, ConnectivityMap

ROLE_UNUSED, ROLE_OFF, ROLE_SYNAPSE, ROLE_PARTNER = 0, 1, 2, 3
"""Cell roles: not on an active line (never touched); no synapse (driven to off);
carries a synapse; the other cell of a differential pair (programmed to off)."""
ROLE_NAMES = {ROLE_UNUSED: "unused", ROLE_OFF: "off", ROLE_SYNAPSE: "synapse", ROLE_PARTNER: "pair"}


@dataclass(frozen=True)
class Window:
    """The technology's usable conductance window and its levels."""

    g_min_s: float
    g_max_s: float
    levels: int
    level_s: tuple[float, ...] | None = None
    """Measured conductance of each level (discrete devices, :func:`measured_levels`), S;
    None: evenly spaced over the window."""

    @property
    def span_s(self) -> float:
        return self.g_max_s - self.g_min_s

    def level_conductance(self, level: np.ndarray | int) -> np.ndarray:
        """Conductance of quantization level(s), S."""
        if self.level_s is not None:
            return np.asarray(self.level_s)[np.asarray(level)]
        return self.g_min_s + np.asarray(level) * self.span_s / (self.levels - 1)


def measured_levels(window: Window, reads: np.ndarray, iterations: int = 30) -> Window:
    """The window with the levels a discrete device really holds: 1-D k-means of healthy
    cells' reads (started at the nominal levels). Multi-junction MRAM reads its levels
    through contacts, lines and its access transistor, so they sit off the even grid by
    more than a tolerance. Returns ``window`` unchanged when a level has no cell."""
    g = np.asarray(reads, dtype=float)
    g = g[np.isfinite(g)]
    centers = window.level_conductance(np.arange(window.levels)).astype(float)
    for _ in range(iterations):
        nearest = np.argmin(np.abs(g[:, None] - centers[None, :]), axis=1)
        counts = np.bincount(nearest, minlength=window.levels)
        if np.any(counts == 0):
            return window
        new = np.bincount(nearest, weights=g, minlength=window.levels) / counts
        if np.allclose(new, centers, rtol=1e-6, atol=0):
            break
        centers = new
    if np.any(np.diff(centers) <= 0):
        return window
    return Window(window.g_min_s, window.g_max_s, window.levels, tuple(float(c) for c in centers))


@dataclass
class Tile:
    """One physical array's worth of the logical matrix."""

    index: int
    """Tile number in the run (0, 1, ...): also the rig it goes to."""
    array: str
    """"differential", "E" (excitatory) or "I" (inhibitory)."""
    block: tuple[int, int]
    """(row block, column block) of the logical matrix."""
    row_unit: np.ndarray
    """(R,) presynaptic unit id on each physical row, -1 where unused."""
    col_unit: np.ndarray
    """(C,) postsynaptic unit id on each physical column, -1 where unused."""
    col_sign: np.ndarray
    """(C,) +1 (G+ or excitatory), -1 (G- or inhibitory), 0 unused."""
    target_s: np.ndarray
    """(R, C) conductance target, S (NaN on unused cells)."""
    level: np.ndarray
    """(R, C) int16 quantization level (-1 on unused cells)."""
    role: np.ndarray
    """(R, C) uint8 ROLE_* of each cell."""
    synapse: np.ndarray
    """(R, C) int64 index of the synapse in the map, -1 for none."""
    partner_col: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """(C,) the physical column of the other half of a differential pair, -1 for none."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.role.shape  # type: ignore[return-value]

    @property
    def n_synapses(self) -> int:
        return int((self.role == ROLE_SYNAPSE).sum())

    def active(self) -> np.ndarray:
        """(R, C) bool: the cells that are programmed or driven to off."""
        return self.role != ROLE_UNUSED

    def permute(self, row_perm: np.ndarray, col_perm: np.ndarray) -> Tile:
        """The same tile with logical row ``k`` on physical row ``row_perm[k]`` (and columns)."""
        rows, cols = self.shape
        inv_r = np.empty(rows, dtype=np.int64)
        inv_r[row_perm] = np.arange(rows)
        inv_c = np.empty(cols, dtype=np.int64)
        inv_c[col_perm] = np.arange(cols)
        partner = np.where(self.partner_col >= 0, col_perm[np.maximum(self.partner_col, 0)], -1)
        return Tile(
            index=self.index,
            array=self.array,
            block=self.block,
            row_unit=self.row_unit[inv_r],
            col_unit=self.col_unit[inv_c],
            col_sign=self.col_sign[inv_c],
            target_s=self.target_s[np.ix_(inv_r, inv_c)],
            level=self.level[np.ix_(inv_r, inv_c)],
            role=self.role[np.ix_(inv_r, inv_c)],
            synapse=self.synapse[np.ix_(inv_r, inv_c)],
            partner_col=partner[inv_c],
        )


@dataclass
class Mapping:
    """Every non-empty tile of a map, and how the map was laid out."""

    order: np.ndarray
    """(N,) unit ids in crossbar order."""
    tiles: list[Tile]
    layout: str
    window: Window
    scale_v: float
    """|weight| that maps to g_max, V."""
    tile_shape: tuple[int, int]
    empty_tiles: int
    """Tiles of the logical matrix that hold no synapse (not programmed)."""
    quantization_error_v: np.ndarray
    """(S,) weight after quantization minus the map's weight, V."""

    def weight_of(self, g_plus: np.ndarray, g_minus: np.ndarray | float) -> np.ndarray:
        """Read weight, V, of a differential pair (or E/I cells) of conductances in S."""
        return (np.asarray(g_plus) - np.asarray(g_minus)) / self.window.span_s * self.scale_v


def unit_order(cmap: ConnectivityMap, ordering: str) -> np.ndarray:
    """The units in crossbar order ("id" or "rcm")."""
    if ordering == "id":
        return cmap.units.copy()
    if ordering == "rcm":
        index = {int(u): k for k, u in enumerate(cmap.units)}
        r = np.array([index[int(u)] for u in cmap.pre], dtype=np.int64)
        c = np.array([index[int(u)] for u in cmap.post], dtype=np.int64)
        n = cmap.n_units
        graph = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(n, n))
        graph = (graph + graph.T).tocsr()
        perm = reverse_cuthill_mckee(graph, symmetric_mode=True)
        return cmap.units[perm]
    raise ConnectivityError(f"unknown ordering {ordering!r}: 'id' or 'rcm'")


def build_mapping(
    cmap: ConnectivityMap,
    window: Window,
    tile_shape: tuple[int, int],
    *,
    layout: str = "differential",
    ordering: str = "id",
    weight_scale_v: float = 0.0,
    min_level: int = 1,
) -> Mapping:
    """Lay ``cmap`` out as quantized conductance targets on tiles of ``tile_shape``."""
    rows, cols = tile_shape
    if layout not in ("differential", "ei"):
        raise ConnectivityError(f"unknown layout {layout!r}: 'differential' or 'ei'")
    if layout == "differential" and cols % 2:
        raise ConnectivityError(
            f"a differential layout needs an even number of columns per tile, got {cols}"
        )
    if cmap.n_synapses == 0:
        raise ConnectivityError("the map holds no synapse: nothing to imprint")
    if window.levels < 2 or not 0 <= min_level < window.levels:
        raise ConnectivityError(f"min_level {min_level} outside 0..{window.levels - 1}")
    order = unit_order(cmap, ordering)
    pos = {int(u): k for k, u in enumerate(order)}
    n = len(order)
    scale = weight_scale_v or float(np.max(np.abs(cmap.weight_v)))
    if not scale > 0:
        raise ConnectivityError("every weight is zero: nothing to imprint")
    magnitude = np.abs(cmap.weight_v)
    level = np.clip(np.rint(magnitude / scale * (window.levels - 1)), min_level, window.levels - 1)
    level = level.astype(np.int16)
    quantized = level / (window.levels - 1) * scale * np.sign(cmap.weight_v)
    quantization_error = quantized - cmap.weight_v
    r = np.array([pos[int(u)] for u in cmap.pre], dtype=np.int64)
    p = np.array([pos[int(u)] for u in cmap.post], dtype=np.int64)
    positive = cmap.weight_v >= 0
    if layout == "differential":
        arrays = [("differential", 2 * n, 2 * p + (~positive), np.ones(cmap.n_synapses, bool))]
    else:
        arrays = [("E", n, p, positive), ("I", n, p, ~positive)]
    tiles: list[Tile] = []
    empty = 0
    for name, n_cols, logical_col, member in arrays:
        for rb in range(-(-n // rows)):
            for cb in range(-(-n_cols // cols)):
                tile = _tile(
                    len(tiles), name, (rb, cb), (rows, cols), order, n_cols, layout,
                    r, logical_col, member, level, window,
                )  # fmt: skip
                if tile is None:
                    empty += 1
                else:
                    tiles.append(tile)
    return Mapping(order, tiles, layout, window, scale, tile_shape, empty, quantization_error)


def _tile(
    index: int,
    array: str,
    block: tuple[int, int],
    shape: tuple[int, int],
    order: np.ndarray,
    n_cols: int,
    layout: str,
    syn_row: np.ndarray,
    syn_col: np.ndarray,
    member: np.ndarray,
    level: np.ndarray,
    window: Window,
) -> Tile | None:
    rows, cols = shape
    rb, cb = block
    r0, c0 = rb * rows, cb * cols
    in_tile = (
        member & (syn_row >= r0) & (syn_row < r0 + rows) & (syn_col >= c0) & (syn_col < c0 + cols)
    )
    if not in_tile.any():
        return None
    n = len(order)
    row_unit = np.full(rows, -1, dtype=np.int64)
    used_r = np.arange(r0, min(r0 + rows, n))
    row_unit[used_r - r0] = order[used_r]
    col_unit = np.full(cols, -1, dtype=np.int64)
    col_sign = np.zeros(cols, dtype=np.int8)
    partner = np.full(cols, -1, dtype=np.int64)
    used_c = np.arange(c0, min(c0 + cols, n_cols))
    if layout == "differential":
        col_unit[used_c - c0] = order[used_c // 2]
        col_sign[used_c - c0] = np.where(used_c % 2 == 0, 1, -1)
        partner[used_c - c0] = (used_c ^ 1) - c0
    else:
        col_unit[used_c - c0] = order[used_c]
        col_sign[used_c - c0] = 1 if array == "E" else -1
    active = (row_unit >= 0)[:, None] & (col_unit >= 0)[None, :]
    role = np.where(active, ROLE_OFF, ROLE_UNUSED).astype(np.uint8)
    lev = np.where(active, 0, -1).astype(np.int16)
    synapse = np.full(shape, -1, dtype=np.int64)
    k = np.flatnonzero(in_tile)
    rr, cc = syn_row[k] - r0, syn_col[k] - c0
    role[rr, cc] = ROLE_SYNAPSE
    lev[rr, cc] = level[k]
    synapse[rr, cc] = k
    if layout == "differential":
        pc = partner[cc]
        role[rr, pc] = ROLE_PARTNER
        synapse[rr, pc] = k
    target = np.where(active, window.level_conductance(np.maximum(lev, 0)), np.nan)
    return Tile(index, array, block, row_unit, col_unit, col_sign, target, lev, role, synapse,
                partner)  # fmt: skip
