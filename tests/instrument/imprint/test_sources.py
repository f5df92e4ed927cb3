"""Imprint reads the map and spikes extraction stored (its layout, its reader)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from instrument.imprint.connectivity import ConnectivityError
from instrument.imprint.sources import load_connectivity, load_spikes
from tests.instrument.imprint.helpers import make_session

store = pytest.importorskip("instrument.extract.store")


def _write_extraction(path):
    rows = np.zeros(3, dtype=store.CONNECTION_DTYPE)
    rows["pre_unit"], rows["post_unit"] = [0, 1, 2], [1, 2, 0]
    rows["pre_electrode"], rows["post_electrode"] = [130, 2049, 4000], [2049, 4000, 130]
    rows["weight_v"] = [1.2e-3, -0.4e-3, 0.3e-3]
    rows["latency_s"] = [2e-3, 3e-3, 0.1e-3]
    rows["kind"] = [0, 1, 2]
    with h5py.File(path, "a", locking=False) as f:
        c = f.create_group("connectivity")
        c.attrs["kind_names"] = json.dumps(["excitatory", "inhibitory", "electrical"])
        c.create_dataset("connections", data=rows)
        s = f.create_group("spikes")
        s.attrs["sample_rate_hz"] = 10_000.0
        s.create_dataset("unit_best_electrode", data=np.array([130, 2049, 4000, 77], "<i4"))
        s.create_dataset("unit_spike_ptr", data=np.array([0, 2, 3, 3, 4], "<i8"))
        s.create_dataset("spike_sample", data=np.array([10, 20_000, 5, 7], "<i8"))


def test_the_stored_map_and_spikes_are_read_by_best_electrode(tmp_path):
    path = make_session(tmp_path)
    with pytest.raises(ConnectivityError, match="brainpaste extract"):
        load_connectivity(path)
    _write_extraction(path)
    cmap = load_connectivity(path)
    assert cmap.pre.tolist() == [130, 2049, 4000] and cmap.post.tolist() == [2049, 4000, 130]
    assert cmap.weight_v.tolist() == pytest.approx([1.2e-3, -0.4e-3, 0.3e-3])
    assert cmap.kind.tolist() == ["excitatory", "inhibitory", "electrical"]
    assert cmap.units.tolist() == [77, 130, 2049, 4000]  # a unit without connections too
    spikes = load_spikes(path)
    assert spikes[130].tolist() == pytest.approx([1e-3, 2.0]) and spikes[77].tolist() == [7e-4]


def test_the_csv_export_is_read_in_its_units(tmp_path):
    csv = tmp_path / "connections.csv"
    csv.write_text(
        "pre,post,pre_electrodes,post_electrodes,class,strong,weight_mv,psp_electrode_mv,"
        "latency_ms,peak_latency_ms,z,p,q,noise_mv,n_triggers,event_probability\n"
        "130,2049,130;131,2049,excitatory,False,1.2,0.3,2.0,6.0,5,0.001,0.01,0.05,200,0.02\n"
        "2049,130,2049,130,inhibitory,False,-0.5,-0.1,3.0,8.0,4,0.001,0.01,0.05,150,0.0\n"
    )
    cmap = load_connectivity(tmp_path / "unused.h5", csv)
    assert cmap.weight_v.tolist() == pytest.approx([1.2e-3, -0.5e-3])
    assert cmap.latency_s.tolist() == pytest.approx([2e-3, 3e-3])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConnectivityError, match="not an extraction export"):
        load_connectivity(tmp_path / "unused.h5", tmp_path / "bad.csv")
