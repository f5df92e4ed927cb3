"""The emulated programming rig: crossbar model, selector and SMU emulators, the trigger link.

Wiring, as on the bench: the SMU's digital line 1 (trigger out) drives the
selector's trigger input; the selector's ready output drives the SMU's line 2
(trigger in); the SMU's HI/LO go through the selector to the array (the selector
is the SMU's :class:`~hil_sim.smu_frontend.Load`).

:func:`start_rig` is the lab builder: instrument ``"smu"`` on loopback TCP
(``TCPIP::127.0.0.1::<port>::SOCKET``) and ``"selector"`` on a pseudo-terminal
(stable link ``<lab workdir>/ttyXBAR0``, also served on TCP for ``socket://``).
Options: ``lab.settings.options["rig"]`` (see :class:`RigOptions`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hil_sim.crossbar import CrossbarArray
from hil_sim.devices import TECHNOLOGIES, make_devices
from hil_sim.line_server import PtyLineServer, TcpLineServer
from hil_sim.selector import SelectorDevice
from hil_sim.smu_frontend import HiddenErrors, Timing
from hil_sim.smu_keithley2450 import Keithley2450Device
from hil_sim.smu_keysight_b2900 import KeysightB2900Device

if TYPE_CHECKING:
    from hil_sim.lab import EmulatedLab

SMU_MODELS: dict[str, type[Keithley2450Device] | type[KeysightB2900Device]] = {
    "keithley2450": Keithley2450Device,
    "keysight_b2900": KeysightB2900Device,
}
"""SMU model name (= its driver's name in the lab configuration) → emulator."""
SMU_SERIALS: dict[str, Callable[[int], str]] = {
    "keithley2450": lambda seed: f"045{12344 + seed:05d}",
    "keysight_b2900": lambda seed: f"MY5114{122 + seed:04d}",
}
"""Serial number of the emulated SMU of a rig seeded ``seed`` (seed 1: the model's default)."""
TRIGGER_OUT_LINE = 1
READY_IN_LINE = 2


@dataclass(frozen=True)
class RigOptions:
    """How the emulated rig is built (``[rig]`` options of the emulated lab)."""

    rows: int = 64
    cols: int = 64
    architecture: str = "1t1r"
    technology: str = "rram"
    stuck_rate: float = 0.01
    smu_model: str = "keithley2450"
    pulse_time_s: float | None = None
    """Replaces width + settling as the time one pulse takes, s."""
    reading_time_s: float | None = None
    """Replaces settling + NPLC / line frequency as the time one reading takes, s."""
    settle_s: float = 50e-6
    """Source settling per level change, s."""
    line_frequency_hz: float = 50.0
    line_resistance_ohm: float = 1.0
    selector_settle_s: float = 20e-6
    count: int = 1
    """Rigs to start (each its own array, SMU and selector): instruments ``smu``/``selector``,
    then ``smu2``/``selector2``…; selector pty links ``ttyXBAR0``, ``ttyXBAR1``…"""

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"rig rows and cols must be >= 1, got {self.rows}x{self.cols}")
        if self.architecture not in ("1t1r", "passive"):
            raise ValueError(f"rig architecture {self.architecture!r}: '1t1r' or 'passive'")
        if self.technology not in TECHNOLOGIES:
            raise ValueError(f"rig technology {self.technology!r}: one of {list(TECHNOLOGIES)}")
        if self.smu_model not in SMU_MODELS:
            raise ValueError(f"rig smu_model {self.smu_model!r}: one of {list(SMU_MODELS)}")
        if not 0 <= self.stuck_rate <= 1:
            raise ValueError(f"rig stuck_rate {self.stuck_rate} outside [0, 1]")
        if not 1 <= self.count <= 64:
            raise ValueError(f"rig count {self.count} outside 1..64")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> RigOptions:
        """Options from a mapping; an unknown key is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown rig option(s) {unknown} (known: {sorted(known)})")
        return cls(**dict(options))


class EmulatedRig:
    """Crossbar, selector and SMU emulators wired together (no servers: see :func:`start_rig`)."""

    def __init__(
        self,
        options: RigOptions | None = None,
        *,
        seed: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options = options or RigOptions()
        streams = np.random.SeedSequence([seed, 3]).spawn(5)
        rng_dev, rng_xbar, rng_sel, rng_smu, rng_err = (np.random.default_rng(s) for s in streams)
        devices = make_devices(
            options.technology, (options.rows, options.cols), rng_dev, stuck_rate=options.stuck_rate
        )
        self.crossbar = CrossbarArray(
            devices,
            architecture=options.architecture,  # type: ignore[arg-type]
            line_resistance_ohm=options.line_resistance_ohm,
            rng=rng_xbar,
            clock=clock,
        )
        # serial numbers follow the seed (seed 1 keeps the models' defaults): every emulated
        # instrument is a different instrument, and calibration records are kept per serial
        self.selector = SelectorDevice(
            self.crossbar, rng=rng_sel, settle_s=options.selector_settle_s, serial=f"SEL{seed:04d}"
        )
        timing = Timing(
            settle_s=options.settle_s,
            line_frequency_hz=options.line_frequency_hz,
            pulse_time_s=options.pulse_time_s,
            reading_time_s=options.reading_time_s,
        )
        self.smu = SMU_MODELS[options.smu_model](
            load=self.selector,
            rng=rng_smu,
            errors=HiddenErrors.draw(rng_err),
            timing=timing,
            serial=SMU_SERIALS[options.smu_model](seed),
        )
        # the trigger link: SMU trigger-out → selector; selector ready → SMU trigger-in
        self.smu.lines.wire_output(TRIGGER_OUT_LINE, self.selector.trigger_in)
        smu = self.smu
        self.selector.ready_out = lambda delay_s: smu.digital_input(READY_IN_LINE, delay_s)

    def close(self) -> None:
        """Stop any running SMU sequence."""
        self.smu.close()


def rig_names(number: int) -> tuple[str, str]:
    """Instrument names of rig ``number`` (0-based): smu/selector, smu2/selector2, …"""
    return ("smu", "selector") if number == 0 else (f"smu{number + 1}", f"selector{number + 1}")


def start_rig(lab: EmulatedLab) -> None:
    """Lab builder: ``count`` rigs, each an SMU on TCP and a selector on a pty (and TCP),
    wired to its own crossbar (rig k seeded with the lab's seed + k)."""
    options = RigOptions.from_mapping(lab.settings.options.get("rig", {}))
    for number in range(options.count):
        _start_one_rig(lab, options, number)


def _start_one_rig(lab: EmulatedLab, options: RigOptions, number: int) -> None:
    from hil_sim.lab import EmulatedInstrument  # the lab imports this module to register us

    smu_name, selector_name = rig_names(number)
    suffix = "" if number == 0 else str(number + 1)
    rig = EmulatedRig(options, seed=lab.settings.seed + number)
    lab.on_stop(rig.close)
    smu_server = TcpLineServer(rig.smu, name=f"rig-smu{suffix}")
    try:
        selector_pty = PtyLineServer(
            rig.selector,
            name=f"rig-selector{suffix}",
            link_path=str(lab.workdir / f"ttyXBAR{number}"),
        )
    except BaseException:
        smu_server.stop()
        raise
    try:
        selector_tcp = TcpLineServer(rig.selector, name=f"rig-selector{suffix}-tcp")
    except BaseException:
        smu_server.stop()
        selector_pty.stop()
        raise
    lab.add(
        EmulatedInstrument(
            smu_name, options.smu_model, smu_server.visa_resource, [smu_server], model=rig.crossbar
        )
    )
    lab.add(
        EmulatedInstrument(
            selector_name,
            "crossbar_selector",
            selector_pty.port_path,
            [selector_pty, selector_tcp],
            model=rig.crossbar,
        )
    )
