"""The views on their own, offscreen: traces, array map selection, raster, panels, log."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest

from gui.array_map import LEVELS_REFRESH_S, ArrayMap, robust_levels
from gui.connection_panel import ConnectionPanel
from gui.log_panel import LogPanel
from gui.raster import RasterView, spike_image
from gui.recording_panel import RecordingPanel, format_status
from gui.trace_image import TRACE_ARGB, envelope_image
from gui.traces import StackedTraces, nice_step
from instrument.acquisition import AcquisitionStatus
from instrument.live import InstrumentState


def _lit(image: np.ndarray) -> np.ndarray:
    return image == TRACE_ARGB


def test_envelope_image_strokes_each_bin_from_min_to_max():
    x = np.array([5.0])
    lo, hi = np.array([[2.0]], np.float32), np.array([[6.0]], np.float32)
    image = envelope_image(x, lo, hi, np.zeros(1), (0.0, 10.0, 0.0, 10.0), (10, 10))
    lit = _lit(image)
    assert lit[:, 5].nonzero()[0].tolist() == [2, 3, 4, 5, 6]  # row 0 = y0
    assert lit.sum() == 5 and np.all(image[~lit] == 0)  # transparent elsewhere


def test_envelope_image_joins_bins_and_breaks_at_lost_samples():
    x = np.array([1.0, 8.0])
    lo = np.array([[0.0, 9.0], [0.0, np.nan]], np.float32)
    hi = lo.copy()
    image = envelope_image(x, lo, hi, np.array([0.0, 20.0]), (0.0, 10.0, 0.0, 40.0), (10, 40))
    lit = _lit(image)
    # trace 0: a line from (1, 0) to (8, 9): every column between is lit, rows rising
    lane0 = lit[:20]
    assert lane0[:, 1:9].any(axis=0).all() and not lane0[:, 9:].any() and not lane0[:, 0].any()
    first_row = [int(np.argmax(lane0[:, c])) for c in range(1, 9)]
    assert first_row == sorted(first_row) and first_row[0] == 0 and lane0[9, 8]
    # trace 1, 20 up: one point, the NaN bin breaks the line
    assert lit[20:].sum() == 1 and lit[20, 1]


def test_envelope_image_splits_a_jump_between_neighbouring_columns():
    x = np.array([2.5, 3.5])  # columns 2 and 3
    lo = np.array([[0.0, 8.0]], np.float32)
    image = envelope_image(x, lo, lo.copy(), np.zeros(1), (0.0, 10.0, 0.0, 10.0), (10, 10))
    lit = _lit(image)
    assert lit[:, 2].nonzero()[0].tolist() == [0, 1, 2, 3, 4]  # up to the middle, row 4
    assert lit[:, 3].nonzero()[0].tolist() == [4, 5, 6, 7, 8]  # from the middle on
    assert lit.sum() == 10


def test_envelope_image_clips_what_lies_outside():
    x = np.array([-50.0, 5.0, 500.0])
    lo = np.array([[-100.0, -100.0, 5.0]], np.float32)
    hi = np.array([[-100.0, 5.0, 5.0]], np.float32)
    image = envelope_image(x, lo, hi, np.zeros(1), (0.0, 10.0, 0.0, 10.0), (10, 10))
    lit = _lit(image)
    assert lit[:, 5].nonzero()[0].tolist() == list(range(6))  # the stroke, cut at row 0
    assert lit[5, 6:].all() and lit[:, 6:].sum() == 4  # the flat line to x = 500, cut
    assert not lit[:, :5].any()  # the line from x = -50 runs below the image


def test_nice_step():
    assert [nice_step(v) for v in (0.7, 3.0, 7.0, 12.0, 260.0)] == [0.5, 2.0, 5.0, 10.0, 200.0]


def test_stacked_traces_one_image_for_all_channels(app, qtbot):
    plot = StackedTraces()
    qtbot.addWidget(plot)
    plot.resize(800, 600)
    plot.show()
    qtbot.waitExposed(plot)
    k, p = 8, 700
    rng = np.random.default_rng(1)
    lo = rng.normal(-0.07, 1e-3, size=(k, p)).astype(np.float32)
    hi = lo + 2e-3
    lo[5, 300:700] = np.nan  # lost samples: the newer half of trace 5
    hi[5, 300:700] = np.nan
    plot.spacing = 10.0  # mV: lanes apart (the noise spans ~6 mV)
    plot.set_envelopes(np.arange(k), np.linspace(-2000, 0, p), lo, hi, tag="first")
    assert plot.points == k * p
    assert plot.scale_text.toPlainText().endswith("mV")
    qtbot.waitUntil(lambda: plot.envelopes.painted_tag == "first")  # rendered, then painted
    plot.set_envelopes(np.arange(k), np.linspace(-2000, 0, p), lo + 1e-3, hi + 1e-3, tag="2nd")
    qtbot.waitUntil(lambda: plot.envelopes.painted_tag == "2nd")
    # what is on screen: green in every lane, top to bottom in channel order, and in
    # trace 5's lane only over its older half
    shot = plot.viewport().grab().toImage()
    rgb = np.array(
        [[shot.pixel(c, r) & 0xFFFFFF for c in range(0, shot.width(), 2)]
         for r in range(shot.height())]
    )  # fmt: skip
    green = rgb == TRACE_ARGB & 0xFFFFFF
    rows = np.nonzero(green.any(axis=1))[0]
    assert rows.size > 0
    vb = plot.getViewBox()

    def lane_rows(i: int) -> np.ndarray:
        centre = vb.mapViewToScene(QtCore.QPointF(-1000, -i * plot._spacing_now)).y()
        half = (
            0.3 * plot._spacing_now * (vb.height() / (vb.viewRange()[1][1] - vb.viewRange()[1][0]))
        )
        r = plot.mapFromScene(QtCore.QPointF(0, centre)).y()
        return green[max(int(r - half), 0) : int(r + half)]

    for i in range(k):
        lane = lane_rows(i)
        cols = np.nonzero(lane.any(axis=0))[0]
        assert cols.size > 0, f"trace {i} not drawn"
        if i == 5:  # nothing right of the first ~43 % of the time axis
            assert cols.max() < 0.5 * green.shape[1]
        else:
            assert cols.max() > 0.9 * green.shape[1]


def test_array_map_click_and_drag_select(app, qtbot):
    amap = ArrayMap()
    qtbot.addWidget(amap)
    amap.resize(600, 700)
    amap.show()
    qtbot.waitExposed(amap)
    seen = []
    amap.selection_changed.connect(lambda ch: seen.append(ch))
    view = amap.graphics

    def at(row: float, col: float) -> QtCore.QPoint:
        scene = amap.box.mapViewToScene(QtCore.QPointF(col + 0.5, row + 0.5))
        return view.mapFromScene(scene)

    QTest.mouseClick(view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=at(10, 20))
    qtbot.waitUntil(lambda: len(seen) == 1)
    assert seen[-1].tolist() == [10 * 64 + 20]
    # drag from (2, 3) to (5, 7): a 4 x 5 rectangle
    start, end = at(2, 3), at(5, 7)
    QTest.mousePress(view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=start)
    for f in np.linspace(0, 1, 6):
        qtbot.wait(15)  # pyqtgraph drops mouse moves closer than its rate limit
        QTest.mouseMove(view.viewport(), start + (end - start) * float(f))
    QTest.mouseRelease(view.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=end)
    qtbot.waitUntil(lambda: len(seen) == 2)
    expected = (np.arange(2, 6)[:, None] * 64 + np.arange(3, 8)).ravel()
    assert seen[-1].tolist() == sorted(expected.tolist())
    # ctrl-click adds an electrode; ctrl-click on a selected one removes it
    ctrl = QtCore.Qt.KeyboardModifier.ControlModifier
    QTest.mouseClick(view.viewport(), QtCore.Qt.MouseButton.LeftButton, ctrl, at(40, 40))
    qtbot.waitUntil(lambda: len(seen) == 3)
    assert 40 * 64 + 40 in seen[-1] and len(seen[-1]) == 21
    later = QtWidgets.QApplication.doubleClickInterval() + 100  # QTest's clock: not a double
    QTest.mouseClick(view.viewport(), QtCore.Qt.MouseButton.LeftButton, ctrl, at(3, 4), later)
    qtbot.waitUntil(lambda: len(seen) == 4)
    assert 3 * 64 + 4 not in seen[-1] and len(seen[-1]) == 20
    assert amap.selected_label.text() == "20 electrodes selected"


def test_array_map_values_and_electroporate_request(app, qtbot):
    amap = ArrayMap()
    qtbot.addWidget(amap)
    values = np.linspace(0, 1e-3, 4096)
    amap.set_values("RMS", values)
    first = tuple(np.percentile(values * 1e6, [1, 99]))
    assert amap.levels == pytest.approx(first, rel=1e-4)
    amap.set_values("RMS", values * 10)  # the colours hold still for a second...
    assert amap.levels == pytest.approx(first, rel=1e-4)
    amap._levels_at -= LEVELS_REFRESH_S  # ...then re-span
    amap.set_values("RMS", values * 10)
    assert amap.levels == pytest.approx(tuple(10 * np.array(first)), rel=1e-4)
    amap.measure.setCurrentText("access")
    amap.set_values("access", np.ones(4096))
    assert amap.levels == (0.0, 1.0)
    amap.set_values("access", np.ones(10))  # another shape: ignored, not drawn wrong
    asked = []
    amap.electroporate_requested.connect(lambda ch, v, w: asked.append((ch, v, w)))
    amap.select_region(range(0, 2), range(0, 2))
    amap.amplitude.setValue(2.0)
    amap.width_ms.setValue(0.5)
    amap.electroporate.click()
    assert asked[0][0].tolist() == [0, 1, 64, 65]
    assert asked[0][1:] == (2.0, pytest.approx(0.5e-3))
    with pytest.raises(ValueError, match="unknown measure"):
        amap.set_values("colour", values)


def test_robust_levels_never_empty():
    assert robust_levels(np.full(10, np.nan), "RMS") == (0.0, 1.0)
    lo, hi = robust_levels(np.full(10, 3.0), "RMS")
    assert hi > lo
    assert robust_levels(np.array([2.0, 5.0]), "spike rate")[0] == 0.0


def test_spike_image_counts_every_spike_per_pixel():
    times = np.array([0.05, 0.051, 0.5, 0.99, 1.5])
    chans = np.array([0, 1, 100, 4095, 7])
    img = spike_image(times, chans, 4096, 0.0, 1.0, 100, 512)
    assert img.shape == (512, 100)
    assert img.sum() == 4  # the spike at 1.5 s is outside the span
    assert img[0, 5] == 2  # channels 0 and 1 share a pixel row (8 channels each)
    assert img[100 // 8, 50] == 1 and img[511, 99] == 1


def test_raster_view_draws_spikes(app, qtbot):
    view = RasterView()
    qtbot.addWidget(view)
    view.resize(600, 300)
    view.show()
    view.set_spikes(np.array([0.1, 0.2]), np.array([3, 4000]), 4096, 0.0, 1.0)
    assert view.events == 2 and "2 spikes on 2 channels" in view.info.text()


def test_connection_panel_shows_errors_where_they_happened(app, qtbot):
    panel = ConnectionPanel()
    qtbot.addWidget(panel)
    states = [
        InstrumentState("cnea", "cnea_board", "TCPIP::x::1::SOCKET", True, "connected", "CNEA"),
        InstrumentState("smu", "keithley2450", "TCPIP::y::2::SOCKET", False, "error", "", "boom"),
    ]
    panel.refresh(states)
    assert panel.row_text("cnea")["state"] == "connected"
    assert panel.row_text("cnea")["driver"] == "cnea_board (emulated)"
    assert panel.row_text("smu")["identity / error"] == "boom"
    requested = []
    panel.connect_requested.connect(requested.append)
    panel.table.selectRow(1)
    panel.connect_one.click()
    panel.connect_all.click()
    assert requested == [["smu"], []]


def _status(**changes) -> AcquisitionStatus:
    base = dict(
        state="recording",
        elapsed_s=75.2,
        recorded_s=75.0,
        samples_written=750_000,
        data_rate_bps=81.9e6,
        realtime_factor=1.0,
        frames_received=46_875,
        frames_lost=0,
        crc_errors=0,
        stalls=0,
        reconnects=0,
        gaps=0,
        disk_free_bytes=int(70e9),
        backlog_frames=3,
        backlog_s=0.0048,
        backlog_fraction=0.0024,
        backpressure_warning=False,
        stop_reason="",
        error="",
    )
    base.update(changes)
    return AcquisitionStatus(**base)


def test_recording_panel_texts(app, qtbot):
    texts = format_status(_status())
    assert texts["elapsed"] == "01:15" and texts["rate"].startswith("81.9 MB/s")
    assert texts["frames"] == "46,875" and texts["disk"] == "70.0 GB"
    panel = RecordingPanel()
    qtbot.addWidget(panel)
    panel.show_status(_status(frames_lost=12, backpressure_warning=True))
    assert panel.text("lost") == "12" and "WRITER FALLING BEHIND" in panel.text("backlog")
    panel.show_status(_status(state="failed", stop_reason="disk full", error="DiskFullError: x"))
    assert panel.text("state") == "failed (disk full) — DiskFullError: x"
    started = []
    panel.start_requested.connect(lambda *a: started.append(a))
    panel.label.setText("baseline")
    panel.duration.setValue(30)
    panel.start.click()
    assert started == [("", "baseline", 30.0)]


def test_log_panel_takes_records_from_any_thread(app, qtbot):
    panel = LogPanel()
    qtbot.addWidget(panel)
    panel.attach("brainpaste.test.gui")
    try:
        logger = logging.getLogger("brainpaste.test.gui")
        thread = threading.Thread(target=lambda: logger.warning("from a worker thread"))
        thread.start()
        thread.join()
        logger.debug("hidden at INFO")
        qtbot.waitUntil(lambda: any("from a worker thread" in x for x in panel.lines()))
        assert not any("hidden" in x for x in panel.lines())
        panel.level.setCurrentText("DEBUG")
        logger.debug("shown at DEBUG")
        qtbot.waitUntil(lambda: any("shown at DEBUG" in x for x in panel.lines()))
    finally:
        panel.detach()


def test_feed_keeps_the_trace_history_from_short_aligned_windows():
    import dataclasses

    from gui.live_feed import TRACE_BIN_ROWS, LiveFeed
    from instrument.acquisition import Snapshot

    feed = LiveFeed()
    try:
        feed.trace_s = 0.1  # 31 bins of 32 rows at 10 kHz
        rate, k, bins = 10_000.0, 2, 8

        def snap(first_bin: int) -> Snapshot:
            t = (first_bin + np.arange(bins)) * TRACE_BIN_ROWS / rate
            lo = np.tile((first_bin + np.arange(bins)).astype(np.float32), (k, 1))
            z = np.zeros(4)
            return Snapshot(rate, np.arange(k), t, lo, lo + 1, z, z, z, z, z, 1.0, None)

        a = feed._stitch(snap(0), rate)
        b = feed._stitch(snap(4), rate)  # overlaps the first by 4 bins
        assert a.lo.shape == (k, 8) and b.lo.shape == (k, 12)
        np.testing.assert_array_equal(b.lo[0], np.arange(12))
        np.testing.assert_allclose(b.t_s, np.arange(12) * TRACE_BIN_ROWS / rate)
        for start in range(8, 200, 8):
            c = feed._stitch(snap(start), rate)
        assert c.lo.shape == (k, round(0.1 * rate / TRACE_BIN_ROWS))  # bounded history
        assert c.lo[0, -1] == 199
        other = dataclasses.replace(snap(300), channels=np.array([5, 6]))
        assert feed._stitch(other, rate).lo.shape == (k, 8)  # new channels: a new history
    finally:
        feed.close()


def test_scroll_back_past_the_file_reads_again_until_the_file_holds_it(app, qtbot):
    from gui.traces import LiveTraces
    from instrument.acquisition import Snapshot
    from instrument.envelopes import Envelope

    view = LiveTraces()
    qtbot.addWidget(view)
    rate, k, bins = 10_000.0, 2, 50
    t = np.arange(bins) / 100.0
    lo = np.zeros((k, bins), dtype=np.float32)
    z = np.zeros(4)
    assert view.show_snapshot(
        1, Snapshot(rate, np.arange(k), t, lo, lo + 1, z, z, z, z, z, 1.0, None)
    )
    asked: list[tuple[float, float]] = []
    file_rows = [0]  # the file lags the live view: empty at first

    def read_back(channels, t0, t1, n_bins):
        asked.append((t0, t1))
        n = file_rows[0]
        if n == 0:
            empty = np.zeros((k, 0), dtype=np.float32)
            view.show_envelope(Envelope(channels, np.zeros(0), 0.0, empty, empty, 0))
        else:
            b = np.zeros((k, 10), dtype=np.float32)
            view.show_envelope(Envelope(channels, t0 + np.arange(10) * 0.01, 0.01, b, b + 1, n))
        file_rows[0] = 5000  # by the next read the writer has caught up

    view.read_back = read_back
    view.pause.click()
    view.plot.setXRange(-400, -100, padding=0)
    qtbot.waitUntil(lambda: view.info.text().startswith("paused: file"), timeout=5000)
    assert len(asked) >= 2  # the empty read was retried
    view.pause.click()
