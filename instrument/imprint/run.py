"""The imprint run: map, characterize, place, program (one thread per rig), verify, report.

Tile ``k`` of the mapping is programmed on rig ``k`` (instruments ``smu``/``selector``,
``smu2``/``selector2``… — :func:`instrument.rig.rig_instruments`), all rigs at once, one
thread each (each instrument has its own lock). Everything a resumed run needs is in the
session file's journal (:mod:`instrument.imprint.journal`): a resumed run re-opens the same
rigs, re-reads the cells that were in flight and carries on; verified cells are never
pulsed again.

Before the first pulse every amplitude and width the algorithm may use is checked against
the technology's safety limits (:func:`~instrument.imprint.settings.check_against_limits`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from drivers.crossbar_rig import CrossbarRig
from instrument.calibration_use import known_cell_status, write_rigs
from instrument.config import ConfigError, LabConfig
from instrument.imprint.access import Access
from instrument.imprint.characterize import (
    STATUS_OK,
    STATUS_STUCK_HIGH,
    STATUS_STUCK_LOW,
    Characterization,
    characterize,
)
from instrument.imprint.connectivity import ConnectivityMap
from instrument.imprint.journal import (
    CELL_DTYPE,
    FAILED,
    PENDING,
    SKIPPED,
    TILE_DTYPE,
    Journal,
    JournalError,
    JournalSetup,
)
from instrument.imprint.mapping import (
    ROLE_UNUSED,
    Mapping,
    Tile,
    Window,
    build_mapping,
    measured_levels,
)
from instrument.imprint.placement import PlacementReport, place
from instrument.imprint.settings import ImprintSettings, check_against_limits, load_settings
from instrument.imprint.verify import (
    CellStats,
    cell_stats,
    column_reader_from_read,
    functional_check,
    read_values,
)
from instrument.imprint.write_verify import TileCounters, WriteVerify, make_algorithm, program_tile
from instrument.rig import open_rig, rig_instruments, safety_limits

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a run will do, decided before any instrument is touched."""

    technology: str
    settings: ImprintSettings
    window: Window
    tolerance_s: float
    algorithm: WriteVerify
    access: Access


@dataclass
class ImprintResult:
    """What a finished run reports (also stored as JSON in ``/imprint/report_json``)."""

    summary: dict[str, Any]
    tiles: list[dict[str, Any]]
    final_read_s: list[np.ndarray] = field(default_factory=list)
    rows: np.ndarray | None = None


def make_plan(config: LabConfig, technology: str) -> Plan:
    """Settings, window, tolerance and algorithm of ``technology``; refuses unsafe settings."""
    tech = config.limits(technology)
    if config.crossbar.technology != technology:
        raise ConfigError(
            f"the rig's crossbar is {config.crossbar.technology}, not {technology}",
            key="crossbar.technology",
            path=config.source or None,
        )
    settings = load_settings(config)
    limits = safety_limits(config, technology)
    check_against_limits(settings, technology, limits, tech, source=config.source or None)
    window = Window(tech.g_min_s, tech.g_max_s, tech.levels)
    tolerance = tech.tolerance * window.span_s
    algorithm = make_algorithm(
        technology,
        settings.params(technology),
        window,
        tolerance,
        tech.max_pulses,
        settings.verify_margin,
    )
    access = Access.for_array(
        config.crossbar.architecture,
        config.crossbar.bias_scheme,
        settings.passive_read_bias,
        settings.passive_pulse_bias,
    )
    return Plan(technology, settings, window, tolerance, algorithm, access)


def map_digest(cmap: ConnectivityMap) -> str:
    """SHA-1 of the map's synapses (a resumed run must imprint the same map)."""
    h = hashlib.sha1()
    for array in (cmap.pre, cmap.post, cmap.weight_v):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def mapping_for(config: LabConfig, plan: Plan, cmap: ConnectivityMap) -> Mapping:
    s = plan.settings
    return build_mapping(
        cmap,
        plan.window,
        (config.crossbar.rows, config.crossbar.cols),
        layout=s.layout,
        ordering=s.ordering,
        weight_scale_v=s.weight_scale_v,
        min_level=s.min_level,
    )


@contextlib.contextmanager
def open_rigs(config: LabConfig, count: int, technology: str, nplc: float) -> Iterator[list]:
    """Rigs 0..count-1 of ``config`` (closed, outputs off, on exit)."""
    missing = [
        name for k in range(count) for name in rig_instruments(k) if name not in config.instruments
    ]
    if missing:
        raise ConfigError(
            f"the map needs {count} tile(s), one rig each; the configuration lacks "
            f"[instruments.{missing[0]}] (rig k is smu<k+1>/selector<k+1>)",
            key=f"instruments.{missing[0]}",
            path=config.source or None,
        )
    rigs: list[CrossbarRig] = []
    try:
        for k in range(count):
            smu, selector = rig_instruments(k)
            rigs.append(
                open_rig(config, technology=technology, nplc=nplc, smu=smu, selector=selector)
            )
        yield rigs
    finally:
        for rig in rigs:
            rig.close()


def _identity(rig: CrossbarRig) -> str:
    try:
        return str(rig.selector.identify())[:95]
    except Exception:  # identity is informative only
        return ""


def _parallel(fn: Any, items: list[Any]) -> list[Any]:
    """``fn`` over ``items``, one thread each (one per rig); the first error is raised."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="imprint-rig") as pool:
        return list(pool.map(fn, items))


def build_setup(
    cmap: ConnectivityMap,
    mapping: Mapping,
    plan: Plan,
    chars: list[Characterization],
    placed: list[Tile],
    reports: list[PlacementReport],
    rigs: list[CrossbarRig],
    config: LabConfig,
) -> JournalSetup:
    """The journal rows of every active cell of every placed tile."""
    blocks, tiles = [], np.zeros(len(placed), dtype=TILE_DTYPE)
    first = 0
    for k, (tile, char) in enumerate(zip(placed, chars, strict=True)):
        rr, cc = np.nonzero(tile.role != ROLE_UNUSED)
        rows = np.zeros(rr.size, dtype=CELL_DTYPE)
        rows["tile"] = k
        rows["row"], rows["col"] = rr, cc
        rows["role"] = tile.role[rr, cc]
        rows["sign"] = tile.col_sign[cc]
        rows["level"] = tile.level[rr, cc]
        rows["pre"] = tile.row_unit[rr]
        rows["post"] = tile.col_unit[cc]
        rows["synapse"] = tile.synapse[rr, cc]
        syn = rows["synapse"]
        rows["weight_v"] = np.where(syn >= 0, cmap.weight_v[np.maximum(syn, 0)], 0.0)
        rows["target_s"] = tile.target_s[rr, cc]
        rows["last_read_s"] = char.final_s[rr, cc]
        rows["state"] = np.where(char.bad[rr, cc], SKIPPED, PENDING)
        plan.algorithm.init_rows(rows)
        blocks.append(rows)
        tiles[k]["tile"] = k
        tiles[k]["array"] = tile.array.encode()
        tiles[k]["block_row"], tiles[k]["block_col"] = tile.block
        tiles[k]["first_row"], tiles[k]["n_rows"] = first, rows.size
        tiles[k]["rig"] = _identity(rigs[k]).encode()
        first += rows.size
    placement = np.array(
        [tuple(r.as_dict().values()) for r in reports],
        dtype=[(name, "<f8") for name in reports[0].as_dict()],
    )
    attrs = {
        "technology": plan.technology,
        "layout": mapping.layout,
        "ordering": plan.settings.ordering,
        "tolerance_s": plan.tolerance_s,
        "g_min_s": plan.window.g_min_s,
        "g_max_s": plan.window.g_max_s,
        "levels": plan.window.levels,
        "level_s": json.dumps(plan.window.level_s),
        "scale_v": mapping.scale_v,
        "tile_rows": mapping.tile_shape[0],
        "tile_cols": mapping.tile_shape[1],
        "empty_tiles": mapping.empty_tiles,
        "architecture": config.crossbar.architecture,
        "bias_scheme": config.crossbar.bias_scheme,
        "map_source": cmap.source,
        "map_digest": map_digest(cmap),
        "map_synapses": cmap.n_synapses,
        "map_units": cmap.n_units,
        "settings": json.dumps(_asdict(plan.settings)),
        "max_pulses": plan.algorithm.max_pulses,
    }
    return JournalSetup(
        cells=np.concatenate(blocks),
        tiles=tiles,
        order=mapping.order,
        characterization={
            "read_s": np.stack([c.read_s for c in chars]),
            "final_s": np.stack([c.final_s for c in chars]),
            "status": np.stack([c.status for c in chars]),
        },
        placement=placement,
        attrs=attrs,
    )


def _asdict(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _asdict(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return obj


class _Bar:
    """One tqdm bar over every cell to settle, fed from the rig threads."""

    def __init__(self, total: int, disable: bool) -> None:
        self.bar = tqdm(total=total, unit="cell", desc="imprint", disable=disable, file=sys.stderr)
        self.lock = threading.Lock()

    def __call__(self, tile: int, done: int) -> None:
        with self.lock:
            self.bar.update(done)

    def close(self) -> None:
        self.bar.close()


def run_imprint(
    config: LabConfig,
    session_file: Path,
    technology: str,
    *,
    cmap: ConnectivityMap | None = None,
    resume: bool = False,
    restart: bool = False,
    progress: bool = True,
    line_drivers: list[Any] | None = None,
) -> ImprintResult:
    """Imprint ``cmap`` (or resume the journal of ``session_file``) and verify it."""
    plan = make_plan(config, technology)  # refuses unsafe settings before anything is opened
    session_file = Path(session_file)
    t_start = time.perf_counter()
    if resume:
        journal = Journal.open(session_file)
        try:
            _check_resume(journal, plan)
        except BaseException:
            journal.close()
            raise
        count = len(journal.tiles)
    else:
        if cmap is None:
            raise JournalError("no connectivity map given")
        if Journal.exists(session_file) and not restart:
            raise JournalError(
                f"{session_file} already holds an imprint; --resume it or --restart it"
            )
        mapping = mapping_for(config, plan, cmap)
        count = len(mapping.tiles)
        journal = None
    settings = plan.settings
    try:
        with open_rigs(config, count, technology, settings.nplc) as rigs:
            if journal is None:
                journal = _setup(session_file, config, plan, cmap, mapping, rigs, restart)  # type: ignore[arg-type]
            else:
                _check_rigs(journal, rigs)
            bar = _Bar(int((journal.cells["state"] == PENDING).sum()), not progress)
            try:
                counters: list[TileCounters] = _parallel(
                    lambda k: program_tile(
                        rigs[k],
                        journal,
                        k,
                        plan.algorithm,
                        plan.access,
                        train_cells=settings.train_cells,
                        progress=bar,
                    ),
                    list(range(count)),
                )
            finally:
                bar.close()
            finals = _parallel(
                lambda k: np.mean(
                    [plan.access.read_array(rigs[k]) for _ in range(settings.final_reads)], axis=0
                ),
                list(range(count)),
            )
            for k, g in enumerate(finals):
                journal.write_final(k, g)
            with _line_drivers(config, count, technology, line_drivers) as drivers:
                for rig, driver in zip(rigs, drivers, strict=True):
                    if driver is not None:
                        rig.selector.ground_all()  # the line driver takes the lines
                result = _report(journal, plan, rigs, finals, counters, drivers, t_start)
            journal.write_report({"summary": result.summary, "tiles": result.tiles})
            return result
    finally:
        if journal is not None:
            journal.close()


def _placement_loss(journal: Journal) -> dict[str, float]:
    """What stuck cells cost the map, summed over tiles: before and after placement."""
    p = journal.read_dataset("placement")
    synapses = float(p["synapses"].sum()) or 1.0
    return {
        "synapses_on_stuck_before": int(p["synapses_on_stuck_before"].sum()),
        "synapses_on_stuck_after": int(p["synapses_on_stuck_after"].sum()),
        "weight_share_on_stuck_before": float(
            (p["weight_share_on_stuck_before"] * p["synapses"]).sum() / synapses
        ),
        "weight_share_on_stuck_after": float(
            (p["weight_share_on_stuck_after"] * p["synapses"]).sum() / synapses
        ),
        "compensated_pairs": int(p["compensated_pairs"].sum()),
    }


def _window_of(journal: Journal) -> Window:
    """The window (and measured levels) the journal was set up with."""
    a = journal.attrs
    levels = json.loads(a["level_s"]) if a.get("level_s") else None
    return Window(
        float(a["g_min_s"]), float(a["g_max_s"]), int(a["levels"]),
        tuple(levels) if levels else None,
    )  # fmt: skip


def line_driver_name(number: int) -> str:
    """Instrument name of rig ``number``'s line driver: linedriver, linedriver2…"""
    return "linedriver" if number == 0 else f"linedriver{number + 1}"


@contextlib.contextmanager
def _line_drivers(
    config: LabConfig, count: int, technology: str, given: list[Any] | None
) -> Iterator[list[Any]]:
    """The line drivers the configuration names (None for a rig without one), output off
    and closed on exit; ``given`` ones are used as they are."""
    if given is not None:
        yield list(given) + [None] * (count - len(given))
        return
    from drivers.line_driver import LineDriver
    from instrument.connect import open_instrument

    opened: list[Any] = []
    try:
        for k in range(count):
            name = line_driver_name(k)
            if name not in config.instruments:
                opened.append(None)
                continue
            driver = open_instrument(config, name)
            opened.append(driver)
            if not isinstance(driver, LineDriver):
                raise ConfigError(f"instrument {name!r} is not a crossbar_line_driver",
                                  key=f"instruments.{name}.driver")  # fmt: skip
            driver.configure(safety_limits(config, technology))
        yield opened
    finally:
        for driver in opened:
            if driver is not None:
                driver.close()


def _check_resume(journal: Journal, plan: Plan) -> None:
    stored = journal.attrs.get("technology")
    if stored != plan.technology:
        raise JournalError(
            f"the journal was written for {stored}, not {plan.technology}; resume with "
            f"--technology {stored}"
        )


def _check_rigs(journal: Journal, rigs: list[CrossbarRig]) -> None:
    for k, rig in enumerate(rigs):
        stored = journal.tiles[k]["rig"].decode()
        now = _identity(rig)
        if stored and now and stored != now:
            raise JournalError(
                f"tile {k} was programmed on selector {stored!r}; rig {k} is now {now!r}"
            )


def _setup(
    session_file: Path,
    config: LabConfig,
    plan: Plan,
    cmap: ConnectivityMap,
    mapping: Mapping,
    rigs: list[CrossbarRig],
    restart: bool,
) -> Journal:
    s = plan.settings
    tol = plan.tolerance_s

    def characterize_tile(k: int) -> Characterization:
        rig = rigs[k]
        if s.characterize:
            return characterize(rig, plan.window, tol, plan.algorithm, plan.access, probe=s.probe)
        g = plan.access.read_array(rig)
        return Characterization(g, g.copy(), np.zeros(g.shape, dtype=np.uint8), 0)

    chars = _parallel(characterize_tile, list(range(len(rigs))))
    for rig, char in zip(rigs, chars, strict=True):  # stuck cells the crossbar calibration found
        known = known_cell_status(rig)
        if known is not None and known.shape == char.status.shape:
            fresh = char.status == STATUS_OK
            char.status[fresh & (known > 0)] = STATUS_STUCK_HIGH
            char.status[fresh & (known < 0)] = STATUS_STUCK_LOW
    write_rigs(session_file, rigs)  # /calibration: the records the rigs' reads go through
    if s.measured_levels and plan.window.levels <= 8:
        healthy = np.concatenate([c.final_s[~c.bad] for c in chars])
        window = measured_levels(plan.window, healthy)
        if window.level_s is not None:
            log.info("levels as the devices read them: %s uS", np.round(window.level_s, 8) * 1e6)
            plan.window = window
            for tile in mapping.tiles:
                tile.target_s = np.where(
                    tile.level >= 0, window.level_conductance(np.maximum(tile.level, 0)), np.nan
                )
    placed, reports = [], []
    for tile, char in zip(mapping.tiles, chars, strict=True):
        p, r = place(
            tile,
            char,
            plan.window,
            tol,
            cmap.weight_v,
            enabled=s.placement,
            pair_compensation=s.pair_compensation,
        )
        placed.append(p)
        reports.append(r)
    setup = build_setup(cmap, mapping, plan, chars, placed, reports, rigs, config)
    return Journal.create(session_file, setup, replace=restart)


def _report(
    journal: Journal,
    plan: Plan,
    rigs: list[CrossbarRig],
    finals: list[np.ndarray],
    counters: list[TileCounters],
    line_drivers: list[Any] | None,
    t_start: float,
) -> ImprintResult:
    """Per-tile and overall stats, functional check, costs."""
    tiles_out: list[dict[str, Any]] = []
    all_rows, all_g = [], []
    read_v = rigs[0].limits.read_voltage_v
    for k, g in enumerate(finals):
        rows = journal.tile_rows(k)
        values = read_values(rows, g)
        stats = cell_stats(rows, values, plan.algorithm)
        reader, source = column_reader_from_read(g), "computed from the final read"
        if line_drivers and k < len(line_drivers) and line_drivers[k] is not None:
            reader, source = line_drivers[k].column_currents, "line driver (analog)"
        check = functools.partial(
            functional_check,
            rows,
            g.shape,
            reader,
            read_v,
            vectors=plan.settings.functional_vectors,
            seed=plan.settings.seed + k,
            intended_s=_window_of(journal).level_conductance(np.maximum(rows["level"], 0)),
        )
        functional: dict[str, Any] = check()
        functional["source"] = source
        # rows holding a stuck cell (found by characterization, or failed while programming)
        stuck_rows = np.unique(rows["row"][np.isin(rows["state"], (SKIPPED, FAILED))])
        clean = check(skip_rows=stuck_rows)
        functional["without_stuck_rows"] = {
            "rows_left_out": int(stuck_rows.size),
            "relative_rms_error": clean["relative_rms_error"],
            "rms_error_full_scale": clean["rms_error_full_scale"],
            "correlation": clean["correlation"],
        }
        c = counters[k]
        tiles_out.append(
            {
                "tile": k,
                "array": journal.tiles[k]["array"].decode(),
                "rig": journal.tiles[k]["rig"].decode(),
                **stats.as_dict(),
                "trains": c.trains,
                "messages": c.messages,
                "busy_s": c.busy_s,
                "instrument_s": c.instrument_s,
                "functional": functional,
            }
        )
        all_rows.append(rows)
        all_g.append(values)
    rows = np.concatenate(all_rows)
    total: CellStats = cell_stats(rows, np.concatenate(all_g), plan.algorithm)
    programmed = max(total.synapse_cells + total.off_cells, 1)
    summary = {
        "technology": plan.technology,
        "tiles": len(finals),
        "tolerance_s": plan.tolerance_s,
        **total.as_dict(),
        "pulses_per_cell": total.pulses / programmed,
        "messages": sum(c.messages for c in counters),
        "round_trips_per_cell": sum(c.messages for c in counters) / programmed,
        "trains": sum(c.trains for c in counters),
        "busy_s": sum(c.busy_s for c in counters),
        "instrument_s": sum(c.instrument_s for c in counters),
        "wall_s": time.perf_counter() - t_start,
        "resumed_in_flight": journal.resumed_in_flight,
        **_placement_loss(journal),
    }
    return ImprintResult(summary, tiles_out, finals, rows)
