"""SMU and crossbar calibration on the emulated rig: the SMU's hidden offsets and gain, the
references' hidden values, the array's hidden contact and line resistances and its stuck cells
are found within the stated uncertainties; corrected reads are closer to the true cells."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from calibration.crossbar import (
    STUCK_HIGH,
    STUCK_LOW,
    CrossbarSettings,
    PulseRecipe,
    RigCorrection,
    calibrate_crossbar,
)
from calibration.records import CalibrationError
from calibration.smu import SmuCorrection, SmuSettings, calibrate_smu
from instrument.embedded_lab import embedded_lab
from instrument.imprint.run import make_plan
from instrument.rig import open_rig


@contextmanager
def rig_lab(n: int = 12, **rig) -> Iterator:
    options = {"rows": n, "cols": n, "stuck_rate": 0.03, **rig}
    with embedded_lab(options={"rig": options}) as (config, lab):
        crossbar = dataclasses.replace(
            config.crossbar,
            rows=n,
            cols=n,
            technology=options.get("technology", "rram"),
            architecture=options.get("architecture", "1t1r"),
        )
        yield dataclasses.replace(config, crossbar=crossbar), lab


def hidden(lab):
    """The emulator's truth: SMU errors, reference values, the crossbar."""
    smu = lab.instruments["smu"].servers[0].device.smu.errors
    selector = lab.instruments["selector"].servers[0].device
    return smu, selector.reference_ohm, lab.instruments["smu"].model


def z(value, truth, u):
    return np.abs((np.asarray(value) - truth) / np.asarray(u))


@pytest.mark.parametrize("smu_model", ["keithley2450", "keysight_b2900"])
def test_smu_calibration_recovers_hidden_errors_and_reference_values(smu_model):
    with rig_lab(smu_model=smu_model) as (config, lab), open_rig(config) as rig:
        record = calibrate_smu(rig.smu, rig.selector, rig.limits, operator="t")
        # raw vs corrected resistance of every reference at the read voltage
        raw, corrected = [], []
        correction = SmuCorrection.from_record(record)
        for number in (1, 2, 3, 4):
            readings = [rig.read_reference(number) for _ in range(8)]
            current = np.mean([r.current_a for r in readings])
            raw.append(rig.limits.read_voltage_v / current)
            corrected.append(
                1 / correction.conductance(np.array([current]), rig.limits.read_voltage_v)[0]
            )
        errors, references, _ = hidden(lab)
    v, u = record.values, record.uncertainties
    assert record.identities["smu"].model in ("MODEL 2450", "B2902A")
    assert record.identities["selector"].model == "XBAR-SELECTOR"
    assert 22 < record.temperature_c < 25
    assert z(v["current_offset_a"], errors.current_offset_a, u["current_offset_a"]) < 4
    true_vo = errors.voltage_offset_v / errors.voltage_gain
    assert z(v["voltage_offset_v"], true_vo, u["voltage_offset_v"]) < 4
    k = errors.voltage_gain * errors.current_gain
    assert z(v["conductance_gain"], k, u["conductance_gain"]) < 4
    assert u["conductance_gain"] < 1e-4 and u["voltage_offset_v"] < 1e-4
    assert np.all(z(v["reference_ohm"], references, u["reference_ohm"]) < 4)
    assert np.all(u["reference_ohm"] / references < 1e-4)  # vs the ±0.5 % nominal tolerance
    before = np.sqrt(np.mean((np.array(raw) / references - 1) ** 2))
    after = np.sqrt(np.mean((np.array(corrected) / references - 1) ** 2))
    assert after < 1e-4 and after < before


def test_smu_calibration_refusals():
    with pytest.raises(CalibrationError):
        SmuSettings(levels=3)
    with rig_lab() as (config, _lab), open_rig(config) as rig:
        with pytest.raises(CalibrationError, match="certified standard"):
            calibrate_smu(rig.smu, rig.selector, rig.limits, SmuSettings(references=(1, 3)))
        assert rig.selector.route() == "OPEN"  # left safe
    with pytest.raises(CalibrationError):
        SmuCorrection.from_record(dataclasses.replace(_fake_crossbar_record(), kind="crossbar"))


def _fake_crossbar_record():
    from calibration.records import CalibrationRecord, InstrumentIdentity, format_utc, utc_now

    who = InstrumentIdentity("brainpaste", "XBAR-SELECTOR", "SEL0001", "1.0")
    return CalibrationRecord(
        "crossbar", {"selector": who}, "selector", format_utc(utc_now()), 1.0, {"x": 1.0}
    )


def crossbar_settings(config, technology: str, architecture: str) -> CrossbarSettings:
    plan = make_plan(config, technology)
    limits = config.limits(technology)
    return CrossbarSettings(
        architecture=architecture,
        up=PulseRecipe(*plan.algorithm.probe_pulse(True)),
        down=PulseRecipe(*plan.algorithm.probe_pulse(False)),
        window_g_min_s=limits.g_min_s,
        window_g_max_s=limits.g_max_s,
        read_bias=plan.access.read_bias,
        pulse_bias=plan.access.pulse_bias,
    )


def test_crossbar_calibration_recovers_wires_and_stuck_cells_and_improves_reads():
    with rig_lab(16) as (config, lab), open_rig(config) as rig:
        smu_record = calibrate_smu(rig.smu, rig.selector, rig.limits)
        smu = SmuCorrection.from_record(smu_record)
        record = calibrate_crossbar(rig, smu, crossbar_settings(config, "rram", "1t1r"))
        _, _, xb = hidden(lab)
        truth = xb.conductance()
        cell_truth = truth / (1 + truth * xb.access_resistance_ohm)
        raw = np.mean([rig.read_array() for _ in range(4)], axis=0)
        rig.read_correction = RigCorrection.from_records(smu_record, record)
        corrected = np.mean([rig.read_array() for _ in range(4)], axis=0)
        single = rig.read((3, 4))
    v, u = record.values, record.uncertainties
    assert record.identity.model == "XBAR-SELECTOR" and record.primary == "selector"
    assert z(v["segment_row_ohm"], xb.line_resistance_ohm, u["segment_row_ohm"]) < 4
    assert z(v["segment_col_ohm"], xb.line_resistance_ohm, u["segment_col_ohm"]) < 4
    assert np.all(z(v["contact_row_ohm"], xb.rc_row, u["contact_row_ohm"]) < 4)
    assert np.all(z(v["contact_col_ohm"], xb.rc_col, u["contact_col_ohm"]) < 4)
    true_wire = xb._r_series - xb.access_resistance_ohm
    assert np.all(z(v["wire_ohm"], true_wire, u["wire_ohm"]) < 4)
    line = xb.rc_row + xb.line_resistance_ohm * xb.cols
    assert np.all(z(v["line_row_ohm"], line, u["line_row_ohm"]) < 4)
    status = v["cell_status"]
    np.testing.assert_array_equal(status == STUCK_HIGH, xb.stuck == 1)
    np.testing.assert_array_equal(status == STUCK_LOW, xb.stuck == -1)
    assert (xb.stuck != 0).sum() >= 3
    free = xb.stuck == 0
    assert np.all(v["g_top_s"][free] > v["g_bottom_s"][free])
    before = np.sqrt(np.mean((raw[free] / cell_truth[free] - 1) ** 2))
    after = np.sqrt(np.mean((corrected[free] / cell_truth[free] - 1) ** 2))
    assert after < before
    assert single == pytest.approx(cell_truth[3, 4], rel=0.05)


def test_passive_crossbar_calibration_has_no_wire_correction():
    with rig_lab(8, architecture="passive") as (config, lab), open_rig(config) as rig:
        smu_record = calibrate_smu(rig.smu, rig.selector, rig.limits)
        settings = crossbar_settings(config, "rram", "passive")
        record = calibrate_crossbar(rig, SmuCorrection.from_record(smu_record), settings)
        _, _, xb = hidden(lab)
        with pytest.raises(CalibrationError, match="raw reads"):
            rig.read_correction = RigCorrection.from_records(smu_record, record)
            calibrate_crossbar(rig, SmuCorrection.from_record(smu_record), settings)
    assert np.isnan(record.values["segment_row_ohm"])
    assert RigCorrection.from_records(smu_record, record).wire_ohm is None
    np.testing.assert_array_equal(np.sign(record.values["cell_status"]), xb.stuck)
    line = xb.rc_col + xb.line_resistance_ohm * xb.rows
    u = record.uncertainties["line_col_ohm"]
    assert np.all(z(record.values["line_col_ohm"], line, u) < 4)
    with pytest.raises(CalibrationError):
        CrossbarSettings(cells=True, up=None)
