"""Write-verify: one algorithm class per technology, one batched loop for all of them.

The loop (:func:`program_tile`) works on a tile's journal rows. Each round it asks the
algorithm for the next pulse of every pending cell (amplitude per cell, width per cell),
groups the cells by width and sends each group as **one batched pulse+read train**
(:meth:`~drivers.crossbar_rig.CrossbarRig.pulse_train`: the selector's scan list stepped
by the SMU's trigger line, the SMU's source list and reading buffer — a few messages
whatever the number of cells). The read-back after every pulse is the verify; the
algorithm then adapts each cell's amplitude/width from how far the pulse moved it. A cell
is **verified** when its read is within the tolerance of its target (off cells: at most
``g_min + tolerance``), **failed** when it used ``max_pulses`` or cannot reach its target.

Algorithms (parameters in ``[imprint.<technology>]``, docs/imprint.md):

* :class:`RRAMWriteVerify` — bipolar, adaptive amplitude and width (Alibart et al. 2012):
  SET below the target, RESET above; each cell's amplitude per direction follows
  ``dV = V0 ln(q* / q)`` where ``q`` is the fraction of the remaining error the last pulse
  removed (aim ``q* = 0.5``): threshold and rate variation between cells are learned cell
  by cell. Width widens when the largest amplitude barely moves a cell and narrows after
  overshoots at the smallest.
* :class:`PCMWriteVerify` — partial-SET staircase (amplitude adapted the same way); an
  overshoot RESETs the cell (melt-quench) and restarts the staircase, gentler.
* :class:`MRAMWriteVerify` — write-until-switched: a slow amplitude ramp in the needed
  direction, read after every pulse, so junctions switch one at a time; the ramp holds
  its amplitude after a switch (the next junction needs more).
* :class:`FlashISPP` — block erase once (journaled), then incremental-step-pulse
  programming of the threshold voltage: coarse steps until the cell moves, then steps
  from the cell model's predicted remaining ``dV_th`` (never past the target: programming
  only goes one way without a block erase).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from drivers.crossbar_rig import CrossbarRig
from drivers.errors import DataIntegrityError
from drivers.smu import VisitPlan
from instrument.imprint.access import Access
from instrument.imprint.journal import FAILED, PENDING, VERIFIED, Journal
from instrument.imprint.mapping import ROLE_OFF, Window
from instrument.imprint.settings import FlashParams, MRAMParams, PCMParams, RRAMParams

log = logging.getLogger(__name__)


class WriteVerify(ABC):
    """A technology's write-verify algorithm, vectorized over cells (journal rows)."""

    technology: ClassVar[str]
    needs_prepare: ClassVar[bool] = False

    def __init__(
        self,
        params: Any,
        window: Window,
        tolerance_s: float,
        max_pulses: int,
        verify_margin: float = 0.7,
    ) -> None:
        self.p = params
        self.window = window
        self.tol = tolerance_s
        self.max_pulses = max_pulses
        self.verify_margin = verify_margin
        """Programming stops within ``verify_margin x tolerance`` so read noise and settling
        after the verify still leave the cell within the tolerance at the final read."""

    @property
    def off_max_s(self) -> float:
        """Largest reading that counts as off, S."""
        return self.window.g_min_s + self.tol

    def verified(
        self, g: np.ndarray, target: np.ndarray, role: np.ndarray, margin: float = 1.0
    ) -> np.ndarray:
        """Within ``margin`` x tolerance (off cells: at most ``g_min + margin x tolerance``)."""
        tol = margin * self.tol
        with np.errstate(invalid="ignore"):
            return np.where(
                role == ROLE_OFF, g <= self.window.g_min_s + tol, np.abs(g - target) <= tol
            )

    @abstractmethod
    def init_rows(self, rows: np.ndarray) -> None:
        """Starting amplitude/width state of fresh rows."""

    @abstractmethod
    def probe_pulse(self, up: bool) -> tuple[float, float, int]:
        """(amplitude V, width s, repeats) that move a healthy cell up / down."""

    @abstractmethod
    def next_pulse(self, rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Amplitude (V, signed) and width (s) of the next pulse of rows ``idx``."""

    @abstractmethod
    def observe(
        self, rows: np.ndarray, idx: np.ndarray, g_before: np.ndarray, amp: np.ndarray
    ) -> None:
        """Adapt rows ``idx`` after their pulse ``amp`` moved them from ``g_before`` to
        ``rows["last_read_s"][idx]`` (may mark cells FAILED)."""

    def prepare(self, rig: CrossbarRig, rows: np.ndarray, access: Access) -> None:  # noqa: B027
        """Once per tile before any programming pulse (flash: block erase); none by default."""

    def _adapt(
        self,
        magnitude: np.ndarray,
        q: np.ndarray,
        lo: float,
        hi: float,
        scale_v: float,
        q_target: float = 0.5,
    ) -> np.ndarray:
        """``|V| + scale ln(q*/q)`` (one step up at most two steps either way), in [lo, hi]."""
        step = self.p.step_v
        dv = scale_v * np.log(q_target / np.clip(q, 0.02, 50.0))
        return np.clip(magnitude + np.clip(dv, -2 * step, 2 * step), lo, hi)


class RRAMWriteVerify(WriteVerify):
    technology = "rram"
    p: RRAMParams
    V0 = 0.15
    """Voltage scale of the exponential switching rate the adaptation assumes, V."""
    STALL_PULSES = 6
    """Pulses at the strongest setting that leave a cell unmoved before it is failed."""

    def init_rows(self, rows: np.ndarray) -> None:
        rows["amp_up_v"] = self.p.set_start_v
        rows["amp_down_v"] = self.p.reset_start_v
        rows["width_s"] = self.p.width_s

    def probe_pulse(self, up: bool) -> tuple[float, float, int]:
        v = (self.p.set_start_v + self.p.set_max_v) / 2
        return (v if up else -(self.p.reset_start_v + self.p.reset_max_v) / 2), 1e-5, 2

    def next_pulse(self, rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = rows[idx]
        up = r["target_s"] > r["last_read_s"]
        amp = np.where(up, r["amp_up_v"], -r["amp_down_v"]).astype(float)
        width = r["width_s"].astype(float)
        off = r["role"] == ROLE_OFF
        amp[off], width[off] = -self.p.off_v, self.p.off_width_s
        return amp, width

    def observe(
        self, rows: np.ndarray, idx: np.ndarray, g_before: np.ndarray, amp: np.ndarray
    ) -> None:
        p = self.p
        r = rows[idx]
        g = r["last_read_s"]
        up = amp > 0
        off = r["role"] == ROLE_OFF
        error = np.maximum(np.abs(r["target_s"] - g_before), 0.25 * self.tol)
        q = (g - g_before) * np.sign(amp) / error
        new_up = self._adapt(r["amp_up_v"], q, p.set_start_v - 2 * p.step_v, p.set_max_v, self.V0)
        new_down = self._adapt(
            r["amp_down_v"], q, p.reset_start_v - 2 * p.step_v, p.reset_max_v, self.V0
        )
        amp_up = np.where(up & ~off, new_up, r["amp_up_v"])
        amp_down = np.where(~up & ~off, new_down, r["amp_down_v"])
        at_max = np.where(up, amp_up >= p.set_max_v, amp_down >= p.reset_max_v)
        at_min = np.where(
            up, amp_up <= p.set_start_v - 2 * p.step_v, amp_down <= p.reset_start_v - 2 * p.step_v
        )
        width = r["width_s"].astype(float)
        stalled = at_max & (width >= p.width_max_s) & (np.abs(q) < 0.05)
        width = np.where(at_max & (q < 0.15), np.minimum(width * 3, p.width_max_s), width)
        width = np.where(at_min & (q > 1.5), np.maximum(width / 3, p.width_min_s), width)
        r["amp_up_v"], r["amp_down_v"] = amp_up, amp_down
        r["width_s"] = np.where(off, r["width_s"], width)
        # a cell the strongest pulse no longer moves is stuck inside the window: give up
        # after STALL_PULSES of them instead of spending the whole pulse budget
        moved_off = off & (np.abs(g - g_before) < 0.01 * np.maximum(g_before, self.tol))
        stuck = np.where(off, moved_off, stalled)
        r["aux"] = np.where(stuck, r["aux"] + 1, 0)
        r["state"] = np.where(r["aux"] >= self.STALL_PULSES, FAILED, r["state"])
        rows[idx] = r


class PCMWriteVerify(WriteVerify):
    technology = "pcm"
    p: PCMParams
    V_SCALE = 0.4
    """Amplitude scale of the adaptation (partial-SET steps grow about linearly), V."""

    def init_rows(self, rows: np.ndarray) -> None:
        rows["amp_up_v"] = self.p.set_min_v + 2 * self.p.step_v
        rows["amp_down_v"] = self.p.reset_v
        rows["width_s"] = self.p.width_s

    def probe_pulse(self, up: bool) -> tuple[float, float, int]:
        if up:
            return (self.p.set_min_v + self.p.set_max_v) / 2, self.p.width_s, 3
        return self.p.reset_v, self.p.reset_width_s, 1

    def next_pulse(self, rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = rows[idx]
        above = (r["last_read_s"] > r["target_s"] + self.tol) | (r["role"] == ROLE_OFF)
        amp = np.where(above, self.p.reset_v, r["amp_up_v"]).astype(float)
        width = np.where(above, self.p.reset_width_s, self.p.width_s)
        return amp, width

    def observe(
        self, rows: np.ndarray, idx: np.ndarray, g_before: np.ndarray, amp: np.ndarray
    ) -> None:
        p = self.p
        r = rows[idx]
        reset = amp >= p.reset_v
        error = np.maximum(np.abs(r["target_s"] - g_before), 0.25 * self.tol)
        q = (r["last_read_s"] - g_before) / error
        adapted = self._adapt(r["amp_up_v"], q, p.set_min_v, p.set_max_v, self.V_SCALE, 0.4)
        gentler = np.maximum(r["amp_up_v"] - p.step_v, p.set_min_v)
        programmed = r["role"] != ROLE_OFF
        r["amp_up_v"] = np.where(reset, np.where(programmed, gentler, r["amp_up_v"]), adapted)
        r["aux"] = r["aux"] + (reset & programmed)
        r["state"] = np.where(programmed & (r["aux"] > p.max_resets), FAILED, r["state"])
        rows[idx] = r


class MRAMWriteVerify(WriteVerify):
    technology = "mram"
    p: MRAMParams

    def init_rows(self, rows: np.ndarray) -> None:
        rows["amp_up_v"] = self.p.start_v
        rows["amp_down_v"] = self.p.start_v
        rows["width_s"] = self.p.width_s

    def probe_pulse(self, up: bool) -> tuple[float, float, int]:
        return (self.p.max_v if up else -self.p.off_v), self.p.off_width_s, 1

    def next_pulse(self, rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = rows[idx]
        up = r["target_s"] > r["last_read_s"]
        amp = np.where(up, r["amp_up_v"], -r["amp_down_v"]).astype(float)
        width = np.full(idx.size, self.p.width_s)
        off = r["role"] == ROLE_OFF
        amp[off], width[off] = -self.p.off_v, self.p.off_width_s
        return amp, width

    def observe(
        self, rows: np.ndarray, idx: np.ndarray, g_before: np.ndarray, amp: np.ndarray
    ) -> None:
        p = self.p
        r = rows[idx]
        spacing = self.window.span_s / max(self.window.levels - 1, 1)
        switched = np.abs(r["last_read_s"] - g_before) > 0.3 * spacing
        up = amp > 0
        ramp = ~switched & (r["role"] != ROLE_OFF)
        r["amp_up_v"] = np.where(
            ramp & up, np.minimum(r["amp_up_v"] + p.step_v, p.max_v), r["amp_up_v"]
        )
        r["amp_down_v"] = np.where(
            ramp & ~up, np.minimum(r["amp_down_v"] + p.step_v, p.max_v), r["amp_down_v"]
        )
        rows[idx] = r


class FlashISPP(WriteVerify):
    """Block erase, then ISPP that learns each cell's gate offset.

    With pulses long enough for V_th to settle, a gate pulse ``a`` leaves
    ``V_th = max(V_th, a - V_off)``; ``V_off`` (~13 V) differs from cell to cell. Until a cell
    first moves, the ramp climbs from ``V_th(now) + v_off_low`` in steps no larger than half
    the remaining ``dV_th`` (so the first move cannot jump past a near target); once it
    moves, ``V_off = a - V_th(read)`` is known and each next pulse moves V_th by 60 % of
    what remains to ``V_th(target + tol/2)`` (the step noise, ~10 % of a step, shrinks as
    the cell closes in). ``amp_down_v`` holds the learned ``V_off`` (0: not yet).
    """

    technology = "flash"
    needs_prepare = True
    p: FlashParams
    V_OFF_LOW = 12.2
    """Lowest gate offset a cell plausibly has, V (the ramp starts from it)."""
    AIM = 0.5
    """Aim this many tolerances above the target conductance: every step that moves a
    cell adds ~20 mV of discrete-charge noise, and programming cannot go back."""

    def init_rows(self, rows: np.ndarray) -> None:
        rows["amp_up_v"] = 0.0
        rows["amp_down_v"] = 0.0
        rows["width_s"] = self.p.width_s

    def probe_pulse(self, up: bool) -> tuple[float, float, int]:
        # a program pulse lowers G (raises V_th); "up" means towards more conductance: erase
        if up:
            return -self.p.erase_v, self.p.erase_width_s, 1
        return self.p.start_v + 1.5, self.p.width_s, 1

    def threshold_v(self, g: np.ndarray) -> np.ndarray:
        """V_th the cell model gives a reading ``g`` (S), V."""
        p = self.p
        ks = p.transconductance_s_per_v * p.slope_v
        x = np.clip(np.asarray(g, dtype=float) / ks, 1e-9, 700.0)
        return p.read_gate_v - p.slope_v * np.log(np.expm1(x))

    def prepare(self, rig: CrossbarRig, rows: np.ndarray, access: Access) -> None:
        """Erase every block that holds a cell of the tile (one gate pulse per block)."""
        blocks = np.unique(rows["row"] // self.p.block_rows)
        cells = [(int(b * self.p.block_rows), int(rows["col"][0])) for b in blocks]
        access.pulse(rig, cells, [-self.p.erase_v] * len(cells), self.p.erase_width_s)

    def next_pulse(self, rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        r = rows[idx]
        now = self.threshold_v(r["last_read_s"])
        aim = self.threshold_v(
            np.minimum(r["target_s"] + self.AIM * self.tol, 1.5 * self.window.g_max_s)
        )
        known = r["amp_down_v"] > 0
        step = np.clip(0.5 * (aim - now), p.fine_step_v, p.step_v)
        ramp = np.maximum(r["amp_up_v"] + step, now + self.V_OFF_LOW)
        # known offset: move V_th by 60 % of what remains (the step noise shrinks with it)
        move = np.clip(0.6 * (aim - now), p.fine_step_v, p.step_v * 4)
        aimed = np.maximum(r["amp_down_v"] + now + move, r["amp_up_v"] + p.fine_step_v)
        amp = np.where(known, aimed, ramp)
        amp = np.clip(np.maximum(amp, p.start_v), p.start_v, p.max_v)
        off = r["role"] == ROLE_OFF
        amp[off] = p.off_v
        width = np.where(off, p.off_width_s, p.width_s)
        return amp, width

    def observe(
        self, rows: np.ndarray, idx: np.ndarray, g_before: np.ndarray, amp: np.ndarray
    ) -> None:
        r = rows[idx]
        g = r["last_read_s"]
        programmed = r["role"] != ROLE_OFF
        overshot = programmed & (g < r["target_s"] - self.tol)
        r["state"] = np.where(overshot, FAILED, r["state"])
        moved = (g_before - g) > np.maximum(0.02 * g_before, 0.1 * self.tol)
        learned = amp - self.threshold_v(g)
        r["amp_down_v"] = np.where(programmed & moved, learned, r["amp_down_v"])
        r["amp_up_v"] = np.where(programmed, np.maximum(r["amp_up_v"], amp), r["amp_up_v"])
        rows[idx] = r


ALGORITHMS: dict[str, type[WriteVerify]] = {
    cls.technology: cls for cls in (RRAMWriteVerify, PCMWriteVerify, MRAMWriteVerify, FlashISPP)
}


def make_algorithm(
    technology: str,
    params: Any,
    window: Window,
    tolerance_s: float,
    max_pulses: int,
    verify_margin: float = 0.7,
) -> WriteVerify:
    """The write-verify algorithm of ``technology``."""
    return ALGORITHMS[technology](params, window, tolerance_s, max_pulses, verify_margin)


@dataclass
class TileCounters:
    """What programming one tile cost."""

    trains: int = 0
    pulses: int = 0
    pulse_visits: int = 0
    """Visits of pulse+read trains (a cell's programming pulse, or a 0 V confirm visit)."""
    read_visits: int = 0
    """Visits of read-only trains."""
    messages: int = 0
    busy_s: float = 0.0
    """Wall time spent in trains (instruments + wires), s."""
    instrument_s: float = 0.0
    """The instruments' own pulse + read time of those trains (a lower bound), s."""


Progress = Callable[[int, int], None]
"""Called with (tile, cells settled since the last call)."""


def _messages(rig: CrossbarRig) -> int:
    return int(rig.smu.transport.exchanges + rig.selector.transport.exchanges)


def program_tile(
    rig: CrossbarRig,
    journal: Journal,
    tile: int,
    algorithm: WriteVerify,
    access: Access,
    *,
    train_cells: int = 2500,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> TileCounters:
    """Write-verify every pending cell of ``tile`` (journal rows) on ``rig``; resumable."""
    rows = journal.tile_rows(tile)
    start = journal.tiles[tile]
    counters = TileCounters(
        **{f: start[f].item() for f in TileCounters.__dataclass_fields__}  # type: ignore[arg-type]
    )
    cells_of = list(zip(rows["row"].tolist(), rows["col"].tolist(), strict=True))

    def account(t0: float, m0: int, plan: VisitPlan, pulses: int) -> None:
        counters.trains += 1
        counters.pulses += pulses
        if plan.pulses:
            counters.pulse_visits += plan.visits
        else:
            counters.read_visits += plan.visits
        counters.busy_s += time.perf_counter() - t0
        counters.messages += _messages(rig) - m0
        counters.instrument_s += rig.smu.train_time_s(plan)

    def commit(index: np.ndarray | None = None) -> None:
        journal.commit(tile, index, **counters.__dict__)

    def settle(index: np.ndarray) -> int:
        r = rows[index]
        ok = algorithm.verified(r["last_read_s"], r["target_s"], r["role"], algorithm.verify_margin)
        state = np.where(r["state"] == PENDING, np.where(ok, VERIFIED, r["state"]), r["state"])
        spent = (state == PENDING) & (r["attempts"] >= algorithm.max_pulses)
        state = np.where(spent, FAILED, state)
        rows["state"][index] = state
        return int((state != PENDING).sum())

    if algorithm.needs_prepare and not journal.tiles[tile]["prepared"]:
        pending = rows["state"] == PENDING
        if pending.any():
            algorithm.prepare(rig, rows[pending], access)
        journal.set_tile(tile, prepared=1)
    # the state of every pending cell as it is now (a fresh start, or after a crash)
    index = np.flatnonzero(rows["state"] == PENDING)
    for chunk in np.array_split(index, max(1, -(-index.size // train_cells))):
        if not chunk.size:
            continue
        t0, m0 = time.perf_counter(), _messages(rig)
        g_now = access.read_cells(rig, [cells_of[k] for k in chunk])
        account(t0, m0, VisitPlan(chunk.size, None, 0.0, rig.limits.read_voltage_v), 0)
        rows["last_read_s"][chunk] = g_now
        done = settle(chunk)
        commit(chunk)
        if progress:
            progress(tile, done)
    while True:
        if stop is not None and stop.is_set():
            return counters
        index = np.flatnonzero(rows["state"] == PENDING)
        if not index.size:
            break
        amp, width = algorithm.next_pulse(rows, index)
        for w in np.unique(width):
            group = index[width == w]
            group_amp = amp[width == w]
            for part in range(0, group.size, train_cells):
                chunk = group[part : part + train_cells]
                chunk_amp = group_amp[part : part + train_cells]
                journal.begin(tile, chunk)
                # cells near their target get a second, read-only visit (a 0 V "pulse") right
                # after: the verify decision rests on the mean of two reads, not one
                r = rows[chunk]
                near = (r["role"] != ROLE_OFF) & (
                    np.abs(r["last_read_s"] - r["target_s"]) < 3 * algorithm.tol
                )
                repeat = np.where(near, 2, 1)
                visit = np.repeat(np.arange(chunk.size), repeat)
                first = np.r_[True, visit[1:] != visit[:-1]]
                visit_amp = np.where(first, chunk_amp[visit], 0.0)
                t0, m0 = time.perf_counter(), _messages(rig)
                try:
                    g_visits = access.pulse_read(
                        rig, [cells_of[k] for k in chunk[visit]], visit_amp, float(w)
                    )
                    g_now = np.bincount(visit, weights=g_visits, minlength=chunk.size) / repeat
                except DataIntegrityError as exc:
                    # the rig recovered its wires but not this train's readings (e.g. the
                    # process was frozen mid-train): its cells may have been pulsed, exactly
                    # like rows in flight after a crash — count the pulse, read them again
                    log.warning("tile %d: train of %d cells not read back (%s); reading them "
                                "again", tile, chunk.size, exc)  # fmt: skip
                    g_now = access.read_cells(rig, [cells_of[k] for k in chunk])
                plan = VisitPlan(visit.size, tuple(visit_amp), float(w), rig.limits.read_voltage_v)
                account(t0, m0, plan, chunk.size)
                g_before = rows["last_read_s"][chunk].copy()
                rows["attempts"][chunk] += 1
                rows["last_read_s"][chunk] = g_now
                rows["in_flight"][chunk] = 0
                algorithm.observe(rows, chunk, np.nan_to_num(g_before), chunk_amp)
                done = settle(chunk)
                commit(chunk)
                if progress:
                    progress(tile, done)
    journal.set_tile(tile, done=1)
    return counters
