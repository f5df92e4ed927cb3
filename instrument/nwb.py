"""NWB export and import (pynwb): our recordings for SpikeInterface, DANDI and other labs'
tools, and their recordings for ours.

Export (:func:`export_nwb`) writes one ``ElectricalSeries`` in ``acquisition`` holding the
int16 codes unchanged, with ``channel_conversion`` = each channel's gain and the
electrode table carrying the geometry (``rel_x``/``rel_y`` and ``x``/``y`` in µm, the
SpikeInterface convention), each channel's offset (``offset_v``) and clamp mode. Gaps
become ``invalid_times`` intervals (their samples stay -32768). The emulator's ground
truth, when present, goes to the ``ground_truth`` processing module (tables
``neurons``, ``synapses``, ``electrodes``) plus its attributes as JSON.

Import (:func:`open_nwb_recording`) turns the first ``ElectricalSeries`` of any NWB file
into a :class:`~instrument.recording.Recording`, lazily (the data stay on disk).
Integer data keep their codes; float data stay floats (``Recording.volts`` is right
for both).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.data_utils import GenericDataChunkIterator

from instrument.recording import GroundTruth, Recording, open_hdf5_recording
from instrument.session_files import find_recording

SERIES_NAME = "ElectricalSeries"
TRUTH_MODULE = "ground_truth"
UM = 1e-6
MODE_NAMES = ("current_clamp", "voltage_clamp")


class NwbError(ValueError):
    """An NWB file that cannot be written or read as a recording."""


def _compression(name: str) -> dict[str, Any]:
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if name == "none":
        return {}
    if name == "blosc-lz4-bitshuffle":
        codec = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE)
        return {
            "compression": codec.filter_id,
            "compression_opts": codec.filter_options,
            "allow_plugin_filters": True,
        }
    raise NwbError(f"unknown compression {name!r}: gzip, lzf, none or blosc-lz4-bitshuffle")


class _TraceIterator(GenericDataChunkIterator):
    """Streams the traces of an HDF5 dataset into NWB block by block (bounded memory)."""

    def __init__(self, dataset: h5py.Dataset, chunk_shape: tuple[int, int], **kwargs: Any) -> None:
        self._dataset = dataset
        super().__init__(chunk_shape=chunk_shape, **kwargs)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        return self._dataset[selection]

    def _get_maxshape(self) -> tuple[int, ...]:
        return tuple(self._dataset.shape)

    def _get_dtype(self) -> np.dtype:
        return self._dataset.dtype


def _start_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.now(dt.UTC)


def export_nwb(
    source: str | Path,
    out: str | Path | None = None,
    *,
    compression: str = "gzip",
    buffer_gb: float = 0.25,
) -> Path:
    """Write the recording at ``source`` (session folder or file) to NWB; returns the path.

    ``out`` defaults to the session file's name with ``.nwb``; an existing file is
    never overwritten.
    """
    from hdmf.common import VectorData
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.core import DynamicTable
    from pynwb.ecephys import ElectricalSeries, ElectrodesTable

    path = find_recording(source)
    target = Path(out) if out is not None else path.with_suffix(".nwb")
    if target.exists():
        raise NwbError(f"{target} exists; export never overwrites")
    options = _compression(compression)
    with open_hdf5_recording(path) as rec:
        attrs = rec.attrs
        identity = str(attrs.get("instrument_identity", "")) or "CNEA board"
        nwbfile = NWBFile(
            session_description=f"CNEA recording of a neuronal culture ({identity})",
            identifier=str(uuid.uuid4()),
            session_start_time=_start_time(str(attrs.get("start_time_utc", ""))),
            source_script="brainpaste export-nwb",
            source_script_file_name=str(path),
            notes=f"board_settings: {attrs.get('board_settings', '{}')}; "
            f"stop_reason: {attrs.get('stop_reason', '')}",
        )
        device = nwbfile.create_device(name="CNEA", description=identity)
        group = nwbfile.create_electrode_group(
            name="cnea_array",
            description="64 x 64 CMOS nanoelectrode array, one amplifier per electrode",
            location="dissociated neuronal culture on the array",
            device=device,
        )
        n = rec.n_channels
        pos_um = rec.positions_m / UM
        mode = (
            rec._file["recording/channel_mode"][()]
            if rec._file is not None and "channel_mode" in rec._file["recording"]
            else np.zeros(n, dtype=np.uint8)
        )
        columns = [
            ("location", "where the electrode is", np.full(n, "culture")),
            ("group", "electrode group", [group] * n),
            ("group_name", "electrode group name", np.full(n, group.name)),
            ("x", "electrode x on the array, µm", pos_um[:, 0]),
            ("y", "electrode y on the array, µm", pos_um[:, 1]),
            ("z", "electrode z, µm", np.zeros(n)),
            ("rel_x", "electrode x on the array, µm", pos_um[:, 0]),
            ("rel_y", "electrode y on the array, µm", pos_um[:, 1]),
            ("rel_z", "electrode z, µm", np.zeros(n)),
            ("offset_v", "value at code 0: V (current clamp) or A", np.asarray(rec.offset_v)),
            ("clamp_mode", "current_clamp (V) or voltage_clamp (A)", np.asarray(MODE_NAMES)[mode]),
            ("channel", "board channel = row * 64 + col", np.arange(n)),
        ]
        if rec.truth is not None:
            columns += [
                (
                    "truth_neuron",
                    "ground truth: coupled neuron (-1 none)",
                    rec.truth.electrode_neuron,
                ),
                ("truth_coupling", "ground truth: coupling", rec.truth.electrode_coupling),
            ]
        nwbfile.electrodes = ElectrodesTable(
            id=list(range(n)),
            columns=[VectorData(name=k, description=d, data=v) for k, d, v in columns],
        )
        region = nwbfile.create_electrode_table_region(list(range(n)), "every electrode")
        chunk = (min(max(rec.n_samples, 1), 1024), min(n, 64))
        iterator = _TraceIterator(rec.traces, chunk_shape=chunk, buffer_gb=buffer_gb)
        offsets = np.unique(rec.offset_v)
        series = ElectricalSeries(
            name=SERIES_NAME,
            data=H5DataIO(iterator, chunks=chunk, **options),
            electrodes=region,
            rate=float(rec.sample_rate_hz),
            starting_time=0.0,
            conversion=1.0,
            channel_conversion=np.asarray(rec.gain_v, dtype=np.float64),
            offset=float(offsets[0]) if len(offsets) == 1 else 0.0,
            description="ADC codes of every CNEA channel; -32768 marks lost samples",
            comments="value = code * channel_conversion + offset_v (electrode table); "
            "voltage-clamp channels are in A",
        )
        nwbfile.add_acquisition(series)
        for first, end in rec.gaps:
            nwbfile.add_invalid_time_interval(
                start_time=float(first) / rec.sample_rate_hz,
                stop_time=float(end) / rec.sample_rate_hz,
                tags=["gap"],
                timeseries=[series],
            )
        if rec.truth is not None:
            _add_truth(nwbfile, rec.truth, DynamicTable)
        target.parent.mkdir(parents=True, exist_ok=True)
        with NWBHDF5IO(str(target), "w") as io:
            io.write(nwbfile)
    return target


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _add_truth(nwbfile: Any, truth: GroundTruth, table_cls: type) -> None:
    module = nwbfile.create_processing_module(
        TRUTH_MODULE, "Emulator ground truth: neurons, synapses, electrode coupling (SI units)"
    )
    neurons = table_cls(
        name="neurons",
        description=json.dumps(truth.attrs, default=_json_value),
        id=list(range(len(truth.neuron_excitatory))),
    )
    neurons.add_column("x_m", "soma x, m", data=truth.neuron_position_m[:, 0])
    neurons.add_column("y_m", "soma y, m", data=truth.neuron_position_m[:, 1])
    neurons.add_column("excitatory", "excitatory (Dale)", data=truth.neuron_excitatory)
    synapses = table_cls(
        name="synapses", description="every synapse", id=list(range(len(truth.synapse_pre)))
    )
    for name, doc in (
        ("synapse_pre", "presynaptic neuron"),
        ("synapse_post", "postsynaptic neuron"),
        ("synapse_weight_v", "peak PSP at the soma, V"),
        ("synapse_delay_s", "delay to PSP onset, s"),
        ("synapse_kind", "0 excitatory, 1 inhibitory, 2 electrical"),
    ):
        synapses.add_column(name, doc, data=np.asarray(getattr(truth, name)))
    module.add(neurons)
    module.add(synapses)


def _truth_from(nwb: Any) -> GroundTruth | None:
    if TRUTH_MODULE not in nwb.processing:
        return None
    module = nwb.processing[TRUTH_MODULE]
    neurons, synapses = module["neurons"], module["synapses"]
    electrodes = nwb.electrodes
    if "truth_neuron" not in electrodes.colnames:
        return None
    arrays = {
        "neuron_position_m": np.stack(
            [np.asarray(neurons["x_m"][:]), np.asarray(neurons["y_m"][:])], axis=1
        ),
        "neuron_excitatory": np.asarray(neurons["excitatory"][:], dtype=bool),
        "electrode_neuron": np.asarray(electrodes["truth_neuron"][:], dtype=np.int32),
        "electrode_coupling": np.asarray(electrodes["truth_coupling"][:], dtype=np.float32),
        "synapse_pre": np.asarray(synapses["synapse_pre"][:], dtype=np.int32),
        "synapse_post": np.asarray(synapses["synapse_post"][:], dtype=np.int32),
        "synapse_weight_v": np.asarray(synapses["synapse_weight_v"][:], dtype=np.float32),
        "synapse_delay_s": np.asarray(synapses["synapse_delay_s"][:], dtype=np.float32),
        "synapse_kind": np.asarray(synapses["synapse_kind"][:], dtype=np.uint8),
    }
    try:
        attrs = json.loads(neurons.description)
    except (TypeError, ValueError):
        attrs = {}
    return GroundTruth.from_arrays(arrays, attrs)


def _column(table: Any, names: tuple[str, ...], rows: np.ndarray) -> np.ndarray | None:
    for name in names:
        if name in table.colnames:
            values = np.asarray(table[name][:], dtype=np.float64)[rows]
            if not np.all(np.isnan(values)):
                return values
    return None


def open_nwb_recording(path: str | Path) -> Recording:
    """The first ``ElectricalSeries`` of an NWB file as a :class:`Recording` (lazy data)."""
    from pynwb import NWBHDF5IO
    from pynwb.ecephys import ElectricalSeries

    io = NWBHDF5IO(str(path), "r")
    try:
        nwb = io.read()
        series = [s for s in nwb.acquisition.values() if isinstance(s, ElectricalSeries)]
        if not series:
            for module in nwb.processing.values():
                series += [
                    s for s in module.data_interfaces.values() if isinstance(s, ElectricalSeries)
                ]
        if not series:
            raise NwbError(f"{path} has no ElectricalSeries")
        es = series[0]
        rate = es.rate
        if rate is None:
            stamps = np.asarray(es.timestamps[: min(len(es.timestamps), 10_000)])
            steps = np.diff(stamps)
            if len(steps) == 0 or np.ptp(steps) > 1e-6 * np.mean(steps):
                raise NwbError(f"{path}: {es.name} is not regularly sampled")
            rate = 1.0 / float(np.mean(steps))
        rows = np.asarray(es.electrodes.data[:], dtype=np.int64)
        table = es.electrodes.table
        n = len(rows)
        conversion = float(es.conversion)
        channel_conv = (
            np.asarray(es.channel_conversion[:], dtype=np.float64)
            if es.channel_conversion is not None
            else np.ones(n)
        )
        gain = conversion * channel_conv
        offset_col = _column(table, ("offset_v",), rows)
        offset = offset_col if offset_col is not None else np.full(n, float(es.offset))
        xy = None
        for cols in (("rel_x", "rel_y"), ("x", "y")):
            x = _column(table, (cols[0],), rows)
            y = _column(table, (cols[1],), rows)
            if x is not None and y is not None:
                xy = np.stack([x, y], axis=1) * UM
                break
        if xy is None:
            raise NwbError(f"{path}: the electrode table has no x/y (rel_x/rel_y) positions")
        starting = float(es.starting_time or 0.0)
        gaps = []
        if nwb.invalid_times is not None:
            starts = np.asarray(nwb.invalid_times["start_time"][:])
            stops = np.asarray(nwb.invalid_times["stop_time"][:])
            for a, b in zip(starts, stops, strict=True):
                gaps.append((round((a - starting) * rate), round((b - starting) * rate)))
        truth = _truth_from(nwb)
        return Recording(
            traces=es.data,
            sample_rate_hz=float(rate),
            gain_v=gain,
            offset_v=offset,
            positions_m=xy,
            gaps=np.asarray(gaps, dtype=np.int64).reshape(-1, 2),
            truth=truth,
            source=str(path),
            attrs={
                "format": "nwb",
                "series": es.name,
                "session_start_time": str(nwb.session_start_time),
            },
            _file=io,
        )
    except Exception:
        io.close()
        raise
