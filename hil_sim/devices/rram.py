"""Filamentary RRAM (Ta/HfOx, TiO2-x): bipolar, threshold-like, state-dependent analog switching.

Model (per cell, normalized state ``x = (G - g_lo) / (g_hi - g_lo)`` in [0, 1]):

* SET (cell voltage ``V > V_set``): ``x <- 1 - (1 - x) * exp(-r)``;
  RESET (``V < -V_reset``): ``x <- x * exp(-r)``, with
  ``r = k * (exp((|V| - V_th) / V0) - 1) * width``. The switching rate grows
  exponentially with the overdrive above a threshold (Alibart, Gao, Hoskins,
  Strukov, Nanotechnology 23, 075201 (2012); Prezioso et al., Nature 521, 61
  (2015): thresholds near 1 V), and the step shrinks as the cell approaches its
  bound: the soft-bounds/exponential-step update of the IBM aihwkit device
  presets (Gokmen & Vlasov, Front. Neurosci. 10, 333 (2016)). The response to a
  train of identical pulses is therefore nonlinear and bounded.
* Device to device: thresholds vary by 5 %, rates by 30 %, bounds by ~10 %
  (log-normal); cycle to cycle: each pulse's rate by 30 % and an additive 0.3 %
  of the window.
* Window: g_lo ~ 0.5 uS, g_hi ~ 140 uS, covering the 1-100 uS usable window of
  HfOx 1T1R arrays (Li et al., Nat. Electron. 1, 52 (2018)).
* Read noise: relative, larger at low conductance (random telegraph noise,
  Ambrogio et al., IEEE TED 61, 2912 (2014)): 0.3 % + 2 % * sqrt(1 uS / G).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hil_sim.devices.base import DeviceArray, Index, lognormal


class RRAMArray(DeviceArray):
    """Bipolar analog RRAM cells."""

    technology: ClassVar[str] = "rram"
    window_s: ClassVar[tuple[float, float]] = (1e-6, 1e-4)

    V0 = 0.15
    """Voltage scale of the exponential switching rate, V."""

    def __init__(
        self,
        shape: tuple[int, int],
        rng: np.random.Generator,
        *,
        stuck_rate: float = 0.0,
        v_set: float = 0.9,
        v_reset: float = 0.8,
        k_set: float = 800.0,
        k_reset: float = 1000.0,
        g_lo: float = 0.5e-6,
        g_hi: float = 140e-6,
        c2c: float = 0.3,
    ) -> None:
        super().__init__(shape, rng, stuck_rate=stuck_rate)
        s = self.shape
        self.v_set = v_set * lognormal(rng, s, 0.05)
        self.v_reset = v_reset * lognormal(rng, s, 0.05)
        self.k_set = k_set * lognormal(rng, s, 0.3)
        self.k_reset = k_reset * lognormal(rng, s, 0.3)
        self.g_lo = g_lo * lognormal(rng, s, 0.1)
        self.g_hi = g_hi * lognormal(rng, s, 0.08)
        self.c2c = c2c
        self.x = rng.uniform(0.02, 0.15, s)
        """Normalized state in [0, 1]."""

    def _conductance(self, t: float, index: Index) -> np.ndarray:
        g_lo = self.g_lo[index]
        return g_lo + self.x[index] * (self.g_hi[index] - g_lo)

    def thresholds_v(self) -> tuple[float, float]:
        return -float(self.v_reset.min()), float(self.v_set.min())

    def _program(self, v: np.ndarray, width_s: float, t: float, mask: np.ndarray) -> None:
        rng = self.rng
        vm = v[mask]
        setting = vm > 0
        v_th = np.where(setting, self.v_set[mask], self.v_reset[mask])
        k = np.where(setting, self.k_set[mask], self.k_reset[mask])
        overdrive = np.clip((np.abs(vm) - v_th) / self.V0, 0.0, 50.0)
        r = k * np.expm1(overdrive) * width_s * lognormal(rng, vm.shape, self.c2c)
        x = self.x[mask]
        moved = r > 0
        x_new = np.where(setting, 1.0 - (1.0 - x) * np.exp(-r), x * np.exp(-r))
        x_new = x_new + moved * 0.003 * rng.standard_normal(vm.shape)
        self.x[mask] = np.clip(x_new, 0.0, 1.0)

    def read_sigma(self, g: np.ndarray, t: float) -> np.ndarray:
        return 0.003 + 0.02 * np.sqrt(1e-6 / np.maximum(g, 1e-9))

    def reachable_s(self) -> tuple[float, float]:
        return float(np.median(self.g_lo)), float(np.median(self.g_hi))
