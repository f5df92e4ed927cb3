"""The emulator's frame encoder produces the golden byte vectors exactly."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from hil_sim import cnea_frames
from tests.golden import frame_cases

OK_CASES = [c for c in frame_cases() if c["expect"] == "ok"]


@pytest.mark.parametrize("case", OK_CASES, ids=[c["name"] for c in OK_CASES])
def test_emulator_encodes_golden_bytes(case):
    fields = case["fields"]
    data = cnea_frames.encode(
        fields["sequence"],
        fields["first_sample"],
        np.array(case["samples"], dtype=np.int16),
        fields["flags"],
    )
    assert bytes(data) == case["bytes"]
    assert len(data) == cnea_frames.frame_bytes(
        fields["channel_count"], fields["samples_per_frame"]
    )


def test_corrupt_breaks_only_the_crc():
    case = OK_CASES[0]
    frame = cnea_frames.encode(7, 112, np.array(case["samples"], dtype=np.int16))
    damaged = cnea_frames.corrupt(frame, seed=3)
    assert damaged[:4] == b"CNEA" and len(damaged) == len(frame) and damaged != frame
    body, crc = bytes(damaged[:-4]), int.from_bytes(damaged[-4:], "little")
    assert zlib.crc32(body) != crc


def test_encode_refuses_non_int16():
    with pytest.raises(ValueError):
        cnea_frames.encode(0, 0, np.zeros((2, 2)))
