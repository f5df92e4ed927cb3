"""Calibration records applied to the rigs imprint uses: every read goes through the SMU and
crossbar records, imprint skips the cells the calibration found stuck and the session file
says which records were used; missing, stale and mismatched records are handled."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from calibration.crossbar import CrossbarSettings, PulseRecipe, calibrate_crossbar
from calibration.records import RecordRefused, format_utc
from calibration.smu import SmuCorrection, calibrate_smu
from calibration.store import CalibrationStore
from instrument.calibration_use import known_cell_status, read_entries, rig_calibration
from instrument.imprint.journal import SKIPPED, Journal
from instrument.imprint.run import make_plan, run_imprint
from instrument.rig import open_rig
from tests.instrument.imprint.helpers import (
    config_with,
    crossbar,
    make_session,
    rig_lab,
    synthetic_map,
)


def calibrated_store(config, store_dir, *, cells: bool = True):
    """Calibrate the rig's SMU and crossbar (raw reads) and file both records."""
    plan = make_plan(config, config.crossbar.technology)
    limits = config.limits()
    settings = CrossbarSettings(
        architecture=config.crossbar.architecture,
        technology=config.crossbar.technology,
        cells=cells,
        up=PulseRecipe(*plan.algorithm.probe_pulse(True)),
        down=PulseRecipe(*plan.algorithm.probe_pulse(False)),
        window_g_min_s=limits.g_min_s,
        window_g_max_s=limits.g_max_s,
        read_bias=plan.access.read_bias,
        pulse_bias=plan.access.pulse_bias,
    )
    with open_rig(config, calibration=False) as rig:
        smu = calibrate_smu(rig.smu, rig.selector, rig.limits)
        xbar = calibrate_crossbar(rig, SmuCorrection.from_record(smu), settings)
    store = CalibrationStore(store_dir)
    store.save(smu)
    store.save(xbar)
    return smu, xbar


def test_rig_reads_and_imprint_go_through_the_records(tmp_path):
    base = config_with(f'[calibration]\nstore = "{tmp_path / "store"}"\n')
    with rig_lab(rows=12, cols=12, stuck_rate=0.04, config=base) as (config, lab):
        smu_record, xbar_record = calibrated_store(config, tmp_path / "store")
        xb = crossbar(lab)
        with open_rig(config, calibration=False) as raw_rig:
            raw = np.mean([raw_rig.read_array() for _ in range(3)], axis=0)
        with open_rig(config) as rig:
            applied = rig_calibration(rig)
            assert [a.status for a in applied] == ["applied", "applied"]
            assert rig.read_correction is not None
            corrected = np.mean([rig.read_array() for _ in range(3)], axis=0)
            np.testing.assert_array_equal(known_cell_status(rig), xbar_record.values["cell_status"])
            truth = xb.conductance()
        cell = truth / (1 + truth * xb.access_resistance_ohm)
        free = xb.stuck == 0
        err_raw = np.sqrt(np.mean((raw[free] / cell[free] - 1) ** 2))
        err_cal = np.sqrt(np.mean((corrected[free] / cell[free] - 1) ** 2))
        assert err_cal < err_raw
        # imprint: the session file says which records; cells found stuck are never pulsed
        path = make_session(tmp_path / "s")
        run_imprint(config, path, "rram", cmap=synthetic_map(5, 8), progress=False)
        entries = read_entries(path)
        assert entries["smu"]["record_id"] == smu_record.record_id
        assert entries["selector"]["record_id"] == xbar_record.record_id
        assert entries["selector"]["applied_by"] == "imprint"
        journal = Journal.open(path)
        try:
            rows = journal.tile_rows(0)
            stuck = xbar_record.values["cell_status"][rows["row"], rows["col"]] != 0
            assert np.all(rows["state"][stuck] == SKIPPED)
        finally:
            journal.close()
        # the record's cells belong to the array that was measured
        pcm = dataclasses.replace(
            config, crossbar=dataclasses.replace(config.crossbar, technology="pcm")
        )
        with pytest.raises(RecordRefused, match="taken on a rram array"):
            open_rig(pcm)


def test_missing_stale_and_mismatched_rig_records(tmp_path, caplog):
    store_dir = tmp_path / "store"
    base = config_with(f'[calibration]\nstore = "{store_dir}"\n')
    with rig_lab(rows=8, cols=8, config=base) as (config, _lab):
        with open_rig(config) as rig:  # nothing filed yet: raw reads, and it says so
            assert [a.status for a in rig_calibration(rig)] == ["none", "none"]
            assert rig.read_correction is None
        assert "nominal values" in caplog.text
        smu_record, _ = calibrated_store(config, store_dir, cells=False)
        # a crossbar record without the SMU's cannot be applied (it needs the SMU's gain)
        store = CalibrationStore(store_dir)
        store.path_for(smu_record).unlink()
        with open_rig(config) as rig:
            smu, xbar = rig_calibration(rig)
            assert smu.status == "none" and xbar.status == "none"
            assert "needs the SMU's record" in xbar.message
        # a stale SMU record: refused (the rig is closed again), or applied with a warning
        stale = dataclasses.replace(
            smu_record,
            created_utc=format_utc(smu_record.created - dt.timedelta(days=400)),
            record_id="",
        )
        store.save(stale)
        with pytest.raises(RecordRefused, match="older than its validity"):
            open_rig(config)
        warn = config_with(f'[calibration]\nstore = "{store_dir}"\npolicy = "warn"\n')
        warn = dataclasses.replace(warn, instruments=config.instruments, crossbar=config.crossbar)
        with open_rig(warn) as rig:
            assert rig_calibration(rig)[0].status == "applied-stale"
    # the same records on a rig with a differently sized array are refused
    with rig_lab(rows=6, cols=6, config=warn) as (config6, _lab):
        store.save(dataclasses.replace(smu_record, record_id=""))
        with pytest.raises(RecordRefused, match="8x8 array"):
            open_rig(config6)
