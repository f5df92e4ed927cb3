"""The crossbar programming rig: one SMU and one selector board, composed.

Operations: :meth:`CrossbarRig.read` (one cell), :meth:`~CrossbarRig.read_block`
and :meth:`~CrossbarRig.read_cells` (many cells, batched), :meth:`~CrossbarRig.pulse`
(one cell), :meth:`~CrossbarRig.pulse_train` (N cells, a pulse each, optionally a
read after each pulse — the write-verify primitive), :meth:`~CrossbarRig.read_row`
and :meth:`~CrossbarRig.read_reference`. Reads return conductance ``G = I / V_read``
in S.

Safety: every amplitude, width and address is checked against the
:class:`~drivers.limits.SafetyLimits` and the board's size before anything is sent;
the SMU's current limit is the configured compliance. Every exit path — normal
end of a train, an exception, :meth:`~CrossbarRig.close`, leaving a ``with`` —
ends with the output off and all lines grounded (:meth:`~CrossbarRig.shutdown`).

Batched trains cost O(1) messages plus one per 100-256 cells of list upload,
whatever N: the selector's scan list and the SMU's list run with no computer in
the loop (see :mod:`drivers.smu`). A dropped connection mid-train is recovered:
the rig reconnects, then asks the selector (an independent witness) how far the
scan got — complete: the readings are fetched from the SMU's buffer; never
started: the train is sent again; partial: :class:`DataIntegrityError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np

from drivers.errors import (
    CommunicationError,
    DataIntegrityError,
    DriverError,
    OutOfRangeError,
)
from drivers.limits import SafetyLimits
from drivers.selector import BIAS_SCHEMES, CrossbarSelector
from drivers.smu import SMU, Reading, VisitPlan

log = logging.getLogger(__name__)

Cell = tuple[int, int]


class ReadCorrection(Protocol):
    """Turns what the SMU read into conductance (e.g. a calibration: instrument offsets and
    gains, the array's line and contact resistance). Installed as
    :attr:`CrossbarRig.read_correction`; without one, ``G = I / V_read``."""

    def conductance(
        self, cells: np.ndarray | None, current_a: np.ndarray, voltage_v: float
    ) -> np.ndarray:
        """Conductance, S, of the read currents ``current_a`` (A) at ``voltage_v`` (V);
        ``cells`` (n, 2) row, column of each read, or None for a whole-row read."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """What a batched train returns, one entry per visit (in the order given)."""

    cells: tuple[Cell, ...]
    conductance_s: np.ndarray
    """G = I / V_read per visit, S, through the rig's read correction when it has one (NaN
    where the train did not read)."""
    current_a: np.ndarray
    """Read current per visit, A (NaN where the train did not read)."""
    compliance: np.ndarray
    """True where the read hit the current limit (G is then a lower bound)."""


class CrossbarRig:
    """One SMU and one selector board wired to a memory crossbar."""

    def __init__(
        self,
        smu: SMU,
        selector: CrossbarSelector,
        limits: SafetyLimits,
        *,
        bias: str = "v/2",
        nplc: float = 0.01,
        reconnect_attempts: int = 3,
        reconnect_delay_s: float = 0.5,
    ) -> None:
        if bias not in BIAS_SCHEMES:
            raise OutOfRangeError(f"bias {bias!r} is not one of {list(BIAS_SCHEMES)}")
        self.smu = smu
        self.selector = selector
        self.limits = limits
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.trains_recovered = 0
        """Trains whose instrument connection dropped and was recovered."""
        self.read_correction: ReadCorrection | None = None
        """Applied to every read's current (a calibration); None: G = I / V_read."""
        self._lock = threading.RLock()
        with self._safe():
            self.rows, self.cols = selector.size()
            selector.ground_all()
            selector.bias = bias
            smu.configure(limits, nplc=nplc)

    # --- checks (before anything is sent) ----------------------------------------------------
    def check_cells(self, cells: Sequence[Cell]) -> list[Cell]:
        """Every cell as (row, col), or :class:`OutOfRangeError` naming the first bad one."""
        out = []
        for cell in cells:
            try:
                row, col = cell
            except (TypeError, ValueError):
                raise OutOfRangeError(f"a cell is (row, col), got {cell!r}") from None
            out.append(self.selector.check_cell(row, col))
        return out

    # --- single operations ----------------------------------------------------------------------
    def read(self, cell: Cell) -> float:
        """Conductance of one cell, S (one selector message and one SMU reading)."""
        ((row, col),) = self.check_cells([cell])
        with self._safe():
            self.selector.select_cell(row, col)
            reading = self.smu.read_current(self.limits.read_voltage_v)
        return float(self._conductances(np.array([[row, col]]), np.array([reading.current_a]))[0])

    def read_row(self, row: int) -> float:
        """Summed conductance of every cell on ``row`` (all columns to the SMU at once), S."""
        self.check_cells([(row, 0)])
        with self._safe():
            self.selector.select_row(row)
            reading = self.smu.read_current(self.limits.read_voltage_v)
        return float(self._conductances(None, np.array([reading.current_a]))[0])

    def read_reference(self, number: int) -> Reading:
        """One reading of on-board reference resistor ``number`` (1-4) at the read voltage."""
        with self._safe():
            self.selector.connect_reference(number)
            return self.smu.read_current(self.limits.read_voltage_v)

    def pulse(self, cell: Cell, amplitude_v: float, width_s: float) -> None:
        """One programming pulse on one cell."""
        self.pulse_train([cell], [amplitude_v], width_s, read=False)

    # --- batched trains ---------------------------------------------------------------------------
    def read_cells(self, cells: Sequence[Cell]) -> TrainResult:
        """Read every cell of ``cells`` in one batched train."""
        return self._train(cells, None, 0.0, read=True)

    def read_block(self, rows: Sequence[int] | range, cols: Sequence[int] | range) -> np.ndarray:
        """Conductance of the rows x cols block (row-major), S."""
        rows, cols = list(rows), list(cols)
        cells = [(r, c) for r in rows for c in cols]
        result = self.read_cells(cells)
        return result.conductance_s.reshape(len(rows), len(cols))

    def read_array(self) -> np.ndarray:
        """Conductance of the whole array, S."""
        return self.read_block(range(self.rows), range(self.cols))

    def pulse_train(
        self,
        cells: Sequence[Cell],
        amplitudes_v: Sequence[float],
        width_s: float,
        *,
        read: bool = True,
    ) -> TrainResult:
        """Pulse ``cells[k]`` with ``amplitudes_v[k]`` (all ``width_s`` wide), each followed
        by a read of that cell when ``read`` — O(1) round trips for N cells."""
        if len(amplitudes_v) != len(cells):
            raise OutOfRangeError(f"{len(amplitudes_v)} amplitudes for {len(cells)} cells")
        return self._train(cells, list(amplitudes_v), width_s, read=read)

    def _train(
        self, cells: Sequence[Cell], amplitudes: list[float] | None, width_s: float, *, read: bool
    ) -> TrainResult:
        checked = self.check_cells(cells)
        if not checked:
            raise OutOfRangeError("no cells given; nothing was sent")
        read_v = self.limits.read_voltage_v if read else None
        if amplitudes is not None:
            amplitudes = [
                self.limits.check_voltage(a, f"amplitude for cell {c}")
                for a, c in zip(amplitudes, checked, strict=True)
            ]
            self.limits.check_width(width_s)
        template = VisitPlan(1, None if amplitudes is None else (0.0,), width_s, read_v)
        step = max(1, self.smu.max_visits(template))
        n = len(checked)
        current = np.full(n, np.nan)
        limited = np.zeros(n, dtype=bool)
        with self._safe():
            for start in range(0, n, step):
                chunk = checked[start : start + step]
                levels = None if amplitudes is None else tuple(amplitudes[start : start + step])
                plan = VisitPlan(len(chunk), levels, width_s, read_v)
                readings = self._run(chunk, plan)
                for k, reading in enumerate(readings):
                    current[start + k] = reading.current_a
                    limited[start + k] = reading.compliance
        conductance = self._conductances(np.array(checked), current) if read else np.full(n, np.nan)
        return TrainResult(tuple(checked), conductance, current, limited)

    def _run(self, cells: list[Cell], plan: VisitPlan) -> list[Reading]:
        """One train on the instruments; recovers once from a dropped connection."""
        timeout = self.smu.train_time_s(plan) * 3 + 5.0 + 2e-3 * plan.visits
        for attempt in (1, 2):
            try:
                self.selector.load_scan(cells, triggers_per_step=self.smu.triggers_per_visit(plan))
                self.smu.prepare_visits(plan)
                self.smu.start_visits()
                self.selector.arm_scan()
                readings = self.smu.finish_visits(plan, timeout)
                self._check_scan(len(cells))
                return readings
            except CommunicationError as exc:
                log.warning(
                    "train of %d visits interrupted (attempt %d): %s", plan.visits, attempt, exc
                )
                recovered = self._recover(plan, exc)
                self.trains_recovered += 1
                if recovered is not None:
                    return recovered
        raise DataIntegrityError(
            f"the train of {plan.visits} visits could not be run after reconnecting; "
            "check the SMU and selector connections"
        )

    def _check_scan(self, visits: int) -> None:
        status = self.selector.scan_status()
        if status.state != "DONE" or status.index != visits:
            raise DataIntegrityError(
                f"the selector stepped {status.index} of {visits} visits ({status.state}): "
                "trigger pulses were lost; check the trigger link between SMU and selector",
                resource=self.selector.address,
            )

    def _recover(self, plan: VisitPlan, exc: CommunicationError) -> list[Reading] | None:
        """After a dropped wire: readings if the train completed, None if it never started."""
        for instrument in (self.smu, self.selector):
            if getattr(instrument, "address", None) == exc.resource or not _alive(instrument):
                instrument.reconnect(self.reconnect_attempts, self.reconnect_delay_s)
        if self.selector.scan_status().state == "IDLE" and self.smu.visits_running():
            self.smu.abort_visits()  # never armed: the SMU waits for a ready that will not come
        deadline = time.monotonic() + self.smu.train_time_s(plan) * 3 + 10.0 + 2e-3 * plan.visits
        while self.smu.visits_running():
            if time.monotonic() > deadline:
                raise DataIntegrityError("the SMU is still running a train after reconnecting")
            time.sleep(0.02)
        status = self.selector.scan_status()
        if status.state == "DONE" and status.index == plan.visits == status.points:
            log.info("train completed while the wire was down: fetching its readings")
            return self.smu.fetch_visits(plan)
        if status.state in ("ARMED", "IDLE") and status.index == 0:
            log.info("train never started: sending it again")
            self.selector.abort_scan()
            return None
        raise DataIntegrityError(
            f"the train stopped after {status.index} of {plan.visits} visits "
            f"(selector {status.state}); the cells visited were pulsed but not read back",
            resource=self.selector.address,
        )

    # --- safety ---------------------------------------------------------------------------
    def _conductances(self, cells: np.ndarray | None, current_a: np.ndarray) -> np.ndarray:
        read_v = self.limits.read_voltage_v
        if self.read_correction is None:
            return current_a / read_v
        return np.asarray(self.read_correction.conductance(cells, current_a, read_v), dtype=float)

    @contextmanager
    def _safe(self) -> Iterator[None]:
        """One operation at a time (a train spans both instruments); on any exception:
        output off, lines grounded, then re-raise."""
        with self._lock:
            try:
                yield
            except BaseException:
                self.shutdown()
                raise

    def shutdown(self) -> None:
        """Output off and every line grounded; best effort on each instrument, never raises."""
        with self._lock:
            self._shutdown()

    def _shutdown(self) -> None:
        for name, action in (
            ("SMU abort", self.smu.abort_visits),
            ("SMU output off", self.smu.output_off),
            ("selector ground", self.selector.ground_all),
        ):
            instrument = self.selector if name.startswith("selector") else self.smu
            for attempt in (1, 2):
                try:
                    action()
                    break
                except DriverError as exc:
                    log.warning("shutdown: %s failed (attempt %d): %s", name, attempt, exc)
                    if attempt == 1:
                        try:
                            instrument.reconnect(1, self.reconnect_delay_s)
                        except DriverError as again:
                            log.error("shutdown: cannot reach %s: %s", name, again)
                            break

    def close(self) -> None:
        """Shut down safely, then close both wires."""
        try:
            self.shutdown()
        finally:
            for instrument in (self.smu, self.selector):
                try:
                    instrument.close()
                except DriverError as exc:
                    log.warning("closing %r: %s", instrument, exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(instrument: object) -> bool:
    transport = getattr(instrument, "transport", None)
    return bool(transport is not None and transport.is_open and not transport.stale)
