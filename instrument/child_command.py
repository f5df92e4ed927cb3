"""A ``brainpaste`` command run as a child process that a front end can pause, continue and
stop — so the GUI runs the command line's own operations (extract, imprint), not second
implementations of them, and never waits on them.

- **pause** freezes the process (SIGSTOP) wherever it is; **continue** (SIGCONT) carries
  on exactly there.
- **stop** asks the command to end (SIGINT: it cleans up as after Ctrl-C) and kills it if
  it has not ended after a grace period.

The command's output goes to a log file (appended), readable while it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class ChildCommandError(RuntimeError):
    """The child command cannot do what was asked in its present state."""


class ChildCommand:
    """``brainpaste <args>`` in a child process, output appended to ``log_path``."""

    def __init__(
        self, args: Sequence[str], log_path: str | Path, *, python: str = sys.executable
    ) -> None:
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.paused = False
        self.stopped = False
        """Stopped on request (:meth:`stop`)."""
        self._log = open(self.log_path, "a")  # noqa: SIM115 (closed when the child ends)
        self._log.write(f"\n$ brainpaste {' '.join(self.args)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            [python, "-m", "instrument.cli", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the GUI's terminal is not the child's
        )
        log.info("started (pid %d): brainpaste %s", self.proc.pid, " ".join(self.args))

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._ended()
        return code

    def pause(self) -> None:
        """Freeze the command where it is."""
        if not self.running:
            raise ChildCommandError(f"brainpaste {self.args[0]} is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        log.info("paused (pid %d)", self.proc.pid)

    def proceed(self) -> None:
        """Continue a paused command."""
        if not self.running:
            raise ChildCommandError(f"brainpaste {self.args[0]} is not running")
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False
        log.info("continues (pid %d)", self.proc.pid)

    def stop(self, grace_s: float = 15.0) -> int:
        """Ask the command to end (SIGINT), kill it after ``grace_s``; its exit status.
        Blocks: call it off the GUI thread."""
        if not self.running:
            return self.returncode or 0
        self.stopped = True
        if self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("brainpaste %s did not end within %g s: killed", self.args[0], grace_s)
            self.proc.kill()
            code = self.proc.wait(10)
        log.info("brainpaste %s stopped (exit %s)", self.args[0], code)
        self._ended()
        return code

    def wait(self, timeout_s: float | None = None) -> int:
        code = self.proc.wait(timeout_s)
        self._ended()
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

    def _ended(self) -> None:
        if not self._log.closed:
            self._log.close()
