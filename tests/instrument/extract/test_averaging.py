"""The all-pairs kernel against a naive per-pair loop; jitters; grouping independence."""

from __future__ import annotations

import numpy as np

from instrument.extract import averaging, psp
from instrument.extract.params import load_params
from instrument.extract.pipeline import analyse_group, group_inputs, prepare, summarize
from instrument.extract.spikes import RawPass, plan_chunks
from instrument.extract.volts import channel_calibration


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
    q = np.empty((blocks, hi - lo + 1, averaging.WIDTH), dtype=np.float32)
    averaging.prefix_blocks(x, lo, hi, q)
    acc = np.zeros((blocks, n_pre, bnd.size, averaging.WIDTH), dtype=np.float32)
    order = averaging.visit_order(pre, t)
    averaging.screen_kernel(q, acc, pre[order], t[order] - lo, bnd)
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
    split = [analyse_group(dec[prep.units.best[p]], inp)
             for p, inp in group_inputs(prep, rec, params, 7)]  # fmt: skip
    assert len(split) > 1
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
