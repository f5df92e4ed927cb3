"""The recording panel: start/stop a recording into a session folder, and what it is doing —
elapsed time, data rate, frames received and lost, gaps, disk free, the writer's backlog."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

from instrument.acquisition import AcquisitionStatus

FIELDS = (
    ("state", "state"),
    ("elapsed", "elapsed"),
    ("recorded", "recorded"),
    ("rate", "data rate"),
    ("frames", "frames received"),
    ("lost", "frames lost"),
    ("gaps", "gaps"),
    ("disk", "disk free"),
    ("backlog", "writer backlog"),
    ("file", "session file"),
)


def format_status(status: AcquisitionStatus, path: Path | None = None) -> dict[str, str]:
    """The panel's texts for a status (mm:ss, MB/s, GB)."""
    minutes, seconds = divmod(int(status.elapsed_s), 60)
    state = status.state
    if status.stop_reason and state in ("stopped", "failed", "stopping"):
        state += f" ({status.stop_reason})"
    backlog = f"{status.backlog_s * 1e3:.0f} ms ({status.backlog_fraction:.0%})"
    if status.backpressure_warning:
        backlog += " — WRITER FALLING BEHIND"
    return {
        "state": state + (f" — {status.error}" if status.error else ""),
        "elapsed": f"{minutes:02d}:{seconds:02d}",
        "recorded": f"{status.recorded_s:.1f} s",
        "rate": f"{status.data_rate_bps / 1e6:.1f} MB/s ({status.realtime_factor:.2f}x real time)",
        "frames": f"{status.frames_received:,}",
        "lost": f"{status.frames_lost:,}",
        "gaps": f"{status.gaps:,}",
        "disk": f"{status.disk_free_bytes / 1e9:.1f} GB",
        "backlog": backlog,
        "file": str(path) if path else "",
    }


class RecordingPanel(QtWidgets.QWidget):
    """Start/stop and the live status of the recording."""

    start_requested = QtCore.Signal(str, str, float)
    """(folder or "", label, duration s or 0 for until stopped)"""
    stop_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = QtWidgets.QLineEdit()
        self.folder.setPlaceholderText("new folder under the lab's data_dir")
        browse = QtWidgets.QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse)
        self.label = QtWidgets.QLineEdit()
        self.label.setPlaceholderText("label (optional)")
        self.duration = QtWidgets.QDoubleSpinBox(
            minimum=0.0, maximum=86400.0, decimals=1, singleStep=10.0, suffix=" s"
        )
        self.duration.setSpecialValueText("until stopped")
        self.start = QtWidgets.QPushButton("Start recording")
        self.stop = QtWidgets.QPushButton("Stop")
        self.stop.setEnabled(False)
        self.start.clicked.connect(self._start_clicked)
        self.stop.clicked.connect(self.stop_requested.emit)
        form = QtWidgets.QFormLayout()
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form.addRow("folder", row)
        form.addRow("label", self.label)
        form.addRow("duration", self.duration)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.start)
        buttons.addWidget(self.stop)
        form.addRow(buttons)
        self.values: dict[str, QtWidgets.QLabel] = {}
        for key, title in FIELDS:
            value = QtWidgets.QLabel("—")
            value.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            self.values[key] = value
            form.addRow(title, value)
        self.setLayout(form)
        self._shown: dict[str, str] = {}

    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Session folder")
        if folder:
            self.folder.setText(folder)

    def _start_clicked(self) -> None:
        self.start_requested.emit(
            self.folder.text().strip(), self.label.text().strip(), self.duration.value()
        )

    def set_running(self, running: bool, can_start: bool = True) -> None:
        self.start.setEnabled(not running and can_start)
        self.stop.setEnabled(running)

    def show_status(self, status: AcquisitionStatus, path: Path | None = None) -> None:
        texts = format_status(status, path)
        if texts == self._shown:
            return
        for key, text in texts.items():
            if self._shown.get(key) != text:
                self.values[key].setText(text)
        self._shown = texts
        warn = status.backpressure_warning or status.frames_lost > 0 or bool(status.error)
        self.values["state"].setStyleSheet("color: #c03030" if status.error else "")
        self.values["lost"].setStyleSheet("color: #c03030" if status.frames_lost else "")
        self.values["backlog"].setStyleSheet("color: #d08000" if warn else "")

    def text(self, key: str) -> str:
        return self.values[key].text()
