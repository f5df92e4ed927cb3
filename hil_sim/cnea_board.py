"""The emulated CNEA readout board: SCPI control on one TCP port, binary frames on another.

Protocol: docs/cnea_protocol.md. The pieces, physics apart from plumbing:

- :class:`SignalSource` — what the board digitises: the emulated culture behind its
  electrode array (``hil_sim.electrodes.ElectrodeArray``), a recorded file
  (:class:`hil_sim.playback.PlaybackSource`, a :class:`DigitalSource` whose codes
  bypass the ADC), or any object with the same interface.
- :class:`FrontEnd` — the physics of the board itself: per-channel amplifier mode,
  holding level, true (seeded) gain and offset, the ADC's quantisation and clipping,
  and the calibration source.
- :class:`CneaBoardDevice` — the SCPI command set and the acquisition state (sequence
  numbers, sample index, frame production).
- :class:`FrameServer` — the data port: paces frames to the sample clock (or as fast
  as the host reads), holds them in a bounded output FIFO (overflow drops frames and
  says so in the next frame's flags) and sends them, with injected link faults.
- :class:`CneaBoardEmulator` — both servers together; :func:`build_cnea` puts it in
  the emulated lab.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from hil_sim import cnea_frames
from hil_sim.faults import Action, Faults
from hil_sim.line_server import LOOPBACK, LineServer, TcpLineServer
from hil_sim.scpi_server import Call, ScpiDevice, ScpiError, fmt, scpi

log = logging.getLogger(__name__)

N_ROWS = 64
N_COLS = 64
"""The electrode grid: channel = row * 64 + col."""

CURRENT_CLAMP = 0
VOLTAGE_CLAMP = 1
MODE_NAMES = ("current_clamp", "voltage_clamp")
MODE_TOKENS = ("CCLAMP", "VCLAMP")
"""Long forms on the wire; short forms CCL and VCL."""

NOMINAL_LSB = (5e-6, 1e-12)
"""Nominal code step at gain 1: 5 µV/code in current clamp (±163.8 mV full scale),
1 pA/code in voltage clamp (±32.8 nA). Gain 2 and 4 divide it."""
GAINS = (1, 2, 4)
RATE_DIVIDERS = (1, 2, 4, 5, 10)
"""The board samples at the source rate divided by one of these (boxcar averaging)."""
CODE_MAX = 32767
"""Codes clip at ±32767; -32768 is never produced (hosts use it to mark lost samples)."""

DEFAULT_SAMPLES_PER_FRAME = 16
MAX_SAMPLES_PER_FRAME = 256
HOLD_CURRENT_LIMIT_A = 2e-9
HOLD_VOLTAGE_LIMIT_V = 0.15
ELECTROPORATION_AMPLITUDE_V = (0.1, 3.5)
ELECTROPORATION_WIDTH_S = (1e-6, 10e-3)
CAL_LEVEL_LIMIT_V = 0.1
CAL_RESISTANCE_OHM = 100e6
"""Voltage-clamp channels see the calibration voltage through this on-board resistor."""


class SignalSource(Protocol):
    """What feeds the amplifier inputs (the culture behind its electrode array, or a stand-in).

    ``read`` is deterministic and independent of how it is chunked.
    """

    sample_rate_hz: float
    n_channels: int
    positions_m: np.ndarray
    """(C, 2) electrode x, y, m."""

    def read(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` at every amplifier input, (n, C) float32: V in current
        clamp, A in voltage clamp."""
        ...

    def electroporate(self, channels: np.ndarray, amplitude_v: float, width_s: float) -> None:
        """A pulse of ``amplitude_v`` for ``width_s`` through each electrode in ``channels``."""
        ...

    def set_mode(self, channels: np.ndarray, mode: str, level: float) -> None:
        """``"current_clamp"`` (level: injected current, A) or ``"voltage_clamp"`` (level:
        holding voltage, V) on ``channels``."""
        ...

    def access(self) -> np.ndarray:
        """(C,) float32 electrical access of each electrode to its cell, 0..1."""
        ...

    def truth(self) -> dict[str, np.ndarray]:
        """Ground-truth arrays (``instrument.recording.GroundTruth`` field names)."""
        ...

    def truth_attrs(self) -> dict[str, Any]:
        """Scalar parameters that go with the ground truth."""
        ...


@runtime_checkable
class DigitalSource(Protocol):
    """A source that already holds ADC codes (a recording): the board streams them as they
    are, bypassing its front end, and reports the source's gain and offset as nominal."""

    gain_v: np.ndarray
    offset_v: np.ndarray

    def read_codes(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` codes, (n, C) int16."""
        ...


class LazySource:
    """A :class:`SignalSource` built on first use (the emulated culture takes seconds to
    build; a lab that never records should not wait for it). Clamp settings made before
    it exists are applied when it is built."""

    def __init__(
        self, factory: Callable[[], SignalSource], n_channels: int, sample_rate_hz: float
    ) -> None:
        self._factory = factory
        self._source: SignalSource | None = None
        self._pending: list[tuple[np.ndarray, str, float]] = []
        self._lock = threading.Lock()
        self.n_channels = n_channels
        self.sample_rate_hz = sample_rate_hz

    @property
    def built(self) -> bool:
        return self._source is not None

    @property
    def source(self) -> SignalSource:
        """The real source (built now if needed)."""
        with self._lock:
            if self._source is None:
                start = time.perf_counter()
                source = self._factory()
                if source.n_channels != self.n_channels or not math.isclose(
                    source.sample_rate_hz, self.sample_rate_hz
                ):
                    raise ValueError("the built source does not match its announced shape")
                for channels, mode, level in self._pending:
                    source.set_mode(channels, mode, level)
                self._pending.clear()
                self._source = source
                log.info("signal source built in %.1f s", time.perf_counter() - start)
            return self._source

    @property
    def positions_m(self) -> np.ndarray:
        return self.source.positions_m

    def read(self, n_samples: int) -> np.ndarray:
        return self.source.read(n_samples)

    def electroporate(self, channels: np.ndarray, amplitude_v: float, width_s: float) -> None:
        self.source.electroporate(channels, amplitude_v, width_s)

    def set_mode(self, channels: np.ndarray, mode: str, level: float) -> None:
        with self._lock:
            if self._source is None:
                self._pending.append((np.array(channels), mode, level))
                return
        self.source.set_mode(channels, mode, level)

    def access(self) -> np.ndarray:
        return self.source.access()

    def truth(self) -> dict[str, np.ndarray]:
        return self.source.truth()

    def truth_attrs(self) -> dict[str, Any]:
        return self.source.truth_attrs()


def parse_channel_list(text: str, n_channels: int) -> np.ndarray:
    """``(@0:63,100,200:203)`` → sorted unique channel indices (0-based, inclusive ranges)."""
    body = text.strip()
    if not (body.startswith("(@") and body.endswith(")")):
        raise ScpiError(-104, f"{text!r} is not a channel list (@a:b,c)")
    chosen: list[np.ndarray] = []
    for part in body[2:-1].split(","):
        part = part.strip()
        lo_text, _, hi_text = part.partition(":")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if hi_text else lo
        except ValueError:
            raise ScpiError(-104, f"bad channel {part!r} in {text!r}") from None
        if not 0 <= lo <= hi < n_channels:
            raise ScpiError(-222, f"channels {part} outside 0:{n_channels - 1}")
        chosen.append(np.arange(lo, hi + 1))
    if not chosen:
        raise ScpiError(-109, "empty channel list")
    return np.unique(np.concatenate(chosen))


def block(data: bytes) -> bytes:
    """An IEEE 488.2 definite-length block: ``#<digits><length><data>``."""
    length = str(len(data))
    return f"#{len(length)}{length}".encode("ascii") + data


class FrontEnd:
    """The board's analog front end and ADC, per channel (physics only, no wire).

    Each channel has a mode (current or voltage clamp), a holding level and a true
    gain and offset that differ from the nominal ones (seeded: gain within ±5 %,
    offsets of a few hundred µV / tens of pA). ``volts = code * gain + offset``.
    A seeded ``fault_fraction`` of the amplifiers is broken: their output is stuck at
    one code whatever the input (half of them at a rail), which calibration must find.
    """

    def __init__(
        self,
        n_channels: int,
        seed: int,
        *,
        gain_spread: float = 0.02,
        offset_sd_v: float = 300e-6,
        offset_sd_a: float = 30e-12,
        fault_fraction: float = 0.001,
    ) -> None:
        rng = np.random.default_rng([seed, 0xCAEA])
        self.n_channels = n_channels
        self.gain_factor = np.clip(
            1.0 + gain_spread * rng.standard_normal((2, n_channels)),
            1 - 2.5 * gain_spread,
            1 + 2.5 * gain_spread,
        )
        """(2, C) true gain / nominal gain, per mode."""
        self.true_offset = np.stack(
            [
                np.clip(
                    rng.normal(0.0, offset_sd_v, n_channels), -4 * offset_sd_v, 4 * offset_sd_v
                ),
                np.clip(
                    rng.normal(0.0, offset_sd_a, n_channels), -4 * offset_sd_a, 4 * offset_sd_a
                ),
            ]
        )
        """(2, C) true input offset per mode: V (current clamp), A (voltage clamp)."""
        if not 0 <= fault_fraction <= 1:
            raise ValueError(f"fault_fraction must be in [0, 1], got {fault_fraction}")
        faults = np.random.default_rng([seed, 0xBAD0])
        broken = faults.choice(n_channels, size=round(fault_fraction * n_channels), replace=False)
        self.amplifier_fault = np.zeros(n_channels, dtype=bool)
        """(C,) amplifiers whose output is stuck (hidden truth)."""
        self.amplifier_fault[broken] = True
        self._fault_idx = np.sort(broken)
        stuck = faults.integers(-20000, 20000, self._fault_idx.size)
        railed = faults.random(self._fault_idx.size) < 0.5
        self._fault_codes = np.where(
            railed, np.where(stuck < 0, -CODE_MAX, CODE_MAX), stuck
        ).astype(np.int16)
        self.modes = np.zeros(n_channels, dtype=np.uint8)
        self.levels = np.zeros(n_channels)
        self.gain_setting = 1
        self.cal_enabled = False
        self.cal_level_v = 0.0
        self.cal_function = "DC"
        self.cal_frequency_hz = 10.0
        self._refresh()

    def reset(self) -> None:
        """Power-on state: every channel in current clamp at 0 A, gain 1, calibration off."""
        self.modes[:] = CURRENT_CLAMP
        self.levels[:] = 0.0
        self.gain_setting = 1
        self.cal_enabled = False
        self.cal_level_v = 0.0
        self.cal_function = "DC"
        self.cal_frequency_hz = 10.0
        self._refresh()

    def _refresh(self) -> None:
        lsb = self.nominal_gain()
        idx = self.modes.astype(np.intp)
        cols = np.arange(self.n_channels)
        true_lsb = lsb * self.gain_factor[idx, cols]
        self._inv_lsb = (1.0 / true_lsb).astype(np.float32)
        self._offset = self.true_offset[idx, cols].astype(np.float32)

    def set_mode(self, channels: np.ndarray, mode: int, level: float) -> None:
        self.modes[channels] = mode
        self.levels[channels] = level
        self._refresh()

    def set_gain(self, gain: int) -> None:
        self.gain_setting = gain
        self._refresh()

    def nominal_gain(self) -> np.ndarray:
        """(C,) nominal code step: V/code (current clamp) or A/code (voltage clamp)."""
        return np.asarray(NOMINAL_LSB)[self.modes] / self.gain_setting

    def nominal_offset(self) -> np.ndarray:
        """(C,) nominal value at code 0 (zero: the board does not know its offsets)."""
        return np.zeros(self.n_channels)

    def calibration_inputs(self, first_sample: int, n: int, rate_hz: float) -> np.ndarray:
        """(n, C) amplifier inputs while the calibration source drives them."""
        if self.cal_function == "SQUARE":
            t = (first_sample + np.arange(n)) / rate_hz
            high = np.floor(2.0 * self.cal_frequency_hz * t).astype(np.int64) % 2 == 0
            volts = np.where(high, self.cal_level_v, 0.0)
        else:
            volts = np.full(n, self.cal_level_v)
        per_mode = np.where(self.modes == VOLTAGE_CLAMP, 1.0 / CAL_RESISTANCE_OHM, 1.0)
        return (volts[:, None] * per_mode[None, :]).astype(np.float32)

    def convert(self, inputs: np.ndarray) -> np.ndarray:
        """Quantise (n, C) float32 inputs to int16 codes, clipped to ±32767."""
        x = np.subtract(inputs, self._offset, dtype=np.float32)
        x *= self._inv_lsb
        np.rint(x, out=x)
        np.clip(x, -CODE_MAX, CODE_MAX, out=x)
        np.nan_to_num(x, copy=False, nan=0.0)
        codes = x.astype(np.int16)
        if self._fault_idx.size:
            codes[:, self._fault_idx] = self._fault_codes
        return codes


class CneaBoardDevice(ScpiDevice):
    """The board's control interface and acquisition state (serve it with a TcpLineServer)."""

    identity = ("brainpaste", "CNEA-4096", "EMU00001", "1.0")

    def __init__(
        self,
        source: SignalSource,
        *,
        seed: int = 1,
        rate: float = 1.0,
        samples_per_frame: int = DEFAULT_SAMPLES_PER_FRAME,
        keep_samples: bool = False,
        amplifier_fault_fraction: float = 0.001,
    ) -> None:
        super().__init__()
        self.identity = ("brainpaste", "CNEA-4096", f"EMU{seed:05d}", "1.0")
        self.source = source
        self.digital = isinstance(source, DigitalSource)
        self.front_end = FrontEnd(source.n_channels, seed, fault_fraction=amplifier_fault_fraction)
        self.temperature_c = 36.5 + float(np.random.default_rng([seed, 0x7E4]).uniform(0.0, 1.0))
        """Chip temperature (the culture's incubator), °C."""
        self.default_samples_per_frame = samples_per_frame
        self.rate = rate
        """Emulation speed: multiple of real time; ``math.inf`` = as fast as the host reads."""
        self.keep_samples = keep_samples
        self.tap: list[tuple[int, np.ndarray]] = []
        """(first sample, codes) of every frame produced, when ``keep_samples`` (for tests)."""
        self.acquiring = False
        self.acquisition_changed = threading.Event()
        self.next_sequence = 0
        self.next_sample = 0
        self.frames_produced = 0
        self.frames_overflowed = 0
        self.overflow_pending = False
        self.stimulus_pending = False
        self.stimuli: list[tuple[int, str]] = []
        """(sample index, description) of every stimulus applied (for tests and reports)."""
        self.reset()

    # --- state ---------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        return int(self.source.n_channels)

    @property
    def sample_rate_hz(self) -> float:
        """The board's sample rate, Hz."""
        return float(self.source.sample_rate_hz) / self.rate_divider

    def reset(self) -> None:
        with self.lock:
            self._set_acquiring(False)
            self.samples_per_frame = self.default_samples_per_frame
            self.rate_divider = 1
            self.front_end.reset()
            self.electroporation_amplitude_v = 1.5
            self.electroporation_width_s = 200e-6
            self.next_sequence = 0
            self.next_sample = 0
            if not self.digital:
                self.source.set_mode(np.arange(self.n_channels), MODE_NAMES[CURRENT_CLAMP], 0.0)

    def _set_acquiring(self, on: bool) -> None:
        self.acquiring = on
        self.acquisition_changed.set()

    def _require_idle(self, what: str) -> None:
        if self.acquiring:
            raise ScpiError(-221, f"{what} cannot change while acquiring; :ACQ:STOP first")

    def _stimulus(self, description: str) -> None:
        self.stimulus_pending = True
        self.stimuli.append((self.next_sample, description))

    def produce_frame(self) -> tuple[int, int, np.ndarray, int] | None:
        """The next frame's (sequence, first sample, codes, flags), or None when idle."""
        with self.lock:
            if not self.acquiring:
                return None
            spf, n_src = self.samples_per_frame, self.samples_per_frame * self.rate_divider
            flags = 0
            if self.digital:
                try:
                    codes = self.source.read_codes(n_src)  # type: ignore[attr-defined]
                except EOFError as exc:  # a playback without loop ran out
                    log.info("board stops: %s", exc)
                    self._set_acquiring(False)
                    return None
            else:
                inputs = self.source.read(n_src)
                if self.rate_divider > 1:
                    inputs = inputs.reshape(spf, self.rate_divider, -1).mean(axis=1)
                if self.front_end.cal_enabled:
                    inputs = self.front_end.calibration_inputs(
                        self.next_sample, spf, self.sample_rate_hz
                    )
                    flags |= cnea_frames.FLAG_CALIBRATION
                codes = self.front_end.convert(inputs)
            if self.stimulus_pending:
                flags |= cnea_frames.FLAG_STIMULUS
                self.stimulus_pending = False
            if self.overflow_pending:
                flags |= cnea_frames.FLAG_OVERFLOW
                self.overflow_pending = False
            sequence, first = self.next_sequence, self.next_sample
            self.next_sequence = (sequence + 1) % cnea_frames.SEQUENCE_MODULUS
            self.next_sample += spf
            self.frames_produced += 1
            if self.keep_samples:
                self.tap.append((first, codes.copy()))
            return sequence, first, codes, flags

    def note_overflow(self) -> None:
        """The output FIFO had no room for a frame: it is lost, and the next frame says so."""
        with self.lock:
            self.frames_overflowed += 1
            self.overflow_pending = True

    def tapped_codes(self) -> tuple[int, np.ndarray]:
        """(first sample, all codes produced so far, concatenated) when ``keep_samples``."""
        with self.lock:
            if not self.tap:
                return 0, np.zeros((0, self.n_channels), dtype=np.int16)
            return self.tap[0][0], np.concatenate([codes for _, codes in self.tap])

    # --- acquisition -----------------------------------------------------------------
    @scpi(":ACQuire:STARt")
    def start(self, call: Call) -> None:
        call.expect(0)
        self._set_acquiring(True)

    @scpi(":ACQuire:STOP")
    def stop(self, call: Call) -> None:
        call.expect(0)
        self._set_acquiring(False)

    @scpi(":ACQuire:STATe?")
    def get_state(self, call: Call) -> str:
        return "RUN" if self.acquiring else "IDLE"

    @scpi(":ACQuire:SRATe")
    def set_rate(self, call: Call) -> None:
        call.expect(1)
        self._require_idle("the sample rate")
        wanted = call.float(0, low=0, units="HZ")
        for divider in RATE_DIVIDERS:
            if math.isclose(self.source.sample_rate_hz / divider, wanted, rel_tol=1e-9):
                if self.digital and divider != 1:
                    raise ScpiError(-221, "a playback source streams at its recorded rate only")
                self.rate_divider = divider
                return
        allowed = [self.source.sample_rate_hz / d for d in RATE_DIVIDERS]
        raise ScpiError(-224, f"{wanted:g} Hz; allowed {allowed}")

    @scpi(":ACQuire:SRATe?")
    def get_rate(self, call: Call) -> str:
        return fmt(self.sample_rate_hz)

    @scpi(":ACQuire:FRAMe:SAMPles")
    def set_spf(self, call: Call) -> None:
        call.expect(1)
        self._require_idle("samples per frame")
        self.samples_per_frame = call.int(0, low=1, high=MAX_SAMPLES_PER_FRAME)

    @scpi(":ACQuire:FRAMe:SAMPles?")
    def get_spf(self, call: Call) -> str:
        return str(self.samples_per_frame)

    @scpi(":ACQuire:CHANnels?")
    def get_channels(self, call: Call) -> str:
        return str(self.n_channels)

    @scpi(":STATus:FRAMes?")
    def get_frame_status(self, call: Call) -> str:
        return (
            f"{self.frames_produced},{self.frames_overflowed},"
            f"{self.next_sequence},{self.next_sample}"
        )

    @scpi(":DIAGnostic:SEQuence")
    def set_sequence(self, call: Call) -> None:
        call.expect(1)
        self._require_idle("the sequence counter")
        self.next_sequence = call.int(0, low=0, high=cnea_frames.SEQUENCE_MODULUS - 1)

    # --- amplifiers -------------------------------------------------------------------
    @scpi(":SENSe:GAIN")
    def set_gain(self, call: Call) -> None:
        call.expect(1)
        self._require_idle("the gain")
        gain = call.int(0, low=1, high=max(GAINS))
        if gain not in GAINS:
            raise ScpiError(-224, f"gain {gain}; allowed {list(GAINS)}")
        self.front_end.set_gain(gain)

    @scpi(":SENSe:GAIN?")
    def get_gain(self, call: Call) -> str:
        return str(self.front_end.gain_setting)

    def _channels(self, call: Call, index: int) -> np.ndarray:
        if index >= len(call.args):
            return np.arange(self.n_channels)
        return parse_channel_list(call.args[index], self.n_channels)

    def _apply_mode(self, channels: np.ndarray, mode: int, level: float) -> None:
        if self.digital:
            self._stimulus(f"{MODE_NAMES[mode]} {level:g} (ignored by playback)")
        else:
            self.source.set_mode(channels, MODE_NAMES[mode], level)
            self._stimulus(f"{MODE_NAMES[mode]} {level:g} on {len(channels)} channels")
        self.front_end.set_mode(channels, mode, level)

    @scpi(":CHANnel:MODE")
    def set_mode(self, call: Call) -> None:
        call.expect(1, 2)
        mode = MODE_TOKENS.index(call.choice(0, ["CCLamp", "VCLamp"]))
        level = -0.07 if mode == VOLTAGE_CLAMP else 0.0
        self._apply_mode(self._channels(call, 1), mode, level)

    @scpi(":CHANnel:MODE?")
    def get_mode(self, call: Call) -> str:
        call.expect(0, 1)
        return ",".join(("CCL", "VCL")[m] for m in self.front_end.modes[self._channels(call, 0)])

    @scpi(":SOURce:CURRent")
    def set_current(self, call: Call) -> None:
        call.expect(1, 2)
        level = call.float(0, low=-HOLD_CURRENT_LIMIT_A, high=HOLD_CURRENT_LIMIT_A, units="A")
        self._apply_mode(self._channels(call, 1), CURRENT_CLAMP, level)

    @scpi(":SOURce:VOLTage")
    def set_voltage(self, call: Call) -> None:
        call.expect(1, 2)
        level = call.float(0, low=-HOLD_VOLTAGE_LIMIT_V, high=HOLD_VOLTAGE_LIMIT_V, units="V")
        self._apply_mode(self._channels(call, 1), VOLTAGE_CLAMP, level)

    @scpi(":SOURce:LEVel?")
    def get_level(self, call: Call) -> str:
        call.expect(0, 1)
        return ",".join(fmt(float(v)) for v in self.front_end.levels[self._channels(call, 0)])

    @scpi(":ELECtroporate:AMPLitude")
    def set_ep_amplitude(self, call: Call) -> None:
        call.expect(1)
        self.electroporation_amplitude_v = call.float(
            0, low=ELECTROPORATION_AMPLITUDE_V[0], high=ELECTROPORATION_AMPLITUDE_V[1], units="V"
        )

    @scpi(":ELECtroporate:AMPLitude?")
    def get_ep_amplitude(self, call: Call) -> str:
        return fmt(self.electroporation_amplitude_v)

    @scpi(":ELECtroporate:WIDTh")
    def set_ep_width(self, call: Call) -> None:
        call.expect(1)
        self.electroporation_width_s = call.float(
            0, low=ELECTROPORATION_WIDTH_S[0], high=ELECTROPORATION_WIDTH_S[1], units="S"
        )

    @scpi(":ELECtroporate:WIDTh?")
    def get_ep_width(self, call: Call) -> str:
        return fmt(self.electroporation_width_s)

    @scpi(":ELECtroporate[:IMMediate]")
    def electroporate(self, call: Call) -> None:
        call.expect(0, 1)
        channels = self._channels(call, 0)
        amplitude, width = self.electroporation_amplitude_v, self.electroporation_width_s
        if not self.digital:
            self.source.electroporate(channels, amplitude, width)
        self._stimulus(f"electroporation {amplitude:g} V {width:g} s on {len(channels)} channels")

    @scpi(":MEASure:ACCess?")
    def get_access(self, call: Call) -> bytes:
        return block(np.asarray(self.source.access(), dtype="<f8").tobytes())

    # --- calibration --------------------------------------------------------------------
    @scpi(":CALibration:GAIN?")
    def get_nominal_gain(self, call: Call) -> bytes:
        gain = self.source.gain_v if self.digital else self.front_end.nominal_gain()  # type: ignore[attr-defined]
        return block(np.asarray(gain, dtype="<f8").tobytes())

    @scpi(":CALibration:OFFSet?")
    def get_nominal_offset(self, call: Call) -> bytes:
        offset = self.source.offset_v if self.digital else self.front_end.nominal_offset()  # type: ignore[attr-defined]
        return block(np.asarray(offset, dtype="<f8").tobytes())

    @scpi(":CALibration:SOURce:STATe")
    def set_cal_state(self, call: Call) -> None:
        call.expect(1)
        self.front_end.cal_enabled = call.bool(0)

    @scpi(":CALibration:SOURce:STATe?")
    def get_cal_state(self, call: Call) -> str:
        return fmt(self.front_end.cal_enabled)

    @scpi(":CALibration:SOURce:LEVel")
    def set_cal_level(self, call: Call) -> None:
        call.expect(1)
        self.front_end.cal_level_v = call.float(
            0, low=-CAL_LEVEL_LIMIT_V, high=CAL_LEVEL_LIMIT_V, default=0.0, units="V"
        )

    @scpi(":CALibration:SOURce:LEVel?")
    def get_cal_level(self, call: Call) -> str:
        return fmt(self.front_end.cal_level_v)

    @scpi(":CALibration:SOURce:FUNCtion")
    def set_cal_function(self, call: Call) -> None:
        call.expect(1)
        self.front_end.cal_function = call.choice(0, ["DC", "SQUare"])

    @scpi(":CALibration:SOURce:FUNCtion?")
    def get_cal_function(self, call: Call) -> str:
        return "SQU" if self.front_end.cal_function == "SQUARE" else "DC"

    @scpi(":CALibration:SOURce:FREQuency")
    def set_cal_frequency(self, call: Call) -> None:
        call.expect(1)
        self.front_end.cal_frequency_hz = call.float(0, low=0.1, high=1000.0, units="HZ")

    @scpi(":CALibration:SOURce:FREQuency?")
    def get_cal_frequency(self, call: Call) -> str:
        return fmt(self.front_end.cal_frequency_hz)

    @scpi(":CALibration:SOURce:RESistance?")
    def get_cal_resistance(self, call: Call) -> str:
        return fmt(CAL_RESISTANCE_OHM)

    @scpi(":SYSTem:TEMPerature?")
    def get_temperature(self, call: Call) -> str:
        return fmt(self.temperature_c)

    # --- the array -------------------------------------------------------------------------
    @scpi(":ARRay:ROWS?")
    def get_rows(self, call: Call) -> str:
        return str(N_ROWS if self.n_channels == N_ROWS * N_COLS else 1)

    @scpi(":ARRay:COLumns?")
    def get_cols(self, call: Call) -> str:
        return str(N_COLS if self.n_channels == N_ROWS * N_COLS else self.n_channels)

    @scpi(":ARRay:POSitions?")
    def get_positions(self, call: Call) -> bytes:
        return block(np.asarray(self.source.positions_m, dtype="<f8").tobytes())

    # --- emulator only ---------------------------------------------------------------------
    @scpi(":SIMulation:TRUTh?")
    def get_truth(self, call: Call) -> bytes:
        arrays = {k: np.asarray(v) for k, v in self.source.truth().items()}
        if not self.digital:  # the front end is bypassed in playback
            arrays["board_gain_factor"] = self.front_end.gain_factor
            arrays["board_offset"] = self.front_end.true_offset
            arrays["board_amplifier_fault"] = self.front_end.amplifier_fault
        attrs = dict(self.source.truth_attrs())
        attrs["board_seed_identity"] = ",".join(self.identity)
        arrays["attrs_json"] = np.array(json.dumps(attrs, default=_json_default))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return block(buffer.getvalue())

    @scpi(":SIMulation:RATE")
    def set_sim_rate(self, call: Call) -> None:
        call.expect(1)
        text = call.arg(0).strip().upper()
        if text in ("MAX", "MAXIMUM", "INF"):
            self.rate = math.inf
        else:
            self.rate = call.float(0, low=0.01, high=1e6)

    @scpi(":SIMulation:RATE?")
    def get_sim_rate(self, call: Call) -> str:
        return "MAX" if math.isinf(self.rate) else fmt(self.rate)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class FrameServer(LineServer):
    """The board's data port: one client at a time receives every frame produced.

    Frames are produced on the board's sample clock scaled by ``device.rate`` (or as
    fast as the client reads when the rate is infinite) into an output FIFO of
    ``fifo_s`` seconds. When the FIFO is full a paced board drops the frame (its
    sequence number is used up and the next frame carries ``FLAG_OVERFLOW``); an
    unpaced board waits. Link faults come from :attr:`faults`, consulted per frame:
    ``drop_next`` cuts the connection halfway through a frame, ``mute_next`` loses
    frames on the link, ``garbage_next`` corrupts one (bad CRC), ``delay_next`` stalls
    the link, ``stop_answering`` stalls it until ``clear``, ``go_offline`` drops it
    and refuses connections for a while.
    """

    def __init__(
        self,
        device: CneaBoardDevice,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        faults: Faults | None = None,
        name: str = "cnea-data",
        fifo_s: float = 1.0,
    ) -> None:
        super().__init__(device, faults=faults, name=name)
        if not host.startswith("127."):
            raise ValueError(f"emulators bind loopback only; refusing {host!r}")
        self.board = device
        self.fifo_s = fifo_s
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._client: socket.socket | None = None
        self._client_lock = threading.Lock()
        self._fifo: deque[bytearray] = deque()
        self._cond = threading.Condition()
        self.frames_sent = 0
        self.frames_lost_on_link = 0
        self.connections = 0
        self._spawn(self._accept_loop, "accept")
        self._spawn(self._produce_loop, "produce")
        self._spawn(self._send_loop, "send")

    @property
    def fifo_frames(self) -> int:
        """Capacity of the output FIFO, frames (at least 4)."""
        dev = self.board
        return max(4, int(self.fifo_s * dev.sample_rate_hz / dev.samples_per_frame))

    @property
    def connected(self) -> bool:
        return self._client is not None

    # --- threads ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stop.is_set() or self.faults.offline:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            conn.setblocking(False)
            with self._client_lock:
                old, self._client = self._client, conn
                self.connections += 1
            if old is not None:
                _close(old)
            log.debug("%s: data client %s connected", self.name, peer)
            with self._cond:
                self._cond.notify_all()

    def _produce_loop(self) -> None:
        dev = self.board
        t0 = time.monotonic()
        produced_s = 0.0
        was_running = False
        while not self._stop.is_set():
            if not dev.acquiring:
                was_running = False
                dev.acquisition_changed.wait(0.1)
                dev.acquisition_changed.clear()
                continue
            if not was_running:  # a new acquisition: frames left from the last one go
                source = dev.source
                if isinstance(source, LazySource) and not source.built:
                    _ = source.source  # build outside the board's lock: control stays live
                t0, produced_s, was_running = time.monotonic(), 0.0, True
                with self._cond:
                    self._fifo.clear()
            rate = dev.rate
            if math.isfinite(rate):
                ahead = t0 + produced_s / rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
                    continue
            item = dev.produce_frame()
            if item is None:
                continue
            sequence, first, codes, flags = item
            produced_s += codes.shape[0] / dev.sample_rate_hz
            frame = cnea_frames.encode(sequence, first, codes, flags)
            with self._cond:
                if math.isfinite(rate):
                    if len(self._fifo) >= self.fifo_frames:
                        dev.note_overflow()
                        continue
                else:
                    while len(self._fifo) >= self.fifo_frames and not self._stop.is_set():
                        self._cond.wait(0.1)
                self._fifo.append(frame)
                self._cond.notify_all()

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            if self.faults.offline:
                self._drop_client()
                with self._cond:
                    lost = len(self._fifo)
                    self._fifo.clear()
                    self._cond.notify_all()
                self.frames_lost_on_link += lost
                self._stop.wait(0.05)
                continue
            with self._cond:
                if not self._fifo or self._client is None:
                    self._cond.wait(0.1)
                    continue
                frame = self._fifo.popleft()
                self._cond.notify_all()
            client = self._client
            if client is None:
                self.frames_lost_on_link += 1
                continue
            action, delay = self.faults.next_action()
            if delay > 0:
                self._stop.wait(delay)
            if action is Action.DROP:
                log.info("%s: fault: dropping the data connection mid-frame", self.name)
                self._send(client, memoryview(frame)[: len(frame) // 2])
                self._drop_client()
                self.frames_lost_on_link += 1
                continue
            if action is Action.MUTE:
                self.frames_lost_on_link += 1
                continue
            if self.faults.take_garbage():
                frame = cnea_frames.corrupt(frame, seed=self.frames_sent)
            if self._send(client, memoryview(frame)):
                self.frames_sent += 1
            else:
                self.frames_lost_on_link += 1
                self._drop_client(client)

    def _send(self, sock: socket.socket, view: memoryview) -> bool:
        while view:
            if self._stop.is_set():
                return False
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                try:
                    select.select([], [sock], [], 0.1)
                except (OSError, ValueError):
                    return False
                continue
            except OSError:
                return False
            view = view[sent:]
        return True

    def _drop_client(self, which: socket.socket | None = None) -> None:
        with self._client_lock:
            client = self._client
            if client is None or (which is not None and client is not which):
                return
            self._client = None
        _close(client)

    def drop_client(self) -> None:
        """Close the data connection now (the board keeps producing)."""
        self._drop_client()

    def _close_endpoints(self) -> None:
        self._listener.close()
        self._drop_client()
        with self._cond:
            self._cond.notify_all()
        self.board.acquisition_changed.set()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class CneaBoardEmulator:
    """The emulated board on two loopback ports: SCPI control and the frame stream."""

    def __init__(
        self,
        source: SignalSource,
        *,
        seed: int = 1,
        rate: float = 1.0,
        samples_per_frame: int = DEFAULT_SAMPLES_PER_FRAME,
        keep_samples: bool = False,
        fifo_s: float = 1.0,
        amplifier_fault_fraction: float = 0.001,
        host: str = LOOPBACK,
        control_port: int = 0,
        data_port: int = 0,
        name: str = "cnea",
    ) -> None:
        self.device = CneaBoardDevice(
            source,
            seed=seed,
            rate=rate,
            samples_per_frame=samples_per_frame,
            keep_samples=keep_samples,
            amplifier_fault_fraction=amplifier_fault_fraction,
        )
        self.control = TcpLineServer(self.device, host=host, port=control_port, name=f"{name}-ctl")
        try:
            self.data = FrameServer(
                self.device, host=host, port=data_port, name=f"{name}-data", fifo_s=fifo_s
            )
        except BaseException:
            self.control.stop()
            raise

    @property
    def resource(self) -> str:
        """The VISA resource of the control port."""
        return self.control.visa_resource

    @property
    def data_port(self) -> int:
        """The TCP port of the frame stream."""
        return self.data.port

    def stop(self) -> None:
        """Stop both servers (joins every thread); safe to call twice."""
        with self.device.lock:
            self.device.acquiring = False
        self.data.stop()
        self.control.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


BOARD_OPTIONS = (
    "source",
    "playback_file",
    "rate",
    "samples_per_frame",
    "keep_samples",
    "fifo_s",
    "amplifier_fault_fraction",
)
"""Keys of ``lab.settings.options["cnea"]`` the board takes; every other key overrides a
``CultureParams`` field of the emulated culture."""


def make_source(options: dict[str, Any], seed: int) -> SignalSource:
    """The signal source named by lab options: the emulated culture or a playback file."""
    kind = options.get("source", "culture")
    culture_overrides = {k: v for k, v in options.items() if k not in BOARD_OPTIONS}
    if kind == "playback":
        from hil_sim.playback import PlaybackSource

        if culture_overrides:
            raise ValueError(f"cnea options {sorted(culture_overrides)} apply to the culture only")
        path = options.get("playback_file")
        if not path:
            raise ValueError('cnea option source="playback" needs playback_file = "<session.h5>"')
        return PlaybackSource(path, loop=True)
    if kind != "culture":
        raise ValueError(f'cnea option source={kind!r}: use "culture" or "playback"')
    import dataclasses

    from hil_sim.culture import Culture, CultureParams
    from hil_sim.electrodes import N_CHANNELS, ElectrodeArray

    known = {f.name for f in dataclasses.fields(CultureParams)}
    unknown = sorted(set(culture_overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown cnea option(s) {unknown}; board options are {list(BOARD_OPTIONS)}, "
            f"culture parameters are {sorted(known)}"
        )
    params = CultureParams(**{"seed": seed, **culture_overrides})
    return LazySource(
        lambda: ElectrodeArray(Culture(params)), N_CHANNELS, float(params.sample_rate_hz)
    )


def build_cnea(lab: Any) -> None:
    """Start the emulated CNEA board in ``lab`` as instrument ``"cnea"`` (driver ``cnea_board``).

    Options (``lab.settings.options["cnea"]``): ``source`` ("culture" or "playback"),
    ``playback_file``, ``rate`` (multiple of real time; "max" for as fast as the host
    reads), ``samples_per_frame``, ``keep_samples``, ``fifo_s``,
    ``amplifier_fault_fraction`` (broken amplifiers, 0.1 % by default), and any
    ``CultureParams`` field. Seeded from ``lab.settings.seed``.
    """
    from hil_sim.lab import EmulatedInstrument

    options = dict(lab.settings.options.get("cnea", {}))
    rate = options.get("rate", 1.0)
    rate = math.inf if str(rate).lower() in ("max", "inf", "maximum") else float(rate)
    emulator = CneaBoardEmulator(
        make_source(options, lab.settings.seed),
        seed=lab.settings.seed,
        rate=rate,
        samples_per_frame=int(options.get("samples_per_frame", DEFAULT_SAMPLES_PER_FRAME)),
        keep_samples=bool(options.get("keep_samples", False)),
        fifo_s=float(options.get("fifo_s", 1.0)),
        amplifier_fault_fraction=float(options.get("amplifier_fault_fraction", 0.001)),
    )
    lab.on_stop(emulator.stop)
    lab.add(
        EmulatedInstrument(
            name="cnea",
            driver="cnea_board",
            resource=emulator.resource,
            servers=[emulator.control],
            data_port=emulator.data_port,
            # the culture is built on first use (seconds; more on a loaded machine) and the
            # command that needs it answers only then
            timeout_s=30.0,
            model=emulator,
        )
    )
