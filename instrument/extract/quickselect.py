"""The k-th smallest of an array in place (Hoare's quickselect), for numba kernels.

Medians and MADs inside the extraction's compiled loops use it: no allocation, O(n).
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
