"""Emulated culture + electrode array: how many emulated seconds per wall second, 4096 channels.

    .venv/bin/python bench/culture_realtime.py [--quick] [--repeats N] [--plot PNG]

Side by side in one run (interleaved repeats, medians quoted):

1. ``numba``: the real thing — ``ElectrodeArray(Culture(CultureParams())).read(n)`` for the
   default preset (2000 neurons, ~70 000 synapses), every coupled electrode
   electroporated, 4096 channels × 10 kHz out.
2. ``numba, culture only``: ``Culture.advance`` alone (no electrodes).
3. ``naive NumPy``: the same model stepped by a Python loop over samples, NumPy over
   neurons (``np.exp``, ``rng.standard_normal`` per sample, ``np.add.at`` spike
   delivery), electrodes per 128-sample block with ``rng.standard_normal`` noise and
   the low-pass as a loop over samples, NumPy over channels.

Every implementation is read in 100 ms chunks. numba's compile time is excluded
(kernels are cached; a warm-up read runs first). The real-time factor is emulated
seconds per wall second (>= 1 keeps up with the instrument); CPU seconds are shown
too because the machine is shared. ``--plot`` draws a raster of the default culture
and a few electrode traces.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil_sim import culture_kernels as kern  # noqa: E402
from hil_sim.culture import Culture, CultureParams  # noqa: E402
from hil_sim.electrodes import N_CHANNELS, ElectrodeArray  # noqa: E402

BLOCK = 128
CHUNK = 1000
"""Samples per read (100 ms), as the board emulator pulls them; one huge read would time
page faults of a GB-sized array instead of the emulator."""


class NaiveCultureArray:
    """The same culture and electrodes, stepped with plain NumPy (the baseline).

    Reads the built network out of a :class:`Culture` and an :class:`ElectrodeArray`
    so both run exactly the same model; only the random numbers differ.
    """

    def __init__(self, culture: Culture, array: ElectrodeArray) -> None:
        self.c = c = culture
        self.a = array
        n = c.n_neurons
        self.rng = np.random.default_rng(0)
        self.prm = c._prm.copy()
        self.v = c._v.copy()
        self.w = np.zeros(n)
        self.w_slow = np.zeros(n)
        self.i_exc = np.zeros(n)
        self.i_slow = np.zeros(n)
        self.i_inh = np.zeros(n)
        self.i_noise = c._i_noise.copy()
        self.ref = np.zeros(n, dtype=np.int64)
        self.ring_e = np.zeros_like(c._ring_exc)
        self.ring_i = np.zeros_like(c._ring_inh)
        self.mask = self.ring_e.shape[0] - 1
        self.step = 0
        array._update_access()
        array._refresh_gains()
        self.state = array._state.astype(np.float64).copy()
        self.prev_dev = array._prev_dev.astype(np.float64).copy()

    def advance(self, n_samples: int) -> np.ndarray:
        c, p = self.c, self.prm
        out = np.empty((n_samples, c.n_neurons), dtype=np.float32)
        tmpl = c._template
        n_tmpl = tmpl.size
        i_ext, g_cl, gv_cl = c._drive
        spiking = (g_cl < 5.0 * p[kern.P_GL]).astype(np.float64)
        for s in range(n_samples):
            slot = self.step & self.mask
            arrived = self.ring_e[slot].copy()
            self.ring_e[slot] = 0.0
            self.i_exc += arrived
            self.i_slow += c._slow_ratio * arrived
            self.i_inh += self.ring_i[slot]
            self.ring_i[slot] = 0.0
            i_gap = np.zeros(c.n_neurons)
            cur = c._gap_g * (self.v[c._gap_b] - self.v[c._gap_a])
            np.add.at(i_gap, c._gap_a, cur)
            np.add.at(i_gap, c._gap_b, -cur)
            mean = p[kern.P_NOISE_MEAN]
            self.i_noise = (
                mean
                + (self.i_noise - mean) * c._noise_decay
                + p[kern.P_NOISE_KICK] * self.rng.standard_normal(c.n_neurons)
            )
            i_in = (
                self.i_exc + self.i_slow + self.i_inh + self.i_noise + i_gap + i_ext
                - self.w - self.w_slow
            )  # fmt: skip
            gl, el, dlt = p[kern.P_GL], p[kern.P_EL], p[kern.P_DELTA_T]
            ex = spiking * gl * dlt * np.exp(np.clip((self.v - p[kern.P_VT]) / dlt, -20, 10))
            v_new = (self.v + p[kern.P_DT_OVER_C] * (gl * el + gv_cl + ex + i_in)) / (
                1.0 + p[kern.P_DT_OVER_C] * (gl + g_cl)
            )
            self.w += p[kern.P_DT_OVER_TAU_W] * (p[kern.P_A] * (self.v - el) - self.w)
            self.w_slow *= p[kern.P_DECAY_SLOW]
            self.i_exc *= c._decay_exc
            self.i_slow *= c._decay_slow
            self.i_inh *= c._decay_inh
            in_ap = self.ref > 0
            reset = p[kern.P_V_RESET]
            shape = tmpl[np.where(in_ap, n_tmpl - self.ref, 0)]
            v_ap = reset + (p[kern.P_V_PEAK] - reset) * shape
            fired = ~in_ap & (spiking > 0) & (v_new >= p[kern.P_V_SPIKE])
            self.ref = np.where(in_ap, self.ref - 1, 0)
            v_out = np.where(in_ap, v_ap, v_new)
            self.v = np.where(in_ap & (self.ref == 0), reset, v_out)
            idx = np.flatnonzero(fired)
            if idx.size:
                self.w[idx] += p[kern.P_B, idx]
                self.w_slow[idx] += p[kern.P_B_SLOW, idx]
                self.ref[idx] = n_tmpl - 1
                self.v[idx] = p[kern.P_V_PEAK, idx]
                v_out[idx] = self.v[idx]
                for j in idx:
                    k = slice(c._out_ptr[j], c._out_ptr[j + 1])
                    ring = self.ring_i if c._inhibitory[j] else self.ring_e
                    rows = (self.step + c._syn_delay[k]) & self.mask
                    np.add.at(ring, (rows, c._syn_post[k]), c._syn_current[k])
            out[s] = v_out
            self.step += 1
        return out

    def read(self, n_samples: int) -> np.ndarray:
        a = self.a
        out = np.empty((n_samples, N_CHANNELS), dtype=np.float32)
        alpha = a._alpha_eff.astype(np.float64)
        for start in range(0, n_samples, BLOCK):
            m = min(BLOCK, n_samples - start)
            v = self.advance(m)
            dev = np.concatenate([v - a._rest, np.zeros((m, 1), np.float32)], axis=1)
            d = dev[:, a._neuron_ext].astype(np.float64)
            prev = np.vstack([self.prev_dev[None, :], d[:-1]])
            self.prev_dev = d[-1].copy()
            sig = a._gain_v * d + a._gain_dv * (d - prev) + a._offset
            x = sig + a._noise_std * self.rng.standard_normal((m, N_CHANNELS))
            for t in range(m):  # one-pole low-pass, per-channel corner
                self.state += alpha * (x[t] - self.state)
                out[start + t] = self.state
        return out


def build() -> tuple[Culture, ElectrodeArray]:
    culture = Culture(CultureParams())
    array = ElectrodeArray(culture)
    array.electroporate(np.arange(N_CHANNELS), 3.0, 1e-3)
    return culture, array


def timed(fn, n: int, chunk: int = CHUNK) -> tuple[float, float]:
    """Wall and CPU seconds to produce ``n`` samples in reads of ``chunk`` (as a board does)."""
    w0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, chunk):
        fn(min(chunk, n - start))
    return time.perf_counter() - w0, time.process_time() - c0


def plot(path: Path, seconds: float) -> None:
    """Raster, population rate, electrode traces and a zoom on one intracellular trace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    culture, array = build()
    array.read(1000)  # let the electroporation artifact recover
    culture.clear_spikes()
    t0 = culture.time_s
    x = array.read(int(seconds * culture.sample_rate_hz))
    t_s, neuron = culture.spike_times()
    t_s = t_s - t0
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), height_ratios=[3, 1, 2, 2])
    axes[0].plot(t_s, neuron, ",k", alpha=0.5)
    axes[0].set_ylabel("neuron")
    rate = t_s.size / culture.n_neurons / seconds
    axes[0].set_title(f"default culture (seed 1), {rate:.1f} Hz mean; electrodes after one pulse")
    bins = np.arange(0, seconds + 1e-9, 0.01)
    axes[1].plot(bins[:-1], np.histogram(t_s, bins)[0] / culture.n_neurons / 0.01, "k", lw=0.7)
    axes[1].set_ylabel("rate, Hz/neuron")
    axes[1].sharex(axes[0])
    acc = array.access()
    chans = np.flatnonzero(acc > 0)[::400][:5]
    tt = np.arange(x.shape[0]) / culture.sample_rate_hz
    for k, ch in enumerate(chans):
        axes[2].plot(tt, x[:, ch] * 1e3 + 40 * k, lw=0.5)
    axes[2].set_ylabel("5 electrodes, mV (offset)")
    axes[2].sharex(axes[0])
    axes[2].set_xlabel("time, s")
    # zoom: 1 s of the first channel, where subthreshold PSPs and spikes show
    ch = chans[0]
    zoom = slice(0, int(1.0 * culture.sample_rate_hz))
    axes[3].plot(tt[zoom], x[zoom, ch] * 1e3, lw=0.6, color="C0")
    axes[3].set_ylabel(f"channel {ch}, mV")
    axes[3].set_xlabel("time, s (first second)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (~1 min)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="raster + traces PNG")
    args = parser.parse_args()
    fast_s = 1.0 if args.quick else 5.0
    naive_s = 0.05 if args.quick else 0.3
    repeats = args.repeats or (3 if args.quick else 5)
    fs = 10_000

    _, array = build()
    array.read(fs // 10)  # warm-up: loads the cached kernels, settles the first chunk
    alone = Culture(CultureParams())
    alone.advance(fs // 10)
    naive = NaiveCultureArray(*build())
    naive.read(BLOCK)

    runs: dict[str, list[tuple[float, float, float]]] = {
        "numba: culture + electrodes": [],
        "numba: culture only": [],
        "naive NumPy: culture + electrodes": [],
    }
    for _ in tqdm(range(repeats), desc="interleaved repeats", unit="round"):
        n = int(fast_s * fs)
        runs["numba: culture + electrodes"].append((fast_s, *timed(array.read, n)))
        runs["numba: culture only"].append((fast_s, *timed(alone.advance, n)))
        n = int(naive_s * fs)
        runs["naive NumPy: culture + electrodes"].append((naive_s, *timed(naive.read, n)))

    naive_rt = statistics.median(e / w for e, w, _ in runs["naive NumPy: culture + electrodes"])
    print()
    print("4096 channels x 10 kHz, default culture (2000 neurons, ~70 000 synapses);")
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"medians of {repeats} interleaved repeats; machine load average {load}")
    header = (
        f"{'implementation':36} {'emulated s':>10} {'wall s':>8} {'CPU s':>8} "
        f"{'x real time':>11} {'x real (CPU)':>12} {'vs naive':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, rows in runs.items():
        emu = rows[0][0]
        wall = statistics.median(w for _, w, _ in rows)
        cpu = statistics.median(c for _, _, c in rows)
        rt = statistics.median(e / w for e, w, _ in rows)
        rt_cpu = statistics.median(e / c for e, _, c in rows)
        print(
            f"{name:36} {emu:10.2f} {wall:8.3f} {cpu:8.3f} {rt:11.2f} {rt_cpu:12.2f} "
            f"{rt / naive_rt:9.1f}"
        )
    print()
    print("x real time = emulated seconds per wall second (>= 1 keeps up with the chip;")
    print("the board adds quantisation and framing on top, so >= 2 is the target here).")
    if args.plot:
        plot(args.plot, 2.0 if args.quick else 10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
