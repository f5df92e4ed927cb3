"""Lossless acquisition from the CNEA board into a session file, with a live view for the GUI.

Three threads, and nothing in the data path waits on a subscriber::

    board --frames--> reader thread --> ring buffer (bounded) --> writer thread --> session.h5
                                                                        |
                                                        live view (latest window, stats)
                                                                        |
                                                   snapshot() / status()  <-- GUI, CLI

- The **reader** pulls frames from :class:`drivers.cnea_board.FrameStream` and puts
  them, with gap and log items, into the ring. It never blocks on the ring: when the
  ring passes ``warn_fill`` the user is warned (log, ``/log``, status flag); at
  ``stop_fill`` the recording stops cleanly (``stop_reason`` says the writer fell
  behind). A dropped data connection is reopened (bounded retries) and the frames
  missed become a gap row; a stalled stream raises
  :class:`~drivers.cnea_board.StreamStalled` after ``stall_abort_s``.
- The **writer** assembles time blocks, writes them with :class:`SessionWriter`,
  fills lost rows with ``GAP_FILL`` and adds a ``/recording/gaps`` row for each (never
  zeros pretending to be data), flushes for SWMR readers, and feeds the live view.
- :meth:`Acquisition.snapshot` and :meth:`Acquisition.status` are cheap, thread-safe
  copies of the latest state.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from drivers.cnea_board import (
    CneaBoard,
    CorruptFrame,
    FrameStream,
    SequenceGap,
    Stall,
    StreamCounters,
    StreamRestart,
    StreamStalled,
)
from drivers.cnea_frames import FLAG_CALIBRATION, FLAG_STIMULUS, Frame
from drivers.errors import ConnectionLost, DataIntegrityError, DriverError
from instrument.block_tap import BlockTap
from instrument.calibration_use import CneaCalibration
from instrument.recording import GAP_FILL, GroundTruth
from instrument.storage import (
    DEFAULT_CODEC,
    DiskFullError,
    RecordingInfo,
    SessionWriter,
    StorageError,
    utc_now,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcquisitionSettings:
    """How an acquisition buffers, warns and gives up (SI units)."""

    ring_s: float = 2.0
    """Ring buffer between reader and writer, seconds of data at the board's rate."""
    warn_fill: float = 0.5
    """Ring fill fraction that raises the backpressure warning."""
    stop_fill: float = 0.95
    """Ring fill fraction at which the recording stops cleanly (writer too slow)."""
    stall_timeout_s: float = 1.0
    """Silence on the data port that counts as one stall event."""
    stall_abort_s: float = 10.0
    """Silence after which the recording stops with StreamStalled."""
    reconnect_attempts: int = 3
    reconnect_delay_s: float = 0.5
    drain_timeout_s: float = 5.0
    """After :ACQ:STOP, how long to wait for the frames still in the board's FIFO."""
    flush_interval_s: float = 0.5
    """How often SWMR readers are shown new data."""
    block_samples: int = 1024
    """Rows per write (the chunk length in time)."""
    codec: str = DEFAULT_CODEC
    reserve_bytes: int = 64 << 20
    """Reserve file kept next to the session file, released if the disk fills anyway."""
    min_free_bytes: int | None = None
    """Stop cleanly below this free space (None: four blocks + 16 MiB)."""
    window_s: float = 2.0
    """Length of the live window kept for snapshots."""
    spike_threshold_sd: float = 5.0
    """Live spike count: excursions beyond this many SDs of the previous block."""
    monitor_rows: int = 256
    """Live statistics look at this many consecutive rows of each written block."""
    monitor_budget: float = 0.1
    """At most this fraction of wall time goes to live statistics (the rest skips blocks)."""


@dataclass(frozen=True)
class AcquisitionStatus:
    """What is happening now (a copy; fields in SI units, bytes, counts)."""

    state: str
    """idle, recording, stopping, stopped or failed."""
    elapsed_s: float
    recorded_s: float
    """Data time written to the file so far."""
    samples_written: int
    data_rate_bps: float
    """Bytes per second arriving from the board (last second or so)."""
    realtime_factor: float
    """Data seconds received per wall second (last second or so)."""
    frames_received: int
    frames_lost: int
    crc_errors: int
    stalls: int
    reconnects: int
    gaps: int
    disk_free_bytes: int
    backlog_frames: int
    backlog_s: float
    backlog_fraction: float
    backpressure_warning: bool
    stop_reason: str
    error: str


@dataclass(frozen=True)
class Snapshot:
    """The latest live view: a decimated window of selected channels and per-channel stats.

    Values are in each channel's unit (V in current clamp, A in voltage clamp); samples
    lost in a gap are NaN. Statistics cover ``coverage`` of the data (the monitor
    skips blocks rather than slow the recording).
    """

    sample_rate_hz: float
    channels: np.ndarray
    """(K,) channels of the window."""
    t_s: np.ndarray
    """(P,) start time of each display bin, s since the recording started."""
    lo: np.ndarray
    """(K, P) minimum per display bin."""
    hi: np.ndarray
    """(K, P) maximum per display bin."""
    rms: np.ndarray
    """(C,) standard deviation of each channel in the last analysed block."""
    minimum: np.ndarray
    """(C,) lowest value seen since the start."""
    maximum: np.ndarray
    """(C,) highest value seen since the start."""
    spike_count: np.ndarray
    """(C,) threshold excursions counted in the analysed data."""
    spike_rate_hz: np.ndarray
    """(C,) spike_count per analysed second."""
    coverage: float
    status: AcquisitionStatus


def minmax_decimate(values: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin min and max along axis 0 of (N, K) ``values`` → two (K, n_bins) arrays.

    The min/max envelope keeps every spike visible at display resolution. NaN samples
    are ignored (a bin of only NaN gives NaN). With fewer samples than bins, each
    sample is its own bin.
    """
    values = np.asarray(values, dtype=np.float32)
    n = values.shape[0]
    if n == 0 or n_bins <= 0:
        empty = np.zeros((values.shape[1] if values.ndim == 2 else 0, 0), dtype=np.float32)
        return empty, empty.copy()
    n_bins = min(n_bins, n)
    edges = np.linspace(0, n, n_bins + 1).astype(np.int64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins
        lo = np.fmin.reduceat(values, edges[:-1], axis=0)
        hi = np.fmax.reduceat(values, edges[:-1], axis=0)
    return lo.T.copy(), hi.T.copy()


@dataclass
class _Gap:
    first: int
    end: int
    reason: str


@dataclass
class _Note:
    message: str


class RingBuffer:
    """Bounded FIFO of frames (plus small gap/log items) between reader and writer.

    :meth:`put_frame` never blocks: it refuses when full. Gap and log items always fit.
    """

    def __init__(self, capacity_frames: int) -> None:
        self.capacity = max(1, capacity_frames)
        self._items: deque[Frame | _Gap | _Note] = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self._closed = False
        self.peak_frames = 0

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def fill(self) -> float:
        return self._frames / self.capacity

    def put_frame(self, frame: Frame) -> bool:
        with self._cond:
            if self._frames >= self.capacity:
                return False
            self._items.append(frame)
            self._frames += 1
            self.peak_frames = max(self.peak_frames, self._frames)
            self._cond.notify()
            return True

    def put(self, item: _Gap | _Note) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def close(self) -> None:
        """No more items will come; the consumer drains and finishes."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get_batch(self, timeout_s: float, max_items: int = 64) -> list[Frame | _Gap | _Note] | None:
        """Up to ``max_items`` items (waits up to ``timeout_s``); None once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout_s)
            if not self._items:
                return None if self._closed else []
            out = []
            while self._items and len(out) < max_items:
                item = self._items.popleft()
                if isinstance(item, Frame):
                    self._frames -= 1
                out.append(item)
            return out


class _LiveView:
    """The writer's running summary for snapshots: a raw window of selected channels plus
    per-channel statistics, updated within a CPU budget. Thread-safe."""

    def __init__(
        self,
        n_channels: int,
        sample_rate_hz: float,
        gain: np.ndarray,
        offset: np.ndarray,
        settings: AcquisitionSettings,
    ) -> None:
        self.n_channels = n_channels
        self.rate = sample_rate_hz
        self.gain = gain.astype(np.float32)
        self.offset = offset.astype(np.float32)
        self.settings = settings
        self.lock = threading.Lock()
        self.window_len = max(1, int(settings.window_s * sample_rate_hz))
        self.channels = np.arange(min(16, n_channels))
        self._window = np.full((self.window_len, len(self.channels)), GAP_FILL, dtype=np.int16)
        self._filled_to = 0
        """File row just after the newest row in the window."""
        self.minimum = np.full(n_channels, np.iinfo(np.int16).max, dtype=np.int16)
        self.maximum = np.full(n_channels, np.iinfo(np.int16).min + 1, dtype=np.int16)
        self.rms = np.zeros(n_channels, dtype=np.float32)
        self.spike_count = np.zeros(n_channels, dtype=np.int64)
        self._mean = None
        self._sd = None
        self.analysed_samples = 0
        self.seen_samples = 0
        self._busy_s = 0.0
        self._t0 = time.perf_counter()

    def select(self, channels: Iterable[int]) -> None:
        chans = np.unique(np.asarray(list(channels), dtype=np.int64))
        if chans.size == 0 or chans[0] < 0 or chans[-1] >= self.n_channels:
            raise ValueError(f"channels must be within 0..{self.n_channels - 1}")
        with self.lock:
            self.channels = chans
            self._window = np.full((self.window_len, len(chans)), GAP_FILL, dtype=np.int16)

    @property
    def filled_to(self) -> int:
        """File row just after the newest row in the live window."""
        return self._filled_to

    def put(self, first_row: int, rows: np.ndarray | None, count: int) -> None:
        """Rows [first_row, first_row + count) as soon as the writer has them, before they
        are written (``rows`` None: lost, GAP_FILL). The window is circular: row r lives
        at r % window_len, so a frame costs a copy of its selected columns only."""
        n_win = self.window_len
        with self.lock:
            end = first_row + count
            if end <= self._filled_to - n_win or end <= first_row:
                return
            start = max(first_row, end - n_win)
            if start > self._filled_to:  # rows never placed (defensive): lost
                self._place(max(self._filled_to, start - n_win), start, None)
            self._place(start, end, None if rows is None else rows[start - first_row :, :])
            self._filled_to = max(self._filled_to, end)

    def _place(self, start: int, end: int, rows: np.ndarray | None) -> None:
        """Copy file rows [start, end) (at most window_len) into the circular window."""
        n_win = self.window_len
        at = start % n_win
        first = min(end - start, n_win - at)
        for dst, src, k in ((at, 0, first), (0, first, end - start - first)):
            if k <= 0:
                continue
            if rows is None:
                self._window[dst : dst + k] = GAP_FILL
            else:
                self._window[dst : dst + k] = rows[src : src + k, self.channels]

    def add(self, rows: np.ndarray) -> None:
        """The per-channel statistics of a block just written (within the CPU budget)."""
        with self.lock:
            self.seen_samples += rows.shape[0]
        elapsed = time.perf_counter() - self._t0
        if self._busy_s > self.settings.monitor_budget * max(elapsed, 1e-3):
            return
        start = time.perf_counter()
        self._statistics(rows[: self.settings.monitor_rows])
        self._busy_s += time.perf_counter() - start

    def _statistics(self, rows: np.ndarray) -> None:
        valid = rows != GAP_FILL
        if not valid.all():
            rows = np.where(valid, rows, np.int16(0))
            keep = valid.all(axis=1)
            rows = rows[keep]
        if rows.shape[0] < 2:
            return
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        x = rows.astype(np.float32)
        mean = x.mean(axis=0)
        sd = x.std(axis=0)
        count = np.zeros(self.n_channels, dtype=np.int64)
        if self._mean is not None:
            threshold = self.settings.spike_threshold_sd * np.maximum(self._sd, 2.0)
            outside = np.abs(x - self._mean) > threshold
            count = np.count_nonzero(outside[1:] & ~outside[:-1], axis=0)
        with self.lock:
            np.minimum(self.minimum, lo, out=self.minimum)
            np.maximum(self.maximum, hi, out=self.maximum)
            self.rms = sd * np.abs(self.gain)
            self.spike_count += count
            self.analysed_samples += rows.shape[0]
        self._mean, self._sd = mean, sd

    def snapshot(
        self,
        channels: np.ndarray | None,
        n_bins: int,
        status: AcquisitionStatus,
        bin_rows: int | None = None,
        since: int | None = None,
    ) -> Snapshot:
        """The window (rows from ``since`` on, if given) in ``n_bins`` bins — or, with
        ``bin_rows``, in bins of exactly that many rows aligned to the file, up to the
        newest multiple of it."""
        n_win = self.window_len
        with self.lock:
            newest = self._filled_to
            end = newest - newest % bin_rows if bin_rows else newest
            start = end - n_win if since is None else min(max(since, end - n_win), end)
            window = self._window[np.arange(start, end) % n_win]
            window[: max(0, newest - n_win - start)] = GAP_FILL  # overwritten by newer rows
            chans = self.channels.copy()
            minimum, maximum = self.minimum.copy(), self.maximum.copy()
            rms, spikes = self.rms.copy(), self.spike_count.copy()
            analysed, seen = self.analysed_samples, self.seen_samples
        if channels is not None:
            wanted = np.asarray(channels)
            index = np.searchsorted(chans, wanted)
            if np.any(index >= len(chans)) or np.any(
                chans[np.minimum(index, len(chans) - 1)] != wanted
            ):
                raise ValueError(
                    "snapshot channels must be among the selected ones (select_channels)"
                )
            window, chans = window[:, index], wanted
        values = window.astype(np.float32) * self.gain[chans] + self.offset[chans]
        values[window == GAP_FILL] = np.nan
        if bin_rows:
            n_bins = (end - start) // bin_rows
        lo, hi = minmax_decimate(values, n_bins)
        edges = np.linspace(0, end - start, lo.shape[1] + 1)[:-1]
        t_s = (start + edges) / self.rate
        analysed_s = analysed / self.rate
        never = minimum > maximum
        return Snapshot(
            sample_rate_hz=self.rate,
            channels=chans,
            t_s=t_s,
            lo=lo,
            hi=hi,
            rms=rms,
            minimum=np.where(never, np.nan, minimum * self.gain + self.offset),
            maximum=np.where(never, np.nan, maximum * self.gain + self.offset),
            spike_count=spikes,
            spike_rate_hz=spikes / analysed_s if analysed_s > 0 else np.zeros_like(rms),
            coverage=analysed / seen if seen else 0.0,
            status=status,
        )


class Acquisition:
    """Record the board's frame stream into a session file.

    Typical use::

        with Acquisition(board, "session/session.h5") as acq:
            acq.wait(duration_s=30)          # or poll acq.status() / acq.snapshot()

    ``start()`` snapshots the board's settings, calibration, geometry and (emulated
    boards) ground truth into the file, then starts the board. ``stop()`` stops the
    board, keeps the frames still in its FIFO, and closes the file with
    ``complete=True``. Any failure (disk full, connection lost for good, stall,
    writer too slow) stops cleanly too, sets ``stop_reason`` and :attr:`error` (a typed
    exception, re-raised by :meth:`wait` when ``raise_on_error``).

    Subscribers (GUI): :meth:`status` and :meth:`snapshot` are cheap copies, safe from
    any thread; :meth:`select_channels` picks the channels of the live window (16 by
    default). Nothing here ever waits on a subscriber.
    """

    def __init__(
        self,
        board: CneaBoard,
        path: str | Path,
        *,
        settings: AcquisitionSettings | None = None,
        duration_s: float | None = None,
        with_truth: bool = True,
        extra_settings: dict[str, Any] | None = None,
        calibration: CneaCalibration | None = None,
    ) -> None:
        self.board = board
        self.calibration = calibration
        """Looks up the board's calibration record: the recording gets its per-channel gain,
        offset and bad channels, and ``/calibration`` says which record (None: nominal)."""
        self.path = Path(path)
        self.settings = settings or AcquisitionSettings()
        self.duration_s = duration_s
        self.with_truth = with_truth
        self.extra_settings = dict(extra_settings or {})
        self.state = "idle"
        self.error: BaseException | None = None
        self.stop_reason = ""
        self.backpressure_warning = False
        self.counters = StreamCounters()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._writer: SessionWriter | None = None
        self._stream: FrameStream | None = None
        self._live: _LiveView | None = None
        self._taps: list[BlockTap] = []
        self.info: RecordingInfo | None = None
        """What the file says of the recording (rate, gains, modes), once started."""
        self._ring: RingBuffer | None = None
        self._t_start = 0.0
        self._rate_window: deque[tuple[float, int, int]] = deque()
        self._samples_written = 0
        self._free_bytes = 0
        self.sample_rate_hz = 0.0
        self.n_channels = 0
        self.first_sample_index = 0
        self._frame_spf = 16

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> Self:
        """Prepare the file, connect the stream, start the threads and the board."""
        if self.state != "idle":
            raise RuntimeError(f"acquisition already {self.state}")
        board = self.board
        if board.acquiring:
            raise DriverError(
                "the board is already acquiring (another recording?); stop it first",
                resource=board.address,
            )
        identity = str(board.identify())
        settings = board.settings()
        settings.update(self.extra_settings)
        self.sample_rate_hz = float(settings["sample_rate_hz"])
        self.n_channels = board.n_channels
        truth = board.truth() if self.with_truth else None
        truth_arrays, truth_attrs = truth if truth else ({}, {})
        if truth_arrays and not all(name in truth_arrays for name in GroundTruth.FIELDS):
            log.info("the board's ground truth is incomplete; the recording gets no /truth")
            truth_arrays = {}
        gain, offset = board.nominal_gain(), board.nominal_offset()
        channel_mode, bad, used = board.modes(), None, None
        if self.calibration is not None:
            used = self.calibration.for_recording(
                board, channel_mode, int(settings["gain"]), gain, offset
            )
            gain, offset, bad = used.gain, used.offset, used.bad_channels
        status = board.frame_status()
        self.first_sample_index = status.next_sample
        info = RecordingInfo(
            sample_rate_hz=self.sample_rate_hz,
            n_channels=self.n_channels,
            gain_v=gain,
            offset_v=offset,
            positions_m=board.positions(),
            instrument_identity=identity,
            board_settings=settings,
            first_sample_index=status.next_sample,
            channel_mode=channel_mode,
            channel_level=board.levels(),
            bad_channels=bad,
            truth=truth_arrays or None,
            truth_attrs=truth_attrs,
            start_time_utc=utc_now(),
            extra_groups=used.write if used is not None else None,
        )
        self.info = info
        s = self.settings
        self._writer = SessionWriter(
            self.path,
            info,
            codec=s.codec,
            chunk_samples=s.block_samples,
            reserve_bytes=s.reserve_bytes,
            min_free_bytes=s.min_free_bytes,
        )
        self._frame_spf = int(settings["samples_per_frame"])
        if used is not None:
            self._writer.log(f"calibration: {used.applied.message}")
        try:
            self._free_bytes = self._writer.free_bytes()
            spf = int(settings["samples_per_frame"])
            capacity = max(8, int(s.ring_s * self.sample_rate_hz / spf))
            self._ring = RingBuffer(capacity)
            self._live = _LiveView(self.n_channels, self.sample_rate_hz, gain, offset, s)
            self._stream = board.open_stream(stall_timeout_s=s.stall_timeout_s)
            self.state = "recording"
            self._t_start = time.monotonic()
            self._threads = [
                threading.Thread(target=self._read_loop, name="acq-reader", daemon=True),
                threading.Thread(target=self._write_loop, name="acq-writer", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
            self._writer_note(f"start: board sample {status.next_sample}, {identity}")
            board.start(self._stream)
        except BaseException as exc:
            self._fail(exc, f"start failed: {exc}")
            if self._threads:
                self.join(timeout_s=30)
            else:
                self._writer.close(stop_reason=self.stop_reason, complete=False)
                self.state = "failed"
            raise
        return self

    def stop(self, reason: str = "requested") -> None:
        """Stop the recording (idempotent); returns once the file is closed."""
        self._request_stop(reason)
        self.join()

    def _request_stop(self, reason: str) -> None:
        with self._lock:
            if not self.stop_reason:
                self.stop_reason = reason
                if self.state == "recording":
                    self.state = "stopping"
        self._stop.set()

    def _fail(self, exc: BaseException, reason: str) -> None:
        with self._lock:
            first = self.error is None
            if first:
                self.error = exc
        if first:
            log.error("acquisition: %s: %s", reason, exc)
        self._request_stop(reason)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until both threads have finished and the file is closed."""
        if not self._threads:
            return True
        return self._finished.wait(timeout_s)

    def wait(
        self,
        duration_s: float | None = None,
        *,
        poll: Callable[[AcquisitionStatus], None] | None = None,
        poll_interval_s: float = 0.25,
        raise_on_error: bool = True,
    ) -> AcquisitionStatus:
        """Record until ``duration_s`` of data (or the constructor's duration) is written or
        the recording stops; ``poll`` gets a status every ``poll_interval_s``."""
        if duration_s is not None:
            self.duration_s = duration_s
        if self.state == "idle":
            self.start()
        try:
            while not self._finished.wait(poll_interval_s):
                if poll is not None:
                    poll(self.status())
        except KeyboardInterrupt:
            self.stop("interrupted")
        status = self.status()
        if poll is not None:
            poll(status)
        if raise_on_error and self.error is not None:
            raise self.error
        return status

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stop("requested" if exc_type is None else f"error: {exc!r}")

    # --- subscriber API ----------------------------------------------------------------------
    def select_channels(self, channels: Iterable[int]) -> None:
        """Choose the channels kept at full resolution for :meth:`snapshot` (any number;
        keep it to what a screen shows)."""
        if self._live is None:
            raise RuntimeError("start the acquisition first")
        self._live.select(channels)

    def tap(self, max_blocks: int = 4) -> BlockTap:
        """A new tap on the blocks written from now on (closed when the acquisition ends;
        the follower closes it to stop)."""
        tap = BlockTap(max_blocks)
        # a new list, not an append: the writer iterates over the one it read
        self._taps = [*(t for t in self._taps if not t.closed), tap]
        if self._finished.is_set():
            tap.close()
        return tap

    def status(self) -> AcquisitionStatus:
        """The live status (cheap, thread-safe)."""
        c = self._stream.counters if self._stream is not None else self.counters
        ring = self._ring
        now = time.monotonic()
        window = [w for w in self._rate_window if now - w[0] < 2.0]
        rate_bps = rt = 0.0
        if len(window) >= 2:
            dt_s = window[-1][0] - window[0][0]
            if dt_s > 0:
                rate_bps = (window[-1][1] - window[0][1]) / dt_s
                rt = (window[-1][2] - window[0][2]) / dt_s / max(self.sample_rate_hz, 1e-9)
        backlog = ring.frames if ring else 0
        spf = self._frame_spf
        return AcquisitionStatus(
            state=self.state,
            elapsed_s=(now - self._t_start) if self._t_start else 0.0,
            recorded_s=self._samples_written / self.sample_rate_hz if self.sample_rate_hz else 0.0,
            samples_written=self._samples_written,
            data_rate_bps=rate_bps,
            realtime_factor=rt,
            frames_received=c.frames_received,
            frames_lost=c.frames_lost,
            crc_errors=c.crc_errors,
            stalls=c.stalls,
            reconnects=c.reconnects,
            gaps=c.gaps,
            disk_free_bytes=self._free_bytes,
            backlog_frames=backlog,
            backlog_s=backlog * spf / self.sample_rate_hz if self.sample_rate_hz else 0.0,
            backlog_fraction=ring.fill if ring else 0.0,
            backpressure_warning=self.backpressure_warning,
            stop_reason=self.stop_reason,
            error=f"{type(self.error).__name__}: {self.error}" if self.error else "",
        )

    def snapshot(
        self,
        channels: Iterable[int] | None = None,
        n_bins: int = 1000,
        *,
        bin_rows: int | None = None,
        since: int | None = None,
    ) -> Snapshot:
        """The latest decimated window (min/max per display bin) of the selected channels (or
        a subset of them), per-channel RMS/min/max and live spike counts, and the status.
        The window holds every row the writer has received (ahead of the file by up to a
        block). ``bin_rows``: bins of exactly that many rows, aligned to the file, up to
        the newest multiple of it (``n_bins`` is then ignored); ``since``: only the rows
        from that file row on (a follower that keeps its own history asks for the new
        ones only)."""
        if self._live is None:
            raise RuntimeError("start the acquisition first")
        chans = None if channels is None else np.unique(np.asarray(list(channels)))
        return self._live.snapshot(chans, n_bins, self.status(), bin_rows, since)

    @property
    def live_samples(self) -> int:
        """Rows the live view has received so far (the file may trail by up to a block)."""
        return self._live.filled_to if self._live is not None else 0

    # --- reader thread ------------------------------------------------------------------------
    def _writer_note(self, message: str) -> None:
        if self._ring is not None:
            self._ring.put(_Note(message))

    def _target_sample(self) -> int | None:
        if self.duration_s is None:
            return None
        return self.first_sample_index + math.ceil(self.duration_s * self.sample_rate_hz)

    def _read_loop(self) -> None:
        stream, ring, s = self._stream, self._ring, self.settings
        assert stream is not None and ring is not None
        draining_until: int | None = None
        drain_deadline = 0.0
        last_flags = 0
        losses = 0
        try:
            while True:
                if self._stop.is_set() and draining_until is None:
                    draining_until = self._stop_board()
                    drain_deadline = time.monotonic() + s.drain_timeout_s
                    if draining_until is None:
                        break
                if draining_until is not None and time.monotonic() > drain_deadline:
                    self._writer_note("stop: gave up waiting for the board's last frames")
                    break
                try:
                    item = next(stream)
                except ConnectionLost as exc:
                    if draining_until is not None:
                        break
                    losses += 1  # consecutive: a link that reopens but never delivers counts
                    if losses > s.reconnect_attempts:
                        self._fail(exc, "data connection lost")
                        break
                    self._writer_note(f"data connection lost: {exc}")
                    if losses > 1:
                        time.sleep(s.reconnect_delay_s)
                    try:
                        stream.reconnect(s.reconnect_attempts, s.reconnect_delay_s)
                    except ConnectionLost as final:
                        self._fail(final, "data connection lost")
                        break
                    self._writer_note("data connection reopened")
                    continue
                if isinstance(item, Frame):
                    losses = 0
                    if item.header.channel_count != self.n_channels:
                        raise DataIntegrityError(
                            f"frame with {item.header.channel_count} channels, board has "
                            f"{self.n_channels}"
                        )
                    self._frame_spf = item.header.samples_per_frame
                    flags = item.header.flags
                    if flags & FLAG_STIMULUS:
                        self._writer_note(f"stimulus at board sample {item.first_sample}")
                    if (flags ^ last_flags) & FLAG_CALIBRATION:
                        state = "on" if flags & FLAG_CALIBRATION else "off"
                        self._writer_note(
                            f"calibration source {state} at board sample {item.first_sample}"
                        )
                    last_flags = flags
                    if not ring.put_frame(item):
                        self._fail(
                            StorageError("the writer fell behind: ring buffer full"),
                            "writer fell behind (ring buffer full)",
                        )
                        break
                    self._note_rate(item)
                    if self._check_backpressure(ring):
                        break  # stop now: the ring cannot take the board's last frames
                    target = self._target_sample()
                    if target is not None and item.end_sample >= target and not self._stop.is_set():
                        self._request_stop("duration reached")
                    if draining_until is not None and item.end_sample >= draining_until:
                        break
                elif isinstance(item, SequenceGap):
                    ring.put(_Gap(item.first_sample, item.end_sample, item.reason))
                elif isinstance(item, CorruptFrame):
                    log.warning("acquisition: %s", item.error)
                elif isinstance(item, Stall):
                    if draining_until is not None:
                        break  # the board sent everything it had
                    if not self._board_running():
                        self._request_stop("board stopped acquiring")
                        self._writer_note("the board stopped acquiring by itself")
                        break
                    if item.silent_s >= s.stall_abort_s:
                        self._fail(
                            StreamStalled(
                                f"no frames for {item.silent_s:g} s", resource=self.board.address
                            ),
                            "stream stalled",
                        )
                        break
                    if item.silent_s <= s.stall_timeout_s + 1e-9:
                        self._writer_note(f"warning: no frames for {item.silent_s:g} s (stall)")
                elif isinstance(item, StreamRestart):
                    self._fail(
                        DataIntegrityError(
                            f"the board restarted acquisition (sample {item.first_sample} after "
                            f"{item.expected_sample})",
                            resource=self.board.address,
                        ),
                        "board restarted acquisition",
                    )
                    break
        except BaseException as exc:  # a bug or a typed driver error: stop cleanly, keep the file
            self._fail(exc, f"reader failed: {exc!r}")
        finally:
            self._stop.set()
            if draining_until is None:
                self._stop_board()
            stream.close()
            ring.close()

    def _board_running(self) -> bool:
        """Whether the board says it is acquiring (True when it cannot be asked)."""
        try:
            return bool(self.board.acquiring)
        except DriverError as exc:
            log.warning("acquisition: cannot ask the board whether it runs: %s", exc)
            return True

    def _stop_board(self) -> int | None:
        """Stop the board; the sample index its last frame ends at (None if unknown)."""
        try:
            with self.board.lock:
                self.board.stop()
                return self.board.frame_status().next_sample
        except DriverError as exc:
            log.warning("acquisition: could not stop the board: %s", exc)
            return None

    def _note_rate(self, frame: Frame) -> None:
        now = time.monotonic()
        received = self._stream.counters.bytes_received if self._stream else 0
        window = self._rate_window
        if not window or now - window[-1][0] >= 0.1:
            window.append((now, received, frame.end_sample))
            while window and now - window[0][0] > 2.0:
                window.popleft()

    def _check_backpressure(self, ring: RingBuffer) -> bool:
        """Warn when the ring fills up; True when the recording must stop now."""
        fill = ring.fill
        s = self.settings
        if fill >= s.stop_fill:
            self._fail(
                StorageError(
                    f"the writer fell behind: ring buffer {fill:.0%} full "
                    f"({ring.frames} frames); disk or CPU too slow for the data rate"
                ),
                "writer fell behind (ring buffer full)",
            )
            return True
        if fill >= s.warn_fill and not self.backpressure_warning:
            self.backpressure_warning = True
            log.warning("acquisition: writer falling behind (ring buffer %.0f%% full)", 100 * fill)
            self._writer_note(f"warning: writer falling behind, ring buffer {fill:.0%} full")
        elif fill < s.warn_fill / 2 and self.backpressure_warning:
            self.backpressure_warning = False
            self._writer_note("writer caught up")
        return False

    # --- writer thread -------------------------------------------------------------------------
    def _write_loop(self) -> None:
        ring, writer, live = self._ring, self._writer, self._live
        assert ring is not None and writer is not None and live is not None
        B = self.settings.block_samples
        block = np.empty((B, self.n_channels), dtype=np.int16)
        block_row = 0  # file row of block[0]
        fill = 0  # rows of block filled
        limit = (
            None if self.duration_s is None else math.ceil(self.duration_s * self.sample_rate_hz)
        )
        last_flush = time.monotonic()
        base = self.first_sample_index
        complete = True

        def emit(final: bool = False) -> None:
            nonlocal block_row, fill
            if fill == 0:
                return
            rows = block[:fill]
            writer.write(block_row, rows)
            live.add(rows)
            for tap in self._taps:
                tap.offer(block_row, rows)
            self._samples_written = block_row + fill
            if final:
                return
            block_row += fill
            fill = 0

        def put_rows(row: int, data: np.ndarray | None, count: int) -> None:
            """Place ``count`` rows at file ``row`` (``data`` None: GAP_FILL); the live view
            gets them at once, not a block later."""
            nonlocal block_row, fill
            if limit is not None:
                count = min(count, limit - row)
                if count <= 0:
                    return
            live.put(row, data, count)
            done = 0
            while done < count:
                if fill == B:
                    emit()
                if data is None and fill == 0 and count - done >= B:
                    whole = (count - done) // B * B  # skip whole blocks: fill value, no write
                    writer.extend(block_row + whole)
                    block_row += whole
                    done += whole
                    self._samples_written = block_row
                    continue
                take = min(B - fill, count - done)
                if data is None:
                    block[fill : fill + take] = GAP_FILL
                else:
                    block[fill : fill + take] = data[done : done + take]
                fill += take
                done += take

        try:
            while True:
                batch = ring.get_batch(0.1)
                if batch is None:
                    break
                for item in batch:
                    if isinstance(item, Frame):
                        row = item.first_sample - base
                        if limit is not None and row >= limit:
                            continue  # beyond the requested duration
                        expected = block_row + fill
                        if row > expected:  # defensive: a gap the stream did not report
                            put_rows(expected, None, row - expected)
                            writer.add_gap(expected, row, "unreported")
                        elif row < expected:
                            continue  # duplicate: already written
                        put_rows(row, item.samples, item.samples.shape[0])
                    elif isinstance(item, _Gap):
                        first, end = item.first - base, item.end - base
                        if limit is not None:
                            end = min(end, limit)
                        if end > first:
                            writer.add_gap(first, end, item.reason)
                            writer.log(f"gap: rows {first}-{end} lost ({item.reason})")
                            put_rows(first, None, end - first)
                    else:
                        writer.log(item.message)
                now = time.monotonic()
                if now - last_flush >= self.settings.flush_interval_s:
                    writer.flush()  # whole blocks only: rewriting a partial chunk bloats the file
                    self._free_bytes = writer.free_bytes()
                    last_flush = now
            emit(final=True)
            writer.flush()
        except DiskFullError as exc:
            complete = not writer.broken
            self._fail(exc, "disk full")
            self._drain_ring(ring)
        except (StorageError, OSError, RuntimeError, ValueError) as exc:
            complete = not writer.broken
            self._fail(exc, f"writer failed: {exc}")
            self._drain_ring(ring)
        finally:
            counters = self._stream.counters.as_dict() if self._stream else {}
            self.counters = self._stream.counters if self._stream else self.counters
            reason = self.stop_reason or "requested"
            writer.close(
                stop_reason=reason,
                complete=complete,
                counters=counters,
                extra_attrs={
                    "ring_peak_frames": ring.peak_frames,
                    "ring_capacity_frames": ring.capacity,
                },
            )
            with self._lock:
                self.state = "failed" if self.error is not None else "stopped"
            self._finished.set()
            for tap in self._taps:
                tap.close()

    @staticmethod
    def _drain_ring(ring: RingBuffer) -> None:
        """After a writer failure: discard what the reader still delivers until it stops."""
        while ring.get_batch(0.1) is not None:
            pass
