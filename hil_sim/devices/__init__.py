"""Memory-device physics, one small class per technology (no wire, no routing)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hil_sim.devices.base import STUCK_NONE, STUCK_OFF, STUCK_ON, DeviceArray
from hil_sim.devices.flash import FlashArray
from hil_sim.devices.mram import MRAMArray
from hil_sim.devices.pcm import PCMArray
from hil_sim.devices.rram import RRAMArray

TECHNOLOGIES: dict[str, type[DeviceArray]] = {
    "rram": RRAMArray,
    "pcm": PCMArray,
    "mram": MRAMArray,
    "flash": FlashArray,
}


def make_devices(
    technology: str,
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    stuck_rate: float = 0.0,
    **params: Any,
) -> DeviceArray:
    """The device array of ``technology`` ("rram", "pcm", "mram", "flash")."""
    try:
        cls = TECHNOLOGIES[technology]
    except KeyError:
        raise ValueError(
            f"unknown technology {technology!r} (known: {', '.join(TECHNOLOGIES)})"
        ) from None
    return cls(shape, rng, stuck_rate=stuck_rate, **params)


__all__ = [
    "STUCK_NONE",
    "STUCK_OFF",
    "STUCK_ON",
    "TECHNOLOGIES",
    "DeviceArray",
    "FlashArray",
    "MRAMArray",
    "PCMArray",
    "RRAMArray",
    "make_devices",
]
