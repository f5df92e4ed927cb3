"""Run ``brainpaste imprint`` as a child process (:mod:`instrument.child_command`) that a
front end can pause, continue and abort — the command line's own operation.

- **pause** freezes the run (SIGSTOP) wherever it is: the rig finishes any train already
  sent and waits; **continue** carries on exactly there. For a short halt; the instruments
  stay as they are.
- **abort** asks the run to stop (SIGINT: the command closes the rigs, outputs off, and
  the journal, as after Ctrl-C), and kills it if it has not stopped after ``grace_s``.
  The journal in the session file survives either way (it is built to survive ``kill
  -9``); **resume** starts ``brainpaste imprint --resume``, which continues from it
  without pulsing a verified cell again.

Progress is read from the journal itself (:mod:`instrument.imprint_progress`). The
command's output goes to ``imprint.log`` next to the session file; the child reads the
lab configuration from a temporary lab file written from the configuration in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from instrument.child_command import ChildCommand
from instrument.config import LabConfig


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


class ImprintProcess(ChildCommand):
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
        fd, name = tempfile.mkstemp(prefix="brainpaste-imprint-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(lab_toml(config))
        self.lab_file = Path(name)
        """The lab file the child reads (removed when it ends)."""
        args = [
            "imprint",
            str(self.session_file),
            "--config",
            str(self.lab_file),
            "--technology",
            technology,
            "--no-progress",
        ]
        args += ["--resume"] if resume else []
        args += ["--restart"] if restart else []
        try:
            super().__init__(args, self.session_file.with_name("imprint.log"), python=python)
        except BaseException:
            self.lab_file.unlink(missing_ok=True)
            raise

    @property
    def aborted(self) -> bool:
        return self.stopped

    def abort(self, grace_s: float = 15.0) -> int:
        """Stop the run (outputs off, journal closed); see :meth:`ChildCommand.stop`."""
        return self.stop(grace_s)

    def _ended(self) -> None:
        super()._ended()
        with contextlib.suppress(OSError):
            self.lab_file.unlink()
