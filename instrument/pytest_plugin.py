"""A pytest plugin for users' own CI: the ``emulated_lab`` fixture.

Installed with brainpaste (entry point ``pytest11``), so any test suite in the same
environment can write::

    def test_my_script_talks_to_the_smu(emulated_lab):
        smu = emulated_lab.resources["smu"]          # "TCPIP::127.0.0.1::40123::SOCKET"
        assert my_script.identify(smu).startswith("KEITHLEY")

The fixture starts the whole emulated lab on 127.0.0.1 (free ports) for the test and
stops it afterwards. Options come from the ``emulated_lab_options`` marker::

    @pytest.mark.emulated_lab_options(seed=3, latency_s=0.001, options={"rig": {"rows": 8}})
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from instrument.config import LabConfig
from instrument.embedded_lab import embedded_lab


@dataclass
class EmulatedLabHandle:
    """What the ``emulated_lab`` fixture gives a test."""

    config: LabConfig
    """A lab configuration whose instruments are the emulators."""
    resources: dict[str, str]
    """Instrument name → VISA resource string or pyserial URL."""
    data_ports: dict[str, int]
    """Instrument name → second TCP port for binary data (CNEA board)."""
    lab_toml: Path
    """A lab.toml naming the emulators, for programs that take ``--config``."""
    lab: Any
    """The running emulated lab (emulator objects, ground truth, fault injection)."""

    def faults(self, name: str) -> Any:
        """The fault injector of instrument ``name``'s (first) server."""
        return self.lab.instruments[name].servers[0].faults


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulated_lab_options(seed=1, latency_s=0.0, options=None): settings of the "
        "emulated_lab fixture",
    )


@pytest.fixture
def emulated_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmulatedLabHandle]:
    """A running emulated brainpaste lab (loopback, free ports), stopped after the test."""
    marker = request.node.get_closest_marker("emulated_lab_options")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    with embedded_lab(
        seed=int(kwargs.get("seed", 1)),
        latency_s=float(kwargs.get("latency_s", 0.0)),
        options=kwargs.get("options"),
    ) as (config, lab):
        lab_toml = tmp_path / "lab.toml"
        lab_toml.write_text(lab.resources_toml())
        yield EmulatedLabHandle(
            config=config,
            resources={n: i.resource for n, i in config.instruments.items()},
            data_ports={n: i.data_port for n, i in config.instruments.items() if i.data_port},
            lab_toml=lab_toml,
            lab=lab,
        )
