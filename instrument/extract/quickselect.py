"""The k-th smallest of an array, for numba kernels: in place (Hoare's quickselect), or of
a read-only row by counting passes (:func:`kth_finite`, for the medians and MADs of
thousands of values, where it is ~2.4× numpy's ``partition``).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def select_kth(a: np.ndarray, m: int, kth: int) -> float:
    """The ``kth`` smallest of ``a[:m]`` (reorders ``a[:m]``; Hoare's quickselect)."""
    lo = 0
    hi = m - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return a[kth]


_SAMPLE = 128
"""Values :func:`kth_finite` samples to bracket the wanted rank."""

_GATHER = 32
"""The bracket is narrowed until it holds this many values or fewer, then gathered."""

_NARROW = 8
"""Narrowing passes at most (each one usually shrinks the bracket ~10×)."""


@numba.njit(cache=True, inline="always")
def _value(x: float, center: float, absolute: bool) -> float:
    return abs(x - center) if absolute else x


@numba.njit(cache=True)
def _count(a: np.ndarray, lo: float, hi: float, center: float, absolute: bool) -> tuple[int, int]:
    """(#{v < lo}, #{v <= hi}) over the values v of ``a`` (vectorised)."""
    below = 0
    upto = 0
    for i in range(a.size):
        v = _value(a[i], center, absolute)
        below += np.int64(v < lo)
        upto += np.int64(v <= hi)
    return below, upto


@numba.njit(cache=True)
def _gather(
    a: np.ndarray, lo: float, hi: float, center: float, absolute: bool, buf: np.ndarray
) -> int:
    """Copy the values v of ``a`` with lo ≤ v ≤ hi to ``buf``; returns how many. Blocks of
    32 are counted first (vectorised) and only those holding some are visited."""
    n = a.size
    kept = 0
    for b0 in range(0, n, 32):
        b1 = min(n, b0 + 32)
        hits = 0
        for i in range(b0, b1):
            v = _value(a[i], center, absolute)
            hits += np.int64(v >= lo) & np.int64(v <= hi)
        if hits:
            for i in range(b0, b1):
                v = _value(a[i], center, absolute)
                if v >= lo and v <= hi:
                    buf[kept] = v
                    kept += 1
    return kept


@numba.njit(cache=True)
def kth_finite(
    a: np.ndarray, m: int, kth: int, center: float, absolute: bool, buf: np.ndarray
) -> float:
    """The ``kth`` smallest (from 0) of the values v of ``a`` that are not NaN (1-D; v =
    ``a``, or ``|a − center|`` when ``absolute``, in the type of ``center``), ``m`` of
    them: exactly what numpy's ``partition`` of those values puts at ``kth`` (NaN if fewer
    are). ``a`` is not changed; ``buf`` is scratch of ``a.size`` or more.

    A strided sample of :data:`_SAMPLE` values brackets the rank (±3 SD of its sample
    rank). Counting passes (vectorised) check the bracket and narrow it, each time to a
    tenth around where the rank falls if values were evenly spread inside, until it holds
    :data:`_GATHER` values or fewer; those are gathered and a quickselect finishes. Where
    the sample's bracket misses, every value is selected.
    """
    n = a.size
    if n >= 4 * _SAMPLE and m >= 2 * _SAMPLE:
        stride = n // _SAMPLE
        ns = 0
        for i in range(_SAMPLE):
            v = _value(a[i * stride], center, absolute)
            if v == v:
                buf[ns] = v
                ns += 1
        if ns >= _SAMPLE // 2:
            at = (kth + 0.5) / m * ns
            half = 1.5 * np.sqrt(ns)
            lo = select_kth(buf, ns, max(0, int(at - half)))
            hi = select_kth(buf, ns, min(ns - 1, int(at + half)))
            below, upto = _count(a, lo, hi, center, absolute)
            if below <= kth < upto and -np.inf < lo and hi < np.inf:
                for _ in range(_NARROW):
                    inside = upto - below
                    if inside <= _GATHER:
                        break
                    f = (kth - below + 0.5) / inside
                    x0 = lo + (hi - lo) * max(0.0, f - 0.05)
                    x1 = lo + (hi - lo) * min(1.0, f + 0.05)
                    if not lo <= x0 <= x1 <= hi:  # hi − lo overflowed: gather as it is
                        break
                    c0, c1 = _count(a, x0, x1, center, absolute)
                    if kth < c0:  # below x0: [lo, the value before x0]
                        hi, upto = np.nextafter(x0, -np.inf), c0
                    elif kth >= c1:  # above x1
                        lo, below = np.nextafter(x1, np.inf), c1
                    else:
                        lo, hi, below, upto = x0, x1, c0, c1
                kept = _gather(a, lo, hi, center, absolute, buf)
                return select_kth(buf, kept, kth - below)
    kept = 0
    for i in range(n):
        v = _value(a[i], center, absolute)
        if v == v:
            buf[kept] = v
            kept += 1
    if kth >= kept:  # fewer values than m said (|±inf − ±inf| is NaN): NaN sorts last
        return np.nan
    return select_kth(buf, kept, kth)


@numba.njit(cache=True)
def column_medians(values: np.ndarray, out: np.ndarray, counts: np.ndarray) -> None:
    """``out[j]``: the ``counts[j] // 2``-th smallest of the values of column j of
    ``values`` (R, L) float32 that are not NaN (``counts[j]`` of them, written here), as a
    quickselect of those values returns it; NaN where a column has none.

    All L columns at once, vectorised across them: each value's bits become an integer
    key in the order of the floats, and 32 counting passes bisect the key of every
    column's median (a few thousand values: ~10× a quickselect per column).
    """
    rows, lanes = values.shape
    keys = np.empty((rows, lanes), dtype=np.int32)
    bits = values.view(np.int32)
    for j in range(lanes):
        counts[j] = 0
    for i in range(rows):
        for j in range(lanes):
            b = bits[i, j]
            finite = values[i, j] == values[i, j]
            keys[i, j] = (b ^ ((b >> 31) & 0x7FFFFFFF)) if finite else 0x7FFFFFFF
            counts[j] += finite
    lo = np.full(lanes, -(2**31), dtype=np.int64)
    hi = np.full(lanes, 2**31 - 1, dtype=np.int64)
    mid = np.empty(lanes, dtype=np.int32)
    below = np.empty(lanes, dtype=np.int32)
    for _ in range(32):
        for j in range(lanes):
            mid[j] = (lo[j] + hi[j]) >> 1
            below[j] = 0
        for i in range(rows):
            row = keys[i]
            for j in range(lanes):
                below[j] += np.int32(row[j] <= mid[j])
        for j in range(lanes):
            if below[j] > counts[j] // 2:
                hi[j] = mid[j]
            else:
                lo[j] = mid[j] + 1
    found = np.empty(lanes, dtype=np.int32)
    for j in range(lanes):
        k = np.int32(lo[j])
        found[j] = k ^ ((k >> 31) & 0x7FFFFFFF)
    medians = found.view(np.float32)
    for j in range(lanes):
        out[j] = medians[j] if counts[j] > 0 else np.nan
