"""``brainpaste sim``: run the emulated lab until interrupted and print its resources."""

from __future__ import annotations

import argparse
import threading

from instrument.embedded_lab import embedded_lab


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sim", help="run the emulated lab (prints resources for lab.toml)")
    p.add_argument("--seed", type=int, default=1, help="seed of the emulated culture and devices")
    p.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="added latency per control exchange, s",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with embedded_lab(seed=args.seed, latency_s=args.latency) as (_config, lab):
        print("# emulated lab on 127.0.0.1 — paste into lab.toml:\n")
        print(lab.resources_toml(), flush=True)
        print("# running; Ctrl-C stops it", flush=True)
        threading.Event().wait(args.duration)
    return 0
