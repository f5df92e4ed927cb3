"""What every memory-device model shares: a (rows, cols) array of cells, stuck cells, the clock.

A device model is pure physics: no wire, no routing, no network. The crossbar
(:mod:`hil_sim.crossbar`) hands it the voltage each cell sees and the pulse width;
the model decides how each cell's state changes and what conductance it reads.
All quantities are SI (V, S, s); arrays are vectorized over every cell.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import EllipsisType
from typing import Any, ClassVar

import numpy as np

STUCK_NONE, STUCK_ON, STUCK_OFF = 0, 1, -1

Index = EllipsisType | tuple[Any, ...]
"""Which cells: ``...`` for all, or a numpy index tuple such as ``(row, slice(None))``."""


class DeviceArray(ABC):
    """A rows x cols array of one memory technology.

    ``stuck_rate`` is the fraction of cells stuck at on (high conductance) or off
    (low conductance), half each; a stuck cell never moves, whatever it is sent.
    """

    technology: ClassVar[str]
    window_s: ClassVar[tuple[float, float]]
    """The usable conductance window (g_min, g_max), S: what the lab configuration expects."""
    read_voltage_max_v: ClassVar[float] = 0.3
    """Reads at or below this |V| never change a cell."""

    def __init__(
        self, shape: tuple[int, int], rng: np.random.Generator, *, stuck_rate: float = 0.0
    ) -> None:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (rows, cols) >= 1, got {shape}")
        if not 0.0 <= stuck_rate <= 1.0:
            raise ValueError(f"stuck_rate must be in [0, 1], got {stuck_rate}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.rng = rng
        self.stuck_rate = stuck_rate
        draw = rng.random(self.shape)
        self.stuck = np.zeros(self.shape, dtype=np.int8)
        self.stuck[draw < stuck_rate / 2] = STUCK_ON
        self.stuck[(draw >= stuck_rate / 2) & (draw < stuck_rate)] = STUCK_OFF
        g_min, g_max = self.window_s
        # stuck-on: a filament/crystal that will not break, above the window;
        # stuck-off: an open cell below it (device to device spread of 10 %)
        spread = np.exp(0.1 * rng.standard_normal(self.shape))
        self.stuck_g = np.where(self.stuck == STUCK_ON, 1.3 * g_max * spread, 0.4 * g_min * spread)
        self.version = 0
        """Incremented whenever any cell changes (the crossbar caches network solves on it)."""

    # --- the physics each technology provides --------------------------------------
    @abstractmethod
    def _conductance(self, t: float, index: Index) -> np.ndarray:
        """Noise-free read conductance of the cells ``index`` selects at time ``t`` (s, the
        crossbar's clock)."""

    @abstractmethod
    def _program(self, v: np.ndarray, width_s: float, t: float, mask: np.ndarray) -> None:
        """Change the cells in ``mask`` under cell voltage ``v`` held for ``width_s``."""

    @abstractmethod
    def thresholds_v(self) -> tuple[float, float]:
        """(negative, positive) cell voltage beyond which some cell may change, V."""

    def read_sigma(self, g: np.ndarray, t: float) -> np.ndarray:
        """Relative standard deviation of one read of conductance ``g`` (default 0.5 %)."""
        return np.full_like(g, 0.005)

    # --- shared ------------------------------------------------------------------------
    def conductance(self, t: float, index: Index = ...) -> np.ndarray:
        """Read conductance of every cell, or of those ``index`` selects (stuck cells at their
        stuck value), S."""
        g = self._conductance(t, index)
        return np.where(self.stuck[index] != STUCK_NONE, self.stuck_g[index], g)

    def current(self, v: np.ndarray, t: float, index: Index = ...) -> np.ndarray:
        """Current through each cell (or those ``index`` selects) at cell voltage ``v``, A."""
        return self.conductance(t, index) * v

    def gate_pulse(self, v: float) -> bool:
        """Whether ``v`` goes to the cell's gate rather than through it (flash programming)."""
        return False

    def pulse(self, v: np.ndarray | float, width_s: float, t: float) -> np.ndarray:
        """Apply cell voltages ``v`` for ``width_s``; returns the mask of cells that could change.

        Cells below their switching threshold and stuck cells are left alone.
        """
        if width_s <= 0:
            return np.zeros(self.shape, dtype=bool)
        v = np.broadcast_to(np.asarray(v, dtype=float), self.shape)
        neg, pos = self.thresholds_v()
        mask = ((v >= pos) | (v <= neg)) & (self.stuck == STUCK_NONE)
        if mask.any():
            self._program(v, width_s, t, mask)
            self.version += 1
        return mask

    def reachable_s(self) -> tuple[float, float]:
        """The lowest and highest conductance some pulse sequence reaches on a typical cell, S."""
        return self.window_s


def lognormal(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Multiplicative spread with median 1 and log-standard-deviation ``sigma``."""
    return np.exp(sigma * rng.standard_normal(shape))
