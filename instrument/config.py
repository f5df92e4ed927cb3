"""The lab configuration: a TOML file naming each instrument, the crossbar and its limits.

Loaded into typed dataclasses. A wrong, unknown or missing key is a
:class:`ConfigError` that names the key, the file and the line. Nothing in a
configuration is ever evaluated as code. The documented example is
``instrument/default_lab.toml`` (also the embedded lab's base configuration).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

DEFAULT_LAB_TOML = Path(__file__).with_name("default_lab.toml")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(
        self,
        message: str,
        *,
        key: str = "",
        path: Path | str | None = None,
        line: int | None = None,
    ) -> None:
        self.key, self.path, self.line = key, path, line
        where = ""
        if path is not None:
            where = f"{path}" + (f":{line}" if line else "")
            where += ": "
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")


@dataclass(frozen=True)
class InstrumentConfig:
    """One instrument: which driver, where it is, how to talk to it."""

    driver: str
    """Driver name: cnea_board, keithley2450, keysight_b2900, crossbar_selector."""
    resource: str
    """VISA resource (``TCPIP::host::port::SOCKET``, ``GPIB0::24::INSTR``…) or pyserial URL."""
    timeout_s: float = 5.0
    """Reply timeout, s."""
    data_port: int = 0
    """Second TCP port for binary data (CNEA board); 0 when the instrument has none."""
    baud_rate: int = 115200
    """Serial line speed (serial instruments only), baud."""
    emulated: bool = False
    """True when this entry points at an emulator of the embedded lab."""


@dataclass(frozen=True)
class TechnologyConfig:
    """Safety limits and usable window of one memory technology (SI units)."""

    max_voltage_v: float
    """Largest |V| ever applied to a cell, V."""
    compliance_a: float
    """Current compliance during pulses and reads, A."""
    pulse_width_min_s: float
    """Shortest programming pulse, s."""
    pulse_width_max_s: float
    """Longest programming pulse, s."""
    read_voltage_v: float
    """Read bias, V (small enough not to disturb the cell)."""
    g_min_s: float
    """Lowest usable conductance, S."""
    g_max_s: float
    """Highest usable conductance, S."""
    levels: int = 32
    """Distinguishable conductance levels the device holds."""
    tolerance: float = 0.02
    """Write-verify tolerance, relative to the window (g_max - g_min)."""
    max_pulses: int = 200
    """Write-verify pulse budget per cell."""

    def check(self, name: str, path: Path | str | None, locate: _Locator) -> None:
        problems = []
        if self.max_voltage_v <= 0:
            problems.append(("max_voltage_v", "must be > 0 V"))
        if not 0 < self.read_voltage_v < self.max_voltage_v:
            problems.append(("read_voltage_v", "must be in (0, max_voltage_v) V"))
        if self.compliance_a <= 0:
            problems.append(("compliance_a", "must be > 0 A"))
        if not 0 < self.pulse_width_min_s <= self.pulse_width_max_s:
            problems.append(("pulse_width_min_s", "must be > 0 and <= pulse_width_max_s"))
        if not 0 <= self.g_min_s < self.g_max_s:
            problems.append(("g_min_s", "must be >= 0 and < g_max_s"))
        if self.levels < 2:
            problems.append(("levels", "must be >= 2"))
        if not 0 < self.tolerance < 0.5:
            problems.append(("tolerance", "must be in (0, 0.5)"))
        if self.max_pulses < 1:
            problems.append(("max_pulses", "must be >= 1"))
        if problems:
            key, message = problems[0]
            full = f"technology.{name}.{key}"
            raise ConfigError(message, key=full, path=path, line=locate(full))


@dataclass(frozen=True)
class CrossbarConfig:
    """The memory array on the rig."""

    rows: int = 64
    cols: int = 64
    architecture: Literal["1t1r", "passive"] = "1t1r"
    """1T1R (a transistor per cell: only the selected cell conducts) or passive (sneak paths)."""
    technology: Literal["rram", "pcm", "mram", "flash"] = "rram"
    bias_scheme: Literal["ground", "float", "v/2", "v/3"] = "v/2"
    """Bias of unselected lines during pulses on a passive array."""


@dataclass(frozen=True)
class LabInfo:
    """Who and where."""

    name: str = "brainpaste bench"
    operator: str = ""
    data_dir: str = "sessions"
    """Where session folders go (relative to the working directory)."""


@dataclass(frozen=True)
class LabConfig:
    """The whole lab configuration."""

    lab: LabInfo = field(default_factory=LabInfo)
    instruments: dict[str, InstrumentConfig] = field(default_factory=dict)
    crossbar: CrossbarConfig = field(default_factory=CrossbarConfig)
    technology: dict[str, TechnologyConfig] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Other top-level tables (acquisition, extraction, imprint…), validated by their owners
    with :func:`parse_section`."""
    source: str = ""
    """The file this came from ("" when built in code)."""
    text: str = ""
    """The TOML text (for line numbers in later validation)."""

    def limits(self, technology: str | None = None) -> TechnologyConfig:
        """The limits of ``technology`` (the crossbar's when not given)."""
        name = technology or self.crossbar.technology
        try:
            return self.technology[name]
        except KeyError:
            raise ConfigError(
                f"no [technology.{name}] table", key=f"technology.{name}", path=self.source or None
            ) from None

    def instrument(self, name: str) -> InstrumentConfig:
        """The instrument called ``name``, or a ConfigError saying which exist."""
        try:
            return self.instruments[name]
        except KeyError:
            raise ConfigError(
                f"no [instruments.{name}] table (have: {', '.join(self.instruments) or 'none'})",
                key=f"instruments.{name}",
                path=self.source or None,
            ) from None

    def with_instruments(self, instruments: dict[str, InstrumentConfig]) -> LabConfig:
        """A copy whose instruments are replaced/added by ``instruments``."""
        return dataclasses.replace(self, instruments={**self.instruments, **instruments})


class _Locator:
    """Finds the line of a dotted key in TOML text (tables, dotted tables, ``key =``)."""

    _TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            match = self._TABLE.match(line)
            if match:
                table = match.group(1).replace('"', "").replace(" ", "")
                self.lines.setdefault(table, number)
                continue
            match = self._KEY.match(line)
            if match:
                key = match.group(1).replace('"', "")
                self.lines.setdefault(f"{table}.{key}" if table else key, number)

    def __call__(self, dotted: str) -> int | None:
        parts = dotted.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line:
                return line
            parts.pop()
        return None


def _convert(tp: Any, value: Any, key: str, ctx: tuple[Path | str | None, _Locator]) -> Any:
    path, locate = ctx
    origin = get_origin(tp)

    def fail(message: str) -> ConfigError:
        return ConfigError(message, key=key, path=path, line=locate(key))

    if origin is Literal:
        if value not in get_args(tp):
            raise fail(f"{value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, key, ctx)
    if origin is dict:
        _, vtype = get_args(tp)
        if not isinstance(value, dict):
            raise fail(f"must be a table, got {type(value).__name__}")
        return {k: _convert(vtype, v, f"{key}.{k}", ctx) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"must be a table, got {type(value).__name__}")
        return _build(tp, value, key, ctx)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(f"must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(f"must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise fail(f"must be text, got {value!r}")
        return value
    if tp is Any:
        return value
    raise fail(f"unsupported configuration type {tp!r}")


def _build[T](
    cls: type[T], table: dict[str, Any], prefix: str, ctx: tuple[Path | str | None, _Locator]
) -> T:
    path, locate = ctx
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"unknown key (known here: {', '.join(sorted(fields))})",
            key=key,
            path=path,
            line=locate(key),
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in table:
            kwargs[name] = _convert(hints[name], table[name], key, ctx)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                "missing required key", key=key, path=path, line=locate(prefix) if prefix else None
            )
    return cls(**kwargs)


def parse_section[T](cls: type[T], config: LabConfig, name: str) -> T:
    """Validate the top-level table ``name`` of ``config`` into dataclass ``cls``."""
    return _build(
        cls, config.sections.get(name, {}), name, (config.source or None, _Locator(config.text))
    )


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, table by table, key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_TYPED = {"lab", "instruments", "crossbar", "technology"}


def loads(text: str, source: Path | str = "<string>", *, base: str | None = None) -> LabConfig:
    """Parse configuration text; ``base`` is TOML text whose tables the text overrides."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            f"not valid TOML: {exc}", path=source, line=int(match.group(1)) if match else None
        ) from None
    if base is not None:
        data = _merge(tomllib.loads(base), data)
    locate = _Locator(text)
    ctx = (source, locate)
    typed = {k: v for k, v in data.items() if k in _TYPED}
    sections = {k: v for k, v in data.items() if k not in _TYPED}
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise ConfigError(
                "unknown top-level key (expected a [table])",
                key=name,
                path=source,
                line=locate(name),
            )
    config = _build(LabConfig, typed, "", ctx)
    config = dataclasses.replace(config, sections=sections, source=str(source), text=text)
    for name, limits in config.technology.items():
        limits.check(name, source, locate)
    if config.crossbar.technology not in config.technology:
        raise ConfigError(
            f"no [technology.{config.crossbar.technology}] limits for the crossbar's technology",
            key="crossbar.technology",
            path=source,
            line=locate("crossbar.technology"),
        )
    return config


def load(path: Path | str | None = None) -> LabConfig:
    """Load a lab configuration file over the documented defaults (``default_lab.toml``).

    Tables in the file override the defaults key by key; ``None`` loads the defaults.
    """
    base = DEFAULT_LAB_TOML.read_text()
    if path is None:
        return loads(base, DEFAULT_LAB_TOML)
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    return loads(text, path, base=base)
