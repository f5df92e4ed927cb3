"""The crossbar rig end to end: drivers over real pyvisa-py sockets and a serial pty, emulated lab.

Reads against the crossbar's truth, programming by pulses, batched whole-array
reads, every safety limit refused before sending, recovery from a dropped SMU
connection mid-train, safe shutdown on every exit path, both SMU models.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import hil_sim.lab
from drivers.errors import MalformedReply, OutOfRangeError, SafetyLimitError
from drivers.scpi import SCPIInstrument
from drivers.selector import CrossbarSelector
from hil_sim.crossbar import CrossbarArray
from hil_sim.rig import start_rig
from instrument.config import ConfigError, CrossbarConfig, InstrumentConfig, LabConfig, load
from instrument.embedded_lab import embedded_lab
from instrument.rig import open_rig, safety_limits


@contextmanager
def rig_lab(bias: str = "v/2", **options: Any) -> Iterator[tuple[LabConfig, Any]]:
    """The emulated lab with only the rig in it, and a configuration that matches it."""
    options = {"rows": 8, "cols": 8, "stuck_rate": 0.0, **options}
    saved = list(hil_sim.lab.BUILDERS)
    hil_sim.lab.BUILDERS[:] = [start_rig]
    try:
        with embedded_lab(options={"rig": options}) as (config, lab):
            crossbar = CrossbarConfig(
                rows=options["rows"],
                cols=options["cols"],
                architecture=options.get("architecture", "1t1r"),
                technology=options.get("technology", "rram"),
                bias_scheme=bias,
            )
            quick = {  # a dropped wire shows within 1 s (pyvisa-py waits out the timeout)
                name: dataclasses.replace(inst, timeout_s=1.0)
                for name, inst in config.instruments.items()
            }
            yield dataclasses.replace(config, crossbar=crossbar, instruments=quick), lab
    finally:
        hil_sim.lab.BUILDERS[:] = saved


def truth(lab) -> CrossbarArray:
    return lab.instruments["smu"].model


def smu_device(lab):
    return lab.instruments["smu"].servers[0].device


@pytest.fixture
def rig_and_lab():
    with rig_lab() as (config, lab), open_rig(config) as rig:
        yield rig, lab


def test_read_a_cell(rig_and_lab):
    rig, lab = rig_and_lab
    g = rig.read((2, 3))
    assert g == pytest.approx(truth(lab).conductance()[2, 3], rel=0.05)
    assert isinstance(rig.selector, CrossbarSelector)
    assert rig.selector.address.endswith("ttyXBAR0")  # over the serial pty
    assert rig.smu.address.startswith("TCPIP::127.0.0.1::")  # over a pyvisa-py socket


def test_program_a_cell_by_pulses(rig_and_lab):
    rig, lab = rig_and_lab
    cell = (5, 1)
    before = rig.read(cell)
    up = rig.pulse_train([cell] * 8, [1.2] * 8, 1e-5)
    assert np.all(np.diff(up.conductance_s) > -0.05 * up.conductance_s[:-1])
    assert up.conductance_s[-1] > 2 * before
    assert rig.read(cell) == pytest.approx(truth(lab).conductance()[5, 1], rel=0.05)
    rig.pulse(cell, -1.3, 1e-4)
    assert rig.read(cell) < 0.7 * up.conductance_s[-1]


def test_read_the_whole_array_in_a_few_round_trips(rig_and_lab):
    rig, lab = rig_and_lab

    def messages(call):
        before = (rig.smu.transport.exchanges, rig.selector.transport.exchanges)
        result = call()
        after = (rig.smu.transport.exchanges, rig.selector.transport.exchanges)
        return result, after[0] - before[0], after[1] - before[1]

    _, smu_16, sel_16 = messages(lambda: rig.read_block(range(2), range(8)))
    g, smu_64, sel_64 = messages(rig.read_array)
    np.testing.assert_allclose(g, truth(lab).conductance(), rtol=0.06)
    assert smu_64 <= 30 and sel_64 <= 6  # a few messages for the whole array ...
    assert smu_64 - smu_16 <= 8 and sel_64 == sel_16  # ... whatever the number of cells


def test_every_safety_limit_is_refused_before_sending(rig_and_lab):
    rig, _ = rig_and_lab
    limits = rig.limits
    before = (rig.smu.transport.exchanges, rig.selector.transport.exchanges)
    cases = [
        (SafetyLimitError, lambda: rig.pulse((0, 0), limits.max_voltage_v * 1.01, 1e-5)),
        (SafetyLimitError, lambda: rig.pulse((0, 0), -limits.max_voltage_v - 0.1, 1e-5)),
        (SafetyLimitError, lambda: rig.pulse((0, 0), 1.0, limits.pulse_width_min_s / 2)),
        (SafetyLimitError, lambda: rig.pulse((0, 0), 1.0, limits.pulse_width_max_s * 2)),
        (SafetyLimitError, lambda: rig.pulse_train([(0, 0), (1, 1)], [1.0, 9.0], 1e-5)),
        (SafetyLimitError, lambda: rig.smu.read_current(limits.max_voltage_v + 1)),
        (SafetyLimitError, lambda: setattr(rig.smu, "source_voltage", 3.5)),
        (SafetyLimitError, lambda: setattr(rig.smu, "current_limit", limits.compliance_a * 2)),
        (OutOfRangeError, lambda: rig.read((8, 0))),
        (OutOfRangeError, lambda: rig.pulse_train([(0, 0), (0, 9)], [1.0, 1.0], 1e-5)),
        (OutOfRangeError, lambda: rig.pulse_train([(0, 0)], [1.0, 1.0], 1e-5)),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
    assert (rig.smu.transport.exchanges, rig.selector.transport.exchanges) == before
    assert smu_device(rig_and_lab[1]).limit_tripped is False


def test_recover_when_the_smu_drops_before_the_train_starts(rig_and_lab):
    rig, lab = rig_and_lab
    server = lab.instruments["smu"].servers[0]
    board = lab.instruments["selector"].servers[0].device
    pulses_before = truth(lab).pulses_applied
    triggers_before = board.triggers_received
    server.faults.drop_next()  # the first SMU message of the train (the list upload) is lost
    cells = [(r, r) for r in range(8)]
    result = rig.pulse_train(cells, [1.2] * 8, 1e-5)
    assert rig.trains_recovered == 1
    assert truth(lab).pulses_applied - pulses_before == 8  # sent again, applied once
    assert board.triggers_received - triggers_before == 8
    np.testing.assert_allclose(
        result.conductance_s, truth(lab).conductance()[range(8), range(8)], rtol=0.06
    )


def test_recover_when_the_smu_drops_mid_train(rig_and_lab, monkeypatch):
    rig, lab = rig_and_lab
    server = lab.instruments["smu"].servers[0]
    original = rig.smu.start_visits

    device = smu_device(lab)
    armed = []

    def start_then_drop() -> None:
        original()
        if not armed:  # once the SMU runs the train, its next message (a status poll) is lost
            deadline = time.monotonic() + 2
            while not device.runner.running and time.monotonic() < deadline:
                time.sleep(0.001)
            server.faults.drop_next()
            armed.append(True)

    monkeypatch.setattr(rig.smu, "start_visits", start_then_drop)
    pulses_before = truth(lab).pulses_applied
    cells = [(r, 7 - r) for r in range(8)]
    result = rig.pulse_train(cells, [1.25] * 8, 1e-5)
    assert rig.trains_recovered == 1
    assert truth(lab).pulses_applied - pulses_before == 8
    np.testing.assert_allclose(
        result.conductance_s,
        truth(lab).conductance()[range(8), [7 - r for r in range(8)]],
        rtol=0.06,
    )
    monkeypatch.undo()
    assert rig.read((0, 0)) > 0  # the rig carries on


def test_safe_shutdown_on_every_exit_path():
    with rig_lab() as (config, lab):
        smu, board = smu_device(lab), lab.instruments["selector"].servers[0].device
        with open_rig(config) as rig:
            rig.read((1, 1))
            assert smu.output and board.route.kind == "cell"
        assert not smu.output and board.route.kind == "open"  # normal exit
        rig = open_rig(config)
        rig.read((1, 1))
        lab.instruments["selector"].servers[0].faults.garbage_next()
        with pytest.raises(MalformedReply):
            rig.read((2, 2))  # an error mid-operation
        assert not smu.output and board.route.kind == "open"
        with pytest.raises(KeyboardInterrupt), rig:  # an interrupt inside the with
            rig.read((3, 3))
            raise KeyboardInterrupt
        assert not smu.output and board.route.kind == "open"


def test_second_smu_model_behind_the_same_interface():
    with rig_lab(smu_model="keysight_b2900") as (config, lab), open_rig(config) as rig:
        assert rig.smu.identify().model == "B2902A"
        assert rig.read((0, 1)) == pytest.approx(truth(lab).conductance()[0, 1], rel=0.05)
        up = rig.pulse_train([(3, 3)] * 4, [1.1] * 4, 2e-4)
        assert up.conductance_s[-1] > up.conductance_s[0]
        np.testing.assert_allclose(rig.read_array(), truth(lab).conductance(), rtol=0.06)


def test_passive_array_reads_are_wrong_the_way_real_ones_are():
    options = {"architecture": "passive", "bias": "v/2"}
    with rig_lab(**options) as (config, lab), open_rig(config) as rig:
        g_true = truth(lab).conductance()
        half = rig.read_array()
        sneak = 0.5 * (g_true.sum(axis=0)[None, :] - g_true)
        np.testing.assert_allclose(half, g_true + sneak, rtol=0.08)
        assert np.all(half > 1.5 * g_true)
        rig.selector.bias = "ground"
        np.testing.assert_allclose(rig.read_array(), g_true, rtol=0.06)


def test_compliance_is_reported_per_reading():
    with rig_lab() as (config, lab):
        tight = dataclasses.replace(
            config,
            technology={
                **config.technology,
                "rram": dataclasses.replace(config.technology["rram"], compliance_a=2e-6),
            },
        )
        with open_rig(tight) as rig:
            result = rig.read_cells([(r, c) for r in range(8) for c in range(8)])
            g_true = truth(lab).conductance().ravel()
            limited = g_true * rig.limits.read_voltage_v > 2e-6 * 1.05
            assert result.compliance[limited].all()
            np.testing.assert_allclose(result.current_a[limited], 2e-6, rtol=0.02)
            assert not result.compliance[g_true * rig.limits.read_voltage_v < 2e-6 * 0.9].any()


def test_selector_reachable_on_socket_url_and_identified_like_doctor_does():
    with rig_lab() as (_, lab):
        selector = lab.instruments["selector"]
        with SCPIInstrument.open(selector.resource, timeout_s=2) as inst:
            assert inst.identify().model == "XBAR-SELECTOR"
        with CrossbarSelector.open(selector.servers[1].serial_url, timeout_s=2) as sel:
            assert sel.size() == (8, 8)
            sel.select_cell(7, 7)
            assert sel.route() == "CELL,7,7"
        smu = lab.instruments["smu"]
        with SCPIInstrument.open(smu.resource, timeout_s=2) as inst:
            assert inst.identify().model == "MODEL 2450"


def test_open_rig_checks_the_configuration():
    with rig_lab() as (config, _):
        wrong_size = dataclasses.replace(config, crossbar=CrossbarConfig(rows=64, cols=64))
        with pytest.raises(ConfigError, match="8x8"):
            open_rig(wrong_size)
        swapped = config.with_instruments(
            {"smu": InstrumentConfig("crossbar_selector", config.instrument("selector").resource)}
        )
        with pytest.raises(ConfigError, match="not an SMU"):
            open_rig(swapped)
    limits = safety_limits(load(), "pcm")
    assert (limits.max_voltage_v, limits.read_voltage_v) == (5.0, 0.2)


def test_reference_resistors_and_a_list_sweep_over_the_wire(rig_and_lab):
    rig, lab = rig_and_lab
    board = lab.instruments["selector"].servers[0].device
    reading = rig.read_reference(2)
    assert rig.limits.read_voltage_v / reading.current_a == pytest.approx(10e3, rel=0.01)
    levels = [-0.4, -0.2, 0.0, 0.2, 0.4]
    sweep = rig.smu.list_sweep(levels, delay_s=1e-4)
    slope = np.polyfit(levels, [r.current_a for r in sweep], 1)[0]
    assert 1 / slope == pytest.approx(board.reference_ohm[1], rel=0.005)  # within the SMU's gain
    assert not smu_device(lab).output
    rig.selector.ground_all()


def test_recover_when_the_selector_cable_is_unplugged_after_a_train(rig_and_lab, monkeypatch):
    rig, lab = rig_and_lab
    pty = lab.instruments["selector"].servers[0]
    original = rig.smu.finish_visits

    def finish_then_unplug(plan, timeout_s):
        readings = original(plan, timeout_s)
        pty.replug()  # the selector's serial link goes away before the rig checks the scan
        return readings

    monkeypatch.setattr(rig.smu, "finish_visits", finish_then_unplug)
    pulses_before = truth(lab).pulses_applied
    result = rig.pulse_train([(4, c) for c in range(8)], [1.2] * 8, 1e-5)
    monkeypatch.undo()
    assert rig.trains_recovered == 1
    assert truth(lab).pulses_applied - pulses_before == 8
    np.testing.assert_allclose(result.conductance_s, truth(lab).conductance()[4], rtol=0.06)
    assert rig.read((4, 4)) > 0


def test_two_threads_share_one_rig_one_train_at_a_time(rig_and_lab):
    rig, lab = rig_and_lab
    pulses_before = truth(lab).pulses_applied
    results: dict[int, Any] = {}

    def work(row: int) -> None:
        results[row] = rig.pulse_train([(row, c) for c in range(8)], [1.2] * 8, 1e-5)

    threads = [threading.Thread(target=work, args=(row,)) for row in (2, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [2, 6]
    assert truth(lab).pulses_applied - pulses_before == 16
    for row, result in results.items():
        assert result.cells == tuple((row, c) for c in range(8))
        assert np.isfinite(result.conductance_s).all()


@pytest.mark.parametrize(
    ("technology", "program_v", "width_s", "undo_v", "direction"),
    [
        ("pcm", 2.0, 1e-5, 3.5, +1),  # partial SET up; one RESET pulse down
        ("mram", 0.7, 1e-5, -0.9, +1),  # AP -> P up; P -> AP down
        ("flash", 15.5, 1e-4, -18.0, -1),  # ISPP raises V_th (G down); block erase undoes
    ],
)
def test_each_technology_is_programmed_over_the_wire(
    technology, program_v, width_s, undo_v, direction
):
    with rig_lab(technology=technology) as (config, lab), open_rig(config) as rig:
        cell = (1, 6)
        if technology == "mram":
            rig.pulse(cell, -0.9, 1e-4)  # start from all junctions antiparallel
        before = rig.read(cell)
        after = rig.pulse_train([cell] * 4, [program_v] * 4, width_s).conductance_s[-1]
        assert direction * (after - before) > 0.3 * before
        assert after == pytest.approx(truth(lab).conductance()[cell], rel=0.1)
        rig.pulse(cell, undo_v, 1e-3 if technology == "flash" else width_s)
        undone = rig.read(cell)
        assert direction * (after - undone) > 0.3 * abs(after - before)


def test_recover_when_the_selector_drops_before_arming(rig_and_lab, monkeypatch):
    rig, lab = rig_and_lab
    pty = lab.instruments["selector"].servers[0]
    original = rig.selector.arm_scan
    calls = []

    def unplug_then_arm() -> None:
        calls.append(1)
        if len(calls) == 1:
            pty.replug()  # the SMU already waits for ready; the arm command is lost
        original()

    monkeypatch.setattr(rig.selector, "arm_scan", unplug_then_arm)
    pulses_before = truth(lab).pulses_applied
    result = rig.pulse_train([(0, c) for c in range(8)], [1.2] * 8, 1e-5)
    assert rig.trains_recovered == 1 and len(calls) == 2
    assert truth(lab).pulses_applied - pulses_before == 8
    np.testing.assert_allclose(result.conductance_s, truth(lab).conductance()[0], rtol=0.06)
