"""Pass over the raw samples: bad-channel statistics, spike detection, spike removal, decimation.

One numba kernel reads each chunk of raw codes once and, per channel:

1. converts codes to volts (the calibration seam, :mod:`~instrument.extract.volts`);
2. detects spikes on the rise ``v(t) − v(t − spike_rise_s)`` crossing ``spike_threshold``
   robust SDs (1.4826 × MAD, estimated per chunk so slow changes of access are followed),
   the spike time being the peak within ``spike_peak_search_s``, with a refractory period;
   candidates far smaller than the channel's typical spike in the chunk (fast large PSPs)
   are dropped;
3. cuts the channel's own spikes out of its trace (``blank_before_s`` … ``blank_after_s``
   around each peak, bridged by a straight line) — the *subthreshold* trace;
4. box-averages the subthreshold trace down to ``decimated_rate_hz`` (gap samples give NaN).

Chunks overlap by a halo so that spikes and blanking near a chunk edge are handled as
in the middle of a chunk; each spike belongs to the chunk holding its peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from instrument.extract.params import ExtractionParams
from instrument.extract.prefetch import prefetch
from instrument.extract.quickselect import column_medians, select_kth
from instrument.extract.volts import ChannelCalibration
from instrument.recording import Recording

_BLOCK = 64
"""Channels processed together, time-major (a fixed width lets numba vectorise across them)."""

_AHEAD = 16
"""Rows of raw codes prefetched ahead of the conversion (each row is in a new page)."""

WAVEFORM_BEFORE_S = 1e-3
WAVEFORM_AFTER_S = 3e-3
"""Span of the average spike waveform kept per channel (for merging and display), s."""

RAIL_CODE = 32767
"""ADC codes clip at ±32767 (−32768 marks lost samples)."""

MIN_RELATIVE_HEIGHT = 0.3
"""Candidates smaller than this fraction of the channel's median candidate height in a chunk
are not spikes (fast, large PSPs can cross the rise threshold; action potentials are
several times larger)."""


@dataclass(frozen=True)
class ChunkPlan:
    """How a recording is cut into chunks (raw samples, aligned to the decimation)."""

    n_samples: int
    """Raw samples used (a multiple of ``q``)."""
    q: int
    """Raw samples per decimated sample."""
    length: int
    """Raw samples per chunk (a multiple of ``q``)."""
    halo: int
    """Raw samples read on each side of a chunk (a multiple of ``q``)."""

    @property
    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n_samples / self.length))

    @property
    def n_decimated(self) -> int:
        return self.n_samples // self.q

    def bounds(self, index: int) -> tuple[int, int]:
        """[start, stop) raw samples of chunk ``index``."""
        start = index * self.length
        return start, min(start + self.length, self.n_samples)


def plan_chunks(recording: Recording, params: ExtractionParams) -> ChunkPlan:
    """The chunking of ``recording`` that ``params`` define."""
    fs = recording.sample_rate_hz
    q = params.decimation(fs)
    n = (recording.n_samples // q) * q
    length = max(q, round(params.chunk_s * fs / q) * q)
    reach = (
        params.spike_rise_s
        + params.spike_peak_search_s
        + params.refractory_s
        + params.blank_before_s
        + params.blank_after_s
    )
    halo = math.ceil(reach * fs / q + 1) * q
    return ChunkPlan(n_samples=n, q=q, length=length, halo=halo)


@dataclass
class ChunkResult:
    """What one chunk gives: spikes, decimated subthreshold traces, channel statistics."""

    index: int
    start: int
    stop: int
    spike_channel: np.ndarray
    """(S,) int32 channel of each spike."""
    spike_sample: np.ndarray
    """(S,) int64 raw sample index of each spike's peak."""
    spike_height_v: np.ndarray
    """(S,) float32 peak minus the level before the rise, V."""
    decimated_v: np.ndarray
    """(C, (stop − start) / q) float32 subthreshold traces at the decimated rate, V."""
    rail_samples: np.ndarray
    """(C,) int64 samples at the ADC rail in the chunk."""
    rise_sd_v: np.ndarray
    """(C,) float32 robust SD of the rise signal (0 when flat), V."""
    waveform_sum_v: np.ndarray
    """(C, L) float32 sum over the chunk's spikes of each channel's raw waveform around its
    spike peaks (``WAVEFORM_BEFORE_S`` before to ``WAVEFORM_AFTER_S`` after), V."""


@numba.njit(cache=True, parallel=True)
def _chunk_kernel(
    codes: np.ndarray,
    gain: np.ndarray,
    offset: np.ndarray,
    lost: np.ndarray,
    has_lost: bool,
    is_int: bool,
    k: int,
    threshold: float,
    min_rel: float,
    refractory: int,
    peak_search: int,
    blank_before: int,
    blank_after: int,
    q: int,
    core_lo: int,
    core_hi: int,
    out_dec: np.ndarray,
    sp_t: np.ndarray,
    sp_h: np.ndarray,
    sp_n: np.ndarray,
    rail: np.ndarray,
    rise_sd: np.ndarray,
    wave: np.ndarray,
    wave_before: int,
    work: np.ndarray,
) -> None:
    _n, n_ch = codes.shape
    n_blocks = (n_ch + _BLOCK - 1) // _BLOCK
    n_workers = work.shape[0]
    for w in numba.prange(n_workers):
        tile = work[w]
        for b in range(w, n_blocks, n_workers):
            c0 = b * _BLOCK
            _block(
                codes, tile, c0, min(n_ch, c0 + _BLOCK) - c0, gain, offset, lost, has_lost,
                is_int, k, threshold, min_rel, refractory, peak_search, blank_before,
                blank_after, q, core_lo, core_hi, out_dec, sp_t, sp_h, sp_n, rail, rise_sd,
                wave, wave_before,
            )  # fmt: skip


@numba.njit(cache=True)
def _convert(
    codes: np.ndarray,
    tile: np.ndarray,
    c0: int,
    gain: np.ndarray,
    offset: np.ndarray,
    core_lo: int,
    core_hi: int,
    n_rail: np.ndarray,
    n_fill: np.ndarray,
) -> None:
    """A full block: codes → volts, time-major, across channels (vectorised: width is fixed),
    with the codes :data:`_AHEAD` rows on prefetched."""
    n = codes.shape[0]
    g = gain[c0 : c0 + _BLOCK]
    o = offset[c0 : c0 + _BLOCK]
    for t in range(n):
        if t + _AHEAD < n:
            prefetch(codes, t + _AHEAD, c0)
            prefetch(codes, t + _AHEAD, c0 + _BLOCK - 1)
        row = codes[t, c0 : c0 + _BLOCK]
        out = tile[t]
        lo = row[0]
        hi = row[0]
        for j in range(_BLOCK):
            x = row[j]
            out[j] = np.float32(x) * g[j] + o[j]
            lo = min(lo, x)
            hi = max(hi, x)
        if lo <= -32767 or hi >= 32767:  # rare: count rail and fill codes lane by lane
            core = (t >= core_lo) & (t < core_hi)
            for j in range(_BLOCK):
                x = row[j]
                n_rail[j] += ((x == 32767) | (x == -32767)) & core
                n_fill[j] += x == -32768


@numba.njit(cache=True)
def _block(
    codes: np.ndarray,
    tile: np.ndarray,
    c0: int,
    width: int,
    gain: np.ndarray,
    offset: np.ndarray,
    lost: np.ndarray,
    has_lost: bool,
    is_int: bool,
    k: int,
    threshold: float,
    min_rel: float,
    refractory: int,
    peak_search: int,
    blank_before: int,
    blank_after: int,
    q: int,
    core_lo: int,
    core_hi: int,
    out_dec: np.ndarray,
    sp_t: np.ndarray,
    sp_h: np.ndarray,
    sp_n: np.ndarray,
    rail: np.ndarray,
    rise_sd: np.ndarray,
    wave: np.ndarray,
    wave_before: int,
) -> None:
    """Spikes, blanking and decimation for ``width`` channels from ``c0`` (time-major tile)."""
    n = codes.shape[0]
    n_rail = np.zeros(_BLOCK, dtype=np.int64)
    n_fill = np.zeros(_BLOCK, dtype=np.int64)
    if width == _BLOCK:
        _convert(codes, tile, c0, gain, offset, core_lo, core_hi, n_rail, n_fill)
    else:
        for t in range(n):
            for j in range(width):
                x = codes[t, c0 + j]
                tile[t, j] = np.float32(x) * gain[c0 + j] + offset[c0 + j]
                if (x == 32767 or x == -32767) and core_lo <= t < core_hi:
                    n_rail[j] += 1
                if x == -32768:
                    n_fill[j] += 1
            for j in range(width, _BLOCK):
                tile[t, j] = 0.0
    any_fill = False
    for j in range(width):
        rail[c0 + j] = n_rail[j] if is_int else 0
        any_fill |= is_int and n_fill[j] > 0
    if any_fill or has_lost:
        for t in range(n):
            for j in range(width):
                if lost[t] or (is_int and codes[t, c0 + j] == -32768):
                    tile[t, j] = np.nan
    # robust SD of the rise, per channel, from rises every 4k samples (nearly independent):
    # 1.4826 × the median absolute deviation, all channels of the block at once
    step = 4 * k
    m_rows = max(0, (n - 1) // step)
    rises = np.empty((m_rows, _BLOCK), dtype=np.float32)
    for i in range(m_rows):
        now = tile[(i + 1) * step]
        before = tile[(i + 1) * step - k]
        for j in range(_BLOCK):
            rises[i, j] = now[j] - before[j]
    med = np.empty(_BLOCK, dtype=np.float32)
    mad = np.empty(_BLOCK, dtype=np.float32)
    m = np.empty(_BLOCK, dtype=np.int64)
    column_medians(rises, med, m)
    for i in range(m_rows):
        for j in range(_BLOCK):
            rises[i, j] = abs(rises[i, j] - med[j])
    column_medians(rises, mad, m)
    thr = np.empty(_BLOCK, dtype=np.float32)
    for j in range(_BLOCK):
        thr[j] = np.inf
    for j in range(width):
        sd = np.float32(1.4826 * mad[j]) if m[j] > 8 else np.float32(0.0)
        rise_sd[c0 + j] = sd
        if sd > 0:
            thr[j] = threshold * sd
    # threshold crossings, all channels of the block at once
    cap = n // max(refractory, 1) + 2
    cand_t = np.empty((_BLOCK, cap), dtype=np.int64)
    cand_h = np.empty((_BLOCK, cap), dtype=np.float32)
    n_cand = np.zeros(_BLOCK, dtype=np.int64)
    allowed = np.zeros(_BLOCK, dtype=np.int64)
    for t in range(k, n):
        now = tile[t]
        before = tile[t - k]
        hit = False
        for j in range(_BLOCK):
            hit |= (now[j] - before[j]) > thr[j]
        if not hit:
            continue
        for j in range(width):
            if t >= allowed[j] and (now[j] - before[j]) > thr[j]:
                p = t
                best = now[j]
                for u in range(t + 1, min(n, t + peak_search + 1)):
                    if tile[u, j] > best:
                        best = tile[u, j]
                        p = u
                cand_t[j, n_cand[j]] = p
                cand_h[j, n_cand[j]] = best - before[j]
                n_cand[j] += 1
                allowed[j] = p + refractory
    for j in range(width):
        _finish_channel(
            tile, j, c0 + j, cand_t[j], cand_h[j], n_cand[j], min_rel, blank_before,
            blank_after, core_lo, core_hi, sp_t, sp_h, sp_n, wave, wave_before,
        )  # fmt: skip
    # decimate the core (box average), all channels of the block at once
    n_dec = (core_hi - core_lo) // q
    acc = np.empty(_BLOCK, dtype=np.float32)
    inv = np.float32(1.0 / q)
    for i in range(n_dec):
        for j in range(_BLOCK):
            acc[j] = 0.0
        base = core_lo + i * q
        for u in range(q):
            row = tile[base + u]
            for j in range(_BLOCK):
                acc[j] += row[j]
        for j in range(width):
            out_dec[c0 + j, i] = acc[j] * inv


@numba.njit(cache=True)
def _finish_channel(
    tile: np.ndarray,
    j: int,
    c: int,
    cand_t: np.ndarray,
    cand_h: np.ndarray,
    nc: int,
    min_rel: float,
    blank_before: int,
    blank_after: int,
    core_lo: int,
    core_hi: int,
    sp_t: np.ndarray,
    sp_h: np.ndarray,
    sp_n: np.ndarray,
    wave: np.ndarray,
    wave_before: int,
) -> None:
    """Keep real spikes, add the core's to the waveform sums, report them, and bridge every
    kept spike out of column ``j`` of the tile."""
    n = tile.shape[0]
    keep = np.zeros(nc, dtype=np.bool_)
    if nc > 0:
        heights = cand_h[:nc].copy()
        typical = select_kth(heights, nc, nc // 2)
        for i in range(nc):
            keep[i] = cand_h[i] >= min_rel * typical
    n_wave = wave.shape[1]
    for i in range(nc):
        p = cand_t[i]
        if (
            keep[i]
            and core_lo <= p < core_hi
            and p >= wave_before
            and p - wave_before + n_wave <= n
        ):
            for u in range(n_wave):
                wave[c, u] += tile[p - wave_before + u, j]
    i = 0
    while i < nc:
        if not keep[i]:
            i += 1
            continue
        lo = max(cand_t[i] - blank_before, 0)
        hi = min(cand_t[i] + blank_after, n - 1)
        nxt = i + 1
        while nxt < nc:
            if keep[nxt]:
                if cand_t[nxt] - blank_before <= hi + 1:
                    hi = min(cand_t[nxt] + blank_after, n - 1)
                else:
                    break
            nxt += 1
        left = tile[lo - 1, j] if lo > 0 else (tile[hi + 1, j] if hi + 1 < n else np.float32(0))
        right = tile[hi + 1, j] if hi + 1 < n else left
        span = np.float32(hi - lo + 2)
        for t in range(lo, hi + 1):
            tile[t, j] = left + (right - left) * (np.float32(t - lo + 1) / span)
        i = nxt
    ns = 0
    max_sp = sp_t.shape[1]
    for i in range(nc):
        if keep[i] and core_lo <= cand_t[i] < core_hi and ns < max_sp:
            sp_t[c, ns] = cand_t[i]
            sp_h[c, ns] = cand_h[i]
            ns += 1
    sp_n[c] = ns


def read_rows(traces: Any, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
    """Rows [lo, hi) of ``traces``: a view when ``traces`` is an in-memory array of ``out``'s
    type (nothing to read), else read into the start of ``out`` (no fresh allocation)."""
    if isinstance(traces, np.ndarray) and traces.dtype == out.dtype and traces.flags.c_contiguous:
        return traces[lo:hi]
    view = out[: hi - lo]
    if hasattr(traces, "read_direct") and np.dtype(traces.dtype) == out.dtype:
        traces.read_direct(view, np.s_[lo:hi], np.s_[0 : hi - lo])
    else:
        np.copyto(view, np.asarray(traces[lo:hi]), casting="unsafe")
    return view


class RawPass:
    """Runs the raw-sample pass chunk by chunk, reusing its buffers (fresh memory is slow)."""

    def __init__(
        self,
        recording: Recording,
        calibration: ChannelCalibration,
        params: ExtractionParams,
        plan: ChunkPlan,
    ) -> None:
        self.recording = recording
        self.calibration = calibration
        self.params = params
        self.plan = plan
        fs = recording.sample_rate_hz
        self.is_int = np.dtype(recording.traces.dtype) == np.int16
        rows = plan.length + 2 * plan.halo
        n_ch = recording.n_channels
        self._raw = np.empty((rows, n_ch), dtype=np.int16 if self.is_int else np.float32)
        workers = max(1, numba.get_num_threads())
        self._work = np.empty((workers, rows, _BLOCK), dtype=np.float32)
        self.refractory = max(1, round(params.refractory_s * fs))
        self.max_spikes = plan.length // self.refractory + 2
        self._sp_t = np.empty((n_ch, self.max_spikes), dtype=np.int64)
        self._sp_h = np.empty((n_ch, self.max_spikes), dtype=np.float32)
        self._k = max(1, round(params.spike_rise_s * fs))
        self._peak = max(0, round(params.spike_peak_search_s * fs))
        self._before = round(params.blank_before_s * fs)
        self._after = round(params.blank_after_s * fs)
        self.wave_before = round(WAVEFORM_BEFORE_S * fs)
        self.wave_length = self.wave_before + round(WAVEFORM_AFTER_S * fs)

    def run(self, index: int, out: np.ndarray | None = None) -> ChunkResult:
        """The raw-sample pass over chunk ``index``; its decimated traces go into ``out``
        (C, (stop − start) / q) float32 when given (e.g. a view of the whole recording's
        traces: no copy, no fresh memory), else into a new array."""
        plan, rec = self.plan, self.recording
        start, stop = plan.bounds(index)
        lo = max(0, start - plan.halo)
        hi = min(rec.n_samples, stop + plan.halo)
        codes = read_rows(rec.traces, lo, hi, self._raw)
        lost = rec.gap_mask(lo, hi)
        n_ch = codes.shape[1]
        shape = (n_ch, (stop - start) // plan.q)
        out_dec = np.empty(shape, dtype=np.float32) if out is None else np.asarray(out)
        if out_dec.shape != shape or out_dec.dtype != np.float32:
            raise ValueError(f"out must be float32 {shape}, not {out_dec.dtype} {out_dec.shape}")
        sp_n = np.zeros(n_ch, dtype=np.int64)
        rail = np.zeros(n_ch, dtype=np.int64)
        rise_sd = np.zeros(n_ch, dtype=np.float32)
        wave = np.zeros((n_ch, self.wave_length), dtype=np.float32)
        _chunk_kernel(
            codes, self.calibration.gain_v, self.calibration.offset_v, lost, bool(lost.any()),
            self.is_int, self._k, float(self.params.spike_threshold), MIN_RELATIVE_HEIGHT,
            self.refractory, self._peak, self._before, self._after, plan.q,
            start - lo, stop - lo, out_dec, self._sp_t, self._sp_h, sp_n, rail, rise_sd,
            wave, self.wave_before, self._work,
        )  # fmt: skip
        chan = np.repeat(np.arange(n_ch, dtype=np.int32), sp_n)
        mask = np.arange(self.max_spikes)[None, :] < sp_n[:, None]
        sample = self._sp_t[mask] + lo
        height = self._sp_h[mask]
        order = np.lexsort((chan, sample))
        return ChunkResult(
            index=index,
            start=start,
            stop=stop,
            spike_channel=chan[order],
            spike_sample=sample[order].astype(np.int64),
            spike_height_v=height[order].astype(np.float32),
            decimated_v=out_dec,
            rail_samples=rail,
            rise_sd_v=rise_sd,
            waveform_sum_v=wave,
        )
