"""NWB export and import: a round trip keeps traces, rate, geometry, gaps and ground truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from instrument.cli import main
from instrument.nwb import NwbError, export_nwb, open_nwb_recording
from instrument.recording import GAP_FILL, open_recording
from instrument.storage import SessionWriter
from tests.instrument.test_storage import make_info


@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "sess"
    writer = SessionWriter(folder / "session.h5", make_info(), chunk_samples=64)
    rng = np.random.default_rng(0)
    data = rng.integers(-3000, 3000, (300, 8), dtype=np.int16)
    writer.write(0, data[:128])
    writer.add_gap(128, 192, "frames lost")
    writer.extend(192)
    writer.write(192, data[192:])
    writer.close(stop_reason="duration reached")
    data[128:192] = GAP_FILL
    return folder, data


def test_round_trip(session):
    folder, data = session
    path = export_nwb(folder)
    assert path == folder / "session.nwb"
    with open_recording(folder / "session.h5") as h5, open_nwb_recording(path) as nwb:
        np.testing.assert_array_equal(nwb.traces[()], data)
        assert nwb.traces.dtype == np.int16
        assert nwb.sample_rate_hz == h5.sample_rate_hz == 10_000.0
        np.testing.assert_allclose(nwb.positions_m, h5.positions_m, rtol=0, atol=1e-12)
        np.testing.assert_allclose(nwb.gain_v, h5.gain_v)
        np.testing.assert_allclose(nwb.offset_v, h5.offset_v)
        assert nwb.gaps.tolist() == [[128, 192]]
        assert nwb.truth is not None
        np.testing.assert_array_equal(nwb.truth.synapse_post, h5.truth.synapse_post)
        np.testing.assert_array_equal(nwb.truth.electrode_neuron, h5.truth.electrode_neuron)
        assert nwb.truth.attrs["n_neurons"] == 3
        np.testing.assert_allclose(nwb.volts(0, 10), h5.volts(0, 10))


def test_never_overwrites(session):
    folder, _ = session
    export_nwb(folder)
    with pytest.raises(NwbError, match="never overwrites"):
        export_nwb(folder)


def test_cli_export(session, tmp_path, capsys):
    folder, data = session
    out = tmp_path / "elsewhere" / "rec.nwb"
    assert main(["export-nwb", str(folder), "--out", str(out), "--compression", "none"]) == 0
    assert str(out) in capsys.readouterr().out
    with open_recording(out) as rec:
        np.testing.assert_array_equal(rec.traces[()], data)
    assert main(["export-nwb", str(tmp_path / "missing")]) == 1


def test_foreign_nwb_with_float_data_and_xy(tmp_path):
    """Another lab's file: float volts, x/y only, no truth — still a Recording."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    nwbfile = NWBFile("other lab", "id-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    device = nwbfile.create_device("probe")
    group = nwbfile.create_electrode_group("shank", "d", "CA1", device)
    for i in range(3):
        nwbfile.add_electrode(group=group, location="CA1", x=10.0 * i, y=5.0, z=0.0)
    region = nwbfile.create_electrode_table_region([0, 1, 2], "all")
    values = np.linspace(-1, 1, 30, dtype=np.float32).reshape(10, 3)
    nwbfile.add_acquisition(
        ElectricalSeries(name="raw", data=values, electrodes=region, rate=30_000.0, conversion=1e-3)
    )
    path = tmp_path / "other.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    with open_recording(path) as rec:
        assert rec.sample_rate_hz == 30_000.0 and rec.n_channels == 3
        assert rec.positions_m[2].tolist() == pytest.approx([20e-6, 5e-6])
        np.testing.assert_allclose(rec.volts(0, 10), values * 1e-3, rtol=1e-6)
        assert rec.truth is None and len(rec.gaps) == 0


def test_nwb_without_series_is_a_clear_error(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile

    path = tmp_path / "empty.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(NWBFile("empty", "id-2", dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    with pytest.raises(NwbError, match="no ElectricalSeries"):
        open_recording(path)
