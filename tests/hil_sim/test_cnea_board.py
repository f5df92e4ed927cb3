"""The emulated CNEA board: front-end physics, command set, frame production and pacing."""

from __future__ import annotations

import io
import math
import socket
import time

import numpy as np
import pytest

from hil_sim import cnea_frames
from hil_sim.cnea_board import (
    BOARD_OPTIONS,
    CODE_MAX,
    CneaBoardDevice,
    CneaBoardEmulator,
    FrontEnd,
    block,
    make_source,
    parse_channel_list,
)
from hil_sim.scpi_server import ScpiError
from tests.cnea_source import SineSource


def ask(device: CneaBoardDevice, line: str):
    reply = device.handle(line)
    error = device.handle(":SYST:ERR?")
    return reply, error


def test_front_end_true_gain_and_offset_are_seeded_and_near_nominal():
    a, b, c = FrontEnd(4096, 1), FrontEnd(4096, 1), FrontEnd(4096, 2)
    np.testing.assert_array_equal(a.gain_factor, b.gain_factor)
    assert not np.array_equal(a.gain_factor, c.gain_factor)
    assert np.all(np.abs(a.gain_factor - 1) <= 0.05 + 1e-12)
    assert 0.01 < np.std(a.gain_factor) < 0.03
    assert 100e-6 < np.std(a.true_offset[0]) < 500e-6


def test_front_end_quantises_with_true_gain_and_clips_at_32767():
    fe = FrontEnd(3, 7)
    lsb = 5e-6 * fe.gain_factor[0]
    inputs = np.array([[fe.true_offset[0, 0] + 100 * lsb[0], 1.0, -1.0]], dtype=np.float32)
    codes = fe.convert(inputs)
    assert codes.dtype == np.int16
    assert codes[0, 0] == 100
    assert codes[0, 1] == CODE_MAX and codes[0, 2] == -CODE_MAX  # never -32768 (GAP_FILL)


def test_front_end_voltage_clamp_and_gain_setting():
    fe = FrontEnd(2, 3)
    fe.set_mode(np.array([1]), 1, -0.07)
    assert fe.nominal_gain().tolist() == pytest.approx([5e-6, 1e-12])
    fe.set_gain(4)
    assert fe.nominal_gain().tolist() == pytest.approx([1.25e-6, 0.25e-12])
    current = fe.true_offset[1, 1] + 40 * 0.25e-12 * fe.gain_factor[1, 1]
    assert fe.convert(np.array([[0.0, current]], dtype=np.float32))[0, 1] == 40


def test_calibration_square_wave_levels():
    fe = FrontEnd(2, 1)
    fe.cal_level_v, fe.cal_function, fe.cal_frequency_hz = 0.01, "SQUARE", 100.0
    fe.set_mode(np.array([1]), 1, 0.0)
    x = fe.calibration_inputs(0, 200, 10_000.0)
    assert set(np.unique(x[:, 0])) == {np.float32(0.0), np.float32(0.01)}
    assert x[0, 0] == pytest.approx(0.01) and x[50, 0] == 0.0  # 100 Hz: 50 samples per half
    assert x[0, 1] == pytest.approx(0.01 / 100e6)


def test_channel_lists():
    assert parse_channel_list("(@0:3,7)", 8).tolist() == [0, 1, 2, 3, 7]
    for bad, code in [("0:3", -104), ("(@9)", -222), ("(@a)", -104), ("(@3:1)", -222)]:
        with pytest.raises(ScpiError) as info:
            parse_channel_list(bad, 8)
        assert info.value.code == code


def test_block_format():
    assert block(b"abc") == b"#13abc"
    assert block(bytes(12)) == b"#212" + bytes(12)


def test_command_errors():
    dev = CneaBoardDevice(SineSource(8))
    assert ask(dev, ":SENS:GAIN 3")[1].startswith("-224")
    assert ask(dev, ":ACQ:SRAT 3000")[1].startswith("-224")
    assert ask(dev, ":ACQ:FRAM:SAMP 0")[1].startswith("-222")
    assert ask(dev, ":SOUR:CURR 5e-9,(@0)")[1].startswith("-222")
    assert ask(dev, ":ELEC:AMPL 5")[1].startswith("-222")
    assert ask(dev, ":CHAN:MODE XCL,(@0)")[1].startswith("-224")
    dev.handle(":ACQ:STAR")
    assert ask(dev, ":ACQ:FRAM:SAMP 8")[1].startswith("-221")
    assert ask(dev, ":ACQ:STAT?")[0] == "RUN"
    dev.handle(":ACQ:STOP")
    assert ask(dev, ":ACQ:FRAM:SAMP 8") == (None, '0,"No error"')


def test_binary_block_replies_chain_with_text():
    dev = CneaBoardDevice(SineSource(4))
    reply = dev.handle(":CAL:GAIN?;:ACQ:CHAN?")
    assert isinstance(reply, bytes)
    assert reply.startswith(b"#232") and reply.endswith(b";4")
    assert np.allclose(np.frombuffer(reply[4:36], "<f8"), 5e-6)


def test_truth_block_is_an_npz():
    dev = CneaBoardDevice(SineSource(4))
    reply = dev.handle(":SIM:TRUT?")
    digits = int(reply[1:2])
    length = int(reply[2 : 2 + digits])
    with np.load(io.BytesIO(reply[2 + digits :]), allow_pickle=False) as npz:
        assert len(reply) == 2 + digits + length
        assert npz["synapse_kind"].dtype == np.uint8
        assert npz["board_offset"].shape == (2, 4)
        assert "SineSource" in str(npz["attrs_json"])


def test_frames_carry_source_codes_decimation_and_flags():
    src = SineSource(8)
    dev = CneaBoardDevice(src, samples_per_frame=4, keep_samples=True)
    assert dev.produce_frame() is None  # idle
    dev.handle(":ACQ:SRAT 2000")
    dev.handle(":ACQ:STAR")
    seq, first, codes, flags = dev.produce_frame()
    assert (seq, first, codes.shape, flags) == (0, 0, (4, 8), 0)
    reference = SineSource(8).samples(0, 20).reshape(4, 5, 8).mean(axis=1)
    np.testing.assert_array_equal(codes, dev.front_end.convert(reference.astype(np.float32)))
    dev.handle(":ELEC (@1)")
    dev.handle(":CAL:SOUR:LEV 0.01;STAT ON")
    _, first, codes, flags = dev.produce_frame()
    assert first == 4
    assert flags == cnea_frames.FLAG_STIMULUS | cnea_frames.FLAG_CALIBRATION
    fe = dev.front_end
    expected = np.rint((0.01 - fe.true_offset[0]) / (5e-6 * fe.gain_factor[0]))
    np.testing.assert_array_equal(codes, np.broadcast_to(expected, codes.shape))
    assert dev.stimuli[0][0] == 4


def test_reset_restores_power_on_state():
    dev = CneaBoardDevice(SineSource(8))
    dev.handle(":SOUR:VOLT -0.05,(@0:3);:SENS:GAIN 2;:ACQ:FRAM:SAMP 32")
    dev.handle("*RST")
    assert ask(dev, ":CHAN:MODE? (@0:1)")[0] == "CCL,CCL"
    assert ask(dev, ":SENS:GAIN?;:ACQ:FRAM:SAMP?")[0] == "1;16"
    assert dev.source.modes.sum() == 0


def read_frames(port: int, seconds: float) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        data = bytearray()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            data += chunk
    frames, offset = [], 0
    size = cnea_frames.frame_bytes(8, 16)
    while offset + size <= len(data):
        frames.append(bytes(data[offset : offset + size]))
        offset += size
    return frames


def test_paced_streaming_follows_the_sample_clock():
    with CneaBoardEmulator(SineSource(8), rate=1.0) as emu:
        emu.device.handle(":ACQ:STAR")
        frames = read_frames(emu.data_port, 0.5)
        emu.device.handle(":ACQ:STOP")
    # 0.5 s at 10 kHz in 16-sample frames: about 312 frames, never more (a busy machine: fewer)
    assert 50 < len(frames) < 400


def test_emulator_stops_cleanly_while_streaming():
    emu = CneaBoardEmulator(SineSource(8), rate=math.inf)
    sock = socket.create_connection(("127.0.0.1", emu.data_port))
    emu.device.handle(":ACQ:STAR")
    time.sleep(0.1)
    emu.stop()
    sock.close()
    assert not emu.data.running and not emu.control.running


def test_make_source_validates_options(tmp_path):
    with pytest.raises(ValueError, match="culture"):
        make_source({"source": "tape"}, 1)
    with pytest.raises(ValueError, match="playback_file"):
        make_source({"source": "playback"}, 1)
    with pytest.raises(ValueError, match="unknown cnea option"):
        make_source({"n_neuronz": 5}, 1)
    assert "rate" in BOARD_OPTIONS
