"""Spikes of the whole array while it is being recorded, for live display (raster, rate map).

:class:`LiveSpikes` follows a session file that a recording is writing (SWMR), reads each
new block of every channel, and counts action potentials per channel per block with a
cheap detector on the int16 codes: an upward crossing of ``baseline + max(half the recent
spike height, min_excursion)``. Intracellular spikes are tens of mV against sub-mV noise,
so this is a display aid, not the extraction's detector (``instrument/extract``): it needs
no filtering and costs a few ms of CPU per second of 4096-channel data.

The acquisition is not touched: the file is read in pieces of ``piece_channels`` columns
(one HDF5 call each), so the writer is never held up by more than one small read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numba
import numpy as np

from instrument.block_tap import BlockTap
from instrument.recording import GAP_FILL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpikeCounts:
    """Spike counts of every channel over the recent past (a copy)."""

    times_s: np.ndarray
    """(E,) time of each spike, s since the first sample, ascending."""
    channels: np.ndarray
    """(E,) channel of each spike."""
    start_s: float
    """Start of the span the events cover, s."""
    end_s: float
    """End of the span (the last row read), s."""
    rate_hz: np.ndarray
    """(C,) spikes per second over the span."""
    rows_read: int


class SpikeDetector:
    """Upward threshold crossings per channel, block after block, on int16 codes.

    The threshold of channel c is ``mean_c + max(fraction * height_c, min_excursion_c)``
    where ``height_c`` is the 90th percentile of (block maximum − block mean) over the last
    ``history`` blocks, this one included: half the spike height on channels that see
    spikes, and never below ``min_excursion`` (so noise and PSPs do not count).
    """

    def __init__(
        self,
        gain: np.ndarray,
        *,
        min_excursion: float | np.ndarray = 5e-3,
        fraction: float = 0.5,
        history: int = 50,
    ) -> None:
        gain = np.abs(np.asarray(gain, dtype=np.float64))
        self.n_channels = gain.size
        excursion = np.broadcast_to(np.asarray(min_excursion, dtype=np.float64), gain.shape)
        self.min_codes = np.maximum(excursion / np.where(gain > 0, gain, 1.0), 4.0).astype(
            np.float32
        )
        self.fraction = fraction
        self._heights = np.zeros((self.n_channels, history), dtype=np.float32)
        """(C, history): each channel's recent heights side by side (a fast partition)."""
        self._filled = 0
        self._next = 0
        self._previous: np.ndarray | None = None
        """The last row of the previous block (a crossing may straddle blocks)."""

    def forget_previous(self) -> None:
        """The next block does not follow the last one (rows were skipped)."""
        self._previous = None

    def threshold(self, mean: np.ndarray) -> np.ndarray:
        """Threshold per channel (codes) for a block of baseline ``mean``."""
        if self._filled:
            k = min(int(0.9 * self._filled), self._filled - 1)  # the 90th percentile
            height = np.partition(self._heights[:, : self._filled], k, axis=1)[:, k]
        else:
            height = np.zeros(self.n_channels, dtype=np.float32)
        return mean + np.maximum(self.fraction * height, self.min_codes)

    def add(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The spikes in ``codes`` ((n, C) int16): (row within the block, channel) of each,
        sorted by row. Rows holding GAP_FILL (lost samples) are skipped.

        The work is in compiled kernels that run without Python's lock (the live window's
        thread keeps drawing meanwhile)."""
        block = np.ascontiguousarray(codes, dtype=np.int16)
        keep, mean, peak = _scan(block, GAP_FILL, 8)
        if not keep.all():
            self._previous = None
        if not keep.any():
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy()
        self._heights[:, self._next] = peak - mean  # this block counts in its own threshold
        self._next = (self._next + 1) % self._heights.shape[1]
        self._filled = min(self._filled + 1, self._heights.shape[1])
        thr_codes = np.minimum(np.ceil(self.threshold(mean)), 32767).astype(np.int16)
        previous = self._previous if self._previous is not None else block[0]
        rows, channels = _crossings(block, keep, thr_codes, previous, self._previous is not None)
        self._previous = block[np.flatnonzero(keep)[-1]].copy()
        return rows, channels


@numba.njit(cache=True, nogil=True)
def _scan(block: np.ndarray, gap: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows without a lost sample; per channel the mean of every ``step``-th such row (the
    baseline) and the maximum over them (codes, float32)."""
    n, c = block.shape
    keep = np.ones(n, dtype=np.bool_)
    for r in range(n):
        for j in range(c):
            if block[r, j] == gap:
                keep[r] = False
                break
    total = np.zeros(c, dtype=np.float64)
    peak = np.full(c, -32768.0, dtype=np.float32)
    counted = 0
    k = 0
    for r in range(n):
        if not keep[r]:
            continue
        if k % step == 0:
            counted += 1
            for j in range(c):
                total[j] += block[r, j]
        for j in range(c):
            v = np.float32(block[r, j])
            if v > peak[j]:
                peak[j] = v
        k += 1
    mean = (total / max(counted, 1)).astype(np.float32)
    return keep, mean, peak


@numba.njit(cache=True, nogil=True)
def _crossings(
    block: np.ndarray, keep: np.ndarray, thr: np.ndarray, previous: np.ndarray, has_previous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(row, channel) of every upward crossing of ``thr`` between consecutive kept rows
    (and from ``previous``, the last row before the block, when ``has_previous``), in
    row-major order."""
    n, c = block.shape
    above = np.zeros(c, dtype=np.uint8)
    now = np.zeros(c, dtype=np.uint8)
    for j in range(c):
        above[j] = has_previous and previous[j] > thr[j]
    first = True
    rows = np.empty(1024, dtype=np.int64)
    channels = np.empty(1024, dtype=np.int64)
    count = 0
    for r in range(n):
        if not keep[r]:
            continue
        edges = 0
        for j in range(c):  # branch-free: vectorised by the compiler
            now[j] = block[r, j] > thr[j]
            edges |= now[j] & ~above[j]
        if edges and (has_previous or not first):
            for j in range(c):
                if now[j] and not above[j]:
                    if count == rows.size:
                        rows = np.concatenate((rows, np.empty(rows.size, dtype=np.int64)))
                        channels = np.concatenate((channels, np.empty(count, dtype=np.int64)))
                    rows[count] = r
                    channels[count] = j
                    count += 1
        above, now = now, above
        first = False
    return rows[:count], channels[:count]


class LiveSpikes:
    """A thread following an acquisition's written blocks; :meth:`latest` gives the spikes
    of the last ``window_s`` seconds."""

    def __init__(
        self,
        tap: BlockTap,
        gain_v: np.ndarray,
        sample_rate_hz: float,
        *,
        channel_mode: np.ndarray | None = None,
        window_s: float = 10.0,
        poll_s: float = 0.05,
        min_excursion_v: float = 5e-3,
        min_excursion_a: float = 1e-9,
    ) -> None:
        self.tap = tap
        self.window_s = window_s
        self.poll_s = poll_s
        self.error = ""
        self.busy_s = 0.0
        """Wall time spent detecting, s."""
        self.blocks = 0
        self._rate = float(sample_rate_hz)
        self._n_channels = int(np.size(gain_v))
        excursion = np.full(self._n_channels, min_excursion_v)
        if channel_mode is not None:  # voltage-clamp channels (A) get their own floor
            excursion[np.asarray(channel_mode) == 1] = min_excursion_a
        self._detector = SpikeDetector(gain_v, min_excursion=excursion)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._latest: tuple[int, SpikeCounts] | None = None
        """(blocks detected, the counts made then): latest() reuses them until a new block."""
        self._blocks: deque[tuple[int, int, np.ndarray, np.ndarray]] = deque()
        """(first row, end row, spike rows, spike channels) of each block detected."""
        self._thread = threading.Thread(target=self._run, name="live-spikes", daemon=True)
        self._thread.start()

    @property
    def hold(self) -> bool:
        """While True, blocks are not taken (the recording needs the CPU); afterwards the
        follower goes on with the blocks written from then on."""
        return self.tap.paused

    @hold.setter
    def hold(self, on: bool) -> None:
        self.tap.paused = on

    @property
    def skipped_blocks(self) -> int:
        """Blocks the follower never saw (it was behind, or held)."""
        return self.tap.dropped

    def latest(self) -> SpikeCounts | None:
        """The spikes of the last ``window_s`` seconds seen (None before the first block;
        the same object until a new block is detected)."""
        with self._lock:
            blocks = list(self._blocks)
            done = self.blocks
        if not blocks:
            return None
        cached = self._latest
        if cached is not None and cached[0] == done:
            return cached[1]
        start, end = blocks[0][0], blocks[-1][1]
        rows = np.concatenate([b[2] for b in blocks])
        channels = np.concatenate([b[3] for b in blocks])
        span_s = (end - start) / self._rate
        rate = np.bincount(channels, minlength=self._n_channels) / max(span_s, 1e-9)
        counts = SpikeCounts(
            times_s=rows / self._rate,
            channels=channels,
            start_s=start / self._rate,
            end_s=end / self._rate,
            rate_hz=rate,
            rows_read=end,
        )
        self._latest = (done, counts)
        return counts

    def stop(self) -> None:
        """Stop following (the tap is closed and emptied: the writer stops copying blocks
        for it, and the copies it kept, up to 16 MB, are let go)."""
        self.tap.close(discard=True)
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # shown by the caller; the recording goes on regardless
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("live spikes: %s", self.error)

    def _follow(self) -> None:
        keep_rows = int(self.window_s * self._rate)
        last_end: int | None = None
        while not self._stop.is_set():
            item = self.tap.take(self.poll_s)
            if item is None:
                if self.tap.closed:
                    return
                continue
            r0, block = item
            start = time.perf_counter()
            if r0 != last_end:  # blocks skipped: no crossing straddles the hole
                self._detector.forget_previous()
            rows, channels = self._detector.add(block)
            r1 = last_end = r0 + block.shape[0]
            with self._lock:
                self._blocks.append((r0, r1, rows + r0, channels))
                while self._blocks and self._blocks[0][0] < r1 - keep_rows:
                    self._blocks.popleft()
                self.blocks += 1
            self.busy_s += time.perf_counter() - start
