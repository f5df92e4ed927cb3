"""The log panel: every Python log record of the application (drivers, acquisition, GUI),
from any thread, shown on the GUI thread; bounded, with a level filter."""

from __future__ import annotations

import contextlib
import logging

from PySide6 import QtCore, QtGui, QtWidgets

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
COLOURS = {"WARNING": "#d08000", "ERROR": "#d03030", "CRITICAL": "#d03030"}


class _Bridge(QtCore.QObject):
    record = QtCore.Signal(str, str)
    """(level name, formatted line)"""


class QtLogHandler(logging.Handler):
    """A logging handler that forwards records to the GUI thread through a queued signal."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.bridge = _Bridge()
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(RuntimeError):  # the panel is gone (application closing)
            self.bridge.record.emit(record.levelname, self.format(record))


class LogPanel(QtWidgets.QWidget):
    """The application log, newest at the bottom (``max_lines`` kept)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, max_lines: int = 5000) -> None:
        super().__init__(parent)
        self.text = QtWidgets.QPlainTextEdit(readOnly=True)
        self.text.setMaximumBlockCount(max_lines)
        self.text.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.level = QtWidgets.QComboBox()
        self.level.addItems(LEVELS)
        self.level.setCurrentText("INFO")
        clear = QtWidgets.QPushButton("Clear")
        clear.clicked.connect(self.text.clear)
        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel("Show from"))
        bar.addWidget(self.level)
        bar.addStretch(1)
        bar.addWidget(clear)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.text)
        self.handler = QtLogHandler(logging.DEBUG)
        self.handler.bridge.record.connect(self.append, QtCore.Qt.ConnectionType.QueuedConnection)
        self.level.currentTextChanged.connect(self._level_changed)
        self._attached: list[logging.Logger] = []

    def attach(self, *loggers: str) -> None:
        """Show the records of these loggers ("" is the root: everything)."""
        for name in loggers or ("",):
            logger = logging.getLogger(name)
            logger.addHandler(self.handler)
            self._attached.append(logger)
        self._level_changed(self.level.currentText())

    def detach(self) -> None:
        for logger in self._attached:
            logger.removeHandler(self.handler)
        self._attached.clear()

    def _level_changed(self, name: str) -> None:
        level = getattr(logging, name)
        self.handler.setLevel(level)
        for logger in self._attached:
            previous = logger.getEffectiveLevel()
            if previous > level:
                # let the records through to the panel; other handlers keep their threshold
                for handler in logger.handlers:
                    if handler is not self.handler and handler.level < previous:
                        handler.setLevel(previous)
                logger.setLevel(level)

    @QtCore.Slot(str, str)
    def append(self, level: str, line: str) -> None:
        colour = COLOURS.get(level)
        if colour:
            escaped = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            self.text.appendHtml(f'<span style="color:{colour}">{escaped}</span>')
        else:
            self.text.appendPlainText(line)

    def lines(self) -> list[str]:
        """The lines shown (tests)."""
        return self.text.toPlainText().splitlines()
