"""The Qt application: offscreen-safe start-up and pyqtgraph settings shared by every view."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def ensure_platform() -> str:
    """Choose the offscreen Qt platform when there is no display (CI, ssh) unless the user
    chose one; returns the platform name. Call before the QApplication exists."""
    if not os.environ.get("QT_QPA_PLATFORM") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    return os.environ.get("QT_QPA_PLATFORM", "")


M_MMAP_THRESHOLD = -3
"""glibc's mallopt() parameter number for the mmap threshold."""


def fix_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Allocate blocks of ``nbytes`` or more with mmap, always (glibc): the window's threads
    churn multi-MB arrays (frames, blocks, snapshots), and glibc's default *dynamic*
    threshold soon serves them from per-thread heaps that keep the memory — RSS then grew
    ~6 MB per recorded session in the soak; fixed, it stays flat. False where there is no
    glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False


def get_app(argv: Sequence[str] | None = None):  # noqa: ANN201 (QApplication, imported late)
    """The process's QApplication (created on first call), with pyqtgraph configured."""
    ensure_platform()
    fix_mmap_threshold()
    import pyqtgraph as pg
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv) if argv is not None else sys.argv[:1])
        app.setApplicationName("brainpaste")
        app.setOrganizationName("brainpaste")
    # image[row, col] everywhere; no antialiasing: thousands of line segments per frame
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="k")
    return app


def cache_axes(view: object) -> None:
    """Paint the axes of a pyqtgraph view from a cached pixmap until they change (text is
    the costly part of a frame that redraws only its data)."""
    import pyqtgraph as pg
    from PySide6 import QtWidgets

    for item in view.scene().items():  # type: ignore[attr-defined]
        if isinstance(item, pg.AxisItem):
            item.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
