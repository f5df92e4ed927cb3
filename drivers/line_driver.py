"""The crossbar line driver: every row and column line at once (SCPI over TCP / VISA).

Protocol: ``docs/line_driver_protocol.md``. Two uses:

* :meth:`LineDriver.column_currents` — DC levels on every row, every column held at 0 V
  by its own transimpedance amplifier, every column's current measured: a
  matrix-vector product in one exchange (the functional check of an imprint);
* :meth:`LineDriver.load_pulses` + :meth:`LineDriver.run` — rectangular pulses per row
  and per column line, played by the instrument (physical imprinting).

Safety: every level is checked against the configured :class:`~drivers.limits.SafetyLimits`
before anything is sent, and the instrument's own clamp (``:SOUR:VOLT:LIM``) is set to the
limit by :meth:`LineDriver.configure`. :meth:`LineDriver.output_off` (also on ``close``)
opens the output relay, handing the lines back to the selector board.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

import numpy as np

from drivers.errors import (
    DriverError,
    InstrumentTimeout,
    MalformedReply,
    OutOfRangeError,
    SafetyLimitError,
)
from drivers.limits import SafetyLimits
from drivers.scpi import Control, SCPIInstrument, parse_float, parse_floats
from drivers.validators import in_range

PULSES_PER_MESSAGE = 256

PulseList = Sequence[tuple[float, float, float]]
"""(start s, width s, level V) per pulse of one line."""


class LineDriver(SCPIInstrument):
    """A multi-channel line driver with per-column current sense."""

    output = Control(
        ":OUTP?",
        ":OUTP {}",
        "Output relay: True connects the channels to the array lines (selector board off).",
        values={True: "1", False: "0"},
    )
    voltage_limit = Control(
        ":SOUR:VOLT:LIM?",
        ":SOUR:VOLT:LIM {}",
        "The instrument's clamp on every channel level, V (0-25 V).",
        validator=in_range(0.0, 25.0, "V"),
        units="V",
    )

    limits: SafetyLimits | None = None
    _lines: tuple[int, int] | None = None

    def lines(self) -> tuple[int, int]:
        """(rows, columns) the driver has channels for (asked once)."""
        if self._lines is None:
            reply = self.query(":SYST:LIN?")
            parts = reply.split(",")
            if len(parts) != 2:
                raise MalformedReply("expected rows,cols", reply=reply, command=":SYST:LIN?")
            rows, cols = (int(parse_float(p, ":SYST:LIN?", self.address)) for p in parts)
            self._lines = (rows, cols)
        return self._lines

    def configure(self, limits: SafetyLimits) -> None:
        """Known state: ``*RST``, clamp at the technology's max |V|, output off."""
        self.limits = limits
        self.write("*RST")
        self.voltage_limit = limits.max_voltage_v
        self.output = False

    def _limits(self) -> SafetyLimits:
        if self.limits is None:
            raise SafetyLimitError("no safety limits configured on the line driver; configure()")
        return self.limits

    # --- the MVM read ------------------------------------------------------------------
    def column_currents(self, row_v: np.ndarray | Sequence[float]) -> np.ndarray:
        """Rows at ``row_v`` (V), columns at 0 V: every column's current, A (output on)."""
        limits = self._limits()
        rows, cols = self.lines()
        levels = np.asarray(row_v, dtype=float).ravel()
        if levels.size != rows:
            raise OutOfRangeError(f"{levels.size} row levels for {rows} rows; nothing was sent")
        for k, v in enumerate(levels):
            limits.check_voltage(v, f"row {k} level")
        with self.lock:
            if not self.output:
                self.output = True
            self.write(":SOUR:ROW:VOLT " + ",".join(f"{v:.6g}" for v in levels))
            values = parse_floats(self.query(":MEAS:COL:CURR?"), ":MEAS:COL:CURR?", self.address)
        if len(values) != cols:
            raise MalformedReply(f"expected {cols} column currents, got {len(values)}")
        return np.array(values)

    # --- waveforms -----------------------------------------------------------------------
    def load_pulses(self, rows: Mapping[int, PulseList], cols: Mapping[int, PulseList]) -> int:
        """Replace the waveform by these pulses (checked first: nothing is sent if one is
        outside the limits, off the array, or overlaps another on its line)."""
        limits = self._limits()
        n_rows, n_cols = self.lines()
        messages = []
        for kind, table, count in (("ROW", rows, n_rows), ("COL", cols, n_cols)):
            for line, pulses in table.items():
                if not 0 <= int(line) < count:
                    raise OutOfRangeError(f"{kind} {line} is outside 0..{count - 1}")
                ordered = sorted((float(s), float(w), float(v)) for s, w, v in pulses)
                end = -np.inf
                for start, width, level in ordered:
                    if not (start >= 0 and width > 0):
                        raise OutOfRangeError(f"{kind} {line}: pulse at {start} s, width {width}")
                    if start < end:
                        raise OutOfRangeError(f"{kind} {line}: pulses overlap at {start:g} s")
                    limits.check_voltage(level, f"{kind} {line} pulse level")
                    end = start + width
                for k in range(0, len(ordered), PULSES_PER_MESSAGE):
                    chunk = ordered[k : k + PULSES_PER_MESSAGE]
                    body = ",".join(f"{s:.9g},{w:.9g},{v:.6g}" for s, w, v in chunk)
                    messages.append(f":WAV:PULS {kind},{int(line)},{body}")
        with self.lock:
            self.write(":WAV:CLE")
            for message in messages:
                self.write(message, check=False)
            self.check_errors(":WAV:PULS")
            return int(parse_float(self.query(":WAV:POIN?"), ":WAV:POIN?", self.address))

    def duration_s(self) -> float:
        """End of the last loaded pulse, s."""
        return parse_float(self.query(":WAV:DUR?"), ":WAV:DUR?", self.address)

    def run(self, timeout_s: float | None = None) -> float:
        """Play the loaded waveform (output on) and wait for it; its instrument time, s."""
        duration = self.duration_s()
        timeout = timeout_s if timeout_s is not None else 2 * duration + 10.0
        with self.lock:
            if not self.output:
                self.output = True
            self.write(":INIT")
        deadline = time.monotonic() + timeout
        time.sleep(min(duration, timeout))
        while True:
            state, _, elapsed = self.query(":STAT:RUN?").partition(",")
            if state == "DONE":
                return float(elapsed)
            if state != "RUNNING":
                raise MalformedReply("the waveform stopped", reply=state, command=":STAT:RUN?")
            if time.monotonic() > deadline:
                self.abort()
                raise InstrumentTimeout(f"the waveform did not finish in {timeout:g} s")
            time.sleep(0.01)

    def abort(self) -> None:
        """Stop a running waveform."""
        self.write(":ABOR")

    def output_off(self) -> None:
        """Stop and open the output relay (the lines go back to the selector board)."""
        with self.lock:
            self.write(":ABOR")
            self.output = False

    def close(self) -> None:
        """Output off (best effort), then close the wire."""
        with contextlib.suppress(DriverError):  # the wire may already be gone
            self.output_off()
        super().close()
