"""Mapping, placement, settings and the journal's on-disk safety — no instruments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from drivers.errors import SafetyLimitError
from instrument.config import ConfigError
from instrument.imprint.characterize import STATUS_STUCK_HIGH, STATUS_STUCK_LOW, Characterization
from instrument.imprint.connectivity import ConnectivityError, ConnectivityMap
from instrument.imprint.journal import (
    CELL_DTYPE,
    clear_write_flags,
    lookup3,
    row_crc,
    write_flags,
)
from instrument.imprint.mapping import (
    ROLE_OFF,
    ROLE_PARTNER,
    ROLE_SYNAPSE,
    ROLE_UNUSED,
    Window,
    build_mapping,
)
from instrument.imprint.placement import place
from instrument.imprint.run import make_plan
from tests.instrument.imprint.helpers import config_with, make_session, synthetic_map

WINDOW = Window(1e-6, 1e-4, 11)


def test_differential_pairs_quantized_and_ordered_by_unit_id():
    cmap = ConnectivityMap.from_arrays([30, 10, 20], [10, 20, 30], [2e-3, -1e-3, 0.04e-3])
    m = build_mapping(cmap, WINDOW, (4, 8), layout="differential")
    assert m.order.tolist() == [10, 20, 30]  # documented ordering: ascending unit id
    (tile,) = m.tiles
    step = WINDOW.span_s / 10
    # 30 -> 10, +2 mV (the largest: g_max) on row 2, column 2*0 (G+); partner G- at g_min
    assert tile.role[2, 0] == ROLE_SYNAPSE and tile.target_s[2, 0] == pytest.approx(1e-4)
    assert tile.role[2, 1] == ROLE_PARTNER and tile.target_s[2, 1] == pytest.approx(1e-6)
    # 10 -> 20, -1 mV: G- (column 3) at level 5, G+ at g_min
    assert tile.role[0, 3] == ROLE_SYNAPSE and tile.target_s[0, 3] == pytest.approx(1e-6 + 5 * step)
    assert tile.col_sign[2] == 1 and tile.col_sign[3] == -1
    # 20 -> 30, tiny: kept at level 1 (min_level), not lost
    assert tile.level[1, 4] == 1
    # unused lines: row 3 and columns 6, 7 (3 units x 2 columns)
    assert (tile.role[3] == ROLE_UNUSED).all() and (tile.role[:, 6:] == ROLE_UNUSED).all()
    assert (tile.role[:3, :6] != ROLE_UNUSED).all()
    assert int((tile.role == ROLE_OFF).sum()) == 18 - 6
    assert m.weight_of(tile.target_s[2, 0], tile.target_s[2, 1]) == pytest.approx(2e-3)


def test_ei_layout_and_tiling_skip_empty_tiles():
    cmap = synthetic_map(n_units=20, n_synapses=40)
    m = build_mapping(cmap, WINDOW, (8, 8), layout="ei")
    assert {t.array for t in m.tiles} == {"E", "I"}
    assert sum(t.n_synapses for t in m.tiles) == cmap.n_synapses
    assert len(m.tiles) + m.empty_tiles == 2 * 3 * 3
    for t in m.tiles:
        syn = t.synapse[t.role == ROLE_SYNAPSE]
        assert np.all((cmap.weight_v[syn] >= 0) == (t.array == "E"))
    d = build_mapping(cmap, WINDOW, (8, 8), layout="differential")
    assert sum(t.n_synapses for t in d.tiles) == cmap.n_synapses
    with pytest.raises(ConnectivityError, match="even number"):
        build_mapping(cmap, WINDOW, (8, 7))


def test_rcm_ordering_concentrates_a_banded_map():
    rng = np.random.default_rng(0)
    units = np.arange(64)
    perm = rng.permutation(64)
    pre = perm[np.r_[0:63, 1:64]]
    post = perm[np.r_[1:64, 0:63]]
    cmap = ConnectivityMap.from_arrays(pre, post, np.full(126, 1e-3), units=units)
    by_id = build_mapping(cmap, WINDOW, (16, 32), ordering="id")
    rcm = build_mapping(cmap, WINDOW, (16, 32), ordering="rcm")
    assert len(rcm.tiles) < len(by_id.tiles)


def test_bad_maps_are_refused():
    with pytest.raises(ConnectivityError, match="itself"):
        ConnectivityMap.from_arrays([1], [1], [1e-3])
    with pytest.raises(ConnectivityError, match="finite"):
        ConnectivityMap.from_arrays([1], [2], [np.nan])
    with pytest.raises(ConnectivityError, match="integer"):
        ConnectivityMap.from_arrays([1.5], [2.0], [1e-3])
    summed = ConnectivityMap.from_arrays([1, 1], [2, 2], [1e-3, 0.5e-3], kind=["a", "b"])
    assert summed.n_synapses == 1 and summed.weight_v[0] == pytest.approx(1.5e-3)


def _char(shape, stuck: dict) -> Characterization:
    g = np.full(shape, 1e-6)
    status = np.zeros(shape, dtype=np.uint8)
    for (r, c), kind in stuck.items():
        status[r, c] = kind
        g[r, c] = 1.3e-4 if kind == STATUS_STUCK_HIGH else 0.4e-6
    return Characterization(g, g.copy(), status, 0)


def test_placement_moves_synapses_off_stuck_cells_and_reports_the_loss():
    cmap = synthetic_map(n_units=6, n_synapses=12)
    m = build_mapping(cmap, WINDOW, (8, 16))
    (tile,) = m.tiles
    rows, cols = np.nonzero(tile.role == ROLE_SYNAPSE)
    stuck = {(int(r), int(c)): STATUS_STUCK_HIGH for r, c in zip(rows[:3], cols[:3], strict=True)}
    stuck[(int(rows[3]), int(cols[3]))] = STATUS_STUCK_LOW
    char = _char(tile.shape, stuck)
    placed, report = place(tile, char, WINDOW, 1e-6, cmap.weight_v, pair_compensation=False)
    assert report.synapses_on_stuck_before >= 4
    assert report.synapses_on_stuck_after == 0  # spare rows/columns absorb the stuck cells
    assert report.error_after_s == 0 and report.weight_share_on_stuck_after == 0
    # the same synapses, moved with their units
    assert sorted(placed.synapse[placed.role == ROLE_SYNAPSE]) == sorted(
        tile.synapse[tile.role == ROLE_SYNAPSE]
    )
    for r, c in zip(*np.nonzero(placed.role == ROLE_SYNAPSE), strict=True):
        k = placed.synapse[r, c]
        assert placed.row_unit[r] == cmap.pre[k] and placed.col_unit[c] == cmap.post[k]


def test_pair_compensation_retargets_the_healthy_half():
    cmap = ConnectivityMap.from_arrays([1], [2], [1e-3])
    (tile,) = build_mapping(cmap, WINDOW, (2, 4), weight_scale_v=2e-3).tiles
    r, c = (int(x[0]) for x in np.nonzero(tile.role == ROLE_SYNAPSE))
    pc = int(tile.partner_col[c])
    char = _char(tile.shape, {(r, pc): STATUS_STUCK_LOW})
    char.final_s[r, pc] = 5e-6  # the G- cell is stuck at 5 uS
    placed, report = place(tile, char, WINDOW, 1e-6, cmap.weight_v, enabled=False)
    assert report.compensated_pairs == 1
    assert placed.target_s[r, c] - 5e-6 == pytest.approx(tile.target_s[r, c] - 1e-6)


def test_unsafe_settings_are_refused_naming_the_key():
    with pytest.raises(SafetyLimitError, match=r"imprint\.rram\.set_max_v"):
        make_plan(config_with("[imprint.rram]\nset_max_v = 3.5\n"), "rram")
    with pytest.raises(SafetyLimitError, match=r"imprint\.flash\.off_width_s"):
        make_plan(
            config_with('[crossbar]\ntechnology = "flash"\n[imprint.flash]\noff_width_s = 0.01\n'),
            "flash",
        )
    with pytest.raises(ConfigError, match=r"technology\.rram\.max_voltage_v"):
        make_plan(config_with("[technology.rram]\nmax_voltage_v = 4.5\n"), "rram")
    with pytest.raises(ConfigError, match=r"imprint\.layuot"):
        make_plan(config_with('[imprint]\nlayuot = "ei"\n'), "rram")
    with pytest.raises(ConfigError, match="crossbar is rram"):
        make_plan(config_with(""), "pcm")


def test_lookup3_matches_the_hdf5_superblock_checksum(tmp_path):
    path = make_session(tmp_path)
    raw = path.read_bytes()[:48]
    assert raw[8] in (2, 3)  # superblock v2/v3 (libver latest)
    assert int.from_bytes(raw[44:48], "little") == lookup3(raw[:44])


def test_a_killed_writer_leaves_a_mark_that_can_be_cleared(tmp_path):
    path = make_session(tmp_path)
    code = textwrap.dedent(
        f"""
        import h5py, time
        f = h5py.File({str(path)!r}, "r+", locking=False)
        f.create_dataset("x", data=[1, 2, 3]); f.flush()
        print("open", flush=True); time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert write_flags(path) != 0
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r", locking=False)
    assert clear_write_flags(path) is True and write_flags(path) == 0
    with h5py.File(path, "r", locking=False) as f:
        assert f["x"][()].tolist() == [1, 2, 3]
        assert f["recording/traces"].shape == (1000, 4)


def test_row_checksums_catch_a_torn_row():
    rows = np.zeros(4, dtype=CELL_DTYPE)
    rows["target_s"] = [1e-6, 2e-6, 3e-6, 4e-6]
    rows["crc"] = row_crc(rows)
    assert np.all(rows["crc"] == row_crc(rows))
    rows["state"][2] = 1  # written without a fresh checksum
    assert (rows["crc"] != row_crc(rows)).tolist() == [False, False, True, False]
    time.sleep(0)
