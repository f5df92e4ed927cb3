"""The calibration store: a folder of records, filed by kind and instrument identity.

Layout (one HDF5 file per record, written atomically)::

    <store>/<kind>/<model>_<serial>/<record id>.h5

:meth:`CalibrationStore.select` picks the record for the instruments at hand — the one
closest in time to when it is needed (a recording's start, or now) — and checks it
(:func:`~calibration.records.check_record`): ``ok``, ``stale``, ``mismatch`` (a file
filed under this instrument that belongs to another), or ``none``. What to do with a
record that is not ``ok`` is the caller's policy (refuse or warn), never silence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from calibration.records import (
    KINDS,
    CalibrationError,
    CalibrationRecord,
    InstrumentIdentity,
    RecordCheck,
    RecordFormatError,
    check_record,
    utc_now,
)

log = logging.getLogger(__name__)

SUFFIX = ".h5"


def save_record(record: CalibrationRecord, path: Path | str) -> Path:
    """Write ``record`` to its own HDF5 file at ``path`` (via a temporary file, so a crash
    never leaves half a record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            record.write_hdf5(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def load_record(path: Path | str) -> CalibrationRecord:
    """Read a record file written by :func:`save_record`."""
    path = Path(path)
    try:
        with h5py.File(path, "r", locking=False) as f:
            return CalibrationRecord.read_hdf5(f)
    except OSError as exc:
        raise RecordFormatError(f"cannot read calibration record {path}: {exc}") from None


@dataclass(frozen=True)
class Selection:
    """The record chosen for some instruments, and what its check said."""

    kind: str
    record: CalibrationRecord | None
    check: RecordCheck | None
    path: Path | None = None
    note: str = ""
    """Why nothing was found, or what else is in the store."""

    @property
    def status(self) -> str:
        """``ok``, ``stale``, ``mismatch`` or ``none``."""
        return "none" if self.check is None else self.check.status

    def message(self) -> str:
        if self.check is None:
            return f"no {self.kind} calibration record" + (f" ({self.note})" if self.note else "")
        return self.check.message()


class CalibrationStore:
    """Calibration records in a folder, filed by kind and instrument."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def folder_for(self, kind: str, identity: InstrumentIdentity) -> Path:
        if kind not in KINDS:
            raise CalibrationError(f"unknown calibration kind {kind!r}; known: {list(KINDS)}")
        return self.folder / kind / identity.key

    def path_for(self, record: CalibrationRecord) -> Path:
        return self.folder_for(record.kind, record.identity) / f"{record.record_id}{SUFFIX}"

    def save(self, record: CalibrationRecord) -> Path:
        """File ``record`` under its kind and primary instrument; returns the path."""
        path = self.path_for(record)
        if path.exists():
            raise CalibrationError(f"{path} exists; a record is never overwritten")
        return save_record(record, path)

    def paths(self, kind: str, identity: InstrumentIdentity) -> list[Path]:
        """Record files filed under ``identity`` (any order)."""
        folder = self.folder_for(kind, identity)
        return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []

    def records(
        self, kind: str, identity: InstrumentIdentity
    ) -> list[tuple[Path, CalibrationRecord]]:
        """Readable records filed under ``identity``, newest first (unreadable files are
        logged and skipped)."""
        out = []
        for path in self.paths(kind, identity):
            try:
                out.append((path, load_record(path)))
            except CalibrationError as exc:
                log.warning("calibration store: skipping %s: %s", path, exc)
        out.sort(key=lambda item: item[1].created, reverse=True)
        return out

    def others(self, kind: str, identity: InstrumentIdentity) -> list[str]:
        """Instruments of the same model with records here (for a helpful message)."""
        base = self.folder / kind
        if not base.is_dir():
            return []
        prefix = InstrumentIdentity(identity.manufacturer, identity.model, "").key
        return sorted(
            p.name
            for p in base.iterdir()
            if p.is_dir() and p.name.startswith(prefix.rstrip("_")) and p.name != identity.key
        )

    def select(
        self,
        kind: str,
        identities: Mapping[str, Any],
        *,
        primary: str,
        when: dt.datetime | None = None,
    ) -> Selection:
        """The record for the instruments in ``identities`` (role → identity) needed at
        ``when`` (now by default): the one filed under ``identities[primary]`` taken closest
        to ``when``, checked against every instrument it names."""
        when = when or utc_now()
        identity = InstrumentIdentity.from_idn(identities[primary])
        found = self.records(kind, identity)
        if not found:
            others = self.others(kind, identity)
            note = f"in {self.folder}" + (
                f"; records exist for other serials: {', '.join(others)}" if others else ""
            )
            return Selection(kind, None, None, None, note)
        path, record = min(found, key=lambda item: abs((item[1].created - when).total_seconds()))
        check = check_record(record, identities, when)
        return Selection(kind, record, check, path)
