"""The CNEA board driver: exact bytes (transcripts), then over real wires against the emulator
(pyvisa-py socket for control, TCP for frames) with every data-link fault."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from drivers.cnea_board import (
    CneaBoard,
    CneaLimits,
    CorruptFrame,
    SequenceGap,
    Stall,
    data_host,
    format_channel_list,
    region_channels,
)
from drivers.cnea_frames import BadCrc, Frame
from drivers.errors import (
    ConnectionLost,
    DriverError,
    InstrumentReportedError,
    OutOfRangeError,
    SafetyLimitError,
)
from drivers.transcript import expected_protocol
from hil_sim.cnea_board import CneaBoardEmulator
from tests.cnea_source import SineSource

OK = '0,"No error"'


# --- pure helpers and transcripts ---------------------------------------------------------


def test_channel_lists_compress_runs():
    assert format_channel_list([3, 1, 2, 7, 9, 8], 16) == "(@1:3,7:9)"
    assert format_channel_list(np.arange(4096), 4096) == "(@0:4095)"
    assert format_channel_list([5], 16) == "(@5)"
    with pytest.raises(OutOfRangeError):
        format_channel_list([16], 16)
    with pytest.raises(OutOfRangeError):
        format_channel_list([], 16)


def test_region_channels_are_row_major():
    chans = region_channels(slice(1, 3), slice(62, 64))
    assert chans.tolist() == [126, 127, 190, 191]
    with pytest.raises(OutOfRangeError):
        region_channels([64], [0])


def test_data_host_from_resource():
    assert data_host("TCPIP::10.0.0.5::5025::SOCKET") == "10.0.0.5"
    assert data_host("tcpip0::board.lab::5025::SOCKET") == "board.lab"
    with pytest.raises(DriverError):
        data_host("ASRL/dev/ttyUSB0::INSTR")


def test_set_current_clamp_bytes():
    exchanges = [(":ACQ:CHAN?", "16"), (":SOUR:CURR 5e-10,(@0:3)", None), (":SYST:ERR?", OK)]
    with expected_protocol(CneaBoard, exchanges) as board:
        board.set_current_clamp(range(4), 0.5e-9)


def test_electroporate_bytes_and_single_error_check():
    exchanges = [
        (":ACQ:CHAN?", "4096"),
        (":ELEC:AMPL 2", None),
        (":ELEC:WIDT 0.0001", None),
        (":ELEC (@64:127)", None),
        (":SYST:ERR?", OK),
    ]
    with expected_protocol(CneaBoard, exchanges) as board:
        assert board.electroporate_region([1], slice(None), 2.0, 100e-6).size == 64


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("electroporate", {"amplitude_v": 3.5}),
        ("electroporate", {"amplitude_v": -1.0}),
        ("electroporate", {"width_s": 0.02}),
        ("electroporate", {"amplitude_v": math.nan}),
        ("set_current_clamp", {"current_a": 2e-9}),
        ("set_voltage_clamp", {"voltage_v": -0.2}),
    ],
)
def test_safety_limits_refuse_before_sending(call, kwargs):
    with expected_protocol(CneaBoard, []) as board:
        with pytest.raises(SafetyLimitError):
            getattr(board, call)(**kwargs)


def test_limits_are_configurable():
    exchanges = [(":ACQ:CHAN?", "4"), (":SOUR:VOLT -0.14,(@0:3)", None), (":SYST:ERR?", OK)]
    with expected_protocol(CneaBoard, exchanges, limits=CneaLimits(max_hold_voltage_v=0.15)) as b:
        b.set_voltage_clamp(None, -0.14)


def test_gain_validator():
    with expected_protocol(CneaBoard, []) as board:
        with pytest.raises(OutOfRangeError):
            board.gain = 3


def test_truth_absent_on_a_real_board(demo_tcp):
    """A board without the emulator's command answers -113: no truth, no timeout."""
    board = CneaBoard.open(demo_tcp.visa_resource, timeout_s=3.0)
    try:
        start = time.monotonic()
        assert board.truth() is None
        assert time.monotonic() - start < 2.5  # answered, not timed out
        board.check_errors()
    finally:
        board.transport.close()


def test_no_data_port_is_a_clear_error(demo_tcp):
    board = CneaBoard.open(demo_tcp.visa_resource, timeout_s=1.0)
    try:
        with pytest.raises(DriverError, match="data_port"):
            board.open_stream()
    finally:
        board.transport.close()


# --- over the wire ------------------------------------------------------------------------


@pytest.fixture
def emulator():
    with CneaBoardEmulator(SineSource(64), keep_samples=True, rate=math.inf) as emu:
        yield emu


@pytest.fixture
def board(emulator):
    drv = CneaBoard.open(emulator.resource, timeout_s=2.0, data_port=emulator.data_port)
    yield drv
    drv.close()


def collect(stream, frames: int, timeout_s: float = 10.0):
    """Iterate ``stream`` until ``frames`` frames arrived; (frames, events)."""
    got, events = [], []
    deadline = time.monotonic() + timeout_s
    while len(got) < frames:
        assert time.monotonic() < deadline, f"only {len(got)} frames, events {events}"
        item = next(stream)
        (got if isinstance(item, Frame) else events).append(item)
    return got, events


def collect_until(stream, kind, frames_after: int = 2, timeout_s: float = 10.0):
    """Iterate until an event of ``kind`` and ``frames_after`` more frames; (frames, events)."""
    got, events = [], []
    seen_at = None
    deadline = time.monotonic() + timeout_s
    while seen_at is None or len(got) < seen_at + frames_after:
        assert time.monotonic() < deadline, f"no {kind.__name__} in {len(got)} frames: {events}"
        item = next(stream)
        if isinstance(item, Frame):
            got.append(item)
        else:
            events.append(item)
            if isinstance(item, kind) and seen_at is None:
                seen_at = len(got)
    return got, events


def test_identity_settings_and_arrays(board):
    assert board.identify().model == "CNEA-4096"
    assert board.n_channels == 64
    assert board.sample_rate_hz == 10_000.0
    assert board.samples_per_frame == 16
    gain = board.nominal_gain()
    assert gain.shape == (64,) and np.allclose(gain, 5e-6)
    assert np.all(board.nominal_offset() == 0)
    positions = board.positions()
    assert positions.shape == (64, 2) and positions[1, 0] == pytest.approx(20e-6)
    settings = board.settings()
    assert settings["channels_current_clamp"] == 64
    assert settings["calibration_source"]["enabled"] is False


def test_modes_levels_and_gain(board, emulator):
    board.set_voltage_clamp([0, 1, 2], -0.06)
    board.set_current_clamp([3], 0.2e-9)
    modes = board.modes()
    assert modes[:4].tolist() == [1, 1, 1, 0] and modes[4:].sum() == 0
    assert board.levels([0, 3]).tolist() == pytest.approx([-0.06, 0.2e-9])
    assert np.allclose(board.nominal_gain()[:3], 1e-12)
    board.gain = 4
    assert board.gain == 4
    assert np.allclose(board.nominal_gain()[3:], 5e-6 / 4)
    assert emulator.device.source.modes[:4].tolist() == [1, 1, 1, 0]


def test_electroporation_reaches_the_source(board, emulator):
    board.electroporate([5, 6], amplitude_v=2.0, width_s=300e-6)
    assert emulator.device.source.calls[-1] == ("electroporate", (2, 2.0, 300e-6))
    access = board.access()
    assert access[5] > 0 and access[0] == 0


def test_instrument_errors_surface(board):
    board.start()
    with pytest.raises(InstrumentReportedError) as info:
        board.gain = 2  # cannot change while acquiring
    assert info.value.code == -221
    board.stop()
    with pytest.raises(InstrumentReportedError) as info:
        board.sample_rate_hz = 3000
    assert info.value.code == -224


def test_calibration_source_controls(board):
    board.calibration_source_level_v = 0.01
    board.calibration_source_function = "square"
    board.calibration_source_frequency_hz = 25
    board.calibration_source_enabled = True
    assert board.calibration_source_enabled is True
    assert board.calibration_source_level_v == pytest.approx(0.01)
    assert board.calibration_source_function == "square"
    assert board.calibration_resistance_ohm == pytest.approx(100e6)
    board.close()
    assert not board.transport.is_open


def test_truth_from_the_emulator(board):
    arrays, attrs = board.truth()
    assert arrays["synapse_pre"].tolist() == [0, 1]
    assert arrays["board_gain_factor"].shape == (2, 64)
    assert attrs["source"] == "SineSource"


def test_stream_matches_emulator_samples_bit_for_bit(board, emulator):
    stream = board.open_stream()
    board.start(stream)
    frames, events = collect(stream, 40)
    board.stop()
    assert events == []
    got = np.concatenate([f.samples for f in frames])
    first, sent = emulator.device.tapped_codes()
    assert frames[0].first_sample == first == 0
    np.testing.assert_array_equal(got, sent[: len(got)])
    assert np.all(np.diff([f.first_sample for f in frames]) == 16)
    assert stream.counters.frames_received == 40 and stream.counters.frames_lost == 0


def test_sequence_wrap_is_not_a_gap(board):
    board.set_next_sequence(2**32 - 3)
    stream = board.open_stream()
    board.start(stream)
    frames, events = collect(stream, 8)
    board.stop()
    assert [f.sequence for f in frames[:5]] == [2**32 - 3, 2**32 - 2, 2**32 - 1, 0, 1]
    assert events == [] and stream.counters.frames_lost == 0


def test_lost_frames_become_a_counted_gap(board, emulator):
    stream = board.open_stream()
    emulator.data.faults.mute_next(3)
    board.start(stream)
    frames, events = collect(stream, 5)
    board.stop()
    gaps = [e for e in events if isinstance(e, SequenceGap)]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.frames_lost == 3 and gap.reason == "frames lost"
    assert (gap.first_sample, gap.end_sample) == (0, 48)
    assert frames[0].first_sample == 48
    assert stream.counters.frames_lost == 3 and stream.counters.samples_lost == 48


def test_corrupt_frame_is_discarded_and_counted(board, emulator):
    stream = board.open_stream()
    board.start(stream)
    collect(stream, 2)
    emulator.data.faults.garbage_next()
    _frames, events = collect_until(stream, SequenceGap)
    board.stop()
    corrupt = [e for e in events if isinstance(e, CorruptFrame)]
    gaps = [e for e in events if isinstance(e, SequenceGap)]
    assert len(corrupt) == 1 and isinstance(corrupt[0].error, BadCrc)
    assert len(gaps) == 1 and gaps[0].reason == "corrupt frame" and gaps[0].frames_lost == 1
    assert stream.counters.crc_errors == 1


def test_dropped_connection_then_reconnect_gives_a_gap(board, emulator):
    stream = board.open_stream()
    board.start(stream)
    collect(stream, 3)
    emulator.data.faults.drop_next()
    with pytest.raises(ConnectionLost):
        collect(stream, 10**7)
    stream.reconnect()
    _frames, events = collect(stream, 3)
    board.stop()
    gaps = [e for e in events if isinstance(e, SequenceGap)]
    assert gaps and gaps[0].reason == "connection lost" and gaps[0].frames_lost >= 1
    assert stream.counters.reconnects == 1 and stream.counters.truncated_frames <= 1


def test_stalled_stream_gives_typed_stall_events(board, emulator):
    stream = board.open_stream(stall_timeout_s=0.2)
    emulator.data.faults.stop_answering()
    board.start(stream)
    start = time.monotonic()
    events = [next(stream), next(stream)]
    assert all(isinstance(e, Stall) for e in events)
    assert events[1].silent_s == pytest.approx(0.4)
    assert time.monotonic() - start < 2.0
    assert stream.counters.stalls == 2
    emulator.data.faults.clear()
    _frames, later = collect(stream, 2)
    board.stop()
    assert any(isinstance(e, SequenceGap) for e in later)


def test_paced_board_overflow_is_flagged(emulator):
    """A host that does not read: the paced board's FIFO overflows and the next frame says so."""
    emulator.device.rate = 500.0
    emulator.data.fifo_s = 0.01
    board = CneaBoard.open(emulator.resource, timeout_s=2.0, data_port=emulator.data_port)
    try:
        stream = board.open_stream()
        board.start(stream)
        time.sleep(0.5)
        _frames, events = collect_until(stream, SequenceGap, timeout_s=20.0)
        board.stop()
        status = board.frame_status()
        gaps = [e for e in events if isinstance(e, SequenceGap)]
        assert status.overflowed > 0
        assert gaps and gaps[0].overflow and gaps[0].reason == "board overflow"
    finally:
        board.close()


def test_offline_board_then_reconnect(board, emulator):
    stream = board.open_stream()
    board.start(stream)
    collect(stream, 2)
    emulator.data.faults.go_offline(0.3)
    with pytest.raises(ConnectionLost):
        collect(stream, 10**7)
    failures = 0
    deadline = time.monotonic() + 5.0
    while True:
        assert time.monotonic() < deadline, "never came back"
        try:
            stream.reconnect(attempts=1)
            _frames, events = collect(stream, 2)
            break
        except ConnectionLost:  # refused, or accepted then closed while offline
            failures += 1
            time.sleep(0.05)
    board.stop()
    assert failures >= 1
    assert any(isinstance(e, SequenceGap) and e.after_reconnect for e in events)


def test_close_leaves_the_board_safe(emulator):
    board = CneaBoard.open(emulator.resource, timeout_s=2.0, data_port=emulator.data_port)
    board.set_voltage_clamp([1, 2], -0.05)
    board.calibration_source_enabled = True
    board.start()
    board.close()
    dev = emulator.device
    assert not dev.acquiring and not dev.front_end.cal_enabled
    assert dev.front_end.modes.sum() == 0 and dev.front_end.levels.max() == 0


def test_close_survives_a_dead_wire(emulator):
    board = CneaBoard.open(emulator.resource, timeout_s=0.5, data_port=emulator.data_port)
    emulator.control.stop()
    board.close()  # logs a warning, does not raise
    assert not board.transport.is_open


def test_frames_from_a_previous_acquisition_are_stale_not_a_restart(board, emulator):
    """A host that stopped without draining: the old frames still in flight are dropped."""
    stream = board.open_stream()
    board.start(stream)
    collect(stream, 5)
    board.stop()
    time.sleep(0.1)  # frames of the first run still sit in the socket buffers
    board.start(stream)
    frames, events = collect(stream, 20)
    board.stop()
    assert events == []
    assert stream.counters.restarts == 0 and stream.counters.stale_frames > 0
    starts = [f.first_sample for f in frames]
    assert starts == sorted(starts) and np.all(np.diff(starts) == 16)
