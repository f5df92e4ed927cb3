"""The typed exceptions every driver raises, each saying what to check."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises. ``resource`` names the instrument's address."""

    def __init__(self, message: str, *, resource: str | None = None) -> None:
        self.resource = resource
        prefix = f"[{resource}] " if resource else ""
        super().__init__(prefix + message)


class CommunicationError(DriverError):
    """The wire failed: nothing (or nothing usable) came back."""


class InstrumentTimeout(CommunicationError, TimeoutError):
    """No complete reply within the timeout. Check the instrument is on, the address,
    and that the command is a query (only queries answer)."""


class ConnectionLost(CommunicationError, ConnectionError):
    """The connection dropped or could not be opened. Check cable/network and power;
    ``reconnect()`` retries a bounded number of times."""


class MalformedReply(DriverError):
    """A reply arrived but does not have the expected form (e.g. a number that does not parse)."""

    def __init__(
        self,
        message: str,
        *,
        reply: str | bytes = "",
        command: str = "",
        resource: str | None = None,
    ) -> None:
        self.reply = reply
        self.command = command
        super().__init__(f"{message} (command {command!r}, reply {reply!r})", resource=resource)


class MeasurementOverflow(MalformedReply):
    """The instrument returned its overflow marker (9.9e37): the reading is out of range.
    Check the measure range or enable auto-range."""


class InstrumentReportedError(DriverError):
    """The instrument put an error in its queue (``:SYST:ERR?``) after ``command``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        command: str = "",
        resource: str | None = None,
        more: list[tuple[int, str]] | None = None,
    ) -> None:
        self.code = code
        self.instrument_message = message
        self.command = command
        self.more = more or []
        text = f"instrument error {code}, {message!r}"
        if command:
            text += f" after command {command!r}"
        if self.more:
            text += f" (+{len(self.more)} more queued: {self.more})"
        super().__init__(text, resource=resource)


class OutOfRangeError(DriverError, ValueError):
    """A value outside what the instrument accepts; raised before anything is sent."""


class SafetyLimitError(OutOfRangeError):
    """A value outside the configured safety limits (e.g. per memory technology);
    refused before anything is sent. Check the lab configuration's limits."""


class DataIntegrityError(DriverError):
    """Data arrived damaged or incomplete (bad CRC, bad magic, sequence gap, stall)."""
