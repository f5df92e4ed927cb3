"""Stacked min/max envelopes drawn straight into an image at the screen's resolution.

Painting 128 traces as one polyline (~360 000 points at 1400 pixels) cost the GUI thread
~13 ms per frame inside Qt's path code, which holds Python's lock all the while. Here a
compiled kernel (numba, lock released) sets the pixels the same polyline would cover —
each bin's vertical min→max stroke and the line from one bin's max to the next bin's min —
into a premultiplied ARGB32 image the size of the visible part of the plot, and Qt blits it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

log = logging.getLogger(__name__)

TRACE_ARGB = np.uint32(0xFF7FD37F)
"""Trace colour (opaque green, premultiplied ARGB32)."""


@numba.njit(cache=True, nogil=True, inline="always")
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
    NaN bins break a trace (lost samples).

    The line from a bin's max to the next bin's min is split at its middle between their
    columns when they are neighbours (the usual case: about one bin per pixel), and drawn
    column by column when they are further apart (zoomed in)."""
    height, width = image.shape
    sx = width / (x1 - x0)
    sy = height / (y1 - y0)
    k_n, p_n = lo.shape
    for k in range(k_n):
        off = offsets[k]
        have_prev = False
        prev_c = 0.0
        prev_col = 0
        prev_y = 0.0
        for p in range(p_n):
            a = lo[k, p]
            b = hi[k, p]
            if not (np.isfinite(a) and np.isfinite(b)):
                have_prev = False
                continue
            c = (x[p] - x0) * sx
            col = int(np.floor(c))
            ya = (a + off - y0) * sy
            yb = (b + off - y0) * sy
            low, high = min(ya, yb), max(ya, yb)
            if have_prev:
                if col - prev_col <= 1:  # neighbours: half the joining line in each column
                    middle = 0.5 * (prev_y + ya)
                    low, high = min(low, middle), max(high, middle)
                elif (prev_col < width or col < width) and (prev_col >= 0 or col >= 0):
                    slope = (ya - prev_y) / (c - prev_c)
                    for cc in range(max(prev_col, 0), min(col, width - 1) + 1):
                        left = max(float(cc), prev_c)
                        right = min(float(cc + 1), c)
                        _span(
                            image,
                            cc,
                            prev_y + (left - prev_c) * slope,
                            prev_y + (right - prev_c) * slope,
                        )
            if p + 1 < p_n:  # the first half of the line to the next bin, if a neighbour
                na = lo[k, p + 1]
                near = int(np.floor((x[p + 1] - x0) * sx)) - col <= 1
                if near and np.isfinite(na) and np.isfinite(hi[k, p + 1]):
                    middle = 0.5 * (yb + (na + off - y0) * sy)
                    low, high = min(low, middle), max(high, middle)
            if 0 <= col < width:
                _span(image, col, low, high)
            have_prev = True
            prev_c = c
            prev_col = col
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


_RENDERER: ThreadPoolExecutor | None = None


def _renderer() -> ThreadPoolExecutor:
    """The one thread that renders trace images for every view (made on first use)."""
    global _RENDERER
    if _RENDERER is None:
        _RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-render")
    return _RENDERER


class EnvelopeItem(pg.GraphicsObject):
    """A plot item drawing stacked envelopes as one image of the visible part of its data
    at the view's exact pixel size.

    New data are rendered on the render thread (the kernel runs without Python's lock, so
    the GUI thread goes on meanwhile) and painted when ready; until then the previous image
    stays. A paint for a view the last image does not fit (pan, zoom, resize) renders on
    the spot."""

    _rendered = QtCore.Signal(object)
    """(generation, key, pixels, tag) from the render thread."""

    def __init__(self) -> None:
        super().__init__()
        self._x = np.zeros(0)
        self._lo = np.zeros((0, 0), dtype=np.float32)
        self._hi = np.zeros((0, 0), dtype=np.float32)
        self._offsets = np.zeros(0)
        self._tag: object = None
        self._bounds = QtCore.QRectF()
        self._generation = 0
        """Counts set_data calls: which data an image shows."""
        self._image_generation = -1
        self._image_key: tuple | None = None
        self._pixels = np.zeros((0, 0), dtype=np.uint32)
        self._qimage: QtGui.QImage | None = None
        self._rendering = False
        self._again = False
        self._image_tag: object = None
        self._rendered.connect(self._install)
        self.painted_tag: object = None
        """The ``tag`` of the data in the last image painted."""
        self.frames_painted = 0
        """Paints that showed data not painted before (the frame rate counts these)."""
        self._painted_generation = -1

    def set_data(
        self,
        x: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        offsets: np.ndarray,
        tag: object = None,
    ) -> None:
        """Envelopes (K, P) in display units at bin positions ``x`` (P,), trace k drawn
        ``offsets[k]`` up; ``tag`` names them (:attr:`painted_tag` once painted). Call
        :meth:`render_soon` once the view's range is set."""
        self._x, self._lo, self._hi, self._offsets, self._tag = x, lo, hi, offsets, tag
        self._generation += 1
        bounds = QtCore.QRectF()
        if lo.size and x.size and np.isfinite(lo).any():
            with np.errstate(invalid="ignore"):
                top = float(np.nanmax(hi + offsets[:, None]))
                bottom = float(np.nanmin(lo + offsets[:, None]))
            # whole lanes: the bounds stay put while the traces move within their lanes (a
            # change of bounds repaints the view at once, with the previous image)
            pitch = float(abs(offsets[1] - offsets[0])) if offsets.size > 1 else 0.0
            if pitch > 0:
                top, bottom = np.ceil(top / pitch) * pitch, np.floor(bottom / pitch) * pitch
            bounds = QtCore.QRectF(
                float(x[0]), bottom, float(x[-1] - x[0]) or 1.0, (top - bottom) or 1.0
            )
        if bounds != self._bounds:
            self.prepareGeometryChange()
            self._bounds = bounds

    def clear(self) -> None:
        self.set_data(np.zeros(0), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32),
                      np.zeros(0))  # fmt: skip
        self.update()

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, lo, hi, offsets) as last set."""
        return self._x, self._lo, self._hi, self._offsets

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt override)
        return self._bounds

    def _view_key(self) -> tuple | None:
        """((x0, x1, y0, y1), (width, height)) of the visible part of the data, in data
        units and pixels (from the view box's range and size, so a render started before
        the view's next paint fits it); None when nothing of it is visible."""
        view = self.getViewBox()
        if view is None or self._bounds.isEmpty():
            return None
        shown = view.viewRect()
        target = shown.intersected(self._bounds)
        if target.isEmpty() or shown.width() <= 0 or shown.height() <= 0:
            return None
        width = round(target.width() * view.width() / shown.width())
        height = round(target.height() * view.height() / shown.height())
        if width < 1 or height < 1:
            return None
        return (target.left(), target.right(), target.top(), target.bottom()), (width, height)

    def render_soon(self) -> None:
        """Render the data for the view as it is now, on the render thread; paint when
        done (a render already running is followed by one more with the newest data)."""
        key = self._view_key()
        if key is None:
            self.update()
            return
        if self._rendering:
            self._again = True
            return
        self._rendering = True
        data = (self._x, self._lo, self._hi, self._offsets)
        generation, tag = self._generation, self._tag

        def work() -> None:
            try:
                pixels = envelope_image(*data, *key)
            except Exception:  # logged; the next paint renders on the spot
                log.exception("trace image render")
                pixels = None
            self._rendered.emit((generation, key, pixels, tag))

        _renderer().submit(work)

    def _install(self, result: tuple) -> None:
        generation, key, pixels, tag = result
        self._rendering = False
        if pixels is not None and generation > self._image_generation:
            # shown even if newer data came meanwhile: it is newer than what is on screen
            self._show(key, pixels, generation, tag)
            self.update()
        if self._again or generation != self._generation:
            self._again = False
            self.render_soon()

    def _show(self, key: tuple, pixels: np.ndarray, generation: int, tag: object) -> None:
        self._pixels = pixels
        self._qimage = QtGui.QImage(  # a view of the array, which it keeps alive
            pixels.data, key[1][0], key[1][1], 4 * key[1][0],
            QtGui.QImage.Format.Format_ARGB32_Premultiplied,
        )  # fmt: skip
        self._image_key = key
        self._image_generation = generation
        self._image_tag = tag

    def paint(self, painter: QtGui.QPainter, *args: object) -> None:
        try:  # an exception escaping a paint called from Qt can take the process down
            key = self._view_key()
            if key is None:
                return
            stale = self._image_generation != self._generation and not self._rendering
            # (while a render runs, the last image stays: the new one paints when done)
            if key != self._image_key or stale or self._qimage is None:  # render on the spot
                pixels = envelope_image(self._x, self._lo, self._hi, self._offsets, *key)
                self._show(key, pixels, self._generation, self._tag)
            x0, x1, y0, y1 = key[0]
            painter.drawImage(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0), self._qimage)
            self.painted_tag = self._image_tag
            if self._image_generation != self._painted_generation:
                self._painted_generation = self._image_generation
                self.frames_painted += 1
        except Exception:
            log.exception("trace image paint")
