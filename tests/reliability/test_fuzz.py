"""Fuzzing (hypothesis): the emulators' SCPI interpreter and the driver's frame decoder
take any input without crashing or hanging; bad input only ever yields typed errors."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.cnea_board import FrameStream, StreamStalled
from drivers.cnea_frames import (
    HEADER,
    MAGIC,
    VERSION,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    find_magic,
)
from drivers.errors import ConnectionLost, DriverError
from drivers.scpi import Identity, parse_bool, parse_error, parse_float, parse_floats
from hil_sim.scpi_server import ScpiDevice
from tests.scpi_demo import DemoSupplyDevice

SCPI_ALPHABET = st.sampled_from(
    list(":;*?,\"' \t#-+.0123456789eE")
    + list("SOURCEVOLTAGEOUTPMEASIDNRSTCLSsourcevolt")
    + ["\x00", "\x7f", "\u00b5", "\ufffd"]
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_device(device: ScpiDevice, line: str) -> None:
    start = time.monotonic()
    reply = device.handle(line)
    assert time.monotonic() - start < 1.0
    assert reply is None or isinstance(reply, str | bytes)
    # the device is still sane afterwards: identity answers, the error queue drains
    assert device.handle("*IDN?").startswith("brainpaste")
    for _ in range(device.errors.capacity + 1):
        if device.handle(":SYST:ERR?") == '0,"No error"':
            break
    else:
        raise AssertionError("error queue does not drain")


@FUZZ
@given(st.text(SCPI_ALPHABET, max_size=80))
def test_scpi_interpreter_survives_any_line(line):
    _check_device(DemoSupplyDevice(), line)


@FUZZ
@given(st.text(max_size=120))
def test_scpi_interpreter_survives_arbitrary_unicode(line):
    _check_device(DemoSupplyDevice(), line.replace("\n", " "))


@FUZZ
@given(st.binary(max_size=400))
def test_frame_decoder_random_bytes_only_typed_errors(data):
    try:
        frame = decode_frame(data)
    except FrameError:
        return
    # if it decoded, it really was a frame: re-encoding gives the same bytes
    assert (
        encode_frame(
            frame.header.sequence, frame.header.first_sample, frame.samples, frame.header.flags
        )
        == data[
            : len(
                encode_frame(
                    frame.header.sequence,
                    frame.header.first_sample,
                    frame.samples,
                    frame.header.flags,
                )
            )
        ]
    )


@FUZZ
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**63),
    st.integers(1, 8),
    st.integers(1, 6),
    st.integers(0, 10_000),
    st.data(),
)
def test_frame_decoder_mutated_valid_frames(seq, first, n_ch, n_s, seed, data):
    rng = np.random.default_rng(seed)
    samples = rng.integers(-32767, 32767, size=(n_s, n_ch), dtype=np.int16)
    good = bytearray(encode_frame(seq, first, samples))
    frame = decode_frame(bytes(good))
    assert np.array_equal(frame.samples, samples)
    # flip bytes, truncate or extend: either a typed error or (for untouched bytes) the frame
    index = data.draw(st.integers(0, len(good) - 1))
    bad = bytearray(good)
    bad[index] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(good)))
    for candidate in (bytes(bad), bytes(good[:cut])):
        try:
            decoded = decode_frame(candidate)
        except FrameError:
            continue
        assert candidate == bytes(good) or np.array_equal(decoded.samples, samples)


@FUZZ
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1), st.binary(max_size=64))
def test_frame_decoder_absurd_headers(n_ch, n_s, tail):
    header = HEADER.pack(MAGIC, VERSION, 0, 0, 0, n_ch, n_s, 0)
    data = header + tail
    data += struct.pack("<I", zlib.crc32(data))
    with contextlib.suppress(FrameError):
        decode_frame(data)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 300))
def test_find_magic_never_crashes(data, start):
    index = find_magic(data, min(start, len(data)))
    assert index == -1 or data[index : index + 4] == MAGIC


@FUZZ
@given(st.text(max_size=60))
def test_reply_parsers_raise_only_typed_errors(reply):
    for parse in (parse_float, parse_floats, parse_bool, parse_error, Identity.parse):
        with contextlib.suppress(DriverError):
            parse(reply)


def _serve_once(payload: bytes) -> tuple[int, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            listener.settimeout(5)
            conn, _ = listener.accept()
            with conn:
                conn.sendall(payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.lists(st.binary(min_size=1, max_size=40), max_size=6))
def test_frame_stream_over_a_socket_with_garbage_between_frames(seed, garbage):
    """Real socket, valid frames with garbage spliced in: the stream yields every intact
    frame it can find, counts corrupt ones, and ends with ConnectionLost — never anything
    else, never a hang."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(-32767, 32767, size=(4, 3), dtype=np.int16) for _ in range(6)]
    chunks = []
    for i, samples in enumerate(frames):
        if i < len(garbage):
            chunks.append(garbage[i])
        chunks.append(encode_frame(i, i * 4, samples))
    port, thread = _serve_once(b"".join(chunks))
    stream = FrameStream("127.0.0.1", port, stall_timeout_s=0.5)
    stream.connect()
    got: list[np.ndarray] = []
    start = time.monotonic()
    try:
        for item in stream:
            if isinstance(item, Frame):
                got.append(item.samples)
            assert time.monotonic() - start < 10
    except (ConnectionLost, StreamStalled):
        pass
    finally:
        stream.close()
        thread.join(5)
    assert all(any(np.array_equal(g, f) for f in frames) for g in got)
    assert len(got) >= len(frames) - len(garbage)  # garbage may eat at most its neighbour
