"""What calibration added to the wires: the CNEA board's broken amplifiers and temperature, the
selector's line tests, far-end reads, standard's certificate and temperature — driver and
emulator, byte for byte and over the real wires."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.cnea_board import CneaBoard
from drivers.errors import InstrumentReportedError, OutOfRangeError
from drivers.selector import CrossbarSelector
from drivers.transcript import expected_protocol
from hil_sim.cnea_board import CODE_MAX, CneaBoardEmulator, FrontEnd
from hil_sim.crossbar import CrossbarArray, Route
from hil_sim.devices import make_devices
from hil_sim.line_server import TcpLineServer
from hil_sim.selector import STANDARD_REFERENCE, SelectorDevice
from tests.cnea_source import SineSource

OK = '0,"No error"'


# --- CNEA board ---------------------------------------------------------------------------------


def test_broken_amplifiers_are_seeded_and_stuck_whatever_the_input():
    a, b = FrontEnd(4096, 1), FrontEnd(4096, 1)
    np.testing.assert_array_equal(a.amplifier_fault, b.amplifier_fault)
    assert a.amplifier_fault.sum() == 4  # 0.1 % of 4096
    assert FrontEnd(4096, 2).amplifier_fault.tolist() != a.amplifier_fault.tolist()
    assert FrontEnd(64, 1).amplifier_fault.sum() == 0
    assert FrontEnd(4096, 1, fault_fraction=0.0).amplifier_fault.sum() == 0
    broken = np.flatnonzero(a.amplifier_fault)
    low = a.convert(np.full((3, 4096), -0.05, dtype=np.float32))
    high = a.convert(np.full((3, 4096), 0.05, dtype=np.float32))
    np.testing.assert_array_equal(low[:, broken], high[:, broken])  # no response
    healthy = ~a.amplifier_fault
    assert np.all(high[:, healthy] > low[:, healthy])
    assert np.all(np.abs(low[:, broken]) <= CODE_MAX)
    with pytest.raises(ValueError):
        FrontEnd(8, 1, fault_fraction=1.5)


def test_cnea_temperature_over_the_wire_and_from_a_board_without_it():
    with CneaBoardEmulator(SineSource(8), seed=3) as emulator:
        board = CneaBoard.open(emulator.resource, data_port=emulator.data_port)
        try:
            t = board.temperature_c()
            assert t == pytest.approx(emulator.device.temperature_c, abs=1e-4)
            assert 36 < t < 38
            arrays, _ = board.truth()
            assert arrays["board_amplifier_fault"].shape == (8,)
            board.check_errors("after the temperature")  # nothing queued
        finally:
            board.close()
    exchanges = [
        (":SYST:TEMP?", None),
        ("*OPC?", "1"),
        (":SYST:ERR?", '-113,"Undefined header"'),
        (":SYST:ERR?", OK),
    ]
    with expected_protocol(CneaBoard, exchanges) as board:
        assert board.temperature_c() is None
    exchanges = [(":SYST:TEMP?", "37.25"), ("*OPC?", "1")]
    with expected_protocol(CneaBoard, exchanges) as board:
        assert board.temperature_c() == 37.25


# --- crossbar model -----------------------------------------------------------------------------


def crossbar(architecture: str = "1t1r", rows: int = 6, cols: int = 5) -> CrossbarArray:
    devices = make_devices("rram", (rows, cols), np.random.default_rng(1))
    return CrossbarArray(devices, architecture=architecture, line_resistance_ohm=2.0)


def test_line_tests_see_contact_and_the_whole_line():
    xb = crossbar()
    row = Route("line", 2, -1)
    col = Route("line", -1, 3)
    assert xb.current(row, 0.01) == pytest.approx(0.01 / (xb.rc_row[2] + 2.0 * xb.cols))
    assert xb.read(col, 0.01) == pytest.approx(0.01 / (xb.rc_col[3] + 2.0 * xb.rows))
    before = xb.conductance().copy()
    xb.pulse(row, 2.5, 1e-4)  # nothing on a line test reaches a cell
    np.testing.assert_array_equal(xb.conductance(), before)
    with pytest.raises(ValueError):
        xb.current(Route("line", 9, -1), 0.01)


def test_far_end_reads_change_only_the_wire_path():
    xb = crossbar()
    g = xb.conductance()
    i, j, r = 4, 1, 2.0
    near = 1 / (xb.current(Route("cell", i, j), 0.2) / 0.2)
    row_far = 1 / (xb.current(Route("cell", i, j, end="row_far"), 0.2) / 0.2)
    col_far = 1 / (xb.current(Route("cell", i, j, end="col_far"), 0.2) / 0.2)
    assert near - row_far == pytest.approx(xb.rc_row[i] + r * (2 * j + 2 - xb.cols))
    assert near - col_far == pytest.approx(xb.rc_col[j] + r * (xb.rows - 2 * i))
    assert near == pytest.approx(1 / g[i, j] + xb._r_series[i, j])
    passive = crossbar("passive")
    with pytest.raises(ValueError):
        passive.current(Route("cell", 1, 1, end="row_far"), 0.2)


# --- selector board -------------------------------------------------------------------------


def test_selector_routes_lines_and_far_cells_and_answers_certificate_and_temperature():
    xb = crossbar()
    board = SelectorDevice(xb, rng=np.random.default_rng(5))
    assert board.handle(":ROUT:LINE ROW,2") == "OK"
    assert board.handle(":ROUT:STAT?") == "LINE,ROW,2"
    assert board.current(0.01) == pytest.approx(0.01 / xb.line_resistance(Route("line", 2, -1)))
    assert board.handle(":ROUT:LINE COL,4") == "OK"
    assert board.handle(":ROUT:STAT?") == "LINE,COL,4"
    assert board.handle(":ROUT:LINE COL,5").startswith("ERR -222")
    assert board.handle(":ROUT:CELL:FAR ROW,1,2") == "OK"
    assert board.handle(":ROUT:STAT?") == "CELL,1,2,RFAR"
    assert board.handle(":ROUT:BIAS HALF") == "OK"
    assert board.handle(":ROUT:STAT?") == "CELL,1,2,RFAR"  # a bias change keeps the far end
    assert board.handle(":ROUT:CELL:FAR COL,1,2") == "OK"
    assert board.handle(":ROUT:STAT?") == "CELL,1,2,CFAR"
    number, value, u, date = board.handle(":ROUT:REF:CERT?").split(",")
    assert int(number) == STANDARD_REFERENCE and date
    true = board.reference_ohm[STANDARD_REFERENCE - 1]
    assert abs(float(value) - true) < 5 * float(u) and float(u) / true == pytest.approx(1e-5, 0.1)
    assert 22 < float(board.handle(":SYST:TEMP?")) < 24.5
    passive = SelectorDevice(crossbar("passive"))
    assert passive.handle(":ROUT:CELL:FAR ROW,1,2").startswith("ERR -221")


def test_selector_driver_additions_over_a_socket():
    xb = crossbar()
    device = SelectorDevice(xb, rng=np.random.default_rng(5))
    with TcpLineServer(device, name="sel-cal") as server:
        selector = CrossbarSelector.open(server.serial_url)
        try:
            selector.connect_line("row", 3)
            assert selector.route() == "LINE,ROW,3"
            selector.connect_line("col", 0)
            assert selector.route() == "LINE,COL,0"
            selector.select_cell_far(5, 4, "col")
            assert selector.route() == "CELL,5,4,CFAR"
            cert = selector.reference_certificate()
            assert cert.number == STANDARD_REFERENCE and cert.value_ohm == pytest.approx(
                device.certified_ohm, rel=1e-8
            )
            assert selector.temperature_c() == pytest.approx(device.temperature_c, abs=0.01)
            with pytest.raises(OutOfRangeError):
                selector.connect_line("diagonal", 1)
            with pytest.raises(OutOfRangeError):
                selector.select_cell_far(6, 0, "row")  # refused before anything is sent
            with pytest.raises(InstrumentReportedError):
                selector.query(":ROUT:NOSUCH?")
        finally:
            selector.close()
    transcript = [(":SYST:TEMP?", 'ERR -113,"Undefined header"')]
    with expected_protocol(CrossbarSelector, transcript) as old_board:
        assert old_board.temperature_c() is None
