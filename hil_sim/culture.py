"""The emulated neuronal culture: AdEx neurons, delayed current synapses, gap junctions.

The physics only (no wire, no electrodes): ``Culture(CultureParams(seed=1))`` builds a
seeded network of excitatory and inhibitory neurons scattered over the 64 × 64
electrode grid, and :meth:`Culture.advance` integrates it one sample (0.1 ms) at a
time, returning every neuron's membrane potential in V. The model, its parameters
and their sources are in ``docs/emulated_culture.md``.

Neurons are adaptive exponential integrate-and-fire (AdEx, Brette & Gerstner 2005)
with an extra slow after-hyperpolarisation current that ends network bursts;
spikes are drawn as a stereotyped ~1 ms action potential. Chemical synapses are
current based (an exponentially decaying current after a 1–5 ms delay), so a PSP
has the same shape whatever the membrane potential; their listed amplitude is the
PSP peak actually produced at rest, measured on the model itself. Background
synaptic bombardment is an Ornstein–Uhlenbeck current per neuron.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from hil_sim import culture_kernels as kern

MODEL_NAME = "AdEx network (current-based exponential synapses, gap junctions, slow AHP)"

ACTION_POTENTIAL_SHAPE = np.array(
    [1.0, 0.92, 0.72, 0.5, 0.32, 0.19, 0.11, 0.06, 0.03, 0.01], dtype=np.float64
)
"""Samples of an action potential after threshold, as a fraction of (peak − reset)."""


class CultureError(ValueError):
    """A culture parameter or request that makes no physical sense."""


@dataclass
class CultureParams:
    """Everything that defines an emulated culture. SI units; defaults = the default preset."""

    seed: int = 1
    n_neurons: int = 2000
    sample_rate_hz: float = 10_000.0
    area_side_m: float = 1.28e-3
    """Neurons lie in the square [0, side]² (the 64 × 64 array at 20 µm pitch spans 1.28 mm)."""
    min_soma_distance_m: float = 20e-6
    """Somata do not overlap: no two closer than this."""
    inhibitory_fraction: float = 0.2
    # connectivity
    mean_out_degree: float = 35.0
    """Mean chemical synapses per neuron (Gaussian fall-off with distance)."""
    connection_length_m: float = 150e-6
    """Standard deviation of the Gaussian connection probability vs distance."""
    # delays
    synaptic_delay_s: float = 1.0e-3
    conduction_velocity_m_per_s: float = 0.25
    delay_jitter_s: float = 1.2e-3
    min_delay_s: float = 1.0e-3
    max_delay_s: float = 5.0e-3
    # PSP amplitudes at rest (peak), log-normal
    epsp_median_v: float = 0.6e-3
    epsp_sigma: float = 0.7
    """Standard deviation of ln(amplitude)."""
    ipsp_median_v: float = 0.5e-3
    ipsp_sigma: float = 0.6
    psp_min_v: float = 0.05e-3
    psp_max_v: float = 4.0e-3
    strong_fraction: float = 0.02
    """Fraction of excitatory synapses that are strong ('eventful')."""
    strong_median_v: float = 11e-3
    strong_sigma: float = 0.15
    max_subthreshold_psp_v: float = 16e-3
    """Strong synapses are scaled down until their PSP at rest stays below this."""
    tau_syn_exc_s: float = 4e-3
    tau_syn_inh_s: float = 6e-3
    slow_exc_charge_fraction: float = 0.5
    """Share of an excitatory synapse's charge carried by a slow (NMDA-like) component."""
    tau_syn_slow_s: float = 50e-3
    # electrical synapses
    n_gap_pairs: int = 30
    gap_max_distance_m: float = 60e-6
    gap_conductance_s: float = 1.5e-9
    gap_sigma: float = 0.4
    # excitatory (regular spiking) neurons
    exc_capacitance_f: float = 150e-12
    exc_leak_s: float = 10e-9
    exc_rest_v: float = -70e-3
    exc_threshold_v: float = -50e-3
    exc_slope_v: float = 2e-3
    exc_adapt_s: float = 2e-9
    exc_adapt_tau_s: float = 0.1
    exc_adapt_jump_a: float = 50e-12
    exc_reset_v: float = -66e-3
    exc_slow_jump_a: float = 20e-12
    # inhibitory (fast spiking) neurons
    inh_capacitance_f: float = 80e-12
    inh_leak_s: float = 8e-9
    inh_rest_v: float = -68e-3
    inh_threshold_v: float = -50e-3
    inh_slope_v: float = 1e-3
    inh_adapt_s: float = 0.0
    inh_adapt_tau_s: float = 0.1
    inh_adapt_jump_a: float = 0.0
    inh_reset_v: float = -64e-3
    inh_slow_jump_a: float = 2e-12
    slow_ahp_tau_s: float = 0.9
    heterogeneity: float = 0.1
    """Log-normal spread of capacitance, leak and drive across neurons."""
    rest_spread_v: float = 2e-3
    threshold_spread_v: float = 1.5e-3
    spike_peak_v: float = 30e-3
    # background synaptic bombardment (Ornstein–Uhlenbeck current)
    exc_drive_mean_a: float = 183e-12
    inh_drive_mean_a: float = 60e-12
    drive_std_a: float = 60e-12
    drive_tau_s: float = 5e-3
    drive_spread: float = 0.25
    """Log-normal spread of the mean drive across neurons (sets the spread of rates)."""
    warmup_s: float = 3.0
    """Unrecorded settling run at construction (skips the cold-start burst)."""
    spike_history_s: float = 600.0
    """Spikes older than this are forgotten (bounds memory on long runs), s."""

    def validate(self) -> None:
        """Raise :class:`CultureError` for values that cannot build a culture."""
        if self.n_neurons < 2:
            raise CultureError(f"n_neurons must be >= 2, got {self.n_neurons}")
        if not (math.isfinite(self.warmup_s) and 0.0 <= self.warmup_s <= 600.0):
            raise CultureError(f"warmup_s must be in [0, 600] s, got {self.warmup_s}")
        if not self.spike_history_s > 0:
            raise CultureError(f"spike_history_s must be positive, got {self.spike_history_s}")
        if not 0.0 <= self.inhibitory_fraction <= 1.0:
            raise CultureError(
                f"inhibitory_fraction must be in [0, 1], got {self.inhibitory_fraction}"
            )
        if self.sample_rate_hz <= 0 or not math.isfinite(self.sample_rate_hz):
            raise CultureError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        dt = 1.0 / self.sample_rate_hz
        if not dt <= self.min_delay_s <= self.max_delay_s:
            raise CultureError(
                f"need 1/sample_rate <= min_delay_s <= max_delay_s, got {dt}, "
                f"{self.min_delay_s}, {self.max_delay_s}"
            )
        if self.max_delay_s * self.sample_rate_hz > 1000:
            raise CultureError(f"max_delay_s {self.max_delay_s} is longer than 1000 samples")
        for name in ("area_side_m", "connection_length_m", "tau_syn_exc_s", "tau_syn_inh_s"):
            if getattr(self, name) <= 0:
                raise CultureError(f"{name} must be positive, got {getattr(self, name)}")
        packing = self.n_neurons * math.pi * (self.min_soma_distance_m / 2) ** 2
        if packing > 0.45 * self.area_side_m**2:
            raise CultureError(
                f"{self.n_neurons} somata {self.min_soma_distance_m * 1e6:.0f} µm apart do not "
                f"fit in a {self.area_side_m * 1e3:.2f} mm square"
            )

    def to_attrs(self) -> dict[str, Any]:
        """All parameters as JSON-able scalars."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Synapses:
    """Every synapse of the culture (electrical ones once per direction). SI units."""

    pre: np.ndarray
    post: np.ndarray
    weight_v: np.ndarray
    """Peak PSP at the postsynaptic soma at rest, V (negative when inhibitory)."""
    delay_s: np.ndarray
    kind: np.ndarray
    """0 excitatory, 1 inhibitory, 2 electrical."""
    peak_latency_s: np.ndarray
    """Presynaptic spike to PSP peak, s (delay plus membrane filtering)."""
    current_a: np.ndarray
    """Chemical: amplitude of the synaptic current jump, A. Electrical: conductance, S."""


def _place_somata(rng: np.random.Generator, n: int, side: float, d_min: float) -> np.ndarray:
    """Hard-core random placement (no two somata closer than ``d_min``), (n, 2) m."""
    cell = d_min / math.sqrt(2.0)
    n_cells = max(1, math.ceil(side / cell))
    grid = -np.ones((n_cells, n_cells), dtype=np.int64)
    pos = np.empty((n, 2))
    k = 0
    d2 = d_min * d_min
    for _ in range(200):
        cand = rng.uniform(0.0, side, size=(4 * n, 2))
        for x, y in cand:
            gx = min(int(x / cell), n_cells - 1)
            gy = min(int(y / cell), n_cells - 1)
            ok = True
            for ix in range(max(gx - 2, 0), min(gx + 3, n_cells)):
                for iy in range(max(gy - 2, 0), min(gy + 3, n_cells)):
                    other = grid[ix, iy]
                    if other >= 0:
                        dx = pos[other, 0] - x
                        dy = pos[other, 1] - y
                        if dx * dx + dy * dy < d2:
                            ok = False
                            break
                if not ok:
                    break
            if ok:
                grid[gx, gy] = k
                pos[k] = (x, y)
                k += 1
                if k == n:
                    return pos
    raise CultureError(f"could not place {n} somata {d_min} m apart in a {side} m square")


class Culture:
    """A seeded network of spiking neurons over the electrode grid; advanced sample by sample.

    State persists between :meth:`advance` calls, and every random number is a hash of
    (seed, sample index, neuron), so the same seed gives the same samples however the
    run is cut into calls.
    """

    def __init__(self, params: CultureParams | None = None) -> None:
        self.params = p = params or CultureParams()
        p.validate()
        self.sample_rate_hz = float(p.sample_rate_hz)
        self.dt_s = 1.0 / self.sample_rate_hz
        self.n_neurons = n = int(p.n_neurons)
        self.sample_index = 0
        """Samples advanced so far."""
        seeds = np.random.SeedSequence(p.seed).spawn(6)
        rng_pos, rng_type, rng_prm, rng_conn, rng_w, rng_gap = (
            np.random.default_rng(s) for s in seeds
        )
        self._key = kern.stream_key(p.seed, 1)
        self._warm_key = kern.stream_key(p.seed, 3)

        self.positions_m = _place_somata(rng_pos, n, p.area_side_m, p.min_soma_distance_m)
        n_inh = round(p.inhibitory_fraction * n)
        excitatory = np.ones(n, dtype=bool)
        excitatory[rng_type.choice(n, size=n_inh, replace=False)] = False
        self.excitatory = excitatory
        self._prm = self._neuron_params(rng_prm)
        self.resting_potential_v = self._prm[kern.P_EL].copy()
        self._template = ACTION_POTENTIAL_SHAPE.copy()
        self._decay_exc = math.exp(-self.dt_s / p.tau_syn_exc_s)
        self._decay_inh = math.exp(-self.dt_s / p.tau_syn_inh_s)
        self._decay_slow = math.exp(-self.dt_s / p.tau_syn_slow_s)
        f = p.slow_exc_charge_fraction
        # amplitude ratio slow/fast so the slow part carries fraction f of the charge
        self._slow_ratio = f / (1.0 - f) * p.tau_syn_exc_s / p.tau_syn_slow_s
        self._noise_decay = math.exp(-self.dt_s / p.drive_tau_s)

        self.synapses = self._build_synapses(rng_conn, rng_w, rng_gap)
        self._pack_synapses()

        ring = 1
        while ring <= round(p.max_delay_s * self.sample_rate_hz) + 1:
            ring *= 2
        self._ring_exc = np.zeros((ring, n))
        self._ring_inh = np.zeros((ring, n))
        # start from a spread of states (not all at rest, which would fire in unison)
        rng_init = np.random.default_rng(np.random.SeedSequence([p.seed, 7]))
        el, vt = self._prm[kern.P_EL], self._prm[kern.P_VT]
        self._v = el + rng_init.uniform(0.0, 0.6, n) * (vt - el)
        self._w = np.zeros(n)
        self._w_slow = np.zeros(n)
        self._i_exc = np.zeros(n)
        self._i_slow = np.zeros(n)
        self._i_inh = np.zeros(n)
        self._i_noise = self._prm[kern.P_NOISE_MEAN] + p.drive_std_a * rng_init.standard_normal(n)
        self._refractory = np.zeros(n, dtype=np.int64)
        # external drive: the user's (inject/clamp) and the electrodes'
        self._user_current = np.zeros(n)
        self._user_g = np.zeros(n)
        self._user_gv = np.zeros(n)
        self._elec_current = np.zeros(n)
        self._elec_g = np.zeros(n)
        self._elec_gv = np.zeros(n)
        self._drive = (np.zeros(n), np.zeros(n), np.zeros(n))
        self._drive_dirty = True
        self.electrodes_attached = False
        """Set by the one :class:`hil_sim.electrodes.ElectrodeArray` that drives this culture."""
        self._spike_steps: list[np.ndarray] = []
        self._spike_neurons: list[np.ndarray] = []
        self._warm_up()

    def _warm_up(self) -> None:
        """Run ``warmup_s`` unrecorded so sample 0 finds the culture in its steady state.

        Started cold, every neuron would fire in one synchronous burst; the warm-up
        draws its noise from its own stream, so it does not shift the recorded samples'.
        """
        n_warm = round(self.params.warmup_s * self.sample_rate_hz)
        if n_warm == 0:
            return
        scratch = np.empty((min(n_warm, 1000), self.n_neurons), dtype=np.float32)
        self._drive = (np.zeros(self.n_neurons),) * 3
        for first in range(0, n_warm, scratch.shape[0]):
            chunk = scratch[: min(scratch.shape[0], n_warm - first)]
            self._run(chunk, self._warm_key, first, record=False)

    # ---------------------------------------------------------------- building
    def _neuron_params(self, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        n = self.n_neurons
        exc = self.excitatory

        def pick(e: float, i: float) -> np.ndarray:
            return np.where(exc, e, i).astype(np.float64)

        def spread() -> np.ndarray:
            return rng.lognormal(0.0, p.heterogeneity, n)

        prm = np.zeros((kern.N_PARAMS, n))
        cap = pick(p.exc_capacitance_f, p.inh_capacitance_f) * spread()
        gl = pick(p.exc_leak_s, p.inh_leak_s) * spread()
        el = pick(p.exc_rest_v, p.inh_rest_v) + rng.normal(0.0, p.rest_spread_v, n)
        vt = pick(p.exc_threshold_v, p.inh_threshold_v) + rng.normal(0.0, p.threshold_spread_v, n)
        delta = pick(p.exc_slope_v, p.inh_slope_v)
        drive = pick(p.exc_drive_mean_a, p.inh_drive_mean_a) * rng.lognormal(0.0, p.drive_spread, n)
        prm[kern.P_DT_OVER_C] = self.dt_s / cap
        prm[kern.P_GL] = gl
        prm[kern.P_EL] = el
        prm[kern.P_VT] = vt
        prm[kern.P_DELTA_T] = delta
        prm[kern.P_A] = pick(p.exc_adapt_s, p.inh_adapt_s)
        prm[kern.P_DT_OVER_TAU_W] = self.dt_s / pick(p.exc_adapt_tau_s, p.inh_adapt_tau_s)
        prm[kern.P_B] = pick(p.exc_adapt_jump_a, p.inh_adapt_jump_a)
        prm[kern.P_V_RESET] = el + (
            pick(p.exc_reset_v, p.inh_reset_v) - pick(p.exc_rest_v, p.inh_rest_v)
        )
        prm[kern.P_B_SLOW] = pick(p.exc_slow_jump_a, p.inh_slow_jump_a)
        prm[kern.P_DECAY_SLOW] = math.exp(-self.dt_s / p.slow_ahp_tau_s)
        prm[kern.P_NOISE_MEAN] = drive
        prm[kern.P_NOISE_KICK] = p.drive_std_a * math.sqrt(
            1.0 - math.exp(-2.0 * self.dt_s / p.drive_tau_s)
        )
        prm[kern.P_V_SPIKE] = vt + 5.0 * delta
        prm[kern.P_V_PEAK] = p.spike_peak_v
        return prm

    def _build_synapses(
        self,
        rng_conn: np.random.Generator,
        rng_w: np.random.Generator,
        rng_gap: np.random.Generator,
    ) -> Synapses:
        p = self.params
        n = self.n_neurons
        pos = self.positions_m
        two_s2 = 2.0 * p.connection_length_m**2
        # normalise the Gaussian kernel so the mean out-degree is as asked
        total = 0.0
        block = 256
        for i0 in range(0, n, block):
            d2 = ((pos[i0 : i0 + block, None, :] - pos[None, :, :]) ** 2).sum(-1)
            k = np.exp(-d2 / two_s2)
            k[np.arange(k.shape[0]), np.arange(i0, i0 + k.shape[0])] = 0.0
            total += float(k.sum())
        p0 = min(1.0, p.mean_out_degree * n / total) if total > 0 else 0.0
        pre_l, post_l, dist_l = [], [], []
        for i0 in range(0, n, block):
            d2 = ((pos[i0 : i0 + block, None, :] - pos[None, :, :]) ** 2).sum(-1)
            prob = p0 * np.exp(-d2 / two_s2)
            prob[np.arange(prob.shape[0]), np.arange(i0, i0 + prob.shape[0])] = 0.0
            hit = rng_conn.random(prob.shape) < prob
            a, b = np.nonzero(hit)
            pre_l.append(a + i0)
            post_l.append(b)
            dist_l.append(np.sqrt(d2[a, b]))
        pre = np.concatenate(pre_l).astype(np.int32)
        post = np.concatenate(post_l).astype(np.int32)
        dist = np.concatenate(dist_l)
        m = pre.size
        dt = self.dt_s
        delay = (
            p.synaptic_delay_s
            + dist / p.conduction_velocity_m_per_s
            + rng_conn.uniform(0.0, p.delay_jitter_s, m)
        )
        delay = np.clip(delay, p.min_delay_s, p.max_delay_s)
        delay_steps = np.clip(np.round(delay / dt), 1, None).astype(np.int64)

        exc_pre = self.excitatory[pre]
        amp = np.where(
            exc_pre,
            rng_w.lognormal(math.log(p.epsp_median_v), p.epsp_sigma, m),
            rng_w.lognormal(math.log(p.ipsp_median_v), p.ipsp_sigma, m),
        )
        amp = np.clip(amp, p.psp_min_v, p.psp_max_v)
        strong = exc_pre & (rng_w.random(m) < p.strong_fraction)
        amp[strong] = rng_w.lognormal(
            math.log(p.strong_median_v), p.strong_sigma, int(strong.sum())
        )
        sign = np.where(exc_pre, 1.0, -1.0)
        decay_per = np.where(exc_pre, self._decay_exc, self._decay_inh)
        # gain (peak V per A of current jump) of each postsynaptic neuron, E and I kinetics
        unit = 1e-12
        idx = np.arange(n, dtype=np.int64)
        g_exc, _ = kern.probe_psp(
            self._prm, idx, np.full(n, unit), np.full(n, self._decay_exc),
            np.full(n, self._slow_ratio), self._decay_slow, 800,
        )  # fmt: skip
        g_inh, _ = kern.probe_psp(
            self._prm, idx, np.full(n, unit), np.full(n, self._decay_inh),
            np.zeros(n), self._decay_slow, 800,
        )  # fmt: skip
        gain = np.where(exc_pre, g_exc[post], g_inh[post]) / unit
        current = sign * amp / gain
        slow = np.where(exc_pre, self._slow_ratio, 0.0)
        post64 = post.astype(np.int64)
        peak, at = kern.probe_psp(
            self._prm, post64, current, decay_per, slow, self._decay_slow, 800
        )
        # a synapse listed by its PSP at rest must not fire its target from rest: scale
        # down the few strong ones that would (low threshold, high input resistance)
        for _ in range(20):
            fires = np.abs(peak) > p.max_subthreshold_psp_v
            if not fires.any():
                break
            current[fires] *= 0.85
            peak[fires], at[fires] = kern.probe_psp(
                self._prm, post64[fires], current[fires], decay_per[fires], slow[fires],
                self._decay_slow, 800,
            )  # fmt: skip
        latency = (delay_steps + at) * dt

        gap_a, gap_b, gap_g = self._pick_gap_pairs(rng_gap)
        gap_peak_ab, gap_at_ab = self._probe_gap(gap_a, gap_b, gap_g)
        gap_peak_ba, gap_at_ba = self._probe_gap(gap_b, gap_a, gap_g)
        k = gap_a.size
        return Synapses(
            pre=np.concatenate([pre, gap_a, gap_b]).astype(np.int32),
            post=np.concatenate([post, gap_b, gap_a]).astype(np.int32),
            weight_v=np.concatenate([peak, gap_peak_ab, gap_peak_ba]).astype(np.float32),
            delay_s=np.concatenate([delay_steps * dt, np.zeros(2 * k)]).astype(np.float32),
            kind=np.concatenate([np.where(exc_pre, 0, 1), np.full(2 * k, 2)]).astype(np.uint8),
            peak_latency_s=np.concatenate([latency, gap_at_ab * dt, gap_at_ba * dt]).astype(
                np.float32
            ),
            current_a=np.concatenate([current, gap_g, gap_g]),
        )

    def _pick_gap_pairs(
        self, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        pos = self.positions_m
        from scipy.spatial import cKDTree

        pairs = np.array(sorted(cKDTree(pos).query_pairs(p.gap_max_distance_m)), dtype=np.int64)
        if p.n_gap_pairs <= 0 or pairs.size == 0:
            empty = np.zeros(0, dtype=np.int32)
            return empty, empty, np.zeros(0)
        chosen = rng.choice(len(pairs), size=min(p.n_gap_pairs, len(pairs)), replace=False)
        chosen.sort()
        a = pairs[chosen, 0].astype(np.int32)
        b = pairs[chosen, 1].astype(np.int32)
        g = rng.lognormal(math.log(p.gap_conductance_s), p.gap_sigma, a.size)
        return a, b, g

    def _probe_gap(
        self, pre: np.ndarray, post: np.ndarray, g: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Peak spikelet (V) and its step in ``post`` when ``pre`` fires once from rest."""
        k = pre.size
        if k == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        order = np.empty(2 * k, dtype=np.int64)
        order[0::2] = pre
        order[1::2] = post
        prm = self._prm[:, order].copy()
        prm[kern.P_NOISE_MEAN] = 0.0
        prm[kern.P_NOISE_KICK] = 0.0
        m = 2 * k
        n_steps = 400
        v = prm[kern.P_EL].copy()
        refractory = np.zeros(m, dtype=np.int64)
        # the presynaptic copy fires at step 0: its first template sample is the peak
        ring = np.zeros((2, m))
        out_v = np.empty((n_steps, m), dtype=np.float32)
        v[0::2] = prm[kern.P_V_PEAK, 0::2]
        refractory[0::2] = self._template.size - 1
        kern.run_network(
            n_steps, 0, np.uint64(0), v, np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m),
            np.zeros(m), np.zeros(m), refractory, prm, 0.0, 0.0, 0.0, 0.0, 0.0, self._template,
            np.zeros(m), np.zeros(m), np.zeros(m),
            np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0),
            np.zeros(0, dtype=np.int64), np.zeros(m, dtype=np.bool_),
            np.arange(0, m, 2, dtype=np.int32), np.arange(1, m, 2, dtype=np.int32), g,
            ring, ring.copy(), out_v,
            np.zeros(m + 1, dtype=np.int64), np.zeros(m + 1, dtype=np.int32), 0,
        )  # fmt: skip
        dev = out_v[:, 1::2].astype(np.float64) - prm[kern.P_EL, 1::2]
        at = np.argmax(dev, axis=0)
        return dev[at, np.arange(k)], at.astype(np.int64)

    def _pack_synapses(self) -> None:
        """CSR by presynaptic neuron, chemical synapses only, for the kernel."""
        s = self.synapses
        chem = s.kind != 2
        pre = s.pre[chem]
        order = np.argsort(pre, kind="stable")
        self._syn_post = s.post[chem][order].astype(np.int32)
        self._syn_current = s.current_a[chem][order].astype(np.float64)
        self._syn_delay = np.round(s.delay_s[chem][order] * self.sample_rate_hz).astype(np.int64)
        counts = np.bincount(pre, minlength=self.n_neurons)
        self._out_ptr = np.zeros(self.n_neurons + 1, dtype=np.int64)
        np.cumsum(counts, out=self._out_ptr[1:])
        gap = s.kind == 2
        k = int(gap.sum()) // 2
        self._gap_a = s.pre[gap][:k].astype(np.int32)
        self._gap_b = s.post[gap][:k].astype(np.int32)
        self._gap_g = s.current_a[gap][:k].astype(np.float64)
        self._inhibitory = ~self.excitatory

    # ---------------------------------------------------------------- running
    @property
    def time_s(self) -> float:
        """Emulated time elapsed, s."""
        return self.sample_index / self.sample_rate_hz

    def advance(self, n_samples: int) -> np.ndarray:
        """Integrate ``n_samples`` samples; (n_samples, n_neurons) float32 membrane potential, V."""
        n_samples = int(n_samples)
        if n_samples < 0:
            raise CultureError(f"n_samples must be >= 0, got {n_samples}")
        out = np.empty((n_samples, self.n_neurons), dtype=np.float32)
        if self._drive_dirty:
            self._drive = (
                self._user_current + self._elec_current,
                self._user_g + self._elec_g,
                self._user_gv + self._elec_gv,
            )
            self._drive_dirty = False
        self._run(out, self._key, self.sample_index, record=True)
        self.sample_index += n_samples
        return out

    def _run(self, out: np.ndarray, key: np.uint64, step0: int, record: bool) -> None:
        """Integrate ``len(out)`` samples from absolute step ``step0`` into ``out``."""
        i_ext, g_cl, gv_cl = self._drive
        n_samples = out.shape[0]
        done = 0
        while done < n_samples:
            cap = max(2 * self.n_neurons, int(self.n_neurons * (n_samples - done) * self.dt_s * 40))
            cap = min(cap, 4_000_000)
            sp_step = np.empty(cap, dtype=np.int64)
            sp_neuron = np.empty(cap, dtype=np.int32)
            steps, n_sp = kern.run_network(
                n_samples - done, step0 + done, key,
                self._v, self._w, self._w_slow, self._i_exc, self._i_slow, self._i_inh,
                self._i_noise, self._refractory, self._prm, self._noise_decay,
                self._decay_exc, self._slow_ratio, self._decay_slow, self._decay_inh,
                self._template, i_ext, g_cl, gv_cl,
                self._out_ptr, self._syn_post, self._syn_current, self._syn_delay,
                self._inhibitory, self._gap_a, self._gap_b, self._gap_g,
                self._ring_exc, self._ring_inh, out[done:],
                sp_step, sp_neuron, 0,
            )  # fmt: skip
            if record and n_sp:
                self._spike_steps.append(sp_step[:n_sp].copy())
                self._spike_neurons.append(sp_neuron[:n_sp].copy())
                self._forget_old_spikes(step0 + done + int(steps))
            done += int(steps)

    def _forget_old_spikes(self, now: int) -> None:
        """Drop whole stored chunks that ended before the kept history window."""
        oldest = now - round(self.params.spike_history_s * self.sample_rate_hz)
        while self._spike_steps and (
            self._spike_steps[0].size == 0 or self._spike_steps[0][-1] < oldest
        ):
            self._spike_steps.pop(0)
            self._spike_neurons.pop(0)

    def spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """The spikes of the last ``spike_history_s`` (older ones are forgotten), in time
        order: (sample index int64, neuron int32)."""
        if not self._spike_steps:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        steps = np.concatenate(self._spike_steps)
        neurons = np.concatenate(self._spike_neurons)
        keep = steps >= self.sample_index - round(self.params.spike_history_s * self.sample_rate_hz)
        self._spike_steps = [steps[keep]]
        self._spike_neurons = [neurons[keep]]
        return steps[keep].copy(), neurons[keep].copy()

    def spike_times(self) -> tuple[np.ndarray, np.ndarray]:
        """Every spike so far (see :meth:`spikes`): (time s float64, neuron int32)."""
        steps, neurons = self.spikes()
        return steps / self.sample_rate_hz, neurons

    def clear_spikes(self) -> None:
        """Forget the spike history (long runs that do not need it)."""
        self._spike_steps.clear()
        self._spike_neurons.clear()

    def _indices(self, neurons: Any) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(neurons))
        if idx.dtype == bool:
            if idx.shape != (self.n_neurons,):
                raise CultureError(f"a neuron mask must have shape ({self.n_neurons},)")
            idx = np.flatnonzero(idx)
        if idx.size and (
            not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= self.n_neurons
        ):
            raise CultureError(f"neuron indices must be integers in [0, {self.n_neurons})")
        return idx.astype(np.int64)

    def inject(self, neurons: Any, current_a: float | np.ndarray) -> None:
        """Hold a current (A, positive depolarises) into ``neurons`` until changed; 0 stops."""
        idx = self._indices(neurons)
        cur = np.broadcast_to(np.asarray(current_a, dtype=np.float64), idx.shape)
        if not np.all(np.isfinite(cur)) or np.any(np.abs(cur) > 1e-6):
            raise CultureError("injected current must be finite and within ±1 µA")
        self._user_current[idx] = cur
        self._drive_dirty = True

    def clamp(
        self, neurons: Any, voltage_v: float | np.ndarray, conductance_s: float = 1e-6
    ) -> None:
        """Clamp ``neurons`` towards ``voltage_v`` (V) through ``conductance_s`` (S).

        1 µS is about a hundred times the membrane's leak: the potential follows the
        command within a fraction of a percent, and spiking is suppressed. Use
        :meth:`release` to let go.
        """
        idx = self._indices(neurons)
        volt = np.broadcast_to(np.asarray(voltage_v, dtype=np.float64), idx.shape)
        if not np.all(np.isfinite(volt)) or np.any(np.abs(volt) > 0.2):
            raise CultureError("clamp voltage must be finite and within ±0.2 V")
        if not (math.isfinite(conductance_s) and conductance_s > 0):
            raise CultureError(f"clamp conductance must be positive, got {conductance_s}")
        self._user_g[idx] = conductance_s
        self._user_gv[idx] = conductance_s * volt
        self._drive_dirty = True

    def release(self, neurons: Any) -> None:
        """End any clamp on ``neurons``."""
        idx = self._indices(neurons)
        self._user_g[idx] = 0.0
        self._user_gv[idx] = 0.0
        self._drive_dirty = True

    def set_electrode_drive(
        self, current_a: np.ndarray, conductance_s: np.ndarray, conductance_v: np.ndarray
    ) -> None:
        """The electrodes' drive per neuron: current (A), clamp conductance (S) and g·V (A).

        Set by :class:`hil_sim.electrodes.ElectrodeArray`; adds to :meth:`inject`/:meth:`clamp`.
        """
        self._elec_current[:] = current_a
        self._elec_g[:] = conductance_s
        self._elec_gv[:] = conductance_v
        self._drive_dirty = True

    def membrane_potential(self) -> np.ndarray:
        """(N,) the current membrane potential (state), V."""
        return self._v.copy()

    # ---------------------------------------------------------------- truth
    def truth_arrays(self) -> dict[str, np.ndarray]:
        """Neuron and synapse ground truth (the culture's part of ``GroundTruth``)."""
        s = self.synapses
        return {
            "neuron_position_m": self.positions_m.astype(np.float64),
            "neuron_excitatory": self.excitatory.astype(bool),
            "synapse_pre": s.pre.astype(np.int32),
            "synapse_post": s.post.astype(np.int32),
            "synapse_weight_v": s.weight_v.astype(np.float32),
            "synapse_delay_s": s.delay_s.astype(np.float32),
            "synapse_kind": s.kind.astype(np.uint8),
        }

    def truth_attrs(self) -> dict[str, Any]:
        """Seed, model name and every parameter, as JSON-able scalars."""
        attrs = {f"culture_{k}": v for k, v in self.params.to_attrs().items()}
        attrs["seed"] = int(self.params.seed)
        attrs["model"] = MODEL_NAME
        attrs["n_synapses"] = int(self.synapses.pre.size)
        json.dumps(attrs)
        return attrs


__all__ = ["Culture", "CultureError", "CultureParams", "Synapses"]
