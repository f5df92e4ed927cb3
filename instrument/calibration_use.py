"""Where acquisition, extraction and imprint find calibration records and apply them.

The ``[calibration]`` table of the lab configuration says where the store is, how long
each kind of record stays valid and what to do with a record that is stale or belongs to
another instrument: ``policy = "refuse"`` stops the operation (:class:`RecordRefused`,
saying what to do), ``"warn"`` applies it with a warning in the log and in the session
file. A record is never applied silently, and an instrument with no record is used with
its nominal values, said in the log and the file (``required = true`` stops instead).

What was used goes into the session file as ``/calibration/<instrument>`` (docs/
calibration.md): the status, the record's id and identity, who applied it, any problem,
and the whole record (so the file alone can be re-analysed).

* acquisition: :class:`CneaCalibration` (``Acquisition(calibration=...)``) — the
  recording's per-channel gain and offset are the record's, its bad channels are marked;
* extraction: :func:`prepare_session` — a recording made without a record gets the one
  valid at its start time, written into the session file (or applied in memory);
* imprint (every rig opened with :func:`instrument.rig.open_rig`): :func:`install_rig` —
  the rig's reads go through the SMU and crossbar records (:class:`calibration.crossbar.
  RigCorrection`); :func:`write_rigs` puts what was used into the session file and
  :func:`known_cell_status` hands characterization the stuck cells the record found.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from calibration.cnea import channel_calibration
from calibration.crossbar import RigCorrection
from calibration.records import (
    CalibrationError,
    CalibrationRecord,
    InstrumentIdentity,
    RecordRefused,
    format_utc,
    parse_utc,
    utc_now,
)
from calibration.store import CalibrationStore
from instrument.config import ConfigError, LabConfig, parse_section

log = logging.getLogger(__name__)

GROUP = "calibration"
"""The session file's group of calibration entries, one per instrument."""


@dataclass(frozen=True)
class CalibrationSettings:
    """The ``[calibration]`` table."""

    store: str = "calibration_store"
    """Folder of calibration records (relative to the working directory)."""
    policy: Literal["refuse", "warn"] = "refuse"
    """A stale record, or one from another instrument: "refuse" (stop) or "warn" (apply)."""
    apply: bool = True
    """False: acquisition, extraction and imprint use nominal values (said in the file)."""
    required: bool = False
    """True: an instrument with no record stops the operation."""
    cnea_valid_days: float = 30.0
    smu_valid_days: float = 365.0
    crossbar_valid_days: float = 7.0
    crossbar_wire_correction: bool = True
    """Rig reads report each cell's own conductance (the array's contacts and lines taken
    out); false keeps the wires in (what an analog MVM through the same lines sees)."""

    def valid_days(self, kind: str) -> float:
        return float(getattr(self, f"{kind}_valid_days"))

    def open_store(self) -> CalibrationStore:
        return CalibrationStore(self.store)


def calibration_settings(config: LabConfig) -> CalibrationSettings:
    """The lab's ``[calibration]`` table, checked (a bad key names the file and line)."""
    settings = parse_section(CalibrationSettings, config, "calibration")
    for kind in ("cnea", "smu", "crossbar"):
        if not settings.valid_days(kind) > 0:
            raise ConfigError(
                "must be > 0 days", key=f"calibration.{kind}_valid_days", path=config.source or None
            )
    if not settings.store:
        raise ConfigError("must name a folder", key="calibration.store", path=config.source or None)
    return settings


# --- one instrument's choice ------------------------------------------------------------------


@dataclass
class Applied:
    """What was (or was not) applied to one instrument, and why."""

    entry: str
    """Instrument name in the configuration (``cnea``, ``smu``, ``selector``…)."""
    kind: str
    status: str
    """``applied``, ``applied-stale`` / ``applied-mismatch`` (policy warn), ``none`` (no
    record), ``disabled`` (``apply = false``)."""
    message: str
    applied_by: str
    identities: dict[str, str] = field(default_factory=dict)
    record: CalibrationRecord | None = None
    record_path: str = ""
    policy: str = "refuse"

    @property
    def applied(self) -> bool:
        return self.status.startswith("applied")

    def attrs(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "applied": self.applied,
            "message": self.message,
            "applied_by": self.applied_by,
            "applied_utc": format_utc(utc_now()),
            "policy": self.policy,
            "record_id": self.record.record_id if self.record else "",
            "record_path": self.record_path,
            "identities_json": json.dumps(self.identities),
            "record_summary_json": json.dumps(self.record.summary() if self.record else {}),
        }

    def write(self, file: h5py.File, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """``/calibration/<entry>`` in an open (writable, not SWMR) session file."""
        group = file.require_group(GROUP)
        if self.entry in group:
            del group[self.entry]
        g = group.create_group(self.entry)
        for key, value in self.attrs().items():
            g.attrs[key] = value
        for name, array in (arrays or {}).items():
            g.create_dataset(name, data=np.asarray(array))
        if self.record is not None:
            self.record.write_hdf5(g.create_group("record"))


def choose(
    settings: CalibrationSettings,
    kind: str,
    identities: Mapping[str, Any],
    *,
    primary: str,
    entry: str,
    applied_by: str,
    when: dt.datetime | None = None,
) -> Applied:
    """The record to apply to an instrument (``identities``: role → identity), per policy.

    Raises :class:`RecordRefused` when the policy refuses (or a record is required and
    there is none)."""
    ids = {role: InstrumentIdentity.from_idn(i) for role, i in identities.items()}
    shown = {role: str(i) for role, i in ids.items()}
    who = f"{entry} ({ids[primary]})"
    if not settings.apply:
        message = f"{kind} calibration not applied to {who}: [calibration] apply = false"
        log.warning(message)
        return Applied(entry, kind, "disabled", message, applied_by, shown, policy=settings.policy)
    selection = settings.open_store().select(kind, ids, primary=primary, when=when)
    if selection.record is None:
        message = f"{selection.message()}: {who} uses its nominal values"
        if settings.required:
            raise RecordRefused(
                f"{message}; [calibration] required = true. Run `brainpaste calibrate {kind}`"
            )
        log.warning(message)
        return Applied(entry, kind, "none", message, applied_by, shown, policy=settings.policy)
    check = selection.check
    assert check is not None
    for warning in check.warnings:
        log.warning("%s calibration of %s: %s", kind, who, warning)
    if check.ok:
        message = f"{kind} calibration {check.message()} applied to {who}"
        status = "applied"
    elif settings.policy == "refuse":
        raise RecordRefused(
            f"{kind} calibration of {who} refused: {check.message()}. Recalibrate "
            f'(`brainpaste calibrate {kind}`), or set [calibration] policy = "warn" to use it'
        )
    else:
        message = f"{kind} calibration applied to {who} DESPITE: {check.message()}"
        status = f"applied-{check.status}"
        log.warning(message)
    log.info(message)
    return Applied(
        entry,
        kind,
        status,
        message,
        applied_by,
        shown,
        selection.record,
        str(selection.path or ""),
        settings.policy,
    )


# --- acquisition ------------------------------------------------------------------------------


@dataclass
class RecordingCalibration:
    """What a recording is created with: per-channel values and the ``/calibration`` entry."""

    gain: np.ndarray
    offset: np.ndarray
    bad_channels: np.ndarray | None
    applied: Applied
    nominal_gain: np.ndarray
    nominal_offset: np.ndarray
    calibrated: np.ndarray

    def write(self, file: h5py.File) -> None:
        """Write ``/calibration/<board>`` (called before the file goes SWMR)."""
        self.applied.write(
            file,
            {
                "nominal_gain_v": self.nominal_gain,
                "nominal_offset_v": self.nominal_offset,
                "calibrated_channels": self.calibrated,
            },
        )


class CneaCalibration:
    """Acquisition's hook: the board's record, applied to the recording it starts."""

    def __init__(self, settings: CalibrationSettings, entry: str = "cnea") -> None:
        self.settings = settings
        self.entry = entry

    def for_recording(
        self,
        board: Any,
        modes: np.ndarray,
        gain_setting: int,
        nominal_gain: np.ndarray,
        nominal_offset: np.ndarray,
        *,
        applied_by: str = "acquisition",
        when: dt.datetime | None = None,
        identity: Any = None,
    ) -> RecordingCalibration:
        """Gain, offset and bad channels for a recording with ``modes`` at ``gain_setting``
        (the record's where it has them, nominal elsewhere)."""
        identity = identity if identity is not None else board.identify()
        applied = choose(
            self.settings,
            "cnea",
            {"board": identity},
            primary="board",
            entry=self.entry,
            applied_by=applied_by,
            when=when,
        )
        nominal_gain = np.asarray(nominal_gain, dtype=float)
        nominal_offset = np.asarray(nominal_offset, dtype=float)
        if applied.record is None:
            return RecordingCalibration(
                nominal_gain,
                nominal_offset,
                None,
                applied,
                nominal_gain,
                nominal_offset,
                np.zeros(nominal_gain.shape, dtype=bool),
            )
        try:
            per_channel = channel_calibration(
                applied.record, modes, gain_setting, nominal_gain, nominal_offset
            )
        except CalibrationError as exc:
            raise RecordRefused(f"{applied.message}, but it cannot be applied: {exc}") from exc
        missing = int((~per_channel.calibrated & ~per_channel.bad_channels).sum())
        if missing:
            applied.message += (
                f"; {missing} channels keep nominal values (their mode or gain "
                f"{gain_setting} was not calibrated)"
            )
            log.warning(applied.message)
        return RecordingCalibration(
            per_channel.gain,
            per_channel.offset,
            per_channel.bad_channels,
            applied,
            nominal_gain,
            nominal_offset,
            per_channel.calibrated,
        )


# --- extraction -------------------------------------------------------------------------------


_IDENTITY = re.compile(r"^(?P<rest>.+?) s/n (?P<serial>\S+) fw (?P<firmware>.*)$")


def parse_identity_text(text: str) -> InstrumentIdentity:
    """``brainpaste CNEA-4096 s/n EMU00001 fw 1.0`` (how a recording names its board)."""
    match = _IDENTITY.match(text.strip())
    if not match:
        raise CalibrationError(f"cannot tell the instrument from {text!r}")
    maker, _, model = match.group("rest").rpartition(" ")
    return InstrumentIdentity(maker, model, match.group("serial"), match.group("firmware"))


@dataclass
class SessionCalibration:
    """What extraction uses for a recording, and how to apply it to an open Recording."""

    applied: Applied
    gain: np.ndarray | None = None
    offset: np.ndarray | None = None
    bad_channels: np.ndarray | None = None
    written: bool = False
    """The session file now carries it (every reader, Dask workers too, sees it)."""

    def apply(self, recording: Any) -> None:
        """Put the calibrated values into an open recording (when not in the file already)."""
        if self.gain is None or self.written:
            return
        recording.gain_v = self.gain
        recording.offset_v = self.offset
        if self.bad_channels is not None:
            recording.bad_channels = self.bad_channels


def prepare_session(
    path: Path | str, settings: CalibrationSettings, *, write: bool = True, entry: str = "cnea"
) -> SessionCalibration:
    """The CNEA calibration of a session file for extraction.

    A file whose ``/calibration/<entry>`` says a record was applied is used as it is. Else
    the store's record for the file's board, valid at the recording's start, is applied:
    into the file (``write``: ``/recording`` gain, offset and bad channels, and the
    ``/calibration`` entry with the nominal values kept) or returned for :meth:`apply`.
    """
    path = Path(path)
    with h5py.File(path, "r", locking=False, swmr=True) as f:
        rec = f["recording"]
        existing = f.get(f"{GROUP}/{entry}")
        if existing is not None and bool(existing.attrs.get("applied", False)):
            applied = Applied(
                entry,
                "cnea",
                str(existing.attrs.get("status", "applied")),
                f"{existing.attrs.get('message', '')} (at {existing.attrs.get('applied_by', '')})",
                str(existing.attrs.get("applied_by", "")),
                json.loads(existing.attrs.get("identities_json", "{}")),
                policy=str(existing.attrs.get("policy", "")),
            )
            return SessionCalibration(applied, written=True)
        identity_text = str(rec.attrs.get("instrument_identity", ""))
        start = parse_utc(str(rec.attrs.get("start_time_utc", format_utc(utc_now()))))
        board_settings = json.loads(rec.attrs.get("board_settings", "{}") or "{}")
        gain_setting = int(board_settings.get("gain", 1))
        nominal_gain = rec["channel_gain_v"][()]
        nominal_offset = rec["channel_offset_v"][()]
        modes = (
            rec["channel_mode"][()]
            if "channel_mode" in rec
            else np.zeros(nominal_gain.shape, dtype=np.uint8)
        )
    try:
        identity = parse_identity_text(identity_text)
    except CalibrationError as exc:
        applied = Applied(entry, "cnea", "none", f"{exc}: nominal values used", "extraction")
        log.warning(applied.message)
        return SessionCalibration(applied)
    used = CneaCalibration(settings, entry).for_recording(
        None,
        modes,
        gain_setting,
        nominal_gain,
        nominal_offset,
        applied_by="extraction",
        when=start,
        identity=identity,
    )
    result = SessionCalibration(used.applied, used.gain, used.offset, used.bad_channels)
    if not used.applied.applied or not write:
        return result
    with h5py.File(path, "r+", locking=False) as f:
        rec = f["recording"]
        rec["channel_gain_v"][...] = used.gain
        rec["channel_offset_v"][...] = used.offset
        if used.bad_channels is not None:
            if "bad_channels" in rec:
                del rec["bad_channels"]
            rec.create_dataset("bad_channels", data=used.bad_channels)
        used.write(f)
    result.written = True
    return result


# --- the rigs (imprint) -----------------------------------------------------------------------

_RIGS: weakref.WeakKeyDictionary[Any, list[Applied]] = weakref.WeakKeyDictionary()
_RIGS_LOCK = threading.Lock()


def install_rig(
    rig: Any,
    settings: CalibrationSettings,
    *,
    smu_name: str = "smu",
    selector_name: str = "selector",
    architecture: str = "1t1r",
    technology: str = "",
) -> list[Applied]:
    """Look up the rig's SMU and crossbar records and make its reads go through them."""
    smu_id = rig.smu.identify()
    selector_id = rig.selector.identify()
    smu = choose(
        settings, "smu", {"smu": smu_id}, primary="smu", entry=smu_name, applied_by="imprint"
    )
    crossbar = choose(
        settings,
        "crossbar",
        {"selector": selector_id},
        primary="selector",
        entry=selector_name,
        applied_by="imprint",
    )
    if crossbar.record is not None:
        shape = np.shape(crossbar.record.value("line_row_ohm")) + np.shape(
            crossbar.record.value("line_col_ohm")
        )
        if shape != (rig.rows, rig.cols):
            raise RecordRefused(
                f"crossbar record {crossbar.record.record_id} is of a {shape[0]}x{shape[1]} "
                f"array; the rig has {rig.rows}x{rig.cols}. Recalibrate the crossbar"
            )
    if crossbar.record is not None:
        measured = crossbar.record.info.get("settings", {})
        for key, now in (("architecture", architecture), ("technology", technology)):
            then = measured.get(key, "")
            if then and now and then != now:
                problem = f"the record was taken on a {then} array, this one is {now}"
                if settings.policy == "refuse":
                    raise RecordRefused(
                        f"crossbar record {crossbar.record.record_id}: {problem}. Recalibrate "
                        '(`brainpaste calibrate crossbar`) or set policy = "warn"'
                    )
                crossbar.status = "applied-mismatch"
                crossbar.message += f" DESPITE: {problem}"
                log.warning(crossbar.message)
    if smu.record is None and crossbar.record is not None:
        crossbar.status = "none"
        crossbar.message += "; not applied: it needs the SMU's record, and there is none"
        log.warning(crossbar.message)
        crossbar.record = None
    if smu.record is not None:
        rig.read_correction = RigCorrection.from_records(
            smu.record,
            crossbar.record,
            wire=settings.crossbar_wire_correction and architecture == "1t1r",
        )
    with _RIGS_LOCK:
        _RIGS[rig] = [smu, crossbar]
    return [smu, crossbar]


def rig_calibration(rig: Any) -> list[Applied]:
    """What :func:`install_rig` applied to ``rig`` (empty when nothing was looked up)."""
    with _RIGS_LOCK:
        return list(_RIGS.get(rig, []))


def known_cell_status(rig: Any) -> np.ndarray | None:
    """(rows, cols) int8 from the rig's crossbar record: +1 stuck high, -1 stuck low, 0 ok;
    None when no record with a cell characterization was applied."""
    for applied in rig_calibration(rig):
        if applied.kind == "crossbar" and applied.record is not None:
            status = applied.record.values.get("cell_status")
            if status is not None:
                return np.asarray(status)
    return None


def write_rigs(path: Path | str, rigs: list[Any]) -> None:
    """``/calibration/<instrument>`` of every rig in the session file (not open elsewhere)."""
    entries = [applied for rig in rigs for applied in rig_calibration(rig)]
    if not entries:
        return
    with h5py.File(path, "a", locking=False) as f:
        for applied in entries:
            applied.write(f)


def read_entries(path: Path | str) -> dict[str, dict[str, Any]]:
    """The ``/calibration`` entries of a session file: instrument → attributes."""
    with h5py.File(path, "r", locking=False, swmr=True) as f:
        group = f.get(GROUP)
        if group is None:
            return {}
        return {name: {k: _plain(v) for k, v in group[name].attrs.items()} for name in group}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
