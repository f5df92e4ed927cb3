"""STT-MRAM: binary stochastic switching of magnetic tunnel junctions, several per cell.

Model:

* Each junction is parallel (P, high conductance) or antiparallel (AP). A pulse
  of voltage ``V`` and width ``t`` switches it with probability
  ``P = 1 - exp(-t / tau)``, ``tau = tau0 * exp(Delta * (1 - |V| / Vc0))`` for
  ``|V| < Vc0`` (thermally activated regime) and ``tau = tau0`` above it — the
  switching-probability model of Khvalkovskiy et al., J. Phys. D 46, 074001
  (2013) with ``tau0 = 1 ns``, thermal stability ``Delta = 60``. Positive V
  switches AP -> P, negative V switches P -> AP (with a 15 % higher Vc0).
* A multi-level cell holds ``n`` junctions in parallel (default 4, 5 levels) whose
  critical voltages are staggered (x0.85, x0.95, x1.05, x1.15): the pulse
  amplitude and width set how many flip.
* ``G_P = 140 uS``, ``G_AP = 24 uS`` (TMR ~480 %, within the 600 % reported for
  MgO junctions, Ikeda et al., APL 93, 082508 (2008)), so a 4-junction cell
  spans ~96-560 uS and still covers the 100-500 uS window when read through its
  access transistor and lines; 3 % device-to-device spread.
* Read noise 0.3 % (shot and 1/f noise of the junctions at 0.1 V).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hil_sim.devices.base import DeviceArray, Index, lognormal

TAU0_S = 1e-9


class MRAMArray(DeviceArray):
    """Multi-junction STT-MRAM cells."""

    technology: ClassVar[str] = "mram"
    window_s: ClassVar[tuple[float, float]] = (1e-4, 5e-4)
    read_voltage_max_v: ClassVar[float] = 0.2

    def __init__(
        self,
        shape: tuple[int, int],
        rng: np.random.Generator,
        *,
        stuck_rate: float = 0.0,
        junctions: int = 4,
        g_p: float = 140e-6,
        g_ap: float = 24e-6,
        vc0: float = 0.55,
        delta: float = 60.0,
    ) -> None:
        super().__init__(shape, rng, stuck_rate=stuck_rate)
        if junctions < 1:
            raise ValueError("junctions must be >= 1")
        s = (*self.shape, junctions)
        self.junctions = junctions
        self.g_p = g_p * lognormal(rng, s, 0.03)
        self.g_ap = g_ap * lognormal(rng, s, 0.03)
        stagger = np.linspace(0.85, 1.15, junctions) if junctions > 1 else np.ones(1)
        self.vc0_set = vc0 * stagger * lognormal(rng, s, 0.04)
        self.vc0_reset = 1.15 * vc0 * stagger * lognormal(rng, s, 0.04)
        self.delta = delta
        self.parallel = rng.random(s) < 0.5
        """Junction state: True = parallel (high conductance)."""

    def _conductance(self, t: float, index: Index) -> np.ndarray:
        return np.where(self.parallel[index], self.g_p[index], self.g_ap[index]).sum(axis=-1)

    def thresholds_v(self) -> tuple[float, float]:
        # below ~0.3 Vc0 the switching probability within 1 s is < 1e-9
        return -0.3 * float(self.vc0_reset.min()), 0.3 * float(self.vc0_set.min())

    def switching_probability(self, v: np.ndarray, width_s: float, vc0: np.ndarray) -> np.ndarray:
        """Probability that a junction of critical voltage ``vc0`` switches under ``v`` for
        ``width_s``."""
        ratio = np.abs(v) / vc0
        exponent = np.where(ratio < 1.0, self.delta * (1.0 - ratio), 0.0)
        tau = TAU0_S * np.exp(np.minimum(exponent, 700.0))
        return -np.expm1(-width_s / tau)

    def _program(self, v: np.ndarray, width_s: float, t: float, mask: np.ndarray) -> None:
        vm = v[mask][:, None]
        setting = vm > 0
        vc0 = np.where(setting, self.vc0_set[mask], self.vc0_reset[mask])
        p = self.switching_probability(vm, width_s, vc0)
        flip = self.rng.random(p.shape) < p
        state = self.parallel[mask]
        state = np.where(flip & setting, True, state)
        state = np.where(flip & ~setting, False, state)
        self.parallel[mask] = state

    def read_sigma(self, g: np.ndarray, t: float) -> np.ndarray:
        return np.full_like(g, 0.003)

    def reachable_s(self) -> tuple[float, float]:
        n = self.junctions
        return n * float(np.median(self.g_ap)), n * float(np.median(self.g_p))
