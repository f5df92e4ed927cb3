"""The session file writer: layout, SWMR, gaps, log, and refusing to overwrite."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from instrument.recording import GAP_FILL, GroundTruth, open_hdf5_recording, open_recording
from instrument.storage import (
    FORMAT,
    LOG_LINE_BYTES,
    RecordingInfo,
    SessionWriter,
    StorageError,
    codec_options,
    is_disk_full,
)
from tests.cnea_source import SineSource


def make_info(n_channels: int = 8, truth: bool = True) -> RecordingInfo:
    src = SineSource(n_channels)
    return RecordingInfo(
        sample_rate_hz=10_000.0,
        n_channels=n_channels,
        gain_v=np.full(n_channels, 5e-6),
        offset_v=np.linspace(-1e-4, 1e-4, n_channels),
        positions_m=src.positions_m,
        instrument_identity="brainpaste CNEA-4096 s/n X fw 1",
        board_settings={"gain": 1, "nested": {"a": [1, 2]}},
        first_sample_index=160,
        channel_mode=np.zeros(n_channels, dtype=np.uint8),
        truth=src.truth() if truth else None,
        truth_attrs={"n_neurons": 3, "params": {"x": 1.5}, "seed": np.int64(4)},
    )


def test_layout_and_reading_back(tmp_path):
    path = tmp_path / "session.h5"
    writer = SessionWriter(path, make_info(), chunk_samples=16)
    block = (np.arange(32 * 8, dtype=np.int16).reshape(32, 8)) - 100
    writer.write(0, block)
    writer.add_gap(32, 48, "frames lost")
    writer.extend(48)
    writer.write(48, block[:5])
    writer.log("hello µ")
    writer.flush()
    assert writer.reserve_path.exists()
    writer.close(stop_reason="requested", counters={"frames_received": 7})
    assert not writer.reserve_path.exists()
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == 1
        rec = f["recording"]
        assert rec["traces"].chunks == (16, 8) and rec["traces"].maxshape == (None, 8)
        assert rec["traces"].dtype == np.int16 and rec["traces"].fillvalue == GAP_FILL
        assert json.loads(rec.attrs["board_settings"])["nested"] == {"a": [1, 2]}
        assert rec.attrs["complete"] and rec.attrs["stop_reason"] == "requested"
        assert rec.attrs["frames_received"] == 7 and rec.attrs["first_sample_index"] == 160
        assert rec["gaps"].dtype.names == ("first_sample", "end_sample", "reason")
        assert f["log"].asstr()[-1].endswith("stop: requested")
        assert "hello µ" in f["log"].asstr()[-2]
        assert json.loads(f["truth"].attrs["params"]) == {"x": 1.5}
    with open_recording(tmp_path) as rec:  # a session folder works too
        assert rec.n_samples == 53
        np.testing.assert_array_equal(rec.traces[:32], block)
        assert np.all(rec.traces[32:48] == GAP_FILL)
        assert rec.gaps.tolist() == [[32, 48]]
        assert rec.gap_mask(30, 50).sum() == 16
        assert np.isnan(rec.volts(30, 34, [0])[2:]).all()
        assert rec.volts(0, 1, [7])[0, 0] == pytest.approx(block[0, 7] * 5e-6 + 1e-4)
        assert isinstance(rec.truth, GroundTruth) and rec.truth.attrs["n_neurons"] == 3


def test_no_truth_no_group(tmp_path):
    writer = SessionWriter(tmp_path / "s.h5", make_info(truth=False))
    writer.close(stop_reason="requested")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert "truth" not in f and set(f) == {"recording", "log"}


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "session.h5"
    path.write_text("keep me")
    with pytest.raises(StorageError, match="never overwrites"):
        SessionWriter(path, make_info())
    assert path.read_text() == "keep me"


def test_bad_blocks_and_use_after_close(tmp_path):
    writer = SessionWriter(tmp_path / "s.h5", make_info())
    with pytest.raises(ValueError, match="int16"):
        writer.write(0, np.zeros((4, 8), dtype=np.int32))
    with pytest.raises(ValueError):
        writer.write(0, np.zeros((4, 7), dtype=np.int16))
    writer.close(stop_reason="requested")
    writer.close(stop_reason="again")  # idempotent
    with pytest.raises(StorageError, match="closed"):
        writer.write(0, np.zeros((4, 8), dtype=np.int16))


def test_long_log_lines_are_cut_at_a_character_boundary(tmp_path):
    writer = SessionWriter(tmp_path / "s.h5", make_info())
    writer.log("µ" * 400)
    writer.close(stop_reason="requested")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        line = f["log"][1]
        assert len(line) <= LOG_LINE_BYTES
        line.decode("utf-8")


def test_reader_sees_growth_while_writing(tmp_path):
    path = tmp_path / "s.h5"
    writer = SessionWriter(path, make_info(), chunk_samples=16)
    writer.write(0, np.ones((16, 8), dtype=np.int16))
    writer.flush()
    with open_hdf5_recording(path) as rec:
        assert rec.n_samples == 16
        writer.write(16, np.full((16, 8), 2, dtype=np.int16))
        writer.flush()
        rec.traces.refresh()
        assert rec.traces.shape[0] == 32 and rec.traces[20, 3] == 2
        assert not rec.attrs["complete"]
    writer.close(stop_reason="requested")


def test_codecs():
    assert codec_options("none") == {}
    assert "compression" in codec_options("blosc-lz4-bitshuffle")
    with pytest.raises(ValueError, match="unknown codec"):
        codec_options("zip")


def test_disk_full_detection():
    assert is_disk_full(OSError(28, "No space left on device"))
    assert is_disk_full(RuntimeError("flush failed ... errno = 28, error message = ..."))
    assert not is_disk_full(OSError(13, "Permission denied"))


def test_each_flush_lets_the_os_drop_the_files_cached_pages(tmp_path, monkeypatch):
    """A recording left in the page cache grows it into fresh memory, which on a virtual
    machine can hold the writer below the data rate: every flush advises the kernel to
    write the file back and drop it (the file's own descriptor, the whole file), and a
    refused advice is not an error."""
    import os

    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda *a: calls.append(a), raising=False)
    path = tmp_path / "s.h5"
    writer = SessionWriter(path, make_info(), chunk_samples=16)
    fd = writer._file.id.get_vfd_handle()
    writer.write(0, np.ones((16, 8), dtype=np.int16))
    writer.flush()
    assert calls == [(fd, 0, 0, os.POSIX_FADV_DONTNEED)]

    def refuse(*_):
        raise OSError("not supported here")

    monkeypatch.setattr(os, "posix_fadvise", refuse)
    writer.write(16, np.full((16, 8), 2, dtype=np.int16))
    writer.flush()
    writer.close(stop_reason="requested")
    with open_hdf5_recording(path) as rec:
        assert rec.n_samples == 32 and rec.traces[20, 3] == 2
