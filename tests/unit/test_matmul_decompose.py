"""`matmul-decompose`: tiles and 1x1 convs keep the float function, the 16-bit split of
`qi.matmul` is bit-exact.

Float metric: max |after - before| / max |before| <= 1e-6 on each output of
quantir.Session (random data, and digits through the tiny ViT). Integer: the split
module returns exactly the integers of the original one whenever the bound of the
pass docstring holds (sum_k (|A_k| + 255) (|B_k| + 255) + |bias| <= 2^31 - 1, half
that for tflite), evaluated with `quantir.runtime.reference` (the spec) and, where
the integer executor runs the ops, with quantir.Session.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp, TensorType, f32
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

import quantir
from quantir.dialects import nn, q, qi
from quantir.dialects.q import PerAxisQuantizedType, QuantizedType, UniformQuantizedType
from quantir.errors import PipelineError
from quantir.ir import array_of, dense_of
from quantir.lowering.byte_split import split_bytes
from quantir.passes import parse_pipeline, pipeline_context
from quantir.passes.constants import new_constant
from quantir.passes.matmul_decompose import MatMulDecomposePass, decompose_matmuls
from quantir.passes.qconfig import QuantirWarning
from quantir.runtime import reference
from quantir.runtime.executor import main_function
from tests.conftest import DATA

TOLERANCE = 1e-6
VIT = DATA / "tiny_vit.onnx"
INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def run_pass(module: ModuleOp, **options: object) -> list[str]:
    """Apply the pass as a pipeline would; the warning lines it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantirWarning)
        MatMulDecomposePass(**options).apply(pipeline_context(), module)  # type: ignore[arg-type]
    module.verify()
    return [str(w.message) for w in caught if issubclass(w.category, QuantirWarning)]


def function_module(arg_types: Sequence[Attribute],
                    body: Callable[[Sequence[SSAValue]], list[Operation]]) -> ModuleOp:
    """`func.func @main` over arguments of `arg_types`; `body` builds its ops, the last
    one's result is returned."""
    block = Block(arg_types=list(arg_types))
    ops = body(block.args)
    result = ops[-1].results[0]
    block.add_ops([*ops, func.ReturnOp(result)])
    function = func.FuncOp("main", FunctionType.from_lists(list(arg_types), [result.type]),
                           Region(block))
    module = ModuleOp([function])
    module.verify()
    return module


def max_relative_error(reference_module: ModuleOp, candidate: ModuleOp,
                       feeds: Iterable[Mapping[str, np.ndarray]]) -> float:
    before, after = quantir.Session(reference_module), quantir.Session(candidate)
    worst = 0.0
    for feed in feeds:
        expected, actual = before.run(feed), after.run(feed)
        for name, want in expected.items():
            scale = max(float(np.max(np.abs(want))), 1e-12)
            diff = float(np.max(np.abs(actual[name].astype(np.float64) - want)))
            worst = max(worst, diff / scale)
    return worst


def ops_of(module: ModuleOp, cls: type[Operation]) -> list[Operation]:
    return [op for op in module.walk() if isinstance(op, cls)]


# --------------------------------------------------------------------------------------
# Float graph: tiles and convs on random products
# --------------------------------------------------------------------------------------


def product_module(kind: str, x_shape: Sequence[int], weight: np.ndarray,
                   props: Mapping[str, object], c: np.ndarray | None,
                   c_computed: bool) -> ModuleOp:
    x_type = TensorType(f32, list(x_shape))
    arg_types: list[Attribute] = [x_type]
    if c is not None and c_computed:
        arg_types.append(TensorType(f32, list(c.shape)))

    def body(args: Sequence[SSAValue]) -> list[Operation]:
        w = new_constant(weight, "w")
        ops: list[Operation] = [w]
        operands = [args[0], w.results[0]]
        if c is not None:
            if c_computed:
                operands.append(args[1])
            else:
                bias = new_constant(c, "c")
                ops.append(bias)
                operands.append(bias.results[0])
        cls = nn.MatMulOp if kind == "matmul" else nn.GemmOp
        ops.append(cls.build_from(operands, props, "prod"))
        return ops

    return function_module(arg_types, body)


def small_integers(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Integer-valued float32 data: every sum of their products is exact in float32."""
    return rng.integers(-4, 5, shape).astype(np.float32)


@st.composite
def float_products(draw: st.DrawFn) -> tuple[ModuleOp, ModuleOp, list[dict[str, np.ndarray]],
                                             dict[str, object]]:
    """(module, copy, feeds, pass options) for a random matmul / gemm on integer-valued
    data, alpha and beta powers of two (so any summation order gives the same floats)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["matmul", "gemm"]))
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 24)), draw(st.integers(1, 12))
    props: dict[str, object] = {}
    c = None
    c_computed = False
    if kind == "matmul":
        lead = draw(st.sampled_from([(), (2,), (1, 3)]))
        one_d = draw(st.sampled_from(["none", "x", "w"]))
        x_shape = (k,) if one_d == "x" else (*lead, m, k)
        weight = small_integers(rng, (k,) if one_d == "w" else (k, n))
    else:
        trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
        x_shape = (k, m) if trans_a else (m, k)
        weight = small_integers(rng, (n, k) if trans_b else (k, n))
        beta = draw(st.sampled_from([0.0, 1.0, 2.0]))
        props = {"alpha": draw(st.sampled_from([1.0, 0.5, 4.0])), "beta": beta,
                 "trans_a": int(trans_a), "trans_b": int(trans_b)}
        c_shape = draw(st.sampled_from([None, (n,), (1, n), (m, n), (m, 1), (1,)]))
        if c_shape is not None:
            c = small_integers(rng, c_shape)
            c_computed = beta == 1.0 and draw(st.booleans())
    options = {"max_k": draw(st.integers(0, k)), "max_n": draw(st.integers(0, n)),
               "to_conv": draw(st.booleans())}
    # A bias add after the conv layout is left reads a transposed view: with a fused
    # activation the float runtime fails on it (test_runtime_relu_add_on_a_transpose).
    bias_after_transpose = options["to_conv"] and c is not None and (
        c_computed or (c.ndim == 2 and c.shape[0] > 1))
    if draw(st.booleans()) and not bias_after_transpose:
        props["activation"] = "relu"
    original = product_module(kind, x_shape, weight, props, c, c_computed)
    copy = product_module(kind, x_shape, weight, props, c, c_computed)
    names = quantir.Session(original).input_names
    feeds = []
    for _ in range(2):
        values = [small_integers(rng, x_shape)]
        if c_computed:
            assert c is not None
            values.append(small_integers(rng, c.shape))
        feeds.append(dict(zip(names, values, strict=True)))
    return original, copy, feeds, options


@settings(max_examples=60, deadline=None)
@given(float_products())
def test_tiles_and_convs_are_exact_on_integer_data(case: tuple[ModuleOp, ModuleOp,
                                                          list[dict[str, np.ndarray]],
                                                          dict[str, object]]) -> None:
    original, module, feeds, options = case
    lines = run_pass(module, **options)
    assert not lines
    k_limit, n_limit = int(options["max_k"]), int(options["max_n"])  # type: ignore[call-overload]
    for op in ops_of(module, nn.MatMulOp) + ops_of(module, nn.GemmOp):
        assert not options["to_conv"], f"{op.name} left in conv mode"
    for op in ops_of(module, nn.MatMulOp):
        w = op.operands[1].type.get_shape()  # type: ignore[attr-defined]
        k, n = (w[-2], w[-1]) if len(w) >= 2 else (w[0], 1)
        assert k_limit == 0 or k <= k_limit
        assert n_limit == 0 or n <= n_limit
    for op in ops_of(module, nn.ConvOp):
        o, i = op.operands[1].type.get_shape()[:2]  # type: ignore[attr-defined]
        assert (k_limit == 0 or i <= k_limit) and (n_limit == 0 or o <= n_limit)
    assert max_relative_error(original, module, feeds) == 0.0


@pytest.mark.parametrize("options", [
    {"max_k": 16}, {"max_n": 8}, {"max_k": 20, "max_n": 12}, {"to_conv": True},
    {"to_conv": True, "max_k": 24, "max_n": 10}])
@pytest.mark.parametrize("kind", ["matmul", "gemm"])
def test_tiles_and_convs_keep_random_products(kind: str, options: dict[str, object]) -> None:
    """Normal data: the float function up to float rounding (summation order)."""
    rng = np.random.default_rng(3)
    if kind == "matmul":
        x_shape, weight, props, c = (2, 8, 64), rng.standard_normal((64, 32)), {}, None
    else:
        x_shape, weight, c = (64, 8), rng.standard_normal((32, 64)), rng.standard_normal(32)
        props = {"alpha": 0.7, "beta": 1.5, "trans_a": 1, "trans_b": 1, "activation": "relu"}
    weight = weight.astype(np.float32)
    c = None if c is None else c.astype(np.float32)
    original = product_module(kind, x_shape, weight, props, c, False)
    module = product_module(kind, x_shape, weight, props, c, False)
    assert run_pass(module, **options) == []
    feeds = [{"arg0": rng.standard_normal(x_shape).astype(np.float32)} for _ in range(4)]
    assert max_relative_error(original, module, feeds) <= TOLERANCE


def test_runtime_relu_add_on_a_transpose() -> None:
    """What `to-conv` makes of a gemm with a row-dependent C and a fused ReLU."""
    text = """
    func.func @main(%x: tensor<9x6xf32>, %c: tensor<1x9xf32>) -> tensor<6x9xf32> {
      %t = nn.transpose %x {perm = array<i64: 1, 0>, onnx_name = "t"} : (tensor<9x6xf32>) -> tensor<6x9xf32>
      %y = nn.add %t, %c {activation = "relu", onnx_name = "a"}
             : (tensor<6x9xf32>, tensor<1x9xf32>) -> tensor<6x9xf32>
      func.return %y : tensor<6x9xf32>
    }
    """
    session = quantir.Session(quantir.parse_module(text))
    x, c = np.ones((9, 6), np.float32), -np.ones((1, 9), np.float32)
    (y,) = session.run({"arg0": x, "arg1": c}).values()
    np.testing.assert_array_equal(y, np.zeros((6, 9), np.float32))


def test_products_under_the_limits_are_left_alone() -> None:
    weight = np.ones((4, 3), np.float32)
    module = product_module("matmul", (2, 4), weight, {}, None, False)
    before = quantir.print_module(module)
    assert run_pass(module, max_k=4, max_n=3) == []
    assert quantir.print_module(module) == before


# --------------------------------------------------------------------------------------
# Float graph: the tiny ViT
# --------------------------------------------------------------------------------------


def digits_feeds(count: int = 16) -> list[dict[str, np.ndarray]]:
    images = np.load(DATA / "digits_test.npz")["input"][:count]
    return [{"input": images[i:i + 1]} for i in range(count)]


def constant_products(module: ModuleOp) -> list[Operation]:
    return [op for op in ops_of(module, nn.MatMulOp) + ops_of(module, nn.GemmOp)
            if isinstance(op.operands[1].owner, nn.ConstantOp)]


@pytest.mark.parametrize("options", [
    {"max_k": 16},
    {"max_n": 16},
    {"max_k": 16, "max_n": 24},
    {"to_conv": True},
    {"to_conv": True, "max_k": 16, "max_n": 16},
], ids=["max-k", "max-n", "max-k-and-n", "to-conv", "to-conv-tiled"])
def test_tiny_vit_keeps_float_function(options: dict[str, object]) -> None:
    original = quantir.import_onnx(VIT)
    module = quantir.import_onnx(VIT)
    products = len(constant_products(original))
    assert products == 13  # 12 projections / MLP layers and the head gemm
    lines = run_pass(module, **options)
    if options.get("to_conv"):
        assert not constant_products(module)
        # Each 16 x 16 attention product (activation x activation) is reported, once.
        assert len(lines) == 4 and all("right-hand side is not an nn.constant" in line
                                       for line in lines)
        assert len(ops_of(module, nn.ConvOp)) >= products
    else:
        assert not lines
        for op in constant_products(module):
            k, n = op.operands[1].type.get_shape()[-2:]  # type: ignore[attr-defined]
            if isinstance(op, nn.GemmOp) and op.props.int("trans_b"):
                k, n = n, k
            assert k <= int(options.get("max_k", 0) or k)  # type: ignore[call-overload]
            assert n <= int(options.get("max_n", 0) or n)  # type: ignore[call-overload]
        assert len(constant_products(module)) > products
    assert max_relative_error(original, module, digits_feeds()) <= TOLERANCE


def test_tiny_vit_from_the_pipeline_string() -> None:
    module = quantir.import_onnx(VIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        quantir.compile(module, "matmul-decompose{max-k=16 to-conv=true}")
    assert not constant_products(module)


# --------------------------------------------------------------------------------------
# Options and reports
# --------------------------------------------------------------------------------------


def test_options_parse() -> None:
    (found,) = parse_pipeline("matmul-decompose{max-k=8 max-n=4 to-conv=true "
                              "split-16bit=false rounding=single}").passes
    assert found == MatMulDecomposePass(max_k=8, max_n=4, to_conv=True, split_16bit=False,
                                        rounding="single")
    (default,) = parse_pipeline("matmul-decompose").passes
    assert default == MatMulDecomposePass(0, 0, False, True, "tflite")


@pytest.mark.parametrize("options, message", [
    ({"max_k": -1}, "max-k=-1"),
    ({"rounding": "nearest"}, "unknown rounding 'nearest'"),
])
def test_bad_options_raise_one_line(options: dict[str, object], message: str) -> None:
    module = product_module("matmul", (2, 4), np.ones((4, 3), np.float32), {}, None, False)
    with pytest.raises(PipelineError, match=message):
        decompose_matmuls(module, **options)  # type: ignore[arg-type]


def test_elided_weight_is_reported_and_left_valid() -> None:
    text = """
    func.func @main(%x: tensor<2x64xf32>) -> tensor<2x3xf32> {
      %w = nn.constant dense_resource<__elided__> : tensor<64x3xf32> {onnx_name = "w"}
      %y = nn.matmul %x, %w {onnx_name = "fc"} : (tensor<2x64xf32>, tensor<64x3xf32>) -> tensor<2x3xf32>
      func.return %y : tensor<2x3xf32>
    }
    """
    module = quantir.parse_module(text)
    before = quantir.print_module(module)
    assert run_pass(module, max_k=16) == [
        "matmul-decompose: nn.matmul 'fc' left as it is (K 64 > max-k 16): its right-hand "
        "side is not an nn.constant (or its data was elided)"]
    assert quantir.print_module(module) == before


# --------------------------------------------------------------------------------------
# Integer program: the byte split, in plain int64 arithmetic
# --------------------------------------------------------------------------------------


def storage_range(signed: bool) -> tuple[int, int]:
    return (-(2**15), 2**15 - 1) if signed else (0, 2**16 - 1)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_byte_split_identity(data: st.DataObject) -> None:
    """x - zp = (hi - zh) 256 + (lo - zl) with every part in 8 bits, and the recombined
    products equal the 16-bit product exactly, intermediates bounded by S."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a_signed, b_signed = data.draw(st.booleans()), data.draw(st.booleans())
    m, k, n = (data.draw(st.integers(1, 6)) for _ in range(3))
    (a_low, a_high), (b_low, b_high) = storage_range(a_signed), storage_range(b_signed)
    a_zp = data.draw(st.integers(a_low, a_high))
    b_zp = np.array(data.draw(st.lists(st.integers(b_low, b_high), min_size=n, max_size=n)))
    a = rng.integers(a_low, a_high + 1, (m, k)).astype(np.int16 if a_signed else np.uint16)
    b = rng.integers(b_low, b_high + 1, (k, n)).astype(np.int16 if b_signed else np.uint16)
    bias = rng.integers(-(2**31), 2**31, n)

    def parts(x: np.ndarray, zp: int | np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
        hi, lo = split_bytes(x)
        assert hi.dtype == (np.int8 if signed else np.uint8) and lo.dtype == np.uint8
        zh, zl = np.asarray(zp) >> 8, np.asarray(zp) & 255
        hi_low, hi_high = (-128, 127) if signed else (0, 255)
        assert np.all((hi_low <= zh) & (zh <= hi_high)) and np.all((0 <= zl) & (zl <= 255))
        high, low = hi.astype(np.int64) - zh, lo.astype(np.int64) - zl
        assert np.array_equal(high * 256 + low, x.astype(np.int64) - zp)
        return high, low

    a_hi, a_lo = parts(a, a_zp, a_signed)
    b_hi, b_lo = parts(b, b_zp, b_signed)
    big_a, big_b = a.astype(np.int64) - a_zp, b.astype(np.int64) - b_zp
    upper = (a_hi @ b_hi) * 256 + (a_hi @ b_lo + a_lo @ b_hi)
    assert np.array_equal(upper * 256 + (a_lo @ b_lo + bias), big_a @ big_b + bias)
    # The bound of the pass docstring covers every value it forms.
    bound = (np.abs(big_a) + 255) @ (np.abs(big_b) + 255) + np.abs(bias)
    for value in (a_hi @ b_hi * 512, upper, upper * 512, a_lo @ b_lo + bias):
        assert np.all(np.abs(value) <= 2 * bound)
    assert np.all(np.abs(upper * 256) <= bound)


# --------------------------------------------------------------------------------------
# Integer program: modules, split by the pass, evaluated with the reference
# --------------------------------------------------------------------------------------


def zero_point(element: QuantizedType) -> int | np.ndarray:
    if isinstance(element, PerAxisQuantizedType):
        return np.asarray(element.zero_points, dtype=np.int64)
    return element.zero_points[0]


def element_of(value: SSAValue) -> QuantizedType:
    assert isinstance(value.type, TensorType)
    element = value.type.element_type
    assert isinstance(element, QuantizedType)
    return element


def evaluate(module: ModuleOp, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the qi module's ops with `quantir.runtime.reference`, the spec.

    Relies on: reference.matmul(a, b, bias, a_zp, b_zp) (b_zp per column as a 1-d
    array), reference.add(a, b), reference.lookup(x, table, storage_min) and
    reference.requantize(x, multiplier, shift, rounding, zp_in, zp_out, qmin, qmax,
    dtype, axis). quantir.Session runs the same ops on the integer executor, except a
    q.requant to a per-channel type (int_kernels takes per-tensor results only), which
    the per-channel split makes; `test_split_16bit_on_the_session` covers the rest.
    """
    function = main_function(module)
    env: dict[SSAValue, np.ndarray] = dict(zip(function.body.block.args, inputs, strict=True))
    for op in function.body.block.ops:
        args = [env[v] for v in op.operands]
        if isinstance(op, func.ReturnOp):
            return args
        if isinstance(op, q.ConstantOp):
            out = np.asarray(array_of(op.value))  # type: ignore[arg-type]
        elif isinstance(op, qi.LookupOp):
            out = reference.lookup(args[0], array_of(op.table),  # type: ignore[arg-type]
                                   element_of(op.input).storage_min)
        elif isinstance(op, qi.MatMulOp):
            out = reference.matmul(args[0], args[1], args[2] if len(args) == 3 else None,
                                   zero_point(element_of(op.lhs)), zero_point(element_of(op.rhs)))
        elif isinstance(op, qi.AddOp):
            out = reference.add(args[0], args[1])
        elif isinstance(op, q.RequantOp):
            target = element_of(op.output)
            axis = op.axis.value.data if op.axis is not None else None
            multiplier, shift = np.asarray(op.multipliers), np.asarray(op.shifts)
            if axis is None:
                multiplier, shift = multiplier.reshape(()), shift.reshape(())
            out = reference.requantize(args[0], multiplier, shift, op.rounding_mode,
                                       zero_point(element_of(op.input)), zero_point(target),
                                       target.storage_min, target.storage_max, np.int32, axis)
        else:
            raise AssertionError(f"no evaluation for {op.name}")
        env[op.results[0]] = out
    raise AssertionError("no func.return")


def int_module(a_shape: Sequence[int], a_type: UniformQuantizedType, b: np.ndarray,
               b_type: QuantizedType, b_constant: bool, bias: np.ndarray | None) -> ModuleOp:
    """@main(a[, b]) = qi.matmul(a, b[, bias]), b a q.constant or an argument."""
    a_tensor, b_tensor = TensorType(a_type, list(a_shape)), TensorType(b_type, list(b.shape))
    arg_types: list[Attribute] = [a_tensor] if b_constant else [a_tensor, b_tensor]

    def body(args: Sequence[SSAValue]) -> list[Operation]:
        ops: list[Operation] = []
        if b_constant:
            ops.append(q.ConstantOp(dense_of(b), b_tensor, "w"))
            b_value = ops[-1].results[0]
        else:
            b_value = args[1]
        operands = [args[0], b_value]
        (result,) = qi.MatMulOp.infer([a_tensor, b_tensor], nn.Props({}))
        if bias is not None:
            element = result.element_type  # type: ignore[attr-defined]
            if isinstance(element, PerAxisQuantizedType):
                element = PerAxisQuantizedType.get("i32", element.scales, None, 0)
            ops.append(q.ConstantOp(dense_of(bias.astype(np.int32)),
                                    TensorType(element, [bias.size]), "bias"))
            operands.append(ops[-1].results[0])
        ops.append(qi.MatMulOp.build_from(operands, {}, "mm"))
        return ops

    return function_module(arg_types, body)


def values_near(rng: np.random.Generator, zero_points: int | np.ndarray, shape: Sequence[int],
                spread: int, signed: bool) -> np.ndarray:
    """Storage integers within `spread` of their zero point (per column if several)."""
    low, high = storage_range(signed)
    values = np.asarray(zero_points) + rng.integers(-spread, spread + 1, shape)
    return np.clip(values, low, high).astype(np.int16 if signed else np.uint16)


@st.composite
def int16_cases(draw: st.DrawFn) -> tuple[ModuleOp, ModuleOp, list[np.ndarray], str]:
    """(module, copy, inputs, rounding) for a random 16 x 16-bit qi.matmul whose inputs
    keep S = K (spread + 255)^2 + max|bias| within the exact range of the rounding."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rounding = draw(st.sampled_from(q.ROUNDING_MODES))
    limit = INT32_MAX // 2 if rounding == "tflite" else INT32_MAX
    a_signed, b_signed = draw(st.booleans()), draw(st.booleans())
    m, k, n = draw(st.integers(1, 5)), draw(st.integers(1, 8)), draw(st.integers(1, 5))
    lead = draw(st.sampled_from([(), (2,)]))
    per_channel = draw(st.booleans())
    b_constant = per_channel or draw(st.booleans())
    bias_bound = draw(st.sampled_from([None, 0, 1000, 2**20]))
    spread = draw(st.integers(0, min(2**16 - 1, math.isqrt((limit - (bias_bound or 0)) // k)
                                     - 255)))
    (a_low, a_high), (b_low, b_high) = storage_range(a_signed), storage_range(b_signed)
    a_type = UniformQuantizedType.get("i16" if a_signed else "u16",
                                      draw(st.floats(1e-4, 1.0)), draw(st.integers(a_low, a_high)))
    b_storage = "i16" if b_signed else "u16"
    if per_channel:
        zps = draw(st.lists(st.integers(b_low, b_high), min_size=n, max_size=n))
        scales = draw(st.lists(st.floats(1e-4, 1.0), min_size=n, max_size=n))
        b_type: QuantizedType = PerAxisQuantizedType.get(b_storage, scales, zps, 1)
    else:
        b_type = UniformQuantizedType.get(b_storage, draw(st.floats(1e-4, 1.0)),
                                          draw(st.integers(b_low, b_high)))
    b_zp = zero_point(b_type)
    a = values_near(rng, a_type.zero_point, (*lead, m, k), spread, a_signed)
    b = values_near(rng, b_zp, (k, n), spread, b_signed)
    bias = None if bias_bound is None else rng.integers(-bias_bound, bias_bound + 1, n)
    inputs = [a] if b_constant else [a, b]
    return (int_module(a.shape, a_type, b, b_type, b_constant, bias),
            int_module(a.shape, a_type, b, b_type, b_constant, bias), inputs, rounding)


@settings(max_examples=150, deadline=None)
@given(int16_cases())
def test_split_16bit_is_exact(case: tuple[ModuleOp, ModuleOp, list[np.ndarray], str]) -> None:
    original, module, inputs, rounding = case
    assert run_pass(module, rounding=rounding) == []
    matmuls = ops_of(module, qi.MatMulOp)
    assert len(matmuls) == 4
    for op in matmuls:
        assert all(element_of(v).storage_bits == 8 for v in op.operands[:2])
    assert all(op.rounding_mode == rounding for op in ops_of(module, q.RequantOp))
    (expected,) = evaluate(original, inputs)
    (actual,) = evaluate(module, inputs)
    assert actual.dtype == expected.dtype == np.int32
    np.testing.assert_array_equal(actual, expected)


def test_split_16bit_on_the_session() -> None:
    """The integer executor (quantir.Session) agrees: a computed and a constant rhs,
    signed and unsigned storage, with and without bias, values up to the tflite bound."""
    rng = np.random.default_rng(7)
    for a_storage, b_storage, b_constant, with_bias in [
            ("i16", "i16", False, False), ("u16", "i16", True, True),
            ("i16", "u16", True, False), ("u16", "u16", False, True)]:
        a_signed, b_signed = a_storage == "i16", b_storage == "i16"
        a_type = UniformQuantizedType.get(a_storage, 0.01, -300 if a_signed else 40000)
        b_type = UniformQuantizedType.get(b_storage, 0.02, 1000)
        k = 6
        spread = math.isqrt((INT32_MAX // 2 - 10**6) // k) - 255
        a = values_near(rng, a_type.zero_point, (3, 5, k), spread, a_signed)
        b = values_near(rng, b_type.zero_point, (k, 4), spread, b_signed)
        bias = rng.integers(-(10**6), 10**6, 4) if with_bias else None
        original = int_module(a.shape, a_type, b, b_type, b_constant, bias)
        module = int_module(a.shape, a_type, b, b_type, b_constant, bias)
        assert run_pass(module) == []
        inputs = [a] if b_constant else [a, b]
        before, after = quantir.Session(original), quantir.Session(module)
        feed = dict(zip(before.input_names, inputs, strict=True))
        (expected,) = before.run(feed).values()
        (actual,) = after.run(feed).values()
        np.testing.assert_array_equal(actual, expected)
        assert np.abs(expected.astype(np.int64)).max() > 2**24  # the high bytes matter


def test_shared_activation_is_looked_up_once() -> None:
    a_type = UniformQuantizedType.get("i16", 0.01, 0)
    b_type = UniformQuantizedType.get("i16", 0.02, 0)
    a_tensor = TensorType(a_type, [2, 3])
    weights = [np.arange(6, dtype=np.int16).reshape(3, 2) * (i + 1) for i in range(2)]

    def body(args: Sequence[SSAValue]) -> list[Operation]:
        ops: list[Operation] = []
        for i, w in enumerate(weights):
            ops.append(q.ConstantOp(dense_of(w), TensorType(b_type, [3, 2]), f"w{i}"))
            ops.append(qi.MatMulOp.build_from([args[0], ops[-1].results[0]], {}, f"mm{i}"))
        # Both products are returned, through one add of their (equal) accumulator types.
        ops.append(qi.AddOp.build_from([ops[1].results[0], ops[3].results[0]], {}, "sum"))
        return ops

    module = function_module([a_tensor], body)
    assert run_pass(module) == []
    lookups = ops_of(module, qi.LookupOp)
    assert [op.node_name for op in lookups] == ["mm0/lhs_hi", "mm0/lhs_lo"]  # type: ignore[attr-defined]
    assert not [op for op in ops_of(module, q.ConstantOp)
                if op.node_name in ("w0", "w1")]  # type: ignore[attr-defined]


def test_eight_bit_and_disabled_split_are_left_alone() -> None:
    a_type = UniformQuantizedType.get("i16", 0.01, 0)
    b = np.ones((3, 2), np.int16)
    module = int_module((2, 3), a_type, b, UniformQuantizedType.get("i16", 0.02, 0), True, None)
    before = quantir.print_module(module)
    assert run_pass(module, split_16bit=False) == []
    assert quantir.print_module(module) == before
    eight = int_module((2, 3), UniformQuantizedType.get("i8", 0.01, 0), b.astype(np.int8),
                       UniformQuantizedType.get("i8", 0.02, 0), True, None)
    before = quantir.print_module(eight)
    assert run_pass(eight) == []
    assert quantir.print_module(eight) == before


# --------------------------------------------------------------------------------------
# Integer program of a real model
# --------------------------------------------------------------------------------------


def vit_integer_program(weights: str) -> ModuleOp:
    """The tiny ViT at a16_w16, lowered."""
    from quantir.passes.qconfig import QuantConfig

    calibration = np.load(DATA / "digits_calib.npz")["input"][:8]
    config = QuantConfig.build("a16_w16", weights=weights, calibset_size=8)
    module = quantir.import_onnx(VIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        quantir.compile(module, "calibrate,quantize,lower-to-int",
                        calibration=[{"input": calibration[i:i + 1]} for i in range(8)],
                        config=config)
    return module


def sixteen_bit_products(module: ModuleOp) -> list[Operation]:
    return [op for op in ops_of(module, qi.MatMulOp)
            if any(element_of(v).storage_bits == 16 for v in op.operands[:2])]


@pytest.mark.parametrize("weights", [
    "per_tensor", "per_channel"])
def test_tiny_vit_integer_program_has_no_sixteen_bit_products(weights: str) -> None:
    """lower-to-int splits a16 products into bytes as this pass does (`byte_split`),
    so every qi.matmul of the a16_w16 program is 8 x 8-bit and split-16bit leaves the
    program as it is."""
    module = vit_integer_program(weights)
    assert ops_of(module, qi.MatMulOp) and not sixteen_bit_products(module)
    before = quantir.print_module(module)
    assert run_pass(module) == []
    assert quantir.print_module(module) == before
