"""A recorded session file as the board's signal source: stream it again, at any rate.

:class:`PlaybackSource` reads ``/recording/traces`` of a session HDF5 file
(docs/file_format.md) and hands the board its ADC codes unchanged (it is a
:class:`hil_sim.cnea_board.DigitalSource`: the board bypasses its front end and
reports the file's gain and offset as nominal), so recording a playback gives back
the same codes. The board's ``:SIMulation:RATE`` sets the speed (e.g. 5x real time
for benchmarks, or as fast as the host reads). With ``loop`` the file repeats
(sample indices keep counting); without it the board stops at the end.

A recording cannot respond to stimulation: electroporation and clamp commands are
accepted, listed in :attr:`PlaybackSource.stimuli`, and change nothing. Samples that
were lost in the original (``-32768``) are replayed as they are.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters)
import numpy as np

log = logging.getLogger(__name__)


class EndOfRecording(EOFError):
    """A playback without ``loop`` reached the end of its file."""


class PlaybackSource:
    """Codes from a session file, read block by block (or all at once with ``preload``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        loop: bool = True,
        preload: bool = False,
        block_samples: int = 2048,
    ) -> None:
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r", swmr=True, locking=False)
        except OSError as exc:
            raise ValueError(f"cannot open playback file {self.path}: {exc}") from None
        try:
            rec = self._file["recording"]
            self._traces = rec["traces"]
            self.n_samples = int(self._traces.shape[0])
            self.n_channels = int(self._traces.shape[1])
            self.sample_rate_hz = float(rec.attrs["sample_rate_hz"])
            self.positions_m = np.asarray(rec["electrode_position_m"][()], dtype=np.float64)
            self.gain_v = np.asarray(rec["channel_gain_v"][()], dtype=np.float64)
            self.offset_v = np.asarray(rec["channel_offset_v"][()], dtype=np.float64)
        except KeyError as exc:
            self._file.close()
            raise ValueError(f"{self.path} is not a session file: missing {exc}") from None
        if self.n_samples == 0:
            self._file.close()
            raise ValueError(f"{self.path} holds no samples to play back")
        self.loop = loop
        self.block_samples = block_samples
        self.position = 0
        """Samples handed out so far (keeps counting across loops)."""
        self._block_start = -1
        self._block = np.zeros((0, self.n_channels), dtype=np.int16)
        if preload:
            self._block_start, self._block = 0, np.asarray(self._traces[()], dtype=np.int16)
        self.stimuli: list[tuple[int, str]] = []

    # --- the DigitalSource interface ----------------------------------------------------
    def _span(self, start: int, count: int) -> np.ndarray:
        """Codes [start, start + count) of the file, within one block where possible."""
        end = start + count
        if not (self._block_start <= start and end <= self._block_start + len(self._block)):
            first = start - start % self.block_samples
            last = min(self.n_samples, max(end, first + self.block_samples))
            self._block_start = first
            self._block = np.asarray(self._traces[first:last], dtype=np.int16)
        offset = start - self._block_start
        return self._block[offset : offset + count]

    def read_codes(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` codes (n, C) int16; raises :class:`EndOfRecording` at the end
        of a non-looping playback."""
        out = np.empty((n_samples, self.n_channels), dtype=np.int16)
        filled = 0
        while filled < n_samples:
            pos = self.position % self.n_samples if self.loop else self.position
            if pos >= self.n_samples:
                raise EndOfRecording(f"{self.path}: end of recording after {self.position} samples")
            take = min(n_samples - filled, self.n_samples - pos)
            out[filled : filled + take] = self._span(pos, take)
            filled += take
            self.position += take
        return out

    # --- the SignalSource interface ---------------------------------------------------------
    def read(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` as amplifier inputs (codes x gain + offset), float32;
        samples lost in the original are NaN."""
        codes = self.read_codes(n_samples)
        out = codes.astype(np.float32) * self.gain_v.astype(np.float32) + self.offset_v.astype(
            np.float32
        )
        out[codes == np.int16(-32768)] = np.nan
        return out

    def electroporate(self, channels: np.ndarray, amplitude_v: float, width_s: float) -> None:
        """Listed, no effect: a recording cannot respond."""
        self.stimuli.append(
            (self.position, f"electroporate {len(channels)} ch {amplitude_v:g} V {width_s:g} s")
        )

    def set_mode(self, channels: np.ndarray, mode: str, level: float = 0.0) -> None:
        """Listed, no effect: a recording cannot respond."""
        self.stimuli.append((self.position, f"{mode} {level:g} on {len(channels)} ch"))

    def access(self) -> np.ndarray:
        """Unknown for a recording: NaN per channel."""
        return np.full(self.n_channels, np.nan, dtype=np.float32)

    def truth(self) -> dict[str, np.ndarray]:
        """The ground truth stored with the recording ({} when it has none)."""
        if "truth" not in self._file:
            return {}
        group = self._file["truth"]
        return {  # every array the recording carries, as recorded
            name: item[()] for name, item in group.items() if isinstance(item, h5py.Dataset)
        }

    def truth_attrs(self) -> dict[str, Any]:
        """The recording's ground-truth attributes, plus where they came from."""
        attrs: dict[str, Any] = {}
        if "truth" in self._file:
            attrs.update({k: _plain(v) for k, v in self._file["truth"].attrs.items()})
        attrs["playback_of"] = str(self.path)
        return attrs

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
