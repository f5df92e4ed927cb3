"""Where sessions live: one folder per session holding ``session.h5`` (and later a report).

Folders are named ``YYYYmmdd-HHMMSS[-label]`` (local time) under the lab's ``data_dir``;
a recording never reuses a folder that already holds a session file.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

SESSION_FILE = "session.h5"


class SessionPathError(ValueError):
    """A session folder or file that cannot be used as asked."""


def new_session_dir(
    data_dir: str | Path, label: str = "", *, now: dt.datetime | None = None
) -> Path:
    """A fresh folder path ``data_dir/YYYYmmdd-HHMMSS[-label]`` (``-2``, ``-3``… if taken).

    The folder is not created.
    """
    if label and not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        raise SessionPathError(f"session label {label!r}: use letters, digits, '_', '-', '.'")
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(data_dir) / (f"{stamp}-{label}" if label else stamp)
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def session_file_for_output(out_dir: str | Path) -> Path:
    """The session file to record into for ``--out DIR`` (refused when DIR already has one)."""
    out = Path(out_dir)
    if out.suffix in (".h5", ".hdf5", ".nwb"):
        raise SessionPathError(f"--out takes a session folder, not a file: {out}")
    if out.exists() and not out.is_dir():
        raise SessionPathError(f"{out} exists and is not a folder")
    path = out / SESSION_FILE
    if path.exists():
        raise SessionPathError(f"{path} exists: a recording never overwrites a session")
    return path


def find_recording(path: str | Path) -> Path:
    """The recording file a user means: a session folder → its ``session.h5`` (or its only
    ``.nwb``); a file → the file itself."""
    p = Path(path)
    if p.is_dir():
        if (p / SESSION_FILE).exists():
            return p / SESSION_FILE
        nwbs = sorted(p.glob("*.nwb"))
        if len(nwbs) == 1:
            return nwbs[0]
        raise SessionPathError(f"{p} holds no {SESSION_FILE} (nor a single .nwb file)")
    if not p.exists():
        raise SessionPathError(f"{p} does not exist")
    return p
