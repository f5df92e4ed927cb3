"""Where an imprint stands, read from the session file's ``/imprint`` journal — live while
``brainpaste imprint`` writes it (SWMR), or after it finished.

The layout belongs to :mod:`instrument.imprint.journal` (docs/imprint.md): journal rows
``cells`` (tile, row, col, role, state, target, last read…), per-tile counters ``tiles``,
``final_read_s`` (NaN until the final read) and ``report_json``. This module only reads
it, through the journal's own :func:`~instrument.imprint.journal.open_read`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument.imprint.journal import (
    FAILED,
    GROUP,
    PENDING,
    SKIPPED,
    VERIFIED,
    open_read,
)
from instrument.imprint.mapping import ROLE_PARTNER, ROLE_SYNAPSE


@dataclass(frozen=True)
class ImprintProgress:
    """A copy of an imprint's state (conductances in S)."""

    technology: str
    tolerance_s: float
    g_min_s: float
    g_max_s: float
    cells: int
    pending: int
    verified: int
    failed: int
    skipped: int
    in_flight: int
    pulses: int
    target_s: np.ndarray
    """(T, R, C) target of every journal cell, NaN where the tile has no cell."""
    read_s: np.ndarray
    """(T, R, C) the final read where it exists, else each journal cell's last read."""
    error_s: np.ndarray
    """Read − target of the programmed (synapse and pair) cells that have a read; cells
    skipped as stuck are left out."""
    final: bool
    """The final whole-array read is in (the run finished)."""
    report: dict[str, Any] | None
    """The run's stored report (summary, tiles) once it finished."""

    @property
    def settled(self) -> int:
        """Cells no longer pending (verified, failed or skipped)."""
        return self.cells - self.pending

    @property
    def done_fraction(self) -> float:
        return self.settled / self.cells if self.cells else 0.0

    @property
    def within_tolerance(self) -> int:
        """Programmed cells whose read is within the tolerance of their target."""
        return int(np.count_nonzero(np.abs(self.error_s) <= self.tolerance_s))


def read_progress(path: str | Path) -> ImprintProgress | None:
    """The imprint of session file ``path`` (None when it holds none, or setup is not done)."""
    with open_read(path) as f:
        if GROUP not in f or "setup_complete" not in f[GROUP]:
            return None
        g = f[GROUP]
        for name in ("cells", "tiles", "final_read_s"):
            if hasattr(g[name], "refresh"):
                g[name].refresh()
        cells = g["cells"][()]
        tiles = g["tiles"][()]
        final = g["final_read_s"][()]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        raw = g["report_json"][()].tobytes().rstrip(b"\0") if "report_json" in g else b""
    report = json.loads(raw) if raw else None
    shape = final.shape  # (T, R, C)
    target = np.full(shape, np.nan)
    last = np.full(shape, np.nan)
    t, r, c = cells["tile"], cells["row"], cells["col"]
    target[t, r, c] = cells["target_s"]
    last[t, r, c] = cells["last_read_s"]
    finished = bool(np.isfinite(final).all()) if final.size else False
    read = np.where(np.isfinite(final), final, last)
    programmed = (cells["role"] == ROLE_SYNAPSE) | (cells["role"] == ROLE_PARTNER)
    values = read[t, r, c]
    state = cells["state"]
    ok = programmed & (state != SKIPPED) & np.isfinite(values)  # stuck cells are not programmed
    return ImprintProgress(
        technology=str(attrs.get("technology", "")),
        tolerance_s=float(attrs.get("tolerance_s", np.nan)),
        g_min_s=float(attrs.get("g_min_s", np.nan)),
        g_max_s=float(attrs.get("g_max_s", np.nan)),
        cells=int(cells.size),
        pending=int(np.count_nonzero(state == PENDING)),
        verified=int(np.count_nonzero(state == VERIFIED)),
        failed=int(np.count_nonzero(state == FAILED)),
        skipped=int(np.count_nonzero(state == SKIPPED)),
        in_flight=int(np.count_nonzero(cells["in_flight"])),
        pulses=int(tiles["pulses"].sum()) if tiles.size else 0,
        target_s=target,
        read_s=read,
        error_s=values[ok] - cells["target_s"][ok],
        final=finished,
        report=report,
    )
