"""The whitened test: AR prediction errors, trial weights, kick latency, σ of the statistic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from instrument.extract import averaging, psp
from instrument.extract.params import load_params
from instrument.extract.pipeline import (
    GroupInput,
    Triggers,
    extract,
    screen_visits,
    unit_flags,
    weight_trials,
)
from tests.instrument.extract.test_planted import _found


def _ar2(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, innovations) of x[t] = 1.6 x[t-1] − 0.64 x[t-2] + e[t] (slow, like membrane noise)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = 1.6 * x[t - 1] - 0.64 * x[t - 2] + e[t]
    return x, e


def _whitened(x: np.ndarray, order: int, use: np.ndarray) -> np.ndarray:
    out = x[None, :].astype(np.float32)
    averaging.whiten(out, order, use, out)  # in place, as the pipeline runs it
    return out[0]


def test_the_prediction_error_recovers_the_innovations():
    x, e = _ar2(20_000)
    out = _whitened(x, 2, np.ones(x.size, dtype=bool))
    assert np.isnan(out[:2]).all()
    r = out[100:].astype(np.float64)
    assert np.corrcoef(r, e[100:])[0, 1] > 0.999
    assert abs(np.corrcoef(r[1:], r[:-1])[0, 1]) < 0.03  # white
    assert np.std(r) < 0.2 * np.std(x)  # most of the slow noise is predictable


def test_the_model_is_fitted_only_where_the_test_reads():
    x, e = _ar2(20_000, seed=1)
    dirty = x.copy()
    use = np.ones(x.size, dtype=bool)
    for start in range(1000, 20_000, 2000):  # "bursts": large slow swings, not used
        dirty[start : start + 300] += 200 * np.sin(np.linspace(0, np.pi, 300))
        use[start - 5 : start + 305] = False
    masked = _whitened(dirty, 2, use)
    unmasked = _whitened(dirty, 2, np.ones_like(use))
    clean = use.copy()
    clean[:10] = False
    err_masked = np.std(masked[clean] - e[clean])
    err_unmasked = np.std(unmasked[clean] - e[clean])
    assert err_masked < 0.05
    assert err_unmasked > 5 * err_masked


def test_trials_are_weighted_by_gain_over_error_variance():
    rng = np.random.default_rng(2)
    chunk, n_chunks = 1000, 40
    e = rng.standard_normal((1, chunk * n_chunks)).astype(np.float32)
    e[0, 10 * chunk : 20 * chunk] *= 2.0  # noisier chunks: a quarter of the weight
    gain = np.ones((1, n_chunks))
    gain[0, 30:] = 3.0  # a larger gain, smoothed over GAIN_SMOOTH_CHUNKS chunks
    out = weight_trials(e, gain, chunk, np.ones(e.shape[1], dtype=bool))
    w = (out / e)[0].reshape(n_chunks, chunk)[:, 0]
    assert w[15] / w[5] == pytest.approx(0.25, rel=0.1)
    assert w[38] / w[5] == pytest.approx(3.0, rel=0.15)
    assert np.median(w) == pytest.approx(1.0)


def test_the_kick_latency_reads_like_an_onset():
    params = load_params()
    # windows: zero-lag [-1, 1) ms, then one-lag bins [1, 2) … [6, 7) ms
    z = np.zeros((5, 7))
    z[0, 0] = 9.0  # zero-lag
    z[1, 3] = 9.0  # a kick in [3, 4) ms alone: the PSP started in the sample before
    z[2, 3:5] = 6.0  # split evenly over [3, 4) and [4, 5)
    z[3, 3:5] = -6.0  # inhibitory: the same
    z[4, 2:5] = (-3.0, 9.0, 3.0)  # the neighbour against the kick's sign does not count
    got = psp.kick_latency(z, np.argmax(np.abs(z), axis=1), params)
    assert got == pytest.approx([-2e-3, 2e-3, 2.5e-3, 2.5e-3, 2.25e-3])
    assert got[0] < params.min_latency_s  # the zero-lag bin is never a chemical synapse


def test_sigma_is_the_trial_error_unless_the_trials_or_the_pair_are_overdispersed():
    n = np.full(7, 100)
    sd = np.full((7, 1), 10.0)  # trial standard error 1
    mean = np.full((7, 1), 5.0)
    null_mean = np.zeros((7, 1))
    # post 0: surrogate SDs scattered about the trial error as 20 draws scatter (median 1)
    # and one pair whose surrogates spread far beyond chance; post 1: overdispersed trials
    null_sd = np.array([[0.8], [0.9], [1.0], [1.3], [4.0], [2.0], [2.0]])
    post = np.array([0, 0, 0, 0, 0, 1, 1])
    sig = psp.significance(mean, sd, n, null_mean, null_sd, 20, post)
    scale = np.sqrt(1 + 1 / 20)
    assert sig.z[:4, 0] == pytest.approx(5.0 / scale)  # sampling noise of the surrogates
    assert 5.0 / (4.0 * scale) < sig.z[4, 0] < 5.0 / (2.0 * scale)  # the pair's own spread
    assert sig.z[5:, 0] == pytest.approx(5.0 / (2.0 * scale))  # the post unit's dispersion
    assert (sig.p > 0).all()


def test_whitening_raises_the_planted_synapses_significance(planted, planted_result):
    truth = planted.recording.truth
    boxcar = extract(
        planted.recording, dataclasses.replace(load_params(), whiten_order=0), progress=False
    )
    white_found, box_found = _found(planted_result, truth), _found(boxcar, truth)
    chemical = [
        (int(a), int(b)) for a, b, k in zip(planted.pre, planted.post, planted.kind, strict=True)
        if k != psp.KIND_ELECTRICAL
    ]  # fmt: skip
    z_white = np.array([planted_result.connectivity.z[white_found[key]] for key in chemical])
    z_box = np.array([boxcar.connectivity.z[box_found[key]] for key in chemical])
    assert (z_white > z_box).all() and np.median(z_white / z_box) > 1.3


def test_the_whitened_test_keeps_trials_whose_post_spike_comes_after_what_it_reads():
    params = load_params()
    n_dec = 400
    ok = np.ones(n_dec, dtype=bool)
    trig = Triggers(ptr=np.array([0, 0]), t=np.zeros(0, dtype=np.int64), ok=ok,
                    burst=~ok, n_ok=np.zeros(1, dtype=np.int64))  # fmt: skip
    q = 10
    inp = GroupInput(
        params=params, posts=np.array([0]), pres=np.zeros(0, dtype=np.int64), triggers=trig,
        spike_ptr=np.array([0, 1]), spike_sample=np.array([200 * q]), q=q,
        sample_rate_hz=10_000.0, gain=np.ones((1, 1)), chunk_dec=n_dec,
        visits=screen_visits(trig, np.zeros(0, dtype=np.int64), n_dec, params),
    )  # fmt: skip
    reach = params.boundaries()[-1]  # the test reads up to 7 ms after the trigger
    flags = unit_flags(n_dec, inp, reach)
    valid = (flags & averaging.VALID) != 0
    valid_test = (flags & averaging.TESTED) != 0
    after = params.dec(params.exclude_after_s)
    # the post unit fires at 200: a trigger 10 ms before it is out of the averages (the spike
    # would sit in them) but in the whitened test (it reads up to 7 ms)
    assert not valid[0, 190] and valid_test[0, 190]
    assert not valid[0, 200 - after] and valid_test[0, 200 - after]
    assert not valid_test[0, 200 - reach] and not valid_test[0, 230]
    assert valid[0, 200 - after - 1] and valid[0, 231]
