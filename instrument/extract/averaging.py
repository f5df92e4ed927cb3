"""Spike-triggered averaging of subthreshold traces: all pairs, then candidate pairs.

**All pairs (the screen).** The detector needs, per (presynaptic unit, postsynaptic unit),
the mean of the post unit's trace in a few windows around the pre unit's spikes: a
baseline and some response bins. A window mean is a difference of two samples of the
trace's running (prefix) sum, so every bin of every pair comes from summing the prefix
sum at a handful of *boundaries* (``M`` = bins + 1) around each spike::

    acc[pre, post, m] = Σ_{spikes t of pre} Q_post[t + b_m],   Q_post[t] = Σ_{τ<t} x_post[τ]

That is ``M`` additions per (spike, post) instead of one per lag of a dense ±20 ms
average (41 at 1 kHz, 401 at 10 kHz): ~10^11 additions for 4096 units, 60 s, 5 Hz
instead of ~10^12, and a result of ``M`` floats per pair instead of a whole trace.
Prefix sums are laid out in blocks of :data:`WIDTH` post units, time-major, so one
spike adds ``M`` contiguous rows of ``WIDTH`` floats (vectorised) into an accumulator
row of its pre unit; spikes are visited in windows of time, grouped by pre unit inside
a window, so accumulators stay in L1/L2 while a window of prefix sums stays in L2. Post
blocks run in parallel. Time is cut into segments; prefix sums restart at each
segment (relative to a per-segment mean), so memory stays bounded and precision high.
The order of every floating-point addition depends only on the data and the
parameters, never on how post units are grouped or which process runs a group.

**Candidate pairs.** :func:`pair_statistics` revisits the pairs that pass the screen,
one by one (gathering from one post unit's prefix sum), with the per-pair trigger
exclusion and the jittered surrogates the screen cannot afford;
:func:`average_traces` gives the full-resolution average PSP of the pairs that matter.
"""

from __future__ import annotations

import numba
import numpy as np

from instrument.extract.quickselect import kth_finite, select_kth

WIDTH = 64
"""Post units per block of the all-pairs kernel (a fixed width numba vectorises)."""

TIME_WINDOW = 1000
"""Decimated samples per window of the spike visiting order (see the module docstring)."""

_PAIR_SEGMENT = 4096
"""Decimated samples per time segment of the candidate-pair kernels (cache-sized)."""

OK = 1
"""Flag bit: a trigger at this sample is usable at all (``Triggers.ok``)."""
EVENT = 2
"""Flag bit: the post unit fires in the response window after this sample."""
TESTED = 4
"""Flag bit: a trigger here counts for the test (no post spike in what the test reads)."""
VALID = 8
"""Flag bit: a trigger here counts for the average (no post spike near it)."""


@numba.njit(cache=True, parallel=True)
def prefix_blocks(x: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
    """Prefix sums of rows of ``x`` over columns [lo, hi), blocked for the all-pairs kernel.

    ``x`` is (P, T) float32 (NaN = no data, counted as 0 after removing each row's
    segment mean); ``out`` is (ceil(P / WIDTH), ≥ hi − lo + 1, WIDTH) float32 with
    ``out[b, k, j] = Σ_{lo ≤ τ < lo + k} (x[b·WIDTH + j, τ] − mean)`` for k ≤ hi − lo.
    """
    n_rows = x.shape[0]
    n_blocks = out.shape[0]
    for b in numba.prange(n_blocks):
        q = out[b]
        r0 = b * WIDTH
        lanes = min(WIDTH, n_rows - r0)
        # every lane's sums run in time order; time outermost, so each step writes one
        # contiguous row of the block (and reads one cache line per trace every 16 steps)
        total = np.zeros(WIDTH)
        count = np.zeros(WIDTH, dtype=np.int64)
        for t in range(lo, hi):
            for j in range(lanes):
                v = x[r0 + j, t]
                if v == v:
                    total[j] += v
                    count[j] += 1
        mean = np.zeros(WIDTH)
        for j in range(lanes):
            if count[j] > 0:
                mean[j] = total[j] / count[j]
        s = np.zeros(WIDTH)
        q[0, :] = 0.0
        for t in range(lo, hi):
            row = q[t - lo + 1]
            for j in range(lanes):
                v = x[r0 + j, t]
                if v == v:
                    s[j] += v - mean[j]
                row[j] = s[j]
            for j in range(lanes, WIDTH):
                row[j] = 0.0


@numba.njit(cache=True)
def _screen_block(
    q: np.ndarray, acc: np.ndarray, pre: np.ndarray, row: np.ndarray, bnd: np.ndarray
) -> None:
    n_b = bnd.size
    for s in range(pre.size):
        a = acc[pre[s]]
        r0 = row[s]
        for m in range(n_b):
            src = q[r0 + bnd[m]]
            dst = a[m]
            for c in range(WIDTH):
                dst[c] += src[c]


@numba.njit(cache=True, parallel=True)
def screen_kernel(
    q_blocks: np.ndarray, acc: np.ndarray, pre: np.ndarray, row: np.ndarray, bnd: np.ndarray
) -> None:
    """``acc[b, pre[s], m, :] += q_blocks[b, row[s] + bnd[m], :]`` for every spike ``s``.

    ``acc`` is (blocks, n_pre, M, WIDTH) float32; spikes are best visited in
    :func:`visit_order`. Blocks run in parallel (no two threads share an accumulator).
    Pass C-contiguous arrays: the row adds vectorise only then.
    """
    for b in numba.prange(q_blocks.shape[0]):
        _screen_block(q_blocks[b], acc[b], pre, row, bnd)


def visit_order(pre: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Order of spikes for :func:`screen_kernel`: windows of time, by pre unit within one."""
    return np.lexsort((t, pre, t // TIME_WINDOW))


# --------------------------------------------------------------------------- pairs


@numba.njit(cache=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    """splitmix64 finaliser (a counter-based random number: no state, any order)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def jitter(seed: int, unit: int, surrogate: int, spike: int, j_min: int, j_max: int) -> int:
    """Jitter (decimated samples) of spike ``spike`` of ``unit`` in surrogate ``surrogate``:
    uniform over ±[j_min, j_max]; the same wherever and in whatever order it is asked."""
    key = (
        np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        + np.uint64(unit) * np.uint64(0xD1B54A32D192ED03)
        + np.uint64(surrogate) * np.uint64(0x8CB92BA72F3D8DD7)
        + np.uint64(spike)
    )
    r = _mix(key)
    span = np.uint64(j_max - j_min + 1)
    k = np.int64(r % (np.uint64(2) * span))
    return j_min + k if k < j_max - j_min + 1 else -(j_min + k - (j_max - j_min + 1))


def jitter_table(
    seed: int, trig_ptr: np.ndarray, units: np.ndarray, n_surrogates: int, j_min: int, j_max: int
) -> np.ndarray:
    """(triggers, n_surrogates) int16: :func:`jitter` of every trigger of ``units`` in every
    surrogate (rows of other units 0): the same surrogate trains whichever post unit asks."""
    if j_max > np.iinfo(np.int16).max:
        raise ValueError(f"jitter of {j_max} decimated samples does not fit the table")
    out = np.zeros((int(trig_ptr[-1]), n_surrogates), dtype=np.int16)
    _fill_jitters(seed, trig_ptr, np.asarray(units, dtype=np.int64), j_min, j_max, out)
    return out


@numba.njit(cache=True, parallel=True)
def _fill_jitters(
    seed: int, trig_ptr: np.ndarray, units: np.ndarray, j_min: int, j_max: int, out: np.ndarray
) -> None:
    for k in numba.prange(units.size):
        u = units[k]
        first = trig_ptr[u]
        for i in range(first, trig_ptr[u + 1]):
            for s in range(out.shape[1]):
                out[i, s] = jitter(seed, u, s, i - first, j_min, j_max)


@numba.njit(cache=True)
def _feature_rows(
    qrow: np.ndarray,
    lo: int,
    hi: int,
    bnd: np.ndarray,
    windows: np.ndarray,
    inv_width: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[t − lo, r]`` for t in [lo, hi): mean over response window r − mean over the
    baseline at trigger t, from the prefix sums ``qrow`` (``inv_width[r + 1]`` = 1 / window
    width, ``inv_width[0]`` for the baseline); rows whose windows leave ``qrow`` are 0."""
    n_bins = windows.shape[0]
    first = max(lo, -bnd[0])
    last = min(hi, qrow.size - bnd[-1])
    out[: max(first - lo, 0)] = 0.0
    out[max(last - lo, 0) : hi - lo] = 0.0
    a = np.empty(n_bins, dtype=np.int64)
    b = np.empty(n_bins, dtype=np.int64)
    for r in range(n_bins):
        a[r] = bnd[windows[r, 0]]
        b[r] = bnd[windows[r, 1]]
    b0 = bnd[0]
    b1 = bnd[1]
    w0 = inv_width[0]
    for t in range(first, last):
        f = out[t - lo]
        base = (qrow[t + b1] - qrow[t + b0]) * w0
        for r in range(n_bins):
            f[r] = (qrow[t + b[r]] - qrow[t + a[r]]) * inv_width[r + 1] - base


@numba.njit(cache=True)
def _prefix_row(row: np.ndarray, out: np.ndarray) -> None:
    """``out`` (T + 1,) float64: prefix sums of ``row`` (T,) minus its mean, NaN counted as 0
    (sequential sums: the same bits wherever it runs)."""
    total = 0.0
    count = 0
    for t in range(row.size):
        v = np.float64(row[t])
        if v == v:
            total += v
            count += 1
    mean = total / count if count > 0 else 0.0
    s = 0.0
    out[0] = 0.0
    for t in range(row.size):
        v = np.float64(row[t])
        if v == v:
            s += v - mean
        out[t + 1] = s


@numba.njit(cache=True, parallel=True)
def pair_statistics(
    x: np.ndarray,
    flags: np.ndarray,
    post_ptr: np.ndarray,
    pair_pre: np.ndarray,
    trig_ptr: np.ndarray,
    trig_t: np.ndarray,
    bnd: np.ndarray,
    windows: np.ndarray,
    jitters: np.ndarray,
    j_max: int,
    out_mean: np.ndarray,
    out_sd: np.ndarray,
    out_n: np.ndarray,
    out_null_mean: np.ndarray,
    out_null_sd: np.ndarray,
    out_event: np.ndarray,
) -> None:
    """Per candidate pair: response statistics and their jittered-surrogate null.

    Post unit p's candidate pairs are ``post_ptr[p]`` … ``post_ptr[p + 1]`` (pre units
    ``pair_pre``). ``x`` (P, T) the post units' tested traces (NaN = no data); ``flags``
    (P, T) their :func:`unit_flags` (:data:`OK`: any trigger at t is usable; :data:`TESTED`:
    a trigger at t counts for post unit p; :data:`EVENT`: p fires in the response window
    after t). Triggers of pre unit u are ``trig_t[trig_ptr[u]:trig_ptr[u+1]]`` (decimated
    samples, sorted); ``jitters[i, s]`` shifts trigger i in surrogate s
    (:func:`jitter_table`, within ±``j_max``). For pair k:

    - ``out_mean[k, r]``, ``out_sd[k, r]``: mean and SD over tested triggers of the
      response in window r (``windows[r]``: boundary indices; window mean − baseline
      mean), ``out_n[k]`` their number;
    - ``out_null_mean``, ``out_null_sd``: mean and SD of the same mean response over the
      surrogate trains (every usable trigger jittered, the jittered triggers validated
      exactly like real ones);
    - ``out_event[k] = (P_obs, P_null, n)``: fraction of usable triggers followed by a post
      spike in the response window, observed and in the surrogates, and their number.

    Each post unit's trace becomes prefix sums once (window means are differences of two
    of them); its pairs then advance through time together, segment by segment: the
    responses at every sample of a segment (and ``j_max`` around it) are computed once into
    a cache-resident table, and each trigger, real or jittered, reads one row of it.
    """
    n_bins = windows.shape[0]
    n_post, T = x.shape
    n_s = jitters.shape[1]
    inv_width = np.empty(n_bins + 1)
    inv_width[0] = 1.0 / (bnd[1] - bnd[0])
    for r in range(n_bins):
        inv_width[r + 1] = 1.0 / (bnd[windows[r, 1]] - bnd[windows[r, 0]])
    lo_reach = -bnd[0] + j_max
    hi_reach = bnd[-1] + j_max
    for p in numba.prange(n_post):
        k0 = post_ptr[p]
        n_k = post_ptr[p + 1] - k0
        if n_k == 0:
            continue
        qrow = np.empty(T + 1)
        _prefix_row(x[p], qrow)
        frow = flags[p]
        table = np.empty((_PAIR_SEGMENT + 2 * j_max, n_bins))
        s1 = np.zeros((n_k, n_bins))
        s2 = np.zeros((n_k, n_bins))
        n = np.zeros(n_k, dtype=np.int64)
        n_ok = np.zeros(n_k, dtype=np.int64)
        n_ev = np.zeros(n_k, dtype=np.int64)
        ss = np.zeros((n_k, n_s, n_bins))
        s_n = np.zeros((n_k, n_s), dtype=np.int64)
        s_ok = np.zeros((n_k, n_s), dtype=np.int64)
        s_ev = np.zeros((n_k, n_s), dtype=np.int64)
        cursor = np.empty(n_k, dtype=np.int64)
        for kk in range(n_k):
            cursor[kk] = trig_ptr[pair_pre[k0 + kk]]
        for seg in range(0, T, _PAIR_SEGMENT):
            seg_end = seg + _PAIR_SEGMENT
            t_lo = seg - j_max
            _feature_rows(
                qrow, max(t_lo, 0), min(seg_end + j_max, T), bnd, windows, inv_width,
                table[max(t_lo, 0) - t_lo :],
            )  # fmt: skip
            for kk in range(n_k):
                end = trig_ptr[pair_pre[k0 + kk] + 1]
                i = cursor[kk]
                while i < end and trig_t[i] < seg_end:
                    t0 = trig_t[i]
                    fl = frow[t0] if t0 >= lo_reach and t0 < T - hi_reach else 0
                    if fl & OK:
                        n_ok[kk] += 1
                        n_ev[kk] += (fl & EVENT) != 0
                        if fl & TESTED:
                            f = table[t0 - t_lo]
                            for r in range(n_bins):
                                s1[kk, r] += f[r]
                                s2[kk, r] += f[r] * f[r]
                            n[kk] += 1
                        jit = jitters[i]
                        for s in range(n_s):
                            t = t0 + jit[s]
                            fl = frow[t]
                            if fl & OK:
                                s_ok[kk, s] += 1
                                s_ev[kk, s] += (fl & EVENT) != 0
                            if fl & TESTED:
                                f = table[t - t_lo]
                                acc = ss[kk, s]
                                for r in range(n_bins):
                                    acc[r] += f[r]
                                s_n[kk, s] += 1
                    i += 1
                cursor[kk] = i
        for kk in range(n_k):
            k = k0 + kk
            nk = n[kk]
            out_n[k] = nk
            for r in range(n_bins):
                mean = s1[kk, r] / nk if nk > 0 else 0.0
                out_mean[k, r] = mean
                var = s2[kk, r] / nk - mean * mean if nk > 1 else 0.0
                out_sd[k, r] = np.sqrt(max(var, 0.0) * nk / (nk - 1)) if nk > 1 else 0.0
                m1 = 0.0
                m2 = 0.0
                for s in range(n_s):
                    v = ss[kk, s, r] / s_n[kk, s] if s_n[kk, s] > 0 else 0.0
                    m1 += v
                    m2 += v * v
                mean = m1 / n_s
                out_null_mean[k, r] = mean
                var = (m2 / n_s - mean * mean) * n_s / (n_s - 1)
                out_null_sd[k, r] = np.sqrt(max(var, 0.0))
            out_event[k, 0] = n_ev[kk] / n_ok[kk] if n_ok[kk] > 0 else 0.0
            ev = 0.0
            for s in range(n_s):
                ev += s_ev[kk, s] / s_ok[kk, s] if s_ok[kk, s] > 0 else 0.0
            out_event[k, 1] = ev / n_s
            out_event[k, 2] = n_ok[kk]


@numba.njit(cache=True)
def _mark(
    row: np.ndarray, spikes: np.ndarray, before: int, after: int, keep: np.uint8, add: np.uint8
) -> None:
    """``row[t] = row[t] & keep | add`` for t from ``before`` samples before to ``after``
    after every spike (clipped to the row)."""
    n = row.size
    for s in spikes:
        for t in range(max(0, s - before), min(n, s + after + 1)):
            row[t] = row[t] & keep | add


@numba.njit(cache=True, parallel=True)
def unit_flags(
    n_dec: int,
    posts: np.ndarray,
    spike_ptr: np.ndarray,
    spike_sample: np.ndarray,
    q: int,
    ok: np.ndarray,
    before: int,
    after: int,
    test_after: int,
    ev_lo: int,
    ev_hi: int,
    out: np.ndarray,
) -> None:
    """``out[i, t]`` (uint8): the flag bits of post unit ``posts[i]`` at decimated sample t
    (its spikes ``spike_sample[spike_ptr[u]:spike_ptr[u+1]]`` in raw samples, ``q`` raw per
    decimated): :data:`OK` = ``ok[t]``; :data:`VALID` = OK and no post spike from
    ``before`` samples before t to ``after`` after it; :data:`TESTED` the same with
    ``test_after``; :data:`EVENT` = a post spike from ``ev_lo`` to ``ev_hi − 1`` after t.
    """
    for i in numba.prange(posts.size):
        u = posts[i]
        spikes = spike_sample[spike_ptr[u] : spike_ptr[u + 1]] // q
        row = out[i]
        for t in range(n_dec):
            row[t] = OK | VALID | TESTED if ok[t] else 0
        _mark(row, spikes, after, before, ~np.uint8(VALID), np.uint8(0))
        _mark(row, spikes, test_after, before, ~np.uint8(TESTED), np.uint8(0))
        _mark(row, spikes, ev_hi - 1, -ev_lo, ~np.uint8(0), np.uint8(EVENT))


@numba.njit(cache=True, parallel=True)
def average_traces(
    x: np.ndarray,
    flags: np.ndarray,
    gain: np.ndarray,
    gain_step: int,
    post_ptr: np.ndarray,
    pair_pre: np.ndarray,
    trig_ptr: np.ndarray,
    trig_t: np.ndarray,
    first: int,
    n_lags: int,
    lo_reach: int,
    hi_reach: int,
    out: np.ndarray,
    out_gain: np.ndarray,
) -> None:
    """``out[k, l]``: mean of the post trace at ``t + first + l`` over the valid triggers t of
    pair k (the triggers whose ``flags`` have :data:`VALID`, skipping any that touch NaN);
    ``out_gain[k]``: the post electrode's gain (``gain[p, t // gain_step]``) averaged over
    the same triggers. Pairs are grouped by post unit as in :func:`pair_statistics`."""
    n_post, T = flags.shape
    for p in numba.prange(n_post):
        k0 = post_ptr[p]
        n_k = post_ptr[p + 1] - k0
        if n_k == 0:
            continue
        row = x[p]
        frow = flags[p]
        gaps = False  # any NaN in the row: only then are windows checked for them
        for t in range(T):
            gaps |= row[t] != row[t]
        acc = np.zeros((n_k, n_lags))
        g_acc = np.zeros(n_k)
        n = np.zeros(n_k, dtype=np.int64)
        cursor = np.empty(n_k, dtype=np.int64)
        for kk in range(n_k):
            cursor[kk] = trig_ptr[pair_pre[k0 + kk]]
        for seg in range(0, T, _PAIR_SEGMENT):
            seg_end = seg + _PAIR_SEGMENT
            for kk in range(n_k):
                end = trig_ptr[pair_pre[k0 + kk] + 1]
                i = cursor[kk]
                while i < end and trig_t[i] < seg_end:
                    t = trig_t[i]
                    i += 1
                    if t < lo_reach or t >= T - hi_reach or not frow[t] & VALID:
                        continue
                    good = True
                    for lag in range(n_lags if gaps else 0):
                        v = row[t + first + lag]
                        if v != v:
                            good = False
                            break
                    if not good:
                        continue
                    for lag in range(n_lags):
                        acc[kk, lag] += row[t + first + lag]
                    g_acc[kk] += gain[p, min(t // gain_step, gain.shape[1] - 1)]
                    n[kk] += 1
                cursor[kk] = i
        for kk in range(n_k):
            k = k0 + kk
            for lag in range(n_lags):
                out[k, lag] = acc[kk, lag] / n[kk] if n[kk] > 0 else np.nan
            out_gain[k] = g_acc[kk] / n[kk] if n[kk] > 0 else np.nan


@numba.njit(cache=True, parallel=True)
def noise_deviations(
    x: np.ndarray,
    flags: np.ndarray,
    bnd: np.ndarray,
    stride: int,
    out: np.ndarray,
    out_m: np.ndarray,
    out_k: np.ndarray,
) -> None:
    """The samples of a post unit's single-trial noise: ``out[p, l, i]`` = ``x[p, t_i + lag]``
    minus the mean of ``x[p]`` over [t_i + ``bnd[0]``, t_i + ``bnd[1]``) (NaN counted as 0),
    lag = ``bnd[2]`` + l < ``bnd[3]``, for every ``stride``-th t_i of post p whose ``flags``
    have :data:`VALID` (``out_m[p]`` of them; NaN where x is, ``out_k[p, l]`` not NaN)."""
    n_post, T = x.shape
    lo = bnd[0]
    hi = bnd[-1]
    n_lags = hi - bnd[2]
    for p in numba.prange(n_post):
        row = x[p]
        ts = np.empty(T // stride + 1, dtype=np.int64)
        m = 0
        skip = 0  # valid samples to pass over before the next one taken
        for t in range(max(0, -lo), T - hi):
            if flags[p, t] & VALID:
                if skip == 0:
                    ts[m] = t
                    m += 1
                    skip = stride
                skip -= 1
        out_m[p] = m
        for li in range(n_lags):
            out_k[p, li] = 0
        for i in range(m):
            s = 0.0
            for u in range(ts[i] + bnd[0], ts[i] + bnd[1]):
                v = row[u]
                s += v if v == v else 0.0
            base = s / (bnd[1] - bnd[0])
            for li in range(n_lags):
                d = row[ts[i] + bnd[2] + li] - base
                out[p, li, i] = d
                out_k[p, li] += d == d


@numba.njit(cache=True, parallel=True)
def noise_sd(dev: np.ndarray, m: np.ndarray, k: np.ndarray, out: np.ndarray) -> None:
    """``out[p]``: the median over lags of 1.4826 × the MAD of each lag's finite samples
    ``dev[p, l, :m[p]]`` (``k[p, l]`` of them; lags with fewer than 10 left out; NaN if
    none is left) — as numpy's ``median`` of the per-lag values, each selected exactly
    (:func:`~instrument.extract.quickselect.kth_finite`)."""
    n_post, n_lags, _ = dev.shape
    for p in numba.prange(n_post):
        buf = np.empty(max(1, m[p]))
        sds = np.empty(n_lags)
        n = 0
        for li in range(n_lags):
            kk = k[p, li]
            if kk < 10:
                continue
            row = dev[p, li, : m[p]]
            center = kth_finite(row, kk, kk // 2, 0.0, False, buf)
            sds[n] = 1.4826 * kth_finite(row, kk, kk // 2, center, True, buf)
            n += 1
        if n == 0:
            out[p] = np.nan
            continue
        sds[:n].sort()
        out[p] = sds[n // 2] if n % 2 else (sds[n // 2 - 1] + sds[n // 2]) / 2


@numba.njit(cache=True)
def group_medians(key: np.ndarray, values: np.ndarray, n_keys: int) -> np.ndarray:
    """Median of ``values`` per integer ``key`` in [0, n_keys) (NaN where none)."""
    order = np.argsort(key, kind="mergesort")
    out = np.full(n_keys, np.nan)
    buf = np.empty(values.size)
    i = 0
    while i < order.size:
        k = key[order[i]]
        j = i
        while j < order.size and key[order[j]] == k:
            buf[j - i] = values[order[j]]
            j += 1
        out[k] = select_kth(buf, j - i, (j - i) // 2)
        i = j
    return out


@numba.njit(cache=True)
def bridge(row: np.ndarray, spikes: np.ndarray, before: int, after: int) -> None:
    """Replace ``row`` from ``before`` samples before to ``after`` after every (sorted) spike
    by straight lines between the samples just outside (overlapping stretches merged)."""
    n = row.size
    i = 0
    while i < spikes.size:
        lo = max(spikes[i] - before, 0)
        hi = min(spikes[i] + after, n - 1)
        j = i + 1
        while j < spikes.size and spikes[j] - before <= hi + 1:
            hi = min(spikes[j] + after, n - 1)
            j += 1
        left = row[lo - 1] if lo > 0 else (row[hi + 1] if hi + 1 < n else 0.0)
        right = row[hi + 1] if hi + 1 < n else left
        span = hi - lo + 2
        for t in range(lo, hi + 1):
            row[t] = left + (right - left) * (t - lo + 1) / span
        i = j


@numba.njit(cache=True)
def _lag_sums4(c: np.ndarray, k0: int, n: int, r: np.ndarray) -> None:
    """``r[k] = Σ_{t ≥ k} c[t]·c[t − k]`` for the ``n`` ≤ 4 lags k0 … k0 + n − 1, each sum in
    time order: four independent chains in one pass (a lone chain waits on every add)."""
    T = c.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for t in range(k0, min(k0 + 3, T)):  # the first lags start before the last ones
        s0 += c[t] * c[t - k0]
        if n > 1 and t >= k0 + 1:
            s1 += c[t] * c[t - k0 - 1]
        if n > 2 and t >= k0 + 2:
            s2 += c[t] * c[t - k0 - 2]
    if n == 4:
        for t in range(k0 + 3, T):
            s0 += c[t] * c[t - k0]
            s1 += c[t] * c[t - k0 - 1]
            s2 += c[t] * c[t - k0 - 2]
            s3 += c[t] * c[t - k0 - 3]
    else:
        for t in range(k0 + 3, T):
            s0 += c[t] * c[t - k0]
            if n > 1:
                s1 += c[t] * c[t - k0 - 1]
            if n > 2:
                s2 += c[t] * c[t - k0 - 2]
    r[k0] = s0
    if n > 1:
        r[k0 + 1] = s1
    if n > 2:
        r[k0 + 2] = s2
    if n > 3:
        r[k0 + 3] = s3


@numba.njit(cache=True, parallel=True)
def whiten(x: np.ndarray, order: int, use: np.ndarray, out: np.ndarray) -> None:
    """``out[p]``: the one-step prediction error of ``x[p]`` under its own autoregressive
    model of ``order`` (Yule–Walker, Levinson–Durbin), fitted on the samples where ``use``
    (T,) holds; NaN where the prediction touches NaN. Slow membrane noise is mostly
    predictable from the last few samples, a PSP's onset is not: the error keeps the
    PSP's onset and drops most of the noise. ``out`` may be ``x`` (in place)."""
    n_rows, T = x.shape
    for p in numba.prange(n_rows):
        row = x[p].copy()
        total = 0.0
        count = 0
        for t in range(T):
            v = row[t]
            if v == v and use[t]:
                total += v
                count += 1
        mean = total / count if count > 0 else 0.0
        # autocovariance sums over pairs of usable samples (an unusable sample enters as 0,
        # adding nothing to a sum taken in time order: no branch in the sums)
        c = np.empty(T)
        for t in range(T):
            v = np.float64(row[t])
            c[t] = v - mean if v == v and use[t] else 0.0
        r = np.zeros(order + 1)
        for k0 in range(0, order + 1, 4):
            _lag_sums4(c, k0, min(4, order + 1 - k0), r)
        # Levinson–Durbin: prediction coefficients a[1..order]
        a = np.zeros(order + 1)
        err = r[0]
        for m in range(1, order + 1):
            if err <= 0.0:
                break
            acc = r[m]
            for j in range(1, m):
                acc -= a[j] * r[m - j]
            k = acc / err
            prev = a.copy()
            a[m] = k
            for j in range(1, m):
                a[j] = prev[j] - k * prev[m - j]
            err *= 1.0 - k * k
        o = out[p]
        o[: min(order, T)] = np.nan
        for t in range(order, T):
            e = row[t] - mean
            for j in range(1, order + 1):
                e -= a[j] * (row[t - j] - mean)
            o[t] = e


@numba.njit(cache=True, parallel=True)
def weight_by_chunk(
    e: np.ndarray, gain: np.ndarray, chunk_dec: int, use: np.ndarray, out: np.ndarray
) -> None:
    """``out[p, t] = e[p, t] · w[p, c]`` with c = t // chunk_dec (the last chunk takes the
    rest) and w = gain / mean square of ``e[p]`` over the chunk's samples where ``use``
    holds, normalised to a median of 1 over chunks (chunks with 10 or fewer such finite
    samples take the median mean square). ``out`` may be ``e`` (in place)."""
    n_post, T = e.shape
    n_chunks = gain.shape[1]
    for p in numba.prange(n_post):
        row = e[p]
        ss = np.zeros(n_chunks)
        cnt = np.zeros(n_chunks, dtype=np.int64)
        for c in range(n_chunks):  # chunk c: [c·chunk_dec, next), the last one to the end
            for t in range(c * chunk_dec, T if c == n_chunks - 1 else (c + 1) * chunk_dec):
                v = row[t]
                if v == v and use[t]:
                    ss[c] += v * v
                    cnt[c] += 1
        good = cnt > 10
        if not good.any():
            out[p] = row
            continue
        var = ss[good] / cnt[good]
        fill = np.median(var)
        w = np.empty(n_chunks)
        for c in range(n_chunks):
            w[c] = gain[p, c] / (ss[c] / cnt[c] if good[c] else fill)
        w /= np.median(w)
        for c in range(n_chunks):
            for t in range(c * chunk_dec, T if c == n_chunks - 1 else (c + 1) * chunk_dec):
                out[p, t] = row[t] * w[c]
