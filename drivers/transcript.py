"""Command/response transcripts: test a driver's exact bytes without an instrument.

In the spirit of PyMeasure's ``expected_protocol``::

    ok = '0,"No error"'
    with expected_protocol(Dmm, [(":SENS:VOLT:NPLC 1", None), (":SYST:ERR?", ok)]) as dmm:
        dmm.nplc = 1

Each pair is (message the driver must send, reply the instrument gives or ``None``
for no reply). On exit every pair must have been used and no reply left unread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from drivers.errors import InstrumentTimeout
from drivers.transport import Transport


class TranscriptMismatch(AssertionError):
    """The driver sent something other than the transcript says."""


class TranscriptTransport(Transport):
    """A transport that replays a transcript and checks every message against it."""

    def __init__(self, exchanges: Sequence[tuple[str | bytes, str | bytes | None]]) -> None:
        super().__init__("transcript", timeout_s=1.0, read_termination="\n", write_termination="\n")
        self._expected: deque[tuple[bytes, bytes | None]] = deque(
            (
                self._as_bytes(sent, self.write_termination),
                None if reply is None else self._as_bytes(reply, self.read_termination),
            )
            for sent, reply in exchanges
        )
        self._pending = bytearray()
        self._open = True

    @staticmethod
    def _as_bytes(message: str | bytes, termination: str) -> bytes:
        return message if isinstance(message, bytes) else (message + termination).encode()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def _apply_timeout(self, timeout_s: float) -> None:
        pass

    def discard_input(self) -> None:
        self._pending.clear()

    def write_bytes(self, data: bytes) -> None:
        if not self._expected:
            raise TranscriptMismatch(f"driver sent {data!r} but the transcript is finished")
        sent, reply = self._expected.popleft()
        if data != sent:
            raise TranscriptMismatch(f"driver sent {data!r}, transcript expects {sent!r}")
        if reply is not None:
            self._pending.extend(reply)

    def _read_message_bytes(self) -> bytes:
        term = self.read_termination.encode()
        index = self._pending.find(term)
        if index < 0:
            raise InstrumentTimeout("driver read, but the transcript has no reply pending")
        out = bytes(self._pending[: index + len(term)])
        del self._pending[: index + len(term)]
        return out

    def read_bytes(self, count: int) -> bytes:
        if len(self._pending) < count:
            raise InstrumentTimeout(
                f"driver read {count} bytes; transcript has {len(self._pending)} pending"
            )
        out = bytes(self._pending[:count])
        del self._pending[:count]
        return out

    def assert_finished(self) -> None:
        """Every exchange used, nothing left to read."""
        if self._expected:
            raise TranscriptMismatch(
                f"transcript not finished; still expected: {[s for s, _ in self._expected]}"
            )
        if self._pending:
            raise TranscriptMismatch(f"reply left unread: {bytes(self._pending)!r}")


@contextmanager
def expected_protocol(
    driver_cls: type, exchanges: Sequence[tuple[Any, Any]], **driver_kwargs: Any
) -> Iterator[Any]:
    """Build ``driver_cls`` over a transcript and check it was followed exactly."""
    transport = TranscriptTransport(exchanges)
    driver = driver_cls(transport, **driver_kwargs)
    yield driver
    transport.assert_finished()
