"""CNEA board data frames: the binary stream on the board's data port (docs/cnea_protocol.md).

A frame is a little-endian header, an int16 payload laid out time-major —
shape (samples_per_frame, channel_count), C order — and a CRC32 (zlib/IEEE
802.3) of header + payload::

    offset size field
         0    4 magic              b"CNEA"
         4    2 version            uint16, 1
         6    2 header_bytes       uint16, 28 (payload starts here)
         8    4 sequence           uint32, +1 per frame produced, wraps 2**32 - 1 -> 0
        12    8 first_sample       uint64, board sample index of payload row 0
        20    2 channel_count      uint16
        22    2 samples_per_frame  uint16
        24    4 flags              uint32 (FLAG_*)
        28    n payload            int16[samples_per_frame][channel_count]
      28+n    4 crc32              uint32 of bytes [0, 28+n)

Pure functions only: no sockets here. The stream reader is in :mod:`drivers.cnea_board`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from drivers.errors import DataIntegrityError

MAGIC = b"CNEA"
VERSION = 1
HEADER = struct.Struct("<4sHHIQHHI")
HEADER_BYTES = HEADER.size  # 28
CRC = struct.Struct("<I")
CRC_BYTES = CRC.size
SEQUENCE_MODULUS = 1 << 32
"""Sequence numbers count modulo this (uint32): 0xFFFFFFFF is followed by 0."""
MAX_CHANNELS = 8192
MAX_SAMPLES_PER_FRAME = 4096
MAX_PAYLOAD_BYTES = 32 << 20
"""A header announcing more than this is treated as damaged (the board never sends it)."""

FLAG_CALIBRATION = 1 << 0
"""The calibration source fed the amplifier inputs during this frame."""
FLAG_STIMULUS = 1 << 1
"""A stimulus (electroporation pulse, mode or level change) took effect at row 0."""
FLAG_OVERFLOW = 1 << 2
"""The board's output FIFO overflowed just before this frame: the frames in the
sequence gap were never sent (the host was not reading fast enough)."""


class FrameError(DataIntegrityError):
    """A frame that cannot be used: check the data link (cable, switch) and the firmware."""


class TruncatedFrame(FrameError):
    """Fewer bytes than the header announces (the connection dropped mid-frame)."""


class BadMagic(FrameError):
    """The bytes at a frame boundary are not ``CNEA``: the stream is out of step."""


class UnsupportedVersion(FrameError):
    """A frame version this driver does not know: update the driver or the firmware."""


class BadHeader(FrameError):
    """A header with impossible sizes (zero channels, oversized payload)."""


class BadCrc(FrameError):
    """The CRC32 does not match the header and payload: bits were damaged in transit."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fixed fields of one frame."""

    sequence: int
    first_sample: int
    channel_count: int
    samples_per_frame: int
    flags: int = 0
    version: int = VERSION
    header_bytes: int = HEADER_BYTES

    @property
    def payload_bytes(self) -> int:
        """Bytes of int16 samples that follow the header."""
        return 2 * self.channel_count * self.samples_per_frame

    @property
    def frame_bytes(self) -> int:
        """Bytes of the whole frame: header, payload, CRC."""
        return self.header_bytes + self.payload_bytes + CRC_BYTES

    @property
    def end_sample(self) -> int:
        """Board sample index just after the last row of this frame."""
        return self.first_sample + self.samples_per_frame


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded, CRC-checked frame: header plus samples (samples_per_frame, channel_count)."""

    header: FrameHeader
    samples: np.ndarray

    @property
    def sequence(self) -> int:
        return self.header.sequence

    @property
    def first_sample(self) -> int:
        return self.header.first_sample

    @property
    def end_sample(self) -> int:
        return self.header.end_sample


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    """The header at ``data[offset:]``; raises a :class:`FrameError` subclass when unusable."""
    if len(data) - offset < HEADER_BYTES:
        raise TruncatedFrame(f"{len(data) - offset} bytes, a header needs {HEADER_BYTES}")
    magic, version, header_bytes, seq, first, channels, spf, flags = HEADER.unpack_from(
        data, offset
    )
    if magic != MAGIC:
        raise BadMagic(f"frame starts with {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise UnsupportedVersion(f"frame version {version}; this driver reads version {VERSION}")
    if header_bytes != HEADER_BYTES:
        raise BadHeader(f"header_bytes {header_bytes}, version 1 has {HEADER_BYTES}")
    if not 1 <= channels <= MAX_CHANNELS or not 1 <= spf <= MAX_SAMPLES_PER_FRAME:
        raise BadHeader(f"{channels} channels x {spf} samples per frame is not a valid frame")
    if 2 * channels * spf > MAX_PAYLOAD_BYTES:
        raise BadHeader(f"payload of {2 * channels * spf} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return FrameHeader(seq, first, channels, spf, flags, version, header_bytes)


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 as the board computes it: zlib's, the IEEE 802.3 polynomial
    (``b"123456789"`` → 0xCBF43926)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def check_crc(data: bytes | bytearray | memoryview, header: FrameHeader, offset: int = 0) -> None:
    """Raise :class:`BadCrc` unless the frame at ``offset`` carries the right CRC32."""
    view = memoryview(data)
    body_end = offset + header.header_bytes + header.payload_bytes
    (sent,) = CRC.unpack_from(view, body_end)
    computed = crc32(view[offset:body_end])
    if sent != computed:
        raise BadCrc(
            f"frame {header.sequence} (sample {header.first_sample}): CRC32 {sent:#010x} "
            f"sent, {computed:#010x} computed"
        )


def decode_frame(data: bytes | bytearray | memoryview, offset: int = 0) -> Frame:
    """Decode and check the frame at ``data[offset:]`` (trailing bytes are ignored).

    The samples are a copy, independent of ``data``. Raises :class:`TruncatedFrame`,
    :class:`BadMagic`, :class:`UnsupportedVersion`, :class:`BadHeader` or :class:`BadCrc`.
    """
    header = parse_header(data, offset)
    if len(data) - offset < header.frame_bytes:
        raise TruncatedFrame(
            f"frame {header.sequence}: {len(data) - offset} of {header.frame_bytes} bytes"
        )
    check_crc(data, header, offset)
    samples = np.frombuffer(
        data,
        dtype="<i2",
        count=header.channel_count * header.samples_per_frame,
        offset=offset + header.header_bytes,
    ).reshape(header.samples_per_frame, header.channel_count)
    return Frame(header, samples.astype(np.int16, copy=True))


def encode_frame(sequence: int, first_sample: int, samples: np.ndarray, flags: int = 0) -> bytes:
    """The bytes of one frame holding ``samples`` (samples_per_frame, channel_count) int16."""
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.dtype != np.int16:
        raise ValueError(
            f"samples must be 2-D int16 (time, channel), got {samples.dtype} {samples.shape}"
        )
    spf, channels = samples.shape
    header = HEADER.pack(
        MAGIC,
        VERSION,
        HEADER_BYTES,
        sequence % SEQUENCE_MODULUS,
        first_sample,
        channels,
        spf,
        flags,
    )
    body = header + np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return body + CRC.pack(crc32(body))


def find_magic(data: bytes | bytearray, start: int = 0) -> int:
    """Index of the next ``CNEA`` at or after ``start``, or -1 (for resynchronising)."""
    return data.find(MAGIC, start)
