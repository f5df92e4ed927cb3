"""Keithley 2450 SourceMeter in its native SCPI command set (2450 Reference Manual, section 6).

Settings are one-line declarative properties; every source level and current
limit is also checked against the configured :class:`~drivers.limits.SafetyLimits`
before it is sent. The visit train (:class:`~drivers.smu.VisitPlan`) uses the
2450 trigger model::

    :SOUR:LIST:VOLT p1,...,p100          pulse levels (100 per command, then :APP)
    :TRIG:LOAD "Empty"
    1  :TRIG:BLOC:BUFF:CLE 1, "defbuffer1"
    2  :TRIG:BLOC:CONF:REC 2, "BPZERO", 1     0 V before the output goes on
    3  :TRIG:BLOC:SOUR:STAT 3, ON
    4  :TRIG:BLOC:WAIT 4, DIGIO2             selector ready (switches settled)
    5  :TRIG:BLOC:CONF:NEXT 5, "VoltCustomSweepList"   this visit's pulse level
    6  :TRIG:BLOC:DEL:CONS 6, <width>        the pulse
    7  :TRIG:BLOC:CONF:REC 7, "BPREAD", 1    read level
    8  :TRIG:BLOC:MEAS 8, "defbuffer1"       the read
    9  :TRIG:BLOC:CONF:REC 9, "BPZERO", 1    0 V while the selector switches
    10 :TRIG:BLOC:NOT 10, 1                  trigger-out (digital line 1) → selector steps
    11 :TRIG:BLOC:BRAN:COUN 11, <N>, 4
    12 :TRIG:BLOC:SOUR:STAT 12, OFF
    :INIT, :TRIG:STAT? (after the train's own time, until IDLE),
    :TRAC:DATA? 1, <N>, "defbuffer1", READ, SOURSTAT

``BPZERO`` and ``BPREAD`` are source configuration lists made at
:meth:`Keithley2450.configure`. Compliance is read per point from the buffer
element ``SOURSTAT`` (bit 5, value 32: the source was limited).
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.errors import DataIntegrityError, MalformedReply, OutOfRangeError
from drivers.limits import SafetyLimits
from drivers.scpi import (
    Control,
    Measurement,
    SCPIInstrument,
    Setting,
    parse_bool,
    parse_floats,
    parse_int,
)
from drivers.smu import SMU, CurrentLimit, Reading, SourceLevel, VisitPlan, format_levels
from drivers.transport import Transport
from drivers.validators import in_range, one_of

SOURSTAT_LIMIT = 32
"""Source status bit 5: the source was limited by the current limit (compliance)."""
LIST_CHUNK = 100
LIST_MAX = 2500
CUSTOM_LIST = "VoltCustomSweepList"
ZERO_LIST = "BPZERO"
READ_LIST = "BPREAD"
BUFFER = "defbuffer1"
RUNNING_STATES = ("RUNNING", "WAITING", "BUILDING", "ABORTING")


class Keithley2450(SCPIInstrument, SMU):
    """Keithley 2450: voltage source, current measure, trigger-model visit trains."""

    source_function = Control(
        ":SOUR:FUNC?",
        ":SOUR:FUNC {}",
        "Source function: 'voltage' (current sourcing is not used by the rig).",
        values={"voltage": "VOLT", "current": "CURR"},
    )
    source_voltage = SourceLevel(
        ":SOUR:VOLT?",
        ":SOUR:VOLT {}",
        "Source level, V (±210 V; within the safety limits when configured).",
        validator=in_range(-210, 210, "V"),
        units="V",
    )
    source_range = Control(
        ":SOUR:VOLT:RANG?",
        ":SOUR:VOLT:RANG {}",
        "Source range, V (20 mV, 200 mV, 2 V, 20 V, 200 V; a value picks the range holding it).",
        validator=in_range(0, 210, "V"),
        units="V",
    )
    source_autorange = Control(
        ":SOUR:VOLT:RANG:AUTO?",
        ":SOUR:VOLT:RANG:AUTO {}",
        "Source auto-range on.",
        parse=parse_bool,
        validator=one_of([True, False]),
    )
    current_limit = CurrentLimit(
        ":SOUR:VOLT:ILIM?",
        ":SOUR:VOLT:ILIM {}",
        "Current limit (compliance) of the voltage source, A (1 nA to 1.05 A; at most the "
        "safety compliance when configured).",
        validator=in_range(1e-9, 1.05, "A"),
        units="A",
    )
    limit_tripped = Measurement(
        ":SOUR:VOLT:ILIM:TRIP?",
        "Whether the source was clamped at the current limit.",
        parse=parse_bool,
    )
    source_delay = Control(
        ":SOUR:VOLT:DEL?",
        ":SOUR:VOLT:DEL {}",
        "Source delay before a measurement, s (0 to 10 ks).",
        validator=in_range(0, 10_000, "s"),
        units="s",
    )
    measure_function = Setting(
        ':SENS:FUNC "{}"',
        "Measure function: 'current' (voltage measurement is not used by the rig).",
        values={"current": "CURR", "voltage": "VOLT"},
    )
    nplc = Control(
        ":SENS:CURR:NPLC?",
        ":SENS:CURR:NPLC {}",
        "Current integration time, power-line cycles (0.01 to 10).",
        validator=in_range(0.01, 10),
    )
    current_range = Control(
        ":SENS:CURR:RANG?",
        ":SENS:CURR:RANG {}",
        "Current measure range, A (10 nA to 1 A; a value picks the range holding it).",
        validator=in_range(1e-8, 1.05, "A"),
        units="A",
    )
    current_autorange = Control(
        ":SENS:CURR:RANG:AUTO?",
        ":SENS:CURR:RANG:AUTO {}",
        "Current auto-range on.",
        parse=parse_bool,
        validator=one_of([True, False]),
    )
    output = Control(
        ":OUTP?",
        ":OUTP {}",
        "Output on.",
        parse=parse_bool,
        validator=one_of([True, False]),
    )
    line_frequency = Measurement(":SYST:LFR?", "Power-line frequency, Hz.", units="Hz")
    current = Measurement(":MEAS:CURR?", "One current reading, A.", units="A")

    def __init__(self, transport: Transport, *, check_errors: bool = True) -> None:
        super().__init__(transport, check_errors=check_errors)
        self.limits: SafetyLimits | None = None
        self.nplc_setting = 1.0
        self.line_frequency_hz = 50.0
        self._forget_state()

    def _forget_state(self) -> None:
        self._level: float | None = None
        self._output_on: bool | None = None
        self._model: list[str] | None = None
        self._model_key: tuple[bool, bool] | None = None
        self._read_level: float | None = None

    # --- set-up ---------------------------------------------------------------------------
    def configure(self, limits: SafetyLimits, *, nplc: float = 0.01) -> None:
        """``*RST``, then voltage source / current measure at the safety compliance, ``nplc``,
        auto-ranging, output off at 0 V, the 0 V and read-level configuration lists and the
        trigger lines (1 out, 2 in)."""
        compliance = limits.check_compliance(limits.compliance_a)
        read_v = limits.check_voltage(limits.read_voltage_v, "read voltage")
        nplc = in_range(0.01, 10)(nplc, "nplc")
        with self.lock:
            self._forget_state()
            self.limits = limits
            commands = [
                "*RST",
                ":SOUR:FUNC VOLT",
                ":SOUR:VOLT:RANG:AUTO ON",
                f":SOUR:VOLT:ILIM {compliance:.10g}",
                ':SENS:FUNC "CURR"',
                ":SENS:CURR:RANG:AUTO ON",
                f":SENS:CURR:NPLC {nplc:.10g}",
                ":SOUR:VOLT 0",
                f':SOUR:CONF:LIST:CRE "{ZERO_LIST}"',
                f':SOUR:CONF:LIST:STOR "{ZERO_LIST}"',
                f":SOUR:VOLT {read_v:.10g}",
                f':SOUR:CONF:LIST:CRE "{READ_LIST}"',
                f':SOUR:CONF:LIST:STOR "{READ_LIST}"',
                f":DIG:LINE{self.trigger_out_line}:MODE TRIG, OUT",
                f":TRIG:DIG{self.trigger_out_line}:OUT:STIM NOTIFY1",
                f":DIG:LINE{self.ready_in_line}:MODE TRIG, IN",
                f":TRIG:DIG{self.ready_in_line}:IN:EDGE FALL",
            ]
            for command in commands:
                self.write(command, check=False)
            self.check_errors("configure")
            self.line_frequency_hz = self.query_float(":SYST:LFR?")
            self.nplc_setting = nplc
            self._level, self._output_on, self._read_level = read_v, False, read_v

    # --- DC reads --------------------------------------------------------------------------
    def read_current(self, voltage_v: float) -> Reading:
        limits = self.require_limits()
        level = limits.check_voltage(voltage_v, "read voltage")
        with self.lock:
            changed = []
            if self._level != level:
                self.write(f":SOUR:VOLT {level:.10g}", check=False)
                changed.append(":SOUR:VOLT")
                self._level = level
            if not self._output_on:
                self.write(":OUTP ON", check=False)
                changed.append(":OUTP ON")
                self._output_on = True
            if changed:
                self.check_errors(" + ".join(changed))
            command = f':READ? "{BUFFER}", READ, SOURSTAT'
            values = self.query_floats(command)
        if len(values) != 2:
            raise MalformedReply("expected reading,status", reply=str(values), command=command)
        return Reading(values[0], level, bool(int(values[1]) & SOURSTAT_LIMIT))

    def output_off(self) -> None:
        with self.lock:
            self.write(":OUTP OFF")  # then the error queue: it has been executed
            self._output_on = False

    # --- visit trains ------------------------------------------------------------------------
    def triggers_per_visit(self, plan: VisitPlan) -> int:
        return 1

    def max_visits(self, plan: VisitPlan) -> int:
        return LIST_MAX

    def train_time_s(self, plan: VisitPlan) -> float:
        per_visit = 0.0
        if plan.pulses:
            per_visit += plan.pulse_width_s
        if plan.reads:
            per_visit += self.nplc_setting / self.line_frequency_hz
        return plan.visits * per_visit

    def _model_commands(self, plan: VisitPlan) -> list[str]:
        commands = [f':TRIG:BLOC:BUFF:CLE 1, "{BUFFER}"']
        block = 2

        def add(text: str) -> None:
            nonlocal block
            commands.append(text.format(b=block))
            block += 1

        add(f':TRIG:BLOC:CONF:REC {{b}}, "{ZERO_LIST if plan.pulses else READ_LIST}", 1')
        add(":TRIG:BLOC:SOUR:STAT {b}, ON")
        loop = block
        add(f":TRIG:BLOC:WAIT {{b}}, DIGIO{self.ready_in_line}")
        if plan.pulses:
            add(f':TRIG:BLOC:CONF:NEXT {{b}}, "{CUSTOM_LIST}"')
            add(f":TRIG:BLOC:DEL:CONS {{b}}, {plan.pulse_width_s:.10g}")
            if plan.reads:
                add(f':TRIG:BLOC:CONF:REC {{b}}, "{READ_LIST}", 1')
        if plan.reads:
            add(f':TRIG:BLOC:MEAS {{b}}, "{BUFFER}"')
        if plan.pulses:
            add(f':TRIG:BLOC:CONF:REC {{b}}, "{ZERO_LIST}", 1')
        add(":TRIG:BLOC:NOT {b}, 1")
        add(f":TRIG:BLOC:BRAN:COUN {{b}}, {plan.visits}, {loop}")
        add(":TRIG:BLOC:SOUR:STAT {b}, OFF")
        return commands

    def prepare_visits(self, plan: VisitPlan) -> None:
        limits = self.require_limits()
        plan.check(limits)
        if plan.visits > LIST_MAX:
            raise OutOfRangeError(f"{plan.visits} visits; one 2450 train holds at most {LIST_MAX}")
        levels = format_levels(plan.pulse_levels_v) if plan.pulse_levels_v else ""
        model = self._model_commands(plan)
        with self.lock:
            if plan.reads and plan.read_voltage_v != self._read_level:
                self.write(f":SOUR:VOLT {plan.read_voltage_v:.10g}", check=False)
                self.write(f':SOUR:CONF:LIST:STOR "{READ_LIST}", 1', check=False)
                self._read_level = self._level = plan.read_voltage_v
            if plan.pulse_levels_v:
                values = levels.split(",")
                for start in range(0, len(values), LIST_CHUNK):
                    head = ":SOUR:LIST:VOLT" if start == 0 else ":SOUR:LIST:VOLT:APP"
                    self.write(
                        f"{head} {','.join(values[start : start + LIST_CHUNK])}", check=False
                    )
            key = (plan.pulses, plan.reads)
            if self._model is None or self._model_key != key or len(self._model) != len(model):
                self.write(':TRIG:LOAD "Empty"', check=False)
                changed = model
            else:
                changed = [new for new, old in zip(model, self._model, strict=True) if new != old]
            for command in changed:
                self.write(command, check=False)
            self._model, self._model_key = model, key

    def start_visits(self) -> None:
        with self.lock:
            self.write(":INIT", check=False)
            self._output_on, self._level = None, None

    def finish_visits(self, plan: VisitPlan, timeout_s: float) -> list[Reading]:
        with self.lock:
            self.wait_idle(self.train_time_s(plan), timeout_s)
            readings = self._fetch(plan)
            self.check_errors(":INIT (trigger model)")
            self._output_on, self._level = False, 0.0
            return readings

    def visits_running(self) -> bool:
        reply = self.query(":TRIG:STAT?")
        state = reply.split(";")[0].strip().upper()
        if not state:
            raise MalformedReply("empty trigger state", reply=reply, command=":TRIG:STAT?")
        return state in RUNNING_STATES

    def fetch_visits(self, plan: VisitPlan) -> list[Reading]:
        self.wait_idle(self.train_time_s(plan), self.train_time_s(plan) * 3 + 5.0)
        if plan.reads:
            count = parse_int(self.query(f':TRAC:ACT? "{BUFFER}"'), ":TRAC:ACT?", self.address)
            if count != plan.visits:
                raise DataIntegrityError(
                    f"the buffer holds {count} of {plan.visits} readings: the train did not "
                    "complete",
                    resource=self.address,
                )
        readings = self._fetch(plan)
        self._output_on, self._level = False, 0.0
        return readings

    def _fetch(self, plan: VisitPlan) -> list[Reading]:
        if not plan.reads:
            return []
        n = plan.visits
        command = f':TRAC:DATA? 1, {n}, "{BUFFER}", READ, SOURSTAT'
        values = parse_floats(self.query(command), command, self.address)
        if len(values) != 2 * n:
            raise DataIntegrityError(
                f"{len(values)} values for {n} readings of (reading, status)", resource=self.address
            )
        assert plan.read_voltage_v is not None
        return [
            Reading(
                values[2 * k], plan.read_voltage_v, bool(int(values[2 * k + 1]) & SOURSTAT_LIMIT)
            )
            for k in range(n)
        ]

    def abort_visits(self) -> None:
        self.write(":ABOR", check=False)

    # --- the manual's list sweep ----------------------------------------------------------
    def list_sweep(self, levels_v: Sequence[float], delay_s: float = 0.0) -> list[Reading]:
        """Source each level in turn and measure after ``delay_s`` (the 2450's list sweep,
        ``:SOUR:SWE:VOLT:LIST``); one reading per level; the output is off afterwards.

        No selector trigger link: the route stays as it is (an I-V sweep of one cell or a
        reference resistor)."""
        limits = self.require_limits()
        levels = [limits.check_voltage(v, f"sweep level {k}") for k, v in enumerate(levels_v)]
        if not 1 <= len(levels) <= LIST_MAX:
            raise OutOfRangeError(f"a list sweep holds 1 to {LIST_MAX} levels, got {len(levels)}")
        delay = in_range(0, 10_000, "s")(delay_s, "delay_s")
        values = format_levels(levels).split(",")
        expected = len(levels) * (delay + self.nplc_setting / self.line_frequency_hz)
        with self.lock:
            for start in range(0, len(values), LIST_CHUNK):
                head = ":SOUR:LIST:VOLT" if start == 0 else ":SOUR:LIST:VOLT:APP"
                self.write(f"{head} {','.join(values[start : start + LIST_CHUNK])}", check=False)
            self.write(f':SOUR:SWE:VOLT:LIST 1, {delay:.10g}, 1, OFF, "{BUFFER}"', check=False)
            self._model = None  # the sweep replaced the trigger model
            self.write(":INIT", check=False)
            self.wait_idle(expected, expected * 3 + 5.0)
            command = f':TRAC:DATA? 1, {len(levels)}, "{BUFFER}", READ, SOUR, SOURSTAT'
            data = parse_floats(self.query(command), command, self.address)
            self.check_errors(":SOUR:SWE:VOLT:LIST")
            self.output_off()
            self._level = None
        if len(data) != 3 * len(levels):
            raise DataIntegrityError(
                f"{len(data)} values for {len(levels)} sweep points of (reading, source, status)",
                resource=self.address,
            )
        return [
            Reading(data[k], data[k + 1], bool(int(data[k + 2]) & SOURSTAT_LIMIT))
            for k in range(0, len(data), 3)
        ]

    # --- lifetime ------------------------------------------------------------------------------
    def reconnect(self, attempts: int = 3, delay_s: float = 0.5) -> None:
        """Reopen (same instrument) and forget cached state (the model must be re-sent)."""
        self._forget_state()
        super().reconnect(attempts, delay_s)
