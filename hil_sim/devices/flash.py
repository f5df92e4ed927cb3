"""NOR flash (floating-gate / charge-trap): ISPP programming of the threshold voltage, block erase.

Model:

* State: the threshold voltage ``V_th`` of each cell's transistor.
* Program (gate pulse ``V >= 10 V``): Fowler-Nordheim injection drives ``V_th``
  towards ``V - V_off`` (``V_off ~ 13 V``): ``dV_th = max(0, V - V_off - V_th) *
  (1 - exp(-width / tau_p))``, ``tau_p = 20 us``, with 10 % step noise and
  20 mV of discrete-charge noise. In steady state each ISPP step of ``dV``
  raises ``V_th`` by about ``dV`` — the incremental-step-pulse-programming
  property (Suh et al., IEEE JSSC 30, 1149 (1995)).
* Erase (gate pulse ``V <= -10 V``): a whole block (``block_rows`` rows sharing a
  well) returns towards the erased level ``V_th ~ N(1.0 V, 0.15 V)``, at a rate
  growing exponentially with ``|V|`` above 15 V. Erasing is the only way down.
* Read (drain ``|V| <= 1 V`` with the word line at ``V_read_gate = 3 V``): the
  channel conductance ``G = k s ln(1 + exp((V_read_gate - V_th) / s))``,
  ``k = 6 uS/V``, ``s = 0.2 V`` — about 12 uS erased, 0.1 uS at ``V_th = 3.4 V``,
  covering the 0.1-10 uS window.
* A gate pulse draws no channel current (gate leakage, 1 pA).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hil_sim.devices.base import DeviceArray, Index, lognormal


class FlashArray(DeviceArray):
    """NOR flash cells addressed as (word line = row, bit line = column)."""

    technology: ClassVar[str] = "flash"
    window_s: ClassVar[tuple[float, float]] = (1e-7, 1e-5)
    read_voltage_max_v: ClassVar[float] = 1.0

    V_GATE_MIN = 10.0
    """Smallest |gate pulse| that programs or erases, V."""

    def __init__(
        self,
        shape: tuple[int, int],
        rng: np.random.Generator,
        *,
        stuck_rate: float = 0.0,
        block_rows: int = 8,
        v_read_gate: float = 3.0,
        k_s_per_v: float = 6e-6,
        slope_v: float = 0.2,
        v_off: float = 13.0,
        tau_p: float = 20e-6,
        v_erased: float = 1.0,
    ) -> None:
        super().__init__(shape, rng, stuck_rate=stuck_rate)
        if block_rows < 1:
            raise ValueError("block_rows must be >= 1")
        s = self.shape
        self.block_rows = block_rows
        self.v_read_gate = v_read_gate
        self.k = k_s_per_v * lognormal(rng, s, 0.05)
        self.slope_v = slope_v
        self.v_off = v_off * lognormal(rng, s, 0.02)
        self.tau_p = tau_p
        self.v_erased = v_erased
        self.v_th = v_erased + 0.15 * rng.standard_normal(s)
        """Threshold voltage of each cell, V."""

    def _conductance(self, t: float, index: Index) -> np.ndarray:
        s = self.slope_v
        return self.k[index] * s * np.logaddexp(0.0, (self.v_read_gate - self.v_th[index]) / s)

    def current(self, v: np.ndarray, t: float, index: Index = ...) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        drain = np.abs(v) <= self.read_voltage_max_v
        return np.where(drain, self.conductance(t, index) * v, 1e-12 * np.sign(v))

    def gate_pulse(self, v: float) -> bool:
        return abs(v) > self.read_voltage_max_v

    def thresholds_v(self) -> tuple[float, float]:
        return -self.V_GATE_MIN, self.V_GATE_MIN

    def block_of(self, row: int) -> int:
        """The erase block holding word line ``row``."""
        return row // self.block_rows

    def _program(self, v: np.ndarray, width_s: float, t: float, mask: np.ndarray) -> None:
        rng = self.rng
        program = mask & (v > 0)
        if program.any():
            vm = v[program]
            v_th = self.v_th[program]
            target = vm - self.v_off[program]
            eta = 1.0 - np.exp(-width_s / self.tau_p)
            dv = np.clip(target - v_th, 0.0, None) * eta
            moved = dv > 0
            dv = dv * (1.0 + 0.1 * rng.standard_normal(dv.shape)) + moved * 0.02 * (
                rng.standard_normal(dv.shape)
            )
            self.v_th[program] = np.clip(v_th + np.clip(dv, 0.0, None), None, 7.0)
        erase = mask & (v < 0)
        if erase.any():
            rows = np.unique(np.nonzero(erase)[0])
            blocks = np.unique(rows // self.block_rows)
            v_gate = float(np.min(v[erase]))
            rate = np.exp((abs(v_gate) - 15.0) / 1.5) / 100e-6
            eta = 1.0 - np.exp(-width_s * rate)
            for block in blocks:
                sl = slice(block * self.block_rows, (block + 1) * self.block_rows)
                region = self.v_th[sl]
                level = self.v_erased + 0.15 * rng.standard_normal(region.shape)
                free = self.stuck[sl] == 0
                region[free] = (region - (region - level) * eta)[free]

    def read_sigma(self, g: np.ndarray, t: float) -> np.ndarray:
        return 0.004 + 0.01 * np.sqrt(1e-7 / np.maximum(g, 1e-12))

    def reachable_s(self) -> tuple[float, float]:
        s = self.slope_v
        k = float(np.median(self.k))
        g_hi = k * s * np.logaddexp(0.0, (self.v_read_gate - self.v_erased) / s)
        g_lo = k * s * np.logaddexp(0.0, (self.v_read_gate - 6.0) / s)
        return float(g_lo), float(g_hi)
