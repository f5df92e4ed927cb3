"""The SMU and selector drivers' exact bytes (transcripts), and the same bytes replayed into the
emulators: both sides follow the manuals, so a bench 2450 gets what the emulator gets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.errors import (
    DataIntegrityError,
    InstrumentReportedError,
    OutOfRangeError,
    SafetyLimitError,
)
from drivers.keithley2450 import Keithley2450
from drivers.keysight_b2900 import KeysightB2900
from drivers.scpi import parse_floats
from drivers.selector import CrossbarSelector, ScanStatus
from drivers.smu import VisitPlan
from drivers.transcript import expected_protocol
from hil_sim.crossbar import CrossbarArray
from hil_sim.devices import make_devices
from hil_sim.selector import SelectorDevice
from hil_sim.smu_keithley2450 import Keithley2450Device
from hil_sim.smu_keysight_b2900 import KeysightB2900Device
from tests.drivers import smu_transcripts as t

PLAN = VisitPlan(3, (1.0, 1.1, 1.2), 1e-5, 0.2)


# --- Keithley 2450 ----------------------------------------------------------------------------
def test_2450_configure_read_and_train_bytes():
    session = (
        t.K2450_CONFIGURE
        + t.K2450_FIRST_READ
        + t.K2450_NEXT_READ
        + t.K2450_TRAIN
        + t.K2450_SECOND_TRAIN
    )
    with expected_protocol(Keithley2450, session) as smu:
        smu.configure(t.LIMITS)
        first = smu.read_current(0.2)
        assert first.current_a == 2e-6 and not first.compliance
        assert smu.read_current(0.2).compliance  # SOURSTAT bit 5
        assert smu.triggers_per_visit(PLAN) == 1
        smu.prepare_visits(PLAN)
        smu.start_visits()
        readings = smu.finish_visits(PLAN, timeout_s=5)
        assert [r.current_a for r in readings] == [1e-5, 2e-5, 3e-5]
        assert [r.compliance for r in readings] == [False, True, False]
        second = VisitPlan(2, (-1.0, -1.5), 1e-5, 0.2)
        smu.prepare_visits(second)
        smu.start_visits()
        assert len(smu.finish_visits(second, timeout_s=5)) == 2


def test_2450_read_only_train_then_pulse_only_train_with_list_chunking():
    levels = tuple(0.5 + 0.001 * k for k in range(250))
    chunks = [",".join(f"{v:.10g}" for v in levels[a : a + 100]) for a in (0, 100, 200)]
    pulse_only = [
        (f":SOUR:LIST:VOLT {chunks[0]}", None),
        (f":SOUR:LIST:VOLT:APP {chunks[1]}", None),
        (f":SOUR:LIST:VOLT:APP {chunks[2]}", None),
        (':TRIG:LOAD "Empty"', None),
        (':TRIG:BLOC:BUFF:CLE 1, "defbuffer1"', None),
        (':TRIG:BLOC:CONF:REC 2, "BPZERO", 1', None),
        (":TRIG:BLOC:SOUR:STAT 3, ON", None),
        (":TRIG:BLOC:WAIT 4, DIGIO2", None),
        (':TRIG:BLOC:CONF:NEXT 5, "VoltCustomSweepList"', None),
        (":TRIG:BLOC:DEL:CONS 6, 0.0001", None),
        (':TRIG:BLOC:CONF:REC 7, "BPZERO", 1', None),
        (":TRIG:BLOC:NOT 8, 1", None),
        (":TRIG:BLOC:BRAN:COUN 9, 250, 4", None),
        (":TRIG:BLOC:SOUR:STAT 10, OFF", None),
        (":INIT", None),
        (":TRIG:STAT?", "IDLE;IDLE;10"),
        (":SYST:ERR?", t.OK),
    ]
    with expected_protocol(
        Keithley2450, t.K2450_CONFIGURE + t.K2450_READ_TRAIN + pulse_only
    ) as smu:
        smu.configure(t.LIMITS)
        reads = VisitPlan(2, None, 0.0, 0.2)
        smu.prepare_visits(reads)
        smu.start_visits()
        assert [r.current_a for r in smu.finish_visits(reads, timeout_s=5)] == [1e-5, 2e-5]
        pulses = VisitPlan(250, levels, 1e-4, None)
        smu.prepare_visits(pulses)
        smu.start_visits()
        assert smu.finish_visits(pulses, timeout_s=5) == []


def test_2450_list_sweep_bytes():
    with expected_protocol(Keithley2450, t.K2450_CONFIGURE + t.K2450_LIST_SWEEP) as smu:
        smu.configure(t.LIMITS)
        sweep = smu.list_sweep([-0.5, 0.0, 0.5], delay_s=1e-3)
        assert [(r.voltage_v, r.compliance) for r in sweep] == [
            (-0.5, False),
            (0.0, False),
            (0.5, True),
        ]
        with pytest.raises(SafetyLimitError):
            smu.list_sweep([0.5, 3.5])
        with pytest.raises(OutOfRangeError):
            smu.list_sweep([])


def test_2450_limits_refuse_before_anything_is_sent():
    with expected_protocol(Keithley2450, t.K2450_CONFIGURE) as smu:
        with pytest.raises(SafetyLimitError, match="no safety limits"):
            smu.prepare_visits(PLAN)
        smu.configure(t.LIMITS)
        sent = smu.transport.exchanges
        for bad in (
            lambda: smu.prepare_visits(VisitPlan(1, (3.5,), 1e-5, 0.2)),
            lambda: smu.prepare_visits(VisitPlan(1, (1.0,), 1e-7, 0.2)),
            lambda: smu.prepare_visits(VisitPlan(1, (1.0,), 2e-3, 0.2)),
            lambda: smu.prepare_visits(VisitPlan(1, (float("nan"),), 1e-5, 0.2)),
            lambda: smu.read_current(4.0),
            lambda: setattr(smu, "source_voltage", -3.01),
            lambda: setattr(smu, "current_limit", 2e-3),
        ):
            with pytest.raises(SafetyLimitError):
                bad()
        with pytest.raises(OutOfRangeError):
            smu.prepare_visits(VisitPlan(2501, (1.0,) * 2501, 1e-5, None))
        assert smu.transport.exchanges == sent


def test_2450_data_integrity_when_the_buffer_is_short():
    session = t.K2450_CONFIGURE + t.K2450_TRAIN[:-2] + [(t.K2450_TRAIN[-2][0], "+1.0E-05,0")]
    with expected_protocol(Keithley2450, session) as smu:
        smu.configure(t.LIMITS)
        smu.prepare_visits(PLAN)
        smu.start_visits()
        with pytest.raises(DataIntegrityError):
            smu.finish_visits(PLAN, timeout_s=5)


def test_2450_trigger_model_error_is_reported():
    session = (
        t.K2450_CONFIGURE
        + t.K2450_TRAIN[:-1]
        + [(":SYST:ERR?", '-221,"Settings conflict"'), (":SYST:ERR?", t.OK)]
    )
    with expected_protocol(Keithley2450, session) as smu:
        smu.configure(t.LIMITS)
        smu.prepare_visits(PLAN)
        smu.start_visits()
        with pytest.raises(InstrumentReportedError, match="trigger model"):
            smu.finish_visits(PLAN, timeout_s=5)


# --- Keysight B2900 ---------------------------------------------------------------------------
def test_b2900_configure_read_and_train_bytes():
    plan = VisitPlan(2, (1.0, 1.1), 5e-4, 0.2)
    with expected_protocol(KeysightB2900, t.B2900_CONFIGURE + t.B2900_READ + t.B2900_TRAIN) as smu:
        smu.configure(t.LIMITS)
        assert smu.read_current(0.2).current_a == 2e-6
        assert smu.triggers_per_visit(plan) == 2
        smu.prepare_visits(plan)
        smu.start_visits()
        readings = smu.finish_visits(plan, timeout_s=5)
        assert [r.current_a for r in readings] == [2e-5, 3e-5]
        assert [r.compliance for r in readings] == [False, True]


def test_b2900_refuses_widths_it_cannot_make_before_sending():
    with expected_protocol(KeysightB2900, t.B2900_CONFIGURE) as smu:
        smu.configure(t.LIMITS)
        sent = smu.transport.exchanges
        with pytest.raises(OutOfRangeError, match="below the B2900"):
            smu.prepare_visits(VisitPlan(1, (1.0,), 1e-5, None))
        with pytest.raises(OutOfRangeError, match="aperture"):
            smu.prepare_visits(VisitPlan(1, (1.0,), 1e-4, 0.2))
        with pytest.raises(SafetyLimitError):
            smu.prepare_visits(VisitPlan(1, (5.0,), 1e-4, None))
        assert smu.transport.exchanges == sent


# --- selector ---------------------------------------------------------------------------------
def test_selector_bytes_and_inline_errors():
    with expected_protocol(CrossbarSelector, t.SELECTOR_SESSION) as sel:
        assert sel.size() == (8, 8)
        sel.ground_all()
        sel.bias = "v/2"
        sel.select_cell(1, 2)
        assert sel.route() == "CELL,1,2"
        sel.select_row(7)
        sel.connect_reference(3)
        assert sel.reference_nominals() == [1e3, 1e4, 1e5, 1e6]
        sel.load_scan([(0, 0), (7, 7)], triggers_per_step=2)
        sel.arm_scan()
        assert sel.scan_status() == ScanStatus("ARMED", 0, 2)
        sel.abort_scan()
        assert sel.bias == "v/2"
    bad = [(":ROUT:SIZE?", "8,8"), (":ROUT:ROW 3", 'ERR -221,"Settings conflict; a scan is armed"')]
    with expected_protocol(CrossbarSelector, bad) as sel:
        with pytest.raises(InstrumentReportedError) as info:
            sel.select_row(3)
        assert info.value.code == -221 and info.value.command == ":ROUT:ROW 3"


def test_selector_refuses_bad_addresses_before_sending():
    with expected_protocol(CrossbarSelector, [(":ROUT:SIZE?", "8,8")]) as sel:
        for call in (
            lambda: sel.select_cell(8, 0),
            lambda: sel.select_cell(0, -1),
            lambda: sel.select_cell(True, 0),
            lambda: sel.select_row(9),
            lambda: sel.connect_reference(0),
            lambda: sel.load_scan([(0, 0), (3, 8)]),
            lambda: sel.load_scan([]),
            lambda: sel.load_scan([(0, 0)], triggers_per_step=0),
        ):
            with pytest.raises(OutOfRangeError):
                call()
        with pytest.raises(OutOfRangeError):
            sel.bias = "sideways"


# --- the same transcripts into the emulators --------------------------------------------------
class Resistor:
    def __init__(self, ohm: float) -> None:
        self.ohm = ohm

    def current(self, v: float) -> float:
        return v / self.ohm

    def read(self, v: float) -> float:
        return v / self.ohm

    def pulse(self, v: float, width_s: float) -> float:
        return v / self.ohm


IDLE = {":TRIG:STAT?": "IDLE;IDLE;", ":STAT:OPER:COND?": "9"}


def replay(device, transcript) -> None:
    """Feed every sent message to ``device``; each reply must have the transcript's shape."""
    previous = ""
    for sent, expected in transcript:
        if sent in IDLE:  # a status poll: poll until the emulator is idle too
            if sent == previous:
                continue
            previous = sent
            deadline = time.monotonic() + 5
            while not device.handle(sent).startswith(IDLE[sent]):
                assert time.monotonic() < deadline, f"{sent} never idle"
                time.sleep(0.005)
            continue
        previous = sent
        reply = device.handle(sent)
        if sent.startswith((":INIT", "INIT")):
            device.digital_input(2)  # the selector's first ready pulse
        if expected is None:
            assert reply is None, (sent, reply)
            continue
        assert reply is not None, sent
        if sent.startswith(":SYST:ERR?"):
            assert reply == t.OK, (sent, reply)
        elif sent == ":SYST:LFR?":
            assert reply == "50"
        else:
            assert len(parse_floats(reply)) == len(parse_floats(expected)), (sent, reply)
    assert device.handle(":SYST:ERR?") == t.OK


def test_2450_emulator_accepts_the_driver_transcripts():
    dev = Keithley2450Device(load=Resistor(1e4), rng=np.random.default_rng(1))
    dev.lines.wire_output(1, lambda: dev.digital_input(2))  # a selector that is always ready
    try:
        replay(
            dev,
            t.K2450_CONFIGURE
            + t.K2450_FIRST_READ
            + t.K2450_NEXT_READ
            + t.K2450_TRAIN
            + t.K2450_SECOND_TRAIN
            + [(":OUTP OFF", None)]
            + t.K2450_READ_TRAIN
            + t.K2450_LIST_SWEEP,
        )
    finally:
        dev.close()


def test_b2900_emulator_accepts_the_driver_transcripts():
    dev = KeysightB2900Device(load=Resistor(1e4), rng=np.random.default_rng(1))
    dev.lines.wire_output(1, lambda: dev.digital_input(2))
    try:
        replay(dev, t.B2900_CONFIGURE + t.B2900_READ + t.B2900_TRAIN)
    finally:
        dev.close()


def test_selector_emulator_accepts_the_driver_transcript():
    rng = np.random.default_rng(2)
    board = SelectorDevice(CrossbarArray(make_devices("rram", (8, 8), rng), rng=rng), rng=rng)
    for sent, expected in t.SELECTOR_SESSION:
        assert board.handle(sent) == expected, sent
