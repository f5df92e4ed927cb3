"""``brainpaste doctor``: versions, VISA backends, visible resources, and whether the
emulated lab (and the configured instruments) answer."""

from __future__ import annotations

import argparse
import concurrent.futures
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

import pyvisa.highlevel

from drivers.transport import resource_manager
from instrument.config import ConfigError, LabConfig, load
from instrument.connect import identify_all
from instrument.embedded_lab import embedded_lab

PACKAGES = (
    "brainpaste",
    "numpy",
    "scipy",
    "numba",
    "h5py",
    "hdf5plugin",
    "pynwb",
    "pyvisa",
    "pyvisa-py",
    "pyserial",
    "PySide6-Essentials",
    "pyqtgraph",
    "dask",
    "distributed",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="check versions, VISA, instruments, emulated lab")
    p.add_argument("--config", help="lab configuration whose instruments to check")
    p.add_argument("--no-scan", action="store_true", help="skip the VISA resource scan")
    p.add_argument(
        "--sim",
        action="store_true",
        help="(default) check the emulated lab; kept for symmetry with other commands",
    )
    p.set_defaults(func=run)


def _check_instruments(config: LabConfig, title: str) -> int:
    failures = 0
    print(f"\n{title}:")
    if not config.instruments:
        print("  (no instruments configured)")
    results = identify_all(config)
    for name, inst in config.instruments.items():
        ok, text = results[name]
        failures += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<10} {inst.driver:<18} {inst.resource}")
        print(f"       {text}")
    return failures


def run(args: argparse.Namespace) -> int:
    print(f"brainpaste doctor — Python {platform.python_version()} on {platform.platform()}")
    for package in PACKAGES:
        try:
            ver = version(package)
        except PackageNotFoundError:
            ver = "NOT INSTALLED"
        print(f"  {package:<20} {ver}")
    failures = 0
    print("\nVISA backends:")
    for backend in pyvisa.highlevel.list_backends():
        try:
            lib = pyvisa.highlevel.get_wrapper_class(backend)
            print(f"  {backend:<8} {lib.__module__}")
        except Exception as exc:  # a backend may be listed but unusable
            print(f"  {backend:<8} unusable: {exc}")
    if not args.no_scan:
        print("\nVISA resources visible (pyvisa-py):")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(lambda: resource_manager().list_resources("?*"))
            try:
                found = future.result(timeout=15)
                print("  " + ("\n  ".join(found) if found else "(none)"))
            except concurrent.futures.TimeoutError:
                print("  (scan did not finish within 15 s)")
            except Exception as exc:
                print(f"  scan failed: {exc}")
    if args.config:
        try:
            failures += _check_instruments(load(args.config), f"Configured lab ({args.config})")
        except ConfigError as exc:
            print(f"\nconfiguration error: {exc}")
            failures += 1
    with embedded_lab() as (config, lab):
        failures += _check_instruments(config, "Emulated lab (127.0.0.1, free ports)")
        if not lab.instruments:
            print("  the emulated lab started no instruments")
            failures += 1
    print(f"\n{'all checks passed' if not failures else f'{failures} check(s) failed'}")
    sys.stdout.flush()
    return 1 if failures else 0
