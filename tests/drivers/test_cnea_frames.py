"""The driver's frame decoder against the golden byte vectors (tests/golden/cnea_frames.json)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import cnea_frames
from drivers.errors import DataIntegrityError
from tests.golden import frame_cases, load

CASES = {case["name"]: case for case in frame_cases()}


def test_crc_is_the_standard_crc32():
    check = load("cnea_frames.json")["crc32_check"]
    assert cnea_frames.crc32(check["input_ascii"].encode()) == int(check["crc32"], 16)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["expect"] == "ok"])
def test_golden_frames_decode(name):
    case = CASES[name]
    frame = cnea_frames.decode_frame(case["bytes"])
    fields = case["fields"]
    assert frame.header.sequence == fields["sequence"]
    assert frame.header.first_sample == fields["first_sample"]
    assert frame.header.channel_count == fields["channel_count"]
    assert frame.header.samples_per_frame == fields["samples_per_frame"]
    assert frame.header.flags == fields["flags"]
    assert frame.samples.dtype == np.int16
    np.testing.assert_array_equal(frame.samples, np.array(case["samples"], dtype=np.int16))
    assert frame.header.frame_bytes == len(case["bytes"])


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["expect"] != "ok"])
def test_golden_bad_frames_raise_typed_errors(name):
    case = CASES[name]
    error = getattr(cnea_frames, case["expect"])
    with pytest.raises(error) as info:
        cnea_frames.decode_frame(case["bytes"])
    assert isinstance(info.value, DataIntegrityError)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["expect"] == "ok"])
def test_driver_encoder_reproduces_golden_bytes(name):
    case = CASES[name]
    fields = case["fields"]
    data = cnea_frames.encode_frame(
        fields["sequence"],
        fields["first_sample"],
        np.array(case["samples"], dtype=np.int16),
        fields["flags"],
    )
    assert data == case["bytes"]


def test_decoded_samples_do_not_alias_the_buffer():
    buf = bytearray(CASES["normal"]["bytes"])
    frame = cnea_frames.decode_frame(buf)
    buf[cnea_frames.HEADER_BYTES] ^= 0xFF
    assert frame.samples[0, 0] == 1


def test_frame_at_an_offset_and_trailing_bytes():
    data = b"junk" + CASES["normal"]["bytes"] + CASES["wrap_last"]["bytes"]
    first = cnea_frames.decode_frame(data, 4)
    second = cnea_frames.decode_frame(data, 4 + first.header.frame_bytes)
    assert (first.sequence, second.sequence) == (7, 0xFFFFFFFF)
    assert cnea_frames.find_magic(data, 1) == 4


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ((4, b"\x02\x00"), cnea_frames.UnsupportedVersion),
        ((6, b"\x20\x00"), cnea_frames.BadHeader),
        ((20, b"\x00\x00"), cnea_frames.BadHeader),
        ((22, b"\x00\x00"), cnea_frames.BadHeader),
    ],
)
def test_damaged_headers(patch, error):
    data = bytearray(CASES["normal"]["bytes"])
    offset, value = patch
    data[offset : offset + len(value)] = value
    with pytest.raises(error):
        cnea_frames.decode_frame(data)


def test_header_too_short_is_truncated():
    with pytest.raises(cnea_frames.TruncatedFrame):
        cnea_frames.parse_header(CASES["normal"]["bytes"][:10])


def test_encode_refuses_wrong_dtype():
    with pytest.raises(ValueError, match="int16"):
        cnea_frames.encode_frame(0, 0, np.zeros((2, 3), dtype=np.int32))


def test_sequence_wraps_modulo_2_32():
    data = cnea_frames.encode_frame(2**32 + 5, 0, np.zeros((1, 1), dtype=np.int16))
    assert cnea_frames.decode_frame(data).sequence == 5
