"""End to end on planted recordings: known synapses are found, nothing else is."""

from __future__ import annotations

import numpy as np
import pytest

from instrument.extract.params import load_params
from instrument.extract.pipeline import extract
from instrument.extract.psp import KIND_ELECTRICAL, KIND_EXCITATORY, KIND_INHIBITORY
from instrument.extract.score import score, unit_neurons
from tests.instrument.extract.synthetic import planted_recording


def _found(result, truth):
    """{(pre neuron, post neuron): connection index} of a result."""
    neuron = unit_neurons(result, truth)
    c = result.connectivity
    return {(int(neuron[c.pre[k]]), int(neuron[c.post[k]])): k for k in range(c.n)}


def test_planted_synapses_are_found_with_their_size_sign_and_latency(planted, planted_result):
    truth = planted.recording.truth
    found = _found(planted_result, truth)
    c = planted_result.connectivity
    chemical = np.flatnonzero(planted.kind != KIND_ELECTRICAL)
    assert chemical.size == 10
    for i in chemical:
        key = (int(planted.pre[i]), int(planted.post[i]))
        assert key in found, f"planted synapse {key} ({planted.weight_v[i] * 1e3:+.1f} mV) missed"
        k = found[key]
        expected = KIND_EXCITATORY if planted.weight_v[i] > 0 else KIND_INHIBITORY
        assert c.kind[k] == expected
        assert c.weight_v[k] == pytest.approx(planted.weight_v[i], rel=0.35)
        assert abs(c.latency_s[k] - planted.delay_s[i]) <= 1.5e-3
        assert 0 < c.p[k] < 1e-6 and c.q[k] <= load_params().fdr
    s = score(planted_result, truth)
    assert s["false_positives"] == 0
    assert s["sign_accuracy"] == 1.0
    assert s["weight_correlation"] > 0.9


def test_an_electrical_pair_is_classified_electrical_both_ways(planted, planted_result):
    found = _found(planted_result, planted.recording.truth)
    c = planted_result.connectivity
    for key in ((17, 18), (18, 17)):
        assert key in found
        assert c.kind[found[key]] == KIND_ELECTRICAL
        assert abs(c.latency_s[found[key]]) <= 1e-3


def test_electrodes_of_one_neuron_are_one_unit_and_never_connected(planted, planted_result):
    truth = planted.recording.truth
    result = planted_result
    neuron = unit_neurons(result, truth)
    # neurons 0 and 3 are seen intracellularly by two electrodes each: merged
    for n in (0, 3):
        units = np.flatnonzero(neuron == n)
        assert units.size == 1, f"neuron {n} split into units {units}"
        assert set(result.units.electrodes(int(units[0]))) == {2 * n, 2 * n + 1}
    # the best electrode is the one with the larger gain (larger spikes)
    u0 = int(np.flatnonzero(neuron == 0)[0])
    assert result.units.best[u0] == int(np.argmax(np.where(planted.electrode_neuron == 0,
                                                           planted.gain, -1)))  # fmt: skip
    c = result.connectivity
    same = neuron[c.pre] == neuron[c.post]
    assert not same.any(), "a connection between two units of one neuron"
    # neuron 5 is also seen extracellularly (no intracellular trace): never postsynaptic
    for u in np.flatnonzero(neuron == 5):
        if not result.units.intracellular[u]:
            assert u not in c.post


def test_shuffled_spike_times_yield_almost_nothing():
    planted = planted_recording(duration_s=40.0, shuffle=True, seed=11)
    result = extract(planted.recording, load_params(), progress=False)
    assert result.units.n_units >= 20
    assert result.n_tested > 300
    assert result.connectivity.n <= 1


def test_scores_are_reported_by_amplitude_and_noise_bins(planted, planted_result):
    s = score(planted_result, planted.recording.truth)
    assert len(s["by_psp"]) == 5 and len(s["by_snr"]) == 5
    assert sum(row["n_true"] for row in s["by_psp"]) == s["n_observable"]
    assert s["recall"] >= 11 / 12
    assert s["snr_at_least_3"]["recall"] >= 11 / 12
    assert s["latency_error_median_s"] < 1e-3
    # the realised threshold is the weakest detection's |z|: beyond the BH level
    assert 3.0 < s["snr_at_least_3"]["threshold_z"] < 40.0
    assert 0.0 <= s["snr_at_least_3"]["recall_ceiling"] <= 1.0


def test_the_detection_threshold_undoes_the_sidak_correction():
    from instrument.extract.score import detection_threshold_z

    # one window: p = 2 × the normal tail beyond z
    assert detection_threshold_z(np.array([1e-9, 0.0455]), 1) == pytest.approx(2.0, abs=1e-3)
    # six windows: the family p of 6 × 2.87e-7 is a window p of 2.87e-7, |z| 5.13
    assert detection_threshold_z(np.array([6 * 2.87e-7]), 6) == pytest.approx(5.13, abs=0.01)
    assert np.isnan(detection_threshold_z(np.zeros(0), 6))


def test_a_disynaptic_response_relayed_by_an_eventful_target_is_dropped():
    from instrument.extract.pipeline import relayed

    params = load_params()
    # a=0 drives x=1 reliably (strong, firing probability +0.8); x -> b=2 is 1 mV;
    # a -> b shows 0.7 mV (relayed: ≤ 2 × 0.8 mV) and a -> c=3 shows 3 mV (no relay to c)
    pre = np.array([0, 1, 0, 0])
    post = np.array([1, 2, 2, 3])
    kind = np.full(4, KIND_EXCITATORY)
    strong = np.array([True, False, False, False])
    kept = np.ones(4, dtype=bool)
    gained = np.array([0.8, 0.0, 0.0, 0.0])
    weight = np.array([2e-3, 1e-3, 0.7e-3, 3e-3])
    out = relayed(pre, post, kind, strong, kept, gained, weight, params)
    assert out.tolist() == [False, False, True, False]
    weight[2] = 2e-3  # larger than twice the relay: a synapse of its own
    assert not relayed(pre, post, kind, strong, kept, gained, weight, params)[2]
