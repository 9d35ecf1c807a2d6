"""Hardware targets as data: which ops an accelerator runs, at which precisions.

A target is a TOML file: the ones quantir ships live next to this module
(`quantir targets` lists them); `load_target("path/to/my_npu.toml")` reads any other.
The vendor targets are models of public documentation (`../shared/seeds` in the
project), not vendor tools: each rule cites its source in a comment above it.

    name = "hailo8"
    description = "..."
    rounding = ["single"]                # requant rounding modes it implements
    activation_signedness = "unsigned"   # signed | unsigned | any

    [fallback]                           # what may run in float, and where
    where = "host"                       # "none": nothing falls back
    kinds = ["*"]                        # op kinds ("*": every kind)

    [[conversion]]                       # precision_change / requant it supports
    from = "u8"                          # storage: i8 / u8 / 8 (either sign) / *
    to = "u16"

    [[op]]                               # one rule for some op kinds
    kinds = ["conv", "depthwise_conv"]   # quantir op kinds ("*": any other)
    modes = ["a8_w8", "a16_w16", "a16_w16_a8"]   # "*": any precision mode
    per_channel = false                  # per-channel weights (default false)
    bias_bits = [16, 32]                 # bias storage widths (default [32])

Op kinds are the `nn` op names (`conv`, `matmul`, `softmax`, ...) plus two refined
kinds: `depthwise_conv` (a conv with one group per input channel) and
`batch_matmul` (a matmul of two activations, no constant weight). A refined kind
uses its base kind's rule (`conv`, `matmul`) when the target names no rule for it.
A precision mode reads `a<input>_w<second operand>[_a<output>]`: for an op without
weights the second width is its second input's (or the input's when it has one).

A malformed file raises `TargetError` reading `file:line: problem; fix`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from quantir.errors import QuantirError, TargetError

DEFAULT_TARGET = "cpu-ref"
WILDCARD = "*"
SIGNEDNESS: tuple[str, ...] = ("signed", "unsigned", "any")
REFINED_KINDS: Mapping[str, str] = MappingProxyType({"depthwise_conv": "conv",
                                                   "batch_matmul": "matmul"})
"""Refined op kind -> the base kind whose rule it uses when the target has none for it."""

_DIRECTORY = Path(__file__).parent
_STORAGE_RE = re.compile(r"([iu]?)(\d+)")
_ROOT_KEYS = ("name", "description", "rounding", "activation_signedness", "fallback",
              "conversion", "op")
_OP_KEYS = ("kinds", "modes", "per_channel", "bias_bits")
_CONVERSION_KEYS = ("from", "to")
_FALLBACK_KEYS = ("where", "kinds")


def op_kinds() -> tuple[str, ...]:
    """Every op kind a target rule may name: the nn op names and the refined kinds."""
    from quantir.dialects.nn import NN

    kinds = [op.name.split(".", 1)[1] for op in NN.operations if op.name != "nn.constant"]
    return tuple(sorted({*kinds, *REFINED_KINDS}))


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """Widths of one op: input activation, second operand (weights), output."""

    activation: int
    weight: int
    output: int

    def __str__(self) -> str:
        text = f"a{self.activation}_w{self.weight}"
        return text if self.output == self.activation else f"{text}_a{self.output}"

    @staticmethod
    def parse(text: str) -> Mode:
        from quantir.passes.qconfig import PrecisionMode

        mode = PrecisionMode.parse(text)
        return Mode(mode.activation_bits, mode.weight_bits, mode.output_bits)


@dataclass(frozen=True)
class OpRule:
    """What the target allows for some op kinds; `line` is where the rule starts."""

    kinds: tuple[str, ...]
    modes: tuple[Mode, ...]
    any_mode: bool
    per_channel: bool
    bias_bits: tuple[int, ...]
    line: int
    note: str

    def allows(self, mode: Mode) -> bool:
        return self.any_mode or mode in self.modes

    def modes_text(self) -> str:
        return "any mode" if self.any_mode else ", ".join(map(str, self.modes))


@dataclass(frozen=True)
class Storage:
    """One end of a conversion: a width (None: any) and a signedness (None: either)."""

    bits: int | None
    signed: bool | None

    def matches(self, bits: int, signed: bool) -> bool:
        return self.bits in (None, bits) and self.signed in (None, signed)

    def __str__(self) -> str:
        if self.bits is None:
            return WILDCARD
        return ("" if self.signed is None else "i" if self.signed else "u") + str(self.bits)


@dataclass(frozen=True)
class Conversion:
    source: Storage
    target: Storage
    line: int
    note: str

    def matches(self, source: tuple[int, bool], target: tuple[int, bool]) -> bool:
        return self.source.matches(*source) and self.target.matches(*target)

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass(frozen=True)
class Fallback:
    """Where float ops run ("none": nowhere) and which op kinds may."""

    where: str
    kinds: tuple[str, ...]
    line: int
    note: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    path: Path
    rounding: tuple[str, ...]
    activation_signedness: str
    ops: tuple[OpRule, ...]
    conversions: tuple[Conversion, ...]
    fallback: Fallback
    lines: Mapping[str, int]
    """Line of each top-level key (rounding, activation_signedness, ...)."""

    @property
    def label(self) -> str:
        """How diagnostics name the file: `hailo8.toml` when shipped, else its path."""
        return self.path.name if self.path.parent == _DIRECTORY else str(self.path)

    def where(self, line: int) -> str:
        return f"{self.label}:{line}"

    def rule(self, kind: str) -> OpRule | None:
        """The rule for an op kind: its own, its base kind's, else the `*` rule."""
        for name in (kind, REFINED_KINDS.get(kind), WILDCARD):
            for rule in self.ops:
                if name is not None and name in rule.kinds:
                    return rule
        return None

    def falls_back(self, kind: str) -> bool:
        """Whether an op of this kind may run in float (`fallback.where`)."""
        if self.fallback.where == "none":
            return False
        kinds = self.fallback.kinds
        return WILDCARD in kinds or kind in kinds or REFINED_KINDS.get(kind) in kinds

    def conversion(self, source: tuple[int, bool], target: tuple[int, bool]) \
            -> Conversion | None:
        """The conversion rule that allows source (bits, signed) -> target, or None."""
        for conversion in self.conversions:
            if conversion.matches(source, target):
                return conversion
        return None

    def signedness_ok(self, signed: bool) -> bool:
        wanted = self.activation_signedness
        return wanted == "any" or (wanted == "signed") == signed


# --------------------------------------------------------------------------------------
# Finding and loading
# --------------------------------------------------------------------------------------


def available_targets() -> list[str]:
    """Names of the targets quantir ships (the .toml files next to this module)."""
    return sorted(path.stem for path in _DIRECTORY.glob("*.toml"))


def target_path(spec: str | Path) -> Path:
    """A shipped target's file by name, or `spec` itself when it names a .toml file."""
    text = str(spec)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise TargetError(f"{path}: no such target file; give a target name "
                              f"({', '.join(available_targets())}) or a .toml path")
        return path
    path = _DIRECTORY / f"{text}.toml"
    if not path.is_file():
        raise TargetError(f"unknown target '{text}'; known targets: "
                          f"{', '.join(available_targets())} (or give a .toml file path)")
    return path


def load_target(spec: str | Path = DEFAULT_TARGET) -> Target:
    """Load and validate a target (a shipped name or a .toml path)."""
    path = target_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TargetError(f"{path}: cannot read the target file ({error.strerror or error})") \
            from None
    except UnicodeDecodeError as error:
        raise TargetError(f"{path}: the target file is not UTF-8 text ({error.reason})") \
            from None
    return parse_target(text, path)


def parse_target(text: str, path: Path) -> Target:
    """A Target from TOML text; every problem is a TargetError naming path:line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        line = found.group(1) if found else "1"
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise TargetError(f"{path}:{line}: TOML syntax error: {problem}; fix the syntax "
                          f"(see quantir/targets/cpu-ref.toml for the format)") from None
    return _Reader(path, _scan(text)).target(data)


@dataclass(frozen=True)
class _Place:
    """Where one table of the file starts, its keys' lines and the comment above it."""

    header: int
    keys: Mapping[str, int]
    note: str


def _scan(text: str) -> dict[tuple[str, int], _Place]:
    """(table name, index) -> its place: a plain scan of the text for header and key lines
    (tomllib reports no lines for values, so schema errors find their key here)."""
    places: dict[tuple[str, int], _Place] = {}
    counts: dict[str, int] = {}
    current = ("", 0)
    keys: dict[str, int] = {}
    header, note = 1, ""
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        table = re.fullmatch(r"\[\[\s*([\w.-]+)\s*\]\](?:\s*#.*)?", line) or \
            re.fullmatch(r"\[\s*([\w.-]+)\s*\](?:\s*#.*)?", line)
        if table:
            places[current] = _Place(header, keys, note)
            name = table.group(1)
            index = counts.get(name, -1) + 1 if line.startswith("[[") else 0
            counts[name] = index
            current, keys, header = (name, index), {}, number
            note = " ".join(comments)
            comments = []
            continue
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
            continue
        comments = []
        key = re.match(r"([A-Za-z0-9_-]+|\"[^\"]*\")\s*=", line)
        if key:
            keys.setdefault(key.group(1).strip('"'), number)
    places[current] = _Place(header, keys, note)
    return places


class _Reader:
    def __init__(self, path: Path, places: dict[tuple[str, int], _Place]):
        self.path = path
        self.places = places

    def line(self, table: str, index: int, key: str | None = None) -> int:
        place = self.places.get((table, index)) or self.places.get((table, 0))
        if place is None:
            return 1
        return place.keys.get(key, place.header) if key else place.header

    def error(self, line: int, message: str) -> TargetError:
        return TargetError(f"{self.path}:{line}: {message}")

    def note(self, table: str, index: int) -> str:
        place = self.places.get((table, index))
        return place.note if place else ""

    # -- typed values ------------------------------------------------------------------

    def check_keys(self, table: str, index: int, data: Mapping[str, object],
                   known: Sequence[str], what: str) -> None:
        for key in data:
            if key not in known:
                raise self.error(self.line(table, index, key),
                                 f"unknown key '{key}' in {what}; use {', '.join(known)}")

    def string(self, table: str, index: int, data: Mapping[str, object], key: str,
               choices: Sequence[str] | None = None) -> str:
        if key not in data:
            raise self.error(self.line(table, index),
                             f"'{key}' is missing; add {key} = \"...\"")
        value = data[key]
        if not isinstance(value, str) or not value:
            raise self.error(self.line(table, index, key),
                             f"'{key}' must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(self.line(table, index, key),
                             f"{key} = \"{value}\" is not valid; use one of {', '.join(choices)}")
        return value

    def strings(self, table: str, index: int, data: Mapping[str, object], key: str,
                default: Sequence[str] | None = None) -> tuple[str, ...]:
        if key not in data:
            if default is not None:
                return tuple(default)
            raise self.error(self.line(table, index), f"'{key}' is missing; add {key} = [...]")
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(self.line(table, index, key),
                             f"'{key}' must be a list of strings, got {value!r}")
        return tuple(value)  # type: ignore[arg-type]

    def kinds(self, table: str, index: int, data: Mapping[str, object], key: str,
              known: Sequence[str], allow_empty: bool = False) -> tuple[str, ...]:
        kinds = self.strings(table, index, data, key)
        if not kinds and not allow_empty:
            raise self.error(self.line(table, index, key), f"'{key}' names no op kind")
        for kind in kinds:
            if kind != WILDCARD and kind not in known:
                raise self.error(self.line(table, index, key),
                                 f"unknown op kind '{kind}'; use nn op names such as conv, "
                                 f"matmul, softmax, or depthwise_conv, batch_matmul, *")
        return kinds

    # -- the file ----------------------------------------------------------------------

    def target(self, data: dict[str, object]) -> Target:
        from quantir.dialects.q import ROUNDING_MODES

        self.check_keys("", 0, data, _ROOT_KEYS, "the target")
        name = self.string("", 0, data, "name")
        description = self.string("", 0, data, "description")
        rounding = self.strings("", 0, data, "rounding")
        if not rounding:
            raise self.error(self.line("", 0, "rounding"),
                             f"'rounding' names no mode; use {', '.join(ROUNDING_MODES)}")
        for mode in rounding:
            if mode not in ROUNDING_MODES:
                raise self.error(self.line("", 0, "rounding"),
                                 f"unknown rounding mode '{mode}'; use "
                                 f"{', '.join(ROUNDING_MODES)}")
        signedness = self.string("", 0, data, "activation_signedness", SIGNEDNESS)
        known = op_kinds()
        ops = self.op_rules(data.get("op", []), known)
        conversions = self.conversions(data.get("conversion", []))
        fallback = self.fallback(data.get("fallback"), known)
        lines = {key: self.line("", 0, key) for key in _ROOT_KEYS if key in data}
        return Target(name, description, self.path, rounding, signedness, ops, conversions,
                      fallback, lines)

    def tables(self, value: object, table: str) -> list[dict[str, object]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(self.line("", 0, table),
                             f"'{table}' must be a list of tables: write [[{table}]] headers")
        return value  # type: ignore[return-value]

    def op_rules(self, value: object, known: Sequence[str]) -> tuple[OpRule, ...]:
        rules: list[OpRule] = []
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.tables(value, "op")):
            self.check_keys("op", index, entry, _OP_KEYS, "an [[op]] rule")
            line = self.line("op", index)
            kinds = self.kinds("op", index, entry, "kinds", known)
            for kind in kinds:
                if kind in seen:
                    raise self.error(self.line("op", index, "kinds"),
                                     f"op kind '{kind}' already has a rule at line "
                                     f"{seen[kind]}; give each kind one rule")
                seen[kind] = line
            texts = self.strings("op", index, entry, "modes")
            if not texts:
                raise self.error(self.line("op", index, "modes"),
                                 "'modes' is empty; list the precision modes (an op kind "
                                 "the target does not run needs no rule)")
            modes: list[Mode] = []
            for text in texts:
                if text == WILDCARD:
                    continue
                try:
                    modes.append(Mode.parse(text))
                except QuantirError as error:
                    raise self.error(self.line("op", index, "modes"), str(error)) from None
            per_channel = entry.get("per_channel", False)
            if not isinstance(per_channel, bool):
                raise self.error(self.line("op", index, "per_channel"),
                                 f"'per_channel' must be true or false, got {per_channel!r}")
            bias_bits = entry.get("bias_bits", [32])
            if not isinstance(bias_bits, list) or not bias_bits or not all(
                    isinstance(b, int) and not isinstance(b, bool) and b in (8, 16, 32)
                    for b in bias_bits):
                raise self.error(self.line("op", index, "bias_bits"),
                                 f"'bias_bits' must list widths among 8, 16, 32, got "
                                 f"{bias_bits!r}")
            rules.append(OpRule(kinds, tuple(modes), WILDCARD in texts, per_channel,
                                tuple(bias_bits), line, self.note("op", index)))
        return tuple(rules)

    def storage(self, index: int, entry: Mapping[str, object], key: str) -> Storage:
        value = entry.get(key)
        if value is None:
            raise self.error(self.line("conversion", index),
                             f"'{key}' is missing; add {key} = \"i8\" (i8, u8, 8 or *)")
        text = str(value)
        if text == WILDCARD:
            return Storage(None, None)
        match = _STORAGE_RE.fullmatch(text)
        if not isinstance(value, str | int) or isinstance(value, bool) or match is None \
                or int(match.group(2)) not in (4, 8, 16, 32):
            raise self.error(self.line("conversion", index, key),
                             f"{key} = {value!r} is not a storage type; write i8, u16, 8 "
                             f"(either signedness) or * (widths 4, 8, 16, 32)")
        sign = match.group(1)
        return Storage(int(match.group(2)), None if not sign else sign == "i")

    def conversions(self, value: object) -> tuple[Conversion, ...]:
        result = []
        for index, entry in enumerate(self.tables(value, "conversion")):
            self.check_keys("conversion", index, entry, _CONVERSION_KEYS, "a [[conversion]]")
            result.append(Conversion(self.storage(index, entry, "from"),
                                     self.storage(index, entry, "to"),
                                     self.line("conversion", index),
                                     self.note("conversion", index)))
        return tuple(result)

    def fallback(self, value: object, known: Sequence[str]) -> Fallback:
        if value is None:
            return Fallback("none", (), self.line("", 0), "")
        if not isinstance(value, dict):
            raise self.error(self.line("", 0, "fallback"),
                             "'fallback' must be a table: write a [fallback] header")
        self.check_keys("fallback", 0, value, _FALLBACK_KEYS, "[fallback]")
        where = self.string("fallback", 0, value, "where")
        kinds = self.kinds("fallback", 0, value, "kinds", known, allow_empty=True)
        if where == "none" and kinds:
            raise self.error(self.line("fallback", 0, "kinds"),
                             "where = \"none\" but kinds are listed; name where they run "
                             "(host, ...) or empty the list")
        return Fallback(where, kinds, self.line("fallback", 0), self.note("fallback", 0))


__all__ = ["DEFAULT_TARGET", "Conversion", "Fallback", "Mode", "OpRule", "Storage", "Target",
           "available_targets", "load_target", "op_kinds", "parse_target", "target_path"]
