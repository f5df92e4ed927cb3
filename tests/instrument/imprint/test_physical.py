"""The line driver over its real wire, the analog functional check, and physical imprinting."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from drivers.errors import OutOfRangeError, SafetyLimitError
from drivers.line_driver import LineDriver
from hil_sim.line_driver import build_line_drivers
from instrument.connect import open_instrument
from instrument.imprint.connectivity import ConnectivityMap
from instrument.imprint.physical import GROUP, build_waveforms, load_physical_settings, run_physical
from instrument.imprint.run import run_imprint
from instrument.rig import open_rig, safety_limits
from tests.instrument.imprint.helpers import (
    config_with,
    crossbar,
    make_session,
    rig_lab,
    synthetic_map,
)


def test_line_driver_reads_every_column_at_once(tmp_path):
    with rig_lab(rows=8, cols=8, stuck_rate=0.0, extra_builders=(build_line_drivers,)) as (
        config,
        lab,
    ):
        assert lab.instruments["linedriver"].resource.startswith("TCPIP::127.0.0.1::")
        limits = safety_limits(config, "rram")
        with open_rig(config) as rig:
            g = rig.read_array()  # what the SMU reads, cell by cell
            rig.selector.ground_all()
            with open_instrument(config, "linedriver") as driver:
                assert isinstance(driver, LineDriver)
                driver.configure(limits)
                x = np.array([0.2, 0, 0.2, 0.2, 0, 0, 0.2, 0.1])
                currents = driver.column_currents(x)
                np.testing.assert_allclose(currents, x @ g, rtol=0.03)
                server = lab.instruments["linedriver"].servers[0]
                before = server.lines_handled
                with pytest.raises(SafetyLimitError):
                    driver.column_currents(np.full(8, limits.max_voltage_v + 0.5))
                with pytest.raises(OutOfRangeError, match="overlap"):
                    driver.load_pulses({0: [(0.0, 1e-3, 0.5), (5e-4, 1e-3, 0.5)]}, {})
                with pytest.raises(OutOfRangeError):
                    driver.column_currents(np.zeros(5))
                assert server.lines_handled == before  # refused before sending
            assert lab.instruments["linedriver"].servers[0].device.output is False


def test_functional_check_uses_the_line_driver(tmp_path):
    path = make_session(tmp_path)
    with rig_lab(rows=12, cols=12, stuck_rate=0.0, extra_builders=(build_line_drivers,)) as (
        config,
        _lab,
    ):
        result = run_imprint(config, path, "rram", cmap=synthetic_map(6, 12), progress=False)
    (tile,) = result.tiles
    assert tile["functional"]["source"] == "line driver (analog)"
    assert tile["functional"]["relative_rms_error"] < 0.05
    assert tile["functional"]["correlation"] > 0.99


def causal_spikes(
    n_units: int, pairs: list[tuple[int, int]], duration_s: float, seed: int = 2
) -> dict[int, np.ndarray]:
    """Poisson units; for each pair (a, b), b fires 5-10 ms after a's spikes with p = 0.6."""
    rng = np.random.default_rng(seed)
    spikes = {
        u: np.sort(rng.uniform(0, duration_s, rng.poisson(3 * duration_s))) for u in range(n_units)
    }
    for a, b in pairs:
        pre = spikes[a]
        follow = pre[rng.random(pre.size) < 0.6] + rng.uniform(5e-3, 10e-3)
        spikes[b] = np.sort(np.r_[spikes[b], follow])
    return spikes


def test_waveforms_compress_silence_but_keep_coincidences():
    settings = load_physical_settings(config_with(""))
    spikes = {0: np.array([1.0, 5.0]), 1: np.array([1.008, 9.0])}
    rows, cols, compression = build_waveforms(spikes, np.array([0, 1]), settings, 0.5)
    assert compression < 0.05
    (r0a, r0b), (c1a, _) = rows[0], cols[1]
    # the coincidence is kept exactly: the window opened pre_delay after unit 0's spike
    assert c1a[0] - r0a[0] == pytest.approx(0.008 - settings.pre_delay_s)
    busy_until = rows[1][0][0] + settings.pre_window_s  # unit 1's window ends last
    # 4 s of silence before unit 0's second spike shrink to max_gap (its window opens later)
    assert 0 < r0b[0] - busy_until <= settings.max_gap_s + settings.pre_delay_s + 1e-9
    assert r0a[2] == 0.5 and c1a[2] == -0.5
    assert r0a[1] == pytest.approx(settings.pre_window_s)


def test_physical_imprinting_recovers_the_causal_pairs(tmp_path):
    n = 10
    pairs = [(0, 3), (1, 2), (4, 7), (5, 9), (6, 8), (8, 1), (2, 5)]
    spikes = causal_spikes(n, pairs, duration_s=8.0)
    cmap = ConnectivityMap.from_arrays(
        [a for a, _ in pairs], [b for _, b in pairs], np.full(len(pairs), 1e-3), units=range(n)
    )
    path = make_session(tmp_path)
    with rig_lab(
        rows=12,
        cols=12,
        stuck_rate=0.0,
        extra_builders=(build_line_drivers,),
        config=None,
    ) as (config, lab):
        lab.instruments["linedriver"].servers[0].device.realtime = False
        xbar = crossbar(lab)
        summary = run_physical(config, path, "rram", cmap, spikes=spikes, report_dir=tmp_path)
        assert xbar.pulses_applied > 0
    assert summary["units_imprinted"] == n
    assert summary["auc_connected"] > 0.95
    assert summary["mean_score_connected"] > 3 * summary["mean_score_unconnected"]
    with h5py.File(path, "r", locking=False) as f:
        assert f[GROUP]["after_s"].shape == (n, n)
    assert (tmp_path / "imprint_physical.png").exists()
