"""The emulated CNEA board's frame encoder (the board firmware's side of docs/cnea_protocol.md).

Written independently of the driver's decoder: the two meet only in the golden
byte vectors under tests/golden/. Layout (little-endian): a 28-byte header
(magic ``CNEA``, version 1, header size 28, uint32 sequence, uint64 first sample
index, uint16 channel count, uint16 samples per frame, uint32 flags), the int16
payload in time-major order, and the CRC32 (zlib) of header + payload.
"""

from __future__ import annotations

import zlib

import numpy as np

MAGIC = b"CNEA"
VERSION = 1
SEQUENCE_MODULUS = 2**32

HEADER_DTYPE = np.dtype(
    [
        ("magic", "S4"),
        ("version", "<u2"),
        ("header_bytes", "<u2"),
        ("sequence", "<u4"),
        ("first_sample", "<u8"),
        ("channel_count", "<u2"),
        ("samples_per_frame", "<u2"),
        ("flags", "<u4"),
    ]
)
HEADER_BYTES = HEADER_DTYPE.itemsize  # 28

FLAG_CALIBRATION = 1
"""Bit 0: the calibration source drove the amplifier inputs during the frame."""
FLAG_STIMULUS = 2
"""Bit 1: a stimulus (electroporation, mode or level change) took effect at row 0."""
FLAG_OVERFLOW = 4
"""Bit 2: the output FIFO overflowed before this frame (the sequence gap was never sent)."""


def frame_bytes(channel_count: int, samples_per_frame: int) -> int:
    """Size on the wire of one frame, bytes."""
    return HEADER_BYTES + 2 * channel_count * samples_per_frame + 4


def encode(sequence: int, first_sample: int, codes: np.ndarray, flags: int = 0) -> bytearray:
    """One frame carrying ``codes`` (samples_per_frame, channel_count) int16, ready to send."""
    if codes.ndim != 2 or codes.dtype != np.int16:
        raise ValueError(f"codes must be 2-D int16, got {codes.dtype} {codes.shape}")
    spf, channels = codes.shape
    out = bytearray(frame_bytes(channels, spf))
    header = np.frombuffer(out, dtype=HEADER_DTYPE, count=1)
    header["magic"] = MAGIC
    header["version"] = VERSION
    header["header_bytes"] = HEADER_BYTES
    header["sequence"] = sequence % SEQUENCE_MODULUS
    header["first_sample"] = first_sample
    header["channel_count"] = channels
    header["samples_per_frame"] = spf
    header["flags"] = flags
    end = HEADER_BYTES + codes.nbytes
    payload = np.frombuffer(out, dtype="<i2", count=codes.size, offset=HEADER_BYTES)
    payload.reshape(spf, channels)[...] = codes
    crc = zlib.crc32(memoryview(out)[:end]) & 0xFFFFFFFF
    out[end:] = crc.to_bytes(4, "little")
    return out


def corrupt(frame: bytearray, seed: int = 0) -> bytearray:
    """A copy of ``frame`` with one payload byte flipped (the CRC no longer matches)."""
    damaged = bytearray(frame)
    payload_len = len(frame) - HEADER_BYTES - 4
    index = HEADER_BYTES + (seed * 7919) % max(payload_len, 1)
    damaged[index] ^= 0x5A
    return damaged
