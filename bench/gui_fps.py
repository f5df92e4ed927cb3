"""The live GUI under the full 4096-channel stream: frames per second, sample-to-screen
latency, CPU per thread, and a memory soak.

    .venv/bin/python bench/gui_fps.py [--quick] [--seconds S] [--soak S] [--no-soak]
    .venv/bin/python bench/gui_fps.py --soak-only --soak 30      # the test suite's short soak

The real window (gui.main_window.MainWindow, offscreen) with the array map, 128 live traces
and the whole-array raster, recording the emulated board (4096 channels x 10 kHz, real
time) into a session file, measured side by side in one run:

1. drawing only: the same views fed one synthetic frame, redrawn flat out (no data path);
2. the embedded lab (emulator in this process, as ``brainpaste gui --sim``), redrawn flat
   out: the frame rate while everything shares this process;
3. an external lab (``brainpaste sim`` in its own process, as real hardware would be),
   redrawn flat out, then at the normal 30 Hz;
4. the same external lab recorded with ``brainpaste record``'s settings (1024-sample
   blocks, a 2 s live window) instead of the window's (512, 0.41 s: the window keeps its
   traces' history itself), at 30 Hz;
5. sample-to-screen latency at 30 Hz with both settings:
   the board's calibration source is switched on (a +100 mV step on every input) and the
   time until a painted trace shows the step is measured, repeatedly, at random phases.
   The step takes effect at the first frame the board makes after the command, so this
   is the time from a sample being made to its pixel being painted (plus one control
   round trip, < 1 ms here).

A "frame" is a paint of the traces view that shows data it had not painted before
(``EnvelopeItem.frames_painted``: a repaint of the same image does not count); "flat out"
redraws every view on every timer tick even without new data.

Soak (default 600 s): the window records the external lab for ``--soak`` seconds in
60-second sessions (stop, start a new one, delete the old one: disk use stays bounded)
at 30 Hz; the resident memory of this process is sampled every 5 s. It passes when
nothing failed, the redraws kept going and RSS grew less than ``--rss-bound-mb`` (150)
after the first session.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import psutil
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _isolation import own_calibration_store  # noqa: E402  (bench/ is the script folder)

from gui.app import get_app  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from instrument.config import load, loads  # noqa: E402
from instrument.live import LiveLab, acquisition_settings  # noqa: E402

APP = get_app()
from PySide6 import QtCore  # noqa: E402

N_TRACES = 128
SIZE = (1600, 1000)


# --- helpers ------------------------------------------------------------------------------
def pump(seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Run the Qt event loop for ``seconds`` (or until ``until()``, checked every 5 ms) as
    the application runs it: blocking until an event comes. (A loop of processEvents()
    calls, as this bench had, spins: the main thread then asks for Python's lock thousands
    of times a second and slows every other thread of the window.)"""
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(max(0, round(seconds * 1000)), loop.quit)
    check = QtCore.QTimer(interval=5)
    if until is not None:
        if until():
            return
        check.timeout.connect(lambda: until() and loop.quit())
        check.start()
    loop.exec()
    check.stop()


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    pump(timeout_s, until=cond)
    if not cond():
        raise TimeoutError(f"gave up waiting for {what}")


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


class PaintClock(QtCore.QObject):
    """Counts paint events of a widget and calls ``after_paint`` once each has finished."""

    def __init__(self, widget: Any) -> None:
        super().__init__()
        self.widget = widget
        self.paints = 0
        self.after_paint: Callable[[float], None] | None = None
        self._pending = False
        widget.installEventFilter(self)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QtCore.QEvent.Type.Paint:
            self.paints += 1
            if self.after_paint is not None and not self._pending:
                self._pending = True  # after the view has painted: a zero-delay timer
                QtCore.QTimer.singleShot(0, self._painted)
        return False

    def _painted(self) -> None:
        self._pending = False
        if self.after_paint is not None:
            self.after_paint(time.perf_counter())


class ThreadCpu:
    """CPU seconds per thread of this process between two calls, grouped by thread name."""

    GROUPS = (
        ("GUI (main thread)", lambda n: n == "MainThread"),
        ("live feed (snapshots)", lambda n: n == "gui-live-feed"),
        ("live spikes (whole array)", lambda n: n == "live-spikes"),
        ("trace image render", lambda n: n.startswith("trace-render")),
        ("acquisition reader", lambda n: n == "acq-reader"),
        ("acquisition writer", lambda n: n == "acq-writer"),
    )

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start = self._sample()
        self.t0 = time.perf_counter()

    def _sample(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in self.process.threads()}

    def stop(self) -> dict[str, float]:
        """CPU % of one core per group over the interval (the rest: emulator and Qt)."""
        end = self._sample()
        dt = time.perf_counter() - self.t0
        names = {t.native_id: t.name for t in threading.enumerate()}
        out = {name: 0.0 for name, _ in self.GROUPS}
        out["emulator and other threads"] = 0.0
        for tid, cpu in end.items():
            used = cpu - self.start.get(tid, 0.0)
            name = names.get(tid, "")
            group = next((g for g, match in self.GROUPS if match(name)), None)
            out[group or "emulator and other threads"] += used
        out = {k: 100 * v / dt for k, v in out.items()}
        out["whole process"] = sum(out.values())
        return out


# --- the labs -----------------------------------------------------------------------------
@contextlib.contextmanager
def embedded() -> Iterator[tuple[Any, str]]:
    from instrument.embedded_lab import embedded_lab

    with embedded_lab(own_calibration_store(load()), seed=1) as (config, _lab):
        yield config, "embedded lab (emulator in this process)"


@contextlib.contextmanager
def external() -> Iterator[tuple[Any, str]]:
    """``brainpaste sim`` in its own process; its printed resources as the configuration."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "instrument.cli", "sim", "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("# running"):
                break
            lines.append(line)
        text = "".join(x for x in lines if not x.startswith("#"))
        config = own_calibration_store(loads(text, "brainpaste sim", base=load().text))
        external.process = psutil.Process(proc.pid)  # type: ignore[attr-defined]
        yield config, "external lab (brainpaste sim in its own process)"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def open_window(config: Any, data_dir: Path, redraw_hz: float) -> tuple[MainWindow, LiveLab]:
    import dataclasses

    config = dataclasses.replace(
        config, lab=dataclasses.replace(config.lab, data_dir=str(data_dir))
    )
    lab = LiveLab(config, source="bench")
    window = MainWindow(lab, redraw_hz=redraw_hz)
    window.resize(*SIZE)
    window.show()
    for _ in range(3):  # a loaded machine may build the emulated culture slower than a timeout
        window.connect_instruments([])
        wait_until(lambda: not window.background.busy, 120, "the instruments")
        if lab.has_board:
            break
    wait_until(lambda: lab.has_board, 1, "the board")
    window.confirm = lambda title, text: True
    window.electroporate(np.arange(4096), 2.5, 1e-3)
    wait_until(lambda: not window.background.busy, 60, "electroporation")
    rows, cols = np.divmod(np.arange(N_TRACES), 16)
    window.array_map.select((rows + 28) * 64 + cols + 24)  # an 8 x 16 block: 128 traces
    return window, lab


def start(window: MainWindow, out: Path, cli_settings: bool = False) -> None:
    """Record into ``out`` with the window's own settings (instrument.live.live_settings:
    512-sample blocks, a 0.41 s live window) or ``brainpaste record``'s (the lab's table:
    1024-sample blocks, a 2 s live window)."""
    settings = acquisition_settings(window.lab.config) if cli_settings else None
    window.start_recording(str(out), "", 0.0, settings)
    wait_until(lambda: window.live_traces.shown_serial > 0, 120, "the first live frame")


def stop(window: MainWindow) -> None:
    window.stop_recording()
    wait_until(lambda: not window.lab.is_recording and not window.background.busy, 60, "the stop")


def close(window: MainWindow) -> None:
    window.close()
    APP.processEvents()
    window.deleteLater()
    APP.processEvents()


# --- measurements -------------------------------------------------------------------------
def measure_fps(window: MainWindow, seconds: float, redraw_hz: float, force: bool) -> dict:
    painted = window.live_traces.plot.envelopes
    window.force_redraw = force
    window.set_redraw_rate(redraw_hz)
    acq = window.lab.recording if window.lab is not None else None
    lost0 = acq.status().frames_lost if acq else 0
    written0 = acq.status().samples_written if acq else 0
    pump(0.5)
    paints0, redraws0 = painted.frames_painted, window.redraws
    cpu = ThreadCpu()
    ext = getattr(external, "process", None)
    ext_cpu0 = ext.cpu_times() if ext is not None and ext.is_running() else None
    t0 = time.perf_counter()
    pump(seconds)
    dt = time.perf_counter() - t0
    usage = cpu.stop()
    if ext_cpu0 is not None and ext is not None and ext.is_running():
        t = ext.cpu_times()
        usage["external emulator process"] = (
            100 * ((t.user + t.system) - (ext_cpu0.user + ext_cpu0.system)) / dt
        )
    window.force_redraw = False
    status = acq.status() if acq else None
    data_s = (status.samples_written - written0) / 10_000 if status else 0.0
    return {
        "fps": (painted.frames_painted - paints0) / dt,
        "redraws_per_s": (window.redraws - redraws0) / dt,
        "realtime": data_s / dt if status else float("nan"),
        "frames_lost": (status.frames_lost - lost0) if status else 0,
        "cpu": usage,
    }


def board_backlog_s(board: Any, acq: Any) -> float:
    """Seconds of data the board has made that the live view does not have yet (its FIFO,
    the wire, the ring): the part of the latency before the window's own."""
    with board.lock:
        made = board.frame_status().next_sample
    return (made - acq.first_sample_index - acq.live_samples) / acq.sample_rate_hz


def measure_latency(
    window: MainWindow, steps: int, rng: np.random.Generator
) -> tuple[list[float], list[float]]:
    """Calibration-source steps: command sent -> first painted frame showing the step; and
    the board's backlog (s of data not yet in the file) when each step was sent."""
    board = window.lab.board
    with board.lock:
        board.calibration_source_function = "dc"
        board.calibration_source_level_v = 0.1
    clock = PaintClock(window.live_traces.plot.viewport())
    window.set_redraw_rate(30)
    state: dict[str, Any] = {"sent": None, "seen": None, "want": True}

    def shows_step() -> bool:
        snap = window.live_traces.plot.envelopes.painted_tag  # the snapshot now on screen
        if snap is None or snap.hi.shape[1] == 0:
            return False
        newest = snap.hi[:, -3:]
        return bool(np.nanmedian(newest) > 0.05)  # +100 mV on every channel

    def painted(t: float) -> None:
        if state["sent"] is not None and state["seen"] is None and shows_step() == state["want"]:
            state["seen"] = t

    clock.after_paint = painted
    latencies: list[float] = []
    backlogs: list[float] = []
    acq = window.lab.recording
    try:
        for i in range(2 * steps):
            on = i % 2 == 0
            pump(rng.uniform(0.4, 0.9))  # a random phase against blocks and redraws
            if on:  # time steps once the host has caught up with the board (10 s at most)
                end = time.monotonic() + 10
                while board_backlog_s(board, acq) > 0.15 and time.monotonic() < end:
                    pump(0.1)
                backlogs.append(board_backlog_s(board, acq))
            state.update(sent=None, seen=None, want=on)

            def send(on: bool = on) -> None:
                t = time.perf_counter()
                board.calibration_source_enabled = on
                state["sent"] = t

            threading.Thread(target=send).start()
            pump(30, until=lambda: state["seen"] is not None or acq.state != "recording")
            if state["seen"] is None:
                st = acq.status()
                why = st.stop_reason or "no new frame in 30 s"
                print(f"  latency: stopped after {len(latencies)} steps: {st.state} ({why})")
                return latencies, backlogs
            if on:
                latencies.append(state["seen"] - state["sent"])
    finally:
        clock.after_paint = None
        board.calibration_source_enabled = False
        window.live_traces.plot.viewport().removeEventFilter(clock)
    return latencies, backlogs


def drawing_only(seconds: float, data_dir: Path) -> dict:
    """The views fed one synthetic frame (no acquisition, no emulator), redrawn flat out."""
    from gui.live_feed import LiveFrame
    from instrument.acquisition import minmax_decimate
    from instrument.live_spikes import SpikeCounts

    window = MainWindow(None, redraw_hz=0)
    window.resize(*SIZE)
    window.show()
    pump(0.3)
    rng = np.random.default_rng(0)
    chans = np.arange(N_TRACES)
    width = max(100, int(window.live_traces.plot.getViewBox().width()))
    lo, hi = minmax_decimate(rng.normal(0, 1e-3, (20_000, N_TRACES)).astype(np.float32), width)
    status = _idle_status()
    from instrument.acquisition import Snapshot

    snap = Snapshot(
        sample_rate_hz=10_000.0,
        channels=chans,
        t_s=np.linspace(0, 2, lo.shape[1], endpoint=False),
        lo=lo,
        hi=hi,
        rms=rng.uniform(0, 1e-3, 4096).astype(np.float32),
        minimum=np.zeros(4096),
        maximum=np.ones(4096) * 1e-3,
        spike_count=np.zeros(4096, dtype=np.int64),
        spike_rate_hz=np.zeros(4096),
        coverage=1.0,
        status=status,
    )
    n = 200_000
    spikes = SpikeCounts(
        times_s=np.sort(rng.uniform(0, 10, n)),
        channels=rng.integers(0, 4096, n),
        start_s=0.0,
        end_s=10.0,
        rate_hz=np.full(4096, 5.0),
        rows_read=100_000,
    )
    window.feed.latest = LiveFrame(1, snap, time.perf_counter(), spikes)
    window.live_traces.plot.cols = 64
    result = measure_fps(window, seconds, 0, True)
    close(window)
    return result


def _idle_status() -> Any:
    from instrument.acquisition import AcquisitionStatus

    fields = AcquisitionStatus.__dataclass_fields__
    values = {k: 0 for k in fields}
    values.update(state="recording", stop_reason="", error="", backpressure_warning=False)
    return AcquisitionStatus(**values)


# --- the soak -----------------------------------------------------------------------------
def soak(seconds: float, segment_s: float, data_dir: Path, lab: str, bound_mb: float) -> dict:
    """Record for ``seconds`` in ``segment_s`` sessions at 30 Hz; RSS every 5 s."""
    opener = external if lab == "external" else embedded
    errors: list[str] = []

    import logging

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(self.format(record))

    catcher = Catch(logging.ERROR)
    logging.getLogger().addHandler(catcher)
    samples: list[tuple[float, float, float]] = []
    """(s since start, RSS MB, MB of frames waiting in the acquisition's ring)"""
    segments = 0
    session_rss: list[float] = []
    """RSS after each session stopped (nothing in the ring then)."""
    first_session_end = None
    with opener() as (config, _title):
        window, _ = open_window(config, data_dir, 30.0)
        painted = window.live_traces.plot.envelopes
        t0 = time.monotonic()
        bar = tqdm(total=round(seconds), unit="s", desc="soak", file=sys.stderr)
        previous: Path | None = None
        redraws0 = window.redraws
        try:
            while time.monotonic() - t0 < seconds:
                out = data_dir / f"soak-{segments:03d}"
                start(window, out)
                segments += 1
                seg_end = min(time.monotonic() + segment_s, t0 + seconds)
                while time.monotonic() < seg_end:
                    pump(min(5.0, max(0.0, seg_end - time.monotonic())))
                    gc.collect()
                    acq = window.lab.recording
                    st = acq.status()
                    ring_mb = st.backlog_frames * acq.n_channels * 2 * 16 / 1e6
                    samples.append((time.monotonic() - t0, rss_mb(), ring_mb))
                    bar.n = min(round(time.monotonic() - t0), round(seconds))
                    bar.refresh()
                stop(window)
                gc.collect()
                session_rss.append(rss_mb())
                if previous is not None:
                    shutil.rmtree(previous, ignore_errors=True)
                previous = out
                if first_session_end is None:
                    first_session_end = len(samples)  # caches are warm after one session
            status = window.lab.recording.status() if window.lab.recording else None
        finally:
            bar.close()
            redraws = window.redraws - redraws0
            paints = painted.frames_painted
            close(window)
            logging.getLogger().removeHandler(catcher)
    t = np.array([x[0] for x in samples])
    rss = np.array([x[1] for x in samples])
    own = rss - np.array([x[2] for x in samples])  # RSS less the frames waiting in the ring
    k = min(first_session_end or 0, max(len(samples) - 1, 0))
    base = float(own[k]) if own.size else 0.0
    growth = float(own[k:].max() - base) if own.size else 0.0
    slope = float(np.polyfit(t[k:], own[k:], 1)[0] * 60) if own.size - k >= 3 else float("nan")
    elapsed = float(t[-1]) if t.size else 0.0
    return {
        "seconds": elapsed,
        "segments": segments,
        "redraws_per_s": redraws / max(elapsed, 1e-9),
        "frames_per_s": paints / max(elapsed, 1e-9),
        "rss_first_mb": float(rss[0]) if rss.size else 0.0,
        "rss_baseline_mb": base,
        "rss_max_mb": float(rss.max()) if rss.size else 0.0,
        "rss_end_mb": float(rss[-1]) if rss.size else 0.0,
        "ring_max_mb": float(max(x[2] for x in samples)) if samples else 0.0,
        "growth_mb": growth,
        "slope_mb_per_min": slope,
        "session_rss_mb": session_rss,
        "errors": errors,
        "frames_lost_last": status.frames_lost if status else 0,
        "passed": not errors and growth < bound_mb and paints > 0,
    }


# --- main ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (and a 60 s soak)")
    parser.add_argument("--seconds", type=float, help="seconds per frame-rate case (20)")
    parser.add_argument("--steps", type=int, help="latency steps per block size (20)")
    parser.add_argument("--soak", type=float, help="soak seconds (600; --quick: 60)")
    parser.add_argument("--no-soak", action="store_true")
    parser.add_argument("--soak-only", action="store_true", help="only the soak")
    parser.add_argument("--soak-lab", choices=("external", "embedded"), default="external")
    parser.add_argument("--segment", type=float, default=60.0, help="soak session length, s")
    parser.add_argument("--rss-bound-mb", type=float, default=150.0)
    args = parser.parse_args()
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    steps = args.steps or (8 if args.quick else 20)
    soak_s = args.soak or (60.0 if args.quick else 600.0)
    segment = min(args.segment, max(soak_s / 2, 5.0))
    rng = np.random.default_rng(7)
    data_dir = Path(tempfile.mkdtemp(prefix="brainpaste-gui-bench-"))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    try:
        if not args.soak_only:
            run_cases(seconds, steps, rng, data_dir)
        if not args.no_soak:
            result = soak(soak_s, segment, data_dir, args.soak_lab, args.rss_bound_mb)
            print_soak(result, args.rss_bound_mb, args.soak_lab)
            if not result["passed"]:
                sys.exit(1)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_cases(seconds: float, steps: int, rng: np.random.Generator, data_dir: Path) -> None:
    rows: list[tuple[str, dict]] = []
    print(f"1/4 drawing only ({seconds:g} s)", flush=True)
    rows.append(("drawing only, flat out", drawing_only(seconds, data_dir)))
    print(f"2/4 embedded lab, flat out ({seconds:g} s)", flush=True)
    with embedded() as (config, _):
        window, _lab = open_window(config, data_dir, 0)
        start(window, data_dir / "embedded")
        pump(3.0)  # past the electroporation artifact and the first blocks
        rows.append(("embedded lab, flat out", measure_fps(window, seconds, 0, True)))
        stop(window)
        close(window)
    print("3/4 external lab, window's settings: flat out, 30 Hz, latency", flush=True)
    latency: dict[str, tuple[list[float], list[float]]] = {}
    with external() as (config, _):
        window, _lab = open_window(config, data_dir, 0)
        start(window, data_dir / "external")
        pump(3.0)
        rows.append(("external lab, flat out", measure_fps(window, seconds, 0, True)))
        rows.append(("external lab, 30 Hz", measure_fps(window, seconds, 30, False)))
        latency[LIVE] = measure_latency(window, steps, rng)
        stop(window)
        print("4/4 external lab, brainpaste record's settings: 30 Hz, latency", flush=True)
        start(window, data_dir / "external-cli", cli_settings=True)
        pump(3.0)
        rows.append(("external, record's settings", measure_fps(window, seconds, 30, False)))
        latency[CLI] = measure_latency(window, steps, rng)
        stop(window)
        close(window)
    print_fps(rows)
    print_latency(latency)


LIVE = "window (512, 0.41 s)"
CLI = "record (1024, 2 s)"


def print_fps(rows: list[tuple[str, dict]]) -> None:
    base = rows[0][1]["fps"]
    print(f"\nGUI frame rate: array map + {N_TRACES} live traces + whole-array raster, {SIZE[0]}x"
          f"{SIZE[1]} offscreen; 4096 ch x 10 kHz recorded to HDF5 while drawing")  # fmt: skip
    print(f"{'case':<30} {'fps':>7} {'fps / drawing only':>19} {'data rate x real time':>22} "
          f"{'frames lost':>12}")  # fmt: skip
    for name, r in rows:
        print(f"{name:<30} {r['fps']:>7.1f} {r['fps'] / base:>19.2f} {r['realtime']:>22.2f} "
              f"{r['frames_lost']:>12}")  # fmt: skip
    print("\nCPU, % of one core, per thread group (2 cores = 200 %)")
    groups = list(rows[1][1]["cpu"])
    extra = "external emulator process"
    if extra not in groups:
        groups.append(extra)
    print(f"{'':<30} " + " ".join(f"{name[:13]:>13}" for name, _ in rows))
    for g in groups:
        cells = [r["cpu"].get(g, float("nan")) for _, r in rows]
        print(f"{g:<30} " + " ".join(f"{c:>13.0f}" for c in cells))


def print_latency(latency: dict[str, tuple[list[float], list[float]]]) -> None:
    print("\nSample-to-screen latency at 30 Hz (calibration step -> first painted frame with it)")
    print(f"{'settings (block, window)':<26} {'n':>4} {'median ms':>10} {'p90 ms':>8} "
          f"{'max ms':>8} {'median / record':>16} {'live view behind board, ms':>27}")  # fmt: skip
    ref = statistics.median(latency[CLI][0]) if latency[CLI][0] else float("nan")
    for name, (values, backlog) in latency.items():
        if not values:
            print(f"{name:<26} {0:>4}  (no step measured)")
            continue
        ms = np.array(values) * 1e3
        print(f"{name:<26} {len(ms):>4} {np.median(ms):>10.1f} {np.percentile(ms, 90):>8.1f} "
              f"{ms.max():>8.1f} {np.median(ms) / (ref * 1e3):>16.2f} "
              f"{np.median(backlog) * 1e3:>27.0f}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def print_soak(r: dict, bound: float, lab: str) -> None:
    print(f"\nSoak ({lab} lab, 30 Hz, {r['segments']} sessions): {r['seconds']:.0f} s, "
          f"{r['frames_per_s']:.1f} frames/s drawn, "
          f"{r['redraws_per_s']:.1f} timer ticks/s")  # fmt: skip
    print("RSS less the frames waiting in the acquisition ring (the ring holds up to 2 s of "
          "data, ~160 MB, when the writer lags):")  # fmt: skip
    print(f"{'MB':<6} {'first RSS':>10} {'after 1st session':>18} {'max RSS':>8} {'end RSS':>8} "
          f"{'ring max':>9} {'growth':>8} {'bound':>6} {'trend MB/min':>13}")  # fmt: skip
    print(f"{'':<6} {r['rss_first_mb']:>10.1f} {r['rss_baseline_mb']:>18.1f} "
          f"{r['rss_max_mb']:>8.1f} {r['rss_end_mb']:>8.1f} {r['ring_max_mb']:>9.1f} "
          f"{r['growth_mb']:>8.1f} {bound:>6.0f} {r['slope_mb_per_min']:>13.2f}")  # fmt: skip
    print("RSS after each session, MB: " + " ".join(f"{x:.0f}" for x in r["session_rss_mb"]))
    if r["errors"]:
        print(f"errors logged: {len(r['errors'])}; first: {r['errors'][0]}")
    print(f"soak {'PASSED' if r['passed'] else 'FAILED'}")
    print(f"soak_result passed={int(r['passed'])} growth_mb={r['growth_mb']:.1f} "
          f"frames_per_s={r['frames_per_s']:.1f} errors={len(r['errors'])}")  # fmt: skip


if __name__ == "__main__":
    main()
