"""``brainpaste export-nwb``: a session's recording as an NWB file (pynwb)."""

from __future__ import annotations

import argparse
import sys

from instrument.nwb import NwbError, export_nwb
from instrument.session_files import SessionPathError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-nwb", help="write a session's recording as NWB")
    p.add_argument("session", metavar="SESSION_OR_FILE", help="session folder or session.h5")
    p.add_argument("--out", metavar="FILE.nwb", help="default: next to the session file")
    p.add_argument(
        "--compression",
        default="gzip",
        choices=["gzip", "lzf", "none", "blosc-lz4-bitshuffle"],
        help="gzip (default) reads everywhere; blosc needs hdf5plugin to read",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        path = export_nwb(args.session, args.out, compression=args.compression)
    except (NwbError, SessionPathError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
