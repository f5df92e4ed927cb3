"""The whole emulated lab, started with one call: every instrument emulator on its real wire.

``with EmulatedLab(LabSettings(seed=1)) as lab: lab.instruments["smu"].resource``
gives resource strings a driver opens exactly as it would a bench instrument.
Everything binds 127.0.0.1 and picks free ports; :meth:`EmulatedLab.stop`
stops every server and thread.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from hil_sim.line_server import LineServer

log = logging.getLogger(__name__)


@dataclass
class LabSettings:
    """How the emulated lab behaves (seeded: the same settings give the same lab)."""

    seed: int = 1
    latency_s: float = 0.0
    """Added to every control exchange of every instrument, s."""
    options: dict[str, Any] = field(default_factory=dict)
    """Per-instrument options, keyed by instrument name (see each builder)."""


@dataclass
class EmulatedInstrument:
    """One running emulator and how to reach it."""

    name: str
    driver: str
    """The driver that talks to it (as named in the lab configuration)."""
    resource: str
    """VISA resource string or pyserial URL."""
    servers: list[LineServer]
    data_port: int = 0
    timeout_s: float = 5.0
    """Reply timeout a client should use, s (longer where the emulator may be busy building
    its physics on a loaded machine)."""
    model: Any = None
    """The emulator object (physics and state), for tests and ground truth."""


Builder = Callable[["EmulatedLab"], None]
BUILDERS: list[Builder] = []
"""Functions that each start one instrument of the lab (registered by instrument modules)."""


class EmulatedLab:
    """Starts, lists and stops the emulated instruments."""

    def __init__(self, settings: LabSettings | None = None) -> None:
        self.settings = settings or LabSettings()
        self.instruments: dict[str, EmulatedInstrument] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="brainpaste-lab-")
        self.workdir = Path(self._tmp.name)
        """Scratch folder (pty links) removed at stop."""
        self._closers: list[Callable[[], None]] = []

    def add(self, instrument: EmulatedInstrument) -> None:
        """Register a started instrument (called by builders)."""
        self.instruments[instrument.name] = instrument
        for server in instrument.servers:
            server.faults.latency_s = max(server.faults.latency_s, self.settings.latency_s)
        log.info("emulated %s (%s) at %s", instrument.name, instrument.driver, instrument.resource)

    def on_stop(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the lab stops (for emulator threads that are not servers)."""
        self._closers.append(closer)

    def start(self) -> Self:
        """Start every instrument; on any failure, stop what started and re-raise."""
        try:
            for build in BUILDERS:
                build(self)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every emulator; safe to call twice."""
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                log.exception("emulated lab: closer failed")
        self._closers.clear()
        for instrument in self.instruments.values():
            for server in instrument.servers:
                server.stop()
        self.instruments.clear()
        self._tmp.cleanup()

    def resources_toml(self) -> str:
        """The ``[instruments.*]`` tables a user pastes into a lab configuration."""
        out = []
        for inst in self.instruments.values():
            out.append(f"[instruments.{inst.name}]")
            out.append(f'driver = "{inst.driver}"')
            out.append(f'resource = "{inst.resource}"')
            if inst.data_port:
                out.append(f"data_port = {inst.data_port}")
            out.append("")
        return "\n".join(out)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the lab's instruments: each module holds its builder (imported last: they import us) -----
from hil_sim.rig import start_rig  # noqa: E402

BUILDERS.append(start_rig)

from hil_sim.line_driver import build_line_drivers  # noqa: E402  (after the rigs: it uses them)

BUILDERS.append(build_line_drivers)

from hil_sim.cnea_board import build_cnea  # noqa: E402

BUILDERS.append(build_cnea)
