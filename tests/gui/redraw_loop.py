"""A standalone pyqtgraph redraw loop: a 64 × 64 image and 128 curves redrawn as fast as
the event loop allows, for DURATION seconds. Prints ``frames N fps F rss_mb_start S rss_mb_end E``.

This is the loop that crashed PySide6 6.12 on Python 3.11 within about a second
(``Fatal Python error: none_dealloc`` in PlotDataItem.updateItems) and runs clean on
Python 3.12; tests/gui/test_qt_pair.py and bench/qt_pair_soak.py run it.

Usage: python redraw_loop.py DURATION_S
"""

from __future__ import annotations

import os
import resource
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets


def rss_mb() -> float:
    """Resident set size now, MB (from /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main(duration_s: float) -> int:
    app = QtWidgets.QApplication([])
    win = pg.GraphicsLayoutWidget()
    win.resize(1200, 800)
    image = pg.ImageItem()
    win.addPlot().addItem(image)
    plot = win.addPlot()
    curves = [plot.plot(pen=(i, 128)) for i in range(128)]
    win.show()
    rng = np.random.default_rng(0)
    frames = 0
    start = time.monotonic()
    rss_start = 0.0

    def redraw() -> None:
        nonlocal frames, rss_start
        image.setImage(rng.normal(size=(64, 64)).astype(np.float32), levels=(-3, 3))
        y = rng.normal(size=(128, 500)).astype(np.float32)
        for i, curve in enumerate(curves):
            curve.setData(y[i] + i * 3)
        frames += 1
        if frames == 10:
            rss_start = rss_mb()
        if time.monotonic() - start > duration_s:
            app.quit()

    timer = QtCore.QTimer()
    timer.timeout.connect(redraw)
    timer.start(0)
    app.exec()
    elapsed = time.monotonic() - start
    print(
        f"frames {frames} fps {frames / elapsed:.1f} rss_mb_start {rss_start:.1f} "
        f"rss_mb_end {rss_mb():.1f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
