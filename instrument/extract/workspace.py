"""Buffers an extraction keeps from one group of post units to the next.

Each group needs the same large arrays (its traces, their bridged copy, flags,
accumulators: ~0.2 GB for 128 post units of a 4096-channel 60-s recording). Fresh memory
is slow to fault in — on the virtual machines we run on, 0.2–13 s/GB when the process
has not touched it lately, as the host backs each page — so an extraction allocates them
once and every group reuses them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class Workspace:
    """Named scratch arrays, grown on demand and reused (contents are not kept), and tables
    computed once per extraction (:meth:`kept`)."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}
        self._kept: dict[str, np.ndarray] = {}

    def kept(self, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The table ``name``, made by ``make()`` the first time it is asked for and kept:
        only for what is the same for every group of one extraction (a workspace serves
        one extraction)."""
        if name not in self._kept:
            self._kept[name] = make()
        return self._kept[name]

    def array(self, name: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (uninitialised) in the buffer
        ``name``; the buffer grows when it is too small."""
        dtype = np.dtype(dtype)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        flat = self._flat.get(name)
        if flat is None or flat.size < need:
            flat = np.empty(need, dtype=np.uint8)
            self._flat[name] = flat
        return flat[:need].view(dtype).reshape(shape)

    def zeros(self, name: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        """:meth:`array` filled with zeros."""
        out = self.array(name, shape, dtype)
        out.fill(0)
        return out

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self._flat.values(), *self._kept.values()))
