"""The whole extraction: raw pass → units → triggers → post-unit groups → map.

:func:`extract` runs it in this process; :mod:`instrument.extract.distributed` runs the
same steps on a Dask cluster. Both are built from the same pieces — the raw pass per
chunk (:func:`raw_chunk`), the analysis of a group of post units
(:func:`analyse_group`) and the final assembly (:func:`assemble`) — and give identical
results: every floating-point sum happens in an order fixed by the data and the
parameters alone.

Memory is bounded by ``memory_budget_bytes``: the decimated traces of all channels (4
bytes per channel per decimated sample) stay in memory when they fit half the budget and
spill to a scratch file otherwise; post units are analysed in groups sized so their
arrays fit the rest.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

from instrument.extract import averaging, psp
from instrument.extract.params import ExtractionParams
from instrument.extract.spikes import ChunkPlan, ChunkResult, RawPass, plan_chunks
from instrument.extract.units import (
    ChannelSummary,
    Units,
    excess_coincidence,
    gain_series,
    mark_bad,
    merge_units,
)
from instrument.extract.volts import channel_calibration
from instrument.extract.workspace import Workspace
from instrument.recording import Recording

log = logging.getLogger(__name__)

SEGMENT_S = 10.0
"""Length of the time segments of the all-pairs screen (prefix sums restart at each), s."""

SAME_NEURON_EXCESS = 0.3
"""A candidate pair whose spikes coincide this much beyond chance is one neuron seen twice
(units not merged): never reported as connected."""


class ExtractionError(RuntimeError):
    """The recording cannot be analysed as asked (too short, no units, budget too small)."""


# ------------------------------------------------------------------------- scratch


class Scratch:
    """The decimated subthreshold traces of every channel, (C, T) float32: in memory, or in
    a scratch file (``np.memmap``) removed by :meth:`close`."""

    def __init__(self, n_channels: int, n_dec: int, in_memory: bool, folder: str = "") -> None:
        self.shape = (n_channels, n_dec)
        self.path: Path | None = None
        if in_memory:
            self.data = np.empty(self.shape, dtype=np.float32)
        else:
            fd, name = tempfile.mkstemp(
                prefix="brainpaste-extract-", suffix=".f32", dir=folder or None
            )
            os.close(fd)
            self.path = Path(name)
            self.data = np.memmap(self.path, dtype=np.float32, mode="w+", shape=self.shape)

    def block(self, first: int, n: int) -> np.ndarray:
        """(C, n) view of decimated samples [first, first + n) of every channel, to write."""
        return self.data[:, first : first + n]

    def rows(self, channels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(len(channels), T) float32 copy of those channels' traces (into ``out``)."""
        if out is None:
            out = np.empty((len(channels), self.shape[1]), dtype=np.float32)
        for i, c in enumerate(np.asarray(channels)):
            out[i] = self.data[int(c)]
        return out

    def close(self) -> None:
        if self.path is not None:
            del self.data
            self.path.unlink(missing_ok=True)
            self.path = None


# ------------------------------------------------------------------------- raw pass


def summarize(results: Iterable[ChunkResult], plan: ChunkPlan, known_bad: Any) -> ChannelSummary:
    """Merge the chunks' spikes and statistics (in chunk order) into a channel summary."""
    results = sorted(results, key=lambda r: r.index)
    ch = np.concatenate([r.spike_channel for r in results])
    sm = np.concatenate([r.spike_sample for r in results])
    h = np.concatenate([r.spike_height_v for r in results])
    order = np.lexsort((sm, ch))
    n_ch = results[0].rail_samples.shape[0]
    rail = np.zeros(n_ch, dtype=np.int64)
    wave = np.zeros_like(results[0].waveform_sum_v, dtype=np.float64)
    for r in results:
        rail += r.rail_samples
        wave += r.waveform_sum_v
    counts = np.bincount(ch, minlength=n_ch)
    wave /= np.maximum(counts, 1)[:, None]
    noise = np.median(np.stack([r.rise_sd_v for r in results]), axis=0)
    return ChannelSummary(
        spike_channel=ch[order].astype(np.int32),
        spike_sample=sm[order].astype(np.int64),
        spike_height_v=h[order].astype(np.float32),
        rail_fraction=rail / max(1, plan.n_samples),
        noise_v=noise.astype(np.float64),
        waveform_v=wave.astype(np.float32),
        bad=np.zeros(n_ch, dtype=bool),
    )


def finish_summary(
    summary: ChannelSummary, params: ExtractionParams, known_bad: Any
) -> ChannelSummary:
    """Mark bad channels and drop their spikes."""
    bad = mark_bad(summary.rail_fraction, summary.noise_v, params, known_bad)
    keep = ~bad[summary.spike_channel]
    return ChannelSummary(
        spike_channel=summary.spike_channel[keep],
        spike_sample=summary.spike_sample[keep],
        spike_height_v=summary.spike_height_v[keep],
        rail_fraction=summary.rail_fraction,
        noise_v=summary.noise_v,
        waveform_v=summary.waveform_v,
        bad=bad,
    )


# ------------------------------------------------------------------------- triggers


@dataclass
class Triggers:
    """Presynaptic triggers (decimated samples) and which times can be used."""

    ptr: np.ndarray
    """(U + 1,) int64 into ``t``."""
    t: np.ndarray
    """Decimated sample of every unit's spikes (all of them; ``ok`` says which count)."""
    ok: np.ndarray
    """(T,) bool: a trigger at t is usable (windows in the data, no gap, not in a burst)."""
    burst: np.ndarray
    """(T,) bool: inside a network burst (padded)."""
    n_ok: np.ndarray
    """(U,) usable triggers per unit."""


def make_triggers(
    units: Units, n_dec: int, q: int, lost_dec: np.ndarray, params: ExtractionParams
) -> Triggers:
    """Triggers of every unit, the burst mask and the usable-time mask."""
    t = units.spike_sample // q
    bin_n = max(1, params.dec(params.burst_bin_s))
    pop = np.bincount(t // bin_n, minlength=n_dec // bin_n + 1)
    level = max(params.burst_threshold * float(np.median(pop)), float(params.burst_min_units))
    hot = np.repeat(pop > level, bin_n)[:n_dec]
    burst = np.zeros(n_dec, dtype=bool)
    if hot.any():
        pad = params.dec(params.burst_pad_s)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hot.astype(np.int8), [0]])))
        for a, b in zip(edges[0::2], edges[1::2], strict=True):
            burst[max(0, a - pad) : min(n_dec, b + pad)] = True
    # the tested bins and the response window (noise, events) must be in the data
    bnd = params.boundaries()
    lo, hi = bnd[0], max(bnd[-1], params.dec(params.response_edges_s[-1]))
    ok = np.ones(n_dec, dtype=bool)
    ok[: max(0, -lo)] = False
    ok[max(0, n_dec - hi) :] = False
    if lost_dec.any():
        # a trigger at t reads [t + lo, t + hi): no lost sample there
        c = np.concatenate([[0], np.cumsum(lost_dec)])
        idx = np.arange(n_dec)
        a = np.clip(idx + lo, 0, n_dec)
        b = np.clip(idx + hi, 0, n_dec)
        ok &= (c[b] - c[a]) == 0
    if params.burst_policy == "exclude":
        ok &= ~burst
    n_ok = np.add.reduceat(ok[np.minimum(t, n_dec - 1)].astype(np.int64), units.spike_ptr[:-1])
    n_ok = np.where(np.diff(units.spike_ptr) > 0, n_ok, 0)
    return Triggers(ptr=units.spike_ptr.copy(), t=t.astype(np.int64), ok=ok, burst=burst, n_ok=n_ok)


# ------------------------------------------------------------------------- groups


@dataclass
class ScreenVisits:
    """The usable triggers of every presynaptic unit, time segment by time segment, in the
    all-pairs kernel's visiting order (:func:`averaging.visit_order`)."""

    segment: int
    """Decimated samples per segment (:data:`SEGMENT_S`)."""
    starts: list[int]
    """First decimated sample of each segment that has triggers."""
    pre: list[np.ndarray]
    """Per segment: index into ``pres`` of each trigger's unit (int64)."""
    t: list[np.ndarray]
    """Per segment: decimated sample of each trigger (int64)."""

    @property
    def n_spikes(self) -> int:
        return int(sum(t.size for t in self.t))


def screen_visits(
    triggers: Triggers, pres: np.ndarray, n_dec: int, params: ExtractionParams
) -> ScreenVisits:
    """Sort the triggers of ``pres`` for the all-pairs kernel once, for every group."""
    seg = max(params.dec(SEGMENT_S), 1)
    n_units = len(triggers.ptr) - 1
    pre_of_spike = np.repeat(np.arange(n_units), np.diff(triggers.ptr))
    local = np.full(n_units, -1, dtype=np.int64)
    local[pres] = np.arange(pres.size)
    use = (local[pre_of_spike] >= 0) & (triggers.t < n_dec)
    use &= triggers.ok[np.minimum(triggers.t, n_dec - 1)]
    t_all = triggers.t[use]
    pre_all = local[pre_of_spike[use]]
    out = ScreenVisits(segment=seg, starts=[], pre=[], t=[])
    for s0 in range(0, n_dec, seg):
        sel = (t_all >= s0) & (t_all < s0 + seg)
        if not sel.any():
            continue
        tt, pp = t_all[sel], pre_all[sel]
        order = averaging.visit_order(pp, tt)
        out.starts.append(s0)
        out.pre.append(pp[order].astype(np.int64))
        out.t.append(tt[order].astype(np.int64))
    return out


@dataclass
class GroupInput:
    """What the analysis of a group of post units needs besides their traces."""

    params: ExtractionParams
    posts: np.ndarray
    """Unit indices of the group's post units."""
    pres: np.ndarray
    """Unit indices of every presynaptic unit (enough triggers)."""
    triggers: Triggers
    spike_ptr: np.ndarray
    spike_sample: np.ndarray
    """Every unit's spikes (raw samples), for trigger exclusion and same-neuron checks."""
    q: int
    sample_rate_hz: float
    gain: np.ndarray
    """(len(posts), n_chunks) electrode gain of each post unit per chunk."""
    chunk_dec: int
    """Decimated samples per chunk (for ``gain``)."""
    visits: ScreenVisits
    """The all-pairs kernel's spikes in visiting order (the same for every group)."""


@dataclass
class GroupResult:
    """Candidate pairs of one group and their statistics (unit indices throughout)."""

    posts: np.ndarray
    trace_sd_v: np.ndarray
    """(len(posts),) single-trial SD of each post trace in the response window (see
    :func:`trace_noise`), electrode V."""
    mean_gain: np.ndarray
    """(len(posts),) electrode gain of each post unit averaged over the recording."""
    n_tested: int
    pre: np.ndarray
    post: np.ndarray
    screen_z: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    n: np.ndarray
    null_mean: np.ndarray
    null_sd: np.ndarray
    event: np.ndarray
    same_neuron: np.ndarray
    z: np.ndarray
    p: np.ndarray
    best_bin: np.ndarray
    traces: np.ndarray
    """(K, L) average trace of each candidate with p ≤ fdr (NaN rows otherwise), V."""
    trace_gain: np.ndarray
    """(K,) post electrode gain averaged over the triggers of the average."""
    timings_s: dict[str, float] = field(default_factory=dict)
    n_updates: int = 0
    """Accumulator updates of the all-pairs kernel (spikes × post units × boundaries)."""
    n_pair_evaluations: int = 0
    """Triggers the candidates' statistics evaluate (usable triggers × (1 + surrogates),
    summed over candidate pairs): the least work of that stage."""


def unit_flags(
    n_dec: int, inp: GroupInput, test_after: int, work: Workspace | None = None
) -> np.ndarray:
    """(len(posts), n_dec) uint8 :func:`averaging.unit_flags` of the group's post units:
    :data:`averaging.VALID` for the averages (no post spike from ``exclude_before_s``
    before to ``exclude_after_s`` after), :data:`averaging.TESTED` for the test (…to
    ``test_after`` decimated samples after), :data:`averaging.EVENT` (a post spike in the
    response window) and :data:`averaging.OK`."""
    params = inp.params
    out = (work or Workspace()).array("flags", (inp.posts.size, n_dec), np.uint8)
    averaging.unit_flags(
        n_dec, inp.posts.astype(np.int64), inp.spike_ptr.astype(np.int64),
        inp.spike_sample.astype(np.int64), inp.q, inp.triggers.ok,
        params.dec(params.exclude_before_s), params.dec(params.exclude_after_s), test_after,
        params.dec(params.response_edges_s[0]), params.dec(params.response_edges_s[-1]), out,
    )  # fmt: skip
    return out


def _without_own_spikes(x: np.ndarray, inp: GroupInput, work: Workspace) -> np.ndarray:
    """The post traces for the screen: each unit's own spikes and the after-hyperpolarisation
    that follows (``exclude_before_s``) bridged by straight lines, as the candidates'
    trigger exclusion does for them."""
    params = inp.params
    out = work.array("screen", x.shape, np.float32)
    np.copyto(out, x)
    after = params.dec(params.exclude_before_s)
    for i, u in enumerate(inp.posts):
        s = inp.spike_sample[inp.spike_ptr[u] : inp.spike_ptr[u + 1]] // inp.q
        averaging.bridge(out[i], s, 1, after)
    return out


GAIN_SMOOTH_CHUNKS = 15
"""Chunks over which a post unit's gain is averaged for the trial weights (access changes
over minutes; one chunk's median spike height is noisy)."""


def weight_trials(
    e: np.ndarray, gain: np.ndarray, chunk_dec: int, use: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The prediction errors ``e`` (P, T) × gain / variance of the error, chunk by chunk.

    A trigger's PSP reaches the electrode × its gain (access decays over minutes) and the
    error's variance changes with access and with the network's activity, so a trial's
    optimal weight is gain / variance: the mean of the weighted errors is the best linear
    estimate of the PSP. ``gain`` (P, n_chunks) as in :class:`GroupInput` (averaged over
    :data:`GAIN_SMOOTH_CHUNKS`); the variance counts the samples where ``use`` (T,) holds;
    the weights are normalised to a median of 1 per unit. Into ``out`` (may be ``e``) or a
    new array.
    """
    n_chunks = gain.shape[1]
    k = np.ones(min(GAIN_SMOOTH_CHUNKS, n_chunks))
    norm = np.convolve(np.ones(n_chunks), k, mode="same")
    smooth = np.empty_like(gain)
    for i, g in enumerate(gain):
        smooth[i] = np.convolve(g, k, mode="same") / norm
    out = np.empty_like(e) if out is None else out
    averaging.weight_by_chunk(e, smooth, chunk_dec, use, out)
    return out


def trace_noise(
    x: np.ndarray, flags: np.ndarray, params: ExtractionParams, work: Workspace | None = None
) -> np.ndarray:
    """(P,) single-trial SD of each post trace about its baseline mean, at a lag in the
    response window (robust: 1.4826 × MAD per lag, median over lags; NaN with fewer than
    10 samples), V: divided by √triggers it is the noise of a spike-triggered average of
    that trace. Samples come from :func:`averaging.noise_deviations` (every
    :data:`NOISE_STRIDE`-th valid trigger time), a batch of post units at a time, and
    :func:`averaging.noise_sd` selects the medians (one post unit per thread)."""
    n_post, n_dec = x.shape
    first, last = params.response_edges_s[0], params.response_edges_s[-1]
    times = (params.baseline_start_s, params.baseline_end_s, first, last)
    bnd = np.array([params.dec(t) for t in times], dtype=np.int64)
    n_lags = int(bnd[-1] - bnd[2])
    m_max = n_dec // NOISE_STRIDE + 1
    batch = max(1, min(n_post, NOISE_BATCH_BYTES // (8 * n_lags * m_max)))
    dev = (work or Workspace()).array("noise", (batch, n_lags, m_max), np.float64)
    m = np.empty(batch, dtype=np.int64)
    k = np.empty((batch, n_lags), dtype=np.int64)
    out = np.empty(n_post)
    for p0 in range(0, n_post, batch):
        nb = min(batch, n_post - p0)
        averaging.noise_deviations(
            x[p0 : p0 + nb], flags[p0 : p0 + nb], bnd, NOISE_STRIDE, dev[:nb], m[:nb], k[:nb]
        )
        averaging.noise_sd(dev[:nb], m[:nb], k[:nb], out[p0 : p0 + nb])
    return out


NOISE_STRIDE = 7
"""Trace samples every this many decimated samples estimate a post unit's trace noise."""

NOISE_BATCH_BYTES = 64 << 20
"""Memory for the noise samples of a batch of post units (:func:`trace_noise`)."""


def analyse_group(x: np.ndarray, inp: GroupInput, work: Workspace | None = None) -> GroupResult:
    """Screen all pre units against this group of post units, then test the candidates.

    ``x`` (len(posts), T) float32: the post units' decimated subthreshold traces; ``work``
    holds the large arrays from one group to the next (nothing in the result refers to it).
    """
    params = inp.params
    work = work or Workspace()
    clock = time.perf_counter()
    n_post, n_dec = x.shape
    bnd = np.asarray(params.boundaries(), dtype=np.int64)
    windows = np.asarray(params.windows(), dtype=np.int64)
    n_bins = windows.shape[0]
    trig = inp.triggers
    pres = inp.pres
    n_pre = pres.size
    # ---- screen: boundary sums for every (pre, post), segment by segment
    n_blocks = max(1, math.ceil(n_post / averaging.WIDTH))
    acc = work.zeros("acc", (n_blocks, n_pre, bnd.size, averaging.WIDTH), np.float32)
    visits = inp.visits
    halo = int(max(-bnd[0], bnd[-1])) + 1
    qb = work.array(
        "prefix", (n_blocks, visits.segment + 2 * halo + 1, averaging.WIDTH), np.float32
    )
    x_screen = _without_own_spikes(x, inp, work)
    if params.whiten_order > 0:
        # model and weigh the noise where the test reads it (not in bursts or gaps)
        averaging.whiten(x_screen, params.whiten_order, trig.ok, x_screen)
        weight_trials(x_screen, inp.gain, inp.chunk_dec, trig.ok, x_screen)
    for s0, pp, tt in zip(visits.starts, visits.pre, visits.t, strict=True):
        lo = max(0, s0 - halo)
        hi = min(n_dec, s0 + visits.segment + halo)
        # the whole buffer, not a slice of it: a C-contiguous block lets the kernel's row
        # adds vectorise (a slice runs at half the speed)
        averaging.prefix_blocks(x_screen, lo, hi, qb)
        averaging.screen_kernel(qb, acc, pp, tt - lo, bnd)
    timings = {"screen_kernel_s": time.perf_counter() - clock}
    n_updates = visits.n_spikes * n_post * int(bnd.size)
    n_trig = trig.n_ok[pres]
    c_pre, c_post, screen_best = psp.screen_candidates(
        acc, n_trig, bnd, windows, pres, inp.posts, params, work
    )
    enough = n_trig >= params.min_triggers
    n_tested = int(enough.sum()) * n_post - int(np.isin(inp.posts, pres[enough]).sum())
    timings["screen_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    # ---- candidates: exclusions, surrogates, events
    # the whitened test reads the bridged trace up to its last boundary: a post spike later
    # than that (bridged from one sample before it) cannot touch it, and leaving such trials
    # out would bias the kick of a synapse that makes the post unit fire
    if params.whiten_order > 0:
        tested, test_after = x_screen, min(int(bnd[-1]), params.dec(params.exclude_after_s))
    else:
        tested, test_after = x, params.dec(params.exclude_after_s)
    flags = unit_flags(n_dec, inp, test_after, work)
    k = c_pre.size
    mean = np.zeros((k, n_bins))
    sd = np.zeros((k, n_bins))
    n = np.zeros(k, dtype=np.int64)
    null_mean = np.zeros((k, n_bins))
    null_sd = np.zeros((k, n_bins))
    ev = np.zeros((k, 3))
    pre_units = pres[c_pre]
    post_ptr = np.searchsorted(c_post, np.arange(n_post + 1)).astype(np.int64)
    if k:
        j_max = params.dec(params.jitter_s)
        # every presynaptic unit's: the same table for every group
        jitters = work.kept("jitters", lambda: averaging.jitter_table(
            params.seed, trig.ptr, pres, params.n_surrogates, params.dec(params.jitter_min_s),
            j_max,
        ))  # fmt: skip
        averaging.pair_statistics(
            tested, flags, post_ptr, pre_units.astype(np.int64),
            trig.ptr, trig.t, bnd, windows, jitters, j_max,
            mean, sd, n, null_mean, null_sd, ev,
        )  # fmt: skip
    window = max(1, round(params.merge_window_s * inp.sample_rate_hz))
    same = excess_coincidence(
        inp.spike_ptr, inp.spike_sample,
        np.stack([pre_units, inp.posts[c_post]], axis=1), window, inp.sample_rate_hz,
    ) >= SAME_NEURON_EXCESS  # fmt: skip
    sig = psp.significance(mean, sd, n, null_mean, null_sd, params.n_surrogates, c_post)
    p = np.where(same, 1.0, sig.p)
    timings["surrogates_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    # ---- average traces of the pairs that may survive BH (p <= fdr)
    first = -params.dec(params.average_before_s)
    n_lags = params.dec(params.average_after_s) - first + 1
    traces = np.full((k, n_lags), np.nan, dtype=np.float64)
    tgain = np.full(k, np.nan)
    keep = np.flatnonzero(p <= params.fdr)
    if keep.size:
        out = np.zeros((keep.size, n_lags))
        out_gain = np.zeros(keep.size)
        lo_reach = max(-first, -int(bnd[0])) + params.dec(params.jitter_s)
        hi_reach = max(first + n_lags, int(bnd[-1])) + params.dec(params.jitter_s)
        keep_ptr = np.searchsorted(c_post[keep], np.arange(n_post + 1)).astype(np.int64)
        averaging.average_traces(
            x, flags, inp.gain, inp.chunk_dec, keep_ptr, pre_units[keep].astype(np.int64),
            trig.ptr, trig.t, first, n_lags, lo_reach, hi_reach, out, out_gain,
        )  # fmt: skip
        traces[keep] = out
        tgain[keep] = out_gain
    noise = trace_noise(x, flags, params, work)
    timings["averages_s"] = time.perf_counter() - clock
    return GroupResult(
        posts=inp.posts,
        trace_sd_v=noise,
        timings_s=timings,
        n_updates=n_updates,
        n_pair_evaluations=int(ev[:, 2].sum()) * (1 + params.n_surrogates),
        mean_gain=inp.gain.mean(axis=1) if inp.gain.size else np.zeros(n_post),
        n_tested=n_tested,
        pre=pre_units.astype(np.int64),
        post=inp.posts[c_post].astype(np.int64),
        screen_z=screen_best,
        mean=mean,
        sd=sd,
        n=n,
        null_mean=null_mean,
        null_sd=null_sd,
        event=ev,
        same_neuron=same,
        z=sig.z,
        p=p,
        best_bin=sig.best_bin,
        traces=traces,
        trace_gain=tgain,
    )


def group_size(n_dec: int, n_pre: int, params: ExtractionParams, reserved: int) -> int:
    """Post units per group so that a group's arrays fit the budget left after ``reserved``,
    and one block of :data:`averaging.WIDTH` per thread at most: larger groups only make
    the all-pairs accumulators spill further out of the caches, and add fresh memory."""
    per_post = n_dec * (4 + 8 + 1 + 1) + n_pre * len(params.boundaries()) * 4 * 2
    seg = params.dec(SEGMENT_S) + 64
    per_post += seg * 4
    room = params.memory_budget_bytes - reserved
    size = (room // max(per_post, 1)) // averaging.WIDTH * averaging.WIDTH
    if size < averaging.WIDTH:
        need = reserved + per_post * averaging.WIDTH
        raise ExtractionError(
            f"memory_budget_bytes {params.memory_budget_bytes} is too small for this "
            f"recording: need at least {need} (raise it, or shorten chunk_s)"
        )
    return int(min(size, averaging.WIDTH * max(1, numba.get_num_threads())))


# ------------------------------------------------------------------------- result


@dataclass
class Connectivity:
    """The synaptic map: one row per detected connection (unit indices)."""

    pre: np.ndarray
    post: np.ndarray
    kind: np.ndarray
    """uint8: 0 excitatory, 1 inhibitory, 2 electrical."""
    strong: np.ndarray
    """bool: eventful (the presynaptic spike reliably triggers a postsynaptic spike)."""
    weight_v: np.ndarray
    """Peak PSP at the postsynaptic soma (electrode peak / electrode gain), signed, V."""
    psp_electrode_v: np.ndarray
    """Peak of the average as the post electrode saw it, signed, V."""
    latency_s: np.ndarray
    """Onset latency of the PSP after the presynaptic spike, s."""
    peak_latency_s: np.ndarray
    z: np.ndarray
    """Largest |z| over bins against the surrogates."""
    p: np.ndarray
    q: np.ndarray
    """Benjamini–Hochberg adjusted p-value."""
    noise_v: np.ndarray
    """Noise of the average PSP trace (single-trial trace SD / √triggers / gain), somatic V."""
    n_triggers: np.ndarray
    event_probability: np.ndarray
    """Observed minus surrogate probability of a post spike in the response window."""
    average_v: np.ndarray
    """(K, L) average PSP trace (baseline-subtracted), electrode V."""

    @property
    def n(self) -> int:
        return int(self.pre.size)


@dataclass
class ExtractionResult:
    """Everything one extraction produces."""

    params: ExtractionParams
    units: Units
    summary: ChannelSummary
    connectivity: Connectivity
    lags_s: np.ndarray
    """Lags of ``connectivity.average_v`` columns, s."""
    n_tested: int
    """Ordered unit pairs tested (the m of the multiple-comparison control)."""
    n_candidates: int
    unit_trial_sd_v: np.ndarray
    """(U,) single-trial SD of each post unit's trace about its baseline in the response
    window (NaN if not post), electrode V: over √triggers and the gain, the noise of an
    average PSP."""
    unit_gain: np.ndarray
    """(U,) mean electrode gain of each unit (spike height / spike_height_v)."""
    unit_triggers: np.ndarray
    """(U,) usable presynaptic triggers of each unit."""
    duration_s: float
    sample_rate_hz: float
    n_channels: int
    source: str = ""
    work: dict[str, float] = field(default_factory=dict)
    """Per-stage time summed over groups (``screen_kernel_s``, ``screen_s``,
    ``surrogates_s``, ``averages_s``), the all-pairs kernel's ``screen_updates`` and the
    candidate stage's ``pair_evaluations``."""
    candidates: dict[str, np.ndarray] = field(default_factory=dict)
    """Every candidate pair of the screen: ``pre``, ``post`` (units), ``screen_z``, ``p``."""
    timings_s: dict[str, float] = field(default_factory=dict)
    scores: dict[str, Any] | None = None


def assemble(
    groups: list[GroupResult],
    units: Units,
    summary: ChannelSummary,
    triggers: Triggers,
    params: ExtractionParams,
    *,
    duration_s: float,
    sample_rate_hz: float,
    n_channels: int,
    source: str = "",
) -> ExtractionResult:
    """Multiple-comparison control over all groups, classes, weights: the map."""
    groups = sorted(groups, key=lambda g: int(g.posts[0]) if g.posts.size else -1)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(g, name) for g in groups])

    pre, post, p = cat("pre"), cat("post"), cat("p")
    same = cat("same_neuron")
    n_tested = sum(g.n_tested for g in groups) - int(same.sum())
    sig, qval = psp.benjamini_hochberg(p, n_tested, params.fdr)
    sel = np.flatnonzero(sig)
    traces = cat("traces")[sel]
    z = cat("z")[sel]
    best = cat("best_bin")[sel]
    event = cat("event")[sel]
    response = z[:, 1:] if z.shape[1] > 1 else z
    strongest = np.argmax(np.abs(response), axis=1) if sel.size else np.zeros(0, dtype=int)
    sign = np.where(response[np.arange(sel.size), strongest] >= 0, 1.0, -1.0)
    zero_bin = best == 0
    sign = np.where(zero_bin, np.where(z[np.arange(sel.size), 0] >= 0, 1.0, -1.0), sign)
    feats = psp.trace_features(traces, sign, params)
    kind, strong = psp.classify(
        pre[sel], post[sel], z, feats.onset_latency_s, event[:, 0] - event[:, 1], params
    )
    sign = np.where(kind == psp.KIND_ELECTRICAL, sign, np.where(kind == 0, 1.0, -1.0))
    feats = psp.trace_features(traces, sign, params)
    # chemical connections start within the range of synaptic delays
    if params.whiten_order > 0:  # chemical onsets from the kick: precise where averages are not
        kick = psp.kick_latency(z, best, params)
        feats.onset_latency_s = np.where(kind == psp.KIND_ELECTRICAL, feats.onset_latency_s, kick)
    onset = feats.onset_latency_s
    direct = (kind == psp.KIND_ELECTRICAL) | (
        (onset >= params.min_latency_s) & (onset <= params.max_latency_s)
    )
    if params.dale:
        direct &= ~dale_minority(pre[sel], kind, z, best)
    n_units = units.n_units
    trial_sd = np.full((n_units,), np.nan)
    gain = np.full(n_units, np.nan)
    for g in groups:
        trial_sd[g.posts] = g.trace_sd_v
        gain[g.posts] = g.mean_gain
    tgain = cat("trace_gain")[sel]
    n_trig = cat("n")[sel]
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = feats.psp_v / tgain
        noise = trial_sd[post[sel]] / np.sqrt(np.maximum(n_trig, 1)) / tgain
    gained = event[:, 0] - event[:, 1] if sel.size else np.zeros(0)
    # a connection whose every trial saw a post spike has no average to weigh it by
    direct &= np.isfinite(weight)
    if params.indirect_ratio > 0:
        direct &= ~relayed(pre[sel], post[sel], kind, strong, direct, gained, weight, params)
    keep = np.flatnonzero(direct)
    sel, traces, z, best, event = sel[keep], traces[keep], z[keep], best[keep], event[keep]
    kind, strong, sign = kind[keep], strong[keep], sign[keep]
    weight, noise, tgain, n_trig = weight[keep], noise[keep], tgain[keep], n_trig[keep]
    feats = psp.TraceFeatures(
        psp_v=feats.psp_v[keep],
        peak_latency_s=feats.peak_latency_s[keep],
        onset_latency_s=feats.onset_latency_s[keep],
    )
    conn = Connectivity(
        pre=pre[sel],
        post=post[sel],
        kind=kind,
        strong=strong,
        weight_v=weight,
        psp_electrode_v=feats.psp_v,
        latency_s=feats.onset_latency_s,
        peak_latency_s=feats.peak_latency_s,
        z=np.abs(z[np.arange(sel.size), best]) if sel.size else np.zeros(0),
        p=p[sel],
        q=qval[sel],
        noise_v=noise,
        n_triggers=n_trig,
        event_probability=gained[keep],
        average_v=(traces - np.nanmean(_baseline(traces, params), axis=1)[:, None]).astype(
            np.float32
        ),
    )
    first = -params.dec(params.average_before_s)
    lags = (np.arange(traces.shape[1]) + first) / params.decimated_rate_hz
    work: dict[str, float] = {
        "screen_updates": float(sum(g.n_updates for g in groups)),
        "pair_evaluations": float(sum(g.n_pair_evaluations for g in groups)),
    }
    for g in groups:
        for key, value in g.timings_s.items():
            work[key] = work.get(key, 0.0) + value
    return ExtractionResult(
        params=params,
        units=units,
        summary=summary,
        connectivity=conn,
        lags_s=lags,
        n_tested=n_tested,
        n_candidates=int(pre.size),
        unit_trial_sd_v=trial_sd,
        unit_gain=gain,
        unit_triggers=triggers.n_ok.astype(np.int64),
        duration_s=duration_s,
        sample_rate_hz=sample_rate_hz,
        n_channels=n_channels,
        source=source,
        candidates={"pre": pre, "post": post, "screen_z": cat("screen_z"), "p": p},
        work=work,
    )


def relayed(
    pre: np.ndarray,
    post: np.ndarray,
    kind: np.ndarray,
    strong: np.ndarray,
    kept: np.ndarray,
    gained: np.ndarray,
    weight: np.ndarray,
    params: ExtractionParams,
) -> np.ndarray:
    """(K,) bool: connections a → b that the eventful targets of a explain (among the
    ``kept`` connections).

    When a's spike makes x fire (a strong connection, firing probability raised by
    ``gained``) and x → b is a connection of the same sign, every spike of a is followed
    by x's PSP in b: a → b shows a response of about Σ_x gained(a→x) × |w(x→b)| without
    a synapse. A connection no larger than ``indirect_ratio`` times that is dropped.
    """
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(pre, post, strict=True))}
    relays: dict[int, list[int]] = {}
    for k in np.flatnonzero(strong & kept):
        relays.setdefault(int(pre[k]), []).append(k)
    out = np.zeros(pre.size, dtype=bool)
    for k in range(pre.size):
        if kind[k] == psp.KIND_ELECTRICAL or int(pre[k]) not in relays:
            continue
        expected = 0.0
        for ks in relays[int(pre[k])]:
            kb = index.get((int(post[ks]), int(post[k])))
            if kb is not None and kept[kb] and kind[kb] == kind[k] and np.isfinite(weight[kb]):
                expected += max(float(gained[ks]), 0.0) * abs(float(weight[kb]))
        out[k] = expected > 0 and abs(float(weight[k])) <= params.indirect_ratio * expected
    return out


def dale_minority(pre: np.ndarray, kind: np.ndarray, z: np.ndarray, best: np.ndarray) -> np.ndarray:
    """(K,) bool: chemical connections whose sign is the minority among their pre unit's
    (two or more chemical connections; votes weighted by |z| capped at 10)."""
    chem = kind != psp.KIND_ELECTRICAL
    sign = np.where(kind == psp.KIND_EXCITATORY, 1.0, -1.0)
    weight = np.minimum(np.abs(z[np.arange(kind.size), best]), 10.0) if kind.size else sign
    out = np.zeros(kind.size, dtype=bool)
    for u in np.unique(pre[chem]):
        idx = np.flatnonzero((pre == u) & chem)
        if idx.size < 2:
            continue
        majority = 1.0 if np.sum(sign[idx] * weight[idx]) >= 0 else -1.0
        out[idx[sign[idx] != majority]] = True
    return out


def _baseline(traces: np.ndarray, params: ExtractionParams) -> np.ndarray:
    first = -params.dec(params.average_before_s)
    lags = (np.arange(traces.shape[1]) + first) / params.decimated_rate_hz
    base = (lags >= params.baseline_start_s) & (lags < params.baseline_end_s)
    return traces[:, base]


# ------------------------------------------------------------------------- driver


def lost_decimated(recording: Recording, plan: ChunkPlan) -> np.ndarray:
    """(T,) bool: decimated samples touching a gap."""
    lost = np.zeros(plan.n_decimated, dtype=bool)
    for first, end in np.asarray(recording.gaps, dtype=np.int64).reshape(-1, 2):
        a = max(0, int(first) // plan.q)
        b = min(plan.n_decimated, -(-int(end) // plan.q))
        lost[a:b] = True
    return lost


@dataclass
class Prepared:
    """The state between the raw pass and the group analysis."""

    plan: ChunkPlan
    summary: ChannelSummary
    units: Units
    triggers: Triggers
    pres: np.ndarray
    posts: np.ndarray
    gain: np.ndarray


def prepare(
    recording: Recording, summary: ChannelSummary, plan: ChunkPlan, params: ExtractionParams
) -> Prepared:
    """Bad channels, units, triggers, gains: what the group analysis needs."""
    summary = finish_summary(summary, params, recording.bad_channels)
    units = merge_units(summary, recording.positions_m, recording.sample_rate_hz, params)
    if units.n_units == 0:
        raise ExtractionError("no units: no channel has spikes")
    triggers = make_triggers(
        units, plan.n_decimated, plan.q, lost_decimated(recording, plan), params
    )
    gain = gain_series(units, summary, plan.length, plan.n_chunks, params)
    pres = np.flatnonzero(triggers.n_ok >= params.min_triggers)
    posts = np.flatnonzero(units.intracellular)
    return Prepared(plan, summary, units, triggers, pres, posts, gain)


def group_inputs(
    prep: Prepared, recording: Recording, params: ExtractionParams, size: int
) -> Iterator[tuple[np.ndarray, GroupInput]]:
    """(post-unit indices, GroupInput) per group of ``size``."""
    visits = screen_visits(prep.triggers, prep.pres, prep.plan.n_decimated, params)
    for g0 in range(0, prep.posts.size, size):
        posts = prep.posts[g0 : g0 + size]
        yield (
            posts,
            GroupInput(
                params=params,
                posts=posts,
                pres=prep.pres,
                triggers=prep.triggers,
                spike_ptr=prep.units.spike_ptr,
                spike_sample=prep.units.spike_sample,
                q=prep.plan.q,
                sample_rate_hz=recording.sample_rate_hz,
                gain=prep.gain[posts],
                chunk_dec=prep.plan.length // prep.plan.q,
                visits=visits,
            ),
        )


def extract(
    recording: Recording,
    params: ExtractionParams,
    *,
    progress: bool = True,
) -> ExtractionResult:
    """Run the whole extraction on ``recording`` in this process (see the module docstring)."""
    from tqdm import tqdm

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = plan_chunks(recording, params)
    if plan.n_decimated < 4 * params.dec(params.response_edges_s[-1] - params.baseline_start_s):
        raise ExtractionError(f"recording too short ({recording.duration_s:.3f} s)")
    scratch_bytes = recording.n_channels * plan.n_decimated * 4
    in_memory = scratch_bytes <= params.memory_budget_bytes // 2
    scratch = Scratch(recording.n_channels, plan.n_decimated, in_memory, params.scratch_dir)
    try:
        raw = RawPass(recording, channel_calibration(recording), params, plan)
        results = []
        bar = tqdm(
            total=plan.n_chunks, desc="extract: spikes", unit="chunk", disable=not progress,
            leave=False,
        )  # fmt: skip
        with bar:
            for i in range(plan.n_chunks):
                start, stop = plan.bounds(i)
                r = raw.run(i, scratch.block(start // plan.q, (stop - start) // plan.q))
                r.decimated_v = np.zeros((0, 0), dtype=np.float32)
                results.append(r)
                bar.update()
        timings["spikes_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        prep = prepare(recording, summarize(results, plan, None), plan, params)
        del results
        timings["units_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        reserved = scratch_bytes if in_memory else 0
        size = group_size(plan.n_decimated, prep.pres.size, params, reserved)
        groups = []
        work = Workspace()
        n_groups = math.ceil(prep.posts.size / size)
        with tqdm(
            total=n_groups, desc="extract: pairs", unit="group", disable=not progress, leave=False
        ) as bar:
            for posts, inp in group_inputs(prep, recording, params, size):
                channels = prep.units.best[posts]
                x = scratch.rows(
                    channels, work.array("x", (posts.size, plan.n_decimated), np.float32)
                )
                groups.append(analyse_group(x, inp, work))
                bar.update()
        timings["pairs_s"] = time.perf_counter() - t2
    finally:
        scratch.close()
    result = assemble(
        groups, prep.units, prep.summary, prep.triggers, params,
        duration_s=recording.duration_s, sample_rate_hz=recording.sample_rate_hz,
        n_channels=recording.n_channels, source=recording.source,
    )  # fmt: skip
    timings["total_s"] = time.perf_counter() - t0
    result.timings_s = timings
    return result
