"""Phase-change memory (GST mushroom cell): gradual partial SET, abrupt RESET, drift, noise.

Model:

* Partial SET (``V_th <= |V| < V_reset``; PCM is unipolar): crystal growth adds
  ``dG = a * p * (1 - G / g_sat) * (1 - exp(-width / tau_c))`` with
  ``p = (|V| - V_th) / (V_reset - V_th)``; each increment is stochastic with a
  standard deviation of 0.8 of its mean (Nandakumar et al., J. Appl. Phys. 124,
  152135 (2018): cumulative, state-dependent, noisy partial-SET steps).
* RESET (``|V| >= V_reset``): melt-quench to the amorphous state, abruptly, to
  ~0.05 uS with a 30 % log-normal spread.
* Drift: ``G(t) = G0 * (t / t0) ** -nu`` after ``t0`` from the programming event,
  ``nu ~ N(mu(g), sigma(g))`` with ``g = G0 / 25 uS``,
  ``mu = clip(-0.0155 ln g + 0.0244, 0.049, 0.1)``,
  ``sigma = clip(-0.0125 ln g - 0.0059, 0.008, 0.045)`` — the fit of IBM aihwkit's
  ``PCMLikeNoiseModel`` to 1 M devices (Nandakumar et al., ICECS 2019; Joshi et
  al., Nat. Commun. 11, 2473 (2020)); so nu lies in about 0.05-0.1.
* Programming noise: each programming event adds ``N(0, s * sigma_prog(g))``,
  ``sigma_prog = 0.26348 + 1.9650 g - 1.1731 g^2`` uS (the same fit), scaled by
  ``s = 0.2`` because it is applied per pulse rather than per programmed value.
* Read noise (1/f): relative ``Q_s = min(0.0088 / g^0.65, 0.2)`` (same fit) per read.
* Window: 0.05 uS (RESET) to g_sat ~ 30 uS, covering aihwkit's 0.1-25 uS PCM window.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hil_sim.devices.base import DeviceArray, Index, lognormal

G_REF = 25e-6
"""aihwkit's reference g_max for the PCM fits, S."""


class PCMArray(DeviceArray):
    """Unipolar phase-change cells with conductance drift."""

    technology: ClassVar[str] = "pcm"
    window_s: ClassVar[tuple[float, float]] = (1e-7, 2.5e-5)

    def __init__(
        self,
        shape: tuple[int, int],
        rng: np.random.Generator,
        *,
        stuck_rate: float = 0.0,
        v_th: float = 1.0,
        v_reset: float = 3.0,
        a_set: float = 3e-6,
        tau_c: float = 5e-6,
        g_sat: float = 30e-6,
        g_reset: float = 5e-8,
        t0_s: float = 1.0,
        drift_scale: float = 1.0,
    ) -> None:
        super().__init__(shape, rng, stuck_rate=stuck_rate)
        s = self.shape
        self.v_th = v_th * lognormal(rng, s, 0.05)
        self.v_reset = v_reset * lognormal(rng, s, 0.03)
        self.a_set = a_set * lognormal(rng, s, 0.2)
        self.tau_c = tau_c
        self.g_sat = g_sat * lognormal(rng, s, 0.08)
        self.g_reset = g_reset
        self.t0_s = t0_s
        """Drift reference time after programming, s: G(t) = G0 for t <= t0."""
        self.drift_scale = drift_scale
        self.g0 = g_reset * lognormal(rng, s, 0.3)
        """Conductance at t0 after the last programming event, S."""
        self.t_prog = np.full(s, -np.inf)
        """Clock time of each cell's last programming event (never: drift settled), s."""
        self.nu = self._draw_nu(self.g0)

    def _draw_nu(self, g0: np.ndarray) -> np.ndarray:
        g = np.clip(g0 / G_REF, 1e-7, None)
        mu = np.clip(-0.0155 * np.log(g) + 0.0244, 0.049, 0.1)
        sig = np.clip(-0.0125 * np.log(g) - 0.0059, 0.008, 0.045)
        return np.abs(mu + sig * self.rng.standard_normal(g.shape)) * self.drift_scale

    def _conductance(self, t: float, index: Index) -> np.ndarray:
        age = t - self.t_prog[index]
        with np.errstate(invalid="ignore", over="ignore"):
            factor = np.where(
                np.isfinite(age) & (age > self.t0_s),
                (np.maximum(age, self.t0_s) / self.t0_s) ** -self.nu[index],
                1.0,
            )
        return self.g0[index] * factor

    def thresholds_v(self) -> tuple[float, float]:
        vmin = float(self.v_th.min())
        return -vmin, vmin

    def _program(self, v: np.ndarray, width_s: float, t: float, mask: np.ndarray) -> None:
        rng = self.rng
        vm = np.abs(v[mask])
        g_now = self._conductance(t, ...)[mask]
        v_th, v_reset = self.v_th[mask], self.v_reset[mask]
        reset = vm >= v_reset
        p = np.clip((vm - v_th) / (v_reset - v_th), 0.0, 1.0)
        mean = self.a_set[mask] * p * np.clip(1.0 - g_now / self.g_sat[mask], 0.0, None)
        mean *= 1.0 - np.exp(-width_s / self.tau_c)
        step = mean * np.clip(1.0 + 0.8 * rng.standard_normal(vm.shape), -0.2, None)
        g_rel = g_now / G_REF
        sigma_prog = 1e-6 * (0.26348 + 1.9650 * g_rel - 1.1731 * g_rel**2)
        noise = 0.2 * sigma_prog * rng.standard_normal(vm.shape) * (mean > 0)
        g_set = np.clip(g_now + step + noise, self.g_reset, None)
        g_new = np.where(reset, self.g_reset * lognormal(rng, vm.shape, 0.3), g_set)
        changed = reset | (mean > 0)
        g0 = self.g0[mask]
        g0[changed] = g_new[changed]
        self.g0[mask] = g0
        t_prog = self.t_prog[mask]
        t_prog[changed] = t
        self.t_prog[mask] = t_prog
        nu = self.nu[mask]
        nu[changed] = self._draw_nu(g_new[changed])
        self.nu[mask] = nu

    def read_sigma(self, g: np.ndarray, t: float) -> np.ndarray:
        return np.minimum(0.0088 / np.clip(g / G_REF, 1e-3, None) ** 0.65, 0.2)

    def reachable_s(self) -> tuple[float, float]:
        return self.g_reset, float(np.median(self.g_sat)) * 0.95
