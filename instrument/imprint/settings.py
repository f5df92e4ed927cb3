"""The ``[imprint]`` table of the lab configuration: mapping choices and per-technology
write-verify parameters (SI units: V, s).

Validated with :func:`instrument.config.parse_section` (an unknown or mistyped key is a
:class:`~instrument.config.ConfigError` naming it). :func:`check_against_limits` refuses,
before the first pulse, any algorithm amplitude or width outside the technology's
``[technology.<name>]`` safety limits (:class:`~drivers.errors.SafetyLimitError` naming the
``imprint.*`` key) and any safety limit wider than the device tolerates
(``device_max_v``; a :class:`ConfigError` naming ``technology.<name>.max_voltage_v``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from drivers.errors import SafetyLimitError
from drivers.limits import SafetyLimits
from instrument.config import ConfigError, LabConfig, TechnologyConfig, parse_section

TECHNOLOGIES = ("rram", "pcm", "mram", "flash")


@dataclass(frozen=True)
class RRAMParams:
    """Adaptive-amplitude/width write-verify of bipolar RRAM (Alibart et al. 2012)."""

    set_start_v: float = 0.85
    """First SET amplitude of a cell, V (raised while a cell does not move)."""
    set_max_v: float = 1.6
    """Largest SET amplitude, V."""
    reset_start_v: float = 0.75
    """First RESET amplitude (magnitude; applied negative), V."""
    reset_max_v: float = 1.8
    """Largest RESET amplitude (magnitude), V."""
    step_v: float = 0.05
    """Amplitude step of the adaptation, V."""
    width_s: float = 1e-5
    """Starting pulse width, s."""
    width_min_s: float = 1e-6
    """Narrowest pulse (used after overshoots at the lowest amplitude), s."""
    width_max_s: float = 1e-4
    """Widest pulse (used when the largest amplitude barely moves a cell), s."""
    off_v: float = 1.8
    """RESET amplitude (magnitude) that drives unused cells to the off state, V."""
    off_width_s: float = 1e-5
    """Width of the off-state pulse, s."""
    device_max_v: float = 4.0
    """|V| the device survives; the technology's max_voltage_v may not exceed it, V."""


@dataclass(frozen=True)
class PCMParams:
    """Partial-SET staircase with a RESET restart on overshoot (unipolar PCM)."""

    set_min_v: float = 1.15
    """Smallest partial-SET amplitude, V (just above the crystallization threshold)."""
    set_max_v: float = 2.4
    """Largest partial-SET amplitude, V (below the melt/RESET threshold)."""
    step_v: float = 0.05
    """Amplitude step of the adaptation, V."""
    width_s: float = 1e-5
    """Partial-SET pulse width, s."""
    reset_v: float = 3.6
    """RESET (melt-quench) amplitude, V."""
    reset_width_s: float = 1e-6
    """RESET pulse width, s."""
    max_resets: int = 8
    """RESET restarts a cell may use before it is given up."""
    device_max_v: float = 6.0
    """|V| the device survives, V."""


@dataclass(frozen=True)
class MRAMParams:
    """Write-until-switched: a slow amplitude ramp, one junction at a time (STT-MRAM)."""

    start_v: float = 0.3
    """First amplitude of a ramp, V (positive: towards parallel, negative: antiparallel)."""
    step_v: float = 0.01
    """Ramp step per pulse, V."""
    max_v: float = 0.85
    """Largest ramp amplitude, V."""
    width_s: float = 1e-6
    """Pulse width, s."""
    off_v: float = 0.85
    """Amplitude (magnitude, applied negative) that drives unused cells antiparallel, V."""
    off_width_s: float = 1e-5
    """Width of the off-state pulse, s."""
    device_max_v: float = 1.2
    """|V| the tunnel barrier survives, V."""


@dataclass(frozen=True)
class FlashParams:
    """Block erase, then incremental-step-pulse programming (ISPP) of the threshold voltage."""

    erase_v: float = 18.0
    """Erase gate amplitude (magnitude; applied negative), V."""
    erase_width_s: float = 1e-3
    """Erase pulse width, s."""
    start_v: float = 14.0
    """Lowest ISPP gate amplitude, V (about where a typical erased cell starts to move)."""
    step_v: float = 0.25
    """Coarse ISPP step, V."""
    fine_step_v: float = 0.03
    """Smallest ISPP step (near the target), V."""
    max_v: float = 19.5
    """Largest ISPP amplitude, V."""
    width_s: float = 1e-4
    """ISPP pulse width, s (long enough for V_th to settle: each step then raises it by
    about the step)."""
    block_rows: int = 8
    """Word lines per erase block (a negative gate pulse erases the whole block)."""
    read_gate_v: float = 3.0
    """Word-line voltage of a read (the cell model that turns a reading into V_th), V."""
    slope_v: float = 0.2
    """Subthreshold slope of the cell model, V."""
    transconductance_s_per_v: float = 6e-6
    """Channel conductance per volt of gate overdrive of the cell model, S/V."""
    off_v: float = 19.5
    """Gate amplitude that drives unused cells to the off state (a high threshold), V."""
    off_width_s: float = 1e-4
    """Width of the off-state pulse, s."""
    device_max_v: float = 22.0
    """|V| the gate oxide survives, V."""


@dataclass(frozen=True)
class ImprintSettings:
    """The ``[imprint]`` table (documented in ``instrument/default_lab.toml``)."""

    layout: Literal["differential", "ei"] = "differential"
    """Signed weights as differential pairs of columns (G+ - G-) in one array, or as
    separate excitatory and inhibitory arrays."""
    ordering: Literal["id", "rcm"] = "id"
    """Neuron order on the lines: ascending unit id, or reverse Cuthill-McKee (fewer tiles
    holding synapses for a sparse map)."""
    weight_scale_v: float = 0.0
    """|weight| mapped to g_max, V; 0: the map's largest |weight|."""
    min_level: int = 1
    """A synapse never quantizes below this level (0 would make it vanish)."""
    measured_levels: bool = True
    """Devices with at most 8 levels (MRAM): targets are the level conductances the
    characterization read finds (1-D k-means), not the even grid."""
    characterize: bool = True
    """Read every cell of a tile before programming (stuck / out-of-window cells)."""
    probe: bool = True
    """Pulse out-of-window cells once during characterization: cells that do not move are stuck."""
    placement: bool = True
    """Permute rows and columns of a tile to put synapses away from bad cells."""
    pair_compensation: bool = True
    """Retarget the healthy partner of a differential pair whose other cell is stuck."""
    passive_read_bias: Literal["ground", "float", "v/2", "v/3"] = "ground"
    """Unselected lines during reads of a passive array (ground keeps sneak currents out)."""
    passive_pulse_bias: Literal["ground", "float", "v/2", "v/3"] = "v/3"
    """Unselected lines during pulses on a passive array (v/3: no cell sees more than V/3)."""
    verify_margin: float = 0.7
    """Write-verify stops within this fraction of the tolerance (read noise after the verify
    must not push a cell out of tolerance at the final read)."""
    final_reads: int = 4
    """Whole-array reads averaged for the final verification (read noise shrinks as 1/sqrt)."""
    train_cells: int = 2500
    """Most visits in one batched pulse+read train."""
    nplc: float = 0.01
    """Read integration time, power-line cycles."""
    functional_vectors: int = 16
    """Random input vectors of the functional check (weight x input)."""
    seed: int = 1
    """Seed of the functional check's input vectors."""
    rram: RRAMParams = field(default_factory=RRAMParams)
    pcm: PCMParams = field(default_factory=PCMParams)
    mram: MRAMParams = field(default_factory=MRAMParams)
    flash: FlashParams = field(default_factory=FlashParams)

    def params(self, technology: str) -> RRAMParams | PCMParams | MRAMParams | FlashParams:
        """The algorithm parameters of ``technology``."""
        if technology not in TECHNOLOGIES:
            raise ConfigError(f"unknown technology {technology!r} (known: {TECHNOLOGIES})")
        return getattr(self, technology)


def load_settings(config: LabConfig) -> ImprintSettings:
    """The validated ``[imprint]`` table of ``config`` (defaults for absent keys)."""
    settings = parse_section(ImprintSettings, config, "imprint")
    where = config.source or None
    if settings.min_level < 0:
        raise ConfigError("must be >= 0", key="imprint.min_level", path=where)
    if settings.weight_scale_v < 0:
        raise ConfigError("must be >= 0 V", key="imprint.weight_scale_v", path=where)
    if not 1 <= settings.train_cells <= 65536:
        raise ConfigError("must be in 1..65536", key="imprint.train_cells", path=where)
    if not 0.01 <= settings.nplc <= 10:
        raise ConfigError("must be in [0.01, 10] PLC", key="imprint.nplc", path=where)
    if not 1 <= settings.final_reads <= 64:
        raise ConfigError("must be in 1..64", key="imprint.final_reads", path=where)
    if not 0 < settings.verify_margin <= 1:
        raise ConfigError("must be in (0, 1]", key="imprint.verify_margin", path=where)
    if settings.functional_vectors < 0:
        raise ConfigError("must be >= 0", key="imprint.functional_vectors", path=where)
    return settings


def _pulses(p: object) -> list[tuple[str, float, str, float]]:
    """(amplitude key, |V|, width key, width s) of every pulse the algorithm may send."""
    if isinstance(p, RRAMParams):
        return [
            ("set_start_v", p.set_start_v, "width_s", p.width_s),
            ("set_max_v", p.set_max_v, "width_min_s", p.width_min_s),
            ("reset_start_v", p.reset_start_v, "width_max_s", p.width_max_s),
            ("reset_max_v", p.reset_max_v, "width_s", p.width_s),
            ("off_v", p.off_v, "off_width_s", p.off_width_s),
        ]
    if isinstance(p, PCMParams):
        return [
            ("set_min_v", p.set_min_v, "width_s", p.width_s),
            ("set_max_v", p.set_max_v, "width_s", p.width_s),
            ("reset_v", p.reset_v, "reset_width_s", p.reset_width_s),
        ]
    if isinstance(p, MRAMParams):
        return [
            ("start_v", p.start_v, "width_s", p.width_s),
            ("max_v", p.max_v, "width_s", p.width_s),
            ("off_v", p.off_v, "off_width_s", p.off_width_s),
        ]
    if isinstance(p, FlashParams):
        return [
            ("erase_v", p.erase_v, "erase_width_s", p.erase_width_s),
            ("start_v", p.start_v, "width_s", p.width_s),
            ("max_v", p.max_v, "width_s", p.width_s),
            ("off_v", p.off_v, "off_width_s", p.off_width_s),
        ]
    raise ConfigError(f"no write-verify parameters of type {type(p).__name__}")


def check_against_limits(
    settings: ImprintSettings,
    technology: str,
    limits: SafetyLimits,
    tech: TechnologyConfig,
    *,
    source: str | None = None,
) -> None:
    """Refuse (before anything is sent) a configuration whose pulses break the safety limits,
    or whose safety limit is wider than the device survives."""
    p = settings.params(technology)
    numbers = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}  # type: ignore[arg-type]
    for name, value in numbers.items():
        if isinstance(value, float | int) and not value > 0 and name != "max_resets":
            raise ConfigError("must be > 0", key=f"imprint.{technology}.{name}", path=source)
    if limits.max_voltage_v > p.device_max_v:
        raise ConfigError(
            f"{limits.max_voltage_v:g} V is above what a {technology} device survives "
            f"(imprint.{technology}.device_max_v = {p.device_max_v:g} V); nothing was sent",
            key=f"technology.{technology}.max_voltage_v",
            path=source,
        )
    for volt_key, volts, width_key, width in _pulses(p):
        limits.check_voltage(volts, f"imprint.{technology}.{volt_key}")
        limits.check_width(width, f"imprint.{technology}.{width_key}")
    if isinstance(p, RRAMParams):
        if not p.width_min_s <= p.width_s <= p.width_max_s:
            raise ConfigError(
                "need width_min_s <= width_s <= width_max_s",
                key=f"imprint.{technology}.width_s",
                path=source,
            )
        if p.set_start_v > p.set_max_v or p.reset_start_v > p.reset_max_v:
            raise ConfigError(
                "start amplitudes must not exceed the maxima",
                key=f"imprint.{technology}.set_start_v",
                path=source,
            )
    if isinstance(p, PCMParams) and not p.set_min_v < p.set_max_v < p.reset_v:
        raise ConfigError(
            "need set_min_v < set_max_v < reset_v", key="imprint.pcm.set_max_v", path=source
        )
    if isinstance(p, FlashParams) and not p.start_v <= p.max_v:
        raise ConfigError("need start_v <= max_v", key="imprint.flash.start_v", path=source)
    if tech.max_pulses < 1:
        raise SafetyLimitError(f"technology.{technology}.max_pulses must be >= 1")
