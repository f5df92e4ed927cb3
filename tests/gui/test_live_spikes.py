"""instrument.live_spikes: the whole array's spikes from a file being recorded."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from instrument.live_spikes import LiveSpikes, SpikeDetector
from instrument.recording import GAP_FILL
from instrument.storage import RecordingInfo, SessionWriter

GAIN = 5e-6  # V per code


def planted(n_rows: int, n_ch: int, spikes: dict[int, list[int]], seed: int = 0) -> np.ndarray:
    """Noise (~50 µV) plus 40 mV, 1 ms spikes at the given rows of the given channels."""
    rng = np.random.default_rng(seed)
    codes = rng.normal(0, 10, size=(n_rows, n_ch)).astype(np.int16)
    for ch, rows in spikes.items():
        for r in rows:
            codes[r : r + 10, ch] += 8000
    return codes


def test_planted_spikes_are_found_at_their_rows():
    spikes = {0: [100, 900, 1500, 2100], 3: [1023, 3000], 5: [2047]}
    codes = planted(4096, 8, spikes)
    det = SpikeDetector(np.full(8, GAIN))
    found: dict[int, list[int]] = {}
    for r0 in range(0, 4096, 1024):  # block by block, edges straddling blocks included
        rows, chans = det.add(codes[r0 : r0 + 1024])
        for r, c in zip(rows, chans, strict=True):
            found.setdefault(int(c), []).append(int(r) + r0)
    assert found == spikes


def test_noise_and_small_psps_are_not_spikes():
    codes = planted(8192, 4, {})
    codes[2000:2100, 1] += 200  # a 1 mV PSP-like bump
    det = SpikeDetector(np.full(4, GAIN))
    total = sum(det.add(codes[r : r + 1024])[0].size for r in range(0, 8192, 1024))
    assert total == 0


def test_lost_rows_are_skipped():
    codes = planted(1024, 2, {1: [500]})
    codes[100:200] = GAP_FILL
    rows, chans = SpikeDetector(np.full(2, GAIN)).add(codes)
    assert rows.tolist() == [500] and chans.tolist() == [1]


def test_threshold_adapts_to_each_channels_spike_height():
    """A channel with 40 mV spikes does not count its 6 mV after-depolarisations."""
    codes = planted(8192, 2, {0: list(range(300, 8000, 700))})
    for r in range(300, 8000, 700):
        codes[r + 40 : r + 60, 0] += 1200  # 6 mV bump after each spike
    det = SpikeDetector(np.full(2, GAIN))
    counts = np.zeros(2, dtype=int)
    for r0 in range(0, 8192, 1024):
        _, chans = det.add(codes[r0 : r0 + 1024])
        counts += np.bincount(chans, minlength=2)
    assert counts[0] == len(range(300, 8000, 700))


def test_follows_a_recording_in_this_process(tmp_path):
    n_ch, rate = 16, 10_000.0
    path = tmp_path / "session.h5"
    info = RecordingInfo(
        sample_rate_hz=rate,
        n_channels=n_ch,
        gain_v=np.full(n_ch, GAIN),
        offset_v=np.zeros(n_ch),
        positions_m=np.zeros((n_ch, 2)),
        channel_mode=np.zeros(n_ch, dtype=np.uint8),
    )
    writer = SessionWriter(path, info, chunk_samples=1024, reserve_bytes=0)
    spike_rows = list(range(50, 40960, 1000))
    codes = planted(40960, n_ch, {7: spike_rows})
    writer.write(0, codes[:1024])
    writer.flush()
    live = LiveSpikes(path, block_rows=1024, window_s=10.0, poll_s=0.01)
    stop = threading.Event()

    def record() -> None:
        for r0 in range(1024, 40960, 1024):
            writer.write(r0, codes[r0 : r0 + 1024])
            writer.flush()
            time.sleep(0.005)
        stop.set()

    thread = threading.Thread(target=record)
    thread.start()
    thread.join()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latest = live.latest()
        if latest is not None and latest.rows_read == 40960:
            break
        time.sleep(0.02)
    live.stop()
    writer.close(stop_reason="test")
    assert live.error == ""
    latest = live.latest()
    assert latest is not None and latest.rows_read == 40960
    # it started at the newest whole block, then read every block after it
    expected = [r for r in spike_rows if r >= 40960 - latest.rows_read + latest.start_s * rate]
    got = np.round(latest.times_s[latest.channels == 7] * rate).astype(int).tolist()
    assert got == expected and len(got) > 30
    assert set(latest.channels.tolist()) == {7}
    assert latest.rate_hz[7] == pytest.approx(len(got) / (latest.end_s - latest.start_s))


def test_hold_skips_ahead_so_the_recording_comes_first(tmp_path):
    n_ch = 8
    path = tmp_path / "session.h5"
    info = RecordingInfo(
        sample_rate_hz=10_000.0,
        n_channels=n_ch,
        gain_v=np.full(n_ch, GAIN),
        offset_v=np.zeros(n_ch),
        positions_m=np.zeros((n_ch, 2)),
    )
    writer = SessionWriter(path, info, chunk_samples=1024, reserve_bytes=0)
    codes = planted(20 * 1024, n_ch, {2: list(range(100, 20 * 1024, 900))})
    try:
        writer.write(0, codes[:2048])
        writer.flush()
        live = LiveSpikes(path, block_rows=1024, poll_s=0.01)

        def wait_rows(rows: int) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                latest = live.latest()
                if latest is not None and latest.rows_read >= rows:
                    return
                time.sleep(0.01)
            raise AssertionError(f"never read {rows} rows")

        wait_rows(2048)
        live.hold = True
        time.sleep(0.1)
        writer.write(2048, codes[2048 : 12 * 1024])
        writer.flush()
        time.sleep(0.3)
        assert live.latest().rows_read == 2048  # held: nothing read
        live.hold = False
        wait_rows(12 * 1024)
        assert live.skipped_blocks == 9  # it went on from the newest block
        live.stop()
        assert live.error == ""
    finally:
        writer.close(stop_reason="test")
