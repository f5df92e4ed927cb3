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
from pathlib import Path

import numpy as np

from instrument.recording import GAP_FILL, Recording, open_hdf5_recording

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
        self._heights = np.zeros((history, self.n_channels), dtype=np.float32)
        self._filled = 0
        self._next = 0
        self._previous: np.ndarray | None = None
        """The last row of the previous block (a crossing may straddle blocks)."""

    def threshold(self, mean: np.ndarray) -> np.ndarray:
        if self._filled:
            heights = self._heights[: self._filled]
            k = min(int(0.9 * self._filled), self._filled - 1)  # the 90th percentile
            height = np.partition(heights, k, axis=0)[k]
        else:
            height = np.zeros(self.n_channels, dtype=np.float32)
        return mean + np.maximum(self.fraction * height, self.min_codes)

    def add(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The spikes in ``codes`` ((n, C) int16): (row within the block, channel) of each,
        sorted by row. Rows holding GAP_FILL (lost samples) are skipped."""
        block = np.asarray(codes)
        rows = np.arange(block.shape[0])
        valid = block != GAP_FILL
        if not valid.all():
            keep = valid.all(axis=1)
            block, rows = block[keep], rows[keep]
            self._previous = None
        if block.shape[0] == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy()
        mean = block[::8].mean(axis=0, dtype=np.float32)  # the baseline: every 8th row will do
        peak = block.max(axis=0).astype(np.float32)
        self._heights[self._next] = peak - mean  # this block counts in its own threshold
        self._next = (self._next + 1) % self._heights.shape[0]
        self._filled = min(self._filled + 1, self._heights.shape[0])
        thr = self.threshold(mean)
        thr_codes = np.minimum(np.ceil(thr), 32767).astype(np.int16)
        above = block > thr_codes
        row, channel = np.nonzero(above[1:] > above[:-1])  # rising edges, in row order
        row += 1
        if self._previous is not None:  # an edge between the previous block and this one
            first = np.flatnonzero(above[0] & ~(self._previous > thr_codes))
            row = np.concatenate([np.zeros(first.size, dtype=row.dtype), row])
            channel = np.concatenate([first, channel])
        self._previous = block[-1].copy()
        return rows[row], channel.astype(np.int64)


class LiveSpikes:
    """A thread following a session file being recorded; :meth:`latest` gives the spikes of
    the last ``window_s`` seconds.

    The file is read in blocks of ``block_rows`` rows (1024: 102.4 ms at 10 kHz), starting
    at the newest whole block when it starts, not at the start of the file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        block_rows: int = 1024,
        window_s: float = 10.0,
        piece_channels: int = 512,
        poll_s: float = 0.05,
        min_excursion_v: float = 5e-3,
        min_excursion_a: float = 1e-9,
    ) -> None:
        self.path = Path(path)
        self.block_rows = block_rows
        self.window_s = window_s
        self.piece_channels = piece_channels
        self.poll_s = poll_s
        self.min_excursion = (min_excursion_v, min_excursion_a)
        self.error = ""
        self.hold = False
        """While True, nothing is read (the recording needs the CPU); afterwards reading
        resumes at the newest block, the blocks in between are skipped."""
        self.skipped_blocks = 0
        self.busy_s = 0.0
        """Wall time spent reading and detecting, s."""
        self.blocks = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._blocks: deque[tuple[int, int, np.ndarray, np.ndarray]] = deque()
        """(first row, end row, spike rows, spike channels) of each block read."""
        self._rate = 1.0
        self._n_channels = 0
        self._last_row = 0
        self._thread = threading.Thread(target=self._run, name="live-spikes", daemon=True)
        self._thread.start()

    def latest(self) -> SpikeCounts | None:
        """The spikes of the last ``window_s`` seconds read (None before the first block)."""
        with self._lock:
            blocks = list(self._blocks)
        if not blocks:
            return None
        start, end = blocks[0][0], blocks[-1][1]
        rows = np.concatenate([b[2] for b in blocks])
        channels = np.concatenate([b[3] for b in blocks])
        span_s = (end - start) / self._rate
        rate = np.bincount(channels, minlength=self._n_channels) / max(span_s, 1e-9)
        return SpikeCounts(
            times_s=rows / self._rate,
            channels=channels,
            start_s=start / self._rate,
            end_s=end / self._rate,
            rate_hz=rate,
            rows_read=end,
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        rec: Recording | None = None
        try:
            rec = open_hdf5_recording(self.path, swmr=True)
            self._follow(rec)
        except Exception as exc:  # shown by the caller; the recording goes on regardless
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("live spikes on %s: %s", self.path, self.error)
        finally:
            if rec is not None:
                rec.close()

    def _follow(self, rec: Recording) -> None:
        self._rate = rec.sample_rate_hz
        n_ch = self._n_channels = rec.n_channels
        group = rec.traces.parent  # /recording
        excursion = np.full(n_ch, self.min_excursion[0])
        if "channel_mode" in group:  # voltage-clamp channels (A) get their own floor
            excursion[group["channel_mode"][()] == 1] = self.min_excursion[1]
        detector = SpikeDetector(rec.gain_v, min_excursion=excursion)
        keep_rows = int(self.window_s * self._rate)
        traces = rec.traces
        block = np.empty((self.block_rows, n_ch), dtype=np.int16)
        next_row: int | None = None
        while not self._stop.is_set():
            if self.hold:
                next_row = None  # then start again at the newest block
                self._stop.wait(self.poll_s)
                continue
            traces.refresh()
            available = traces.shape[0]
            if next_row is None:  # start at the newest whole block
                newest = max(0, (available // self.block_rows - 1) * self.block_rows)
                if self.blocks:
                    self.skipped_blocks += max(0, (newest - self._last_row) // self.block_rows)
                next_row = newest
            if available - next_row < self.block_rows:
                self._stop.wait(self.poll_s)
                continue
            start = time.perf_counter()
            r0, r1 = next_row, next_row + self.block_rows
            for c0 in range(0, n_ch, self.piece_channels):
                c1 = min(c0 + self.piece_channels, n_ch)
                traces.read_direct(block, np.s_[r0:r1, c0:c1], np.s_[:, c0:c1])
            rows, channels = detector.add(block)
            next_row = self._last_row = r1
            with self._lock:
                self._blocks.append((r0, r1, rows + r0, channels))
                while self._blocks and self._blocks[0][0] < r1 - keep_rows:
                    self._blocks.popleft()
            self.blocks += 1
            self.busy_s += time.perf_counter() - start
