"""The whole window on the embedded emulated lab, offscreen: connect, electroporate with a
confirmation, record, select channels and see the traces change, pause and scroll back,
stop, and page through every channel of the finished session."""

from __future__ import annotations

import numpy as np
import pytest

from gui.main_window import MainWindow, default_selection
from instrument.recording import open_recording

WAIT_MS = 60_000


@pytest.fixture
def window(app, qtbot, live_lab):
    w = MainWindow(live_lab)
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()


def connected(qtbot, w) -> None:
    w.connect_instruments([])
    qtbot.waitUntil(lambda: w.lab.has_board and not w.background.busy, timeout=WAIT_MS)


def test_default_selection_is_a_centre_block():
    sel = default_selection(64, 64)
    assert sel.size == 32
    rows, cols = np.divmod(sel, 64)
    assert rows.min() == 30 and rows.max() == 33 and cols.min() == 28 and cols.max() == 35


def test_connect_shows_each_instrument(window, qtbot):
    connected(qtbot, window)
    for name in ("cnea", "smu", "selector"):
        row = window.connection.row_text(name)
        assert row["state"] == "connected" and row["identity / error"]
    assert window.array_map.rows == 64 and window.array_map.selected.size == 32
    qtbot.waitUntil(lambda: window.access is not None, timeout=WAIT_MS)
    assert window.recording_panel.start.isEnabled()
    window.disconnect_instruments(["smu"])
    qtbot.waitUntil(
        lambda: window.connection.row_text("smu")["state"] == "disconnected", timeout=WAIT_MS
    )


def test_electroporation_asks_first(window, qtbot):
    connected(qtbot, window)
    qtbot.waitUntil(lambda: window.access is not None, timeout=WAIT_MS)
    before = window.access.copy()
    region = (np.arange(5, 9)[:, None] * 64 + np.arange(5, 13)).ravel()
    window.array_map.select_region(range(5, 9), range(5, 13))
    questions = []
    window.confirm = lambda title, text: questions.append(text) or False
    window.array_map.electroporate.click()
    assert "32 electrode(s)" in questions[0] and "2.5 V" in questions[0]
    qtbot.wait(200)
    assert not window.background.busy  # refused: nothing was sent
    window.confirm = lambda title, text: True
    window.array_map.electroporate.click()
    qtbot.waitUntil(lambda: not window.background.busy, timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: window.access is not None and np.any(window.access[region] > before[region]),
        timeout=WAIT_MS,
    )
    outside = np.setdiff1d(np.arange(4096), region)
    np.testing.assert_array_equal(window.access[outside], before[outside])


def test_record_select_see_traces_change_stop_and_page(window, qtbot, tmp_path):
    w = window
    connected(qtbot, w)
    w.confirm = lambda title, text: True
    w.electroporate(np.arange(4096), 2.5, 1e-3)
    qtbot.waitUntil(lambda: not w.background.busy, timeout=WAIT_MS)
    session = tmp_path / "s1"
    w.start_recording(str(session), "", 0.0)
    qtbot.waitUntil(lambda: w.live_traces.shown_serial > 0, timeout=WAIT_MS)
    assert w.lab.is_recording and not w.recording_panel.start.isEnabled()
    np.testing.assert_array_equal(w.live_traces.plot.channels, w.array_map.selected)

    # select 16 other electrodes: the traces follow them, and keep changing
    w.array_map.select_region(range(0, 2), range(0, 8))
    chosen = w.array_map.selected.copy()
    assert chosen.size == 16
    qtbot.waitUntil(
        lambda: (
            np.array_equal(w.live_traces.plot.channels, chosen)
            and np.isfinite(w.live_traces.plot.envelopes.data()[2]).sum() > 16 * 200
        ),
        timeout=WAIT_MS,
    )
    first = w.live_traces.plot.envelopes.data()[2].copy()
    serial = w.live_traces.shown_serial
    qtbot.waitUntil(lambda: w.live_traces.shown_serial > serial + 2, timeout=WAIT_MS)
    later = w.live_traces.plot.envelopes.data()[2]
    assert first.shape != later.shape or not np.array_equal(first, later, equal_nan=True)
    assert w.live_traces.plot.getAxis("left")._tickLevels[0][0][1].startswith(f"ch {chosen[0]}")

    # the panel shows the recording; the raster and the map get the whole array
    qtbot.waitUntil(
        lambda: int(w.recording_panel.text("frames").replace(",", "")) > 100, timeout=WAIT_MS
    )
    assert w.recording_panel.text("lost") == "0"
    qtbot.waitUntil(lambda: w.raster.events > 0, timeout=WAIT_MS)
    assert "spike rate" in w.array_map.values and "RMS" in w.array_map.values

    # pause: the traces freeze; scrolling back reads the file
    w.live_traces.pause.click()
    frozen = w.live_traces.shown_serial
    qtbot.wait(500)
    assert w.live_traces.shown_serial == frozen
    w.live_traces.plot.setXRange(-1500, -500, padding=0)
    qtbot.waitUntil(lambda: w.live_traces.info.text().startswith("paused: file"), timeout=WAIT_MS)
    w.live_traces.pause.click()

    # stop
    w.recording_panel.stop.click()
    qtbot.waitUntil(
        lambda: not w.lab.is_recording and w.recording_panel.start.isEnabled(), timeout=WAIT_MS
    )
    assert w.recording_panel.text("state").startswith("stopped (requested)")
    written = w.lab.recording.status().samples_written
    assert written > 1_000  # more than 0.1 s was recorded
    with open_recording(session) as rec:  # the file holds every sample taken
        assert rec.attrs["complete"] and rec.n_samples == written

    # every channel, a page at a time, from the finished file
    w.tabs.setCurrentWidget(w.paged)
    w.open_session(session)
    qtbot.waitUntil(lambda: w.paged.plot.points > 0, timeout=WAIT_MS)
    assert w.paged.n_channels == 4096 and w.paged.page.maximum() == 64
    np.testing.assert_array_equal(w.paged.plot.channels, np.arange(64))
    w.paged.page.setValue(64)
    qtbot.waitUntil(lambda: w.paged.plot.channels[0] == 4032, timeout=WAIT_MS)
    w.paged.page_size.setCurrentText("256")
    qtbot.waitUntil(lambda: len(w.paged.plot.channels) == 256, timeout=WAIT_MS)
    assert w.paged.page.maximum() == 16


def test_frames_are_drawn_on_a_schedule_not_an_interval(app, qtbot, monkeypatch):
    """Ticks twice per period, a quarter period late on average: a new frame every tick
    still gets 30 draws/s at 30 Hz (an 'at least 1/30 s since the last draw' rule draws on
    every other tick at best, about 24/s here)."""
    import types

    from gui import main_window

    w = MainWindow(None, redraw_hz=30)
    qtbot.addWidget(w)
    w.timer.stop()  # ticks by hand, on a made-up clock
    now = [1000.0]
    fake = types.SimpleNamespace(perf_counter=lambda: now[0], monotonic=lambda: now[0])
    monkeypatch.setattr(main_window, "time", fake)
    drawn: list[float] = []
    monkeypatch.setattr(w, "_draw_frame", lambda frame, force=False: drawn.append(now[0]))
    w.set_redraw_rate(30)
    rng = np.random.default_rng(0)
    for tick in range(1200):  # 20 s of ticks every 1/60 s, each 0-8 ms late
        now[0] = 1000.0 + tick / 60 + rng.uniform(0, 0.008)
        w.feed.latest = types.SimpleNamespace(serial=tick + 1)  # a new frame every tick
        w.redraw()
        assert w.feed.next_draw_at >= now[0]  # the feed is told when the next draw is due
    rate = (len(drawn) - 1) / (drawn[-1] - drawn[0])
    assert 29.5 < rate <= 30.2
    assert min(np.diff(drawn)) > 1 / 60 - 0.01  # never a burst
