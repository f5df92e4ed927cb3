"""Emulated Keysight B2900-series SMU (B2901A/B2902A channel 1) in pulsed list mode.

The subset follows the B2900 SCPI Command Reference: source function, shape
(DC or PULSe), immediate/triggered level, list mode (``:SOURce:LIST:VOLTage`` with
``:APPend``, up to 2500 points), pulse delay and width, current compliance
(``:SENSe:CURRent:PROTection``) and its ``:TRIPped?`` query, NPLC and auto-range,
the trigger layer (``:TRIGger:ALL:SOURce AINT|TIMer|EXTernal<n>``, ``:TIMer``,
``:COUNt``, acquire/transient delays and trigger outputs on an external line),
``:INITiate``, ``:ABORt``, ``:FETCh:ARRay:CURRent?/SOURce?/STATus?`` and
``:MEASure:CURRent?``. A channel list ``(@1)`` is accepted where the manual allows
one. Compliance is reported in the status word (bits 1-2, value 2) and by
``:SENSe:CURRent:PROTection:TRIPped?``. Anything else: ``-113``.

Each point: wait for the trigger; after the pulse delay the output goes from the
base (immediate) level to the point's level for the pulse width; the acquisition
starts at the acquire delay and integrates for NPLC / line frequency; then the
trigger outputs fire. Time per point: max(delay + width, acquire delay + aperture)
plus settling.
"""

from __future__ import annotations

import time

from hil_sim.scpi_server import Call, ScpiError, fmt, scpi
from hil_sim.smu_device import SmuDevice
from hil_sim.smu_frontend import (
    Pacer,
    Reading,
)

LIST_MAX = 2500
PULSE_WIDTH_MIN_S = 50e-6
STATUS_COMPLIANCE = 2
EXT_LINES = 14


def _channel(call: Call, index: int) -> None:
    """Accept an optional trailing channel list ``(@1)``."""
    if len(call.args) > index:
        text = call.args[index].replace(" ", "")
        if text not in ("(@1)",):
            raise ScpiError(-224, f"channel list {call.args[index]!r} (only (@1) is emulated)")


class KeysightB2900Device(SmuDevice):
    """Emulated B2900 channel 1: state, pulsed list sequence and the command handlers."""

    identity = ("Keysight Technologies", "B2902A", "MY51140123", "3.4.2011.5100")

    error_queue_capacity = 30
    trigger_line_count = EXT_LINES
    runner_name = "b2900-{serial}-sequence"
    busy_name = "channel sequence"

    def reset(self) -> None:
        self.shape = "DC"
        self.level = 0.0
        self.triggered_level = 0.0
        self.mode = "FIX"
        self.list_levels: list[float] = []
        self.pulse_delay = 0.0
        self.pulse_width = 1e-3
        self.compliance = 1e-4
        self.nplc = 1.0
        self.output = False
        self.tripped = False
        self.trigger_source = "AINT"
        self.timer_s = 1e-3
        self.count = 1
        self.acq_delay = 0.0
        self.tran_delay = 0.0
        self.tout = {"ACQ": (False, 1), "TRAN": (False, 1)}
        self.ext_function = {n: "DIO" for n in range(1, EXT_LINES + 1)}
        self.readings: list[Reading] = []
        self.waiting = False
        self._t0 = time.monotonic()

    def digital_input(self, line: int, delay_s: float = 0.0) -> None:
        """An edge on external line ``line`` (the trigger link calls this)."""
        if self.ext_function.get(line) == "TINP":
            self.lines.input_event(line, delay_s)

    # --- source -------------------------------------------------------------------------
    @scpi(":SOURce#:FUNCtion:MODE")
    def set_function(self, call: Call) -> None:
        call.expect(1)
        if call.choice(0, ["VOLTage", "CURRent"]) != "VOLTAGE":
            raise ScpiError(-224, "current sourcing is not emulated")

    @scpi(":SOURce#:FUNCtion:MODE?")
    def get_function(self, call: Call) -> str:
        return "VOLT"

    @scpi(":SOURce#:FUNCtion:SHAPe")
    def set_shape(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing the shape")
        self.shape = "PULSE" if call.choice(0, ["PULSe", "DC"]) == "PULSE" else "DC"

    @scpi(":SOURce#:FUNCtion:SHAPe?")
    def get_shape(self, call: Call) -> str:
        return "PULS" if self.shape == "PULSE" else "DC"

    @scpi(":SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]")
    def set_level(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing the level")
        self.level = call.float(0, low=-210, high=210, default=0.0, units="V")

    @scpi(":SOURce#:VOLTage[:LEVel][:IMMediate][:AMPLitude]?")
    def get_level(self, call: Call) -> str:
        return fmt(self.level)

    @scpi(":SOURce#:VOLTage[:LEVel]:TRIGgered[:AMPLitude]")
    def set_triggered(self, call: Call) -> None:
        call.expect(1)
        self.triggered_level = call.float(0, low=-210, high=210, default=0.0, units="V")

    @scpi(":SOURce#:VOLTage:MODE")
    def set_mode(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing the mode")
        mode = call.choice(0, ["FIXed", "LIST", "SWEep"])
        if mode == "SWEEP":
            raise ScpiError(-224, "staircase sweeps are not emulated; use LIST")
        self.mode = "LIST" if mode == "LIST" else "FIX"

    @scpi(":SOURce#:VOLTage:MODE?")
    def get_mode(self, call: Call) -> str:
        return self.mode

    @scpi(":SOURce#:LIST:VOLTage")
    def set_list(self, call: Call) -> None:
        self._idle_required("changing the list")
        values = call.floats(low=-210, high=210, units="V")
        if len(values) > LIST_MAX:
            raise ScpiError(-223, f"at most {LIST_MAX} list points")
        self.list_levels = values

    @scpi(":SOURce#:LIST:VOLTage:APPend")
    def append_list(self, call: Call) -> None:
        self._idle_required("changing the list")
        values = call.floats(low=-210, high=210, units="V")
        if len(self.list_levels) + len(values) > LIST_MAX:
            raise ScpiError(-223, f"at most {LIST_MAX} list points")
        self.list_levels.extend(values)

    @scpi(":SOURce#:LIST:VOLTage:POINts?")
    def list_points(self, call: Call) -> str:
        return str(len(self.list_levels))

    @scpi(":SOURce#:PULSe:DELay")
    def set_pulse_delay(self, call: Call) -> None:
        call.expect(1)
        self.pulse_delay = call.float(0, low=0, high=99_999.9, default=0.0, units="s")

    @scpi(":SOURce#:PULSe:WIDTh")
    def set_pulse_width(self, call: Call) -> None:
        call.expect(1)
        self.pulse_width = call.float(
            0, low=PULSE_WIDTH_MIN_S, high=100_000, default=1e-3, units="s"
        )

    @scpi(":SOURce#:PULSe:WIDTh?")
    def get_pulse_width(self, call: Call) -> str:
        return fmt(self.pulse_width)

    @scpi(":SOURce#:DIGital:EXTernal#[:FUNCtion]")
    def set_ext_function(self, call: Call) -> None:
        call.expect(1)
        line = call.suffixes[2]
        if not 1 <= line <= EXT_LINES:
            raise ScpiError(-114, f"external line {line} (1 to {EXT_LINES})")
        choice = call.choice(0, ["DIO", "DINP", "TOUT", "TINP"])
        self.ext_function[line] = choice
        self.lines.clear(line)

    # --- sense ---------------------------------------------------------------------------
    @scpi(":SENSe#:FUNCtion[:ON]")
    def set_sense(self, call: Call) -> None:
        call.expect(1)
        if call.string(0).upper() not in ("CURR", "CURRENT"):
            raise ScpiError(-224, "only current measurement is emulated")

    @scpi(":SENSe#:CURRent[:DC]:PROTection[:LEVel]")
    def set_compliance(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing the compliance")
        self.compliance = call.float(0, low=1e-9, high=3.03, default=1e-4, units="A")

    @scpi(":SENSe#:CURRent[:DC]:PROTection[:LEVel]?")
    def get_compliance(self, call: Call) -> str:
        return fmt(self.compliance)

    @scpi(":SENSe#:CURRent[:DC]:PROTection:TRIPped?")
    def get_tripped(self, call: Call) -> str:
        return fmt(self.tripped)

    @scpi(":SENSe#:CURRent[:DC]:NPLCycles")
    def set_nplc(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("changing NPLC")
        self.nplc = call.float(0, low=4e-4, high=100, default=1.0)

    @scpi(":SENSe#:CURRent[:DC]:NPLCycles?")
    def get_nplc(self, call: Call) -> str:
        return fmt(self.nplc)

    @scpi(":SENSe#:CURRent[:DC]:RANGe:AUTO")
    def set_autorange(self, call: Call) -> None:
        call.expect(1)
        if not call.bool(0):
            raise ScpiError(-224, "fixed current ranges are not emulated")

    @scpi(":SYSTem:LFRequency?")
    def get_line_frequency(self, call: Call) -> str:
        return str(int(self.timing.line_frequency_hz))

    # --- output and spot measurement ------------------------------------------------------
    @scpi(":OUTPut#[:STATe]")
    def set_output(self, call: Call) -> None:
        call.expect(1)
        self._idle_required("switching the output")
        self.output = call.bool(0)

    @scpi(":OUTPut#[:STATe]?")
    def get_output(self, call: Call) -> str:
        return fmt(self.output)

    @scpi(":MEASure:CURRent[:DC]?")
    def measure(self, call: Call) -> str:
        _channel(call, 0)
        with self._state:
            self._idle_required("a measurement")
            time.sleep(self.timing.reading_time(self.nplc))
            level = self.level if self.output else 0.0
            reading = self.smu.measure(level, self.compliance, self.nplc)
            self.tripped = reading.limited
        return fmt(reading.current_a)

    # --- trigger layer ------------------------------------------------------------------------
    @scpi(":TRIGger#[:ALL]:SOURce[:SIGNal]")
    def set_trigger_source(self, call: Call) -> None:
        call.expect(1)
        token = call.arg(0).strip().upper()
        if token in ("AINT", "AINTERNAL", "TIM", "TIMER", "BUS"):
            self.trigger_source = {"AINTERNAL": "AINT", "TIMER": "TIM"}.get(token, token)
        elif token.startswith(("EXT", "EXTERNAL")) and token.rstrip("0123456789") in (
            "EXT",
            "EXTERNAL",
        ):
            line = int(token[len(token.rstrip("0123456789")) :] or 0)
            if not 1 <= line <= EXT_LINES:
                raise ScpiError(-224, f"{call.arg(0)!r}: external lines are EXT1..EXT{EXT_LINES}")
            self.trigger_source = f"EXT{line}"
        else:
            raise ScpiError(-224, f"trigger source {call.arg(0)!r} is not emulated")

    @scpi(":TRIGger#[:ALL]:SOURce[:SIGNal]?")
    def get_trigger_source(self, call: Call) -> str:
        return self.trigger_source

    @scpi(":TRIGger#[:ALL]:TIMer")
    def set_timer(self, call: Call) -> None:
        call.expect(1)
        self.timer_s = call.float(0, low=1e-5, high=1e5, default=1e-3, units="s")

    @scpi(":TRIGger#[:ALL]:COUNt")
    def set_count(self, call: Call) -> None:
        call.expect(1)
        self.count = call.int(0, low=1, high=100_000)

    @scpi(":TRIGger#[:ALL]:COUNt?")
    def get_count(self, call: Call) -> str:
        return str(self.count)

    @scpi(":TRIGger#:ACQuire:DELay")
    def set_acq_delay(self, call: Call) -> None:
        call.expect(1)
        self.acq_delay = call.float(0, low=0, high=100_000, default=0.0, units="s")

    @scpi(":TRIGger#:TRANsient:DELay")
    def set_tran_delay(self, call: Call) -> None:
        call.expect(1)
        self.tran_delay = call.float(0, low=0, high=100_000, default=0.0, units="s")

    @scpi(":TRIGger#:ACQuire:TOUTput[:STATe]")
    def set_acq_tout(self, call: Call) -> None:
        call.expect(1)
        self.tout["ACQ"] = (call.bool(0), self.tout["ACQ"][1])

    @scpi(":TRIGger#:TRANsient:TOUTput[:STATe]")
    def set_tran_tout(self, call: Call) -> None:
        call.expect(1)
        self.tout["TRAN"] = (call.bool(0), self.tout["TRAN"][1])

    @scpi(":TRIGger#:ACQuire:TOUTput:SIGNal")
    def set_acq_signal(self, call: Call) -> None:
        call.expect(1)
        self.tout["ACQ"] = (self.tout["ACQ"][0], self._ext(call.arg(0)))

    @scpi(":TRIGger#:TRANsient:TOUTput:SIGNal")
    def set_tran_signal(self, call: Call) -> None:
        call.expect(1)
        self.tout["TRAN"] = (self.tout["TRAN"][0], self._ext(call.arg(0)))

    def _ext(self, text: str) -> int:
        token = text.strip().upper()
        head = token.rstrip("0123456789")
        if head not in ("EXT", "EXTERNAL") or head == token:
            raise ScpiError(-224, f"{text!r} is not an external line EXT1..EXT{EXT_LINES}")
        line = int(token[len(head) :])
        if not 1 <= line <= EXT_LINES:
            raise ScpiError(-224, f"{text!r} is not an external line EXT1..EXT{EXT_LINES}")
        return line

    @scpi(":INITiate[:IMMediate][:ALL]")
    def initiate(self, call: Call) -> None:
        _channel(call, 0)
        with self._state:
            self._idle_required("initiating")
            if self.mode == "LIST" and not self.list_levels:
                raise ScpiError(-221, "list mode with an empty list")
            self.readings = []
            self.runner.start(self._run)

    @scpi(":STATus:OPERation:CONDition?")
    def operation_condition(self, call: Call) -> str:
        """Bit 0: channel 1 transient idle; bit 3: acquire idle; bits 1/4: waiting for a
        trigger."""
        if not self.runner.running:
            return str(0b1001)
        return str(0b10010 if self.waiting else 0)

    @scpi(":ABORt[:ALL]")
    def abort(self, call: Call) -> None:
        _channel(call, 0)
        self.runner.abort()

    @scpi(":FETCh:ARRay:CURRent?")
    def fetch_current(self, call: Call) -> str:
        _channel(call, 0)
        return ",".join(fmt(r.current_a) for r in self._fetch())

    @scpi(":FETCh:ARRay:SOURce?")
    def fetch_source(self, call: Call) -> str:
        _channel(call, 0)
        return ",".join(fmt(r.source_v) for r in self._fetch())

    @scpi(":FETCh:ARRay:STATus?")
    def fetch_status(self, call: Call) -> str:
        _channel(call, 0)
        return ",".join(str(STATUS_COMPLIANCE if r.limited else 0) for r in self._fetch())

    def _fetch(self) -> list[Reading]:
        with self._state:
            readings = list(self.readings)
        if not readings:
            raise ScpiError(-230, "no data: nothing has been acquired")
        return readings

    # --- the sequence --------------------------------------------------------------------------
    def _run(self) -> None:
        stop = self.runner.abort_event
        pacer = Pacer(stop)
        timing = self.timing
        aperture = timing.aperture(self.nplc)
        for k in range(self.count):
            if stop.is_set():
                break
            if self.trigger_source.startswith("EXT"):
                pacer.flush()
                self.waiting = True
                delay = self.lines.wait(int(self.trigger_source[3:]), stop)
                self.waiting = False
                if delay is None:
                    break
                pacer.resync()
                pacer.spend(delay)
            level = (
                self.list_levels[k % len(self.list_levels)]
                if self.mode == "LIST"
                else self.triggered_level
            )
            pulsed = self.shape == "PULSE"
            width = self.pulse_width if pulsed else max(self.timer_s, aperture)
            if self.output:
                limited = self.smu.hold(level, self.compliance, width) if level != 0.0 else False
            else:
                limited = False
            in_pulse = not pulsed or (
                self.pulse_delay <= self.acq_delay
                and self.acq_delay + aperture <= self.pulse_delay + width * 1.000001
            )
            at = level if (self.output and in_pulse) else (self.level if self.output else 0.0)
            reading = self.smu.measure(at, self.compliance, self.nplc)
            reading.source_v = level
            reading.limited = reading.limited or limited
            reading.time_s = time.monotonic() - self._t0
            self.tripped = reading.limited
            with self._state:
                self.readings.append(reading)
            for layer in ("TRAN", "ACQ"):
                enabled, line = self.tout[layer]
                if enabled and self.ext_function.get(line) == "TOUT":
                    self.lines.pulse_output(line)
            point = max(self.pulse_delay + width, self.acq_delay + aperture)
            if self.trigger_source == "TIM":
                point = max(point, self.timer_s)
            pacer.spend(self.tran_delay + point + timing.settle_s)
        pacer.flush()
