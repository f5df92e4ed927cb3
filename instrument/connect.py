"""Open the instruments a lab configuration names, with the driver each one asks for."""

from __future__ import annotations

import importlib
from typing import Any

from drivers.errors import DriverError
from instrument.config import ConfigError, InstrumentConfig, LabConfig

DRIVERS: dict[str, str] = {
    "cnea_board": "drivers.cnea_board:CneaBoard",
    "keithley2450": "drivers.keithley2450:Keithley2450",
    "keysight_b2900": "drivers.keysight_b2900:KeysightB2900",
    "crossbar_selector": "drivers.selector:CrossbarSelector",
    "crossbar_line_driver": "drivers.line_driver:LineDriver",
}
"""Driver name (as written in lab.toml) → ``module:Class``. Each class has
``open(resource, *, timeout_s, **options)``."""


def driver_class(name: str) -> type:
    """The driver class registered as ``name``."""
    try:
        module_name, _, class_name = DRIVERS[name].partition(":")
    except KeyError:
        raise ConfigError(
            f"unknown driver {name!r} (known: {', '.join(sorted(DRIVERS))})", key="driver"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


def open_instrument(config: LabConfig, name: str, **options: Any) -> Any:
    """Open instrument ``name`` of ``config`` with its driver."""
    inst: InstrumentConfig = config.instrument(name)
    cls = driver_class(inst.driver)
    kwargs: dict[str, Any] = {"timeout_s": inst.timeout_s}
    if inst.data_port:
        kwargs["data_port"] = inst.data_port
    if not inst.resource.upper().startswith(("TCPIP", "GPIB", "USB", "VXI", "PXI")):
        kwargs["baud_rate"] = inst.baud_rate
    return cls.open(inst.resource, **kwargs, **options)


def identify_all(config: LabConfig) -> dict[str, tuple[bool, str]]:
    """Open every configured instrument with its driver and ask ``*IDN?``.

    name → (answered, identity or the error's type and message).
    """
    results: dict[str, tuple[bool, str]] = {}
    for name in config.instruments:
        try:
            driver = open_instrument(config, name)
            try:
                results[name] = (True, str(driver.identify()))
            finally:
                driver.close()
        except (DriverError, ConfigError, ValueError, OSError) as exc:
            results[name] = (False, f"{type(exc).__name__}: {exc}")
    return results


SAFE_ACTIONS: dict[str, tuple[str, ...]] = {
    "keithley2450": ("abort_visits", "output_off"),
    "keysight_b2900": ("abort_visits", "output_off"),
    "crossbar_selector": ("abort_scan", "ground_all"),
    "crossbar_line_driver": ("output_off",),
    "cnea_board": ("safe_state",),
}
"""Per driver, the calls that leave an instrument safe: outputs off, lines grounded,
acquisition and stimulation stopped."""


def make_safe(config: LabConfig) -> dict[str, str]:
    """Put every configured instrument in its safe state (best effort, never raises).

    name → "safe", or what went wrong (an instrument that does not answer is reported,
    and the caller says so to the user)."""
    results: dict[str, str] = {}
    for name, inst in config.instruments.items():
        actions = SAFE_ACTIONS.get(inst.driver, ())
        try:
            driver = open_instrument(config, name)
        except (DriverError, ConfigError, ValueError, OSError) as exc:
            results[name] = f"not reachable: {type(exc).__name__}: {exc}"
            continue
        try:
            for action in actions:
                getattr(driver, action)()
            results[name] = "safe"
        except (DriverError, OSError) as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                driver.close()
            except (DriverError, OSError) as exc:
                results.setdefault(name, f"close: {exc}")
    return results
