"""Validators for instrument values: each checks (and may normalise) a value before it is sent.

A validator is called as ``validator(value, name)`` and returns the value to send,
or raises :class:`~drivers.errors.OutOfRangeError` naming the property, the value
and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.errors import OutOfRangeError

Validator = Callable[[Any, str], Any]

FORBIDDEN_IN_STRINGS = ("\n", "\r", ";", '"', "'", "\x00")


@dataclass(frozen=True)
class InRange:
    """A real number within [low, high] (inclusive), in ``units``."""

    low: float
    high: float
    units: str = ""

    def __call__(self, value: Any, name: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise OutOfRangeError(f"{name} must be a number, got {value!r}") from exc
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise OutOfRangeError(
                f"{name} = {value!r} {self.units} is outside [{self.low:g}, {self.high:g}] "
                f"{self.units}; nothing was sent".replace("  ", " ")
            )
        return number


@dataclass(frozen=True)
class IntInRange:
    """An integer within [low, high] (inclusive)."""

    low: int
    high: int

    def __call__(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise OutOfRangeError(f"{name} must be an integer, got {value!r}")
        if not self.low <= int(value) <= self.high:
            raise OutOfRangeError(
                f"{name} = {value!r} is outside [{self.low}, {self.high}]; nothing was sent"
            )
        return int(value)


@dataclass(frozen=True)
class OneOf:
    """One of an enumerated set of values."""

    values: tuple[Any, ...]

    def __call__(self, value: Any, name: str) -> Any:
        if value not in self.values:
            raise OutOfRangeError(
                f"{name} = {value!r} is not one of {list(self.values)}; nothing was sent"
            )
        return value


@dataclass(frozen=True)
class SafeString:
    """Text that cannot smuggle extra commands: no newline, ``;``, quotes or NUL; bounded length."""

    max_length: int = 64

    def __call__(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise OutOfRangeError(f"{name} must be text, got {value!r}")
        bad = [c for c in FORBIDDEN_IN_STRINGS if c in value]
        if bad or not value.isprintable():
            raise OutOfRangeError(
                f"{name} = {value!r} contains characters that would reach "
                f"the instrument as commands ({bad or 'non-printable'})"
            )
        if len(value) > self.max_length:
            raise OutOfRangeError(
                f"{name} is {len(value)} characters; at most {self.max_length} allowed"
            )
        return value


def in_range(low: float, high: float, units: str = "") -> InRange:
    """A real number within [low, high] ``units``."""
    return InRange(low, high, units)


def int_in_range(low: int, high: int) -> IntInRange:
    """An integer within [low, high]."""
    return IntInRange(low, high)


def one_of(values: Iterable[Any] | Mapping[Any, Any]) -> OneOf:
    """One of ``values`` (the keys when a mapping is given)."""
    return OneOf(tuple(values))


def safe_string(max_length: int = 64) -> SafeString:
    """Text safe to quote into an SCPI command."""
    return SafeString(max_length)


def quote(text: str, name: str = "string") -> str:
    """``text`` as an SCPI string parameter, refused if it could inject commands."""
    return '"' + SafeString(256)(text, name) + '"'
