"""The main window: connection and recording on the left, the live views in the middle
(array map, traces, raster), a paged view of every channel, and the log at the bottom.

Threads: instrument I/O and file reads run on :class:`gui.workers.Background`; the
acquisition's snapshots are turned into frames by :class:`gui.live_feed.LiveFeed`; this
window only redraws, on a timer, from the latest frame. Nothing here waits on I/O.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from gui.array_map import ArrayMap
from gui.connection_panel import ConnectionPanel
from gui.connectivity_view import ConnectivityView
from gui.imprint_view import ImprintView
from gui.live_feed import LiveFeed, LiveFrame
from gui.log_panel import LogPanel
from gui.raster import RasterView
from gui.recording_panel import RecordingPanel
from gui.traces import MAX_LIVE_CHANNELS, LiveTraces, PagedTraces
from gui.workers import Background
from instrument.acquisition import AcquisitionSettings, AcquisitionStatus
from instrument.child_command import ChildCommand, ChildCommandError
from instrument.envelopes import Envelope, read_envelope, refresh
from instrument.imprint_control import ImprintProcess
from instrument.imprint_progress import ImprintProgress, read_progress
from instrument.live import Electroporation, LiveLab, grid_shape
from instrument.recording import Recording, open_recording
from instrument.session_files import SessionPathError, find_recording
from instrument.session_results import (
    SessionConnectivity,
    SessionSpikes,
    read_connectivity,
    read_spikes,
)

log = logging.getLogger(__name__)

DEFAULT_REDRAW_HZ = 30.0
ACCESS_POLL_S = 3.0
IMPRINT_POLL_S = 1.0


STATUS_S = 0.1
"""The recording's status (panel, pressure) is looked at this often, s."""
FRAME_RETRY_S = 0.004
"""While recording, a frame not ready at its slot is looked for again this soon, s."""
PRESSURE_INTERVAL_S = (0.0, 0.2, 1.0)
"""Least time between two live draws at each pressure level, s."""


def recording_pressure(status: AcquisitionStatus, current: int = 0) -> int:
    """How much the display should hold back so the recording keeps up (drawing competes
    with the acquisition threads for the interpreter): 0 none; 1 when the reader→writer
    ring passes 20 %; 2 past 50 % (the recording stops at 95 %). A raised level holds
    until the ring is below 5 %."""
    if status.state != "recording":
        return 0
    fill = status.backlog_fraction
    if fill > 0.5:
        return 2
    if fill > 0.2:
        return max(1, current)
    return current if fill > 0.05 else 0


def default_selection(rows: int, cols: int, n: int = 32) -> np.ndarray:
    """A block of about ``n`` electrodes at the centre of the grid (4 rows × 8 columns)."""
    if rows * cols == 0:
        return np.zeros(0, dtype=np.int64)
    h = min(rows, max(1, round(np.sqrt(n / 2))))
    w = min(cols, max(1, n // h))
    r0, c0 = (rows - h) // 2, (cols - w) // 2
    return (np.arange(r0, r0 + h)[:, None] * cols + np.arange(c0, c0 + w)).ravel()


class _FileReader:
    """Every read of the session file, one worker task at a time.

    HDF5 shares one open file among all opens of it in a process, so a handle kept open
    for the paged view would show other readers a stale file while a child process
    (extract, imprint) writes it. So: ``read`` jobs reuse one open recording (the newest
    replaces an older one still waiting: only the latest view matters), and
    ``exclusive`` jobs — reading what another process wrote — close it first and run in
    order.
    """

    def __init__(self, background: Background) -> None:
        self.background = background
        self.path: Path | None = None
        self.recording: Recording | None = None
        self._busy = False
        self._page: tuple[Callable[[Recording], Any], Callable[[Any], None]] | None = None
        self._exclusive: deque[tuple[Callable[[], Any], Callable[[Any], None], Any]] = deque()

    def set_path(self, path: Path | None) -> None:
        """Read from ``path`` from now on (the file open now is closed first)."""
        self.path = Path(path) if path else None
        self._page = None
        self.exclusive(lambda: None, lambda _: None)

    def read(self, fn: Callable[[Recording], Any], on_done: Callable[[Any], None]) -> None:
        """``fn(recording)`` on a worker, then ``on_done(result)`` on the GUI thread."""
        self._page = (fn, on_done)
        self._run_next()

    def exclusive(
        self,
        fn: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """``fn()`` on a worker with the file closed here, then ``on_done(result)``."""
        self._exclusive.append((fn, on_done, on_error))
        self._run_next()

    def _run_next(self) -> None:
        if self._busy:
            return
        if self._exclusive:
            fn, on_done, on_error = self._exclusive.popleft()

            def work() -> Any:
                self.close()
                return fn()

            self._submit(work, on_done, on_error)
            return
        if self._page is None or self.path is None:
            return
        page_fn, on_page = self._page
        self._page = None
        path = self.path

        def read() -> Any:
            if self.recording is None:
                self.recording = open_recording(path)
            return page_fn(self.recording)

        def failed(exc: BaseException) -> None:
            log.warning("reading %s: %s: %s", path, type(exc).__name__, exc)
            self._exclusive.appendleft((lambda: None, lambda _: None, None))  # reopen next time

        self._submit(read, on_page, failed)

    def _submit(
        self,
        work: Callable[[], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None,
    ) -> None:
        self._busy = True

        def done(result: Any) -> None:
            self._busy = False
            try:
                on_done(result)
            finally:
                self._run_next()

        def failed(exc: BaseException) -> None:
            self._busy = False
            try:
                if on_error is not None:
                    on_error(exc)
                else:
                    log.warning("session file: %s: %s", type(exc).__name__, exc)
            finally:
                self._run_next()

        self.background.run(work, on_done=done, on_error=failed, name="session file")

    def close(self) -> None:
        if self.recording is not None:
            self.recording.close()
            self.recording = None


class MainWindow(QtWidgets.QMainWindow):
    """The brainpaste operator window over one :class:`instrument.live.LiveLab`."""

    def __init__(self, lab: LiveLab | None = None, *, redraw_hz: float = DEFAULT_REDRAW_HZ) -> None:
        super().__init__()
        self.setWindowTitle("brainpaste")
        self.resize(1600, 1000)
        self.lab: LiveLab | None = None
        self.background = Background(parent=self)
        self.feed = LiveFeed()
        self.reader = _FileReader(self.background)
        self.confirm: Callable[[str, str], bool] = self._ask
        """Asks the operator yes/no (title, text); tests replace it."""
        self.access: np.ndarray | None = None
        self.modes: np.ndarray | None = None
        self.session_path: Path | None = None
        self.imprint: ImprintProcess | None = None
        self.extraction: ChildCommand | None = None
        self._imprint_busy = False
        self.redraws = 0
        self.force_redraw = False
        """Redraw every view on every tick even without new data (the bench measures the
        drawing capacity with it); normally only new frames are drawn."""
        self._drawn_serial = -1
        self._drawn_raster: object = None
        self._recording_shown = False
        self._last_page_s = 0.0
        self._last_draw_s = 0.0
        self._period_s = 0.0
        self._next_slot_s = 0.0
        self._status_at = 0.0
        self.pressure = 0
        """0: draw freely; 1, 2: the recording is under pressure, draw less (see
        :func:`recording_pressure`)."""
        self.throttled_ticks = 0
        self._access_busy = False
        self._build()
        self.timer = QtCore.QTimer(self, singleShot=True)
        """Armed for the next frame's slot by each tick (see :meth:`set_redraw_rate`)."""
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.set_redraw_rate(redraw_hz)
        self.imprint_timer = QtCore.QTimer(self, interval=int(IMPRINT_POLL_S * 1000))
        self.imprint_timer.timeout.connect(self.poll_imprint)
        self.extract_timer = QtCore.QTimer(self, interval=500)
        self.extract_timer.timeout.connect(self._poll_extraction)
        self.access_timer = QtCore.QTimer(self, interval=int(ACCESS_POLL_S * 1000))
        self.access_timer.timeout.connect(self.poll_access)
        self.access_timer.start()
        if lab is not None:
            self.set_lab(lab)
        else:  # sessions only: nothing to connect or record
            self.connection.set_busy(True)
            self._update_buttons()

    # --- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.connection = ConnectionPanel()
        self.recording_panel = RecordingPanel()
        self.array_map = ArrayMap()
        self.live_traces = LiveTraces()
        self.raster = RasterView()
        self.paged = PagedTraces()
        self.imprint_view = ImprintView()
        self.connectivity = ConnectivityView()
        self.log_panel = LogPanel()
        self.log_panel.attach("")

        live = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        live.addWidget(self.array_map)
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.live_traces)
        right.addWidget(self.raster)
        right.setSizes([650, 250])
        live.addWidget(right)
        live.setSizes([520, 1000])
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(live, "Live")
        self.tabs.addTab(self.paged, "All channels")
        self.tabs.addTab(self.connectivity, "Connectivity")
        self.tabs.addTab(self.imprint_view, "Imprint")
        self.setCentralWidget(self.tabs)

        left = QtWidgets.QWidget()
        box = QtWidgets.QVBoxLayout(left)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self._group("Instruments", self.connection), 1)
        box.addWidget(self._group("Recording", self.recording_panel))
        dock = QtWidgets.QDockWidget("Lab", self)
        dock.setObjectName("lab")
        dock.setWidget(left)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        log_dock = QtWidgets.QDockWidget("Log", self)
        log_dock.setObjectName("log")
        log_dock.setWidget(self.log_panel)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, log_dock)
        self.resizeDocks([dock], [430], QtCore.Qt.Orientation.Horizontal)
        self.resizeDocks([log_dock], [150], QtCore.Qt.Orientation.Vertical)

        menu = self.menuBar().addMenu("&Session")
        open_action = QtGui.QAction("&Open session…", self)
        open_action.setShortcut(QtGui.QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self._open_dialog)
        menu.addAction(open_action)
        quit_action = QtGui.QAction("&Quit", self)
        quit_action.setShortcut(QtGui.QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu.addAction(quit_action)
        self.fps_label = QtWidgets.QLabel("")
        self.statusBar().addPermanentWidget(self.fps_label)

        self.connection.connect_requested.connect(self.connect_instruments)
        self.connection.disconnect_requested.connect(self.disconnect_instruments)
        self.recording_panel.start_requested.connect(self.start_recording)
        self.recording_panel.stop_requested.connect(self.stop_recording)
        self.array_map.selection_changed.connect(self._selection_changed)
        self.array_map.electroporate_requested.connect(self.electroporate)
        self.paged.page_requested.connect(self.request_page)
        self.connectivity.extract_requested.connect(self.start_extraction)
        self.imprint_view.start_requested.connect(self.start_imprint)
        self.imprint_view.pause_requested.connect(self.pause_imprint)
        self.imprint_view.abort_requested.connect(self.abort_imprint)
        self.live_traces.read_back = self._read_back

    @staticmethod
    def _group(title: str, widget: QtWidgets.QWidget) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox(title)
        layout = QtWidgets.QVBoxLayout(group)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(widget)
        return group

    def set_redraw_rate(self, hz: float) -> None:
        """Draw up to ``hz`` new frames a second (0: as fast as the event loop allows).

        Frames are due on a fixed schedule, one every 1/hz s, and the timer fires at each
        slot: a late frame lets the next come sooner (never more than one slot is caught
        up), and a frame not ready at its slot is looked for again every
        :data:`FRAME_RETRY_S` while recording, not a whole period later."""
        self._period_s = 1.0 / hz if hz > 0 else 0.0
        self._next_slot_s = time.perf_counter()
        self.timer.start(0)

    # --- the lab ---------------------------------------------------------------------------
    def set_lab(self, lab: LiveLab) -> None:
        self.lab = lab
        self.connection.set_source(lab.source)
        self.connection.refresh(lab.states())
        self._update_buttons()

    def _require_lab(self) -> LiveLab:
        if self.lab is None:
            raise RuntimeError("no lab configuration loaded")
        return self.lab

    def connect_instruments(self, names: list[str]) -> None:
        """Connect ``names`` (all when empty) on a worker; the table shows each result."""
        lab = self._require_lab()
        self.connection.set_busy(True)

        def work() -> None:
            if names:
                for name in names:
                    try:
                        lab.connect(name)
                    except Exception as exc:  # shown in the instrument's row
                        log.debug("connect %s: %s", name, exc)
            else:
                lab.connect_all()

        self.background.run(work, on_done=lambda _: self._connected(), name="connect")
        self.connection.refresh(lab.states())

    def _connected(self) -> None:
        lab = self._require_lab()
        self.connection.set_busy(False)
        self.connection.refresh(lab.states())
        for s in lab.states():
            if s.state == "error":
                log.error("%s: %s", s.name, s.error)
        if lab.has_board and lab.positions_m is not None:
            rows, cols = grid_shape(lab.positions_m)
            if (rows, cols) != (self.array_map.rows, self.array_map.cols) or not len(
                self.array_map.selected
            ):
                self.array_map.set_grid(rows, cols)
                self.array_map.select(default_selection(rows, cols))
            self.live_traces.plot.cols = cols
            self.paged.plot.cols = cols
            self.poll_access()
            self.background.run(lambda: lab.board.modes(), on_done=self._got_modes, name="modes")
        self._update_buttons()

    def _got_modes(self, modes: np.ndarray) -> None:
        self.modes = np.asarray(modes)
        self.live_traces.modes = self.modes

    def disconnect_instruments(self, names: list[str]) -> None:
        lab = self._require_lab()
        self.connection.set_busy(True)

        def work() -> None:
            if names:
                for name in names:
                    lab.disconnect(name)
            else:
                lab.disconnect_all()

        def done(_: object) -> None:
            self._connected()
            self.feed.detach()

        def failed(exc: BaseException) -> None:
            self._connected()
            self._error("Disconnect", exc)

        self.background.run(work, on_done=done, on_error=failed, name="disconnect")

    def poll_access(self) -> None:
        """Ask the board for its electrodes' access (on a worker)."""
        lab = self.lab
        if lab is None or not lab.has_board or self._access_busy:
            return
        self._access_busy = True

        def done(access: np.ndarray) -> None:
            self._access_busy = False
            self.access = access
            self.array_map.set_values("access", access)

        def failed(exc: BaseException) -> None:
            self._access_busy = False
            log.warning("access: %s", exc)
            self.connection.refresh(lab.states())

        self.background.run(lab.access, on_done=done, on_error=failed, name="access")

    # --- electroporation -------------------------------------------------------------------
    def _ask(self, title: str, text: str) -> bool:
        answer = QtWidgets.QMessageBox.question(
            self,
            title,
            text,
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            QtWidgets.QMessageBox.StandardButton.No,
        )
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    def electroporate(self, channels: np.ndarray, amplitude_v: float, width_s: float) -> bool:
        """Ask for confirmation, then pulse ``channels`` on a worker. True when sent."""
        lab = self._require_lab()
        channels = np.asarray(channels, dtype=np.int64)
        if channels.size == 0:
            self._error("Electroporate", RuntimeError("select electrodes on the array map first"))
            return False
        rows = np.unique(channels // self.array_map.cols)
        cols = np.unique(channels % self.array_map.cols)
        text = (
            f"Electroporate {channels.size} electrode(s) (rows {rows[0]}-{rows[-1]}, columns "
            f"{cols[0]}-{cols[-1]}) with one {amplitude_v:g} V, {width_s * 1e3:g} ms pulse?\n\n"
            "Electroporation opens the membrane of the cells on these electrodes."
        )
        if not self.confirm("Electroporate", text):
            log.info("electroporation cancelled")
            return False

        def done(result: Electroporation) -> None:
            log.info(
                "electroporation: access on %d of %d electrodes (was %d)",
                result.opened,
                result.channels.size,
                int(np.count_nonzero(result.access_before > 0)),
            )
            self.poll_access()

        def failed(exc: BaseException) -> None:
            self._error("Electroporate", exc)
            self.connection.refresh(lab.states())

        self.background.run(
            lambda: lab.electroporate(channels, amplitude_v, width_s),
            on_done=done,
            on_error=failed,
            name="electroporate",
        )
        return True

    # --- recording -------------------------------------------------------------------------
    def start_recording(
        self,
        folder: str = "",
        label: str = "",
        duration_s: float = 0.0,
        settings: AcquisitionSettings | None = None,
    ) -> None:
        """Start recording (on a worker) into ``folder`` (default: a new dated folder);
        ``settings`` default to the lab's ``[acquisition]`` table."""
        lab = self._require_lab()
        self.recording_panel.set_running(True)

        def work() -> Any:
            return lab.start_recording(
                folder or None,
                label=label,
                duration_s=duration_s if duration_s > 0 else None,
                settings=settings,
            )

        def done(acq: Any) -> None:
            self.feed.attach(acq)
            self._recording_shown = True
            self.session_path = acq.path
            self.reader.set_path(acq.path)
            self.paged.modes = self.modes
            self._update_buttons()

        def failed(exc: BaseException) -> None:
            self._error("Start recording", exc)
            self.connection.refresh(lab.states())
            self._update_buttons()

        self.background.run(work, on_done=done, on_error=failed, name="start recording")

    def stop_recording(self) -> None:
        lab = self._require_lab()
        self.recording_panel.stop.setEnabled(False)

        def failed(exc: BaseException) -> None:
            self._error("Stop recording", exc)
            self._update_buttons()

        self.background.run(
            lambda: lab.stop_recording(), on_done=lambda _: self._stopped(), on_error=failed
        )

    def _stopped(self) -> None:
        """The recording ended (asked for, duration reached, or failed)."""
        lab = self._require_lab()
        acq = lab.recording
        self.feed.detach()
        if acq is not None:  # the final state, shown with the buttons that follow from it
            self.recording_panel.show_status(acq.status(), acq.path)
        self._update_buttons()
        if acq is not None and acq.error is not None:
            self.connection.refresh(lab.states())
        if acq is not None:
            self.reader.set_path(acq.path)
            self.request_page()
            self.poll_imprint()
            self.load_results()

    def _update_buttons(self) -> None:
        lab = self.lab
        recording = lab is not None and lab.is_recording
        self.recording_panel.set_running(recording, can_start=lab is not None and lab.has_board)
        self.array_map.electroporate.setEnabled(lab is not None and lab.has_board)

    # --- sessions --------------------------------------------------------------------------
    def _open_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open session folder")
        if folder:
            self.open_session(folder)

    def open_session(self, path: str | Path) -> None:
        """Show a recorded session (folder, session.h5 or .nwb) in the session views."""
        self.session_path = Path(path)
        self.reader.set_path(self.session_path)
        self.request_page()
        self.poll_imprint()
        self.load_results()
        log.info("session %s opened", path)

    # --- extraction ------------------------------------------------------------------------
    def load_results(self, note: str = "") -> None:
        """Read the session's stored spikes and connectivity (on a worker) and show them."""
        path = self._session_file()
        self._extract_button()
        if path is None:
            return

        def work() -> tuple[SessionConnectivity | None, SessionSpikes | None]:
            return read_connectivity(path), read_spikes(path)

        def done(result: tuple[SessionConnectivity | None, SessionSpikes | None]) -> None:
            self.connectivity.show_results(*result, note=note)
            self._extract_button()

        def failed(exc: BaseException) -> None:
            self.connectivity.show_results(None, None, f"cannot read the results: {exc}")

        self.reader.exclusive(work, done, failed)

    def _extract_button(self) -> None:
        busy = self.extraction is not None and self.extraction.running
        recording = self.lab is not None and self.lab.is_recording
        ok = self._session_file() is not None and not busy and not recording
        self.connectivity.extract.setEnabled(ok)
        self.connectivity.extract.setText("Extracting…" if busy else "Extract connectivity")

    def start_extraction(self) -> None:
        """Run ``brainpaste extract`` on the open session (a child process)."""
        path = self._session_file()
        if path is None:
            self._error("Extract", RuntimeError("open a recorded session first"))
            return
        log_path = path.with_name("extract.log")
        self.extraction = ChildCommand(["extract", str(path), "--quiet"], log_path)
        self.extract_timer.start()
        self._extract_button()
        self.connectivity.info.setText("extracting… (brainpaste extract, see the log)")

    def _poll_extraction(self) -> None:
        proc = self.extraction
        if proc is None:
            self.extract_timer.stop()
            return
        code = proc.returncode
        if code is None:
            return
        self.extract_timer.stop()
        self.extraction = None
        tail = proc.output(3000).strip().splitlines()
        if code == 0:
            log.info("extraction finished: %s", " | ".join(tail[-8:]))
            self.load_results("extracted just now")
        else:
            log.error("extraction failed (exit %s): %s", code, " | ".join(tail[-4:]))
            self.load_results(f"extraction failed (exit {code}): see the log")

    # --- imprint ---------------------------------------------------------------------------
    def _session_file(self) -> Path | None:
        if self.session_path is None:
            return None
        try:
            found = find_recording(self.session_path)
        except SessionPathError:
            return None
        return found if found.suffix == ".h5" else None

    def _imprint_buttons(self) -> None:
        running = self.imprint is not None and self.imprint.running
        lab = self.lab
        has_rig = lab is not None and any(s.driver != "cnea_board" for s in lab.states())
        ready = self._session_file() is not None and has_rig and not (lab and lab.is_recording)
        shown = self.imprint_view.shown
        resumable = shown is not None and (shown.pending > 0 or not shown.final)
        self.imprint_view.set_running(
            running, can_start=ready and shown is None, can_resume=ready and resumable
        )

    def poll_imprint(self) -> None:
        """Read the open session's imprint journal (on a worker) and show it."""
        path = self._session_file()
        if path is None or self._imprint_busy:
            self._imprint_buttons()
            return
        self._imprint_busy = True
        proc = self.imprint

        def done(progress: ImprintProgress | None) -> None:
            self._imprint_busy = False
            note = ""
            if proc is not None:
                code = proc.returncode
                if code is None:
                    note = "paused" if proc.paused else "running"
                else:
                    note = self._imprint_finished(proc, code)
            self.imprint_view.show_progress(progress, note)
            self._imprint_buttons()

        def failed(exc: BaseException) -> None:
            self._imprint_busy = False
            self.imprint_view.show_progress(None, f"cannot read the journal: {exc}")
            self._imprint_buttons()

        self.reader.exclusive(lambda: read_progress(path), done, failed)

    def _imprint_finished(self, proc: ImprintProcess, code: int) -> str:
        if self.imprint is proc:
            self.imprint = None
            self.imprint_timer.stop()
            tail = proc.output(2000).strip().splitlines()
            if code == 0:
                log.info("imprint finished: %s", " | ".join(tail[-6:]))
            elif proc.aborted:
                log.warning("imprint aborted (exit %s); resume it from the journal", code)
            else:
                log.error("imprint failed (exit %s): %s", code, " | ".join(tail[-4:]))
        if code == 0:
            return "finished"
        return "aborted: resume from the journal" if proc.aborted else f"failed (exit {code})"

    def start_imprint(self, technology: str, resume: bool = False) -> None:
        """Run ``brainpaste imprint`` on the open session (the rig is released first)."""
        lab = self._require_lab()
        path = self._session_file()
        if path is None:
            self._error("Imprint", RuntimeError("open a recorded session first"))
            return
        self.imprint_view.set_running(True)

        def done(proc: ImprintProcess) -> None:
            self.imprint = proc
            self.imprint_timer.start()
            self.connection.refresh(lab.states())
            self.poll_imprint()

        def failed(exc: BaseException) -> None:
            self._error("Imprint", exc)
            self._imprint_buttons()

        self.background.run(
            lambda: lab.start_imprint(path, technology, resume=resume),
            on_done=done,
            on_error=failed,
            name="start imprint",
        )

    def pause_imprint(self, pause: bool) -> None:
        proc = self.imprint
        if proc is None or not proc.running:
            return
        try:
            proc.pause() if pause else proc.proceed()
        except (ChildCommandError, OSError) as exc:
            self._error("Pause" if pause else "Continue", exc)
        self.poll_imprint()

    def abort_imprint(self) -> None:
        proc = self.imprint
        if proc is None:
            return
        self.imprint_view.abort.setEnabled(False)
        self.background.run(proc.abort, on_done=lambda _: self.poll_imprint(), name="abort imprint")

    def request_page(self) -> None:
        """Read the paged view's channels from the session file (on a worker)."""
        if self.reader.path is None:
            return
        # everything from widgets is read here, on the GUI thread
        chans = self.paged.page_channels()
        span, follow, start = (
            self.paged.span.value(),
            self.paged.follow.isChecked(),
            (self.paged.start.value()),
        )
        width = self.paged.width_px()

        def fn(rec: Recording) -> tuple[Envelope, int, int, float]:
            n = refresh(rec)
            duration = n / rec.sample_rate_hz
            t0 = max(0.0, duration - span) if follow else start
            page = chans if chans.size else np.arange(min(rec.n_channels, 64))
            page = page[page < rec.n_channels]
            env = read_envelope(rec, page, t0, t0 + span, width)
            return env, rec.n_channels, grid_shape(rec.positions_m)[1], duration

        def done(result: tuple[Envelope, int, int, float]) -> None:
            env, n_channels, cols, duration = result
            if n_channels != self.paged.n_channels or cols != self.paged.plot.cols:
                self.paged.set_recording_shape(n_channels, cols, duration)
            self.paged.duration_s = duration
            self.paged.show_envelope(env)

        self.reader.read(fn, done)

    def _read_back(self, channels: np.ndarray, t0_s: float, t1_s: float, n_bins: int) -> None:
        if self.reader.path is None:
            return
        self.reader.read(
            lambda rec: read_envelope(rec, channels, t0_s, t1_s, n_bins),
            self.live_traces.show_envelope,
        )

    # --- selection -------------------------------------------------------------------------
    def _selection_changed(self, channels: np.ndarray) -> None:
        live = channels[:MAX_LIVE_CHANNELS]
        if live.size:
            self.feed.select(live)
        if channels.size > MAX_LIVE_CHANNELS:
            log.info(
                "%d electrodes selected; the first %d are followed live",
                channels.size,
                MAX_LIVE_CHANNELS,
            )

    # --- redraw ----------------------------------------------------------------------------
    def _tick(self) -> None:
        """Draw, then arm the timer: for the next slot after a draw, soon while a frame is
        awaited during a recording, a period later otherwise."""
        try:
            drew = self.redraw()
        finally:
            now = time.perf_counter()
            if self._period_s == 0:
                delay = 0.0
            elif drew or now < self._next_slot_s:
                delay = self._next_slot_s - now
            elif self.lab is not None and self.lab.is_recording:
                delay = FRAME_RETRY_S
            else:
                delay = self._period_s
            self.timer.start(max(0, round(delay * 1000)))

    def redraw(self) -> bool:
        """Draw the newest frame into the visible views if it is new and due (no I/O);
        True when drawn."""
        t0 = time.perf_counter()
        lab = self.lab
        acq = lab.recording if lab is not None else None
        pressure = self.pressure
        if acq is not None and self._recording_shown and t0 - self._status_at >= STATUS_S:
            self._status_at = t0
            status = acq.status()
            pressure = self._note_pressure(recording_pressure(status, self.pressure))
            if self.feed.spikes is not None:  # the whole-array spike detection yields too
                self.feed.spikes.hold = pressure > 0
            self.recording_panel.show_status(status, acq.path)
            if status.state in ("stopped", "failed") and self.recording_panel.stop.isEnabled():
                self._stopped()
            following = self.paged.isVisible() and self.paged.follow.isChecked()
            if following and status.state == "recording" and t0 - self._last_page_s > 0.5:
                self._last_page_s = t0
                self.request_page()
        if self.live_traces.isVisible():
            self.feed.n_bins = max(100, int(self.live_traces.plot.getViewBox().width()))
        if self.raster.isVisible():
            self.feed.raster_pixels = self.raster.pixels()
        frame = self.feed.latest
        wanted = frame is not None and (frame.serial != self._drawn_serial or self.force_redraw)
        hold = PRESSURE_INTERVAL_S[pressure]
        due = t0 >= self._next_slot_s and t0 - self._last_draw_s >= hold
        drew = wanted and due
        if drew:
            self._draw_frame(frame, force=self.force_redraw)  # type: ignore[arg-type]
            self._drawn_serial = frame.serial  # type: ignore[union-attr]
            self.feed.consumed = frame.serial  # type: ignore[union-attr]
            self._last_draw_s = t0
            self._next_slot_s = max(self._next_slot_s + self._period_s, t0 - self._period_s)
            self._next_slot_s = max(self._next_slot_s, t0 + hold)  # the recording comes first
        self.redraws += 1
        self.feed.next_draw_at = max(self._next_slot_s, t0)
        return drew

    def _note_pressure(self, level: int) -> int:
        """Show when the display slows down for the recording; the level in force."""
        if level != self.pressure:
            raised = level > self.pressure
            self.pressure = level
            if level and raised:
                ring = self.lab.recording.status().backlog_fraction  # type: ignore[union-attr]
                text = (
                    f"display slowed to {1 / PRESSURE_INTERVAL_S[level]:g} frames/s: the "
                    f"recording comes first (ring buffer {ring:.0%} full)"
                )
                log.warning(text)
                self.statusBar().showMessage(text)
            else:
                self.statusBar().clearMessage()
        if level:
            self.throttled_ticks += 1
        return level

    def _draw_frame(self, frame: LiveFrame, *, force: bool = False) -> None:
        snap = frame.snapshot
        spikes = frame.spikes
        if snap.rms.size == self.array_map.n_channels:
            self.array_map.set_values("RMS", snap.rms)
            self.array_map.set_values("peak-to-peak", snap.maximum - snap.minimum)
            if spikes is not None:
                self.array_map.set_values("spike rate", spikes.rate_hz)
        if self.live_traces.isVisible():
            self.live_traces.show_snapshot(frame.serial, snap, force=force)
        raster = frame.raster
        new_raster = raster is not None and (raster is not self._drawn_raster or force)
        if self.raster.isVisible() and new_raster:
            self._drawn_raster = raster
            span = raster.t1_s - raster.t0_s  # live: a fixed axis, 0 = the newest sample
            self.raster.set_image(
                raster.image, raster.n_channels, -span, 0.0, raster.info, "time (s, 0 = newest)"
            )

    # --- errors and closing ------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        log.error("%s: %s", what, text)
        self.statusBar().showMessage(f"{what} failed: {text}", 15000)

    def shutdown(self) -> None:
        """Stop timers and the feed, stop any recording, close the instruments (blocking)."""
        self.timer.stop()
        self.access_timer.stop()
        self.imprint_timer.stop()
        self.extract_timer.stop()
        if self.extraction is not None and self.extraction.running:
            log.warning("closing: the extraction is stopped")
            self.extraction.stop()
        if self.imprint is not None and self.imprint.running:
            log.warning("closing: the imprint is stopped (resume it from the journal)")
            self.imprint.abort()
        self.background.shutdown()
        self.feed.close()
        self.reader.close()
        if self.lab is not None:
            try:
                self.lab.close()
            except Exception as exc:
                log.error("closing the lab: %s", exc)
        self.log_panel.detach()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        super().closeEvent(event)
