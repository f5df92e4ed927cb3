"""Planted recordings for extraction tests and benchmarks: known synapses, known answers.

A small network of independent Poisson neurons whose membrane potentials carry
Ornstein–Uhlenbeck noise, their own action potentials and after-hyperpolarisations,
and a PSP (difference of exponentials, peak ``weight_v``) ``delay_s`` after every spike
of each planted presynaptic neuron. Each neuron is seen by one or two electrodes with
gains 0.2–0.8, plus white amplifier noise, quantised like the board (5 µV per code).
``shuffle=True`` makes the PSPs arrive at random times instead (no time locking: no
connection is extractable). Everything seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from instrument.recording import GroundTruth, Recording

LSB_V = 5e-6
FS = 10_000.0
PITCH_M = 20e-6


@dataclass
class Planted:
    recording: Recording
    pre: np.ndarray
    post: np.ndarray
    weight_v: np.ndarray
    delay_s: np.ndarray
    kind: np.ndarray
    spikes: list[np.ndarray]
    """Spike samples of every neuron."""
    electrode_neuron: np.ndarray
    gain: np.ndarray
    """(C,) electrode gain (0 without a neuron)."""


@numba.njit(cache=True)
def _membrane(
    n: int,
    spike_ptr: np.ndarray,
    spike_t: np.ndarray,
    ev_ptr: np.ndarray,
    ev_t: np.ndarray,
    ev_w: np.ndarray,
    ev_kind: np.ndarray,
    seed: int,
    out: np.ndarray,
) -> None:
    """Membrane potential deviation from rest of each neuron (column), V."""
    n_neurons = out.shape[1]
    dt = 1.0 / 10_000.0
    tau_ou = 10e-3
    sd_ou = 1.0e-3
    a_ou = math.exp(-dt / tau_ou)
    k_ou = sd_ou * math.sqrt(1 - a_ou * a_ou)
    tau_r, tau_d = 1.0e-3, 8.0e-3
    ar, ad = math.exp(-dt / tau_r), math.exp(-dt / tau_d)
    tpk = math.log(tau_d / tau_r) * tau_r * tau_d / (tau_d - tau_r)
    norm = 1.0 / (math.exp(-tpk / tau_d) - math.exp(-tpk / tau_r))
    ag = math.exp(-dt / 3e-3)
    agr = math.exp(-dt / 0.3e-3)
    tpg = math.log(3e-3 / 0.3e-3) * 0.3e-3 * 3e-3 / (3e-3 - 0.3e-3)
    norm_g = 1.0 / (math.exp(-tpg / 3e-3) - math.exp(-tpg / 0.3e-3))
    ahp_a = math.exp(-dt / 20e-3)
    ap = np.array([0.3, 1.0, 0.85, 0.6, 0.35, 0.15, 0.02, -0.1, -0.15, -0.15])
    np.random.seed(seed)
    for j in range(n_neurons):
        ou = 0.0
        fast = 0.0
        slow = 0.0
        gap = 0.0
        gap_r = 0.0
        ahp = 0.0
        si = spike_ptr[j]
        se = spike_ptr[j + 1]
        ei = ev_ptr[j]
        ee = ev_ptr[j + 1]
        ap_left = 0
        for t in range(n):
            ou = ou * a_ou + k_ou * np.random.standard_normal()
            fast *= ar
            slow *= ad
            gap *= ag
            gap_r *= agr
            ahp *= ahp_a
            while ei < ee and ev_t[ei] <= t:
                if ev_kind[ei] == 2:
                    gap += ev_w[ei] * norm_g
                    gap_r += ev_w[ei] * norm_g
                else:
                    fast += ev_w[ei] * norm
                    slow += ev_w[ei] * norm
                ei += 1
            v = ou + (slow - fast) + (gap - gap_r) - ahp
            if si < se and spike_t[si] == t:
                ap_left = ap.size
                ahp += 6e-3
                si += 1
            if ap_left > 0:
                v += 0.08 * ap[ap.size - ap_left]
                ap_left -= 1
            out[t, j] = v


def planted_recording(
    *,
    n_neurons: int = 24,
    duration_s: float = 60.0,
    rate_hz: float = 8.0,
    synapses: list[tuple[int, int, float, float]] | None = None,
    electrical: list[tuple[int, int, float]] | None = None,
    two_electrode_neurons: tuple[int, ...] = (0, 3),
    extracellular_neurons: tuple[int, ...] = (),
    noise_v: float = 15e-6,
    shuffle: bool = False,
    seed: int = 7,
) -> Planted:
    """A planted network (see the module docstring). ``synapses`` are (pre, post, weight V,
    delay s); ``electrical`` (a, b, spikelet peak V) couple both ways with no delay."""
    rng = np.random.default_rng(seed)
    n = round(duration_s * FS)
    if synapses is None:
        synapses = [
            (1, 2, 1.5e-3, 2e-3),
            (2, 5, -1.2e-3, 3e-3),
            (4, 6, 0.8e-3, 1.5e-3),
            (6, 4, 2.0e-3, 2.5e-3),
            (7, 8, -2.0e-3, 2e-3),
            (9, 10, 1.0e-3, 4e-3),
            (11, 12, 3.0e-3, 1.2e-3),
            (13, 14, -0.8e-3, 2.5e-3),
            (0, 15, 1.2e-3, 2e-3),
            (16, 3, 1.5e-3, 3.5e-3),
        ]
    electrical = list(electrical or [])
    refractory = int(0.004 * FS)
    trains = []
    for _ in range(n_neurons):
        isi = rng.exponential(FS / rate_hz, size=int(duration_s * rate_hz * 2) + 20)
        t = np.cumsum(np.maximum(isi, refractory)).astype(np.int64)
        trains.append(t[(t > 200) & (t < n - 200)])
    pre = np.array([s[0] for s in synapses] + [e[0] for e in electrical] +
                   [e[1] for e in electrical], dtype=np.int32)  # fmt: skip
    post = np.array([s[1] for s in synapses] + [e[1] for e in electrical] +
                    [e[0] for e in electrical], dtype=np.int32)  # fmt: skip
    weight = np.array([s[2] for s in synapses] + [e[2] for e in electrical] * 2)
    delay = np.array([s[3] for s in synapses] + [0.0] * (2 * len(electrical)))
    kind = np.array(
        [0 if s[2] > 0 else 1 for s in synapses] + [2] * (2 * len(electrical)), dtype=np.uint8
    )
    events: list[list[tuple[int, float, int]]] = [[] for _ in range(n_neurons)]
    for a, b, w, d, k in zip(pre, post, weight, delay, kind, strict=True):
        times = trains[a] + round(d * FS)
        if shuffle:
            times = np.sort(rng.integers(200, n - 200, size=times.size))
        events[b].extend((int(t), float(w), int(k)) for t in times)
    ev_ptr = np.zeros(n_neurons + 1, dtype=np.int64)
    ev_t, ev_w, ev_k = [], [], []
    for j in range(n_neurons):
        ev = sorted(events[j])
        ev_t += [e[0] for e in ev]
        ev_w += [e[1] for e in ev]
        ev_k += [e[2] for e in ev]
        ev_ptr[j + 1] = len(ev_t)
    spike_ptr = np.concatenate([[0], np.cumsum([t.size for t in trains])]).astype(np.int64)
    vm = np.empty((n, n_neurons), dtype=np.float32)
    _membrane(
        n, spike_ptr, np.concatenate(trains).astype(np.int64), ev_ptr,
        np.asarray(ev_t, dtype=np.int64), np.asarray(ev_w), np.asarray(ev_k, dtype=np.int64),
        seed, vm,
    )  # fmt: skip
    # electrodes: neuron j at column 2j (and 2j + 1 when seen twice), one row
    n_ch = max(2 * n_neurons + 4, 8)
    electrode_neuron = np.full(n_ch, -1, dtype=np.int32)
    gain = np.zeros(n_ch)
    for j in range(n_neurons):
        electrode_neuron[2 * j] = j
        gain[2 * j] = rng.uniform(0.3, 0.8)
        if j in two_electrode_neurons:
            electrode_neuron[2 * j + 1] = j
            gain[2 * j + 1] = rng.uniform(0.2, 0.6)
    x = vm[:, np.maximum(electrode_neuron, 0)] * gain[None, :].astype(np.float32)
    x[:, electrode_neuron < 0] = 0.0
    for j in extracellular_neurons:
        c = 2 * j + 1
        electrode_neuron[c] = j
        gain[c] = 0.0
        dv = np.diff(vm[:, j], prepend=vm[0, j])
        x[:, c] = -0.02 * dv
    x += rng.normal(0.0, noise_v, size=x.shape).astype(np.float32)
    codes = np.clip(np.round(x / LSB_V), -32767, 32767).astype(np.int16)
    positions = np.stack([(np.arange(n_ch) + 0.5) * PITCH_M, np.full(n_ch, 0.5 * PITCH_M)], 1)
    truth = GroundTruth(
        neuron_position_m=np.stack(
            [(2 * np.arange(n_neurons) + 0.5) * PITCH_M, np.full(n_neurons, 0.5 * PITCH_M)], 1
        ),
        neuron_excitatory=~np.isin(np.arange(n_neurons), pre[weight < 0]),
        electrode_neuron=electrode_neuron,
        electrode_coupling=gain.astype(np.float32),
        synapse_pre=pre,
        synapse_post=post,
        synapse_weight_v=weight.astype(np.float32),
        synapse_delay_s=delay.astype(np.float32),
        synapse_kind=kind,
    )
    rec = Recording(
        traces=codes,
        sample_rate_hz=FS,
        gain_v=np.full(n_ch, LSB_V),
        offset_v=np.zeros(n_ch),
        positions_m=positions,
        truth=truth,
        source="planted",
    )
    return Planted(
        recording=rec, pre=pre, post=post, weight_v=weight, delay_s=delay, kind=kind,
        spikes=trains, electrode_neuron=electrode_neuron, gain=gain,
    )  # fmt: skip


def write_session(recording: Recording, folder: Path | str, *, gaps: tuple = ()) -> Path:
    """Write ``recording`` as a closed session file through the acquisition's writer."""
    from instrument.session_files import SESSION_FILE
    from instrument.storage import RecordingInfo, SessionWriter

    path = Path(folder) / SESSION_FILE
    truth = recording.truth
    info = RecordingInfo(
        sample_rate_hz=recording.sample_rate_hz,
        n_channels=recording.n_channels,
        gain_v=np.asarray(recording.gain_v),
        offset_v=np.asarray(recording.offset_v),
        positions_m=np.asarray(recording.positions_m),
        instrument_identity="planted,synthetic,0,1",
        truth=truth.to_arrays() if truth is not None else None,
    )
    writer = SessionWriter(path, info, reserve_bytes=0)
    codes = np.asarray(recording.traces)
    block = 8192
    for row in range(0, codes.shape[0], block):
        writer.write(row, codes[row : row + block])
    for first, end in gaps:
        writer.add_gap(first, end, "test")
    writer.close(stop_reason="test")
    return path
