"""Planted recordings shared by the extraction tests (built once per session)."""

from __future__ import annotations

import pytest

from instrument.extract.params import load_params
from instrument.extract.pipeline import extract
from tests.instrument.extract.synthetic import planted_recording


@pytest.fixture(scope="session")
def planted():
    """24 neurons, 10 chemical synapses, one electrical pair, two neurons on two electrodes
    and one also seen extracellularly, 40 s."""
    return planted_recording(
        duration_s=40.0, electrical=[(17, 18, 0.8e-3)], extracellular_neurons=(5,)
    )


@pytest.fixture(scope="session")
def planted_result(planted):
    return extract(planted.recording, load_params(), progress=False)
