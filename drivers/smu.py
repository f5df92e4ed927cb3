"""The source-measure unit as the crossbar rig sees it, whatever the vendor.

A model-specific driver (:mod:`drivers.keithley2450`, :mod:`drivers.keysight_b2900`)
implements :class:`SMU`. Nothing above the drivers depends on one vendor.

The fast path is a *visit train* (:class:`VisitPlan`): for each of N visits the
SMU waits for the selector's ready line, applies an optional programming pulse
(not measured), takes an optional read at the read voltage (measured, into the
instrument's reading buffer), returns to 0 V and pulses its trigger-out line so
the selector steps to the next scan entry. The whole train runs with no computer
in the loop and costs a few messages, not one per pulse.

Wiring (on the bench as in the emulator): SMU trigger-out line → selector
trigger input; selector ready output → SMU trigger-in line.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drivers.errors import InstrumentTimeout, OutOfRangeError, SafetyLimitError
from drivers.limits import SafetyLimits
from drivers.scpi import Control


@dataclass(frozen=True)
class Reading:
    """One current reading."""

    current_a: float
    """Measured current, A."""
    voltage_v: float
    """Programmed source level, V."""
    compliance: bool
    """The source hit its current limit: the current is clamped, G is a lower bound."""


@dataclass(frozen=True)
class VisitPlan:
    """N visits, one per selector scan entry: pulse (optional), then read (optional)."""

    visits: int
    pulse_levels_v: tuple[float, ...] | None = None
    """One pulse amplitude per visit, V (None: no pulses)."""
    pulse_width_s: float = 0.0
    """Width of every pulse of the train, s."""
    read_voltage_v: float | None = None
    """Read bias after each visit's pulse, V (None: no reads)."""

    def __post_init__(self) -> None:
        if self.visits < 1:
            raise OutOfRangeError(f"a train needs at least one visit, got {self.visits}")
        if self.pulse_levels_v is None and self.read_voltage_v is None:
            raise OutOfRangeError("a visit train needs pulses, reads or both")
        if self.pulse_levels_v is not None and len(self.pulse_levels_v) != self.visits:
            raise OutOfRangeError(
                f"{len(self.pulse_levels_v)} pulse levels for {self.visits} visits"
            )

    @property
    def pulses(self) -> bool:
        return self.pulse_levels_v is not None

    @property
    def reads(self) -> bool:
        return self.read_voltage_v is not None

    def check(self, limits: SafetyLimits) -> None:
        """Refuse the plan (before anything is sent) if any value breaks ``limits``."""
        if self.pulse_levels_v is not None:
            for k, level in enumerate(self.pulse_levels_v):
                limits.check_voltage(level, f"pulse amplitude of visit {k}")
            limits.check_width(self.pulse_width_s)
        if self.read_voltage_v is not None:
            limits.check_voltage(self.read_voltage_v, "read voltage")


class SMU(ABC):
    """What the crossbar rig needs from a source-measure unit (voltage source, current meter)."""

    limits: SafetyLimits | None = None
    trigger_out_line: int = 1
    """Digital line the SMU pulses after each visit (to the selector's trigger input)."""
    ready_in_line: int = 2
    """Digital line the selector's ready output arrives on."""

    @abstractmethod
    def configure(self, limits: SafetyLimits, *, nplc: float = 0.01) -> None:
        """Known state: voltage source, current measure, compliance = ``limits.compliance_a``,
        integration ``nplc`` power-line cycles, auto-ranging, output off, trigger lines set."""

    @abstractmethod
    def read_current(self, voltage_v: float) -> Reading:
        """One DC reading with ``voltage_v`` applied (the output stays on at that level)."""

    @abstractmethod
    def output_off(self) -> None:
        """Output off (0 V, relay open)."""

    @abstractmethod
    def triggers_per_visit(self, plan: VisitPlan) -> int:
        """Trigger-out pulses the SMU emits per visit of ``plan``."""

    @abstractmethod
    def max_visits(self, plan: VisitPlan) -> int:
        """Most visits one train of this kind may hold (instrument list and buffer sizes)."""

    @abstractmethod
    def prepare_visits(self, plan: VisitPlan) -> None:
        """Upload the train (levels, sequence); nothing runs yet."""

    @abstractmethod
    def start_visits(self) -> None:
        """Start the prepared train; it then waits for the selector's ready line."""

    @abstractmethod
    def finish_visits(self, plan: VisitPlan, timeout_s: float) -> list[Reading]:
        """Wait for the train to end (bounded) and return its readings (one per read visit)."""

    @abstractmethod
    def visits_running(self) -> bool:
        """Whether a train is still running."""

    @abstractmethod
    def fetch_visits(self, plan: VisitPlan) -> list[Reading]:
        """The readings of the last train, from the instrument's buffer (after a reconnect)."""

    @abstractmethod
    def abort_visits(self) -> None:
        """Stop a running train."""

    @abstractmethod
    def train_time_s(self, plan: VisitPlan) -> float:
        """Instrument time of the pulses and readings of ``plan`` alone (a lower bound), s."""

    def wait_idle(self, expected_s: float, timeout_s: float) -> None:
        """Wait for a running sequence to end: sleep its expected (lower-bound) time, then poll
        the non-blocking run state — a few round trips; a dropped wire shows at the next poll."""
        deadline = time.monotonic() + timeout_s
        time.sleep(min(expected_s, timeout_s))
        interval = max(0.002, 0.1 * expected_s)
        while self.visits_running():
            if time.monotonic() > deadline:
                raise InstrumentTimeout(
                    f"the sequence did not finish within {timeout_s:g} s",
                    resource=getattr(self, "address", None),
                )
            time.sleep(interval)

    @abstractmethod
    def reconnect(self, attempts: int = 3, delay_s: float = 0.5) -> None:
        """Reopen a dropped connection to the same instrument (bounded retries)."""

    @abstractmethod
    def close(self) -> None:
        """Close the wire (the output state is left as it is: call :meth:`output_off` first)."""

    def require_limits(self) -> SafetyLimits:
        """The configured limits, or :class:`SafetyLimitError` if :meth:`configure` never ran."""
        if self.limits is None:
            raise SafetyLimitError(
                "no safety limits configured on this SMU; call configure(limits) first"
            )
        return self.limits


class SourceLevel(Control):
    """A source-level setting refused beyond the instrument's :class:`SafetyLimits` (if set)."""

    def __set__(self, obj: Any, value: Any) -> None:
        limits = getattr(obj, "limits", None)
        if limits is not None:
            limits.check_voltage(value, self.name)
        super().__set__(obj, value)


class CurrentLimit(Control):
    """A current-limit setting that may not exceed the configured safety compliance."""

    def __set__(self, obj: Any, value: Any) -> None:
        limits = getattr(obj, "limits", None)
        if limits is not None:
            limits.check_compliance(value, self.name)
        super().__set__(obj, value)


def format_levels(levels: Sequence[float]) -> str:
    """Levels as a comma-separated SCPI list (10 significant digits)."""
    out = []
    for level in levels:
        if not math.isfinite(level):
            raise OutOfRangeError(f"level {level!r} is not a finite number; nothing was sent")
        out.append(f"{float(level):.10g}")
    return ",".join(out)
