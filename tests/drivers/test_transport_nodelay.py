"""VISA sockets send each message at once (no Nagle delay behind an unanswered write)."""

from __future__ import annotations

import socket

from drivers.transport import VisaTransport, open_transport


def test_visa_socket_has_nagle_disabled(demo_tcp):
    transport = open_transport(demo_tcp.visa_resource, timeout_s=1)
    try:
        assert isinstance(transport, VisaTransport)
        sock = transport._socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        transport.write(":SOUR:VOLT 1")
        transport.write(":SOUR:VOLT 2")
        assert transport.query(":SOUR:VOLT?") == "+2.000000E+00"
    finally:
        transport.close()
