"""A recording as analysis sees it: int16 traces, their calibration, geometry, gaps, truth.

One class whatever the source: a session HDF5 file (layout in docs/file_format.md),
an NWB file, or arrays in memory (tests, benchmarks). Samples are stored as ADC
codes; ``volts = code * gain_v + offset_v`` per channel. Samples inside a gap hold
:data:`GAP_FILL` and are not data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

GAP_FILL = np.int16(-32768)
"""What a sample lost in a gap holds (the ADC never produces it: codes clip at -32767)."""

SYNAPSE_KINDS = ("excitatory", "inhibitory", "electrical")
"""``synapse_kind`` codes 0, 1, 2."""


@dataclass
class GroundTruth:
    """What the emulated culture really was (emulated recordings only). SI units."""

    neuron_position_m: np.ndarray
    """(N, 2) soma x, y, m."""
    neuron_excitatory: np.ndarray
    """(N,) bool: excitatory (True) or inhibitory (Dale's law)."""
    electrode_neuron: np.ndarray
    """(C,) int32: the neuron each electrode couples to, -1 for none."""
    electrode_coupling: np.ndarray
    """(C,) float32: fraction of the membrane potential the electrode sees (0 when uncoupled)."""
    synapse_pre: np.ndarray
    """(S,) int32 presynaptic neuron."""
    synapse_post: np.ndarray
    """(S,) int32 postsynaptic neuron."""
    synapse_weight_v: np.ndarray
    """(S,) float32 peak PSP at the postsynaptic soma, V; negative when inhibitory."""
    synapse_delay_s: np.ndarray
    """(S,) float32 delay from presynaptic spike to PSP onset, s."""
    synapse_kind: np.ndarray
    """(S,) uint8: 0 excitatory, 1 inhibitory, 2 electrical (listed once per direction)."""
    attrs: dict[str, Any] = field(default_factory=dict)

    FIELDS = (
        "neuron_position_m",
        "neuron_excitatory",
        "electrode_neuron",
        "electrode_coupling",
        "synapse_pre",
        "synapse_post",
        "synapse_weight_v",
        "synapse_delay_s",
        "synapse_kind",
    )

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, Any], attrs: dict[str, Any] | None = None
    ) -> GroundTruth:
        """Build from a mapping of the field names to arrays (an HDF5 group, an npz)."""
        missing = [f for f in cls.FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"ground truth lacks {missing}")
        return cls(**{f: np.asarray(arrays[f]) for f in cls.FIELDS}, attrs=dict(attrs or {}))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as a dict of arrays (for HDF5 or npz)."""
        return {f: getattr(self, f) for f in self.FIELDS}


@dataclass
class Recording:
    """Traces plus everything needed to interpret them.

    ``traces`` is anything sliceable as ``traces[t0:t1, channels]`` giving int16
    codes, shape (n_samples, n_channels): a NumPy array or an h5py dataset.
    """

    traces: Any
    sample_rate_hz: float
    gain_v: np.ndarray
    """(C,) volts per ADC code."""
    offset_v: np.ndarray
    """(C,) volts at code 0."""
    positions_m: np.ndarray
    """(C, 2) electrode x, y, m."""
    gaps: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    """(G, 2) [first sample, end sample) of each gap."""
    bad_channels: np.ndarray | None = None
    """(C,) bool, when known (calibration or extraction marks them)."""
    truth: GroundTruth | None = None
    source: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    _file: Any = None

    @property
    def n_samples(self) -> int:
        return int(self.traces.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.traces.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate_hz

    def volts(self, start: int, stop: int, channels: Any = slice(None)) -> np.ndarray:
        """Samples [start, stop) of ``channels`` in V (float32); gap samples are NaN."""
        codes = np.asarray(self.traces[start:stop, channels])
        out = codes.astype(np.float32) * self.gain_v[channels].astype(np.float32)
        out += self.offset_v[channels].astype(np.float32)
        out[codes == GAP_FILL] = np.nan
        return out

    def gap_mask(self, start: int, stop: int) -> np.ndarray:
        """(stop-start,) bool: True where the sample lies in a gap."""
        mask = np.zeros(stop - start, dtype=bool)
        for first, end in self.gaps:
            lo, hi = max(first, start), min(end, stop)
            if lo < hi:
                mask[lo - start : hi - start] = True
        return mask

    def close(self) -> None:
        """Close the underlying file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_hdf5_recording(path: Path | str, *, swmr: bool = True) -> Recording:
    """Open the ``/recording`` group of a session file (read-only, SWMR: may be live)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the compression filters)

    f = h5py.File(path, "r", swmr=swmr, locking=False)
    try:
        rec = f["recording"]
        truth = None
        if "truth" in f:
            g = f["truth"]
            truth = GroundTruth.from_arrays({k: g[k][()] for k in g}, dict(g.attrs))
        gaps = rec["gaps"][()] if "gaps" in rec else np.zeros(0)
        gaps_arr = (
            np.stack([gaps["first_sample"], gaps["end_sample"]], axis=1)
            if len(gaps)
            else np.zeros((0, 2), dtype=np.int64)
        )
        return Recording(
            traces=rec["traces"],
            sample_rate_hz=float(rec.attrs["sample_rate_hz"]),
            gain_v=rec["channel_gain_v"][()],
            offset_v=rec["channel_offset_v"][()],
            positions_m=rec["electrode_position_m"][()],
            gaps=gaps_arr.astype(np.int64),
            bad_channels=rec["bad_channels"][()] if "bad_channels" in rec else None,
            truth=truth,
            source=str(path),
            attrs=dict(rec.attrs),
            _file=f,
        )
    except Exception:
        f.close()
        raise


def open_recording(path: Path | str, *, swmr: bool = True) -> Recording:
    """A recording from a session folder, a session HDF5 file, or an NWB file (``.nwb``:
    the first ElectricalSeries, see :mod:`instrument.nwb`)."""
    from instrument.session_files import find_recording

    found = find_recording(path)
    if found.suffix.lower() == ".nwb":
        from instrument.nwb import open_nwb_recording

        return open_nwb_recording(found)
    return open_hdf5_recording(found, swmr=swmr)
