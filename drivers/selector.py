"""The crossbar row/column selector board over a serial line (pyserial: a port, a pty, socket://).

Protocol: ``docs/selector_protocol.md``. SCPI-style headers, one message per line,
and every message is answered: ``OK``, a query's value, or ``ERR <code>,"<text>"``
(which this driver raises as :class:`~drivers.errors.InstrumentReportedError`).
Addresses are also checked here against the board's size before anything is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.errors import InstrumentReportedError, MalformedReply, OutOfRangeError
from drivers.scpi import Control, SCPIInstrument, parse_error, parse_float, parse_int
from drivers.transport import Transport

SCAN_PAIRS_PER_MESSAGE = 256
REFERENCES = 4
BIAS_SCHEMES = ("ground", "float", "v/2", "v/3")


@dataclass(frozen=True)
class ReferenceCertificate:
    """The calibration certificate of the board's standard reference resistor."""

    number: int
    """Which reference (1-4) is the standard."""
    value_ohm: float
    """Certified value, ohm."""
    uncertainty_ohm: float
    """Standard uncertainty (k = 1) of the certified value, ohm."""
    date: str


@dataclass(frozen=True)
class ScanStatus:
    """Where the board's scan list stands."""

    state: str
    """"IDLE", "ARMED" (waiting for or stepping on triggers) or "DONE" (stepped past the end)."""
    index: int
    """Entry connected now (0-based), or the number of entries when DONE."""
    points: int
    """Entries in the scan list."""


class CrossbarSelector(SCPIInstrument):
    """The selector board: one cell, one row or a reference resistor to the SMU; scan lists."""

    bias = Control(
        ":ROUT:BIAS?",
        ":ROUT:BIAS {}",
        "Bias of unselected lines: 'ground', 'float', 'v/2' or 'v/3' (rows V/3, columns 2V/3).",
        values={"ground": "GROund", "float": "FLOat", "v/2": "HALF", "v/3": "THIRd"},
    )

    def __init__(self, transport: Transport, *, check_errors: bool = True) -> None:
        super().__init__(transport, check_errors=check_errors)
        self._size: tuple[int, int] | None = None

    # --- every message is answered ----------------------------------------------------------
    def query(self, command: str) -> str:
        """Send ``command``; raise the board's ``ERR`` reply as an instrument error."""
        reply = super().query(command)
        if reply.startswith("ERR "):
            code, message = parse_error(reply[4:], command, self.address)
            raise InstrumentReportedError(code, message, command=command, resource=self.address)
        return reply

    def write(self, command: str, *, check: bool | None = None) -> None:
        """Send a command and require its ``OK``."""
        reply = self.query(command)
        if reply != "OK":
            raise MalformedReply("expected OK", reply=reply, command=command, resource=self.address)

    def read_errors(self) -> list[tuple[int, str]]:
        """Errors are answered inline, never queued: always empty."""
        return []

    # --- geometry and routing --------------------------------------------------------------
    def size(self) -> tuple[int, int]:
        """(rows, cols) of the array on the board (asked once, then remembered)."""
        if self._size is None:
            reply = self.query(":ROUT:SIZE?")
            parts = reply.split(",")
            if len(parts) != 2:
                raise MalformedReply("expected rows,cols", reply=reply, command=":ROUT:SIZE?")
            rows, cols = (parse_int(p, ":ROUT:SIZE?", self.address) for p in parts)
            if rows < 1 or cols < 1:
                raise MalformedReply("empty array", reply=reply, command=":ROUT:SIZE?")
            self._size = (rows, cols)
        return self._size

    def check_cell(self, row: int, col: int) -> tuple[int, int]:
        """``(row, col)`` if it is on the board, else :class:`OutOfRangeError` (nothing sent)."""
        rows, cols = self.size()
        for name, value, count in (("row", row, rows), ("column", col, cols)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
                raise OutOfRangeError(
                    f"{name} {value!r} is outside 0..{count - 1}; nothing was sent",
                    resource=self.address,
                )
        return row, col

    def select_cell(self, row: int, col: int) -> None:
        """Row ``row`` to SMU HI, column ``col`` to SMU LO; other lines at the bias."""
        row, col = self.check_cell(row, col)
        self.write(f":ROUT:CELL {row},{col}")

    def select_row(self, row: int) -> None:
        """Row ``row`` to SMU HI, every column to SMU LO (their currents add)."""
        self.check_cell(row, 0)
        self.write(f":ROUT:ROW {row}")

    def connect_reference(self, number: int) -> None:
        """Reference resistor ``number`` (1-4) across the SMU; the array is disconnected."""
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= REFERENCES:
            raise OutOfRangeError(f"reference {number!r} is not 1..{REFERENCES}; nothing was sent")
        self.write(f":ROUT:REF {number}")

    def reference_nominals(self) -> list[float]:
        """Nominal values of the reference resistors 1-4, ohm."""
        return [float(v) for v in self.query(":ROUT:REF:CAT?").split(",")]

    def reference_certificate(self) -> ReferenceCertificate:
        """Which reference is the board's certified standard, its certified value and
        standard uncertainty (ohm) and the certificate's date (``:ROUT:REF:CERT?``)."""
        command = ":ROUT:REF:CERT?"
        reply = self.query(command)
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) != 4:
            raise MalformedReply(
                "expected number,ohm,uncertainty,date", reply=reply, command=command
            )
        number = parse_int(parts[0], command, self.address)
        value, u = (parse_float(p, command, self.address) for p in parts[1:3])
        if not 1 <= number <= REFERENCES or not value > 0 or not u > 0:
            raise MalformedReply("not a usable certificate", reply=reply, command=command)
        return ReferenceCertificate(number, value, u, parts[3])

    def connect_line(self, kind: str, number: int) -> None:
        """Line test: SMU HI to the driver end of row (``kind`` "row") or column ``number``,
        LO to that line's far-end pad; the cells are not in the path."""
        if kind not in ("row", "col"):
            raise OutOfRangeError(f"line kind {kind!r} is not 'row' or 'col'; nothing was sent")
        if kind == "row":
            self.check_cell(number, 0)
            self.write(f":ROUT:LINE ROW,{number}")
        else:
            self.check_cell(0, number)
            self.write(f":ROUT:LINE COL,{number}")

    def select_cell_far(self, row: int, col: int, end: str) -> None:
        """Cell ``(row, col)`` with its row (``end`` "row") or column (``end`` "col") reached
        from the line's far-end pad instead of its driver end (1T1R arrays only)."""
        if end not in ("row", "col"):
            raise OutOfRangeError(f"far end {end!r} is not 'row' or 'col'; nothing was sent")
        row, col = self.check_cell(row, col)
        self.write(f":ROUT:CELL:FAR {'ROW' if end == 'row' else 'COL'},{row},{col}")

    def temperature_c(self) -> float | None:
        """Board temperature near the references, °C; None when the board has no sensor
        (it answers -113)."""
        try:
            return parse_float(self.query(":SYST:TEMP?"), ":SYST:TEMP?", self.address)
        except InstrumentReportedError as exc:
            if exc.code == -113:
                return None
            raise

    def ground_all(self) -> None:
        """Disconnect the SMU, ground every line, stop any scan: the safe state."""
        self.write(":ROUT:OPEN:ALL")

    def route(self) -> str:
        """What is connected now: ``OPEN``, ``CELL,r,c``, ``ROW,r`` or ``REF,n``."""
        return self.query(":ROUT:STAT?")

    # --- scan list (stepped by the SMU's trigger-out line) ------------------------------------
    def load_scan(self, cells: Sequence[tuple[int, int]], *, triggers_per_step: int = 1) -> None:
        """Replace the scan list by ``cells``; step on every ``triggers_per_step``-th trigger."""
        if not cells:
            raise OutOfRangeError("an empty scan list; nothing was sent")
        if not 1 <= triggers_per_step <= 16:
            raise OutOfRangeError(f"triggers_per_step {triggers_per_step} is not 1..16")
        checked = [self.check_cell(r, c) for r, c in cells]
        self.write(":ROUT:SCAN:CLE")
        for start in range(0, len(checked), SCAN_PAIRS_PER_MESSAGE):
            chunk = checked[start : start + SCAN_PAIRS_PER_MESSAGE]
            self.write(":ROUT:SCAN:ADD " + ",".join(f"{r},{c}" for r, c in chunk))
        self.write(f":ROUT:SCAN:TCO {triggers_per_step}")

    def arm_scan(self) -> None:
        """Connect the first entry and pulse ready; the SMU's triggers step the rest."""
        self.write(":ROUT:SCAN:ARM")

    def abort_scan(self) -> None:
        """Stop a scan and ground everything."""
        self.write(":ROUT:SCAN:ABOR")

    def scan_status(self) -> ScanStatus:
        """State, position and length of the scan."""
        reply = self.query(":ROUT:SCAN:STAT?")
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) != 3 or parts[0] not in ("IDLE", "ARMED", "DONE"):
            raise MalformedReply("expected STATE,index,points", reply=reply)
        return ScanStatus(
            parts[0],
            parse_int(parts[1], ":ROUT:SCAN:STAT?", self.address),
            parse_int(parts[2], ":ROUT:SCAN:STAT?", self.address),
        )
