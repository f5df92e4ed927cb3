"""Postsynaptic potentials: screen, significance against surrogates, classes, weights.

Responses are measured in windows after the presynaptic spike, each as the window mean
minus the baseline mean (``baseline_start_s`` … ``baseline_end_s``), on the tested trace:
by default each post trace's AR prediction error (``whiten_order``; see
:func:`instrument.extract.averaging.whiten`), in the zero-lag bin (baseline end … first
of ``whiten_edges_s``, for near-zero-latency electrical coupling) and one-lag bins up to
the last edge, where a PSP's onset shows as a kick. With ``whiten_order = 0`` the tested
trace is the trace itself, in the zero-lag bin, the bins between ``response_edges_s``
and one wide window over all bins but the last (where PSPs peak).

1. **Screen (all pairs).** For each post unit the responses to *every* pre unit, scaled
   by √(triggers), estimate its null centre and spread robustly (median and 1.4826 × MAD
   across pre units: most pairs are not connected). Pairs with a window beyond
   ``screen_z`` become candidates (at most ``max_candidates_per_post``, the strongest).
2. **Significance (candidates).** Triggers near the post unit's own spikes are left out
   (``exclude_before_s``/``exclude_after_s``), and every surrogate (``n_surrogates``
   trains, each spike jittered by ±[``jitter_min_s``, ``jitter_s``]) is treated exactly
   the same way (the whitened test keeps triggers whose post spike comes after what it
   reads). Per bin, z = (response − surrogate mean) / σ with σ the trial standard error,
   scaled by the post unit's pooled overdispersion or set by the pair's own surrogate SD
   where that exceeds chance (:func:`significance`); the pair's p-value is the smallest
   two-sided p over bins, Šidák-corrected for the number of bins; Benjamini–Hochberg at
   ``fdr`` over **all** tested pairs (screened-out pairs count as tested).
3. **Classes.** Responses that start with the presynaptic spike (onset after the
   baseline, within ``electrical_max_latency_s``) in both directions: electrical.
   Otherwise excitatory or inhibitory by the sign of the strongest response window
   (the zero-lag bin aside); excitatory connections whose spike
   raises the post unit's firing probability in the response window by at least
   ``eventful_min_probability`` over the surrogates are strong ("eventful").
4. **Weight and latency** from the average trace: the peak (in the sign of the
   connection) within the response window, in somatic volts (divided by the post
   electrode's gain); the onset, where the rise crosses ``onset_fraction`` of the peak
   (chemical connections of the whitened test: from the kick, :func:`kick_latency`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import erfc
from scipy.stats import chi2

from instrument.extract.params import ExtractionParams
from instrument.extract.quickselect import kth_finite
from instrument.extract.workspace import Workspace

KIND_EXCITATORY = 0
KIND_INHIBITORY = 1
KIND_ELECTRICAL = 2
KIND_NAMES = ("excitatory", "inhibitory", "electrical")
"""Class codes, as ``synapse_kind`` in the ground truth."""


def bin_responses(
    sums: np.ndarray, n: np.ndarray, bnd: np.ndarray, windows: np.ndarray
) -> np.ndarray:
    """Responses from boundary sums.

    ``sums`` (..., M) Σ over triggers of the prefix sum at each boundary, ``n`` the trigger
    counts (broadcast against ``sums[..., 0]``), ``bnd`` (M,) boundaries in samples,
    ``windows`` (R, 2) boundary indices of each response window. Returns (..., R): mean
    over each window minus the baseline mean (window (0, 1)).
    """
    n = np.asarray(n, dtype=np.float64)

    def mean(a: int, b: int) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sums[..., b] - sums[..., a]) / ((bnd[b] - bnd[a]) * n)

    base = mean(0, 1)
    return np.stack([mean(a, b) - base for a, b in windows], axis=-1)


@numba.njit(cache=True, parallel=True)
def screen_responses(
    acc: np.ndarray,
    n_trig: np.ndarray,
    bnd: np.ndarray,
    windows: np.ndarray,
    allowed: np.ndarray,
    self_pre: np.ndarray,
    out: np.ndarray,
) -> None:
    """The all-pairs screen's responses, straight from the kernel's accumulators.

    ``acc`` (n_pre, M, W): one block of :func:`averaging.screen_kernel`'s sums (Σ over each
    pre unit's triggers of each post unit's prefix sum at each boundary, post unit in
    lane c); ``n_trig`` (n_pre,). ``out[c, r, k]``: response (window r mean − baseline
    mean) × √triggers of lane c to pre unit ``allowed[k]``; NaN where that is the post
    unit itself (``self_pre[c]``, −1 if none).
    """
    n_win = windows.shape[0]
    for c in numba.prange(out.shape[0]):
        for k in range(allowed.size):
            i = allowed[k]
            if i == self_pre[c]:
                for r in range(n_win):
                    out[c, r, k] = np.nan
                continue
            n = n_trig[i]
            base = (np.float64(acc[i, 1, c]) - acc[i, 0, c]) / ((bnd[1] - bnd[0]) * n)
            for r in range(n_win):
                lo = windows[r, 0]
                hi = windows[r, 1]
                mean = (np.float64(acc[i, hi, c]) - acc[i, lo, c]) / ((bnd[hi] - bnd[lo]) * n)
                out[c, r, k] = (mean - base) * np.sqrt(n)


@numba.njit(cache=True, parallel=True)
def _screen_scores(y: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:
    """``out[c, k]``: largest |z| over windows of pre unit k for lane c, from the lane's
    responses ``y[c]`` (R, K), ``m[c]`` of them not NaN per window: z against the window's
    median and 1.4826 × MAD (0 where the spread is 0, and for NaN). Medians selected
    exactly (:func:`~instrument.extract.quickselect.kth_finite`), one lane per thread."""
    lanes, n_win, n_pre = y.shape
    for c in numba.prange(lanes):
        buf = np.empty(n_pre)
        best = out[c]
        best[:] = 0.0
        mc = m[c]
        for r in range(n_win):
            row = y[c, r]
            center = kth_finite(row, mc, mc // 2, 0.0, False, buf)
            spread = 1.4826 * kth_finite(row, mc, mc // 2, center, True, buf)
            if not spread > 0:
                continue
            for k in range(n_pre):
                z = abs(row[k] - center) / spread
                if z > best[k]:  # NaN never is
                    best[k] = z


def screen_candidates(
    acc: np.ndarray,
    n_trig: np.ndarray,
    bnd: np.ndarray,
    windows: np.ndarray,
    pre_units: np.ndarray,
    post_units: np.ndarray,
    params: ExtractionParams,
    work: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pre index, post index, screen |z|) of the candidate pairs, sorted by (post, pre).

    ``acc`` (blocks, n_pre, M, W): Σ over each pre unit's triggers of each post unit's prefix
    sum at each boundary (post p in block p // W, lane p % W); ``n_trig`` (n_pre,). For each
    post unit: responses (:func:`screen_responses`) to every allowed pre unit (enough
    triggers, not itself), their robust centre and spread (median, 1.4826 × MAD) per
    window, z; pre units whose largest |z| reaches ``screen_z`` are candidates with that
    |z| (at most ``max_candidates_per_post``, the strongest); :func:`_screen_scores`.
    """
    n_post = post_units.size
    width = acc.shape[3]
    cap = params.max_candidates_per_post
    allowed = np.flatnonzero(n_trig >= params.min_triggers).astype(np.int64)
    position = {int(u): int(i) for i, u in zip(allowed, pre_units[allowed], strict=True)}
    work = work or Workspace()
    y = work.array("responses", (width, windows.shape[0], allowed.size), np.float64)
    scores = work.array("scores", (width, allowed.size), np.float64)
    n_trig = n_trig.astype(np.int64)
    pres = [np.zeros(0, dtype=np.int64)] * n_post
    zs = [np.zeros(0)] * n_post
    for blk in range(acc.shape[0]):
        first = blk * width
        lanes = min(width, n_post - first)
        own = np.array(
            [position.get(int(u), -1) for u in post_units[first : first + lanes]],
            dtype=np.int64,
        )
        screen_responses(acc[blk], n_trig, bnd, windows, allowed, own, y[:lanes])
        m = allowed.size - (own >= 0)
        _screen_scores(y[:lanes], m, scores[:lanes])
        for c in np.flatnonzero(m >= 8):
            score = scores[c]
            hits = np.flatnonzero(score >= params.screen_z)
            if hits.size > cap:
                order = np.argsort(-score[hits], kind="mergesort")[:cap]
                hits = np.sort(hits[order])
            pres[first + c] = allowed[hits]
            zs[first + c] = score[hits]
    posts = np.repeat(np.arange(n_post, dtype=np.int64), [p.size for p in pres])
    return np.concatenate(pres).astype(np.int64), posts, np.concatenate(zs)


@dataclass
class Significance:
    z: np.ndarray
    """(K, R) z of each bin against the surrogate null."""
    p: np.ndarray
    """(K,) p-value of the pair (Šidák over bins)."""
    best_bin: np.ndarray
    """(K,) bin with the largest |z|."""


def significance(
    mean: np.ndarray,
    sd: np.ndarray,
    n: np.ndarray,
    null_mean: np.ndarray,
    null_sd: np.ndarray,
    n_surrogates: int,
    post: np.ndarray,
) -> Significance:
    """Per-pair z and p from the response statistics and their surrogate null.

    σ is the trial standard error, scaled by the post unit's overdispersion (the median
    over its candidate pairs and bins of (surrogate SD / trial standard error)², when
    above 1: trials that are not independent), unless the pair's own surrogates spread
    more than ``n_surrogates`` draws would by chance (0.1 %); × √(1 + 1/n_surrogates)
    for the estimated null mean. ``post`` (K,): each pair's post unit.
    """
    n = np.asarray(n, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(n > 1, sd / np.sqrt(n), np.nan)
        ratio2 = (null_sd / se) ** 2
    over = np.ones(mean.shape[0])
    order = np.argsort(post, kind="stable")
    cuts = np.flatnonzero(np.diff(post[order])) + 1
    for rows in np.split(order, cuts) if order.size else []:
        r = ratio2[rows]
        r = r[np.isfinite(r)]
        if r.size:
            over[rows] = max(1.0, float(np.median(r)))
    chance = np.sqrt(chi2.isf(1e-3, n_surrogates - 1) / (n_surrogates - 1))
    sigma = np.maximum(se * np.sqrt(over)[:, None], null_sd / chance)
    sigma = sigma * np.sqrt(1.0 + 1.0 / n_surrogates)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (mean - null_mean) / sigma
    z = np.where(np.isfinite(z), z, 0.0)
    p_bins = erfc(np.abs(z) / np.sqrt(2.0))
    best = np.argmax(np.abs(z), axis=1) if z.size else np.zeros(0, dtype=np.int64)
    p_min = p_bins[np.arange(z.shape[0]), best] if z.size else np.zeros(0)
    n_bins = z.shape[1] if z.ndim == 2 else 1
    p = -np.expm1(n_bins * np.log1p(-np.minimum(p_min, 1.0 - 1e-16)))
    # a whitened response can lie beyond the range of erfc: no p-value is exactly 0
    p = np.where(n[:, 0] > 1, np.maximum(p, np.finfo(np.float64).tiny), 1.0)
    return Significance(z=z, p=p, best_bin=best.astype(np.int64))


def benjamini_hochberg(p: np.ndarray, m: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Significant flags and BH-adjusted p-values of ``p`` among ``m`` ≥ len(p) tests (the
    untested rest have p = 1)."""
    p = np.asarray(p, dtype=np.float64)
    k = p.size
    m = max(int(m), k)
    if k == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, k + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(k)
    out[order] = np.minimum(adjusted, 1.0)
    return out <= q, out


@dataclass
class TraceFeatures:
    psp_v: np.ndarray
    """(K,) peak of the baseline-subtracted average (signed), electrode V."""
    peak_latency_s: np.ndarray
    onset_latency_s: np.ndarray


def trace_features(traces: np.ndarray, sign: np.ndarray, params: ExtractionParams) -> TraceFeatures:
    """Peak and onset of average traces (K, L) sampled at ``params.decimated_rate_hz`` from
    ``-average_before_s``, for connections of the given sign (+1 / −1); rows with a NaN in
    the response window get no peak (0) and no latencies (NaN).

    The onset is where the rise to the peak last crosses ``onset_fraction`` of it, walking
    back from the peak (linear interpolation; a rise already under way at the window start
    gives the window start). All rows at once.
    """
    fs = params.decimated_rate_hz
    first = -params.dec(params.average_before_s)
    k, n_lags = traces.shape
    lags = (np.arange(n_lags) + first) / fs
    base = (lags >= params.baseline_start_s) & (lags < params.baseline_end_s)
    window = (lags >= params.baseline_end_s) & (lags < params.response_edges_s[-1])
    idx = np.flatnonzero(window)
    psp = np.zeros(k)
    peak_lat = np.full(k, np.nan)
    onset = np.full(k, np.nan)
    rows = np.flatnonzero(np.isfinite(traces[:, idx]).all(axis=1)) if k else np.zeros(0, int)
    if rows.size == 0:
        return TraceFeatures(psp_v=psp, peak_latency_s=peak_lat, onset_latency_s=onset)
    tr = traces[rows]
    # C order, so each row's mean sums in the same order as one row's own (bit for bit)
    tr -= np.nanmean(np.ascontiguousarray(tr[:, base]), axis=1)[:, None]
    signed = tr * np.asarray(sign, dtype=np.float64)[rows, None]
    n = np.arange(rows.size)
    at = idx[np.argmax(signed[:, idx], axis=1)]
    peak = signed[n, at]
    psp[rows] = tr[n, at]
    peak_lat[rows] = lags[at]
    level = params.onset_fraction * peak
    # walking back from the peak: j is one past the last sample below the level (the
    # window start if the rise is under way there)
    start = idx[0]
    col = np.arange(n_lags)[None, :]
    below = (col >= start) & (col < at[:, None]) & (signed < level[:, None])
    last = n_lags - 1 - np.argmax(below[:, ::-1], axis=1)
    j = np.where(below.any(axis=1), last + 1, start)
    under_way = (j == start) & (signed[n, start] >= level)
    lo, hi = signed[n, j - 1], signed[n, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(hi != lo, (level - lo) / (hi - lo), 1.0)
    onset[rows] = np.where(under_way, lags[start], lags[j - 1] + frac / fs)
    return TraceFeatures(psp_v=psp, peak_latency_s=peak_lat, onset_latency_s=onset)


def kick_latency(z: np.ndarray, best_bin: np.ndarray, params: ExtractionParams) -> np.ndarray:
    """(K,) onset latency of each response as the prediction error shows it, s.

    A PSP that starts inside one decimated sample shows its kick in that sample and the
    next, split by where it started: the latency is the centroid of the tested bins'
    starts over the strongest bin and its neighbours (weights: z in the strongest bin's
    sign, negative parts 0; the zero-lag bin only when it is the strongest), less one
    sample. ``z`` (K, R) per tested window (:meth:`ExtractionParams.windows`, one-lag
    bins), ``best_bin`` (K,) the strongest. A zero-lag response gives a latency before
    the spike.
    """
    bnd = params.boundaries()
    starts = np.array([bnd[a] for a, _ in params.windows()], dtype=np.float64)
    out = np.empty(best_bin.size)
    n_bins = starts.size
    for i, b in enumerate(best_bin):
        lo, hi = (0, 0) if b == 0 else (max(b - 1, 1), min(b + 1, n_bins - 1))
        w = np.maximum(np.sign(z[i, b]) * z[i, lo : hi + 1], 0.0)
        out[i] = np.dot(w, starts[lo : hi + 1]) / w.sum() if w.sum() > 0 else starts[b]
    return (out - 1.0) / params.decimated_rate_hz


def classify(
    pre: np.ndarray,
    post: np.ndarray,
    z: np.ndarray,
    onset_s: np.ndarray,
    event_gain: np.ndarray,
    params: ExtractionParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Class codes (``KIND_*``) and strong flags of significant pairs.

    ``z`` (K, R) per-window z (window 0 the zero-lag bin); ``onset_s`` (K,) onset latency
    of the average; ``event_gain`` (K,) observed minus surrogate probability that the post
    unit fires in the response window after a presynaptic spike.
    """
    k = pre.size
    response = z[:, 1:] if z.shape[1] > 1 else z
    strongest = np.argmax(np.abs(response), axis=1) if k else np.zeros(0, dtype=np.int64)
    sign = np.sign(response[np.arange(k), strongest]) if k else np.zeros(0)
    kind = np.where(sign >= 0, KIND_EXCITATORY, KIND_INHIBITORY).astype(np.uint8)
    # onsets clipped at the window start (responses already under way before the spike:
    # common input) are not electrical
    start = params.baseline_end_s + 0.02 / params.decimated_rate_hz
    fast = (onset_s > start) & (onset_s <= params.electrical_max_latency_s)
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(pre, post, strict=True))}
    for i in np.flatnonzero(fast):
        j = where.get((int(post[i]), int(pre[i])))
        if j is not None and fast[j]:
            kind[i] = KIND_ELECTRICAL
    strong = (kind == KIND_EXCITATORY) & (event_gain >= params.eventful_min_probability)
    return kind, strong
