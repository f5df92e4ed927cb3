"""A small emulated instrument and its driver, used to test the SCPI layers end to end.

DemoSupply: a voltage source across a 1 kΩ load with an output relay and a current
meter whose range is 10 mA (beyond it the meter answers the 9.9e37 overflow).
"""

from __future__ import annotations

from drivers.scpi import Control, Measurement, SCPIInstrument, parse_bool
from drivers.validators import in_range, one_of, safe_string
from hil_sim.scpi_server import Call, ScpiDevice, ScpiError, fmt, scpi

LOAD_OHM = 1000.0
CURRENT_RANGE_A = 10e-3


class DemoSupplyDevice(ScpiDevice):
    """Emulator: state plus the handlers of its command tree."""

    identity = ("brainpaste", "DEMO-SUPPLY", "SN0001", "1.0")

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.voltage = 0.0
        self.output = False
        self.label = "SUPPLY"

    @scpi(":SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def set_voltage(self, call: Call) -> None:
        call.expect(1)
        self.voltage = call.float(0, low=-20, high=20, default=0.0, units="V")

    @scpi(":SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def get_voltage(self, call: Call) -> str:
        return fmt(self.voltage)

    @scpi(":OUTPut#[:STATe]")
    def set_output(self, call: Call) -> None:
        call.expect(1)
        self.output = call.bool(0)

    @scpi(":OUTPut#[:STATe]?")
    def get_output(self, call: Call) -> str:
        return fmt(self.output)

    @scpi(":MEASure:CURRent[:DC]?")
    def measure_current(self, call: Call) -> str:
        current = self.voltage / LOAD_OHM if self.output else 0.0
        return fmt(9.9e37 if abs(current) > CURRENT_RANGE_A else current)

    @scpi(":SYSTem:LABel")
    def set_label(self, call: Call) -> None:
        self.label = call.string(0)

    @scpi(":SYSTem:LABel?")
    def get_label(self, call: Call) -> str:
        return f'"{self.label}"'

    @scpi(":SYSTem:FAIL")
    def fail(self, call: Call) -> None:
        raise ScpiError(-240, "relay stuck")


class DemoSupply(SCPIInstrument):
    """Driver: one line per setting, a validator on every ranged value."""

    voltage = Control(
        ":SOUR:VOLT?",
        ":SOUR:VOLT {}",
        "Source level, V (±10 V).",
        validator=in_range(-10, 10, "V"),
        units="V",
    )
    output = Control(
        ":OUTP?",
        ":OUTP {}",
        "Output relay closed.",
        parse=parse_bool,
        validator=one_of([True, False]),
    )
    current = Measurement(":MEAS:CURR?", "Load current, A.", units="A")
    label = Control(
        ":SYST:LAB?",
        ':SYST:LAB "{}"',
        "Front-panel label (text).",
        validator=safe_string(16),
        parse=lambda r, *a: r.strip('"'),
    )
