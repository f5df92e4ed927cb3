"""Crossbar calibration: read offset, line and contact resistance, and every cell's window.

Measured through the rig (SMU + selector board) with the SMU's calibration applied
(:class:`~calibration.smu.SmuCorrection`):

* **read offset** — what the rig reads at the read voltage with the array disconnected;
* **line tests** (``:ROUT:LINE``) — every row and column from its driver end to its
  far-end pad: ``M = contact + n_segments x r_segment`` per line (slope of a small
  ±V sweep, so the SMU's offsets cancel);
* **far-end reads** (``:ROUT:CELL:FAR``, 1T1R arrays) — a sample of cells read from
  both ends of their row (and of their column): the cell's own conductance cancels in
  the difference of the two resistances, which grows by ``2 r_segment`` per cell along
  the line. With ``M`` this separates each line's contact from the per-segment
  resistance, and gives the wire resistance in series with every cell::

      R_wire(i, j) = contact_row[i] + r_row (j + 1) + contact_col[j] + r_col (rows - i)

* **cell windows** (optional, rewrites every cell) — every cell pulsed to the top of its
  range and read, then to the bottom and read (the technology's probe pulses, repeated):
  its window, and **stuck** cells (those that did not move: +1 stuck high, -1 stuck low).
  The array is left at the bottom of its window.

:class:`RigCorrection` turns a read current into the cell's conductance (device and its
access transistor, which no terminal of a 1T1R cell can separate) and is what the rig
applies (:attr:`drivers.crossbar_rig.CrossbarRig.read_correction`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from calibration.progress import Progress
from calibration.records import (
    CalibrationError,
    CalibrationRecord,
    InstrumentIdentity,
    format_utc,
    utc_now,
)
from calibration.smu import SmuCorrection
from drivers.crossbar_rig import CrossbarRig
from drivers.selector import BIAS_SCHEMES

log = logging.getLogger(__name__)


STUCK_HIGH, STUCK_LOW = 1, -1


@dataclass(frozen=True)
class PulseRecipe:
    """Pulses that move a healthy cell one way: amplitude (V, signed), width (s), repeats."""

    amplitude_v: float
    width_s: float
    repeats: int = 1


@dataclass(frozen=True)
class CrossbarSettings:
    """How a crossbar calibration is taken (SI units)."""

    architecture: str = "1t1r"
    """"1t1r" or "passive" (no far-end reads on passive arrays)."""
    technology: str = ""
    """The array's memory technology (kept in the record: its cell windows are only valid for
    the array that was measured)."""
    offset_readings: int = 16
    line_levels: int = 6
    """Line-test levels (±, never 0 V)."""
    line_current_fraction: float = 0.3
    """Line-test current at most this fraction of the compliance, for a line of
    ``line_min_ohm``."""
    line_min_ohm: float = 20.0
    far_cells: int = 128
    """Cells sampled for far-end reads (a regular grid)."""
    far_repeats: int = 4
    cells: bool = True
    """Characterize every cell's window (rewrites the array)."""
    up: PulseRecipe | None = None
    down: PulseRecipe | None = None
    window_rounds: int = 4
    """The up (down) recipe is applied this many times before reading the top (bottom)."""
    window_g_min_s: float = 0.0
    """The technology's window (classifies stuck cells as high or low), S."""
    window_g_max_s: float = 0.0
    moved_fraction: float = 0.05
    """A cell moved if top - bottom exceeds this fraction of its reading…"""
    moved_window_fraction: float = 0.02
    """…or this fraction of the technology's window."""
    read_bias: str = "ground"
    pulse_bias: str = "v/3"

    def __post_init__(self) -> None:
        if self.architecture not in ("1t1r", "passive"):
            raise CalibrationError(f"architecture {self.architecture!r}: '1t1r' or 'passive'")
        for name in ("read_bias", "pulse_bias"):
            if getattr(self, name) not in BIAS_SCHEMES:
                raise CalibrationError(f"{name} must be one of {BIAS_SCHEMES}")
        if self.cells and (self.up is None or self.down is None):
            raise CalibrationError("cell windows need the up and down pulse recipes")
        if self.line_levels < 2 or self.line_levels % 2:
            raise CalibrationError("line_levels must be even and >= 2")


def _slope(v: np.ndarray, i: np.ndarray) -> tuple[float, float]:
    """Slope of ``i`` against ``v`` and the variance of one reading about the line."""
    dv = v - v.mean()
    s = float(dv @ (i - i.mean())) / float(dv @ dv)
    resid = i - i.mean() - s * dv
    return s, float(resid @ resid) / max(v.size - 2, 1)


def _through_origin(y: np.ndarray, z: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted fit ``y = r z``: r and its standard uncertainty (from the scatter)."""
    keep = np.isfinite(y) & np.isfinite(w) & (z != 0)
    y, z, w = y[keep], z[keep], w[keep]
    if y.size < 3:
        return math.nan, math.nan
    szz = float(np.sum(w * z * z))
    r = float(np.sum(w * z * y)) / szz
    resid = y - r * z
    chi2 = float(np.sum(w * resid * resid)) / (y.size - 1)
    return r, math.sqrt(chi2 / szz)


def _sample_grid(rows: int, cols: int, count: int) -> list[tuple[int, int]]:
    """About ``count`` cells on a regular grid covering the array."""
    step = max(1, int(math.sqrt(rows * cols / max(count, 1))))
    return [(r, c) for r in range(step // 2, rows, step) for c in range(step // 2, cols, step)]


class _RawReads:
    """Single reads through the rig's instruments, corrected for the SMU only."""

    def __init__(self, rig: CrossbarRig, smu: SmuCorrection, offset_a: float) -> None:
        self.rig, self.smu, self.offset_a = rig, smu, offset_a
        self.read_v = rig.limits.read_voltage_v

    def resistance(self) -> float:
        """Apparent resistance of whatever is routed (one reading at the read voltage), ohm."""
        reading = self.rig.smu.read_current(self.read_v)
        g = float(
            self.smu.conductance(np.array([reading.current_a]), self.read_v, self.offset_a)[0]
        )
        return 1.0 / g if g > 0 else math.inf


def calibrate_crossbar(
    rig: CrossbarRig,
    smu: SmuCorrection,
    settings: CrossbarSettings | None = None,
    *,
    operator: str = "",
    valid_days: float = 7.0,
    software_version: str = "",
    progress: Progress | None = None,
) -> CalibrationRecord:
    """Calibrate the crossbar on ``rig`` (its read correction must be off: raw reads).

    ``smu`` is the rig's SMU calibration. The output is left off and every line grounded.
    """
    settings = settings or CrossbarSettings()
    if rig.read_correction is not None:
        raise CalibrationError("the rig already corrects its reads; calibrate with raw reads")
    selector, instrument = rig.selector, rig.smu
    identities = {
        "selector": InstrumentIdentity.from_idn(selector.identify()),
        "smu": InstrumentIdentity.from_idn(instrument.identify()),  # type: ignore[attr-defined]
    }
    temperature = selector.temperature_c()
    rows, cols = rig.rows, rig.cols
    limits = rig.limits
    far = settings.architecture == "1t1r"
    grid = _sample_grid(rows, cols, settings.far_cells) if far else []
    steps = 1 + rows + cols + (len(grid) if far else 0) + (4 if settings.cells else 0)
    done = 0
    started = time.monotonic()

    def step(what: str, count: int = 1) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, steps, what)

    bias_before = selector.bias
    values: dict[str, np.ndarray | float] = {}
    unc: dict[str, np.ndarray | float] = {}
    info: dict[str, object] = {"settings": asdict(settings), "smu_record": smu.record_id}
    try:
        selector.bias = settings.read_bias
        # --- read offset: the array disconnected ------------------------------------------
        selector.ground_all()
        offsets = np.array(
            [
                instrument.read_current(limits.read_voltage_v).current_a
                for _ in range(settings.offset_readings)
            ]
        )
        read_offset = float(offsets.mean())
        values["read_offset_a"] = read_offset
        unc["read_offset_a"] = float(offsets.std(ddof=1) / math.sqrt(offsets.size))
        step("read offset")
        # --- line tests -------------------------------------------------------------------
        v_line = min(
            limits.read_voltage_v,
            settings.line_current_fraction * limits.compliance_a * settings.line_min_ohm,
        )
        half = settings.line_levels // 2
        mags = v_line * np.arange(1, half + 1) / half
        levels = np.concatenate([-mags[::-1], mags])
        slopes: dict[str, np.ndarray] = {}
        variances = []
        for kind, count in (("row", rows), ("col", cols)):
            slopes[kind] = np.empty(count)
            for n in range(count):
                selector.connect_line(kind, n)
                i = np.array([instrument.read_current(float(v)).current_a for v in levels])
                slopes[kind][n], variance = _slope(levels, i)
                variances.append(variance)
                step(f"{kind} line {n}")
        # every line test reads about the same current: pool the scatter (many degrees of
        # freedom) instead of trusting each line's few; the SMU's gain adds its own
        u_slope = math.sqrt(
            float(np.mean(variances)) / float(np.sum((levels - levels.mean()) ** 2))
        )
        rel_k = smu.conductance_gain_u / smu.conductance_gain
        line = {}
        for kind, s in slopes.items():
            m = smu.conductance_gain / s
            line[kind] = (m, m * np.hypot(u_slope / s, rel_k))
        values["line_row_ohm"], unc["line_row_ohm"] = line["row"]
        values["line_col_ohm"], unc["line_col_ohm"] = line["col"]
        info["line_test_levels_v"] = [float(v) for v in levels]
        # --- cell windows: top --------------------------------------------------------------
        cells = [(r, c) for r in range(rows) for c in range(cols)]
        reads = _RawReads(rig, smu, read_offset)
        if settings.cells:
            initial = _array_g(rig, smu, read_offset, settings)
            step("cells read")
            _pulse_all(rig, cells, settings.up, settings, settings.window_rounds)  # type: ignore[arg-type]
            top = _array_g(rig, smu, read_offset, settings)
            step("cells at the top of their window")
        # --- far-end reads (at the top: the lowest relative read noise) -----------------
        r_row = r_col = u_r_row = u_r_col = math.nan
        if far:
            near_r, row_far_r, col_far_r = [], [], []
            for r, c in grid:
                n_sum = rf_sum = cf_sum = 0.0
                for _ in range(settings.far_repeats):
                    selector.select_cell(r, c)
                    n_sum += reads.resistance()
                    selector.select_cell_far(r, c, "row")
                    rf_sum += reads.resistance()
                    selector.select_cell_far(r, c, "col")
                    cf_sum += reads.resistance()
                k = settings.far_repeats
                near_r.append(n_sum / k)
                row_far_r.append(rf_sum / k)
                col_far_r.append(cf_sum / k)
                step("far-end reads")
            g_rows = np.array([r for r, _ in grid])
            g_cols = np.array([c for _, c in grid])
            near = np.array(near_r)
            weight = 1.0 / near**2  # read noise is relative: a resistance's error grows with it
            m_row, m_col = line["row"][0], line["col"][0]
            # near - row_far = contact_row + r (2j + 2 - cols) = M_row - r (2 cols - 2j - 2)
            r_row, u_r_row = _through_origin(
                m_row[g_rows] - (near - np.array(row_far_r)), 2.0 * (cols - 1 - g_cols), weight
            )
            # near - col_far = contact_col + r (rows - 2i) = M_col - 2 r i
            r_col, u_r_col = _through_origin(
                m_col[g_cols] - (near - np.array(col_far_r)), 2.0 * g_rows, weight
            )
            info["far_cells"] = len(grid)
        values["segment_row_ohm"], unc["segment_row_ohm"] = r_row, u_r_row
        values["segment_col_ohm"], unc["segment_col_ohm"] = r_col, u_r_col
        m_row, u_m_row = line["row"]
        m_col, u_m_col = line["col"]
        contact_row = m_row - cols * r_row
        contact_col = m_col - rows * r_col
        values["contact_row_ohm"] = contact_row
        values["contact_col_ohm"] = contact_col
        unc["contact_row_ohm"] = np.hypot(u_m_row, cols * u_r_row)
        unc["contact_col_ohm"] = np.hypot(u_m_col, rows * u_r_col)
        i = np.arange(rows)[:, None]
        j = np.arange(cols)[None, :]
        wire = (m_row[:, None] - r_row * (cols - 1 - j)) + (m_col[None, :] - r_col * i)
        values["wire_ohm"] = wire
        unc["wire_ohm"] = np.sqrt(
            u_m_row[:, None] ** 2
            + u_m_col[None, :] ** 2
            + (u_r_row * (cols - 1 - j)) ** 2
            + (u_r_col * i) ** 2
        )
        # --- cell windows: bottom ------------------------------------------------------------
        if settings.cells:
            _pulse_all(rig, cells, settings.down, settings, settings.window_rounds)  # type: ignore[arg-type]
            bottom = _array_g(rig, smu, read_offset, settings)
            step("cells at the bottom of their window")
            correct = RigCorrection(smu, wire if far else None, read_offset)
            g_initial, g_top, g_bottom = (
                correct.from_apparent(g, None if not far else wire) for g in (initial, top, bottom)
            )
            span = max(settings.window_g_max_s - settings.window_g_min_s, 0.0)
            moved = (g_top - g_bottom) > np.maximum(
                settings.moved_fraction * np.abs(g_top), settings.moved_window_fraction * span
            )
            mid = (
                0.5 * (settings.window_g_min_s + settings.window_g_max_s)
                if span > 0
                else float(np.median(g_top))
            )
            status = np.zeros((rows, cols), dtype=np.int8)
            level = 0.5 * (g_top + g_bottom)
            status[~moved & (level >= mid)] = STUCK_HIGH
            status[~moved & (level < mid)] = STUCK_LOW
            values["g_initial_s"] = g_initial
            values["g_top_s"] = g_top
            values["g_bottom_s"] = g_bottom
            values["cell_status"] = status
            info["stuck_high"] = int((status == STUCK_HIGH).sum())
            info["stuck_low"] = int((status == STUCK_LOW).sum())
            info["median_top_s"] = float(np.median(g_top[status == 0])) if moved.any() else None
            info["median_bottom_s"] = (
                float(np.median(g_bottom[status == 0])) if moved.any() else None
            )
            info["recipes"] = {"up": asdict(settings.up), "down": asdict(settings.down)}  # type: ignore[arg-type]
    finally:
        rig.shutdown()
        try:
            selector.bias = bias_before
        except Exception as exc:
            log.warning("crossbar calibration: could not restore the bias: %s", exc)
    info.update(
        duration_s=time.monotonic() - started,
        read_voltage_v=limits.read_voltage_v,
        rows=rows,
        cols=cols,
        wire_model="R_wire(i, j) = contact_row[i] + segment_row * (j + 1) + contact_col[j] + "
        "segment_col * (rows - i)",
    )
    units = {key: "ohm" for key in values if key.endswith("_ohm")}
    units.update({key: "S" for key in values if key.endswith("_s")})
    units.update(read_offset_a="A", cell_status="+1 stuck high, -1 stuck low, 0 ok")
    return CalibrationRecord(
        kind="crossbar",
        identities=identities,
        primary="selector",
        created_utc=format_utc(utc_now()),
        valid_days=valid_days,
        values=values,
        uncertainties=unc,
        units=units,
        operator=operator,
        temperature_c=temperature,
        info=info,
        software_version=software_version,
    )


def _array_g(
    rig: CrossbarRig, smu: SmuCorrection, offset_a: float, settings: CrossbarSettings
) -> np.ndarray:
    """Apparent conductance of every cell (SMU-corrected, wires still in), S."""
    rig.selector.bias = settings.read_bias
    result = rig.read_cells([(r, c) for r in range(rig.rows) for c in range(rig.cols)])
    g = smu.conductance(result.current_a, rig.limits.read_voltage_v, offset_a)
    return np.asarray(g).reshape(rig.rows, rig.cols)


def _pulse_all(
    rig: CrossbarRig,
    cells: list[tuple[int, int]],
    recipe: PulseRecipe,
    settings: CrossbarSettings,
    rounds: int,
) -> None:
    rig.selector.bias = settings.pulse_bias
    visits = [cell for cell in cells for _ in range(recipe.repeats * rounds)]
    rig.pulse_train(visits, [recipe.amplitude_v] * len(visits), recipe.width_s, read=False)


# --- applying records ---------------------------------------------------------------------------


class RigCorrection:
    """Read current → cell conductance: the SMU's offsets and gain, then (1T1R) the wires.

    ``G_app = (I - read_offset) / (k (V + o_V'))``; ``G_cell = G_app / (1 - G_app R_wire)``.
    Implements :class:`drivers.crossbar_rig.ReadCorrection`.
    """

    def __init__(
        self,
        smu: SmuCorrection,
        wire_ohm: np.ndarray | None = None,
        read_offset_a: float | None = None,
        *,
        record_ids: tuple[str, ...] = (),
    ) -> None:
        self.smu = smu
        self.wire_ohm = None if wire_ohm is None else np.asarray(wire_ohm, dtype=float)
        self.read_offset_a = read_offset_a
        self.record_ids = record_ids or ((smu.record_id,) if smu.record_id else ())

    @classmethod
    def from_records(
        cls,
        smu: CalibrationRecord,
        crossbar: CalibrationRecord | None = None,
        *,
        wire: bool = True,
    ) -> RigCorrection:
        """The correction of a rig from its SMU record and (optionally) its crossbar record;
        ``wire`` False keeps the array's wires in the reads (what an analog MVM through the
        same lines sees)."""
        correction = SmuCorrection.from_record(smu)
        if crossbar is None:
            return cls(correction)
        if crossbar.kind != "crossbar":
            raise CalibrationError(f"record {crossbar.record_id} is not a crossbar record")
        wire_ohm = np.asarray(crossbar.value("wire_ohm"))
        use_wire = wire and bool(np.all(np.isfinite(wire_ohm)))
        return cls(
            correction,
            wire_ohm if use_wire else None,
            float(crossbar.value("read_offset_a")),
            record_ids=(smu.record_id, crossbar.record_id),
        )

    def from_apparent(self, g_app: np.ndarray, wire_ohm: np.ndarray | None) -> np.ndarray:
        """Remove the wires from apparent conductances (same shape as ``wire_ohm``)."""
        if wire_ohm is None:
            return np.asarray(g_app, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return g_app / (1.0 - g_app * wire_ohm)

    def conductance(
        self, cells: np.ndarray | None, current_a: np.ndarray, voltage_v: float
    ) -> np.ndarray:
        g_app = self.smu.conductance(current_a, voltage_v, self.read_offset_a)
        if self.wire_ohm is None or cells is None:
            return np.asarray(g_app, dtype=float)
        cells = np.asarray(cells, dtype=np.intp).reshape(-1, 2)
        if cells.shape[0] and (
            cells[:, 0].max() >= self.wire_ohm.shape[0]
            or cells[:, 1].max() >= self.wire_ohm.shape[1]
        ):
            raise CalibrationError(
                f"cells outside the calibrated {self.wire_ohm.shape} array; recalibrate"
            )
        return self.from_apparent(g_app, self.wire_ohm[cells[:, 0], cells[:, 1]])
