"""Acquisition from the emulated board over real wires into real HDF5 files: bit-for-bit
equality with what the board produced, and every injected fault giving a typed error or a
gap row while the file stays readable."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from drivers.cnea_board import CneaBoard, StreamStalled
from drivers.errors import ConnectionLost, DriverError
from hil_sim.cnea_board import CneaBoardEmulator
from instrument import storage
from instrument.acquisition import (
    Acquisition,
    AcquisitionSettings,
    AcquisitionStatus,
    _LiveView,
    minmax_decimate,
)
from instrument.recording import GAP_FILL, open_hdf5_recording
from tests.cnea_source import SineSource

FAST = AcquisitionSettings(
    ring_s=10.0, stall_timeout_s=0.3, stall_abort_s=1.0, reconnect_delay_s=0.1
)
"""Quick to give up on a stalled link; a deep ring so a busy CI machine never trips the
backpressure stop (that has its own test)."""


@pytest.fixture
def emulator():
    # paced at 10x real time: fast, and the host keeps up (unpaced, a board outruns any writer)
    with CneaBoardEmulator(SineSource(64), keep_samples=True, rate=10.0) as emu:
        yield emu


@pytest.fixture
def board(emulator):
    drv = CneaBoard.open(emulator.resource, timeout_s=3.0, data_port=emulator.data_port)
    yield drv
    drv.close()


def produced(emulator) -> np.ndarray:
    first, codes = emulator.device.tapped_codes()
    assert first == 0
    return codes


def assert_matches_outside_gaps(rec, codes: np.ndarray) -> np.ndarray:
    """Every row outside a gap equals the board's; gap rows hold GAP_FILL. The gap mask."""
    traces = rec.traces[()]
    mask = rec.gap_mask(0, rec.n_samples)
    np.testing.assert_array_equal(traces[~mask], codes[: rec.n_samples][~mask])
    assert np.all(traces[mask] == GAP_FILL)
    assert not np.any(traces[~mask] == GAP_FILL)
    return mask


def test_recording_matches_the_board_bit_for_bit(board, emulator, tmp_path):
    path = tmp_path / "s" / "session.h5"
    status = Acquisition(board, path, duration_s=0.5, settings=FAST).wait()
    assert status.state == "stopped" and status.stop_reason == "duration reached"
    with open_hdf5_recording(path) as rec:
        assert rec.n_samples == 5000
        np.testing.assert_array_equal(rec.traces[()], produced(emulator)[:5000])
        assert rec.sample_rate_hz == 10_000.0
        assert np.allclose(rec.gain_v, 5e-6) and rec.positions_m.shape == (64, 2)
        assert rec.attrs["complete"] and rec.attrs["frames_lost"] == 0
        assert rec.attrs["instrument_identity"].startswith("brainpaste CNEA-4096")
        assert rec.attrs["first_sample_index"] == 0
        assert rec.truth is not None and rec.truth.synapse_pre.tolist() == [0, 1]
        assert len(rec.gaps) == 0
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "brainpaste-session" and f.attrs["format_version"] == 1
        lines = [x.decode() for x in f["log"][()]]
        assert any("start" in x for x in lines) and any("duration reached" in x for x in lines)
        assert f["recording/traces"].fillvalue == GAP_FILL
        assert f["recording/channel_mode"].shape == (64,)
    assert not (path.parent / "session.h5.reserve").exists()


def test_dropped_connection_reconnects_and_leaves_a_gap_row(board, emulator, tmp_path):
    path = tmp_path / "session.h5"
    acq = Acquisition(board, path, duration_s=1.0, settings=FAST).start()
    while acq.status().frames_received < 20:
        time.sleep(0.01)
    emulator.data.faults.drop_next()
    status = acq.wait()
    assert status.reconnects == 1 and status.gaps >= 1 and status.stop_reason == "duration reached"
    with open_hdf5_recording(path) as rec:
        reasons = {
            g.decode() if isinstance(g, bytes) else g for g in rec._file["recording/gaps"]["reason"]
        }
        assert "connection lost" in reasons
        mask = assert_matches_outside_gaps(rec, produced(emulator))
        assert 0 < mask.sum() < rec.n_samples
        assert rec.attrs["reconnects"] == 1 and rec.attrs["complete"]


def test_corrupt_frame_becomes_a_gap_row(board, emulator, tmp_path):
    path = tmp_path / "session.h5"
    acq = Acquisition(board, path, duration_s=0.6, settings=FAST).start()
    while acq.status().frames_received < 10:
        time.sleep(0.01)
    emulator.data.faults.garbage_next()
    acq.wait()
    with open_hdf5_recording(path) as rec:
        gaps = rec._file["recording/gaps"][()]
        assert [g["reason"].decode() for g in gaps] == ["corrupt frame"]
        assert gaps[0]["end_sample"] - gaps[0]["first_sample"] == 16
        assert rec.attrs["crc_errors"] == 1
        assert_matches_outside_gaps(rec, produced(emulator))


def test_stalled_stream_stops_with_a_typed_error(board, emulator, tmp_path):
    path = tmp_path / "session.h5"
    acq = Acquisition(board, path, settings=FAST).start()
    while acq.status().frames_received < 10:
        time.sleep(0.01)
    emulator.data.faults.stop_answering()
    with pytest.raises(StreamStalled):
        acq.wait()
    assert acq.stop_reason == "stream stalled" and acq.status().stalls >= 3
    emulator.data.faults.clear()
    with open_hdf5_recording(path) as rec:
        assert rec.attrs["stop_reason"] == "stream stalled" and rec.attrs["complete"]
        assert rec.n_samples > 0
        assert_matches_outside_gaps(rec, produced(emulator))


def test_lost_board_is_a_typed_error_and_a_valid_file(board, emulator, tmp_path):
    path = tmp_path / "session.h5"
    acq = Acquisition(board, path, settings=FAST).start()
    while acq.status().frames_received < 10:
        time.sleep(0.01)
    emulator.data.faults.go_offline(30)
    with pytest.raises(ConnectionLost):
        acq.wait()
    assert acq.stop_reason == "data connection lost"
    emulator.data.faults.clear()
    with open_hdf5_recording(path) as rec:
        assert rec.attrs["stop_reason"] == "data connection lost"
        assert_matches_outside_gaps(rec, produced(emulator))


def test_disk_nearly_full_stops_before_hdf5_fails(board, emulator, tmp_path, monkeypatch):
    path = tmp_path / "session.h5"
    calls = {"n": 0}
    real_free = storage.SessionWriter.free_bytes

    def shrinking(self):
        calls["n"] += 1
        return real_free(self) if calls["n"] < 5 else 1 << 20

    monkeypatch.setattr(storage.SessionWriter, "free_bytes", shrinking)
    acq = Acquisition(board, path, settings=FAST)
    with pytest.raises(storage.DiskFullError):
        acq.wait()
    assert acq.stop_reason == "disk full"
    with open_hdf5_recording(path) as rec:
        assert rec.attrs["stop_reason"] == "disk full" and rec.attrs["complete"]
        assert rec.n_samples >= 1024
        np.testing.assert_array_equal(rec.traces[()], produced(emulator)[: rec.n_samples])


def test_write_failing_with_enospc_keeps_what_was_written(board, emulator, tmp_path, monkeypatch):
    path = tmp_path / "session.h5"
    writes = {"n": 0}
    real = h5py.Dataset.write_direct

    def failing(self, *args, **kwargs):
        writes["n"] += 1
        if writes["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "write_direct", failing)
    acq = Acquisition(board, path, settings=AcquisitionSettings(ring_s=10.0, flush_interval_s=0.0))
    with pytest.raises(storage.DiskFullError):
        acq.wait()
    monkeypatch.undo()
    with open_hdf5_recording(path) as rec:
        assert rec.attrs["stop_reason"] == "disk full" and not rec.attrs["complete"]
        # kept: what the last successful flush put on disk
        assert 1024 <= rec.n_samples <= 3 * 1024
        np.testing.assert_array_equal(rec.traces[()], produced(emulator)[: rec.n_samples])
        assert "kept rows up to" in rec._file["log"][-1].decode()


def test_slow_writer_warns_then_stops_cleanly(board, emulator, tmp_path, monkeypatch):
    path = tmp_path / "session.h5"
    real = storage.SessionWriter.write

    def slow(self, row, block):
        time.sleep(0.05)
        return real(self, row, block)

    monkeypatch.setattr(storage.SessionWriter, "write", slow)
    settings = AcquisitionSettings(ring_s=0.2, stall_timeout_s=0.3)
    acq = Acquisition(board, path, settings=settings)
    with pytest.raises(storage.StorageError, match="fell behind"):
        acq.wait()
    assert acq.stop_reason == "writer fell behind (ring buffer full)"
    with open_hdf5_recording(path) as rec:
        assert rec.attrs["complete"] and rec.attrs["stop_reason"] == acq.stop_reason
        assert len(rec.gaps) == 0
        np.testing.assert_array_equal(rec.traces[()], produced(emulator)[: rec.n_samples])
        lines = [x.decode() for x in rec._file["log"][()]]
        assert any("falling behind" in x for x in lines)


def test_a_second_process_reads_while_recording(emulator, tmp_path):
    emulator.device.rate = 1.0
    board = CneaBoard.open(emulator.resource, timeout_s=3.0, data_port=emulator.data_port)
    path = tmp_path / "session.h5"
    reader = textwrap.dedent(
        f"""
        import sys, time, numpy as np
        from instrument.recording import open_hdf5_recording
        while True:
            try:
                rec = open_hdf5_recording({str(path)!r})
                break
            except (OSError, KeyError):
                time.sleep(0.05)
        sizes, last = [], None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rec.traces.refresh()
            n = rec.traces.shape[0]
            if n and n != (sizes[-1] if sizes else 0):
                sizes.append(n)
                last = rec.traces[:n]
            if len(sizes) >= 3:
                break
            time.sleep(0.05)
        np.save({str(tmp_path / "seen.npy")!r}, last)
        print(" ".join(map(str, sizes)))
        """
    )
    settings = AcquisitionSettings(ring_s=10.0, flush_interval_s=0.2)
    acq = Acquisition(board, path, settings=settings).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", reader], capture_output=True, text=True, timeout=60
        )
    finally:
        acq.stop()
        board.close()
    assert proc.returncode == 0, proc.stderr
    sizes = [int(x) for x in proc.stdout.split()]
    assert len(sizes) >= 3 and sizes == sorted(sizes)
    seen = np.load(tmp_path / "seen.npy")
    np.testing.assert_array_equal(seen, produced(emulator)[: len(seen)])
    with open_hdf5_recording(path) as rec:
        assert rec.n_samples >= sizes[-1] and rec.attrs["complete"]


def test_status_and_snapshot(board, emulator, tmp_path):
    acq = Acquisition(board, tmp_path / "session.h5", settings=FAST).start()
    try:
        acq.select_channels([0, 7, 14, 20])
        while acq.status().recorded_s < 2.5:
            time.sleep(0.02)
        status = acq.status()
        assert status.state == "recording" and status.frames_received > 0
        assert status.disk_free_bytes > 0 and status.frames_lost == 0
        snap = acq.snapshot(n_bins=200)
        assert snap.lo.shape == (4, 200) and snap.hi.shape == (4, 200)
        assert np.all(snap.lo[~np.isnan(snap.lo)] <= snap.hi[~np.isnan(snap.hi)])
        src = emulator.device.source
        # the window is in volts: the channel's resting level plus its sine
        valid = ~np.isnan(snap.hi[1])
        assert np.nanmax(snap.hi[1]) == pytest.approx(src.rest_v[7] + src.amp_v[7], abs=2e-3)
        assert valid.sum() > 150
        assert snap.rms.shape == (64,) and snap.rms[1] > 0
        assert snap.spike_count[0] > 0 and snap.spike_count[1] == 0  # channel 0 spikes, 1 not
        assert 0 < snap.coverage <= 1
        sub = acq.snapshot(channels=[7], n_bins=50)
        assert sub.lo.shape == (1, 50)
        with pytest.raises(ValueError):
            acq.snapshot(channels=[3])
    finally:
        acq.stop()
    assert acq.status().state == "stopped"


def test_minmax_decimate():
    x = np.arange(10, dtype=np.float32)[:, None] * np.array([1.0, -1.0], dtype=np.float32)
    lo, hi = minmax_decimate(x, 5)
    assert lo.shape == (2, 5)
    assert lo[0].tolist() == [0, 2, 4, 6, 8] and hi[0].tolist() == [1, 3, 5, 7, 9]
    assert hi[1].tolist() == [0, -2, -4, -6, -8]
    x[2:4, 0] = np.nan
    lo, hi = minmax_decimate(x, 5)
    assert np.isnan(lo[0, 1]) and lo[0, 2] == 4
    lo, hi = minmax_decimate(x[:3], 10)
    assert lo.shape == (2, 3)


def test_refuses_to_overwrite(board, tmp_path):
    path = tmp_path / "session.h5"
    path.write_bytes(b"precious")
    with pytest.raises(storage.StorageError, match="never overwrites"):
        Acquisition(board, path).start()
    assert path.read_bytes() == b"precious"


def test_refuses_a_board_that_is_already_acquiring(board, tmp_path):
    board.start()
    with pytest.raises(DriverError, match="already acquiring"):
        Acquisition(board, tmp_path / "session.h5").start()
    board.stop()
    assert not (tmp_path / "session.h5").exists()


@pytest.mark.slow
def test_culture_recording_matches_the_board_bit_for_bit(tmp_path):
    """The real thing: 4096 channels of the emulated culture through the embedded lab."""
    from instrument.connect import open_instrument
    from instrument.embedded_lab import embedded_lab

    options = {"cnea": {"keep_samples": True, "rate": 5}}
    with embedded_lab(seed=2, options=options) as (config, lab):
        board = open_instrument(config, "cnea")
        try:
            board.electroporate(None, 2.5, 1e-3)
            path = tmp_path / "session.h5"
            settings = AcquisitionSettings(ring_s=10.0)
            Acquisition(board, path, duration_s=0.3, settings=settings).wait()
        finally:
            board.close()
        first, codes = lab.instruments["cnea"].model.device.tapped_codes()
    with open_hdf5_recording(path) as rec:
        assert rec.n_channels == 4096 and rec.n_samples == 3000
        assert rec.attrs["first_sample_index"] == first
        np.testing.assert_array_equal(rec.traces[()], codes[:3000])
        assert rec.truth is not None and rec.truth.attrs["culture_seed"] == 2


def _live_view(window_rows: int, n_channels: int = 6) -> _LiveView:
    settings = AcquisitionSettings(window_s=window_rows / 1000.0)
    gain, offset = np.ones(n_channels, np.float32), np.zeros(n_channels, np.float32)
    return _LiveView(n_channels, 1000.0, gain, offset, settings)


def _idle() -> AcquisitionStatus:
    names = AcquisitionStatus.__dataclass_fields__
    return AcquisitionStatus(
        **{k: "" if k in ("state", "stop_reason", "error") else 0 for k in names}
    )


def test_live_window_takes_rows_frame_by_frame_in_a_circle():
    live = _live_view(64)
    live.select([1, 4])
    data = (np.arange(200)[:, None] * 10 + np.arange(6)).astype(np.int16)  # row r, ch c: 10r + c
    for first in range(0, 150, 16):  # frames of 16 rows, 9.4 windows' worth
        live.put(first, data[first : first + 16], min(16, 150 - first))
    assert live.filled_to == 150
    snap = live.snapshot(None, 64, _idle())
    np.testing.assert_array_equal(snap.lo[0], data[86:150, 1])  # the newest 64 rows, in order
    np.testing.assert_array_equal(snap.hi[1], data[86:150, 4])
    assert snap.t_s[0] == pytest.approx(0.086)
    # bins of 8 rows, aligned: the window ends at row 144; rows it no longer holds are NaN
    snap = live.snapshot(None, 0, _idle(), bin_rows=8)
    assert snap.lo.shape == (2, 8) and snap.t_s.tolist() == pytest.approx(
        np.arange(80, 144, 8) / 1e3
    )
    np.testing.assert_array_equal(snap.lo[0, 1:], data[88:144:8, 1])  # min of each 8 rows
    np.testing.assert_array_equal(snap.hi[0, 1:], data[95:144:8, 1])
    assert snap.lo[0, 0] == data[86, 1]  # rows 80-85 were overwritten by 144-149: not in it
    # only the rows from 128 on: two bins
    snap = live.snapshot(None, 0, _idle(), bin_rows=8, since=128)
    assert snap.t_s.tolist() == pytest.approx([0.128, 0.136])
    np.testing.assert_array_equal(snap.hi[1], data[[135, 143], 4])
    # lost rows (None) and rows skipped over are gaps
    live.put(150, None, 10)
    live.put(170, data[170:180], 10)
    snap = live.snapshot(None, 64, _idle())
    assert np.isnan(snap.lo[0, -30:-10]).all() and snap.lo[0, -1] == data[179, 1]
    assert live.seen_samples == 0  # statistics come per written block (add), not per frame


def test_live_view_runs_ahead_of_the_file(board, tmp_path):
    settings = AcquisitionSettings(
        ring_s=10.0, stall_timeout_s=0.3, stall_abort_s=1.0, block_samples=8192
    )
    acq = Acquisition(board, tmp_path / "session.h5", settings=settings).start()
    ahead = []
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and len(ahead) < 20:
            written, live = acq.status().samples_written, acq.live_samples
            assert live >= written
            if live > written:
                ahead.append(live - written)
            time.sleep(0.005)
    finally:
        acq.stop()
    # a block is 8192 rows; the live view had most of it before it was written
    assert len(ahead) == 20 and max(ahead) > 1024


def test_a_tap_gets_every_block_as_written(board, emulator, tmp_path):
    settings = AcquisitionSettings(ring_s=10.0, stall_timeout_s=0.3, block_samples=512)
    acq = Acquisition(board, tmp_path / "session.h5", settings=settings).start()
    tap = acq.tap(max_blocks=1000)
    try:
        while acq.status().recorded_s < 1.0:
            time.sleep(0.02)
    finally:
        acq.stop()
    assert tap.closed and tap.dropped == 0
    blocks = []
    while (item := tap.take(0.0)) is not None:
        blocks.append(item)
    first = blocks[0][0]
    assert [r0 for r0, _ in blocks] == [first + 512 * i for i in range(len(blocks))]
    taken = np.concatenate([b for _, b in blocks])
    with open_hdf5_recording(tmp_path / "session.h5") as rec:
        np.testing.assert_array_equal(taken, rec.traces[first : first + taken.shape[0]])
    np.testing.assert_array_equal(taken, produced(emulator)[first : first + taken.shape[0]])
    assert acq.tap().closed  # a tap on a finished acquisition gets nothing
