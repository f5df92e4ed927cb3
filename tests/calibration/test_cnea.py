"""CNEA calibration on the emulated board: the hidden per-channel gains and offsets are found
within the stated uncertainties, and the broken channels are exactly the broken ones."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.cnea import (
    BAD_INPUT_PINNED,
    CneaSettings,
    calibrate_cnea,
    channel_calibration,
    fit_channels,
)
from calibration.records import CalibrationError
from calibration.store import CalibrationStore
from drivers.cnea_board import GAINS
from instrument.connect import open_instrument
from instrument.embedded_lab import embedded_lab


def test_fit_recovers_a_line_through_rounding_with_honest_uncertainty():
    rng = np.random.default_rng(3)
    n = 2000
    lsb = 5e-6 * (1 + 0.02 * rng.standard_normal(n))
    offset = 3e-4 * rng.standard_normal(n)
    x = np.linspace(-0.08, 0.08, 21) + (rng.random(21) - 0.5) * 5e-6
    codes = np.rint((x[:, None] - offset) / lsb)
    fit = fit_channels(x, codes, np.ones_like(codes, dtype=bool))
    z_gain = (fit.gain - lsb) / fit.u_gain
    z_offset = (fit.offset - offset) / fit.u_offset
    assert np.mean(np.abs(z_gain) < 2) > 0.9 and np.abs(z_gain).max() < 6
    assert np.mean(np.abs(z_offset) < 2) > 0.9 and np.abs(z_offset).max() < 6
    few = np.zeros_like(codes, dtype=bool)
    few[:2] = True
    assert np.isnan(fit_channels(x, codes, few).gain).all()


def truth_of(lab):
    """Hidden truth of the emulated board (the procedure itself never sees it)."""
    device = lab.instruments["cnea"].model.device
    electrodes = device.source.source
    return device.front_end, electrodes.channel_status


def test_calibration_recovers_hidden_gains_offsets_and_bad_channels(tmp_path):
    with embedded_lab() as (config, lab):
        board = open_instrument(config, "cnea")
        try:
            board.gain = 2
            board.set_voltage_clamp(range(100, 110), -0.05)
            steps = []
            record = calibrate_cnea(
                board, operator="test", progress=lambda d, t, w: steps.append((d, t))
            )
            # the board is left as it was found
            assert board.gain == 2 and not board.calibration_source_enabled
            modes = board.modes()
            assert modes[100:110].tolist() == [1] * 10 and modes[:100].sum() == 0
            assert board.levels()[105] == pytest.approx(-0.05)
        finally:
            board.close()
        front_end, channel_status = truth_of(lab)
    assert steps[-1][0] == steps[-1][1]
    assert record.identity.serial == "EMU00001" and record.operator == "test"
    assert 36 < record.temperature_c < 38
    gain, offset = record.values["gain"], record.values["offset"]
    u_gain, u_offset = record.uncertainties["gain"], record.uncertainties["offset"]
    bad = record.values["bad_channels"]
    expected_bad = front_end.amplifier_fault | (channel_status == 2)  # 2: saturated electrode
    np.testing.assert_array_equal(bad, expected_bad)
    assert np.all(record.values["bad_reason"][channel_status == 2] & BAD_INPUT_PINNED)
    good = ~bad
    for mode in (0, 1):
        for gi, g in enumerate(GAINS):
            nominal = (5e-6, 1e-12)[mode] / g
            true_gain = nominal * front_end.gain_factor[mode]
            true_offset = front_end.true_offset[mode]
            z_gain = ((gain[mode, gi] - true_gain) / u_gain[mode, gi])[good]
            z_offset = ((offset[mode, gi] - true_offset) / u_offset[mode, gi])[good]
            for z in (z_gain, z_offset):
                assert np.all(np.isfinite(z))
                assert np.mean(np.abs(z) < 2) > 0.9, (mode, g)
                assert np.abs(z).max() < 6, (mode, g)
            # and the uncertainties are small enough to matter
            assert np.median((u_gain[mode, gi] / gain[mode, gi])[good]) < (2e-5, 3e-4)[mode]
            assert np.median(u_offset[mode, gi][good]) < 0.05 * np.std(true_offset)
    # stored and found again, then applied per channel (mode and gain)
    store = CalibrationStore(tmp_path)
    store.save(record)
    chosen = store.select("cnea", {"board": record.identity}, primary="board")
    assert chosen.status == "ok"
    modes = np.zeros(bad.size, dtype=np.uint8)
    modes[::2] = 1
    nominal_gain = np.where(modes == 1, 1e-12, 5e-6)
    applied = channel_calibration(chosen.record, modes, 1, nominal_gain, np.zeros(bad.size))
    cols = np.arange(bad.size)
    np.testing.assert_array_equal(applied.gain[good], gain[modes, 0, cols][good])
    np.testing.assert_array_equal(applied.gain[bad], nominal_gain[bad])  # bad: left nominal
    assert applied.calibrated.sum() == good.sum()


def test_one_mode_and_gain_only_and_refusals():
    with embedded_lab(options={"cnea": {"amplifier_fault_fraction": 0.0}}) as (config, _lab):
        board = open_instrument(config, "cnea")
        try:
            settings = CneaSettings(modes=(0,), gains=(4,), levels=9, input_check_s=0.0)
            record = calibrate_cnea(board, settings)
            board.start()
            try:
                with pytest.raises(CalibrationError, match="acquiring"):
                    calibrate_cnea(board, settings)
            finally:
                board.stop()
        finally:
            board.close()
    gain = record.values["gain"]
    assert np.isfinite(gain[0, 2]).all() and np.isnan(gain[1]).all() and np.isnan(gain[0, :2]).all()
    assert not record.values["bad_channels"].any()
    applied = channel_calibration(
        record, np.zeros(4096, int), 1, np.full(4096, 5e-6), np.zeros(4096)
    )
    assert not applied.calibrated.any()  # gain 1 was not calibrated: nominal, and it says so
    with pytest.raises(CalibrationError):
        CneaSettings(gains=(3,))
    with pytest.raises(CalibrationError):
        CneaSettings(levels=2)
