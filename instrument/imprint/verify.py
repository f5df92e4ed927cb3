"""Verification after programming: a final read of the whole array, error and yield per
cell, and a functional check (input vectors on the rows, column currents against the
ideal weight x input product).

The functional check drives the rows with ``x_i * V_read`` (``x`` random 0/1 spike
vectors) and reads every column current at once on a line driver that can
(:class:`~drivers.line_driver.LineDriver`); without one, the column currents are computed
from the final per-cell read (said in the report). For each postsynaptic unit of a tile the
read weight is ``sum I(G+ columns) - sum I(G- columns)`` (differential) or its column
current (E/I arrays), compared with the same sum over the targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from instrument.imprint.journal import FAILED, SKIPPED, VERIFIED
from instrument.imprint.mapping import ROLE_OFF, ROLE_PARTNER, ROLE_SYNAPSE
from instrument.imprint.write_verify import WriteVerify

ColumnReader = Callable[[np.ndarray], np.ndarray]
"""Row voltages (R,) V -> column currents (C,) A."""


@dataclass
class CellStats:
    """Error and yield of one tile (or all tiles) at the final read."""

    cells: int
    programmable: int
    """Cells not found stuck (the denominator of the yield)."""
    within: int
    """Programmable cells whose final read is within tolerance."""
    synapse_cells: int
    synapse_within: int
    off_cells: int
    off_within: int
    verified: int
    failed: int
    skipped: int
    pulses: int
    median_error_s: float
    p95_error_s: float

    @property
    def yield_programmable(self) -> float:
        return self.within / self.programmable if self.programmable else float("nan")

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = dict(self.__dict__)
        out["yield_programmable"] = self.yield_programmable
        return out


def cell_stats(rows: np.ndarray, final_g: np.ndarray, algorithm: WriteVerify) -> CellStats:
    """Stats of journal ``rows`` against ``final_g`` (whole-array read of their tile(s))."""
    g = final_g
    within = algorithm.verified(g, rows["target_s"], rows["role"])
    programmable = rows["state"] != SKIPPED
    programmed = (rows["role"] == ROLE_SYNAPSE) | (rows["role"] == ROLE_PARTNER)
    off = rows["role"] == ROLE_OFF
    err = np.abs(g - rows["target_s"])[programmed & programmable]
    return CellStats(
        cells=int(rows.size),
        programmable=int(programmable.sum()),
        within=int((within & programmable).sum()),
        synapse_cells=int((programmed & programmable).sum()),
        synapse_within=int((within & programmed & programmable).sum()),
        off_cells=int((off & programmable).sum()),
        off_within=int((within & off & programmable).sum()),
        verified=int((rows["state"] == VERIFIED).sum()),
        failed=int((rows["state"] == FAILED).sum()),
        skipped=int((rows["state"] == SKIPPED).sum()),
        pulses=int(rows["attempts"].sum()),
        median_error_s=float(np.median(err)) if err.size else float("nan"),
        p95_error_s=float(np.percentile(err, 95)) if err.size else float("nan"),
    )


def read_values(rows: np.ndarray, array_g: np.ndarray) -> np.ndarray:
    """Each row's cell value in a (R, C) whole-array read."""
    return array_g[rows["row"].astype(int), rows["col"].astype(int)]


def column_reader_from_read(array_g: np.ndarray) -> ColumnReader:
    """Column currents computed from a per-cell read (no line driver)."""
    return lambda row_v: row_v @ np.nan_to_num(array_g)


def functional_check(
    rows: np.ndarray,
    shape: tuple[int, int],
    read_columns: ColumnReader,
    read_voltage_v: float,
    *,
    vectors: int = 16,
    seed: int = 1,
    density: float = 0.3,
    intended_s: np.ndarray | None = None,
    skip_rows: np.ndarray | None = None,
) -> dict[str, float]:
    """Random spike vectors on the tile's active rows: read weight sums against ideal.

    The ideal is ``intended_s`` per row (the quantized weight's conductances, before any
    pair compensation moved a cell to make up for its stuck partner), else the targets.
    Errors: RMS relative to the ideal's RMS (large for a sparse tile whose ideal is mostly
    zero), and RMS relative to full scale (every driven input on a full-window weight).
    """
    n_rows, n_cols = shape
    target = np.zeros(shape)
    ideal_s = rows["target_s"] if intended_s is None else intended_s
    target[rows["row"], rows["col"]] = ideal_s
    active_rows = np.unique(rows["row"])
    if skip_rows is not None:  # e.g. rows holding a stuck cell: what programming alone gives
        active_rows = np.setdiff1d(active_rows, skip_rows)
    if not active_rows.size:
        return {"vectors": 0, "relative_rms_error": float("nan"), "correlation": float("nan"),
                "gain": float("nan"), "rms_error_full_scale": float("nan")}  # fmt: skip
    posts = np.unique(rows["post"])
    sign = np.zeros(n_cols)
    post_of = np.full(n_cols, -1, dtype=np.int64)
    sign[rows["col"]] = rows["sign"]
    post_of[rows["col"]] = rows["post"]
    combine = np.zeros((n_cols, posts.size))
    for k, u in enumerate(posts):
        cols = np.flatnonzero(post_of == u)
        combine[cols, k] = sign[cols]
    rng = np.random.default_rng(seed)
    measured, ideal = [], []
    for _ in range(vectors):
        x = np.zeros(n_rows)
        x[active_rows] = rng.random(active_rows.size) < density
        row_v = x * read_voltage_v
        measured.append(read_columns(row_v) @ combine)
        ideal.append((row_v @ target) @ combine)
    m, i = np.concatenate(measured), np.concatenate(ideal)
    norm = float(np.linalg.norm(i)) or 1.0
    span = float(np.nanmax(ideal_s) - np.nanmin(ideal_s)) or 1.0
    full_scale = span * read_voltage_v * density * active_rows.size
    corr = float(np.corrcoef(m, i)[0, 1]) if m.size > 1 and np.std(i) > 0 else float("nan")
    return {
        "vectors": vectors,
        "relative_rms_error": float(np.linalg.norm(m - i) / norm),
        "rms_error_full_scale": float(np.sqrt(np.mean((m - i) ** 2)) / full_scale),
        "correlation": corr,
        "gain": float(np.dot(m, i) / np.dot(i, i)) if np.dot(i, i) > 0 else float("nan"),
    }
