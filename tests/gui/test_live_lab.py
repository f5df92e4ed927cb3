"""instrument.live: the lab as one live object, over the embedded lab's real wires."""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest

from drivers.errors import ConnectionLost, SafetyLimitError
from instrument.config import ConfigError, InstrumentConfig
from instrument.live import LiveLab, LiveLabError, grid_shape
from instrument.recording import open_recording


def test_connect_all_identifies_every_instrument(live_lab):
    states = {s.name: s for s in live_lab.connect_all()}
    assert {"cnea", "smu", "selector"} <= set(states)  # every instrument of the lab
    assert all(s.state == "connected" and not s.error for s in states.values())
    assert states["cnea"].identity.startswith("brainpaste CNEA-4096")
    assert "2450" in states["smu"].identity
    assert live_lab.grid == (64, 64)
    live_lab.disconnect("smu")
    assert live_lab.state("smu").state == "disconnected"
    assert live_lab.state("cnea").state == "connected"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failing_instrument_shows_its_error_and_the_others_connect(sim_config, tmp_path):
    broken = InstrumentConfig(
        driver="keithley2450", resource=f"TCPIP::127.0.0.1::{_closed_port()}::SOCKET", timeout_s=1
    )
    lab = LiveLab(sim_config.with_instruments({"smu": broken}))
    try:
        states = {s.name: s for s in lab.connect_all()}
        assert states["smu"].state == "error"
        assert "ConnectionLost" in states["smu"].error or "Error" in states["smu"].error
        assert states["cnea"].state == "connected"
        with pytest.raises((ConnectionLost, OSError)):
            lab.connect("smu")
        with pytest.raises(ConfigError, match="no instrument"):
            lab.connect("nonesuch")
    finally:
        lab.close()


def test_board_operations_need_a_connected_board(live_lab):
    with pytest.raises(LiveLabError, match="connect the board"):
        live_lab.access()
    with pytest.raises(LiveLabError, match="connect the board"):
        live_lab.start_recording()


def test_electroporate_a_region_opens_access_there_only(live_lab):
    live_lab.connect("cnea")
    before = live_lab.access()
    region = (np.arange(10, 14)[:, None] * 64 + np.arange(20, 28)).ravel()
    result = live_lab.electroporate(region, 2.5, 1e-3)
    after = live_lab.access()
    assert np.array_equal(result.channels, region)
    assert result.opened > 0 and result.opened == np.count_nonzero(after[region] > 0)
    outside = np.setdiff1d(np.arange(4096), region)
    np.testing.assert_array_equal(after[outside], before[outside])


def test_electroporation_beyond_the_safety_limit_is_refused(live_lab):
    live_lab.connect("cnea")
    before = live_lab.access()
    with pytest.raises(SafetyLimitError):
        live_lab.electroporate([0, 1, 2], 4.0, 1e-3)
    np.testing.assert_array_equal(live_lab.access(), before)
    assert "SafetyLimitError" in live_lab.state("cnea").error
    with pytest.raises(LiveLabError, match="select"):
        live_lab.electroporate([], 2.5, 1e-3)


def test_record_start_stop_into_a_session_folder(live_lab, tmp_path):
    live_lab.connect("cnea")
    acq = live_lab.start_recording(tmp_path / "s1", duration_s=0.5)
    assert live_lab.is_recording
    with pytest.raises(LiveLabError, match="already recording"):
        live_lab.start_recording(tmp_path / "s2")
    with pytest.raises(LiveLabError, match="stop the recording"):
        live_lab.disconnect("cnea")
    acq.wait(raise_on_error=False)  # until the duration is reached
    status = live_lab.recording.status()
    assert status.state == "stopped" and status.stop_reason == "duration reached"
    with open_recording(tmp_path / "s1") as rec:
        assert rec.n_samples == 5000 and rec.n_channels == 4096
        assert rec.attrs["complete"]
    # a second recording in a fresh dated folder under data_dir; stopped by request
    acq2 = live_lab.start_recording(label="second")
    assert acq2.path.parent.name.endswith("-second")
    final = live_lab.stop_recording()
    assert final.state == "stopped" and final.stop_reason == "requested"
    assert not live_lab.is_recording


def test_the_lab_settings_come_from_the_acquisition_table(sim_config):
    from instrument.config import loads

    text = sim_config.text + "\n" if sim_config.text else ""
    config = loads(text.replace("ring_s = 2.0", "ring_s = 3.5"), "lab.toml")
    from instrument.live import acquisition_settings

    assert acquisition_settings(config).ring_s == 3.5
    assert acquisition_settings(config, block_samples=512).block_samples == 512


def test_grid_shape_from_positions():
    pitch = 20e-6
    rows, cols = np.divmod(np.arange(64 * 64), 64)
    grid = np.stack([cols * pitch, rows * pitch], axis=1)
    assert grid_shape(grid) == (64, 64)
    assert grid_shape(grid[::-1]) == (1, 4096)  # not in row-major order: a single row
    line = np.stack([np.arange(16) * pitch, np.zeros(16)], axis=1)
    assert grid_shape(line) == (1, 16)
    assert grid_shape(np.zeros((0, 2))) == (0, 0)


def test_closing_stops_the_recording_and_disconnects(live_lab, tmp_path):
    live_lab.connect_all()
    live_lab.start_recording(tmp_path / "s")
    live_lab.close()
    assert not live_lab.is_recording
    assert all(s.state == "disconnected" for s in live_lab.states())
    assert live_lab.recording.status().stop_reason == "disconnect"
    assert dataclasses.asdict(live_lab.state("cnea"))["identity"]


def test_live_settings_shorten_blocks_and_window_unless_the_lab_says(sim_config):
    from instrument.config import loads
    from instrument.live import live_settings

    live = live_settings(sim_config)
    assert live.block_samples == 512 and live.window_s == pytest.approx(0.4096)
    assert live.codec == sim_config.sections["acquisition"]["codec"]  # the rest: the lab's
    text = sim_config.text.replace("[acquisition]", "[acquisition]\nblock_samples = 2048")
    assert live_settings(loads(text, "lab.toml")).block_samples == 2048


def test_recording_again_and_again_keeps_no_finished_stream(live_lab, tmp_path):
    """A window records many sessions on one connected board: the board must not keep the
    frame streams (8 MiB buffers) of finished recordings."""
    live_lab.connect("cnea")
    for k in range(3):
        live_lab.start_recording(tmp_path / f"s{k}", duration_s=0.2).wait(raise_on_error=False)
    live_lab.start_recording(tmp_path / "s3")
    streams = live_lab.board._streams
    assert len(streams) == 1 and streams[0].connected
    live_lab.stop_recording()
