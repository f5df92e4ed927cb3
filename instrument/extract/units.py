"""Electrodes that see the same neuron, merged into units.

About 1.8 electrodes see each neuron (Wang et al. 2025). Two nearby electrodes
(``merge_distance_m``) belong to one neuron when their spikes coincide within
``merge_window_s`` beyond chance — the zero-lag coincident fraction of the sparser train
minus its value at lags of a few ms (network bursts make neurons co-fire, not to the
sample) is at least ``merge_min_coincidence`` — *and* their average spike waveforms
correlate at least ``merge_min_waveform_corr`` (waived when one electrode only sees the
extracellular, derivative-like spike). Merging is transitive (union–find). Each unit keeps its
*best* electrode — the one with the largest spikes, i.e. the best intracellular access —
for its spike train and its subthreshold trace; the others are listed with it, so every
unit maps back to the array. A unit whose best spikes are smaller than
``min_intracellular_spike_v`` has no usable intracellular trace and is presynaptic only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy.spatial import cKDTree

from instrument.extract.params import ExtractionParams

MIN_UNIT_SPIKES = 3
"""Channels with fewer spikes in the whole recording form no unit."""

MIN_MERGE_COINCIDENCES = 8
"""Two electrodes never merge on fewer coincident spikes than this (too few to tell one
neuron from two that fire in the same network bursts)."""


@dataclass
class ChannelSummary:
    """Per-channel results of the raw pass, over the whole recording."""

    spike_channel: np.ndarray
    """(S,) int32, spikes of every channel, sorted by (channel, sample)."""
    spike_sample: np.ndarray
    """(S,) int64 raw sample of each spike peak."""
    spike_height_v: np.ndarray
    """(S,) float32 spike height, V."""
    rail_fraction: np.ndarray
    """(C,) fraction of samples at the ADC rail."""
    noise_v: np.ndarray
    """(C,) median over chunks of the robust SD of the rise signal, V."""
    waveform_v: np.ndarray
    """(C, L) average spike waveform of each channel, V (zeros without spikes)."""
    bad: np.ndarray
    """(C,) bool: saturated, flat, or marked bad in the recording."""

    @property
    def n_channels(self) -> int:
        return int(self.rail_fraction.shape[0])

    @property
    def ptr(self) -> np.ndarray:
        """(C + 1,) int64: channel c's spikes are [ptr[c], ptr[c + 1])."""
        cached = self.__dict__.get("_ptr")
        if cached is None or cached.shape[0] != self.n_channels + 1:
            counts = np.bincount(self.spike_channel, minlength=self.n_channels)
            cached = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self.__dict__["_ptr"] = cached
        return cached

    def spikes_of(self, channel: int) -> np.ndarray:
        """Raw samples of ``channel``'s spikes, sorted."""
        ptr = self.ptr
        return self.spike_sample[ptr[channel] : ptr[channel + 1]]

    def heights_of(self, channel: int) -> np.ndarray:
        ptr = self.ptr
        return self.spike_height_v[ptr[channel] : ptr[channel + 1]]


def mark_bad(
    rail_fraction: np.ndarray,
    noise_v: np.ndarray,
    params: ExtractionParams,
    known_bad: np.ndarray | None = None,
) -> np.ndarray:
    """(C,) bool: channels stuck at a rail, flat, or already known bad."""
    bad = (rail_fraction > params.saturation_fraction) | ~(noise_v >= params.min_noise_v)
    if known_bad is not None:
        bad |= np.asarray(known_bad, dtype=bool)
    return bad


@dataclass
class Units:
    """Neurons as the array sees them: one row per unit."""

    best: np.ndarray
    """(U,) int32 best electrode (channel index = row × 64 + col) of each unit."""
    member_ptr: np.ndarray
    """(U + 1,) int64: the unit's electrodes are ``members[member_ptr[u]:member_ptr[u+1]]``."""
    members: np.ndarray
    """Electrodes of every unit, best first."""
    spike_ptr: np.ndarray
    """(U + 1,) int64 into ``spike_sample``."""
    spike_sample: np.ndarray
    """Raw sample of every unit's spikes (its best electrode's), sorted per unit."""
    height_v: np.ndarray
    """(U,) median spike height on the best electrode, V."""
    intracellular: np.ndarray
    """(U,) bool: the best electrode has intracellular access (usable as postsynaptic)."""
    waveform_v: np.ndarray
    """(U, L) average spike waveform on the best electrode, V."""

    @property
    def n_units(self) -> int:
        return int(self.best.shape[0])

    def electrodes(self, unit: int) -> np.ndarray:
        return self.members[self.member_ptr[unit] : self.member_ptr[unit + 1]]

    def spikes(self, unit: int) -> np.ndarray:
        return self.spike_sample[self.spike_ptr[unit] : self.spike_ptr[unit + 1]]

    def n_spikes(self) -> np.ndarray:
        return np.diff(self.spike_ptr)

    def name(self, unit: int) -> str:
        """The unit's name: the array index of its best electrode."""
        return str(int(self.best[unit]))


def coincidences(a: np.ndarray, b: np.ndarray, window: int) -> int:
    """Spikes of sorted train ``a`` with a spike of sorted train ``b`` within ±``window``."""
    if a.size == 0 or b.size == 0:
        return 0
    lo = np.searchsorted(b, a - window, side="left")
    hi = np.searchsorted(b, a + window, side="right")
    return int(np.count_nonzero(hi > lo))


CHANCE_LAGS_S = (-9e-3, -7e-3, -5e-3, -3e-3, 3e-3, 5e-3, 7e-3, 9e-3)
"""Lags at which coincidences measure chance co-firing (bursts), s."""


@numba.njit(cache=True, parallel=True)
def _coincidence_table(
    ptr: np.ndarray,
    samples: np.ndarray,
    pairs: np.ndarray,
    window: int,
    lags: np.ndarray,
    min_first: int,
) -> np.ndarray:
    """(P, len(lags)) coincidences of train pairs[p, 0] with train pairs[p, 1] shifted by lag;
    the other lags are left 0 where the first lag has fewer than ``min_first``."""
    out = np.zeros((pairs.shape[0], lags.size), dtype=np.int64)
    for p in numba.prange(pairs.shape[0]):
        a = samples[ptr[pairs[p, 0]] : ptr[pairs[p, 0] + 1]]
        b = samples[ptr[pairs[p, 1]] : ptr[pairs[p, 1] + 1]]
        for li in range(lags.size):
            if li == 1 and out[p, 0] < min_first:
                break
            lag = lags[li]
            j = 0
            n = 0
            for i in range(a.size):
                lo = a[i] + lag - window
                while j < b.size and b[j] < lo:
                    j += 1
                if j < b.size and b[j] <= a[i] + lag + window:
                    n += 1
            out[p, li] = n
    return out


def excess_coincidence(
    ptr: np.ndarray,
    samples: np.ndarray,
    pairs: np.ndarray,
    window: int,
    sample_rate_hz: float,
) -> np.ndarray:
    """(P,) zero-lag coincident fraction of the sparser train of each pair minus the chance
    fraction (mean at :data:`CHANCE_LAGS_S`): near 1 for two views of one neuron, near 0
    for two neurons however much they burst together (0 below
    :data:`MIN_MERGE_COINCIDENCES` coincidences)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.shape[0] == 0:
        return np.zeros(0)
    counts = np.diff(ptr)
    swap = counts[pairs[:, 0]] > counts[pairs[:, 1]]
    ordered = np.where(swap[:, None], pairs[:, ::-1], pairs)
    lags = np.array([0, *[round(s * sample_rate_hz) for s in CHANCE_LAGS_S]], dtype=np.int64)
    # chance is only needed where the zero lag has enough coincidences to count
    table = _coincidence_table(ptr, samples, ordered, window, lags, MIN_MERGE_COINCIDENCES)
    n = np.maximum(counts[ordered[:, 0]], 1)
    excess = (table[:, 0] - table[:, 1:].mean(axis=1)) / n
    return np.where(table[:, 0] >= MIN_MERGE_COINCIDENCES, excess, 0.0)


def _waveform_corr(wa: np.ndarray, wb: np.ndarray) -> float:
    a = wa - wa.mean()
    b = wb - wb.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def merge_units(
    summary: ChannelSummary,
    positions_m: np.ndarray,
    sample_rate_hz: float,
    params: ExtractionParams,
) -> Units:
    """Group the channels with spikes into units (see the module docstring)."""
    n_ch = summary.n_channels
    counts = np.bincount(summary.spike_channel, minlength=n_ch)
    heights = np.zeros(n_ch)
    for c in np.flatnonzero(counts):
        heights[c] = float(np.median(summary.heights_of(c)))
    active = np.flatnonzero((counts >= MIN_UNIT_SPIKES) & ~summary.bad)
    parent = {int(c): int(c) for c in active}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    window = max(1, round(params.merge_window_s * sample_rate_hz))
    if active.size > 1:
        tree = cKDTree(np.asarray(positions_m)[active])
        pairs = np.array(sorted(tree.query_pairs(params.merge_distance_m)), dtype=np.int64)
        pairs = active[pairs.reshape(-1, 2)]
        excess = excess_coincidence(
            summary.ptr, summary.spike_sample, pairs, window, sample_rate_hz
        )
        for (a, b), frac in zip(pairs.tolist(), excess.tolist(), strict=True):
            if frac < params.merge_min_coincidence:
                continue
            extracellular = min(heights[a], heights[b]) < params.min_intracellular_spike_v
            corr = _waveform_corr(summary.waveform_v[a], summary.waveform_v[b])
            if extracellular or corr >= params.merge_min_waveform_corr:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for c in active:
        groups.setdefault(find(int(c)), []).append(int(c))
    best_l, members_l, ptr = [], [], [0]
    for chans in groups.values():
        chans.sort(key=lambda c: (-heights[c], c))
        best_l.append(chans[0])
        members_l.extend(chans)
        ptr.append(len(members_l))
    order = np.argsort(best_l, kind="stable")
    best = np.asarray(best_l, dtype=np.int32)[order]
    ptr_arr = np.asarray(ptr, dtype=np.int64)
    members = np.concatenate(
        [np.asarray(members_l[ptr_arr[u] : ptr_arr[u + 1]], dtype=np.int32) for u in order]
        or [np.zeros(0, dtype=np.int32)]
    )
    sizes = np.diff(ptr_arr)[order]
    member_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    trains = [summary.spikes_of(int(c)) for c in best]
    spike_ptr = np.concatenate([[0], np.cumsum([t.size for t in trains])]).astype(np.int64)
    spike_sample = (
        np.concatenate(trains).astype(np.int64) if trains else np.zeros(0, dtype=np.int64)
    )
    height = heights[best].astype(np.float64)
    return Units(
        best=best,
        member_ptr=member_ptr,
        members=members,
        spike_ptr=spike_ptr,
        spike_sample=spike_sample,
        height_v=height,
        intracellular=height >= params.min_intracellular_spike_v,
        waveform_v=summary.waveform_v[best].astype(np.float32),
    )


def gain_series(
    units: Units,
    summary: ChannelSummary,
    chunk_length: int,
    n_chunks: int,
    params: ExtractionParams,
) -> np.ndarray:
    """(U, n_chunks) electrode gain of each unit's best electrode per chunk (median spike
    height / ``spike_height_v``; interpolated across chunks without spikes). Converts the
    electrode's PSPs into somatic volts as its access changes over the recording."""
    from instrument.extract.averaging import group_medians

    out = np.zeros((units.n_units, n_chunks))
    ptr = summary.ptr
    centers = np.arange(n_chunks)
    for u in range(units.n_units):
        c = int(units.best[u])
        s = summary.spike_sample[ptr[c] : ptr[c + 1]]
        h = summary.spike_height_v[ptr[c] : ptr[c + 1]].astype(np.float64)
        if s.size == 0:
            continue
        idx = np.minimum(s // chunk_length, n_chunks - 1).astype(np.int64)
        med = group_medians(idx, h, n_chunks)
        have = np.flatnonzero(np.isfinite(med))
        out[u] = np.interp(centers, have, med[have]) / params.spike_height_v
    return out
