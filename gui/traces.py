"""Traces: the selected channels live (pause, then scroll back through the file), and a paged
view through all channels of a session, both drawn as per-pixel min/max envelopes.

One :class:`StackedTraces` plot draws any number of channels into one image at the
screen's resolution (:mod:`gui.trace_image`; NaN breaks a trace across lost samples). Values
are shown in mV (pA for voltage-clamp channels), each trace around its own median, stacked
``spacing`` apart; time in ms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from gui.app import cache_axes
from gui.trace_image import EnvelopeItem
from instrument.acquisition import Snapshot
from instrument.envelopes import Envelope

log = logging.getLogger(__name__)

MAX_LIVE_CHANNELS = 256
"""At most this many channels are followed live (more would not be readable on a screen)."""
PAGE_SIZES = (16, 32, 64, 128, 256)
LAYOUT_REFRESH_S = 1.0
"""How often the lanes (centre and spacing of each trace) follow the signals, s."""
RETRY_MS = 300
"""A scroll-back past what the file holds yet is read again after this long, ms."""


def channel_label(channel: int, cols: int) -> str:
    """``ch 1234 (r19 c18)`` for a grid of ``cols`` columns."""
    if cols <= 1:
        return f"ch {channel}"
    return f"ch {channel} (r{channel // cols} c{channel % cols})"


def lane_statistics(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of (K, P) envelopes: the median of the bin centres (where its lane is
    centred) and the 5-95 % range (how tall it is). NaN (lost samples) are ignored; a
    channel with no data gets 0 and NaN."""
    k = lo.shape[0]
    middle = np.zeros(k, dtype=np.float32)
    span = np.full(k, np.nan, dtype=np.float32)
    if k == 0 or lo.shape[1] == 0:
        return middle, span
    centre = 0.5 * (lo + hi)
    ok = np.isfinite(centre)
    has = ok.any(axis=1)
    if not has.any():
        return middle, span
    # NaN replaced by the row's mean: vectorised percentiles, nearly the nan-aware ones
    with np.errstate(all="ignore"):
        fill = np.where(has, np.nanmean(np.where(ok, centre, np.nan), axis=1), 0.0)[:, None]
    centre = np.where(ok, centre, fill)
    lo_f = np.where(ok, lo, fill)
    hi_f = np.where(ok, hi, fill)
    middle[has] = np.median(centre[has], axis=1)
    span[has] = np.percentile(hi_f[has], 95, axis=1) - np.percentile(lo_f[has], 5, axis=1)
    return middle, span


def nice_step(value: float) -> float:
    """The 1-2-5 number at or below ``value`` (for scale bars)."""
    if not value > 0 or not np.isfinite(value):
        return 1.0
    exp = np.floor(np.log10(value))
    for m in (5.0, 2.0, 1.0):
        if m * 10**exp <= value:
            return float(m * 10**exp)
    return float(10**exp)


class StackedTraces(pg.PlotWidget):
    """K channels' envelopes stacked top to bottom, with an mV / ms scale bar."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, *, x_label: str = "time") -> None:
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.plotItem.hideButtons()
        self.plotItem.setLabel("bottom", x_label, units="")
        self.plotItem.showGrid(x=True, y=False, alpha=0.2)
        self.envelopes = EnvelopeItem()
        self.addItem(self.envelopes)
        self.scale_bar = pg.PlotCurveItem(pen=pg.mkPen("w", width=2))
        self.scale_text = pg.TextItem(color="w", anchor=(0, 1))
        self.addItem(self.scale_bar)
        self.addItem(self.scale_text)
        self.getViewBox().sigRangeChanged.connect(self._place_scale_bar)
        cache_axes(self)
        self.spacing = 0.0
        """Display units between adjacent traces (0: automatic)."""
        self.clip = 1.6
        """Clip each trace to this many half-lanes around its median (0: no clipping)."""
        self.channels = np.zeros(0, dtype=np.int64)
        self.cols = 64
        self.unit = "mV"
        self._auto_range = True
        self.points = 0
        """Envelope bins drawn now (channels x bins)."""

    def set_envelopes(
        self,
        channels: np.ndarray,
        x: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        *,
        scale: np.ndarray | float = 1e3,
        tag: object = None,
    ) -> None:
        """Draw (K, P) envelopes at bin positions ``x`` (display time units); values times
        ``scale`` (per channel: 1e3 for V → mV, 1e12 for A → pA) are shown around their
        median; ``tag`` names them (``envelopes.painted_tag`` once on screen)."""
        k = lo.shape[0]
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), (k,))[:, None]
        lo_d = lo * scale
        hi_d = hi * scale
        now = time.monotonic()
        same = np.array_equal(channels, self.channels) and self._middle.shape == (k,)
        if not same or now - self._layout_at > LAYOUT_REFRESH_S or self.spacing != self._asked:
            # lanes move at most once a second: steady to read, and cheap
            self._middle, span = lane_statistics(lo_d, hi_d)
            self._asked = self.spacing
            self._layout_at = now
            spacing = self.spacing
            if spacing <= 0:  # auto: the typical channel's 5-95 % range fits its lane
                typical = float(np.nanmedian(span)) if np.isfinite(span).any() else 1.0
                spacing = nice_step(max(typical, 0.01) * 1.5)
            self._spacing_now = spacing
        middle, spacing = self._middle, self._spacing_now
        if self.clip:
            limit = 0.5 * spacing * self.clip
            lo_d = np.clip(lo_d - middle[:, None], -limit, limit) + middle[:, None]
            hi_d = np.clip(hi_d - middle[:, None], -limit, limit) + middle[:, None]
        offsets = -np.arange(k, dtype=np.float64) * spacing - middle
        self.envelopes.set_data(np.asarray(x, dtype=np.float64), lo_d, hi_d, offsets, tag)
        self.points = lo_d.size
        new_channels = not np.array_equal(channels, self.channels) or spacing != self._drawn_spacing
        self.channels = np.asarray(channels)
        self._drawn_spacing = spacing
        self._used_spacing = spacing
        if new_channels:
            self._set_ticks(spacing)
            if self._auto_range:
                self.setYRange(-(k - 0.5) * spacing, 0.5 * spacing, padding=0)
        if self._auto_range and x.size:
            (x0, x1), _ = self.getViewBox().viewRange()
            pixel = (x1 - x0) / max(self.getViewBox().width(), 1.0)
            if abs(x0 - x[0]) > pixel or abs(x1 - x[-1]) > pixel:  # the axes redraw only then
                self.setXRange(float(x[0]), float(x[-1]), padding=0)
        if new_channels:
            self._place_scale_bar()  # (a change of range moves it too)
        self.envelopes.render_soon()

    _drawn_spacing = -1.0
    _used_spacing = 1.0
    _middle = np.zeros(0, dtype=np.float32)
    _spacing_now = 1.0
    _layout_at = 0.0
    _asked = 0.0

    def clear_traces(self) -> None:
        self.envelopes.clear()
        self.points = 0

    def _set_ticks(self, spacing: float) -> None:
        k = len(self.channels)
        every = max(1, int(np.ceil(k / 32)))
        ticks = [
            (-i * spacing, channel_label(int(c), self.cols))
            for i, c in enumerate(self.channels)
            if i % every == 0
        ]
        self.getAxis("left").setTicks([ticks, []])

    def set_auto_range(self, on: bool) -> None:
        """Follow the data (True) or leave the view where the user put it."""
        self._auto_range = on

    def _place_scale_bar(self, *args: object) -> None:
        (x0, x1), (y0, y1) = self.getViewBox().viewRange()
        if not np.isfinite([x0, x1, y0, y1]).all() or x1 <= x0 or y1 <= y0:
            return
        dx = nice_step((x1 - x0) / 8)
        dy = nice_step(min(self._used_spacing, (y1 - y0) / 8))
        left = x1 - (x1 - x0) * 0.03 - dx
        bottom = y0 + (y1 - y0) * 0.04
        self.scale_bar.setData([left, left + dx, left + dx], [bottom, bottom, bottom + dy])
        self.scale_text.setText(f"{dx:g} ms, {dy:g} {self.unit}")
        self.scale_text.setPos(left - dx * 0.2, bottom + dy * 1.05)


def mode_scale(modes: np.ndarray | None, channels: np.ndarray) -> np.ndarray:
    """Per-channel display factor: 1e3 (V → mV) in current clamp, 1e12 (A → pA) in voltage
    clamp."""
    if modes is None:
        return np.full(len(channels), 1e3, dtype=np.float32)
    return np.where(np.asarray(modes)[channels] == 1, 1e12, 1e3).astype(np.float32)


class LiveTraces(QtWidgets.QWidget):
    """The selected channels live; Pause freezes them and lets the user scroll back through
    the session file (read on a worker thread, ``read_back``)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = StackedTraces(x_label="time (ms, 0 = newest sample)")
        self.pause = QtWidgets.QPushButton("Pause")
        self.pause.setCheckable(True)
        self.pause.toggled.connect(self._paused)
        self.spacing = QtWidgets.QDoubleSpinBox(
            minimum=0.0, maximum=1000.0, decimals=2, singleStep=0.5, suffix=" mV"
        )
        self.spacing.setSpecialValueText("auto")
        self.spacing.setToolTip("distance between traces (auto: from the signals)")
        self.spacing.valueChanged.connect(self._spacing_changed)
        self.clip = QtWidgets.QCheckBox("clip")
        self.clip.setChecked(True)
        self.clip.setToolTip("keep each trace near its lane (spikes are cut, not hidden)")
        self.clip.toggled.connect(self._clip_changed)
        self.info = QtWidgets.QLabel("no live data (start a recording)")
        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(self.pause)
        bar.addWidget(QtWidgets.QLabel("spacing"))
        bar.addWidget(self.spacing)
        bar.addWidget(self.clip)
        bar.addWidget(self.info, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.plot, 1)
        self.modes: np.ndarray | None = None
        self.read_back: Callable[[np.ndarray, float, float, int], None] | None = None
        """Set by the window: read the file for (channels, t0_s, t1_s, n_bins) off-thread."""
        self.frozen_end_s = 0.0
        self.shown_serial = -1
        self._debounce = QtCore.QTimer(self, singleShot=True, interval=150)
        self._debounce.timeout.connect(self._request_scroll_back)
        self.plot.getViewBox().sigXRangeChanged.connect(self._x_moved)

    @property
    def paused(self) -> bool:
        return self.pause.isChecked()

    def _spacing_changed(self, value: float) -> None:
        self.plot.spacing = value
        self.shown_serial = -1  # redraw

    def _clip_changed(self, on: bool) -> None:
        self.plot.clip = 1.6 if on else 0.0
        self.shown_serial = -1

    def _paused(self, on: bool) -> None:
        self.pause.setText("Resume" if on else "Pause")
        self.plot.set_auto_range(not on)
        self.plot.getViewBox().setMouseEnabled(x=on, y=on)
        if not on:
            self.shown_serial = -1

    def show_snapshot(self, serial: int, snapshot: Snapshot, *, force: bool = False) -> bool:
        """Draw a live snapshot (unless paused, or already shown and not ``force``); True
        when drawn."""
        if self.paused or (serial == self.shown_serial and not force):
            return False
        snap = snapshot
        if snap.lo.shape[1] == 0:
            return False
        t = snap.t_s
        bin_s = (t[1] - t[0]) if t.size > 1 else 1.0 / snap.sample_rate_hz
        end_s = float(t[-1] + bin_s)
        x_ms = (t - end_s) * 1e3
        chans = snap.channels
        self.plot.set_envelopes(
            chans, x_ms, snap.lo, snap.hi, scale=mode_scale(self.modes, chans), tag=snap
        )
        self.frozen_end_s = end_s
        self.shown_serial = serial
        self.info.setText(
            f"{len(chans)} channels, {len(t)} bins of {bin_s * 1e3:.2f} ms, up to t = {end_s:.2f} s"
        )
        return True

    def _x_moved(self, *args: object) -> None:
        if self.paused and self.read_back is not None:
            self._debounce.start()

    def _request_scroll_back(self) -> None:
        if not self.paused or self.read_back is None or not len(self.plot.channels):
            return
        x0, x1 = self.plot.getViewBox().viewRange()[0]
        t0 = self.frozen_end_s + x0 / 1e3
        t1 = self.frozen_end_s + x1 / 1e3
        width = max(100, int(self.plot.getViewBox().width()))
        self.read_back(self.plot.channels, max(t0, 0.0), max(t1, 0.0), width)

    def show_envelope(self, env: Envelope) -> None:
        """Draw envelopes read back from the file (while paused), on the paused time axis."""
        if not self.paused:
            return
        if env.lo.shape[1] == 0:  # the file (written behind the live view) is not there yet
            self.info.setText(
                f"paused: the file holds {env.n_samples} samples so far; reading again…"
            )
            QtCore.QTimer.singleShot(RETRY_MS, self._request_scroll_back)
            return
        x_ms = (env.t_s + env.bin_s / 2 - self.frozen_end_s) * 1e3
        self.plot.set_envelopes(
            env.channels, x_ms, env.lo, env.hi, scale=mode_scale(self.modes, env.channels)
        )
        self.info.setText(
            f"paused: file {env.t_s[0]:.2f}-{env.t_s[-1] + env.bin_s:.2f} s, "
            f"{env.lo.shape[1]} bins of {env.bin_s * 1e3:.2f} ms"
        )


class PagedTraces(QtWidgets.QWidget):
    """Every channel of a session, a page at a time: per-pixel min/max envelopes read from
    the file (finished, or being recorded: "follow" keeps showing the newest data)."""

    page_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = StackedTraces(x_label="time (ms from the start of the recording)")
        self.page_size = QtWidgets.QComboBox()
        self.page_size.addItems([str(n) for n in PAGE_SIZES])
        self.page_size.setCurrentText("64")
        self.page = QtWidgets.QSpinBox(minimum=1, maximum=1)
        self.pages = QtWidgets.QLabel("of 1")
        prev_b = QtWidgets.QPushButton("◀")
        next_b = QtWidgets.QPushButton("▶")
        prev_b.clicked.connect(lambda: self.page.setValue(self.page.value() - 1))
        next_b.clicked.connect(lambda: self.page.setValue(self.page.value() + 1))
        self.start = QtWidgets.QDoubleSpinBox(
            minimum=0.0, maximum=1e7, decimals=3, singleStep=0.5, suffix=" s"
        )
        self.span = QtWidgets.QDoubleSpinBox(
            minimum=0.001, maximum=3600.0, decimals=3, value=2.0, suffix=" s"
        )
        self.follow = QtWidgets.QCheckBox("follow newest")
        self.follow.setChecked(True)
        self.info = QtWidgets.QLabel("no session open")
        bar = QtWidgets.QHBoxLayout()
        for w in (
            QtWidgets.QLabel("channels per page"),
            self.page_size,
            prev_b,
            QtWidgets.QLabel("page"),
            self.page,
            self.pages,
            next_b,
            QtWidgets.QLabel("from"),
            self.start,
            QtWidgets.QLabel("span"),
            self.span,
            self.follow,
        ):
            bar.addWidget(w)
        bar.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.info)
        layout.addWidget(self.plot, 1)
        self.n_channels = 0
        self.duration_s = 0.0
        self.modes: np.ndarray | None = None
        for signal in (
            self.page_size.currentTextChanged,
            self.page.valueChanged,
            self.start.valueChanged,
            self.span.valueChanged,
            self.follow.toggled,
        ):
            signal.connect(self._changed)
        self._debounce = QtCore.QTimer(self, singleShot=True, interval=100)
        self._debounce.timeout.connect(self.page_requested.emit)

    def set_recording_shape(self, n_channels: int, cols: int, duration_s: float) -> None:
        """The session's channel count, grid width and current length."""
        self.n_channels = n_channels
        self.plot.cols = cols
        self.duration_s = duration_s
        self._update_pages()

    def _update_pages(self) -> None:
        size = int(self.page_size.currentText())
        n_pages = max(1, int(np.ceil(self.n_channels / size)))
        self.page.setMaximum(n_pages)
        self.pages.setText(f"of {n_pages}")

    def _changed(self, *args: object) -> None:
        self._update_pages()
        self._debounce.start()

    def page_channels(self) -> np.ndarray:
        size = int(self.page_size.currentText())
        first = (self.page.value() - 1) * size
        return np.arange(first, min(first + size, self.n_channels), dtype=np.int64)

    def width_px(self) -> int:
        return max(100, int(self.plot.getViewBox().width()))

    def show_envelope(self, env: Envelope) -> None:
        if env.lo.shape[1] == 0:
            self.plot.clear_traces()
            self.info.setText("nothing recorded in this span yet")
            return
        x_ms = (env.t_s + env.bin_s / 2) * 1e3
        self.plot.set_envelopes(
            env.channels, x_ms, env.lo, env.hi, scale=mode_scale(self.modes, env.channels)
        )
        self.info.setText(
            f"channels {env.channels[0]}-{env.channels[-1]} of {self.n_channels}, "
            f"{env.t_s[0]:.3f}-{env.t_s[-1] + env.bin_s:.3f} s of {self.duration_s:.3f} s; "
            f"{env.lo.shape[1]} bins of {env.bin_s * 1e3:.3f} ms (min/max per pixel)"
        )
