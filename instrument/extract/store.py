"""Extraction results in the session file, and as CSV and GraphML.

Session file (``docs/file_format.md`` for the rest of the layout; opened ``"a"``, not
SWMR — the recording is closed; a re-run replaces both groups):

- ``/spikes``: per unit its best electrode, its electrodes (``unit_members`` sliced by
  ``unit_member_ptr``), spike samples (``spike_sample`` sliced by ``unit_spike_ptr``),
  median spike height, intracellular flag, gain, trace noise, usable triggers, average
  spike waveform; per channel bad flag, spike count, noise, rail fraction. SI units.
- ``/connectivity/connections``: one row per connection — pre/post unit and best
  electrode, ``weight_v`` (somatic peak PSP, signed), ``psp_electrode_v``, ``latency_s``
  (onset), ``peak_latency_s``, ``kind`` (0 excitatory, 1 inhibitory, 2 electrical),
  ``strong``, ``z``, ``p``, ``q`` (BH-adjusted), ``noise_v``, ``n_triggers``,
  ``event_probability``; ``average_psp_v`` (connection × lag) with ``lags_s``; attributes:
  the parameters (JSON), pairs tested, candidates, version, time.
- ``/connectivity/scores`` (emulated recordings): the scores as JSON text plus the main
  numbers as attributes, and the ``by_psp`` / ``by_snr`` tables.

Exports name each unit by the array index of its best electrode (channel = row × 64 +
col) and list its other electrodes, so every row maps back to the array. CSV and
GraphML carry weights in mV and latencies in ms (their column names say so).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

import instrument
from instrument.extract.pipeline import ExtractionResult
from instrument.extract.psp import KIND_NAMES

N_COLS = 64
"""Electrodes per row of the array (channel = row × 64 + col)."""

CONNECTION_DTYPE = np.dtype(
    [
        ("pre_unit", "<i4"),
        ("post_unit", "<i4"),
        ("pre_electrode", "<i4"),
        ("post_electrode", "<i4"),
        ("weight_v", "<f8"),
        ("psp_electrode_v", "<f8"),
        ("latency_s", "<f8"),
        ("peak_latency_s", "<f8"),
        ("kind", "u1"),
        ("strong", "?"),
        ("z", "<f8"),
        ("p", "<f8"),
        ("q", "<f8"),
        ("noise_v", "<f8"),
        ("n_triggers", "<i8"),
        ("event_probability", "<f8"),
    ]
)

BIN_DTYPE = np.dtype(
    [
        ("bin", "S16"),
        ("n_true", "<i8"),
        ("n_detected", "<i8"),
        ("precision", "<f8"),
        ("recall", "<f8"),
        ("f1", "<f8"),
    ]
)


def connection_table(result: ExtractionResult) -> np.ndarray:
    """The connections as a structured array (:data:`CONNECTION_DTYPE`)."""
    c = result.connectivity
    best = result.units.best
    t = np.zeros(c.n, dtype=CONNECTION_DTYPE)
    t["pre_unit"] = c.pre
    t["post_unit"] = c.post
    t["pre_electrode"] = best[c.pre]
    t["post_electrode"] = best[c.post]
    for name in (
        "weight_v",
        "psp_electrode_v",
        "latency_s",
        "peak_latency_s",
        "kind",
        "strong",
        "z",
        "p",
        "q",
        "noise_v",
        "n_triggers",
        "event_probability",
    ):
        t[name] = getattr(c, name)
    return t


def _utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def write_results(path: Path | str, result: ExtractionResult) -> None:
    """Write ``/spikes`` and ``/connectivity`` (and scores) into the HDF5 file at ``path``,
    replacing earlier ones; everything else in the file is left as it is."""
    import h5py
    import hdf5plugin  # noqa: F401  (the traces' codec, should anything read them)

    u = result.units
    s = result.summary
    with h5py.File(path, "a", locking=False) as f:
        for name in ("spikes", "connectivity"):
            if name in f:
                del f[name]
        g = f.create_group("spikes")
        g.attrs["created_utc"] = _utc()
        g.attrs["brainpaste_version"] = instrument.__version__
        g.attrs["parameters"] = result.params.to_json()
        g.attrs["n_units"] = u.n_units
        g.attrs["sample_rate_hz"] = result.sample_rate_hz
        g.create_dataset("unit_best_electrode", data=u.best.astype("<i4"))
        g.create_dataset("unit_member_ptr", data=u.member_ptr.astype("<i8"))
        g.create_dataset("unit_members", data=u.members.astype("<i4"))
        g.create_dataset("unit_spike_ptr", data=u.spike_ptr.astype("<i8"))
        g.create_dataset("spike_sample", data=u.spike_sample.astype("<i8"), compression="gzip")
        g.create_dataset("unit_height_v", data=u.height_v.astype("<f8"))
        g.create_dataset("unit_intracellular", data=u.intracellular.astype(bool))
        g.create_dataset("unit_gain", data=result.unit_gain.astype("<f8"))
        g.create_dataset("unit_trace_sd_v", data=result.unit_trial_sd_v.astype("<f8"))
        g.create_dataset("unit_triggers", data=result.unit_triggers.astype("<i8"))
        g.create_dataset("unit_waveform_v", data=u.waveform_v.astype("<f4"))
        g.create_dataset("channel_bad", data=s.bad.astype(bool))
        g.create_dataset(
            "channel_spike_count",
            data=np.bincount(s.spike_channel, minlength=s.n_channels).astype("<i8"),
        )
        g.create_dataset("channel_noise_v", data=s.noise_v.astype("<f8"))
        g.create_dataset("channel_rail_fraction", data=s.rail_fraction.astype("<f8"))

        c = f.create_group("connectivity")
        c.attrs["created_utc"] = _utc()
        c.attrs["brainpaste_version"] = instrument.__version__
        c.attrs["parameters"] = result.params.to_json()
        c.attrs["n_tested"] = result.n_tested
        c.attrs["n_candidates"] = result.n_candidates
        c.attrs["kind_names"] = json.dumps(list(KIND_NAMES))
        c.attrs["source"] = result.source
        c.create_dataset("connections", data=connection_table(result))
        c.create_dataset("average_psp_v", data=result.connectivity.average_v.astype("<f4"))
        c.create_dataset("lags_s", data=result.lags_s.astype("<f8"))
        if result.scores is not None:
            sc = c.create_group("scores")
            sc.attrs["json"] = json.dumps(result.scores, default=_json_default)
            for key in ("precision", "recall", "f1", "error_rate", "sign_accuracy",
                        "weight_correlation", "latency_error_median_s"):  # fmt: skip
                sc.attrs[key] = float(result.scores[key])
            for table in ("psp", "snr"):
                rows = result.scores[f"by_{table}"]
                labels = result.scores[f"{table}_bins"]
                arr = np.zeros(len(rows), dtype=BIN_DTYPE)
                for i, (label, row) in enumerate(zip(labels, rows, strict=True)):
                    arr[i] = (label.encode(), row["n_true"], row["n_detected"],
                              row["precision"], row["recall"], row["f1"])  # fmt: skip
                sc.create_dataset(f"by_{table}", data=arr)


def read_connections(path: Path | str) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``/connectivity/connections`` table of a file and the group's attributes."""
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        if "connectivity" not in f:
            raise KeyError(f"{path} holds no /connectivity (run `brainpaste extract` first)")
        g = f["connectivity"]
        return g["connections"][()], dict(g.attrs)


def _electrodes(result: ExtractionResult, unit: int) -> str:
    return ";".join(str(int(e)) for e in result.units.electrodes(unit))


def export_csv(result: ExtractionResult, out_dir: Path | str) -> tuple[Path, Path]:
    """``connections.csv`` and ``units.csv`` in ``out_dir`` (mV, ms in the column names)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conn_path = out / "connections.csv"
    c = result.connectivity
    best = result.units.best
    with conn_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([
            "pre", "post", "pre_electrodes", "post_electrodes", "class", "strong",
            "weight_mv", "psp_electrode_mv", "latency_ms", "peak_latency_ms", "z", "p", "q",
            "noise_mv", "n_triggers", "event_probability",
        ])  # fmt: skip
        for k in range(c.n):
            w.writerow([
                int(best[c.pre[k]]), int(best[c.post[k]]),
                _electrodes(result, int(c.pre[k])), _electrodes(result, int(c.post[k])),
                KIND_NAMES[int(c.kind[k])], bool(c.strong[k]),
                f"{c.weight_v[k] * 1e3:.5g}", f"{c.psp_electrode_v[k] * 1e3:.5g}",
                f"{c.latency_s[k] * 1e3:.4g}", f"{c.peak_latency_s[k] * 1e3:.4g}",
                f"{c.z[k]:.4g}", f"{c.p[k]:.4g}", f"{c.q[k]:.4g}",
                f"{c.noise_v[k] * 1e3:.4g}", int(c.n_triggers[k]),
                f"{c.event_probability[k]:.4g}",
            ])  # fmt: skip
    units_path = out / "units.csv"
    u = result.units
    with units_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([
            "unit", "row", "col", "electrodes", "n_spikes", "spike_height_mv",
            "intracellular", "gain", "triggers",
        ])  # fmt: skip
        n_spikes = u.n_spikes()
        for i in range(u.n_units):
            b = int(u.best[i])
            w.writerow([
                b, b // N_COLS, b % N_COLS, _electrodes(result, i), int(n_spikes[i]),
                f"{u.height_v[i] * 1e3:.4g}", bool(u.intracellular[i]),
                f"{result.unit_gain[i]:.4g}", int(result.unit_triggers[i]),
            ])  # fmt: skip
    return conn_path, units_path


def export_graphml(result: ExtractionResult, path: Path | str) -> Path:
    """The map as a directed GraphML graph: nodes named by best electrode, edges carrying
    class, weight (mV), latency (ms) and statistics."""
    import networkx as nx

    g = nx.DiGraph(name="brainpaste connectivity", source=result.source)
    u = result.units
    pos = None
    for i in range(u.n_units):
        b = int(u.best[i])
        pos = (b // N_COLS, b % N_COLS)
        g.add_node(
            str(b), electrodes=_electrodes(result, i), row=pos[0], col=pos[1],
            intracellular=bool(u.intracellular[i]), n_spikes=int(u.n_spikes()[i]),
        )  # fmt: skip
    c = result.connectivity
    for k in range(c.n):
        g.add_edge(
            str(int(u.best[c.pre[k]])), str(int(u.best[c.post[k]])),
            kind=KIND_NAMES[int(c.kind[k])], strong=bool(c.strong[k]),
            weight_mv=float(c.weight_v[k] * 1e3), latency_ms=float(c.latency_s[k] * 1e3),
            z=float(c.z[k]), q=float(c.q[k]),
        )  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(g, path)
    return path
