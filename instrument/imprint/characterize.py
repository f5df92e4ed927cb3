"""Characterization: read every cell of an array, find stuck and out-of-window cells.

One batched read of the whole array. Cells outside the window (beyond one tolerance) are
suspects; with ``probe`` each suspect gets a few pulses towards the window (the algorithm's
probe pulses: SET below, RESET above) and a second batched read. A suspect that moved by
more than the read noise is programmable (it was merely far out); one that did not is
**stuck** (high or low) and is avoided by placement and never pulsed while programming.
Without ``probe`` every suspect is taken as stuck (conservative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from drivers.crossbar_rig import CrossbarRig
from instrument.imprint.access import Access
from instrument.imprint.mapping import Window

STATUS_OK, STATUS_STUCK_HIGH, STATUS_STUCK_LOW = 0, 1, 2
STATUS_NAMES = {STATUS_OK: "ok", STATUS_STUCK_HIGH: "stuck high", STATUS_STUCK_LOW: "stuck low"}


class Prober(Protocol):
    def probe_pulse(self, up: bool) -> tuple[float, float, int]:
        """(amplitude V, width s, repeats) of pulses that move a healthy cell up / down."""
        ...


@dataclass
class Characterization:
    """What one array looked like before programming."""

    read_s: np.ndarray
    """(R, C) conductance read first, S."""
    final_s: np.ndarray
    """(R, C) conductance after any probe pulse (= read_s where not probed), S."""
    status: np.ndarray
    """(R, C) uint8 STATUS_* per cell."""
    probed: int
    """Cells that got a probe pulse."""

    @property
    def bad(self) -> np.ndarray:
        """(R, C) bool: stuck cells."""
        return self.status != STATUS_OK

    def summary(self) -> dict[str, int]:
        return {
            "cells": int(self.status.size),
            "stuck_high": int((self.status == STATUS_STUCK_HIGH).sum()),
            "stuck_low": int((self.status == STATUS_STUCK_LOW).sum()),
            "probed": self.probed,
        }


def characterize(
    rig: CrossbarRig,
    window: Window,
    tolerance_s: float,
    prober: Prober,
    access: Access,
    *,
    probe: bool = True,
) -> Characterization:
    """Read every cell of ``rig``'s array (batched) and classify it."""
    first = access.read_array(rig)
    final = first.copy()
    low = first < window.g_min_s - tolerance_s
    high = first > window.g_max_s + tolerance_s
    status = np.full(first.shape, STATUS_OK, dtype=np.uint8)
    probed = 0
    if not probe:
        status[high] = STATUS_STUCK_HIGH
        status[low] = STATUS_STUCK_LOW
        return Characterization(first, final, status, 0)
    for mask, up, stuck in ((low, True, STATUS_STUCK_LOW), (high, False, STATUS_STUCK_HIGH)):
        cells = [(int(r), int(c)) for r, c in zip(*np.nonzero(mask), strict=True)]
        if not cells:
            continue
        amplitude, width, repeats = prober.probe_pulse(up)
        visits = [cell for cell in cells for _ in range(repeats)]
        if access.split:
            access.pulse(rig, visits, [amplitude] * len(visits), width)
            after = access.read_cells(rig, cells)
        else:
            g = access.pulse_read(rig, visits, [amplitude] * len(visits), width)
            after = g[repeats - 1 :: repeats]
        probed += len(cells)
        before = first[mask]
        # moved: more than 5 % of the reading or 2 % of the window, in the probe's direction
        threshold = np.maximum(0.05 * np.abs(before), 0.02 * window.span_s)
        change = after - before if up else before - after
        moved = change > threshold
        rows, cols = np.nonzero(mask)
        final[rows, cols] = after
        status[rows[~moved], cols[~moved]] = stuck
    return Characterization(first, final, status, probed)
