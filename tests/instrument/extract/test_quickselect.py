"""Exact selection: kth_finite against numpy's partition on the finite values."""

from __future__ import annotations

import numpy as np
import pytest

from instrument.extract.quickselect import kth_finite

_KINDS = (
    "normal", "cubed", "ties", "sorted", "reversed", "nan", "inf", "constant", "bimodal", "huge",
)  # fmt: skip


def _values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal(n)
    if kind == "cubed":  # a spike of density at the median: interpolation guesses badly
        a = a**3
    elif kind == "ties":
        a = np.round(a * 3)
    elif kind == "sorted":  # the strided sample sees an ordered array
        a = np.sort(a)
    elif kind == "reversed":
        a = np.sort(a)[::-1].copy()
    elif kind == "nan":
        a[rng.random(n) < 0.3] = np.nan
    elif kind == "inf":
        a[rng.random(n) < 0.02] = np.inf
        a[rng.random(n) < 0.02] = -np.inf
    elif kind == "constant":
        a[:] = 0.25
    elif kind == "bimodal":  # the rank falls in a gap between two clusters
        a = np.where(rng.random(n) < 0.5, a - 1e6, a + 1e6)
    elif kind == "huge":  # the bracket's width overflows
        a = np.where(rng.random(n) < 0.5, -1.7e308, 1.7e308) * rng.random(n)
    return a


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("n", [1, 9, 300, 600, 4096, 8572])
def test_kth_finite_is_numpys_partition_of_the_finite_values(kind, n):
    rng = np.random.default_rng(n + len(kind))
    for dtype in (np.float64, np.float32):
        with np.errstate(over="ignore"):  # "huge" in float32: ±inf
            a = _values(kind, n, rng).astype(dtype)
        keep = a.copy()
        finite = a[~np.isnan(a)]
        m = finite.size
        if m == 0:
            continue
        buf = np.empty(n, dtype=dtype)
        for kth in {0, m // 2, m - 1, m // 3, (9 * m) // 10}:
            want = np.partition(finite, kth)[kth]
            assert kth_finite(a, m, kth, 0.0, False, buf) == want, (kind, n, kth)
            center = np.partition(finite, m // 2)[m // 2]
            with np.errstate(invalid="ignore"):
                dev = np.abs(finite - center)
            want = np.partition(dev, kth)[kth]
            got = kth_finite(a, m, kth, center, True, buf)
            assert got == want or (np.isnan(got) and np.isnan(want)), (kind, n, kth)
        np.testing.assert_array_equal(a, keep)  # the input is not touched
