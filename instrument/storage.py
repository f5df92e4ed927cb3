"""The session HDF5 file: how a recording is written (layout in docs/file_format.md).

:class:`SessionWriter` creates ``session.h5`` with every dataset the recording
needs, switches to SWMR (single writer, many readers) so the GUI and analysis can
follow it live, then appends int16 traces in time blocks, gap rows and log lines.
Readers need only h5py + hdf5plugin (:func:`instrument.recording.open_hdf5_recording`).

A full disk never corrupts the file: the writer keeps a reserve file next to it
(``session.h5.reserve``) and checks free space before every block; when space runs
low it raises :class:`DiskFullError` before HDF5 ever fails. Should a write fail
anyway (another process filled the disk), the reserve is released so HDF5 can close
the file cleanly; everything flushed before stays readable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

import instrument
from instrument.recording import GAP_FILL

log = logging.getLogger(__name__)

FORMAT = "brainpaste-session"
FORMAT_VERSION = 1
SESSION_FILE = "session.h5"
GAP_REASON_BYTES = 32
LOG_LINE_BYTES = 256
GAP_DTYPE = np.dtype(
    [
        ("first_sample", "<i8"),
        ("end_sample", "<i8"),
        ("reason", h5py.string_dtype("utf-8", GAP_REASON_BYTES)),
    ]
)
"""One row of ``/recording/gaps``: file rows [first_sample, end_sample) were lost, and why."""
LOG_DTYPE = h5py.string_dtype("utf-8", LOG_LINE_BYTES)
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def codec_options(name: str) -> dict[str, Any]:
    """h5py dataset keywords of a named compression codec.

    ``blosc-lz4-shuffle`` (default: on the emulated culture's codes about 14x real time
    per CPU second for 4096 ch x 10 kHz and 1.8x smaller — the fastest and smallest of
    the Blosc family measured by bench/acquisition_throughput.py), ``blosc-lz4-bitshuffle``
    (10x, 1.7x), ``blosc2-lz4-bitshuffle`` (slower here: Blosc2's thread pool on 2 cores),
    ``zstd``, ``gzip`` (no plugin needed to read, slow), ``none``.
    """
    presets: dict[str, Any] = {
        "blosc-lz4-bitshuffle": lambda: hdf5plugin.Blosc(
            cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE
        ),
        "blosc-lz4-shuffle": lambda: hdf5plugin.Blosc(
            cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE
        ),
        "blosc2-lz4-bitshuffle": lambda: hdf5plugin.Blosc2(
            cname="lz4", clevel=5, filters=hdf5plugin.Blosc2.BITSHUFFLE
        ),
        "zstd": lambda: hdf5plugin.Zstd(clevel=1),
        "gzip": lambda: {"compression": "gzip", "compression_opts": 1, "shuffle": True},
        "none": lambda: {},
    }
    try:
        return dict(presets[name]())
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(presets)}") from None


DEFAULT_CODEC = "blosc-lz4-shuffle"


class StorageError(Exception):
    """The session file could not be written as asked."""


class DiskFullError(StorageError):
    """No room left on the disk holding the session file. Everything written before is in
    the file; free space (or choose another --out) and record again."""


@dataclass
class RecordingInfo:
    """What a new recording file is created with (SI units)."""

    sample_rate_hz: float
    n_channels: int
    gain_v: np.ndarray
    """(C,) value per code: V (current clamp) or A (voltage clamp)."""
    offset_v: np.ndarray
    """(C,) value at code 0."""
    positions_m: np.ndarray
    """(C, 2) electrode x, y, m."""
    instrument_identity: str = ""
    board_settings: Mapping[str, Any] = field(default_factory=dict)
    first_sample_index: int = 0
    """Board sample index of file row 0."""
    channel_mode: np.ndarray | None = None
    """(C,) uint8: 0 current clamp, 1 voltage clamp."""
    channel_level: np.ndarray | None = None
    """(C,) holding level: A (current clamp) or V (voltage clamp)."""
    bad_channels: np.ndarray | None = None
    truth: Mapping[str, np.ndarray] | None = None
    truth_attrs: Mapping[str, Any] = field(default_factory=dict)
    start_time_utc: str = ""
    """ISO 8601; now when empty."""
    extra_groups: Callable[[h5py.File], None] | None = None
    """Writes more groups (``/calibration``) into the new file before it goes SWMR."""


def utc_now() -> str:
    """The current time, ISO 8601 UTC with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an OSError (or the RuntimeError h5py raises on a failed flush) means no room."""
    if getattr(exc, "errno", None) in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return any(
        marker in text
        for marker in ("No space left", "errno = 28", "errno = 27", "errno = 122", "File too large")
    )


def _attr_value(value: Any) -> Any:
    """An HDF5-storable attribute value (dicts and lists of mixed things become JSON text)."""
    if isinstance(value, str | bytes | int | float | bool | np.generic | np.ndarray):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
        return np.asarray(value)
    return json.dumps(value, default=str)


class SessionWriter:
    """Creates a session file and appends a recording to it (one writer thread at a time).

    ``chunk_samples`` x ``chunk_channels`` is the chunk shape of the traces; write in
    whole multiples of ``chunk_samples`` rows for speed (the last block may be short).
    """

    def __init__(
        self,
        path: str | Path,
        info: RecordingInfo,
        *,
        codec: str = DEFAULT_CODEC,
        chunk_samples: int = 1024,
        chunk_channels: int = 64,
        reserve_bytes: int = 64 << 20,
        min_free_bytes: int | None = None,
        cache_bytes: int = 16 << 20,
    ) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise StorageError(f"{self.path} exists; a recording never overwrites a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.n_channels = int(info.n_channels)
        self.chunk_samples = chunk_samples
        self.block_bytes = chunk_samples * self.n_channels * 2
        self.min_free_bytes = (
            min_free_bytes if min_free_bytes is not None else 4 * self.block_bytes + (16 << 20)
        )
        self.codec = codec
        self.n_samples = 0
        self.rows_flushed = 0
        """Rows on disk as of the last successful flush (all that is certain after a failure)."""
        self.n_gaps = 0
        self.broken = False
        self.closed = False
        self.reserve_path = self.path.with_name(self.path.name + ".reserve")
        self._make_reserve(reserve_bytes)
        try:
            self._file = h5py.File(
                self.path, "w-", libver="latest", rdcc_nbytes=cache_bytes, locking=False
            )
            self._create(info, codec, chunk_samples, chunk_channels)
            self._file.swmr_mode = True
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._file.close()
            self._release_reserve()
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise DiskFullError(f"no room to create {self.path}: {exc}") from exc
            raise
        self.log(f"recording created ({info.n_channels} channels at {info.sample_rate_hz:g} Hz)")

    # --- creation ------------------------------------------------------------------------
    def _make_reserve(self, size: int) -> None:
        if size <= 0:
            return
        try:
            with open(self.reserve_path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()
            if is_disk_full(exc):
                raise DiskFullError(
                    f"not even {size >> 20} MiB free next to {self.path}: {exc}"
                ) from exc
            raise

    def _release_reserve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.reserve_path.unlink()

    def _create(self, info: RecordingInfo, codec: str, chunk_t: int, chunk_c: int) -> None:
        f = self._file
        c = self.n_channels
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created_utc"] = utc_now()
        f.attrs["brainpaste_version"] = instrument.__version__
        rec = f.create_group("recording")
        rec.attrs["sample_rate_hz"] = float(info.sample_rate_hz)
        rec.attrs["n_channels"] = c
        rec.attrs["start_time_utc"] = info.start_time_utc or utc_now()
        rec.attrs["instrument_identity"] = info.instrument_identity
        rec.attrs["board_settings"] = json.dumps(dict(info.board_settings), default=str)
        rec.attrs["first_sample_index"] = np.int64(info.first_sample_index)
        rec.attrs["complete"] = False
        rec.attrs["stop_reason"] = "recording"
        rec.attrs["stop_time_utc"] = ""
        rec.attrs["codec"] = codec
        for name in COUNTER_NAMES:
            rec.attrs[name] = np.int64(0)
        rec.create_dataset(
            "traces",
            shape=(0, c),
            maxshape=(None, c),
            dtype="<i2",
            chunks=(chunk_t, min(chunk_c, c)),
            fillvalue=GAP_FILL,
            **codec_options(codec),
        )
        rec.create_dataset("channel_gain_v", data=np.asarray(info.gain_v, dtype="<f8"))
        rec.create_dataset("channel_offset_v", data=np.asarray(info.offset_v, dtype="<f8"))
        rec.create_dataset(
            "electrode_position_m", data=np.asarray(info.positions_m, dtype="<f8").reshape(c, 2)
        )
        if info.channel_mode is not None:
            rec.create_dataset("channel_mode", data=np.asarray(info.channel_mode, dtype="u1"))
        if info.channel_level is not None:
            rec.create_dataset("channel_level", data=np.asarray(info.channel_level, dtype="<f8"))
        if info.bad_channels is not None:
            rec.create_dataset("bad_channels", data=np.asarray(info.bad_channels, dtype=bool))
        rec.create_dataset("gaps", shape=(0,), maxshape=(None,), dtype=GAP_DTYPE, chunks=(256,))
        f.create_dataset("log", shape=(0,), maxshape=(None,), dtype=LOG_DTYPE, chunks=(256,))
        if info.truth:
            group = f.create_group("truth")
            for name, array in info.truth.items():
                group.create_dataset(name, data=np.asarray(array))
            for name, value in info.truth_attrs.items():
                group.attrs[name] = _attr_value(value)
        if info.extra_groups is not None:
            info.extra_groups(f)
        self._traces = rec["traces"]
        self._gaps = rec["gaps"]
        self._log = f["log"]

    # --- appending -------------------------------------------------------------------------
    def free_bytes(self) -> int:
        """Free space on the session file's disk, bytes."""
        return shutil.disk_usage(self.path.parent).free

    def _guard(self, what: str) -> None:
        if self.broken or self.closed:
            raise StorageError(
                f"cannot {what}: the file is {'broken' if self.broken else 'closed'}"
            )

    def _failed(self, exc: BaseException, what: str) -> StorageError:
        self.broken = True
        if is_disk_full(exc):
            return DiskFullError(f"disk full during {what} of {self.path}: {exc}")
        return StorageError(f"{what} of {self.path} failed: {exc}")

    def write(self, row: int, block: np.ndarray) -> None:
        """Write ``block`` (n, C) int16 at file rows [row, row + n), growing the file."""
        self._guard("write")
        if block.ndim != 2 or block.shape[1] != self.n_channels or block.dtype != np.int16:
            raise ValueError(
                f"block must be (n, {self.n_channels}) int16, got {block.dtype} {block.shape}"
            )
        free = self.free_bytes()
        if free < self.min_free_bytes:  # stop before HDF5 fails: the file stays whole
            raise DiskFullError(
                f"only {free >> 20} MiB free on the disk of {self.path} (reserve "
                f"{self.min_free_bytes >> 20} MiB): stopping before the disk is full"
            )
        end = row + block.shape[0]
        try:
            if end > self.n_samples:
                self._traces.resize(end, axis=0)
                self.n_samples = end
            self._traces.write_direct(np.ascontiguousarray(block), dest_sel=np.s_[row:end])
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc, "trace write") from exc

    def extend(self, n_rows: int) -> None:
        """Grow the traces to ``n_rows`` rows without writing (new rows read as GAP_FILL)."""
        self._guard("extend")
        if n_rows > self.n_samples:
            try:
                self._traces.resize(n_rows, axis=0)
            except (OSError, RuntimeError) as exc:
                raise self._failed(exc, "resize") from exc
            self.n_samples = n_rows

    def add_gap(self, first_row: int, end_row: int, reason: str) -> None:
        """Record that file rows [first_row, end_row) were lost (they hold GAP_FILL)."""
        self._guard("add a gap")
        row = np.array(
            [(first_row, end_row, reason.encode("utf-8")[:GAP_REASON_BYTES])], dtype=GAP_DTYPE
        )
        try:
            self._gaps.resize(self.n_gaps + 1, axis=0)
            self._gaps[self.n_gaps] = row[0]
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc, "gap write") from exc
        self.n_gaps += 1

    def log(self, message: str) -> None:
        """Append a timestamped line to ``/log`` (and to the Python log)."""
        log.info("%s: %s", self.path.name, message)
        if self.broken or self.closed:
            return
        line = f"{utc_now()} {message}".encode()
        if len(line) > LOG_LINE_BYTES:
            line = line[: LOG_LINE_BYTES - 3] + "…".encode()
        n = self._log.shape[0]
        try:
            self._log.resize(n + 1, axis=0)
            self._log[n] = line.decode("utf-8", errors="ignore").encode()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc, "log write") from exc

    def flush(self) -> None:
        """Make everything written so far visible to SWMR readers (and durable), and let the
        operating system drop the file's pages that already reached the disk."""
        self._guard("flush")
        try:
            self._file.flush()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc, "flush") from exc
        self.rows_flushed = self.n_samples
        self._release_page_cache()

    def _release_page_cache(self) -> None:
        """Start writing back the file's dirty pages and drop its clean ones (a hint; no
        wait). A recording is written once and read later: left cached, it grows the page
        cache by ~50 MB/s into memory the process has not touched, which on a virtual
        machine costs seconds per GB to fault in — enough to hold the writer below the
        data rate. Dropped as it goes, the cache recycles the same pages (3 GB written in
        8 MB blocks on the development VM: 132 MB/s cached, 820 MB/s dropped each 256 MB)."""
        if not hasattr(os, "posix_fadvise"):
            return
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            fd = self._file.id.get_vfd_handle()
            os.posix_fadvise(int(fd), 0, 0, os.POSIX_FADV_DONTNEED)

    # --- closing ---------------------------------------------------------------------------
    def close(
        self,
        *,
        stop_reason: str,
        complete: bool = True,
        counters: Mapping[str, int] | None = None,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Close the file and record how the recording ended.

        The SWMR file is closed, then reopened briefly (not SWMR) to set ``complete``,
        ``stop_reason``, ``stop_time_utc`` and the counters. Safe after a disk-full
        error (the reserve is released first); never raises for a second call.
        """
        if self.closed:
            return
        if not self.broken:
            with contextlib.suppress(StorageError):
                self.log(f"stop: {stop_reason}")
        self.closed = True
        if self.broken:
            self._release_reserve()
            complete = False
        try:
            self._file.close()
        except Exception as exc:  # the file on disk is as of the last successful flush
            log.error("%s: closing after an error failed: %s", self.path, exc)
            self._release_reserve()
            return
        self._release_reserve()
        try:
            with h5py.File(self.path, "r+", locking=False) as f:
                rec = f["recording"]
                if self.broken:
                    # rows written after the last good flush may not have reached the disk
                    if rec["traces"].shape[0] > self.rows_flushed:
                        rec["traces"].resize(self.rows_flushed, axis=0)
                    lines = f["log"]
                    lines.resize(lines.shape[0] + 1, axis=0)
                    note = f"{utc_now()} stop: {stop_reason}; kept rows up to {self.rows_flushed}"
                    lines[-1] = note.encode()[:LOG_LINE_BYTES]
                rec.attrs["complete"] = bool(complete)
                rec.attrs["stop_reason"] = stop_reason
                rec.attrs["stop_time_utc"] = utc_now()
                for name, value in (counters or {}).items():
                    rec.attrs[name] = np.int64(value)
                for name, value in (extra_attrs or {}).items():
                    rec.attrs[name] = _attr_value(value)
        except Exception as exc:
            log.error("%s: could not record how the recording ended: %s", self.path, exc)


COUNTER_NAMES = (
    "frames_received",
    "frames_lost",
    "samples_lost",
    "gaps",
    "crc_errors",
    "format_errors",
    "truncated_frames",
    "stalls",
    "reconnects",
    "restarts",
    "stale_frames",
    "bytes_received",
    "bytes_discarded",
)
"""Frame counters stored as ``/recording`` attributes (drivers.cnea_board.StreamCounters)."""
