"""The raw-sample pass: spike times, bad channels, gaps, decimated subthreshold traces."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from instrument.extract.params import load_params
from instrument.extract.pipeline import extract, lost_decimated, make_triggers, prepare, summarize
from instrument.extract.spikes import RawPass, plan_chunks
from instrument.extract.units import coincidences
from instrument.extract.volts import calibrated_volts, channel_calibration
from instrument.recording import GAP_FILL
from tests.instrument.extract.synthetic import planted_recording


def _raw(recording, params):
    plan = plan_chunks(recording, params)
    rp = RawPass(recording, channel_calibration(recording), params, plan)
    return plan, [rp.run(i) for i in range(plan.n_chunks)]


def test_spike_times_match_the_planted_trains(planted, planted_result):
    fs = planted.recording.sample_rate_hz
    units = planted_result.units
    for u in range(units.n_units):
        neuron = int(planted.electrode_neuron[units.best[u]])
        true = planted.spikes[neuron]
        got = units.spikes(u)
        hit = coincidences(true, got, round(0.3e-3 * fs))
        assert hit >= 0.98 * true.size, f"unit {u}: {hit} of {true.size} spikes"
        assert got.size <= true.size * 1.02


def test_bad_channels_gaps_and_decimated_traces():
    planted = planted_recording(n_neurons=6, duration_s=6.0, synapses=[], seed=3)
    rec = planted.recording
    codes = np.array(rec.traces)
    saturated, flat = 13, 15
    codes[:, saturated] = 32767
    codes[:, flat] = 7
    gap = (30_000, 32_000)
    codes[gap[0] : gap[1]] = GAP_FILL
    rec = dataclasses.replace(rec, traces=codes, gaps=np.array([gap]))
    params = load_params(chunk_s=0.5)
    plan, results = _raw(rec, params)
    summary = summarize(results, plan, None)
    prep = prepare(rec, summary, plan, params)
    assert prep.summary.bad[saturated] and prep.summary.bad[flat]
    assert prep.summary.bad.sum() == 2
    # no spike inside the gap, decimated samples there are NaN, everything else finite
    s = prep.summary.spike_sample
    assert not np.any((s >= gap[0]) & (s < gap[1]))
    dec = np.concatenate([r.decimated_v for r in results], axis=1)
    q = plan.q
    assert np.all(np.isnan(dec[0, gap[0] // q : gap[1] // q]))
    good = ~prep.summary.bad
    assert np.isfinite(dec[good][:, : gap[0] // q - 1]).all()
    # no trigger window touches the gap
    lost = lost_decimated(rec, plan)
    trig = make_triggers(prep.units, plan.n_decimated, q, lost, params)
    bnd = params.boundaries()
    near = np.arange(gap[0] // q - bnd[-1] + 1, gap[1] // q - bnd[0])
    assert not trig.ok[near].any()
    # decimation is the box average of the calibrated trace away from spikes
    c = 2 * 4  # a neuron's electrode
    volts = calibrated_volts(rec, 0, 10_000)[:, c]
    box = volts.reshape(-1, q).mean(axis=1)
    spikes = prep.summary.spikes_of(c)
    far = np.ones(box.size, dtype=bool)
    for t in spikes[spikes < 10_000] // q:
        far[max(0, t - 2) : t + 7] = False
    np.testing.assert_allclose(dec[c, : box.size][far], box[far], atol=2e-6)


def test_a_recording_without_units_is_a_clear_error():
    planted = planted_recording(n_neurons=2, duration_s=2.0, synapses=[], seed=5)
    rec = dataclasses.replace(planted.recording, traces=np.zeros_like(planted.recording.traces))
    import pytest

    from instrument.extract.pipeline import ExtractionError

    with pytest.raises(ExtractionError, match="no units"):
        extract(rec, load_params(), progress=False)


def test_decimated_traces_written_into_a_strided_view():
    """The whole-recording scratch hands each chunk a (C, n) view with rows far apart: the
    kernel fills it exactly as it fills a fresh array, and a wrong shape is refused."""
    planted = planted_recording(n_neurons=4, duration_s=3.0, synapses=[], seed=5)
    rec = planted.recording
    params = load_params(chunk_s=0.5)
    plan, fresh = _raw(rec, params)
    rp = RawPass(rec, channel_calibration(rec), params, plan)
    whole = np.full((rec.n_channels, plan.n_decimated + 3), -1.0, dtype=np.float32)
    for i, r in enumerate(fresh):
        start, stop = plan.bounds(i)
        view = whole[:, start // plan.q : stop // plan.q]
        got = rp.run(i, view)
        assert np.shares_memory(got.decimated_v, whole)
        np.testing.assert_array_equal(view, r.decimated_v)
        np.testing.assert_array_equal(got.spike_sample, r.spike_sample)
    assert np.all(whole[:, plan.n_decimated :] == -1.0)
    with pytest.raises(ValueError, match="float32"):
        rp.run(0, np.zeros((rec.n_channels, 7), dtype=np.float32))
