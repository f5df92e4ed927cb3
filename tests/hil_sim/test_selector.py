"""The selector board emulator: every message answered, bad addresses refused, scan lists."""

from __future__ import annotations

import numpy as np
import pytest

from hil_sim.crossbar import CrossbarArray, Route
from hil_sim.devices import make_devices
from hil_sim.selector import REFERENCE_NOMINAL_OHM, SelectorDevice


@pytest.fixture
def board() -> SelectorDevice:
    rng = np.random.default_rng(1)
    crossbar = CrossbarArray(make_devices("rram", (4, 6), rng), rng=rng, clock=lambda: 0.0)
    return SelectorDevice(crossbar, rng=rng)


def test_every_message_is_answered(board):
    assert board.handle("*IDN?") == "brainpaste,XBAR-SELECTOR,SEL0001,1.0"
    assert board.handle(":ROUT:SIZE?") == "4,6"
    assert board.handle(":ROUTe:CELL 3,5") == "OK"
    assert board.handle(":rout:stat?") == "CELL,3,5"
    assert board.handle(":ROUT:ROW 1") == "OK"
    assert board.handle(":ROUT:STAT?") == "ROW,1"
    assert board.handle(":ROUT:OPEN:ALL") == "OK"
    assert board.handle(":ROUT:STAT?") == "OPEN"
    assert board.handle("") is None


def test_invalid_addresses_are_refused_and_change_nothing(board):
    board.handle(":ROUT:CELL 1,1")
    assert board.handle(":ROUT:CELL 4,0").startswith('ERR -222,"Data out of range; row 4')
    assert board.handle(":ROUT:CELL 0,6").startswith('ERR -222,"Data out of range; column 6')
    assert board.handle(":ROUT:CELL 0").startswith("ERR -109")
    assert board.handle(":ROUT:REF 5").startswith("ERR -222")
    assert board.handle(":ROUT:BIAS SIDEWAYS").startswith("ERR -224")
    assert board.handle(":ROUT:FROB").startswith("ERR -113")
    assert board.handle(":ROUT:STAT?") == "CELL,1,1"
    assert board.handle(":SYST:ERR?") == '0,"No error"'


def test_bias_follows_the_route(board):
    assert board.handle(":ROUT:BIAS THIRD") == "OK"
    assert board.handle(":ROUT:BIAS?") == "THIR"
    board.handle(":ROUT:CELL 2,2")
    assert board.route == Route("cell", 2, 2, "third")
    board.handle(":ROUT:BIAS FLO")
    assert board.route.bias == "float"


def test_reference_resistors_are_close_to_nominal_and_only_the_emulator_knows_them(board):
    assert board.handle(":ROUT:REF:CAT?") == "1000,10000,100000,1000000"
    true = board.reference_ohm
    assert np.all(np.abs(true / np.array(REFERENCE_NOMINAL_OHM) - 1) <= 0.005)
    assert np.all(true != np.array(REFERENCE_NOMINAL_OHM))
    board.handle(":ROUT:REF 2")
    assert board.handle(":ROUT:STAT?") == "REF,2"
    assert board.current(0.2) == pytest.approx(0.2 / true[1])


def test_scan_list_steps_on_triggers_and_pulses_ready(board):
    ready = []
    board.ready_out = ready.append
    assert board.handle(":ROUT:SCAN:ARM").startswith("ERR -221")  # empty list
    assert board.handle(":ROUT:SCAN:ADD 0,0,0,0,1,2") == "OK"
    assert board.handle(":ROUT:SCAN:ADD 0,9").startswith("ERR -222")
    assert board.handle(":ROUT:SCAN:POIN?") == "3"
    assert board.handle(":ROUT:SCAN:TCO 2") == "OK"
    assert board.handle(":ROUT:SCAN:ARM") == "OK"
    assert board.handle(":ROUT:CELL 1,1").startswith("ERR -221")  # armed: routing refused
    assert board.route == Route("cell", 0, 0, "ground")
    assert ready == [board.settle_s]
    expected = [(0, 0), (0, 0), (0, 0), (0, 0), (1, 2), (1, 2)]
    seen = []
    for _ in range(6):
        board.trigger_in()
        seen.append((board.route.row, board.route.col))
    assert seen[:5] == expected[1:]
    assert ready[1:] == [0.0, 0.0, 0.0, board.settle_s, 0.0]  # settling only when it moves
    assert board.handle(":ROUT:SCAN:STAT?") == "DONE,3,3"
    assert board.route == Route()
    board.trigger_in()  # not armed: ignored
    assert board.handle(":ROUT:SCAN:STAT?") == "DONE,3,3"


def test_scan_abort_grounds_everything(board):
    board.handle(":ROUT:SCAN:ADD 1,1,2,2")
    board.handle(":ROUT:SCAN:ARM")
    assert board.handle(":ROUT:SCAN:STAT?") == "ARMED,0,2"
    assert board.handle(":ROUT:SCAN:ABOR") == "OK"
    assert board.handle(":ROUT:STAT?") == "OPEN"
    assert board.handle(":ROUT:SCAN:STAT?") == "IDLE,0,2"


def test_the_board_is_the_smu_load(board):
    assert board.current(0.2) == 0.0  # nothing routed
    board.handle(":ROUT:CELL 1,3")
    g = board.crossbar.conductance()[1, 3]
    assert board.current(0.2) == pytest.approx(0.2 * g, rel=0.02)
    before = board.crossbar.conductance().copy()
    board.pulse(1.5, 1e-4)
    after = board.crossbar.conductance()
    assert after[1, 3] > before[1, 3]
    assert (np.delete(after.ravel(), 9) == np.delete(before.ravel(), 9)).all()
