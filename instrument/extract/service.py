"""One extraction of a recording, as ``brainpaste extract`` and ``brainpaste run`` both do it:
apply the board's calibration record, extract (in process or on Dask), score against
ground truth when there is one, store ``/spikes`` and ``/connectivity``, export CSV,
GraphML and the two figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instrument.calibration_use import calibration_settings, prepare_session
from instrument.config import LabConfig, load
from instrument.extract.params import ExtractionParams
from instrument.extract.pipeline import ExtractionResult, extract
from instrument.recording import open_recording

log = logging.getLogger(__name__)


@dataclass
class ExtractionOutcome:
    """What an extraction produced and where it put it."""

    result: ExtractionResult
    has_truth: bool
    calibration_message: str = ""
    stored_in: Path | None = None
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def extract_session(
    path: Path,
    out: Path,
    params: ExtractionParams,
    *,
    config: LabConfig | None = None,
    dask: str | None = None,
    store_results: bool = True,
    progress: bool = True,
) -> ExtractionOutcome:
    """Extract the map of recording ``path``; results into the session file (or
    ``out/extraction.h5`` for NWB input) and exports into ``out``."""
    from instrument.extract import plots, store
    from instrument.extract.score import score

    warnings: list[str] = []
    calibration = None
    message = ""
    if path.suffix.lower() != ".nwb":
        calibration = prepare_session(
            path, calibration_settings(config or load()), write=store_results
        )
        message = calibration.applied.message
    if dask:
        from instrument.extract.distributed import extract_distributed

        if calibration is not None and not calibration.written and calibration.gain is not None:
            warnings.append("without storing, Dask workers read the file's own gains")
        result = extract_distributed(path, params, address=dask, progress=progress)
        with open_recording(path) as rec:
            truth = rec.truth
    else:
        with open_recording(path) as rec:
            truth = rec.truth
            if calibration is not None:
                calibration.apply(rec)
            result = extract(rec, params, progress=progress)
    if truth is not None:
        result.scores = score(result, truth)
    out.mkdir(parents=True, exist_ok=True)
    stored_in = None
    if store_results:
        stored_in = path if path.suffix.lower() in (".h5", ".hdf5") else out / "extraction.h5"
        store.write_results(stored_in, result)
    conn_csv, units_csv = store.export_csv(result, out)
    written = [
        conn_csv,
        units_csv,
        store.export_graphml(result, out / "connectivity.graphml"),
        plots.plot_average_psp(result, out / "average_psp.png"),
        plots.plot_connectivity_matrix(result, out / "connectivity_matrix.png"),
    ]
    return ExtractionOutcome(result, truth is not None, message, stored_in, written, warnings)


def key_figures(outcome: ExtractionOutcome) -> dict[str, Any]:
    """The figures a session summary keeps (SI units), scores included when there are any."""
    from instrument.extract.score import format_scores

    result = outcome.result
    c = result.connectivity
    figures: dict[str, Any] = {
        "units": int(result.units.n_units),
        "connections": int(c.n),
        "pairs_tested": int(result.n_tested),
        "duration_s": float(result.duration_s),
    }
    if result.scores is not None:
        figures["scores_text"] = format_scores(result.scores)
        figures["scores"] = {
            k: v for k, v in result.scores.items() if k in SCORE_KEYS or k == "snr_at_least_3"
        }
    return figures


SCORE_KEYS = (
    "precision",
    "recall",
    "f1",
    "error_rate",
    "sign_accuracy",
    "weight_correlation",
    "latency_error_median_s",
    "n_detected",
    "true_positives",
    "n_observable",
)
"""The scores a session summary keeps (the whole table is in the session file)."""
