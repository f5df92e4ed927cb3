"""The SMU emulators as instruments: manual command forms, trigger model, compliance, timing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hil_sim.smu_frontend import HiddenErrors, Timing
from hil_sim.smu_keithley2450 import Keithley2450Device
from hil_sim.smu_keysight_b2900 import KeysightB2900Device


class Resistor:
    """A resistor load that counts the pulses it sees."""

    def __init__(self, ohm: float) -> None:
        self.ohm = ohm
        self.pulses: list[tuple[float, float]] = []

    def current(self, v: float) -> float:
        return v / self.ohm

    def read(self, v: float) -> float:
        return v / self.ohm

    def pulse(self, v: float, width_s: float) -> float:
        self.pulses.append((v, width_s))
        return v / self.ohm


def errors(dev) -> list[str]:
    out = []
    while True:
        entry = dev.handle(":SYST:ERR?")
        if entry.startswith("0,"):
            return out
        out.append(entry)


@pytest.fixture
def k2450():
    dev = Keithley2450Device(load=Resistor(1e3), rng=np.random.default_rng(1))
    yield dev
    dev.close()


@pytest.fixture
def b2900():
    dev = KeysightB2900Device(load=Resistor(1e3), rng=np.random.default_rng(1))
    yield dev
    dev.close()


def test_2450_manual_list_sweep_example(k2450):
    # 2450 Reference Manual, :SOURce[1]:LIST:<function> example (delay shortened)
    for line in (
        'SENS:FUNC "CURR"',
        "SENS:CURR:RANG:AUTO ON",
        "SENS:CURR:NPLC 0.01",
        "SOUR:FUNC VOLT",
        "SOUR:VOLT:RANG 20",
        "SOUR:VOLT:ILIM 1",
        "SOUR:LIST:VOLT 1, 5, 1, 5, 1, 5",
        "SOUR:SWE:VOLT:LIST 1, 0.002",
        "INIT",
        "*WAI",
    ):
        assert k2450.handle(line) is None, line
    values = [
        float(v) for v in k2450.handle('TRAC:DATA? 1, 6, "defbuffer1", SOUR, READ').split(",")
    ]
    assert values[0::2] == [1, 5, 1, 5, 1, 5]
    np.testing.assert_allclose(values[1::2], np.array(values[0::2]) / 1e3, rtol=1e-4)
    assert errors(k2450) == []
    assert k2450.handle(":TRIG:STAT?") == "IDLE;IDLE;9"
    assert k2450.output is False  # the sweep's last block turns the output off


def test_2450_long_short_and_suffix_forms(k2450):
    k2450.handle(":SOURce1:VOLTage:LEVel:IMMediate:AMPLitude 1.5")
    assert k2450.handle(":sour:volt?") == "+1.500000E+00"
    k2450.handle(":SENSe1:CURRent:DC:NPLCycles 0.5")
    assert k2450.handle(":SENS:CURR:NPLC?") == "+5.000000E-01"
    assert errors(k2450) == []


def test_2450_refuses_what_it_does_not_implement(k2450):
    k2450.handle(":SENS:CURR:RSEN OFF")
    k2450.handle(":SOUR:FUNC CURR")
    k2450.handle(":SOUR:LIST:VOLT " + ",".join(["0.1"] * 101))
    k2450.handle(':TRAC:DATA? 1, 1, "nosuchbuffer"')
    codes = [int(e.split(",")[0]) for e in errors(k2450)]
    assert codes == [-113, -224, -223, -224]


def test_2450_compliance_is_clamped_and_flagged_as_the_manual_says(k2450):
    for line in (":SOUR:VOLT:ILIM 1e-3", ":SOUR:VOLT 2", ":OUTP ON"):
        k2450.handle(line)
    reading, status = k2450.handle(':READ? "defbuffer1", READ, SOURSTAT').split(",")
    assert float(reading) == pytest.approx(1e-3, rel=1e-3)
    assert int(status) & 32
    assert k2450.handle(":SOUR:VOLT:ILIM:TRIP?") == "1"
    k2450.handle(":SOUR:VOLT 0.5")
    reading, status = k2450.handle(':READ? "defbuffer1", READ, SOURSTAT').split(",")
    assert float(reading) == pytest.approx(0.5e-3, rel=1e-3) and int(status) == 0


def test_2450_hidden_gain_and_offset_are_applied():
    dev = Keithley2450Device(
        load=Resistor(1e3),
        errors=HiddenErrors(current_gain=1.002, current_offset_a=3e-9),
        rng=np.random.default_rng(2),
    )
    for line in (":SOUR:VOLT:ILIM 0.01", ":SOUR:VOLT 1", ":OUTP ON", ":SENS:CURR:NPLC 10"):
        dev.handle(line)
    assert float(dev.handle(":MEAS:CURR?")) == pytest.approx(1e-3 * 1.002 + 3e-9, rel=1e-5)


def test_2450_trigger_model_notify_and_wait_on_digital_lines(k2450):
    notified = []
    k2450.lines.wire_output(1, lambda: notified.append(time.monotonic()))
    for line in (
        ":DIG:LINE1:MODE TRIG, OUT",
        ":TRIG:DIG1:OUT:STIM NOTIFY1",
        ":DIG:LINE2:MODE TRIG, IN",
        ':TRIG:LOAD "Empty"',
        ":TRIG:BLOC:WAIT 1, DIGIO2",
        ":TRIG:BLOC:MEAS 2",
        ":TRIG:BLOC:NOT 3, 1",
        ":TRIG:BLOC:BRAN:COUN 4, 3, 1",
        ":INIT",
    ):
        assert k2450.handle(line) is None, line
    time.sleep(0.05)
    assert k2450.handle(":TRIG:STAT?").startswith("WAITING")
    assert notified == []
    for _ in range(3):
        k2450.digital_input(2)
        time.sleep(0.03)
    assert k2450.handle("*OPC?") == "1"
    assert len(notified) == 3
    assert k2450.handle(":TRAC:ACT?") == "3"
    k2450.handle(":DIG:LINE2:MODE DIG, IN")
    k2450.digital_input(2)  # not a trigger input any more: no event
    assert k2450.lines.wait(2, _set_event()) is None
    assert errors(k2450) == []


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_2450_settings_refused_while_the_model_runs_and_abort_stops_it(k2450):
    for line in (':TRIG:LOAD "Empty"', ":TRIG:BLOC:DEL:CONS 1, 5", ":INIT"):
        k2450.handle(line)
    k2450.handle(":SOUR:VOLT 1")
    assert errors(k2450)[0].startswith("-221")
    start = time.monotonic()
    k2450.handle(":ABOR")
    assert time.monotonic() - start < 1.0
    assert k2450.handle(":TRIG:STAT?").startswith("ABORTED")


def test_2450_instrument_time_is_paced():
    dev = Keithley2450Device(load=Resistor(1e3), timing=Timing(settle_s=0.0))
    for line in (":SENS:CURR:NPLC 1", ":SOUR:VOLT 0.1", ":OUTP ON"):
        dev.handle(line)
    start = time.monotonic()
    dev.handle(":READ?")
    assert time.monotonic() - start >= 0.019  # NPLC 1 at 50 Hz
    for line in (
        ':TRIG:LOAD "Empty"',
        ":TRIG:BLOC:DEL:CONS 1, 0.01",
        ":TRIG:BLOC:BRAN:COUN 2, 5, 1",
    ):
        dev.handle(line)
    start = time.monotonic()
    dev.handle(":INIT")
    dev.handle("*OPC?")
    assert time.monotonic() - start >= 0.049
    dev.close()


def test_2450_delay_blocks_program_the_load_with_their_width(k2450):
    load = k2450.load
    for line in (
        ":SOUR:VOLT:ILIM 0.01",
        ":SOUR:VOLT 2.5",
        ':SOUR:CONF:LIST:CRE "P"',
        ':SOUR:CONF:LIST:STOR "P"',
        ':TRIG:LOAD "Empty"',
        ':TRIG:BLOC:CONF:REC 1, "P", 1',
        ":TRIG:BLOC:SOUR:STAT 2, ON",
        ":TRIG:BLOC:DEL:CONS 3, 1e-5",
        ":TRIG:BLOC:SOUR:STAT 4, OFF",
        ":INIT",
        "*WAI",
    ):
        k2450.handle(line)
    assert (2.5, 1e-5) in [(round(v, 6), w) for v, w in load.pulses]
    assert errors(k2450) == []


def test_b2900_pulsed_list_with_external_triggers(b2900):
    points = []
    b2900.lines.wire_output(1, lambda: points.append(1))
    for line in (
        ":SOUR:DIG:EXT1:FUNC TOUT",
        ":SOUR:DIG:EXT2:FUNC TINP",
        ":SENS:CURR:PROT 0.1",
        ":SENS:CURR:NPLC 0.01",
        ":SOUR:FUNC:SHAP PULS",
        ":SOUR:VOLT:MODE LIST",
        ":SOUR:LIST:VOLT 1,2,3",
        ":SOUR:PULS:WIDT 5e-4",
        ":TRIG:ACQ:DEL 2e-4",
        ":TRIG:ALL:SOUR EXT2",
        ":TRIG:ALL:COUN 3",
        ":TRIG:ACQ:TOUT ON",
        ":TRIG:ACQ:TOUT:SIGN EXT1",
        ":OUTP ON",
        ":INIT (@1)",
    ):
        assert b2900.handle(line) is None, line
    assert b2900.handle(":STAT:OPER:COND?") in ("0", "18")
    for _ in range(3):
        b2900.digital_input(2)
    assert b2900.handle("*OPC?") == "1"
    assert b2900.handle(":STAT:OPER:COND?") == "9"
    current = [float(v) for v in b2900.handle(":FETC:ARR:CURR? (@1)").split(",")]
    np.testing.assert_allclose(current, [1e-3, 2e-3, 3e-3], rtol=1e-4)
    assert b2900.handle(":FETC:ARR:SOUR?") == "+1.000000E+00,+2.000000E+00,+3.000000E+00"
    assert len(points) == 3
    assert [round(w, 6) for _, w in b2900.load.pulses] == [5e-4] * 3
    assert errors(b2900) == []


def test_b2900_compliance_status_and_refusals(b2900):
    for line in (":SENS:CURR:PROT 1e-3", ":SOUR:VOLT 2", ":OUTP ON"):
        b2900.handle(line)
    assert float(b2900.handle(":MEAS:CURR? (@1)")) == pytest.approx(1e-3, rel=1e-3)
    assert b2900.handle(":SENS:CURR:PROT:TRIP?") == "1"
    b2900.handle(":SOUR:PULS:WIDT 1e-5")  # below the 50 us minimum
    b2900.handle(":SOUR:VOLT:MODE SWE")
    b2900.handle(":SENS:CURR:RSEN ON")
    b2900.handle(":FETC:ARR:CURR?")
    codes = [int(e.split(",")[0]) for e in errors(b2900)]
    assert codes == [-222, -224, -113, -230]
