"""`legalize{target=T}`: repair what the target cannot run, and say what changed.

Works on the quantization-annotated module, driven by the legality diagnostics
(legality.py), until a round repairs nothing more:

* activation signedness: every activation the target stores with the other sign is
  re-expressed (`i8` zero point z -> `u8` zero point z + 128, ...): exact;
* a layer in a precision mode the target does not run moves to the nearest mode it
  does (`legality.nearest_mode`): inputs are read at the new width (through a
  precision change), weights and other constants re-quantized from their values,
  the int32 bias re-quantized at the new s_x * s_w, the output written at the new
  width; per-channel weights the target does not take become per-tensor; a bias
  width it does not take becomes one it does;
* a layer with no legal integer form moves to float (its q ops are removed: it reads
  its producers' values dequantized, its constants become float) where the target
  lets that kind fall back, else it stays and is reported;
* a precision change the target cannot convert is folded into its producer: the
  layer before it (through data movement) writes the consumer's encoding directly
  and the change disappears; readers that wanted the old width get a precision
  change from the new one. If the producer cannot write that width, the consumers
  read the producer's width instead, where their rules allow it.

Every change is a `Change` (reported as a QuantirWarning by the pass, printed by
`quantir quantize --legalize`, written to `report=FILE.json`). What remains illegal
raises LegalityError naming why it could not be repaired (`mode=report`: warnings).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Block, Operation, OpResult, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from quantir.dialects import nn, q
from quantir.dialects.q_math import dequantize_array, encoding_from_range, quantize_array
from quantir.errors import LegalityError
from quantir.ir import array_of, dense_of, is_elided
from quantir.passes.legality import (
    Annotated,
    Change,
    Diagnostic,
    Layer,
    LegalityReport,
    Operand,
    check,
    check_mode,
    element_of,
    fold_mode,
    nearest_mode,
    node_name,
    origin_quantize,
    plural,
    read_mode,
    readers,
    write_report,
)
from quantir.passes.quantize import PASSTHROUGH, _constant_type, bias_type
from quantir.passes.ranges import get_range
from quantir.runtime.executor import main_function
from quantir.targets import DEFAULT_TARGET, Mode, OpRule, Target, load_target

MAX_ROUNDS = 8
"""Repairs can expose others (a demoted layer needs a narrower input, whose precision
change then needs folding); the rounds stop earlier once nothing changes."""

LAYER_KINDS = ("unsupported-op", "precision-mode", "per-channel", "bias-width")


class _Stuck(Exception):
    """A repair that cannot be made; the message says why."""


def _tensor(like: SSAValue, element: q.QuantizedType) -> TensorType:
    type_ = like.type
    assert isinstance(type_, TensorType)
    return TensorType(element, type_.get_shape())


def _symmetric(qtype: q.QuantizedType, low: float, high: float) -> bool:
    """Whether a per-tensor encoding of the range [low, high] is the symmetric one (the
    two differ in scale), as the quantize pass chose it."""
    symmetric = encoding_from_range(low, high, bits=qtype.storage_bits, symmetric=True,
                                    signed=qtype.is_signed)
    return bool(np.isclose(symmetric.scale, qtype.scales[0], rtol=1e-9, atol=0.0))


def _check_loaded(constant: q.ConstantOp) -> None:
    if is_elided(constant.value):
        raise _Stuck(f"the values of '{constant.node_name}' were elided when the module was "
                     f"printed; print it with --print-large-constants")


def _values(constant: q.ConstantOp, qtype: q.QuantizedType) -> np.ndarray:
    _check_loaded(constant)
    return dequantize_array(array_of(constant.value), qtype)  # type: ignore[arg-type]


def _flip_signedness(qtype: q.QuantizedType) -> q.QuantizedType:
    """The same encoding on storage of the other sign: zero points move by 2^(bits-1)."""
    bits = qtype.storage_bits
    shift = (1 << (bits - 1)) * (1 if qtype.is_signed else -1)
    storage = f"{'u' if qtype.is_signed else 'i'}{bits}"
    zero_points = [zp + shift for zp in qtype.zero_points]
    if isinstance(qtype, q.PerAxisQuantizedType):
        return q.PerAxisQuantizedType.get(storage, qtype.scales, zero_points, qtype.axis,
                                          qtype.expressed_type)
    return q.UniformQuantizedType.get(storage, qtype.scales[0], zero_points[0],
                                      qtype.expressed_type)


@dataclass
class _Group:
    """The values carrying one encoding: a quantize, the data movement after it that
    passes the encoding on, the precision changes reading them and every other reader."""

    quantizes: list[q.QuantizeOp] = field(default_factory=list)
    movers: list[Operation] = field(default_factory=list)
    changes: list[q.PrecisionChangeOp] = field(default_factory=list)
    readers: list[tuple[q.DequantizeOp, Operation]] = field(default_factory=list)
    unknown: list[Operation] = field(default_factory=list)


def _group(start: q.QuantizeOp) -> _Group:
    group = _Group()
    encoding = element_of(start.output)
    pending = [start]
    while pending:
        quantize = pending.pop()
        group.quantizes.append(quantize)
        for use in quantize.output.uses:
            user = use.operation
            if isinstance(user, q.PrecisionChangeOp):
                group.changes.append(user)
                continue
            if not isinstance(user, q.DequantizeOp):
                group.unknown.append(user)
                continue
            for reader in dict.fromkeys(u.operation for u in user.output.uses):
                passed = [u.operation for r in reader.results for u in r.uses
                          if isinstance(u.operation, q.QuantizeOp)
                          and element_of(u.operation.output) == encoding]
                if isinstance(reader, PASSTHROUGH) and reader.operands[0] is user.output \
                        and passed and len(passed) == len(reader.results):
                    group.movers.append(reader)
                    pending.extend(passed)  # type: ignore[arg-type]
                else:
                    group.readers.append((user, reader))
    return group


class _Legalizer:
    def __init__(self, module: ModuleOp, target: Target, config: Any):
        self.module = module
        self.target = target
        self.config = config
        self.changes: list[Change] = []
        self.stuck: dict[Operation, str] = {}

    @property
    def block(self) -> Block:
        return main_function(self.module).body.block

    def note(self, kind: str, op: Operation, name: str, text: str) -> None:
        self.changes.append(Change(kind, op.name, name, text))

    # -- the rounds --------------------------------------------------------------------

    def run(self) -> LegalityReport:
        for _ in range(MAX_ROUNDS):
            # A repair stuck in one round may work after others: each round retries.
            self.stuck = {}
            repaired = self.signedness()
            for diagnostic in self.check().diagnostics:
                if diagnostic.kind in LAYER_KINDS:
                    repaired = self.attempt(diagnostic, self.repair_layer) or repaired
                elif diagnostic.kind == "float-fallback" and diagnostic.ir is not None:
                    self.stuck[diagnostic.ir] = ("legalize never quantizes a layer the "
                                                 "configuration leaves in float")
            for diagnostic in self.check().diagnostics:
                if diagnostic.kind == "precision-change":
                    repaired = self.attempt(diagnostic, self.repair_change) or repaired
            if not repaired:
                break
        report = self.check()
        report.changes = self.changes
        return report

    def check(self) -> LegalityReport:
        return check(self.module, self.target, self.config)

    def attempt(self, diagnostic: Diagnostic,
                repair: Callable[[Operation, Diagnostic], bool]) -> bool:
        op = diagnostic.ir
        if op is None or op.parent is None or op in self.stuck:
            return False
        try:
            return bool(repair(op, diagnostic))
        except _Stuck as why:
            self.stuck[op] = str(why)
            return False

    def explain(self, report: LegalityReport) -> list[str]:
        lines = []
        for diagnostic in report.diagnostics:
            why = self.stuck.get(diagnostic.ir) if diagnostic.ir is not None else None
            lines.append(diagnostic.message() + (f" [legalize could not: {why}]" if why else ""))
        return lines

    # -- signedness --------------------------------------------------------------------

    def signedness(self) -> bool:
        if self.target.activation_signedness == "any":
            return False
        signed = self.target.activation_signedness == "signed"
        count = 0
        for op in list(self.block.ops):
            if isinstance(op, q.QuantizeOp | q.PrecisionChangeOp | q.RequantOp):
                element = element_of(op.output)
                if element is not None and element.storage_bits < 32 \
                        and element.is_signed != signed:
                    Rewriter.replace_value_with_new_type(
                        op.output, _tensor(op.output, _flip_signedness(element)))
                    count += 1
        if count:
            storage = "signed" if signed else "unsigned"
            self.changes.append(Change(
                "signedness", "q.quantize", f"{count} activation tensors",
                f"re-expressed on {storage} storage (zero points moved by 2^(bits-1); the "
                f"values are unchanged) for {self.target.name}"))
        return count > 0

    # -- layers ------------------------------------------------------------------------

    def repair_layer(self, op: Operation, diagnostic: Diagnostic) -> bool:
        layer = Annotated(self.module).by_op.get(op)
        if layer is None or layer.in_float:
            return False
        rule = self.target.rule(layer.kind)
        mode = layer.mode()
        if rule is None or mode is None:
            return self.to_float(layer, f"{self.target.name} has no integer {layer.kind}")
        nearest = nearest_mode(rule, mode, layer)
        if nearest is None:
            return self.to_float(layer, f"no mode of {self.target.name}'s {layer.kind} rule "
                                        f"({rule.modes_text()}) fits it")
        try:
            steps = self.reencode(layer, nearest, rule)
        except _Stuck as why:
            return self.to_float(layer, str(why))
        if not steps:
            return False
        text = f"{mode} -> {nearest}" if nearest != mode else f"{mode}"
        self.note(diagnostic.kind, op, layer.name,
                  f"precision_mode {text} ({'; '.join(steps)}) for {self.target.name}")
        return True

    def to_float(self, layer: Layer, why: str) -> bool:
        """Run a layer in float where the target lets its kind fall back, as the quantize
        pass writes a float layer: it reads its producers' values dequantized (at the
        width they write), its constants become float, its output is not quantized and
        its readers read the float value."""
        target = self.target
        if not target.falls_back(layer.kind):
            raise _Stuck(f"{why}, and {target.name} runs no {layer.kind} in float")
        op, quantize, output = layer.op, layer.quantize, layer.output
        if quantize is None or output is None:
            raise _Stuck(f"{why}, and its output is not a quantized tensor")
        values = {}
        for operand in layer.operands:
            if operand.dequantize is not None and operand.role != "activation":
                constant = operand.dequantize.input.owner
                assert isinstance(constant, q.ConstantOp) and operand.qtype is not None
                values[operand.index] = _values(constant, operand.qtype).astype(np.float32)
        for operand in layer.operands:
            if operand.dequantize is None:
                continue
            if operand.index in values:
                constant = operand.dequantize.input.owner
                floated = nn.ConstantOp.build_from(
                    [], {"value": dense_of(values[operand.index])},
                    constant.node_name)  # type: ignore[union-attr]
                self.block.insert_op_before(floated, op)
                self.rewire(op, operand, floated.results[0])
            else:
                source = self.unconverted(operand.dequantize.input)
                self.rewire(op, operand, self.dequantized(source, operand.dequantize))
        # Readers (through precision changes too) read the float output; an integer
        # reader's int32 bias then gets its own scale, as the quantize pass gives it.
        dequantizes = [use.operation for use in quantize.output.uses]
        for user in list(dequantizes):
            if isinstance(user, q.PrecisionChangeOp):
                dequantizes.remove(user)
                dequantizes.extend(use.operation for use in user.output.uses)
        readers_of = [use.operation for d in dequantizes if isinstance(d, q.DequantizeOp)
                      for use in d.output.uses]
        for dequantize in dequantizes:
            if isinstance(dequantize, q.DequantizeOp):
                dequantize.output.replace_all_uses_with(output)
                self.drop_unused(dequantize)
        if not list(quantize.output.uses):
            self.block.erase_op(quantize)
        layers = Annotated(self.module).by_op
        for reader in dict.fromkeys(readers_of):
            read = layers.get(reader)
            rule = self.target.rule(read.kind) if read is not None else None
            if read is not None and rule is not None and read.op is reader:
                self.rebias(reader, rule)
        constants = "; its constants keep their quantized values, in float" if values else ""
        self.note("float-fallback", op, layer.name,
                  f"runs in float on {target.fallback.where} ({why}); it reads its inputs "
                  f"dequantized{constants}")
        return True

    def reencode(self, layer: Layer, mode: Mode, rule: OpRule,
                 output: q.QuantizedType | None = None) -> list[str]:
        """Move a layer to `mode` and to the rule's weight granularity and bias widths;
        `output`: the encoding to write (default: from the calibrated range, or an
        existing precision change to that width). The steps taken, as text. Raises
        _Stuck, changing nothing, when the output cannot change."""
        op, old = layer.op, layer.mode()
        assert old is not None
        for operand in layer.operands:  # fail before changing anything
            owner = operand.dequantize.input.owner if operand.dequantize is not None else None
            if isinstance(owner, q.ConstantOp):
                _check_loaded(owner)
        writes = None
        if mode.output != old.output:
            writes = self.plan_write(layer, mode.output, output)
        steps: list[str] = []
        for operand in layer.operands:
            if operand.qtype is None or operand.role in ("weight", "bias"):
                continue
            bits = mode.weight if operand.index == 1 or operand.role == "param" \
                else mode.activation
            if operand.qtype.storage_bits == bits:
                continue
            if operand.role == "activation":
                self.read_at(op, operand, bits)
                steps.append(f"reads operand {operand.index} at {bits} bits")
            else:
                # As the quantize pass: data constants asymmetric, parameters symmetric.
                self.requantize(op, operand, bits, operand.role != "data", None)
                steps.append(f"its constant operand {operand.index} in {bits} bits")
        weight = layer.weight
        if weight is not None and weight.qtype is not None:
            per_channel = isinstance(weight.qtype, q.PerAxisQuantizedType)
            keep_axis = per_channel and rule.per_channel
            if weight.qtype.storage_bits != mode.weight or per_channel != keep_axis:
                axis = weight.qtype.axis if keep_axis else None  # type: ignore[attr-defined]
                self.requantize(op, weight, mode.weight, True, axis)
                steps.append(f"weights re-quantized to {mode.weight} bits"
                             f"{' per channel' if keep_axis else ' per tensor'}")
        bias_step = self.rebias(op, rule)
        if bias_step:
            steps.append(bias_step)
        if writes is not None:
            group, wanted = writes
            self.retype(group, wanted, layer.name)
            moved = f" through {', '.join(node_name(m) for m in group.movers)}" \
                if group.movers else ""
            steps.append(f"writes {wanted.storage_name}{moved}")
        return steps

    def rebias(self, op: Operation, rule: OpRule) -> str | None:
        """Re-quantize a layer's bias when its s_x * s_w changed or its width is not allowed."""
        layer = Annotated(self.module).by_op[op]
        bias = layer.bias
        if bias is None or bias.qtype is None or bias.dequantize is None:
            return None
        constant = bias.dequantize.input.owner
        assert isinstance(constant, q.ConstantOp)
        values = _values(constant, bias.qtype)
        first, weight = layer.operands[0].qtype, layer.weight
        scale = first.scales[0] if isinstance(first, q.UniformQuantizedType) else None
        weight_type = weight.qtype if weight is not None else None
        bits = bias.qtype.storage_bits
        if bits not in rule.bias_bits:
            bits = 32 if 32 in rule.bias_bits else max(rule.bias_bits)
        if bits == 32:
            wanted = bias_type(values, scale, weight_type)
        else:
            wanted = bias_type(values, None, None, bits=bits)
        if wanted == bias.qtype:
            return None
        self.replace_constant(op, bias, constant, values, wanted)
        return f"bias re-quantized ({wanted.storage_name})"

    def requantize(self, op: Operation, operand: Operand, bits: int, symmetric: bool,
                   axis: int | None) -> None:
        assert operand.dequantize is not None and operand.qtype is not None
        constant = operand.dequantize.input.owner
        assert isinstance(constant, q.ConstantOp)
        values = _values(constant, operand.qtype)
        self.replace_constant(op, operand, constant, values,
                              _constant_type(values, bits, symmetric, axis))

    def replace_constant(self, op: Operation, operand: Operand, constant: q.ConstantOp,
                         values: np.ndarray, qtype: q.QuantizedType) -> None:
        assert operand.dequantize is not None
        shape = list(values.shape)
        new = q.ConstantOp(dense_of(quantize_array(values, qtype)), TensorType(qtype, shape),
                           constant.node_name)
        dequantize = q.DequantizeOp(new, operand.dequantize.onnx_name.data)
        self.block.insert_ops_before([new, dequantize], op)
        self.rewire(op, operand, dequantize.output)

    # -- reading and writing at a width ------------------------------------------------

    def rewire(self, op: Operation, operand: Operand, value: SSAValue) -> None:
        """Point one operand of `op` at `value` and drop what no longer has readers."""
        old = op.operands[operand.index]
        op.operands[operand.index] = value
        self.drop_unused(old.owner)

    def drop_unused(self, owner: Operation | Block) -> None:
        while isinstance(owner, q.DequantizeOp | q.PrecisionChangeOp | q.ConstantOp) \
                and not any(r.uses for r in owner.results):
            source = owner.operands[0].owner if owner.operands else None
            self.block.erase_op(owner)
            if source is None:
                return
            owner = source

    @staticmethod
    def unconverted(value: SSAValue) -> SSAValue:
        """The value a precision change reads, or the value itself."""
        owner = value.owner
        return owner.input if isinstance(owner, q.PrecisionChangeOp) else value

    def dequantized(self, value: SSAValue, like: q.DequantizeOp) -> SSAValue:
        """A q.dequantize of `value` (an existing one, or a new one after its definition)."""
        for use in value.uses:
            if isinstance(use.operation, q.DequantizeOp):
                return use.operation.output
        dequantize = q.DequantizeOp(value, like.onnx_name.data)
        assert isinstance(value, OpResult)
        self.block.insert_op_after(dequantize, value.op)
        return dequantize.output

    def read_at(self, op: Operation, operand: Operand, bits: int) -> None:
        """Make `op` read one activation operand at `bits` (a precision change from the
        producer's encoding, shared with other readers at that width)."""
        assert operand.dequantize is not None
        source = self.unconverted(operand.dequantize.input)
        element = element_of(source)
        assert element is not None
        if element.storage_bits == bits:
            value: SSAValue = source
        else:
            existing = [u.operation for u in source.uses
                        if isinstance(u.operation, q.PrecisionChangeOp)
                        and element_of(u.operation.output).storage_bits == bits]  # type: ignore[union-attr]
            value = existing[0].output if existing else self.convert(source, bits, op)
        self.rewire(op, operand, self.dequantized(value, operand.dequantize))

    def encoding_at(self, value: SSAValue, bits: int) -> q.QuantizedType:
        """The encoding of a quantized value at another width, from the calibrated range
        of the float tensor it encodes (else from the range its type spans)."""
        element = element_of(value)
        assert element is not None
        owner = value.owner
        found = None
        if isinstance(owner, q.QuantizeOp):
            found = get_range(origin_quantize(owner).input) or get_range(owner.input)
        if found is None:
            low, high = element.storage_min, element.storage_max
            zero, scale = element.zero_points[0], element.scales[0]
            found = ((low - zero) * scale, (high - zero) * scale)
        return encoding_from_range(*found, bits=bits, symmetric=_symmetric(element, *found),
                                   signed=element.is_signed).to_type()

    def convert(self, source: SSAValue, bits: int, consumer: Operation) -> SSAValue:
        owner = source.owner
        assert isinstance(owner, q.QuantizeOp | q.PrecisionChangeOp)
        _, origin = Annotated(self.module).origin(source)
        producer = origin.name if origin is not None else node_name(owner)
        element = element_of(source)
        assert element is not None
        change = q.PrecisionChangeOp(
            source, self.encoding_at(source, bits), f"{owner.onnx_name.data}.to_{bits}bit",
            producer=producer, consumer=node_name(consumer),
            reason=f"legalize{{target={self.target.name}}}: {producer} writes "
                   f"{element.storage_bits} bits; {node_name(consumer)} now reads {bits} bits")
        self.block.insert_op_after(change, owner)
        return change.output

    def plan_write(self, layer: Layer, bits: int, wanted: q.QuantizedType | None) \
            -> tuple[_Group, q.QuantizedType]:
        """What a layer writing `bits` changes: the values carrying its output encoding
        (through data movement, which must carry `bits` on the target) and the new
        encoding. Raises _Stuck when that cannot be done; changes nothing."""
        if layer.quantize is None:
            raise _Stuck(f"{layer.name} writes no quantized output")
        group = _group(layer.quantize)
        if wanted is None:
            existing = [element_of(c.output) for c in group.changes
                        if element_of(c.output).storage_bits == bits]  # type: ignore[union-attr]
            wanted = existing[0] if existing else self.encoding_at(layer.quantize.output, bits)
        assert wanted is not None
        self.check_retype(group, wanted)
        return group, wanted

    def check_retype(self, group: _Group, wanted: q.QuantizedType) -> None:
        if group.unknown:
            raise _Stuck(f"{node_name(group.unknown[0])} reads the encoding directly")
        for change in group.changes:
            element = element_of(change.output)
            assert element is not None
            if element.storage_bits == wanted.storage_bits and element != wanted:
                raise _Stuck(f"{change.onnx_name.data} converts to another {element.storage_name} "
                             f"encoding")
        layers = Annotated(self.module).by_op
        bits = wanted.storage_bits
        for mover in group.movers:
            layer = layers.get(mover)
            rule = self.target.rule(layer.kind) if layer is not None else None
            if layer is None or rule is None or not rule.allows(Mode(bits, bits, bits)):
                raise _Stuck(f"the data movement {node_name(mover)} after it cannot carry "
                             f"{bits} bits on {self.target.name}")

    def retype(self, group: _Group, wanted: q.QuantizedType, producer: str) -> None:
        """Give every value of a group the encoding `wanted` (see check_retype): precision
        changes to it disappear, readers that kept the old width read through one."""
        old = element_of(group.quantizes[0].output)
        assert old is not None
        for quantize in group.quantizes:
            Rewriter.replace_value_with_new_type(quantize.output, _tensor(quantize.output, wanted))
        for change in group.changes:
            if element_of(change.output) == wanted:
                change.output.replace_all_uses_with(change.input)
                self.block.erase_op(change)
        if old.storage_bits == wanted.storage_bits:
            return
        layers = Annotated(self.module).by_op
        for dequantize, reader in group.readers:
            layer = layers.get(reader)
            if layer is None or layer.in_float:
                continue  # the model output, or a float layer: reads any width
            old_value = self.convert_back(dequantize.input, old, producer, reader)
            fresh = self.dequantized(old_value, dequantize)
            for use in list(dequantize.output.uses):
                if use.operation is reader:
                    reader.operands[use.index] = fresh
            self.drop_unused(dequantize)

    def convert_back(self, value: SSAValue, old: q.QuantizedType, producer: str,
                     reader: Operation) -> SSAValue:
        """A precision change from `value` back to the encoding a reader kept."""
        for use in value.uses:
            if isinstance(use.operation, q.PrecisionChangeOp) and \
                    element_of(use.operation.output) == old:
                return use.operation.output
        owner = value.owner
        assert isinstance(owner, q.QuantizeOp)
        element = element_of(value)
        assert element is not None
        change = q.PrecisionChangeOp(
            value, old, f"{owner.onnx_name.data}.to_{old.storage_bits}bit", producer=producer,
            consumer=node_name(reader),
            reason=f"legalize{{target={self.target.name}}}: {producer} now writes "
                   f"{element.storage_bits} bits; {node_name(reader)} reads "
                   f"{old.storage_bits} bits")
        self.block.insert_op_after(change, owner)
        return change.output

    # -- precision changes -------------------------------------------------------------

    def repair_change(self, op: Operation, diagnostic: Diagnostic) -> bool:
        """Fold the change into its producer, else let its consumers read the producer's
        width, else run the producer or a consumer in float where the target allows."""
        assert isinstance(op, q.PrecisionChangeOp)
        source = element_of(op.input)
        assert source is not None
        annotated = Annotated(self.module)
        start, origin = annotated.origin(op.input)
        consumers = [annotated.by_op.get(r) for r in readers(op.output)]
        why_not: list[str] = []
        try:
            return self.fold(op, start, origin)
        except _Stuck as why:
            why_not.append(str(why))
        try:
            return self.read_wider(op, [c for c in consumers if c is not None],
                                   source.storage_bits)
        except _Stuck as why:
            why_not.append(str(why))
        for layer in (origin, *consumers):
            if layer is not None and self.target.falls_back(layer.kind):
                return self.to_float(layer, f"{op.onnx_name.data} cannot be folded: "
                                            f"{why_not[0]}")
        raise _Stuck("; ".join(why_not))

    def fold(self, change: q.PrecisionChangeOp, start: q.QuantizeOp | None,
             origin: Layer | None) -> bool:
        """The producer writes the consumer's encoding directly; the change disappears."""
        wanted = element_of(change.output)
        assert wanted is not None
        bits = wanted.storage_bits
        if start is None:
            raise _Stuck("it does not read a q.quantize")
        name, consumer = change.onnx_name.data, change.consumer.data
        if origin is None:  # a model input: the host quantizes it at any width
            group = _group(start)
            self.check_retype(group, wanted)
            self.retype(group, wanted, node_name(start))
            self.note("precision-change", change, name,
                      f"folded into the input quantization of {start.onnx_name.data}, which "
                      f"now writes {wanted.storage_name}; {consumer} reads it as before")
            return True
        rule = self.target.rule(origin.kind)
        folded = fold_mode(origin, self.target, bits)
        before = origin.mode()
        if rule is None or folded is None:
            allowed = f" (its rule allows {rule.modes_text()})" if rule is not None else ""
            raise _Stuck(f"{origin.name} cannot write {bits} bits on {self.target.name}"
                         f"{allowed}")
        steps = self.reencode(origin, folded, rule, wanted)
        self.note("precision-change", change, name,
                  f"folded into {origin.name}: precision_mode {before} -> {folded} "
                  f"({'; '.join(steps)}); {consumer} reads it as before")
        return True

    def read_wider(self, change: q.PrecisionChangeOp, consumers: list[Layer], bits: int) \
            -> bool:
        """Every consumer reads the producer's width instead (its output width kept)."""
        modes = [read_mode(c, self.target, bits) for c in consumers]
        if not consumers or any(m is None for m in modes):
            raise _Stuck(f"its consumers cannot read {bits} bits on {self.target.name}")
        name = change.onnx_name.data
        for consumer, mode in zip(consumers, modes, strict=True):
            assert mode is not None
            rule = self.target.rule(consumer.kind)
            assert rule is not None
            fresh = Annotated(self.module).by_op[consumer.op]
            before = fresh.mode()
            steps = self.reencode(fresh, mode, rule)
            self.note("precision-change", consumer.op, consumer.name,
                      f"reads {bits} bits instead of through {name}: precision_mode {before} -> "
                      f"{mode} ({'; '.join(steps)})")
        return True


def legalize(module: ModuleOp, target: Target,
             config: Any = None) -> tuple[LegalityReport, list[str]]:
    """Repair a module in place; the final legality report (with the changes made) and
    one message per diagnostic left, saying why legalize could not repair it."""
    legalizer = _Legalizer(module, target, config)
    report = legalizer.run()
    return report, legalizer.explain(report)


def legalize_summary(report: LegalityReport) -> str:
    counts = ", ".join(f"{count} {kind}" for kind, count in report.counts().items())
    return (f"{report.target.name}: {plural(len(report.diagnostics), 'op')} cannot be made "
            f"legal ({counts}) after {plural(len(report.changes), 'repair')}; each line says why")


@dataclass(frozen=True)
class LegalizePass(ModulePass):
    """Repair what the target cannot run (see the module docstring)."""

    name = "legalize"

    target: str = DEFAULT_TARGET
    mode: str = "error"
    report: str | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from quantir.passes.qconfig import QuantirWarning

        check_mode(self.mode, "legalize")
        target = load_target(self.target)
        result, lines = legalize(op, target, getattr(ctx, "config", None))
        for change in result.changes:
            warnings.warn(f"legalize{{target={target.name}}}: {change.message()}",
                          QuantirWarning, stacklevel=2)
        if self.report:
            write_report(self.report, result)
        if result.legal:
            return
        summary = legalize_summary(result)
        if self.mode == "error":
            raise LegalityError(summary, tuple(lines))
        for line in (summary, *lines):
            warnings.warn(line, QuantirWarning, stacklevel=2)


__all__ = ["LegalizePass", "legalize", "legalize_summary"]
