"""Min/max envelopes of stored traces for display: any channels, any time span, one
(min, max) pair per screen pixel, from a finished session file or one still being recorded.

Reads the file in small pieces (at most ``piece_rows`` rows of the asked channels per
HDF5 call), so memory stays bounded whatever the span and a recording writing the same
file in this process is never held up for long (h5py serialises HDF5 calls).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np

from instrument.recording import GAP_FILL, Recording


@dataclass(frozen=True)
class Envelope:
    """(K, P) per-bin minimum and maximum of K channels over P time bins (V, or A in voltage
    clamp; NaN where a bin holds only lost samples)."""

    channels: np.ndarray
    t_s: np.ndarray
    """(P,) start time of each bin, s since the first sample."""
    bin_s: float
    """Width of one bin, s."""
    lo: np.ndarray
    hi: np.ndarray
    n_samples: int
    """Rows in the recording when it was read (grows while recording)."""


def channel_index(channels: np.ndarray) -> slice | np.ndarray:
    """A slice when ``channels`` is one contiguous ascending run (fast HDF5 hyperslab),
    otherwise the sorted array."""
    chans = np.asarray(channels, dtype=np.int64)
    if chans.size and np.array_equal(chans, np.arange(chans[0], chans[0] + chans.size)):
        return slice(int(chans[0]), int(chans[0]) + chans.size)
    return chans


def refresh(rec: Recording) -> int:
    """See rows a live recording wrote since the file was opened (SWMR); the row count."""
    traces = rec.traces
    if hasattr(traces, "refresh"):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            traces.refresh()  # fails when not opened in SWMR mode: the shape is final
    return rec.n_samples


def read_envelope(
    rec: Recording,
    channels: np.ndarray | list[int],
    start_s: float,
    stop_s: float,
    n_bins: int,
    *,
    piece_rows: int = 8192,
) -> Envelope:
    """Envelope of ``channels`` over [start_s, stop_s) (clipped to what is recorded) in
    ``n_bins`` bins (fewer when the span has fewer samples). Channels are sorted."""
    chans = np.unique(np.asarray(channels, dtype=np.int64))
    if chans.size == 0:
        raise ValueError("no channels to read")
    if chans[0] < 0 or chans[-1] >= rec.n_channels:
        raise ValueError(f"channels must be within 0..{rec.n_channels - 1}")
    if not n_bins > 0:
        raise ValueError(f"n_bins must be > 0, got {n_bins}")
    n = refresh(rec)
    rate = rec.sample_rate_hz
    first = int(np.clip(np.floor(start_s * rate), 0, n))
    last = int(np.clip(np.ceil(stop_s * rate), first, n))
    span = last - first
    bins = min(int(n_bins), span)
    if bins == 0:
        empty = np.zeros((chans.size, 0), dtype=np.float32)
        return Envelope(chans, np.zeros(0), 0.0, empty, empty.copy(), n)
    edges = first + np.round(np.linspace(0, span, bins + 1)).astype(np.int64)
    lo = np.empty((chans.size, bins), dtype=np.float32)
    hi = np.empty((chans.size, bins), dtype=np.float32)
    index = channel_index(chans)
    gain = rec.gain_v[chans].astype(np.float32)
    offset = rec.offset_v[chans].astype(np.float32)
    b = 0
    while b < bins:
        # whole bins per piece: at least one, as many as fit in piece_rows
        stop_bin = int(np.searchsorted(edges, edges[b] + piece_rows, side="right")) - 1
        stop_bin = min(max(stop_bin, b + 1), bins)
        r0, r1 = int(edges[b]), int(edges[stop_bin])
        codes = np.asarray(rec.traces[r0:r1, index])
        values = codes.astype(np.float32) * gain + offset
        values[codes == GAP_FILL] = np.nan
        local = edges[b:stop_bin] - r0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo[:, b:stop_bin] = np.fmin.reduceat(values, local, axis=0).T
            hi[:, b:stop_bin] = np.fmax.reduceat(values, local, axis=0).T
        b = stop_bin
    return Envelope(
        channels=chans,
        t_s=edges[:-1] / rate,
        bin_s=span / bins / rate,
        lo=lo,
        hi=hi,
        n_samples=n,
    )
