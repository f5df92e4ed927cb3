"""The stages of a session (see :mod:`instrument.session`), each a call into the same
services the single-purpose commands use (record, extract, imprint, calibrate).

Every stage takes a :class:`~instrument.session.StageContext` and returns its key
figures (JSON-able, SI units). A lost instrument surfaces as
:class:`~drivers.errors.CommunicationError` (or :class:`SessionRetry`) so the session
retries, then pauses; anything else fails the stage with a message saying why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from drivers.errors import CommunicationError, ConnectionLost, DriverError
from instrument.connect import identify_all
from instrument.live import LiveLab
from instrument.session import SessionRetry, StageContext

log = logging.getLogger(__name__)


def stage_check(ctx: StageContext) -> dict[str, Any]:
    """Every configured instrument answers ``*IDN?``; their identities."""
    results = identify_all(ctx.config)
    failed = {name: text for name, (ok, text) in results.items() if not ok}
    if failed:
        raise ConnectionLost(
            "instruments not answering: " + "; ".join(f"{n}: {t}" for n, t in failed.items())
        )
    return {"identities": {name: text for name, (_ok, text) in results.items()}}


def _keep_interrupted_recording(session_file: Path) -> Path | None:
    """Move a recording a crash left behind aside (never deleted): ``session.interrupted-N.h5``."""
    if not session_file.exists():
        return None
    n = 1
    while (kept := session_file.with_name(f"session.interrupted-{n}.h5")).exists():
        n += 1
    os.replace(session_file, kept)
    log.warning("an interrupted recording was kept as %s; recording again", kept)
    return kept


def stage_record(ctx: StageContext) -> dict[str, Any]:
    """Electroporate the array, then record ``duration_s`` into the session file."""
    opts = ctx.options
    kept = _keep_interrupted_recording(ctx.session_file)
    lab = LiveLab(ctx.config, source=ctx.config.source)
    try:
        lab.connect(lab.board_name)
        board = lab.board
        electro = lab.electroporate(
            np.arange(board.n_channels), opts.electroporate_v, opts.electroporate_width_s
        )
        acq = lab.start_recording(ctx.folder, duration_s=opts.duration_s)
        status = acq.wait(raise_on_error=False)
    except CommunicationError:
        raise
    except DriverError as exc:
        raise SessionRetry(f"board: {exc}") from exc
    finally:
        lab.close()
    figures: dict[str, Any] = {
        "recorded_s": status.recorded_s,
        "frames_received": status.frames_received,
        "frames_lost": status.frames_lost,
        "gaps": status.gaps,
        "stop_reason": status.stop_reason,
        "electrodes_with_access": electro.opened,
        "electrodes": int(electro.channels.size),
    }
    if kept is not None:
        figures["interrupted_recording_kept"] = str(kept)
    if acq.error is not None:
        if isinstance(acq.error, CommunicationError):
            raise SessionRetry(f"recording lost the board: {acq.error}") from acq.error
        raise RuntimeError(f"recording failed: {type(acq.error).__name__}: {acq.error}")
    if status.recorded_s < 0.5 * opts.duration_s:
        raise SessionRetry(
            f"only {status.recorded_s:.1f} s of {opts.duration_s:g} s recorded "
            f"({status.stop_reason})"
        )
    return figures


def stage_calibrate(ctx: StageContext) -> dict[str, Any]:
    """Valid records from the store, or a calibration of every instrument that has none."""
    from instrument.commands.calibrate import ensure_records

    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for --json
        used = ensure_records(
            ctx.config, out=ctx.folder / "calibration", progress=ctx.options.progress
        )
    return {"records": used}


def stage_extract(ctx: StageContext) -> dict[str, Any]:
    """The connectivity map of the recording (scored when the recording has ground truth)."""
    from instrument.extract.params import load_params
    from instrument.extract.service import extract_session, key_figures

    outcome = extract_session(
        ctx.session_file,
        ctx.folder,
        load_params(ctx.config),
        config=ctx.config,
        progress=ctx.options.progress,
    )
    for warning in outcome.warnings:
        log.warning("extract: %s", warning)
    figures = key_figures(outcome)
    figures["calibration"] = outcome.calibration_message
    return figures


def stage_imprint(ctx: StageContext) -> dict[str, Any]:
    """Imprint the extracted map (what the rigs' tiles hold of it), or resume its journal."""
    from instrument.imprint.journal import Journal
    from instrument.imprint.run import make_plan
    from instrument.imprint.service import fit_to_tiles, imprint_session
    from instrument.imprint.sources import load_connectivity

    technology = ctx.options.technology or ctx.config.crossbar.technology
    config = dataclasses.replace(
        ctx.config, crossbar=dataclasses.replace(ctx.config.crossbar, technology=technology)
    )
    plan = make_plan(config, technology)  # unsafe settings refused before anything starts
    rigs = rig_count(config)
    figures: dict[str, Any] = {"technology": technology, "rigs": rigs}
    resume = not ctx.options.physical and Journal.exists(ctx.session_file)
    cmap = None
    if not resume:
        full = load_connectivity(ctx.session_file)
        selection = fit_to_tiles(config, plan, full, rigs)
        cmap = selection.cmap
        figures.update(
            units_total=selection.units_total,
            units_imprinted=cmap.n_units,
            synapses_total=selection.synapses_total,
            synapses_imprinted=cmap.n_synapses,
            selection=selection.describe(),
        )
    outcome = imprint_session(
        config,
        ctx.session_file,
        technology,
        cmap=cmap,
        report_dir=ctx.folder / "imprint",
        physical=ctx.options.physical,
        resume=resume,
        progress=ctx.options.progress,
    )
    keep = (
        "yield_programmable",
        "within",
        "programmable",
        "pulses_per_cell",
        "round_trips_per_cell",
        "median_error_s",
        "p95_error_s",
        "wall_s",
        "tiles",
        "failed",
        "skipped",
        "auc",
        "roc_auc",
    )
    figures.update({k: v for k, v in outcome.summary.items() if k in keep})
    functional = [t.get("functional", {}) for t in outcome.summary.get("tile_results", [])]
    if functional:
        figures["functional_rms_error_full_scale"] = [
            f.get("rms_error_full_scale") for f in functional
        ]
    figures["resumed"] = resume
    return figures


def rig_count(config: Any) -> int:
    """How many rigs (smu/selector, smu2/selector2, …) the configuration names."""
    from instrument.rig import rig_instruments

    return sum(1 for k in range(64) if all(n in config.instruments for n in rig_instruments(k)))


def stage_report(ctx: StageContext) -> dict[str, Any]:
    """The HTML report with every plot."""
    from instrument.report import write_report

    path = write_report(ctx.folder, ctx.state)
    return {"report": str(path)}


STAGE_FUNCTIONS = {
    "check": stage_check,
    "calibrate": stage_calibrate,
    "record": stage_record,
    "extract": stage_extract,
    "imprint": stage_imprint,
    "report": stage_report,
}
"""Stage name → function, in the order of :data:`instrument.session.STAGES`."""
