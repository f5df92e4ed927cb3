"""Emulated crossbar line driver: every row and column line driven at once, columns sensed.

Protocol: ``docs/line_driver_protocol.md`` (SCPI over TCP). Two jobs, both on the whole
array at once, which the SMU + selector (one cell or one row at a time) cannot do:

* **MVM read** — DC levels on every row, every column held at 0 V by its own
  transimpedance amplifier, every column current measured (the functional check:
  input vector x conductances);
* **waveforms** — a list of rectangular pulses per row and per column line, played in
  instrument time (physical imprinting: rows carry presynaptic, columns postsynaptic
  activity; a cell sees ``V_row - V_col`` and switches only where the two overlap beyond
  its threshold).

The physics stays in :class:`~hil_sim.crossbar.CrossbarArray` (``column_currents``,
``apply_line_voltages``); :class:`WaveformPlayer` turns the pulse lists into piecewise-
constant line voltages. Output relay off: the lines belong to the selector board.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hil_sim.crossbar import CrossbarArray
from hil_sim.scpi_server import Call, ScpiDevice, ScpiError, fmt, scpi
from hil_sim.smu_frontend import Pacer

if TYPE_CHECKING:
    from hil_sim.lab import EmulatedLab

log = logging.getLogger(__name__)

PULSES_PER_MESSAGE = 256
MAX_PULSES = 1 << 20
MAX_LIMIT_V = 25.0


@dataclass(frozen=True)
class Pulse:
    """One rectangular pulse on one line."""

    start_s: float
    width_s: float
    level_v: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.width_s


class WaveformPlayer:
    """Plays per-line pulse lists onto a crossbar as piecewise-constant line voltages."""

    def __init__(self, crossbar: CrossbarArray) -> None:
        self.crossbar = crossbar
        self.rows: dict[int, list[Pulse]] = {}
        self.cols: dict[int, list[Pulse]] = {}

    def clear(self) -> None:
        self.rows.clear()
        self.cols.clear()

    def add(self, kind: str, line: int, pulse: Pulse) -> None:
        """Append ``pulse`` to a line; refuses a pulse overlapping one already there."""
        table = self.rows if kind == "ROW" else self.cols
        pulses = table.setdefault(line, [])
        for other in pulses:
            if pulse.start_s < other.end_s and other.start_s < pulse.end_s:
                raise ScpiError(
                    -221, f"pulse at {pulse.start_s:g} s overlaps another on {kind} {line}"
                )
        pulses.append(pulse)

    @property
    def points(self) -> int:
        return sum(len(p) for p in self.rows.values()) + sum(len(p) for p in self.cols.values())

    @property
    def duration_s(self) -> float:
        ends = [p.end_s for table in (self.rows, self.cols) for ps in table.values() for p in ps]
        return max(ends, default=0.0)

    def segments(self) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
        """(start, duration, row volts, column volts) of every interval where a line is driven."""
        xb = self.crossbar
        tables = []
        for table, n in ((self.rows, xb.rows), (self.cols, xb.cols)):
            items = [
                (line, p.start_s, p.end_s, p.level_v) for line, ps in table.items() for p in ps
            ]
            tables.append((np.array(items, dtype=float).reshape(-1, 4), n))
        times = np.unique(np.concatenate([[0.0]] + [t[:, 1:3].ravel() for t, _ in tables]))
        if times.size < 2:
            return []
        levels = []
        for t, n in tables:  # a difference array per line, summed over the intervals
            diff = np.zeros((times.size, n))
            if t.size:
                a = np.searchsorted(times, t[:, 1])
                b = np.searchsorted(times, t[:, 2])
                line = t[:, 0].astype(int)
                np.add.at(diff, (a, line), t[:, 3])
                np.add.at(diff, (b, line), -t[:, 3])
            levels.append(np.round(np.cumsum(diff, axis=0)[:-1], 12))
        row_levels, col_levels = levels
        driven = np.flatnonzero(np.any(row_levels != 0, axis=1) | np.any(col_levels != 0, axis=1))
        return [
            (float(times[k]), float(times[k + 1] - times[k]), row_levels[k], col_levels[k])
            for k in driven
        ]

    def play(
        self, pacer: Pacer | None, stop: threading.Event, progress: Callable[[float], None]
    ) -> None:
        """Drive every segment (skipping those no cell can switch in), in instrument time."""
        neg, pos = self.crossbar.devices.thresholds_v()
        t_done = 0.0
        for start, duration, row_v, col_v in self.segments():
            if stop.is_set():
                return
            if pacer is not None:
                pacer.spend(start - t_done)
            spread = max(row_v.max(), 0.0) - min(col_v.min(), 0.0)
            spread_neg = min(row_v.min(), 0.0) - max(col_v.max(), 0.0)
            if spread >= pos or spread_neg <= neg:
                self.crossbar.apply_line_voltages(row_v, col_v, duration)
            if pacer is not None:
                pacer.spend(duration)
            t_done = start + duration
            progress(t_done)


class LineDriverDevice(ScpiDevice):
    """The line driver's firmware around a :class:`CrossbarArray`."""

    identity = ("brainpaste", "XBAR-LINEDRV", "LDR0001", "1.0")

    def __init__(self, crossbar: CrossbarArray, *, realtime: bool = True) -> None:
        self.crossbar = crossbar
        self.realtime = realtime
        self.player = WaveformPlayer(crossbar)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.abort()
        self.output = False
        self.limit_v = 1.0
        self.row_levels = np.zeros(self.crossbar.rows)
        self.player.clear()
        self.state = "IDLE"
        self.elapsed_s = 0.0

    # --- geometry, safety, relay -----------------------------------------------------------
    @scpi(":SYSTem:LINes?")
    def lines(self, call: Call) -> str:
        return f"{self.crossbar.rows},{self.crossbar.cols}"

    @scpi(":SOURce:VOLTage:LIMit")
    def set_limit(self, call: Call) -> None:
        call.expect(1)
        self._idle()
        self.limit_v = call.float(0, low=0.0, high=MAX_LIMIT_V, units="V")

    @scpi(":SOURce:VOLTage:LIMit?")
    def get_limit(self, call: Call) -> str:
        return fmt(self.limit_v)

    @scpi(":OUTPut[:STATe]")
    def set_output(self, call: Call) -> None:
        call.expect(1)
        on = call.bool(0)
        if not on:
            self.abort()
        self.output = on

    @scpi(":OUTPut[:STATe]?")
    def get_output(self, call: Call) -> str:
        return fmt(self.output)

    def _level(self, call: Call, index: int) -> float:
        return call.float(index, low=-self.limit_v, high=self.limit_v, units="V")

    def _idle(self) -> None:
        if self.state == "RUNNING":
            raise ScpiError(-221, "a waveform is running (:ABORt it first)")

    # --- MVM read -----------------------------------------------------------------------
    @scpi(":SOURce:ROW:VOLTage")
    def set_rows(self, call: Call) -> None:
        call.expect(self.crossbar.rows)
        self._idle()
        self.row_levels = np.array([self._level(call, k) for k in range(self.crossbar.rows)])

    @scpi(":MEASure:COLumn:CURRent?")
    def measure_columns(self, call: Call) -> str:
        if not self.output:
            raise ScpiError(-221, "output is off: the lines are not connected")
        self._idle()
        currents = self.crossbar.column_currents(self.row_levels)
        return ",".join(f"{i:+.6E}" for i in currents)

    # --- waveforms ------------------------------------------------------------------------
    @scpi(":WAVeform:CLEar")
    def clear(self, call: Call) -> None:
        call.expect(0)
        self._idle()
        self.player.clear()
        self.state = "IDLE"

    @scpi(":WAVeform:PULSe")
    def add_pulses(self, call: Call) -> None:
        self._idle()
        if len(call.args) < 5 or (len(call.args) - 2) % 3:
            raise ScpiError(-109, "expected ROW|COLumn,<line>,<start>,<width>,<level>[,...]")
        if (len(call.args) - 2) // 3 > PULSES_PER_MESSAGE:
            raise ScpiError(-223, f"at most {PULSES_PER_MESSAGE} pulses per message")
        kind = "ROW" if call.choice(0, ["ROW", "COLumn"]) == "ROW" else "COL"
        count = self.crossbar.rows if kind == "ROW" else self.crossbar.cols
        line = call.int(1, low=0, high=count - 1)
        pulses = []
        for k in range(2, len(call.args), 3):
            start = call.float(k, low=0.0, high=1e6, units="S")
            width = call.float(k + 1, low=1e-7, high=10.0, units="S")
            pulses.append(Pulse(start, width, self._level(call, k + 2)))
        if self.player.points + len(pulses) > MAX_PULSES:
            raise ScpiError(-225, "waveform memory full")
        for p in pulses:
            self.player.add(kind, line, p)

    @scpi(":WAVeform:POINts?")
    def points(self, call: Call) -> str:
        return str(self.player.points)

    @scpi(":WAVeform:DURation?")
    def duration(self, call: Call) -> str:
        return fmt(self.player.duration_s)

    @scpi(":INITiate")
    def initiate(self, call: Call) -> None:
        call.expect(0)
        self._idle()
        if not self.output:
            raise ScpiError(-221, "output is off: the lines are not connected")
        if not self.player.points:
            raise ScpiError(-221, "no waveform loaded")
        self._stop.clear()
        self.state, self.elapsed_s = "RUNNING", 0.0
        self._thread = threading.Thread(target=self._run, name="linedriver-play", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pacer = Pacer(self._stop) if self.realtime else None

        def progress(t: float) -> None:
            self.elapsed_s = t

        try:
            self.player.play(pacer, self._stop, progress)
            if pacer is not None:
                pacer.flush()
        except Exception:  # the emulated instrument never dies of one waveform
            log.exception("line driver: waveform failed")
        self.elapsed_s = self.player.duration_s
        self.state = "IDLE" if self._stop.is_set() else "DONE"

    @scpi(":ABORt")
    def abort_cmd(self, call: Call) -> None:
        self.abort()

    def abort(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        if getattr(self, "state", "IDLE") == "RUNNING":
            self.state = "IDLE"

    @scpi(":STATus:RUN?")
    def run_state(self, call: Call) -> str:
        return f"{self.state},{self.elapsed_s:.9g}"


def build_line_drivers(lab: EmulatedLab) -> None:
    """Lab builder: one line driver per emulated rig (``linedriver``, ``linedriver2``…),
    on the same crossbar as that rig. Options ``lab.settings.options["linedriver"]``:
    ``realtime`` (default True: waveforms take their own duration)."""
    from hil_sim.lab import EmulatedInstrument
    from hil_sim.line_server import TcpLineServer

    options: dict[str, Any] = dict(lab.settings.options.get("linedriver", {}))
    unknown = sorted(set(options) - {"realtime"})
    if unknown:
        raise ValueError(f"unknown linedriver option(s) {unknown} (known: ['realtime'])")
    number = 0
    while True:
        smu = "smu" if number == 0 else f"smu{number + 1}"
        if smu not in lab.instruments:
            return
        crossbar = lab.instruments[smu].model
        device = LineDriverDevice(crossbar, realtime=bool(options.get("realtime", True)))
        name = "linedriver" if number == 0 else f"linedriver{number + 1}"
        server = TcpLineServer(device, name=f"rig-{name}")
        lab.on_stop(device.abort)
        lab.add(EmulatedInstrument(name, "crossbar_line_driver", server.visa_resource, [server],
                                   model=crossbar))  # fmt: skip
        number += 1
        time.sleep(0)
