"""The live feed: a thread that turns the acquisition's snapshots into what the views draw,
with the whole array's spikes from :class:`instrument.live_spikes.LiveSpikes`.

The acquisition never waits on it (snapshots are copies); the GUI never waits on it either:
the redraw timer takes :attr:`LiveFeed.latest`, whatever it is. A new frame is made as soon
as the window has drawn the previous one and the writer has handed the live view new rows
(it does so frame by frame, before they are written), so the feed adds only the snapshot's
own computing time to the sample-to-screen latency.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from gui.raster import spike_image
from instrument.acquisition import Acquisition, AcquisitionStatus, Snapshot
from instrument.live_spikes import LiveSpikes, SpikeCounts

log = logging.getLogger(__name__)

TRACE_BIN_ROWS = 32
"""Samples per trace bin when the feed keeps the traces' history (3.2 ms at 10 kHz)."""


@dataclass(frozen=True)
class RasterImage:
    """Spike counts per pixel of the raster view over [t0_s, t1_s)."""

    image: np.ndarray
    n_channels: int
    t0_s: float
    t1_s: float
    info: str


@dataclass(frozen=True)
class LiveFrame:
    """One snapshot and the whole array's recent spikes (SI units)."""

    serial: int
    """Increases by one per frame."""
    snapshot: Snapshot
    made_at: float
    """time.perf_counter() when it was made."""
    spikes: SpikeCounts | None
    """Spike counts of every channel (None until the first block is read back)."""
    raster: RasterImage | None = None
    """The spikes drawn at the raster's pixel size (made here, off the GUI thread)."""

    @property
    def status(self) -> AcquisitionStatus:
        return self.snapshot.status


class LiveFeed:
    """Follows one acquisition at a time on its own thread; :attr:`latest` is the newest
    :class:`LiveFrame` (None before the first)."""

    def __init__(self, n_bins: int = 1000, poll_s: float = 0.004, raster_s: float = 10.0) -> None:
        self.n_bins = n_bins
        self.trace_s = 2.0
        """Seconds of traces shown (kept here when the acquisition's window is shorter)."""
        self.raster_s = raster_s
        """Seconds of whole-array spikes kept for the raster."""
        self.raster_pixels = (600, 300)
        """(columns, rows) of the raster view; the window keeps it up to date."""
        self._raster_key: tuple | None = None
        self._raster_image: RasterImage | None = None
        """Display bins per trace (the traces view sets it to its width in pixels)."""
        self.poll_s = poll_s
        self.latest: LiveFrame | None = None
        self.frames_made = 0
        self.consumed = 0
        """Serial of the last frame the window drew (it sets it)."""
        self.pace = True
        """Make a frame only once the previous one was drawn (False: one per poll with new rows)."""
        self.next_draw_at = 0.0
        """When the window will draw next (time.perf_counter(); the window sets it): a
        paced frame is made just before, so it holds the newest data it can."""
        self._make_s = 0.005
        """Running estimate of the time to make a frame, s."""
        self.error = ""
        self._acq: Acquisition | None = None
        self.spikes: LiveSpikes | None = None
        """Follows the session file for the whole array's spikes while recording."""
        self._channels: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reset_state()
        self._thread = threading.Thread(target=self._run, name="gui-live-feed", daemon=True)
        self._thread.start()

    def _reset_state(self) -> None:
        self._last_key: tuple[int, object] | None = None
        self._history: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def lead_s(self) -> float:
        """How long before the next draw a paced frame is started, s."""
        return 3 * self._make_s + self.poll_s

    @property
    def acquisition(self) -> Acquisition | None:
        return self._acq

    @property
    def channels(self) -> np.ndarray | None:
        """The channels asked for the live window."""
        return self._channels

    def attach(self, acq: Acquisition) -> None:
        """Follow ``acq`` (a started acquisition); the frames of the previous one are kept
        until the first of the new one."""
        info = acq.info
        assert info is not None, "attach a started acquisition"
        spikes = LiveSpikes(
            acq.tap(),
            info.gain_v,
            info.sample_rate_hz,
            channel_mode=info.channel_mode,
            window_s=self.raster_s,
        )
        with self._lock:
            old, self.spikes = self.spikes, spikes
            self._acq = acq
            self._reset_state()
            if self._channels is not None:
                self._pending = self._channels
        if old is not None:
            old.stop()
        self._wake.set()

    def detach(self) -> None:
        """Stop following (the last frame stays as :attr:`latest`)."""
        with self._lock:
            self._acq = None
            spikes, self.spikes = self.spikes, None
        if spikes is not None:
            spikes.stop()

    def select(self, channels: np.ndarray | list[int]) -> None:
        """Channels kept at full resolution for the traces (applied on the feed thread)."""
        chans = np.unique(np.asarray(channels, dtype=np.int64))
        if chans.size == 0:
            raise ValueError("select at least one channel")
        with self._lock:
            self._channels = chans
            self._pending = chans
        self._wake.set()

    def close(self) -> None:
        self.detach()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                acq, pending = self._acq, self._pending
                self._pending = None
            if acq is None or acq.state == "idle":
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                if pending is not None and acq.state in ("recording", "stopping"):
                    acq.select_channels(pending)
                    self._last_key = None
                latest = self.latest
                if latest is not None and latest.serial > self.consumed and self.pace:
                    # the window has not drawn the last frame yet: a new one would be wasted
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
                early = self.next_draw_at - self.lead_s - time.perf_counter()
                if self.pace and early > 0:  # made now, it would wait for the draw: wait here
                    self._wake.wait(min(early, 0.05))
                    self._wake.clear()
                    continue
                status = acq.status()
                spikes = self.spikes.latest() if self.spikes is not None else None
                key = (acq.live_samples, status.state, spikes.rows_read if spikes else -1)
                if key == self._last_key:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
                self._last_key = key
                started = time.perf_counter()
                self._make_frame(acq, spikes)
                self._make_s += 0.2 * (time.perf_counter() - started - self._make_s)
            except Exception as exc:  # keep following; the error is logged (log panel)
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("live feed")
                self._wake.wait(0.2)
                self._wake.clear()

    def _make_frame(self, acq: Acquisition, spikes: SpikeCounts | None) -> None:
        rate = acq.sample_rate_hz
        window = int(acq.settings.window_s * rate)
        stitch = window % TRACE_BIN_ROWS == 0 and window <= self.trace_s * rate
        if stitch:  # aligned bins: keep the traces' history here, ask for new rows only
            h = self._history
            since = int(h[3][-1] + 1) * TRACE_BIN_ROWS if h is not None and h[3].size else None
            snap = acq.snapshot(bin_rows=TRACE_BIN_ROWS, since=since)
            if h is not None and not np.array_equal(h[0], snap.channels):  # a new selection
                snap = acq.snapshot(bin_rows=TRACE_BIN_ROWS)
            snap = self._stitch(snap, rate)
        else:  # the acquisition's window is the whole display
            snap = acq.snapshot(n_bins=self.n_bins)
        raster = self._raster(spikes)
        self.frames_made += 1
        self.latest = LiveFrame(
            serial=self.frames_made,
            snapshot=snap,
            made_at=time.perf_counter(),
            spikes=spikes,
            raster=raster,
        )

    def _stitch(self, snap: Snapshot, rate: float) -> Snapshot:
        """Add the snapshot's new bins to the ``trace_s`` history of the traces (its bins
        are whole ``TRACE_BIN_ROWS`` rows aligned to the file: the snapshot ends at a
        multiple of them); the snapshot with the history as its window."""
        history = round(self.trace_s * rate / TRACE_BIN_ROWS)
        k = snap.channels.size
        rows = np.round(snap.t_s * rate / TRACE_BIN_ROWS).astype(np.int64)  # bin numbers
        h = self._history
        if h is None or not np.array_equal(h[0], snap.channels):
            h = (snap.channels.copy(), np.full((k, 0), np.nan, np.float32),
                 np.full((k, 0), np.nan, np.float32), np.zeros(0, np.int64))  # fmt: skip
        channels, lo, hi, bins = h
        new = rows > (bins[-1] if bins.size else -1)
        lo = np.concatenate([lo, snap.lo[:, new]], axis=1)[:, -history:]
        hi = np.concatenate([hi, snap.hi[:, new]], axis=1)[:, -history:]
        bins = np.concatenate([bins, rows[new]])[-history:]
        self._history = (channels, lo, hi, bins)
        return dataclasses.replace(
            snap, t_s=bins * TRACE_BIN_ROWS / rate, lo=lo.copy(), hi=hi.copy()
        )

    def _raster(self, spikes: SpikeCounts | None) -> RasterImage | None:
        """The raster image of ``spikes`` (reused while the spikes and the size are)."""
        if spikes is None:
            return None
        key = (spikes.rows_read, self.raster_pixels)
        if key == self._raster_key and self._raster_image is not None:
            return self._raster_image
        t1 = max(spikes.end_s, self.raster_s)
        t0 = t1 - self.raster_s
        n_channels = spikes.rate_hz.size
        columns, rows = self.raster_pixels
        image = spike_image(spikes.times_s, spikes.channels, n_channels, t0, t1, columns, rows)
        firing = spikes.rate_hz[spikes.rate_hz > 0]
        info = (
            f"live spikes, whole array: {firing.size} channels firing, median "
            f"{np.median(firing) if firing.size else 0:.1f} Hz over the last "
            f"{spikes.end_s - spikes.start_s:.1f} s (as recorded)"
        )
        self._raster_key = key
        self._raster_image = RasterImage(image, n_channels, t0, t1, info)
        return self._raster_image
