"""The [extraction] table: defaults, overrides, and clear errors for bad values."""

from __future__ import annotations

import dataclasses

import pytest

from instrument.config import ConfigError, load
from instrument.extract.params import ExtractionParams, load_params, params_from_json


def test_defaults_come_from_the_lab_file_and_match_the_dataclass():
    params = load_params()
    assert params == ExtractionParams()
    assert params.boundaries() == [-10, -1, 1, 2, 3, 4, 5, 6, 7]  # whitened: one-lag bins
    assert params.windows()[0] == (1, 2)  # zero-lag bin first
    assert len(params.windows()) == 7  # no wide window on the prediction error
    boxcar = dataclasses.replace(params, whiten_order=0)
    assert boxcar.boundaries() == [-10, -1, 2, 5, 9, 14, 20]
    assert boxcar.windows()[-1] == (2, 5)  # the wide window
    assert params_from_json(params.to_json()) == params


def test_a_lab_file_overrides_keys(tmp_path):
    lab = tmp_path / "lab.toml"
    lab.write_text("[extraction]\nfdr = 0.05\nresponse_edges_s = [0.002, 0.006, 0.012]\n")
    params = load_params(load(lab))
    assert params.fdr == 0.05
    assert params.response_edges_s == (0.002, 0.006, 0.012)
    assert params.chunk_s == ExtractionParams().chunk_s


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("fdr = 1.5", "extraction.fdr"),
        ("spike_threshold = -3", "extraction.spike_threshold"),
        ("response_edges_s = [0.005, 0.002]", "extraction.response_edges_s"),
        ("whiten_edges_s = [0.001, 0.0012]", "extraction.whiten_edges_s"),
        ("whiten_order = -1", "extraction.whiten_order"),
        ('burst_policy = "sometimes"', "extraction.burst_policy"),
        ("n_surrogates = 1", "extraction.n_surrogates"),
        ("jitter_min_s = 0.2", "extraction.jitter_min_s"),
        ("decimated_rate_hz = 3000.0", None),
        ("no_such_key = 1", "extraction.no_such_key"),
        ("memory_budget_bytes = 1000", "extraction.memory_budget_bytes"),
    ],
)
def test_bad_values_name_the_key_and_line(tmp_path, text, key):
    lab = tmp_path / "lab.toml"
    lab.write_text(f"[lab]\nname = 'x'\n\n[extraction]\n{text}\n")
    if key is None:  # valid in the file, refused against a recording's sample rate
        params = load_params(load(lab))
        with pytest.raises(ConfigError, match="does not divide"):
            params.decimation(10_000.0)
        return
    with pytest.raises(ConfigError) as err:
        load_params(load(lab))
    assert err.value.key == key
    assert err.value.line == 5
    assert str(lab) in str(err.value)


def test_overrides_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="min_latency_s"):
        load_params(min_latency_s=0.01)
    assert dataclasses.replace(load_params(), seed=3).seed == 3
