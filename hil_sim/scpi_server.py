"""An SCPI command interpreter for emulated instruments.

An emulated instrument subclasses :class:`ScpiDevice` and declares its commands::

    class Dmm(ScpiDevice):
        identity = ("ACME", "DMM1", "0001", "1.0")

        @scpi(":SENSe:VOLTage:NPLCycles")
        def set_nplc(self, call: Call) -> None:
            self.nplc = call.float(0, low=0.01, high=10)

        @scpi(":SENSe:VOLTage:NPLCycles?")
        def get_nplc(self, call: Call) -> str:
            return fmt(self.nplc)

Patterns use SCPI notation: the upper-case part of a mnemonic is its short form,
``[...]`` marks optional nodes, ``#`` after a mnemonic accepts a numeric suffix
(``OUTPut#`` matches ``OUTP``, ``OUTP1``, ``OUTPUT2``). The interpreter accepts
long and short forms in any case, an optional leading colon, ``;``-chained
commands with SCPI's relative-path rule, queries chained in one message
(answers joined by ``;``), the IEEE 488.2 common commands and a standard error
queue (``:SYSTem:ERRor[:NEXT]?``). Serve it with a :mod:`hil_sim.line_server`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SCPI_ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -131: "Invalid suffix",
    -141: "Invalid character data",
    -150: "String data error",
    -200: "Execution error",
    -220: "Parameter error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -225: "Out of memory",
    -230: "Data corrupt or stale",
    -240: "Hardware error",
    -241: "Hardware missing",
    -300: "Device-specific error",
    -310: "System error",
    -350: "Queue overflow",
    -363: "Input buffer overrun",
    -400: "Query error",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
}

# *ESR? bits
ESR_OPC, ESR_QYE, ESR_DDE, ESR_EXE, ESR_CME = 1, 4, 8, 16, 32


class ScpiError(Exception):
    """Raised by a command handler; becomes an entry in the error queue."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code},{SCPI_ERRORS.get(code, 'Device-specific error')}: {detail}")

    @property
    def entry(self) -> str:
        """The error-queue text: ``-222,"Data out of range; detail"``."""
        message = SCPI_ERRORS.get(self.code, "Device-specific error")
        if self.detail:
            message += "; " + self.detail.replace('"', "'")
        return f'{self.code},"{message}"'


def fmt(value: float | int | bool) -> str:
    """A number as instruments print it (``+1.000000E-03``); booleans as 1/0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return f"{value:+.6E}"


# --- command patterns -------------------------------------------------------------


@dataclass(frozen=True)
class Mnemonic:
    """One node of a command header: long and short form, numeric suffix allowed."""

    long: str
    short: str
    suffix: bool

    @classmethod
    def parse(cls, text: str) -> Mnemonic:
        suffix = text.endswith("#")
        text = text.rstrip("#")
        short = "".join(c for c in text if not c.islower()) or text
        return cls(text.upper(), short.upper(), suffix)

    def match(self, token: str) -> int | None:
        """The numeric suffix (1 if none) when ``token`` names this node, else None."""
        if token in (self.long, self.short):
            return 1
        if self.suffix:
            head = token.rstrip("0123456789")
            if head in (self.long, self.short) and head != token:
                return int(token[len(head) :])
        return None


_PATTERN_TOKEN = re.compile(r"\[|\]|:?\*?[A-Za-z][A-Za-z0-9_]*#?|\?")


def expand_pattern(pattern: str) -> tuple[list[list[Mnemonic]], bool]:
    """Every concrete node path of ``pattern`` (optional parts in or out); is it a query."""
    tokens = _PATTERN_TOKEN.findall(pattern.replace(" ", ""))
    if "".join(tokens) != pattern.replace(" ", ""):
        raise ValueError(f"cannot parse SCPI pattern {pattern!r}")
    is_query = bool(tokens) and tokens[-1] == "?"
    if is_query:
        tokens = tokens[:-1]

    def parse_seq(pos: int) -> tuple[list[list[Mnemonic]], int]:
        variants: list[list[Mnemonic]] = [[]]
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == "]":
                return variants, pos + 1
            if tok == "[":
                inner, pos = parse_seq(pos + 1)
                variants = [v + i for v in variants for i in [[], *inner]]
                continue
            node = Mnemonic.parse(tok.lstrip(":"))
            variants = [[*v, node] for v in variants]
            pos += 1
        return variants, pos

    variants, _ = parse_seq(0)
    unique = {tuple(v): v for v in variants if v}
    return list(unique.values()), is_query


@dataclass
class _Node:
    children: list[tuple[Mnemonic, _Node]] = field(default_factory=list)
    setter: Callable[..., Any] | None = None
    getter: Callable[..., Any] | None = None

    def child(self, mnemonic: Mnemonic) -> _Node:
        for m, node in self.children:
            if m == mnemonic:
                return node
        node = _Node()
        self.children.append((mnemonic, node))
        return node


class CommandTree:
    """SCPI headers → handlers, matched node by node in long or short form."""

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, pattern: str, handler: Callable[..., Any]) -> None:
        """Register ``handler`` for every concrete form of ``pattern``."""
        variants, is_query = expand_pattern(pattern)
        for path in variants:
            node = self.root
            for mnemonic in path:
                node = node.child(mnemonic)
            if is_query:
                node.getter = handler
            else:
                node.setter = handler

    def lookup(self, tokens: Sequence[str]) -> tuple[_Node, list[int]] | None:
        """The node named by ``tokens`` (upper case) and the numeric suffixes, or None."""

        def walk(node: _Node, i: int, suffixes: list[int]) -> tuple[_Node, list[int]] | None:
            if i == len(tokens):
                return (node, suffixes) if (node.setter or node.getter) else None
            for mnemonic, child in node.children:
                suffix = mnemonic.match(tokens[i])
                if suffix is not None:
                    found = walk(child, i + 1, [*suffixes, suffix])
                    if found:
                        return found
            return None

        return walk(self.root, 0, [])


# --- one parsed command -------------------------------------------------------------

_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")
_SI_PREFIX = {"": 1.0, "P": 1e-12, "N": 1e-9, "U": 1e-6, "M": 1e-3, "K": 1e3, "MA": 1e6, "G": 1e9}


@dataclass
class Call:
    """One command as a handler sees it: header, arguments, numeric suffixes."""

    header: str
    args: list[str]
    suffixes: list[int]
    device: ScpiDevice

    def expect(self, low: int, high: int | None = None) -> None:
        """Require between ``low`` and ``high`` arguments (-109 / -108 otherwise)."""
        high = low if high is None else high
        if len(self.args) < low:
            raise ScpiError(-109, f"{self.header} needs {low} parameter(s)")
        if len(self.args) > high:
            raise ScpiError(-108, f"{self.header} takes at most {high} parameter(s)")

    def arg(self, index: int) -> str:
        """Argument ``index`` as text (-109 when missing)."""
        if index >= len(self.args):
            raise ScpiError(-109, f"{self.header} needs parameter {index + 1}")
        return self.args[index]

    def float(
        self,
        index: int,
        *,
        low: float = -math.inf,
        high: float = math.inf,
        default: float | None = None,
        units: str = "",
    ) -> float:
        """A numeric argument, with MINimum/MAXimum/DEFault and SI prefixes, range-checked."""
        text = self.arg(index).strip().upper()
        if text in ("MIN", "MINIMUM"):
            return float(low)
        if text in ("MAX", "MAXIMUM"):
            return float(high)
        if text in ("DEF", "DEFAULT"):
            if default is None:
                raise ScpiError(-224, f"{self.header} has no default")
            return default
        match = _NUMBER.match(text)
        if not match:
            raise ScpiError(-104, f"{self.arg(index)!r} is not a number")
        value = float(match.group(1))
        suffix = match.group(2)
        if suffix:
            unit = units.upper()
            if unit and suffix.endswith(unit):
                suffix = suffix[: -len(unit)]
            if suffix not in _SI_PREFIX:
                raise ScpiError(-131, f"suffix {match.group(2)!r}")
            value *= _SI_PREFIX[suffix]
        if not low <= value <= high:
            raise ScpiError(-222, f"{value:g} not in [{low:g}, {high:g}] {units}".strip())
        return value

    def int(self, index: int, *, low: int = -(2**31), high: int = 2**31 - 1) -> int:
        """An integer argument, range-checked."""
        value = self.float(index, low=low, high=high)
        if value != int(value):
            raise ScpiError(-104, f"{self.arg(index)!r} is not an integer")
        return int(value)

    def bool(self, index: int) -> bool:
        """ON/OFF/1/0."""
        text = self.arg(index).strip().upper()
        if text in ("1", "ON"):
            return True
        if text in ("0", "OFF"):
            return False
        raise ScpiError(-224, f"{self.arg(index)!r} is not ON/OFF/1/0")

    def choice(self, index: int, options: Iterable[str]) -> str:
        """One of ``options`` given in SCPI notation (``VOLTage``); returns the long form."""
        text = self.arg(index).strip().upper()
        for option in options:
            if Mnemonic.parse(option).match(text) is not None:
                return option.upper()
        raise ScpiError(-224, f"{self.arg(index)!r} is not one of {list(options)}")

    def string(self, index: int) -> str:
        """A quoted string argument (quotes removed)."""
        text = self.arg(index).strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            return text[1:-1]
        raise ScpiError(-150, f"{text!r} is not a quoted string")

    def floats(
        self, *, low: float = -math.inf, high: float = math.inf, units: str = ""
    ) -> list[float]:
        """Every argument as a number (a list parameter)."""
        if not self.args:
            raise ScpiError(-109, f"{self.header} needs a list of numbers")
        return [self.float(i, low=low, high=high, units=units) for i in range(len(self.args))]


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split at ``separator`` except inside quotes or parentheses."""
    parts, current, quote, depth = [], [], "", 0
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quote:
        raise ScpiError(-150, "unterminated string")
    parts.append("".join(current))
    return parts


def scpi(pattern: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a method as the handler of ``pattern`` (a query when it ends with ``?``)."""

    def register(method: Callable[..., Any]) -> Callable[..., Any]:
        patterns = [*getattr(method, "__scpi_patterns__", []), pattern]
        method.__scpi_patterns__ = patterns  # type: ignore[attr-defined]
        return method

    return register


class ErrorQueue:
    """The instrument's error queue: first in, first out; overflow keeps -350."""

    def __init__(self, capacity: int = 10) -> None:
        self.capacity = capacity
        self._entries: deque[str] = deque()

    def push(self, error: ScpiError) -> None:
        if len(self._entries) >= self.capacity:
            self._entries[-1] = ScpiError(-350).entry
            return
        self._entries.append(error.entry)

    def pop(self) -> str:
        return self._entries.popleft() if self._entries else '0,"No error"'

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ScpiDevice:
    """An emulated SCPI instrument: command tree, error queue, status registers.

    Subclasses set :attr:`identity`, implement :meth:`reset`, and declare handlers
    with :func:`scpi`. :meth:`handle` is what a line server calls, one message at a time.
    """

    identity: tuple[str, str, str, str] = ("brainpaste", "EMULATOR", "0", "0.1")

    def __init__(self, *, error_queue_capacity: int = 10) -> None:
        self.lock = threading.RLock()
        self.errors = ErrorQueue(error_queue_capacity)
        self.esr = 0
        self.commands_seen = 0
        self.tree = CommandTree()
        self._common: dict[str, Callable[[Call], str | None]] = {
            "*IDN?": lambda call: ",".join(self.identity),
            "*RST": lambda call: self.reset(),
            "*CLS": lambda call: self._cls(),
            "*OPC?": lambda call: "1",
            "*OPC": lambda call: self._set_opc(),
            "*WAI": lambda call: None,
            "*ESR?": lambda call: self._read_esr(),
            "*STB?": lambda call: str(self._stb()),
            "*TST?": lambda call: "0",
            "*ESE": lambda call: None,
            "*ESE?": lambda call: "0",
            "*SRE": lambda call: None,
            "*SRE?": lambda call: "0",
        }
        self.tree.add(":SYSTem:ERRor[:NEXT]?", lambda call: self.errors.pop())
        self.tree.add(":SYSTem:ERRor:COUNt?", lambda call: str(len(self.errors)))
        self.tree.add(":SYSTem:ERRor:ALL?", self._all_errors)
        self.tree.add(":SYSTem:VERSion?", lambda call: "1999.0")
        for name in dir(type(self)):
            method = getattr(type(self), name, None)
            for pattern in getattr(method, "__scpi_patterns__", []):
                self.tree.add(pattern, getattr(self, name))

    # --- hooks ----------------------------------------------------------------------
    def reset(self) -> None:
        """``*RST``: return to the power-on state (override; call super)."""

    # --- status -----------------------------------------------------------------------
    def push_error(self, error: ScpiError) -> None:
        """Queue ``error`` and set its event-status bit."""
        code = error.code
        if -199 <= code <= -100:
            self.esr |= ESR_CME
        elif -299 <= code <= -200:
            self.esr |= ESR_EXE
        elif -499 <= code <= -400:
            self.esr |= ESR_QYE
        else:
            self.esr |= ESR_DDE
        self.errors.push(error)
        log.debug("%s error %s", self.identity[1], error.entry)

    def _cls(self) -> None:
        self.errors.clear()
        self.esr = 0

    def _set_opc(self) -> None:
        self.esr |= ESR_OPC

    def _read_esr(self) -> str:
        value, self.esr = self.esr, 0
        return str(value)

    def _stb(self) -> int:
        return (4 if len(self.errors) else 0) | (32 if self.esr else 0)

    def _all_errors(self, call: Call) -> str:
        entries = []
        while len(self.errors):
            entries.append(self.errors.pop())
        return ",".join(entries) if entries else '0,"No error"'

    # --- the interpreter ------------------------------------------------------------------
    def handle(self, line: str) -> str | bytes | None:
        """Execute one program message; the joined answers of its queries, or None.

        A handler may answer ``bytes`` (an IEEE 488.2 binary block); the message's
        answers are then joined as bytes.
        """
        with self.lock:
            answers: list[str | bytes] = []
            prefix: list[str] = []
            try:
                units = split_outside_quotes(line.strip(), ";")
            except ScpiError as exc:
                self.push_error(exc)
                return None
            for unit in units:
                unit = unit.strip()
                if not unit:
                    continue
                self.commands_seen += 1
                try:
                    answer, prefix = self._execute(unit, prefix)
                except ScpiError as exc:
                    self.push_error(exc)
                    if -199 <= exc.code <= -100:
                        break  # a command error discards the rest of the message
                    continue
                if answer is not None:
                    answers.append(answer)
            if any(isinstance(a, bytes) for a in answers):
                return b";".join(a if isinstance(a, bytes) else a.encode("ascii") for a in answers)
            return ";".join(answers) if answers else None  # type: ignore[arg-type]

    def _execute(self, unit: str, prefix: list[str]) -> tuple[str | bytes | None, list[str]]:
        parts = unit.split(None, 1)
        header = parts[0]
        arg_text = parts[1] if len(parts) > 1 else ""
        args = [a.strip() for a in split_outside_quotes(arg_text, ",")] if arg_text else []
        if args and any(a == "" for a in args):
            raise ScpiError(-103, f"empty parameter in {unit!r}")
        is_query = header.endswith("?")
        if header.startswith("*"):
            key = header.upper()
            handler = self._common.get(key)
            if handler is None:
                raise ScpiError(-113, header)
            return handler(Call(header, args, [], self)), prefix
        absolute = header.startswith(":")
        tokens = [t.upper() for t in header.strip(":").rstrip("?").split(":")]
        if not all(tokens) or not all(re.fullmatch(r"[A-Z][A-Z0-9_]*", t) for t in tokens):
            raise ScpiError(-102, f"bad header {header!r}")
        found = None
        if not absolute and prefix:
            found = self.tree.lookup(prefix + tokens)
            if found:
                tokens = prefix + tokens
        if found is None:
            found = self.tree.lookup(tokens)
        if found is None:
            raise ScpiError(-113, header)
        node, suffixes = found
        handler = node.getter if is_query else node.setter
        if handler is None:
            raise ScpiError(-113, f"{header} ({'no query form' if is_query else 'query only'})")
        result = handler(Call(header, args, suffixes, self))
        if is_query and result is None:
            raise ScpiError(-300, f"{header} produced no answer")
        if result is not None and not isinstance(result, bytes):
            result = str(result)
        return result, tokens[:-1]
