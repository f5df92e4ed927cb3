"""Faults an emulated instrument can be told to commit, and its wire latency.

One :class:`Faults` object belongs to one emulator server. Tests (and the
reliability campaign) arm a fault; the server consults it for every message.
All methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    """What the server does with the next message."""

    ANSWER = "answer"
    DROP = "drop"  # close the connection without answering
    MUTE = "mute"  # execute, never answer


GARBAGE_REPLY = b"\xfe\x81#GARBAGE\x00?!\xff"
"""What a garbage reply looks like on the wire (then the terminator)."""


@dataclass
class _Armed:
    action: Action
    remaining: int


class Faults:
    """Latency and injected faults of one emulated instrument's wire."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self.latency_s = latency_s
        """Delay before every reply (or before executing a command with no reply), s."""
        self._armed: list[_Armed] = []
        self._garbage = 0
        self._delays: list[float] = []
        self._offline_until = 0.0
        self.injected: dict[str, int] = {}
        """How many times each fault fired (for tests and reports)."""

    def _arm(self, action: Action, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._armed.append(_Armed(action, count))

    def drop_next(self, count: int = 1) -> None:
        """Close the connection on each of the next ``count`` messages, unanswered."""
        self._arm(Action.DROP, count)

    def garbage_next(self, count: int = 1) -> None:
        """Replace each of the next ``count`` replies with garbage bytes."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._garbage += count

    def mute_next(self, count: int = 1) -> None:
        """Execute the next ``count`` messages but never answer them."""
        self._arm(Action.MUTE, count)

    def stop_answering(self) -> None:
        """Execute every message but answer none, until :meth:`clear`."""
        self._arm(Action.MUTE, 2**62)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Add ``seconds`` before answering each of the next ``count`` messages."""
        with self._lock:
            self._delays.extend([seconds] * count)

    def go_offline(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for ``seconds`` (power cycle, cable)."""
        with self._lock:
            self._offline_until = time.monotonic() + seconds
            self.injected["offline"] = self.injected.get("offline", 0) + 1

    def clear(self) -> None:
        """Disarm every fault (latency stays)."""
        with self._lock:
            self._armed.clear()
            self._delays.clear()
            self._garbage = 0
            self._offline_until = 0.0

    @property
    def offline(self) -> bool:
        """Whether the instrument is currently unreachable."""
        return time.monotonic() < self._offline_until

    def take_garbage(self) -> bool:
        """Whether the reply about to be sent must be replaced by garbage (consumes it)."""
        with self._lock:
            if self._garbage <= 0:
                return False
            self._garbage -= 1
            self.injected["garbage"] = self.injected.get("garbage", 0) + 1
            return True

    def next_action(self) -> tuple[Action, float]:
        """Consume the fault for one incoming message: what to do and how long to wait first."""
        with self._lock:
            delay = self.latency_s + (self._delays.pop(0) if self._delays else 0.0)
            action = Action.ANSWER
            if self._armed:
                armed = self._armed[0]
                action = armed.action
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.pop(0)
                self.injected[action.value] = self.injected.get(action.value, 0) + 1
            return action, delay
