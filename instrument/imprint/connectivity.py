"""The connectivity map as imprint uses it: one row per synapse, plus the unit table.

Built from arrays (tests, benchmarks, another lab's map) or read from what extraction
stored in a session file / exported as CSV (:mod:`instrument.imprint.sources`). Weights are
signed peak PSPs in V (negative: inhibitory), latencies in s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ConnectivityError(ValueError):
    """A connectivity map that cannot be imprinted as given (says what is wrong)."""


@dataclass(frozen=True)
class ConnectivityMap:
    """Synapses ``pre[k] -> post[k]`` of weight ``weight_v[k]`` among ``units``."""

    pre: np.ndarray
    """(S,) int64 presynaptic unit id."""
    post: np.ndarray
    """(S,) int64 postsynaptic unit id."""
    weight_v: np.ndarray
    """(S,) float64 signed weight (peak PSP), V."""
    latency_s: np.ndarray
    """(S,) float64 latency, s."""
    kind: np.ndarray
    """(S,) str class (e.g. "excitatory", "inhibitory", "electrical")."""
    units: np.ndarray
    """(N,) int64 every unit id of the map, ascending (units without synapses included)."""
    source: str = ""
    """Where the map came from (a session file, a CSV, "arrays")."""

    @classmethod
    def from_arrays(
        cls,
        pre: np.ndarray | list[int],
        post: np.ndarray | list[int],
        weight_v: np.ndarray | list[float],
        latency_s: np.ndarray | list[float] | None = None,
        kind: np.ndarray | list[str] | None = None,
        *,
        units: np.ndarray | list[int] | None = None,
        source: str = "arrays",
    ) -> ConnectivityMap:
        """Validate and normalize a map; a pair listed twice has its weights summed."""
        pre_a = np.asarray(pre)
        post_a = np.asarray(post)
        w = np.asarray(weight_v, dtype=np.float64)
        n = w.shape[0] if w.ndim == 1 else -1
        if pre_a.shape != (n,) or post_a.shape != (n,):
            raise ConnectivityError(
                f"pre {pre_a.shape}, post {post_a.shape} and weight_v {w.shape} must be "
                "1-D arrays of one length"
            )
        for name, a in (("pre", pre_a), ("post", post_a)):
            if n and not np.issubdtype(a.dtype, np.integer):
                raise ConnectivityError(f"{name} must hold integer unit ids, got {a.dtype}")
        pre_a = pre_a.astype(np.int64)
        post_a = post_a.astype(np.int64)
        lat = np.zeros(n) if latency_s is None else np.asarray(latency_s, dtype=np.float64)
        kinds = (
            np.where(w >= 0, "excitatory", "inhibitory")
            if kind is None
            else np.asarray(kind, dtype=str)
        )
        if lat.shape != (n,) or kinds.shape != (n,):
            raise ConnectivityError("latency_s and kind must have one entry per synapse")
        if not np.all(np.isfinite(w)) or not np.all(np.isfinite(lat)):
            bad = int(np.flatnonzero(~(np.isfinite(w) & np.isfinite(lat)))[0])
            raise ConnectivityError(f"synapse {bad} has a weight or latency that is not finite")
        if np.any(pre_a == post_a):
            bad = int(np.flatnonzero(pre_a == post_a)[0])
            raise ConnectivityError(f"synapse {bad} connects unit {pre_a[bad]} to itself")
        all_units = np.union1d(pre_a, post_a)
        if units is not None:
            given = np.unique(np.asarray(units, dtype=np.int64))
            missing = np.setdiff1d(all_units, given)
            if missing.size:
                raise ConnectivityError(f"synapses name units {missing[:5].tolist()} not in units")
            all_units = given
        # one entry per ordered pair: weights of duplicates add (e.g. chemical + electrical)
        key = pre_a * (int(all_units.max(initial=0)) + 1) + post_a
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        if uniq.size != n:
            w = np.bincount(inverse, weights=w, minlength=uniq.size)
            lat, kinds = lat[first], kinds[first].astype(object)
            counts = np.bincount(inverse, minlength=uniq.size)
            kinds[counts > 1] = "mixed"
            pre_a, post_a = pre_a[first], post_a[first]
            kinds = kinds.astype(str)
        return cls(pre_a, post_a, w, lat, kinds, all_units, source)

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.units.shape[0])

    def dense(self, order: np.ndarray | None = None) -> np.ndarray:
        """(N, N) weight matrix, V: ``W[i, j]`` from unit ``order[i]`` to unit ``order[j]``
        (synapses of units not in ``order`` are left out)."""
        order = self.units if order is None else order
        index = {int(u): k for k, u in enumerate(order)}
        w = np.zeros((len(order), len(order)))
        rows = np.array([index.get(int(u), -1) for u in self.pre], dtype=np.int64)
        cols = np.array([index.get(int(u), -1) for u in self.post], dtype=np.int64)
        keep = (rows >= 0) & (cols >= 0)
        w[rows[keep], cols[keep]] = self.weight_v[keep]
        return w
