"""The one place the application reaches into the emulated lab (hil_sim).

It starts the emulators and hands back an ordinary lab configuration whose
instruments point at them, so everything downstream uses the same drivers and
wires as on the bench.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hil_sim.lab import EmulatedLab, LabSettings
from instrument.config import InstrumentConfig, LabConfig, load


@contextmanager
def embedded_lab(
    config: LabConfig | None = None,
    *,
    seed: int = 1,
    latency_s: float = 0.0,
    options: dict[str, Any] | None = None,
) -> Iterator[tuple[LabConfig, EmulatedLab]]:
    """Start the emulated lab; yield (configuration pointing at it, the lab itself).

    Instruments already in ``config`` that are not emulated stay as they are
    (real and emulated instruments can be mixed).
    """
    config = config or load()
    settings = LabSettings(seed=seed, latency_s=latency_s, options=dict(options or {}))
    with EmulatedLab(settings) as lab:
        emulated = {
            name: InstrumentConfig(
                driver=inst.driver,
                resource=inst.resource,
                data_port=inst.data_port,
                timeout_s=inst.timeout_s,
                emulated=True,
            )
            for name, inst in lab.instruments.items()
            if name not in config.instruments or config.instruments[name].emulated
        }
        yield config.with_instruments(emulated), lab
