"""Everything that may block runs here, off the GUI thread: instrument I/O, file reads,
starting and stopping recordings. Results and errors come back to the GUI thread as Qt
queued signals, so callbacks may touch widgets.

:class:`Background` runs callables on its own QThreadPool; :meth:`Background.run` returns
at once. Tasks that must not overlap (two connects of one instrument) are serialised by
the services themselves (``instrument.live.LiveLab`` holds a lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore

log = logging.getLogger(__name__)


class _Signals(QtCore.QObject):
    finished = QtCore.Signal(object, bool, object)
    """(task, succeeded, result or exception)"""


class _Task(QtCore.QRunnable):
    def __init__(
        self,
        fn: Callable[[], Any],
        name: str,
        on_done: Callable[[Any], None] | None,
        on_error: Callable[[BaseException], None] | None,
        signals: _Signals,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.name = name
        self.on_done = on_done
        self.on_error = on_error
        self.signals = signals
        self.setAutoDelete(False)

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # delivered to the GUI thread, shown where it happened
            self.signals.finished.emit(self, False, exc)
        else:
            self.signals.finished.emit(self, True, result)


class Background(QtCore.QObject):
    """A pool of worker threads for the GUI's blocking work.

    ``run(fn, on_done=..., on_error=...)`` calls ``fn()`` on a worker; ``on_done(result)``
    or ``on_error(exception)`` then runs on the GUI thread. Without ``on_error`` the error
    is logged (the log panel shows it).
    """

    finished = QtCore.Signal(str)
    """A task finished (its name), after its callback ran."""

    def __init__(self, max_threads: int = 4, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QtCore.QThreadPool()
        self.pool.setMaxThreadCount(max_threads)
        self._tasks: set[_Task] = set()
        self._signals = _Signals()
        self._signals.finished.connect(self._finish, QtCore.Qt.ConnectionType.QueuedConnection)

    @property
    def busy(self) -> int:
        """Tasks submitted and not yet called back."""
        return len(self._tasks)

    def run(
        self,
        fn: Callable[[], Any],
        *,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "",
    ) -> None:
        """Run ``fn()`` on a worker thread; call back on the GUI thread."""
        task = _Task(fn, name or getattr(fn, "__name__", "task"), on_done, on_error, self._signals)
        self._tasks.add(task)
        self.pool.start(task)

    @QtCore.Slot(object, bool, object)
    def _finish(self, task: _Task, ok: bool, value: Any) -> None:
        """On the GUI thread: the task's callback."""
        if task not in self._tasks:
            return  # shut down meanwhile
        self._tasks.discard(task)
        try:
            if ok:
                if task.on_done is not None:
                    task.on_done(value)
            elif task.on_error is not None:
                task.on_error(value)
            else:
                log.error("%s failed: %s: %s", task.name, type(value).__name__, value)
        finally:
            self.finished.emit(task.name)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Wait (processing events, so callbacks run) until every task has called back."""
        deadline = time.monotonic() + timeout_s
        app = QtCore.QCoreApplication.instance()
        while self._tasks:
            if time.monotonic() > deadline:
                return False
            if app is not None:
                app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.005)
        return True

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Let running tasks finish (their callbacks are dropped)."""
        self.pool.waitForDone(int(timeout_s * 1000))
        self._tasks.clear()
