"""The electrode array: coupling statistics, access, clamp modes, noise, bad channels, truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hil_sim.culture import Culture, CultureParams
from hil_sim.electrodes import (
    CHANNEL_DEAD,
    CHANNEL_SATURATED,
    N_CHANNELS,
    N_COLS,
    ElectrodeArray,
    ElectrodeError,
    ElectrodeParams,
)
from instrument.recording import GroundTruth

SMALL = {"n_neurons": 300, "area_side_m": 0.5e-3}
QUIET = {"exc_drive_mean_a": 0.0, "inh_drive_mean_a": 0.0, "drive_std_a": 0.0}


@pytest.fixture(scope="module")
def default_array() -> ElectrodeArray:
    return ElectrodeArray(Culture(CultureParams()))


def small_array(seed: int = 3, quiet: bool = False, **electrode: float) -> ElectrodeArray:
    culture = Culture(CultureParams(seed=seed, **SMALL, **(QUIET if quiet else {})))
    return ElectrodeArray(culture, ElectrodeParams(**electrode))


def test_geometry_and_channel_order(default_array):
    arr = default_array
    assert arr.n_channels == N_CHANNELS == 4096
    assert arr.positions_m.shape == (4096, 2)
    row, col = 3, 17
    ch = row * N_COLS + col
    assert arr.positions_m[ch] == pytest.approx([(col + 0.5) * 20e-6, (row + 0.5) * 20e-6])
    assert arr.sample_rate_hz == 10_000.0


def test_coupled_fraction_and_electrodes_per_neuron(default_array):
    en = default_array.truth()["electrode_neuron"]
    coupled = en >= 0
    assert 3400 <= coupled.sum() <= 3800  # Wang et al. 2025: ~3,600 of 4,096
    seen = np.unique(en[coupled])
    assert 1.6 <= coupled.sum() / seen.size <= 2.0  # ~1.8 electrodes per neuron
    per_neuron = np.bincount(en[coupled])
    assert per_neuron.max() <= 6
    cpl = default_array.truth()["electrode_coupling"]
    assert np.all(cpl[~coupled] == 0)
    assert cpl[coupled].min() >= 0.1 and cpl[coupled].max() <= 0.9
    assert np.ptp(cpl[coupled]) > 0.5


def test_truth_has_exactly_the_ground_truth_fields_and_dtypes(default_array):
    truth = default_array.truth()
    assert tuple(truth) == GroundTruth.FIELDS
    gt = GroundTruth.from_arrays(truth, default_array.truth_attrs())
    n = gt.neuron_excitatory.size
    s = gt.synapse_pre.size
    expected = {
        "neuron_position_m": (np.float64, (n, 2)),
        "neuron_excitatory": (np.bool_, (n,)),
        "electrode_neuron": (np.int32, (4096,)),
        "electrode_coupling": (np.float32, (4096,)),
        "synapse_pre": (np.int32, (s,)),
        "synapse_post": (np.int32, (s,)),
        "synapse_weight_v": (np.float32, (s,)),
        "synapse_delay_s": (np.float32, (s,)),
        "synapse_kind": (np.uint8, (s,)),
    }
    for name, (dtype, shape) in expected.items():
        arr = getattr(gt, name)
        assert arr.dtype == dtype, name
        assert arr.shape == shape, name
    attrs = default_array.truth_attrs()
    assert attrs["seed"] == 1
    assert isinstance(attrs["model"], str)
    assert all(isinstance(v, (int, float, str, bool)) for v in attrs.values())


def test_read_is_reproducible_and_independent_of_chunking():
    a, b, c = small_array(), small_array(), small_array(seed=4)
    for arr in (a, b, c):
        arr.electroporate(np.arange(0, N_CHANNELS, 2), 2.0, 1e-3)
        arr.set_mode([5, 6], "voltage_clamp", -0.06)
    whole = a.read(10_000)
    parts = np.concatenate([b.read(1000), b.read(9000)])
    assert whole.dtype == np.float32 and whole.shape == (10_000, N_CHANNELS)
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, c.read(10_000))
    assert a.time_s == pytest.approx(1.0)


def test_noise_level_and_low_pass_spectrum():
    arr = small_array()
    x = arr.read(10_000).astype(np.float64)
    en = arr.electrode_neuron()
    quiet = (en < 0) & (arr.channel_status == 0)
    rms = x[:, quiet].std(axis=0)
    assert 10e-6 < np.median(rms) < 20e-6
    spec = np.abs(np.fft.rfft(x[:, quiet][:, :200] - x[:, quiet][:, :200].mean(0), axis=0)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1e-4)
    low = spec[(f > 100) & (f < 500)].mean()
    high = spec[(f > 4000) & (f < 5000)].mean()
    assert 0.2 < high / low < 0.7  # first-order roll-off above a 3 kHz corner
    lag1 = np.mean([np.corrcoef(x[:-1, c], x[1:, c])[0, 1] for c in np.flatnonzero(quiet)[:50]])
    assert 0.05 < lag1 < 0.4


def test_dead_and_saturated_channels(default_array):
    arr = default_array
    status = arr.channel_status
    dead = np.flatnonzero(status == CHANNEL_DEAD)
    sat = np.flatnonzero(status == CHANNEL_SATURATED)
    assert 5 <= dead.size + sat.size <= 40  # ~0.5 %
    assert dead.size and sat.size
    arr.electroporate(np.arange(N_CHANNELS), 3.0, 1e-3)
    x = arr.read(3000)
    assert np.all(x[:, sat] == x[0, sat]) and np.all(np.abs(x[0, sat]) >= 0.5)
    assert np.all(np.abs(x[:, dead].std(axis=0) - 15e-6) < 5e-6)
    assert np.all(arr.truth()["electrode_neuron"][np.concatenate([dead, sat])] == -1)
    assert np.all(arr.access()[np.concatenate([dead, sat])] == 0)


def test_electroporation_opens_most_coupled_electrodes_more_with_larger_pulses():
    fractions = []
    for amplitude in (1.0, 2.0, 3.0):
        arr = small_array()
        coupled = np.flatnonzero(arr.electrode_neuron() >= 0)
        arr.electroporate(coupled, amplitude, 1e-3)
        fractions.append(np.mean(arr.access()[coupled] > 0))
        assert np.all(arr.access()[arr.electrode_neuron() < 0] == 0)
    assert fractions[0] < fractions[1] < fractions[2]
    assert 0.7 <= fractions[1] <= 0.95
    assert fractions[2] >= 0.9


def test_access_decays_with_its_time_constant():
    arr = small_array(access_tau_s=0.5, access_tau_sigma=0.0)
    coupled = np.flatnonzero(arr.electrode_neuron() >= 0)
    arr.electroporate(coupled, 3.0, 1e-3)
    a0 = arr.access()
    opened = a0 > 0
    arr.read(10_000)
    ratio = arr.access()[opened] / a0[opened]
    assert ratio == pytest.approx(np.full(ratio.shape, np.exp(-1.0 / 0.5)), rel=0.01)
    # default preset: several minutes
    default = small_array()
    assert 120 < np.median(default._tau_access) < 600


def test_intracellular_psps_are_seen_only_with_access():
    arr = small_array(seed=7, quiet=True)
    culture = arr.culture
    s = culture.synapses
    en = arr.electrode_neuron()
    # a strong-ish excitatory synapse whose postsynaptic neuron has an electrode
    cand = np.flatnonzero((s.kind == 0) & (s.weight_v > 1e-3) & np.isin(s.post, en))
    k = int(cand[0])
    pre, post = int(s.pre[k]), int(s.post[k])
    chans = np.flatnonzero(en == post)
    arr.read(2000)

    def evoked() -> np.ndarray:
        base = arr.read(50)[:, chans].mean(axis=0)
        culture.inject(pre, 20e-9)
        x1 = arr.read(3)
        culture.inject(pre, 0.0)
        x = np.concatenate([x1, arr.read(300)])[:, chans] - base
        arr.read(2000)
        return x

    no_access = np.mean([evoked() for _ in range(5)], axis=0)
    arr.electroporate(chans, 3.0, 1e-3)
    arr.read(1000)  # let the pulse artifact recover
    acc = arr.access()[chans]
    assert np.any(acc > 0)
    with_access = np.mean([evoked() for _ in range(5)], axis=0)
    seen = chans[acc > 0]
    col = np.flatnonzero(acc > 0)
    expected = s.weight_v[k] * arr.truth()["electrode_coupling"][seen] * acc[col]
    peak = with_access[40:200, col].max(axis=0)
    assert peak == pytest.approx(expected, rel=0.25, abs=15e-6)
    # without access: only noise (15 µV / sqrt(5) rms), no PSP
    assert np.abs(no_access[40:200]).max() < 40e-6


def test_voltage_clamp_records_current_and_holds_the_neuron():
    arr = small_array(seed=7, quiet=True)
    en = arr.electrode_neuron()
    ch = int(np.flatnonzero(en >= 0)[0])
    n = int(en[ch])
    arr.electroporate([ch], 3.0, 1e-3)
    acc = float(arr.access()[ch])
    assert acc > 0
    arr.set_mode([ch], "voltage_clamp", -0.050)
    x = arr.read(3000)
    v = arr.culture.membrane_potential()[n]
    assert arr.mode(ch) == ("voltage_clamp", -0.050)
    g = arr.params.clamp_conductance_s * acc
    expected = g * (-0.050 - v)
    assert x[-500:, ch].mean() == pytest.approx(expected, rel=0.05)
    rest = arr.culture.resting_potential_v[n]
    assert rest < v < -0.050  # pulled towards the command through the access conductance
    arr.set_mode([ch], "current_clamp", 0.0)
    arr.read(3000)
    assert arr.culture.membrane_potential()[n] == pytest.approx(rest, abs=1e-3)


def test_current_injection_through_an_open_electrode_makes_the_neuron_fire():
    arr = small_array(seed=7, quiet=True)
    en = arr.electrode_neuron()
    chans = np.flatnonzero(en >= 0)
    ch_closed, ch_open = int(chans[0]), int(chans[1])
    arr.electroporate([ch_open], 3.0, 1e-3)
    if arr.access()[ch_open] == 0:
        arr.electroporate([ch_open], 3.0, 1e-3)
    assert arr.access()[ch_closed] == 0 and arr.access()[ch_open] > 0
    arr.set_mode([ch_closed, ch_open], "current_clamp", 1e-9)
    n0 = arr.culture.spikes()[0].size
    x = arr.read(5000)
    _, neurons = arr.culture.spikes()
    assert np.sum(neurons[n0:] == en[ch_open]) >= 5
    assert np.sum(neurons[n0:] == en[ch_closed]) == 0
    seen = arr.truth()["electrode_coupling"][ch_open] * arr.access()[ch_open]
    assert x[:, ch_open].max() > 0.7 * seen * 0.1  # intracellular ~100 mV spikes, attenuated


def test_bad_requests_raise_electrode_error():
    arr = small_array()
    with pytest.raises(ElectrodeError):
        arr.set_mode([0], "patch")
    with pytest.raises(ElectrodeError):
        arr.set_mode([4096], "current_clamp")
    with pytest.raises(ElectrodeError):
        arr.set_mode([0], "current_clamp", 1.0)
    with pytest.raises(ElectrodeError):
        arr.set_mode([0], "voltage_clamp", float("inf"))
    with pytest.raises(ElectrodeError):
        arr.electroporate([0], -1.0, 1e-3)
    with pytest.raises(ElectrodeError):
        arr.electroporate([0], 2.0, 0.0)
    with pytest.raises(ElectrodeError):
        arr.electroporate([0.5], 2.0, 1e-3)
    with pytest.raises(ElectrodeError):
        arr.read(-5)
    with pytest.raises(ElectrodeError):
        ElectrodeArray(arr.culture)  # a second array would fight over the neurons' drive
    # nothing taken so far was lost and the array still reads
    assert arr.read(10).shape == (10, N_CHANNELS)


@pytest.mark.parametrize(
    "bad",
    [
        {"pitch_m": 0.0},
        {"noise_rms_v": -1e-6},
        {"lowpass_hz": 6000.0},
        {"coupling_min": 0.95},
        {"dead_fraction": 0.7, "saturated_fraction": 0.5},
        {"access_tau_s": float("nan")},
        {"access_update_samples": 0},
    ],
)
def test_bad_params_raise_electrode_error(bad):
    culture = Culture(CultureParams(seed=1, warmup_s=0.0, **SMALL))
    with pytest.raises(ElectrodeError):
        ElectrodeArray(culture, ElectrodeParams(**bad))
    assert not culture.electrodes_attached


def test_params_are_json_scalars():
    attrs = dataclasses.asdict(ElectrodeParams())
    assert all(isinstance(v, (int, float)) for v in attrs.values())


def test_electroporation_pulse_leaves_a_recovering_artifact_on_its_channels():
    arr = small_array(seed=7, quiet=True)
    en = arr.electrode_neuron()
    pulsed = np.flatnonzero((en < 0) & (arr.channel_status == 0))[:3]
    other = np.flatnonzero((en < 0) & (arr.channel_status == 0))[3:6]
    arr.read(100)
    arr.electroporate(pulsed, 2.0, 1e-3)
    x = arr.read(400)
    assert np.all(x[0, pulsed] > 0.3)  # far beyond any ADC full scale: the channel saturates
    assert np.all(np.abs(x[0, other]) < 100e-6)
    assert np.all(np.abs(x[300:, pulsed]) < 100e-6)  # recovered within ~30 ms
    assert np.all(np.diff(x[1:50, pulsed], axis=0) < 0)  # monotonic recovery after the low-pass
