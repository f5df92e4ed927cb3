"""The analog side every emulated SMU shares: source, clamp, measure, time, trigger lines.

No wire and no command parsing here (that is each model's ``ScpiDevice``):

* :class:`Load` — what the SMU terminals are connected to (the selector board).
* :class:`HiddenErrors` — the instrument's true gain/offset errors, seeded, which
  only the emulator knows and calibration has to recover.
* :class:`SourceMeasure` — forces a voltage through the hidden errors, clamps at
  the current limit (compliance), holds a level for a time (programming the load),
  measures with noise and reports whether the limit was hit.
* :class:`Timing` and :class:`Pacer` — how long pulses and readings take, and
  real-time pacing of a sequence so the emulator is as slow as the instrument.
* :class:`TriggerLines` — digital I/O trigger lines: outputs drive wired callbacks
  (the trigger link to the selector), inputs latch events a sequence waits for.
* :class:`SequenceRunner` — the thread on which an armed sequence runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Load(Protocol):
    """What is connected between the SMU's HI and LO terminals."""

    def current(self, v: float) -> float:
        """Current at ``v`` (noise-free, no side effects), A."""
        ...

    def read(self, v: float) -> float:
        """One reading of the current at ``v`` (with the load's own noise), A."""
        ...

    def pulse(self, v: float, width_s: float) -> float:
        """Hold ``v`` for ``width_s`` (may change the load); current at the start, A."""
        ...


class OpenCircuit:
    """Nothing connected: no current."""

    def current(self, v: float) -> float:
        return 0.0

    def read(self, v: float) -> float:
        return 0.0

    def pulse(self, v: float, width_s: float) -> float:
        return 0.0


@dataclass(frozen=True)
class HiddenErrors:
    """True source and measure errors of one emulated SMU (reading = gain * true + offset)."""

    voltage_gain: float = 1.0
    voltage_offset_v: float = 0.0
    current_gain: float = 1.0
    current_offset_a: float = 0.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> HiddenErrors:
        """Gains within 1 +/- 0.2 %, offsets of a few mV and a few nA (seeded)."""
        return cls(
            voltage_gain=1.0 + float(rng.uniform(-0.002, 0.002)),
            voltage_offset_v=float(rng.uniform(-3e-3, 3e-3)),
            current_gain=1.0 + float(rng.uniform(-0.002, 0.002)),
            current_offset_a=float(rng.uniform(-5e-9, 5e-9)),
        )


@dataclass
class Timing:
    """How long the instrument takes, s.

    A pulse costs its width plus the source settling time; a reading costs the
    settling time plus the integration aperture (NPLC / line frequency, e.g.
    NPLC 0.01 at 50 Hz = 0.2 ms). ``pulse_time_s`` / ``reading_time_s`` replace
    those formulas when set (a slower instrument, or a faster test).
    """

    settle_s: float = 50e-6
    line_frequency_hz: float = 50.0
    pulse_time_s: float | None = None
    reading_time_s: float | None = None

    def aperture(self, nplc: float) -> float:
        """Integration time of one reading, s."""
        return nplc / self.line_frequency_hz

    def pulse_time(self, width_s: float) -> float:
        """Wall time of one pulse of ``width_s``, s."""
        return self.pulse_time_s if self.pulse_time_s is not None else width_s + self.settle_s

    def reading_time(self, nplc: float) -> float:
        """Wall time of one reading at ``nplc``, s."""
        if self.reading_time_s is not None:
            return self.reading_time_s
        return self.settle_s + self.aperture(nplc)


class Pacer:
    """Makes a sequence take real time: instrument time is spent, sleeping in >= 1 ms slices."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.start = time.monotonic()
        self.elapsed = 0.0
        """Instrument time spent so far, s."""

    def spend(self, seconds: float) -> None:
        """Account ``seconds`` of instrument time; sleep once the backlog passes 1 ms."""
        self.elapsed += max(seconds, 0.0)
        ahead = self.start + self.elapsed - time.monotonic()
        if ahead > 1e-3:
            self.stop.wait(ahead)

    def flush(self) -> None:
        """Sleep off whatever instrument time is still ahead of the wall clock."""
        ahead = self.start + self.elapsed - time.monotonic()
        if ahead > 0:
            self.stop.wait(ahead)

    def resync(self) -> None:
        """After waiting in real time (for an external event), continue from now."""
        now = time.monotonic()
        if self.start + self.elapsed < now:
            self.elapsed = now - self.start


@dataclass
class Reading:
    """One measurement as the instrument holds it."""

    current_a: float
    source_v: float
    limited: bool
    """The source hit its current limit (compliance) for this point."""
    overflow: bool = False
    time_s: float = 0.0


@dataclass
class SourceMeasure:
    """Forces a voltage, clamps at the current limit, measures the current."""

    rng: np.random.Generator
    errors: HiddenErrors = field(default_factory=HiddenErrors)
    load: Load = field(default_factory=OpenCircuit)
    noise_floor_a: float = 3e-12
    """Current noise at NPLC 1, A (it grows as 1/sqrt(NPLC))."""
    noise_relative: float = 2e-6

    def true_voltage(self, v_set: float) -> float:
        """What actually appears at the terminals for a programmed ``v_set``, V."""
        if v_set == 0.0:
            return 0.0
        return v_set * self.errors.voltage_gain + self.errors.voltage_offset_v

    def force(self, v_set: float, ilim: float) -> tuple[float, bool]:
        """The terminal voltage after the current clamp, and whether the clamp acted."""
        v = self.true_voltage(v_set)
        i = self.load.current(v)
        if abs(i) > ilim > 0:
            return v * ilim / abs(i), True
        return v, False

    def hold(self, v_set: float, ilim: float, width_s: float) -> bool:
        """Hold ``v_set`` for ``width_s`` (a pulse); True when the current limit acted."""
        v, limited = self.force(v_set, ilim)
        if v != 0.0 and width_s > 0:
            self.load.pulse(v, width_s)
        return limited

    def measure(
        self, v_set: float, ilim: float, nplc: float, current_range: float | None = None
    ) -> Reading:
        """One current reading at ``v_set`` (``current_range`` None: auto-range)."""
        v, limited = self.force(v_set, ilim)
        i_true = self.load.read(v) if v != 0.0 else 0.0
        if limited:
            i_true = float(np.sign(i_true) or 1.0) * ilim
        sigma = (self.noise_floor_a + self.noise_relative * abs(i_true)) / np.sqrt(max(nplc, 1e-3))
        reading = (
            i_true * self.errors.current_gain
            + self.errors.current_offset_a
            + float(sigma * self.rng.standard_normal())
        )
        overflow = current_range is not None and abs(reading) > 1.05 * current_range
        return Reading(reading, v_set, limited, overflow)


class TriggerLines:
    """Digital I/O trigger lines of one instrument (numbered from 1)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._outputs: dict[int, Callable[[], None]] = {}
        self._pending: dict[int, list[float]] = {n: [] for n in range(1, count + 1)}
        self._cond = threading.Condition()
        self.pulses_out: dict[int, int] = {n: 0 for n in range(1, count + 1)}

    def check(self, line: int) -> None:
        if not 1 <= line <= self.count:
            raise ValueError(f"line {line} outside 1..{self.count}")

    def wire_output(self, line: int, callback: Callable[[], None] | None) -> None:
        """Connect output ``line`` to ``callback`` (called on every output pulse)."""
        self.check(line)
        if callback is None:
            self._outputs.pop(line, None)
        else:
            self._outputs[line] = callback

    def pulse_output(self, line: int) -> None:
        """Assert output ``line`` once."""
        self.check(line)
        self.pulses_out[line] += 1
        callback = self._outputs.get(line)
        if callback is not None:
            callback()

    def input_event(self, line: int, delay_s: float = 0.0) -> None:
        """An edge arrived on input ``line`` (``delay_s`` after the moment of the call)."""
        self.check(line)
        with self._cond:
            self._pending[line].append(delay_s)
            self._cond.notify_all()

    def clear(self, line: int) -> None:
        """Forget edges already latched on ``line``."""
        with self._cond:
            self._pending[line].clear()

    def wait(self, line: int, stop: threading.Event) -> float | None:
        """Wait for one edge on ``line``; its delay, or None when ``stop`` is set first."""
        with self._cond:
            while not self._pending[line]:
                if stop.is_set():
                    return None
                self._cond.wait(0.02)
            return self._pending[line].pop(0)


class SequenceRunner:
    """Runs one armed sequence at a time on a daemon thread; abortable; waitable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.abort_event = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return not self.idle.is_set()

    def start(self, target: Callable[[], None]) -> None:
        """Run ``target`` on the sequence thread (the previous run must have finished)."""
        if self.running:
            raise RuntimeError("a sequence is already running")
        self.abort_event.clear()
        self.idle.clear()

        def run() -> None:
            try:
                target()
            finally:
                self.idle.set()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def abort(self, timeout_s: float = 5.0) -> None:
        """Stop the running sequence and wait for its thread."""
        self.abort_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until no sequence runs; False on timeout."""
        return self.idle.wait(timeout_s)
