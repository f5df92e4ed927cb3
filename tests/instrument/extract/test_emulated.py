"""Extraction against the emulated culture's ground truth (a small, dense culture, 20 s)."""

from __future__ import annotations

import pytest

from hil_sim.culture import CultureParams
from instrument.extract.params import load_params
from instrument.extract.pipeline import extract
from instrument.extract.score import score
from tests.instrument.extract.emulated import emulated_recording


@pytest.mark.slow
def test_small_emulated_culture_is_mapped_with_few_errors():
    rec = emulated_recording(CultureParams(seed=2, n_neurons=150, area_side_m=0.35e-3), 20.0)
    result = extract(rec, load_params(), progress=False)
    s = score(result, rec.truth)
    assert s["n_neurons_with_units"] >= 140  # merged: ~1 unit per neuron, not per electrode
    assert s["same_neuron_detections"] == 0
    assert s["true_positives"] >= 100
    assert s["precision"] >= 0.9
    assert s["sign_accuracy"] >= 0.95
    assert s["weight_correlation"] >= 0.7
    assert s["latency_error_median_s"] <= 1e-3
    assert s["strong_hits"] >= 0.5 * s["strong_true"]
    strong = result.connectivity.strong
    assert strong.sum() <= s["strong_hits"] + 3  # flagged strong ones are truly strong
