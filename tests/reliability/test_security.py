"""Security: loopback-only emulators, nothing evaluated as code, no command injection.

- every listening socket of the embedded lab is on 127.0.0.1, and the server framework
  refuses another address unless told explicitly;
- no module evaluates data (eval/exec/pickle/shell) — checked on the source;
- a value that reaches an instrument cannot carry an extra command (newline, ``;``):
  every declared setting of every driver is refused before anything is sent.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import psutil
import pytest

import drivers
from drivers.errors import OutOfRangeError
from drivers.scpi import Control, SCPIInstrument
from drivers.transcript import expected_protocol
from hil_sim.line_server import TcpLineServer
from instrument.embedded_lab import embedded_lab
from tests.scpi_demo import DemoSupplyDevice

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("drivers", "hil_sim", "instrument", "calibration", "gui")
EVIL = ("1;*RST", "ON;:OUTP ON", "1\n:SOUR:VOLT 200", "0\r*RST", 'x";*RST;"', "1 ; :SYST:BEEP")


def test_embedded_lab_listens_on_loopback_only():
    with embedded_lab() as (config, lab):
        assert lab.instruments, "the lab started no instruments"
        listening = [
            c.laddr
            for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, "no listening sockets found"
        assert all(addr.ip == "127.0.0.1" for addr in listening), listening
        for inst in config.instruments.values():
            assert "127.0.0.1" in inst.resource or inst.resource.startswith("/")


def test_server_refuses_a_public_address_unless_explicit():
    with pytest.raises(ValueError, match="loopback"):
        TcpLineServer(DemoSupplyDevice(), host="0.0.0.0")


def _source_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_no_module_evaluates_data():
    offenders = []
    for path in _source_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                owner = getattr(getattr(func, "value", None), "id", "")
                if (isinstance(func, ast.Name) and name in ("eval", "exec", "compile")) or (
                    owner in ("pickle", "marshal", "shelve") and name.startswith("load")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
                for kw in node.keywords:
                    if kw.arg in ("shell", "allow_pickle") and getattr(kw.value, "value", 0):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {kw.arg}=True")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n in ("pickle", "marshal", "shelve", "dill") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports pickle")
    assert not offenders, offenders


def _driver_settings() -> list[tuple[type, str, Control]]:
    found = []
    for info in pkgutil.iter_modules(drivers.__path__):
        module = importlib.import_module(f"drivers.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, SCPIInstrument) or cls.__module__ != module.__name__:
                continue
            for name, attr in vars(cls).items():
                if isinstance(attr, Control) and attr.set_cmd is not None:
                    found.append((cls, name, attr))
    return found


SETTINGS = _driver_settings()


def test_every_driver_setting_is_found():
    classes = {cls.__name__ for cls, _, _ in SETTINGS}
    assert {"Keithley2450", "KeysightB2900", "CneaBoard", "CrossbarSelector"} <= classes, classes


@pytest.mark.parametrize(
    ("cls", "name", "control"), SETTINGS, ids=[f"{c.__name__}.{n}" for c, n, _ in SETTINGS]
)
def test_no_setting_passes_an_injected_command(cls, name, control):
    assert control.validator is not None, f"{cls.__name__}.{name} has no validator"
    for evil in EVIL:
        with expected_protocol(cls, []) as driver, pytest.raises((OutOfRangeError, ValueError)):
            setattr(driver, name, evil)


def test_a_raw_write_is_one_line():
    with expected_protocol(SCPIInstrument, []) as driver:
        for evil in ("*RST\n:OUTP ON", "*CLS\r:OUTP ON"):
            with pytest.raises(ValueError, match="one line"):
                driver.write(evil)
