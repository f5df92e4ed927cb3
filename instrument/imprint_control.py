"""Run ``brainpaste imprint`` as a child process that a front end can pause, continue and
abort — the command line's own operation, not a second implementation of it.

- **pause** freezes the process (SIGSTOP) wherever it is: the rig finishes any train
  already sent and waits; **continue** (SIGCONT) carries on exactly there. For a short
  halt; the instruments stay as they are.
- **abort** asks the run to stop (SIGINT: the command closes the rigs, outputs off, and
  the journal, as after Ctrl-C), and kills it if it has not stopped after ``grace_s``.
  The journal in the session file survives either way (it is built to survive ``kill
  -9``); **resume** starts ``brainpaste imprint --resume``, which continues from it
  without pulsing a verified cell again.

Progress is read from the journal itself (:mod:`instrument.imprint_progress`). The
command's output goes to ``imprint.log`` next to the session file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from instrument.config import LabConfig

log = logging.getLogger(__name__)


class ImprintControlError(RuntimeError):
    """The imprint process cannot do what was asked in its present state."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} as TOML")


def _toml_tables(name: str, table: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    for key, value in nested:
        lines.extend(_toml_tables(f"{name}.{key}", value))
    return lines


def lab_toml(config: LabConfig) -> str:
    """``config`` as a lab file — every table, as the configuration holds it now (built in
    code or read from a file) — for a child process to load."""
    lines = [f"# written by brainpaste for a child process ({config.source or 'built in code'})"]
    lines += _toml_tables("lab", dataclasses.asdict(config.lab))
    lines += _toml_tables("crossbar", dataclasses.asdict(config.crossbar))
    for name, tech in config.technology.items():
        lines += _toml_tables(f"technology.{name}", dataclasses.asdict(tech))
    for name, inst in config.instruments.items():
        lines += _toml_tables(f"instruments.{name}", dataclasses.asdict(inst))
    for name, table in config.sections.items():
        lines += _toml_tables(name, table)
    return "\n".join(lines)


class ImprintProcess:
    """One ``brainpaste imprint`` run of one session, as a child process."""

    def __init__(
        self,
        session_file: str | Path,
        config: LabConfig,
        technology: str,
        *,
        resume: bool = False,
        restart: bool = False,
        python: str = sys.executable,
    ) -> None:
        self.session_file = Path(session_file)
        self.technology = technology
        self.resume = resume
        self.log_path = self.session_file.with_name("imprint.log")
        self.paused = False
        self.aborted = False
        fd, name = tempfile.mkstemp(prefix="brainpaste-imprint-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(lab_toml(config))
        self.lab_file = Path(name)
        """The lab file the child reads (removed when it ends)."""
        argv = [
            python,
            "-m",
            "instrument.cli",
            "imprint",
            str(self.session_file),
            "--config",
            str(self.lab_file),
            "--technology",
            technology,
            "--no-progress",
        ]
        if resume:
            argv.append("--resume")
        if restart:
            argv.append("--restart")
        self.argv = argv
        self._log = open(self.log_path, "a")  # noqa: SIM115 (closed with the process)
        self._log.write(f"\n$ brainpaste {' '.join(argv[3:])}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the GUI's terminal is not the run's
        )
        log.info("imprint started (pid %d): %s", self.proc.pid, " ".join(argv[3:]))

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._cleanup()
        return code

    def pause(self) -> None:
        """Freeze the run where it is."""
        if not self.running:
            raise ImprintControlError("the imprint is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        log.info("imprint paused (pid %d)", self.proc.pid)

    def proceed(self) -> None:
        """Continue a paused run."""
        if not self.running:
            raise ImprintControlError("the imprint is not running")
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False
        log.info("imprint continues (pid %d)", self.proc.pid)

    def abort(self, grace_s: float = 15.0) -> int:
        """Stop the run (outputs off, journal closed); killed after ``grace_s`` if it has
        not stopped. Returns its exit status. Blocks: call it off the GUI thread."""
        if not self.running:
            return self.returncode or 0
        self.aborted = True
        if self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("imprint did not stop within %g s: killed (the journal survives)", grace_s)
            self.proc.kill()
            code = self.proc.wait(10)
        log.info("imprint aborted (exit %s)", code)
        self._cleanup()
        return code

    def wait(self, timeout_s: float | None = None) -> int:
        code = self.proc.wait(timeout_s)
        self._cleanup()
        return code

    def output(self, max_chars: int = 4000) -> str:
        """The end of the command's output so far."""
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-max_chars:]

    def _cleanup(self) -> None:
        if not self._log.closed:
            self._log.close()
        with contextlib.suppress(OSError):
            self.lab_file.unlink()
