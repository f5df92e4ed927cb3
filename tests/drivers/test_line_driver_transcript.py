"""The line driver's exact bytes (golden transcript), replayed into its emulator too."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.limits import SafetyLimits
from drivers.line_driver import LineDriver
from drivers.transcript import expected_protocol
from hil_sim.crossbar import CrossbarArray
from hil_sim.devices import make_devices
from hil_sim.line_driver import LineDriverDevice

OK = '0,"No error"'
LIMITS = SafetyLimits(3.0, 1e-3, 1e-6, 1e-3, 0.2)
SESSION = [
    ("*RST", None),
    (":SYST:ERR?", OK),
    (":SOUR:VOLT:LIM 3", None),
    (":SYST:ERR?", OK),
    (":OUTP 0", None),
    (":SYST:ERR?", OK),
    (":SYST:LIN?", "2,2"),
    (":WAV:CLE", None),
    (":SYST:ERR?", OK),
    (":WAV:PULS ROW,1,0,0.01,0.5,0.02,0.01,0.5", None),
    (":WAV:PULS COL,0,0.005,0.0001,-0.5", None),
    (":SYST:ERR?", OK),
    (":WAV:POIN?", "3"),
    (":WAV:DUR?", "+3.000000E-02"),
]


def test_line_driver_bytes_and_emulator_replies():
    with expected_protocol(LineDriver, SESSION) as driver:
        driver.configure(LIMITS)
        n = driver.load_pulses(
            {1: [(0.02, 0.01, 0.5), (0.0, 0.01, 0.5)]}, {0: [(0.005, 1e-4, -0.5)]}
        )
        assert n == 3
        assert driver.duration_s() == pytest.approx(0.03)
    device = LineDriverDevice(CrossbarArray(make_devices("rram", (2, 2), np.random.default_rng(0))))
    for sent, reply in SESSION:
        got = device.handle(sent)
        assert got == reply, (sent, got)


def test_emulator_refuses_what_the_protocol_forbids():
    device = LineDriverDevice(CrossbarArray(make_devices("rram", (2, 2), np.random.default_rng(0))))
    for message in (":SOUR:VOLT:LIM 1", ":WAV:PULS ROW,0,0,0.01,1.5", ":WAV:PULS ROW,2,0,0.01,0.5",
                    ":INIT", ":MEAS:COL:CURR?"):  # fmt: skip
        assert device.handle(message) in (None, "")
    codes = []
    while True:
        entry = device.handle(":SYST:ERR?")
        if entry.startswith("0,"):
            break
        codes.append(int(entry.split(",")[0]))
    assert codes == [-222, -222, -221, -221]
