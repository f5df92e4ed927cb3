"""Driver of the 4096-channel CNEA readout board (docs/cnea_protocol.md).

Two wires: SCPI control over a VISA socket (:class:`CneaBoard`), and the binary
frame stream on a second TCP port (:class:`FrameStream`), which yields decoded
frames and typed, counted events — sequence gaps, corrupt frames, stalls — and
raises :class:`~drivers.errors.ConnectionLost` when the data connection drops
(``reconnect()`` resumes; the frames missed show up as a gap).

Safety: electroporation amplitude and width, holding currents and voltages are
checked against :class:`CneaLimits` before anything is sent; :meth:`CneaBoard.close`
stops acquisition, switches the calibration source off and returns every channel
to current clamp at 0 A.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Self

import numpy as np

from drivers import cnea_frames
from drivers.cnea_frames import (
    CRC_BYTES,
    FLAG_OVERFLOW,
    HEADER_BYTES,
    SEQUENCE_MODULUS,
    BadCrc,
    Frame,
    FrameError,
    FrameHeader,
)
from drivers.errors import (
    ConnectionLost,
    DataIntegrityError,
    DriverError,
    MalformedReply,
    OutOfRangeError,
    SafetyLimitError,
)
from drivers.scpi import (
    Control,
    Measurement,
    SCPIInstrument,
    parse_bool,
    parse_float,
    parse_int,
)
from drivers.transport import Transport
from drivers.validators import in_range, int_in_range, one_of

log = logging.getLogger(__name__)

N_ROWS = 64
N_COLS = 64
GAINS = (1, 2, 4)
NOMINAL_LSB_CURRENT_CLAMP_V = 5e-6
"""Nominal code step in current clamp at gain 1, V (±163.8 mV full scale)."""
NOMINAL_LSB_VOLTAGE_CLAMP_A = 1e-12
"""Nominal code step in voltage clamp at gain 1, A (±32.8 nA full scale)."""
CURRENT_CLAMP = 0
VOLTAGE_CLAMP = 1


@dataclass(frozen=True)
class CneaLimits:
    """Safety limits the driver enforces before a command leaves the computer (SI units)."""

    max_electroporation_v: float = 3.0
    """Largest electroporation pulse amplitude, V."""
    max_electroporation_width_s: float = 5e-3
    """Longest electroporation pulse, s."""
    min_electroporation_width_s: float = 1e-6
    max_hold_current_a: float = 1e-9
    """Largest |injected current| in current clamp, A."""
    max_hold_voltage_v: float = 0.12
    """Largest |holding voltage| in voltage clamp, V."""


@dataclass(frozen=True)
class FrameStatus:
    """What ``:STATus:FRAMes?`` reports."""

    produced: int
    """Frames produced since power-on."""
    overflowed: int
    """Frames the board dropped because its output FIFO was full (host too slow)."""
    next_sequence: int
    next_sample: int


def format_channel_list(channels: Iterable[int], n_channels: int) -> str:
    """Channel indices → ``(@0:63,100)`` (runs compressed); refuses indices outside the array."""
    chans = np.unique(
        np.asarray(
            list(channels) if not isinstance(channels, np.ndarray) else channels, dtype=np.int64
        )
    )
    if chans.size == 0:
        raise OutOfRangeError("empty channel list; nothing was sent")
    if chans[0] < 0 or chans[-1] >= n_channels:
        raise OutOfRangeError(
            f"channels must be within 0..{n_channels - 1}, got {chans[0]}..{chans[-1]}; "
            "nothing was sent"
        )
    breaks = np.flatnonzero(np.diff(chans) != 1)
    starts = np.concatenate([[chans[0]], chans[breaks + 1]])
    ends = np.concatenate([chans[breaks], [chans[-1]]])
    parts = [f"{a}" if a == b else f"{a}:{b}" for a, b in zip(starts, ends, strict=True)]
    return "(@" + ",".join(parts) + ")"


def region_channels(
    rows: slice | Sequence[int],
    cols: slice | Sequence[int],
    n_rows: int = N_ROWS,
    n_cols: int = N_COLS,
) -> np.ndarray:
    """Channels (row * n_cols + col) of a rectangular region of the grid."""
    r = np.arange(n_rows)[rows] if isinstance(rows, slice) else np.asarray(rows)
    c = np.arange(n_cols)[cols] if isinstance(cols, slice) else np.asarray(cols)
    if r.size == 0 or c.size == 0:
        raise OutOfRangeError("empty region; nothing was sent")
    if r.min() < 0 or r.max() >= n_rows or c.min() < 0 or c.max() >= n_cols:
        raise OutOfRangeError(f"region outside the {n_rows} x {n_cols} grid; nothing was sent")
    return (r[:, None] * n_cols + c[None, :]).ravel()


def _parse_run_state(reply: str, command: str = "", resource: str | None = None) -> bool:
    text = reply.strip().upper()
    if text in ("RUN", "IDLE"):
        return text == "RUN"
    raise MalformedReply("expected RUN or IDLE", reply=reply, command=command, resource=resource)


def _parse_rate(reply: str, command: str = "", resource: str | None = None) -> float:
    if reply.strip().upper() == "MAX":
        return math.inf
    return parse_float(reply, command, resource)


class CneaBoard(SCPIInstrument):
    """The CNEA readout board: acquisition settings, per-channel clamp modes and stimulation,
    calibration source, nominal calibration, electrode geometry, and the frame stream."""

    sample_rate_hz = Control(
        ":ACQ:SRAT?",
        ":ACQ:SRAT {}",
        "Sample rate per channel, Hz (10 kHz on the CNEA-4096; also 1/2, 1/4, 1/5, 1/10 of it).",
        validator=in_range(100.0, 100_000.0, "Hz"),
        units="Hz",
    )
    samples_per_frame = Control(
        ":ACQ:FRAM:SAMP?",
        ":ACQ:FRAM:SAMP {}",
        "Samples per channel in each data frame (1-256; 16 by default: 128 KiB frames).",
        validator=int_in_range(1, 256),
        parse=parse_int,
    )
    gain = Control(
        ":SENS:GAIN?",
        ":SENS:GAIN {}",
        "Amplifier gain 1, 2 or 4: code step 5, 2.5, 1.25 µV (current clamp), 1, 0.5, 0.25 pA "
        "(voltage clamp).",
        validator=one_of(GAINS),
        parse=parse_int,
    )
    channel_count = Measurement(":ACQ:CHAN?", "Number of channels in every frame.", parse=parse_int)
    acquiring = Measurement(
        ":ACQ:STAT?", "Whether the board is streaming frames.", parse=_parse_run_state
    )
    calibration_source_enabled = Control(
        ":CAL:SOUR:STAT?",
        ":CAL:SOUR:STAT {}",
        "Calibration source connected to every amplifier input (instead of the electrodes).",
        parse=parse_bool,
        validator=one_of([True, False]),
    )
    calibration_source_level_v = Control(
        ":CAL:SOUR:LEV?",
        ":CAL:SOUR:LEV {}",
        "Calibration reference level, V (±0.1 V; the high level of the square wave).",
        validator=in_range(-0.1, 0.1, "V"),
        units="V",
    )
    calibration_source_function = Control(
        ":CAL:SOUR:FUNC?",
        ":CAL:SOUR:FUNC {}",
        'Calibration waveform: "dc" or "square" (between 0 V and the level).',
        values={"dc": "DC", "square": "SQUare"},
    )
    calibration_source_frequency_hz = Control(
        ":CAL:SOUR:FREQ?",
        ":CAL:SOUR:FREQ {}",
        "Square-wave frequency of the calibration source, Hz (0.1-1000).",
        validator=in_range(0.1, 1000.0, "Hz"),
        units="Hz",
    )
    calibration_resistance_ohm = Measurement(
        ":CAL:SOUR:RES?",
        "Resistor through which voltage-clamp channels see the calibration voltage, Ω.",
        units="ohm",
    )
    electroporation_amplitude_v = Measurement(
        ":ELEC:AMPL?", "Amplitude of the next electroporation pulse, V.", units="V"
    )
    electroporation_width_s = Measurement(
        ":ELEC:WIDT?", "Width of the next electroporation pulse, s.", units="s"
    )

    def __init__(
        self,
        transport: Transport,
        *,
        data_port: int = 0,
        limits: CneaLimits | None = None,
        check_errors: bool = True,
    ) -> None:
        super().__init__(transport, check_errors=check_errors)
        self.data_port = data_port
        self.limits = limits or CneaLimits()
        self._n_channels: int | None = None
        self._streams: list[FrameStream] = []

    @classmethod
    def open(
        cls,
        address: str,
        *,
        timeout_s: float = 5.0,
        data_port: int = 0,
        limits: CneaLimits | None = None,
        **kwargs: Any,
    ) -> Self:
        """Open the control port at ``address`` (``TCPIP::host::port::SOCKET``); frames come
        from ``data_port`` on the same host."""
        return super().open(
            address, timeout_s=timeout_s, data_port=data_port, limits=limits, **kwargs
        )

    # --- helpers ---------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        """Channel count (asked once)."""
        if self._n_channels is None:
            self._n_channels = int(self.channel_count)
        return self._n_channels

    def _list(self, channels: Iterable[int] | None) -> str:
        return format_channel_list(
            np.arange(self.n_channels) if channels is None else channels, self.n_channels
        )

    def query_block(self, command: str) -> bytes:
        """Send a query answered by an IEEE 488.2 definite-length block; its bytes."""
        with self.lock:
            if self.transport.stale:
                self.resync()
            self.transport.write(command)
            return self._read_block(command)

    def _read_block(self, command: str, first: bytes = b"") -> bytes:
        t = self.transport
        head = first + t.read_bytes(2 - len(first))
        if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
            raise MalformedReply(
                "expected a definite-length block #<n><length>",
                reply=head,
                command=command,
                resource=self.address,
            )
        digits = t.read_bytes(int(head[1:2]))
        if not digits.isdigit():
            raise MalformedReply(
                "bad block length", reply=head + digits, command=command, resource=self.address
            )
        data = t.read_bytes(int(digits))
        end = t.read_bytes(len(t.read_termination)) if t.read_termination else b""
        if end != t.read_termination.encode():
            raise MalformedReply(
                "block not followed by the termination",
                reply=end,
                command=command,
                resource=self.address,
            )
        return data

    def _float_block(self, command: str, shape: tuple[int, ...]) -> np.ndarray:
        data = self.query_block(command)
        expected = int(np.prod(shape)) * 8
        if len(data) != expected:
            raise MalformedReply(
                f"block of {len(data)} bytes, expected {expected} (float64 x {shape})",
                reply=data[:32],
                command=command,
                resource=self.address,
            )
        return np.frombuffer(data, dtype="<f8").reshape(shape).astype(np.float64)

    # --- acquisition ---------------------------------------------------------------------
    def start(self, stream: FrameStream | None = None) -> int:
        """Start streaming frames on the data port; returns the first sample index.

        With ``stream`` (from :meth:`open_stream`), the stream is told which sequence
        number and sample index come first, so frames lost before the first one
        received still show up as a gap.
        """
        with self.lock:
            status = self.frame_status()
            if stream is not None:
                stream.expect(status.next_sequence, status.next_sample)
            self.write(":ACQ:STAR")
        return status.next_sample

    def stop(self) -> None:
        """Stop streaming (frames already in the board's FIFO are still delivered)."""
        self.write(":ACQ:STOP")

    def frame_status(self) -> FrameStatus:
        """Frames produced and overflowed, next sequence number and sample index."""
        reply = self.query(":STAT:FRAM?")
        try:
            produced, overflowed, seq, sample = (int(x) for x in reply.split(","))
        except ValueError:
            raise MalformedReply(
                "expected 4 integers", reply=reply, command=":STAT:FRAM?", resource=self.address
            ) from None
        return FrameStatus(produced, overflowed, seq, sample)

    def set_next_sequence(self, sequence: int) -> None:
        """Diagnostic: preset the next frame's sequence number (to exercise the wrap)."""
        value = int_in_range(0, SEQUENCE_MODULUS - 1)(sequence, "sequence")
        self.write(f":DIAG:SEQ {value}")

    def open_stream(
        self, *, stall_timeout_s: float = 1.0, connect_timeout_s: float = 3.0
    ) -> FrameStream:
        """Connect to the frame stream (the board must have a ``data_port``)."""
        if not self.data_port:
            raise DriverError(
                "no data port configured for this board (data_port in lab.toml)",
                resource=self.address,
            )
        stream = FrameStream(
            data_host(self.address),
            self.data_port,
            stall_timeout_s=stall_timeout_s,
            connect_timeout_s=connect_timeout_s,
            resource=self.address,
        )
        stream.connect()
        # streams closed since (finished recordings) are forgotten: each holds an 8 MiB buffer
        self._streams = [s for s in self._streams if s.connected]
        self._streams.append(stream)
        return stream

    # --- channels ----------------------------------------------------------------------------
    def set_current_clamp(
        self, channels: Iterable[int] | None = None, current_a: float = 0.0
    ) -> None:
        """Current clamp on ``channels`` (all when None), injecting ``current_a`` A."""
        current = float(current_a)
        if not math.isfinite(current) or abs(current) > self.limits.max_hold_current_a:
            raise SafetyLimitError(
                f"injected current {current:g} A exceeds "
                f"±{self.limits.max_hold_current_a:g} A; nothing was sent",
                resource=self.address,
            )
        self.write(f":SOUR:CURR {current:.6g},{self._list(channels)}")

    def set_voltage_clamp(
        self, channels: Iterable[int] | None = None, voltage_v: float = -0.07
    ) -> None:
        """Voltage clamp on ``channels`` (all when None), holding ``voltage_v`` V."""
        voltage = float(voltage_v)
        if not math.isfinite(voltage) or abs(voltage) > self.limits.max_hold_voltage_v:
            raise SafetyLimitError(
                f"holding voltage {voltage:g} V exceeds "
                f"±{self.limits.max_hold_voltage_v:g} V; nothing was sent",
                resource=self.address,
            )
        self.write(f":SOUR:VOLT {voltage:.6g},{self._list(channels)}")

    def modes(self, channels: Iterable[int] | None = None) -> np.ndarray:
        """(n,) uint8 mode per channel: 0 current clamp, 1 voltage clamp."""
        command = f":CHAN:MODE? {self._list(channels)}"
        reply = self.query(command)
        tokens = [t.strip().upper() for t in reply.split(",")]
        try:
            return np.array([("CCL", "VCL").index(t[:3]) for t in tokens], dtype=np.uint8)
        except ValueError:
            raise MalformedReply(
                "expected CCL/VCL per channel",
                reply=reply[:80],
                command=command,
                resource=self.address,
            ) from None

    def levels(self, channels: Iterable[int] | None = None) -> np.ndarray:
        """(n,) holding level per channel: A (current clamp) or V (voltage clamp)."""
        command = f":SOUR:LEV? {self._list(channels)}"
        return np.asarray(self.query_floats(command))

    def electroporate(
        self,
        channels: Iterable[int] | None = None,
        amplitude_v: float = 1.5,
        width_s: float = 200e-6,
    ) -> None:
        """One electroporation pulse of ``amplitude_v`` V for ``width_s`` s on ``channels``
        (all when None). Limits are checked before anything is sent."""
        amplitude, width = float(amplitude_v), float(width_s)
        lim = self.limits
        if not math.isfinite(amplitude) or not 0 < amplitude <= lim.max_electroporation_v:
            raise SafetyLimitError(
                f"electroporation amplitude {amplitude:g} V outside "
                f"(0, {lim.max_electroporation_v:g}] V; nothing was sent",
                resource=self.address,
            )
        if (
            not math.isfinite(width)
            or not lim.min_electroporation_width_s <= width <= lim.max_electroporation_width_s
        ):
            raise SafetyLimitError(
                f"electroporation width {width:g} s outside [{lim.min_electroporation_width_s:g}, "
                f"{lim.max_electroporation_width_s:g}] s; nothing was sent",
                resource=self.address,
            )
        targets = self._list(channels)
        with self.lock:
            self.write(f":ELEC:AMPL {amplitude:.6g}", check=False)
            self.write(f":ELEC:WIDT {width:.6g}", check=False)
            self.write(f":ELEC {targets}", check=False)
            self.check_errors(f":ELEC {targets}")

    def electroporate_region(
        self,
        rows: slice | Sequence[int],
        cols: slice | Sequence[int],
        amplitude_v: float = 1.5,
        width_s: float = 200e-6,
    ) -> np.ndarray:
        """Electroporate a rectangle of the 64 x 64 grid; returns the channels pulsed."""
        channels = region_channels(rows, cols)
        self.electroporate(channels, amplitude_v, width_s)
        return channels

    def access(self) -> np.ndarray:
        """(C,) measured electrical access of each electrode to a cell, 0..1."""
        return self._float_block(":MEAS:ACC?", (self.n_channels,))

    # --- calibration and geometry --------------------------------------------------------
    def nominal_gain(self) -> np.ndarray:
        """(C,) nominal code step per channel: V/code (current clamp) or A/code (voltage clamp)."""
        return self._float_block(":CAL:GAIN?", (self.n_channels,))

    def nominal_offset(self) -> np.ndarray:
        """(C,) nominal value at code 0 per channel (V or A)."""
        return self._float_block(":CAL:OFFS?", (self.n_channels,))

    def positions(self) -> np.ndarray:
        """(C, 2) electrode x, y, m."""
        return self._float_block(":ARR:POS?", (self.n_channels, 2))

    def temperature_c(self) -> float | None:
        """Chip temperature, °C (``:SYSTem:TEMPerature?``), or None from a board that does not
        know the query. ``*OPC?`` follows it in a separate message, so such a board answers
        only ``1`` (queueing -113) and costs no timeout."""
        with self.lock:
            if self.transport.stale:
                self.resync()
            self.transport.write(":SYST:TEMP?")
            self.transport.write("*OPC?")
            first = self.transport.read().strip()
            errors = self.read_errors() if first in ("1", "+1") else []
            if errors:
                if errors[0][0] != -113:
                    code, message = errors[0]
                    raise DriverError(
                        f":SYST:TEMP? failed: {code}, {message}", resource=self.address
                    )
                return None
            opc = self.transport.read().strip()
        if opc not in ("1", "+1"):
            raise MalformedReply(
                "*OPC? after :SYST:TEMP? did not answer 1", reply=opc, resource=self.address
            )
        return parse_float(first, ":SYST:TEMP?", self.address)

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the data, for the recording's ``board_settings``."""
        modes = self.modes()
        levels = self.levels()
        return {
            "identity": str(self.identify()),
            "sample_rate_hz": self.sample_rate_hz,
            "samples_per_frame": self.samples_per_frame,
            "gain": self.gain,
            "channel_count": self.n_channels,
            "channels_current_clamp": int(np.sum(modes == CURRENT_CLAMP)),
            "channels_voltage_clamp": int(np.sum(modes == VOLTAGE_CLAMP)),
            "distinct_levels": sorted({float(v) for v in levels}),
            "calibration_source": {
                "enabled": self.calibration_source_enabled,
                "level_v": self.calibration_source_level_v,
                "function": self.calibration_source_function,
                "frequency_hz": self.calibration_source_frequency_hz,
            },
            "electroporation": {
                "amplitude_v": self.electroporation_amplitude_v,
                "width_s": self.electroporation_width_s,
            },
        }

    # --- emulated boards only ---------------------------------------------------------------
    def truth(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """Ground truth from an emulated board (``:SIMulation:TRUTh?``), or None from a real
        one (which answers -113 Undefined header)."""
        with self.lock:
            if self.transport.stale:
                self.resync()
            self.transport.write(":SIM:TRUT?")
            self.transport.write("*OPC?")
            first = self.transport.read_bytes(1)
            if first == b"#":
                data = self._read_block(":SIM:TRUT?", first)
                if self.transport.read().strip() not in ("1", "+1"):
                    raise MalformedReply(
                        "*OPC? after the truth block did not answer 1",
                        command="*OPC?",
                        resource=self.address,
                    )
            else:
                rest = self.transport.read()
                if (first + rest.encode()).strip() not in (b"1", b"+1"):
                    raise MalformedReply(
                        "expected a block or *OPC? = 1",
                        reply=first + rest.encode(),
                        command=":SIM:TRUT?",
                        resource=self.address,
                    )
                errors = self.read_errors()
                if errors and errors[0][0] != -113:
                    code, message = errors[0]
                    raise DriverError(
                        f":SIM:TRUT? failed: {code}, {message}", resource=self.address
                    )
                return None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        attrs = json.loads(str(arrays.pop("attrs_json", np.array("{}"))))
        return arrays, attrs

    def set_emulation_rate(self, rate: float) -> None:
        """Emulated boards: stream at ``rate`` x real time (``math.inf``: as fast as read)."""
        if math.isinf(rate):
            self.write(":SIM:RATE MAX")
        else:
            value = in_range(0.01, 1e6)(rate, "rate")
            self.write(f":SIM:RATE {value:.6g}")

    def emulation_rate(self) -> float:
        """Emulated boards: the streaming speed, multiple of real time (inf = as fast as read)."""
        return _parse_rate(self.query(":SIM:RATE?"), ":SIM:RATE?", self.address)

    # --- lifetime -------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Stop acquisition, calibration source off, every channel current clamp at 0 A."""
        with self.lock:
            self.write(":ACQ:STOP", check=False)
            self.write(":CAL:SOUR:STAT 0", check=False)
            self.write(f":SOUR:CURR 0,{self._list(None)}", check=False)
            self.check_errors("safe state")

    def close(self) -> None:
        """Leave the board safe (best effort when the wire is gone), close streams and wire."""
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        if self.transport.is_open:
            try:
                self.safe_state()
            except DriverError as exc:
                log.warning(
                    "%s: could not leave the board in its safe state: %s", self.address, exc
                )
        super().close()


def data_host(resource: str) -> str:
    """The host of a ``TCPIP[n]::host::port::SOCKET`` resource (where the frames come from)."""
    match = re.match(r"^TCPIP\d*::([^:]+)::", resource, re.IGNORECASE)
    if not match:
        raise DriverError(
            f"{resource!r}: the frame stream needs a TCPIP::host::port::SOCKET control resource",
            resource=resource,
        )
    return match.group(1)


# --- the frame stream -----------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceGap:
    """Frames missing before the next good frame: samples [first_sample, end_sample) are lost."""

    expected_sequence: int
    sequence: int
    frames_lost: int
    first_sample: int
    end_sample: int
    overflow: bool = False
    """The board says its FIFO overflowed (the host did not read fast enough)."""
    after_reconnect: bool = False
    """The data connection dropped and was reopened in between."""
    after_corruption: bool = False
    """Corrupt frames were discarded in between."""

    @property
    def reason(self) -> str:
        """A short label for the gap table."""
        if self.after_reconnect:
            return "connection lost"
        if self.after_corruption:
            return "corrupt frame"
        if self.overflow:
            return "board overflow"
        return "frames lost"


@dataclass(frozen=True)
class CorruptFrame:
    """A frame failed its checks and was discarded (``error`` says how)."""

    error: FrameError
    bytes_skipped: int


@dataclass(frozen=True)
class Stall:
    """No bytes for ``silent_s`` seconds (reported every ``stall_timeout_s`` of silence)."""

    silent_s: float


class StreamStalled(DataIntegrityError):
    """No frames arrived for longer than allowed while the board should be streaming.
    Check the data cable and that nothing else stopped the board."""


@dataclass(frozen=True)
class StreamRestart:
    """The sample index went backwards: the board restarted its acquisition."""

    expected_sample: int
    first_sample: int


StreamEvent = SequenceGap | CorruptFrame | Stall | StreamRestart


@dataclass
class StreamCounters:
    """Running totals of one frame stream."""

    frames_received: int = 0
    frames_lost: int = 0
    """Frames missing from the sequence (gaps), whatever the cause."""
    samples_lost: int = 0
    gaps: int = 0
    crc_errors: int = 0
    format_errors: int = 0
    """Bad magic, version or header (stream out of step)."""
    truncated_frames: int = 0
    stalls: int = 0
    reconnects: int = 0
    restarts: int = 0
    stale_frames: int = 0
    """Frames from before the current acquisition, dropped."""
    bytes_received: int = 0
    bytes_discarded: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Expect:
    sequence: int
    sample: int
    corruption: bool = False
    reconnect: bool = False
    primed: bool = False
    """Set by expect() before a start: earlier frames still in flight are stale, not a restart."""


_AGAIN = object()
"""Returned by FrameStream._parse_one for a dropped stale frame: parse on, do not read."""


class FrameStream:
    """Decoded frames from the board's data port; iterate to get :class:`Frame` or an event.

    Iteration yields frames in order, a :class:`SequenceGap` before a frame that
    follows missing ones, :class:`CorruptFrame` for each discarded frame, and
    :class:`Stall` after every ``stall_timeout_s`` without data. A dropped connection
    raises :class:`ConnectionLost`; call :meth:`reconnect` and keep iterating.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        stall_timeout_s: float = 1.0,
        connect_timeout_s: float = 3.0,
        buffer_bytes: int = 8 << 20,
        resource: str | None = None,
    ) -> None:
        if stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be > 0 s")
        self.host, self.port = host, port
        self.stall_timeout_s = stall_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.resource = resource or f"{host}:{port}"
        self.counters = StreamCounters()
        self._sock: socket.socket | None = None
        self._buf = bytearray(buffer_bytes)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._silent_s = 0.0
        self._expect: _Expect | None = None
        self._pending: deque[Frame | StreamEvent] = deque()

    # --- connection ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Open the data connection; :class:`ConnectionLost` when it cannot."""
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise ConnectionLost(
                f"cannot connect to the frame stream at {self.host}:{self.port}: {exc}. "
                "Check data_port and that the board is on",
                resource=self.resource,
            ) from exc
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.settimeout(self.stall_timeout_s)
        self._sock = sock

    def close(self) -> None:
        """Close the data connection; safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def reconnect(self, attempts: int = 3, delay_s: float = 0.2) -> None:
        """Reopen the data connection (bounded retries); frames missed meanwhile become a gap."""
        self.close()
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                self.connect()
                self.counters.reconnects += 1
                if self._expect is not None:
                    self._expect.reconnect = True
                log.info("%s: frame stream reconnected (attempt %d)", self.resource, attempt)
                return
            except ConnectionLost as exc:
                last = exc
                if attempt < attempts:
                    time.sleep(delay_s)
        raise ConnectionLost(
            f"frame stream: could not reconnect after {attempts} attempts: {last}",
            resource=self.resource,
        )

    def restart_sequence(self) -> None:
        """Forget the expected sequence: the next frame is taken as the first."""
        self._expect = None
        self._pending.clear()

    def expect(self, sequence: int, first_sample: int) -> None:
        """The next frame should carry ``sequence`` and start at ``first_sample``."""
        self._pending.clear()
        self._expect = _Expect(sequence % SEQUENCE_MODULUS, first_sample, primed=True)

    # --- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame | StreamEvent]:
        return self

    def __next__(self) -> Frame | StreamEvent:
        while True:
            if self._pending:
                return self._pending.popleft()
            item = self._parse_one()
            if item is _AGAIN:
                continue
            if item is not None:
                return item  # type: ignore[return-value]
            stall = self._fill()
            if stall is not None:
                return stall

    def _fill(self) -> Stall | None:
        sock = self._sock
        if sock is None:
            raise ConnectionLost(
                "frame stream not connected; call reconnect()", resource=self.resource
            )
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf) or self._start > len(self._buf) // 2:
            remaining = self._end - self._start
            self._buf[:remaining] = self._view[self._start : self._end]
            self._start, self._end = 0, remaining
        try:
            n = sock.recv_into(self._view[self._end :])
        except TimeoutError:
            self._silent_s += self.stall_timeout_s
            self.counters.stalls += 1
            return Stall(self._silent_s)
        except OSError as exc:
            self._lost(f"data connection failed: {exc}")
        if n == 0:
            self._lost("the board closed the data connection")
        self._silent_s = 0.0
        self._end += n
        self.counters.bytes_received += n
        return None

    def _lost(self, why: str) -> NoReturn:
        partial = self._end - self._start
        if partial:
            self.counters.truncated_frames += 1
            self.counters.bytes_discarded += partial
        self._start = self._end = 0
        self.close()
        raise ConnectionLost(
            f"{why}; reconnect() to resume (missed frames become a gap)", resource=self.resource
        )

    def _ensure_room(self, frame_bytes: int) -> None:
        if frame_bytes > len(self._buf):
            grown = bytearray(max(frame_bytes * 2, len(self._buf)))
            grown[: self._end - self._start] = self._view[self._start : self._end]
            self._end -= self._start
            self._start = 0
            self._buf, self._view = grown, memoryview(grown)

    def _resync(self, error: FrameError) -> CorruptFrame:
        """Skip to the next ``CNEA`` after the current position."""
        index = self._buf.find(cnea_frames.MAGIC, self._start + 1, self._end)
        new_start = (
            index if index >= 0 else max(self._start, self._end - (len(cnea_frames.MAGIC) - 1))
        )
        skipped = new_start - self._start
        self._start = new_start
        self.counters.bytes_discarded += skipped
        if self._expect is not None:
            self._expect.corruption = True
        return CorruptFrame(error, skipped)

    def _parse_one(self) -> Frame | StreamEvent | object | None:
        start, end = self._start, self._end
        if end - start < HEADER_BYTES:
            return None
        try:
            header = cnea_frames.parse_header(self._buf, start)
        except FrameError as exc:
            self.counters.format_errors += 1
            return self._resync(exc)
        size = header.frame_bytes
        if end - start < size:
            self._ensure_room(size)
            return None
        body_end = start + HEADER_BYTES + header.payload_bytes
        sent = int.from_bytes(self._view[body_end : body_end + CRC_BYTES], "little")
        if sent != cnea_frames.crc32(self._view[start:body_end]):
            self.counters.crc_errors += 1
            error = BadCrc(
                f"frame {header.sequence} (sample {header.first_sample}): "
                "CRC32 mismatch, discarded",
                resource=self.resource,
            )
            following = start + size
            if end - following >= 4 and self._buf[following : following + 4] != cnea_frames.MAGIC:
                return self._resync(error)  # the header itself was damaged: find the next frame
            self._start = following
            self.counters.bytes_discarded += size
            if self._expect is not None:
                self._expect.corruption = True
            return CorruptFrame(error, size)
        samples = (
            np.frombuffer(
                self._buf, dtype="<i2", count=header.payload_bytes // 2, offset=start + HEADER_BYTES
            )
            .reshape(header.samples_per_frame, header.channel_count)
            .copy()
        )
        self._start = start + size
        event = self._check_sequence(header)
        if event is False:
            return _AGAIN
        self.counters.frames_received += 1
        frame = Frame(header, samples)
        if event is None:
            return frame
        self._pending.append(frame)
        return event

    def _check_sequence(self, header: FrameHeader) -> StreamEvent | bool | None:
        """The event this frame implies, None, or False for a stale frame to drop."""
        expect = self._expect
        if expect is not None and expect.primed and header.first_sample < expect.sample:
            self.counters.stale_frames += 1  # from before this acquisition started
            return False
        self._expect = _Expect((header.sequence + 1) % SEQUENCE_MODULUS, header.end_sample)
        if expect is None:
            return None
        if header.first_sample < expect.sample:
            self.counters.restarts += 1
            return StreamRestart(expect.sample, header.first_sample)
        lost = (header.sequence - expect.sequence) % SEQUENCE_MODULUS
        if lost == 0 and header.first_sample == expect.sample:
            return None
        if lost == 0:  # sample index jumped with no sequence gap: count frames from samples
            lost = -(-(header.first_sample - expect.sample) // header.samples_per_frame)
        self.counters.frames_lost += lost
        self.counters.samples_lost += header.first_sample - expect.sample
        self.counters.gaps += 1
        return SequenceGap(
            expected_sequence=expect.sequence,
            sequence=header.sequence,
            frames_lost=lost,
            first_sample=expect.sample,
            end_sample=header.first_sample,
            overflow=bool(header.flags & FLAG_OVERFLOW),
            after_reconnect=expect.reconnect,
            after_corruption=expect.corruption,
        )

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "CneaBoard",
    "CneaLimits",
    "CorruptFrame",
    "FrameStatus",
    "FrameStream",
    "SequenceGap",
    "Stall",
    "StreamCounters",
    "StreamEvent",
    "StreamRestart",
    "StreamStalled",
    "data_host",
    "format_channel_list",
    "region_channels",
]
