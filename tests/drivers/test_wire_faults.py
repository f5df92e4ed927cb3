"""The demo instrument through the real driver stack (pyvisa-py socket, pyserial pty and
socket://), with every fault the emulator framework can inject, and the typed error
the user gets for each."""

from __future__ import annotations

import threading
import time

import pytest

from drivers.errors import (
    ConnectionLost,
    InstrumentReportedError,
    InstrumentTimeout,
    MalformedReply,
    MeasurementOverflow,
)
from drivers.transport import SerialTransport, VisaTransport, open_transport
from hil_sim.line_server import TcpLineServer
from tests.scpi_demo import DemoSupply, DemoSupplyDevice


@pytest.fixture(params=["visa-socket", "serial-pty", "serial-socket"])
def wired(request, demo_tcp, tmp_path):
    """(driver, server) over each kind of real wire."""
    if request.param == "visa-socket":
        server = demo_tcp
        driver = DemoSupply.open(server.visa_resource, timeout_s=0.5)
    elif request.param == "serial-socket":
        server = demo_tcp
        driver = DemoSupply.open(server.serial_url, timeout_s=0.5)
    else:
        server = request.getfixturevalue("demo_pty")
        driver = DemoSupply.open(server.port_path, timeout_s=0.5)
    yield driver, server
    driver.close()


def test_round_trip_over_real_wires(wired):
    driver, server = wired
    assert driver.identify().model == "DEMO-SUPPLY"
    driver.voltage = 2.5
    driver.output = True
    assert driver.voltage == 2.5
    assert driver.current == pytest.approx(2.5e-3)
    assert server.lines_handled >= 6


def test_instrument_reported_error_over_the_wire(wired):
    driver, _ = wired
    with pytest.raises(InstrumentReportedError) as info:
        driver.write(":SOUR:VOLT 30")  # emulator range is ±20 V
    assert info.value.code == -222
    assert info.value.command == ":SOUR:VOLT 30"
    driver.check_errors()  # queue drained


def test_overflow_reading(wired):
    driver, _ = wired
    driver.voltage = 10  # 10 mA: on the edge of the range
    driver.output = True
    driver.write(":SOUR:VOLT 15")  # beyond the driver's ±10 V: only via raw write
    with pytest.raises(MeasurementOverflow):
        _ = driver.current


def test_garbage_reply_is_malformed_then_next_query_is_fine(wired):
    driver, server = wired
    server.faults.garbage_next()
    with pytest.raises(MalformedReply):
        _ = driver.voltage
    assert driver.voltage == 0.0
    assert server.faults.injected["garbage"] == 1


def test_mute_is_a_timeout_and_never_hangs(wired):
    driver, server = wired
    server.faults.stop_answering()
    start = time.monotonic()
    with pytest.raises(InstrumentTimeout):
        _ = driver.voltage
    assert time.monotonic() - start < 2.0
    server.faults.clear()
    assert driver.identify().model == "DEMO-SUPPLY"


def test_late_reply_after_timeout_is_not_taken_for_the_next_answer(wired):
    driver, server = wired
    driver.voltage = 1.0
    server.faults.delay_next(0.8)  # beyond the 0.5 s timeout
    with pytest.raises(InstrumentTimeout):
        _ = driver.current  # its late answer (0 A) arrives after the timeout
    time.sleep(0.5)
    driver.voltage = 3.0
    assert driver.voltage == 3.0


def test_drop_is_connection_lost_then_reconnect(wired):
    driver, server = wired
    driver.identify()
    server.faults.drop_next()
    with pytest.raises((ConnectionLost, InstrumentTimeout)) as info:
        _ = driver.voltage
    if isinstance(info.value, InstrumentTimeout):  # the peer's close raced the read
        with pytest.raises(ConnectionLost):
            _ = driver.voltage
    with pytest.raises(ConnectionLost, match="reconnect"):
        _ = driver.voltage  # stays lost, immediately, until reconnected
    driver.reconnect(attempts=5, delay_s=0.1)
    assert driver.voltage == 0.0


def test_latency_is_applied_per_message(demo_tcp):
    demo_tcp.faults.latency_s = 0.05
    with DemoSupply.open(demo_tcp.visa_resource, timeout_s=1) as driver:
        start = time.monotonic()
        for _ in range(4):
            driver.query("*OPC?")
        assert time.monotonic() - start >= 0.2


def test_offline_instrument_reconnect_is_bounded(demo_tcp):
    with DemoSupply.open(demo_tcp.visa_resource, timeout_s=0.3) as driver:
        driver.identify()
        demo_tcp.faults.go_offline(5.0)
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match="after 3 attempts"):
            driver.reconnect(attempts=3, delay_s=0.1)
        assert time.monotonic() - start < 4.0
        demo_tcp.faults.clear()
        driver.reconnect(attempts=3, delay_s=0.1)
        assert driver.identify().serial == "SN0001"


def test_reconnect_refuses_a_different_instrument(tmp_path):
    class Other(DemoSupplyDevice):
        identity = ("brainpaste", "OTHER", "SN9", "1.0")

    with TcpLineServer(DemoSupplyDevice(), name="demo-a") as first:
        port = first.port
        driver = DemoSupply.open(first.visa_resource, timeout_s=0.5)
        driver.identify()
    with TcpLineServer(Other(), port=port, name="demo-b"):
        with pytest.raises(Exception, match="different instrument"):
            driver.reconnect(attempts=2, delay_s=0.05)
    driver.close()


def test_two_threads_never_interleave_a_query(demo_tcp):
    demo_tcp.faults.latency_s = 0.002
    errors: list[BaseException] = []
    with DemoSupply.open(demo_tcp.visa_resource, timeout_s=2) as driver:

        def worker(volts: float) -> None:
            try:
                for _ in range(30):
                    with driver.lock:
                        driver.write(f":SOUR:VOLT {volts}", check=False)
                        got = driver.voltage
                    assert got == volts, (got, volts)
                    assert driver.identify().model == "DEMO-SUPPLY"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(v,)) for v in (1.0, -2.0, 4.0)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_unreachable_addresses_fail_fast_with_connection_lost(tmp_path):
    with pytest.raises(ConnectionLost):
        open_transport("TCPIP::127.0.0.1::1::SOCKET", timeout_s=0.5)
    with pytest.raises(ConnectionLost):
        open_transport(str(tmp_path / "no-such-tty"), timeout_s=0.5)
    with pytest.raises(ValueError, match="neither"):
        open_transport("lab-supply-7", timeout_s=0.5)


def test_transport_kinds_chosen_by_address(demo_tcp):
    with open_transport(demo_tcp.visa_resource) as t:
        assert isinstance(t, VisaTransport)
    with open_transport(demo_tcp.serial_url) as t:
        assert isinstance(t, SerialTransport)
