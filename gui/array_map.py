"""The array map: a rows × cols heatmap of one live measure per electrode (RMS, spike rate,
access quality, peak-to-peak), where the operator selects electrodes — click one, drag a
rectangle (Shift or Ctrl adds to the selection) — and asks to electroporate them."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from gui.app import cache_axes

MEASURES = {
    "RMS": ("µV", 1e6),
    "spike rate": ("Hz", 1.0),
    "access": ("0-1", 1.0),
    "peak-to-peak": ("mV", 1e3),
}
"""Measure name → (display unit, factor from SI)."""


LEVELS_REFRESH_S = 1.0
"""How often the colours re-span the values shown, s."""


def robust_levels(values: np.ndarray, measure: str) -> tuple[float, float]:
    """Colour levels: fixed 0..1 for access, else the 1st-99th percentile of finite values
    (never an empty or zero-width range: ImageItem needs real levels)."""
    if measure == "access":
        return (0.0, 1.0)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [1, 99])
    if measure == "spike rate":
        lo = 0.0
    if not hi > lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    return (float(lo), float(hi))


class _SelectBox(pg.ViewBox):
    """A ViewBox where a left click picks a cell and a left drag picks a rectangle."""

    picked = QtCore.Signal(int, int, int, int, bool)
    """(row0, col0, row1, col1, add) inclusive."""

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.band = QtWidgets.QGraphicsRectItem()
        self.band.setPen(pg.mkPen("y", width=1, style=QtCore.Qt.PenStyle.DashLine))
        self.band.setZValue(1e6)
        self.band.hide()
        self.addItem(self.band, ignoreBounds=True)

    @staticmethod
    def _add(ev: object) -> bool:
        mods = ev.modifiers()  # type: ignore[attr-defined]
        keys = QtCore.Qt.KeyboardModifier
        return bool(mods & (keys.ShiftModifier | keys.ControlModifier))

    def mouseClickEvent(self, ev: object) -> None:  # noqa: N802 (Qt override)
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            super().mouseClickEvent(ev)
            return
        ev.accept()  # type: ignore[attr-defined]
        if ev.double():  # type: ignore[attr-defined]
            return  # the first click of the pair already picked the cell
        p = self.mapSceneToView(ev.scenePos())  # type: ignore[attr-defined]
        r, c = int(np.floor(p.y())), int(np.floor(p.x()))
        self.picked.emit(r, c, r, c, self._add(ev))

    def mouseDragEvent(self, ev: object, axis: int | None = None) -> None:  # noqa: N802
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()  # type: ignore[attr-defined]
        a = self.mapSceneToView(ev.buttonDownScenePos())  # type: ignore[attr-defined]
        b = self.mapSceneToView(ev.scenePos())  # type: ignore[attr-defined]
        rect = QtCore.QRectF(a, b).normalized()
        if ev.isFinish():  # type: ignore[attr-defined]
            self.band.hide()
            r0, r1 = sorted((int(np.floor(a.y())), int(np.floor(b.y()))))
            c0, c1 = sorted((int(np.floor(a.x())), int(np.floor(b.x()))))
            self.picked.emit(r0, c0, r1, c1, self._add(ev))
        else:
            self.band.setRect(rect)
            self.band.show()


class _Outline(pg.ScatterPlotItem):
    """Squares around the selected cells; clicks go through to the map."""

    def mouseClickEvent(self, ev: object) -> None:  # noqa: N802 (Qt override)
        ev.ignore()  # type: ignore[attr-defined]


class ArrayMap(QtWidgets.QWidget):
    """The heatmap, its measure selector, the selection, and the electroporation controls."""

    selection_changed = QtCore.Signal(object)
    """np.ndarray of the selected channels (sorted)."""
    electroporate_requested = QtCore.Signal(object, float, float)
    """(channels, amplitude V, width s)"""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows, self.cols = 64, 64
        self.measure = QtWidgets.QComboBox()
        self.measure.addItems(list(MEASURES))
        self.measure.currentTextChanged.connect(self._measure_changed)
        self.graphics = pg.GraphicsLayoutWidget()
        self.box = _SelectBox()
        self.graphics.addItem(self.box, row=0, col=0)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.box.addItem(self.image)
        self.colorbar = pg.ColorBarItem(
            values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"), interactive=False, width=12
        )
        self.colorbar.setImageItem(self.image)
        self.graphics.addItem(self.colorbar, row=0, col=1)
        cache_axes(self.graphics)
        self.outline = _Outline(
            symbol="s", size=1.0, pxMode=False, pen=pg.mkPen("r", width=1.5), brush=None
        )
        # drawn from a cached pixmap while the selection stays (the map repaints each frame)
        self.outline.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.box.addItem(self.outline)
        self.box.picked.connect(self._picked)
        self.hover = QtWidgets.QLabel(" ")
        self.graphics.scene().sigMouseMoved.connect(self._hovered)
        self.amplitude = QtWidgets.QDoubleSpinBox(
            minimum=0.1, maximum=3.0, decimals=2, singleStep=0.1, value=2.5, suffix=" V"
        )
        self.width_ms = QtWidgets.QDoubleSpinBox(
            minimum=0.001, maximum=5.0, decimals=3, singleStep=0.1, value=1.0, suffix=" ms"
        )
        self.electroporate = QtWidgets.QPushButton("Electroporate selection…")
        self.electroporate.clicked.connect(self._electroporate_clicked)
        self.selected_label = QtWidgets.QLabel("nothing selected")
        top = QtWidgets.QHBoxLayout()
        top.addWidget(QtWidgets.QLabel("Array map"))
        top.addWidget(self.measure)
        top.addStretch(1)
        top.addWidget(self.selected_label)
        ep = QtWidgets.QHBoxLayout()
        ep.addWidget(self.electroporate)
        ep.addWidget(self.amplitude)
        ep.addWidget(self.width_ms)
        ep.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.hover)
        layout.addLayout(ep)
        self.values: dict[str, np.ndarray] = {}
        self.selected = np.zeros(0, dtype=np.int64)
        self.levels = (0.0, 1.0)
        self._levels_of = ""
        self._levels_at = 0.0
        self.set_grid(64, 64)

    # --- data -----------------------------------------------------------------------------
    def set_grid(self, rows: int, cols: int) -> None:
        self.rows, self.cols = max(rows, 1), max(cols, 1)
        blank = np.full((self.rows, self.cols), np.nan, dtype=np.float32)
        self.image.setImage(blank, levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(QtCore.QRectF(0, 0, self.cols, self.rows))
        self.box.setRange(QtCore.QRectF(0, 0, self.cols, self.rows), padding=0.02)
        self._draw_outline()

    @property
    def n_channels(self) -> int:
        return self.rows * self.cols

    def set_values(self, measure: str, values: np.ndarray) -> None:
        """Per-channel values of ``measure`` (SI units, (C,)); drawn if it is the one shown."""
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}")
        values = np.asarray(values, dtype=np.float32)
        if values.size != self.n_channels:
            return  # another board shape; set_grid first
        self.values[measure] = values
        if measure == self.measure.currentText():
            self._draw()

    def _measure_changed(self, measure: str) -> None:
        unit = MEASURES[measure][0]
        self.colorbar.setLabel("right", unit) if hasattr(self.colorbar, "setLabel") else None
        self._draw()

    def _draw(self) -> None:
        measure = self.measure.currentText()
        factor = MEASURES[measure][1]
        values = self.values.get(measure)
        if values is None:
            img = np.full((self.rows, self.cols), np.nan, dtype=np.float32)
        else:
            img = (values * factor).reshape(self.rows, self.cols)
        now = time.monotonic()
        if measure != self._levels_of or now - self._levels_at >= LEVELS_REFRESH_S:
            # the colours re-span at most once a second: steady to read, and the colour
            # bar's axis (text) is the costly part of a paint
            self.levels = robust_levels(img, measure)
            self._levels_of, self._levels_at = measure, now
            self.colorbar.setLevels(self.levels)
        self.image.setImage(img, levels=self.levels, autoLevels=False)

    # --- selection ------------------------------------------------------------------------
    def _picked(self, r0: int, c0: int, r1: int, c1: int, add: bool) -> None:
        r0, r1 = max(r0, 0), min(r1, self.rows - 1)
        c0, c1 = max(c0, 0), min(c1, self.cols - 1)
        if r0 > r1 or c0 > c1:
            return
        region = (np.arange(r0, r1 + 1)[:, None] * self.cols + np.arange(c0, c1 + 1)).ravel()
        if add:
            if r0 == r1 and c0 == c1 and region[0] in self.selected:
                region = np.setdiff1d(self.selected, region)  # ctrl/shift-click toggles
            else:
                region = np.union1d(self.selected, region)
        self.select(region)

    def select(self, channels: np.ndarray | list[int]) -> None:
        """Select ``channels`` (replacing the selection) and announce it."""
        chans = np.unique(np.asarray(channels, dtype=np.int64))
        chans = chans[(chans >= 0) & (chans < self.n_channels)]
        self.selected = chans
        self._draw_outline()
        n = chans.size
        self.selected_label.setText(f"{n} electrode{'s' if n != 1 else ''} selected")
        self.selection_changed.emit(chans)

    def select_region(self, rows: range, cols: range) -> None:
        """Select a rectangle of the grid."""
        self._picked(rows.start, cols.start, rows.stop - 1, cols.stop - 1, False)

    def _draw_outline(self) -> None:
        chans = self.selected
        if chans.size == 0 or chans.size > 1024:  # a whole-array outline says nothing
            self.outline.setData([], [])
            return
        r, c = np.divmod(chans, self.cols)
        self.outline.setData(c + 0.5, r + 0.5, size=0.9)

    def _hovered(self, pos: object) -> None:
        p = self.box.mapSceneToView(pos)
        r, c = int(np.floor(p.y())), int(np.floor(p.x()))
        if not (0 <= r < self.rows and 0 <= c < self.cols):
            self.hover.setText(" ")
            return
        ch = r * self.cols + c
        measure = self.measure.currentText()
        unit, factor = MEASURES[measure]
        values = self.values.get(measure)
        text = f"ch {ch} (row {r}, col {c})"
        if values is not None and np.isfinite(values[ch]):
            text += f": {measure} {values[ch] * factor:.3g} {unit}"
        self.hover.setText(text)

    def _electroporate_clicked(self) -> None:
        self.electroporate_requested.emit(
            self.selected.copy(), self.amplitude.value(), self.width_ms.value() * 1e-3
        )
