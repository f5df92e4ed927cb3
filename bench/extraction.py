"""Connectivity extraction: our pipeline vs the naive per-pair loop vs the memory floor.

    .venv/bin/python bench/extraction.py [--quick] [--channels N] [--seconds S]
    .venv/bin/python bench/extraction.py --culture 600 [--figures docs/img]

**Speed** (default): a synthetic array — every channel one neuron (no merging: the worst
case, 4096 × 4096 pairs), Poisson ~5 Hz, Ornstein–Uhlenbeck membrane noise, action
potentials, after-hyperpolarisations and ten planted 1 mV synapses per neuron, 10 kHz
int16 codes — is extracted three ways, side by side, in one run:

- **ours**: :func:`instrument.extract.pipeline.extract`, the whole run (raw pass, units,
  all-pairs screen, surrogates, averages), and its all-pairs kernel alone: the median of
  three runs (the first, which also faults in the process's fresh memory, is printed);
- **naive**: the per-pair loop a first version would write — for every (pre, post) pair,
  the dense ±20 ms average at 10 kHz around every presynaptic spike (numpy gather + mean
  per pair, post columns extracted once per post). Timed on a sample of pairs and
  extrapolated to all pairs (the output says how many);
- **floor**: what the chosen algorithm must move at least once, at this machine's
  measured speeds: the raw int16 codes read once and the decimated traces written and
  read once, at the STREAM-like copy bandwidth (two threads, arrays far larger than the
  caches); and every accumulator update of the all-pairs kernel (read a prefix-sum row,
  read-modify-write an accumulator row, 64 floats) at the rate of the same update on
  cache-resident data; and every trigger evaluation of the candidate stage (usable
  triggers × (1 + surrogates) per candidate pair) at the rate of the same kernel, with the
  run's mix of pairs per post unit and triggers per second, on cache-resident data. Floor
  time = DRAM bytes / copy bandwidth + updates / update rate + evaluations / their rate.

**Accuracy** (``--culture S``): S seconds of the emulated culture (default preset),
generated while it is extracted, scored against its ground truth; ``--figures DIR``
writes the average-PSP and connectivity-matrix figures there.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instrument.extract import averaging
from instrument.extract.params import load_params
from instrument.extract.pipeline import extract
from instrument.recording import Recording

FS = 10_000.0
LSB_V = 5e-6
EXTRACT_RUNS = 3
"""Runs of our extraction on the speed workload; the median one is reported."""


# ---------------------------------------------------------------------------- workload


@numba.njit(cache=True, parallel=True)
def _generate(
    codes: np.ndarray,
    spike_ptr: np.ndarray,
    spike_t: np.ndarray,
    ev_ptr: np.ndarray,
    ev_t: np.ndarray,
    gain: np.ndarray,
    psp_v: float,
    seed: int,
) -> None:
    n, n_ch = codes.shape
    dt = 1.0 / FS
    a_ou = math.exp(-dt / 10e-3)
    k_ou = 1e-3 * math.sqrt(1 - a_ou * a_ou)
    ar, ad, aa = math.exp(-dt / 1e-3), math.exp(-dt / 8e-3), math.exp(-dt / 20e-3)
    norm = 1.0 / (math.exp(-2.4e-3 / 8e-3) - math.exp(-2.4e-3 / 1e-3))
    ap = np.array([0.3, 1.0, 0.85, 0.6, 0.35, 0.15, 0.02, -0.1, -0.15, -0.15])
    block = 2048
    n_threads = numba.get_num_threads()
    state = np.zeros((n_ch, 5))
    pos = np.zeros((n_ch, 3), dtype=np.int64)
    for c in range(n_ch):
        pos[c, 0] = spike_ptr[c]
        pos[c, 1] = ev_ptr[c]
    for w in numba.prange(n_threads):
        np.random.seed(seed + w)
        for t0 in range(0, n, block):
            t1 = min(n, t0 + block)
            for c in range(w, n_ch, n_threads):
                ou, fast, slow, ahp = state[c, 0], state[c, 1], state[c, 2], state[c, 3]
                si, ei, ap_left = pos[c, 0], pos[c, 1], pos[c, 2]
                se, ee = spike_ptr[c + 1], ev_ptr[c + 1]
                g = gain[c]
                for t in range(t0, t1):
                    ou = ou * a_ou + k_ou * np.random.standard_normal()
                    fast *= ar
                    slow *= ad
                    ahp *= aa
                    while ei < ee and ev_t[ei] <= t:
                        fast += psp_v * norm
                        slow += psp_v * norm
                        ei += 1
                    v = ou + slow - fast - ahp
                    if si < se and spike_t[si] == t:
                        ap_left = ap.size
                        ahp += 6e-3
                        si += 1
                    if ap_left > 0:
                        v += 0.08 * ap[ap.size - ap_left]
                        ap_left -= 1
                    x = (g * v + 15e-6 * np.random.standard_normal()) / LSB_V
                    codes[t, c] = np.int16(min(32767.0, max(-32767.0, round(x))))
                state[c, 0], state[c, 1], state[c, 2], state[c, 3] = ou, fast, slow, ahp
                pos[c, 0], pos[c, 1], pos[c, 2] = si, ei, ap_left


def synthetic_array(n_channels: int, seconds: float, rate_hz: float = 5.0, seed: int = 1):
    """(recording, spike trains) of the speed workload (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * FS)
    trains = []
    for _ in range(n_channels):
        isi = np.maximum(rng.exponential(FS / rate_hz, int(seconds * rate_hz * 2) + 20), 40)
        t = np.cumsum(isi).astype(np.int64)
        trains.append(t[(t > 300) & (t < n - 300)])
    # ten planted outputs per neuron, 1 mV, 2 ms delay
    posts: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for i in range(n_channels):
        for j in rng.choice(n_channels, 10, replace=False):
            if j != i:
                posts[j].append(trains[i] + int(2e-3 * FS))
    ev = [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in posts]
    spike_ptr = np.concatenate([[0], np.cumsum([t.size for t in trains])]).astype(np.int64)
    ev_ptr = np.concatenate([[0], np.cumsum([e.size for e in ev])]).astype(np.int64)
    codes = np.empty((n, n_channels), dtype=np.int16)
    gain = rng.uniform(0.3, 0.8, n_channels)
    _generate(codes, spike_ptr, np.concatenate(trains), ev_ptr, np.concatenate(ev), gain,
              1e-3, seed)  # fmt: skip
    side = math.ceil(math.sqrt(n_channels))
    idx = np.arange(n_channels)
    positions = np.stack([(idx % side + 0.5) * 20e-6, (idx // side + 0.5) * 20e-6], axis=1)
    # neurons far apart: every channel is its own unit (the all-pairs worst case)
    positions *= 10.0
    rec = Recording(
        traces=codes, sample_rate_hz=FS, gain_v=np.full(n_channels, LSB_V),
        offset_v=np.zeros(n_channels), positions_m=positions, source="synthetic",
    )  # fmt: skip
    return rec, trains


# ---------------------------------------------------------------------------- naive


def naive_per_pair(rec: Recording, trains: list[np.ndarray], n_pairs: int, seed: int = 0):
    """Seconds per pair of the dense ±20 ms per-pair average at 10 kHz (and per post
    column extraction), measured on ``n_pairs`` random pairs."""
    rng = np.random.default_rng(seed)
    n_ch = rec.n_channels
    lags = np.arange(-200, 201)
    posts = rng.choice(n_ch, max(1, n_pairs // 16), replace=False)
    t0 = time.perf_counter()
    cols = {
        int(j): np.asarray(rec.traces[:, j]).astype(np.float32) * np.float32(rec.gain_v[j])
        for j in posts
    }
    t_cols = (time.perf_counter() - t0) / posts.size
    pairs = [(int(rng.integers(n_ch)), int(j)) for j in posts for _ in range(16)][:n_pairs]
    n = rec.n_samples
    t0 = time.perf_counter()
    out = 0.0
    for i, j in pairs:
        s = trains[i]
        s = s[(s >= 200) & (s < n - 201)]
        avg = cols[j][s[:, None] + lags[None, :]].mean(axis=0)
        out += float(avg[0])
    t_pair = (time.perf_counter() - t0) / len(pairs)
    return t_pair, t_cols, len(pairs)


# ---------------------------------------------------------------------------- floor


@numba.njit(cache=True, parallel=True)
def _copy(a: np.ndarray, b: np.ndarray) -> None:
    n = a.size
    k = numba.get_num_threads()
    for w in numba.prange(k):
        lo = w * n // k
        hi = (w + 1) * n // k
        for i in range(lo, hi):
            b[i] = a[i]


def _median_time(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``run`` (already warmed up), s."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def copy_bandwidth(mbytes: int = 512, repeats: int = 5) -> float:
    """STREAM-like copy, two threads, arrays far beyond the caches: bytes moved per s."""
    a = np.ones(mbytes * 1024 * 1024 // 4, dtype=np.float32)
    b = np.zeros_like(a)
    _copy(a, b)
    return 2 * a.nbytes / _median_time(lambda: _copy(a, b), repeats)


def update_rate(repeats: int = 5) -> float:
    """Accumulator updates per s of the all-pairs kernel's own inner loop on data that sits
    in L1/L2 (the same instruction stream, no cache misses)."""
    width = averaging.WIDTH
    bnd = np.array([-10, -1, 2, 5, 9, 14, 20], dtype=np.int64)
    n_blocks = 2 * numba.get_num_threads()
    q = np.random.default_rng(0).standard_normal((n_blocks, 64, width)).astype(np.float32)
    acc = np.zeros((n_blocks, 4, bnd.size, width), dtype=np.float32)
    n_spikes = 200_000
    pre = (np.arange(n_spikes) % 4).astype(np.int64)
    row = (20 + np.arange(n_spikes) % 16).astype(np.int64)
    averaging.screen_kernel(q, acc, pre[:100], row[:100], bnd)
    seconds = _median_time(lambda: averaging.screen_kernel(q, acc, pre, row, bnd), repeats)
    return n_spikes * n_blocks * width * bnd.size / seconds


def pair_evaluation_rate(per_post: int, triggers_per_s: float, repeats: int = 5) -> float:
    """Trigger evaluations per s of the candidate stage's own kernel
    (:func:`averaging.pair_statistics`: default boundaries, windows, surrogates and segment)
    with the run's own mix — ``per_post`` candidate pairs per post unit, presynaptic
    triggers at ``triggers_per_s`` — on traces one segment long (4.1 s): everything a post
    unit reads sits in L1/L2, so the measured rate has no cache misses. 64 post units per
    thread, so a run lasts tens of ms (a 1 ms run measures the threads' start-up)."""
    params = load_params()
    bnd = np.asarray(params.boundaries(), dtype=np.int64)
    windows = np.asarray(params.windows(), dtype=np.int64)
    length = averaging._PAIR_SEGMENT
    n_post = 64 * numba.get_num_threads()
    per = max(1, round(triggers_per_s * length / params.decimated_rate_hz))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_post, length)).astype(np.float32)
    flags = np.full((n_post, length), averaging.OK | averaging.TESTED, dtype=np.uint8)
    j_max = params.dec(params.jitter_s)
    reach = j_max + int(max(-bnd[0], bnd[-1]))
    trig_t = np.sort(rng.integers(reach, length - reach, (per_post, per)), axis=1).ravel()
    trig_ptr = np.arange(per_post + 1, dtype=np.int64) * per
    pairs = np.tile(np.arange(per_post, dtype=np.int64), n_post)
    post_ptr = np.arange(n_post + 1, dtype=np.int64) * per_post
    jitters = averaging.jitter_table(
        params.seed, trig_ptr, np.arange(per_post), params.n_surrogates,
        params.dec(params.jitter_min_s), j_max,
    )  # fmt: skip
    k, r = pairs.size, windows.shape[0]
    outs = (np.zeros((k, r)), np.zeros((k, r)), np.zeros(k, dtype=np.int64),
            np.zeros((k, r)), np.zeros((k, r)), np.zeros((k, 3)))  # fmt: skip

    def run() -> None:
        averaging.pair_statistics(
            x, flags, post_ptr, pairs, trig_ptr, trig_t, bnd, windows, jitters,
            j_max, *outs,
        )  # fmt: skip

    run()
    return k * per * (1 + params.n_surrogates) / _median_time(run, repeats)


# ---------------------------------------------------------------------------- runs


def speed(channels: int, seconds: float, naive_pairs: int) -> None:
    print(f"# workload: {channels} channels x {seconds:g} s at 10 kHz, ~5 Hz, every channel "
          f"one unit (all {channels}x{channels} pairs); building it...", flush=True)  # fmt: skip
    t = time.perf_counter()
    rec, trains = synthetic_array(channels, seconds)
    n_spikes = sum(t.size for t in trains)
    print(f"# built in {time.perf_counter() - t:.0f} s: {n_spikes} spikes "
          f"({n_spikes / channels / seconds:.1f} Hz)", flush=True)  # fmt: skip
    params = load_params()
    # warm up every kernel (numba compile or cache load) on a small array of the same kind:
    # long enough for candidates and averages, so no stage compiles inside the timed run
    small, _ = synthetic_array(128, 12.0, seed=2)
    warm = extract(small, params, progress=False)
    if warm.n_candidates == 0:
        raise RuntimeError("the warm-up run found no candidates: some kernels were not compiled")
    bw = copy_bandwidth()
    rate = update_rate()
    # three runs, the median counts (as the floor's rates are medians of repeats); the
    # first also pays for the process's fresh memory, which on a virtual machine can cost
    # seconds per GB as the host backs each page: it is printed too
    runs = []
    for i in range(EXTRACT_RUNS):
        t = time.perf_counter()
        result = extract(rec, params, progress=i == 0)
        runs.append((time.perf_counter() - t, result))
    ours, result = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    first = runs[0][0]
    t_pair, t_col, n_timed = naive_per_pair(rec, trains, naive_pairs)
    n_pairs = channels * channels
    naive = t_pair * n_pairs + t_col * channels
    # the floor of the chosen algorithm
    q = params.decimation(FS)
    n_dec = rec.n_samples // q
    dram = rec.n_samples * channels * 2 + 2 * channels * n_dec * 4
    updates = result.work["screen_updates"]
    evaluations = result.work["pair_evaluations"]
    n_post = max(1, int(np.unique(result.candidates["post"]).size))
    eval_rate = pair_evaluation_rate(
        max(1, round(result.n_candidates / n_post)), n_spikes / channels / seconds
    )
    floor_dram = dram / bw
    floor_cache = updates / rate
    floor_pairs = evaluations / eval_rate
    floor = floor_dram + floor_cache + floor_pairs
    w = result.work
    print()
    print(f"copy bandwidth (2 threads, STREAM-like): {bw / 1e9:.1f} GB/s; "
          f"accumulator updates in cache: {rate / 1e9:.2f} G/s; "
          f"candidate trigger evaluations in cache: {eval_rate / 1e6:.0f} M/s")  # fmt: skip
    print(
        f"floor = {dram / 1e9:.2f} GB / {bw / 1e9:.1f} GB/s + {updates:.3g} updates / "
        f"{rate / 1e9:.2f} G/s + {evaluations:.3g} evaluations / {eval_rate / 1e6:.0f} M/s = "
        f"{floor_dram:.2f} + {floor_cache:.2f} + {floor_pairs:.2f} = {floor:.2f} s"
    )
    print(f"ours: {', '.join(f'{t:.2f}' for t, _ in runs)} s in {EXTRACT_RUNS} runs (first "
          f"{first:.2f} s: fresh memory); the median run is reported below")  # fmt: skip
    print(f"naive: {t_pair * 1e3:.2f} ms per pair (timed on {n_timed} pairs, dense ±20 ms at "
          f"10 kHz) x {n_pairs} pairs + columns = {naive:.0f} s (extrapolated)")  # fmt: skip
    print()
    print(f"{'':<34}{'time s':>10}{'vs floor':>10}{'naive / this':>14}")
    rows = [
        ("ours, whole extraction", ours),
        ("  raw pass (spikes, decimation)", result.timings_s.get("spikes_s", float("nan"))),
        ("  all-pairs kernel", w.get("screen_kernel_s", float("nan"))),
        ("  all-pairs screen (with stats)", w.get("screen_s", float("nan"))),
        ("  candidates: surrogates", w.get("surrogates_s", float("nan"))),
        ("  candidates: averages, noise", w.get("averages_s", float("nan"))),
        ("floor (chosen algorithm)", floor),
        ("naive per-pair loop (extrap.)", naive),
    ]
    for name, value in rows:
        print(f"{name:<34}{value:>10.2f}{value / floor:>10.2f}{naive / value:>14.1f}")
    print()
    print(
        f"kernel vs its own floor: {w.get('screen_kernel_s', 0) / floor_cache:.2f}x; "
        f"candidate stage vs its own floor: {w.get('surrogates_s', 0) / floor_pairs:.2f}x; "
        f"units {result.units.n_units}, pairs tested {result.n_tested}, "
        f"candidates {result.n_candidates}, connections {result.connectivity.n}"
    )
    print(
        f"targets: whole run < 60 s: {'yes' if ours < 60 else 'NO'} ({ours:.1f} s); "
        f">= 100x naive: {'yes' if naive / ours >= 100 else 'NO'} ({naive / ours:.0f}x); "
        f"<= 3x floor: {'yes' if ours / floor <= 3 else 'NO'} ({ours / floor:.1f}x)"
    )


def culture(seconds: float, figures: Path | None) -> None:
    from hil_sim.culture import CultureParams
    from instrument.extract import plots
    from instrument.extract.score import format_scores, score
    from tests.instrument.extract.emulated import streamed_recording

    print(f"# emulated culture, default preset, {seconds:g} s (generated while extracted)")
    rec = streamed_recording(CultureParams(seed=1), seconds)
    t = time.perf_counter()
    result = extract(rec, load_params(), progress=True)
    print(f"# generated + extracted in {time.perf_counter() - t:.0f} s; stages "
          + ", ".join(f"{k} {v:.0f} s" for k, v in result.timings_s.items()))  # fmt: skip
    result.scores = score(result, rec.truth)
    print(format_scores(result.scores))
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        print(plots.plot_average_psp(result, figures / "extraction_average_psp.png"))
        print(plots.plot_connectivity_matrix(result, figures / "extraction_matrix.png"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024 channels x 20 s")
    ap.add_argument("--channels", type=int, default=4096)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--naive-pairs", type=int, default=256)
    ap.add_argument("--culture", type=float, metavar="S", help="score S s of the emulated culture")
    ap.add_argument("--figures", type=Path, help="write the culture run's figures here")
    args = ap.parse_args(argv)
    if args.culture:
        culture(args.culture, args.figures)
        return 0
    if args.quick:
        speed(1024, 20.0, 64)
    else:
        speed(args.channels, args.seconds, args.naive_pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
