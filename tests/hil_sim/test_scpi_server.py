"""The SCPI interpreter of the emulators: forms, chaining, errors, common commands."""

from __future__ import annotations

import pytest

from hil_sim.scpi_server import ScpiError, expand_pattern
from tests.scpi_demo import DemoSupplyDevice


@pytest.fixture
def dev() -> DemoSupplyDevice:
    return DemoSupplyDevice()


def test_long_short_and_case_forms_all_reach_the_same_handler(dev):
    for header in (
        ":SOURce:VOLTage:LEVel:IMMediate:AMPLitude",
        ":SOUR:VOLT",
        "sour:volt",
        ":source1:voltage:level",
        "SOUR:VOLT:LEV:IMM:AMPL",
        ":Sour1:Volt:Imm",
    ):
        dev.handle(f"{header} 1.25")
        assert dev.handle(f"{header}?") == "+1.250000E+00", header
        dev.handle(f"{header} 0")
    assert len(dev.errors) == 0


def test_partial_mnemonic_is_undefined(dev):
    dev.handle(":SOURC:VOLT 1")  # neither short (SOUR) nor long (SOURCE)
    assert dev.handle(":SYST:ERR?").startswith("-113,")


def test_chained_commands_relative_path_and_joined_answers(dev):
    # after :SOUR:VOLT, a header without colon is relative to :SOUR
    reply = dev.handle(":OUTP ON;:SOUR:VOLT 2;VOLT?;:OUTP?;*IDN?")
    assert reply == "+2.000000E+00;1;brainpaste,DEMO-SUPPLY,SN0001,1.0"


def test_error_queue_codes_order_and_clear(dev):
    dev.handle(":NOPE")  # -113
    dev.handle(":SOUR:VOLT 99")  # -222
    dev.handle(":SOUR:VOLT abc")  # -104
    dev.handle(":OUTP")  # -109
    assert dev.handle(":SYST:ERR:COUN?") == "4"
    codes = [int(dev.handle(":SYST:ERR?").split(",")[0]) for _ in range(5)]
    assert codes == [-113, -222, -104, -109, 0]
    assert dev.handle(":SYST:ERR?") == '0,"No error"'
    dev.handle(":NOPE")
    dev.handle("*CLS")
    assert dev.handle(":SYST:ERR:NEXT?") == '0,"No error"'


def test_error_queue_overflow_keeps_350(dev):
    for _ in range(15):
        dev.handle(":NOPE")
    entries = [dev.handle(":SYST:ERR?") for _ in range(11)]
    assert entries[9].startswith("-350,")
    assert entries[10] == '0,"No error"'


def test_command_error_discards_rest_of_message_execution_error_does_not(dev):
    assert dev.handle(":NOPE;*IDN?") is None
    assert dev.handle(":SOUR:VOLT 99;*OPC?") == "1"
    assert [dev.handle(":SYST:ERR?")[:4] for _ in range(2)] == ["-113", "-222"]


def test_min_max_default_and_si_suffix(dev):
    dev.handle(":SOUR:VOLT MAX")
    assert dev.handle(":SOUR:VOLT?") == "+2.000000E+01"
    dev.handle(":SOUR:VOLT DEF")
    assert dev.handle(":SOUR:VOLT?") == "+0.000000E+00"
    dev.handle(":SOUR:VOLT 500mV")
    assert dev.handle(":SOUR:VOLT?") == "+5.000000E-01"


def test_common_commands_and_status(dev):
    dev.handle(":SOUR:VOLT 3")
    dev.handle("*RST")
    assert dev.handle(":SOUR:VOLT?") == "+0.000000E+00"
    dev.handle(":SYST:FAIL")
    assert int(dev.handle("*STB?")) & 4  # error available
    assert int(dev.handle("*ESR?")) & 16  # execution error (-2xx)
    assert dev.handle("*ESR?") == "0"  # read clears
    assert dev.handle("*OPC?") == "1"
    assert dev.handle("*TST?") == "0"
    assert dev.handle("*BOGUS?") is None
    assert dev.handle(":SYST:ERR:ALL?").startswith("-240,")


def test_quoted_strings_keep_separators(dev):
    dev.handle(':SYST:LAB "a;b,c"')
    assert dev.handle(":SYST:LAB?") == '"a;b,c"'
    dev.handle(':SYST:LAB "unterminated')
    assert dev.handle(":SYST:ERR?").startswith("-150,")


def test_query_only_and_set_only_forms(dev):
    dev.handle(":MEAS:CURR 1")
    assert dev.handle(":SYST:ERR?").startswith("-113,")


def test_pattern_expansion():
    variants, is_query = expand_pattern("[:SOURce#]:VOLTage[:LEVel]?")
    assert is_query
    assert len(variants) == 4
    with pytest.raises(ValueError):
        expand_pattern(":SOUR$CE")


def test_handler_error_never_kills_the_device(dev):
    with pytest.raises(ScpiError):
        dev.tree.lookup(["SYSTEM", "FAIL"])[0].setter(None)
    assert dev.handle("*IDN?").startswith("brainpaste")
