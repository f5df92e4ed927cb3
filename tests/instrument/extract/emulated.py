"""Recordings from the emulated culture (hil_sim) as extraction sees them: int16 codes at
the board's nominal 5 µV per code, electrode positions, ground truth.

:func:`emulated_recording` holds the samples in memory (short recordings, tests);
:class:`StreamedTraces` generates them on demand, in order, for recordings too long to
hold (benchmarks): the extraction reads chunks in order with a small overlap.
"""

from __future__ import annotations

import numpy as np

from hil_sim.culture import Culture, CultureParams
from hil_sim.electrodes import ElectrodeArray
from instrument.recording import GroundTruth, Recording

LSB_V = 5e-6
"""The board's nominal code step in current clamp (hil_sim.cnea_board.NOMINAL_LSB)."""


def to_codes(volts: np.ndarray) -> np.ndarray:
    return np.clip(np.round(volts / LSB_V), -32767, 32767).astype(np.int16)


def electroporated_array(params: CultureParams) -> ElectrodeArray:
    """The array over a culture, every electrode pulsed once (as `brainpaste record --sim`)."""
    array = ElectrodeArray(Culture(params))
    array.electroporate(np.arange(array.n_channels), 2.5, 1e-3)
    return array


def _recording(array: ElectrodeArray, traces: object) -> Recording:
    truth = GroundTruth.from_arrays(array.truth(), array.truth_attrs())
    n = array.n_channels
    return Recording(
        traces=traces,
        sample_rate_hz=array.sample_rate_hz,
        gain_v=np.full(n, LSB_V),
        offset_v=np.zeros(n),
        positions_m=array.positions_m.copy(),
        truth=truth,
        source=f"emulated culture seed {array.culture.params.seed}",
    )


def emulated_recording(params: CultureParams, duration_s: float) -> Recording:
    """``duration_s`` of the emulated culture, in memory."""
    array = electroporated_array(params)
    n = round(duration_s * array.sample_rate_hz)
    codes = np.empty((n, array.n_channels), dtype=np.int16)
    step = 10_000
    for i in range(0, n, step):
        block = array.read(min(step, n - i))
        codes[i : i + block.shape[0]] = to_codes(block)
    return _recording(array, codes)


class StreamedTraces:
    """Codes of an emulated array generated as they are asked for (in order, with overlap).

    Slicing ``[lo:hi]`` must not go back further than ``keep`` samples before the
    furthest sample already generated.
    """

    def __init__(self, array: ElectrodeArray, n_samples: int, keep: int = 20_000) -> None:
        self.array = array
        self.shape = (n_samples, array.n_channels)
        self.dtype = np.dtype(np.int16)
        self.keep = keep
        self._buf = np.zeros((0, array.n_channels), dtype=np.int16)
        self._start = 0  # sample index of _buf[0]

    def __getitem__(self, item: slice) -> np.ndarray:
        lo, hi, _ = item.indices(self.shape[0])
        end = self._start + self._buf.shape[0]
        if lo < self._start:
            raise IndexError(f"samples before {self._start} are gone (asked {lo})")
        if hi > end:
            new = to_codes(self.array.read(hi - end))
            self._buf = np.concatenate([self._buf, new])
        drop = max(0, self._buf.shape[0] - (hi - lo) - self.keep)
        if drop:
            self._buf = self._buf[drop:]
            self._start += drop
        return self._buf[lo - self._start : hi - self._start]


def streamed_recording(params: CultureParams, duration_s: float) -> Recording:
    """``duration_s`` of the emulated culture, generated while the extraction reads it."""
    array = electroporated_array(params)
    n = round(duration_s * array.sample_rate_hz)
    return _recording(array, StreamedTraces(array, n))
