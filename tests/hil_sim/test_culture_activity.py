"""The default culture's activity: firing rates, network bursts, eventful strong synapses."""

from __future__ import annotations

import numpy as np
import pytest

from hil_sim.culture import Culture, CultureParams


@pytest.fixture(scope="module")
def default_culture() -> Culture:
    return Culture(CultureParams())


@pytest.mark.slow
def test_default_preset_fires_at_a_few_hz_with_network_bursts(default_culture):
    culture = default_culture
    culture.clear_spikes()
    start = culture.time_s
    culture.advance(int(20 * culture.sample_rate_hz))
    times, neurons = culture.spike_times()
    duration = culture.time_s - start
    rate = np.bincount(neurons, minlength=culture.n_neurons) / duration
    assert 2.0 < rate.mean() < 10.0
    assert np.percentile(rate, 90) < 20.0
    # network bursts: 50 ms bins where the culture fires at several times its usual rate
    counts = np.histogram(times, bins=np.arange(start, culture.time_s + 1e-9, 0.05))[0]
    pop_rate = counts / culture.n_neurons / 0.05
    burst = pop_rate > 4 * np.median(pop_rate)
    onsets = np.flatnonzero(burst[1:] & ~burst[:-1])
    assert 2 <= onsets.size <= 20  # every few seconds
    assert pop_rate.max() > 20 * np.median(pop_rate)  # and they are real bursts
    # isolated spikes too: a good part of the spikes fall outside bursts
    assert 0.2 < counts[~burst].sum() / counts.sum() < 0.9


def test_strong_synapses_are_eventful(default_culture):
    culture = default_culture
    culture.clear_spikes()
    start = culture.sample_index
    culture.advance(int(10 * culture.sample_rate_hz))
    steps, neurons = culture.spikes()
    s = culture.synapses
    # judge only presynaptic spikes outside network bursts (in a burst everyone fires)
    bins = (steps - start) // 100
    pop = np.bincount(bins, minlength=int(bins.max()) + 1)
    quiet_bin = pop < 4 * np.median(pop)
    by_neuron = [steps[neurons == j] for j in range(culture.n_neurons)]

    def follow(k: int, shift: int = 0) -> float:
        pre_t = by_neuron[s.pre[k]]
        pre_t = pre_t[quiet_bin[(pre_t - start) // 100]] + shift
        post_t = by_neuron[s.post[k]]
        if pre_t.size == 0:
            return np.nan
        if post_t.size == 0:
            return 0.0
        j = np.searchsorted(post_t, pre_t + 1)
        nxt = np.where(j < post_t.size, post_t[np.minimum(j, post_t.size - 1)], 1 << 60)
        return float(np.mean(nxt - pre_t <= 150))  # a postsynaptic spike within 15 ms

    strong = np.flatnonzero((s.kind == 0) & (s.weight_v > 8e-3))
    weak = np.flatnonzero((s.kind == 0) & (s.weight_v < 0.5e-3))[:500]
    f_strong = np.nanmean([follow(k) for k in strong])
    f_weak = np.nanmean([follow(k) for k in weak])
    chance = np.nanmean([follow(k, shift=-2000) for k in strong])  # 200 ms earlier
    assert f_strong > 0.5
    assert f_strong > chance + 0.4
    assert f_weak < chance + 0.1
