"""`legality{target=T}`: every op the target cannot run as configured, and how to fix it.

The check reads the quantization-annotated module (level 2) from the types of its
values, never from the configuration that produced them:

* a layer (an `nn` op and the batch norm / activation fused into it, see
  `quantize.group_layers`) runs at the widths its operands are dequantized from and
  its output is quantized to: `a<input>_w<second operand>[_a<output>]`, its weights
  per-channel or per-tensor, its bias i32 (single_scale_decomposition) or i16
  (double_scale_initialization); a layer whose output is not quantized runs in float;
* a `q.precision_change` converts one storage type to another (it sits between the
  two layers its `producer` / `consumer` name; `reason` names the configuration
  lines that chose the widths);
* every activation (`q.quantize`, `q.precision_change` result) has a signedness;
* a `q.requant` (integer program) has a rounding mode and converts its input width.

On an integer program (IR level 3) the qi ops are this runtime's implementation of
the layers (16-bit products split into bytes, tables): what is checked there is every
requant, every activation's signedness, and the nn ops: data movement on quantized
tensors, and the layers left computing in float (fallbacks, whose q.quantize is the
conversion for their integer readers). Precision modes are a property of the
annotated module; `quantir quantize --target` checks both levels.

Each problem is a `Diagnostic`: the op, the ONNX layers it came from (or the two it
sits between), its configuration, the target rule it breaks (file:line of the
target description) and concrete fixes (a configuration line, or `--legalize`).

Options: `target` (a shipped name or a .toml path; default cpu-ref), `mode=error`
(raise LegalityError listing them; the default) or `mode=report` (one QuantirWarning
each), `report=FILE.json` (every diagnostic, machine-readable; `-` for stderr).
The configuration lines come from the pipeline's QuantConfig when there is one,
else from the `reason` of the precision changes in the module.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, OpResult, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn, q
from quantir.errors import LegalityError, PipelineError
from quantir.ir import write_atomically
from quantir.passes.quantize import PASSTHROUGH, _constant_role, layer_groups, op_kind
from quantir.runtime.executor import main_function
from quantir.targets import DEFAULT_TARGET, Mode, OpRule, Target, load_target

DIAGNOSTIC_KINDS: tuple[str, ...] = (
    "unsupported-op", "precision-mode", "per-channel", "bias-width", "float-fallback",
    "precision-change", "requant", "rounding", "activation-signedness")
MODES: tuple[str, ...] = ("error", "report")

# --------------------------------------------------------------------------------------
# Reading the annotated module
# --------------------------------------------------------------------------------------


def element_of(value: SSAValue) -> q.QuantizedType | None:
    """The quantized element type of a tensor value, or None (float, integer, ...)."""
    type_ = value.type
    if isinstance(type_, TensorType) and isinstance(type_.element_type, q.QuantizedType):
        return type_.element_type
    return None


def is_float_tensor(value: SSAValue) -> bool:
    type_ = value.type
    return isinstance(type_, TensorType) and type_.element_type == nn.f32


def storage_text(qtype: q.QuantizedType) -> str:
    granularity = " per-channel" if isinstance(qtype, q.PerAxisQuantizedType) else ""
    return f"{qtype.storage_name}{granularity}"


@dataclass(frozen=True)
class Operand:
    """One operand of a layer's op: `role` is activation, weight, bias, param or data
    (a quantized constant, see quantize._constant_role) or float (not quantized)."""

    index: int
    role: str
    qtype: q.QuantizedType | None
    dequantize: q.DequantizeOp | None


def _operands(op: Operation) -> tuple[Operand, ...]:
    result = []
    for index, value in enumerate(op.operands):
        owner = value.owner
        # Dequantized (annotated module) or read quantized (data movement in the
        # integer program).
        source = owner.input if isinstance(owner, q.DequantizeOp) else value
        dequantize = owner if isinstance(owner, q.DequantizeOp) else None
        if element_of(source) is None:
            result.append(Operand(index, "float", None, None))
            continue
        constant = isinstance(source.owner, q.ConstantOp)
        role = _constant_role(op, index) if constant else "activation"
        result.append(Operand(index, role, element_of(source), dequantize))
    return tuple(result)


def _is_constant(value: SSAValue) -> bool:
    owner = value.owner
    return isinstance(owner, nn.ConstantOp | q.ConstantOp) or (
        isinstance(owner, q.DequantizeOp) and isinstance(owner.input.owner, q.ConstantOp))


def target_kind(op: Operation) -> str:
    """The op kind target rules name: `op_kind`, refined to `depthwise_conv` (one group
    per input channel) and `batch_matmul` (a matmul of two activations)."""
    kind = op_kind(op)
    if isinstance(op, nn.ConvOp):
        shape = op.operands[0].type.get_shape()  # type: ignore[attr-defined]
        group = op.props.int("group")
        if group > 1 and len(shape) > 1 and group == shape[1]:
            return "depthwise_conv"
    if isinstance(op, nn.MatMulOp) and not any(_is_constant(v) for v in op.operands):
        return "batch_matmul"
    return kind


@dataclass(frozen=True)
class Layer:
    """An nn op with the ops fused into it, as the annotated module runs it."""

    op: Operation
    members: tuple[Operation, ...]
    kind: str
    operands: tuple[Operand, ...]
    output: SSAValue | None
    quantize: q.QuantizeOp | None

    @property
    def name(self) -> str:
        return getattr(self.op, "node_name", self.op.name)

    @property
    def onnx_layers(self) -> tuple[str, ...]:
        return tuple(getattr(op, "node_name", op.name) for op in (self.op, *self.members))

    @property
    def numeric(self) -> bool:
        """False for ops computing indices or booleans: they have no precision."""
        return self.output is not None and (is_float_tensor(self.output)
                                            or element_of(self.output) is not None)

    @property
    def in_float(self) -> bool:
        return self.output is not None and is_float_tensor(self.output) and self.quantize is None

    def output_type(self) -> q.QuantizedType | None:
        """What the layer writes: its output's quantize, or its own quantized result."""
        if self.quantize is not None:
            return element_of(self.quantize.output)
        return element_of(self.output) if self.output is not None else None

    def role(self, role: str) -> Operand | None:
        return next((o for o in self.operands if o.role == role and o.qtype is not None), None)

    @property
    def weight(self) -> Operand | None:
        return self.role("weight")

    @property
    def bias(self) -> Operand | None:
        return self.role("bias")

    @property
    def has_second_input(self) -> bool:
        return len(self.operands) > 1 and self.operands[1].qtype is not None

    def mode(self) -> Mode | None:
        """Input width, second operand width (weights; the input's when there is no
        quantized second operand), output width; None for a float layer."""
        output = self.output_type()
        if output is None:
            return None
        first = self.operands[0].qtype if self.operands else None
        activation = first.storage_bits if first is not None else output.storage_bits
        second = self.operands[1].qtype if len(self.operands) > 1 else None
        weight = second.storage_bits if second is not None else activation
        return Mode(activation, weight, output.storage_bits)


class Annotated:
    """The main function of an annotated module with its layers indexed."""

    def __init__(self, module: ModuleOp):
        self.function: func.FuncOp = main_function(module)
        ops = [op for op in self.function.body.block.ops
               if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp)]
        groups = layer_groups(ops)
        self.layers: list[Layer] = []
        self.by_op: dict[Operation, Layer] = {}
        # In an integer program every integer layer is a qi op and a requant; an nn op
        # left computing a float value is a float fallback, and the quantize after it
        # is the conversion for its integer readers, not the layer's own output.
        self.integer_program = integer_program = any(
            isinstance(op, q.RequantOp) for op in self.function.body.block.ops)
        for op, group in groups.items():
            chain = group[1:]
            last = group[-1]
            output = last.results[0] if last.results else None
            quantize = None if output is None or \
                (integer_program and is_float_tensor(output)) else next(
                    (use.operation for use in output.uses
                     if isinstance(use.operation, q.QuantizeOp)), None)
            layer = Layer(op, tuple(chain), target_kind(op), _operands(op), output,
                          quantize)  # type: ignore[arg-type]
            self.layers.append(layer)
            for each in (op, *chain):
                self.by_op[each] = layer

    def producer(self, quantize: q.QuantizeOp) -> Layer | None:
        """The layer whose output a quantize encodes (None: a model input)."""
        value = quantize.input
        return self.by_op.get(value.op) if isinstance(value, OpResult) else None

    def origin(self, value: SSAValue) -> tuple[q.QuantizeOp | None, Layer | None]:
        """The first quantize of the encoding a quantized value carries (through
        precision changes' inputs and data movement), and the layer writing it."""
        owner = value.owner
        if isinstance(owner, q.PrecisionChangeOp):
            owner = owner.input.owner
        if not isinstance(owner, q.QuantizeOp):
            return None, None
        start = origin_quantize(owner)
        return start, self.producer(start)


def origin_quantize(quantize: q.QuantizeOp) -> q.QuantizeOp:
    """Walk back through data movement that passes one encoding on unchanged."""
    current = quantize
    while True:
        producer = current.input.owner
        if not isinstance(producer, PASSTHROUGH):
            return current
        source = producer.operands[0].owner
        if not isinstance(source, q.DequantizeOp) or \
                not isinstance(source.input.owner, q.QuantizeOp):
            return current
        previous = source.input.owner
        if element_of(previous.output) != element_of(current.output):
            return current
        current = previous


def readers(value: SSAValue) -> list[Operation]:
    """The ops reading a quantized value through q.dequantize (or directly)."""
    found: list[Operation] = []
    for use in value.uses:
        user = use.operation
        if isinstance(user, q.DequantizeOp):
            found.extend(u.operation for u in user.output.uses if u.operation not in found)
        elif user not in found:
            found.append(user)
    return found


def node_name(op: Operation) -> str:
    if isinstance(op, func.ReturnOp):
        return "the model output"
    return getattr(op, "node_name", op.name)


# --------------------------------------------------------------------------------------
# Where the configuration came from
# --------------------------------------------------------------------------------------

_REASON = re.compile(r"(?P<producer>.+) writes (?P<produced>\d+) bits \((?:as (?P<origin>.+?): )?"
                     r"(?P<psource>[^()]*)\); (?P<consumer>.+) reads (?P<consumed>\d+) bits "
                     r"\((?P<csource>[^()]*)\)")


@dataclass(frozen=True)
class Reason:
    """A precision change's `reason` as the quantize pass writes it."""

    producer: str
    origin: str
    produced: int
    producer_source: str
    consumer: str
    consumed: int
    consumer_source: str

    @staticmethod
    def parse(text: str | None) -> Reason | None:
        match = _REASON.fullmatch(text or "")
        if match is None:
            return None
        producer = match.group("producer")
        return Reason(producer, match.group("origin") or producer, int(match.group("produced")),
                      match.group("psource"), match.group("consumer"),
                      int(match.group("consumed")), match.group("csource"))


class Sources:
    """The configuration line that set each layer: from the QuantConfig when given,
    else from the reasons of the module's precision changes."""

    def __init__(self, config: Any, function: func.FuncOp):
        self.config = config
        self.recorded: dict[str, str] = {}
        for op in function.body.block.ops:
            if isinstance(op, q.PrecisionChangeOp):
                reason = Reason.parse(op.reason.data if op.reason else None)
                if reason is not None:
                    self.recorded.setdefault(reason.origin, reason.producer_source)
                    self.recorded.setdefault(reason.consumer, reason.consumer_source)

    def of(self, layer: Layer | None) -> str | None:
        if layer is None:
            return None
        if self.config is not None and hasattr(self.config, "layer"):
            return self.config.layer(layer.name, op_kind(layer.op)).source
        return self.recorded.get(layer.name)


def _user_source(source: str | None) -> bool:
    """A source the user can edit (not the built-in default)."""
    return bool(source) and source not in ("default", "model input")


# --------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnostic:
    """One op the target cannot run as configured."""

    kind: str
    op: str
    name: str
    layers: tuple[str, ...]
    between: bool
    config: tuple[tuple[str, str], ...]
    rule: str
    rule_at: str
    fixes: tuple[str, ...]
    set_by: tuple[str, ...] = ()
    ir: Operation | None = field(default=None, compare=False, repr=False)
    """The op in the module (for legalize; not part of the report)."""

    def message(self) -> str:
        if self.between:
            where = f"between {self.layers[0]} and {self.layers[1]}"
        elif self.kind == "activation-signedness":
            where = f"tensors {', '.join(self.layers)}"
        else:
            where = f"ONNX {'layers' if len(self.layers) > 1 else 'layer'} " \
                    f"{' + '.join(self.layers)}"
        config = ", ".join(f"{key} {value}" for key, value in self.config)
        text = f"{self.op} '{self.name}' ({where}): {config}; {self.rule} ({self.rule_at})"
        if self.set_by:
            text += f"; set by {', '.join(self.set_by)}"
        return f"{text}; fix: {'; or '.join(self.fixes)}"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "op": self.op, "name": self.name, "layers": list(self.layers),
                "between": self.between, "config": dict(self.config), "rule": self.rule,
                "rule_at": self.rule_at, "set_by": list(self.set_by), "fixes": list(self.fixes),
                "message": self.message()}


@dataclass(frozen=True)
class Change:
    """One repair legalize made."""

    kind: str
    op: str
    name: str
    text: str

    def message(self) -> str:
        return f"{self.op} '{self.name}': {self.text}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "op": self.op, "name": self.name, "text": self.text}


@dataclass
class LegalityReport:
    target: Target
    diagnostics: list[Diagnostic]
    changes: list[Change] = field(default_factory=list)
    checked: int = 0
    integer_program: bool = False
    """IR level 3: its qi ops are this runtime's implementation of the layers (byte
    splits and all), so precision modes are checked on the annotated module; here,
    requants, signedness and the ops left in float."""

    @property
    def legal(self) -> bool:
        return not self.diagnostics

    def counts(self) -> dict[str, int]:
        counted = Counter(d.kind for d in self.diagnostics)
        return {kind: counted[kind] for kind in DIAGNOSTIC_KINDS if counted[kind]}

    def summary(self) -> str:
        name = self.target.name
        if self.legal:
            scope = "; an integer program: precision modes are checked on the annotated " \
                "module" if self.integer_program else ""
            return f"{name}: legal ({self.checked} ops checked{scope})"
        counts = ", ".join(f"{count} {kind}" for kind, count in self.counts().items())
        return (f"{name}: {plural(len(self.diagnostics), 'op')} cannot run as configured "
                f"({counts}); fix the lines below or rerun with --legalize")

    def error(self, summary: str | None = None) -> LegalityError:
        return LegalityError(summary or self.summary(),
                             tuple(d.message() for d in self.diagnostics))

    def to_json(self) -> dict[str, object]:
        return {"target": self.target.name, "target_file": str(self.target.path),
                "legal": self.legal, "checked": self.checked,
                "integer_program": self.integer_program, "summary": self.counts(),
                "diagnostics": [d.to_json() for d in self.diagnostics],
                "changes": [c.to_json() for c in self.changes]}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def write_report(path: str, report: LegalityReport) -> None:
    """The report as JSON at `path` (written whole or not at all); `-`: stderr."""
    text = json.dumps(report.to_json(), indent=2) + "\n"
    if path == "-":
        sys.stderr.write(text)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, text)


# --------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------


def nearest_mode(rule: OpRule, mode: Mode, layer: Layer) -> Mode | None:
    """The allowed mode closest to `mode`: keep the input width, then the output width,
    then the weight width; among equals the widest. A layer without a second operand
    can only take modes whose second width is its input width."""
    if rule.allows(mode):
        return mode
    candidates = [m for m in rule.modes
                  if layer.has_second_input or m.weight == m.activation]
    if not candidates:
        return None
    return min(candidates, key=lambda m: (m.activation != mode.activation,
                                          m.output != mode.output, m.weight != mode.weight,
                                          -(m.activation + m.weight + m.output)))


def fold_mode(layer: Layer | None, target: Target, bits: int) -> Mode | None:
    """The legal mode in which `layer` writes `bits` directly: its own widths with the
    new output when the target allows that, else the nearest mode writing `bits`;
    None if it has none. A model input (layer None) is quantized on the host."""
    if layer is None:
        return Mode(bits, bits, bits)
    mode = layer.mode()
    rule = target.rule(layer.kind)
    if mode is None or rule is None:
        return None
    folded = Mode(mode.activation, mode.weight, bits)
    if rule.allows(folded):
        return folded
    options = [m for m in rule.modes if m.output == bits
               and (layer.has_second_input or m.weight == m.activation)]
    return min(options, key=lambda m: (m.activation != mode.activation,
                                       m.weight != mode.weight, -(m.activation + m.weight)),
               default=None)


def read_mode(layer: Layer, target: Target, bits: int) -> Mode | None:
    """A legal mode in which `layer` reads `bits` and writes what it writes now."""
    mode = layer.mode()
    rule = target.rule(layer.kind)
    if mode is None or rule is None:
        return None
    if rule.any_mode:
        return Mode(bits, bits if not layer.weight else mode.weight, mode.output)
    options = [m for m in rule.modes if m.activation == bits and m.output == mode.output
               and (layer.has_second_input or m.weight == m.activation)]
    return max(options, key=lambda m: m.weight, default=None)


def _layer_config(layer: Layer, mode: Mode | None) -> tuple[tuple[str, str], ...]:
    config = [("precision_mode", str(mode) if mode is not None else "float")]
    bias = layer.bias
    if bias is not None and bias.qtype is not None:
        named = "single_scale_decomposition" if bias.qtype.storage_bits == 32 else \
            "double_scale_initialization"
        config.append(("bias_mode", f"{named} ({bias.qtype.storage_name} bias)"))
    weight = layer.weight
    if weight is not None and weight.qtype is not None:
        config.append(("weights", storage_text(weight.qtype)))
    output = layer.output_type()
    if output is not None:
        config.append(("output", output.storage_name))
    return tuple(config)


def _glob(name: str) -> str:
    return "{" + name + "}"


class _Checker:
    def __init__(self, module: ModuleOp, target: Target, config: Any):
        self.annotated = Annotated(module)
        self.target = target
        self.sources = Sources(config, self.annotated.function)

    def run(self) -> LegalityReport:
        diagnostics: list[Diagnostic] = []
        checked = 0
        for op in self.annotated.function.body.block.ops:
            layer = self.annotated.by_op.get(op)
            if layer is not None and layer.op is op and layer.numeric:
                checked += 1
                diagnostics.extend(self.layer(layer))
            elif isinstance(op, q.PrecisionChangeOp):
                checked += 1
                diagnostics.extend(self.precision_change(op))
            elif isinstance(op, q.RequantOp):
                checked += 1
                diagnostics.extend(self.requant(op))
        diagnostics.extend(self.signedness())
        return LegalityReport(self.target, diagnostics, checked=checked,
                              integer_program=self.annotated.integer_program)

    # -- layers ------------------------------------------------------------------------

    def diagnostic(self, kind: str, layer: Layer, mode: Mode | None, rule: str, rule_at: str,
                   fixes: Sequence[str]) -> Diagnostic:
        source = self.sources.of(layer)
        return Diagnostic(kind, layer.op.name, layer.name, layer.onnx_layers, False,
                          _layer_config(layer, mode), rule, rule_at, tuple(fixes),
                          (source,) if source else (), layer.op)

    def fallback_fix(self, layer: Layer) -> list[str]:
        target = self.target
        if not target.falls_back(layer.kind):
            return []
        return [f"leave it in float on {target.fallback.where}: "
                f"quantization_param({_glob(layer.name)}, float=enabled)"]

    def layer(self, layer: Layer) -> list[Diagnostic]:
        target, name = self.target, self.target.name
        mode = layer.mode()
        source = self.sources.of(layer)
        if layer.in_float:
            if target.falls_back(layer.kind):
                return []
            change = f" at {source}" if _user_source(source) else ""
            return [self.diagnostic(
                "float-fallback", layer, None,
                f"{name} runs no {layer.kind} in float (fallback: {target.fallback.where})",
                target.where(target.fallback.line),
                [f"quantize it: drop float=enabled for {layer.name}{change}"])]
        rule = target.rule(layer.kind)
        if rule is None:
            fixes = self.fallback_fix(layer)
            if fixes:
                fixes.append(f"run with --legalize (moves it to float on "
                             f"{target.fallback.where})")
            else:
                fixes = [f"none in the configuration: {name} has no {layer.kind} and no float "
                         f"fallback; change the ONNX model or choose another target"]
            return [self.diagnostic("unsupported-op", layer, mode,
                                    f"{name} has no integer {layer.kind} (no [[op]] rule "
                                    f"names it)", target.label, fixes)]
        assert mode is not None
        found: list[Diagnostic] = []
        if not rule.allows(mode):
            found.append(self.diagnostic(
                "precision-mode", layer, mode,
                f"{name} runs {layer.kind} in {rule.modes_text()}", target.where(rule.line),
                self.mode_fixes(layer, rule, mode, source)))
        weight = layer.weight
        if weight is not None and isinstance(weight.qtype, q.PerAxisQuantizedType) \
                and not rule.per_channel:
            found.append(self.diagnostic(
                "per-channel", layer, mode,
                f"{name} takes per-tensor weights for {layer.kind}", target.where(rule.line),
                [f"quantize its weights per tensor: quantization_param({_glob(layer.name)}, "
                 f"weights=per_tensor), or --weights per-tensor for every layer",
                 "run with --legalize (re-quantizes the weights per tensor)"]))
        bias = layer.bias
        if bias is not None and bias.qtype is not None \
                and bias.qtype.storage_bits not in rule.bias_bits:
            wanted = "single_scale_decomposition" if 32 in rule.bias_bits else \
                "double_scale_initialization"
            found.append(self.diagnostic(
                "bias-width", layer, mode,
                f"{name} takes {'/'.join(map(str, rule.bias_bits))}-bit biases for "
                f"{layer.kind}", target.where(rule.line),
                [f"quantization_param({_glob(layer.name)}, bias_mode={wanted})",
                 "run with --legalize (re-quantizes the bias)"]))
        return found

    def mode_fixes(self, layer: Layer, rule: OpRule, mode: Mode, source: str | None) \
            -> list[str]:
        nearest = nearest_mode(rule, mode, layer)
        fixes = []
        if isinstance(layer.op, PASSTHROUGH) and layer.quantize is not None:
            _, origin = self.annotated.origin(layer.quantize.output)
            if origin is not None and origin is not layer:
                origin_source = self.sources.of(origin)
                where = f" ({origin_source})" if origin_source else ""
                fixes.append(f"it passes on the {mode.output}-bit output of {origin.name}: "
                             f"change that layer's precision{where}")
        if nearest is not None:
            fixes.append(f"set precision_mode={nearest}: "
                         f"quantization_param({_glob(layer.name)}, precision_mode={nearest})")
        if _user_source(source):
            fixes.append(f"change {source} so it does not set {mode} on {layer.name}")
        fixes.extend(self.fallback_fix(layer))
        if nearest is not None:
            fixes.append(f"run with --legalize (sets {nearest})")
        elif self.target.falls_back(layer.kind):
            fixes.append(f"run with --legalize (moves it to float on "
                         f"{self.target.fallback.where})")
        return fixes

    # -- precision changes, requants ---------------------------------------------------

    def converts(self, source: q.QuantizedType, result: q.QuantizedType) -> bool:
        """Whether the target converts source -> result; a conversion it has with its
        own signedness counts (the signedness diagnostic covers the sign)."""
        target = self.target
        ends = ((source.storage_bits, source.is_signed), (result.storage_bits, result.is_signed))
        if target.conversion(*ends) is not None:
            return True
        if target.activation_signedness == "any":
            return False
        signed = target.activation_signedness == "signed"
        return target.conversion((source.storage_bits, signed),
                                 (result.storage_bits, signed)) is not None

    def conversions_rule(self) -> tuple[str, str]:
        target = self.target
        if not target.conversions:
            return f"{target.name} converts no width to another", target.label
        listed = ", ".join(map(str, target.conversions))
        return f"{target.name} converts {listed}", target.where(target.conversions[0].line)

    def precision_change(self, change: q.PrecisionChangeOp) -> list[Diagnostic]:
        source, result = element_of(change.input), element_of(change.output)
        assert source is not None and result is not None
        if self.converts(source, result):
            return []
        _, origin = self.annotated.origin(change.input)
        consumers = [self.annotated.by_op.get(op) for op in readers(change.output)]
        consumer_names = [node_name(op) for op in readers(change.output)]
        reason = Reason.parse(change.reason.data if change.reason else None)
        set_by = []
        if reason is not None:
            set_by = [f"{reason.origin} writes {reason.produced} bits ({reason.producer_source})",
                      f"{reason.consumer} reads {reason.consumed} bits ({reason.consumer_source})"]
        elif change.reason is not None:
            set_by = [change.reason.data]
        producer, consumer = change.producer.data, change.consumer.data
        config = [("precision_mode", str(Mode(source.storage_bits, source.storage_bits,
                                              result.storage_bits))),
                  ("conversion", f"{source.storage_name} -> {result.storage_name}"),
                  ("signed_output", "true" if result.is_signed else "false")]
        others = [n for n in consumer_names if n != consumer]
        if others:
            config.append(("also read by", ", ".join(others)))
        rule, rule_at = self.conversions_rule()
        fixes = self.change_fixes(change, origin, [c for c in consumers if c is not None],
                                  reason)
        return [Diagnostic("precision-change", change.name, change.onnx_name.data,
                           (producer, consumer), True, tuple(config),
                           f"{rule}, not {source.storage_name} -> {result.storage_name}", rule_at,
                           tuple(fixes), tuple(set_by), change)]

    def change_fixes(self, change: q.PrecisionChangeOp, origin: Layer | None,
                     consumers: Sequence[Layer], reason: Reason | None) -> list[str]:
        source, result = element_of(change.input), element_of(change.output)
        assert source is not None and result is not None
        fixes = []
        folded = fold_mode(origin, self.target, result.storage_bits)
        if origin is not None and folded is not None:
            fixes.append(f"make {origin.name} write {result.storage_bits} bits: "
                         f"quantization_param({_glob(origin.name)}, precision_mode={folded})")
        for consumer in consumers:
            read = read_mode(consumer, self.target, source.storage_bits)
            if read is not None:
                fixes.append(f"make {consumer.name} read {source.storage_bits} bits: "
                             f"quantization_param({_glob(consumer.name)}, precision_mode={read})")
        lines = [] if reason is None else [
            s for s in (reason.producer_source, reason.consumer_source) if _user_source(s)]
        if lines:
            fixes.append(f"change {' or '.join(dict.fromkeys(lines))} so both sides use one "
                         f"width")
        if folded is not None:
            producer = origin.name if origin is not None else "the model input"
            fixes.append(f"run with --legalize (folds it into {producer}, which then writes "
                         f"{result.storage_name} directly)")
        if not fixes:
            fixes.append(f"none on {self.target.name}: neither side can take the other's width")
        return fixes

    def requant(self, op: q.RequantOp) -> list[Diagnostic]:
        """Integer-program requants: the rounding mode, and the conversion between two
        activation widths (a requant from or to 32 bits rescales an accumulator inside
        its op)."""
        target = self.target
        found = []
        layers = (op.onnx_name.data,)
        result = element_of(op.output)
        assert result is not None
        config = (("rounding", op.rounding_mode), ("output", result.storage_name))
        if op.rounding_mode not in target.rounding:
            found.append(Diagnostic(
                "rounding", op.name, op.onnx_name.data, layers, False, config,
                f"{target.name} rounds {', '.join(target.rounding)}",
                target.where(target.lines.get("rounding", 1)),
                (f"lower with rounding={target.rounding[0]}",), ir=op))
        source = element_of(op.input)
        if source is not None and source.storage_bits != result.storage_bits \
                and max(source.storage_bits, result.storage_bits) < 32 \
                and not self.converts(source, result):
            rule, rule_at = self.conversions_rule()
            found.append(Diagnostic(
                "requant", op.name, op.onnx_name.data, layers, False,
                (*config, ("conversion", f"{source.storage_name} -> {result.storage_name}")),
                f"{rule}, not {source.storage_name} -> {result.storage_name}", rule_at,
                ("give both layers one width (see the precision-change fixes)",), ir=op))
        return found

    # -- signedness --------------------------------------------------------------------

    def signedness(self) -> list[Diagnostic]:
        target = self.target
        wrong: list[tuple[Operation, q.QuantizedType]] = []
        for op in self.annotated.function.body.block.ops:
            if isinstance(op, q.QuantizeOp | q.PrecisionChangeOp | q.RequantOp):
                element = element_of(op.output)
                if element is not None and element.storage_bits < 32 \
                        and not target.signedness_ok(element.is_signed):
                    wrong.append((op, element))
        if not wrong:
            return []
        counts = Counter(element.storage_name for _, element in wrong)
        names = [node_name(op) for op, _ in wrong]
        shown = names[:3] + ([f"{len(names) - 3} more"] if len(names) > 3 else [])
        wanted = "u" if target.activation_signedness == "unsigned" else "i"
        return [Diagnostic(
            "activation-signedness", "q.quantize", f"{len(wrong)} activation tensors",
            tuple(shown), False,
            (("storage", ", ".join(f"{count} x {name}" for name, count in counts.items())),),
            f"{target.name} stores activations {target.activation_signedness}",
            target.where(target.lines.get("activation_signedness", 1)),
            (f"run with --legalize (re-expresses them as {wanted}8 / {wanted}16 with the zero "
             f"point moved by 2^(bits-1): exact; no configuration line sets the signedness)",))]


def check(module: ModuleOp, target: Target, config: Any = None) -> LegalityReport:
    """Every diagnostic of an annotated module on a target (see the module docstring)."""
    return _Checker(module, target, config).run()


def report_diagnostics(report: LegalityReport, mode: str, path: str | None,
                       summary: str | None = None) -> None:
    """Write the report file, then raise (mode=error) or warn (mode=report)."""
    from quantir.passes.qconfig import QuantirWarning

    if path:
        write_report(path, report)
    if report.legal:
        return
    if mode == "error":
        raise report.error(summary)
    warnings.warn(summary or report.summary(), QuantirWarning, stacklevel=3)
    for diagnostic in report.diagnostics:
        warnings.warn(diagnostic.message(), QuantirWarning, stacklevel=3)


def check_mode(mode: str, pass_name: str) -> None:
    if mode not in MODES:
        raise PipelineError(f"{pass_name}: mode={mode} is not valid; use error (stop on an "
                            f"illegal module) or report (warn and go on)")


@dataclass(frozen=True)
class LegalityPass(ModulePass):
    """Report every op the target cannot run as configured (see the module docstring)."""

    name = "legality"

    target: str = DEFAULT_TARGET
    mode: str = "error"
    report: str | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_mode(self.mode, "legality")
        result = check(op, load_target(self.target), getattr(ctx, "config", None))
        report_diagnostics(result, self.mode, self.report)


__all__ = ["Annotated", "Change", "Diagnostic", "Layer", "LegalityPass", "LegalityReport",
           "check", "fold_mode", "nearest_mode", "origin_quantize", "read_mode", "readers",
           "target_kind", "write_report"]
