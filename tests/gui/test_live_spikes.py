"""instrument.live_spikes: the whole array's spikes from the blocks a recording writes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from instrument.block_tap import BlockTap
from instrument.live_spikes import LiveSpikes, SpikeCounts, SpikeDetector
from instrument.recording import GAP_FILL

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


def wait_rows(live: LiveSpikes, rows: int) -> SpikeCounts:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latest = live.latest()
        if latest is not None and latest.rows_read >= rows:
            return latest
        time.sleep(0.01)
    raise AssertionError(f"never saw {rows} rows")


def test_follows_the_blocks_the_writer_offers():
    n_ch, rate = 16, 10_000.0
    spike_rows = list(range(50, 40960, 1000))
    codes = planted(40960, n_ch, {7: spike_rows})
    tap = BlockTap(max_blocks=64)
    live = LiveSpikes(tap, np.full(n_ch, GAIN), rate, window_s=10.0, poll_s=0.01)
    for r0 in range(0, 40960, 1024):
        tap.offer(r0, codes[r0 : r0 + 1024])
    latest = wait_rows(live, 40960)
    assert live.latest() is latest  # nothing new: the same counts, not made again
    live.stop()
    assert live.error == "" and tap.closed and live.skipped_blocks == 0
    got = np.round(latest.times_s[latest.channels == 7] * rate).astype(int).tolist()
    assert got == spike_rows
    assert set(latest.channels.tolist()) == {7}
    assert latest.rate_hz[7] == pytest.approx(len(got) / (latest.end_s - latest.start_s))


def test_hold_drops_blocks_so_the_recording_comes_first():
    n_ch = 8
    codes = planted(20 * 1024, n_ch, {2: list(range(100, 20 * 1024, 900))})
    tap = BlockTap(max_blocks=64)
    live = LiveSpikes(tap, np.full(n_ch, GAIN), 10_000.0, poll_s=0.01)
    for r0 in (0, 1024):
        tap.offer(r0, codes[r0 : r0 + 1024])
    wait_rows(live, 2048)
    live.hold = True
    for r0 in range(2048, 12 * 1024, 1024):
        tap.offer(r0, codes[r0 : r0 + 1024])
    assert live.latest().rows_read == 2048 and live.skipped_blocks == 10  # held: none kept
    live.hold = False
    for r0 in range(12 * 1024, 20 * 1024, 1024):
        tap.offer(r0, codes[r0 : r0 + 1024])
    latest = wait_rows(live, 20 * 1024)
    live.stop()
    assert live.error == ""
    rows = np.round(latest.times_s * 10_000).astype(int)
    expected = [r for r in range(100, 20 * 1024, 900) if r < 2048 or r >= 12 * 1024]
    assert rows.tolist() == expected


def test_a_tap_keeps_copies_and_drops_the_oldest_when_the_follower_is_behind():
    tap = BlockTap(max_blocks=2)
    block = np.zeros((4, 3), dtype=np.int16)
    for r0 in range(0, 20, 4):
        block[:] = r0
        tap.offer(r0, block)
    assert tap.dropped == 3
    first = tap.take(0.0)
    assert first is not None and first[0] == 12 and np.all(first[1] == 12)  # a copy
    assert tap.take(0.0)[0] == 16 and tap.take(0.01) is None
    tap.offer(20, block)
    tap.close()  # the acquisition ended: what is kept can still be taken
    assert tap.take(0.0)[0] == 20 and tap.take(0.0) is None
    tap.offer(24, block)
    assert tap.take(0.0) is None and tap.dropped == 4
    tap = BlockTap()
    tap.offer(0, block)
    tap.close(discard=True)  # the follower stopped: the copies are let go
    assert tap.take(0.0) is None
    with pytest.raises(ValueError):
        BlockTap(max_blocks=0)
