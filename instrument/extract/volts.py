"""The calibration seam: how ADC codes of a :class:`~instrument.recording.Recording` become volts.

Everything in extraction converts samples through :func:`channel_calibration`, so when
calibration records (a later stage) provide measured per-channel gain and offset, they
plug in here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instrument.recording import GAP_FILL, Recording


@dataclass(frozen=True)
class ChannelCalibration:
    """Per-channel linear calibration: volts = code × gain_v + offset_v."""

    gain_v: np.ndarray
    """(C,) float32 V per code."""
    offset_v: np.ndarray
    """(C,) float32 V at code 0."""


def channel_calibration(recording: Recording) -> ChannelCalibration:
    """The calibration extraction applies to ``recording``.

    The gain and offset stored with the recording: the board's calibration record's when
    acquisition or ``brainpaste extract`` applied one (``/calibration/cnea`` says which;
    :mod:`instrument.calibration_use`), else the board's nominal values.
    """
    gain = np.asarray(recording.gain_v, dtype=np.float32).reshape(-1)
    offset = np.asarray(recording.offset_v, dtype=np.float32).reshape(-1)
    if gain.shape != (recording.n_channels,) or offset.shape != (recording.n_channels,):
        raise ValueError(
            f"calibration has {gain.shape[0]} gains / {offset.shape[0]} offsets for "
            f"{recording.n_channels} channels"
        )
    return ChannelCalibration(gain_v=gain, offset_v=offset)


def calibrated_volts(recording: Recording, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of every channel in V (float32, (n, C)); lost samples are NaN.

    The reference conversion (tests, plots); the pipeline's kernels apply the same
    :func:`channel_calibration` inside their loops.
    """
    cal = channel_calibration(recording)
    codes = np.asarray(recording.traces[start:stop])
    out = codes.astype(np.float32) * cal.gain_v + cal.offset_v
    if codes.dtype == np.int16:
        out[codes == GAP_FILL] = np.nan
    out[recording.gap_mask(start, stop)] = np.nan
    return out
