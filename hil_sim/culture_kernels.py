"""numba kernels for the emulated culture and electrode array (hot loops only, no policy).

Everything random here is *counter based*: a sample's random numbers are a hash of
(stream key, sample index, neuron or channel), so results never depend on how a
run is cut into calls. Gaussian numbers come from a 65 536-entry inverse-CDF
table indexed by hash bits; two entries summed and scaled by 1/sqrt(2) give a
unit-variance, near-Gaussian value with tails to about 5.9 sigma.

Units inside the kernels are SI (V, A, S, F, s); time is in steps of ``dt``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S16 = np.uint64(16)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S48 = np.uint64(48)
_MASK16 = np.uint64(0xFFFF)
_INV_SQRT2 = np.float32(0.7071067811865476)


def _normal_table(bits: int = 16) -> np.ndarray:
    """Inverse normal CDF at the centres of 2**bits equal-probability bins, unit variance."""
    p = (np.arange(2**bits, dtype=np.float64) + 0.5) / 2**bits
    table = ndtri(p)
    table /= np.sqrt(np.mean(table**2))
    return table.astype(np.float32)


NORMAL_TABLE = _normal_table()
"""(65536,) float32 inverse-CDF table used by the kernels' Gaussian generator."""

# Per-neuron parameter rows of the (N_PARAMS, N) matrix handed to the kernels.
P_DT_OVER_C = 0
P_GL = 1
P_EL = 2
P_VT = 3
P_DELTA_T = 4
P_A = 5
P_DT_OVER_TAU_W = 6
P_B = 7
P_V_RESET = 8
P_B_SLOW = 9
P_DECAY_SLOW = 10
P_NOISE_MEAN = 11
P_NOISE_KICK = 12
P_V_SPIKE = 13
P_V_PEAK = 14
N_PARAMS = 15


@njit(inline="always")
def mix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser: a 64-bit hash with full avalanche."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def stream_key(seed: int, stream: int) -> np.uint64:
    """The 64-bit key of random stream ``stream`` of ``seed`` (pure Python SplitMix64)."""
    mask = (1 << 64) - 1
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(stream) * 0xD1B54A32D192ED03 + 1) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return np.uint64(x ^ (x >> 31))


@njit(inline="always")
def _pair_normal(h: np.uint64, table: np.ndarray) -> tuple[float, float]:
    """Two independent unit normals from the four 16-bit fields of one hash."""
    a = table[np.intp(h & _MASK16)]
    b = table[np.intp((h >> _S16) & _MASK16)]
    c = table[np.intp((h >> _S32) & _MASK16)]
    d = table[np.intp(h >> _S48)]
    return (a + b) * _INV_SQRT2, (c + d) * _INV_SQRT2


@njit(cache=True)
def normals(key: np.uint64, first: np.int64, count: np.int64, table: np.ndarray) -> np.ndarray:
    """``count`` unit normals of stream ``key`` starting at counter ``first`` (for tests)."""
    out = np.empty(count, dtype=np.float64)
    for k in range(count):
        i = first + k
        h = mix64(key + np.uint64(i >> 1) * _GOLDEN)
        n0, n1 = _pair_normal(h, table)
        out[k] = n0 if (i & 1) == 0 else n1
    return out


@njit(inline="always")
def _membrane(
    v: float,
    i_in: float,
    g_clamp: float,
    gv_clamp: float,
    dt_over_c: float,
    gl: float,
    el: float,
    vt: float,
    delta_t: float,
    spiking: bool,
) -> float:
    """One semi-implicit AdEx membrane step (leak and clamp implicit, spike current explicit).

    ``spiking`` False drops the spike-initiation current (sodium channels inactivated
    under a holding clamp).
    """
    ex = 0.0
    if spiking:
        arg = (v - vt) / delta_t
        if arg > 10.0:
            arg = 10.0
        ex = gl * delta_t * math.exp(arg)
    return (v + dt_over_c * (gl * el + gv_clamp + ex + i_in)) / (1.0 + dt_over_c * (gl + g_clamp))


@njit(cache=True, fastmath=True)
def run_network(
    n_steps: np.int64,
    step0: np.int64,
    key: np.uint64,
    v: np.ndarray,
    w: np.ndarray,
    w_slow: np.ndarray,
    i_exc: np.ndarray,
    i_inh: np.ndarray,
    i_noise: np.ndarray,
    refractory: np.ndarray,
    prm: np.ndarray,
    noise_decay: float,
    decay_exc: float,
    decay_inh: float,
    template: np.ndarray,
    i_ext: np.ndarray,
    g_clamp: np.ndarray,
    gv_clamp: np.ndarray,
    out_ptr: np.ndarray,
    syn_post: np.ndarray,
    syn_current: np.ndarray,
    syn_delay: np.ndarray,
    inhibitory: np.ndarray,
    gap_a: np.ndarray,
    gap_b: np.ndarray,
    gap_g: np.ndarray,
    ring_exc: np.ndarray,
    ring_inh: np.ndarray,
    table: np.ndarray,
    out_v: np.ndarray,
    spike_step: np.ndarray,
    spike_neuron: np.ndarray,
    n_spikes0: np.int64,
) -> tuple[np.int64, np.int64]:
    """Advance the network ``n_steps`` from absolute step ``step0``; write V into ``out_v``.

    Spikes are appended to ``spike_step``/``spike_neuron`` from ``n_spikes0``; when the
    buffer could overflow during a step the kernel stops early. Returns (steps done,
    spikes in the buffer). ``refractory`` counts the action-potential template samples
    still to play for each neuron.
    """
    n = v.shape[0]
    cap = spike_step.shape[0]
    ring_mask = ring_exc.shape[0] - 1
    n_tmpl = template.shape[0]
    i_gap = np.zeros(n)
    n_sp = n_spikes0
    half = (n + 1) // 2
    for s in range(n_steps):
        if n_sp + n > cap:
            return s, n_sp
        step = step0 + s
        slot = step & ring_mask
        for j in range(n):
            i_exc[j] += ring_exc[slot, j]
            i_inh[j] += ring_inh[slot, j]
            ring_exc[slot, j] = 0.0
            ring_inh[slot, j] = 0.0
            i_gap[j] = 0.0
        for k in range(gap_a.shape[0]):
            a = gap_a[k]
            b = gap_b[k]
            cur = gap_g[k] * (v[b] - v[a])
            i_gap[a] += cur
            i_gap[b] -= cur
        base = key + np.uint64(step) * np.uint64(half) * _GOLDEN
        for jj in range(half):
            h = mix64(base + np.uint64(jj) * _GOLDEN)
            z0, z1 = _pair_normal(h, table)
            j0 = 2 * jj
            i_noise[j0] = (
                prm[P_NOISE_MEAN, j0]
                + (i_noise[j0] - prm[P_NOISE_MEAN, j0]) * (noise_decay)
                + prm[P_NOISE_KICK, j0] * z0
            )
            j1 = j0 + 1
            if j1 < n:
                i_noise[j1] = (
                    prm[P_NOISE_MEAN, j1]
                    + (i_noise[j1] - prm[P_NOISE_MEAN, j1]) * (noise_decay)
                    + prm[P_NOISE_KICK, j1] * z1
                )
        for j in range(n):
            gl = prm[P_GL, j]
            el = prm[P_EL, j]
            vj = v[j]
            if refractory[j] > 0:
                r = refractory[j]
                vt_r = prm[P_V_RESET, j]
                vj = vt_r + (prm[P_V_PEAK, j] - vt_r) * template[n_tmpl - r]
                r -= 1
                refractory[j] = r
                out_v[s, j] = vj
                if r == 0:
                    vj = vt_r
            else:
                i_in = i_exc[j] + i_inh[j] + i_noise[j] + i_gap[j] + i_ext[j] - w[j] - w_slow[j]
                spiking = g_clamp[j] < 5.0 * gl
                vj = _membrane(
                    vj,
                    i_in,
                    g_clamp[j],
                    gv_clamp[j],
                    prm[P_DT_OVER_C, j],
                    gl,
                    el,
                    prm[P_VT, j],
                    prm[P_DELTA_T, j],
                    spiking,
                )
                if spiking and vj >= prm[P_V_SPIKE, j]:
                    spike_step[n_sp] = step
                    spike_neuron[n_sp] = j
                    n_sp += 1
                    w[j] += prm[P_B, j]
                    w_slow[j] += prm[P_B_SLOW, j]
                    refractory[j] = n_tmpl - 1
                    vj = prm[P_V_PEAK, j]
                    for k in range(out_ptr[j], out_ptr[j + 1]):
                        target_slot = (step + syn_delay[k]) & ring_mask
                        if inhibitory[j]:
                            ring_inh[target_slot, syn_post[k]] += syn_current[k]
                        else:
                            ring_exc[target_slot, syn_post[k]] += syn_current[k]
                out_v[s, j] = vj
            w[j] += prm[P_DT_OVER_TAU_W, j] * (prm[P_A, j] * (v[j] - el) - w[j])
            w_slow[j] *= prm[P_DECAY_SLOW, j]
            i_exc[j] *= decay_exc
            i_inh[j] *= decay_inh
            v[j] = vj
    return n_steps, n_sp


@njit(cache=True, fastmath=True)
def probe_psp(
    prm: np.ndarray,
    post: np.ndarray,
    current: np.ndarray,
    decay: np.ndarray,
    n_steps: np.int64,
) -> tuple[np.ndarray, np.ndarray]:
    """Peak deflection (V, signed) and its step for one synaptic event per probe.

    Probe ``k`` is neuron ``post[k]`` (parameters from ``prm``) at rest, no noise,
    receiving at step 0 a synaptic current jump ``current[k]`` (A) that decays by
    ``decay[k]`` per step. The extremum is the maximum for a positive current and
    the minimum for a negative one; a probe that spikes reports the spike peak.
    """
    m = post.shape[0]
    peak = np.zeros(m)
    at = np.zeros(m, dtype=np.int64)
    for k in range(m):
        j = post[k]
        el = prm[P_EL, j]
        gl = prm[P_GL, j]
        v = el
        w = 0.0
        i_syn = current[k]
        sign = 1.0 if i_syn >= 0.0 else -1.0
        best = 0.0
        best_at = 0
        for s in range(n_steps):
            v_new = _membrane(
                v,
                i_syn - w,
                0.0,
                0.0,
                prm[P_DT_OVER_C, j],
                gl,
                el,
                prm[P_VT, j],
                prm[P_DELTA_T, j],
                True,
            )
            w += prm[P_DT_OVER_TAU_W, j] * (prm[P_A, j] * (v - el) - w)
            i_syn *= decay[k]
            if v_new >= prm[P_V_SPIKE, j]:
                best = prm[P_V_PEAK, j] - el
                best_at = s + 1
                break
            v = v_new
            dev = (v - el) * sign
            if dev > best:
                best = dev
                best_at = s
            elif s > best_at + 100:
                break
        peak[k] = best * sign
        at[k] = best_at
    return peak, at


@njit(cache=True, fastmath=True)
def mix_channels(
    v_block: np.ndarray,
    v_prev: np.ndarray,
    rest: np.ndarray,
    step0: np.int64,
    key: np.uint64,
    neuron: np.ndarray,
    gain_cc: np.ndarray,
    gain_ext: np.ndarray,
    gain_vc: np.ndarray,
    command_v: np.ndarray,
    noise_std: np.ndarray,
    alpha: np.ndarray,
    state: np.ndarray,
    table: np.ndarray,
    out: np.ndarray,
) -> None:
    """What every amplifier input sees for a block of samples (one-pole filtered).

    Per channel ``c`` with neuron ``n = neuron[c]`` (``N`` = none; the scratch row
    holds zeros there): ``x = gain_cc*(V-rest) + gain_ext*(V[t]-V[t-1]) +
    gain_vc*(command - V) + noise_std*xi``, then ``state += alpha*(x - state)`` and
    ``out = state``. ``gain_ext`` is per sample difference (V/V). Saturated channels
    have alpha 0 and their state at the rail. ``v_prev`` (N,) is the row before the
    block and is updated to the block's last row.
    """
    n_s = v_block.shape[0]
    n_n = v_block.shape[1]
    n_c = neuron.shape[0]
    half = n_c // 2
    dev = np.zeros(n_n + 1, dtype=np.float32)
    diff = np.zeros(n_n + 1, dtype=np.float32)
    vabs = np.zeros(n_n + 1, dtype=np.float32)
    for s in range(n_s):
        for j in range(n_n):
            x = v_block[s, j]
            dev[j] = x - rest[j]
            diff[j] = x - v_prev[j]
            vabs[j] = x
            v_prev[j] = x
        base = key + np.uint64(step0 + s) * np.uint64(half) * _GOLDEN
        for cc in range(half):
            h = mix64(base + np.uint64(cc) * _GOLDEN)
            z0, z1 = _pair_normal(h, table)
            c = 2 * cc
            j = neuron[c]
            x = (
                gain_cc[c] * dev[j]
                + gain_ext[c] * diff[j]
                + gain_vc[c] * (command_v[c] - vabs[j])
                + noise_std[c] * z0
            )
            state[c] += alpha[c] * (x - state[c])
            out[s, c] = state[c]
            c += 1
            j = neuron[c]
            x = (
                gain_cc[c] * dev[j]
                + gain_ext[c] * diff[j]
                + gain_vc[c] * (command_v[c] - vabs[j])
                + noise_std[c] * z1
            )
            state[c] += alpha[c] * (x - state[c])
            out[s, c] = state[c]
