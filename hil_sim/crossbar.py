"""A memory crossbar: cells of one technology on row and column lines, 1T1R or passive.

Electrical picture (what the emulated selector board and SMU act on):

* Every row line is driven from its left end and every column line from its
  bottom end, each through a contact resistance; between neighbouring cells a
  line has ``line_resistance_ohm`` per segment.
* The SMU drives the selected row (HI) and takes the current of the selected
  column(s) back through its LO terminal at 0 V: that is the current it reports.
  Unselected lines are held by the selector board's bias drivers (ground, V/2,
  V/3: rows at V/3 and columns at 2V/3) or float.
* **1T1R**: the access transistor of every cell on an unselected row is off, so
  only the selected cell conducts (in series with its access transistor and the
  line resistance). Flash cells are transistors themselves (NOR array): a gate
  pulse (|V| > 1 V) goes to the word line; a drain read sees the channel.
* **Passive**: every cell conducts, so reads include sneak currents through
  unselected cells; the resistor network (2 x rows x cols nodes) is solved with
  a sparse LU factorization, kept between calls and updated with low-rank
  (Woodbury) corrections when a few cells change.

Also the physics-level imprinting API: :meth:`CrossbarArray.apply_line_voltages`
drives all rows and columns at once; cells switch only where the voltage across
them exceeds the technology's threshold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from hil_sim.devices.base import DeviceArray
from hil_sim.devices.flash import FlashArray

Bias = Literal["ground", "float", "half", "third"]

BIAS_FRACTIONS: dict[str, tuple[float, float]] = {
    "ground": (0.0, 0.0),
    "half": (0.5, 0.5),
    "third": (1.0 / 3.0, 2.0 / 3.0),
}
"""(unselected rows, unselected columns) as fractions of the drive voltage; "float" drives none."""

ACCESS_RESISTANCE_OHM = {"rram": 500.0, "pcm": 500.0, "mram": 50.0, "flash": 0.0}
"""On-resistance of the 1T1R access transistor per technology (flash cells are the transistor)."""


@dataclass(frozen=True)
class Route:
    """What the selector board connects the SMU to.

    ``kind`` "open": nothing; "cell": row ``row`` to HI and column ``col`` to LO;
    "row": row ``row`` to HI and every column to LO (their currents add); "line": a line
    test — HI at the driver end of row ``row`` (or, with ``row`` -1, of column ``col``), LO
    at that line's far-end test pad (calibration of line and contact resistance).
    ``end`` of a cell route: "near" (both lines from their driver ends), "row_far" (the
    row reached from its far-end pad) or "col_far" (the column from its far-end pad).
    """

    kind: Literal["open", "cell", "row", "line"] = "open"
    row: int = -1
    col: int = -1
    bias: Bias = "ground"
    end: Literal["near", "row_far", "col_far"] = "near"


class CrossbarArray:
    """The array: device physics, wiring and the network solve. Thread-safe (one lock)."""

    def __init__(
        self,
        devices: DeviceArray,
        *,
        architecture: Literal["1t1r", "passive"] = "1t1r",
        line_resistance_ohm: float = 1.0,
        contact_resistance_ohm: float = 5.0,
        access_resistance_ohm: float | None = None,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if architecture not in ("1t1r", "passive"):
            raise ValueError(f"architecture must be '1t1r' or 'passive', got {architecture!r}")
        if architecture == "passive" and isinstance(devices, FlashArray):
            raise ValueError("flash cells are transistors: a flash array must be '1t1r' (NOR)")
        if line_resistance_ohm < 0 or contact_resistance_ohm <= 0:
            raise ValueError("line resistance must be >= 0 and contact resistance > 0")
        rng = rng or np.random.default_rng(0)
        self.devices = devices
        self.rows, self.cols = devices.shape
        self.technology = devices.technology
        self.architecture = architecture
        self.line_resistance_ohm = line_resistance_ohm
        self.rc_row = contact_resistance_ohm * np.exp(0.2 * rng.standard_normal(self.rows))
        """Contact resistance of each row line's driver end, ohm (hidden truth)."""
        self.rc_col = contact_resistance_ohm * np.exp(0.2 * rng.standard_normal(self.cols))
        """Contact resistance of each column line's driver end, ohm (hidden truth)."""
        self.access_resistance_ohm = (
            ACCESS_RESISTANCE_OHM[self.technology]
            if access_resistance_ohm is None
            else access_resistance_ohm
        )
        self.rng = rng
        self.clock = clock
        self.lock = threading.RLock()
        i = np.arange(self.rows)[:, None]
        j = np.arange(self.cols)[None, :]
        self._r_series = (
            self.rc_row[:, None]
            + self.rc_col[None, :]
            + line_resistance_ohm * ((j + 1) + (self.rows - i))
            + self.access_resistance_ohm
        )
        """Resistance in series with each cell of a 1T1R array (contacts, lines, access), ohm."""
        self._r_series_far = {
            "row_far": self._r_series
            - self.rc_row[:, None]
            - line_resistance_ohm * (j + 1)
            + line_resistance_ohm * (self.cols - 1 - j),
            "col_far": self._r_series
            - self.rc_col[None, :]
            - line_resistance_ohm * (self.rows - i)
            + line_resistance_ohm * i,
        }
        """The same with the row (or column) reached from its far-end test pad (no contact
        there: the test board bonds the far ends straight to its test switches), ohm."""
        self.pulses_applied = 0
        self._network = _PassiveNetwork(self) if architecture == "passive" else None

    # --- truth ------------------------------------------------------------------------
    def conductance(self) -> np.ndarray:
        """Every cell's true read conductance now (no series resistance, no noise), S."""
        with self.lock:
            return self.devices.conductance(self.clock())

    @property
    def stuck(self) -> np.ndarray:
        """Stuck cells: +1 stuck on, -1 stuck off, 0 free."""
        return self.devices.stuck

    def check_route(self, route: Route) -> None:
        """Raise ValueError when ``route`` names a line that does not exist."""
        if route.kind == "open":
            return
        if route.kind == "line":
            if route.row >= 0 and route.row >= self.rows:
                raise ValueError(f"row {route.row} outside 0..{self.rows - 1}")
            if route.row < 0 and not 0 <= route.col < self.cols:
                raise ValueError(f"column {route.col} outside 0..{self.cols - 1}")
            return
        if route.end != "near" and (route.kind != "cell" or self._network is not None):
            raise ValueError("far-end reads are of single cells of a 1T1R array")
        if not 0 <= route.row < self.rows:
            raise ValueError(f"row {route.row} outside 0..{self.rows - 1}")
        if route.kind == "cell" and not 0 <= route.col < self.cols:
            raise ValueError(f"column {route.col} outside 0..{self.cols - 1}")
        if route.bias != "float" and route.bias not in BIAS_FRACTIONS:
            raise ValueError(f"unknown bias {route.bias!r}")

    def line_resistance(self, route: Route) -> float:
        """Resistance of a line test: the line's driver-end contact and its whole length to
        the far-end pad, ohm (the cells on it are in parallel only through several devices
        in series, tens of kilohms against tens of ohms: left out)."""
        if route.row >= 0:
            return float(self.rc_row[route.row] + self.line_resistance_ohm * self.cols)
        return float(self.rc_col[route.col] + self.line_resistance_ohm * self.rows)

    # --- what the instruments do --------------------------------------------------------
    def current(self, route: Route, v: float) -> float:
        """Current the SMU sees with ``v`` on the selected row (noise-free, no side effects), A."""
        with self.lock:
            self.check_route(route)
            if route.kind == "open" or v == 0.0:
                return 0.0
            if route.kind == "line":
                return v / self.line_resistance(route)
            t = self.clock()
            if self.devices.gate_pulse(v):
                cols = slice(None) if route.kind == "row" else slice(route.col, route.col + 1)
                gate = np.zeros((self.rows, self.cols))
                gate[route.row, cols] = v
                return float(self.devices.current(gate, t)[route.row, cols].sum())
            if self._network is None:
                return float(self._series_currents(route, v, t).sum())
            return self._network.measured_current(route, v, t)

    def read(self, route: Route, v: float) -> float:
        """One read: :meth:`current` plus the selected cells' read noise, A."""
        with self.lock:
            self.check_route(route)
            if route.kind in ("open", "line") or v == 0.0 or self.devices.gate_pulse(v):
                return self.current(route, v)
            t = self.clock()
            index = self._index(route)
            g = self.devices.conductance(t, index)
            sigma = self.devices.read_sigma(g, t)
            if self._network is None:
                cell_currents = self._series_currents(route, v, t)
                ideal = float(cell_currents.sum())
            else:
                ideal, v_cells = self._network.solve_route(route, v, t)
                cell_currents = v_cells[index] * g
            spread = float(np.sqrt(np.sum((cell_currents * sigma) ** 2)))
            return ideal + spread * float(self.rng.standard_normal())

    def pulse(self, route: Route, v: float, width_s: float) -> float:
        """Hold ``v`` on the route for ``width_s``: cells change per their physics.

        Returns the current at the start of the pulse, A.
        """
        with self.lock:
            i = self.current(route, v)
            if route.kind in ("open", "line") or v == 0.0 or width_s <= 0:
                return i
            neg, pos = self.devices.thresholds_v()
            if neg < v < pos and not self.devices.gate_pulse(v):
                return i  # no cell can see more than |v|: nothing can switch
            t = self.clock()
            if self._network is not None:
                i, v_cells = self._network.solve_route(route, v, t)
            else:
                v_cells = self.cell_voltages(route, v)
            self.devices.pulse(v_cells, width_s, t)
            self.pulses_applied += 1
            return i

    def cell_voltages(self, route: Route, v: float) -> np.ndarray:
        """The voltage across every cell (row side minus column side) with ``v`` applied, V."""
        with self.lock:
            self.check_route(route)
            out = np.zeros((self.rows, self.cols))
            if route.kind in ("open", "line") or v == 0.0:
                return out
            t = self.clock()
            cols = slice(None) if route.kind == "row" else slice(route.col, route.col + 1)
            if self.devices.gate_pulse(v):
                out[route.row, cols] = v
                return out
            if self._network is not None:
                return self._network.solve_route(route, v, t)[1]
            index = self._index(route)
            g = self.devices.conductance(t, index)
            out[index] = v / (1.0 + g * self._series(route)[index])
            return out

    # --- physical imprinting (issue 6) ------------------------------------------------------
    def apply_line_voltages(
        self, row_v: np.ndarray, col_v: np.ndarray, duration_s: float
    ) -> np.ndarray:
        """Drive every row and every column at once for ``duration_s``.

        ``row_v`` (rows,) and ``col_v`` (cols,) in V. On a 1T1R array all access
        transistors are on. Cells switch only where ``|V_row - V_col|`` (after the
        line drop on a passive array) exceeds the technology's threshold. Returns the
        voltage across every cell, V.
        """
        row_v = np.asarray(row_v, dtype=float).reshape(self.rows)
        col_v = np.asarray(col_v, dtype=float).reshape(self.cols)
        with self.lock:
            t = self.clock()
            if self._network is not None:
                v_cell = self._network.driven_cell_voltages(row_v, col_v, t)
            else:
                v_cell = row_v[:, None] - col_v[None, :]
            self.devices.pulse(v_cell, duration_s, t)
            self.pulses_applied += 1
            return v_cell

    def column_currents(self, row_v: np.ndarray) -> np.ndarray:
        """Read every column at once: rows driven at ``row_v`` (rows,) V, every column held at
        0 V (virtual ground); the current into each column, A, with each cell's read noise.

        Nothing switches (use read-level voltages). 1T1R: each cell in series with its
        contacts, lines and access transistor; passive: the resistor network solved.
        """
        row_v = np.asarray(row_v, dtype=float).reshape(self.rows)
        with self.lock:
            t = self.clock()
            g = self.devices.conductance(t)
            if self._network is not None:
                v_cell = self._network.driven_cell_voltages(row_v, np.zeros(self.cols), t)
            else:
                v_cell = row_v[:, None] / (1.0 + g * self._r_series)
            i_cell = g * v_cell
            sigma = self.devices.read_sigma(g, t) * np.abs(i_cell)
            noise = np.sqrt(np.sum(sigma**2, axis=0)) * self.rng.standard_normal(self.cols)
            return i_cell.sum(axis=0) + noise

    def apply_waveforms(self, row_v: np.ndarray, col_v: np.ndarray, dt_s: float) -> None:
        """Drive sampled waveforms: ``row_v`` (T, rows) and ``col_v`` (T, cols), ``dt_s`` apart."""
        row_v = np.asarray(row_v, dtype=float)
        col_v = np.asarray(col_v, dtype=float)
        if row_v.shape[0] != col_v.shape[0]:
            raise ValueError("row and column waveforms need the same number of samples")
        for k in range(row_v.shape[0]):
            self.apply_line_voltages(row_v[k], col_v[k], dt_s)

    # --- helpers -----------------------------------------------------------------------
    @staticmethod
    def _index(route: Route) -> tuple[int, slice]:
        """The cells a route connects: one cell, or the whole row."""
        cols = slice(None) if route.kind == "row" else slice(route.col, route.col + 1)
        return (route.row, cols)

    def _series_currents(self, route: Route, v: float, t: float) -> np.ndarray:
        """Currents of the routed cells of a 1T1R array (each in series with its resistance), A."""
        index = self._index(route)
        g = self.devices.conductance(t, index)
        return v * g / (1.0 + g * self._series(route)[index])

    def _series(self, route: Route) -> np.ndarray:
        """The series resistance of every cell for the route's ends, ohm."""
        return self._r_series if route.end == "near" else self._r_series_far[route.end]


class _PassiveNetwork:
    """The resistor network of a passive array and its cached factorizations."""

    MAX_UPDATES = 24
    REL_TOL = 2e-4

    def __init__(self, array: CrossbarArray) -> None:
        self.a = array
        r, c = array.rows, array.cols
        self.n = 2 * r * c
        rows_i, cols_j = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
        self.row_node = (rows_i * c + cols_j).ravel()
        self.col_node = (r * c + rows_i * c + cols_j).ravel()
        self.row_end = np.arange(r) * c
        self.col_end = r * c + (r - 1) * c + np.arange(c)
        self.g_row_end = 1.0 / array.rc_row
        self.g_col_end = 1.0 / array.rc_col
        g_line = 1.0 / max(array.line_resistance_ohm, 1e-6)
        pairs = [
            (
                (rows_i[:, :-1] * c + cols_j[:, :-1]).ravel(),
                (rows_i[:, 1:] * c + cols_j[:, 1:]).ravel(),
            ),
            (
                (r * c + rows_i[:-1, :] * c + cols_j[:-1, :]).ravel(),
                (r * c + rows_i[1:, :] * c + cols_j[1:, :]).ravel(),
            ),
        ]
        a_idx = np.concatenate([p[0] for p in pairs])
        b_idx = np.concatenate([p[1] for p in pairs])
        self.lines = self._laplacian(a_idx, b_idx, np.full(a_idx.size, g_line))
        self._all: _WoodburySolver | None = None
        self._all_g: np.ndarray | None = None
        self._float_cache: dict[tuple[int, int, int], tuple[spl.SuperLU, np.ndarray]] = {}

    def _laplacian(self, a: np.ndarray, b: np.ndarray, g: np.ndarray) -> sp.csc_matrix:
        rows = np.concatenate([a, b, a, b])
        cols = np.concatenate([a, b, b, a])
        vals = np.concatenate([g, g, -g, -g])
        return sp.csc_matrix((vals, (rows, cols)), shape=(self.n, self.n))

    def _matrix(self, g_cells: np.ndarray, rows_driven: np.ndarray, cols_driven: np.ndarray):
        cells = self._laplacian(self.row_node, self.col_node, g_cells.ravel())
        diag = np.zeros(self.n)
        diag[self.row_end[rows_driven]] = self.g_row_end[rows_driven]
        diag[self.col_end[cols_driven]] = self.g_col_end[cols_driven]
        return (self.lines + cells + sp.diags(diag)).tocsc()

    # --- all lines driven (ground, V/2, V/3): one factorization, low-rank updates -----------
    def _solver_all(self, t: float) -> _WoodburySolver:
        g = self.a.devices.conductance(t)
        if self._all is None or self._all_g is None:
            return self._refactor(g)
        diff = g - self._all_g
        changed = np.abs(diff) > self.REL_TOL * np.abs(self._all_g)
        count = int(changed.sum())
        if count == 0:
            return self._all
        if count > 4 or len(self._all.updates) + count > self.MAX_UPDATES:
            return self._refactor(g)
        for flat in np.flatnonzero(changed.ravel()):
            self._all.update(int(self.row_node[flat]), int(self.col_node[flat]), diff.flat[flat])
        self._all_g = g
        return self._all

    def _refactor(self, g: np.ndarray) -> _WoodburySolver:
        everything_r = np.ones(self.a.rows, dtype=bool)
        everything_c = np.ones(self.a.cols, dtype=bool)
        self._all = _WoodburySolver(spl.splu(self._matrix(g, everything_r, everything_c)))
        self._all_g = g
        return self._all

    def _drive(
        self, route: Route, v: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Driver voltages and which lines are driven, for ``route`` at ``v``."""
        r, c = self.a.rows, self.a.cols
        if route.bias == "float":
            rows_driven = np.zeros(r, dtype=bool)
            cols_driven = np.zeros(c, dtype=bool)
            fr = fc = 0.0
        else:
            fr, fc = BIAS_FRACTIONS[route.bias]
            rows_driven = np.ones(r, dtype=bool)
            cols_driven = np.ones(c, dtype=bool)
        v_rows = np.full(r, fr * v)
        v_cols = np.full(c, fc * v)
        rows_driven[route.row] = True
        v_rows[route.row] = v
        if route.kind == "row":
            cols_driven[:] = True
            v_cols[:] = 0.0
        else:
            cols_driven[route.col] = True
            v_cols[route.col] = 0.0
        return v_rows, v_cols, rows_driven, cols_driven

    def _solve(self, route: Route, v: float, t: float) -> np.ndarray:
        v_rows, v_cols, rows_driven, cols_driven = self._drive(route, v)
        rhs = np.zeros(self.n)
        rhs[self.row_end[rows_driven]] = (self.g_row_end * v_rows)[rows_driven]
        rhs[self.col_end[cols_driven]] = (self.g_col_end * v_cols)[cols_driven]
        if route.bias != "float":
            return self._solver_all(t).solve(rhs)
        version = self.a.devices.version
        key = (route.row, route.col if route.kind == "cell" else -1, version)
        cached = self._float_cache.get(key)
        g = self.a.devices.conductance(t)
        if cached is None or np.any(np.abs(g - cached[1]) > self.REL_TOL * np.abs(cached[1])):
            if len(self._float_cache) > 8:
                self._float_cache.clear()
            cached = (spl.splu(self._matrix(g, rows_driven, cols_driven)), g)
            self._float_cache[key] = cached
        return cached[0].solve(rhs)

    def measured_current(self, route: Route, v: float, t: float) -> float:
        return self._current(route, self._solve(route, v, t))

    def _current(self, route: Route, x: np.ndarray) -> float:
        cols = np.arange(self.a.cols) if route.kind == "row" else np.array([route.col])
        return float(np.sum(self.g_col_end[cols] * x[self.col_end[cols]]))

    def solve_route(self, route: Route, v: float, t: float) -> tuple[float, np.ndarray]:
        """The measured current and every cell's voltage, from one solve."""
        x = self._solve(route, v, t)
        v_cells = (x[self.row_node] - x[self.col_node]).reshape(self.a.rows, self.a.cols)
        return self._current(route, x), v_cells

    def driven_cell_voltages(self, row_v: np.ndarray, col_v: np.ndarray, t: float) -> np.ndarray:
        rhs = np.zeros(self.n)
        rhs[self.row_end] = self.g_row_end * row_v
        rhs[self.col_end] = self.g_col_end * col_v
        x = self._solver_all(t).solve(rhs)
        return (x[self.row_node] - x[self.col_node]).reshape(self.a.rows, self.a.cols)


class _WoodburySolver:
    """Solves (A + sum_k dg_k u_k u_k^T) x = b from A's LU, ``u_k = e_a - e_b``."""

    def __init__(self, lu: spl.SuperLU) -> None:
        self.lu = lu
        self.updates: list[tuple[int, int, float]] = []
        self._y: list[np.ndarray] = []

    def update(self, a: int, b: int, dg: float) -> None:
        u = np.zeros(self.lu.shape[0])
        u[a], u[b] = 1.0, -1.0
        self.updates.append((a, b, float(dg)))
        self._y.append(self.lu.solve(u))

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        y = self.lu.solve(rhs)
        if not self.updates:
            return y
        big_y = np.column_stack(self._y)
        a = np.array([u[0] for u in self.updates])
        b = np.array([u[1] for u in self.updates])
        dg = np.array([u[2] for u in self.updates])
        ut_y = big_y[a, :] - big_y[b, :]
        capacitance = np.diag(1.0 / dg) + ut_y
        z = np.linalg.solve(capacitance, y[a] - y[b])
        return y - big_y @ z
