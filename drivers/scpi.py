"""The SCPI instrument base: declarative properties, IEEE 488.2 commands, the error queue.

A driver is a subclass with one line per instrument setting::

    class Dmm(SCPIInstrument):
        nplc = Control(":SENS:VOLT:NPLC?", ":SENS:VOLT:NPLC {}",
                       "Integration time, power-line cycles.", validator=in_range(0.01, 10))
        voltage = Measurement(":MEAS:VOLT?", "Measured voltage, V.", units="V")

Setting a :class:`Control` validates the value (an out-of-range value raises
before anything is sent), writes the command, then asks the error queue so an
instrument-reported error surfaces as :class:`InstrumentReportedError` naming the
command. All traffic goes through one :class:`~drivers.transport.Transport`
whose lock keeps each exchange whole.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from drivers.errors import (
    ConnectionLost,
    DriverError,
    InstrumentReportedError,
    InstrumentTimeout,
    MalformedReply,
    MeasurementOverflow,
)
from drivers.transport import Transport, open_transport
from drivers.validators import OneOf, Validator

log = logging.getLogger(__name__)

OVERFLOW = 9.9e37
"""SCPI's overflow marker (9.9E37, and 9.91E37 for not-a-number): never a real reading."""

_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def parse_float(reply: str, command: str = "", resource: str | None = None) -> float:
    """One real number from a reply; :class:`MalformedReply` if it does not parse,
    :class:`MeasurementOverflow` for the 9.9e37 overflow marker."""
    try:
        value = float(reply.strip())
    except ValueError:
        raise MalformedReply(
            "not a number", reply=reply, command=command, resource=resource
        ) from None
    if abs(value) >= OVERFLOW * 0.999 or value != value:
        raise MeasurementOverflow(
            "overflow marker: reading out of range", reply=reply, command=command, resource=resource
        )
    return value


def parse_floats(reply: str, command: str = "", resource: str | None = None) -> list[float]:
    """A comma-separated list of real numbers (e.g. a buffer dump)."""
    if not reply.strip():
        return []
    return [parse_float(part, command, resource) for part in reply.split(",")]


def parse_int(reply: str, command: str = "", resource: str | None = None) -> int:
    """One integer from a reply (``+1``, ``0``, ``1.0E+00`` all accepted)."""
    value = parse_float(reply, command, resource)
    if value != int(value):
        raise MalformedReply("not an integer", reply=reply, command=command, resource=resource)
    return int(value)


def parse_bool(reply: str, command: str = "", resource: str | None = None) -> bool:
    """An SCPI boolean: ``1``/``0``/``ON``/``OFF``."""
    text = reply.strip().upper()
    if text in ("1", "ON", "+1"):
        return True
    if text in ("0", "OFF", "+0"):
        return False
    raise MalformedReply(
        "not a boolean (1/0/ON/OFF)", reply=reply, command=command, resource=resource
    )


def parse_error(reply: str, command: str = "", resource: str | None = None) -> tuple[int, str]:
    """``-113,"Undefined header"`` → ``(-113, "Undefined header")``."""
    match = _ERROR_RE.match(reply)
    if not match:
        raise MalformedReply(
            'not an error-queue entry (code,"message")',
            reply=reply,
            command=command,
            resource=resource,
        )
    return int(match.group(1)), match.group(2)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


class Control:
    """A readable and writable instrument setting, declared in one line.

    ``get_cmd``/``set_cmd`` are SCPI text; ``set_cmd`` has one ``{}`` for the value.
    ``validator`` checks every value before sending (mandatory for ranged and
    enumerated settings). ``values`` maps Python values to wire tokens (and back).
    ``parse`` turns the reply text into a Python value.
    """

    def __init__(
        self,
        get_cmd: str | None,
        set_cmd: str | None,
        doc: str,
        *,
        validator: Validator | None = None,
        values: Mapping[Any, str] | None = None,
        parse: Callable[..., Any] = parse_float,
        units: str = "",
        check_errors: bool = True,
    ) -> None:
        if values is not None and validator is None:
            validator = OneOf(tuple(values))
        self.get_cmd = get_cmd
        self.set_cmd = set_cmd
        self.validator = validator
        self.values = dict(values) if values is not None else None
        self.parse = parse
        self.units = units
        self.check_errors = check_errors
        self.__doc__ = doc
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: SCPIInstrument | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        if self.get_cmd is None:
            raise AttributeError(f"{self.name} is write-only")
        reply = obj.query(self.get_cmd)
        if self.values is not None:
            wanted = reply.strip().upper()
            for py_value, token in self.values.items():
                if wanted in (token.upper(), _short_form(token)):
                    return py_value
            raise MalformedReply(
                f"unexpected value for {self.name}",
                reply=reply,
                command=self.get_cmd,
                resource=obj.address,
            )
        return self.parse(reply, self.get_cmd, obj.address)

    def __set__(self, obj: SCPIInstrument, value: Any) -> None:
        if self.set_cmd is None:
            raise AttributeError(f"{self.name} is read-only")
        if self.validator is not None:
            value = self.validator(value, self.name)
        wire = self.values[value] if self.values is not None else _format_value(value)
        obj.write(self.set_cmd.format(wire), check=self.check_errors)


class Measurement(Control):
    """A read-only instrument value (a query)."""

    def __init__(
        self,
        get_cmd: str,
        doc: str,
        *,
        parse: Callable[..., Any] = parse_float,
        values: Mapping[Any, str] | None = None,
        units: str = "",
    ) -> None:
        super().__init__(get_cmd, None, doc, parse=parse, values=values, units=units)


class Setting(Control):
    """A write-only instrument setting."""

    def __init__(
        self,
        set_cmd: str,
        doc: str,
        *,
        validator: Validator | None = None,
        values: Mapping[Any, str] | None = None,
        units: str = "",
        check_errors: bool = True,
    ) -> None:
        super().__init__(
            None,
            set_cmd,
            doc,
            validator=validator,
            values=values,
            units=units,
            check_errors=check_errors,
        )


def _short_form(token: str) -> str:
    """``VOLTage`` → ``VOLT`` (the uppercase letters of a mnemonic)."""
    short = "".join(c for c in token if not c.islower())
    return short.upper() if short else token.upper()


@dataclass(frozen=True)
class Identity:
    """What ``*IDN?`` says."""

    manufacturer: str
    model: str
    serial: str
    firmware: str

    @classmethod
    def parse(cls, reply: str, resource: str | None = None) -> Identity:
        """Split an ``*IDN?`` reply into its four fields."""
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) != 4 or not parts[0]:
            raise MalformedReply(
                "*IDN? reply must have four comma-separated fields",
                reply=reply,
                command="*IDN?",
                resource=resource,
            )
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.model} s/n {self.serial} fw {self.firmware}"


class SCPIInstrument:
    """Base of every SCPI driver: the wire, the common commands and the error queue."""

    error_query = ":SYST:ERR?"
    max_error_reads = 32
    """Bound on the error queue drain (a real queue holds ~10-100 entries)."""

    def __init__(self, transport: Transport, *, check_errors: bool = True) -> None:
        self.transport = transport
        self.check_errors_on_write = check_errors
        self._identity: Identity | None = None

    @classmethod
    def open(cls, address: str, *, timeout_s: float = 5.0, **kwargs: Any) -> Self:
        """Open ``address`` (VISA resource or pyserial URL) and wrap it in this driver."""
        transport_kwargs = {
            k: kwargs.pop(k)
            for k in ("read_termination", "write_termination", "visa_backend", "baud_rate")
            if k in kwargs
        }
        return cls(open_transport(address, timeout_s=timeout_s, **transport_kwargs), **kwargs)

    @property
    def address(self) -> str:
        """The instrument's resource string or URL."""
        return self.transport.address

    @property
    def lock(self) -> Any:
        """The per-instrument lock; hold it to keep a multi-message operation whole."""
        return self.transport.lock

    # --- raw exchange ----------------------------------------------------------
    def write(self, command: str, *, check: bool | None = None) -> None:
        """Send ``command``; then read the error queue unless ``check`` is False."""
        with self.lock:
            self.transport.write(command)
            if self.check_errors_on_write if check is None else check:
                self.check_errors(command)

    def query(self, command: str) -> str:
        """Send ``command`` and return the reply text (resynchronising first after a timeout)."""
        with self.lock:
            if self.transport.stale:
                self.resync()
            return self.transport.query(command)

    def resync(self) -> None:
        """Realign replies with queries after a timeout left a late reply on its way.

        Discards pending input, asks ``*IDN?`` and skips replies until the identity
        comes back (bounded by twice the timeout, at least 1 s).
        """
        with self.lock:
            transport = self.transport
            transport.discard_input()
            transport.stale = False
            transport.write("*IDN?")
            deadline = time.monotonic() + max(2 * transport.timeout_s, 1.0)
            skipped = 0
            while True:
                reply = transport.read()
                try:
                    identity = Identity.parse(reply, self.address)
                except MalformedReply:
                    identity = None
                if identity is not None and (
                    self._identity is None or identity.model == self._identity.model
                ):
                    self._identity = identity
                    if skipped:
                        log.warning(
                            "%s: skipped %d late repl%s while resynchronising",
                            self.address,
                            skipped,
                            "y" if skipped == 1 else "ies",
                        )
                    return
                skipped += 1
                if time.monotonic() > deadline:
                    transport.stale = True
                    raise InstrumentTimeout(
                        "could not resynchronise replies with queries", resource=self.address
                    )

    def query_float(self, command: str) -> float:
        """Send ``command`` and parse the reply as one real number."""
        return parse_float(self.query(command), command, self.address)

    def query_floats(self, command: str) -> list[float]:
        """Send ``command`` and parse the reply as comma-separated real numbers."""
        return parse_floats(self.query(command), command, self.address)

    # --- error queue -------------------------------------------------------------
    def read_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue; ``[]`` when it is empty."""
        errors: list[tuple[int, str]] = []
        with self.lock:
            for _ in range(self.max_error_reads):
                code, message = parse_error(
                    self.query(self.error_query), self.error_query, self.address
                )
                if code == 0:
                    return errors
                errors.append((code, message.split(";")[0].strip()))
        log.warning(
            "%s: error queue still not empty after %d reads", self.address, self.max_error_reads
        )
        return errors

    def check_errors(self, command: str = "") -> None:
        """Raise :class:`InstrumentReportedError` (naming ``command``) if the queue is not empty."""
        errors = self.read_errors()
        if errors:
            (code, message), *more = errors
            raise InstrumentReportedError(
                code, message, command=command, resource=self.address, more=more
            )

    # --- IEEE 488.2 common commands ----------------------------------------------
    def identify(self) -> Identity:
        """``*IDN?``: manufacturer, model, serial number, firmware."""
        self._identity = Identity.parse(self.query("*IDN?"), self.address)
        return self._identity

    @property
    def identity(self) -> Identity:
        """The identity read at the last :meth:`identify` (read now if never)."""
        return self._identity or self.identify()

    def reset(self) -> None:
        """``*RST``: the instrument's default state."""
        self.write("*RST")

    def clear_status(self) -> None:
        """``*CLS``: clear the error queue and event registers."""
        self.write("*CLS", check=False)

    def wait_complete(self, timeout_s: float | None = None) -> None:
        """``*OPC?``: block until pending operations finish (bounded by ``timeout_s``)."""
        with self.lock:
            old = self.transport.timeout_s
            if timeout_s is not None:
                self.transport.timeout_s = timeout_s
            try:
                reply = self.query("*OPC?")
            finally:
                if timeout_s is not None:
                    self.transport.timeout_s = old
        if reply.strip() not in ("1", "+1"):
            raise MalformedReply(
                "*OPC? must answer 1", reply=reply, command="*OPC?", resource=self.address
            )

    def wait(self) -> None:
        """``*WAI``: the instrument finishes pending operations before the next command."""
        self.write("*WAI", check=False)

    # --- lifetime -----------------------------------------------------------------
    def reconnect(self, attempts: int = 3, delay_s: float = 0.5) -> None:
        """Reopen a dropped connection (bounded retries) and check it is the same instrument.

        Raises :class:`ConnectionLost` when it cannot, :class:`DriverError` when another
        instrument answers at the address.
        """
        before = self._identity
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                self.transport.reopen(attempts=1)
                after = self.identify()
                break
            except (ConnectionLost, InstrumentTimeout) as exc:
                last = exc
                log.warning(
                    "%s: reconnect attempt %d/%d failed: %s", self.address, attempt, attempts, exc
                )
                if attempt < attempts:
                    time.sleep(delay_s)
        else:
            self.transport.close()
            raise ConnectionLost(
                f"could not reconnect after {attempts} attempts {delay_s:g} s apart: {last}",
                resource=self.address,
            )
        if before is not None and (before.model, before.serial) != (after.model, after.serial):
            raise DriverError(
                f"after reconnecting, a different instrument answers: {after} (was {before})",
                resource=self.address,
            )
        self.clear_status()

    def close(self) -> None:
        """Close the wire."""
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"
