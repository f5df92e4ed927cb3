"""The imprint view: progress of ``brainpaste imprint`` on the open session, the target and
read-back conductance maps side by side, the error histogram against the tolerance, and
start / pause / continue / abort / resume.

The run is the command line's own (a child process, :mod:`instrument.imprint_control`);
what is shown is read from the session file's journal (:mod:`instrument.imprint_progress`)
on a worker thread, once a second while a run goes on. Conductances are shown in µS.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from gui.app import cache_axes
from instrument.imprint.settings import TECHNOLOGIES
from instrument.imprint_progress import ImprintProgress

US = 1e6


class ImprintView(QtWidgets.QWidget):
    """Controls and pictures of one session's imprint."""

    start_requested = QtCore.Signal(str, bool)
    """(technology, resume)"""
    pause_requested = QtCore.Signal(bool)
    """True: pause; False: continue."""
    abort_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.technology = QtWidgets.QComboBox()
        self.technology.addItems(list(TECHNOLOGIES))
        self.start = QtWidgets.QPushButton("Start imprint")
        self.pause = QtWidgets.QPushButton("Pause")
        self.pause.setCheckable(True)
        self.abort = QtWidgets.QPushButton("Abort")
        self.resume = QtWidgets.QPushButton("Resume from journal")
        self.start.clicked.connect(lambda: self.start_requested.emit(self.tech(), False))
        self.resume.clicked.connect(lambda: self.start_requested.emit(self.tech(), True))
        self.pause.toggled.connect(self._pause_toggled)
        self.abort.clicked.connect(self.abort_requested.emit)
        self.tile = QtWidgets.QSpinBox(minimum=0, maximum=0)
        self.tile.setPrefix("tile ")
        self.tile.valueChanged.connect(lambda _: self._draw())
        self.progress = QtWidgets.QProgressBar()
        self.progress.setFormat("%v / %m cells settled")
        self.state = QtWidgets.QLabel("no session open")
        self.state.setWordWrap(True)
        bar = QtWidgets.QHBoxLayout()
        for w in (
            QtWidgets.QLabel("technology"),
            self.technology,
            self.start,
            self.pause,
            self.abort,
            self.resume,
            self.tile,
        ):
            bar.addWidget(w)
        bar.addStretch(1)

        self.graphics = pg.GraphicsLayoutWidget()
        self.target_box = self.graphics.addViewBox(row=0, col=0, lockAspect=True, invertY=True)
        self.read_box = self.graphics.addViewBox(row=0, col=1, lockAspect=True, invertY=True)
        self.target_img = pg.ImageItem(axisOrder="row-major")
        self.read_img = pg.ImageItem(axisOrder="row-major")
        cmap = pg.colormap.get("viridis")
        for box, img in ((self.target_box, self.target_img), (self.read_box, self.read_img)):
            img.setColorMap(cmap)
            box.addItem(img)
        self.colorbar = pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=cmap, interactive=False, width=12, label="µS"
        )
        self.colorbar.setImageItem([self.target_img, self.read_img])
        self.graphics.addItem(self.colorbar, row=0, col=2)
        self.graphics.addLabel("target conductance", row=1, col=0)
        self.graphics.addLabel("read back", row=1, col=1)
        self.hist = self.graphics.addPlot(row=2, col=0, colspan=3)
        self.hist.setLabel("bottom", "read − target (µS), programmed cells")
        self.hist.setLabel("left", "cells")
        self.hist_curve = pg.PlotCurveItem(fillLevel=0, brush=(80, 140, 220, 160), pen="w")
        self.hist.addItem(self.hist_curve)
        self.tol_lines = [
            pg.InfiniteLine(angle=90, pen=pg.mkPen("r", style=QtCore.Qt.PenStyle.DashLine))
            for _ in range(2)
        ]
        for line in self.tol_lines:
            self.hist.addItem(line)
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(2, 2)
        cache_axes(self.graphics)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.progress)
        layout.addWidget(self.state)
        layout.addWidget(self.graphics, 1)
        self.shown: ImprintProgress | None = None
        self.set_running(False, can_start=False)

    def tech(self) -> str:
        return self.technology.currentText()

    def _pause_toggled(self, on: bool) -> None:
        self.pause.setText("Continue" if on else "Pause")
        self.pause_requested.emit(on)

    def set_running(
        self, running: bool, *, can_start: bool = True, can_resume: bool = False
    ) -> None:
        """Enable the buttons that make sense now."""
        self.start.setEnabled(can_start and not running)
        self.resume.setEnabled(can_resume and not running)
        self.pause.setEnabled(running)
        self.abort.setEnabled(running)
        self.technology.setEnabled(not running)
        if not running and self.pause.isChecked():
            self.pause.blockSignals(True)
            self.pause.setChecked(False)
            self.pause.setText("Pause")
            self.pause.blockSignals(False)

    def show_progress(self, progress: ImprintProgress | None, note: str = "") -> None:
        """Draw an imprint's state (None: the session has none yet)."""
        self.shown = progress
        if progress is None:
            self.progress.setMaximum(1)
            self.progress.setValue(0)
            self.state.setText(note or "this session holds no imprint yet")
            return
        p = progress
        self.progress.setMaximum(max(p.cells, 1))
        self.progress.setValue(p.settled)
        if p.technology in TECHNOLOGIES and self.technology.isEnabled():
            self.technology.setCurrentText(p.technology)
        self.tile.setMaximum(max(p.target_s.shape[0] - 1, 0))
        tol = p.tolerance_s * US
        summary = (
            f"{p.technology}: {p.verified} verified, {p.failed} failed, {p.skipped} skipped "
            f"(stuck), {p.pending} pending of {p.cells} cells; {p.pulses:,} pulses. "
            f"Programmed cells within ±{tol:.3g} µS: {p.within_tolerance}/{p.error_s.size}"
        )
        if p.report:
            s = p.report.get("summary", {})
            if "yield_programmable" in s:
                summary += f"; final yield {100 * s['yield_programmable']:.2f} %"
        self.state.setText(summary + (f" — {note}" if note else ""))
        self._draw()

    def _draw(self) -> None:
        p = self.shown
        if p is None or p.target_s.size == 0:
            return
        k = min(self.tile.value(), p.target_s.shape[0] - 1)
        levels = (p.g_min_s * US, p.g_max_s * US)
        if not (np.isfinite(levels).all() and levels[1] > levels[0]):
            levels = (0.0, 1.0)
        target = (p.target_s[k] * US).astype(np.float32)
        read = (p.read_s[k] * US).astype(np.float32)
        self.target_img.setImage(target, levels=levels, autoLevels=False)
        self.read_img.setImage(read, levels=levels, autoLevels=False)
        self.colorbar.setLevels(levels)
        rows, cols = target.shape
        for box in (self.target_box, self.read_box):
            box.setRange(QtCore.QRectF(0, 0, cols, rows), padding=0.02)
        err = p.error_s * US
        tol = p.tolerance_s * US
        if err.size:
            reach = max(float(np.percentile(np.abs(err), 99)), 2 * tol, 1e-9)
            edges = np.linspace(-reach, reach, 61)
            counts, _ = np.histogram(np.clip(err, -reach, reach), edges)
            self.hist_curve.setData(edges, counts.astype(float), stepMode="center")
        else:  # nothing programmed yet: an empty histogram
            empty = np.array([-1.0, 1.0]) * max(tol, 1e-9)
            self.hist_curve.setData(empty, np.zeros(1), stepMode="center")
        for line, x in zip(self.tol_lines, (-tol, tol), strict=True):
            line.setPos(x if np.isfinite(x) else 0.0)
