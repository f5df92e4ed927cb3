"""Calibration records: what a procedure measured, on which instrument, when, and how well.

A :class:`CalibrationRecord` holds the instrument identities (``*IDN?``) it belongs to,
the date, the operator, the temperature when known, the values and their standard
uncertainties (k = 1, same keys and shapes, SI units), and how long it stays valid.
It serialises to JSON (:meth:`~CalibrationRecord.to_json`) and into an HDF5 group
(:meth:`~CalibrationRecord.write_hdf5`); both round-trip exactly.

:func:`check_record` says whether a record may be applied to the instruments at hand
at a given time: a record from another serial number (or model, or maker) is a
**mismatch**, one past its validity is **stale**; a different firmware only warns.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "brainpaste-calibration"
FORMAT_VERSION = 1
KINDS = ("cnea", "smu", "crossbar")
"""What a record calibrates: the CNEA board, an SMU (with its selector's references),
a crossbar on its rig (selector board and array, read through a calibrated SMU)."""


class CalibrationError(Exception):
    """A calibration could not be taken, stored, found or applied as asked."""


class RecordFormatError(CalibrationError):
    """A file or group that is not a calibration record this software can read."""


class RecordRefused(CalibrationError):
    """A record may not be applied (stale or from another instrument) and the policy says
    refuse. Recalibrate (``brainpaste calibrate …``) or set ``[calibration] policy = "warn"``."""


@dataclass(frozen=True)
class InstrumentIdentity:
    """Who an instrument says it is (``*IDN?``)."""

    manufacturer: str
    model: str
    serial: str
    firmware: str = ""

    @classmethod
    def from_idn(cls, identity: Any) -> InstrumentIdentity:
        """From a :class:`drivers.scpi.Identity`, an ``*IDN?`` reply or a mapping."""
        if isinstance(identity, InstrumentIdentity):
            return identity
        if isinstance(identity, Mapping):
            return cls(**{k: str(identity.get(k, "")) for k in cls.__dataclass_fields__})
        if isinstance(identity, str):
            parts = [p.strip() for p in identity.split(",")]
            if len(parts) != 4:
                raise RecordFormatError(f"not an *IDN? reply (four fields): {identity!r}")
            return cls(*parts)
        return cls(
            str(identity.manufacturer),
            str(identity.model),
            str(identity.serial),
            str(getattr(identity, "firmware", "")),
        )

    def same_instrument(self, other: InstrumentIdentity) -> bool:
        """Same maker, model and serial number (firmware may differ)."""
        return (self.manufacturer, self.model, self.serial) == (
            other.manufacturer,
            other.model,
            other.serial,
        )

    @property
    def key(self) -> str:
        """A file-system-safe name for this instrument: ``<model>_<serial>``."""
        return _safe(f"{self.model}_{self.serial}")

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.model} s/n {self.serial} fw {self.firmware}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "unknown"


def utc_now() -> dt.datetime:
    """Now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def format_utc(when: dt.datetime) -> str:
    """ISO 8601 UTC with milliseconds, ``Z`` suffix."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> dt.datetime:
    """An ISO 8601 time (``Z`` or an offset; naive times are taken as UTC)."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RecordFormatError(f"not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


Value = np.ndarray | float


@dataclass
class CalibrationRecord:
    """One calibration of one instrument (or a pair: an SMU and its selector's references).

    ``values`` and ``uncertainties`` share keys and shapes; ``units`` names each key's SI
    unit (``"1"`` for a ratio). ``identities`` maps a role (``board``, ``smu``,
    ``selector``) to the instrument that played it; ``primary`` is the role the store
    files the record under.
    """

    kind: str
    identities: dict[str, InstrumentIdentity]
    primary: str
    created_utc: str
    valid_days: float
    values: dict[str, Value]
    uncertainties: dict[str, Value] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    operator: str = ""
    temperature_c: float | None = None
    """Temperature of the instrument (or its reference) during the calibration, °C."""
    info: dict[str, Any] = field(default_factory=dict)
    """Procedure settings, summary figures and notes (JSON-serialisable)."""
    software_version: str = ""
    record_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RecordFormatError(f"record kind {self.kind!r}; known: {list(KINDS)}")
        if self.primary not in self.identities:
            raise RecordFormatError(f"primary role {self.primary!r} not in {list(self.identities)}")
        if not self.valid_days > 0:
            raise RecordFormatError(f"valid_days must be > 0, got {self.valid_days}")
        parse_utc(self.created_utc)
        unknown = sorted(set(self.uncertainties) - set(self.values))
        if unknown:
            raise RecordFormatError(f"uncertainties for values that are not there: {unknown}")
        for key, u in self.uncertainties.items():
            if np.shape(u) != np.shape(self.values[key]):
                raise RecordFormatError(
                    f"uncertainty of {key!r} has shape {np.shape(u)}, the value "
                    f"{np.shape(self.values[key])}"
                )
        if not self.record_id:
            stamp = parse_utc(self.created_utc).strftime("%Y%m%dT%H%M%S%fZ")[:-4] + "Z"
            self.record_id = f"{self.kind}-{self.identity.key}-{stamp}"

    # --- what it is -------------------------------------------------------------------------
    @property
    def identity(self) -> InstrumentIdentity:
        """The primary instrument."""
        return self.identities[self.primary]

    @property
    def created(self) -> dt.datetime:
        return parse_utc(self.created_utc)

    @property
    def valid_until(self) -> dt.datetime:
        return self.created + dt.timedelta(days=self.valid_days)

    def value(self, key: str) -> Value:
        """A value, or :class:`CalibrationError` naming the keys there are."""
        try:
            return self.values[key]
        except KeyError:
            raise CalibrationError(
                f"record {self.record_id} has no {key!r} (has {sorted(self.values)})"
            ) from None

    def uncertainty(self, key: str) -> Value:
        """The standard uncertainty of a value (NaN when the procedure gave none)."""
        if key in self.uncertainties:
            return self.uncertainties[key]
        return np.full(np.shape(self.value(key)), np.nan) if np.ndim(self.value(key)) else math.nan

    def summary(self) -> dict[str, Any]:
        """Small, JSON-friendly description (what a session file says was used)."""
        return {
            "record_id": self.record_id,
            "kind": self.kind,
            "identities": {role: str(i) for role, i in self.identities.items()},
            "created_utc": self.created_utc,
            "valid_until_utc": format_utc(self.valid_until),
            "operator": self.operator,
            "temperature_c": self.temperature_c,
        }

    # --- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types (arrays as ``{"dtype", "shape", "data"}``)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "record_id": self.record_id,
            "kind": self.kind,
            "primary": self.primary,
            "identities": {role: i.as_dict() for role, i in self.identities.items()},
            "created_utc": self.created_utc,
            "valid_days": self.valid_days,
            "operator": self.operator,
            "temperature_c": self.temperature_c,
            "software_version": self.software_version,
            "units": dict(self.units),
            "info": self.info,
            "values": {k: _encode(v) for k, v in self.values.items()},
            "uncertainties": {k: _encode(v) for k, v in self.uncertainties.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=json_default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationRecord:
        if data.get("format") != FORMAT:
            raise RecordFormatError(f"not a calibration record (format {data.get('format')!r})")
        if int(data.get("format_version", 0)) != FORMAT_VERSION:
            raise RecordFormatError(
                f"calibration record version {data.get('format_version')} is not known"
            )
        try:
            return cls(
                kind=data["kind"],
                identities={
                    role: InstrumentIdentity.from_idn(i) for role, i in data["identities"].items()
                },
                primary=data["primary"],
                created_utc=data["created_utc"],
                valid_days=float(data["valid_days"]),
                values={k: _decode(v) for k, v in data["values"].items()},
                uncertainties={k: _decode(v) for k, v in data.get("uncertainties", {}).items()},
                units=dict(data.get("units", {})),
                operator=str(data.get("operator", "")),
                temperature_c=_opt_float(data.get("temperature_c")),
                info=dict(data.get("info", {})),
                software_version=str(data.get("software_version", "")),
                record_id=str(data.get("record_id", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordFormatError(f"calibration record incomplete or damaged: {exc!r}") from None

    @classmethod
    def from_json(cls, text: str) -> CalibrationRecord:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RecordFormatError(f"not JSON: {exc}") from None

    # --- HDF5 -------------------------------------------------------------------------------
    def write_hdf5(self, group: Any) -> None:
        """Write into an (empty) h5py group: metadata as attributes, arrays as datasets in
        ``values/`` and ``uncertainties/``."""
        meta = self.to_dict()
        for name in ("values", "uncertainties"):
            meta.pop(name)
        group.attrs["format"] = FORMAT
        group.attrs["format_version"] = FORMAT_VERSION
        group.attrs["record_json"] = json.dumps(meta, default=json_default)
        for name, mapping in (("values", self.values), ("uncertainties", self.uncertainties)):
            sub = group.create_group(name)
            for key, value in mapping.items():
                array = np.asarray(value)
                opts = {"compression": "gzip", "shuffle": True} if array.size > 64 else {}
                sub.create_dataset(key, data=array, **opts)

    @classmethod
    def read_hdf5(cls, group: Any) -> CalibrationRecord:
        """Read what :meth:`write_hdf5` wrote."""
        if group.attrs.get("format") != FORMAT or "record_json" not in group.attrs:
            raise RecordFormatError(f"{group.name} in {group.file.filename} is not a record")
        meta = json.loads(_text(group.attrs["record_json"]))
        meta["format_version"] = int(group.attrs.get("format_version", 0))
        for name in ("values", "uncertainties"):
            sub = group.get(name)
            meta[name] = {} if sub is None else {k: _encode(sub[k][()]) for k in sub}
        return cls.from_dict(meta)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _encode(value: Any) -> Any:
    array = np.asarray(value)
    if array.ndim == 0 and array.dtype.kind == "f":
        return _finite_or_text(float(array))
    data = array.tolist()
    if array.dtype.kind == "f":
        data = _nan_to_text(data)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def _finite_or_text(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


def _nan_to_text(data: Any) -> Any:
    if isinstance(data, list):
        return [_nan_to_text(v) for v in data]
    return _finite_or_text(data) if isinstance(data, float) else data


def _decode(value: Any) -> Value:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value)  # "nan", "inf"
    dtype = np.dtype(value["dtype"])
    data = value["data"]
    if dtype.kind == "f":
        return np.asarray(_text_to_float(data), dtype=dtype).reshape(value["shape"])
    return np.asarray(data, dtype=dtype).reshape(value["shape"])


def _text_to_float(data: Any) -> Any:
    if isinstance(data, list):
        return [_text_to_float(v) for v in data]
    return float(data)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars and arrays (anything else as text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --- validity and identity ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordCheck:
    """Whether a record may be applied to the instruments at hand, at a given time."""

    record_id: str
    status: str
    """``ok``, ``stale`` (past its validity) or ``mismatch`` (another instrument)."""
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def message(self) -> str:
        parts = [*self.problems, *self.warnings]
        return f"record {self.record_id}: " + ("; ".join(parts) if parts else "ok")


def check_record(
    record: CalibrationRecord,
    identities: Mapping[str, Any],
    when: dt.datetime | None = None,
) -> RecordCheck:
    """Check ``record`` against the instruments in ``identities`` (role → identity) at time
    ``when`` (now by default). Roles the record does not know are ignored; a role it knows
    that is missing here is not checked."""
    when = when or utc_now()
    problems: list[str] = []
    warnings: list[str] = []
    for role, mine in record.identities.items():
        if role not in identities:
            continue
        theirs = InstrumentIdentity.from_idn(identities[role])
        if not mine.same_instrument(theirs):
            problems.append(f"it belongs to {role} {mine}, not to {theirs}")
        elif mine.firmware != theirs.firmware:
            warnings.append(
                f"{role} firmware is {theirs.firmware!r} now, {mine.firmware!r} when calibrated"
            )
    if problems:
        return RecordCheck(record.record_id, "mismatch", tuple(problems), tuple(warnings))
    if when > record.valid_until:
        age = (when - record.created).total_seconds() / 86400
        problems.append(
            f"taken {record.created_utc}, {age:.1f} days before {format_utc(when)}: older than "
            f"its validity of {record.valid_days:g} days"
        )
        return RecordCheck(record.record_id, "stale", tuple(problems), tuple(warnings))
    if when < record.created - dt.timedelta(days=record.valid_days):
        problems.append(
            f"taken {record.created_utc}, more than {record.valid_days:g} days after "
            f"{format_utc(when)}"
        )
        return RecordCheck(record.record_id, "stale", tuple(problems), tuple(warnings))
    return RecordCheck(record.record_id, "ok", (), tuple(warnings))
