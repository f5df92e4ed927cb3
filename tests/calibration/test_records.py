"""Calibration records: serialisation round trips, validity and identity checks, the store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import h5py
import numpy as np
import pytest

from calibration.records import (
    CalibrationRecord,
    InstrumentIdentity,
    RecordFormatError,
    check_record,
    format_utc,
    parse_utc,
)
from calibration.store import CalibrationStore, load_record, save_record

BOARD = InstrumentIdentity("brainpaste", "CNEA-4096", "EMU00001", "1.0")
OTHER = InstrumentIdentity("brainpaste", "CNEA-4096", "EMU00002", "1.0")
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def make_record(identity=BOARD, created=T0, valid_days=30.0, **extra) -> CalibrationRecord:
    gain = np.linspace(4.9e-6, 5.1e-6, 12).reshape(2, 6)
    gain[1, 3] = np.nan
    return CalibrationRecord(
        kind="cnea",
        identities={"board": identity},
        primary="board",
        created_utc=format_utc(created),
        valid_days=valid_days,
        values={"gain": gain, "bad": np.array([True, False, True]), "k": 1.0002},
        uncertainties={"gain": gain * 1e-5, "k": 3e-6},
        units={"gain": "V/code", "bad": "1", "k": "1"},
        operator="ada",
        temperature_c=36.9,
        info={"levels": [1, 2, 3], "nested": {"a": "b"}},
        **extra,
    )


def assert_same(a: CalibrationRecord, b: CalibrationRecord) -> None:
    assert a.record_id == b.record_id and a.kind == b.kind
    assert a.identities == b.identities and a.primary == b.primary
    assert (a.created_utc, a.valid_days, a.operator, a.temperature_c) == (
        b.created_utc,
        b.valid_days,
        b.operator,
        b.temperature_c,
    )
    assert a.info == b.info and a.units == b.units
    for key in a.values:
        np.testing.assert_array_equal(np.asarray(a.values[key]), np.asarray(b.values[key]))
        assert np.asarray(a.values[key]).dtype == np.asarray(b.values[key]).dtype
    for key in a.uncertainties:
        np.testing.assert_array_equal(a.uncertainties[key], b.uncertainties[key])


def test_json_round_trip_keeps_arrays_nan_dtypes_and_metadata():
    record = make_record()
    text = record.to_json()
    json.loads(text)  # plain JSON (NaN written as text, never a bare NaN token)
    assert "NaN" not in text
    assert_same(record, CalibrationRecord.from_json(text))


def test_hdf5_round_trip(tmp_path):
    record = make_record()
    with h5py.File(tmp_path / "r.h5", "w") as f:
        record.write_hdf5(f.create_group("calibration/cnea/record"))
    with h5py.File(tmp_path / "r.h5", "r") as f:
        back = CalibrationRecord.read_hdf5(f["calibration/cnea/record"])
    assert_same(record, back)
    save_record(record, tmp_path / "one.h5")
    assert_same(record, load_record(tmp_path / "one.h5"))


def test_bad_records_are_refused_with_typed_errors(tmp_path):
    with pytest.raises(RecordFormatError, match="kind"):
        dataclasses.replace(make_record(), kind="dmm")
    with pytest.raises(RecordFormatError, match="shape"):
        CalibrationRecord(
            "smu",
            {"smu": BOARD},
            "smu",
            format_utc(T0),
            1.0,
            values={"x": np.zeros(3)},
            uncertainties={"x": np.zeros(2)},
        )
    with pytest.raises(RecordFormatError):
        CalibrationRecord.from_json('{"format": "something else"}')
    with pytest.raises(RecordFormatError):
        CalibrationRecord.from_json("not json")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(RecordFormatError):
        load_record(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("g")
    with pytest.raises(RecordFormatError):
        load_record(tmp_path / "empty.h5")


def test_check_ok_stale_mismatch_and_firmware_warning():
    record = make_record(valid_days=30)
    assert check_record(record, {"board": BOARD}, T0 + dt.timedelta(days=29)).ok
    stale = check_record(record, {"board": BOARD}, T0 + dt.timedelta(days=31))
    assert stale.status == "stale" and "older than its validity" in stale.message()
    before = check_record(record, {"board": BOARD}, T0 - dt.timedelta(days=31))
    assert before.status == "stale"
    mismatch = check_record(record, {"board": OTHER}, T0)
    assert mismatch.status == "mismatch" and "EMU00002" in mismatch.message()
    newer = InstrumentIdentity("brainpaste", "CNEA-4096", "EMU00001", "2.0")
    warned = check_record(record, {"board": newer}, T0)
    assert warned.ok and "firmware" in warned.warnings[0]
    # an *IDN? reply string works as an identity too
    assert check_record(record, {"board": "brainpaste,CNEA-4096,EMU00001,1.0"}, T0).ok


def test_times_parse_with_offsets():
    assert parse_utc("2026-03-01T13:00:00+01:00") == T0
    assert parse_utc("2026-03-01T12:00:00") == T0
    with pytest.raises(RecordFormatError):
        parse_utc("yesterday")


def test_store_files_by_identity_and_selects_closest_in_time(tmp_path):
    store = CalibrationStore(tmp_path / "store")
    old = make_record(created=T0 - dt.timedelta(days=20))
    new = make_record(created=T0)
    other = make_record(identity=OTHER, created=T0)
    for record in (old, new, other):
        store.save(record)
    with pytest.raises(Exception, match="never overwritten"):
        store.save(new)
    assert store.path_for(new).parent.name == "CNEA-4096_EMU00001"
    chosen = store.select("cnea", {"board": BOARD}, primary="board", when=T0 + dt.timedelta(days=1))
    assert chosen.record is not None and chosen.record.record_id == new.record_id
    assert chosen.status == "ok"
    # a recording made three weeks ago gets the record of its own time
    back = store.select("cnea", {"board": BOARD}, primary="board", when=T0 - dt.timedelta(days=19))
    assert back.record.record_id == old.record_id and back.status == "ok"
    late = store.select("cnea", {"board": BOARD}, primary="board", when=T0 + dt.timedelta(days=45))
    assert late.status == "stale"
    unknown = InstrumentIdentity("brainpaste", "CNEA-4096", "EMU00009", "1.0")
    none = store.select("cnea", {"board": unknown}, primary="board")
    assert none.status == "none" and "EMU00001" in none.message() and "EMU00002" in none.message()


def test_a_file_filed_under_the_wrong_serial_is_a_mismatch(tmp_path):
    store = CalibrationStore(tmp_path)
    record = make_record(identity=OTHER)
    wrong_place = store.folder_for("cnea", BOARD) / "copied.h5"
    save_record(record, wrong_place)
    chosen = store.select("cnea", {"board": BOARD}, primary="board", when=T0)
    assert chosen.status == "mismatch"


def test_unreadable_files_in_the_store_are_skipped(tmp_path, caplog):
    store = CalibrationStore(tmp_path)
    store.save(make_record())
    (store.folder_for("cnea", BOARD) / "broken.h5").write_bytes(b"\x00" * 10)
    chosen = store.select("cnea", {"board": BOARD}, primary="board", when=T0)
    assert chosen.status == "ok"
    assert "skipping" in caplog.text
