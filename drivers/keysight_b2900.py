"""Keysight B2900-series SMU (B2901A/B2902A channel 1) in pulsed list mode, behind :class:`SMU`.

The second SMU model: proof that the rig does not depend on one vendor. A visit
train is a pulsed list sweep whose points are triggered by the selector's ready
line (``:TRIG:ALL:SOUR EXT2``) and which pulses ``EXT1`` after each acquisition
(``:TRIG:ACQ:TOUT``) so the selector steps::

    :SOUR:FUNC:SHAP PULS; :SOUR:VOLT 0 (base); :SOUR:VOLT:MODE LIST
    :SOUR:LIST:VOLT p1,vr,p2,vr,...       (pulse, read per visit; 500 per command)
    :SOUR:PULS:DEL 0; :SOUR:PULS:WIDT <w>; :TRIG:ACQ:DEL <w - aperture>
    :TRIG:ALL:SOUR EXT2; :TRIG:ALL:COUN <points>; :TRIG:ACQ:TOUT ON
    :TRIG:ACQ:TOUT:SIGN EXT1; :OUTP ON; :INIT (@1)
    :STAT:OPER:COND? (after the train's own time, until bits 0 and 3: idle)
    :FETC:ARR:CURR? (@1); :FETC:ARR:STAT? (@1)

With pulses and reads, each visit is two points (two trigger-out pulses: the
selector is told to step on every second one). Every point is a pulse of the same
width, so a read point needs the width to hold the integration aperture.
Compliance: status word bits 1-2 (value 2/4/6).
"""

from __future__ import annotations

from drivers.errors import DataIntegrityError, MalformedReply, OutOfRangeError
from drivers.limits import SafetyLimits
from drivers.scpi import Control, Measurement, SCPIInstrument, parse_bool, parse_floats
from drivers.smu import SMU, CurrentLimit, Reading, SourceLevel, VisitPlan, format_levels
from drivers.transport import Transport
from drivers.validators import in_range, one_of

LIST_MAX = 2500
LIST_CHUNK = 500
PULSE_WIDTH_MIN_S = 50e-6
STATUS_COMPLIANCE = 0b110
CHANNEL = "(@1)"
OPER_IDLE = 0b1001
"""Operation condition bits 0 and 3: channel 1 transient idle and acquire idle."""


class KeysightB2900(SCPIInstrument, SMU):
    """Keysight B2901A/B2902A channel 1: voltage source, current measure, pulsed list trains."""

    source_voltage = SourceLevel(
        ":SOUR:VOLT?",
        ":SOUR:VOLT {}",
        "Source (immediate, pulse base) level, V (±210 V; within the safety limits).",
        validator=in_range(-210, 210, "V"),
        units="V",
    )
    current_limit = CurrentLimit(
        ":SENS:CURR:PROT?",
        ":SENS:CURR:PROT {}",
        "Current compliance, A (1 nA to 3.03 A; at most the safety compliance when configured).",
        validator=in_range(1e-9, 3.03, "A"),
        units="A",
    )
    limit_tripped = Measurement(
        ":SENS:CURR:PROT:TRIP?", "Whether the compliance was reached.", parse=parse_bool
    )
    nplc = Control(
        ":SENS:CURR:NPLC?",
        ":SENS:CURR:NPLC {}",
        "Current integration time, power-line cycles (4e-4 to 100).",
        validator=in_range(4e-4, 100),
    )
    pulse_width = Control(
        ":SOUR:PULS:WIDT?",
        ":SOUR:PULS:WIDT {}",
        "Pulse width, s (50 us to 100 ks).",
        validator=in_range(PULSE_WIDTH_MIN_S, 1e5, "s"),
        units="s",
    )
    output = Control(
        ":OUTP?", ":OUTP {}", "Output on.", parse=parse_bool, validator=one_of([True, False])
    )
    line_frequency = Measurement(":SYST:LFR?", "Power-line frequency, Hz.", units="Hz")

    def __init__(self, transport: Transport, *, check_errors: bool = True) -> None:
        super().__init__(transport, check_errors=check_errors)
        self.limits: SafetyLimits | None = None
        self.nplc_setting = 1.0
        self.line_frequency_hz = 50.0
        self._forget_state()

    def _forget_state(self) -> None:
        self._dc: tuple[float, bool] | None = None  # (level, output on) in DC fixed mode

    def configure(self, limits: SafetyLimits, *, nplc: float = 0.01) -> None:
        """``*RST``, voltage source / current measure at the safety compliance, ``nplc``,
        auto-ranging, output off at 0 V, EXT1 trigger out and EXT2 trigger in."""
        compliance = limits.check_compliance(limits.compliance_a)
        nplc = in_range(4e-4, 100)(nplc, "nplc")
        with self.lock:
            self._forget_state()
            self.limits = limits
            for command in (
                "*RST",
                ":SOUR:FUNC:MODE VOLT",
                ':SENS:FUNC "CURR"',
                f":SENS:CURR:PROT {compliance:.10g}",
                ":SENS:CURR:RANG:AUTO ON",
                f":SENS:CURR:NPLC {nplc:.10g}",
                ":SOUR:VOLT 0",
                f":SOUR:DIG:EXT{self.trigger_out_line}:FUNC TOUT",
                f":SOUR:DIG:EXT{self.ready_in_line}:FUNC TINP",
            ):
                self.write(command, check=False)
            self.check_errors("configure")
            self.line_frequency_hz = self.query_float(":SYST:LFR?")
            self.nplc_setting = nplc

    def read_current(self, voltage_v: float) -> Reading:
        limits = self.require_limits()
        level = limits.check_voltage(voltage_v, "read voltage")
        with self.lock:
            if self._dc != (level, True):
                for command in (
                    ":SOUR:FUNC:SHAP DC",
                    ":SOUR:VOLT:MODE FIX",
                    f":SOUR:VOLT {level:.10g}",
                    ":OUTP ON",
                ):
                    self.write(command, check=False)
                self.check_errors("DC read set-up")
                self._dc = (level, True)
            current = self.query_float(f":MEAS:CURR? {CHANNEL}")
            tripped = parse_bool(self.query(":SENS:CURR:PROT:TRIP?"))
        return Reading(current, level, tripped)

    def output_off(self) -> None:
        with self.lock:
            self.write(":OUTP OFF")  # then the error queue: it has been executed
            self._dc = None

    def _points_per_visit(self, plan: VisitPlan) -> int:
        return int(plan.pulses) + int(plan.reads)

    def triggers_per_visit(self, plan: VisitPlan) -> int:
        return self._points_per_visit(plan)

    def max_visits(self, plan: VisitPlan) -> int:
        return LIST_MAX // self._points_per_visit(plan)

    def _width(self, plan: VisitPlan) -> float:
        aperture = self.nplc_setting / self.line_frequency_hz
        width = plan.pulse_width_s if plan.pulses else aperture
        return max(width, PULSE_WIDTH_MIN_S, aperture if plan.reads else 0.0)

    def train_time_s(self, plan: VisitPlan) -> float:
        return plan.visits * self._points_per_visit(plan) * self._width(plan)

    def prepare_visits(self, plan: VisitPlan) -> None:
        limits = self.require_limits()
        plan.check(limits)
        if plan.visits > self.max_visits(plan):
            raise OutOfRangeError(
                f"{plan.visits} visits; one B2900 train holds at most {self.max_visits(plan)}"
            )
        aperture = self.nplc_setting / self.line_frequency_hz
        if plan.pulses:
            if plan.pulse_width_s < PULSE_WIDTH_MIN_S:
                raise OutOfRangeError(
                    f"pulse width {plan.pulse_width_s:g} s is below the B2900's "
                    f"{PULSE_WIDTH_MIN_S:g} s; nothing was sent"
                )
            if plan.reads and plan.pulse_width_s < aperture:
                raise OutOfRangeError(
                    f"pulse width {plan.pulse_width_s:g} s is shorter than the {aperture:g} s "
                    "aperture a read point needs on the B2900 (every point has the same width); "
                    "lower NPLC or widen the pulse"
                )
        width = self._width(plan)
        levels: list[float] = []
        for k in range(plan.visits):
            if plan.pulse_levels_v is not None:
                levels.append(plan.pulse_levels_v[k])
            if plan.read_voltage_v is not None:
                levels.append(plan.read_voltage_v)
        values = format_levels(levels).split(",")
        with self.lock:
            self._dc = None
            for command in (":SOUR:FUNC:SHAP PULS", ":SOUR:VOLT 0", ":SOUR:VOLT:MODE LIST"):
                self.write(command, check=False)
            for start in range(0, len(values), LIST_CHUNK):
                head = ":SOUR:LIST:VOLT" if start == 0 else ":SOUR:LIST:VOLT:APP"
                self.write(f"{head} {','.join(values[start : start + LIST_CHUNK])}", check=False)
            for command in (
                ":SOUR:PULS:DEL 0",
                f":SOUR:PULS:WIDT {width:.10g}",
                f":TRIG:ACQ:DEL {max(width - aperture, 0.0):.10g}",
                f":TRIG:ALL:SOUR EXT{self.ready_in_line}",
                f":TRIG:ALL:COUN {len(levels)}",
                ":TRIG:ACQ:TOUT ON",
                f":TRIG:ACQ:TOUT:SIGN EXT{self.trigger_out_line}",
                ":OUTP ON",
            ):
                self.write(command, check=False)

    def start_visits(self) -> None:
        self.write(f":INIT {CHANNEL}", check=False)

    def finish_visits(self, plan: VisitPlan, timeout_s: float) -> list[Reading]:
        with self.lock:
            self.wait_idle(self.train_time_s(plan), timeout_s)
            readings = self._fetch(plan)
            self.check_errors(":INIT (pulsed list)")
            self._finish()
            return readings

    def _finish(self) -> None:
        self.write(":OUTP OFF", check=False)

    def visits_running(self) -> bool:
        """From the operation condition register: channel 1 transient idle (bit 0) and
        acquire idle (bit 3) both set means nothing runs."""
        reply = self.query(":STAT:OPER:COND?")
        try:
            condition = int(reply.strip())
        except ValueError:
            raise MalformedReply(
                "not an integer register value", reply=reply, command=":STAT:OPER:COND?"
            ) from None
        return (condition & OPER_IDLE) != OPER_IDLE

    def fetch_visits(self, plan: VisitPlan) -> list[Reading]:
        self.wait_idle(self.train_time_s(plan), self.train_time_s(plan) * 3 + 5.0)
        readings = self._fetch(plan)
        self._finish()
        return readings

    def _fetch(self, plan: VisitPlan) -> list[Reading]:
        if not plan.reads:
            return []
        points = plan.visits * self._points_per_visit(plan)
        current = parse_floats(self.query(f":FETC:ARR:CURR? {CHANNEL}"), ":FETC:ARR:CURR?")
        status = parse_floats(self.query(f":FETC:ARR:STAT? {CHANNEL}"), ":FETC:ARR:STAT?")
        if len(current) != points or len(status) != points:
            raise DataIntegrityError(
                f"{len(current)} currents and {len(status)} status words for {points} points: "
                "the train did not complete",
                resource=self.address,
            )
        step = self._points_per_visit(plan)
        assert plan.read_voltage_v is not None
        out = []
        for k in range(plan.visits):
            index = k * step + step - 1
            if status[index] != int(status[index]):
                raise MalformedReply("status word not an integer", reply=str(status[index]))
            limited = bool(int(status[index]) & STATUS_COMPLIANCE)
            out.append(Reading(current[index], plan.read_voltage_v, limited))
        return out

    def abort_visits(self) -> None:
        self.write(f":ABOR {CHANNEL}", check=False)

    def reconnect(self, attempts: int = 3, delay_s: float = 0.5) -> None:
        """Reopen (same instrument) and forget cached state."""
        self._forget_state()
        super().reconnect(attempts, delay_s)
