"""What extraction stored in a session file, read for display: the units and their spikes
(``/spikes``), the connections with their average PSPs (``/connectivity``), and where each
unit sits on the array.

The layout belongs to :mod:`instrument.extract.store` (its docstring and
docs/extraction.md); the connection table is read with its own
:func:`~instrument.extract.store.read_connections`. Everything else here only reads
datasets that module documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument.extract.store import read_connections
from instrument.session_files import find_recording


@dataclass(frozen=True)
class SessionSpikes:
    """Every unit's spikes, placed at the unit's best electrode."""

    unit_electrode: np.ndarray
    """(U,) best electrode (channel) of each unit."""
    times_s: np.ndarray
    """(E,) spike times, s since the first sample."""
    channels: np.ndarray
    """(E,) the best electrode of the unit that fired."""
    units: np.ndarray
    """(E,) the unit that fired."""
    duration_s: float
    n_channels: int


@dataclass(frozen=True)
class SessionConnectivity:
    """The connectivity map (unit indices into the unit table), SI units."""

    connections: np.ndarray
    """Structured rows (``instrument.extract.store.CONNECTION_DTYPE``)."""
    average_psp_v: np.ndarray
    """(K, L) average PSP of each connection, as its post electrode saw it, V."""
    lags_s: np.ndarray
    """(L,) lag of each column after the presynaptic spike, s."""
    kind_names: list[str]
    unit_electrode: np.ndarray
    """(U,) best electrode of each unit."""
    unit_position_m: np.ndarray
    """(U, 2) x, y of each unit's best electrode, m."""
    scores: dict[str, Any] | None
    """Scores against the emulator's ground truth (emulated recordings), else None."""

    @property
    def n_units(self) -> int:
        return int(self.unit_electrode.size)

    def connected_units(self) -> np.ndarray:
        """Units that are the pre or post of at least one connection, ascending."""
        c = self.connections
        return np.union1d(c["pre_unit"], c["post_unit"]).astype(np.int64)

    def matrix_v(self, units: np.ndarray | None = None) -> np.ndarray:
        """Somatic weight of each pre (row) → post (column) connection among ``units``
        (default: all, in unit order), NaN where none was found."""
        order = np.arange(self.n_units) if units is None else np.asarray(units)
        index = np.full(self.n_units, -1)
        index[order] = np.arange(order.size)
        m = np.full((order.size, order.size), np.nan)
        c = self.connections
        i, j = index[c["pre_unit"]], index[c["post_unit"]]
        keep = (i >= 0) & (j >= 0)
        m[i[keep], j[keep]] = c["weight_v"][keep]
        return m

    def find(self, pre: int, post: int) -> int | None:
        """The row of connection pre → post (unit indices), or None."""
        c = self.connections
        hit = np.flatnonzero((c["pre_unit"] == pre) & (c["post_unit"] == post))
        return int(hit[0]) if hit.size else None


def _session_file(path: str | Path) -> Path:
    found = find_recording(path)
    if found.suffix.lower() == ".nwb":  # extraction of an NWB input is stored beside it
        found = found.with_name("extraction.h5")
    return found


def read_spikes(path: str | Path) -> SessionSpikes | None:
    """The units' spikes of a session (None before extraction)."""
    import h5py

    with h5py.File(_session_file(path), "r", locking=False) as f:
        if "spikes" not in f:
            return None
        g = f["spikes"]
        rate = float(g.attrs["sample_rate_hz"])
        best = g["unit_best_electrode"][()].astype(np.int64)
        ptr = g["unit_spike_ptr"][()]
        samples = g["spike_sample"][()]
        n_channels = int(g["channel_bad"].shape[0])
        duration = 0.0
        if "recording" in f and "traces" in f["recording"]:
            duration = f["recording/traces"].shape[0] / rate
    units = np.repeat(np.arange(best.size), np.diff(ptr))
    return SessionSpikes(
        unit_electrode=best,
        times_s=samples / rate,
        channels=best[units],
        units=units,
        duration_s=duration or (float(samples.max()) / rate if samples.size else 0.0),
        n_channels=n_channels,
    )


def read_connectivity(path: str | Path) -> SessionConnectivity | None:
    """The connectivity map of a session (None before extraction)."""
    import h5py

    file = _session_file(path)
    with h5py.File(file, "r", locking=False) as f:
        if "connectivity" not in f or "spikes" not in f:
            return None
        g = f["connectivity"]
        average = g["average_psp_v"][()]
        lags = g["lags_s"][()]
        scores = json.loads(g["scores"].attrs["json"]) if "scores" in g else None
        best = f["spikes/unit_best_electrode"][()].astype(np.int64)
        if "recording" in f and "electrode_position_m" in f["recording"]:
            positions = f["recording/electrode_position_m"][()]
        else:  # the 64 x 64 grid at 20 µm
            rows, cols = np.divmod(np.arange(int(best.max(initial=0)) + 1), 64)
            positions = np.stack([cols, rows], axis=1) * 20e-6
    connections, attrs = read_connections(file)
    kind_names = json.loads(attrs.get("kind_names", '["excitatory", "inhibitory", "electrical"]'))
    return SessionConnectivity(
        connections=connections,
        average_psp_v=average,
        lags_s=lags,
        kind_names=list(kind_names),
        unit_electrode=best,
        unit_position_m=positions[best],
        scores=scores,
    )
