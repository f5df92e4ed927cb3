"""The emulated culture: reproducibility, Dale's law, connectivity, delays, PSPs, activity."""

from __future__ import annotations

import numpy as np
import pytest

from hil_sim.culture import Culture, CultureError, CultureParams

SMALL = {"n_neurons": 300, "area_side_m": 0.5e-3}
QUIET = {"exc_drive_mean_a": 0.0, "inh_drive_mean_a": 0.0, "drive_std_a": 0.0}


@pytest.fixture(scope="module")
def default_culture() -> Culture:
    return Culture(CultureParams())


@pytest.fixture(scope="module")
def quiet_culture() -> Culture:
    culture = Culture(CultureParams(seed=7, **SMALL, **QUIET))
    culture.advance(2000)
    return culture


def fire_once(culture: Culture, neuron: int, window: int = 400) -> tuple[int, np.ndarray]:
    """Make ``neuron`` fire one spike; (its sample index, V for ``window`` samples from it)."""
    before = culture.spikes()[0].size
    start = culture.sample_index
    culture.inject(neuron, 20e-9)
    v1 = culture.advance(3)
    culture.inject(neuron, 0.0)
    v2 = culture.advance(window)
    steps, neurons = culture.spikes()
    mine = steps[before:][neurons[before:] == neuron]
    assert mine.size == 1, f"neuron {neuron} fired {mine.size} times"
    first = int(mine[0])
    v = np.concatenate([v1, v2])[first - start :][:window]
    return first, v


def test_same_seed_same_samples_other_seed_differs():
    a = Culture(CultureParams(seed=3, **SMALL)).advance(3000)
    b = Culture(CultureParams(seed=3, **SMALL)).advance(3000)
    c = Culture(CultureParams(seed=4, **SMALL)).advance(3000)
    assert a.dtype == np.float32 and a.shape == (3000, 300)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_advance_is_independent_of_chunking():
    one = Culture(CultureParams(seed=5, **SMALL))
    many = Culture(CultureParams(seed=5, **SMALL))
    whole = one.advance(5000)
    parts = np.concatenate([many.advance(n) for n in (1, 999, 37, 3963)])
    assert np.array_equal(whole, parts)
    assert np.array_equal(one.spikes()[0], many.spikes()[0])
    assert one.time_s == pytest.approx(0.5)


def test_dales_law_and_synapse_kinds(default_culture):
    truth = default_culture.truth_arrays()
    exc = truth["neuron_excitatory"]
    kind = truth["synapse_kind"]
    pre = truth["synapse_pre"]
    w = truth["synapse_weight_v"]
    chem = kind != 2
    assert np.all(kind[chem] == np.where(exc[pre[chem]], 0, 1))
    assert np.all(w[kind == 0] > 0) and np.all(w[kind == 1] < 0)
    assert 0.15 < 1 - exc.mean() < 0.25


def test_connectivity_is_sparse_and_distance_dependent(default_culture):
    t = default_culture.truth_arrays()
    n = t["neuron_excitatory"].size
    chem = t["synapse_kind"] != 2
    pre, post = t["synapse_pre"][chem], t["synapse_post"][chem]
    assert 60_000 < pre.size < 80_000
    assert 0.01 < pre.size / (n * (n - 1)) < 0.03
    assert not np.any(pre == post)
    assert np.unique(pre.astype(np.int64) * n + post).size == pre.size
    pos = t["neuron_position_m"]
    d_conn = np.linalg.norm(pos[pre] - pos[post], axis=1)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, (2, 20_000))
    d_all = np.linalg.norm(pos[a] - pos[b], axis=1)
    assert np.median(d_conn) < 0.5 * np.median(d_all)


def test_delays_and_electrical_synapses(default_culture):
    t = default_culture.truth_arrays()
    kind, delay = t["synapse_kind"], t["synapse_delay_s"]
    chem = kind != 2
    assert delay.dtype == np.float32
    assert delay[chem].min() >= 1e-3 - 1e-9 and delay[chem].max() <= 5e-3 + 1e-9
    assert np.ptp(delay[chem]) > 1e-3
    gap = kind == 2
    assert 20 <= gap.sum() // 2 <= 100
    assert np.all(delay[gap] == 0)
    pairs = set(zip(t["synapse_pre"][gap], t["synapse_post"][gap], strict=True))
    assert all((b, a) in pairs for a, b in pairs)
    assert np.all(t["synapse_weight_v"][gap] > 0)
    assert np.all(t["synapse_weight_v"][gap] < 3e-3)


def test_psp_amplitudes_are_log_normal_from_tenths_of_mv_to_a_few_mv(default_culture):
    t = default_culture.truth_arrays()
    w = np.abs(t["synapse_weight_v"][t["synapse_kind"] != 2])
    assert 0.2e-3 < np.median(w) < 1.0e-3
    assert np.percentile(w, 5) > 0.05e-3
    assert 1.0e-3 < np.percentile(w, 95) < 5e-3
    logw = np.log(w[w < 4e-3])
    skew = np.mean((logw - logw.mean()) ** 3) / logw.std() ** 3
    assert abs(skew) < 0.5  # roughly symmetric in log: log-normal
    strong = w > 6e-3
    assert 0.005 < strong.mean() < 0.05


def test_every_chemical_psp_peaks_5_to_15_ms_after_the_spike_and_stays_subthreshold(
    default_culture,
):
    s = default_culture.synapses
    chem = s.kind != 2
    assert s.peak_latency_s[chem].min() >= 5e-3
    assert s.peak_latency_s[chem].max() <= 15e-3
    assert np.all(s.peak_latency_s[chem] > s.delay_s[chem])
    assert np.abs(s.weight_v).max() < 20e-3  # no synapse fires its target from rest


def test_measured_psp_matches_truth_peak_and_latency(quiet_culture):
    culture = quiet_culture
    s = culture.synapses
    rest = culture.resting_potential_v
    gap_partners = {
        (int(a), int(b)) for a, b, k in zip(s.pre, s.post, s.kind, strict=True) if k == 2
    }
    rng = np.random.default_rng(1)
    picks = []
    for kind in (0, 1):
        cand = np.flatnonzero(s.kind == kind)
        picks += list(rng.choice(cand, 4, replace=False))
    picks.append(int(np.flatnonzero(s.weight_v > 6e-3)[0]))
    for k in picks:
        pre, post = int(s.pre[k]), int(s.post[k])
        if (pre, post) in gap_partners:
            continue
        others = (s.pre == pre) & (s.post == post) & (s.kind != 2)
        assert others.sum() == 1
        _, v = fire_once(culture, pre)
        dev = v[:, post].astype(np.float64) - rest[post]
        at = int(np.argmax(dev * np.sign(s.weight_v[k])))
        latency = at / culture.sample_rate_hz
        assert dev[at] == pytest.approx(s.weight_v[k], rel=0.03, abs=5e-6)
        assert 5e-3 <= latency <= 15e-3
        assert latency == pytest.approx(s.peak_latency_s[k], abs=1e-3)  # flat peak, float32 V
        assert latency > s.delay_s[k]
        culture.advance(3000)


def test_electrical_synapse_spikelet_has_near_zero_latency(quiet_culture):
    culture = quiet_culture
    s = culture.synapses
    k = int(np.flatnonzero(s.kind == 2)[0])
    pre, post = int(s.pre[k]), int(s.post[k])
    _, v = fire_once(culture, pre)
    # relative to the moment of the spike: the brief stimulus that made ``pre`` fire
    # also couples a little into ``post`` beforehand
    dev = v[:60, post].astype(np.float64) - v[0, post]
    assert dev[:5].max() > 0.3 * s.weight_v[k]
    assert dev.max() == pytest.approx(s.weight_v[k], rel=0.2)


def test_inject_and_clamp(quiet_culture):
    culture = quiet_culture
    culture.clamp([3, 4], -0.040)
    v = culture.advance(200)
    assert np.allclose(v[-1, [3, 4]], -0.040, atol=0.5e-3)
    culture.release([3, 4])
    v = culture.advance(3000)
    assert np.allclose(v[-1, [3, 4]], culture.resting_potential_v[[3, 4]], atol=2e-3)
    culture.inject(5, 0.5e-9)
    n0 = culture.spikes()[0].size
    culture.advance(2000)
    culture.inject(5, 0.0)
    _steps, neurons = culture.spikes()
    assert np.sum(neurons[n0:] == 5) >= 3


def test_spike_history_is_bounded():
    culture = Culture(CultureParams(seed=5, spike_history_s=0.5, **SMALL))
    culture.advance(5000)
    steps, _ = culture.spikes()
    assert steps.size > 0
    assert steps.min() >= culture.sample_index - 5000
    culture.advance(15_000)
    steps, _ = culture.spikes()
    assert steps.min() >= culture.sample_index - 5000
    assert sum(chunk.size for chunk in culture._spike_steps) == steps.size


def test_bad_requests_raise_culture_error(quiet_culture):
    with pytest.raises(CultureError):
        quiet_culture.inject(10_000, 1e-9)
    with pytest.raises(CultureError):
        quiet_culture.inject(0, float("nan"))
    with pytest.raises(CultureError):
        quiet_culture.clamp(0, 5.0)
    with pytest.raises(CultureError):
        quiet_culture.advance(-1)
    with pytest.raises(CultureError):
        Culture(CultureParams(n_neurons=1))
    with pytest.raises(CultureError):
        Culture(CultureParams(n_neurons=20_000))
    with pytest.raises(CultureError):
        Culture(CultureParams(max_delay_s=0.5e-3))
