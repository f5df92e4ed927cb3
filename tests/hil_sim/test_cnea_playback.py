"""Playback: a recorded session file streamed by the emulated board, at any rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.cnea_board import CneaBoard
from hil_sim.cnea_board import CneaBoardEmulator, DigitalSource
from hil_sim.lab import EmulatedLab, LabSettings
from hil_sim.playback import EndOfRecording, PlaybackSource
from instrument.acquisition import Acquisition, AcquisitionSettings
from instrument.recording import GAP_FILL, open_recording
from instrument.storage import SessionWriter
from tests.instrument.test_storage import make_info


@pytest.fixture
def recorded(tmp_path):
    """A 1000-sample, 8-channel session with a gap at rows 100-116."""
    path = tmp_path / "orig" / "session.h5"
    writer = SessionWriter(path, make_info(), chunk_samples=64)
    data = np.random.default_rng(3).integers(-2000, 2000, (1000, 8), dtype=np.int16)
    data[100:116] = GAP_FILL
    writer.write(0, data)
    writer.add_gap(100, 116, "frames lost")
    writer.close(stop_reason="requested")
    return path, data


def test_codes_are_chunking_independent_and_loop(recorded):
    path, data = recorded
    a, b = PlaybackSource(path, block_samples=64), PlaybackSource(path, preload=True)
    assert isinstance(a, DigitalSource)
    one = np.concatenate([a.read_codes(n) for n in (1, 7, 300, 692, 500)])
    two = b.read_codes(1500)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one[:1000], data)
    np.testing.assert_array_equal(one[1000:], data[:500])
    assert a.position == 1500
    a.close()
    b.close()


def test_without_loop_the_recording_ends(recorded):
    path, _ = recorded
    src = PlaybackSource(path, loop=False)
    src.read_codes(990)
    with pytest.raises(EndOfRecording):
        src.read_codes(20)
    src.close()


def test_volts_truth_and_stimuli(recorded):
    path, data = recorded
    src = PlaybackSource(path)
    volts = src.read(120)
    assert volts[0, 7] == pytest.approx(data[0, 7] * 5e-6 + 1e-4, rel=1e-5)
    assert np.isnan(volts[100:116]).all()
    assert src.truth()["synapse_pre"].tolist() == [0, 1]
    assert src.truth_attrs()["playback_of"] == str(path)
    src.electroporate(np.arange(3), 2.0, 1e-3)
    assert len(src.stimuli) == 1 and np.isnan(src.access()).all()
    src.close()


def test_not_a_session_file(tmp_path):
    bogus = tmp_path / "x.h5"
    bogus.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="cannot open"):
        PlaybackSource(bogus)


def test_recording_a_playback_gives_back_the_same_codes(recorded, tmp_path):
    path, data = recorded
    with CneaBoardEmulator(PlaybackSource(path), rate=10.0, samples_per_frame=10) as emu:
        board = CneaBoard.open(emu.resource, data_port=emu.data_port)
        try:
            np.testing.assert_allclose(board.nominal_gain(), 5e-6)
            np.testing.assert_allclose(board.nominal_offset(), np.linspace(-1e-4, 1e-4, 8))
            out = tmp_path / "copy" / "session.h5"
            Acquisition(board, out, duration_s=0.25, settings=AcquisitionSettings(ring_s=10)).wait()
        finally:
            board.close()
    with open_recording(out) as rec:
        traces = rec.traces[()]
        assert traces.shape == (2500, 8)
        np.testing.assert_array_equal(traces[:1000], data)
        np.testing.assert_array_equal(traces[1000:2000], data)
        assert rec.truth is not None and rec.truth.attrs["playback_of"] == str(path)


def test_end_of_a_non_looping_playback_stops_the_recording(recorded, tmp_path):
    path, data = recorded
    src = PlaybackSource(path, loop=False)
    with CneaBoardEmulator(src, rate=math.inf, samples_per_frame=10) as emu:
        board = CneaBoard.open(emu.resource, data_port=emu.data_port)
        try:
            out = tmp_path / "copy" / "session.h5"
            settings = AcquisitionSettings(stall_timeout_s=0.2)
            status = Acquisition(board, out, settings=settings).wait()
        finally:
            board.close()
    assert status.stop_reason == "board stopped acquiring"
    with open_recording(out) as rec:
        np.testing.assert_array_equal(rec.traces[()], data)


def test_lab_builder_plays_a_file(recorded):
    path, _ = recorded
    options = {"cnea": {"source": "playback", "playback_file": str(path), "rate": "max"}}
    with EmulatedLab(LabSettings(seed=2, options=options)) as lab:
        cnea = lab.instruments["cnea"]
        assert cnea.driver == "cnea_board" and cnea.data_port > 0
        assert cnea.resource.startswith("TCPIP::127.0.0.1::")
        assert math.isinf(cnea.model.device.rate)
        assert cnea.model.device.digital
        assert "data_port = " in lab.resources_toml()


def test_lab_builder_rejects_bad_options(recorded):
    with pytest.raises(ValueError, match="unknown cnea option"):
        EmulatedLab(LabSettings(options={"cnea": {"neurons": 5}})).start()
