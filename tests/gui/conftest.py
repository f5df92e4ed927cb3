"""GUI tests run offscreen (set before any Qt import) on the embedded emulated lab."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Iterator

import pytest

from instrument.embedded_lab import embedded_lab
from instrument.live import LiveLab


@pytest.fixture
def app(qapp):
    """The QApplication, with the project's pyqtgraph settings."""
    from gui.app import get_app

    return get_app()


@pytest.fixture
def sim_config() -> Iterator:
    """The embedded emulated lab's configuration (real wires, the default culture)."""
    with embedded_lab(seed=1) as (config, _lab):
        yield config


@pytest.fixture
def live_lab(sim_config, tmp_path) -> Iterator[LiveLab]:
    """A LiveLab on the embedded lab, sessions under tmp_path; closed afterwards."""
    import dataclasses

    config = dataclasses.replace(
        sim_config, lab=dataclasses.replace(sim_config.lab, data_dir=str(tmp_path / "sessions"))
    )
    lab = LiveLab(config, source="embedded emulated lab (tests)")
    yield lab
    lab.close()
