"""Spike raster of the whole array: channel (vertical) against time, drawn at the plot's
pixel resolution — each pixel counts the spikes of its channels and time span, so no spike
is ever hidden, and the grey level shows how many.

Live, the spikes come from :class:`instrument.live_spikes.LiveSpikes` (every channel, read
back from the file being recorded); for a finished session, from what extraction stored
in ``/spikes``.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from gui.app import cache_axes


def spike_image(
    times_s: np.ndarray,
    channels: np.ndarray,
    n_channels: int,
    t0_s: float,
    t1_s: float,
    n_columns: int,
    n_rows: int,
) -> np.ndarray:
    """(R, n_columns) spike counts of (time, channel) events in [t0_s, t1_s): row r counts
    channels [r·g, (r+1)·g) with g = ceil(n_channels / n_rows) (so R <= n_rows)."""
    n_columns = max(int(n_columns), 1)
    group = max(1, int(np.ceil(n_channels / max(int(n_rows), 1))))
    rows = int(np.ceil(n_channels / group))
    times_s, channels = np.asarray(times_s), np.asarray(channels)
    if t1_s <= t0_s or times_s.size == 0:
        return np.zeros((rows, n_columns), dtype=np.float32)
    keep = (times_s >= t0_s) & (times_s < t1_s) & (channels >= 0) & (channels < n_channels)
    col = ((times_s[keep] - t0_s) / (t1_s - t0_s) * n_columns).astype(np.int64)
    row = channels[keep].astype(np.int64) // group
    flat = row * n_columns + np.minimum(col, n_columns - 1)
    counts = np.bincount(flat, minlength=rows * n_columns)
    return counts.reshape(rows, n_columns).astype(np.float32)


class RasterView(QtWidgets.QWidget):
    """The raster plot and a line saying what it shows."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "time (s)")
        self.plot.setLabel("left", "channel")
        self.plot.getViewBox().invertY(True)
        self.image = pg.ImageItem(axisOrder="row-major")
        grey = (255 * np.sqrt(np.linspace(0, 1, 256))).astype(np.uint8)  # 1 spike: 58 % grey
        self.image.setLookupTable(np.stack([grey, grey, grey], axis=1))
        self.plot.addItem(self.image)
        cache_axes(self.plot)
        self.info = QtWidgets.QLabel("spike raster: no data")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.info)
        layout.addWidget(self.plot, 1)
        self.n_channels = 0
        self.events = 0
        self._time_label = "time (s)"

    def pixels(self) -> tuple[int, int]:
        """(columns, rows) of the plot area in pixels."""
        box = self.plot.getViewBox()
        return max(100, int(box.width())), max(64, int(box.height()))

    def set_spikes(
        self,
        times_s: np.ndarray,
        channels: np.ndarray,
        n_channels: int,
        t0_s: float,
        t1_s: float,
        info: str = "",
    ) -> None:
        """Draw (time, channel) spikes over [t0_s, t1_s) at the plot's pixel resolution."""
        columns, rows = self.pixels()
        image = spike_image(times_s, channels, n_channels, t0_s, t1_s, columns, rows)
        firing = np.unique(np.asarray(channels)).size
        self.set_image(
            image,
            n_channels,
            t0_s,
            t1_s,
            info
            or f"spike raster: {int(image.sum()):,} spikes on {firing} channels, "
            f"{t0_s:.1f}-{t1_s:.1f} s",
        )

    def set_image(
        self,
        image: np.ndarray,
        n_channels: int,
        t0_s: float,
        t1_s: float,
        info: str,
        time_label: str = "time (s)",
    ) -> None:
        """Draw a spike image made by :func:`spike_image` (e.g. on another thread) over
        [t0_s, t1_s) of the time axis."""
        if time_label != self._time_label:
            self.plot.setLabel("bottom", time_label)
            self._time_label = time_label
        self.image.setImage(image, levels=(0.0, 3.0), autoLevels=False)
        self.image.setRect(QtCore.QRectF(t0_s, 0, max(t1_s - t0_s, 1e-6), n_channels))
        self.events = int(image.sum())
        if n_channels != self.n_channels:
            self.plot.setYRange(0, n_channels, padding=0)
            self.n_channels = n_channels
        self.plot.setXRange(t0_s, t1_s, padding=0)
        self.info.setText(info)
