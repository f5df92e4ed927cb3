"""One imprint of a session, as ``brainpaste imprint`` and ``brainpaste run`` both do it:
load the map, fit it to the rigs there are, write-verify (or imprint physically),
verify, and write the report (text + plots) next to the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from instrument.config import LabConfig
from instrument.imprint.connectivity import ConnectivityError, ConnectivityMap
from instrument.imprint.journal import open_read
from instrument.imprint.run import Plan, mapping_for

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Which part of a map fits the rigs: all of it, or its most connected units."""

    cmap: ConnectivityMap
    units_total: int
    synapses_total: int
    tiles: int

    @property
    def complete(self) -> bool:
        return self.cmap.n_units == self.units_total

    def describe(self) -> str:
        if self.complete:
            return f"the whole map: {self.units_total} units, {self.synapses_total} synapses"
        return (
            f"the {self.cmap.n_units} most connected of {self.units_total} units "
            f"({self.cmap.n_synapses} of {self.synapses_total} synapses) — what {self.tiles} "
            "tile(s) hold"
        )


def submap(cmap: ConnectivityMap, units: np.ndarray) -> ConnectivityMap:
    """The synapses of ``cmap`` among ``units`` only."""
    keep = np.isin(cmap.pre, units) & np.isin(cmap.post, units)
    return ConnectivityMap.from_arrays(
        cmap.pre[keep],
        cmap.post[keep],
        cmap.weight_v[keep],
        cmap.latency_s[keep],
        cmap.kind[keep],
        units=np.sort(units),
        source=cmap.source,
    )


def densest_first(cmap: ConnectivityMap) -> np.ndarray:
    """Unit indices in greedy order: the strongest unit first, then always the unit with the
    most |weight| to those already chosen (ties: its total |weight|), so any prefix is a
    densely connected piece of the network."""
    n = cmap.n_units
    i = np.searchsorted(cmap.units, cmap.pre)
    j = np.searchsorted(cmap.units, cmap.post)
    w = np.abs(cmap.weight_v)
    adjacency = sparse.coo_matrix((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    strength = np.asarray(adjacency.sum(axis=1)).ravel()
    tiebreak = strength / (strength.max() + 1.0) * 1e-9
    link = np.zeros(n)
    chosen = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    for step in range(n):
        score = link + tiebreak if step else strength.copy()
        score[chosen] = -np.inf
        k = int(np.argmax(score))
        order[step] = k
        chosen[k] = True
        row = adjacency.getrow(k)
        link[row.indices] += row.data
    return order


def fit_to_tiles(config: LabConfig, plan: Plan, cmap: ConnectivityMap, max_tiles: int) -> Selection:
    """All of ``cmap`` when it maps onto ``max_tiles`` tiles, else its most connected units
    (in :func:`densest_first` order) — as many as still fit."""
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    total = Selection(cmap, cmap.n_units, cmap.n_synapses, 0)
    tiles = len(mapping_for(config, plan, cmap).tiles)
    if tiles <= max_tiles:
        total.tiles = tiles
        return total
    ranked = cmap.units[densest_first(cmap)]
    lo, hi, best = 2, cmap.n_units, None
    while lo <= hi:  # the largest prefix of the ranking that still fits
        mid = (lo + hi) // 2
        candidate = submap(cmap, ranked[:mid])
        n = len(mapping_for(config, plan, candidate).tiles) if candidate.n_synapses else 0
        if 0 < n <= max_tiles:
            best, lo = (candidate, n), mid + 1
        elif n == 0:
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ConnectivityError(f"not even two units of the map fit {max_tiles} tile(s)")
    return Selection(best[0], cmap.n_units, cmap.n_synapses, best[1])


@dataclass
class ImprintOutcome:
    """What an imprint produced: its summary (SI units), the report text and plot files."""

    summary: dict[str, Any]
    text: str
    plots: list[Path] = field(default_factory=list)


def imprint_session(
    config: LabConfig,
    session_file: Path,
    technology: str,
    *,
    cmap: ConnectivityMap | None,
    report_dir: Path,
    physical: bool = False,
    resume: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> ImprintOutcome:
    """Imprint ``cmap`` (or resume the journal) on ``config``'s rigs; report in ``report_dir``."""
    from instrument.imprint.report import summary_text, write_plots
    from instrument.imprint.run import run_imprint

    report_dir.mkdir(parents=True, exist_ok=True)
    if physical:
        from instrument.imprint.physical import run_physical

        summary = run_physical(config, session_file, technology, cmap, report_dir=report_dir)
        plots = sorted(report_dir.glob("imprint_physical.png"))
        return ImprintOutcome(summary, str(summary["text"]), plots)
    result = run_imprint(
        config,
        session_file,
        technology,
        cmap=cmap,
        resume=resume,
        restart=restart,
        progress=progress,
    )
    with open_read(session_file) as f:
        status = f["imprint/characterization_status"][()]
    plots = write_plots(
        report_dir,
        result.rows,  # type: ignore[arg-type]
        result.final_read_s,
        result.summary["tolerance_s"],
        f"{technology}: {result.summary['tiles']} tile(s), session {session_file.parent.name}",
        status,
    )
    text = summary_text(result.summary, result.tiles)
    (report_dir / "imprint_report.txt").write_text(text + "\n")
    summary = dict(result.summary)
    summary["tile_results"] = result.tiles
    return ImprintOutcome(summary, text, list(plots))
