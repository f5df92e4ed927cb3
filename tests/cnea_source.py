"""A small deterministic signal source with the electrode-array interface, for board tests.

Per-channel sines on a resting level, plus a 1 ms spike-like dip every ``spike_every``
samples on every seventh channel. ``read`` depends only on the sample index, so any
chunking gives the same samples. Voltage-clamp channels return the same shape scaled
to amperes (1 V → 1 nA).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SineSource:
    """The :class:`hil_sim.cnea_board.SignalSource` interface over closed-form signals."""

    def __init__(
        self,
        n_channels: int = 64,
        sample_rate_hz: float = 10_000.0,
        seed: int = 0,
        spike_every: int = 500,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.n_channels = n_channels
        self.sample_rate_hz = sample_rate_hz
        cols = 64 if n_channels % 64 == 0 else n_channels
        index = np.arange(n_channels)
        self.positions_m = np.stack([(index % cols) * 20e-6, (index // cols) * 20e-6], axis=1)
        self.rest_v = rng.uniform(-70e-3, -50e-3, n_channels)
        self.amp_v = rng.uniform(0.2e-3, 2e-3, n_channels)
        self.freq_hz = rng.uniform(5.0, 200.0, n_channels)
        self.phase = rng.uniform(0, 2 * np.pi, n_channels)
        self.spiking = index % 7 == 0
        self.spike_every = spike_every
        self.position = 0
        self.modes = np.zeros(n_channels, dtype=np.uint8)
        self.levels = np.zeros(n_channels)
        self.porated = np.zeros(n_channels, dtype=bool)
        self.calls: list[tuple[str, Any]] = []

    def samples(self, first: int, n: int) -> np.ndarray:
        """(n, C) float32 inputs for samples [first, first + n) (in V, or A in voltage clamp)."""
        t = (first + np.arange(n))[:, None] / self.sample_rate_hz
        volts = self.rest_v + self.amp_v * np.sin(2 * np.pi * self.freq_hz * t + self.phase)
        phase = (first + np.arange(n)) % self.spike_every
        dip = np.where(phase < 10, -20e-3 * (1 - np.abs(phase - 5) / 5), 0.0)
        volts = volts + dip[:, None] * self.spiking
        volts = np.where(self.modes == 1, volts * 1e-9, volts)
        return volts.astype(np.float32)

    def read(self, n_samples: int) -> np.ndarray:
        out = self.samples(self.position, n_samples)
        self.position += n_samples
        return out

    def electroporate(self, channels: np.ndarray, amplitude_v: float, width_s: float) -> None:
        self.porated[channels] = True
        self.calls.append(("electroporate", (len(channels), amplitude_v, width_s)))

    def set_mode(self, channels: np.ndarray, mode: str, level: float) -> None:
        self.modes[channels] = 1 if mode == "voltage_clamp" else 0
        self.levels[channels] = level
        self.calls.append(("set_mode", (len(channels), mode, level)))

    def access(self) -> np.ndarray:
        return np.where(self.porated, 0.8, 0.0).astype(np.float32)

    def truth(self) -> dict[str, np.ndarray]:
        n = 3
        return {
            "neuron_position_m": np.array([[0.0, 0.0], [1e-4, 0.0], [0.0, 1e-4]]),
            "neuron_excitatory": np.array([True, True, False]),
            "electrode_neuron": (np.arange(self.n_channels) % (n + 1) - 1).astype(np.int32),
            "electrode_coupling": np.full(self.n_channels, 0.5, dtype=np.float32),
            "synapse_pre": np.array([0, 1], dtype=np.int32),
            "synapse_post": np.array([1, 2], dtype=np.int32),
            "synapse_weight_v": np.array([0.5e-3, 0.3e-3], dtype=np.float32),
            "synapse_delay_s": np.array([2e-3, 3e-3], dtype=np.float32),
            "synapse_kind": np.array([0, 0], dtype=np.uint8),
        }

    def truth_attrs(self) -> dict[str, Any]:
        return {"source": "SineSource", "n_neurons": 3}
