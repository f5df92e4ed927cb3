"""The SCPI device both emulated SMU models build on: physics, trigger lines, runner, reset.

Each model (``smu_keithley2450``, ``smu_keysight_b2900``) adds its identity, its state
(:meth:`SmuDevice.reset`) and the handlers of its command subset; the analog side lives in
:mod:`hil_sim.smu_frontend`.
"""

from __future__ import annotations

import abc
import threading

import numpy as np

from hil_sim.scpi_server import ScpiDevice, ScpiError
from hil_sim.smu_frontend import (
    HiddenErrors,
    Load,
    OpenCircuit,
    SequenceRunner,
    SourceMeasure,
    Timing,
    TriggerLines,
)


class SmuDevice(ScpiDevice, abc.ABC):
    """An emulated SMU: a :class:`SourceMeasure` on a load, trigger lines, one sequence
    thread; ``*RST`` aborts the sequence and resets the model's state."""

    identity: tuple[str, str, str, str]
    """(maker, model, serial, firmware) as ``*IDN?`` answers; the serial is replaced."""
    error_queue_capacity: int = 20
    trigger_line_count: int = 6
    runner_name: str = "smu-{serial}"
    """Name of the sequence thread (``{serial}`` filled in)."""
    busy_name: str = "sequence"
    """What the model's manual calls its running sequence (in error messages)."""

    def __init__(
        self,
        *,
        load: Load | None = None,
        rng: np.random.Generator | None = None,
        errors: HiddenErrors | None = None,
        timing: Timing | None = None,
        serial: str | None = None,
    ) -> None:
        super().__init__(error_queue_capacity=self.error_queue_capacity)
        serial = serial or self.identity[2]
        self.identity = (*self.identity[:2], serial, self.identity[3])
        rng = rng or np.random.default_rng(0)
        self.smu = SourceMeasure(rng, errors or HiddenErrors(), load or OpenCircuit())
        self.timing = timing or Timing()
        self.lines = TriggerLines(self.trigger_line_count)
        self.runner = SequenceRunner(self.runner_name.format(serial=serial))
        self._state = threading.RLock()
        self._common["*OPC?"] = lambda call: self._opc()
        self._common["*WAI"] = lambda call: self._wai()
        self._common["*RST"] = lambda call: self._rst()
        self.reset()

    @property
    def load(self) -> Load:
        """What the terminals are connected to (the selector board's routed cell)."""
        return self.smu.load

    @load.setter
    def load(self, value: Load) -> None:
        self.smu.load = value

    @abc.abstractmethod
    def reset(self) -> None:
        """The model's power-on state."""

    def _opc(self) -> str:
        """``*OPC?``: 1 once the running sequence has finished."""
        self.runner.wait()
        return "1"

    def _wai(self) -> None:
        """``*WAI``: return (no answer) once the running sequence has finished."""
        self.runner.wait()

    def _idle_required(self, what: str) -> None:
        """Refuse a setting that would change a running sequence (SCPI error -221)."""
        if self.runner.running:
            raise ScpiError(-221, f"{what} while the {self.busy_name} is running")

    def _rst(self) -> None:
        self.runner.abort()
        self.reset()

    def close(self) -> None:
        """Abort a running sequence (the lab calls this at stop)."""
        self.runner.abort()
