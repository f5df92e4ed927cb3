"""The command line: version, help, logging option, doctor."""

from __future__ import annotations

import subprocess
import sys

import pytest

import instrument
from instrument.cli import build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert instrument.__version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "doctor" in capsys.readouterr().out


def test_subcommands_are_discovered():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"doctor", "sim"} <= set(choices)


def test_log_level_is_validated():
    with pytest.raises(SystemExit):
        main(["--log-level", "LOUD", "doctor"])


def test_console_script_runs_doctor():
    proc = subprocess.run(
        [sys.executable, "-m", "instrument.cli", "--log-level", "INFO", "doctor", "--no-scan"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "VISA backends" in proc.stdout
    assert "Emulated lab" in proc.stdout
    assert "PySide6-Essentials" in proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
