"""Imprint end to end on the emulated rig (SMU over pyvisa-py TCP, selector over a pty)."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from drivers.errors import SafetyLimitError
from instrument.config import ConfigError
from instrument.imprint.journal import SKIPPED, VERIFIED, Journal, JournalError, read_report
from instrument.imprint.mapping import ROLE_OFF, ROLE_SYNAPSE
from instrument.imprint.run import run_imprint
from tests.instrument.imprint.helpers import (
    config_with,
    crossbar,
    make_session,
    rig_lab,
    synthetic_map,
)


def _pulsed_cells(xbar) -> list[tuple[int, int]]:
    """Record every cell a programming pulse reaches (wraps the emulator's pulse)."""
    seen: list[tuple[int, int]] = []
    original = xbar.pulse

    def pulse(route, v, width_s):
        if route.kind == "cell" and abs(v) > 0.5:  # not the read bias held on a cell
            seen.append((route.row, route.col))
        return original(route, v, width_s)

    xbar.pulse = pulse
    return seen


def test_rram_map_imprints_within_tolerance_on_two_rigs_at_once(tmp_path):
    cmap = synthetic_map(n_units=14, n_synapses=40)
    path = make_session(tmp_path)
    with rig_lab(rows=16, cols=16, count=2, stuck_rate=0.02) as (config, lab):
        pulsed = [_pulsed_cells(crossbar(lab, k)) for k in range(2)]
        result = run_imprint(config, path, "rram", cmap=cmap, progress=False)
        truths = [crossbar(lab, k) for k in range(2)]
    s = result.summary
    assert s["tiles"] == 2 and s["synapse_cells"] + s["skipped"] >= 2 * cmap.n_synapses
    assert s["yield_programmable"] >= 0.97
    rows = result.rows
    # stuck cells found by characterization were never pulsed while programming (only probed)
    for k in range(2):
        stuck = {tuple(rc) for rc in np.argwhere(truths[k].stuck != 0)}
        mine = rows[rows["tile"] == k]
        skipped = {(int(r), int(c)) for r, c in mine[mine["state"] == SKIPPED][["row", "col"]]}
        assert skipped <= stuck
        counts = {cell: pulsed[k].count(cell) for cell in skipped}
        assert all(n <= 2 for n in counts.values()), counts  # the two probe pulses only
    # every synapse cell is on the right lines: pre unit's row, post unit's column
    syn = rows[rows["role"] == ROLE_SYNAPSE]
    assert np.all(syn["pre"] == cmap.pre[syn["synapse"]])
    assert np.all(syn["post"] == cmap.post[syn["synapse"]])
    for tile in result.tiles:  # stuck cells left on active lines show in the functional check
        if tile["skipped"] == 0:
            assert tile["functional"]["relative_rms_error"] < 0.05
        assert tile["functional"]["correlation"] > 0.9
    # the journal and the report are in the session file
    with h5py.File(path, "r", locking=False) as f:
        g = f["imprint"]
        assert g.attrs["technology"] == "rram"
        assert g["cells"].shape == rows.shape
        assert np.isfinite(g["final_read_s"][()]).all()
    report = read_report(path)
    assert report is not None and report["summary"]["within"] == s["within"]
    from instrument.imprint.report import summary_text, write_plots

    plots = write_plots(tmp_path / "report", rows, result.final_read_s, s["tolerance_s"], "t")
    assert all(p.stat().st_size > 10_000 for p in plots)
    assert "within tolerance at the final read" in summary_text(s, result.tiles)
    # a second run refuses to overwrite the imprint
    with pytest.raises(JournalError, match="--resume"):
        run_imprint(config, path, "rram", cmap=cmap, progress=False)


def test_a_limit_violation_is_refused_before_the_first_pulse(tmp_path):
    path = make_session(tmp_path)
    unsafe = [
        ("[imprint.rram]\nreset_max_v = 3.2\n", SafetyLimitError, "reset_max_v"),
        ("[imprint.rram]\nwidth_max_s = 0.01\n", SafetyLimitError, "width_max_s"),
        ("[technology.rram]\nmax_voltage_v = 6.0\n", ConfigError, "max_voltage_v"),
    ]
    for text, error, key in unsafe:
        with rig_lab(rows=8, cols=8, config=config_with(text)) as (config, lab):
            config = dataclasses.replace(config, crossbar=config.crossbar)
            with pytest.raises(error, match=key):
                run_imprint(config, path, "rram", cmap=synthetic_map(4, 6), progress=False)
            assert crossbar(lab).pulses_applied == 0
            for inst in lab.instruments.values():
                assert all(server.lines_handled == 0 for server in inst.servers)
    assert not Journal.exists(path)


def test_passive_array_with_sneak_paths_is_programmed_with_the_right_biases(tmp_path):
    cmap = synthetic_map(n_units=6, n_synapses=12)
    path = make_session(tmp_path)
    with rig_lab(rows=12, cols=12, architecture="passive", stuck_rate=0.0) as (config, lab):
        result = run_imprint(config, path, "rram", cmap=cmap, progress=False)
        xbar = crossbar(lab)
        g_true = xbar.conductance()
        rows = result.rows
        # sneak paths: the same cells read with every unselected line at V/2 are far off
        from instrument.rig import open_rig

        with open_rig(dataclasses.replace(config)) as rig:
            rig.selector.bias = "v/2"
            sneaky = rig.read_cells(
                list(zip(rows["row"].tolist(), rows["col"].tolist(), strict=True))
            )
    assert result.summary["yield_programmable"] >= 0.95
    tol = result.summary["tolerance_s"]
    programmed = rows["role"] == ROLE_SYNAPSE
    truth = g_true[rows["row"], rows["col"]]
    # the device itself holds its target (the ground-bias reads were not fooled)
    close = np.abs(truth - rows["target_s"]) <= 3 * tol + 0.03 * rows["target_s"]
    assert close[programmed].mean() >= 0.95
    assert (np.abs(sneaky.conductance_s - rows["target_s"]) > tol).mean() > 0.5
    # no half-selected cell was disturbed past the off state while its neighbours were pulsed
    off = rows["role"] == ROLE_OFF
    assert (truth[off] <= 3e-6).mean() >= 0.95
    assert (rows["state"] == VERIFIED).mean() >= 0.95


@pytest.mark.parametrize(("technology", "floor"), [("pcm", 0.9), ("mram", 0.85), ("flash", 0.9)])
def test_every_technology_is_programmed(tmp_path, technology, floor):
    cmap = synthetic_map(n_units=8, n_synapses=20)
    path = make_session(tmp_path)
    with rig_lab(rows=16, cols=16, technology=technology) as (config, _lab):
        result = run_imprint(config, path, technology, cmap=cmap, progress=False)
    assert result.summary["yield_programmable"] >= floor
    assert result.summary["pulses_per_cell"] < 40


def test_pair_compensation_hides_stuck_cells_from_the_weight_product(tmp_path):
    """A full tile has no spare lines: stuck-high cells stay in off positions. Raising their
    partner keeps G+ - G- right; the analog weight x input check shows the difference."""
    from hil_sim.line_driver import build_line_drivers

    cmap = synthetic_map(n_units=16, n_synapses=30)
    errors = {}
    for compensate in ("true", "false"):
        path = make_session(tmp_path / compensate)
        config = config_with(f"[imprint]\npair_compensation = {compensate}\n")
        with rig_lab(rows=16, cols=32, stuck_rate=0.03, config=config,
                     extra_builders=(build_line_drivers,)) as (cfg, _lab):  # fmt: skip
            result = run_imprint(cfg, path, "rram", cmap=cmap, progress=False)
        assert result.summary["skipped"] > 0 and result.summary["yield_programmable"] >= 0.97
        (tile,) = result.tiles
        assert tile["functional"]["source"] == "line driver (analog)"
        errors[compensate] = tile["functional"]["relative_rms_error"]
    assert errors["true"] < 0.1 < errors["false"]


def test_a_train_whose_readings_are_lost_is_read_again(tmp_path, monkeypatch):
    """The rig reports a train that ran but could not be read back (DataIntegrityError):
    its cells count the pulse and are read again, and programming carries on."""
    from drivers.errors import DataIntegrityError
    from instrument.imprint.access import Access

    original = Access.pulse_read
    lost = []

    def flaky(self, rig, cells, amplitudes_v, width_s):
        original(self, rig, cells, amplitudes_v, width_s)  # the pulses happen...
        if not lost:
            lost.append(len(cells))
            raise DataIntegrityError("the train stopped after 16 of 16 visits (selector IDLE)")
        return original(self, rig, cells, [0.0] * len(cells), width_s)

    monkeypatch.setattr(Access, "pulse_read", flaky)
    path = make_session(tmp_path)
    with rig_lab(rows=8, cols=8, stuck_rate=0.0) as (config, _lab):
        result = run_imprint(config, path, "rram", cmap=synthetic_map(4, 6), progress=False)
    assert lost and result.summary["yield_programmable"] >= 0.95
