"""`brainpaste extract` on real session files: stored groups, exports, NWB, Dask, errors."""

from __future__ import annotations

import csv

import h5py
import networkx as nx
import numpy as np
import pytest

from instrument.cli import main
from instrument.extract.params import load_params
from instrument.extract.pipeline import extract
from instrument.extract.store import read_connections
from instrument.recording import open_recording
from tests.instrument.extract.synthetic import write_session


@pytest.fixture(scope="module")
def session(planted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("session")
    write_session(planted.recording, folder)
    return folder


def test_extract_command_stores_exports_and_scores(session, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["extract", str(session), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "connections:" in text and "precision" in text and "stored /spikes" in text
    table, attrs = read_connections(session / "session.h5")
    assert table.size >= 12
    assert attrs["n_tested"] > 0
    with h5py.File(session / "session.h5", "r") as f:
        assert "recording" in f and "truth" in f  # untouched
        assert f["spikes/unit_best_electrode"].shape[0] == f["spikes"].attrs["n_units"]
        assert f["connectivity/average_psp_v"].shape[0] == table.size
        assert f["connectivity/scores"].attrs["precision"] == 1.0
        best = f["spikes/unit_best_electrode"][()]
        ptr = f["spikes/unit_member_ptr"][()]
        members = f["spikes/unit_members"][()]
    # every exported row maps back to the array: names are best electrodes, members listed
    with (out / "connections.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == table.size
    for row, t in zip(rows, table, strict=True):
        assert int(row["pre"]) == t["pre_electrode"] == best[t["pre_unit"]]
        u = t["post_unit"]
        assert row["post_electrodes"] == ";".join(str(e) for e in members[ptr[u] : ptr[u + 1]])
        assert float(row["weight_mv"]) == pytest.approx(t["weight_v"] * 1e3, rel=1e-3)
    graph = nx.read_graphml(out / "connectivity.graphml")
    assert graph.number_of_edges() == table.size
    assert set(graph.nodes) == {str(b) for b in best}
    assert (out / "average_psp.png").stat().st_size > 10_000
    assert (out / "connectivity_matrix.png").stat().st_size > 10_000
    # a second run replaces the groups
    assert main(["extract", str(session / "session.h5"), "--out", str(out), "--quiet"]) == 0
    again, _ = read_connections(session / "session.h5")
    assert np.array_equal(again, table)


def test_nwb_input_gives_the_same_map_as_hdf5(session, tmp_path):
    from instrument.nwb import export_nwb

    nwb = export_nwb(session, tmp_path / "rec.nwb")
    params = load_params()
    with open_recording(session) as rec:
        a = extract(rec, params, progress=False)
    with open_recording(nwb) as rec:
        assert rec.attrs["format"] == "nwb"
        b = extract(rec, params, progress=False)
    assert a.connectivity.n == b.connectivity.n > 0
    for name in ("pre", "post", "kind", "weight_v", "latency_s", "p"):
        assert np.array_equal(getattr(a.connectivity, name), getattr(b.connectivity, name))
    out = tmp_path / "nwb_out"
    assert main(["extract", str(nwb), "--out", str(out), "--quiet"]) == 0
    table, _ = read_connections(out / "extraction.h5")
    assert table.size == a.connectivity.n


def test_dask_and_single_process_agree(session):
    from instrument.extract.distributed import extract_distributed

    params = load_params()
    with open_recording(session) as rec:
        single = extract(rec, params, progress=False)
    dist = extract_distributed(session / "session.h5", params, address="local", progress=False)
    assert dist.connectivity.n == single.connectivity.n > 0
    names = ("pre", "post", "kind", "strong", "weight_v", "psp_electrode_v", "latency_s",
             "z", "p", "q", "noise_v", "n_triggers", "event_probability", "average_v")  # fmt: skip
    for name in names:
        a, b = getattr(single.connectivity, name), getattr(dist.connectivity, name)
        assert np.array_equal(a, b, equal_nan=True), name
    assert np.array_equal(single.units.spike_sample, dist.units.spike_sample)
    assert single.n_tested == dist.n_tested


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    with h5py.File(junk, "w") as f:
        f.create_dataset("x", data=[1, 2, 3])
    assert main(["extract", str(junk), "--quiet"]) == 1
    assert "error" in capsys.readouterr().err
    lab = tmp_path / "lab.toml"
    lab.write_text("[extraction]\nfdr = 2.0\n")
    assert main(["extract", str(junk), "--config", str(lab), "--quiet"]) == 2
    assert "extraction.fdr" in capsys.readouterr().err


def test_dask_scheduler_address_from_the_command_line(session, tmp_path, capsys):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:  # fmt: skip
        out = tmp_path / "dask_out"
        code = main(["extract", str(session), "--dask", cluster.scheduler_address,
                     "--out", str(out), "--no-store", "--quiet"])  # fmt: skip
    assert code == 0
    assert "connections:" in capsys.readouterr().out
    assert (out / "connections.csv").exists()
