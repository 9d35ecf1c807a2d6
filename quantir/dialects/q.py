"""The `q` dialect: quantized element types and the ops that cross between encodings.

A quantized value is an integer `q` in a storage type standing for the real number
`r = scale * (q - zero_point)` (onnxruntime / MLIR quant convention; QNN's `offset`
is `-zero_point`). The quantized type is the element type of a tensor:

    tensor<1x8x8x8x!q.uniform<i8:f32, 0.05:-3>>

Types:

    !q.uniform<i8:f32, 0.0125:-3>                 storage:expressed, scale:zero_point
    !q.per_axis<i8:f32:0, {0.1:0, 0.2:0, 0.3:0}>  storage:expressed:axis, {scale:zp, ...}

Storage is `i4 i8 i16 i32` (signed) or `u4 u8 u16 u32` (unsigned); expressed is `f32` or
`f16`. A scale prints as the shortest decimal that reads back to the same f64 (Python's
`repr`), so printing and parsing round-trip bit for bit.

Ops (every op keeps `onnx_name`, the node it was made for):

    %q = q.quantize %x {onnx_name = "conv1"} : tensor<1x8xf32> -> tensor<1x8x!q.uniform<...>>
    %x = q.dequantize %q {onnx_name = "conv1"} : tensor<1x8x!q.uniform<...>> -> tensor<1x8xf32>
    %o = q.requant %acc {onnx_name = "conv1", multiplier = 1518500250 : i32,
                         shift = -7 : i64, rounding = "tflite"}
           : tensor<1x8xi32> -> tensor<1x8x!q.uniform<i8:f32, 0.05:-3>>
    %p = q.requant %acc {onnx_name = "conv1", multiplier = array<i32: ...>,
                         shift = array<i64: ...>, rounding = "tflite", axis = 1 : i64} : ...
    %c = q.precision_change %a {onnx_name = "fc", producer = "conv1", consumer = "fc",
                                reason = "..."}
           : tensor<1x8x!q.uniform<i16:f32, ...>> -> tensor<1x8x!q.uniform<i8:f32, ...>>

Properties print in the order they were written (builders: the order above). The
generic form (`"q.quantize"(%x) <{onnx_name = "conv1"}> : (...) -> ...`) parses too.
"""

from __future__ import annotations

import math
import re
from abc import ABC
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DenseResourceAttr,
    Float16Type,
    Float32Type,
    FloatData,
    IntAttr,
    IntegerAttr,
    IntegerType,
    Signedness,
    StringAttr,
    TensorType,
    f16,
    f32,
    i32,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import ConstantLike, Pure
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.lexer import Position

STORAGE_WIDTHS: tuple[int, ...] = (4, 8, 16, 32)
"""Bit widths a quantized type may store."""

ROUNDING_MODES: tuple[str, ...] = ("tflite", "single", "tosa")
"""Rounding modes of `q.requant` (see `RequantOp`)."""

MAX_MULTIPLIER = 2**31 - 1
"""A requant multiplier is a non-negative Q31 int32."""

# The largest left shift each rounding mode can apply (the smallest is -31 for all):
# `single` needs 31 - shift >= 1 (TFLite asserts shift <= 30); TOSA's apply_scale_32
# takes a right shift 31 - shift in [2, 62].
MAX_SHIFT: Mapping[str, int] = MappingProxyType({"tflite": 31, "single": 30, "tosa": 29})
MIN_SHIFT = -31

_STORAGE_RE = re.compile(r"([iu])([0-9]+)")
_STORAGE_SPELLINGS = "i4, i8, i16, i32, u4, u8, u16, u32"


# --------------------------------------------------------------------------------------
# Storage and parameter checks, shared by the Python constructors and the parser
# --------------------------------------------------------------------------------------


def storage_type(spec: str | IntegerType) -> IntegerType:
    """The storage `IntegerType` for `"i8"`, `"u4"`, ... (signed storage is signless).

    Signed storage is a signless integer, as everywhere else in quantir (ONNX ints are
    signed); a `SIGNED` IntegerType is normalised to signless.
    """
    if isinstance(spec, IntegerType):
        if spec.signedness.data == Signedness.SIGNED:
            return IntegerType(spec.width.data)
        return spec
    match = _STORAGE_RE.fullmatch(spec)
    if match is None:
        raise ValueError(f"unknown storage type '{spec}': expected one of {_STORAGE_SPELLINGS}")
    signedness = Signedness.UNSIGNED if match.group(1) == "u" else Signedness.SIGNLESS
    return IntegerType(int(match.group(2)), signedness)


def storage_name(storage: IntegerType) -> str:
    """`i8` for a signless (signed) 8-bit storage type, `u8` for an unsigned one."""
    unsigned = storage.signedness.data == Signedness.UNSIGNED
    return f"{'u' if unsigned else 'i'}{storage.width.data}"


def storage_range(bits: int, signed: bool) -> tuple[int, int]:
    """The inclusive integer range of a storage type."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def expressed_type(spec: str | Attribute) -> Float16Type | Float32Type:
    """`f32` / `f16` from a name or a type."""
    found = {"f32": f32, "f16": f16}.get(spec) if isinstance(spec, str) else spec
    if not isinstance(found, Float16Type | Float32Type):
        raise ValueError(f"unsupported expressed type {spec}: expected f32 or f16")
    return found


def _storage_problem(storage: IntegerType) -> str | None:
    if storage.signedness.data == Signedness.SIGNED:
        return f"storage type {storage} must be signless (written i{storage.width.data})"
    if storage.width.data not in STORAGE_WIDTHS:
        return (f"unsupported storage width {storage.width.data} ({storage_name(storage)}): "
                f"expected one of {_STORAGE_SPELLINGS}")
    return None


def _scale_problem(scale: float) -> str | None:
    if not math.isfinite(scale) or scale <= 0:
        return f"scale {scale!r} must be positive and finite"
    return None


def _zero_point_problem(zero_point: int, storage: IntegerType) -> str | None:
    signed = storage.signedness.data != Signedness.UNSIGNED
    low, high = storage_range(storage.width.data, signed)
    if not low <= zero_point <= high:
        return (f"zero point {zero_point} is outside the {storage_name(storage)} storage range "
                f"[{low}, {high}]")
    return None


def format_float(value: float) -> str:
    """The shortest text that parses back to the same f64, always as an MLIR float literal.

    Python's `repr` is the shortest round-tripping decimal, but prints `1e-05`, which
    MLIR lexes as an integer: give the mantissa a fraction (`1.0e-05`).
    """
    text = repr(float(value))
    mantissa, exp, exponent = text.partition("e")
    if exp and "." not in mantissa:
        return f"{mantissa}.0e{exponent}"
    return text


# --------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------


class QuantizedType(ParametrizedAttribute, TypeAttribute, ABC):
    """A quantized element type: integer storage standing for `scale * (q - zero_point)`."""

    storage_type: IntegerType
    expressed_type: Float16Type | Float32Type

    @property
    def storage_bits(self) -> int:
        return self.storage_type.width.data

    @property
    def is_signed(self) -> bool:
        return self.storage_type.signedness.data != Signedness.UNSIGNED

    @property
    def storage_min(self) -> int:
        return storage_range(self.storage_bits, self.is_signed)[0]

    @property
    def storage_max(self) -> int:
        return storage_range(self.storage_bits, self.is_signed)[1]

    @property
    def storage_name(self) -> str:
        """`i8`, `u4`, ... as written in the type."""
        return storage_name(self.storage_type)

    @property
    def scales(self) -> tuple[float, ...]:
        raise NotImplementedError

    @property
    def zero_points(self) -> tuple[int, ...]:
        raise NotImplementedError

    def verify(self) -> None:
        problem = _storage_problem(self.storage_type)
        for scale in self.scales:
            problem = problem or _scale_problem(scale)
        for zero_point in self.zero_points:
            problem = problem or _zero_point_problem(zero_point, self.storage_type)
        if problem:
            raise VerifyException(f"!{self.name}: {problem}")


def _parse_storage(parser: AttrParser) -> IntegerType:
    start = parser.pos
    spelling = parser.parse_identifier(" (storage type such as i8 or u8)")
    match = _STORAGE_RE.fullmatch(spelling)
    if match is None:
        parser.raise_error(f"unknown storage type '{spelling}': expected one of "
                           f"{_STORAGE_SPELLINGS}", start, _end(parser, start))
    storage = storage_type(spelling)
    if problem := _storage_problem(storage):
        parser.raise_error(problem, start, _end(parser, start))
    return storage


def _parse_expressed(parser: AttrParser) -> Float16Type | Float32Type:
    start = parser.pos
    found = parser.parse_type()
    if not isinstance(found, Float16Type | Float32Type):
        parser.raise_error(f"unsupported expressed type {found}: expected f32 or f16",
                           start, _end(parser, start))
    return found


def _parse_scale_and_zero_point(parser: AttrParser, storage: IntegerType) -> tuple[float, int]:
    start = parser.pos
    scale = float(parser.parse_number(context_msg=" (scale)"))
    if problem := _scale_problem(scale):
        parser.raise_error(problem, start, _end(parser, start))
    parser.parse_punctuation(":", " between scale and zero point")
    start = parser.pos
    zero_point = parser.parse_integer(allow_boolean=False, context_msg=" (zero point)")
    if problem := _zero_point_problem(zero_point, storage):
        parser.raise_error(problem, start, _end(parser, start))
    return scale, zero_point


def _end(parser: AttrParser, start: Position) -> Position:
    """End of the text parsed since `start`, without the whitespace before the next token."""
    text = parser.lexer.input.content[start:parser.pos]
    return start + len(text.rstrip()) if text.strip() else parser.pos


@irdl_attr_definition
class UniformQuantizedType(QuantizedType):
    """One scale and zero point for the whole tensor: `!q.uniform<i8:f32, 0.0125:-3>`."""

    name = "q.uniform"

    scale_data: FloatData
    zero_point_data: IntAttr

    @staticmethod
    def get(storage: str | IntegerType = "i8", scale: float = 1.0, zero_point: int = 0,
            expressed: str | Attribute = f32) -> UniformQuantizedType:
        return UniformQuantizedType(storage_type(storage), expressed_type(expressed),
                                    FloatData(float(scale)), IntAttr(int(zero_point)))

    @property
    def scale(self) -> float:
        return self.scale_data.data

    @property
    def zero_point(self) -> int:
        return self.zero_point_data.data

    @property
    def scales(self) -> tuple[float, ...]:
        return (self.scale,)

    @property
    def zero_points(self) -> tuple[int, ...]:
        return (self.zero_point,)

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(f"{self.storage_name}:")
            printer.print_attribute(self.expressed_type)
            printer.print_string(f", {format_float(self.scale)}:{self.zero_point}")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            storage = _parse_storage(parser)
            parser.parse_punctuation(":", " after the storage type")
            expressed = _parse_expressed(parser)
            parser.parse_punctuation(",", " after the expressed type")
            scale, zero_point = _parse_scale_and_zero_point(parser, storage)
        return [storage, expressed, FloatData(scale), IntAttr(zero_point)]


@irdl_attr_definition
class PerAxisQuantizedType(QuantizedType):
    """One scale and zero point per index of `axis`: `!q.per_axis<i8:f32:0, {0.1:0, 0.2:0}>`.

    The type does not know the tensor's rank: ops check `axis < rank` and that the
    number of scales equals the size of that dimension.
    """

    name = "q.per_axis"

    axis_data: IntAttr
    scale_list: ArrayAttr[FloatData]
    zero_point_list: ArrayAttr[IntAttr]

    @staticmethod
    def get(storage: str | IntegerType = "i8", scales: Sequence[float] = (1.0,),
            zero_points: Sequence[int] | None = None, axis: int = 0,
            expressed: str | Attribute = f32) -> PerAxisQuantizedType:
        """Per-channel type; `zero_points` defaults to all zeros (symmetric signed)."""
        if zero_points is None:
            zero_points = [0] * len(scales)
        return PerAxisQuantizedType(
            storage_type(storage), expressed_type(expressed), IntAttr(int(axis)),
            ArrayAttr(FloatData(float(s)) for s in scales),
            ArrayAttr(IntAttr(int(z)) for z in zero_points))

    @property
    def axis(self) -> int:
        return self.axis_data.data

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(s.data for s in self.scale_list)

    @property
    def zero_points(self) -> tuple[int, ...]:
        return tuple(z.data for z in self.zero_point_list)

    @property
    def num_channels(self) -> int:
        return len(self.scale_list)

    def channel(self, index: int) -> UniformQuantizedType:
        """The per-tensor type of one channel."""
        return UniformQuantizedType(self.storage_type, self.expressed_type,
                                    self.scale_list.data[index], self.zero_point_list.data[index])

    def verify(self) -> None:
        if self.axis < 0:
            raise VerifyException(f"!{self.name}: axis {self.axis} must be non-negative")
        if not self.scale_list.data:
            raise VerifyException(f"!{self.name}: needs at least one scale:zero_point pair")
        if len(self.scale_list) != len(self.zero_point_list):
            raise VerifyException(f"!{self.name}: {len(self.scale_list)} scales but "
                                  f"{len(self.zero_point_list)} zero points")
        super().verify()

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_string(f"{self.storage_name}:")
            printer.print_attribute(self.expressed_type)
            printer.print_string(f":{self.axis}, {{")
            printer.print_string(", ".join(f"{format_float(s)}:{z}"
                                           for s, z in zip(self.scales, self.zero_points,
                                                           strict=True)))
            printer.print_string("}")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            storage = _parse_storage(parser)
            parser.parse_punctuation(":", " after the storage type")
            expressed = _parse_expressed(parser)
            parser.parse_punctuation(":", " before the quantized axis")
            start = parser.pos
            axis = parser.parse_integer(allow_boolean=False, context_msg=" (quantized axis)")
            if axis < 0:
                parser.raise_error(f"axis {axis} must be non-negative", start,
                                   _end(parser, start))
            parser.parse_punctuation(",", " after the axis")
            start = parser.pos
            pairs = parser.parse_comma_separated_list(
                parser.Delimiter.BRACES, lambda: _parse_scale_and_zero_point(parser, storage),
                " (scale:zero_point pairs)")
            if not pairs:
                parser.raise_error("needs at least one scale:zero_point pair", start,
                                   _end(parser, start))
        return [storage, expressed, IntAttr(axis),
                ArrayAttr(FloatData(s) for s, _ in pairs), ArrayAttr(IntAttr(z) for _, z in pairs)]


# --------------------------------------------------------------------------------------
# Tensor helpers
# --------------------------------------------------------------------------------------


def quantized_element(type_: Attribute) -> QuantizedType | None:
    """The quantized element type of a tensor type, or None."""
    if isinstance(type_, TensorType) and isinstance(type_.element_type, QuantizedType):
        return type_.element_type
    return None


def quantized_tensor_problem(type_: TensorType) -> str | None:
    """Why a per-axis element type does not fit its tensor's shape, or None."""
    element = type_.element_type
    if not isinstance(element, PerAxisQuantizedType):
        return None
    shape = type_.get_shape()
    if element.axis >= len(shape):
        return (f"per-axis axis {element.axis} is outside the rank {len(shape)} of "
                f"{type_}")
    size = shape[element.axis]
    if size < 0:
        return f"per-axis dimension {element.axis} of {type_} must be static"
    if element.num_channels != size:
        return (f"{element.num_channels} per-axis scales for dimension {element.axis} of "
                f"size {size} in {type_}")
    return None


def _tensor_of(shape_from: Attribute, element: Attribute) -> TensorType:
    assert isinstance(shape_from, TensorType), f"expected a tensor type, got {shape_from}"
    return TensorType(element, shape_from.get_shape())


# --------------------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------------------


class QOperation(IRDLOperation, ABC):
    """A `q` op: one tensor in, one tensor of the same shape out, named after its node."""

    onnx_name = prop_def(StringAttr)
    input = operand_def(TensorType)
    output = result_def(TensorType)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    traits = traits_def(Pure())

    @property
    def node_name(self) -> str:
        return self.onnx_name.data

    def _error(self, message: str) -> VerifyException:
        return VerifyException(f"{self.name} '{self.node_name}': {message}")

    def _types(self) -> tuple[TensorType, TensorType]:
        """Input and output types, checked to be tensors of one shape."""
        source, target = self.input.type, self.output.type
        assert isinstance(source, TensorType) and isinstance(target, TensorType)
        if source.get_shape() != target.get_shape():
            raise self._error(f"input shape {list(source.get_shape())} and result shape "
                              f"{list(target.get_shape())} differ")
        for what, type_ in (("input", source), ("result", target)):
            if problem := quantized_tensor_problem(type_):
                raise self._error(f"{what}: {problem}")
        return source, target

    def _quantized(self, what: str, type_: TensorType) -> QuantizedType:
        element = type_.element_type
        if not isinstance(element, QuantizedType):
            raise self._error(f"{what} must be a tensor of a quantized type, got {type_}")
        return element


@irdl_op_definition
class QuantizeOp(QOperation):
    """Float tensor -> quantized tensor: `q = clamp(round_half_even(x / scale) + zp)`."""

    name = "q.quantize"

    def __init__(self, input: SSAValue | Operation, result: QuantizedType | TensorType,
                 onnx_name: str):
        value = SSAValue.get(input)
        if isinstance(result, QuantizedType):
            result = _tensor_of(value.type, result)
        super().__init__(operands=[value], result_types=[result],
                         properties={"onnx_name": StringAttr(onnx_name)})

    def verify_(self) -> None:
        source, target = self._types()
        if not isinstance(source.element_type, Float16Type | Float32Type):
            raise self._error(f"input must be a tensor of f32 or f16, got {source}")
        element = self._quantized("result", target)
        if element.expressed_type != source.element_type:
            raise self._error(f"expressed type {element.expressed_type} of the result does not "
                              f"match the input element type {source.element_type}")


@irdl_op_definition
class DequantizeOp(QOperation):
    """Quantized tensor -> float tensor of its expressed type: `scale * (q - zp)`."""

    name = "q.dequantize"

    def __init__(self, input: SSAValue | Operation, onnx_name: str):
        value = SSAValue.get(input)
        element = quantized_element(value.type)
        if element is None:
            raise ValueError(f"q.dequantize '{onnx_name}': input {value.type} is not quantized")
        super().__init__(operands=[value],
                         result_types=[_tensor_of(value.type, element.expressed_type)],
                         properties={"onnx_name": StringAttr(onnx_name)})

    def verify_(self) -> None:
        source, target = self._types()
        element = self._quantized("input", source)
        if target.element_type != element.expressed_type:
            raise self._error(f"result element type {target.element_type} does not match the "
                              f"expressed type {element.expressed_type} of the input")


@irdl_op_definition
class RequantOp(QOperation):
    """Integer-only rescale of a quantized tensor or an integer accumulator.

    For each element (per channel along `axis` when `multiplier` and `shift` are arrays):

        x   = q_in - zp_in          (zp_in = 0 when the input is a plain integer tensor)
        y   = round(x * multiplier * 2^(shift - 31))    with the named rounding
        out = clamp(y + zp_out, storage_min, storage_max)

    `multiplier` is a non-negative Q31 int32 and `shift` the exponent of frexp(real
    scale): positive shifts left, negative right (TFLite's convention). `rounding`:

    - `tflite`: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << max(shift, 0),
      multiplier), max(-shift, 0)) — double rounding, the TFLite reference; shift <= 31.
    - `single`: (x * multiplier + 2^(30 - shift)) >> (31 - shift) — one rounding, half
      up (TFLITE_SINGLE_ROUNDING); shift <= 30.
    - `tosa`: TOSA apply_scale_32 with right shift 31 - shift, which TOSA needs in
      [2, 62]; shift <= 29.

    The result must be a quantized type: its zero point and storage range define the
    output. The input may be quantized or a signless/signed integer tensor (an i32
    accumulator).
    """

    name = "q.requant"

    multiplier = prop_def(IntegerAttr | DenseArrayBase)
    shift = prop_def(IntegerAttr | DenseArrayBase)
    rounding = prop_def(StringAttr)
    axis = opt_prop_def(IntegerAttr)

    def __init__(self, input: SSAValue | Operation, result: QuantizedType | TensorType,
                 multiplier: int | Sequence[int], shift: int | Sequence[int], onnx_name: str,
                 rounding: str = "tflite", axis: int | None = None):
        value = SSAValue.get(input)
        if isinstance(result, QuantizedType):
            result = _tensor_of(value.type, result)
        properties: dict[str, Attribute] = {
            "onnx_name": StringAttr(onnx_name),
            "multiplier": _int_or_array(multiplier, i32),
            "shift": _int_or_array(shift, i64),
            "rounding": StringAttr(rounding),
        }
        if axis is not None:
            properties["axis"] = IntegerAttr(axis, i64)
        super().__init__(operands=[value], result_types=[result], properties=properties)

    @property
    def multipliers(self) -> tuple[int, ...]:
        return _int_values(self.multiplier)

    @property
    def shifts(self) -> tuple[int, ...]:
        return _int_values(self.shift)

    @property
    def is_per_channel(self) -> bool:
        return isinstance(self.multiplier, DenseArrayBase)

    @property
    def rounding_mode(self) -> str:
        return self.rounding.data

    def verify_(self) -> None:
        source, target = self._types()
        element = source.element_type
        if not isinstance(element, QuantizedType) and not (
                isinstance(element, IntegerType)
                and element.signedness.data != Signedness.UNSIGNED):
            raise self._error(f"input must be a tensor of a quantized type or of signless / "
                              f"signed integers, got {source}")
        self._quantized("result", target)
        mode = self.rounding.data
        if mode not in ROUNDING_MODES:
            raise self._error(f"unknown rounding mode '{mode}': expected one of "
                              f"{', '.join(ROUNDING_MODES)}")
        self._check_kinds()
        for value in self.multipliers:
            if not 0 <= value <= MAX_MULTIPLIER:
                raise self._error(f"multiplier {value} is outside the Q31 range "
                                  f"[0, {MAX_MULTIPLIER}]")
        for value in self.shifts:
            if not MIN_SHIFT <= value <= MAX_SHIFT[mode]:
                raise self._error(f"shift {value} is outside [{MIN_SHIFT}, {MAX_SHIFT[mode]}] "
                                  f"for rounding '{mode}' (positive shifts left)")
        self._check_channels(source)

    def _check_kinds(self) -> None:
        for what, attr, width in (("multiplier", self.multiplier, 32),
                                  ("shift", self.shift, 64)):
            element = attr.elt_type if isinstance(attr, DenseArrayBase) else attr.type
            if element != IntegerType(width):
                raise self._error(f"{what} must be i{width} (or array<i{width}: ...>), got "
                                  f"{element}")
        if isinstance(self.multiplier, DenseArrayBase) != isinstance(self.shift, DenseArrayBase):
            raise self._error("multiplier and shift must both be scalars or both be arrays")

    def _check_channels(self, source: TensorType) -> None:
        if not self.is_per_channel:
            if self.axis is not None:
                raise self._error("axis is only allowed with per-channel (array) multipliers")
            return
        count = len(self.multipliers)
        if len(self.shifts) != count:
            raise self._error(f"{count} multipliers but {len(self.shifts)} shifts")
        if self.axis is None:
            raise self._error("per-channel multipliers need an axis")
        axis, shape = self.axis.value.data, source.get_shape()
        if not 0 <= axis < len(shape):
            raise self._error(f"axis {axis} is outside the rank {len(shape)} of the input")
        if shape[axis] != count:
            raise self._error(f"{count} multipliers for dimension {axis} of size {shape[axis]}")


@irdl_op_definition
class PrecisionChangeOp(QOperation):
    """Quantized tensor -> quantized tensor of another storage width (e.g. i16 -> i8).

    Sits between the layers `producer` and `consumer` when they run at different
    precisions; `reason` names the configuration line that asked for it. Numerically
    `q_out = clamp(round_half_even(scale_in * (q_in - zp_in) / scale_out) + zp_out)`;
    lowering turns it into an integer `q.requant`.
    """

    name = "q.precision_change"

    producer = prop_def(StringAttr)
    consumer = prop_def(StringAttr)
    reason = opt_prop_def(StringAttr)

    def __init__(self, input: SSAValue | Operation, result: QuantizedType | TensorType,
                 onnx_name: str, producer: str, consumer: str, reason: str | None = None):
        value = SSAValue.get(input)
        if isinstance(result, QuantizedType):
            result = _tensor_of(value.type, result)
        properties: dict[str, Attribute] = {
            "onnx_name": StringAttr(onnx_name),
            "producer": StringAttr(producer),
            "consumer": StringAttr(consumer),
        }
        if reason is not None:
            properties["reason"] = StringAttr(reason)
        super().__init__(operands=[value], result_types=[result], properties=properties)

    def verify_(self) -> None:
        source, target = self._types()
        before = self._quantized("input", source)
        after = self._quantized("result", target)
        if before.expressed_type != after.expressed_type:
            raise self._error(f"expressed types differ: {before.expressed_type} -> "
                              f"{after.expressed_type}")
        if before.storage_bits == after.storage_bits:
            raise self._error(f"storage widths are equal ({before.storage_name} -> "
                              f"{after.storage_name}): use q.requant to change scale or zero "
                              f"point at one width")


def _int_or_array(value: int | Sequence[int], element: IntegerType) -> Attribute:
    if isinstance(value, int):
        return IntegerAttr(value, element)
    return DenseArrayBase.from_list(element, [int(v) for v in value])


def _int_values(attr: Attribute) -> tuple[int, ...]:
    if isinstance(attr, DenseArrayBase):
        return tuple(int(v) for v in attr.iter_values())
    assert isinstance(attr, IntegerAttr)
    return (attr.value.data,)


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A quantized weight: its integers (`value`, storage bits widened to 8 for 4-bit
    storage) as a tensor of the quantized type. Text:

        %w = q.constant dense<"0x..."> : tensor<8x3xi8> {onnx_name = "w"}
               : tensor<8x3x!q.uniform<i8:f32, 0.1:0>>
    """

    name = "q.constant"
    onnx_name = prop_def(StringAttr)
    value = prop_def(DenseIntOrFPElementsAttr | DenseResourceAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure(), ConstantLike())

    def __init__(self, value: DenseIntOrFPElementsAttr, result: TensorType, onnx_name: str):
        super().__init__(result_types=[result],
                         properties={"value": value, "onnx_name": StringAttr(onnx_name)})

    @property
    def node_name(self) -> str:
        return self.onnx_name.data

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_attribute(self.value)
        printer.print_string(" ")
        printer.print_attr_dict({"onnx_name": self.onnx_name})
        printer.print_string(" : ")
        printer.print_attribute(self.output.type)

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        value = parser.parse_attribute()
        if not isinstance(value, DenseIntOrFPElementsAttr | DenseResourceAttr):
            parser.raise_error("q.constant expects a dense or dense_resource value")
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        result = parser.parse_type()
        return cls.create(result_types=[result], properties={"value": value, **attrs})

    def verify_(self) -> None:
        result = self.output.type
        assert isinstance(result, TensorType)
        element = result.element_type
        name = f"q.constant '{self.node_name}'"
        if not isinstance(element, QuantizedType):
            raise VerifyException(f"{name}: result must be a tensor of a quantized type")
        if problem := quantized_tensor_problem(result):
            raise VerifyException(f"{name}: {problem}")
        value_type = self.value.type
        assert isinstance(value_type, TensorType)
        if tuple(value_type.get_shape()) != tuple(result.get_shape()):
            raise VerifyException(f"{name}: value shape {list(value_type.get_shape())} differs "
                                  f"from the result shape {list(result.get_shape())}")
        storage = value_type.element_type
        if not isinstance(storage, IntegerType) or \
                storage.width.data != max(element.storage_bits, 8) or \
                (storage.signedness.data == Signedness.UNSIGNED) == element.is_signed:
            raise VerifyException(f"{name}: value element type {storage} does not hold "
                                  f"{element.storage_name} storage")


Q = Dialect(
    "q",
    [ConstantOp, QuantizeOp, DequantizeOp, RequantOp, PrecisionChangeOp],
    [UniformQuantizedType, PerAxisQuantizedType],
)
