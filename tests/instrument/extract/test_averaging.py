"""The all-pairs kernel and the candidate statistics against naive loops; jitters; flags;
trace noise; grouping independence."""

from __future__ import annotations

import numpy as np
import pytest

from instrument.extract import averaging, psp
from instrument.extract.averaging import EVENT, OK, TESTED, VALID
from instrument.extract.params import load_params
from instrument.extract.pipeline import (
    NOISE_STRIDE,
    analyse_group,
    group_inputs,
    prepare,
    summarize,
    trace_noise,
)
from instrument.extract.spikes import RawPass, plan_chunks
from instrument.extract.volts import channel_calibration
from instrument.extract.workspace import Workspace


def test_screen_kernel_equals_naive_window_sums():
    rng = np.random.default_rng(0)
    n_post, T = 70, 3000  # two blocks, the second partial
    x = rng.normal(0, 1e-3, (n_post, T)).astype(np.float32)
    x[5, 100:120] = np.nan
    bnd = np.array([-10, -1, 2, 5, 9, 14, 20])
    n_pre = 9
    pre = rng.integers(0, n_pre, 400)
    t = rng.integers(30, T - 30, 400)
    lo, hi = 0, T
    blocks = -(-n_post // averaging.WIDTH)
    # a buffer longer than the segment, as the pipeline passes (rows past it untouched)
    q = np.full((blocks, hi - lo + 1 + 37, averaging.WIDTH), np.inf, dtype=np.float32)
    averaging.prefix_blocks(x, lo, hi, q)
    acc = np.zeros((blocks, n_pre, bnd.size, averaging.WIDTH), dtype=np.float32)
    order = averaging.visit_order(pre, t)
    averaging.screen_kernel(q, acc, pre[order], t[order] - lo, bnd)
    assert np.isinf(q[:, hi - lo + 1 :]).all()
    sums = acc.transpose(1, 0, 3, 2).reshape(n_pre, -1, bnd.size)[:, :n_post]
    n = np.bincount(pre, minlength=n_pre)
    windows = np.array([(1, 2), (2, 3), (3, 4)])
    got = psp.bin_responses(sums.astype(np.float64), n[:, None], bnd, windows)
    xz = np.nan_to_num(x.astype(np.float64))
    for i in range(n_pre):
        ts = t[pre == i]
        for j in (0, 5, 63, 64, 69):
            base = np.mean([xz[j, s - 10 : s - 1].mean() for s in ts])
            for r, (a, b) in enumerate(windows):
                want = np.mean([xz[j, s + bnd[a] : s + bnd[b]].mean() for s in ts]) - base
                assert abs(got[i, j, r] - want) < 2e-6


def test_jitter_is_deterministic_and_within_its_annulus():
    j = np.array([averaging.jitter(1, 3, s, k, 20, 50) for s in range(50) for k in range(100)])
    again = np.array([averaging.jitter(1, 3, s, k, 20, 50) for s in range(50) for k in range(100)])
    assert np.array_equal(j, again)
    assert np.all((np.abs(j) >= 20) & (np.abs(j) <= 50))
    assert abs(np.mean(j > 0) - 0.5) < 0.05
    counts = np.bincount(np.abs(j) - 20, minlength=31)
    assert counts.min() > 0.6 * counts.mean()
    assert averaging.jitter(2, 3, 0, 0, 20, 50) != averaging.jitter(1, 3, 0, 0, 20, 50) or (
        averaging.jitter(2, 3, 0, 1, 20, 50) != averaging.jitter(1, 3, 0, 1, 20, 50)
    )


def test_results_do_not_depend_on_how_post_units_are_grouped(planted):
    rec = planted.recording
    params = load_params()
    plan = plan_chunks(rec, params)
    rp = RawPass(rec, channel_calibration(rec), params, plan)
    results = [rp.run(i) for i in range(plan.n_chunks)]
    dec = np.concatenate([r.decimated_v for r in results], axis=1)
    prep = prepare(rec, summarize(results, plan, None), plan, params)
    whole = [analyse_group(dec[prep.units.best[p]], inp)
             for p, inp in group_inputs(prep, rec, params, 64)]  # fmt: skip
    assert len(whole) == 1
    # the groups share one workspace, as in extract(): no result may point into it
    work = Workspace()
    split = [analyse_group(dec[prep.units.best[p]], inp, work)
             for p, inp in group_inputs(prep, rec, params, 7)]  # fmt: skip
    assert len(split) > 1 and work.nbytes > 0
    for name in ("pre", "post", "mean", "sd", "null_mean", "null_sd", "p", "trace_sd_v"):
        a = getattr(whole[0], name)
        b = np.concatenate([getattr(g, name) for g in split])
        assert np.array_equal(a, b, equal_nan=True), name


def test_bridge_replaces_spikes_by_straight_lines_and_merges_overlaps():
    row = np.arange(100, dtype=np.float32)
    row[20:30] = 1000.0  # a spike and its tail
    row[31:40] = 1000.0  # a second one, overlapping the first's bridge
    averaging.bridge(row, np.array([21, 32]), 1, 9)  # 20…30 and 31…41: one stretch
    assert np.allclose(row, np.arange(100))  # the line from 19 to 42 is the ramp itself
    edge = np.full(10, 5.0, dtype=np.float32)
    edge[:3] = 99.0
    averaging.bridge(edge, np.array([0]), 1, 2)  # at the start: flat at the first sample after
    assert np.allclose(edge, 5.0)


def _direct_response(z: np.ndarray, t: int, bnd: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Window means minus the baseline mean at trigger t, summed sample by sample."""
    base = z[t + bnd[0] : t + bnd[1]].mean()
    return np.array([z[t + bnd[a] : t + bnd[b]].mean() - base for a, b in windows])


def test_candidate_statistics_equal_a_direct_loop_over_triggers_and_surrogates():
    params = load_params()
    bnd = np.asarray(params.boundaries(), dtype=np.int64)
    windows = np.asarray(params.windows(), dtype=np.int64)
    j_min, j_max = params.dec(params.jitter_min_s), params.dec(params.jitter_s)
    rng = np.random.default_rng(3)
    n_post, T, n_pre = 3, 9000, 4  # three segments of the kernel
    x = rng.normal(0, 1e-3, (n_post, T)).astype(np.float32)
    x[1, 4000:4010] = np.nan
    kinds = np.array([0, OK, OK | TESTED, OK | TESTED | EVENT, OK | EVENT], dtype=np.uint8)
    flags = kinds[rng.integers(0, kinds.size, (n_post, T))]
    trains = [np.sort(rng.choice(T, 80, replace=False)) for _ in range(n_pre)]
    trig_t = np.concatenate(trains).astype(np.int64)
    trig_ptr = np.concatenate([[0], np.cumsum([t.size for t in trains])]).astype(np.int64)
    pair_pre = np.array([0, 2, 1, 3], dtype=np.int64)
    post_ptr = np.array([0, 2, 4, 4], dtype=np.int64)  # post 2 has no candidate
    k, r = pair_pre.size, windows.shape[0]
    got = (np.zeros((k, r)), np.zeros((k, r)), np.zeros(k, dtype=np.int64),
           np.zeros((k, r)), np.zeros((k, r)), np.zeros((k, 3)))  # fmt: skip
    jitters = averaging.jitter_table(
        params.seed, trig_ptr, np.arange(n_pre), params.n_surrogates, j_min, j_max
    )
    averaging.pair_statistics(
        x, flags, post_ptr, pair_pre, trig_ptr, trig_t, bnd, windows, jitters, j_max, *got
    )
    n_s = params.n_surrogates
    for kk in range(k):
        p = int(np.searchsorted(post_ptr, kk, side="right") - 1)
        u = int(pair_pre[kk])
        row = x[p].astype(np.float64)
        z = np.where(np.isfinite(row), row - np.nanmean(row), 0.0)
        real, n_ok, n_ev = [], 0, 0
        fake = [[] for _ in range(n_s)]
        s_ok, s_ev = np.zeros(n_s), np.zeros(n_s)
        for i in range(trig_ptr[u], trig_ptr[u + 1]):
            t0 = int(trig_t[i])
            if not (-bnd[0] + j_max <= t0 < T - bnd[-1] - j_max) or not flags[p, t0] & OK:
                continue
            n_ok += 1
            n_ev += bool(flags[p, t0] & EVENT)
            if flags[p, t0] & TESTED:
                real.append(_direct_response(z, t0, bnd, windows))
            for s in range(n_s):
                t = t0 + averaging.jitter(params.seed, u, s, i - trig_ptr[u], j_min, j_max)
                if flags[p, t] & OK:
                    s_ok[s] += 1
                    s_ev[s] += bool(flags[p, t] & EVENT)
                if flags[p, t] & TESTED:
                    fake[s].append(_direct_response(z, t, bnd, windows))
        real = np.array(real)
        null = np.array([np.mean(f, axis=0) for f in fake])
        assert got[2][kk] == len(real) > 10
        np.testing.assert_allclose(got[0][kk], real.mean(axis=0), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(got[1][kk], real.std(axis=0, ddof=1), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(got[3][kk], null.mean(axis=0), rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(got[4][kk], null.std(axis=0, ddof=1), rtol=1e-9, atol=1e-15)
        want_event = (n_ev / n_ok, np.mean(s_ev / s_ok), n_ok)
        np.testing.assert_allclose(got[5][kk], want_event, rtol=1e-12)


def test_unit_flags_mark_usable_valid_tested_and_event_samples():
    n_dec, q = 300, 10
    ok = np.ones(n_dec, dtype=bool)
    ok[:5] = False
    out = np.empty((1, n_dec), dtype=np.uint8)
    spikes = np.array([100 * q, 200 * q + 3])  # raw samples of the post unit's two spikes
    before, after, test_after, ev_lo, ev_hi = 3, 20, 7, 2, 20
    averaging.unit_flags(
        n_dec, np.array([0]), np.array([0, 2]), spikes, q, ok, before, after, test_after,
        ev_lo, ev_hi, out,
    )  # fmt: skip
    f = out[0]
    t = np.arange(n_dec)
    near = np.zeros(n_dec, dtype=bool)
    near_test = np.zeros(n_dec, dtype=bool)
    event = np.zeros(n_dec, dtype=bool)
    for s in (100, 200):
        near |= (t >= s - after) & (t <= s + before)
        near_test |= (t >= s - test_after) & (t <= s + before)
        event |= (t >= s - ev_hi + 1) & (t <= s - ev_lo)
    assert np.array_equal((f & OK) != 0, ok)
    assert np.array_equal((f & VALID) != 0, ok & ~near)
    assert np.array_equal((f & TESTED) != 0, ok & ~near_test)
    assert np.array_equal((f & EVENT) != 0, event)


def test_trace_noise_is_the_median_over_lags_of_each_lags_robust_sd():
    params = load_params()
    rng = np.random.default_rng(4)
    n_post, T = 4, 6000
    x = np.cumsum(rng.normal(0, 1e-4, (n_post, T)), axis=1).astype(np.float32)
    x[1, 2000:2300] = np.nan
    x[2, ::3] = np.nan  # some lags see a third of the samples missing
    x[3, 40:] = np.nan  # too few samples: NaN
    flags = np.where(rng.random((n_post, T)) < 0.9, VALID, 0).astype(np.uint8)
    got = trace_noise(x, flags, params)
    b0, b1 = params.dec(params.baseline_start_s), params.dec(params.baseline_end_s)
    l0, l1 = params.dec(params.response_edges_s[0]), params.dec(params.response_edges_s[-1])
    for p in range(n_post):
        ts = np.flatnonzero(flags[p, max(0, -b0) : T - l1] & VALID)[::NOISE_STRIDE] + max(0, -b0)
        row = x[p].astype(np.float64)
        base = np.array([np.nansum(row[t + b0 : t + b1]) / (b1 - b0) for t in ts])
        sds = []
        for lag in range(l0, l1):
            d = row[ts + lag] - base
            d = d[np.isfinite(d)]
            if d.size < 10:
                sds.append(np.nan)
                continue
            med = np.sort(d)[d.size // 2]  # the upper median, as the extraction takes it
            sds.append(1.4826 * np.sort(np.abs(d - med))[d.size // 2])
        want = np.nanmedian(sds) if np.isfinite(sds).any() else np.nan
        np.testing.assert_allclose(got[p], want, rtol=1e-12)
    assert np.isnan(got[3]) and np.isfinite(got[:3]).all()


def test_workspace_reuses_its_buffers_and_grows_when_asked_for_more():
    work = Workspace()
    a = work.array("x", (4, 8), np.float32)
    assert a.shape == (4, 8) and a.dtype == np.float32 and a.flags.c_contiguous
    b = work.array("x", (2, 8), np.float64)  # 128 bytes fit the 128 held: same memory
    assert np.shares_memory(a, b)
    c = work.zeros("x", (4, 9), np.float32)  # more than held: a new, larger buffer
    assert not np.shares_memory(a, c) and not c.any()
    assert work.nbytes == c.nbytes
    assert not np.shares_memory(work.array("y", (4, 8), np.float32), c)


def test_group_size_fits_the_budget_and_keeps_one_block_per_thread():
    import numba

    from instrument.extract.pipeline import ExtractionError, group_size

    n_dec, n_pre = 60_000, 4096
    cap = averaging.WIDTH * numba.get_num_threads()
    assert group_size(n_dec, n_pre, load_params(), 0) == cap  # 2 GB would hold far more
    small = load_params(memory_budget_bytes=100 * 1_200_000)  # ~1.2 MB per post unit
    assert group_size(n_dec, n_pre, small, 0) == averaging.WIDTH
    with pytest.raises(ExtractionError, match="too small"):
        group_size(n_dec, n_pre, small, reserved=small.memory_budget_bytes)


def test_screen_candidates_match_a_direct_median_and_mad_per_window():
    """The screen's z (compiled, selection by counting) against numpy: for each post unit
    and window, the responses' median and 1.4826 × MAD over the allowed pre units (not
    itself), |z| at most over windows, the strongest ``max_candidates_per_post`` kept."""
    params = load_params(screen_z=2.5, max_candidates_per_post=7)
    rng = np.random.default_rng(11)
    bnd = np.asarray(params.boundaries(), dtype=np.int64)
    windows = np.asarray(params.windows(), dtype=np.int64)
    n_pre, n_post, width = 600, 70, averaging.WIDTH
    n_blocks = -(-n_post // width)
    acc = np.cumsum(rng.standard_normal((n_blocks, n_pre, bnd.size, width)), axis=2)
    acc = acc.astype(np.float32)
    n_trig = rng.integers(10, 400, n_pre)
    pre_units = np.arange(n_pre) * 2  # unit ids
    post_units = np.arange(n_post) * 3  # every other post unit is also a pre unit
    got_pre, got_post, got_z = psp.screen_candidates(
        acc, n_trig, bnd, windows, pre_units, post_units, params
    )
    allowed = np.flatnonzero(n_trig >= params.min_triggers)
    want_pre, want_post, want_z = [], [], []
    for p, unit in enumerate(post_units):
        a = acc[p // width, :, :, p % width].astype(np.float64)[allowed]
        n = n_trig[allowed].astype(np.float64)
        base = (a[:, 1] - a[:, 0]) / ((bnd[1] - bnd[0]) * n)
        y = np.stack(
            [((a[:, hi] - a[:, lo]) / ((bnd[hi] - bnd[lo]) * n) - base) * np.sqrt(n)
             for lo, hi in windows]
        )  # fmt: skip
        own = pre_units[allowed] == unit
        y[:, own] = np.nan
        best = np.zeros(allowed.size)
        for row in y:
            finite = row[np.isfinite(row)]
            k = finite.size // 2
            center = np.partition(finite, k)[k]
            spread = 1.4826 * np.partition(np.abs(finite - center), k)[k]
            if spread > 0:
                z = np.abs(row - center) / spread
                best = np.where(z > best, z, best)
        hits = np.flatnonzero(best >= params.screen_z)
        if hits.size > params.max_candidates_per_post:
            order = np.argsort(-best[hits], kind="mergesort")[: params.max_candidates_per_post]
            hits = np.sort(hits[order])
        want_pre += list(allowed[hits])
        want_post += [p] * hits.size
        want_z += list(best[hits])
    assert len(want_pre) > n_post  # the test sees candidates, and caps
    np.testing.assert_array_equal(got_pre, want_pre)
    np.testing.assert_array_equal(got_post, want_post)
    np.testing.assert_array_equal(got_z, want_z)
