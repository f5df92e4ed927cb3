"""Wires to instruments: VISA resources (pyvisa, pyvisa-py by default) and pyserial URLs.

Every transport exchanges terminated text messages (plus raw bytes when asked),
has an explicit timeout, and holds a re-entrant lock so that one thread's
write-then-read is never interleaved with another thread's. Failures become the
typed errors of :mod:`drivers.errors`; nothing waits forever.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import pyvisa
import pyvisa.constants
import serial

from drivers.errors import CommunicationError, ConnectionLost, InstrumentTimeout

log = logging.getLogger(__name__)

try:  # termios errors (e.g. tcdrain on a vanished pty) are not OSError subclasses
    import termios

    SERIAL_ERRORS: tuple[type[BaseException], ...] = (
        serial.SerialException,
        OSError,
        termios.error,
    )
except ImportError:  # pragma: no cover - Windows
    SERIAL_ERRORS = (serial.SerialException, OSError)

DEFAULT_VISA_BACKEND = "@py"
"""pyvisa-py, the pure-Python VISA; pass ``visa_backend=""`` for the system VISA (NI, Keysight)."""

VISA_PREFIXES = ("TCPIP", "GPIB", "USB", "ASRL", "VXI", "PXI", "VICP")


class Transport(ABC):
    """One open wire to one instrument: terminated text messages, timeouts, a lock."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float,
        read_termination: str,
        write_termination: str,
        encoding: str = "ascii",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 s, got {timeout_s}")
        self.address = address
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.encoding = encoding
        self._timeout_s = timeout_s
        self.lock = threading.RLock()
        self.exchanges = 0
        """Count of messages written (each query is one round trip)."""
        self.stale = False
        """A read timed out: a late reply may still arrive and must not be taken for the next."""

    # --- to implement -------------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Open the wire; raises :class:`ConnectionLost` when it cannot."""

    @abstractmethod
    def close(self) -> None:
        """Close the wire; safe to call twice."""

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """Whether the wire is open (a dropped peer may only show on the next exchange)."""

    @abstractmethod
    def write_bytes(self, data: bytes) -> None:
        """Send raw bytes, unterminated."""

    @abstractmethod
    def read_bytes(self, count: int) -> bytes:
        """Receive exactly ``count`` bytes or raise :class:`InstrumentTimeout`."""

    @abstractmethod
    def _read_message_bytes(self) -> bytes:
        """Receive one message up to and including the read termination."""

    @abstractmethod
    def _apply_timeout(self, timeout_s: float) -> None: ...

    @abstractmethod
    def discard_input(self) -> None:
        """Throw away whatever has arrived and not been read."""

    # --- shared -------------------------------------------------------------------
    @property
    def timeout_s(self) -> float:
        """Timeout of one read or write, s."""
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"timeout_s must be > 0 s, got {value}")
        with self.lock:
            self._timeout_s = value
            if self.is_open:
                self._apply_timeout(value)

    def write(self, message: str) -> None:
        """Send one message; the write termination is appended."""
        if "\n" in message or "\r" in message:
            raise ValueError(f"a message is one line; refusing {message!r} (embedded newline)")
        data = (message + self.write_termination).encode(self.encoding)
        with self.lock:
            log.debug("%s << %s", self.address, message)
            self.write_bytes(data)
            self.exchanges += 1

    def read(self) -> str:
        """Receive one message, termination stripped."""
        with self.lock:
            try:
                raw = self._read_message_bytes()
            except InstrumentTimeout:
                self.stale = True
                raise
        text = raw.decode(self.encoding, errors="replace")
        if self.read_termination and text.endswith(self.read_termination):
            text = text[: -len(self.read_termination)]
        text = text.rstrip("\r\n")
        log.debug("%s >> %s", self.address, text)
        return text

    def query(self, message: str) -> str:
        """Write ``message`` and read the reply, with no other thread in between."""
        with self.lock:
            self.write(message)
            return self.read()

    def reopen(self, attempts: int = 3, delay_s: float = 0.5) -> None:
        """Close and open again, up to ``attempts`` times ``delay_s`` apart.

        Raises :class:`ConnectionLost` after the last failed attempt.
        """
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        last: Exception | None = None
        with self.lock:
            for attempt in range(1, attempts + 1):
                self.close()
                self.stale = False
                try:
                    self.open()
                    log.info("%s reopened (attempt %d/%d)", self.address, attempt, attempts)
                    return
                except ConnectionLost as exc:
                    last = exc
                    log.warning(
                        "%s reopen attempt %d/%d failed: %s", self.address, attempt, attempts, exc
                    )
                    if attempt < attempts:
                        time.sleep(delay_s)
        raise ConnectionLost(
            f"could not reopen after {attempts} attempts: {last}", resource=self.address
        )

    def __enter__(self) -> Transport:
        if not self.is_open:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


_rm_lock = threading.Lock()
_resource_managers: dict[str, pyvisa.ResourceManager] = {}


def resource_manager(backend: str = DEFAULT_VISA_BACKEND) -> pyvisa.ResourceManager:
    """The process-wide pyvisa resource manager for ``backend`` (created once)."""
    with _rm_lock:
        rm = _resource_managers.get(backend)
        if rm is None:
            rm = pyvisa.ResourceManager(backend) if backend else pyvisa.ResourceManager()
            _resource_managers[backend] = rm
        return rm


class VisaTransport(Transport):
    """A VISA resource: ``TCPIP::host::port::SOCKET``, ``GPIB0::24::INSTR``, ``USB…``, ``ASRL…``."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 5.0,
        read_termination: str = "\n",
        write_termination: str = "\n",
        backend: str = DEFAULT_VISA_BACKEND,
        open_timeout_s: float = 3.0,
        baud_rate: int | None = None,
    ) -> None:
        super().__init__(
            address,
            timeout_s=timeout_s,
            read_termination=read_termination,
            write_termination=write_termination,
        )
        self.backend = backend
        self.open_timeout_s = open_timeout_s
        self.baud_rate = baud_rate
        self._res: Any = None

    @property
    def is_open(self) -> bool:
        return self._res is not None

    def open(self) -> None:
        with self.lock:
            if self._res is not None:
                return
            kwargs: dict[str, Any] = {"open_timeout": int(self.open_timeout_s * 1000)}
            if self.baud_rate is not None:
                kwargs["baud_rate"] = self.baud_rate
            try:
                res = resource_manager(self.backend).open_resource(self.address, **kwargs)
            except (pyvisa.errors.VisaIOError, OSError, ValueError) as exc:
                raise ConnectionLost(
                    f"cannot open: {exc}. Check the address and that the "
                    "instrument is on and reachable",
                    resource=self.address,
                ) from exc
            res.read_termination = self.read_termination or None
            res.write_termination = ""  # we terminate ourselves, bytes stay explicit
            res.timeout = int(self._timeout_s * 1000)
            self._res = res
            self._check_connected()
            self._no_delay()
            log.debug("%s opened with %s", self.address, self.backend or "system VISA")

    def close(self) -> None:
        with self.lock:
            res, self._res = self._res, None
            if res is not None:
                try:
                    res.close()
                except Exception as exc:  # a dead session may refuse to close cleanly
                    log.debug("%s close: %s", self.address, exc)

    def _apply_timeout(self, timeout_s: float) -> None:
        self._res.timeout = int(timeout_s * 1000)

    def discard_input(self) -> None:
        with self.lock:
            res = self._require()
            try:
                res.flush(pyvisa.constants.BufferOperation.discard_read_buffer)
            except (pyvisa.errors.VisaIOError, OSError) as exc:
                raise self._fail(exc, "discard input") from exc

    def _require(self) -> Any:
        if self._res is None:
            raise ConnectionLost(
                "not open (closed or dropped earlier); call reconnect()", resource=self.address
            )
        return self._res

    def _socket(self) -> socket.socket | None:
        """The TCP socket under a pyvisa-py SOCKET session, if that is what this is."""
        try:
            sess = self._res.visalib.sessions[self._res.session]
            sock = getattr(sess, "interface", None)
        except (AttributeError, KeyError, pyvisa.errors.InvalidSession):
            return None
        return sock if isinstance(sock, socket.socket) else None

    def _check_connected(self) -> None:
        """pyvisa-py reports a refused TCP connect as success; ask the socket itself."""
        sock = self._socket()
        if sock is None:
            return
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            sock.getpeername()
        except OSError as exc:
            error = error or exc.errno or -1
        if error:
            self.close()
            raise ConnectionLost(
                f"cannot connect ({os.strerror(error) if error > 0 else error})"
                ". Check the address and that the instrument is on and "
                "reachable",
                resource=self.address,
            )

    def _no_delay(self) -> None:
        """Disable Nagle's algorithm on a raw socket: a command written without a reply, then
        another, would otherwise wait for the peer's delayed ACK (~40 ms on Linux)."""
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _peer_closed(self) -> bool:
        """True when the TCP peer has closed (pyvisa-py reports that only as a timeout)."""
        sock = self._socket()
        if sock is None:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _fail(self, exc: Exception, what: str) -> CommunicationError:
        lost_codes = {
            pyvisa.constants.StatusCode.error_connection_lost,
            pyvisa.constants.StatusCode.error_io,
            pyvisa.constants.StatusCode.error_invalid_object,
        }
        code = getattr(exc, "error_code", None)
        if isinstance(exc, OSError) or code in lost_codes or self._peer_closed():
            self.close()
            return ConnectionLost(f"connection lost during {what}: {exc}", resource=self.address)
        if code == pyvisa.constants.StatusCode.error_timeout:
            return InstrumentTimeout(
                f"no reply within {self._timeout_s:g} s during {what}", resource=self.address
            )
        return CommunicationError(f"{what} failed: {exc}", resource=self.address)

    def write_bytes(self, data: bytes) -> None:
        with self.lock:
            res = self._require()
            try:
                res.write_raw(data)
            except (pyvisa.errors.VisaIOError, OSError) as exc:
                raise self._fail(exc, "write") from exc

    def _read_message_bytes(self) -> bytes:
        with self.lock:
            res = self._require()
            try:
                # read_raw stops at the termination character (termchar enabled by pyvisa)
                return bytes(res.read_raw())
            except (pyvisa.errors.VisaIOError, OSError) as exc:
                raise self._fail(exc, "read") from exc

    def read_bytes(self, count: int) -> bytes:
        with self.lock:
            res = self._require()
            try:
                return bytes(res.read_bytes(count, break_on_termchar=False))
            except (pyvisa.errors.VisaIOError, OSError) as exc:
                raise self._fail(exc, f"read of {count} bytes") from exc


class SerialTransport(Transport):
    """A pyserial URL: a device path (``/dev/ttyUSB0``, a pty), ``socket://host:port``, …"""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 2.0,
        read_termination: str = "\n",
        write_termination: str = "\n",
        baud_rate: int = 115200,
    ) -> None:
        super().__init__(
            address,
            timeout_s=timeout_s,
            read_termination=read_termination,
            write_termination=write_termination,
        )
        self.baud_rate = baud_rate
        self._port: serial.SerialBase | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def open(self) -> None:
        with self.lock:
            if self.is_open:
                return
            try:
                self._port = serial.serial_for_url(
                    self.address,
                    baudrate=self.baud_rate,
                    timeout=self._timeout_s,
                    write_timeout=self._timeout_s,
                )
            except (*SERIAL_ERRORS, ValueError) as exc:
                self._port = None
                raise ConnectionLost(
                    f"cannot open: {exc}. Check the port or URL and that nothing else holds it",
                    resource=self.address,
                ) from exc
            log.debug("%s opened at %d baud", self.address, self.baud_rate)

    def close(self) -> None:
        with self.lock:
            port, self._port = self._port, None
            if port is not None:
                try:
                    port.close()
                except SERIAL_ERRORS as exc:
                    log.debug("%s close: %s", self.address, exc)

    def _apply_timeout(self, timeout_s: float) -> None:
        assert self._port is not None
        self._port.timeout = timeout_s
        self._port.write_timeout = timeout_s

    def discard_input(self) -> None:
        with self.lock:
            port = self._require()
            try:
                port.reset_input_buffer()
            except SERIAL_ERRORS as exc:
                raise self._lost(exc, "discard input") from exc

    def _require(self) -> serial.SerialBase:
        if self._port is None:
            raise ConnectionLost(
                "not open (closed or dropped earlier); call reconnect()", resource=self.address
            )
        return self._port

    def _lost(self, exc: Exception, what: str) -> ConnectionLost:
        self.close()
        return ConnectionLost(f"connection lost during {what}: {exc}", resource=self.address)

    def write_bytes(self, data: bytes) -> None:
        with self.lock:
            port = self._require()
            try:
                port.write(data)
                port.flush()
            except serial.SerialTimeoutException as exc:
                raise InstrumentTimeout(
                    f"write not accepted within {self._timeout_s:g} s", resource=self.address
                ) from exc
            except SERIAL_ERRORS as exc:
                raise self._lost(exc, "write") from exc

    def _read_message_bytes(self) -> bytes:
        term = self.read_termination.encode(self.encoding) or b"\n"
        with self.lock:
            port = self._require()
            try:
                data = port.read_until(term)
            except SERIAL_ERRORS as exc:
                raise self._lost(exc, "read") from exc
        if not data.endswith(term):
            raise InstrumentTimeout(
                f"no complete reply within {self._timeout_s:g} s (got {data!r})",
                resource=self.address,
            )
        return data

    def read_bytes(self, count: int) -> bytes:
        with self.lock:
            port = self._require()
            try:
                data = port.read(count)
            except SERIAL_ERRORS as exc:
                raise self._lost(exc, f"read of {count} bytes") from exc
        if len(data) < count:
            raise InstrumentTimeout(
                f"got {len(data)} of {count} bytes within {self._timeout_s:g} s",
                resource=self.address,
            )
        return data


def is_visa_address(address: str) -> bool:
    """Whether ``address`` is a VISA resource string (else a pyserial URL or path)."""
    return address.upper().startswith(VISA_PREFIXES)


def is_serial_address(address: str) -> bool:
    """Whether ``address`` is a pyserial URL or port: ``scheme://…``, a device path, ``COMn``."""
    return (
        "://" in address or address.startswith("/") or re.fullmatch(r"COM\d+", address) is not None
    )


def open_transport(
    address: str,
    *,
    timeout_s: float = 5.0,
    read_termination: str = "\n",
    write_termination: str = "\n",
    visa_backend: str = DEFAULT_VISA_BACKEND,
    baud_rate: int | None = None,
) -> Transport:
    """Open the right transport for ``address`` (a VISA resource or a pyserial URL)."""
    transport: Transport
    if is_visa_address(address):
        transport = VisaTransport(
            address,
            timeout_s=timeout_s,
            read_termination=read_termination,
            write_termination=write_termination,
            backend=visa_backend,
            baud_rate=baud_rate,
        )
    elif is_serial_address(address):
        transport = SerialTransport(
            address,
            timeout_s=timeout_s,
            read_termination=read_termination,
            write_termination=write_termination,
            baud_rate=baud_rate or 115200,
        )
    else:
        raise ValueError(
            f"{address!r} is neither a VISA resource ({', '.join(VISA_PREFIXES)}…) "
            "nor a pyserial URL (socket://host:port, /dev/tty…, COMn)"
        )
    transport.open()
    return transport
