"""What the benchmarks share: a calibration store of their own.

A benchmark measures the emulated instruments as they are: it must neither apply records a
developer keeps in the checkout's ``calibration_store/`` (a 64×64 crossbar record is refused
by a 64×128 emulated rig with the same serial number) nor file new ones there.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile

from instrument.config import LabConfig


def own_calibration_store(config: LabConfig) -> LabConfig:
    """``config`` with an empty temporary calibration store (removed at exit)."""
    store = tempfile.mkdtemp(prefix="bench-calibration-")
    atexit.register(shutil.rmtree, store, ignore_errors=True)
    table = {**config.sections.get("calibration", {}), "store": store}
    return dataclasses.replace(config, sections={**config.sections, "calibration": table})
