"""The connectivity view of a session: the unit × unit matrix of synaptic weights, the graph
of connections over the electrode positions, the average PSP of the pair clicked in the
matrix, and the whole-array raster of the units' spikes — all from what extraction stored
(:mod:`instrument.session_results`). "Extract" runs ``brainpaste extract`` on the session.

Weights and PSPs in mV, latencies in ms, positions in µm.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from gui.app import cache_axes
from gui.raster import RasterView
from instrument.session_results import SessionConnectivity, SessionSpikes

KIND_COLOURS = {
    "excitatory": (230, 80, 60),
    "inhibitory": (70, 130, 230),
    "electrical": (90, 200, 90),
}


def weight_levels(matrix_mv: np.ndarray) -> tuple[float, float]:
    """Symmetric colour levels around 0 mV (the 98th percentile of |weight|)."""
    finite = np.abs(matrix_mv[np.isfinite(matrix_mv)])
    reach = float(np.percentile(finite, 98)) if finite.size else 1.0
    reach = reach if reach > 0 else 1.0
    return (-reach, reach)


def edge_segments(conn: SessionConnectivity, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """x, y (µm) of pre→post line segments of the connections of ``kind`` (pairs)."""
    c = conn.connections[conn.connections["kind"] == kind]
    pos = conn.unit_position_m * 1e6
    xy = np.empty((2 * c.size, 2))
    xy[0::2] = pos[c["pre_unit"]]
    xy[1::2] = pos[c["post_unit"]]
    return xy[:, 0], xy[:, 1]


class _MatrixBox(pg.ViewBox):
    """The matrix's view box: a click picks a (pre, post) cell."""

    picked = QtCore.Signal(int, int)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)

    def mouseClickEvent(self, ev: object) -> None:  # noqa: N802 (Qt override)
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            super().mouseClickEvent(ev)
            return
        ev.accept()  # type: ignore[attr-defined]
        p = self.mapSceneToView(ev.scenePos())  # type: ignore[attr-defined]
        self.picked.emit(int(np.floor(p.y())), int(np.floor(p.x())))


class ConnectivityView(QtWidgets.QWidget):
    """Matrix, graph, average PSP and raster of one session."""

    extract_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.extract = QtWidgets.QPushButton("Extract connectivity")
        self.extract.setToolTip("run `brainpaste extract` on the session (a child process)")
        self.extract.clicked.connect(self.extract_requested.emit)
        self.extract.setEnabled(False)
        self.info = QtWidgets.QLabel("no session open")
        self.info.setWordWrap(True)
        self.pair_info = QtWidgets.QLabel("click a cell of the matrix: pre (row) → post (column)")
        self.pair_info.setWordWrap(True)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.extract)
        top.addWidget(self.info, 1)

        self.graphics = pg.GraphicsLayoutWidget()
        self.matrix_box = _MatrixBox()
        self.graphics.addItem(self.matrix_box, row=0, col=0)
        self.matrix_img = pg.ImageItem(axisOrder="row-major")
        cmap = pg.colormap.get("CET-D1")
        self.matrix_img.setColorMap(cmap)
        self.matrix_box.addItem(self.matrix_img)
        self.colorbar = pg.ColorBarItem(
            values=(-1.0, 1.0), colorMap=cmap, interactive=False, width=12, label="mV"
        )
        self.colorbar.setImageItem(self.matrix_img)
        self.graphics.addItem(self.colorbar, row=0, col=1)
        self.cmap = cmap
        self.dots = pg.ScatterPlotItem(symbol="s", size=5, pen=None)
        """A dot per connection over the matrix: visible however many units it has."""
        self.matrix_box.addItem(self.dots)
        self.marker = pg.ScatterPlotItem(
            symbol="s", size=11, pxMode=True, pen=pg.mkPen("y", width=2), brush=None
        )
        self.matrix_box.addItem(self.marker)
        self.graph = self.graphics.addPlot(row=0, col=2)
        self.graph.setAspectLocked(True)
        self.graph.invertY(True)
        self.graph.setLabel("bottom", "x (µm)")
        self.graph.setLabel("left", "y (µm)")
        self.graph.addLegend(offset=(5, 5))
        self.edges = {
            name: pg.PlotCurveItem(pen=pg.mkPen((*rgb, 170), width=1.5), connect="pairs", name=name)
            for name, rgb in KIND_COLOURS.items()
        }
        for item in self.edges.values():
            self.graph.addItem(item)
        self.nodes = pg.ScatterPlotItem(size=3, pen=None, brush=(200, 200, 200, 120))
        self.graph.addItem(self.nodes)
        self.pair_edge = pg.PlotCurveItem(pen=pg.mkPen("y", width=3))
        self.graph.addItem(self.pair_edge)
        self.psp = self.graphics.addPlot(row=1, col=0, colspan=2)
        self.psp.setLabel("bottom", "time after the presynaptic spike (ms)")
        self.psp.setLabel("left", "average PSP (mV, at the post electrode)")
        self.psp_curve = self.psp.plot(pen=pg.mkPen("w", width=2))
        self.psp_onset = pg.InfiniteLine(
            angle=90, pen=pg.mkPen("y", style=QtCore.Qt.PenStyle.DashLine)
        )
        self.psp.addItem(self.psp_onset)
        self.psp.addItem(pg.InfiniteLine(angle=0, pen=pg.mkPen((120, 120, 120))))
        self.raster = RasterView()
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 2)
        cache_axes(self.graphics)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.graphics)
        split.addWidget(self.raster)
        split.setSizes([700, 250])
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.pair_info)
        layout.addWidget(split, 1)
        self.conn: SessionConnectivity | None = None
        self.pair: tuple[int, int] | None = None
        self.order = np.zeros(0, dtype=np.int64)
        """The units on the matrix's rows and columns (the connected ones by default)."""
        self.all_units = QtWidgets.QCheckBox("all units on the matrix")
        self.all_units.toggled.connect(lambda _: self._draw_matrix())
        top.addWidget(self.all_units)
        self.matrix_box.picked.connect(self._picked)

    # --- data --------------------------------------------------------------------------
    def show_results(
        self, conn: SessionConnectivity | None, spikes: SessionSpikes | None, note: str = ""
    ) -> None:
        """Draw a session's stored results (None: not extracted yet)."""
        self.conn = conn
        self.pair = None
        if spikes is not None:
            self.raster.set_spikes(
                spikes.times_s,
                spikes.channels,
                spikes.n_channels,
                0.0,
                max(spikes.duration_s, 1e-3),
            )
        if conn is None:
            self.info.setText(note or "no connectivity in this session yet: extract it")
            self.matrix_img.clear()
            self.dots.setData([], [])
            for item in self.edges.values():
                item.setData([], [])
            self.nodes.setData([], [])
            return
        c = conn.connections
        kinds = np.bincount(c["kind"], minlength=len(conn.kind_names))
        text = (
            f"{conn.n_units} units, {c.size} connections ("
            + ", ".join(f"{n} {int(kinds[k])}" for k, n in enumerate(conn.kind_names))
            + f"; strong {int(c['strong'].sum())})"
        )
        if conn.scores:
            s = conn.scores
            text += (
                f" — against ground truth: precision {s['precision']:.3f}, recall "
                f"{s['recall']:.3f}, sign accuracy {s['sign_accuracy']:.3f}"
            )
        self.info.setText(text + (f" — {note}" if note else ""))
        self._draw_matrix()
        for k, name in enumerate(conn.kind_names):
            if name in self.edges:
                x, y = edge_segments(conn, k)
                self.edges[name].setData(x, y, connect="pairs")
        pos = conn.unit_position_m * 1e6
        self.nodes.setData(pos[:, 0], pos[:, 1])
        self.marker.setData([], [])
        self.pair_edge.setData([], [])
        self.psp_curve.setData([], [])
        if c.size:  # start with the most significant connection seen often enough
            z = np.where(c["n_triggers"] >= 20, np.abs(c["z"]), -1.0)
            best = int(np.nanargmax(z if np.nanmax(z) >= 0 else np.abs(c["z"])))
            self.select_pair(int(c["pre_unit"][best]), int(c["post_unit"][best]))

    def _draw_matrix(self) -> None:
        conn = self.conn
        if conn is None:
            return
        self.order = (
            np.arange(conn.n_units) if self.all_units.isChecked() else conn.connected_units()
        )
        n = max(self.order.size, 1)
        matrix = conn.matrix_v(self.order) * 1e3
        levels = weight_levels(matrix)
        if matrix.size:
            self.matrix_img.setImage(matrix.astype(np.float32), levels=levels, autoLevels=False)
        self.matrix_img.setRect(QtCore.QRectF(0, 0, n, n))
        self.colorbar.setLevels(levels)
        self.matrix_box.setRange(QtCore.QRectF(0, 0, n, n), padding=0.02)
        self.marker.setData([], [])
        c = conn.connections
        index = np.full(conn.n_units, -1)
        index[self.order] = np.arange(self.order.size)
        i, j = index[c["pre_unit"]], index[c["post_unit"]]
        keep = (i >= 0) & (j >= 0)
        unit = (c["weight_v"][keep] * 1e3 - levels[0]) / (levels[1] - levels[0])
        colours = self.cmap.map(np.clip(unit, 0, 1), mode="qcolor")
        self.dots.setData(j[keep] + 0.5, i[keep] + 0.5, brush=colours)

    def _picked(self, row: int, col: int) -> None:
        """A click on the matrix: that cell, or the connection drawn nearest to it."""
        conn, n = self.conn, self.order.size
        if conn is None or not (0 <= row < n and 0 <= col < n):
            return
        pre, post = int(self.order[row]), int(self.order[col])
        if conn.find(pre, post) is None and conn.connections.size:
            index = np.full(conn.n_units, -1)
            index[self.order] = np.arange(n)
            i = index[conn.connections["pre_unit"]]
            j = index[conn.connections["post_unit"]]
            shown = np.flatnonzero((i >= 0) & (j >= 0))
            if shown.size:
                d = np.hypot(i[shown] - row, j[shown] - col)
                k = shown[int(np.argmin(d))]
                if d.min() <= max(1.5, n / 120):  # within a dot's size on screen
                    row, col = int(i[k]), int(j[k])
        self.select_pair(int(self.order[row]), int(self.order[col]))

    def select_pair(self, pre: int, post: int) -> bool:
        """Show the average PSP of connection pre → post (unit indices); False when the
        click is off the matrix."""
        conn = self.conn
        if conn is None or not (0 <= pre < conn.n_units and 0 <= post < conn.n_units):
            return False
        self.pair = (pre, post)
        where = {int(u): i for i, u in enumerate(self.order)}
        if pre in where and post in where:
            self.marker.setData([where[post] + 0.5], [where[pre] + 0.5])
        e_pre, e_post = int(conn.unit_electrode[pre]), int(conn.unit_electrode[post])
        name = f"unit {pre} (electrode {e_pre}) → unit {post} (electrode {e_post})"
        row = conn.find(pre, post)
        pos = conn.unit_position_m * 1e6
        self.pair_edge.setData(pos[[pre, post], 0], pos[[pre, post], 1])
        if row is None:
            self.psp_curve.setData([], [])
            self.pair_info.setText(f"{name}: no connection found")
            return True
        r = conn.connections[row]
        self.psp_curve.setData(conn.lags_s * 1e3, conn.average_psp_v[row] * 1e3)
        self.psp_onset.setPos(float(r["latency_s"]) * 1e3)
        kind = conn.kind_names[int(r["kind"])]
        self.pair_info.setText(
            f"{name}: {kind}{' (strong)' if r['strong'] else ''}, weight "
            f"{r['weight_v'] * 1e3:+.3f} mV at the soma ({r['psp_electrode_v'] * 1e3:+.3f} mV at "
            f"the electrode), onset {r['latency_s'] * 1e3:.1f} ms, peak "
            f"{r['peak_latency_s'] * 1e3:.1f} ms, z {r['z']:.1f}, q {r['q']:.2g}, "
            f"{int(r['n_triggers'])} presynaptic spikes"
        )
        return True
