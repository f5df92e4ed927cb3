"""The session loop: resumable stages, bounded retries then a clean pause, outputs left off,
and ``brainpaste run --sim`` end to end (then resumed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.errors import ConnectionLost, SafetyLimitError
from drivers.keithley2450 import Keithley2450
from instrument.config import load
from instrument.connect import make_safe
from instrument.embedded_lab import embedded_lab
from instrument.session import (
    STATE_FILE,
    RunOptions,
    Session,
    SessionFailed,
    SessionPaused,
    SessionState,
)
from instrument.session_stages import stage_check, stage_record

FAST = RunOptions(retries=3, retry_delay_s=0.01, progress=False, duration_s=2.0)


class Stages:
    """Fake stages that count their calls; ``plan`` says what each call does."""

    def __init__(self, plan: dict[str, list[object]]) -> None:
        self.plan = plan
        self.calls: list[str] = []
        self.safe_calls = 0

    def fn(self, name: str):
        def stage(ctx):
            self.calls.append(name)
            todo = self.plan.get(name, [])
            action = todo.pop(0) if todo else "ok"
            if isinstance(action, BaseException):
                raise action
            return {"stage": name}

        return stage

    def functions(self) -> dict:
        return {n: self.fn(n) for n in ("check", "record", "extract", "report")}

    def safe(self) -> dict[str, str]:
        self.safe_calls += 1
        return {"smu": "safe"}


def test_stages_run_in_order_and_a_rerun_skips_what_is_done(tmp_path):
    stages = Stages({})
    state = Session(tmp_path, load(), FAST, stages.functions(), stages.safe).run()
    assert stages.calls == ["check", "record", "extract", "report"]
    assert all(state.stages[n].status == "done" for n in stages.calls)
    assert json.loads((tmp_path / STATE_FILE).read_text())["stages"]["record"]["status"] == "done"
    assert (tmp_path / "session.log").read_text().count("done in") == 4
    again = Stages({})
    Session(tmp_path, load(), FAST, again.functions(), again.safe).run()
    assert again.calls == [] and again.safe_calls == 0


def test_a_lost_instrument_is_retried_then_the_session_pauses_and_resumes(tmp_path):
    lost = ConnectionLost("board gone")
    stages = Stages({"record": [lost, lost, lost]})
    with pytest.raises(SessionPaused, match="rerun with --out"):
        Session(tmp_path, load(), FAST, stages.functions(), stages.safe).run()
    assert stages.calls == ["check", "record", "record", "record"]
    assert stages.safe_calls == 2  # before running, and after stopping
    state = SessionState.load(tmp_path)
    assert state.stages["record"].status == "paused"
    assert "board gone" in state.stages["record"].error
    assert state.stages["extract"].status == "pending"
    resumed = Stages({"record": [lost]})  # comes back on the second attempt
    state = Session(tmp_path, load(), FAST, resumed.functions(), resumed.safe).run()
    assert resumed.calls == ["record", "record", "extract", "report"]
    assert state.stages["record"].attempts == 5
    assert state.stages["check"].attempts == 1


def test_a_safety_refusal_fails_at_once_and_interrupt_leaves_a_truthful_state(tmp_path):
    stages = Stages({"extract": [SafetyLimitError("4 V > 3 V")]})
    with pytest.raises(SessionFailed, match="4 V > 3 V"):
        Session(tmp_path, load(), FAST, stages.functions(), stages.safe).run()
    assert stages.calls.count("extract") == 1
    assert SessionState.load(tmp_path).stages["extract"].status == "failed"
    stages = Stages({"extract": [KeyboardInterrupt()]})
    with pytest.raises(KeyboardInterrupt):
        Session(tmp_path, load(), FAST, stages.functions(), stages.safe).run()
    assert SessionState.load(tmp_path).stages["extract"].status == "paused"


def test_an_unreadable_state_file_is_a_clear_failure(tmp_path):
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(SessionFailed, match="not a session state file"):
        Session(tmp_path, load(), FAST, Stages({}).functions()).run()


def test_board_offline_pauses_with_outputs_off_then_the_rerun_records(tmp_path):
    with embedded_lab(options={"cnea": {"rate": "max"}, "rig": {"rows": 8, "cols": 8}}) as (
        config,
        lab,
    ):
        with Keithley2450.open(config.instrument("smu").resource, timeout_s=2) as smu:
            smu.write(":OUTP ON")  # as if a killed run had left it on
        smu_device = lab.instruments["smu"].servers[0].device
        assert smu_device.output
        lab.instruments["cnea"].servers[0].faults.go_offline(600)
        stages = {"check": stage_check, "record": stage_record}
        session = Session(tmp_path, config, FAST, stages, lambda: make_safe(config))
        with pytest.raises(SessionPaused, match="check"):
            session.run()
        assert not smu_device.output, "the SMU output was left on"
        state = SessionState.load(tmp_path)
        assert state.stages["check"].status == "paused"
        assert "cnea" in state.stages["check"].error
        lab.instruments["cnea"].servers[0].faults.clear()
        state = session.run()
        assert state.stages["record"].status == "done"
        assert state.stages["record"].figures["frames_lost"] == 0
        assert (tmp_path / "session.h5").exists()


@pytest.mark.slow
def test_run_sim_whole_loop_in_two_invocations(tmp_path):
    out = tmp_path / "session"
    base = [
        sys.executable,
        "-m",
        "instrument.cli",
        "run",
        "--sim",
        "--out",
        str(out),
        "--json",
        "--no-progress",
        "--rigs",
        "1",
    ]
    first = subprocess.run(
        [*base, "--duration", "8", "--until", "extract"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    stages = summary["stages"]
    assert [stages[n]["status"] for n in ("check", "calibrate", "record", "extract")] == [
        "done"
    ] * 4
    assert stages["imprint"]["status"] == "pending"
    assert stages["record"]["figures"]["frames_lost"] == 0
    assert stages["extract"]["figures"]["connections"] > 0
    assert "precision" in stages["extract"]["figures"]["scores"]

    second = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    stages = json.loads(second.stdout)["stages"]
    assert all(s["status"] == "done" for s in stages.values())
    assert stages["record"]["attempts"] == 1  # not recorded again
    assert stages["imprint"]["figures"]["yield_programmable"] > 0.99
    report = Path(json.loads(second.stdout)["report"])
    html = report.read_text()
    assert html.count("<img") >= 5
    assert "Scores against the emulator" in html


def test_mixed_bench_and_emulated_instruments(tmp_path):
    """--sim with a lab file: the board the file names is used (here another lab's, as a
    real one would be), the instruments it does not name are emulated."""
    with embedded_lab(seed=5, options={"cnea": {"rate": "max"}, "rig": {"rows": 8, "cols": 8}}) as (
        _bench_config,
        bench,
    ):
        board = bench.instruments["cnea"]
        lab_toml = tmp_path / "lab.toml"
        lab_toml.write_text(
            f'[instruments.cnea]\ndriver = "cnea_board"\nresource = "{board.resource}"\n'
            f"data_port = {board.data_port}\n[crossbar]\nrows = 8\ncols = 8\n"
        )
        handled_before = board.servers[0].lines_handled
        out = tmp_path / "session"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "instrument.cli",
                "run",
                "--sim",
                "--config",
                str(lab_toml),
                "--out",
                str(out),
                "--until",
                "record",
                "--duration",
                "1",
                "--json",
                "--no-progress",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        identities = json.loads(proc.stdout)["stages"]["check"]["figures"]["identities"]
        assert "EMU00005" in identities["cnea"]  # the bench's board (seed 5), not the embedded one
        assert "smu" in identities  # emulated: the file names no SMU
        assert board.servers[0].lines_handled > handled_before + 10
