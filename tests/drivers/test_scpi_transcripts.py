"""The driver's exact bytes, checked against transcripts (no instrument, no emulator)."""

from __future__ import annotations

import pytest

from drivers.errors import (
    InstrumentReportedError,
    MalformedReply,
    MeasurementOverflow,
    OutOfRangeError,
)
from drivers.scpi import Identity, parse_error, parse_float
from drivers.transcript import TranscriptMismatch, expected_protocol
from tests.scpi_demo import DemoSupply

OK = '0,"No error"'


def test_set_sends_command_then_checks_error_queue():
    with expected_protocol(DemoSupply, [(":SOUR:VOLT 1.5", None), (":SYST:ERR?", OK)]) as d:
        d.voltage = 1.5


def test_get_parses_reply():
    with expected_protocol(DemoSupply, [(":SOUR:VOLT?", "+1.500000E+00"), (":OUTP?", "1")]) as d:
        assert d.voltage == 1.5
        assert d.output is True


def test_out_of_range_value_raises_before_anything_is_sent():
    with expected_protocol(DemoSupply, []) as d:
        with pytest.raises(OutOfRangeError, match=r"voltage = 10.5 V is outside \[-10, 10\] V"):
            d.voltage = 10.5
        with pytest.raises(OutOfRangeError):
            d.voltage = float("nan")
        with pytest.raises(OutOfRangeError):
            d.output = "maybe"


def test_injection_through_a_string_is_refused_before_sending():
    with expected_protocol(DemoSupply, []) as d:
        for evil in ("x;*RST", "x\n:OUTP ON", 'x"', "x\x00"):
            with pytest.raises(OutOfRangeError):
                d.label = evil
    with expected_protocol(DemoSupply, []) as d, pytest.raises(ValueError):
        d.write(":SOUR:VOLT 1\n:OUTP ON")


def test_instrument_error_names_the_command_and_drains_queue():
    exchanges = [
        (":OUTP 1", None),
        (":SYST:ERR?", '-221,"Settings conflict;1;2026"'),
        (":SYST:ERR?", '-222,"Data out of range"'),
        (":SYST:ERR?", OK),
    ]
    with expected_protocol(DemoSupply, exchanges) as d:
        with pytest.raises(InstrumentReportedError) as info:
            d.output = True
    err = info.value
    assert (err.code, err.instrument_message, err.command) == (-221, "Settings conflict", ":OUTP 1")
    assert err.more == [(-222, "Data out of range")]


def test_overflow_and_garbage_replies_are_typed():
    with expected_protocol(
        DemoSupply,
        [(":MEAS:CURR?", "+9.900000E+37"), (":MEAS:CURR?", "9.91E37"), (":MEAS:CURR?", "OVERLOAD")],
    ) as d:
        with pytest.raises(MeasurementOverflow):
            _ = d.current
        with pytest.raises(MeasurementOverflow):
            _ = d.current
        with pytest.raises(MalformedReply, match="not a number"):
            _ = d.current


def test_common_commands():
    exchanges = [
        ("*IDN?", "ACME,DMM1,123,1.0"),
        ("*RST", None),
        (":SYST:ERR?", OK),
        ("*CLS", None),
        ("*OPC?", "1"),
        ("*WAI", None),
    ]
    with expected_protocol(DemoSupply, exchanges) as d:
        assert d.identify() == Identity("ACME", "DMM1", "123", "1.0")
        d.reset()
        d.clear_status()
        d.wait_complete()
        d.wait()


def test_transcript_catches_unused_and_wrong_exchanges():
    with pytest.raises(TranscriptMismatch, match="not finished"):
        with expected_protocol(DemoSupply, [("*IDN?", "a,b,c,d"), ("*RST", None)]) as d:
            d.identify()
    with pytest.raises(TranscriptMismatch, match="expects"):
        with expected_protocol(DemoSupply, [(":SOUR:VOLT 2", None)]) as d:
            d.write(":SOUR:VOLT 1", check=False)


@pytest.mark.parametrize("reply", ["", "1,2", "a,b,c", "x,y,z,w,v"])
def test_bad_identity_is_malformed(reply):
    with pytest.raises(MalformedReply):
        Identity.parse(reply)


def test_parsers():
    assert parse_float(" -1.5E-03 ") == -1.5e-3
    assert parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert parse_error('+0,"No error"') == (0, "No error")
    with pytest.raises(MalformedReply):
        parse_error("garbage")
