"""The quantization configuration: one object, three ways to say it.

A `QuantConfig` holds the default `LayerConfig` (precision mode, weight granularity,
activation symmetry, bias mode, float fallback), an ordered list of per-layer rules,
the calibration settings, the two whole-model algorithms (equalization, bias
correction) and an optional encodings-overrides file. It is built

* from Python: `QuantConfig.build(precision="a8_w8", layers={"conv*": "a16_w16",
  "softmax": "float"}, weights="per-tensor")`;
* from the command line: the CLI calls `build` with its options;
* from a model script in Hailo's `.alls` syntax: `parse_model_script` / `load_model_script`.

`QuantConfig.layer(node_name, op_kind)` gives the effective config of one op: the
default, then every rule whose glob matches the op, in order (later rules win). A glob
matches the ONNX node name (`fnmatch`, case-sensitive) or the op's kind in any of its
spellings: the nn op name (`conv`, `matmul`, `softmax`, `layer_norm`), its ONNX names
(`Conv`, `MatMul`, `Gemm`, `Softmax`) and Hailo's layer-type names (`dense`, `ew_add`),
so Hailo's habit of selecting a layer type by name prefix (`{conv*}`, `{ew_add*}`)
selects the same ops here. `LayerConfig.source` names the last rule that set something
on the layer (`script.alls:3`), so every diagnostic can say where a setting came from.

Model script syntax (one command per line; `#` starts a comment; a command may span
lines while a parenthesis or bracket is open, as Hailo allows; layers are `{glob}`,
`{glob, glob}`, `[name, name]` or a bare `name`; every entry of each form is a glob):

    quantization_param(<layers>, precision_mode=a16_w16, bias_mode=double_scale_initialization)
        keys: precision_mode  a<bits>_w<bits>[_a<bits>], bits in 4, 8, 16
              bias_mode       single_scale_decomposition (int32 bias at s_x * s_w) |
                              double_scale_initialization (16-bit bias, own scale);
                              quantir also accepts the aliases int32 | int16
              quantization_groups=1   (only 1: quantir has no per-group scales)
              quantir extensions:
              float=enabled|disabled          leave the layers in float
              weights=per_channel|per_tensor  activations=asymmetric|symmetric
        A rule that sets precision_mode also sets float=disabled unless it says float
        itself, so a later precision rule re-quantizes a layer an earlier rule floated.
    model_optimization_config(calibration, batch_size=8, calibset_size=64)
        quantir extensions: method=minmax|moving_average|mse|entropy|percentile,
        percentile=99.9
    model_optimization_config(quantization, weights=per_tensor, activations=symmetric,
                              bias_mode=...)          quantir extension: the defaults
        (quantization_param rules still override it, wherever they stand)
    pre_quantization_optimization(equalization, policy=enabled|disabled)
    post_quantization_optimization(bias_correction, policy=enabled|disabled)

Other Hailo commands, decided one by one:

* ignored with a QuantirWarning, because they place or schedule the model on Hailo
  hardware and do not change its numbers: resources_param, allocator_param,
  performance_param, context_switch_param, compilation_param, platform_param,
  hef_param, buffers, context, bucket, network_group, join, shortcut, defuse,
  shape_splitter;
* ignored with a QuantirWarning, because they tune Hailo's own optimizer:
  model_optimization_config(globals | checker_cfg | negative_exponent, ...) and
  model_optimization_flavor(optimization_level=..., batch_size=...) (quantir runs only
  the algorithms a script enables); pre_/post_quantization_optimization(<anything
  else>, policy=disabled, ...) (quantir never runs it, so disabling it changes nothing);
* accepted silently: model_optimization_flavor(compression_level=0) (what quantir does);
* errors, because ignoring them would silently change the model or its numbers:
  normalization, change_output_activation, nms_postprocess, input_conversion,
  format_conversion, resize, reshape, transpose, remove_node, logits_layer;
  model_optimization_flavor(compression_level>0) (automatic 4-bit weights);
  model_optimization_config(compression_params, ...); any other pre_/post_
  quantization optimization that is not disabled; any other command.

Every problem in a script is a `QuantirError` reading `path:line: <problem>; <fix>`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from quantir.errors import QuantirError

if TYPE_CHECKING:
    from quantir.passes.encodings_file import EncodingOverrides


class QuantirWarning(UserWarning):
    """Something quantir ignored or could not check; the run goes on."""


# --------------------------------------------------------------------------------------
# Precision modes and per-layer settings
# --------------------------------------------------------------------------------------

PRECISION_WIDTHS: tuple[int, ...] = (4, 8, 16)
"""Bit widths a precision mode may name (Hailo: 4/8/16-bit weights, 8/16-bit activations;
which combinations an op supports is the target's business, not the parser's)."""

_PRECISION_FORMS = ("a<bits>_w<bits> or a<bits>_w<bits>_a<bits> with bits 4, 8 or 16 "
                    "(e.g. a8_w8, a8_w4, a16_w16, a16_w16_a8)")


@dataclass(frozen=True)
class PrecisionMode:
    """Input-activation, weight and output-activation widths of one op (Hailo's names).

    `a16_w16_a8` reads 16-bit activations with 16-bit weights and writes 8 bits; without
    the third part the output width equals the input width.
    """

    activation_bits: int
    weight_bits: int
    output_bits: int

    def __post_init__(self) -> None:
        for what, bits in (("activation", self.activation_bits), ("weight", self.weight_bits),
                           ("output", self.output_bits)):
            if bits not in PRECISION_WIDTHS:
                raise QuantirError(f"{what} width {bits} is not valid in a precision mode; "
                                   f"use 4, 8 or 16")

    @staticmethod
    def parse(text: str) -> PrecisionMode:
        match = re.fullmatch(r"a(\d+)_w(\d+)(?:_a(\d+))?", text.strip())
        widths = [int(g) for g in match.groups() if g is not None] if match else []
        if not widths or any(bits not in PRECISION_WIDTHS for bits in widths):
            raise QuantirError(f"precision mode '{text}' is not valid: write {_PRECISION_FORMS}")
        activation, weight = widths[0], widths[1]
        return PrecisionMode(activation, weight, widths[2] if len(widths) == 3 else activation)

    def __str__(self) -> str:
        text = f"a{self.activation_bits}_w{self.weight_bits}"
        return text if self.output_bits == self.activation_bits else f"{text}_a{self.output_bits}"


A8_W8 = PrecisionMode(8, 8, 8)

WEIGHT_MODES: tuple[str, ...] = ("per-channel", "per-tensor")
ACTIVATION_MODES: tuple[str, ...] = ("asymmetric", "symmetric")
BIAS_MODES: tuple[str, ...] = ("single_scale_decomposition", "double_scale_initialization")
_WEIGHT_ALIASES = MappingProxyType({"per_channel": "per-channel", "per_tensor": "per-tensor"})
_BIAS_ALIASES = MappingProxyType({"int32": "single_scale_decomposition",
                                  "int16": "double_scale_initialization"})


@dataclass(frozen=True)
class LayerConfig:
    """How one op is quantized.

    `bias_mode` uses Hailo's names: `single_scale_decomposition` stores the bias in
    int32 at scale s_x * s_w (the default); `double_scale_initialization` stores it in
    16 bits with its own scale. `float_fallback` leaves the op in float. `source` says
    where the last setting came from: "default", a CLI option, "script.alls:3",
    "python: layers['conv*']".
    """

    precision: PrecisionMode = A8_W8
    weights: str = "per-channel"
    activations: str = "asymmetric"
    bias_mode: str = "single_scale_decomposition"
    float_fallback: bool = False
    source: str = "default"

    def __post_init__(self) -> None:
        if not isinstance(self.precision, PrecisionMode):
            raise QuantirError(f"{self.source}: precision must be a PrecisionMode, got "
                               f"{self.precision!r}; use PrecisionMode.parse('a8_w8')")
        _check_choice(self.source, "weights", self.weights, WEIGHT_MODES)
        _check_choice(self.source, "activations", self.activations, ACTIVATION_MODES)
        _check_choice(self.source, "bias_mode", self.bias_mode, BIAS_MODES)
        if not isinstance(self.float_fallback, bool):
            raise QuantirError(f"{self.source}: float_fallback must be True or False, got "
                               f"{self.float_fallback!r}")


def _check_choice(source: str, what: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise QuantirError(f"{source}: {what} {value!r} is not valid; use one of "
                           f"{', '.join(choices)}")


LAYER_SETTINGS: tuple[str, ...] = ("precision", "weights", "activations", "bias_mode",
                                   "float_fallback")
"""The LayerConfig fields a rule may set."""


# --------------------------------------------------------------------------------------
# Op kinds and globs
# --------------------------------------------------------------------------------------

_KIND_ALIASES = MappingProxyType({
    # ONNX operator names (as the importer maps them to nn ops)
    "Conv": "conv", "ConvTranspose": "conv_transpose", "BatchNormalization": "batch_norm",
    "Relu": "relu", "Clip": "clip", "LeakyRelu": "leaky_relu", "PRelu": "prelu",
    "Sigmoid": "sigmoid", "HardSigmoid": "hard_sigmoid", "HardSwish": "hard_swish",
    "Tanh": "tanh", "Erf": "erf", "Gelu": "gelu", "Neg": "neg", "Add": "add", "Sum": "add",
    "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "equal", "Max": "max",
    "Min": "min", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Exp": "exp",
    "MatMul": "matmul", "Gemm": "gemm", "Softmax": "softmax",
    "LayerNormalization": "layer_norm", "LRN": "lrn", "ReduceMean": "reduce_mean",
    "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
    "GlobalAveragePool": "global_average_pool", "AveragePool": "average_pool",
    "MaxPool": "max_pool", "Concat": "concat", "Split": "split", "Slice": "slice",
    "Reshape": "reshape", "Flatten": "reshape", "Squeeze": "reshape", "Unsqueeze": "reshape",
    "Transpose": "transpose", "Resize": "resize", "Pad": "pad", "Gather": "gather",
    "Cast": "cast", "Expand": "expand", "Where": "where",
    # Hailo layer types (Hailo names layers <type><n>, so `{dense*}` selects a type)
    "dense": "gemm", "ew_add": "add", "ew_sub": "sub", "ew_mult": "mul", "ew_div": "div",
    "avgpool": "average_pool", "maxpool": "max_pool", "deconv": "conv_transpose",
})


def normalize_op_kind(op_kind: str) -> str:
    """`nn.conv`, `conv` and `Conv` all give `conv`."""
    kind = op_kind.removeprefix("nn.")
    return _KIND_ALIASES.get(kind, kind)


def _kind_spellings(kind: str) -> tuple[str, ...]:
    return (kind, *(alias for alias, target in _KIND_ALIASES.items() if target == kind))


def _glob_matches(pattern: str, node_name: str, kind_spellings: Sequence[str]) -> bool:
    if node_name and fnmatchcase(node_name, pattern):
        return True
    return any(fnmatchcase(spelling, pattern) for spelling in kind_spellings if spelling)


@dataclass(frozen=True)
class LayerRule:
    """Settings for the layers one of `patterns` matches; `source` is where it was written."""

    patterns: tuple[str, ...]
    settings: Mapping[str, object]
    source: str

    def __post_init__(self) -> None:
        if not self.patterns:
            raise QuantirError(f"{self.source}: a layer rule needs at least one glob")
        # A read-only copy: the caller's dict may change later, the rule must not.
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))
        unknown = sorted(set(self.settings) - set(LAYER_SETTINGS))
        if unknown:
            raise QuantirError(f"{self.source}: unknown layer setting '{unknown[0]}'; use "
                               f"{', '.join(LAYER_SETTINGS)}")
        if not self.settings:
            raise QuantirError(f"{self.source}: the rule sets nothing; give at least one of "
                               f"{', '.join(LAYER_SETTINGS)}")
        # Validate the values now, so a bad rule fails where it is written, not at use.
        self.apply(LayerConfig())

    def matches(self, node_name: str, op_kind: str) -> bool:
        spellings = _kind_spellings(normalize_op_kind(op_kind)) if op_kind else ()
        return any(_glob_matches(p, node_name, spellings) for p in self.patterns)

    def apply(self, config: LayerConfig) -> LayerConfig:
        return replace(config, **self.settings, source=self.source)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# The configuration
# --------------------------------------------------------------------------------------

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "moving_average", "mse", "entropy",
                                        "percentile")


@dataclass(frozen=True)
class CalibrationSettings:
    """How activation ranges are observed (Hailo's calibration batch_size / calibset_size)."""

    method: str = "minmax"
    batch_size: int = 8
    calibset_size: int = 64
    percentile: float = 99.9

    def __post_init__(self) -> None:
        _check_choice("calibration", "method", self.method, CALIBRATION_METHODS)
        for what in ("batch_size", "calibset_size"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QuantirError(f"calibration: {what} must be a positive integer, got "
                                   f"{value!r}")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, int | float) \
                or not 0 < self.percentile <= 100:
            raise QuantirError(f"calibration: percentile must be in (0, 100], got "
                               f"{self.percentile!r}")


LayerSpec = str | PrecisionMode | Mapping[str, object]
"""A layer setting in the Python API: a precision mode ("a16_w16" or a PrecisionMode),
"float", or a mapping of LayerConfig fields ({"precision": "a16_w16", "weights":
"per-tensor", "bias_mode": "int16", "float_fallback": False})."""


@dataclass
class QuantConfig:
    """The whole quantization configuration (see the module docstring)."""

    default: LayerConfig = field(default_factory=LayerConfig)
    rules: list[LayerRule] = field(default_factory=list)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    equalization: bool = False
    bias_correction: bool = False
    overrides: EncodingOverrides | None = None

    def layer(self, node_name: str, op_kind: str) -> LayerConfig:
        """The effective config of one op: the default, then every matching rule in order."""
        config = self.default
        for rule in self.matching_rules(node_name, op_kind):
            config = rule.apply(config)
        return config

    def matching_rules(self, node_name: str, op_kind: str) -> list[LayerRule]:
        """The rules that apply to one op, in the order they apply (for explanations)."""
        return [rule for rule in self.rules if rule.matches(node_name, op_kind)]

    def check_globs(self, node_names: Iterable[str], op_kinds: Iterable[str]) -> list[str]:
        """Warn (QuantirWarning) about each rule glob that matches no node and no op kind.

        A glob that matches nothing is almost always a misspelt or Hailo-specific layer
        name, and it silently leaves those layers at the default.
        """
        names = [name for name in node_names if name]
        spellings = sorted({s for kind in op_kinds if kind
                            for s in _kind_spellings(normalize_op_kind(kind))})
        problems = []
        for rule in self.rules:
            for pattern in rule.patterns:
                if not any(_glob_matches(pattern, name, ()) for name in names) \
                        and not _glob_matches(pattern, "", spellings):
                    problems.append(f"{rule.source}: glob '{pattern}' matches no layer; "
                                    f"check it against the ONNX node names and op kinds")
        for problem in problems:
            warnings.warn(problem, QuantirWarning, stacklevel=2)
        return problems

    def with_layers(self, layers: Mapping[str, LayerSpec], source: str = "python") \
            -> QuantConfig:
        """A copy with one rule per entry of `layers` (glob -> LayerSpec) appended, in order."""
        rules = list(self.rules)
        for pattern, spec in layers.items():
            where = f"{source}: layers[{pattern!r}]"
            rules.append(LayerRule((pattern,), _layer_settings(spec, where), where))
        return replace(self, rules=rules)

    @staticmethod
    def build(precision: str | PrecisionMode | None = None, *,
              layers: Mapping[str, LayerSpec] | None = None,
              weights: str | None = None, activations: str | None = None,
              bias_mode: str | None = None,
              method: str | None = None, batch_size: int | None = None,
              calibset_size: int | None = None, percentile: float | None = None,
              equalization: bool | None = None, bias_correction: bool | None = None,
              script: str | Path | None = None,
              overrides: str | Path | EncodingOverrides | None = None,
              base: QuantConfig | None = None, source: str = "options") -> QuantConfig:
        """A config from plain options; None leaves a setting as it is.

        Order: `base` (or the defaults), then the model `script` (its rules and
        settings), then the options given here, so an explicit option beats the script
        (`precision`, `weights`, `activations`, `bias_mode` set the default, which the
        script's per-layer rules still refine), then `layers` rules, appended last so
        they win. `overrides` is an encodings JSON path (or a loaded EncodingOverrides).
        `source` labels the default's settings made here ("--precision", "python").
        """
        config = QuantConfig() if base is None else replace(base, rules=list(base.rules))
        if script is not None:
            config = load_model_script(script, base=config)
        changes: dict[str, object] = {}
        if precision is not None:
            changes["precision"] = _precision(precision, source)
        if weights is not None:
            changes["weights"] = _weights(weights)
        if activations is not None:
            changes["activations"] = activations
        if bias_mode is not None:
            changes["bias_mode"] = _bias_mode(bias_mode)
        if changes:
            config.default = replace(config.default, **changes, source=source)  # type: ignore[arg-type]
        calibration = {key: value for key, value in (
            ("method", method), ("batch_size", batch_size), ("calibset_size", calibset_size),
            ("percentile", percentile)) if value is not None}
        if calibration:
            config.calibration = replace(config.calibration, **calibration)  # type: ignore[arg-type]
        if equalization is not None:
            config.equalization = bool(equalization)
        if bias_correction is not None:
            config.bias_correction = bool(bias_correction)
        if overrides is not None:
            if isinstance(overrides, str | Path):
                from quantir.passes.encodings_file import load_overrides

                overrides = load_overrides(overrides)
            config.overrides = overrides
        if layers:
            config = config.with_layers(layers)
        return config


def _precision(value: str | PrecisionMode, where: str) -> PrecisionMode:
    if isinstance(value, PrecisionMode):
        return value
    try:
        return PrecisionMode.parse(str(value))
    except QuantirError as error:
        raise QuantirError(f"{where}: {error}") from None


def _weights(value: str) -> str:
    """per-channel / per-tensor; the script spelling with '_' is accepted everywhere."""
    return _WEIGHT_ALIASES.get(str(value), str(value))


def _bias_mode(value: str) -> str:
    return _BIAS_ALIASES.get(str(value), str(value))


def _layer_settings(spec: LayerSpec, where: str) -> dict[str, object]:
    if isinstance(spec, PrecisionMode):
        return {"precision": spec, "float_fallback": False}
    if isinstance(spec, str):
        if spec == "float":
            return {"float_fallback": True}
        return {"precision": _precision(spec, where), "float_fallback": False}
    if not isinstance(spec, Mapping):
        raise QuantirError(f"{where}: expected a precision mode, 'float' or a mapping of "
                           f"{', '.join(LAYER_SETTINGS)}; got {spec!r}")
    settings = dict(spec)
    if "precision" in settings:
        settings["precision"] = _precision(settings["precision"], where)  # type: ignore[arg-type]
        # As in scripts: naming a precision means "quantize it", unless told otherwise.
        settings.setdefault("float_fallback", False)
    if "weights" in settings:
        settings["weights"] = _weights(settings["weights"])  # type: ignore[arg-type]
    if "bias_mode" in settings:
        settings["bias_mode"] = _bias_mode(settings["bias_mode"])  # type: ignore[arg-type]
    return settings


# --------------------------------------------------------------------------------------
# Model scripts (Hailo .alls syntax)
# --------------------------------------------------------------------------------------

_ALLOCATION_COMMANDS = frozenset({
    "resources_param", "allocator_param", "performance_param", "context_switch_param",
    "compilation_param", "platform_param", "hef_param", "buffers", "context", "bucket",
    "network_group", "join", "shortcut", "defuse", "shape_splitter"})
"""Hailo commands that only place or schedule the model on Hailo hardware."""

_MODEL_EDITS = MappingProxyType({
    "normalization": "adds (x - mean) / std at the model input; put the normalization in "
                     "the ONNX model or in the calibration data",
    "change_output_activation": "changes the model's output activation; change it in the "
                                "ONNX model",
    "nms_postprocess": "adds Hailo's NMS post-processing; run NMS outside the model",
    "input_conversion": "adds a color or format conversion at the input; convert the data "
                        "before the model or add the conversion to the ONNX model",
    "format_conversion": "edits Hailo's layer graph; make the change in the ONNX model",
    "resize": "adds an input resize; resize the data or add a Resize to the ONNX model",
    "reshape": "edits Hailo's layer graph; make the change in the ONNX model",
    "transpose": "edits Hailo's layer graph; make the change in the ONNX model",
    "remove_node": "removes a layer; remove it from the ONNX model",
    "logits_layer": "adds a logits layer; add it to the ONNX model",
})
"""Hailo commands that change the model: ignoring one would silently change the numbers."""

_QUANTIZATION_PARAM_KEYS = ("precision_mode", "bias_mode", "quantization_groups", "float",
                            "weights", "activations")
_QUANTIZATION_PARAM_HINTS = MappingProxyType({
    "force_range_in": "fix the range with an encodings overrides file (--overrides)",
    "force_range_out": "fix the range with an encodings overrides file (--overrides)",
    "force_range_index": "fix the range with an encodings overrides file (--overrides)",
    "weight_group_size": "quantir has no weight groups; per-channel weights are the finest",
})
_CALIBRATION_KEYS = ("batch_size", "calibset_size", "method", "percentile")
_QUANTIZATION_DEFAULT_KEYS = ("weights", "activations", "bias_mode")
_IGNORED_OPTIMIZATION_SECTIONS = frozenset({"globals", "checker_cfg", "negative_exponent"})
_FLAVOR_KEYS = ("optimization_level", "compression_level", "batch_size")
_SUPPORTED_COMMANDS = ("quantization_param, model_optimization_config, "
                       "pre_quantization_optimization, post_quantization_optimization, "
                       "model_optimization_flavor")


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "[", "]", ",", "=", "atom", "string", "globs", "newline"
    text: str
    line: int


@dataclass(frozen=True)
class _Globs:
    """`{a*, b}`: raw glob patterns (kept raw: `[0-9]` inside a glob is a character class)."""

    patterns: tuple[str, ...]


@dataclass(frozen=True)
class _Quoted:
    text: str


_Value = str | _Quoted | _Globs | list  # atom | "string" | {globs} | [values]


@dataclass
class _Statement:
    line: int
    targets: list[str]  # names before '=' (Hailo: `norm1 = normalization(...)`)
    command: str
    positional: list[_Value]
    keywords: dict[str, _Value]


class _Script:
    """Tokenizer, parser and command handlers for one script."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path

    def error(self, line: int, message: str) -> QuantirError:
        return QuantirError(f"{self.path}:{line}: {message}")

    def warn(self, line: int, message: str) -> None:
        warnings.warn(f"{self.path}:{line}: {message}", QuantirWarning, stacklevel=2)

    # -- tokens ------------------------------------------------------------------------

    def tokens(self) -> list[_Token]:
        """All tokens; a `newline` token ends a statement only outside brackets."""
        text, line, pos = self.text, 1, 0
        tokens: list[_Token] = []
        open_brackets: list[tuple[str, int]] = []
        closing = {")": "(", "]": "["}
        while pos < len(text):
            char = text[pos]
            if char == "\n":
                if not open_brackets:
                    tokens.append(_Token("newline", "", line))
                line += 1
                pos += 1
            elif char.isspace():
                pos += 1
            elif char == "#":
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end
            elif char in "([":
                open_brackets.append((char, line))
                tokens.append(_Token(char, char, line))
                pos += 1
            elif char in ")]":
                if not open_brackets:
                    raise self.error(line, f"'{char}' closes nothing; remove it or add the "
                                           f"missing '{closing[char]}'")
                opened, opened_line = open_brackets.pop()
                if opened != closing[char]:
                    want = ")" if opened == "(" else "]"
                    raise self.error(line, f"'{char}' does not match the '{opened}' opened on "
                                           f"line {opened_line}; close it with '{want}'")
                tokens.append(_Token(char, char, line))
                pos += 1
            elif char == "{":
                end = text.find("}", pos)
                nested = text.find("{", pos + 1)
                if end < 0 or 0 <= nested < end:
                    raise self.error(line, "'{' is never closed; close the glob list with '}'")
                raw = text[pos + 1:end]
                tokens.append(_Token("globs", raw, line))
                line += raw.count("\n")
                pos = end + 1
            elif char == "}":
                raise self.error(line, "'}' closes nothing; remove it or add the missing '{'")
            elif char in "\"'":
                end = text.find(char, pos + 1)
                newline = text.find("\n", pos + 1)
                if end < 0 or 0 <= newline < end:
                    raise self.error(line, f"unterminated string; close it with {char}")
                tokens.append(_Token("string", text[pos + 1:end], line))
                pos = end + 1
            elif char in ",=":
                tokens.append(_Token(char, char, line))
                pos += 1
            else:
                match = re.compile(r"[^\s()\[\]{},=#\"']+").match(text, pos)
                assert match is not None  # char is none of the delimiters handled above
                tokens.append(_Token("atom", match.group(), line))
                pos = match.end()
        if open_brackets:
            opened, opened_line = open_brackets[-1]
            want = ")" if opened == "(" else "]"
            raise self.error(opened_line, f"'{opened}' is never closed; add the missing '{want}'")
        tokens.append(_Token("newline", "", line))
        return tokens

    def statements(self) -> list[_Statement]:
        statements, current = [], []
        for token in self.tokens():
            if token.kind != "newline":
                current.append(token)
            elif current:
                statements.append(self.parse_statement(current))
                current = []
        return statements

    # -- statements --------------------------------------------------------------------

    def parse_statement(self, tokens: list[_Token]) -> _Statement:
        line = tokens[0].line
        targets: list[str] = []
        if any(t.kind == "=" for t in tokens) and tokens[0].kind == "atom" \
                and (len(tokens) < 2 or tokens[1].kind != "("):
            # `name = command(...)` or `a, b = command(...)`
            pos = 0
            while True:
                if tokens[pos].kind != "atom":
                    raise self.error(line, f"expected a name before '=', found "
                                           f"'{tokens[pos].text}'; write name = command(...)")
                targets.append(tokens[pos].text)
                pos += 1
                if tokens[pos].kind == "=":
                    break
                if tokens[pos].kind != ",":
                    raise self.error(line, f"unexpected '{tokens[pos].text}' before '='; "
                                           f"write name = command(...)")
                pos += 1
            tokens = tokens[pos + 1:]
            if not tokens:
                raise self.error(line, "nothing after '='; write name = command(...)")
        head = tokens[0]
        if head.kind != "atom":
            raise self.error(line, f"expected a command name, found '{head.text}'; write "
                                   f"command(arguments)")
        if len(tokens) < 2 or tokens[1].kind != "(":
            raise self.error(line, f"'{head.text}' must be followed by '(' and its arguments; "
                                   f"write {head.text}(...)")
        positional: list[_Value] = []
        keywords: dict[str, _Value] = {}
        pos = 2
        while tokens[pos].kind != ")":
            if pos + 1 < len(tokens) and tokens[pos].kind == "atom" \
                    and tokens[pos + 1].kind == "=":
                key = tokens[pos].text
                if key in keywords:
                    raise self.error(line, f"'{key}' is given twice; keep one")
                keywords[key], pos = self.parse_value(tokens, pos + 2, line, key)
            elif keywords:
                raise self.error(line, f"positional argument '{tokens[pos].text}' after a "
                                       f"key=value argument; put it first")
            else:
                value, pos = self.parse_value(tokens, pos, line, None)
                positional.append(value)
            if tokens[pos].kind == ",":
                pos += 1
            elif tokens[pos].kind != ")":
                raise self.error(line, f"expected ',' or ')' but found '{tokens[pos].text}' "
                                       f"in {head.text}(...); separate arguments with ','")
        if pos != len(tokens) - 1:
            raise self.error(line, f"unexpected '{tokens[pos + 1].text}' after "
                                   f"{head.text}(...); put one command per line")
        return _Statement(line, targets, head.text, positional, keywords)

    def parse_value(self, tokens: list[_Token], pos: int, line: int, key: str | None) \
            -> tuple[_Value, int]:
        token = tokens[pos]
        if token.kind == "atom":
            return token.text, pos + 1
        if token.kind == "string":
            return _Quoted(token.text), pos + 1
        if token.kind == "globs":
            patterns = tuple(p.strip() for p in token.text.split(","))
            if not all(patterns):
                raise self.error(line, f"empty glob in {{{token.text}}}; write {{conv*}} or "
                                       f"{{conv1, conv2}}")
            return _Globs(patterns), pos + 1
        if token.kind == "[":
            items: list[_Value] = []
            pos += 1
            while tokens[pos].kind != "]":
                item, pos = self.parse_value(tokens, pos, line, key)
                items.append(item)
                if tokens[pos].kind == ",":
                    pos += 1
                elif tokens[pos].kind != "]":
                    raise self.error(line, f"expected ',' or ']' but found "
                                           f"'{tokens[pos].text}' in a [...] list")
            return items, pos + 1
        what = f"a value for '{key}'" if key else "an argument"
        raise self.error(line, f"expected {what}, found '{token.text or 'end of line'}'")

    # -- values ------------------------------------------------------------------------

    def word(self, statement: _Statement, key: str, value: _Value) -> str:
        if not isinstance(value, str):
            raise self.error(statement.line, f"{statement.command}: '{key}' takes a single "
                                             f"word, not {_describe(value)}")
        return value

    def choice(self, statement: _Statement, key: str, value: _Value,
               choices: Sequence[str]) -> str:
        word = self.word(statement, key, value)
        if word not in choices:
            raise self.error(statement.line, f"{statement.command}: {key}={word} is not valid; "
                                             f"use {' or '.join(choices)}")
        return word

    def integer(self, statement: _Statement, key: str, value: _Value, minimum: int) -> int:
        word = self.word(statement, key, value)
        if not re.fullmatch(r"[+-]?\d+", word) or int(word) < minimum:
            raise self.error(statement.line, f"{statement.command}: {key}={word} is not valid; "
                                             f"use an integer >= {minimum}")
        return int(word)

    def enabled(self, statement: _Statement, key: str, value: _Value) -> bool:
        return self.choice(statement, key, value, ("enabled", "disabled")) == "enabled"

    def layers(self, statement: _Statement, value: _Value) -> tuple[str, ...]:
        if isinstance(value, _Globs):
            return value.patterns
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return tuple(value)  # type: ignore[arg-type]
        raise self.error(statement.line, f"{statement.command}: the layers must be {{glob}}, "
                                         f"[name, name] or a name, not {_describe(value)}")

    # -- commands ----------------------------------------------------------------------

    def run(self, config: QuantConfig) -> QuantConfig:
        handlers = {
            "quantization_param": self.quantization_param,
            "model_optimization_config": self.model_optimization_config,
            "pre_quantization_optimization": self.optimization,
            "post_quantization_optimization": self.optimization,
            "model_optimization_flavor": self.model_optimization_flavor,
        }
        for statement in self.statements():
            command, line = statement.command, statement.line
            if command in _MODEL_EDITS:
                raise self.error(line, f"'{command}' {_MODEL_EDITS[command]}, and remove the "
                                       f"line (quantir quantizes the ONNX model as given)")
            if command in _ALLOCATION_COMMANDS:
                self.warn(line, f"'{command}' is a Hailo hardware-allocation command; quantir "
                                f"does not use it and ignores the line")
                continue
            handler = handlers.get(command)
            if handler is None:
                raise self.error(line, f"unknown command '{command}'; quantir understands "
                                       f"{_SUPPORTED_COMMANDS} (see quantir/passes/qconfig.py)")
            if statement.targets:
                raise self.error(line, f"'{command}' returns nothing to assign; remove "
                                       f"'{', '.join(statement.targets)} ='")
            handler(statement, config)
        return config

    def quantization_param(self, statement: _Statement, config: QuantConfig) -> None:
        line = statement.line
        if len(statement.positional) != 1:
            raise self.error(line, f"quantization_param takes the layers first and then "
                                   f"key=value settings, got {len(statement.positional)} "
                                   f"positional arguments; write quantization_param({{conv*}}, "
                                   f"precision_mode=a16_w16)")
        patterns = self.layers(statement, statement.positional[0])
        settings: dict[str, object] = {}
        for key, value in statement.keywords.items():
            if key == "precision_mode":
                try:
                    settings["precision"] = PrecisionMode.parse(self.word(statement, key, value))
                except QuantirError as error:
                    raise self.error(line, str(error)) from None
            elif key == "bias_mode":
                settings["bias_mode"] = _bias_mode(self.choice(
                    statement, key, value, (*BIAS_MODES, *_BIAS_ALIASES)))
            elif key == "quantization_groups":
                if self.integer(statement, key, value, 1) != 1:
                    raise self.error(line, f"quantization_groups={value} is not supported "
                                           f"(quantir has no per-group scales; weights are "
                                           f"per channel); remove it or set it to 1")
            elif key == "float":
                settings["float_fallback"] = self.enabled(statement, key, value)
            elif key == "weights":
                settings["weights"] = _weights(
                    self.choice(statement, key, value, ("per_channel", "per_tensor")))
            elif key == "activations":
                settings["activations"] = self.choice(statement, key, value, ACTIVATION_MODES)
            else:
                hint = _QUANTIZATION_PARAM_HINTS.get(key, "remove it")
                raise self.error(line, f"quantization_param: '{key}' is not supported; {hint} "
                                       f"(known keys: {', '.join(_QUANTIZATION_PARAM_KEYS)})")
        if "precision" in settings:
            settings.setdefault("float_fallback", False)
        if not settings:
            if "quantization_groups" in statement.keywords:
                return  # quantization_groups=1 is Hailo's default: nothing to record
            raise self.error(line, f"quantization_param sets nothing; add e.g. "
                                   f"precision_mode=a16_w16 (keys: "
                                   f"{', '.join(_QUANTIZATION_PARAM_KEYS)})")
        config.rules.append(LayerRule(patterns, settings, f"{self.path}:{line}"))

    def section(self, statement: _Statement, known: str) -> str:
        if len(statement.positional) != 1 or not isinstance(statement.positional[0], str):
            raise self.error(statement.line, f"{statement.command} needs a section name first, "
                                             f"e.g. {statement.command}({known}, ...)")
        return statement.positional[0]

    def model_optimization_config(self, statement: _Statement, config: QuantConfig) -> None:
        line = statement.line
        section = self.section(statement, "calibration")
        if section == "calibration":
            changes: dict[str, object] = {}
            for key, value in statement.keywords.items():
                if key in ("batch_size", "calibset_size"):
                    changes[key] = self.integer(statement, key, value, 1)
                elif key == "method":
                    changes[key] = self.choice(statement, key, value, CALIBRATION_METHODS)
                elif key == "percentile":
                    word = self.word(statement, key, value)
                    try:
                        number = float(word)
                    except ValueError:
                        number = -1.0
                    if not 0 < number <= 100:
                        raise self.error(line, f"percentile={word} is not valid; use a number "
                                               f"in (0, 100], e.g. 99.99")
                    changes[key] = number
                else:
                    raise self.error(line, f"model_optimization_config(calibration): unknown key "
                                           f"'{key}'; use {', '.join(_CALIBRATION_KEYS)}")
            config.calibration = replace(config.calibration, **changes)  # type: ignore[arg-type]
        elif section == "quantization":
            changes = {}
            for key, value in statement.keywords.items():
                if key == "weights":
                    changes[key] = _weights(
                        self.choice(statement, key, value, ("per_channel", "per_tensor")))
                elif key == "activations":
                    changes[key] = self.choice(statement, key, value, ACTIVATION_MODES)
                elif key == "bias_mode":
                    changes[key] = _bias_mode(self.choice(
                        statement, key, value, (*BIAS_MODES, *_BIAS_ALIASES)))
                else:
                    raise self.error(line, f"model_optimization_config(quantization): unknown "
                                           f"key '{key}'; use "
                                           f"{', '.join(_QUANTIZATION_DEFAULT_KEYS)}")
            if not changes:
                raise self.error(line, "model_optimization_config(quantization) sets nothing; "
                                       "add e.g. weights=per_tensor")
            config.default = replace(config.default, **changes,  # type: ignore[arg-type]
                                     source=f"{self.path}:{line}")
        elif section in _IGNORED_OPTIMIZATION_SECTIONS:
            self.warn(line, f"model_optimization_config({section}) tunes Hailo's optimizer or "
                            f"hardware; quantir ignores the line")
        elif section == "compression_params":
            raise self.error(line, "model_optimization_config(compression_params) lets Hailo "
                                   "pick 4-bit layers; quantir does not - set "
                                   "precision_mode=a8_w4 with quantization_param on the layers "
                                   "you choose and remove the line")
        else:
            raise self.error(line, f"model_optimization_config: unknown section '{section}'; "
                                   f"use calibration or quantization")

    def optimization(self, statement: _Statement, config: QuantConfig) -> None:
        line, command = statement.line, statement.command
        implemented = "equalization" if command.startswith("pre_") else "bias_correction"
        algorithm = self.section(statement, implemented)
        keywords = statement.keywords
        if algorithm != implemented:
            # Disabled, its other options do not matter: quantir never runs it anyway.
            if keywords.get("policy") == "disabled":
                self.warn(line, f"{command}({algorithm}) is not a quantir algorithm, so "
                                f"policy=disabled changes nothing; the line is ignored")
                return
            raise self.error(line, f"{command}({algorithm}) is not implemented in quantir "
                                   f"(only {implemented}); remove the line or set "
                                   f"policy=disabled")
        if set(keywords) != {"policy"}:
            extra = sorted(set(keywords) - {"policy"})
            problem = f"'{extra[0]}' is not supported" if extra else "policy is missing"
            raise self.error(line, f"{command}({algorithm}): {problem}; write "
                                   f"{command}({algorithm}, policy=enabled) (quantir applies "
                                   f"it to the whole model)")
        setattr(config, algorithm, self.enabled(statement, "policy", keywords["policy"]))

    def model_optimization_flavor(self, statement: _Statement, config: QuantConfig) -> None:
        line = statement.line
        if statement.positional:
            raise self.error(line, "model_optimization_flavor takes only key=value arguments, "
                                   "e.g. model_optimization_flavor(optimization_level=0)")
        for key, value in statement.keywords.items():
            if key == "compression_level":
                if self.integer(statement, key, value, 0) > 0:
                    raise self.error(line, f"compression_level={value} lets Hailo pick 4-bit "
                                           f"layers; quantir does not - set "
                                           f"precision_mode=a8_w4 with quantization_param on the "
                                           f"layers you choose and set compression_level=0")
            elif key in ("optimization_level", "batch_size"):
                self.integer(statement, key, value, 0)
                self.warn(line, f"model_optimization_flavor: {key} is ignored; quantir runs "
                                f"only what the script enables (equalization, bias_correction)")
            else:
                raise self.error(line, f"model_optimization_flavor: unknown key '{key}'; use "
                                       f"{', '.join(_FLAVOR_KEYS)}")


def _describe(value: _Value) -> str:
    if isinstance(value, _Globs):
        return "a {glob} list"
    if isinstance(value, list):
        return "a [list]"
    if isinstance(value, _Quoted):
        return f"the string \"{value.text}\""
    return f"'{value}'"


def parse_model_script(text: str, path: str = "<script>", base: QuantConfig | None = None) \
        -> QuantConfig:
    """A QuantConfig from a model script (Hailo .alls syntax; see the module docstring).

    The script's rules are appended to `base`'s (which is not modified) and its settings
    replace `base`'s. Commands quantir ignores are reported as QuantirWarnings.
    """
    config = QuantConfig() if base is None else replace(base, rules=list(base.rules))
    return _Script(text, path).run(config)


def load_model_script(path: str | Path, base: QuantConfig | None = None) -> QuantConfig:
    """`parse_model_script` on a file; errors name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise QuantirError(f"{path}: cannot read the model script ({error.strerror or error}); "
                           f"check the path") from None
    except UnicodeDecodeError as error:
        raise QuantirError(f"{path}: the model script is not UTF-8 text ({error.reason}); "
                           f"save it as text") from None
    return parse_model_script(text, str(path), base)
