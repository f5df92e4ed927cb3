"""Shared fixtures: emulators on real wires, and a guard that nothing leaks between tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from hil_sim.line_server import LIVE_SERVERS, PtyLineServer, TcpLineServer
from tests.scpi_demo import DemoSupplyDevice


@pytest.fixture(autouse=True)
def own_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Each test runs in an empty folder of its own: what the programs keep relative to the
    working directory (the calibration store, session folders) never leaks between tests,
    nor in from the developer's own runs in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def no_leaked_emulators() -> Iterator[None]:
    """Every emulator server a test starts must be stopped, its threads gone."""
    before = {t.ident for t in threading.enumerate()}
    yield
    live = [s for s in list(LIVE_SERVERS) if s.running]
    for server in live:
        server.stop()
    assert not live, f"test left emulator servers running: {live}"
    deadline = time.monotonic() + 2.0
    while True:
        extra = [
            t
            for t in threading.enumerate()
            if t.ident not in before
            and t.is_alive()
            and t.name.startswith(tuple({s.name for s in LIVE_SERVERS}) or ("\0",))
        ]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra, f"emulator threads leaked: {extra}"


@pytest.fixture
def demo_tcp() -> Iterator[TcpLineServer]:
    """The demo supply emulator on a loopback TCP port."""
    with TcpLineServer(DemoSupplyDevice(), name="demo-tcp") as server:
        yield server


@pytest.fixture
def demo_pty(tmp_path) -> Iterator[PtyLineServer]:
    """The demo supply emulator on a serial pseudo-terminal (stable link in tmp_path)."""
    with PtyLineServer(
        DemoSupplyDevice(), name="demo-pty", link_path=str(tmp_path / "ttyDEMO")
    ) as server:
        yield server
