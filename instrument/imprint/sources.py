"""Where imprint gets its connectivity map and spikes: what extraction stored.

The layout of ``/connectivity`` and ``/spikes`` (and the CSV export) belongs to extraction
(``instrument/extract/store.py``, docs/extraction.md); this module only reads it through
extraction's reader (``read_connections``) and its documented datasets, and turns it into
a :class:`~instrument.imprint.connectivity.ConnectivityMap`. Units are named as extraction
names them: by the array index of their best electrode.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from instrument.imprint.connectivity import ConnectivityError, ConnectivityMap
from instrument.imprint.journal import open_read

KIND_NAMES = ("excitatory", "inhibitory", "electrical")
"""Extraction's ``kind`` codes 0, 1, 2 (used when the file does not name them)."""


def load_connectivity(path: Path | str, csv_path: Path | str | None = None) -> ConnectivityMap:
    """The map extraction stored in session file ``path`` (or exported as ``csv_path``)."""
    if csv_path is not None:
        return _from_csv(Path(csv_path))
    try:
        from instrument.extract.store import read_connections
    except ImportError:
        raise ConnectivityError(
            "this installation has no connectivity extraction (instrument.extract)"
        ) from None
    try:
        table, attrs = read_connections(path)
    except (KeyError, OSError) as exc:
        raise ConnectivityError(
            f"no connectivity map in {path} ({exc}); run `brainpaste extract` on the session"
        ) from None
    names = json.loads(attrs["kind_names"]) if "kind_names" in attrs else list(KIND_NAMES)
    kinds = np.array([names[int(k)] for k in table["kind"]], dtype=str)
    units = None
    with open_read(path) as f:
        if "spikes" in f and "unit_best_electrode" in f["spikes"]:
            units = f["spikes"]["unit_best_electrode"][()].astype(np.int64)
    if table.size == 0:
        raise ConnectivityError(f"the map in {path} holds no connection: nothing to imprint")
    return ConnectivityMap.from_arrays(
        table["pre_electrode"].astype(np.int64),
        table["post_electrode"].astype(np.int64),
        table["weight_v"],
        table["latency_s"],
        kinds,
        units=units,
        source=str(path),
    )


def _from_csv(path: Path) -> ConnectivityMap:
    """Extraction's ``connections.csv`` (units by best electrode, weight in mV, latency in ms)."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConnectivityError(f"cannot read {path}: {exc.strerror}") from None
    needed = {"pre", "post", "class", "weight_mv", "latency_ms"}
    if rows and not needed <= set(rows[0]):
        raise ConnectivityError(f"{path}: not an extraction export (columns {sorted(needed)})")
    if not rows:
        raise ConnectivityError(f"{path} holds no connection: nothing to imprint")
    try:
        pre = [int(r["pre"]) for r in rows]
        post = [int(r["post"]) for r in rows]
        weight = [float(r["weight_mv"]) * 1e-3 for r in rows]
        latency = [float(r["latency_ms"]) * 1e-3 for r in rows]
    except ValueError as exc:
        raise ConnectivityError(f"{path}: {exc}") from None
    kinds = [r["class"] for r in rows]
    return ConnectivityMap.from_arrays(pre, post, weight, latency, kinds, source=str(path))


def load_spikes(path: Path | str) -> dict[int, np.ndarray]:
    """Spike times (s) per unit (named by best electrode), as extraction stored them."""
    with open_read(path) as f:
        if "spikes" not in f:
            raise ConnectivityError(f"no /spikes in {path}; run `brainpaste extract` first")
        g = f["spikes"]
        best = g["unit_best_electrode"][()]
        ptr = g["unit_spike_ptr"][()]
        samples = g["spike_sample"][()]
        rate = float(g.attrs["sample_rate_hz"])
    return {
        int(best[u]): samples[ptr[u] : ptr[u + 1]].astype(float) / rate for u in range(best.size)
    }
