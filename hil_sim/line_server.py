"""Line-oriented wires for emulated instruments: loopback TCP and serial pseudo-terminals.

A server owns one :class:`LineDevice` (anything with ``handle(line) -> reply | None``)
and a :class:`~hil_sim.faults.Faults`. It reads terminated lines, applies latency
and faults, passes each line to the device and writes the reply back. TCP
servers bind loopback only unless told otherwise; ``port=0`` picks a free port.
Every server stops cleanly (threads joined, sockets and fds closed) and is
tracked in :data:`LIVE_SERVERS` so tests can assert nothing leaks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import tty
import weakref
from typing import Protocol, Self

from hil_sim.faults import GARBAGE_REPLY, Action, Faults

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_LINE_BYTES = 1 << 20
"""A line longer than this is discarded (an emulated input-buffer overrun)."""

LIVE_SERVERS: weakref.WeakSet[LineServer] = weakref.WeakSet()


class LineDevice(Protocol):
    """What a line server serves: one reply (or none) per received line."""

    def handle(self, line: str) -> str | bytes | None: ...


class LineServer:
    """Common plumbing: per-line latency and faults, dispatch, reply, lifecycle."""

    def __init__(
        self,
        device: LineDevice,
        *,
        faults: Faults | None = None,
        terminator: bytes = b"\n",
        name: str = "",
    ) -> None:
        self.device = device
        self.faults = faults or Faults()
        self.terminator = terminator
        self.name = name or type(device).__name__
        self.lines_handled = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        LIVE_SERVERS.add(self)

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return not self._stop.is_set() and any(t.is_alive() for t in self._threads)

    def _spawn(self, target: object, name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(
            target=target,
            args=args,
            name=f"{self.name}-{name}",  # type: ignore[arg-type]
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()
        return thread

    def _serve_line(self, raw: bytes) -> tuple[bool, bytes | None]:
        """Handle one line. Returns (keep connection, bytes to send or None)."""
        action, delay = self.faults.next_action()
        if action is Action.DROP:
            log.info("%s: fault: dropping the connection", self.name)
            return False, None
        if delay > 0:
            self._stop.wait(delay)
        line = raw.decode("ascii", errors="replace").rstrip("\r")
        try:
            reply = self.device.handle(line)
        except Exception:  # the emulated instrument must never die of one bad line
            log.exception("%s: device failed on %r", self.name, line)
            reply = None
        self.lines_handled += 1
        if action is Action.MUTE or reply is None:
            return True, None
        if self.faults.take_garbage():
            return True, GARBAGE_REPLY + self.terminator
        data = reply if isinstance(reply, bytes) else reply.encode("ascii", errors="replace")
        return True, data + self.terminator

    def _split_lines(self, buffer: bytearray) -> list[bytes]:
        lines = []
        while True:
            index = buffer.find(self.terminator)
            if index < 0:
                if len(buffer) > MAX_LINE_BYTES:
                    log.warning("%s: %d bytes without terminator discarded", self.name, len(buffer))
                    buffer.clear()
                return lines
            lines.append(bytes(buffer[:index]))
            del buffer[: index + len(self.terminator)]

    def stop(self) -> None:
        """Stop serving; joins every thread. Safe to call twice."""
        self._stop.set()
        self._close_endpoints()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.error("%s: threads still alive after stop: %s", self.name, self._threads)

    def _close_endpoints(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpLineServer(LineServer):
    """Serves a device on ``host:port`` (loopback; port 0 picks a free one), many clients."""

    def __init__(
        self,
        device: LineDevice,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        faults: Faults | None = None,
        terminator: bytes = b"\n",
        name: str = "",
        allow_remote: bool = False,
    ) -> None:
        super().__init__(device, faults=faults, terminator=terminator, name=name)
        if not allow_remote and not host.startswith("127."):
            raise ValueError(
                f"emulators bind loopback only; refusing {host!r} "
                "(pass allow_remote=True to expose it on a network)"
            )
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._spawn(self._accept_loop, "accept")

    @property
    def visa_resource(self) -> str:
        """The VISA resource string a user pastes into the lab configuration."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    @property
    def serial_url(self) -> str:
        """The same endpoint as a pyserial URL (serial line over TCP)."""
        return f"socket://{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            if self.faults.offline:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._clients_lock:
                self._clients.add(conn)
            log.debug("%s: client %s connected", self.name, peer)
            self._spawn(self._client_loop, f"client{peer[1]}", conn)
            self._threads = [t for t in self._threads if t.is_alive()]

    def _client_loop(self, conn: socket.socket) -> None:
        buffer = bytearray()
        try:
            while not self._stop.is_set():
                if self.faults.offline:
                    return
                ready, _, _ = select.select([conn], [], [], 0.1)
                if not ready:
                    continue
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer.extend(chunk)
                for raw in self._split_lines(buffer):
                    keep, out = self._serve_line(raw)
                    if not keep:
                        return
                    if out is not None:
                        try:
                            conn.sendall(out)
                        except OSError:
                            return
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def drop_clients(self) -> None:
        """Close every client connection now (the server keeps listening)."""
        with self._clients_lock:
            clients = list(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _close_endpoints(self) -> None:
        self._listener.close()
        self.drop_clients()


class PtyLineServer(LineServer):
    """Serves a device on a serial pseudo-terminal; :attr:`port_path` is what pyserial opens.

    With ``link_path`` the pty is also reachable at that stable path (a symlink),
    which survives a simulated unplug/replug (:meth:`replug`).
    """

    def __init__(
        self,
        device: LineDevice,
        *,
        faults: Faults | None = None,
        terminator: bytes = b"\n",
        name: str = "",
        link_path: str | None = None,
    ) -> None:
        super().__init__(device, faults=faults, terminator=terminator, name=name)
        self.link_path = link_path
        self._fd_lock = threading.Lock()
        self._master = -1
        self._slave = -1
        self._open_pty()
        self._spawn(self._loop, "pty")

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        with self._fd_lock:
            self._master, self._slave = master, slave
            self._pts = os.ttyname(slave)
        if self.link_path:
            tmp = self.link_path + ".tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self._pts, tmp)
            os.replace(tmp, self.link_path)

    @property
    def port_path(self) -> str:
        """The device path a client opens (the stable link if one was asked for)."""
        return self.link_path or self._pts

    def _close_fds(self) -> None:
        with self._fd_lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = -1

    def replug(self) -> None:
        """Simulate pulling and re-inserting the cable: a new pty behind the same link."""
        self._close_fds()
        self._open_pty()

    def _loop(self) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            master = self._master
            if master < 0 or self.faults.offline:
                self._stop.wait(0.05)
                buffer.clear()
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.1)
                if not ready:
                    continue
                chunk = os.read(master, 65536)
            except (OSError, ValueError):
                self._stop.wait(0.05)
                continue
            buffer.extend(chunk)
            for raw in self._split_lines(buffer):
                keep, out = self._serve_line(raw)
                if not keep:
                    log.info("%s: fault: unplugging the serial line", self.name)
                    self._close_fds()
                    if self.link_path:
                        self._stop.wait(0.05)
                        self._open_pty()
                    buffer.clear()
                    break
                if out is not None:
                    self._write(out)

    def _write(self, data: bytes) -> None:
        deadline = time.monotonic() + 2.0
        view = memoryview(data)
        while view and time.monotonic() < deadline:
            try:
                sent = os.write(self._master, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            view = view[sent:]

    def _close_endpoints(self) -> None:
        # the loop thread notices the stop flag within 0.1 s; then the fds go
        for thread in self._threads:
            thread.join(timeout=5)
        self._close_fds()
        if self.link_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link_path)
