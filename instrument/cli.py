"""The ``brainpaste`` command line.

Subcommands live one per module in :mod:`instrument.commands` (each exposes
``register(subparsers)``); packages that may not be imported from here (the GUI)
add theirs through the ``brainpaste.commands`` entry-point group.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import instrument
import instrument.commands

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"


def setup_logging(level: str, log_file: str | None = None) -> None:
    """Send log records to stderr (and ``log_file``) at ``level``."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="brainpaste",
        description="Record a neuronal culture on a CMOS nanoelectrode array, extract its "
        "synaptic map, and imprint it onto a memory crossbar.",
    )
    parser.add_argument(
        "--version", action="version", version=f"brainpaste {instrument.__version__}"
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (default WARNING)",
    )
    parser.add_argument("--log-file", help="also write the log to this file")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(instrument.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"instrument.commands.{info.name}")
        module.register(subparsers)
    for ep in entry_points(group="brainpaste.commands"):
        try:
            ep.load()(subparsers)
        except ImportError as exc:  # e.g. Qt libraries missing: the rest still works
            log.debug("subcommand %s unavailable: %s", ep.name, exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainpaste`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_file)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
