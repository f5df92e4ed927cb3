"""CNEA board calibration: every channel's gain and offset, and its bad channels.

The board's calibration source replaces the electrodes at every amplifier input
(docs/cnea_protocol.md). For each clamp mode and amplifier gain asked for, the source
steps through DC levels across most of the full scale, a few frames are recorded at
each, and every channel's mean code is fitted against the level (least squares,
all 4096 channels at once)::

    code = a + b * input          gain = 1 / b (V or A per code)   offset = -a / b

Each level carries a seeded sub-step dither, so the ADC's rounding errors are spread
evenly and the fit's residual is an honest measure of them (and of the noise on a
real board); the standard uncertainties follow from the fit (never below the ADC's
own rounding, 1/sqrt(12) of a step). Voltage-clamp channels see the source through
the board's calibration resistor (``:CAL:SOUR:RES?``): their gain is as good as that
resistor, which the record says.

A channel is **bad** when it does not respond (gain off nominal by more than
``gain_tolerance``), when its offset is beyond the limits, when the fit residual is
larger than ``residual_limit_codes`` (nonlinear or noisy), when fewer than three
levels were inside its range, or — a short look at the electrodes with the source
off — when its input sits at a rail (``BAD_INPUT_PINNED``). The reasons are kept
per channel as a bit mask.

Only the driver is used: everything is learnt over the wire.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from calibration.progress import Progress
from calibration.records import (
    CalibrationError,
    CalibrationRecord,
    InstrumentIdentity,
    format_utc,
    utc_now,
)
from drivers.cnea_board import (
    CURRENT_CLAMP,
    GAINS,
    VOLTAGE_CLAMP,
    CneaBoard,
    FrameStream,
)
from drivers.cnea_frames import FLAG_CALIBRATION, Frame

log = logging.getLogger(__name__)


MODE_NAMES = ("current clamp", "voltage clamp")
CODE_MAX = 32767
SOURCE_LIMIT_V = 0.1
"""The calibration source's range, ±V."""
QUANTIZATION_CODES = 1 / np.sqrt(12)
"""Standard deviation of the ADC's rounding, codes."""

BAD_NO_RESPONSE = 1
"""Gain off nominal by more than the tolerance (a stuck or dead amplifier)."""
BAD_OFFSET = 2
"""Offset beyond the limit."""
BAD_NONLINEAR = 4
"""Fit residual beyond the limit (nonlinear or noisy)."""
BAD_NO_LEVELS = 8
"""Fewer than three levels inside the channel's range (clipped)."""
BAD_INPUT_PINNED = 16
"""With the source off, the input sat at a rail (a saturated electrode)."""
BAD_REASONS = {
    BAD_NO_RESPONSE: "no response / gain off nominal",
    BAD_OFFSET: "offset beyond limit",
    BAD_NONLINEAR: "nonlinear or noisy",
    BAD_NO_LEVELS: "clipped at every level",
    BAD_INPUT_PINNED: "input pinned at a rail",
}


@dataclass(frozen=True)
class CneaSettings:
    """How a CNEA calibration is taken (SI units)."""

    modes: tuple[int, ...] = (CURRENT_CLAMP, VOLTAGE_CLAMP)
    gains: tuple[int, ...] = GAINS
    levels: int = 21
    """Source levels per mode and gain, spread over ±``full_scale_fraction`` of full scale."""
    full_scale_fraction: float = 0.8
    frames_per_level: int = 2
    gain_tolerance: float = 0.2
    """|true / nominal gain - 1| beyond this: the channel does not respond."""
    offset_limit_v: float = 5e-3
    """|offset| in current clamp beyond this: bad, V."""
    offset_limit_a: float = 500e-12
    """|offset| in voltage clamp beyond this: bad, A."""
    residual_limit_codes: float = 3.0
    input_check_s: float = 0.05
    """Seconds of electrode signal looked at with the source off (0: no input check)."""
    pinned_fraction: float = 0.95
    """A channel whose samples sit at ±32767 this often is pinned."""
    hold_voltage_v: float = -0.07
    """Holding voltage while calibrating voltage clamp, V."""
    frame_timeout_s: float = 5.0
    warm_up_timeout_s: float = 60.0
    """The first frame may take this long (a board whose inputs are still starting up: the
    emulated culture is built on the first frame); control replies too."""
    seed: int = 7
    """Seeds the sub-step dither of the levels."""

    def __post_init__(self) -> None:
        if not self.modes or any(m not in (CURRENT_CLAMP, VOLTAGE_CLAMP) for m in self.modes):
            raise CalibrationError(f"modes must be 0 (current clamp) and/or 1, got {self.modes}")
        if not self.gains or any(g not in GAINS for g in self.gains):
            raise CalibrationError(f"gains must be among {GAINS}, got {self.gains}")
        if self.levels < 5:
            raise CalibrationError(f"at least 5 levels are needed, got {self.levels}")
        if not 0.1 <= self.full_scale_fraction <= 0.95:
            raise CalibrationError("full_scale_fraction must be in [0.1, 0.95]")
        if self.frames_per_level < 1:
            raise CalibrationError("frames_per_level must be >= 1")


@dataclass
class _Fit:
    gain: np.ndarray
    offset: np.ndarray
    u_gain: np.ndarray
    u_offset: np.ndarray
    residual: np.ndarray
    n_levels: np.ndarray


def fit_channels(x: np.ndarray, codes: np.ndarray, valid: np.ndarray) -> _Fit:
    """Per-channel straight line ``code = a + b x`` over the valid levels.

    ``x`` (L,) input levels (V or A); ``codes`` (L, C) mean codes; ``valid`` (L, C).
    Returns gain = 1/b, offset = -a/b and their standard uncertainties; NaN where fewer
    than three levels are valid or the slope is zero.
    """
    m = valid.astype(float)
    y = np.where(valid, codes, 0.0)
    n = m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xbar = (m * x[:, None]).sum(axis=0) / n
        ybar = y.sum(axis=0) / n
        dx = (x[:, None] - xbar) * m
        dy = (y - ybar) * m
        sxx = (dx * dx).sum(axis=0)
        sxy = (dx * dy).sum(axis=0)
        b = sxy / sxx
        resid = (dy - b * dx) * m
        rss = (resid * resid).sum(axis=0)
        s = np.sqrt(rss / (n - 2))
        s_eff = np.maximum(s, QUANTIZATION_CODES)
        u_b = s_eff / np.sqrt(sxx)
        u_ybar = s_eff / np.sqrt(n)
        gain = 1.0 / b
        offset = xbar - ybar / b
        u_gain = u_b / b**2
        u_offset = np.sqrt((u_ybar / b) ** 2 + (ybar * u_b / b**2) ** 2)
    usable = (n >= 3) & np.isfinite(b) & (b != 0)
    nan = np.full(codes.shape[1], np.nan)
    return _Fit(
        np.where(usable, gain, nan),
        np.where(usable, offset, nan),
        np.where(usable, u_gain, nan),
        np.where(usable, u_offset, nan),
        np.where(n >= 3, s, nan),
        n.astype(int),
    )


def level_plan(
    nominal_lsb: float,
    mode: int,
    resistance_ohm: float,
    settings: CneaSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """The source levels (V) for one mode and gain: evenly spread over the usable range,
    each moved by a random fraction of one ADC step (the dither)."""
    per_volt = 1.0 / resistance_ohm if mode == VOLTAGE_CLAMP else 1.0
    full_scale_v = CODE_MAX * nominal_lsb / per_volt
    top = min(SOURCE_LIMIT_V, settings.full_scale_fraction * full_scale_v)
    step_v = nominal_lsb / per_volt
    levels = np.linspace(-top, top, settings.levels)
    levels += (rng.random(settings.levels) - 0.5) * step_v
    return np.clip(levels, -SOURCE_LIMIT_V, SOURCE_LIMIT_V)


class _Collector:
    """Runs the board for a few frames at a time and averages each channel."""

    def __init__(self, board: CneaBoard, stream: FrameStream, timeout_s: float) -> None:
        self.board, self.stream, self.timeout_s = board, stream, timeout_s
        self.frames = 0

    def collect(
        self, frames: int, *, calibration: bool, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean code and fraction of samples at a rail, per channel, over ``frames`` frames."""
        timeout_s = timeout_s or self.timeout_s
        first = self.board.start(self.stream)
        got: list[np.ndarray] = []
        deadline = time.monotonic() + timeout_s
        try:
            for item in self.stream:  # frames, and gap/stall events (skipped: gaps are fine)
                if isinstance(item, Frame) and item.first_sample >= first:
                    flagged = bool(item.header.flags & FLAG_CALIBRATION)
                    if flagged != calibration:
                        raise CalibrationError(
                            f"a frame {'without' if calibration else 'with'} FLAG_CALIBRATION "
                            f"arrived while the calibration source was "
                            f"{'on' if calibration else 'off'}: check the board's firmware"
                        )
                    got.append(item.samples)
                    if len(got) >= frames:
                        break
                if time.monotonic() > deadline:
                    break
        finally:
            self.board.stop()
        if len(got) < frames:
            raise CalibrationError(
                f"only {len(got)} of {frames} frames arrived within {timeout_s:g} s; "
                "check the data connection (data_port)"
            )
        self.frames += len(got)
        samples = np.concatenate(got).astype(np.int32)
        railed = (np.abs(samples) >= CODE_MAX).mean(axis=0)
        return samples.mean(axis=0), railed


@contextlib.contextmanager
def _patient(board: CneaBoard, timeout_s: float) -> Iterator[None]:
    """Control replies may take up to ``timeout_s`` meanwhile."""
    before = board.transport.timeout_s
    board.transport.timeout_s = max(before, timeout_s)
    try:
        yield
    finally:
        board.transport.timeout_s = before


@dataclass
class _BoardState:
    gain: int
    modes: np.ndarray
    levels: np.ndarray
    source: tuple[bool, float, str, float]


def _save_state(board: CneaBoard) -> _BoardState:
    return _BoardState(
        board.gain,
        board.modes(),
        board.levels(),
        (
            board.calibration_source_enabled,
            board.calibration_source_level_v,
            board.calibration_source_function,
            board.calibration_source_frequency_hz,
        ),
    )


def _restore_state(board: CneaBoard, state: _BoardState) -> None:
    board.stop()  # settings that shape the data are refused while acquiring
    board.calibration_source_enabled = False
    enabled, level, function, frequency = state.source
    board.calibration_source_level_v = level
    board.calibration_source_function = function
    board.calibration_source_frequency_hz = frequency
    board.gain = state.gain
    for mode in (CURRENT_CLAMP, VOLTAGE_CLAMP):
        chosen = state.modes == mode
        for level_value in np.unique(state.levels[chosen]):
            channels = np.flatnonzero(chosen & (state.levels == level_value))
            if mode == CURRENT_CLAMP:
                board.set_current_clamp(channels, float(level_value))
            else:
                board.set_voltage_clamp(channels, float(level_value))
    board.calibration_source_enabled = enabled


def calibrate_cnea(
    board: CneaBoard,
    settings: CneaSettings | None = None,
    *,
    operator: str = "",
    valid_days: float = 30.0,
    software_version: str = "",
    progress: Progress | None = None,
) -> CalibrationRecord:
    """Calibrate every channel of ``board`` for the modes and gains of ``settings``.

    The board must not be acquiring. Its gain, clamp modes, holding levels and
    calibration-source settings are restored afterwards (on every exit path).
    """
    settings = settings or CneaSettings()
    if board.acquiring:
        raise CalibrationError("the board is acquiring (a recording?); stop it first")
    identity = InstrumentIdentity.from_idn(board.identify())
    temperature = board.temperature_c()
    n = board.n_channels
    rng = np.random.default_rng(settings.seed)
    combos = [(m, g) for m in settings.modes for g in settings.gains]
    total = len(combos) * settings.levels + (1 if settings.input_check_s > 0 else 0)
    done = 0
    shape = (2, len(GAINS), n)
    gain = np.full(shape, np.nan)
    offset = np.full(shape, np.nan)
    u_gain = np.full(shape, np.nan)
    u_offset = np.full(shape, np.nan)
    residual = np.full(shape, np.nan)
    nominal = np.full(shape, np.nan)
    reasons = np.zeros(n, dtype=np.uint8)
    pinned_fraction = np.zeros(n)
    plans: dict[str, list[float]] = {}
    started = time.monotonic()
    state = _save_state(board)
    stream = board.open_stream(stall_timeout_s=0.5)
    collector = _Collector(board, stream, settings.frame_timeout_s)
    resistance = float(board.calibration_resistance_ohm)
    try:
        board.calibration_source_enabled = False
        with _patient(board, settings.warm_up_timeout_s):  # one frame: the inputs are up
            collector.collect(1, calibration=False, timeout_s=settings.warm_up_timeout_s)
        if settings.input_check_s > 0:
            board.calibration_source_enabled = False
            board.gain = 1
            board.set_current_clamp(None, 0.0)
            frames = max(
                1, round(settings.input_check_s * board.sample_rate_hz / board.samples_per_frame)
            )
            _, pinned_fraction = collector.collect(frames, calibration=False)
            reasons[pinned_fraction >= settings.pinned_fraction] |= BAD_INPUT_PINNED
            done += 1
            if progress:
                progress(done, total, "electrodes (source off)")
        board.calibration_source_function = "dc"
        board.calibration_source_level_v = 0.0
        board.calibration_source_enabled = True
        for mode, g in combos:
            gi = GAINS.index(g)
            board.gain = g
            if mode == CURRENT_CLAMP:
                board.set_current_clamp(None, 0.0)
            else:
                board.set_voltage_clamp(None, settings.hold_voltage_v)
            nominal_lsb = board.nominal_gain()
            nominal[mode, gi] = nominal_lsb
            levels_v = level_plan(float(np.median(nominal_lsb)), mode, resistance, settings, rng)
            plans[f"{mode},{g}"] = [float(v) for v in levels_v]
            means = np.empty((levels_v.size, n))
            clipped = np.zeros((levels_v.size, n), dtype=bool)
            for k, level in enumerate(levels_v):
                board.calibration_source_level_v = float(level)
                means[k], railed = collector.collect(settings.frames_per_level, calibration=True)
                clipped[k] = railed > 0
                done += 1
                if progress:
                    progress(done, total, f"{MODE_NAMES[mode]}, gain {g}")
            x = levels_v / resistance if mode == VOLTAGE_CLAMP else levels_v
            fit = fit_channels(x, means, ~clipped)
            gain[mode, gi], offset[mode, gi] = fit.gain, fit.offset
            u_gain[mode, gi], u_offset[mode, gi] = fit.u_gain, fit.u_offset
            residual[mode, gi] = fit.residual
            ratio = fit.gain / nominal_lsb
            limit = settings.offset_limit_a if mode == VOLTAGE_CLAMP else settings.offset_limit_v
            reasons[fit.n_levels < 3] |= BAD_NO_LEVELS
            usable = fit.n_levels >= 3
            no_response = usable & ~(np.abs(ratio - 1) <= settings.gain_tolerance)
            reasons[no_response] |= BAD_NO_RESPONSE
            reasons[usable & ~no_response & (np.abs(fit.offset) > limit)] |= BAD_OFFSET
            reasons[usable & ~no_response & (fit.residual > settings.residual_limit_codes)] |= (
                BAD_NONLINEAR
            )
    finally:
        try:
            _restore_state(board, state)
        finally:
            stream.close()
    bad = reasons != 0
    values: dict[str, np.ndarray | float] = {
        "gain": gain,
        "offset": offset,
        "nominal_gain": nominal,
        "residual_codes": residual,
        "bad_channels": bad,
        "bad_reason": reasons,
        "input_pinned_fraction": pinned_fraction,
        "calibration_resistance_ohm": resistance,
    }
    calibrated = np.isfinite(gain) & ~bad[None, None, :]
    factor = gain / nominal
    info = {
        "settings": asdict(settings),
        "levels_v": plans,
        "frames": collector.frames,
        "duration_s": time.monotonic() - started,
        "channels": n,
        "bad_channels": int(bad.sum()),
        "bad_by_reason": {
            name: int(((reasons & bit) != 0).sum()) for bit, name in BAD_REASONS.items()
        },
        "median_abs_gain_error": _median(np.abs(factor[calibrated] - 1)),
        "median_gain_uncertainty": _median((u_gain / gain)[calibrated]),
        "median_offset_uncertainty_v": _median(u_offset[CURRENT_CLAMP][calibrated[CURRENT_CLAMP]]),
        "layout": "arrays (mode, gain index, channel): mode 0 current clamp (V), 1 voltage "
        "clamp (A); gain index over (1, 2, 4); value = code * gain + offset",
    }
    log.info(
        "CNEA %s calibrated: %d frames, %d bad channels", identity, collector.frames, bad.sum()
    )
    return CalibrationRecord(
        kind="cnea",
        identities={"board": identity},
        primary="board",
        created_utc=format_utc(utc_now()),
        valid_days=valid_days,
        values=values,
        uncertainties={"gain": u_gain, "offset": u_offset},
        units={
            "gain": "V/code | A/code",
            "offset": "V | A",
            "nominal_gain": "V/code | A/code",
            "residual_codes": "code",
            "bad_channels": "1",
            "bad_reason": "bitmask",
            "input_pinned_fraction": "1",
            "calibration_resistance_ohm": "ohm",
        },
        operator=operator,
        temperature_c=temperature,
        info=info,
        software_version=software_version,
    )


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


# --- applying a record -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelCalibration:
    """Per-channel gain and offset for a recording, and which came from the record."""

    gain: np.ndarray
    """(C,) value per code: V (current clamp) or A (voltage clamp)."""
    offset: np.ndarray
    """(C,) value at code 0."""
    bad_channels: np.ndarray
    """(C,) bool, from the record."""
    calibrated: np.ndarray
    """(C,) bool: True where the record had this channel's mode and gain (else nominal)."""


def channel_calibration(
    record: CalibrationRecord,
    modes: np.ndarray,
    gain_setting: int,
    nominal_gain: np.ndarray,
    nominal_offset: np.ndarray,
) -> ChannelCalibration:
    """The record's gain and offset for each channel's clamp ``modes`` (C,) at amplifier
    ``gain_setting``; channels the record lacks (or marks bad) keep their nominal values."""
    if record.kind != "cnea":
        raise CalibrationError(f"record {record.record_id} is a {record.kind} record, not cnea")
    if gain_setting not in GAINS:
        raise CalibrationError(f"gain {gain_setting} is not one of {GAINS}")
    table_gain = np.asarray(record.value("gain"))
    table_offset = np.asarray(record.value("offset"))
    bad = np.asarray(record.value("bad_channels"), dtype=bool)
    modes = np.asarray(modes, dtype=np.intp)
    n = modes.size
    if table_gain.shape != (2, len(GAINS), n):
        raise CalibrationError(
            f"record {record.record_id} holds {table_gain.shape[-1]} channels, the board {n}"
        )
    cols = np.arange(n)
    gi = GAINS.index(gain_setting)
    gain = table_gain[modes, gi, cols]
    offset = table_offset[modes, gi, cols]
    calibrated = np.isfinite(gain) & np.isfinite(offset) & ~bad
    return ChannelCalibration(
        np.where(calibrated, gain, nominal_gain),
        np.where(calibrated, offset, nominal_offset),
        bad,
        calibrated,
    )
