"""Device physics: each technology's published behaviour, windows that match the lab config."""

from __future__ import annotations

import numpy as np
import pytest

from hil_sim.devices import (
    STUCK_NONE,
    TECHNOLOGIES,
    FlashArray,
    MRAMArray,
    PCMArray,
    RRAMArray,
    make_devices,
)
from instrument.config import load


@pytest.mark.parametrize("technology", sorted(TECHNOLOGIES))
def test_windows_agree_with_the_lab_configuration_and_are_reachable(technology):
    limits = load().limits(technology)
    devices = make_devices(technology, (8, 8), np.random.default_rng(1))
    assert devices.window_s == (limits.g_min_s, limits.g_max_s)
    lo, hi = devices.reachable_s()
    assert lo <= limits.g_min_s and hi >= limits.g_max_s


def test_rram_pulse_response_is_nonlinear_bounded_and_bidirectional():
    d = RRAMArray((1, 1), np.random.default_rng(2))
    g = []
    for _ in range(80):
        d.pulse(1.2, 1e-5, 0.0)
        g.append(d.conductance(0.0)[0, 0])
    steps = np.diff(g)
    assert steps[:5].mean() > 4 * max(steps[-20:].mean(), 1e-9)  # state-dependent, saturating
    assert max(g) <= d.g_hi[0, 0] * 1.01  # bounded by the device's upper bound
    before = g[-1]
    for _ in range(20):
        d.pulse(-1.2, 1e-5, 0.0)
    assert d.conductance(0.0)[0, 0] < 0.5 * before  # RESET goes back down


def test_rram_thresholds_and_variation():
    d = RRAMArray((16, 16), np.random.default_rng(3))
    g0 = d.conductance(0.0).copy()
    d.pulse(0.5, 1e-3, 0.0)  # below every threshold: nothing moves
    np.testing.assert_array_equal(d.conductance(0.0), g0)
    assert d.v_set.std() / d.v_set.mean() > 0.02  # device-to-device spread of thresholds
    # cycle to cycle: the same pulse on two identical devices lands differently
    a = RRAMArray((1, 1), np.random.default_rng(4))
    a.x[:] = 0.3
    results = set()
    for seed in range(5):
        a.rng = np.random.default_rng(seed)
        a.x[:] = 0.3
        a.pulse(1.1, 1e-5, 0.0)
        results.add(round(float(a.x[0, 0]), 6))
    assert len(results) == 5


@pytest.mark.parametrize("technology", sorted(TECHNOLOGIES))
def test_stuck_cells_never_move(technology):
    d = make_devices(technology, (12, 12), np.random.default_rng(5), stuck_rate=0.3)
    stuck = d.stuck != STUCK_NONE
    assert 0.15 < stuck.mean() < 0.45
    g0 = d.conductance(0.0).copy()
    g_on = d.conductance(0.0)[d.stuck == 1]
    assert (g_on > d.window_s[1]).all()
    neg, pos = d.thresholds_v()
    for v in (pos * 1.6, neg * 1.6, pos * 3, neg * 3):
        d.pulse(v, 1e-4, 0.0)
    g1 = d.conductance(0.0)
    np.testing.assert_array_equal(g1[stuck], g0[stuck])
    assert np.any(g1[~stuck] != g0[~stuck])


def test_pcm_partial_set_is_gradual_and_reset_is_abrupt():
    d = PCMArray((1, 1), np.random.default_rng(6))
    g = []
    for k in range(15):
        d.pulse(2.0, 1e-5, float(k))
        g.append(d.conductance(float(k))[0, 0])
    assert g[-1] > 10e-6
    assert max(np.diff(g)) < 0.3 * g[-1]  # many small steps, no jump
    d.pulse(3.5, 1e-5, 20.0)
    assert d.conductance(20.0)[0, 0] < 0.2e-6  # one RESET pulse: amorphous


def test_pcm_drift_exponent_is_recovered_from_simulated_reads():
    rng = np.random.default_rng(7)
    d = PCMArray((20, 20), rng)
    for k in range(6):
        d.pulse(2.0, 1e-5, 0.0 + k * 1e-3)
    t_prog = float(d.t_prog.max())
    times = t_prog + d.t0_s * np.array([1.0, 10.0, 100.0, 1000.0, 10000.0])
    reads = []
    for t in times:
        g = d.conductance(t)
        noisy = g * (1 + d.read_sigma(g, t) * rng.standard_normal(g.shape))
        reads.append(np.median(noisy))
    slope = np.polyfit(np.log(times - t_prog), np.log(reads), 1)[0]
    nu = -slope
    assert 0.05 <= nu <= 0.1
    assert nu == pytest.approx(float(np.median(d.nu)), abs=0.01)


def test_mram_switching_probability_grows_with_amplitude_and_width():
    def switched_fraction(v: float, width: float) -> float:
        d = MRAMArray((40, 50), np.random.default_rng(8), junctions=1)
        d.parallel[:] = False
        d.pulse(v, width, 0.0)
        return float(d.parallel.mean())

    low, mid, high = (switched_fraction(v, 1e-5) for v in (0.40, 0.48, 0.60))
    assert low < mid < high
    assert low < 0.05 and high > 0.95
    assert switched_fraction(0.48, 1e-4) > switched_fraction(0.48, 1e-6)
    # the model: P = 1 - exp(-t / (tau0 exp(Delta (1 - V/Vc0))))
    d = MRAMArray((1, 1), np.random.default_rng(9), junctions=1)
    p = d.switching_probability(np.array([0.5]), 1e-5, np.array([0.55]))
    tau = 1e-9 * np.exp(60 * (1 - 0.5 / 0.55))
    assert p[0] == pytest.approx(1 - np.exp(-1e-5 / tau))


def test_mram_multilevel_cell_reads_discrete_levels():
    d = MRAMArray((30, 30), np.random.default_rng(10))
    for v in (0.35, 0.45, 0.5, 0.55, 0.6, 0.7):
        d.pulse(-1.0, 1e-5, 0.0)
        d.pulse(v, 1e-5, 0.0)
    levels = d.parallel.sum(axis=-1)
    assert set(np.unique(levels)) <= set(range(d.junctions + 1))
    g = d.conductance(0.0)
    assert g.min() >= 0.9 * 4 * 24e-6 and g.max() <= 1.1 * 4 * 140e-6


def test_flash_ispp_steps_threshold_by_about_the_step_and_erase_is_per_block():
    d = FlashArray((16, 2), np.random.default_rng(11), block_rows=8)
    v = np.zeros((16, 2))
    vth = []
    for vp in np.arange(15.0, 17.01, 0.25):
        v[0, 0] = vp
        d.pulse(v, 1e-4, 0.0)  # long pulses: steady-state ISPP
        vth.append(d.v_th[0, 0])
    steps = np.diff(vth)[2:]
    assert np.median(steps) == pytest.approx(0.25, abs=0.07)
    g = d.conductance(0.0)
    assert g[0, 0] < 0.5e-6 < g[0, 1]  # programmed cell reads low, its neighbour high
    v[:] = 0.0
    v[9, 0] = 16.0
    d.pulse(v, 1e-4, 0.0)
    other_block = d.v_th[8:].copy()
    v[:] = 0.0
    v[3, 1] = -18.0  # an erase pulse anywhere in block 0 erases all of block 0
    for _ in range(3):
        d.pulse(v, 1e-4, 0.0)
    assert d.v_th[:8].max() < 1.6
    np.testing.assert_array_equal(d.v_th[8:], other_block)
    assert d.conductance(0.0)[0, 0] > 5e-6


def test_flash_gate_pulse_draws_no_channel_current_and_reads_do_not_disturb():
    d = FlashArray((2, 2), np.random.default_rng(12))
    assert np.abs(d.current(np.full((2, 2), 15.0), 0.0)).max() < 1e-9
    v0 = d.v_th.copy()
    d.pulse(0.5, 1.0, 0.0)
    np.testing.assert_array_equal(d.v_th, v0)
