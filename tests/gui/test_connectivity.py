"""The connectivity view of a finished session: extraction run from the window (the real
``brainpaste extract`` in a child process), then the matrix, the graph, a clicked pair's
average PSP and the raster of what it stored."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gui.connectivity_view import edge_segments, weight_levels
from gui.main_window import MainWindow
from instrument.cli import main
from instrument.session_results import read_connectivity, read_spikes
from tests.instrument.extract.synthetic import planted_recording, write_session


@pytest.fixture(scope="module")
def planted_session(tmp_path_factory):
    """A closed session file of a planted network (10 chemical synapses), not extracted:
    copy it before use."""
    planted = planted_recording(duration_s=20.0)
    return write_session(planted.recording, tmp_path_factory.mktemp("planted"))


def test_extract_from_the_window_then_see_matrix_graph_psp_and_raster(
    app, qtbot, planted_session, tmp_path
):
    path = tmp_path / "session.h5"
    shutil.copy(planted_session, path)
    w = MainWindow(None)
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    w.tabs.setCurrentWidget(w.connectivity)
    w.open_session(path.parent)
    qtbot.waitUntil(lambda: "extract it" in w.connectivity.info.text(), timeout=30_000)
    assert w.connectivity.extract.isEnabled()
    w.connectivity.extract.click()
    assert not w.connectivity.extract.isEnabled()  # one extraction at a time
    qtbot.waitUntil(lambda: w.connectivity.conn is not None, timeout=120_000)
    conn = w.connectivity.conn
    assert conn.connections.size == 10 and "extracted just now" in w.connectivity.info.text()
    assert (path.parent / "extract.log").read_text().count("connections: 10") == 1
    # the matrix holds the connected units; a click on a connection shows its average PSP
    order = w.connectivity.order
    assert set(order) == set(conn.connected_units())
    row = conn.connections[0]
    i = int(np.flatnonzero(order == row["pre_unit"])[0])
    j = int(np.flatnonzero(order == row["post_unit"])[0])
    w.connectivity._picked(i, j)
    x, y = w.connectivity.psp_curve.getData()
    np.testing.assert_allclose(x, conn.lags_s * 1e3)
    np.testing.assert_allclose(y, conn.average_psp_v[0] * 1e3, rtol=1e-6)
    kind = conn.kind_names[int(row["kind"])]
    assert kind in w.connectivity.pair_info.text()
    assert f"{row['weight_v'] * 1e3:+.3f} mV" in w.connectivity.pair_info.text()
    # a pair with no connection says so
    w.connectivity.select_pair(int(row["post_unit"]), int(row["post_unit"]))
    assert "no connection found" in w.connectivity.pair_info.text()
    # the raster shows every stored spike
    spikes = read_spikes(path)
    assert w.connectivity.raster.events == spikes.times_s.size > 1000
    w.shutdown()


def test_session_results_and_drawing_helpers(planted_session, tmp_path, capsys):
    path = tmp_path / "session.h5"
    shutil.copy(planted_session, path)
    assert read_connectivity(path) is None and read_spikes(path) is None
    assert main(["extract", str(path), "--quiet", "--out", str(tmp_path)]) == 0, capsys.readouterr()
    conn = read_connectivity(path)
    assert conn is not None
    m = conn.matrix_v()
    c = conn.connections
    assert np.count_nonzero(np.isfinite(m)) == c.size
    assert m[c["pre_unit"][0], c["post_unit"][0]] == c["weight_v"][0]
    sub = conn.matrix_v(conn.connected_units())
    assert sub.shape == (conn.connected_units().size,) * 2
    assert np.count_nonzero(np.isfinite(sub)) == c.size
    assert conn.find(int(c["pre_unit"][1]), int(c["post_unit"][1])) == 1
    lo, hi = weight_levels(m * 1e3)
    assert lo == -hi and hi > 0
    x, _ = edge_segments(conn, 0)
    assert x.size == 2 * np.count_nonzero(c["kind"] == 0)
    np.testing.assert_allclose(
        x[0], conn.unit_position_m[c["pre_unit"][c["kind"] == 0][0], 0] * 1e6
    )
    assert weight_levels(np.full((2, 2), np.nan)) == (-1.0, 1.0)
