"""Emulated crossbar selector board: routes the SMU to a cell, a row or a reference resistor.

The protocol is ``docs/selector_protocol.md``: SCPI-style headers over a serial
line, and **every** message is answered — ``OK``, the value of a query, or
``ERR <code>,"<message>"`` (an invalid address is refused, nothing changes). The
board is also the SMU's :class:`~hil_sim.smu_frontend.Load`: whatever it routes
is what the SMU terminals see.

A scan list of cells is stepped on trigger pulses from the SMU (the trigger
link, wired in :mod:`hil_sim.rig`): ``:ROUTe:SCAN:ARM`` connects the first entry
and pulses the ready line; every ``TCOunt``-th trigger steps to the next entry and
pulses ready after the switches settle; past the last entry all lines go to ground.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

import numpy as np

from hil_sim.crossbar import CrossbarArray, Route
from hil_sim.scpi_server import Call, ScpiDevice, ScpiError, scpi

log = logging.getLogger(__name__)

REFERENCE_NOMINAL_OHM = (1e3, 10e3, 100e3, 1e6)
"""Nominal values of the on-board reference resistors 1..4, ohm."""
STANDARD_REFERENCE = 2
"""The reference that is a certified standard resistor (10 kΩ)."""
CERTIFICATE_RELATIVE_U = 1e-5
"""Standard uncertainty of the standard's certificate, relative (10 ppm)."""
CERTIFICATE_DATE = "2026-01-15"
SCAN_PAIRS_PER_MESSAGE = 256
SCAN_MAX = 65_536
BIAS_TOKENS = {"GROUND": "ground", "FLOAT": "float", "HALF": "half", "THIRD": "third"}


class SelectorDevice(ScpiDevice):
    """Emulated selector board (its firmware) around a :class:`CrossbarArray`."""

    identity = ("brainpaste", "XBAR-SELECTOR", "SEL0001", "1.0")

    def __init__(
        self,
        crossbar: CrossbarArray,
        *,
        rng: np.random.Generator | None = None,
        settle_s: float = 20e-6,
        serial: str = "SEL0001",
    ) -> None:
        super().__init__()
        rng = rng or np.random.default_rng(0)
        self.identity = (*self.identity[:2], serial, self.identity[3])
        self.crossbar = crossbar
        self.settle_s = settle_s
        """Switch settling time before the ready pulse, s."""
        self.reference_ohm = np.array(REFERENCE_NOMINAL_OHM) * (
            1.0 + rng.uniform(-0.005, 0.005, len(REFERENCE_NOMINAL_OHM))
        )
        """True values of the reference resistors (hidden; +/- 0.5 % of nominal)."""
        true_standard = self.reference_ohm[STANDARD_REFERENCE - 1]
        self.certified_ohm = true_standard * (1.0 + CERTIFICATE_RELATIVE_U * rng.standard_normal())
        """What the standard's calibration certificate says (within its uncertainty of the
        hidden true value)."""
        self.temperature_c = 22.5 + float(rng.uniform(0.0, 1.5))
        """Board temperature near the references, °C."""
        self.ready_out: Callable[[float], None] | None = None
        """The ready line (wired to an SMU trigger input); called with the settling delay."""
        self.triggers_received = 0
        self._route_lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._route_lock:
            self.route = Route()
            self.bias = "ground"
            self.reference = 0
            self.scan: list[tuple[int, int]] = []
            self.scan_index = -1
            self.scan_armed = False
            self.scan_done = False
            self.triggers_per_step = 1
            self._trigger_count = 0

    # --- the wire: every message answered -------------------------------------------------
    def handle(self, line: str) -> str | None:
        if not line.strip():
            return None
        with self.lock:
            self.errors.clear()
            reply = super().handle(line)
            if len(self.errors):
                first = self.errors.pop()
                self.errors.clear()
                return f"ERR {first}"
            return "OK" if reply is None else reply

    # --- routing ---------------------------------------------------------------------------
    def _check_row(self, call: Call, index: int) -> int:
        row = call.int(index, low=-(2**31))
        if not 0 <= row < self.crossbar.rows:
            raise ScpiError(-222, f"row {row} outside 0..{self.crossbar.rows - 1}")
        return row

    def _check_col(self, call: Call, index: int) -> int:
        col = call.int(index, low=-(2**31))
        if not 0 <= col < self.crossbar.cols:
            raise ScpiError(-222, f"column {col} outside 0..{self.crossbar.cols - 1}")
        return col

    def _connect(self, route: Route) -> None:
        with self._route_lock:
            self.route = route
            self.reference = 0

    @scpi(":ROUTe:SIZE?")
    def size(self, call: Call) -> str:
        return f"{self.crossbar.rows},{self.crossbar.cols}"

    @scpi(":ROUTe:CELL")
    def select_cell(self, call: Call) -> None:
        call.expect(2)
        row, col = self._check_row(call, 0), self._check_col(call, 1)
        self._idle_scan_required()
        self._connect(Route("cell", row, col, self.bias))

    @scpi(":ROUTe:ROW")
    def select_row(self, call: Call) -> None:
        call.expect(1)
        row = self._check_row(call, 0)
        self._idle_scan_required()
        self._connect(Route("row", row, -1, self.bias))

    @scpi(":ROUTe:OPEN:ALL")
    def open_all(self, call: Call) -> None:
        call.expect(0)
        self.ground_all()

    def ground_all(self) -> None:
        """Disconnect the SMU and ground every line; stop a scan (the safe state)."""
        with self._route_lock:
            self.route = Route()
            self.reference = 0
            self.scan_armed = False

    @scpi(":ROUTe:BIAS")
    def set_bias(self, call: Call) -> None:
        call.expect(1)
        bias = BIAS_TOKENS[call.choice(0, ["GROund", "FLOat", "HALF", "THIRd"])]
        with self._route_lock:
            self.bias = bias
            if self.route.kind != "open":
                self.route = dataclasses.replace(self.route, bias=bias)

    @scpi(":ROUTe:BIAS?")
    def get_bias(self, call: Call) -> str:
        return {"ground": "GRO", "float": "FLO", "half": "HALF", "third": "THIR"}[self.bias]

    @scpi(":ROUTe:REFerence")
    def select_reference(self, call: Call) -> None:
        call.expect(1)
        number = call.int(0, low=-(2**31))
        if not 1 <= number <= len(REFERENCE_NOMINAL_OHM):
            raise ScpiError(-222, f"reference {number} outside 1..{len(REFERENCE_NOMINAL_OHM)}")
        self._idle_scan_required()
        with self._route_lock:
            self.route = Route()
            self.reference = number

    @scpi(":ROUTe:REFerence:CATalog?")
    def reference_catalog(self, call: Call) -> str:
        return ",".join(f"{r:.0f}" for r in REFERENCE_NOMINAL_OHM)

    @scpi(":ROUTe:REFerence:CERTificate?")
    def reference_certificate(self, call: Call) -> str:
        u = CERTIFICATE_RELATIVE_U * REFERENCE_NOMINAL_OHM[STANDARD_REFERENCE - 1]
        return f"{STANDARD_REFERENCE},{self.certified_ohm:.9g},{u:.3g},{CERTIFICATE_DATE}"

    @scpi(":ROUTe:LINE")
    def select_line(self, call: Call) -> None:
        call.expect(2)
        which = call.choice(0, ["ROW", "COLumn"])
        if which == "ROW":
            route = Route("line", self._check_row(call, 1), -1, self.bias)
        else:
            route = Route("line", -1, self._check_col(call, 1), self.bias)
        self._idle_scan_required()
        self._connect(route)

    @scpi(":ROUTe:CELL:FAR")
    def select_cell_far(self, call: Call) -> None:
        call.expect(3)
        end = "row_far" if call.choice(0, ["ROW", "COLumn"]) == "ROW" else "col_far"
        row, col = self._check_row(call, 1), self._check_col(call, 2)
        self._idle_scan_required()
        if self.crossbar.architecture != "1t1r":
            raise ScpiError(-221, "far-end reads need a 1T1R array")
        self._connect(Route("cell", row, col, self.bias, end))

    @scpi(":ROUTe:STATe?")
    def state(self, call: Call) -> str:
        with self._route_lock:
            route = self.route
            if self.reference:
                return f"REF,{self.reference}"
            if route.kind == "cell" and route.end != "near":
                return (
                    f"CELL,{route.row},{route.col},{'RFAR' if route.end == 'row_far' else 'CFAR'}"
                )
            if route.kind == "cell":
                return f"CELL,{route.row},{route.col}"
            if route.kind == "row":
                return f"ROW,{route.row}"
            if route.kind == "line":
                return f"LINE,ROW,{route.row}" if route.row >= 0 else f"LINE,COL,{route.col}"
            return "OPEN"

    @scpi(":SYSTem:TEMPerature?")
    def temperature(self, call: Call) -> str:
        return f"{self.temperature_c:.2f}"

    @scpi(":ROUTe:SETTle?")
    def settle(self, call: Call) -> str:
        return f"{self.settle_s:.6E}"

    # --- scan list and the trigger link ---------------------------------------------------
    def _idle_scan_required(self) -> None:
        if self.scan_armed:
            raise ScpiError(-221, "a scan is armed; :ROUTe:SCAN:ABORt first")

    @scpi(":ROUTe:SCAN:CLEar")
    def scan_clear(self, call: Call) -> None:
        call.expect(0)
        self._idle_scan_required()
        with self._route_lock:
            self.scan = []
            self.scan_done = False

    @scpi(":ROUTe:SCAN:ADD")
    def scan_add(self, call: Call) -> None:
        if not call.args or len(call.args) % 2:
            raise ScpiError(-109, "scan entries come as row,col pairs")
        if len(call.args) > 2 * SCAN_PAIRS_PER_MESSAGE:
            raise ScpiError(-223, f"at most {SCAN_PAIRS_PER_MESSAGE} pairs per message")
        pairs = [
            (self._check_row(call, k), self._check_col(call, k + 1))
            for k in range(0, len(call.args), 2)
        ]
        self._idle_scan_required()
        with self._route_lock:
            if len(self.scan) + len(pairs) > SCAN_MAX:
                raise ScpiError(-225, f"a scan list holds at most {SCAN_MAX} entries")
            self.scan.extend(pairs)

    @scpi(":ROUTe:SCAN:POINts?")
    def scan_points(self, call: Call) -> str:
        return str(len(self.scan))

    @scpi(":ROUTe:SCAN:TCOunt")
    def set_triggers_per_step(self, call: Call) -> None:
        call.expect(1)
        self._idle_scan_required()
        self.triggers_per_step = call.int(0, low=1, high=16)

    @scpi(":ROUTe:SCAN:TCOunt?")
    def get_triggers_per_step(self, call: Call) -> str:
        return str(self.triggers_per_step)

    @scpi(":ROUTe:SCAN:ARM")
    def scan_arm(self, call: Call) -> None:
        call.expect(0)
        if not self.scan:
            raise ScpiError(-221, "the scan list is empty")
        self._idle_scan_required()
        with self._route_lock:
            self.scan_armed = True
            self.scan_done = False
            self.scan_index = 0
            self._trigger_count = 0
            row, col = self.scan[0]
            self.route = Route("cell", row, col, self.bias)
            self.reference = 0
        self._ready(self.settle_s)

    @scpi(":ROUTe:SCAN:ABORt")
    def scan_abort(self, call: Call) -> None:
        call.expect(0)
        self.ground_all()

    @scpi(":ROUTe:SCAN:STATe?")
    def scan_state(self, call: Call) -> str:
        with self._route_lock:
            if self.scan_armed:
                state = "ARMED"
            elif self.scan_done:
                state = "DONE"
            else:
                state = "IDLE"
            index = len(self.scan) if self.scan_done else max(self.scan_index, 0)
            return f"{state},{index},{len(self.scan)}"

    @scpi(":TRIGger[:IMMediate]")
    def software_trigger(self, call: Call) -> None:
        call.expect(0)
        self.trigger_in()

    def trigger_in(self) -> None:
        """One pulse on the trigger input (from the SMU's digital I/O, or a bus trigger)."""
        with self._route_lock:
            self.triggers_received += 1
            if not self.scan_armed:
                return
            self._trigger_count += 1
            if self._trigger_count % self.triggers_per_step:
                delay = 0.0
            else:
                self.scan_index += 1
                if self.scan_index >= len(self.scan):
                    self.route = Route()
                    self.scan_armed = False
                    self.scan_done = True
                    return
                row, col = self.scan[self.scan_index]
                moved = (row, col) != (self.route.row, self.route.col)
                self.route = Route("cell", row, col, self.bias)
                delay = self.settle_s if moved else 0.0
        self._ready(delay)

    def _ready(self, delay_s: float) -> None:
        if self.ready_out is not None:
            self.ready_out(delay_s)

    # --- the SMU's load ----------------------------------------------------------------------
    def _target(self) -> tuple[Route, float]:
        with self._route_lock:
            if self.reference:
                return Route(), float(self.reference_ohm[self.reference - 1])
            return self.route, 0.0

    def current(self, v: float) -> float:
        route, r_ref = self._target()
        if r_ref:
            return v / r_ref
        return self.crossbar.current(route, v) if route.kind != "open" else 0.0

    def read(self, v: float) -> float:
        route, r_ref = self._target()
        if r_ref:
            return v / r_ref
        return self.crossbar.read(route, v) if route.kind != "open" else 0.0

    def pulse(self, v: float, width_s: float) -> float:
        route, r_ref = self._target()
        if r_ref:
            return v / r_ref
        return self.crossbar.pulse(route, v, width_s) if route.kind != "open" else 0.0
