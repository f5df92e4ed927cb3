"""Shared pieces of the imprint tests: a rig-only emulated lab, synthetic maps, session files."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import hil_sim.lab
from hil_sim.rig import start_rig
from instrument.config import CrossbarConfig, LabConfig, load, loads
from instrument.embedded_lab import embedded_lab
from instrument.imprint.connectivity import ConnectivityMap


@contextmanager
def rig_lab(
    *,
    rows: int = 16,
    cols: int = 16,
    technology: str = "rram",
    architecture: str = "1t1r",
    bias: str = "v/2",
    count: int = 1,
    stuck_rate: float = 0.01,
    latency_s: float = 0.0,
    config: LabConfig | None = None,
    extra_builders: tuple = (),
    **options: Any,
) -> Iterator[tuple[LabConfig, Any]]:
    """The emulated lab with only rigs in it, and a configuration that matches them."""
    rig = {
        "rows": rows,
        "cols": cols,
        "technology": technology,
        "architecture": architecture,
        "stuck_rate": stuck_rate,
        "count": count,
        **options,
    }
    saved = list(hil_sim.lab.BUILDERS)
    hil_sim.lab.BUILDERS[:] = [start_rig, *extra_builders]
    try:
        with embedded_lab(config or load(), latency_s=latency_s, options={"rig": rig}) as (
            cfg,
            lab,
        ):
            crossbar = CrossbarConfig(
                rows=rows,
                cols=cols,
                architecture=architecture,  # type: ignore[arg-type]
                technology=technology,  # type: ignore[arg-type]
                bias_scheme=bias,  # type: ignore[arg-type]
            )
            quick = {
                name: dataclasses.replace(inst, timeout_s=2.0)
                for name, inst in cfg.instruments.items()
            }
            yield dataclasses.replace(cfg, crossbar=crossbar, instruments=quick), lab
    finally:
        hil_sim.lab.BUILDERS[:] = saved


def config_with(text: str) -> LabConfig:
    """The default configuration with ``text`` (TOML) over it."""
    base = Path(load().source).read_text()
    return loads(text, "<test>", base=base)


def synthetic_map(
    n_units: int = 12, n_synapses: int = 30, seed: int = 3, first_id: int = 100
) -> ConnectivityMap:
    """A random signed map among ``n_units`` units (ids from ``first_id``, with gaps)."""
    rng = np.random.default_rng(seed)
    units = first_id + 7 * np.arange(n_units)
    pairs = set()
    while len(pairs) < n_synapses:
        a, b = rng.choice(n_units, 2, replace=False)
        pairs.add((int(a), int(b)))
    pre, post = np.array(sorted(pairs)).T
    weight = rng.choice([-1, 1], n_synapses, p=[0.25, 0.75]) * rng.uniform(0.1e-3, 2e-3, n_synapses)
    latency = rng.uniform(1e-3, 5e-3, n_synapses)
    return ConnectivityMap.from_arrays(units[pre], units[post], weight, latency, units=units)


def make_session(folder: Path) -> Path:
    """A closed session file like a finished recording (libver latest, SWMR-created)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "session.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = "brainpaste-session"
        f.attrs["format_version"] = 1
        rec = f.create_group("recording")
        rec.create_dataset("traces", data=np.zeros((1000, 4), dtype="<i2"))
        f.swmr_mode = True
    return path


def crossbar(lab: Any, number: int = 0) -> Any:
    """The emulated crossbar of rig ``number`` (truth)."""
    name = "smu" if number == 0 else f"smu{number + 1}"
    return lab.instruments[name].model
