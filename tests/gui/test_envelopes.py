"""instrument.envelopes: per-pixel min/max of stored traces, in memory and from a session
file being written."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from instrument.envelopes import channel_index, read_envelope
from instrument.recording import GAP_FILL, Recording, open_hdf5_recording
from instrument.storage import RecordingInfo, SessionWriter


def memory_recording(codes: np.ndarray, rate: float = 10_000.0) -> Recording:
    c = codes.shape[1]
    return Recording(
        traces=codes,
        sample_rate_hz=rate,
        gain_v=np.full(c, 5e-6),
        offset_v=np.linspace(0, 1e-3, c),
        positions_m=np.zeros((c, 2)),
    )


def brute_force(rec: Recording, chans, first: int, last: int, bins: int):
    edges = first + np.round(np.linspace(0, last - first, bins + 1)).astype(int)
    v = rec.volts(first, last, chans)
    pairs = list(itertools.pairwise(edges - first))
    lo = np.stack([np.nanmin(v[a:b], axis=0) for a, b in pairs])
    hi = np.stack([np.nanmax(v[a:b], axis=0) for a, b in pairs])
    return lo.T, hi.T


@pytest.mark.parametrize("piece_rows", [7, 1000, 100_000])
@pytest.mark.parametrize("chans", [[3, 4, 5, 6], [0, 5, 9]])
def test_envelope_equals_brute_force_min_max(piece_rows, chans):
    rng = np.random.default_rng(0)
    codes = rng.integers(-3000, 3000, size=(12_345, 10), dtype=np.int16)
    rec = memory_recording(codes)
    env = read_envelope(rec, chans, 0.1, 1.1, 333, piece_rows=piece_rows)
    lo, hi = brute_force(rec, np.array(chans), 1000, 11000, 333)
    assert env.lo.shape == (len(chans), 333)
    np.testing.assert_allclose(env.lo, lo, rtol=1e-6)
    np.testing.assert_allclose(env.hi, hi, rtol=1e-6)
    assert env.t_s[0] == pytest.approx(0.1) and env.bin_s == pytest.approx(1.0 / 333)
    assert env.n_samples == 12_345


def test_a_spike_of_one_sample_survives_decimation():
    codes = np.zeros((100_000, 2), dtype=np.int16)
    codes[54_321, 1] = 20_000
    env = read_envelope(memory_recording(codes), [0, 1], 0, 10, 500)
    assert env.hi[1].max() == pytest.approx(20_000 * 5e-6 + 1e-3)
    assert np.count_nonzero(env.hi[1] > 0.05) == 1
    assert env.hi[0].max() == pytest.approx(0.0)


def test_gaps_are_nan_not_zero():
    codes = np.ones((1000, 1), dtype=np.int16) * 100
    codes[200:400] = GAP_FILL
    env = read_envelope(memory_recording(codes), [0], 0, 1, 10)
    assert np.isnan(env.lo[0, 2]) and np.isnan(env.hi[0, 3])
    assert np.all(np.isfinite(env.lo[0, [0, 1, 4, 5]]))


def test_clipping_and_bad_requests():
    rec = memory_recording(np.zeros((1000, 4), dtype=np.int16))
    env = read_envelope(rec, [1], 0.05, 99.0, 5000)  # past the end; more bins than samples
    assert env.lo.shape == (1, 500)
    empty = read_envelope(rec, [1], 5.0, 6.0, 10)
    assert empty.lo.shape == (1, 0)
    with pytest.raises(ValueError, match="within"):
        read_envelope(rec, [4], 0, 1, 10)
    with pytest.raises(ValueError, match="no channels"):
        read_envelope(rec, [], 0, 1, 10)
    with pytest.raises(ValueError, match="n_bins"):
        read_envelope(rec, [0], 0, 1, 0)


def test_channel_index_is_a_slice_for_a_run():
    assert channel_index(np.array([4, 5, 6])) == slice(4, 7)
    np.testing.assert_array_equal(channel_index(np.array([1, 3])), [1, 3])


def test_follows_a_file_while_it_is_written(tmp_path):
    """A session file being written in this process (SWMR) is read as it grows."""
    path = tmp_path / "session.h5"
    info = RecordingInfo(
        sample_rate_hz=1000.0,
        n_channels=8,
        gain_v=np.full(8, 1e-3),
        offset_v=np.zeros(8),
        positions_m=np.zeros((8, 2)),
    )
    writer = SessionWriter(path, info, chunk_samples=100, reserve_bytes=0)
    written = threading.Event()

    def write() -> None:
        for i in range(20):
            writer.write(i * 100, np.full((100, 8), i, dtype=np.int16))
            writer.flush()
            if i == 4:
                written.set()
            time.sleep(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    written.wait(5)
    rec = open_hdf5_recording(path)
    try:
        first = read_envelope(rec, range(8), 0, 100, 10)
        thread.join()
        later = read_envelope(rec, range(8), 0, 100, 10)
        assert later.n_samples == 2000 and first.n_samples < later.n_samples
        assert later.hi[0, -1] == pytest.approx(19e-3)
    finally:
        rec.close()
        writer.close(stop_reason="test")
