"""numba kernels for the emulated culture and electrode array (hot loops only, no policy).

Everything random here is *counter based*: a sample's random numbers are a hash
(SplitMix64) of (stream key, sample index, neuron or channel), so results never
depend on how a run is cut into calls. A Gaussian number takes the four 16-bit
fields of one hash as uniforms, sums them (Irwin–Hall, n = 4) and maps the sum
through an odd degree-9 polynomial fitted to the normal quantile function: unit
variance, kurtosis 2.999, tails to 5.1 sigma, and no table look-up, so the loops
vectorise (AVX-512 has no cheap gather on this machine's cost model).

Hot loops avoid branches and touch few arrays each, so LLVM vectorises them
(``error_model="numpy"`` drops the division-by-zero checks that would stop it).
Units inside the kernels are SI (V, A, S, F, s); time is in steps of ``dt``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
# x = (sum of four 16-bit fields - 2 * 65535) * sqrt(3) / 65536: unit-variance Irwin-Hall
_IH_OFFSET = np.float32(2 * 65535)
_IH_SCALE = np.float32(3.0**0.5 / 65536.0)
# odd polynomial g(x) = x (c0 + c1 x^2 + ... + c4 x^8) ~ Phi^-1(F_IH4(x)), fitted on |x| < 3.2
_G0 = np.float32(9.62018114e-01)
_G1 = np.float32(1.01030774e-02)
_G2 = np.float32(1.29923327e-03)
_G3 = np.float32(-2.62234853e-04)
_G4 = np.float32(3.17404421e-05)

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
def _normal(h: np.uint64) -> np.float32:
    """A unit normal (float32) from the four 16-bit fields of one hash."""
    total = (
        np.float32(h & _MASK16)
        + np.float32((h >> _S16) & _MASK16)
        + np.float32((h >> _S32) & _MASK16)
        + np.float32(h >> _S48)
    )
    x = (total - _IH_OFFSET) * _IH_SCALE
    x2 = x * x
    return x * (_G0 + x2 * (_G1 + x2 * (_G2 + x2 * (_G3 + x2 * _G4))))


@njit(cache=True)
def normals(key: np.uint64, first: np.int64, count: np.int64) -> np.ndarray:
    """Unit normals number ``first`` .. ``first + count - 1`` of stream ``key`` (float32).

    The kernels draw normal ``step * width + index`` of their stream for neuron or
    channel ``index`` at sample ``step``.
    """
    out = np.empty(count, dtype=np.float32)
    for k in range(count):
        out[k] = _normal(mix64(key + np.uint64(first + k) * _GOLDEN))
    return out


@njit(inline="always")
def fast_exp(x: float) -> float:
    """exp(x) for x clamped to [-20, 10], relative error < 3e-6, branch free (vectorises).

    exp(x) = (exp(x/32))**32 with exp(x/32) from its degree-8 Taylor polynomial.
    """
    x = min(max(x, -20.0), 10.0)
    y = x * 0.03125
    p = 1.0 + y * (
        1.0
        + y
        * (
            0.5
            + y
            * (
                1.0 / 6.0
                + y
                * (
                    1.0 / 24.0
                    + y * (1.0 / 120.0 + y * (1.0 / 720.0 + y * (1.0 / 5040.0 + y / 40320.0)))
                )
            )
        )
    )
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


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
    spiking: float,
) -> float:
    """One semi-implicit AdEx membrane step (leak and clamp implicit, spike current explicit).

    ``spiking`` 0.0 drops the spike-initiation current (sodium channels inactivated
    under a holding clamp); 1.0 keeps it.
    """
    ex = spiking * gl * delta_t * fast_exp((v - vt) / delta_t)
    return (v + dt_over_c * (gl * el + gv_clamp + ex + i_in)) / (1.0 + dt_over_c * (gl + g_clamp))


@njit(cache=True, fastmath=True, error_model="numpy")
def run_network(
    n_steps: np.int64,
    step0: np.int64,
    key: np.uint64,
    v: np.ndarray,
    w: np.ndarray,
    w_slow: np.ndarray,
    i_exc: np.ndarray,
    i_slow: np.ndarray,
    i_inh: np.ndarray,
    i_noise: np.ndarray,
    refractory: np.ndarray,
    prm: np.ndarray,
    noise_decay: float,
    decay_exc: float,
    slow_ratio: float,
    decay_slow: float,
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
    out_v: np.ndarray,
    spike_step: np.ndarray,
    spike_neuron: np.ndarray,
    n_spikes0: np.int64,
) -> tuple[np.int64, np.int64]:
    """Advance the network ``n_steps`` from absolute step ``step0``; write V into ``out_v``.

    Spikes are appended to ``spike_step``/``spike_neuron`` from ``n_spikes0``; when the
    buffer could overflow during a step the kernel stops early. Returns (steps done,
    spikes in the buffer). ``refractory`` counts the action-potential template samples
    still to play for each neuron. The per-neuron loop is branch free so it vectorises;
    neurons inside an action potential and new spikes are handled in scalar passes.
    """
    n = v.shape[0]
    cap = spike_step.shape[0]
    ring_mask = ring_exc.shape[0] - 1
    n_tmpl = template.shape[0]
    i_tot = np.zeros(n)
    noise_mean = prm[P_NOISE_MEAN].copy()
    noise_kick = prm[P_NOISE_KICK].copy()
    n_words = (n + 7) // 8
    fired = np.zeros(8 * n_words, dtype=np.bool_)
    fired_words = fired.view(np.uint64)
    n_sp = n_spikes0
    spiking = np.empty(n)
    active = np.empty(n, dtype=np.int64)
    n_active = 0
    for j in range(n):
        spiking[j] = 1.0 if g_clamp[j] < 5.0 * prm[P_GL, j] else 0.0
        if refractory[j] > 0:
            active[n_active] = j
            n_active += 1
    for s in range(n_steps):
        if n_sp + n > cap:
            return s, n_sp
        step = step0 + s
        slot = step & ring_mask
        row_e = ring_exc[slot]
        row_i = ring_inh[slot]
        # three short branch-free passes (few arrays each, so each vectorises)
        for j in range(n):
            arrived = row_e[j]
            i_e = i_exc[j] + arrived
            i_sl = i_slow[j] + slow_ratio * arrived
            i_i = i_inh[j] + row_i[j]
            row_e[j] = 0.0
            row_i[j] = 0.0
            i_tot[j] = i_e + i_sl + i_i + i_ext[j]
            i_exc[j] = i_e * decay_exc
            i_slow[j] = i_sl * decay_slow
            i_inh[j] = i_i * decay_inh
        for k in range(gap_a.shape[0]):
            a = gap_a[k]
            b = gap_b[k]
            cur = gap_g[k] * (v[b] - v[a])
            i_tot[a] += cur
            i_tot[b] -= cur
        base = key + np.uint64(step) * np.uint64(n) * _GOLDEN
        for j in range(n):
            z = _normal(mix64(base + np.uint64(j) * _GOLDEN))
            mean = noise_mean[j]
            i_nz = mean + (i_noise[j] - mean) * noise_decay + noise_kick[j] * z
            i_noise[j] = i_nz
            i_tot[j] += i_nz
        out_row = out_v[s]
        for j in range(n):
            gl = prm[P_GL, j]
            el = prm[P_EL, j]
            v_old = v[j]
            v_new = _membrane(
                v_old,
                i_tot[j] - w[j] - w_slow[j],
                g_clamp[j],
                gv_clamp[j],
                prm[P_DT_OVER_C, j],
                gl,
                el,
                prm[P_VT, j],
                prm[P_DELTA_T, j],
                spiking[j],
            )
            fired[j] = (spiking[j] > 0.0) & (v_new >= prm[P_V_SPIKE, j])
            w[j] += prm[P_DT_OVER_TAU_W, j] * (prm[P_A, j] * (v_old - el) - w[j])
            w_slow[j] *= prm[P_DECAY_SLOW, j]
            v[j] = v_new
            out_row[j] = v_new
        # neurons inside an action potential play the template instead
        kept = 0
        for q in range(n_active):
            j = active[q]
            r = refractory[j]
            v_reset = prm[P_V_RESET, j]
            v_tmpl = v_reset + (prm[P_V_PEAK, j] - v_reset) * template[n_tmpl - r]
            out_v[s, j] = v_tmpl
            fired[j] = False
            r -= 1
            refractory[j] = r
            if r > 0:
                v[j] = v_tmpl
                active[kept] = j
                kept += 1
            else:
                v[j] = v_reset
        n_active = kept
        for word in range(n_words):
            if fired_words[word] == 0:
                continue
            for j in range(8 * word, 8 * word + 8):
                if not fired[j]:
                    continue
                spike_step[n_sp] = step
                spike_neuron[n_sp] = j
                n_sp += 1
                w[j] += prm[P_B, j]
                w_slow[j] += prm[P_B_SLOW, j]
                refractory[j] = n_tmpl - 1
                active[n_active] = j
                n_active += 1
                v[j] = prm[P_V_PEAK, j]
                out_v[s, j] = v[j]
                ring = ring_inh if inhibitory[j] else ring_exc
                for k in range(out_ptr[j], out_ptr[j + 1]):
                    ring[(step + syn_delay[k]) & ring_mask, syn_post[k]] += syn_current[k]
    return n_steps, n_sp


@njit(cache=True, fastmath=True, error_model="numpy")
def probe_psp(
    prm: np.ndarray,
    post: np.ndarray,
    current: np.ndarray,
    decay: np.ndarray,
    slow_ratio: np.ndarray,
    decay_slow: float,
    n_steps: np.int64,
) -> tuple[np.ndarray, np.ndarray]:
    """Peak deflection (V, signed) and its step for one synaptic event per probe.

    Probe ``k`` is neuron ``post[k]`` (parameters from ``prm``) at rest, no noise,
    receiving at step 0 a synaptic current jump ``current[k]`` (A) that decays by
    ``decay[k]`` per step, plus a slow component ``slow_ratio[k] * current[k]`` that
    decays by ``decay_slow`` per step (as in :func:`run_network`). The extremum is the
    maximum for a positive current and the minimum for a negative one; a probe that
    spikes reports the spike peak.
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
        i_sl = slow_ratio[k] * current[k]
        sign = 1.0 if i_syn >= 0.0 else -1.0
        best = 0.0
        best_at = 0
        for s in range(n_steps):
            v_new = _membrane(
                v,
                i_syn + i_sl - w,
                0.0,
                0.0,
                prm[P_DT_OVER_C, j],
                gl,
                el,
                prm[P_VT, j],
                prm[P_DELTA_T, j],
                1.0,
            )
            w += prm[P_DT_OVER_TAU_W, j] * (prm[P_A, j] * (v - el) - w)
            i_syn *= decay[k]
            i_sl *= decay_slow
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


@njit(cache=True, fastmath=True, error_model="numpy")
def mix_channels(
    v_block: np.ndarray,
    rest: np.ndarray,
    step0: np.int64,
    key: np.uint64,
    neuron: np.ndarray,
    gain_v: np.ndarray,
    gain_dv: np.ndarray,
    offset: np.ndarray,
    prev_dev: np.ndarray,
    noise_std: np.ndarray,
    alpha: np.ndarray,
    state: np.ndarray,
    artifact: np.ndarray,
    artifact_decay: float,
    out: np.ndarray,
) -> None:
    """What every amplifier input sees for a block of samples (one-pole filtered).

    Per channel ``c`` with neuron ``n = neuron[c]`` (``N`` = none: a scratch entry
    that stays 0) and ``d = V[n] - rest[n]``: ``x = gain_v*d + gain_dv*(d - d_prev) +
    offset + noise_std*xi``, then ``state += alpha*(x - state)``, ``out = state``.
    Current clamp: ``gain_v`` = coupling × access, ``gain_dv`` the extracellular
    (derivative) pick-up. Voltage clamp: ``gain_v = -g`` and ``offset = g*(command -
    rest)`` give the clamp current ``g*(command - V)``. Saturated channels have
    ``alpha`` 0 and their state at the rail. ``prev_dev`` (C,) carries d between blocks.
    ``artifact`` (C,) is a pulse artifact added to ``x`` that decays by ``artifact_decay``
    per sample.
    """
    n_s = v_block.shape[0]
    n_n = v_block.shape[1]
    n_c = neuron.shape[0]
    dev = np.zeros(n_n + 1, dtype=np.float32)
    sig = np.empty(n_c, dtype=np.float32)
    for s in range(n_s):
        row = v_block[s]
        for j in range(n_n):
            dev[j] = row[j] - rest[j]
        for c in range(n_c):
            d = dev[neuron[c]]
            sig[c] = gain_v[c] * d + gain_dv[c] * (d - prev_dev[c]) + offset[c]
            prev_dev[c] = d
        base = key + np.uint64(step0 + s) * np.uint64(n_c) * _GOLDEN
        orow = out[s]
        for c in range(n_c):
            x = sig[c] + artifact[c] + noise_std[c] * _normal(mix64(base + np.uint64(c) * _GOLDEN))
            artifact[c] *= artifact_decay
            y = state[c] + alpha[c] * (x - state[c])
            state[c] = y
            orow[c] = y
