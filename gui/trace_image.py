"""Stacked min/max envelopes drawn straight into an image at the screen's resolution.

Painting 128 traces as one polyline (~360 000 points at 1400 pixels) cost the GUI thread
~13 ms per frame inside Qt's path code, which holds Python's lock all the while. Here a
compiled kernel (numba, lock released) sets the pixels the same polyline would cover —
each bin's vertical min→max stroke and the line from one bin's max to the next bin's min —
into a premultiplied ARGB32 image the size of the visible part of the plot, and Qt blits it.
"""

from __future__ import annotations

import numba
import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

TRACE_ARGB = 0xFF7FD37F
"""Trace colour (opaque green, premultiplied ARGB32)."""


@numba.njit(cache=True, nogil=True)
def _span(image: np.ndarray, col: int, y0: float, y1: float) -> None:
    """Set column ``col``'s pixels from row y0 to row y1 (fractional rows, any order)."""
    height = image.shape[0]
    a, b = (y0, y1) if y0 <= y1 else (y1, y0)
    r0 = max(int(np.floor(a)), 0)
    r1 = min(int(np.floor(b)), height - 1)
    for r in range(r0, r1 + 1):
        image[r, col] = TRACE_ARGB


@numba.njit(cache=True, nogil=True)
def draw_envelopes(
    image: np.ndarray,
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    offsets: np.ndarray,
    x0: float,
    x1: float,
    y0: float,
    y1: float,
) -> None:
    """Draw (K, P) envelopes at bin positions ``x`` (P,), trace k shifted by ``offsets[k]``,
    into ``image`` (H, W) uint32 covering data x0..x1 (columns) and y0..y1 (row 0 = y0).
    NaN bins break a trace (lost samples)."""
    height, width = image.shape
    sx = width / (x1 - x0)
    sy = height / (y1 - y0)
    k_n, p_n = lo.shape
    for k in range(k_n):
        off = offsets[k]
        have_prev = False
        prev_c = 0.0
        prev_y = 0.0
        for p in range(p_n):
            a = lo[k, p]
            b = hi[k, p]
            if not (np.isfinite(a) and np.isfinite(b)):
                have_prev = False
                continue
            c = (x[p] - x0) * sx
            ya = (a + off - y0) * sy
            yb = (b + off - y0) * sy
            if have_prev and (prev_c < width or c < width) and (prev_c >= 0 or c >= 0):
                # the line from the previous bin's max to this bin's min, column by column
                ca, cb = int(np.floor(prev_c)), int(np.floor(c))
                if cb <= ca:
                    if 0 <= ca < width:
                        _span(image, ca, prev_y, ya)
                else:
                    slope = (ya - prev_y) / (c - prev_c)
                    for col in range(max(ca, 0), min(cb, width - 1) + 1):
                        left = max(float(col), prev_c)
                        right = min(float(col + 1), c)
                        _span(
                            image,
                            col,
                            prev_y + (left - prev_c) * slope,
                            prev_y + (right - prev_c) * slope,
                        )
            col = int(np.floor(c))
            if 0 <= col < width:
                _span(image, col, ya, yb)
            have_prev = True
            prev_c = c
            prev_y = yb


def envelope_image(
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    offsets: np.ndarray,
    rect: tuple[float, float, float, float],
    size: tuple[int, int],
) -> np.ndarray:
    """The (H, W) ARGB32 image of the envelopes over ``rect`` = (x0, x1, y0, y1) in data
    units at ``size`` = (W, H) pixels; row 0 is y0, transparent where nothing is drawn."""
    width, height = max(int(size[0]), 1), max(int(size[1]), 1)
    image = np.zeros((height, width), dtype=np.uint32)
    x0, x1, y0, y1 = rect
    if lo.size and x1 > x0 and y1 > y0:
        draw_envelopes(
            image,
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(lo, dtype=np.float32),
            np.ascontiguousarray(hi, dtype=np.float32),
            np.ascontiguousarray(offsets, dtype=np.float64),
            float(x0),
            float(x1),
            float(y0),
            float(y1),
        )
    return image


class EnvelopeItem(pg.GraphicsObject):
    """A plot item drawing stacked envelopes as an image rendered, at paint time, for the
    visible part of its data at the view's exact pixel size (pan and zoom redraw it)."""

    def __init__(self) -> None:
        super().__init__()
        self._x = np.zeros(0)
        self._lo = np.zeros((0, 0), dtype=np.float32)
        self._hi = np.zeros((0, 0), dtype=np.float32)
        self._offsets = np.zeros(0)
        self._bounds = QtCore.QRectF()
        self._key: tuple | None = None
        self._pixels = np.zeros((0, 0), dtype=np.uint32)
        self._qimage: QtGui.QImage | None = None
        self.renders = 0
        """Images rendered so far (a paint with nothing new reuses the last)."""

    def set_data(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, offsets: np.ndarray) -> None:
        """Envelopes (K, P) in display units at bin positions ``x`` (P,), trace k drawn
        ``offsets[k]`` up."""
        self.prepareGeometryChange()
        self._x, self._lo, self._hi, self._offsets = x, lo, hi, offsets
        self._key = None
        if lo.size and x.size:
            with np.errstate(invalid="ignore"):
                top = np.nanmax(hi + offsets[:, None]) if np.isfinite(hi).any() else 0.0
                bottom = np.nanmin(lo + offsets[:, None]) if np.isfinite(lo).any() else 0.0
            self._bounds = QtCore.QRectF(
                float(x[0]), float(bottom), float(x[-1] - x[0]) or 1.0, float(top - bottom) or 1.0
            )
        else:
            self._bounds = QtCore.QRectF()
        self.update()

    def clear(self) -> None:
        self.set_data(np.zeros(0), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32),
                      np.zeros(0))  # fmt: skip

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, lo, hi, offsets) as drawn."""
        return self._x, self._lo, self._hi, self._offsets

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt override)
        return self._bounds

    def paint(self, painter: QtGui.QPainter, *args: object) -> None:
        view = self.getViewBox()
        if view is None or self._bounds.isEmpty():
            return
        target = view.viewRect().intersected(self._bounds)
        if target.isEmpty():
            return
        device = painter.transform().mapRect(target)
        size = (round(device.width()), round(device.height()))
        rect = (target.left(), target.right(), target.top(), target.bottom())
        key = (rect, size)
        if key != self._key or self._qimage is None:
            self._pixels = envelope_image(self._x, self._lo, self._hi, self._offsets, rect, size)
            self._qimage = QtGui.QImage(  # a view of the array, which it keeps alive
                self._pixels.data, size[0], size[1], 4 * size[0],
                QtGui.QImage.Format.Format_ARGB32_Premultiplied,
            )  # fmt: skip
            self._key = key
            self.renders += 1
        painter.drawImage(target, self._qimage)
