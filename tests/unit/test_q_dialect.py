"""The `q` dialect: quantized types, their text form, op verifiers, and the numpy helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from xdsl.dialects.builtin import (
    FloatData,
    IntegerType,
    ModuleOp,
    Signedness,
    TensorType,
    f16,
    f32,
    i32,
)
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Region
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from quantir.dialects.q import (
    DequantizeOp,
    PerAxisQuantizedType,
    PrecisionChangeOp,
    Q,
    QuantizeOp,
    RequantOp,
    UniformQuantizedType,
    format_float,
    quantized_element,
    storage_type,
)
from quantir.dialects.q_math import (
    MIN_RANGE,
    dequantize_array,
    encoding_from_range,
    quantize_array,
    storage_dtype,
)
from quantir.errors import QuantirError
from quantir.ir import parse_module, print_module, quantir_context

U8 = "!q.uniform<i8:f32, 0.05:-3>"
U16 = "!q.uniform<i16:f32, 0.001:0>"


def parse_type(text: str):
    return Parser(quantir_context(), text).parse_attribute()


def parse_unverified(text: str) -> ModuleOp:
    return Parser(quantir_context(), text).parse_module()


def verify_text(text: str) -> ModuleOp:
    module = parse_unverified(text)
    module.verify()
    return module


def func_text(args: list[str], body: str) -> str:
    """A function with the given argument types whose body is `body` (one op per line)."""
    params = ", ".join(f"%arg{i}: {t}" for i, t in enumerate(args))
    return f"func.func @f({params}) {{\n{body}\n  func.return\n}}\n"


def one_op(op_text: str, *args: str):
    module = verify_text(func_text(list(args), f"  {op_text}"))
    return next(op for op in module.walk() if op.name.startswith("q."))


def expect_verify_error(match: str, op_text: str, *args: str) -> None:
    with pytest.raises(VerifyException, match=match):
        verify_text(func_text(list(args), f"  {op_text}"))


# --------------------------------------------------------------------------------------
# Types: construction and Python API
# --------------------------------------------------------------------------------------


def test_dialect_registers_ops_and_types() -> None:
    assert Q.name == "q"
    assert {op.name for op in Q.operations} == {
        "q.constant", "q.quantize", "q.dequantize", "q.requant", "q.precision_change"}
    assert {attr.name for attr in Q.attributes} == {"q.uniform", "q.per_axis"}


def test_uniform_get_and_properties() -> None:
    t = UniformQuantizedType.get(storage="i8", scale=0.0125, zero_point=-3, expressed=f32)
    assert str(t) == "!q.uniform<i8:f32, 0.0125:-3>"
    assert (t.storage_bits, t.is_signed, t.storage_min, t.storage_max) == (8, True, -128, 127)
    assert (t.scale, t.zero_point, t.scales, t.zero_points) == (0.0125, -3, (0.0125,), (-3,))
    assert t.storage_name == "i8"
    assert t.storage_type == IntegerType(8)  # signed storage is signless, as in quantir.ir
    assert t.expressed_type == f32


@pytest.mark.parametrize(("storage", "low", "high", "signed"), [
    ("i4", -8, 7, True), ("u4", 0, 15, False), ("i8", -128, 127, True),
    ("u8", 0, 255, False), ("i16", -32768, 32767, True), ("u16", 0, 65535, False),
    ("i32", -2**31, 2**31 - 1, True), ("u32", 0, 2**32 - 1, False),
])
def test_storage_ranges(storage: str, low: int, high: int, signed: bool) -> None:
    t = UniformQuantizedType.get(storage, 1.0, 0 if signed else 1)
    assert (t.storage_min, t.storage_max, t.is_signed) == (low, high, signed)
    assert str(t).startswith(f"!q.uniform<{storage}:")


def test_storage_type_spellings() -> None:
    assert storage_type("u8") == IntegerType(8, Signedness.UNSIGNED)
    assert storage_type(IntegerType(8, Signedness.SIGNED)) == IntegerType(8)
    with pytest.raises(ValueError, match="unknown storage type 'si8'"):
        storage_type("si8")


def test_per_axis_get_and_properties() -> None:
    t = PerAxisQuantizedType.get("u8", scales=[0.1, 1e-05], zero_points=[0, 3], axis=1,
                                 expressed="f16")
    assert str(t) == "!q.per_axis<u8:f16:1, {0.1:0, 1.0e-05:3}>"
    assert (t.axis, t.num_channels, t.scales, t.zero_points) == (1, 2, (0.1, 1e-05), (0, 3))
    assert t.expressed_type == f16 and not t.is_signed
    assert t.channel(1) == UniformQuantizedType.get("u8", 1e-05, 3, "f16")
    assert PerAxisQuantizedType.get("i8", [0.5, 0.25]).zero_points == (0, 0)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: UniformQuantizedType.get("i8", 0.0), "scale 0.0 must be positive and finite"),
    (lambda: UniformQuantizedType.get("i8", -0.5), "scale -0.5 must be positive"),
    (lambda: UniformQuantizedType.get("i8", math.inf), "scale inf must be positive and finite"),
    (lambda: UniformQuantizedType.get("i8", math.nan), "scale nan must be positive"),
    (lambda: UniformQuantizedType.get("i8", 1.0, 128), r"zero point 128 .* i8 .*\[-128, 127\]"),
    (lambda: UniformQuantizedType.get("i8", 1.0, -129), r"zero point -129 .* \[-128, 127\]"),
    (lambda: UniformQuantizedType.get("u8", 1.0, -1), r"zero point -1 .* u8 .*\[0, 255\]"),
    (lambda: UniformQuantizedType.get("u8", 1.0, 256), r"zero point 256 .*\[0, 255\]"),
    (lambda: UniformQuantizedType.get("i4", 1.0, 8), r"zero point 8 .* i4 .*\[-8, 7\]"),
    (lambda: UniformQuantizedType.get("u4", 1.0, 16), r"zero point 16 .* u4 .*\[0, 15\]"),
    (lambda: UniformQuantizedType.get("i64", 1.0), "unsupported storage width 64"),
    (lambda: UniformQuantizedType.get("u7", 1.0), "unsupported storage width 7"),
    (lambda: UniformQuantizedType(IntegerType(8, Signedness.SIGNED), f32, FloatData(1.0),
                                  UniformQuantizedType.get().zero_point_data),
     "must be signless"),
    (lambda: UniformQuantizedType.get("i8", 1.0, expressed="f64"), "expected f32 or f16"),
    (lambda: PerAxisQuantizedType.get("i8", [0.1, 0.0]), "scale 0.0 must be positive"),
    (lambda: PerAxisQuantizedType.get("i8", [0.1], [200]), "zero point 200 is outside"),
    (lambda: PerAxisQuantizedType.get("i8", [0.1, 0.2], [0]), "2 scales but 1 zero points"),
    (lambda: PerAxisQuantizedType.get("i8", []), "at least one scale:zero_point pair"),
    (lambda: PerAxisQuantizedType.get("i8", [0.1], axis=-1), "axis -1 must be non-negative"),
])
def test_type_verifier_rejects(make, match: str) -> None:
    with pytest.raises((VerifyException, ValueError), match=match):
        make()


# --------------------------------------------------------------------------------------
# Types: text form
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "!q.uniform<i8:f32, 0.0125:-3>",
    "!q.uniform<u8:f32, 0.009019607843137253:200>",
    "!q.uniform<i4:f16, 2.0:-8>",
    "!q.uniform<u4:f32, 1.0e-05:15>",
    "!q.uniform<i16:f32, 3.0517578125e-05:0>",
    "!q.uniform<i32:f32, 1.0e+20:0>",
    "!q.uniform<u32:f32, 5.0e-324:4294967295>",
    "!q.per_axis<i8:f32:0, {0.1:0, 0.2:0, 0.30000000000000004:0}>",
    "!q.per_axis<u16:f16:3, {0.5:32768}>",
])
def test_canonical_type_text_round_trips(text: str) -> None:
    parsed = parse_type(text)
    assert str(parsed) == text
    assert parse_type(str(parsed)) == parsed


def test_non_canonical_type_text_is_normalised() -> None:
    assert str(parse_type("!q.uniform< i8 : f32 , 1 : 0 >")) == "!q.uniform<i8:f32, 1.0:0>"
    assert str(parse_type("!q.uniform<u8:f32, 1.0e-3:0>")) == "!q.uniform<u8:f32, 0.001:0>"
    # `1e-3` is not an MLIR float literal (it lexes as `1` then `e`): it must not parse.
    with pytest.raises(ParseError):
        parse_type("!q.uniform<u8:f32, 1e-3:0>")


@given(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, allow_nan=False))
def test_scale_prints_and_parses_back_bit_for_bit(scale: float) -> None:
    t = UniformQuantizedType.get("i8", scale, 0)
    back = parse_type(str(t))
    assert back == t
    assert np.float64(back.scale).tobytes() == np.float64(scale).tobytes()


def test_format_float_always_gives_a_float_literal() -> None:
    assert format_float(0.1) == "0.1"
    assert format_float(1e-05) == "1.0e-05"
    assert format_float(1e16) == "1.0e+16"
    assert format_float(2.5e-07) == "2.5e-07"
    assert format_float(3.0) == "3.0"


@pytest.mark.parametrize(("text", "match"), [
    ("!q.uniform<si8:f32, 1.0:0>", "unknown storage type 'si8'"),
    ("!q.uniform<i9:f32, 1.0:0>", "unsupported storage width 9"),
    ("!q.uniform<i64:f32, 1.0:0>", "unsupported storage width 64"),
    ("!q.uniform<i8:f64, 1.0:0>", "unsupported expressed type f64: expected f32 or f16"),
    ("!q.uniform<i8:i32, 1.0:0>", "unsupported expressed type i32"),
    ("!q.uniform<i8:f32, 0.0:0>", "scale 0.0 must be positive and finite"),
    ("!q.uniform<i8:f32, -0.5:0>", "scale -0.5 must be positive and finite"),
    ("!q.uniform<i8:f32, 1.0e400:0>", "scale inf must be positive and finite"),
    ("!q.uniform<i8:f32, 0.1>", "Expected ':' between scale and zero point"),
    ("!q.uniform<i8:f32, 0.1:0.5>", "Expected integer literal"),
    ("!q.uniform<i8:f32, 0.1:-300>", r"zero point -300 is outside the i8 storage range"),
    ("!q.uniform<u8:f32, 0.1:-1>", r"zero point -1 is outside the u8 storage range \[0, 255\]"),
    ("!q.uniform<i4:f32, 0.1:8>", r"zero point 8 is outside the i4 storage range \[-8, 7\]"),
    ("!q.uniform<u4:f32, 0.1:16>", r"zero point 16 is outside the u4 storage range \[0, 15\]"),
    ("!q.per_axis<i8:f32:-1, {0.1:0}>", "axis -1 must be non-negative"),
    ("!q.per_axis<i8:f32:0, {}>", "at least one scale:zero_point pair"),
    ("!q.per_axis<i8:f32:0, {0.1:0, 0.0:0}>", "scale 0.0 must be positive"),
    ("!q.per_axis<u8:f32:0, {0.1:0, 0.2:256}>", "zero point 256 is outside the u8"),
])
def test_type_parse_errors_name_the_problem(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_type(text)


def test_type_parse_error_points_at_the_bad_token() -> None:
    with pytest.raises(ParseError) as info:
        parse_type("!q.uniform<i8:f32, 0.05:-300>")
    # Column 25 is the zero point; the caret underlines exactly its 4 characters.
    assert ":1:25" in str(info.value)
    assert "\n" + " " * 24 + "^^^^\n" in str(info.value)


def test_quantized_tensor_text() -> None:
    text = f"tensor<1x8x8x8x{U8}>"
    tensor = parse_type(text)
    assert isinstance(tensor, TensorType)
    assert str(tensor) == text
    assert quantized_element(tensor) == UniformQuantizedType.get("i8", 0.05, -3)
    assert quantized_element(parse_type("tensor<2xf32>")) is None


# --------------------------------------------------------------------------------------
# Ops: text form and builders
# --------------------------------------------------------------------------------------

PER_AXIS_2 = "!q.per_axis<i8:f32:1, {0.1:0, 0.2:0}>"

ROUND_TRIP = f"""\
builtin.module {{
  func.func @f(%arg0: tensor<1x2xf32>, %arg1: tensor<1x2xi32>) -> tensor<1x2xf32> {{
    %0 = q.quantize %arg0 {{onnx_name = "conv1"}} : tensor<1x2xf32> -> tensor<1x2x{U16}>
    %1 = q.precision_change %0 {{onnx_name = "conv1", producer = "conv1", consumer = "fc", \
reason = "a16_w16_a8 at line 3"}} : tensor<1x2x{U16}> -> tensor<1x2x{U8}>
    %2 = q.requant %1 {{onnx_name = "fc", multiplier = 1518500250 : i32, shift = -7 : i64, \
rounding = "tflite"}} : tensor<1x2x{U8}> -> tensor<1x2x!q.uniform<u8:f32, 0.1:128>>
    %3 = q.requant %arg1 {{onnx_name = "fc", multiplier = array<i32: 1073741824, 0>, \
shift = array<i64: 0, -31>, rounding = "single", axis = 1 : i64}} : tensor<1x2xi32> -> \
tensor<1x2x{PER_AXIS_2}>
    %4 = q.dequantize %3 {{onnx_name = "fc"}} : tensor<1x2x{PER_AXIS_2}> -> tensor<1x2xf32>
    func.return %4 : tensor<1x2xf32>
  }}
}}
"""


def test_custom_form_round_trips_exactly() -> None:
    module = parse_module(ROUND_TRIP)
    assert print_module(module) == ROUND_TRIP
    assert print_module(parse_module(print_module(module))) == ROUND_TRIP


def test_generic_form_round_trips() -> None:
    module = parse_module(ROUND_TRIP)
    generic = print_module(module, generic=True)
    assert '"q.requant"(%arg1) <{onnx_name = "fc", multiplier = array<i32: 1073741824, 0>' \
        in generic
    assert '"q.quantize"(%arg0) <{onnx_name = "conv1"}>' in generic
    again = parse_module(generic)
    assert print_module(again) == ROUND_TRIP
    assert print_module(again, generic=True) == generic
    assert again.is_structurally_equivalent(module)


def test_builders_infer_types_and_print_the_documented_syntax() -> None:
    arg_type = TensorType(f32, [1, 8])
    block = Block(arg_types=[arg_type, TensorType(i32, [1, 8])])
    x, acc = block.args
    u8 = UniformQuantizedType.get("i8", 0.05, -3)
    i16 = UniformQuantizedType.get("i16", 0.001, 0)
    quantize = QuantizeOp(x, u8, "conv1")
    change = PrecisionChangeOp(quantize, i16, onnx_name="conv1", producer="conv1",
                               consumer="fc", reason="fc: a16_w16")
    requant = RequantOp(change, u8, multiplier=1 << 30, shift=-3, onnx_name="fc",
                        rounding="tosa")
    per_channel = RequantOp(acc, u8, multiplier=[1 << 30] * 8, shift=list(range(-8, 0)),
                            onnx_name="fc", axis=1)
    dequantize = DequantizeOp(requant, "fc")
    ops = [quantize, change, requant, per_channel, dequantize]
    block.add_ops([*ops, ReturnOp(dequantize)])
    func = FuncOp("f", ((arg_type, TensorType(i32, [1, 8])), (arg_type,)), Region(block))
    module = ModuleOp([func])
    module.verify()

    assert quantize.output.type == TensorType(u8, [1, 8])
    assert dequantize.output.type == arg_type
    assert (requant.multipliers, requant.shifts, requant.rounding_mode) == ((1 << 30,), (-3,),
                                                                             "tosa")
    assert not requant.is_per_channel and per_channel.is_per_channel
    assert per_channel.shifts == tuple(range(-8, 0))
    assert change.reason is not None and change.reason.data == "fc: a16_w16"
    assert quantize.node_name == "conv1"
    text = print_module(module)
    assert (f'q.quantize %0 {{onnx_name = "conv1"}} : tensor<1x8xf32> -> '
            f'tensor<1x8x{U8}>') in text
    assert print_module(parse_module(text)) == text


def test_dequantize_builder_rejects_a_float_input() -> None:
    block = Block(arg_types=[TensorType(f32, [2])])
    with pytest.raises(ValueError, match="is not quantized"):
        DequantizeOp(block.args[0], "x")


# --------------------------------------------------------------------------------------
# Ops: verifiers (one failing case per rule; each message names the op and the problem)
# --------------------------------------------------------------------------------------


def test_quantize_verifier() -> None:
    q8 = f"tensor<1x2x{U8}>"
    op = "%0 = q.quantize %arg0 {{onnx_name = \"conv1\"}} : {} -> {}"
    one_op(op.format("tensor<1x2xf32>", q8), "tensor<1x2xf32>")
    expect_verify_error(r"q.quantize 'conv1': expressed type f32 of the result does not match "
                        r"the input element type f16",
                        op.format("tensor<1x2xf16>", q8), "tensor<1x2xf16>")
    expect_verify_error(r"q.quantize 'conv1': input must be a tensor of f32 or f16",
                        op.format("tensor<1x2xi32>", q8), "tensor<1x2xi32>")
    expect_verify_error(r"q.quantize 'conv1': result must be a tensor of a quantized type",
                        op.format("tensor<1x2xf32>", "tensor<1x2xi8>"), "tensor<1x2xf32>")
    expect_verify_error(r"input shape \[1, 3\] and result shape \[1, 2\] differ",
                        op.format("tensor<1x3xf32>", q8), "tensor<1x3xf32>")


@pytest.mark.parametrize(("shape", "element", "match"), [
    ("1x2", "!q.per_axis<i8:f32:2, {0.1:0, 0.2:0}>",
     r"per-axis axis 2 is outside the rank 2"),
    ("1x3", "!q.per_axis<i8:f32:1, {0.1:0, 0.2:0}>",
     r"2 per-axis scales for dimension 1 of size 3"),
    ("1x?", "!q.per_axis<i8:f32:1, {0.1:0, 0.2:0}>",
     r"per-axis dimension 1 .* must be static"),
])
def test_per_axis_type_must_fit_the_tensor(shape: str, element: str, match: str) -> None:
    float_type = f"tensor<{shape}xf32>"
    expect_verify_error(
        f"q.quantize 'w': result: {match}",
        f'%0 = q.quantize %arg0 {{onnx_name = "w"}} : {float_type} -> tensor<{shape}x{element}>',
        float_type)
    expect_verify_error(
        f"q.dequantize 'w': input: {match}",
        f'%0 = q.dequantize %arg0 {{onnx_name = "w"}} : tensor<{shape}x{element}> -> {float_type}',
        f"tensor<{shape}x{element}>")


def test_dequantize_verifier() -> None:
    q8 = f"tensor<1x2x{U8}>"
    op = "%0 = q.dequantize %arg0 {{onnx_name = \"d\"}} : {} -> {}"
    one_op(op.format(q8, "tensor<1x2xf32>"), q8)
    expect_verify_error(r"q.dequantize 'd': result element type f16 does not match the "
                        r"expressed type f32 of the input",
                        op.format(q8, "tensor<1x2xf16>"), q8)
    expect_verify_error(r"q.dequantize 'd': input must be a tensor of a quantized type",
                        op.format("tensor<1x2xi8>", "tensor<1x2xf32>"), "tensor<1x2xi8>")
    expect_verify_error(r"q.dequantize 'd': input shape \[1, 2\] and result shape \[2, 1\]",
                        op.format(q8, "tensor<2x1xf32>"), q8)


def requant(props: str, source: str = "tensor<1x2xi32>",
            result: str = f"tensor<1x2x{U8}>") -> tuple[str, str]:
    return f'%0 = q.requant %arg0 {{onnx_name = "rq", {props}}} : {source} -> {result}', source


SCALAR = 'multiplier = 1073741824 : i32, shift = -3 : i64, rounding = "tflite"'
ARRAYS = ('multiplier = array<i32: 1, 2>, shift = array<i64: -1, -2>, rounding = "tflite", '
          'axis = 1 : i64')


def test_requant_accepts_accumulators_and_quantized_inputs() -> None:
    op = one_op(*requant(SCALAR))
    assert isinstance(op, RequantOp) and op.multipliers == (1 << 30,)
    one_op(*requant(SCALAR, source="tensor<1x2xsi32>"))
    one_op(*requant(SCALAR, source=f"tensor<1x2x{U16}>"))
    one_op(*requant(ARRAYS))
    one_op(*requant('multiplier = 2147483647 : i32, shift = 31 : i64, rounding = "tflite"'))
    one_op(*requant('multiplier = 0 : i32, shift = -31 : i64, rounding = "single"'))
    one_op(*requant('multiplier = 1 : i32, shift = 30 : i64, rounding = "single"'))
    one_op(*requant('multiplier = 1 : i32, shift = 29 : i64, rounding = "tosa"'))


@pytest.mark.parametrize(("props", "match"), [
    ('multiplier = -1 : i32, shift = 0 : i64, rounding = "tflite"',
     r"multiplier -1 is outside the Q31 range \[0, 2147483647\]"),
    # A signless i32 attribute reads 2^31 back as -2^31.
    ('multiplier = 2147483648 : i32, shift = 0 : i64, rounding = "tflite"',
     r"multiplier -2147483648 is outside the Q31 range"),
    ('multiplier = array<i32: 1, -5>, shift = array<i64: 0, 0>, rounding = "tflite", '
     'axis = 1 : i64', "multiplier -5 is outside the Q31 range"),
    ('multiplier = 1 : i32, shift = 32 : i64, rounding = "tflite"',
     r"shift 32 is outside \[-31, 31\] for rounding 'tflite' \(positive shifts left\)"),
    ('multiplier = 1 : i32, shift = -32 : i64, rounding = "tflite"',
     r"shift -32 is outside \[-31, 31\]"),
    ('multiplier = 1 : i32, shift = 31 : i64, rounding = "single"',
     r"shift 31 is outside \[-31, 30\] for rounding 'single'"),
    ('multiplier = 1 : i32, shift = 30 : i64, rounding = "tosa"',
     r"shift 30 is outside \[-31, 29\] for rounding 'tosa'"),
    ('multiplier = 1 : i32, shift = 0 : i64, rounding = "nearest"',
     r"unknown rounding mode 'nearest': expected one of tflite, single, tosa"),
    ('multiplier = 1 : i64, shift = 0 : i64, rounding = "tflite"',
     r"multiplier must be i32 \(or array<i32: ...>\), got i64"),
    ('multiplier = 1 : i32, shift = 0 : i32, rounding = "tflite"', r"shift must be i64"),
    ('multiplier = array<i32: 1, 2>, shift = 0 : i64, rounding = "tflite", axis = 1 : i64',
     "multiplier and shift must both be scalars or both be arrays"),
    ('multiplier = array<i32: 1, 2>, shift = array<i64: 0>, rounding = "tflite", '
     'axis = 1 : i64', "2 multipliers but 1 shifts"),
    ('multiplier = array<i32: 1, 2>, shift = array<i64: 0, 0>, rounding = "tflite"',
     "per-channel multipliers need an axis"),
    ('multiplier = 1 : i32, shift = 0 : i64, rounding = "tflite", axis = 1 : i64',
     "axis is only allowed with per-channel"),
    ('multiplier = array<i32: 1, 2>, shift = array<i64: 0, 0>, rounding = "tflite", '
     'axis = 2 : i64', "axis 2 is outside the rank 2 of the input"),
    ('multiplier = array<i32: 1, 2>, shift = array<i64: 0, 0>, rounding = "tflite", '
     'axis = 0 : i64', "2 multipliers for dimension 0 of size 1"),
])
def test_requant_verifier_rejects(props: str, match: str) -> None:
    expect_verify_error(f"q.requant 'rq': {match}", *requant(props))


def test_requant_verifier_checks_types() -> None:
    expect_verify_error(r"q.requant 'rq': input must be a tensor of a quantized type or of "
                        r"signless / signed integers, got tensor<1x2xui32>",
                        *requant(SCALAR, source="tensor<1x2xui32>"))
    expect_verify_error(r"input must be a tensor of a quantized type or of signless",
                        *requant(SCALAR, source="tensor<1x2xf32>"))
    expect_verify_error(r"q.requant 'rq': result must be a tensor of a quantized type",
                        *requant(SCALAR, result="tensor<1x2xi8>"))
    expect_verify_error(r"q.requant 'rq': input shape \[1, 2\] and result shape \[2\] differ",
                        *requant(SCALAR, result=f"tensor<2x{U8}>"))


def precision_change(source: str, result: str) -> tuple[str, str]:
    return (f'%0 = q.precision_change %arg0 {{onnx_name = "pc", producer = "a", '
            f'consumer = "b"}} : {source} -> {result}'), source


def test_precision_change_verifier() -> None:
    op = one_op(*precision_change(f"tensor<4x{U16}>", f"tensor<4x{U8}>"))
    assert isinstance(op, PrecisionChangeOp)
    assert (op.producer.data, op.consumer.data, op.reason) == ("a", "b", None)
    expect_verify_error(r"q.precision_change 'pc': storage widths are equal \(i8 -> u8\): use "
                        r"q.requant",
                        *precision_change(f"tensor<4x{U8}>",
                                          "tensor<4x!q.uniform<u8:f32, 0.1:0>>"))
    expect_verify_error(r"q.precision_change 'pc': expressed types differ: f32 -> f16",
                        *precision_change(f"tensor<4x{U16}>",
                                          "tensor<4x!q.uniform<i8:f16, 0.1:0>>"))
    expect_verify_error(r"q.precision_change 'pc': input must be a tensor of a quantized type",
                        *precision_change("tensor<4xi16>", f"tensor<4x{U8}>"))
    expect_verify_error(r"q.precision_change 'pc': result must be a tensor of a quantized",
                        *precision_change(f"tensor<4x{U16}>", "tensor<4xi8>"))
    expect_verify_error(r"q.precision_change 'pc': input shape \[4\] and result shape \[2, 2\]",
                        *precision_change(f"tensor<4x{U16}>", f"tensor<2x2x{U8}>"))


def test_precision_change_needs_producer_and_consumer() -> None:
    with pytest.raises(VerifyException, match="producer"):
        verify_text(func_text([f"tensor<4x{U16}>"],
                              f'  %0 = q.precision_change %arg0 {{onnx_name = "pc", '
                              f'consumer = "b"}} : tensor<4x{U16}> -> tensor<4x{U8}>'))


# --------------------------------------------------------------------------------------
# Numpy helpers
# --------------------------------------------------------------------------------------


def test_quantize_rounds_half_to_even_and_clamps() -> None:
    t = UniformQuantizedType.get("i8", 0.5, 1)
    x = np.array([0.25, 0.75, -0.25, -0.75, 1e9, -1e9, np.inf, -np.inf], dtype=np.float32)
    q = quantize_array(x, t)
    assert q.dtype == np.int8
    assert q.tolist() == [1, 3, 1, -1, 127, -128, 127, -128]
    assert dequantize_array(q, t).tolist() == [0.0, 1.0, 0.0, -1.0, 63.0, -64.5, 63.0, -64.5]
    assert dequantize_array(q, t).dtype == np.float32


def test_qnn_worked_example() -> None:
    # seeds/qnn-quantization.txt: [-1.8, -1.0, 0, 0.5] at 8 bits -> [0, 89, 200, 255].
    encoding = encoding_from_range(-1.8, 0.5, bits=8, symmetric=False, signed=False)
    assert encoding.zero_point == 200
    assert encoding.min == pytest.approx(-1.803922, abs=1e-6)
    assert encoding.max == pytest.approx(0.496078, abs=1e-6)
    t = encoding.to_type()
    q = quantize_array(np.array([-1.8, -1.0, 0.0, 0.5], dtype=np.float32), t)
    assert q.dtype == np.uint8 and q.tolist() == [0, 89, 200, 255]
    assert np.allclose(dequantize_array(q, t), [-1.8039, -1.0011, 0.0, 0.4961], atol=1e-4)


def test_storage_dtypes() -> None:
    assert storage_dtype(UniformQuantizedType.get("i4")) == np.int8
    assert storage_dtype(UniformQuantizedType.get("u4")) == np.uint8
    assert storage_dtype(UniformQuantizedType.get("u16")) == np.uint16
    assert storage_dtype(UniformQuantizedType.get("i32")) == np.int32
    q = quantize_array(np.array([100.0, -100.0, 0.4]), UniformQuantizedType.get("i4", 1.0))
    assert q.tolist() == [7, -8, 0]
    q = quantize_array(np.array([100.0, -100.0]), UniformQuantizedType.get("u4", 1.0, 3))
    assert q.tolist() == [15, 0]


def test_per_axis_quantize_uses_each_channels_encoding() -> None:
    t = PerAxisQuantizedType.get("u8", scales=[1.0, 0.5], zero_points=[10, 0], axis=1)
    x = np.array([[1.0, 1.0], [-20.0, 200.0]], dtype=np.float32)
    q = quantize_array(x, t)
    assert q.tolist() == [[11, 2], [0, 255]]
    assert dequantize_array(q, t).tolist() == [[1.0, 1.0], [-10.0, 127.5]]
    # axis_dim: the same channels laid out along dimension 0.
    assert quantize_array(x.T, t, axis_dim=0).tolist() == [[11, 0], [2, 255]]
    assert dequantize_array(q.T, t, axis_dim=0).tolist() == [[1.0, -10.0], [1.0, 127.5]]
    with pytest.raises(ValueError, match="2 per-axis scales for dimension 0 of size 3"):
        quantize_array(np.zeros((3, 2)), t, axis_dim=0)
    with pytest.raises(ValueError, match="axis 1 is outside the rank 1"):
        quantize_array(np.zeros(2), t)


def test_quantize_rejects_nan() -> None:
    with pytest.raises(QuantirError, match="cannot quantize NaN"):
        quantize_array(np.array([0.0, np.nan]), UniformQuantizedType.get("i8", 0.1))


STORAGES = st.sampled_from(["i4", "u4", "i8", "u8", "i16", "u16", "i32"])


@st.composite
def qtype_and_data(draw) -> tuple[UniformQuantizedType, np.ndarray]:
    storage = draw(STORAGES)
    probe = UniformQuantizedType.get(storage)
    zero_point = draw(st.integers(probe.storage_min, probe.storage_max))
    scale = draw(st.floats(1e-4, 1e3))
    x = draw(hnp.arrays(np.float32, st.integers(1, 16),
                        elements=st.floats(-1e7, 1e7, width=32)))
    return UniformQuantizedType.get(storage, scale, zero_point), x


@settings(max_examples=300, deadline=None)
@given(qtype_and_data())
def test_dequantize_of_quantize_is_within_half_a_step(case) -> None:
    t, x = case
    q = quantize_array(x, t)
    assert q.min() >= t.storage_min and q.max() <= t.storage_max
    low = (t.storage_min - t.zero_point) * t.scale
    high = (t.storage_max - t.zero_point) * t.scale
    clamped = np.clip(x.astype(np.float64), low, high)
    back = dequantize_array(q, t).astype(np.float64)
    # Half a step, plus the final rounding of the result to float32.
    slack = t.scale / 2 * (1 + 1e-12) + np.spacing(np.abs(back).astype(np.float32))
    assert np.all(np.abs(back - clamped) <= slack)


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.sampled_from([4, 8, 16]),
       st.booleans(), st.booleans())
def test_encodings_keep_zero_exact_and_cover_the_range(a: float, b: float, bits: int,
                                                       symmetric: bool, signed: bool) -> None:
    low, high = min(a, b), max(a, b)
    encoding = encoding_from_range(low, high, bits, symmetric, signed)
    t = encoding.to_type()
    assert t.storage_min <= encoding.zero_point <= t.storage_max
    assert t.storage_min <= encoding.qmin <= encoding.qmax <= t.storage_max
    assert quantize_array(np.zeros(1), t).tolist() == [encoding.zero_point]
    assert dequantize_array(quantize_array(np.zeros(1), t), t).tolist() == [0.0]
    assert encoding.max - encoding.min >= MIN_RANGE * (1 - 1e-9)
    step = encoding.scale
    assert encoding.min <= min(low, 0.0) + step and encoding.max >= max(high, 0.0) - step


def test_encoding_all_zero_range_gets_the_minimum_range() -> None:
    encoding = encoding_from_range(0.0, 0.0, 8, symmetric=False, signed=False)
    assert encoding.scale == pytest.approx(MIN_RANGE / 255)
    assert (encoding.zero_point, encoding.min) == (0, 0.0)
    assert encoding.max == pytest.approx(MIN_RANGE)
    signed = encoding_from_range(0.0, 0.0, 8, symmetric=False, signed=True)
    assert signed.zero_point == -128 and signed.min == 0.0


def test_encoding_all_negative_range_ends_at_zero() -> None:
    # QNN: [-20, -6] -> encoding-min -20, encoding-max 0, zero at the largest value.
    encoding = encoding_from_range(-20.0, -6.0, 8, symmetric=False, signed=False)
    assert encoding.zero_point == 255
    assert encoding.scale == pytest.approx(20.0 / 255)
    assert encoding.min == pytest.approx(-20.0) and encoding.max == 0.0
    assert encoding_from_range(-20.0, -6.0, 8, signed=True).zero_point == 127


def test_encoding_all_positive_range_starts_at_zero() -> None:
    encoding = encoding_from_range(5.0, 10.0, 8, symmetric=False, signed=False)
    assert (encoding.zero_point, encoding.min) == (0, 0.0)
    assert encoding.max == pytest.approx(10.0)


def test_encoding_min_equals_max() -> None:
    encoding = encoding_from_range(3.0, 3.0, 8, signed=False)
    assert encoding.zero_point == 0 and encoding.max == pytest.approx(3.0)
    tiny = encoding_from_range(-1e-5, -1e-5, 8, signed=False)
    # Widened to include 0, then to the minimum range above the minimum.
    assert tiny.max - tiny.min == pytest.approx(MIN_RANGE)
    assert quantize_array(np.zeros(1), tiny.to_type()).tolist() == [tiny.zero_point]


def test_encoding_shifts_a_straddling_range_onto_the_grid() -> None:
    # QNN: [-5.1, 5.1] -> step 0.04, zero at 128, range [-5.12, 5.08].
    encoding = encoding_from_range(-5.1, 5.1, 8, symmetric=False, signed=False)
    assert encoding.zero_point == 128
    assert encoding.scale == pytest.approx(0.04)
    assert encoding.min == pytest.approx(-5.12) and encoding.max == pytest.approx(5.08)
    assert encoding_from_range(-5.1, 5.1, 8, signed=True).zero_point == 0


def test_symmetric_encodings_use_the_narrow_range() -> None:
    encoding = encoding_from_range(-0.3, 0.7, 8, symmetric=True, signed=True)
    assert encoding.zero_point == 0
    assert encoding.scale == pytest.approx(0.7 / 127)
    assert (encoding.qmin, encoding.qmax) == (-127, 127)
    assert encoding.min == pytest.approx(-0.7) and encoding.max == pytest.approx(0.7)
    w = np.array([-0.7, -0.3, 0.0, 0.7])
    assert quantize_array(w, encoding.to_type()).tolist() == [-127, -54, 0, 127]
    four = encoding_from_range(-2.0, 1.0, 4, symmetric=True, signed=True)
    assert (four.qmin, four.qmax, four.scale) == (-7, 7, pytest.approx(2.0 / 7))
    unsigned = encoding_from_range(-2.0, 1.0, 8, symmetric=True, signed=False)
    assert (unsigned.zero_point, unsigned.qmin, unsigned.qmax) == (128, 1, 255)
    assert str(unsigned.to_type()).startswith("!q.uniform<u8:f32, ")
    zero = encoding_from_range(0.0, 0.0, 8, symmetric=True)
    assert zero.max - zero.min == pytest.approx(MIN_RANGE)


def test_encoding_rejects_bad_inputs() -> None:
    with pytest.raises(QuantirError, match="not finite"):
        encoding_from_range(-np.inf, 1.0, 8)
    with pytest.raises(QuantirError, match="not finite"):
        encoding_from_range(np.nan, 1.0, 8)
    with pytest.raises(ValueError, match="minimum 2.0 is greater than its maximum 1.0"):
        encoding_from_range(2.0, 1.0, 8)
    with pytest.raises(ValueError, match="bit width 1 is outside"):
        encoding_from_range(0.0, 1.0, 1)
    with pytest.raises(ValueError, match="no quantized type stores 6 bits"):
        encoding_from_range(0.0, 1.0, 6).to_type()
