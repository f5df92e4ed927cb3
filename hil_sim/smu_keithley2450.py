"""Emulated Keithley 2450 SourceMeter: the SCPI subset brainpaste uses, on the 2450's trigger model.

Command forms follow the 2450 Reference Manual (2450-901-01, section 6):
source (``:SOURce[1]:VOLTage…``, ``:SOURce[1]:LIST:VOLTage``, source configuration
lists), sense (``:SENSe[1]:FUNCtion "CURR"``, NPLC, ranges), ``:OUTPut``,
``:READ?``, ``:MEASure:CURRent?``, reading buffers (``:TRACe:MAKE/CLEar/ACTual?/
DATA?``), the trigger model (``:TRIGger:LOAD "Empty"``, ``:TRIGger:BLOCk:…``,
``:INITiate``, ``:ABORt``, ``:TRIGger:STATe?``), ``:SOURce[1]:SWEep:VOLTage:LIST``
and digital I/O trigger lines (``:DIGital:LINE<n>:MODE``,
``:TRIGger:DIGital<n>:OUT:STIMulus``). Anything else is ``-113 Undefined header``;
current sourcing and voltage measurement answer ``-224`` (not emulated).
``docs/smu_commands.md`` lists the subset.

Compliance is reported as the manual says: ``:SOURce:VOLTage:ILIMit:TRIPped?``
answers 1, and the buffer element ``SOURSTATus`` of a limited reading has bit 5
(32, "source function was limited because the complementary function would be
over the source limit") set.

The trigger model runs on its own thread in instrument time (:mod:`hil_sim.smu_frontend`):
a delay block costs its delay plus settling, a measure block the settling plus
NPLC / line frequency; ``*OPC?`` and ``*WAI`` wait for it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from hil_sim.scpi_server import Call, ScpiError, fmt, scpi
from hil_sim.smu_device import SmuDevice
from hil_sim.smu_frontend import (
    Pacer,
    Reading,
)

log = logging.getLogger(__name__)

V_RANGES = (0.02, 0.2, 2.0, 20.0, 200.0)
I_RANGES = (10e-9, 100e-9, 1e-6, 10e-6, 100e-6, 1e-3, 10e-3, 100e-3, 1.0)
SOURSTAT_LIMIT = 32
"""Source status bit 5: the source was limited by the current limit (compliance)."""
LIST_CHUNK = 100
"""Values one :SOURce:LIST command may carry (manual: up to 100; append for more)."""
LIST_MAX = 2500
CUSTOM_LIST = "VoltCustomSweepList"
DEFAULT_BUFFERS = ("defbuffer1", "defbuffer2")
BUFFER_ELEMENTS = {
    "READ": "READING",
    "READING": "READING",
    "SOUR": "SOURCE",
    "SOURCE": "SOURCE",
    "SOURSTAT": "SOURSTATUS",
    "SOURSTATUS": "SOURSTATUS",
    "STAT": "STATUS",
    "STATUS": "STATUS",
    "REL": "RELATIVE",
    "RELATIVE": "RELATIVE",
}


@dataclass
class SourceConfig:
    """The source settings a configuration-list point stores and recalls."""

    level: float = 0.0
    range_v: float = 0.2
    autorange: bool = True
    ilim: float = 1.05e-4
    delay_s: float = 0.0
    readback: bool = True


@dataclass
class ReadingBuffer:
    """A reading buffer (``defbuffer1``, ``defbuffer2`` or made with :TRACe:MAKE)."""

    capacity: int
    readings: list[Reading] = field(default_factory=list)

    def add(self, reading: Reading) -> None:
        self.readings.append(reading)
        if len(self.readings) > self.capacity:
            del self.readings[0]  # fill mode continuous: the oldest goes


@dataclass(frozen=True)
class Block:
    """One trigger-model block."""

    kind: str
    args: tuple = ()


_EVENT = re.compile(r"^(NOTIFY|NOT|DIGIO|DIG)(\d)$")


def parse_event(text: str) -> str:
    """``NOTify2`` → ``NOTIFY2``, ``DIGio2`` → ``DIGIO2``, ``COMMand``, ``NONE``."""
    token = text.strip().upper()
    if token in ("COMM", "COMMAND"):
        return "COMMAND"
    if token == "NONE":
        return "NONE"
    match = _EVENT.match(token)
    if match:
        kind = "NOTIFY" if match.group(1).startswith("NOT") else "DIGIO"
        number = int(match.group(2))
        if (kind == "NOTIFY" and 1 <= number <= 8) or (kind == "DIGIO" and 1 <= number <= 6):
            return f"{kind}{number}"
    raise ScpiError(-224, f"{text!r} is not an event (NOTify1-8, DIGio1-6, COMMand, NONE)")


class Keithley2450Device(SmuDevice):
    """Emulated 2450: state, trigger model and the handlers of its command subset."""

    identity = ("KEITHLEY INSTRUMENTS", "MODEL 2450", "04512345", "1.7.12b")

    error_queue_capacity = 20
    trigger_line_count = 6
    runner_name = "k2450-{serial}-trigger-model"
    busy_name = "trigger model"

    def __init__(self, **kwargs: Any) -> None:
        """Keyword arguments as :class:`SmuDevice`; adds ``*TRG`` (a COMMAND trigger event)."""
        super().__init__(**kwargs)
        self._common["*TRG"] = lambda call: self._fire("COMMAND")

    # --- state -------------------------------------------------------------------------
    def reset(self) -> None:
        self.source = SourceConfig()
        self.output = False
        self.nplc = 1.0
        self.sense_range: float | None = None  # None: auto-range
        self.limit_tripped = False
        self.buffers: dict[str, ReadingBuffer] = {
            name: ReadingBuffer(100_000) for name in DEFAULT_BUFFERS
        }
        self.config_lists: dict[str, list[SourceConfig]] = {}
        self.blocks: dict[int, Block] = {}
        self.list_index: dict[str, int] = {}
        self.line_modes: dict[int, tuple[str, str]] = {n: ("DIG", "IN") for n in range(1, 7)}
        self.line_stimulus: dict[int, str] = {n: "NONE" for n in range(1, 7)}
        self.trigger_state = "EMPTY"
        self.block_now = 0
        self._dc_mark = time.monotonic()
        self._t0 = time.monotonic()

    def _expose(self) -> None:
        """Apply the DC level held on the output since the last mark to the load."""
        now = time.monotonic()
        dt, self._dc_mark = now - self._dc_mark, now
        if self.output and self.source.level != 0.0 and dt > 0:
            self.smu.hold(self.source.level, self.source.ilim, dt)

    # --- common commands that wait for the trigger model ---------------------------------
    def digital_input(self, line: int, delay_s: float = 0.0) -> None:
        """An edge arrives on digital I/O ``line`` (the trigger link calls this); it is an
        event only when the line is a trigger input."""
        if self.line_modes.get(line) == ("TRIG", "IN"):
            self.lines.input_event(line, delay_s)

    # --- source ---------------------------------------------------------------------------
    @scpi(":SOURce#:FUNCtion[:MODE]")
    def set_source_function(self, call: Call) -> None:
        call.expect(1)
        if call.choice(0, ["VOLTage", "CURRent"]) != "VOLTAGE":
            raise ScpiError(-224, "current sourcing is not emulated")

    @scpi(":SOURce#:FUNCtion[:MODE]?")
    def get_source_function(self, call: Call) -> str:
        return "VOLT"

    @scpi(":SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def set_level(self, call: Call) -> None:
        call.expect(1)
        level = call.float(0, low=-210, high=210, default=0.0, units="V")
        self._check_in_range(level)
        with self._state:
            self._idle_required("changing the source level")
            self._expose()
            self.source.level = level

    @scpi(":SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def get_level(self, call: Call) -> str:
        return fmt(self.source.level)

    def _check_in_range(self, level: float) -> None:
        if not self.source.autorange and abs(level) > 1.05 * self.source.range_v:
            raise ScpiError(-222, f"{level:g} V exceeds the {self.source.range_v:g} V range")

    @scpi(":SOURce#:VOLTage:RANGe")
    def set_source_range(self, call: Call) -> None:
        call.expect(1)
        value = call.float(0, low=0, high=210, default=0.2, units="V")
        rng = next((r for r in V_RANGES if value <= r * 1.0000001), None)
        if rng is None:
            raise ScpiError(-222, f"no source range holds {value:g} V")
        self._idle_required("changing the source range")
        self.source.range_v = rng
        self.source.autorange = False

    @scpi(":SOURce#:VOLTage:RANGe?")
    def get_source_range(self, call: Call) -> str:
        return fmt(self.source.range_v)

    @scpi(":SOURce#:VOLTage:RANGe:AUTO")
    def set_source_autorange(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing the source range")
        self.source.autorange = call.bool(0)

    @scpi(":SOURce#:VOLTage:RANGe:AUTO?")
    def get_source_autorange(self, call: Call) -> str:
        return fmt(self.source.autorange)

    @scpi(":SOURce#:VOLTage:ILIMit[:LEVel]")
    def set_ilim(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing the current limit")
        self.source.ilim = call.float(0, low=1e-9, high=1.05, default=1.05e-4, units="A")

    @scpi(":SOURce#:VOLTage:ILIMit[:LEVel]?")
    def get_ilim(self, call: Call) -> str:
        return fmt(self.source.ilim)

    @scpi(":SOURce#:VOLTage:ILIMit[:LEVel]:TRIPped?")
    def get_tripped(self, call: Call) -> str:
        return fmt(self.limit_tripped)

    @scpi(":SOURce#:VOLTage:DELay")
    def set_delay(self, call: Call) -> None:
        call.expect(1)
        self.source.delay_s = call.float(0, low=0, high=10_000, default=0.0, units="s")

    @scpi(":SOURce#:VOLTage:DELay?")
    def get_delay(self, call: Call) -> str:
        return fmt(self.source.delay_s)

    @scpi(":SOURce#:VOLTage:READ:BACK")
    def set_readback(self, call: Call) -> None:
        call.expect(1)
        self.source.readback = call.bool(0)

    @scpi(":SOURce#:VOLTage:READ:BACK?")
    def get_readback(self, call: Call) -> str:
        return fmt(self.source.readback)

    # --- source lists and configuration lists ------------------------------------------------
    @scpi(":SOURce#:LIST:VOLTage")
    def set_source_list(self, call: Call) -> None:
        self._append_list(call, replace=True)

    @scpi(":SOURce#:LIST:VOLTage:APPend")
    def append_source_list(self, call: Call) -> None:
        self._append_list(call, replace=False)

    def _append_list(self, call: Call, *, replace: bool) -> None:
        values = call.floats(low=-210, high=210, units="V")
        if len(values) > LIST_CHUNK:
            raise ScpiError(-223, f"{len(values)} values; at most {LIST_CHUNK} per command")
        with self._state:
            self._idle_required("changing a source list")
            points = [] if replace else list(self.config_lists.get(CUSTOM_LIST, []))
            if len(points) + len(values) > LIST_MAX:
                raise ScpiError(-225, f"a source list holds at most {LIST_MAX} values")
            for value in values:
                self._check_in_range(value)
                points.append(dataclasses.replace(self.source, level=value))
            self.config_lists[CUSTOM_LIST] = points
            self.list_index.pop(CUSTOM_LIST, None)

    @scpi(":SOURce#:LIST:VOLTage?")
    def get_source_list(self, call: Call) -> str:
        return ",".join(fmt(p.level) for p in self.config_lists.get(CUSTOM_LIST, []))

    @scpi(":SOURce#:LIST:VOLTage:POINts?")
    def get_source_list_points(self, call: Call) -> str:
        return str(len(self.config_lists.get(CUSTOM_LIST, [])))

    @scpi(":SOURce#:CONFiguration:LIST:CREate")
    def create_config_list(self, call: Call) -> None:
        call.expect(1)
        name = call.string(0)
        with self._state:
            self._idle_required("creating a configuration list")
            if name in self.config_lists:
                raise ScpiError(-221, f"configuration list {name!r} already exists")
            self.config_lists[name] = []

    @scpi(":SOURce#:CONFiguration:LIST:STORe")
    def store_config(self, call: Call) -> None:
        call.expect(1, 2)
        points = self._config_list(call.string(0))
        snapshot = dataclasses.replace(self.source)
        with self._state:
            self._idle_required("storing a configuration point")
            if len(call.args) == 2:
                index = call.int(1, low=1, high=len(points) + 1)
                if index <= len(points):
                    points[index - 1] = snapshot
                    return
            if len(points) >= LIST_MAX:
                raise ScpiError(-225, f"a configuration list holds at most {LIST_MAX} points")
            points.append(snapshot)

    @scpi(":SOURce#:CONFiguration:LIST:RECall")
    def recall_config(self, call: Call) -> None:
        call.expect(1, 2)
        name = call.string(0)
        points = self._config_list(name)
        index = call.int(1, low=1, high=max(len(points), 1)) if len(call.args) == 2 else 1
        with self._state:
            self._idle_required("recalling a configuration point")
            self._expose()
            self._recall(name, index)

    @scpi(":SOURce#:CONFiguration:LIST:SIZE?")
    def config_list_size(self, call: Call) -> str:
        call.expect(1)
        return str(len(self._config_list(call.string(0))))

    @scpi(":SOURce#:CONFiguration:LIST:DELete")
    def delete_config_list(self, call: Call) -> None:
        call.expect(1)
        name = call.string(0)
        self._config_list(name)
        with self._state:
            self._idle_required("deleting a configuration list")
            del self.config_lists[name]
            self.list_index.pop(name, None)

    def _config_list(self, name: str) -> list[SourceConfig]:
        try:
            return self.config_lists[name]
        except KeyError:
            raise ScpiError(-224, f"no configuration list {name!r}") from None

    def _recall(self, name: str, index: int) -> None:
        points = self._config_list(name)
        if not 1 <= index <= len(points):
            raise ScpiError(-222, f"index {index} outside 1..{len(points)} of {name!r}")
        self.source = dataclasses.replace(points[index - 1])
        self.list_index[name] = index

    # --- sense ---------------------------------------------------------------------------
    @scpi(":SENSe#:FUNCtion[:ON]")
    def set_sense_function(self, call: Call) -> None:
        call.expect(1)
        if call.string(0).upper() not in ("CURR", "CURRENT", "CURR:DC", "CURRENT:DC"):
            raise ScpiError(-224, "only current measurement is emulated")

    @scpi(":SENSe#:FUNCtion[:ON]?")
    def get_sense_function(self, call: Call) -> str:
        return '"CURR:DC"'

    @scpi(":SENSe#:CURRent[:DC]:NPLCycles")
    def set_nplc(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing NPLC")
        self.nplc = call.float(0, low=0.01, high=10, default=1.0)

    @scpi(":SENSe#:CURRent[:DC]:NPLCycles?")
    def get_nplc(self, call: Call) -> str:
        return fmt(self.nplc)

    @scpi(":SENSe#:CURRent[:DC]:RANGe[:UPPer]")
    def set_sense_range(self, call: Call) -> None:
        call.expect(1)
        value = call.float(0, low=0, high=1.05, default=1e-4, units="A")
        rng = next((r for r in I_RANGES if value <= r * 1.0000001), None)
        if rng is None:
            raise ScpiError(-222, f"no current range holds {value:g} A")
        self.sense_range = rng

    @scpi(":SENSe#:CURRent[:DC]:RANGe[:UPPer]?")
    def get_sense_range(self, call: Call) -> str:
        return fmt(self.sense_range if self.sense_range is not None else 1e-4)

    @scpi(":SENSe#:CURRent[:DC]:RANGe:AUTO")
    def set_sense_autorange(self, call: Call) -> None:
        call.expect(1)
        if call.bool(0):
            self.sense_range = None
        elif self.sense_range is None:
            self.sense_range = 1e-4

    @scpi(":SENSe#:CURRent[:DC]:RANGe:AUTO?")
    def get_sense_autorange(self, call: Call) -> str:
        return fmt(self.sense_range is None)

    @scpi(":SYSTem:LFRequency?")
    def get_line_frequency(self, call: Call) -> str:
        return str(int(self.timing.line_frequency_hz))

    # --- output and single readings --------------------------------------------------------
    @scpi(":OUTPut#[:STATe]")
    def set_output(self, call: Call) -> None:
        call.expect(1)
        state = call.bool(0)
        with self._state:
            self._idle_required("switching the output")
            self._expose()
            self.output = state

    @scpi(":OUTPut#[:STATe]?")
    def get_output(self, call: Call) -> str:
        return fmt(self.output)

    def _measure_now(self) -> Reading:
        """One reading at the present source state (takes instrument time)."""
        level = self.source.level if self.output else 0.0
        reading = self.smu.measure(level, self.source.ilim, self.nplc, self.sense_range)
        reading.time_s = time.monotonic() - self._t0
        self.limit_tripped = reading.limited
        return reading

    @scpi(":READ?")
    def read(self, call: Call) -> str:
        name = call.string(0) if call.args else "defbuffer1"
        elements = self._elements(call.args[1:])
        buffer = self._buffer(name)
        with self._state:
            self._idle_required("a reading")
            self._expose()
            time.sleep(self.timing.reading_time(self.nplc))
            reading = self._measure_now()
            self._expose()
            buffer.add(reading)
        return self._format([reading], elements)

    @scpi(":MEASure:CURRent[:DC]?")
    def measure_current(self, call: Call) -> str:
        with self._state:
            self._idle_required("a reading")
            self._expose()
            time.sleep(self.timing.reading_time(self.nplc))
            reading = self._measure_now()
            self.buffers["defbuffer1"].add(reading)
        return self._format([reading], ["READING"])

    # --- reading buffers -------------------------------------------------------------------------
    def _buffer(self, name: str) -> ReadingBuffer:
        try:
            return self.buffers[name]
        except KeyError:
            raise ScpiError(-224, f"no reading buffer {name!r}") from None

    def _elements(self, args: list[str]) -> list[str]:
        if not args:
            return ["READING"]
        out = []
        for arg in args:
            token = arg.strip().upper()
            if token not in BUFFER_ELEMENTS:
                raise ScpiError(-224, f"buffer element {arg!r} is not emulated")
            out.append(BUFFER_ELEMENTS[token])
        if len(out) > 14:
            raise ScpiError(-108, "at most 14 buffer elements")
        return out

    def _format(self, readings: list[Reading], elements: list[str]) -> str:
        parts = []
        for r in readings:
            for element in elements:
                if element == "READING":
                    parts.append(fmt(9.9e37 if r.overflow else r.current_a))
                elif element == "SOURCE":
                    parts.append(fmt(r.source_v))
                elif element == "SOURSTATUS":
                    parts.append(str(SOURSTAT_LIMIT if r.limited else 0))
                elif element == "STATUS":
                    parts.append("0")
                else:
                    parts.append(fmt(r.time_s))
        return ",".join(parts)

    @scpi(":TRACe:MAKE")
    def make_buffer(self, call: Call) -> None:
        call.expect(2, 3)
        name = call.string(0)
        size = call.int(1, low=10, high=11_000_000)
        if name in self.buffers:
            raise ScpiError(-221, f"buffer {name!r} already exists")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", name):
            raise ScpiError(-224, f"{name!r} is not a buffer name")
        self.buffers[name] = ReadingBuffer(size)

    @scpi(":TRACe:DELete")
    def delete_buffer(self, call: Call) -> None:
        call.expect(1)
        name = call.string(0)
        if name in DEFAULT_BUFFERS:
            raise ScpiError(-221, "the default buffers cannot be deleted")
        self._buffer(name)
        del self.buffers[name]

    @scpi(":TRACe:CLEar")
    def clear_buffer(self, call: Call) -> None:
        call.expect(0, 1)
        buffer = self._buffer(call.string(0) if call.args else "defbuffer1")
        with self._state:
            self._idle_required("clearing a buffer")
            buffer.readings.clear()

    @scpi(":TRACe:POINts")
    def set_buffer_points(self, call: Call) -> None:
        call.expect(1, 2)
        buffer = self._buffer(call.string(1) if len(call.args) > 1 else "defbuffer1")
        buffer.capacity = call.int(0, low=10, high=11_000_000)

    @scpi(":TRACe:POINts?")
    def get_buffer_points(self, call: Call) -> str:
        return str(self._buffer(call.string(0) if call.args else "defbuffer1").capacity)

    @scpi(":TRACe:ACTual?")
    def buffer_count(self, call: Call) -> str:
        call.expect(0, 1)
        return str(len(self._buffer(call.string(0) if call.args else "defbuffer1").readings))

    @scpi(":TRACe:DATA?")
    def buffer_data(self, call: Call) -> str:
        call.expect(2, 17)
        start = call.int(0, low=1)
        end = call.int(1, low=1)
        buffer = self._buffer(call.string(2) if len(call.args) > 2 else "defbuffer1")
        elements = self._elements(call.args[3:])
        with self._state:
            readings = list(buffer.readings)
        if end < start or end > len(readings):
            raise ScpiError(-222, f"indices {start}..{end} outside 1..{len(readings)}")
        return self._format(readings[start - 1 : end], elements)

    # --- digital I/O trigger lines --------------------------------------------------------------
    @scpi(":DIGital:LINE#:MODE")
    def set_line_mode(self, call: Call) -> None:
        call.expect(2)
        line = self._line(call.suffixes[1])
        kind = {"DIGITAL": "DIG", "TRIGGER": "TRIG"}[call.choice(0, ["DIGital", "TRIGger"])]
        direction = call.choice(1, ["IN", "OUT", "OPENdrain"])
        self.line_modes[line] = (kind, "OPEN" if direction == "OPENDRAIN" else direction)
        self.lines.clear(line)

    @scpi(":DIGital:LINE#:MODE?")
    def get_line_mode(self, call: Call) -> str:
        kind, direction = self.line_modes[self._line(call.suffixes[1])]
        return f"{kind},{direction}"

    @scpi(":TRIGger:DIGital#:OUT:STIMulus")
    def set_line_stimulus(self, call: Call) -> None:
        call.expect(1)
        self.line_stimulus[self._line(call.suffixes[1])] = parse_event(call.arg(0))

    @scpi(":TRIGger:DIGital#:OUT:STIMulus?")
    def get_line_stimulus(self, call: Call) -> str:
        return self.line_stimulus[self._line(call.suffixes[1])]

    @scpi(":TRIGger:DIGital#:OUT:LOGic")
    def set_line_logic(self, call: Call) -> None:
        call.expect(1)
        self._line(call.suffixes[1])
        call.choice(0, ["NEGative", "POSitive"])

    @scpi(":TRIGger:DIGital#:OUT:PULSewidth")
    def set_line_pulse(self, call: Call) -> None:
        call.expect(1)
        self._line(call.suffixes[1])
        call.float(0, low=0, high=100, units="s")

    @scpi(":TRIGger:DIGital#:IN:EDGE")
    def set_line_edge(self, call: Call) -> None:
        call.expect(1)
        self._line(call.suffixes[1])
        call.choice(0, ["FALLing", "RISing", "EITHer"])

    @scpi(":TRIGger:DIGital#:IN:CLEar")
    def clear_line(self, call: Call) -> None:
        self.lines.clear(self._line(call.suffixes[1]))

    def _line(self, number: int) -> int:
        if not 1 <= number <= 6:
            raise ScpiError(-114, f"digital line {number} (1 to 6)")
        return number

    def _fire(self, event: str) -> None:
        """An event happened: pulse every trigger-out line stimulated by it."""
        for line, stimulus in self.line_stimulus.items():
            if stimulus == event and self.line_modes[line] == ("TRIG", "OUT"):
                self.lines.pulse_output(line)

    # --- trigger model -------------------------------------------------------------------------
    def _define(self, call: Call, kind: str, args: tuple) -> None:
        block = call.int(0, low=1, high=63)
        with self._state:
            self._idle_required("changing the trigger model")
            self.blocks[block] = Block(kind, args)
            self.trigger_state = "IDLE"

    @scpi(":TRIGger:LOAD")
    def load_model(self, call: Call) -> None:
        call.expect(1, 4)
        name = call.string(0).upper()
        with self._state:
            self._idle_required("loading a trigger model")
            if name == "EMPTY":
                self.blocks = {}
                self.trigger_state = "EMPTY"
            elif name == "SIMPLELOOP":
                count = call.int(1, low=1, high=268_435_455) if len(call.args) > 1 else 1
                delay = call.float(2, low=0, high=10_000) if len(call.args) > 2 else 0.0
                buffer = call.string(3) if len(call.args) > 3 else "defbuffer1"
                self._buffer(buffer)
                self.blocks = {
                    1: Block("BUFFER_CLEAR", (buffer,)),
                    2: Block("DELAY", (delay,)),
                    3: Block("MEASURE", (buffer,)),
                    4: Block("BRANCH_COUNTER", (count, 2)),
                }
                self.trigger_state = "IDLE"
            else:
                raise ScpiError(-224, f"trigger model template {name!r} is not emulated")

    @scpi(":SOURce#:SWEep:VOLTage:LIST")
    def list_sweep(self, call: Call) -> None:
        call.expect(1, 5)
        points = self._config_list(CUSTOM_LIST)
        start = call.int(0, low=1, high=max(len(points), 1))
        delay = call.float(1, low=0, high=10_000, units="s") if len(call.args) > 1 else 0.0
        count = call.int(2, low=1, high=268_435_455) if len(call.args) > 2 else 1
        if len(call.args) > 3:
            call.bool(3)
        buffer = call.string(4) if len(call.args) > 4 else "defbuffer1"
        self._buffer(buffer)
        n = len(points) - start + 1
        with self._state:
            self._idle_required("building a sweep")
            self.blocks = {
                1: Block("BUFFER_CLEAR", (buffer,)),
                2: Block("CONFIG_RECALL", (CUSTOM_LIST, start)),
                3: Block("SOURCE_OUTPUT", (True,)),
                4: Block("DELAY", (delay,)),
                5: Block("MEASURE", (buffer,)),
                6: Block("CONFIG_NEXT", (CUSTOM_LIST,)),
                7: Block("BRANCH_COUNTER", (n, 4)),
                8: Block("BRANCH_COUNTER", (count, 2)),
                9: Block("SOURCE_OUTPUT", (False,)),
            }
            self.trigger_state = "IDLE"

    @scpi(":TRIGger:BLOCk:BUFFer:CLEar")
    def block_buffer_clear(self, call: Call) -> None:
        call.expect(1, 2)
        buffer = call.string(1) if len(call.args) > 1 else "defbuffer1"
        self._buffer(buffer)
        self._define(call, "BUFFER_CLEAR", (buffer,))

    @scpi(":TRIGger:BLOCk:CONFig:RECall")
    def block_recall(self, call: Call) -> None:
        call.expect(2, 3)
        name = call.string(1)
        points = self._config_list(name)
        index = call.int(2, low=1, high=max(len(points), 1)) if len(call.args) > 2 else 1
        self._define(call, "CONFIG_RECALL", (name, index))

    @scpi(":TRIGger:BLOCk:CONFig:NEXT")
    def block_next(self, call: Call) -> None:
        call.expect(2)
        name = call.string(1)
        self._config_list(name)
        self._define(call, "CONFIG_NEXT", (name,))

    @scpi(":TRIGger:BLOCk:SOURce:STATe")
    def block_source(self, call: Call) -> None:
        call.expect(2)
        self._define(call, "SOURCE_OUTPUT", (call.bool(1),))

    @scpi(":TRIGger:BLOCk:DELay:CONStant")
    def block_delay(self, call: Call) -> None:
        call.expect(2)
        self._define(call, "DELAY", (call.float(1, low=0, high=10_000, units="s"),))

    @scpi(":TRIGger:BLOCk:MEASure")
    def block_measure(self, call: Call) -> None:
        call.expect(1, 2)
        buffer = call.string(1) if len(call.args) > 1 else "defbuffer1"
        self._buffer(buffer)
        self._define(call, "MEASURE", (buffer,))

    @scpi(":TRIGger:BLOCk:NOTify")
    def block_notify(self, call: Call) -> None:
        call.expect(2)
        self._define(call, "NOTIFY", (f"NOTIFY{call.int(1, low=1, high=8)}",))

    @scpi(":TRIGger:BLOCk:WAIT")
    def block_wait(self, call: Call) -> None:
        call.expect(2, 3)
        event = parse_event(call.arg(1))
        clear = call.choice(2, ["ENTer", "NEVer"]) if len(call.args) > 2 else "NEVER"
        if not (event.startswith("DIGIO") or event == "COMMAND"):
            raise ScpiError(-224, f"waiting on {event} is not emulated (DIGio<n>, COMMand)")
        self._define(call, "WAIT", (event, clear == "ENTER"))

    @scpi(":TRIGger:BLOCk:BRANch:COUNter")
    def block_counter(self, call: Call) -> None:
        call.expect(3)
        count = call.int(1, low=1, high=268_435_455)
        target = call.int(2, low=1, high=63)
        self._define(call, "BRANCH_COUNTER", (count, target))

    @scpi(":TRIGger:BLOCk:BRANch:ALWays")
    def block_always(self, call: Call) -> None:
        call.expect(2)
        self._define(call, "BRANCH_ALWAYS", (call.int(1, low=1, high=63),))

    @scpi(":TRIGger:BLOCk:NOP")
    def block_nop(self, call: Call) -> None:
        call.expect(1)
        self._define(call, "NOP", ())

    @scpi(":TRIGger:BLOCk:LIST?")
    def block_list(self, call: Call) -> str:
        return ";".join(
            f"{n},{b.kind}," + ",".join(str(a) for a in b.args)
            for n, b in sorted(self.blocks.items())
        )

    @scpi(":TRIGger:STATe?")
    def trigger_state_query(self, call: Call) -> str:
        """``<state>;<state>;<last block>`` as the 2450 answers (IDLE, RUNNING, WAITING, …)."""
        state = self.trigger_state
        if not self.runner.running and state in ("RUNNING", "WAITING"):
            state = "IDLE"  # the thread has just ended and not yet written its final state
        return f"{state};{state};{self.block_now}"

    @scpi(":INITiate[:IMMediate]")
    def initiate(self, call: Call) -> None:
        with self._state:
            self._idle_required("initiating")
            if not self.blocks:
                raise ScpiError(-221, "the trigger model is empty")
            self._expose()
            self.trigger_state = "RUNNING"
            self.runner.start(self._run_model)

    @scpi(":ABORt")
    def abort(self, call: Call) -> None:
        if self.runner.running:
            self.runner.abort()
            self.trigger_state = "ABORTED"

    def _run_model(self) -> None:
        """Execute the trigger model block by block, in instrument time."""
        stop = self.runner.abort_event
        pacer = Pacer(stop)
        blocks = dict(self.blocks)
        counters: dict[int, int] = {}
        self.list_index = {}
        number = 1
        try:
            while not stop.is_set():
                block = blocks.get(number)
                if block is None:
                    break
                self.block_now = number
                jump = self._run_block(block, number, counters, pacer)
                number = jump if jump is not None else number + 1
            pacer.flush()
        except ScpiError as exc:
            log.warning("trigger model failed at block %d: %s", number, exc)
            self.push_error(exc)
            self.trigger_state = "FAILED"
            return
        finally:
            with self._state:
                self._dc_mark = time.monotonic()
        self.trigger_state = "ABORTED" if stop.is_set() else "IDLE"

    def _run_block(
        self, block: Block, number: int, counters: dict[int, int], pacer: Pacer
    ) -> int | None:
        kind, args = block.kind, block.args
        timing = self.timing
        if kind == "BUFFER_CLEAR":
            with self._state:
                self._buffer(args[0]).readings.clear()
        elif kind == "CONFIG_RECALL":
            with self._state:
                self._recall(args[0], args[1])
            pacer.spend(timing.settle_s)
        elif kind == "CONFIG_NEXT":
            points = self._config_list(args[0])
            index = self.list_index.get(args[0], 0) % len(points) + 1
            with self._state:
                self._recall(args[0], index)
            pacer.spend(timing.settle_s)
        elif kind == "SOURCE_OUTPUT":
            with self._state:
                self.output = args[0]
            pacer.spend(timing.settle_s)
        elif kind == "DELAY":
            delay = args[0]
            if self.output and self.source.level != 0.0:
                limited = self.smu.hold(self.source.level, self.source.ilim, delay)
                self.limit_tripped = limited
                pacer.spend(timing.pulse_time(delay))
            else:
                pacer.spend(delay)
        elif kind == "MEASURE":
            reading = self._measure_now()
            if self.output and self.source.level != 0.0:
                self.smu.hold(self.source.level, self.source.ilim, timing.aperture(self.nplc))
            with self._state:
                self._buffer(args[0]).add(reading)
            pacer.spend(timing.reading_time(self.nplc))
        elif kind == "NOTIFY":
            self._fire(args[0])
        elif kind == "WAIT":
            event, clear = args
            if event == "COMMAND":
                raise ScpiError(-221, "waiting on *TRG is not emulated inside a model")
            line = int(event[5:])
            if clear:
                self.lines.clear(line)
            pacer.flush()
            self.trigger_state = "WAITING"
            delay = self.lines.wait(line, self.runner.abort_event)
            self.trigger_state = "RUNNING"
            pacer.resync()
            if delay is not None:
                pacer.spend(delay)
        elif kind == "BRANCH_COUNTER":
            count, target = args
            counters[number] = counters.get(number, 0) + 1
            if counters[number] < count:
                return target
            counters[number] = 0
        elif kind == "BRANCH_ALWAYS":
            return args[0]
        return None
