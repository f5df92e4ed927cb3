"""Calibration records applied by acquisition and extraction: the session file says which record
was used; stale or mismatched records are refused or warned about, never silently applied; a
recording after calibration is closer to the truth than before."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import h5py
import numpy as np
import pytest

from calibration.cnea import CneaSettings, calibrate_cnea
from calibration.records import (
    CalibrationRecord,
    InstrumentIdentity,
    RecordRefused,
    format_utc,
    utc_now,
)
from calibration.store import CalibrationStore, save_record
from drivers.cnea_board import CneaBoard
from hil_sim.cnea_board import CneaBoardEmulator
from instrument.acquisition import Acquisition, AcquisitionSettings
from instrument.calibration_use import (
    CalibrationSettings,
    CneaCalibration,
    calibration_settings,
    parse_identity_text,
    prepare_session,
    read_entries,
)
from instrument.config import ConfigError, load, loads
from instrument.recording import GAP_FILL, open_hdf5_recording
from tests.cnea_source import SineSource

FAST = AcquisitionSettings(ring_s=10.0, stall_timeout_s=0.3, stall_abort_s=2.0)
QUICK_CAL = CneaSettings(modes=(0,), gains=(1,), levels=9, input_check_s=0.0)


@pytest.fixture
def emulator():
    with CneaBoardEmulator(SineSource(64), rate=10.0, seed=4) as emu:
        yield emu


@pytest.fixture
def board(emulator):
    drv = CneaBoard.open(emulator.resource, timeout_s=3.0, data_port=emulator.data_port)
    yield drv
    drv.close()


def settings_for(tmp_path, **changes) -> CalibrationSettings:
    return CalibrationSettings(store=str(tmp_path / "store"), **changes)


def true_volts(emulator, codes: np.ndarray) -> np.ndarray:
    """What really was at each (current-clamp) input: the emulator's hidden gain and offset
    (to within the ADC's rounding)."""
    fe = emulator.device.front_end
    return codes * (5e-6 * fe.gain_factor[0]) + fe.true_offset[0]


def record_session(board, path, calibration=None, duration_s=0.2):
    Acquisition(board, path, duration_s=duration_s, settings=FAST, calibration=calibration).wait()


def test_the_calibration_table_is_checked(tmp_path):
    settings = calibration_settings(load())
    assert settings.policy == "refuse" and settings.apply and settings.cnea_valid_days == 30
    with pytest.raises(ConfigError, match=r"calibration\.policy"):
        calibration_settings(loads('[calibration]\npolicy = "ignore"\n', base=_defaults()))
    with pytest.raises(ConfigError, match="cnea_valid_days"):
        calibration_settings(loads("[calibration]\ncnea_valid_days = 0\n", base=_defaults()))
    with pytest.raises(ConfigError, match="unknown key"):
        calibration_settings(loads("[calibration]\nstor = 'x'\n", base=_defaults()))


def _defaults() -> str:
    from instrument.config import DEFAULT_LAB_TOML

    return DEFAULT_LAB_TOML.read_text()


def test_recording_after_calibration_is_closer_to_the_truth(board, emulator, tmp_path):
    settings = settings_for(tmp_path)
    record = calibrate_cnea(board, QUICK_CAL)
    CalibrationStore(settings.store).save(record)
    before, after = tmp_path / "before" / "session.h5", tmp_path / "after" / "session.h5"
    record_session(board, before, CneaCalibration(dataclasses.replace(settings, apply=False)))
    record_session(board, after, CneaCalibration(settings))
    errors = {}
    for name, path in (("before", before), ("after", after)):
        with open_hdf5_recording(path) as rec:
            codes = rec.traces[()]
            keep = codes != GAP_FILL
            volts = rec.volts(0, rec.n_samples)
            errors[name] = float(np.sqrt(np.mean((volts - true_volts(emulator, codes))[keep] ** 2)))
    # the hidden offsets are ~300 µV and gains ~2 % off: nominal values are that far off;
    # calibrated ones are within the ADC's rounding
    assert errors["before"] > 100e-6
    assert errors["after"] < 3e-6 < errors["before"] / 30
    entries = read_entries(after)
    assert entries["cnea"]["status"] == "applied" and entries["cnea"]["applied"]
    assert entries["cnea"]["record_id"] == record.record_id
    assert entries["cnea"]["applied_by"] == "acquisition"
    assert read_entries(before)["cnea"]["status"] == "disabled"
    with h5py.File(after, "r") as f:
        embedded = CalibrationRecord.read_hdf5(f["calibration/cnea/record"])
        assert embedded.record_id == record.record_id  # the file alone says everything
        np.testing.assert_array_equal(f["calibration/cnea/nominal_gain_v"][()], np.full(64, 5e-6))
        assert f["recording/bad_channels"].shape == (64,)
        assert any(record.record_id in line.decode() for line in f["log"][()])


def synthetic_record(emulator, created: dt.datetime, *, serial: str | None = None, **kw):
    """A record holding the emulator's true values (for policy tests: no need to measure)."""
    fe = emulator.device.front_end
    ident = InstrumentIdentity.from_idn(",".join(emulator.device.identity))
    if serial:
        ident = dataclasses.replace(ident, serial=serial)
    n = fe.n_channels
    gain = np.full((2, 3, n), np.nan)
    offset = np.full((2, 3, n), np.nan)
    gain[0, 0] = 5e-6 * fe.gain_factor[0]
    offset[0, 0] = fe.true_offset[0]
    return CalibrationRecord(
        "cnea",
        {"board": ident},
        "board",
        format_utc(created),
        kw.pop("valid_days", 30.0),
        {"gain": gain, "offset": offset, "bad_channels": np.zeros(n, dtype=bool)},
        **kw,
    )


def test_no_record_records_nominal_values_and_says_so(board, tmp_path, caplog):
    path = tmp_path / "s" / "session.h5"
    record_session(board, path, CneaCalibration(settings_for(tmp_path)))
    entry = read_entries(path)["cnea"]
    assert entry["status"] == "none" and not entry["applied"]
    assert "no cnea calibration record" in entry["message"]
    assert "nominal values" in caplog.text
    with open_hdf5_recording(path) as rec:
        assert np.allclose(rec.gain_v, 5e-6)
    with pytest.raises(RecordRefused, match="required"):
        CneaCalibration(settings_for(tmp_path, required=True)).for_recording(
            board, np.zeros(64), 1, np.full(64, 5e-6), np.zeros(64)
        )


def test_a_stale_record_is_refused_or_applied_with_a_warning(board, emulator, tmp_path, caplog):
    settings = settings_for(tmp_path)
    old = synthetic_record(emulator, utc_now() - dt.timedelta(days=40))
    CalibrationStore(settings.store).save(old)
    path = tmp_path / "refused" / "session.h5"
    with pytest.raises(RecordRefused, match="older than its validity"):
        record_session(board, path, CneaCalibration(settings))
    assert not path.exists()  # refused before anything was recorded
    assert not board.acquiring
    warned = tmp_path / "warned" / "session.h5"
    record_session(board, warned, CneaCalibration(dataclasses.replace(settings, policy="warn")))
    entry = read_entries(warned)["cnea"]
    assert entry["status"] == "applied-stale" and "DESPITE" in entry["message"]
    assert "DESPITE" in caplog.text
    with open_hdf5_recording(warned) as rec:
        np.testing.assert_allclose(rec.gain_v, old.values["gain"][0, 0])


def test_a_record_of_another_serial_is_refused_or_warned(board, emulator, tmp_path):
    settings = settings_for(tmp_path)
    store = CalibrationStore(settings.store)
    foreign = synthetic_record(emulator, utc_now(), serial="EMU09999")
    mine = InstrumentIdentity.from_idn(",".join(emulator.device.identity))
    save_record(foreign, store.folder_for("cnea", mine) / "misfiled.h5")
    hook = CneaCalibration(settings)
    args = (board, np.zeros(64), 1, np.full(64, 5e-6), np.zeros(64))
    with pytest.raises(RecordRefused, match="EMU09999"):
        hook.for_recording(*args)
    used = CneaCalibration(dataclasses.replace(settings, policy="warn")).for_recording(*args)
    assert used.applied.status == "applied-mismatch"
    # a record only for another serial is not applied at all: nominal values, and why
    store_only_other = CalibrationStore(tmp_path / "other")
    store_only_other.save(foreign)
    none = CneaCalibration(CalibrationSettings(store=str(tmp_path / "other")))
    used = none.for_recording(*args)
    assert used.applied.status == "none" and "EMU09999" in used.applied.message
    np.testing.assert_array_equal(used.gain, np.full(64, 5e-6))


def test_extraction_applies_the_record_valid_when_the_recording_was_made(board, emulator, tmp_path):
    path = tmp_path / "s" / "session.h5"
    settings = settings_for(tmp_path)
    record_session(board, path, None)  # an old-style recording: no /calibration at all
    with h5py.File(path, "r") as f:
        assert "calibration" not in f
        identity = f["recording"].attrs["instrument_identity"]
    assert parse_identity_text(identity).serial == "EMU00004"
    start = dt.datetime.now(dt.UTC)
    store = CalibrationStore(settings.store)
    store.save(synthetic_record(emulator, start - dt.timedelta(days=45)))  # stale then
    valid = synthetic_record(emulator, start - dt.timedelta(days=2))
    store.save(valid)
    in_memory = prepare_session(path, settings, write=False)
    assert in_memory.applied.status == "applied" and not in_memory.written
    with open_hdf5_recording(path) as rec:
        assert np.allclose(rec.gain_v, 5e-6)  # the file is untouched
        in_memory.apply(rec)
        np.testing.assert_allclose(rec.gain_v, valid.values["gain"][0, 0])
    written = prepare_session(path, settings)
    assert written.written and written.applied.record.record_id == valid.record_id
    entry = read_entries(path)["cnea"]
    assert entry["applied_by"] == "extraction" and entry["record_id"] == valid.record_id
    with open_hdf5_recording(path) as rec:
        np.testing.assert_allclose(rec.gain_v, valid.values["gain"][0, 0])
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["calibration/cnea/nominal_gain_v"][()], 5e-6)
    again = prepare_session(path, settings)  # already in the file: used as it is
    assert again.written and "extraction" in again.applied.message
    json.loads(entry["identities_json"])
