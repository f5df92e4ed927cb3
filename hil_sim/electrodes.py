"""The 64 × 64 nanoelectrode array over an emulated culture: coupling, access, clamp, noise.

``ElectrodeArray(culture).read(n)`` gives what each of the 4096 amplifier inputs sees,
sample by sample (V in current clamp, A in voltage clamp). An electrode couples to at
most one neuron (the nearest soma, when close enough); it sees that neuron's membrane
potential only while intracellular access is open — :meth:`ElectrodeArray.electroporate`
opens it with some probability and it reseals over minutes. Every channel carries
thermal and amplifier noise through a first-order low-pass; a few channels are dead
(noise only) or saturated (stuck at a rail). Model and sources: ``docs/emulated_culture.md``.

Channel index = row * 64 + col; electrode (row, col) sits at
x = (col + 0.5) * pitch, y = (row + 0.5) * pitch.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from hil_sim import culture_kernels as kern
from hil_sim.culture import Culture

N_ROWS = 64
N_COLS = 64
N_CHANNELS = N_ROWS * N_COLS

MODES = ("current_clamp", "voltage_clamp")
"""Amplifier modes: current clamp (inject A, record V) and voltage clamp (apply V, record A)."""

_CHUNK = 128
"""Samples per kernel call (keeps a block of membrane potentials in cache)."""

CHANNEL_OK = 0
CHANNEL_DEAD = 1
CHANNEL_SATURATED = 2


def _locked[T](method: Callable[..., T]) -> Callable[..., T]:
    """Run ``method`` under the array's lock (the board's control and data threads share it)."""

    @functools.wraps(method)
    def wrapper(self: ElectrodeArray, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class ElectrodeError(ValueError):
    """A request the electrode array cannot carry out (bad channel, mode, level or pulse)."""


@dataclass
class ElectrodeParams:
    """The electrode array's physics. SI units; the defaults are the default preset."""

    pitch_m: float = 20e-6
    """Electrode spacing (64 × 64 at 20 µm covers 1.28 mm)."""
    coupling_radius_m: float = 18.5e-6
    """An electrode couples to the nearest soma when it lies within this radius (median)."""
    coupling_radius_sigma: float = 0.2
    """Log-normal spread of the per-neuron coupling radius."""
    coupling_min: float = 0.1
    coupling_max: float = 0.9
    noise_rms_v: float = 15e-6
    """Thermal + amplifier noise at the amplifier output in current clamp, V rms."""
    noise_rms_a: float = 2e-12
    """Current noise in voltage clamp, A rms."""
    lowpass_hz: float = 3000.0
    """Corner of the first-order low-pass (electrode–amplifier), Hz (±10 % per channel)."""
    extracellular_s: float = 4e-7
    """Without access an electrode sees −extracellular_s · coupling · dV/dt (a ~100 µV spike)."""
    clamp_conductance_s: float = 30e-9
    """Access conductance at full access (voltage clamp and current injection path), S."""
    dead_fraction: float = 0.003
    saturated_fraction: float = 0.002
    saturation_v: float = 1.0
    """Where a saturated channel sits (±; beyond any ADC full scale), V."""
    # electroporation
    electroporation_threshold_v: float = 0.5
    """Pulse amplitude below which no pore opens, V."""
    electroporation_scale_v: float = 0.8
    """Amplitude above threshold per e-fold of failure probability (1 ms pulse), V."""
    electroporation_reference_s: float = 1e-3
    """Pulse width at which the amplitude scale holds; dose grows as sqrt(width)."""
    electroporation_max_probability: float = 0.97
    max_pulse_v: float = 5.0
    max_pulse_s: float = 0.1
    access_open_min: float = 0.6
    access_open_max: float = 1.0
    access_tau_s: float = 300.0
    """Median resealing time constant of an opened electrode, s (access ∝ exp(−t/tau))."""
    access_tau_sigma: float = 0.3
    access_update_samples: int = 1000
    """Access is re-evaluated every this many samples (aligned to sample 0)."""
    artifact_fraction: float = 0.3
    """Electroporation artifact: the pulsed channel jumps by this fraction of the pulse
    amplitude (beyond full scale for any useful pulse) and recovers exponentially."""
    artifact_tau_s: float = 2e-3
    """Recovery time constant of the electroporation artifact, s."""
    max_current_a: float = 10e-9
    max_command_v: float = 0.2

    def to_attrs(self) -> dict[str, Any]:
        """All parameters as JSON-able scalars."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validate(self, sample_rate_hz: float) -> None:
        """Raise :class:`ElectrodeError` for values the array cannot work with."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ElectrodeError(f"{f.name} must be finite and >= 0, got {value}")
        for name in ("pitch_m", "coupling_radius_m", "access_tau_s", "artifact_tau_s"):
            if getattr(self, name) <= 0:
                raise ElectrodeError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.coupling_min <= self.coupling_max <= 1:
            raise ElectrodeError("need 0 < coupling_min <= coupling_max <= 1")
        if not 0 < self.access_open_min <= self.access_open_max <= 1:
            raise ElectrodeError("need 0 < access_open_min <= access_open_max <= 1")
        if (
            self.dead_fraction + self.saturated_fraction > 1
            or self.electroporation_max_probability > 1
        ):
            raise ElectrodeError("fractions and probabilities must not exceed 1")
        if not 0 < self.lowpass_hz < sample_rate_hz / 2:
            raise ElectrodeError(f"lowpass_hz must lie in (0, {sample_rate_hz / 2}) Hz")
        if self.electroporation_scale_v <= 0 or self.electroporation_reference_s <= 0:
            raise ElectrodeError("electroporation scale and reference width must be positive")
        if int(self.access_update_samples) != self.access_update_samples or (
            self.access_update_samples < 1
        ):
            raise ElectrodeError("access_update_samples must be an integer >= 1")


class ElectrodeArray:
    """4096 electrodes over a :class:`Culture`; :meth:`read` advances both together."""

    def __init__(self, culture: Culture, params: ElectrodeParams | None = None) -> None:
        self.params = p = params or ElectrodeParams()
        p.validate(culture.sample_rate_hz)
        if culture.electrodes_attached:
            raise ElectrodeError("this culture already has an electrode array (one per culture)")
        culture.electrodes_attached = True
        self.culture = culture
        self.sample_rate_hz = culture.sample_rate_hz
        self.n_channels = N_CHANNELS
        seed = int(culture.params.seed)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE1EC]))
        self._rng_pulse = np.random.default_rng(np.random.SeedSequence([seed, 0xE1EC, 1]))
        self._key = kern.stream_key(seed, 2)
        rows, cols = np.divmod(np.arange(N_CHANNELS), N_COLS)
        self.positions_m = np.stack(
            [(cols + 0.5) * p.pitch_m, (rows + 0.5) * p.pitch_m], axis=1
        ).astype(np.float64)

        # coupling: nearest soma within that neuron's radius
        from scipy.spatial import cKDTree

        n = culture.n_neurons
        radius = p.coupling_radius_m * rng.lognormal(0.0, p.coupling_radius_sigma, n)
        dist, nearest = cKDTree(culture.positions_m).query(self.positions_m)
        coupled = dist < radius[nearest]
        quality = rng.uniform(0.5, 1.0, N_CHANNELS)
        closeness = np.clip(1.0 - dist / radius[nearest], 0.0, 1.0)
        coupling = p.coupling_min + (p.coupling_max - p.coupling_min) * quality * closeness
        self._neuron = np.where(coupled, nearest, -1).astype(np.int32)
        self._coupling = np.where(coupled, coupling, 0.0).astype(np.float32)

        status = np.zeros(N_CHANNELS, dtype=np.int8)
        n_dead = round(p.dead_fraction * N_CHANNELS)
        n_sat = round(p.saturated_fraction * N_CHANNELS)
        bad = rng.choice(N_CHANNELS, size=n_dead + n_sat, replace=False)
        status[bad[:n_dead]] = CHANNEL_DEAD
        status[bad[n_dead:]] = CHANNEL_SATURATED
        self.channel_status = status
        """(4096,) int8: 0 working, 1 dead (noise only), 2 saturated (stuck at a rail)."""
        self._rail = np.where(rng.random(N_CHANNELS) < 0.5, -1.0, 1.0) * p.saturation_v
        self._tau_access = p.access_tau_s * rng.lognormal(0.0, p.access_tau_sigma, N_CHANNELS)
        corner = p.lowpass_hz * rng.uniform(0.9, 1.1, N_CHANNELS)
        self._alpha = (1.0 - np.exp(-2.0 * math.pi * corner / self.sample_rate_hz)).astype(
            np.float32
        )
        # white noise of std s through y += a (x - y) has variance s² a / (2 - a)
        self._noise_gain = np.sqrt((2.0 - self._alpha) / self._alpha).astype(np.float32)

        self._mode = np.zeros(N_CHANNELS, dtype=np.int8)  # 0 current clamp, 1 voltage clamp
        self._level = np.zeros(N_CHANNELS)
        self._access0 = np.zeros(N_CHANNELS)
        self._opened_at = np.zeros(N_CHANNELS, dtype=np.int64)
        self._access = np.zeros(N_CHANNELS)
        self._state = np.where(status == CHANNEL_SATURATED, self._rail, 0.0).astype(np.float32)
        self._artifact = np.zeros(N_CHANNELS, dtype=np.float32)
        self._artifact_decay = math.exp(-1.0 / (p.artifact_tau_s * self.sample_rate_hz))
        self._lock = threading.RLock()
        self._rest = culture.resting_potential_v.astype(np.float32)
        self._neuron_ext = np.where(self._neuron >= 0, self._neuron, n).astype(np.int64)
        dev = np.append(culture.membrane_potential() - culture.resting_potential_v, 0.0)
        self._prev_dev = dev[self._neuron_ext].astype(np.float32)
        self._gains_dirty = True
        self._access_at = -1

    # ---------------------------------------------------------------- time
    @property
    def sample_index(self) -> int:
        """Samples read so far."""
        return self.culture.sample_index

    @property
    def time_s(self) -> float:
        """Emulated time elapsed, s."""
        return self.culture.time_s

    # ---------------------------------------------------------------- control
    def _channels(self, channels: Any) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(channels))
        if idx.dtype == bool:
            if idx.shape != (N_CHANNELS,):
                raise ElectrodeError(f"a channel mask must have shape ({N_CHANNELS},)")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ElectrodeError(f"channel indices must be integers, got {idx.dtype}")
        if idx.min() < 0 or idx.max() >= N_CHANNELS:
            raise ElectrodeError(f"channel indices must lie in [0, {N_CHANNELS})")
        return idx.astype(np.int64)

    @_locked
    def set_mode(self, channels: Any, mode: str, level: float = 0.0) -> None:
        """Put ``channels`` in ``mode``: "current_clamp" (level = injected A; 0 = plain
        recording) or "voltage_clamp" (level = command membrane potential, V)."""
        idx = self._channels(channels)
        if mode not in MODES:
            raise ElectrodeError(f"mode must be one of {MODES}, got {mode!r}")
        level = float(level)
        if not math.isfinite(level):
            raise ElectrodeError(f"level must be finite, got {level}")
        p = self.params
        if mode == "current_clamp" and abs(level) > p.max_current_a:
            raise ElectrodeError(f"injected current {level} A exceeds ±{p.max_current_a} A")
        if mode == "voltage_clamp" and abs(level) > p.max_command_v:
            raise ElectrodeError(f"command {level} V exceeds ±{p.max_command_v} V")
        self._mode[idx] = MODES.index(mode)
        self._level[idx] = level
        self._gains_dirty = True

    @_locked
    def mode(self, channel: int) -> tuple[str, float]:
        """(mode, level) of one channel."""
        c = int(self._channels([channel])[0])
        return MODES[self._mode[c]], float(self._level[c])

    @_locked
    def electroporate(self, channels: Any, amplitude_v: float, width_s: float) -> None:
        """Apply an electroporation pulse to ``channels``: each coupled electrode opens
        intracellular access with a probability that grows with amplitude and width."""
        idx = self._channels(channels)
        p = self.params
        amplitude_v = float(amplitude_v)
        width_s = float(width_s)
        if not (math.isfinite(amplitude_v) and 0.0 < amplitude_v <= p.max_pulse_v):
            raise ElectrodeError(f"pulse amplitude must be in (0, {p.max_pulse_v}] V")
        if not (math.isfinite(width_s) and 0.0 < width_s <= p.max_pulse_s):
            raise ElectrodeError(f"pulse width must be in (0, {p.max_pulse_s}] s")
        prob = self.open_probability(amplitude_v, width_s)
        working = idx[self.channel_status[idx] == CHANNEL_OK]
        # the pulse polarises the electrode: an artifact beyond full scale that recovers
        # over a few ms (in voltage clamp a current of 1 µA per volt of artifact)
        jump = p.artifact_fraction * amplitude_v
        per_mode = np.where(self._mode[working] == 0, jump, jump * 1e-6)
        self._artifact[working] += per_mode.astype(np.float32)
        draw = self._rng_pulse.random(idx.size)
        strength = self._rng_pulse.uniform(p.access_open_min, p.access_open_max, idx.size)
        self._update_access()
        ok = (draw < prob) & (self._neuron[idx] >= 0)
        opened = idx[ok]
        now = self.culture.sample_index
        new = np.maximum(self._access[opened], strength[ok])
        self._access0[opened] = new
        self._opened_at[opened] = now
        self._access[opened] = new
        self._gains_dirty = True

    def open_probability(self, amplitude_v: float, width_s: float) -> float:
        """Chance that one pulse opens a coupled electrode."""
        p = self.params
        excess = max(0.0, amplitude_v - p.electroporation_threshold_v)
        dose = (
            excess / p.electroporation_scale_v * math.sqrt(width_s / p.electroporation_reference_s)
        )
        return p.electroporation_max_probability * (1.0 - math.exp(-dose))

    @_locked
    def access(self) -> np.ndarray:
        """(4096,) float32 current access quality 0..1 (0 on uncoupled and bad channels)."""
        self._update_access()
        out = self._access.copy()
        out[self.channel_status != CHANNEL_OK] = 0.0
        return out.astype(np.float32)

    def _update_access(self) -> None:
        """Re-evaluate access on the grid of ``access_update_samples`` (chunking independent)."""
        b = self.params.access_update_samples
        grid = (self.culture.sample_index // b) * b
        if grid == self._access_at:
            return
        open_ = self._access0 > 0
        if np.any(open_):
            age = np.maximum(grid - self._opened_at[open_], 0) / self.sample_rate_hz
            self._access[open_] = self._access0[open_] * np.exp(-age / self._tau_access[open_])
            self._gains_dirty = True
        self._access_at = grid

    def _refresh_gains(self) -> None:
        """Per-channel mixing gains and the electrodes' drive on each neuron."""
        p = self.params
        ok = self.channel_status == CHANNEL_OK
        coupled = (self._neuron >= 0) & ok
        acc = np.where(coupled, self._access, 0.0)
        cc = self._mode == 0
        vc = ~cc
        g_access = p.clamp_conductance_s * acc
        rest = np.append(self._rest, 0.0)[self._neuron_ext]
        # current clamp: the electrode sees coupling × access of the deflection from rest,
        # plus (coupled, any access) a small extracellular copy of dV/dt
        # voltage clamp: it records g (command - V) = -g d + g (command - rest)
        self._gain_v = np.where(cc, self._coupling * acc, -g_access).astype(np.float32)
        dt_ext = p.extracellular_s * self.sample_rate_hz
        self._gain_dv = np.where(coupled & cc, -dt_ext * self._coupling, 0.0).astype(np.float32)
        self._offset = np.where(vc, g_access * (self._level - rest), 0.0).astype(np.float32)
        noise = np.where(cc, p.noise_rms_v, p.noise_rms_a)
        noise = np.where(self.channel_status == CHANNEL_SATURATED, 0.0, noise)
        self._noise_std = (noise * self._noise_gain).astype(np.float32)
        self._alpha_eff = np.where(
            self.channel_status == CHANNEL_SATURATED, 0.0, self._alpha
        ).astype(np.float32)
        # drive on the neurons: injected current and clamp conductance reach the cell
        # in proportion to access
        n = self.culture.n_neurons
        nrn = self._neuron
        use = coupled & (acc > 0)
        cur = np.zeros(n)
        g = np.zeros(n)
        gv = np.zeros(n)
        sel = use & cc
        np.add.at(cur, nrn[sel], acc[sel] * self._level[sel])
        sel = use & vc
        np.add.at(g, nrn[sel], g_access[sel])
        np.add.at(gv, nrn[sel], g_access[sel] * self._level[sel])
        self.culture.set_electrode_drive(cur, g, gv)
        self._gains_dirty = False

    # ---------------------------------------------------------------- data
    @_locked
    def read(self, n_samples: int) -> np.ndarray:
        """Advance culture and electrodes ``n_samples``; (n_samples, 4096) float32 of what
        each amplifier input sees (V in current clamp, A in voltage clamp)."""
        n_samples = int(n_samples)
        if n_samples < 0:
            raise ElectrodeError(f"n_samples must be >= 0, got {n_samples}")
        out = np.empty((n_samples, N_CHANNELS), dtype=np.float32)
        b = self.params.access_update_samples
        done = 0
        while done < n_samples:
            self._update_access()
            if self._gains_dirty:
                self._refresh_gains()
            now = self.culture.sample_index
            chunk = min(n_samples - done, b - now % b, _CHUNK)
            v = self.culture.advance(chunk)
            kern.mix_channels(
                v, self._rest, now, self._key, self._neuron_ext, self._gain_v,
                self._gain_dv, self._offset, self._prev_dev, self._noise_std,
                self._alpha_eff, self._state, self._artifact, self._artifact_decay,
                out[done : done + chunk],
            )  # fmt: skip
            done += chunk
        return out

    # ---------------------------------------------------------------- truth
    @_locked
    def electrode_neuron(self) -> np.ndarray:
        """(4096,) int32 neuron each working electrode couples to, -1 for none."""
        return np.where(self.channel_status == CHANNEL_OK, self._neuron, -1).astype(np.int32)

    @_locked
    def truth(self) -> dict[str, np.ndarray]:
        """Ground truth with exactly the fields of ``instrument.recording.GroundTruth``.

        Dead and saturated channels are listed as uncoupled (they never show a neuron).
        """
        culture = self.culture.truth_arrays()
        ok = self.channel_status == CHANNEL_OK
        return {  # neurons, electrodes, synapses: the order of the file's /truth group
            **{k: v for k, v in culture.items() if k.startswith("neuron_")},
            "electrode_neuron": self.electrode_neuron(),
            "electrode_coupling": np.where(ok, self._coupling, 0.0).astype(np.float32),
            **{k: v for k, v in culture.items() if k.startswith("synapse_")},
        }

    @_locked
    def truth_attrs(self) -> dict[str, Any]:
        """Seed, model and parameters (culture and electrodes) as JSON-able scalars."""
        attrs = self.culture.truth_attrs()
        attrs.update({f"electrodes_{k}": v for k, v in self.params.to_attrs().items()})
        attrs["sample_rate_hz"] = float(self.sample_rate_hz)
        attrs["n_channels"] = N_CHANNELS
        attrs["n_dead_channels"] = int(np.sum(self.channel_status == CHANNEL_DEAD))
        attrs["n_saturated_channels"] = int(np.sum(self.channel_status == CHANNEL_SATURATED))
        json.dumps(attrs)
        return attrs
