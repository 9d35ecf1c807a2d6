"""The `qi` dialect: integer compute, the ops of the integer program (IR level 3).

Operands are tensors of quantized types (`!q.uniform` / `!q.per_axis`) holding their
storage integers. A compute op subtracts its operands' zero points, computes exactly
in integers and returns a 32-bit *accumulator* whose quantized type states the real
scale of its integers (zero point 0), e.g. a conv of `s_x` activations with per-channel
`s_w[c]` weights gives `!q.per_axis<i32:f32:1, {s_x*s_w[0]:0, ...}>`. A `q.requant`
then brings the accumulator to the next layer's encoding. Types are inferred from the
operands (`infer`), so the verifier checks every scale the lowering wrote.

    %acc = qi.conv2d %x, %w, %b {onnx_name = "conv1", strides = ..., pads = ...,
             dilations = ..., group = 1 : i64} : (tensor<1x1x8x8x!q.uniform<i8:f32, ...>>,
             tensor<16x1x3x3x!q.per_axis<i8:f32:0, {...}>>, tensor<16x!q.per_axis<i32:...>>)
             -> tensor<1x16x8x8x!q.per_axis<i32:f32:1, {...}>>

The numerics of every op are those of `quantir.runtime.reference` (the spec).
Data movement (reshape, transpose, slice, concat, gather, pad, ...) stays as `nn` ops
on quantized tensors: they move integers and compute nothing.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    result_def,
)
from xdsl.utils.exceptions import VerifyException

from quantir.dialects import nn
from quantir.dialects.nn import InferredOperation, Props
from quantir.dialects.q import PerAxisQuantizedType, QuantizedType, UniformQuantizedType

ACCUMULATOR_BITS = 32


# --------------------------------------------------------------------------------------
# Type helpers
# --------------------------------------------------------------------------------------


def quantized(type_: Attribute, what: str) -> QuantizedType:
    if not isinstance(type_, TensorType) or not isinstance(type_.element_type, QuantizedType):
        raise VerifyException(f"{what} must be a tensor of a quantized type, got {type_}")
    return type_.element_type


def per_tensor(type_: Attribute, what: str) -> UniformQuantizedType:
    element = quantized(type_, what)
    if not isinstance(element, UniformQuantizedType):
        raise VerifyException(f"{what} must be quantized per tensor, got {element}")
    return element


def accumulator(scales: Sequence[float], axis: int) -> QuantizedType:
    """The i32 accumulator type of real scale `scales` (per channel along `axis` when
    there are several)."""
    if len(scales) == 1:
        return UniformQuantizedType.get(f"i{ACCUMULATOR_BITS}", scales[0], 0)
    return PerAxisQuantizedType.get(f"i{ACCUMULATOR_BITS}", list(scales), None, axis)


def product_accumulator(x: Attribute, w: Attribute, w_axis: int, result_axis: int) \
        -> QuantizedType:
    """Accumulator of x (per tensor) times w (per tensor, or per channel on `w_axis`)."""
    x_element = per_tensor(x, "input")
    w_element = quantized(w, "weight")
    if isinstance(w_element, PerAxisQuantizedType) and w_element.axis != w_axis:
        raise VerifyException(f"per-channel weight must be quantized along axis {w_axis}, "
                              f"not {w_element.axis}")
    return accumulator([x_element.scale * s for s in w_element.scales], result_axis)


def is_accumulator(element: QuantizedType) -> bool:
    return element.storage_bits == ACCUMULATOR_BITS and element.is_signed and \
        not any(element.zero_points)


def _with_element(type_: Attribute, element: Attribute) -> TensorType:
    assert isinstance(type_, TensorType)
    return TensorType(element, type_.get_shape())


def _check_bias(bias: Attribute, result: QuantizedType) -> None:
    element = quantized(bias, "bias")
    if element.scales != result.scales or any(element.zero_points):
        raise VerifyException(f"bias type {element} must have the accumulator's scales "
                              f"{result} and zero point 0")


class IntegerOperation(InferredOperation, ABC):
    """An op of the integer program."""


# --------------------------------------------------------------------------------------
# Products: conv, conv transpose, matmul
# --------------------------------------------------------------------------------------


class WindowProductOperation(IntegerOperation, ABC):
    """A convolution-like product: input, weight, optional bias, window properties."""

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr)


@irdl_op_definition
class Conv2dOp(WindowProductOperation):
    """sum((x - zp_x) * (w - zp_w)) + bias; x padded with zp_x (real zero)."""

    name = "qi.conv2d"

    @classmethod
    def infer(cls, operand_types, props):
        (shape,) = nn.ConvOp.infer(operand_types, props)
        result = product_accumulator(operand_types[0], operand_types[1], 0, 1)
        if len(operand_types) == 3:
            _check_bias(operand_types[2], result)
        return [_with_element(shape, result)]


@irdl_op_definition
class ConvTranspose2dOp(WindowProductOperation):
    """ONNX ConvTranspose on (x - zp_x) and (w - zp_w), plus bias; weights I x O/g x k."""

    name = "qi.conv_transpose2d"
    output_padding = prop_def(DenseArrayBase)

    @classmethod
    def infer(cls, operand_types, props):
        (shape,) = nn.ConvTransposeOp.infer(operand_types, props)
        w_element = quantized(operand_types[1], "weight")
        if isinstance(w_element, PerAxisQuantizedType) and int(props.int("group")) != 1:
            raise VerifyException("per-channel transposed-conv weights need group 1")
        result = product_accumulator(operand_types[0], operand_types[1], 1, 1)
        if len(operand_types) == 3:
            _check_bias(operand_types[2], result)
        return [_with_element(shape, result)]


@irdl_op_definition
class MatMulOp(IntegerOperation):
    """numpy.matmul of (a - zp_a) and (b - zp_b), plus bias along the last axis.

    `b` may be quantized per column (its last axis); the accumulator is then per
    channel along the result's last axis."""

    name = "qi.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        a, b = operand_types[0], operand_types[1]
        shape = nn.matmul_shape(tuple(a.get_shape()), tuple(b.get_shape()))
        result = product_accumulator(a, b, len(b.get_shape()) - 1, len(shape) - 1)
        if len(operand_types) == 3:
            _check_bias(operand_types[2], result)
        return [TensorType(result, shape)]


# --------------------------------------------------------------------------------------
# Elementwise
# --------------------------------------------------------------------------------------


class AccumulatorBinaryOperation(IntegerOperation, ABC):
    """a (op) b on two accumulators of one scale (inputs were requantized to it)."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        a, b = (quantized(t, "operand") for t in operand_types)
        if a != b or not is_accumulator(a):
            raise VerifyException(f"operands must be i32 accumulators of one scale, got {a} "
                                  f"and {b}")
        shape = nn.broadcast_shapes(tuple(operand_types[0].get_shape()),
                                    tuple(operand_types[1].get_shape()))
        return [TensorType(a, shape)]


@irdl_op_definition
class AddOp(AccumulatorBinaryOperation):
    name = "qi.add"


@irdl_op_definition
class SubOp(AccumulatorBinaryOperation):
    name = "qi.sub"


@irdl_op_definition
class MulOp(IntegerOperation):
    """(a - zp_a) * (b - zp_b), both per tensor: an accumulator of scale s_a * s_b."""

    name = "qi.mul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)

    @classmethod
    def infer(cls, operand_types, props):
        a, b = per_tensor(operand_types[0], "lhs"), per_tensor(operand_types[1], "rhs")
        shape = nn.broadcast_shapes(tuple(operand_types[0].get_shape()),
                                    tuple(operand_types[1].get_shape()))
        return [TensorType(accumulator([a.scale * b.scale], 0), shape)]


@irdl_op_definition
class ClampOp(IntegerOperation):
    """clamp(x, min, max) on the stored integers (a fused ReLU / ReLU6 / Clip)."""

    name = "qi.clamp"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    min = prop_def(IntegerAttr)
    max = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        element = quantized(operand_types[0], "input")
        low, high = props.int("min"), props.int("max")
        if not element.storage_min <= low <= high <= element.storage_max:
            raise VerifyException(f"bounds [{low}, {high}] must be ordered and inside the "
                                  f"storage range of {element}")
        return [operand_types[0]]


class TableOperation(IntegerOperation, ABC):
    """An op carrying a table indexed by an 8- or 16-bit input value."""

    @classmethod
    def check_table(cls, props: Props, input_element: QuantizedType, key: str) -> None:
        table = props.properties[key]
        if isinstance(table, DenseResourceAttr):
            return  # elided in print: checked when it is run
        assert isinstance(table, DenseIntOrFPElementsAttr)
        size = len(table.get_shape())
        count = table.get_shape()[0] if size == 1 else -1
        if count != 1 << input_element.storage_bits:
            raise VerifyException(f"{key} must be 1-d with 2^{input_element.storage_bits} = "
                                  f"{1 << input_element.storage_bits} entries, got "
                                  f"{table.type}")


@irdl_op_definition
class LookupOp(TableOperation):
    """table[x - storage_min]: any function of one 8/16-bit value (Sigmoid, Erf, ...).

    The table holds the output integers for every input integer, so the result type
    (its encoding) is written, not inferred; infer checks it against the table."""

    name = "qi.lookup"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    table = prop_def(DenseIntOrFPElementsAttr | DenseResourceAttr)

    @classmethod
    def infer(cls, operand_types, props):
        raise VerifyException("qi.lookup's result type is given, not inferred")

    def verify_(self) -> None:
        name = f"{self.name} '{self.node_name}'"
        try:
            source = quantized(self.input.type, "input")
            target = quantized(self.output.type, "result")
            if source.storage_bits > 16:
                raise VerifyException(f"input {source} is wider than 16 bits")
            self.check_table(self.props, source, "table")
        except VerifyException as error:
            raise VerifyException(f"{name}: {error}") from error
        assert isinstance(self.input.type, TensorType)
        assert isinstance(self.output.type, TensorType)
        if self.input.type.get_shape() != self.output.type.get_shape():
            raise VerifyException(f"{name}: input and result shapes differ")
        if isinstance(target, PerAxisQuantizedType):
            raise VerifyException(f"{name}: result must be quantized per tensor")


@irdl_op_definition
class SoftmaxOp(TableOperation):
    """Integer softmax along `axis`: e = exp_table[max - x], out = round(e * 2^f / sum e).

    The result is an accumulator of scale 2^-fraction_bits (probabilities)."""

    name = "qi.softmax"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    axis = prop_def(IntegerAttr)
    exp_table = prop_def(DenseIntOrFPElementsAttr | DenseResourceAttr)
    fraction_bits = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        element = per_tensor(operand_types[0], "input")
        if element.storage_bits > 16:
            raise VerifyException(f"input {element} is wider than 16 bits")
        cls.check_table(props, element, "exp_table")
        axis = props.int("axis")
        if not 0 <= axis < len(operand_types[0].get_shape()):
            raise VerifyException(f"axis {axis} is outside the input rank")
        return [_with_element(operand_types[0], accumulator([2.0 ** -props.int("fraction_bits")],
                                                            0))]


@irdl_op_definition
class LayerNormOp(IntegerOperation):
    """Integer layer normalisation over the last axis with 64-bit statistics, then
    `y * (gamma - zp_gamma) + beta`; y has scale 2^-fraction_bits (see reference)."""

    name = "qi.layernorm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    output = result_def(TensorType)
    epsilon_units = prop_def(IntegerAttr)
    fraction_bits = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        x = operand_types[0]
        per_tensor(x, "input")
        gamma = quantized(operand_types[1], "scale")
        width = x.get_shape()[-1]
        if tuple(operand_types[1].get_shape()) != (width,):
            raise VerifyException(f"scale must have shape ({width},)")
        unit = 2.0 ** -props.int("fraction_bits")
        result = accumulator([unit * s for s in gamma.scales], len(x.get_shape()) - 1)
        bias = quantized(operand_types[2], "bias")
        if bias.scales != result.scales or tuple(operand_types[2].get_shape()) != (width,):
            raise VerifyException(f"bias must be ({width},) with the accumulator's scales")
        return [_with_element(x, result)]


# --------------------------------------------------------------------------------------
# Pooling and reductions
# --------------------------------------------------------------------------------------


def _fraction_accumulator(operand_types, props, shape_type) -> TensorType:  # type: ignore[no-untyped-def]
    element = per_tensor(operand_types[0], "input")
    return _with_element(shape_type, accumulator([element.scale * 2.0 ** -props.int(
        "fraction_bits")], 0))


@irdl_op_definition
class MaxPool2dOp(IntegerOperation):
    """Max over each window of the stored integers (padding never wins)."""

    name = "qi.max_pool2d"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    kernel_shape = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        per_tensor(operand_types[0], "input")
        return nn.MaxPoolOp.infer(operand_types, props)


@irdl_op_definition
class AvgPool2dOp(IntegerOperation):
    """round(sum(x - zp) * 2^f / count) per window: an accumulator of scale s / 2^f."""

    name = "qi.avg_pool2d"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    kernel_shape = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)
    count_include_pad = prop_def(IntegerAttr)
    fraction_bits = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        (shape,) = nn.AveragePoolOp.infer(operand_types, props)
        return [_fraction_accumulator(operand_types, props, shape)]


@irdl_op_definition
class ReduceMeanOp(IntegerOperation):
    """round(sum(x - zp over axes) * 2^f / count): an accumulator of scale s / 2^f."""

    name = "qi.reduce_mean"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    axes = prop_def(DenseArrayBase)
    keepdims = prop_def(IntegerAttr)
    fraction_bits = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        (shape,) = nn.ReduceMeanOp.infer(operand_types, props)
        return [_fraction_accumulator(operand_types, props, shape)]


@irdl_op_definition
class ResizeLinearOp(IntegerOperation):
    """ONNX Resize (linear) over H and W of NCHW with weights in 2^-F steps: an
    accumulator of scale s / 2^(2F) (see reference.resize_bilinear)."""

    name = "qi.resize_linear"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    coordinate_transformation_mode = prop_def(StringAttr)
    scales = prop_def(DenseArrayBase)
    sizes = prop_def(DenseArrayBase)
    fraction_bits = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, operand_types, props):
        element = per_tensor(operand_types[0], "input")
        shape = tuple(operand_types[0].get_shape())
        sizes = props.ints("sizes")
        if len(shape) != 4 or len(sizes) != 4 or tuple(sizes[:2]) != shape[:2]:
            raise VerifyException(f"sizes {sizes} must resize only H and W of an NCHW input "
                                  f"{shape}")
        unit = 2.0 ** (-2 * props.int("fraction_bits"))
        return [TensorType(accumulator([element.scale * unit], 0), sizes)]


QI = Dialect(
    "qi",
    [Conv2dOp, ConvTranspose2dOp, MatMulOp, AddOp, SubOp, MulOp, ClampOp, LookupOp, SoftmaxOp,
     LayerNormOp, MaxPool2dOp, AvgPool2dOp, ReduceMeanOp, ResizeLinearOp],
    [],
)
