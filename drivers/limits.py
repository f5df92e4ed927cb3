"""Safety limits of one memory technology, enforced in the driver layer before anything is sent.

Built by the application from the lab configuration (``[technology.<name>]``);
drivers only check against them. Every check raises
:class:`~drivers.errors.SafetyLimitError` naming the value and the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.errors import SafetyLimitError


@dataclass(frozen=True)
class SafetyLimits:
    """What may ever be applied to a cell (SI units)."""

    max_voltage_v: float
    """Largest |V| on any SMU level, V."""
    compliance_a: float
    """Current limit of every pulse and read; the SMU's limit may not exceed it, A."""
    pulse_width_min_s: float
    """Shortest programming pulse, s."""
    pulse_width_max_s: float
    """Longest programming pulse, s."""
    read_voltage_v: float
    """Read bias, V."""

    def __post_init__(self) -> None:
        numbers = (
            self.max_voltage_v,
            self.compliance_a,
            self.pulse_width_min_s,
            self.pulse_width_max_s,
            self.read_voltage_v,
        )
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"safety limits must be finite numbers: {self}")
        if self.max_voltage_v <= 0 or self.compliance_a <= 0:
            raise ValueError("max_voltage_v and compliance_a must be > 0")
        if not 0 < self.pulse_width_min_s <= self.pulse_width_max_s:
            raise ValueError("need 0 < pulse_width_min_s <= pulse_width_max_s")
        if not 0 < abs(self.read_voltage_v) < self.max_voltage_v:
            raise ValueError("need 0 < |read_voltage_v| < max_voltage_v")

    def check_voltage(self, volts: float, what: str = "voltage") -> float:
        """``volts`` if |volts| <= max_voltage_v, else :class:`SafetyLimitError`."""
        try:
            value = float(volts)
        except (TypeError, ValueError):
            raise SafetyLimitError(f"{what} must be a number, got {volts!r}") from None
        if not math.isfinite(value) or abs(value) > self.max_voltage_v:
            raise SafetyLimitError(
                f"{what} = {volts!r} V exceeds the safety limit of ±{self.max_voltage_v:g} V; "
                "nothing was sent"
            )
        return value

    def check_width(self, seconds: float, what: str = "pulse width") -> float:
        """``seconds`` if within [pulse_width_min_s, pulse_width_max_s]."""
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            raise SafetyLimitError(f"{what} must be a number, got {seconds!r}") from None
        if not math.isfinite(value) or not (
            self.pulse_width_min_s <= value <= self.pulse_width_max_s
        ):
            raise SafetyLimitError(
                f"{what} = {seconds!r} s is outside the safety window "
                f"[{self.pulse_width_min_s:g}, {self.pulse_width_max_s:g}] s; nothing was sent"
            )
        return value

    def check_compliance(self, amps: float, what: str = "current limit") -> float:
        """``amps`` if 0 < amps <= compliance_a."""
        try:
            value = float(amps)
        except (TypeError, ValueError):
            raise SafetyLimitError(f"{what} must be a number, got {amps!r}") from None
        if not math.isfinite(value) or not 0 < value <= self.compliance_a:
            raise SafetyLimitError(
                f"{what} = {amps!r} A exceeds the safety compliance of {self.compliance_a:g} A; "
                "nothing was sent"
            )
        return value
