"""`lower-to-int{rounding=single}`: the quantization-annotated module becomes an integer
program (IR level 2 -> 3).

Every group `q.dequantize -> nn op -> q.quantize` becomes integer compute on the
stored integers: a `qi` op giving an i32 accumulator of known scale, then a
`q.requant` (Q31 multiplier, shift, the named rounding mode) to the encoding the
`q.quantize` asked for, then a `qi.clamp` where a fused ReLU / Clip is narrower than
the storage range. Per op kind:

    conv / gemm / matmul    qi.conv2d / qi.matmul (+ bias at the accumulator scale)
    add / sub               each input requantized to a common i32 scale
                            (2 max(s_a, s_b) / 2^L, TFLite's scheme), qi.add / qi.sub
    mul                     qi.mul (scale s_a s_b)
    softmax                 qi.softmax (exp table, probabilities at 2^-16)
    layer_norm (last axis)  qi.layernorm (64-bit statistics, gamma in 12 bits)
    pools, reduce_mean      qi.max_pool2d / qi.avg_pool2d / qi.reduce_mean
    one-input functions     qi.lookup: a table of f over every 8/16-bit input value,
    (Erf, Sigmoid, HardSwish, Sqrt, ... and binary ops with a one-element constant)
                            computed as the simulation computes it, so it is exact
    data movement           the nn op itself on quantized tensors (reshape,
                            transpose, slice, concat, split, gather, pad, ...)
    q.precision_change      the q.requant it is

A layer the annotated module runs in float (`float=enabled`, or moved there by
`legalize` for a target) stays in float, and so does an op that has no integer form
here (or reads a float value, or feeds a float one): an explicit float fallback,
reported by the pass. Where a float layer feeds an integer one, a q.quantize at the
reading layer's width converts it (the host's conversion). Quantize / dequantize
remain only at such boundaries and at the function's inputs and outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType, f32
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn, q, qi
from quantir.dialects.q import PerAxisQuantizedType, QuantizedType, UniformQuantizedType
from quantir.dialects.q_math import (
    dequantize_array,
    encoding_from_range,
    quantize_array,
    storage_dtype,
)
from quantir.errors import QuantirError
from quantir.ir import array_of, dense_of, is_elided
from quantir.lowering.byte_split import byte_types, split_bytes, split_table
from quantir.runtime import reference

ADD_FRACTION_BITS = {8: 20, 16: 13}
"""Left shift of the common scale of add/sub inputs, by input width (TFLite uses 20
for 8 bits; 16-bit inputs keep |x| * 2^L below 2^30)."""

INTERNAL_BITS = 16
"""Width of the encodings given to float edges inside a layer (see
`quantize_internal_edges`)."""

INTERNAL_MARGIN = 0.5
"""Widening of those edges' calibrated ranges, in spans, on each side."""

POOL_FRACTION_BITS = 8
SOFTMAX_FRACTION_BITS = 16
RESIZE_FRACTION_BITS = 10
SOFTMAX_TABLE_BITS = 20
LAYERNORM_FRACTION_BITS = 24


class LoweringError(QuantirError):
    """A group that should lower cannot (e.g. a scale ratio the rounding mode cannot hold)."""


class Fallback(Exception):  # noqa: N818 (control flow, not an error)
    """This op stays in float; the message says why."""


@dataclass
class Operand:
    """An input of the op being lowered, seen through its dequantize."""

    value: SSAValue  # the quantized value (or the raw value for integer / float inputs)
    quantized: bool
    constant: np.ndarray | None  # the real values when the input is a constant
    qconstant: q.ConstantOp | None  # the quantized weight, when it is one

    @property
    def element(self) -> QuantizedType:
        assert isinstance(self.value.type, TensorType)
        element = self.value.type.element_type
        assert isinstance(element, QuantizedType)
        return element

    @property
    def is_scalar(self) -> bool:
        return self.constant is not None and self.constant.size == 1


# --------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowerToIntPass(ModulePass):
    """Lower the quantization-annotated module to the integer program."""

    name = "lower-to-int"
    rounding: str = "single"
    """`single` (one rounding, half up) is the default: it matches the simulation's
    float rounding almost everywhere; `tflite` double rounding differs from it by one
    LSB on about 0.1% of a layer's outputs (measured on the digits CNN)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from quantir.passes.constants import report

        report(self.name, lower_module(op, self.rounding))


def lower_to_int(module: ModuleOp, rounding: str = "single") -> ModuleOp:
    """The integer program of an annotated module (a lowered copy; `module` is kept)."""
    from quantir.passes import compile

    return compile(module.clone(), f"lower-to-int{{rounding={rounding}}}")


def lower_module(module: ModuleOp, rounding: str = "single") -> list[str]:
    """Lower every function; returns the report lines (the ops left in float)."""
    if rounding not in q.ROUNDING_MODES:
        raise QuantirError(f"lower-to-int: unknown rounding '{rounding}'; expected one of "
                           f"{', '.join(q.ROUNDING_MODES)}")
    lines: list[str] = []
    for function in [op for op in module.ops if isinstance(op, func.FuncOp)]:
        lines += Lowering(function.body.block, rounding).run()
    return lines


class Lowering:
    def __init__(self, block: Block, rounding: str):
        self.block = block
        self.rounding = rounding
        self.anchor: Operation | None = None
        self.name = ""

    # ---- driver ---------------------------------------------------------------------

    def run(self) -> list[str]:
        if not any(isinstance(op, q.QuantizeOp) for op in self.block.ops):
            raise QuantirError("lower-to-int: the module has no q.quantize ops; quantize it "
                               "first (pipeline 'calibrate,quantize,lower-to-int')")
        fallbacks: list[str] = []
        biased = bias_adds(self.block)
        layers = LayerOutputs(self.block)
        quantize_internal_edges(self.block, layers, skip=set(biased.values()))
        for op in list(self.block.ops):
            if op in layers.in_float:
                if op in layers.groups:
                    fallbacks.append(f"{op.name} '{op.node_name}' stays in float: the "
                                     "annotated module runs it in float")
                continue
            if op in biased.values():
                continue  # lowered with the bias add that reads it
            if isinstance(op, nn.AddOp) and op in biased:
                try:
                    self.lower(op, lower_biased_product)
                except Fallback as why:
                    fallbacks.append(f"{op.name} '{op.node_name}' stays in float: {why}")
            elif isinstance(op, q.PrecisionChangeOp):
                self.anchor, self.name = op, op.node_name
                element = op.output.type.element_type  # type: ignore[attr-defined]
                op.output.replace_all_uses_with(self.requant(op.input, element))
                op.detach()
                op.erase()
            elif isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp):
                if not any(is_float(v.type) for v in (*op.operands, *op.results)):
                    continue  # integer data (indices, a mask): nothing to lower
                try:
                    self.lower(op)
                except Fallback as why:
                    fallbacks.append(f"{op.name} '{op.node_name}' stays in float: {why}")
        self.erase_dead()
        return fallbacks

    def lower(self, op: nn.NNOperation, lowerer: Lowerer | None = None) -> None:
        lowerer = lowerer or LOWERINGS.get(type(op))
        if lowerer is None:
            if isinstance(op, nn.UnaryOperation) and type(op) not in NOT_TABLES:
                lowerer = lower_table
            else:
                raise Fallback("no integer form")
        # A bias add reads its product's float result: the product is lowered with it.
        operands = [Operand(v, False, None, None) if lowerer is lower_biased_product
                    and isinstance(v.owner, nn.MatMulOp | nn.GemmOp) else self.operand(v)
                    for v in op.operands]
        outputs = [self.output_type(r) for r in op.results]
        self.anchor, self.name = op, op.node_name
        results = lowerer(self, op, operands, outputs)
        for old, new in zip(op.results, results, strict=True):
            for use in list(old.uses):
                quantize = use.operation
                quantize.results[0].replace_all_uses_with(new)
                new.name_hint = new.name_hint or quantize.results[0].name_hint or old.name_hint
                quantize.detach()
                quantize.erase()
        op.detach()
        op.erase()

    def operand(self, value: SSAValue) -> Operand:
        owner = value.owner
        if isinstance(owner, q.DequantizeOp):
            source = owner.input
            qconstant = source.owner if isinstance(source.owner, q.ConstantOp) else None
            real = None
            if qconstant is not None:
                real = dequantize_array(constant_value(qconstant),
                                        owner.input.type.element_type)  # type: ignore[attr-defined]
            return Operand(source, True, real, qconstant)
        if isinstance(owner, nn.ConstantOp):
            return Operand(value, False, constant_value(owner), None)
        if is_float(value.type):
            raise Fallback(f"its input {value.name_hint or ''} is a float value")
        return Operand(value, False, None, None)  # integer data: indices, shapes

    def output_type(self, result: SSAValue) -> TensorType:
        uses = [use.operation for use in result.uses]
        if not uses or not all(isinstance(u, q.QuantizeOp) for u in uses):
            raise Fallback("its result is read as float")
        types = {u.results[0].type for u in uses}
        if len(types) != 1:
            raise Fallback("its result is quantized with several encodings")
        (type_,) = types
        assert isinstance(type_, TensorType)
        return type_

    def erase_dead(self) -> None:
        changed = True
        while changed:
            changed = False
            for op in reversed(list(self.block.ops)):
                if op.results and all(not r.uses for r in op.results):
                    op.detach()
                    op.erase()
                    changed = True

    # ---- building blocks ------------------------------------------------------------

    def emit(self, op: Operation) -> SSAValue:
        assert self.anchor is not None
        self.block.insert_op_before(op, self.anchor)
        return op.results[0]

    def build(self, cls: type[nn.InferredOperation], operands: Sequence[SSAValue],
              properties: dict[str, object] | None = None) -> SSAValue:
        return self.emit(cls.build_from(list(operands), properties or {}, self.name))

    def constant(self, values: np.ndarray, type_: TensorType) -> SSAValue:
        element = type_.element_type
        assert isinstance(element, QuantizedType)
        dtype = storage_dtype(element) if element.storage_bits <= 16 else np.dtype(np.int32)
        value = dense_of(np.ascontiguousarray(values, dtype=dtype))
        return self.emit(q.ConstantOp(value, type_, self.name))

    def requant(self, value: SSAValue, target: Attribute, factor: float = 1.0,
                saturate: bool = False) -> SSAValue:
        """`value` brought to the `target` encoding (times a real `factor`). With
        `saturate`, a ratio beyond the rounding mode's reach becomes the largest it can
        hold: for an input whose every nonzero step saturates the result anyway."""
        assert isinstance(value.type, TensorType) and isinstance(target, QuantizedType)
        source = value.type.element_type
        assert isinstance(source, QuantizedType)
        if source == target and factor == 1.0:
            return value
        if isinstance(target, PerAxisQuantizedType):
            raise LoweringError(f"'{self.name}': cannot requantize to a per-channel encoding")
        ratios = [s * factor / target.scale for s in source.scales]
        largest = q.MAX_MULTIPLIER * 2.0 ** (q.MAX_SHIFT[self.rounding] - 31)
        if saturate:
            ratios = [min(r, largest) for r in ratios]
        try:
            pairs = [reference.quantize_multiplier(r, self.rounding) for r in ratios]
        except ValueError as error:
            raise LoweringError(f"'{self.name}': {error}") from error
        result = TensorType(target, value.type.get_shape())
        if isinstance(source, PerAxisQuantizedType):
            return self.emit(q.RequantOp(value, result, [m for m, _ in pairs],
                                         [s for _, s in pairs], self.name, self.rounding,
                                         axis=source.axis))
        ((multiplier, shift),) = pairs
        return self.emit(q.RequantOp(value, result, multiplier, shift, self.name,
                                     self.rounding))

    def finish(self, acc: SSAValue, output: TensorType, op: Operation,
               factor: float = 1.0) -> SSAValue:
        """Accumulator -> the output encoding, then the fused ReLU / Clip as a clamp."""
        value = self.requant(acc, output.element_type, factor)
        if not isinstance(op, nn.FusedActivationOperation) or op.activation is None:
            return value
        kind = op.activation.data
        if kind not in ("relu", "clip"):
            raise LoweringError(f"'{self.name}': fused activation {kind} has no integer form; "
                                "run fuse-activation without hard-activations")
        element = output.element_type
        assert isinstance(element, UniformQuantizedType)
        low, high = element.storage_min, element.storage_max
        bounds = [(op.activation_min, max), (op.activation_max, min)]
        if kind == "relu":
            bounds = [(0.0, max)]
        for bound, pick in bounds:
            if bound is None:
                continue
            real = bound if isinstance(bound, float) else bound.value.data
            level = element.zero_point + round(real / element.scale)
            if pick is max:
                low = min(max(low, level), element.storage_max)
            else:
                high = max(min(high, level), element.storage_min)
        if (low, high) == (element.storage_min, element.storage_max):
            return value
        return self.build(qi.ClampOp, [value], {"min": low, "max": high})

    def accumulator_constant(self, real: np.ndarray, element: QuantizedType,
                             shape: Sequence[int]) -> SSAValue:
        """Real values (a bias) as i32 integers at an accumulator's scale."""
        scales = np.asarray(element.scales, dtype=np.float64)
        integers = np.round(np.asarray(real, dtype=np.float64).reshape(shape) / scales)
        if np.abs(integers).max(initial=0) >= 2**31:
            raise LoweringError(f"'{self.name}': bias does not fit 32 bits at the accumulator "
                                "scale; quantize the layer's inputs with more range")
        axis_element: QuantizedType = element
        if isinstance(element, PerAxisQuantizedType):
            axis_element = PerAxisQuantizedType.get("i32", element.scales, None, 0)
        return self.constant(integers.astype(np.int32), TensorType(axis_element, list(shape)))

    def quantized_input(self, operand: Operand, what: str) -> SSAValue:
        if not operand.quantized:
            raise Fallback(f"its {what} is not quantized")
        return operand.value


def bias_adds(block: Block) -> dict[nn.AddOp, nn.NNOperation]:
    """Adds of a constant vector along the last axis to a matmul / gemm result that
    nothing else reads (a Linear layer exported as MatMul + Add): add -> product.
    The product is lowered with the vector as its bias, in one accumulator."""
    found: dict[nn.AddOp, nn.NNOperation] = {}
    for op in block.ops:
        if not isinstance(op, nn.MatMulOp | nn.GemmOp) or op.activation is not None:
            continue
        uses = list(op.results[0].uses)
        if len(uses) != 1 or not isinstance(uses[0].operation, nn.AddOp):
            continue
        add = uses[0].operation
        other = add.operands[1 - uses[0].index]
        width = tensor_of(op.results[0]).get_shape()[-1]
        constant = other.owner
        if isinstance(constant, q.DequantizeOp):
            constant = constant.input.owner
        if isinstance(constant, nn.ConstantOp | q.ConstantOp) and \
                tensor_of(other).get_shape()[-1:] == (width,) and \
                math.prod(tensor_of(other).get_shape()) == width:
            found[add] = op
    return found


def lower_biased_product(lo: Lowering, add: nn.NNOperation, xs: list[Operand],
                         outs: list[TensorType]) -> list[SSAValue]:
    """A bias add and the matmul / gemm it reads, as one product with a bias."""
    (product_input,) = [x for x in xs if x.constant is None]
    (bias,) = [x for x in xs if x.constant is not None]
    product = product_input.value.owner
    assert isinstance(product, nn.MatMulOp | nn.GemmOp)
    inputs = [lo.operand(v) for v in product.operands]
    vector = constant_bias(bias)
    if isinstance(product, nn.GemmOp):
        if len(inputs) == 3:
            raise Fallback("its gemm already has a C input")
        return lower_gemm(lo, product, inputs, outs, extra_bias=vector, fused=add)
    per_tensor(inputs[0], "left input")
    b = lo.quantized_input(inputs[1], "right input")
    return [lower_product(lo, add, qi.MatMulOp, inputs[0].value, b, {}, vector, outs[0])]


class LayerOutputs:
    """The layers of an annotated block (`quantize.layer_groups`): which run in float
    (their output is a float value no q.quantize reads) and what each writes."""

    def __init__(self, block: Block):
        from quantir.passes.quantize import layer_groups

        ops = [op for op in block.ops
               if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp)]
        self.groups = layer_groups(ops)
        self.anchor_of = {op: anchor for anchor, group in self.groups.items() for op in group}
        self.in_float: set[Operation] = set()
        self.writes: dict[Operation, QuantizedType] = {}
        for anchor, group in self.groups.items():
            if not group[-1].results:
                continue
            output = group[-1].results[0]
            quantizes = [use.operation for use in output.uses
                         if isinstance(use.operation, q.QuantizeOp)]
            if quantizes:
                element = tensor_of(quantizes[0].results[0]).element_type
                if isinstance(element, QuantizedType):
                    self.writes[anchor] = element
            elif is_float(output.type) and any(
                    isinstance(use.operation, nn.NNOperation) or
                    isinstance(use.operation, func.ReturnOp) for use in output.uses):
                self.in_float.update(group)

    def written_by(self, op: Operation) -> QuantizedType | None:
        """The encoding the layer of `op` writes (None: float, or not a layer)."""
        anchor = self.anchor_of.get(op)
        return self.writes.get(anchor) if anchor is not None else None


def quantize_internal_edges(block: Block, layers: LayerOutputs, bits: int = INTERNAL_BITS,
                            skip: set[Operation] | None = None) -> None:
    """Give every float edge an integer layer reads a `bits`-bit encoding from the
    producer's calibrated range, so both ends can become integer ops.

    * Inside a layer (conv -> HardSwish, matmul -> its bias add: ops the quantize pass
      grouped, so nothing quantizes between them): 16 bits over twice the calibrated
      span; the simulation keeps such edges in float, and this keeps the difference far
      below one LSB of an 8-bit output (for a 16-bit output, the edge's step is about
      two output LSB).
    * From a float layer to an integer one: the width and signedness the reading layer
      writes, over the calibrated range (what a target's host hands its accelerator).
    * Between two float layers: nothing; both stay float.

    An internal edge is unsigned when the layer's activations are (a target storing
    activations unsigned), signed otherwise."""
    from quantir.passes.ranges import get_range

    for op in list(block.ops):
        if not isinstance(op, nn.NNOperation) or isinstance(op, nn.ConstantOp) or \
                op in (skip or set()):
            continue
        for result in op.results:
            readers = [use for use in result.uses
                       if isinstance(use.operation, nn.NNOperation)
                       and use.operation not in layers.in_float]
            found = get_range(result)
            if not readers or not is_float(result.type) or found is None:
                continue
            low, high = found
            boundary = op in layers.in_float  # its readers are integer layers
            if boundary:
                written = [w for w in (layers.written_by(use.operation) for use in readers)
                           if w is not None]
                if not written:
                    continue  # the readers fall back to float themselves
                width = max(w.storage_bits for w in written)
                signed = any(w.is_signed for w in written)
                encoding = encoding_from_range(low, high, bits=width, signed=signed)
            else:
                # Half a span of margin each side: the simulation does not clip this
                # float edge, so a value beyond the calibrated range must survive it too.
                margin = (high - low) * INTERNAL_MARGIN
                encoding = encoding_from_range(low - margin, high + margin, bits=bits,
                                               signed=not reads_unsigned(op))
            quantized = TensorType(encoding.to_type(), tensor_of(result).get_shape())
            name = f"{op.node_name}/{'to_integer' if boundary else 'internal'}"
            quantize = q.QuantizeOp(result, quantized, name)
            dequantize = q.DequantizeOp(quantize, name)
            block.insert_ops_after([quantize, dequantize], op)
            for use in readers:
                use.operation.operands[use.index] = dequantize.results[0]


def reads_unsigned(op: Operation) -> bool:
    """Whether every activation `op` reads is stored unsigned (an unsigned target's
    convention): its internal edges then are too, with the same values."""
    signs = []
    for operand in op.operands:
        owner = operand.owner
        if isinstance(owner, q.DequantizeOp) and not isinstance(owner.input.owner, q.ConstantOp):
            element = tensor_of(owner.input).element_type
            if isinstance(element, QuantizedType):
                signs.append(element.is_signed)
    return bool(signs) and not any(signs)


def constant_value(op: q.ConstantOp | nn.ConstantOp) -> np.ndarray:
    if is_elided(op.value):
        raise QuantirError(f"constant '{op.node_name}' was elided when the module was "
                           "printed; print it with --print-large-constants to lower it")
    return array_of(op.value)  # type: ignore[arg-type]


def is_float(type_: Attribute) -> bool:
    from xdsl.dialects.builtin import AnyFloat

    return isinstance(type_, TensorType) and isinstance(type_.element_type, AnyFloat)


def per_tensor(operand: Operand, what: str) -> UniformQuantizedType:
    if not operand.quantized or not isinstance(operand.element, UniformQuantizedType):
        raise Fallback(f"its {what} is not quantized per tensor")
    return operand.element


def tensor_of(value: SSAValue) -> TensorType:
    assert isinstance(value.type, TensorType)
    return value.type


def properties_of(op: nn.NNOperation) -> dict[str, object]:
    return {k: v for k, v in op.properties.items() if k != "onnx_name"}


# --------------------------------------------------------------------------------------
# Per-op lowerings: (lowering, op, operands, output types) -> result values
# --------------------------------------------------------------------------------------

Lowerer = Callable[[Lowering, nn.NNOperation, list[Operand], list[TensorType]],
                   list[SSAValue]]


def lower_conv(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
               outs: list[TensorType]) -> list[SSAValue]:
    if len(tensor_of(op.operands[0]).get_shape()) != 4:
        raise Fallback("only 2-d convolutions have an integer kernel")
    per_tensor(xs[0], "input")
    if xs[1].qconstant is None:
        raise Fallback("its weight is not a quantized constant")
    cls = qi.ConvTranspose2dOp if isinstance(op, nn.ConvTransposeOp) else qi.Conv2dOp
    props = {k: v for k, v in properties_of(op).items() if not k.startswith("activation")}
    bias = constant_bias(xs[2]) if len(xs) == 3 else None
    return [lower_product(lo, op, cls, xs[0].value, xs[1].value, props, bias, outs[0])]


def constant_bias(bias: Operand) -> np.ndarray:
    if bias.constant is None:
        raise Fallback("its bias is not a constant")
    return bias.constant.reshape(-1).astype(np.float64)


def lower_gemm(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
               outs: list[TensorType], extra_bias: np.ndarray | None = None,
               fused: nn.NNOperation | None = None) -> list[SSAValue]:
    assert isinstance(op, nn.GemmOp)
    props = op.props
    alpha, beta = props.float("alpha"), props.float("beta")
    if alpha <= 0:
        raise Fallback("alpha <= 0")
    per_tensor(xs[0], "input A")
    a = xs[0].value
    if props.int("trans_a"):
        a = lo.build(nn.TransposeOp, [a], {"perm": [1, 0]})
    b = transposed_weight(lo, xs[1]) if props.int("trans_b") else \
        lo.quantized_input(xs[1], "input B")
    bias = None
    if len(xs) == 3:
        width = tensor_of(b).get_shape()[-1]
        if xs[2].constant is None or xs[2].constant.size != width:
            raise Fallback("its C input is not a constant vector")
        bias = constant_bias(xs[2]) * beta
    if extra_bias is not None:
        bias = extra_bias
    return [lower_product(lo, fused or op, qi.MatMulOp, a, b, {}, bias, outs[0],
                          factor=alpha)]


def transposed_weight(lo: Lowering, weight: Operand) -> SSAValue:
    """A transposed B operand: the constant transposed at compile time, else a transpose."""
    if weight.qconstant is None:
        value = lo.quantized_input(weight, "input B")
        return lo.build(nn.TransposeOp, [value], {"perm": [1, 0]})
    element = weight.element
    if isinstance(element, PerAxisQuantizedType):
        element = PerAxisQuantizedType.get(element.storage_type, element.scales,
                                           element.zero_points, 1 - element.axis)
    integers = constant_value(weight.qconstant).T
    return lo.constant(integers, TensorType(element, list(integers.shape)))


def lower_matmul(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                 outs: list[TensorType]) -> list[SSAValue]:
    per_tensor(xs[0], "left input")
    b = lo.quantized_input(xs[1], "right input")
    return [lower_product(lo, op, qi.MatMulOp, xs[0].value, b, {}, None, outs[0])]


def lower_product(lo: Lowering, op: nn.NNOperation, cls: type[qi.IntegerOperation],
                  x: SSAValue, w: SSAValue, props: dict[str, object],
                  bias: np.ndarray | None, output: TensorType, factor: float = 1.0) \
        -> SSAValue:
    """conv / matmul / elementwise mul of x and w, plus a real `bias` added after
    scaling by `factor`, requantized to `output`.

    With 8-bit operands the i32 accumulator cannot overflow. Wider operands (a16_w16,
    a16_w8) can: each is then split into bytes (`byte_split`: x - zp = 256 (hi - zh)
    + (lo - zl), every part 8 bits), the byte products are computed as separate
    8 x 8-bit accumulations and requantized to one
    common scale fine enough (2^-(30 - out bits) of an output LSB) to add them in 32
    bits. The result differs from the exact product by under 2^-12 LSB before the
    final rounding."""
    (acc_type,) = cls.infer([x.type, w.type], nn.Props(props))
    acc_element = acc_type.element_type  # type: ignore[attr-defined]
    channel_axis = 1 if cls is not qi.MatMulOp else len(acc_type.get_shape()) - 1  # type: ignore[attr-defined]
    terms_x, terms_w = byte_terms(lo, x), byte_terms(lo, w)
    if len(terms_x) == len(terms_w) == 1:
        operands = [x, w]
        if bias is not None:
            operands.append(lo.accumulator_constant(bias / factor, acc_element, [bias.size]))
        acc = lo.build(cls, operands, props)
        return lo.finish(acc, output, op, factor)
    out = output.element_type
    assert isinstance(out, UniformQuantizedType)
    common = qi.accumulator([out.scale * 2.0 ** -(30 - out.storage_bits)], 0)
    terms = [lo.requant(lo.build(cls, [part_x, part_w], props), common, factor)
             for part_x in terms_x for part_w in terms_w]
    if bias is not None:
        shape = [1] * (len(acc_type.get_shape()) - channel_axis)  # type: ignore[attr-defined]
        shape[0] = bias.size
        terms.append(lo.accumulator_constant(bias, common, shape))
    total = terms[0]
    for term in terms[1:]:
        total = lo.build(qi.AddOp, [total, term])
    return lo.finish(total, output, op)


def byte_terms(lo: Lowering, value: SSAValue) -> list[SSAValue]:
    """[value] for storage up to 8 bits, else its [hi, lo] bytes (`byte_split`:
    x - zp = (hi - zh) 256 + (lo - zl), every part 8 bits)."""
    element = tensor_of(value).element_type
    assert isinstance(element, QuantizedType)
    if element.storage_bits <= 8:
        return [value]
    hi_type, lo_type = (TensorType(t, tensor_of(value).get_shape())
                        for t in byte_types(element))
    if isinstance(value.owner, q.ConstantOp):
        hi, low = split_bytes(constant_value(value.owner))
        return [lo.constant(hi, hi_type), lo.constant(low, lo_type)]
    if isinstance(element, PerAxisQuantizedType):
        raise Fallback("a per-channel activation wider than 8 bits has no byte split")
    hi, low = split_table(element)
    return [lo.emit(lookup_op(value, hi_type.element_type, hi, lo.name)),  # type: ignore[arg-type]
            lo.emit(lookup_op(value, lo_type.element_type, low, lo.name))]  # type: ignore[arg-type]


def lookup_op(value: SSAValue, element: QuantizedType, table: np.ndarray,
              name: str) -> qi.LookupOp:
    dtype = storage_dtype(element)
    return qi.LookupOp.create(
        operands=[value], result_types=[TensorType(element, tensor_of(value).get_shape())],
        properties={"onnx_name": StringAttr(name), "table": dense_of(table.astype(dtype))})


def lower_add_sub(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                  outs: list[TensorType]) -> list[SSAValue]:
    if any(x.is_scalar for x in xs):
        return lower_table(lo, op, xs, outs)
    quantized = [per_tensor(x, "input") for x in xs if x.quantized]
    if not quantized:
        raise Fallback("no input is quantized")
    bits = max(e.storage_bits for e in quantized)
    shift = ADD_FRACTION_BITS[8 if bits <= 8 else 16]
    # An input's values matter only up to the output's reach plus the other inputs'
    # (beyond, the sum saturates whatever they are): an attention mask's -3.4e38 must
    # not coarsen the common scale of the scores it is added to.
    output = outs[0].element_type
    assert isinstance(output, UniformQuantizedType)
    reaches = [reach(x) for x in xs]
    steps = []
    for index, x in enumerate(xs):
        if x.quantized:
            relevant = reach_of(output) + sum(reaches) - reaches[index]
            steps.append(x.element.scale * min(1.0, relevant / reaches[index]))  # type: ignore[attr-defined]
    common = qi.accumulator([2 * max(steps) / 2**shift], 0)
    terms = []
    for x, limit in zip(xs, reaches, strict=True):
        if x.quantized:
            terms.append(lo.requant(x.value, common, saturate=limit > reach_of(output)))
        else:
            assert x.constant is not None  # operand() only lets constants through
            terms.append(lo.accumulator_constant(x.constant, common, x.constant.shape))
    cls = qi.AddOp if isinstance(op, nn.AddOp) else qi.SubOp
    acc = lo.build(cls, terms)
    return [lo.finish(acc, outs[0], op)]


def reach_of(element: QuantizedType) -> float:
    """The largest magnitude an encoding represents."""
    low, high = element.storage_min - element.zero_points[0], \
        element.storage_max - element.zero_points[0]
    return max(abs(low), abs(high)) * max(element.scales)


def reach(operand: Operand) -> float:
    if operand.quantized:
        return reach_of(operand.element)
    assert operand.constant is not None
    return float(np.abs(operand.constant).max(initial=0.0))


def lower_mul(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
              outs: list[TensorType]) -> list[SSAValue]:
    if any(x.is_scalar for x in xs):
        return lower_table(lo, op, xs, outs)
    values = []
    for x in xs:
        if x.quantized:
            per_tensor(x, "input")
            values.append(x.value)
        else:
            assert x.constant is not None
            peak = float(np.abs(x.constant).max(initial=0.0)) or 1.0
            element = UniformQuantizedType.get("i8", peak / 127, 0)
            integers = quantize_array(x.constant.astype(np.float32), element)
            values.append(lo.constant(integers, TensorType(element, list(x.constant.shape))))
    return [lower_product(lo, op, qi.MulOp, values[0], values[1], {}, None, outs[0])]


NOT_TABLES: tuple[type[nn.NNOperation], ...] = (nn.SoftmaxOp, nn.LRNOp, nn.CastOp)


def lower_table(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                outs: list[TensorType]) -> list[SSAValue]:
    """A function of one quantized input (other inputs one-element constants) as a table
    of its value at every input integer, computed by the float kernel as the simulation
    computes it (dequantize, op in float32, quantize)."""
    from quantir.runtime.float_kernels import compile_kernel

    variable = [x for x in xs if not x.is_scalar]
    if len(variable) != 1:
        raise Fallback("it has more than one non-constant input")
    (x,) = variable
    element = per_tensor(x, "input")
    if element.storage_bits > 16:
        raise Fallback("its input is wider than 16 bits")
    output = outs[0].element_type
    if not isinstance(output, UniformQuantizedType):
        raise Fallback("its output is not quantized per tensor")
    integers = np.arange(element.storage_min, element.storage_max + 1)
    real = dequantize_array(integers.astype(storage_dtype(element)), element)
    arguments = [real if operand is x else operand.constant.astype(np.float32).reshape(())
                 for operand in xs]  # type: ignore[union-attr]
    # The op itself, detached, on a 1-d input of every value (constants as scalars).
    block = Block(arg_types=[TensorType(f32, list(a.shape)) for a in arguments])
    probe = type(op).build_from(list(block.args), properties_of(op), op.node_name)
    (values,) = compile_kernel(probe)(*arguments)
    table = quantize_array(np.asarray(values, dtype=np.float32).reshape(-1), output)
    if table.shape != integers.shape:
        raise Fallback("it is not elementwise")
    return [lo.emit(lookup_op(x.value, output, table, op.node_name))]


def lower_softmax(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                  outs: list[TensorType]) -> list[SSAValue]:
    element = per_tensor(xs[0], "input")
    if element.storage_bits > 16:
        raise Fallback("its input is wider than 16 bits")
    # Probabilities at 2^-16 serve an 8-bit output; a 16-bit one needs 2^-24, and exp
    # values with more bits so small probabilities keep their precision.
    wide = outs[0].element_type.storage_bits > 8  # type: ignore[attr-defined]
    fraction = SOFTMAX_FRACTION_BITS + (8 if wide else 0)
    table_bits = SOFTMAX_TABLE_BITS + (8 if wide else 0)
    table = reference.softmax_exp_table(element.scale, element.storage_bits, table_bits)
    acc = lo.build(qi.SoftmaxOp, [xs[0].value], {
        "axis": op.props.int("axis"), "exp_table": dense_of(table.astype(np.int32)),
        "fraction_bits": fraction})
    return [lo.finish(acc, outs[0], op)]


def lower_layer_norm(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                     outs: list[TensorType]) -> list[SSAValue]:
    """qi.layernorm with gamma's magnitudes in the per-channel requant multipliers (31
    bits of precision) and only its signs in the integer product, so the normalised
    value keeps F fraction bits (up to 24) whatever the output width. beta is added at
    the accumulator scale 2^-F |gamma_c|."""
    element = per_tensor(xs[0], "input")
    shape = tensor_of(xs[0].value).get_shape()
    if op.props.int("axis") != len(shape) - 1:
        raise Fallback("it normalises more than the last axis")
    width = shape[-1]
    if any(x.constant is None for x in xs[1:]):
        raise Fallback("its scale or bias is not a constant")
    gamma = np.broadcast_to(xs[1].constant, (width,)).astype(np.float64)  # type: ignore[arg-type]
    beta = np.zeros(width) if len(xs) < 3 else \
        np.broadcast_to(xs[2].constant, (width,)).astype(np.float64)  # type: ignore[arg-type]
    magnitude = np.where(gamma == 0, 1.0, np.abs(gamma))
    # |y| <= sqrt(n) 2^F, plus beta / |gamma| in the same units, must stay below 2^31.
    reach = math.sqrt(width) + float(np.max(np.abs(beta) / magnitude))
    fraction = int(min(LAYERNORM_FRACTION_BITS, math.floor(30 - math.log2(reach))))
    if fraction < 4:
        raise Fallback("its beta / gamma ratio leaves under 4 fraction bits")
    axis = len(shape) - 1
    signs = PerAxisQuantizedType.get("i8", list(magnitude), None, 0)
    gamma_value = lo.constant(np.sign(gamma).astype(np.int8), TensorType(signs, [width]))
    acc_element = qi.accumulator(list(magnitude * 2.0 ** -fraction), axis)
    beta_value = lo.accumulator_constant(beta, acc_element, [width])
    epsilon = reference.layernorm_epsilon_units(op.props.float("epsilon"), element.scale, width)
    acc = lo.build(qi.LayerNormOp, [xs[0].value, gamma_value, beta_value],
                   {"epsilon_units": epsilon, "fraction_bits": fraction})
    return [lo.finish(acc, outs[0], op)]


def pool_fraction_bits(element: QuantizedType, count: int) -> int:
    """Fraction bits of a mean: 8, or more for 16-bit inputs while sum * 2^F fits 31
    bits (a mean's rounding then stays far below the output's)."""
    return max(POOL_FRACTION_BITS, 30 - element.storage_bits - math.ceil(math.log2(count)))


def lower_reduce_mean(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                      outs: list[TensorType]) -> list[SSAValue]:
    per_tensor(xs[0], "input")
    rank = len(tensor_of(xs[0].value).get_shape())
    if isinstance(op, nn.GlobalAveragePoolOp):
        props: dict[str, object] = {"axes": list(range(2, rank)), "keepdims": 1}
    else:
        props = properties_of(op)
    shape = tensor_of(xs[0].value).get_shape()
    count = math.prod(shape[axis] for axis in nn.Props(
        {k: nn.to_attr(v) for k, v in props.items()}).ints("axes"))
    acc = lo.build(qi.ReduceMeanOp, [xs[0].value],
                   {**props, "fraction_bits": pool_fraction_bits(xs[0].element, count)})
    return [lo.finish(acc, outs[0], op)]


def lower_pool(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
               outs: list[TensorType]) -> list[SSAValue]:
    per_tensor(xs[0], "input")
    if len(tensor_of(xs[0].value).get_shape()) != 4:
        raise Fallback("only 2-d pooling has an integer kernel")
    if isinstance(op, nn.MaxPoolOp):
        pooled = lo.build(qi.MaxPool2dOp, [xs[0].value], properties_of(op))
        return [lo.requant(pooled, outs[0].element_type)]
    count = math.prod(op.props.ints("kernel_shape"))
    acc = lo.build(qi.AvgPool2dOp, [xs[0].value], {
        **properties_of(op), "fraction_bits": pool_fraction_bits(xs[0].element, count)})
    return [lo.finish(acc, outs[0], op)]


def lower_resize_linear(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                        outs: list[TensorType]) -> list[SSAValue]:
    per_tensor(xs[0], "input")
    shape, sizes = tensor_of(xs[0].value).get_shape(), op.props.ints("sizes")
    if len(shape) != 4 or tuple(sizes[:2]) != tuple(shape[:2]):
        raise Fallback("only resizing H and W of NCHW has an integer kernel")
    props = {key: op.properties[key] for key in
             ("coordinate_transformation_mode", "scales", "sizes")}
    # (x - zp) 2^(2F) must fit 31 bits: 10 weight bits for 8-bit inputs, 7 for 16-bit
    # (exact for the usual 2x / 4x scales, whose weights are multiples of 1/8).
    bits = xs[0].element.storage_bits
    fraction = min(RESIZE_FRACTION_BITS, (30 - bits) // 2)
    acc = lo.build(qi.ResizeLinearOp, [xs[0].value], {**props, "fraction_bits": fraction})
    return [lo.finish(acc, outs[0], op)]


def lower_min_max(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                  outs: list[TensorType]) -> list[SSAValue]:
    """min / max commute with the (monotonic) quantization: requantize every input to
    the output encoding, then take the min / max of the integers. Exact."""
    output = outs[0].element_type
    assert isinstance(output, QuantizedType)
    operands = []
    for x in xs:
        if x.quantized:
            per_tensor(x, "input")
            operands.append(lo.requant(x.value, output))
        else:
            assert x.constant is not None
            integers = quantize_array(x.constant.astype(np.float32), output)
            operands.append(lo.constant(integers, TensorType(output, list(x.constant.shape))))
    return [lo.build(type(op), operands)]


def lower_movement(lo: Lowering, op: nn.NNOperation, xs: list[Operand],
                   outs: list[TensorType]) -> list[SSAValue]:
    """Data movement on the stored integers; each output then requantized. Concat
    first requantizes its inputs to the output's encoding (they must agree)."""
    if isinstance(op, nn.ResizeOp) and op.props.str("mode") != "nearest":
        return lower_resize_linear(lo, op, xs, outs)
    data = [x for x in xs if x.quantized]
    if not data:
        raise Fallback("no input is quantized")
    for x in data:
        per_tensor(x, "input")
    operands = []
    for x in xs:
        if isinstance(op, nn.ConcatOp):
            operands.append(lo.requant(lo.quantized_input(x, "input"), outs[0].element_type))
        elif x.quantized or x.constant is None or not np.issubdtype(x.constant.dtype,
                                                                    np.floating):
            operands.append(x.value)
        else:
            raise Fallback("a float constant feeds it")
    new = type(op).build_from(operands, properties_of(op), op.node_name)
    lo.emit(new)
    return [lo.requant(result, out.element_type) for result, out in
            zip(new.results, outs, strict=True)]


LOWERINGS: dict[type[nn.NNOperation], Lowerer] = {
    nn.ConvOp: lower_conv,
    nn.ConvTransposeOp: lower_conv,
    nn.GemmOp: lower_gemm,
    nn.MatMulOp: lower_matmul,
    nn.AddOp: lower_add_sub,
    nn.SubOp: lower_add_sub,
    nn.MulOp: lower_mul,
    nn.DivOp: lower_table,
    nn.PowOp: lower_table,
    nn.MaxOp: lower_min_max,
    nn.MinOp: lower_min_max,
    nn.SoftmaxOp: lower_softmax,
    nn.LayerNormOp: lower_layer_norm,
    nn.ReduceMeanOp: lower_reduce_mean,
    nn.GlobalAveragePoolOp: lower_reduce_mean,
    nn.MaxPoolOp: lower_pool,
    nn.AveragePoolOp: lower_pool,
    nn.ReshapeOp: lower_movement,
    nn.TransposeOp: lower_movement,
    nn.SliceOp: lower_movement,
    nn.ConcatOp: lower_movement,
    nn.SplitOp: lower_movement,
    nn.GatherOp: lower_movement,
    nn.PadOp: lower_movement,
    nn.ExpandOp: lower_movement,
    nn.ResizeOp: lower_movement,
    nn.ReduceMaxOp: lower_movement,
}
