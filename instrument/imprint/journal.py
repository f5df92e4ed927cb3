"""The per-cell imprint journal in the session file (``/imprint``), written as it goes.

Crash safety (``kill -9`` at any point) rests on three rules:

1. **No HDF5 metadata changes while programming.** Every dataset of ``/imprint`` —
   the journal rows, per-tile progress, the final read, the report text — is created
   and filled once, at setup, then flushed; from then on the run only overwrites raw
   bytes of those fixed-size contiguous datasets in place and flushes. A process killed
   between or during those writes leaves the file's structure exactly as it was.
2. **Per-row checksums, and a row's verified state written only after its read-back.**
   Before a train the batch's rows are marked ``in_flight`` (flushed); after the read-back
   they get their new reading, attempts and state, ``in_flight`` cleared (flushed). Each
   row carries a CRC32 of its bytes. On resume a row still ``in_flight`` (or with a bad
   CRC) may have had one more pulse than it counts: it is counted, and the cell is read
   again before anything else is sent. A ``verified`` row is never selected again, so a
   verified cell is never pulsed again.
3. **The file's "open for writing" flags.** HDF5 marks a file (superblock v2/v3) as open
   for writing and clears the mark on close; a killed writer leaves it set and HDF5 then
   refuses to reopen the file. We hold a lock file (``session.h5.imprint.lock``, our pid)
   while the file is open; on resume, a lock whose process is gone proves the mark is
   ours and stale, and it is cleared (the HDF5 tool ``h5clear -s`` does the same).
   A mark without our stale lock is refused (someone else has the file open).

Layout (docs/imprint.md): attributes (technology, layout, tolerance, window, the
configuration, the map's digest), ``order``, ``tiles`` (per-tile progress),
``cells`` (the journal rows), ``characterization_*`` (T, R, C), ``placement``,
``final_read_s`` (T, R, C) and ``report_json`` (bytes), ``setup_complete``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calibration.records import json_default
from instrument.storage import utc_now

log = logging.getLogger(__name__)

GROUP = "imprint"
FORMAT = "brainpaste-imprint"
FORMAT_VERSION = 1
REPORT_BYTES = 1 << 18

PENDING, VERIFIED, FAILED, SKIPPED = 0, 1, 2, 3
STATE_NAMES = {PENDING: "pending", VERIFIED: "verified", FAILED: "failed", SKIPPED: "skipped"}

CELL_DTYPE = np.dtype(
    [
        ("tile", "<i4"),
        ("row", "<i2"),
        ("col", "<i2"),
        ("role", "u1"),
        ("state", "u1"),
        ("in_flight", "u1"),
        ("sign", "i1"),
        ("level", "<i2"),
        ("aux", "<i2"),
        ("attempts", "<i4"),
        ("pre", "<i8"),
        ("post", "<i8"),
        ("synapse", "<i8"),
        ("weight_v", "<f8"),
        ("target_s", "<f8"),
        ("last_read_s", "<f8"),
        ("amp_up_v", "<f4"),
        ("amp_down_v", "<f4"),
        ("width_s", "<f4"),
        ("crc", "<u4"),
    ]
)
"""One journal row: a cell of a tile, its target and where its programming stands."""

TILE_DTYPE = np.dtype(
    [
        ("tile", "<i4"),
        ("array", "S16"),
        ("block_row", "<i4"),
        ("block_col", "<i4"),
        ("first_row", "<i8"),
        ("n_rows", "<i8"),
        ("prepared", "u1"),
        ("done", "u1"),
        ("rig", "S96"),
        ("trains", "<i8"),
        ("pulses", "<i8"),
        ("pulse_visits", "<i8"),
        ("read_visits", "<i8"),
        ("messages", "<i8"),
        ("round_trips", "<i8"),
        ("busy_s", "<f8"),
        ("instrument_s", "<f8"),
    ]
)
"""Per-tile progress: its rows in ``cells``, whether it was prepared (flash: erased) and
finished, which rig (selector identity) holds it, and its counters."""


class JournalError(RuntimeError):
    """The session file's imprint journal cannot be used as asked (says why and what to do)."""


def row_crc(rows: np.ndarray) -> np.ndarray:
    """CRC32 of every row's bytes with ``crc`` zeroed."""
    tmp = rows.copy()
    tmp["crc"] = 0
    raw = tmp.view(np.uint8).reshape(len(tmp), CELL_DTYPE.itemsize)
    return np.fromiter((zlib.crc32(r.tobytes()) for r in raw), dtype=np.uint32, count=len(raw))


# --- HDF5's "open for writing" mark ------------------------------------------------------------
_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` — the checksum of HDF5's superblock v2/v3."""
    m = 0xFFFFFFFF
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & m
    i = 0

    def word(k: int, buf: bytes) -> int:
        return buf[k] | (buf[k + 1] << 8) | (buf[k + 2] << 16) | (buf[k + 3] << 24)

    while length > 12:
        a, b, c = (a + word(i, data)) & m, (b + word(i + 4, data)) & m, (c + word(i + 8, data)) & m
        a = (a - c) & m ^ _rot(c, 4)
        c = (c + b) & m
        b = (b - a) & m ^ _rot(a, 6)
        a = (a + c) & m
        c = (c - b) & m ^ _rot(b, 8)
        b = (b + a) & m
        a = (a - c) & m ^ _rot(c, 16)
        c = (c + b) & m
        b = (b - a) & m ^ _rot(a, 19)
        a = (a + c) & m
        c = (c - b) & m ^ _rot(b, 4)
        b = (b + a) & m
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:] + bytes(12 - length)
    a, b, c = (a + word(0, tail)) & m, (b + word(4, tail)) & m, (c + word(8, tail)) & m
    c = (c ^ b) - _rot(b, 14) & m
    a = (a ^ c) - _rot(c, 11) & m
    b = (b ^ a) - _rot(a, 25) & m
    c = (c ^ b) - _rot(b, 16) & m
    a = (a ^ c) - _rot(c, 4) & m
    b = (b ^ a) - _rot(a, 14) & m
    c = (c ^ b) - _rot(b, 24) & m
    return c


def _superblock(path: Path) -> tuple[int, bytearray, int] | None:
    """(offset, bytes, checked length) of a v2/v3 superblock, or None for other versions."""
    with open(path, "rb") as f:
        for offset in (0, 512, 1024, 2048, 4096, 8192):
            f.seek(offset)
            head = f.read(12)
            if head[:8] != _SIGNATURE:
                continue
            if head[8] not in (2, 3):
                return None
            n = 12 + 4 * head[9]
            f.seek(offset)
            return offset, bytearray(f.read(n + 4)), n
    raise JournalError(f"{path} is not an HDF5 file")


def write_flags(path: Path) -> int:
    """The superblock's file-consistency flags (0 when the file was closed properly)."""
    block = _superblock(path)
    return 0 if block is None else block[1][11]


def clear_write_flags(path: Path) -> bool:
    """Clear the "open for writing" mark of a file whose writer died (like ``h5clear -s``).

    Only call this when the writer is known to be gone. Returns True if a mark was cleared.
    """
    block = _superblock(path)
    if block is None or block[1][11] == 0:
        return False
    offset, sb, n = block
    stored = struct.unpack("<I", sb[n : n + 4])[0]
    if stored != lookup3(bytes(sb[:n])):
        raise JournalError(f"{path}: the superblock checksum does not match; not touching it")
    sb[11] = 0
    sb[n : n + 4] = struct.pack("<I", lookup3(bytes(sb[:n])))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(sb)
        f.flush()
        os.fsync(f.fileno())
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    """``<session file>.imprint.lock`` holding our pid while the file is open for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".imprint.lock")
        self.stale_pid: int | None = None
        if self.path.exists():
            try:
                pid = int(self.path.read_text().split()[0])
            except (ValueError, IndexError, OSError):
                pid = -1
            if pid > 0 and _pid_alive(pid):
                raise JournalError(
                    f"another imprint (pid {pid}) is writing {path}; wait for it or stop it"
                )
            self.stale_pid = pid
        self.path.write_text(f"{os.getpid()} {utc_now()}\n")

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _open_for_write(path: Path, *, swmr: bool) -> tuple[h5py.File, _Lock]:
    """The file opened for writing under our lock (SWMR: readers may follow it live)."""
    lock = _Lock(path)
    try:
        flags = write_flags(path)
        if flags:
            if lock.stale_pid is None:
                raise JournalError(
                    f"{path} is marked open for writing by another program (a recording or an "
                    "extraction still running, or one that crashed); close it first"
                )
            log.warning("%s: clearing the write mark left by imprint pid %s", path, lock.stale_pid)
            clear_write_flags(path)
        if not swmr:
            return h5py.File(path, "r+", locking=False), lock
        file = h5py.File(path, "r+", libver="latest", locking=False)
        try:
            file.swmr_mode = True
        except BaseException:
            file.close()
            raise
        return file, lock
    except BaseException:
        lock.release()
        raise


def open_read(path: Path | str) -> h5py.File:
    """The session file for reading: live (SWMR) while an imprint writes it; a write mark
    left by a dead imprint is cleared first."""
    path = Path(path)
    if not write_flags(path):
        return h5py.File(path, "r", locking=False)
    try:
        return h5py.File(path, "r", locking=False, swmr=True)
    except OSError:
        lock = _Lock(path)  # raises if a live imprint holds it
        try:
            if lock.stale_pid is None:
                raise JournalError(
                    f"{path} is marked open for writing by another program; close it first"
                ) from None
            clear_write_flags(path)
        finally:
            lock.release()
        return h5py.File(path, "r", locking=False)


@dataclass
class JournalSetup:
    """Everything a new journal is created with."""

    cells: np.ndarray
    """(M,) CELL_DTYPE rows, tile by tile (each tile's rows contiguous)."""
    tiles: np.ndarray
    """(T,) TILE_DTYPE rows."""
    order: np.ndarray
    """(N,) unit ids in crossbar order."""
    characterization: Mapping[str, np.ndarray]
    """``read_s``, ``final_s`` (T, R, C) float and ``status`` (T, R, C) uint8."""
    placement: np.ndarray
    """(T,) structured placement reports."""
    attrs: Mapping[str, Any]
    """Technology, layout, tolerance, window, configuration, map digest…"""


class Journal:
    """The open ``/imprint`` group of one session file (one writer; thread-safe)."""

    def __init__(self, path: Path, file: h5py.File, lock: _Lock) -> None:
        self.path = path
        self._file = file
        self._lock_file = lock
        self._lock = threading.Lock()
        group = file[GROUP]
        self.group = group
        self.attrs = {k: _attr(v) for k, v in group.attrs.items()}
        self._cells = group["cells"]
        self._tiles = group["tiles"]
        self.cells: np.ndarray = self._cells[()]
        self.tiles: np.ndarray = self._tiles[()]
        self.resumed_in_flight = 0
        self.resumed_bad_crc = 0

    # --- creating and opening ---------------------------------------------------------------
    @classmethod
    def exists(cls, path: Path | str) -> bool:
        """Whether the session file holds a complete imprint journal."""
        with open_read(path) as f:
            return GROUP in f and "setup_complete" in f[GROUP]

    @classmethod
    def create(cls, path: Path | str, setup: JournalSetup, *, replace: bool = False) -> Journal:
        """Write a new ``/imprint`` (all datasets at their final size) and open it."""
        path = Path(path)
        file, lock = _open_for_write(path, swmr=False)
        try:
            if GROUP in file:
                if not replace and "setup_complete" in file[GROUP]:
                    raise JournalError(
                        f"{path} already holds an imprint; resume it (--resume) or start over "
                        "(--restart)"
                    )
                del file[GROUP]  # an unfinished setup (or --restart)
            g = file.create_group(GROUP)
            for key, value in setup.attrs.items():
                g.attrs[key] = value if isinstance(value, str | int | float) else json.dumps(value)
            g.attrs["format"] = FORMAT
            g.attrs["format_version"] = FORMAT_VERSION
            g.attrs["created_utc"] = utc_now()
            cells = setup.cells.copy()
            cells["crc"] = row_crc(cells)
            _dataset(g, "cells", cells)
            _dataset(g, "tiles", setup.tiles)
            _dataset(g, "order", np.asarray(setup.order, dtype=np.int64))
            for name, array in setup.characterization.items():
                _dataset(g, f"characterization_{name}", np.asarray(array))
            _dataset(g, "placement", setup.placement)
            shape = setup.characterization["read_s"].shape
            _dataset(g, "final_read_s", np.full(shape, np.nan))
            _dataset(g, "report_json", np.zeros(REPORT_BYTES, dtype=np.uint8))
            file.flush()
            _dataset(g, "setup_complete", np.ones(1, dtype=np.uint8))
            file.flush()
        finally:
            file.close()
            lock.release()
        return cls.open(path)

    @classmethod
    def open(cls, path: Path | str) -> Journal:
        """Open an existing journal to resume it (after a crash or an interruption)."""
        path = Path(path)
        file, lock = _open_for_write(path, swmr=True)
        try:
            if GROUP not in file or "setup_complete" not in file[GROUP]:
                raise JournalError(f"{path} holds no complete imprint to resume; start one")
            version = int(file[GROUP].attrs.get("format_version", 0))
            if version != FORMAT_VERSION:
                raise JournalError(f"{path}: imprint journal version {version} is not known")
            journal = cls(path, file, lock)
        except BaseException:
            file.close()
            lock.release()
            raise
        journal._recover()
        return journal

    def _recover(self) -> None:
        """Rows in flight or torn when the last run died: count the pulse, read them again."""
        rows = self.cells
        bad = rows["crc"] != row_crc(rows)
        unsure = bad | (rows["in_flight"] != 0)
        self.resumed_bad_crc = int(bad.sum())
        self.resumed_in_flight = int(unsure.sum())
        if not unsure.any():
            return
        rows["attempts"][unsure & (rows["in_flight"] != 0)] += 1
        rows["in_flight"][unsure] = 0
        rows["state"][bad] = PENDING
        rows["last_read_s"][unsure] = np.nan
        for tile in np.unique(rows["tile"][unsure]):
            self.commit(int(tile))

    # --- writing as it goes -------------------------------------------------------------------
    def tile_slice(self, tile: int) -> slice:
        t = self.tiles[tile]
        return slice(int(t["first_row"]), int(t["first_row"] + t["n_rows"]))

    def tile_rows(self, tile: int) -> np.ndarray:
        """The tile's rows (a view: edit, then :meth:`begin` / :meth:`commit`)."""
        return self.cells[self.tile_slice(tile)]

    def begin(self, tile: int, index: np.ndarray) -> None:
        """Mark rows ``index`` (of the tile) in flight, on disk, before their train is sent."""
        rows = self.tile_rows(tile)
        rows["in_flight"][index] = 1
        self.commit(tile, index)

    def commit(self, tile: int, index: np.ndarray | None = None, **counters: float) -> None:
        """Write the tile's rows ``index`` (all when None) with fresh checksums, and the
        tile's counters; flush. Rows not in ``index`` must be unchanged since their last
        commit (their bytes and checksums are rewritten as they are)."""
        sl = self.tile_slice(tile)
        rows = self.cells[sl]
        if index is None or not len(index):
            lo, hi = 0, rows.size
        else:
            lo, hi = int(np.min(index)), int(np.max(index)) + 1
        part = rows[lo:hi]
        changed = slice(None) if index is None else np.asarray(index) - lo
        part["crc"][changed] = row_crc(part[changed])
        for name, value in counters.items():
            self.tiles[tile][name] = value
        with self._lock:
            self._cells[sl.start + lo : sl.start + hi] = part
            self._tiles[tile] = self.tiles[tile]
            self._file.flush()

    def set_tile(self, tile: int, **fields: Any) -> None:
        """Update a tile's progress fields and flush."""
        for name, value in fields.items():
            self.tiles[tile][name] = value
        with self._lock:
            self._tiles[tile] = self.tiles[tile]
            self._file.flush()

    def read_dataset(self, name: str) -> np.ndarray:
        with self._lock:
            return self.group[name][()]

    def write_final(self, tile: int, g: np.ndarray) -> None:
        """The final whole-array read of ``tile`` (written in place)."""
        with self._lock:
            self.group["final_read_s"][tile] = g
            self._file.flush()

    def write_report(self, report: Mapping[str, Any]) -> None:
        """The run's report as JSON text (in the preallocated ``report_json`` bytes)."""
        raw = json.dumps(report, default=json_default).encode()
        if len(raw) >= REPORT_BYTES:
            raw = json.dumps({"truncated": True, "summary": report.get("summary")}).encode()
        buf = np.zeros(REPORT_BYTES, dtype=np.uint8)
        buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        with self._lock:
            self.group["report_json"][:] = buf
            self._file.flush()

    def close(self) -> None:
        """Close the file and release the lock (safe to call twice)."""
        with self._lock:
            if self._file.id.valid:
                self._file.close()
        self._lock_file.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_report(path: Path | str) -> dict[str, Any] | None:
    """The stored report of a session's imprint (None before the run finished)."""
    with open_read(path) as f:
        if GROUP not in f or "report_json" not in f[GROUP]:
            return None
        raw = f[GROUP]["report_json"][()].tobytes().rstrip(b"\0")
    return json.loads(raw) if raw else None


def _dataset(group: h5py.Group, name: str, data: np.ndarray) -> None:
    """A contiguous dataset written whole at creation (its storage allocated now)."""
    group.create_dataset(name, data=data, track_times=False)


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
