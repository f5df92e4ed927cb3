"""Where imprint gets its connectivity map: what extraction stored in the session file.

The on-disk layout of ``/connectivity`` (and its CSV export) belongs to extraction
(``instrument/extract/store.py``, docs/extraction.md); this module only adapts extraction's
reader to :class:`~instrument.imprint.connectivity.ConnectivityMap`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from instrument.imprint.connectivity import ConnectivityError, ConnectivityMap


def load_connectivity(path: Path | str, csv: Path | str | None = None) -> ConnectivityMap:
    """The map extraction stored in session file ``path`` (or exported as ``csv``)."""
    try:
        store = importlib.import_module("instrument.extract.store")
    except ImportError:
        raise ConnectivityError(
            "this installation has no connectivity extraction (instrument.extract): "
            "cannot read a stored map"
        ) from None
    reader = getattr(store, "read_connectivity_csv" if csv else "read_connectivity", None)
    if reader is None:
        raise ConnectivityError("instrument.extract.store has no connectivity reader")
    try:
        stored = reader(csv) if csv else reader(path)
    except (KeyError, OSError) as exc:
        where = csv or path
        raise ConnectivityError(
            f"no connectivity map in {where} ({exc}); run `brainpaste extract` on the session"
        ) from None
    return from_extraction(stored, str(csv or path))


def from_extraction(stored: object, source: str) -> ConnectivityMap:
    """A :class:`ConnectivityMap` from extraction's in-memory map."""

    def field(*names: str) -> np.ndarray | None:
        for name in names:
            value = getattr(stored, name, None)
            if value is None and isinstance(stored, dict):
                value = stored.get(name)
            if value is not None:
                return np.asarray(value)
        return None

    pre, post = field("pre", "pre_unit"), field("post", "post_unit")
    weight = field("weight_v")
    if weight is None and (mv := field("weight_mv")) is not None:
        weight = mv * 1e-3
    if pre is None or post is None or weight is None:
        raise ConnectivityError(f"{source}: the stored map lacks pre/post/weight columns")
    return ConnectivityMap.from_arrays(
        pre,
        post,
        weight,
        field("latency_s"),
        field("kind", "class_name", "synapse_class"),
        units=field("units", "unit_ids"),
        source=source,
    )


def load_spikes(path: Path | str) -> dict[int, np.ndarray]:
    """Spike times (s) per unit id, as extraction stored them in session file ``path``."""
    try:
        store = importlib.import_module("instrument.extract.store")
    except ImportError:
        raise ConnectivityError(
            "this installation has no extraction (instrument.extract): no stored spikes"
        ) from None
    reader = getattr(store, "read_unit_spikes", None)
    if reader is None:
        raise ConnectivityError("instrument.extract.store has no spike reader")
    try:
        stored = reader(path)
    except (KeyError, OSError) as exc:
        raise ConnectivityError(
            f"no unit spikes in {path} ({exc}); run `brainpaste extract` on the session"
        ) from None
    return {int(unit): np.asarray(times, dtype=float) for unit, times in dict(stored).items()}
