"""The numpy float kernels against onnxruntime, one single-node model per case.

Every case builds the nn op from block arguments, compiles its kernel, runs it and
runs the equivalent ONNX node in onnxruntime. Float results must agree within
max|diff| / max(|ref|, 1e-6) <= 1e-5, conv / matmul / gemm included (their float32
sums run in another order than MLAS's, yet stay within ~3e-7 here); integer and
bool results must be equal. Every result must have exactly the result type's dtype
and shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from xdsl.dialects.builtin import TensorType, f32, i1, i64
from xdsl.ir import Attribute, Block
from xdsl.irdl import IRDLOperation

from quantir.dialects import nn
from quantir.errors import QuantirError
from quantir.ir import dtype_of, tensor_type
from quantir.runtime.float_kernels import compile_kernel, erf, kernel_ops

FLOAT_TOL = 1e-5

_ONNX_TYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}

HYPOTHESIS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return rng(seed).standard_normal(shape).astype(np.float32)


def build(cls: type[nn.NNOperation], inputs: Sequence[np.ndarray],
          props: dict[str, object], name: str = "node") -> nn.NNOperation:
    block = Block(arg_types=[tensor_type(a.shape, a.dtype) for a in inputs])
    return cls.build_from(block.args, props, name)


def run_kernel(op: IRDLOperation, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    results = compile_kernel(op)(*inputs)
    assert isinstance(results, tuple) and len(results) == len(op.results)
    for result, value in zip(results, op.results, strict=True):
        assert isinstance(result, np.ndarray)
        assert isinstance(value.type, TensorType)
        assert result.dtype == dtype_of(value.type.element_type), (result.dtype, value.type)
        assert result.shape == tuple(value.type.get_shape()), (result.shape, value.type)
    return results


def run_onnx(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, object],
             outputs: int = 1, opset: int = 17) -> list[np.ndarray]:
    """Run one ONNX node in onnxruntime (single thread); None inputs are omitted."""
    names = ["" if a is None else f"in{i}" for i, a in enumerate(inputs)]
    node = helper.make_node(op_type, names, [f"out{i}" for i in range(outputs)], **attrs)
    graph = helper.make_graph(
        [node], "single",
        [helper.make_tensor_value_info(n, _ONNX_TYPES[a.dtype], a.shape)
         for n, a in zip(names, inputs, strict=True) if a is not None],
        [helper.make_empty_tensor_value_info(f"out{i}") for i in range(outputs)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feed = {n: a for n, a in zip(names, inputs, strict=True) if a is not None}
    return session.run(None, feed)


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = FLOAT_TOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected)
        return
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    finite = ~np.isnan(expected)
    if not finite.any():
        return
    diff = np.abs(actual[finite].astype(np.float64) - expected[finite].astype(np.float64))
    scale = max(float(np.abs(expected[finite]).max()), 1e-6)
    assert diff.max() / scale <= tol, f"max|diff| {diff.max():.3g}, max|ref| {scale:.3g}"


@dataclass
class Case:
    """An nn op on `inputs` and the equivalent ONNX node on `onnx_inputs`."""

    id: str
    op: type[nn.NNOperation]
    props: dict[str, object]
    inputs: list[np.ndarray]
    onnx_type: str
    onnx_attrs: dict[str, object] = field(default_factory=dict)
    onnx_inputs: list[np.ndarray | None] | None = None
    opset: int = 17
    tol: float = FLOAT_TOL

    def check(self) -> None:
        op = build(self.op, self.inputs, self.props, self.id)
        op.verify()
        actual = run_kernel(op, self.inputs)
        onnx_inputs = self.inputs if self.onnx_inputs is None else self.onnx_inputs
        expected = run_onnx(self.onnx_type, onnx_inputs, self.onnx_attrs, len(actual),
                            self.opset)
        for a, e in zip(actual, expected, strict=True):
            assert_close(a, e, self.tol)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# --------------------------------------------------------------------------------------
# Cases: one or more per nn op kind
# --------------------------------------------------------------------------------------


def _elementwise_cases() -> list[Case]:
    x = randn(2, 3, 4, 5) * 3
    positive = np.abs(x) + 0.1
    # Attention-style masking: -10000 entries, one row masked entirely.
    masked = np.where(randn(6, 9, seed=1) > 0.5, np.float32(-10000), randn(6, 9, seed=2))
    masked[2] = -10000
    cases = [
        Case("relu", nn.ReluOp, {}, [x], "Relu"),
        Case("sigmoid", nn.SigmoidOp, {}, [x * 10], "Sigmoid"),
        Case("tanh", nn.TanhOp, {}, [x], "Tanh"),
        Case("erf", nn.ErfOp, {}, [x], "Erf"),
        Case("sqrt", nn.SqrtOp, {}, [positive], "Sqrt"),
        Case("reciprocal", nn.ReciprocalOp, {}, [positive], "Reciprocal"),
        Case("exp", nn.ExpOp, {}, [x], "Exp"),
        Case("neg", nn.NegOp, {}, [x], "Neg"),
        Case("hard_swish", nn.HardSwishOp, {}, [x], "HardSwish"),
        Case("leaky_relu", nn.LeakyReluOp, {"alpha": 0.1}, [x], "LeakyRelu", {"alpha": 0.1}),
        Case("leaky_relu_steep", nn.LeakyReluOp, {"alpha": 2.5}, [x], "LeakyRelu",
             {"alpha": 2.5}),
        Case("hard_sigmoid", nn.HardSigmoidOp, {"alpha": 0.2, "beta": 0.5}, [x], "HardSigmoid",
             {"alpha": 0.2, "beta": 0.5}),
        Case("gelu", nn.GeluOp, {"approximate": "none"}, [x], "Gelu",
             {"approximate": "none"}, opset=20),
        Case("gelu_tanh", nn.GeluOp, {"approximate": "tanh"}, [x], "Gelu",
             {"approximate": "tanh"}, opset=20),
        Case("clip", nn.ClipOp, {"min": -1.0, "max": 2.0}, [x], "Clip",
             onnx_inputs=[x, floats(-1.0).reshape(()), floats(2.0).reshape(())]),
        Case("clip_min_only", nn.ClipOp, {"min": 0.5}, [x], "Clip",
             onnx_inputs=[x, floats(0.5).reshape(())]),
        Case("clip_max_only", nn.ClipOp, {"max": 6.0}, [x], "Clip",
             onnx_inputs=[x, None, floats(6.0).reshape(())]),
        Case("clip_unbounded", nn.ClipOp, {}, [x], "Clip"),
        Case("softmax_middle_axis", nn.SoftmaxOp, {"axis": 1}, [x], "Softmax", {"axis": 1}),
        Case("softmax_last_axis", nn.SoftmaxOp, {"axis": 3}, [x], "Softmax", {"axis": -1}),
        Case("softmax_wide_range_middle", nn.SoftmaxOp, {"axis": 2}, [x * 30], "Softmax",
             {"axis": 2}),
        Case("softmax_wide_range_last", nn.SoftmaxOp, {"axis": 3}, [x * 30], "Softmax",
             {"axis": 3}),
        Case("softmax_masked_rows", nn.SoftmaxOp, {"axis": 1}, [masked], "Softmax", {"axis": 1}),
        Case("prelu_per_channel", nn.PReluOp, {}, [x, randn(3, 1, 1, seed=1)], "PRelu"),
        Case("prelu_scalar_slope", nn.PReluOp, {}, [x, floats(0.25)], "PRelu"),
    ]
    for size in (1, 3, 5):  # onnxruntime rejects even sizes; see test_lrn_even_size
        attrs = {"size": size, "alpha": 0.001, "beta": 0.75, "bias": 2.0}
        cases.append(Case(f"lrn_size{size}", nn.LRNOp, attrs, [randn(2, 7, 5, 6) * 4], "LRN",
                          attrs))
    return cases


def _binary_cases() -> list[Case]:
    a, b = randn(2, 3, 4), randn(3, 1, seed=1)
    ia, ib = rng(2).integers(-9, 9, (4, 5)), rng(3).integers(1, 5, (5,))
    ib_signed = ib * np.where(rng(4).integers(0, 2, (5,)) > 0, 1, -1)
    cases = []
    for name, cls, onnx_type in (("add", nn.AddOp, "Add"), ("sub", nn.SubOp, "Sub"),
                                 ("mul", nn.MulOp, "Mul"), ("max", nn.MaxOp, "Max"),
                                 ("min", nn.MinOp, "Min")):
        cases.append(Case(f"{name}_f32_broadcast", cls, {}, [a, b], onnx_type))
        cases.append(Case(f"{name}_i64", cls, {}, [ia, ib_signed], onnx_type))
    cases += [
        Case("div_f32", nn.DivOp, {}, [a, np.abs(b) + 0.5], "Div"),
        Case("div_i64_truncates", nn.DivOp, {}, [ia, ib_signed], "Div"),
        Case("pow_f32", nn.PowOp, {}, [np.abs(a) + 0.1, b], "Pow"),
        Case("pow_square", nn.PowOp, {}, [a, floats(2.0)], "Pow"),
        Case("equal_i64", nn.EqualOp, {}, [ia, ib_signed], "Equal"),
        Case("equal_bool", nn.EqualOp, {}, [ia > 0, ib_signed > 0], "Equal"),
        Case("equal_f32", nn.EqualOp, {}, [np.round(a), np.round(b)], "Equal"),
        Case("where_f32", nn.WhereOp, {}, [a > 0, a, b], "Where"),
        Case("where_i64", nn.WhereOp, {}, [ia > 0, ia, ib_signed], "Where"),
    ]
    return cases


def _cast_cases() -> list[Case]:
    x = randn(3, 4) * 5
    ix = rng(5).integers(-3, 3, (3, 4))
    return [
        Case("cast_f32_to_i64", nn.CastOp, {"to": i64}, [x], "Cast", {"to": TensorProto.INT64}),
        Case("cast_f32_to_bool", nn.CastOp, {"to": i1}, [np.round(x)], "Cast",
             {"to": TensorProto.BOOL}),
        Case("cast_i64_to_f32", nn.CastOp, {"to": f32}, [ix], "Cast", {"to": TensorProto.FLOAT}),
        Case("cast_bool_to_f32", nn.CastOp, {"to": f32}, [ix > 0], "Cast",
             {"to": TensorProto.FLOAT}),
        Case("cast_bool_to_i64", nn.CastOp, {"to": i64}, [ix > 0], "Cast",
             {"to": TensorProto.INT64}),
        Case("cast_i64_to_i64", nn.CastOp, {"to": i64}, [ix], "Cast", {"to": TensorProto.INT64}),
    ]


def _conv_props(spatial: int, strides: Sequence[int] | None = None,
                pads: Sequence[int] | None = None, dilations: Sequence[int] | None = None,
                group: int = 1) -> dict[str, object]:
    return {"strides": list(strides or [1] * spatial), "pads": list(pads or [0] * 2 * spatial),
            "dilations": list(dilations or [1] * spatial), "group": group}


def _onnx_window_attrs(props: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in props.items() if k in ("strides", "pads", "dilations", "group",
                                                     "kernel_shape", "ceil_mode",
                                                     "count_include_pad", "output_padding")}


def conv_case(id_: str, x_shape: Sequence[int], w_shape: Sequence[int], bias: bool = True,
              **kw: object) -> Case:
    x, w = randn(*x_shape, seed=1), randn(*w_shape, seed=2)
    inputs = [x, w] + ([randn(w_shape[0], seed=3)] if bias else [])
    props = _conv_props(len(x_shape) - 2, **kw)  # type: ignore[arg-type]
    return Case(id_, nn.ConvOp, props, inputs, "Conv", _onnx_window_attrs(props))


def _conv_cases() -> list[Case]:
    return [
        conv_case("conv_3x3", (2, 3, 9, 11), (5, 3, 3, 3), pads=[1, 1, 1, 1]),
        conv_case("conv_no_bias", (1, 4, 8, 8), (6, 4, 3, 3), bias=False),
        conv_case("conv_strided_asym_pads", (1, 3, 12, 13), (4, 3, 3, 5), strides=[2, 3],
                  pads=[0, 2, 1, 1]),
        conv_case("conv_dilated", (1, 2, 14, 14), (3, 2, 3, 3), dilations=[2, 3],
                  pads=[2, 1, 2, 3]),
        conv_case("conv_1x1", (2, 16, 7, 9), (8, 16, 1, 1)),
        conv_case("conv_1x1_strided", (1, 16, 7, 9), (8, 16, 1, 1), strides=[2, 2]),
        conv_case("conv_depthwise", (2, 8, 11, 10), (8, 1, 3, 3), group=8, pads=[1, 1, 1, 1]),
        conv_case("conv_depthwise_s2_5x5", (1, 6, 17, 16), (6, 1, 5, 5), group=6,
                  strides=[2, 2], pads=[2, 2, 2, 2]),
        conv_case("conv_depthwise_dilated_asym", (1, 4, 15, 13), (4, 1, 3, 3), group=4,
                  strides=[2, 1], pads=[0, 3, 2, 1], dilations=[2, 3], bias=False),
        conv_case("conv_depthwise_multiplier", (1, 4, 8, 8), (8, 1, 3, 3), group=4),
        conv_case("conv_grouped", (2, 8, 9, 9), (6, 4, 3, 3), group=2, pads=[1, 0, 1, 0]),
        conv_case("conv_1d", (2, 4, 20), (6, 4, 5), strides=[2], pads=[2, 1]),
        conv_case("conv_1d_depthwise", (1, 5, 16), (5, 1, 3), group=5, pads=[1, 1],
                  dilations=[2]),
        conv_case("conv_3d", (1, 2, 5, 6, 7), (3, 2, 3, 3, 3), pads=[1, 0, 1, 1, 0, 1]),
        conv_case("conv_3d_depthwise", (1, 3, 5, 6, 7), (3, 1, 3, 2, 3), group=3,
                  strides=[1, 2, 2], pads=[1, 1, 1, 1, 0, 1]),
        # Large enough to run in several row / image chunks, with a short last one.
        conv_case("conv_depthwise_chunked", (2, 37, 40, 40), (37, 1, 3, 3), group=37,
                  pads=[1, 1, 1, 1]),
        conv_case("conv_dense_chunked", (3, 8, 40, 40), (4, 8, 3, 3), strides=[2, 2],
                  pads=[1, 1, 1, 1]),
    ]


def conv_transpose_case(id_: str, x_shape: Sequence[int], w_shape: Sequence[int],
                        bias: bool = True, output_padding: Sequence[int] | None = None,
                        **kw: object) -> Case:
    x, w = randn(*x_shape, seed=4), randn(*w_shape, seed=5)
    group = int(kw.get("group", 1))  # type: ignore[call-overload]
    inputs = [x, w] + ([randn(w_shape[1] * group, seed=6)] if bias else [])
    spatial = len(x_shape) - 2
    props = _conv_props(spatial, **kw)  # type: ignore[arg-type]
    props["output_padding"] = list(output_padding or [0] * spatial)
    return Case(id_, nn.ConvTransposeOp, props, inputs, "ConvTranspose",
                _onnx_window_attrs(props))


def _conv_transpose_cases() -> list[Case]:
    return [
        conv_transpose_case("conv_transpose", (2, 4, 5, 6), (4, 3, 3, 3)),
        conv_transpose_case("conv_transpose_s2_pads", (1, 4, 5, 6), (4, 3, 3, 3),
                            strides=[2, 2], pads=[1, 1, 1, 1]),
        conv_transpose_case("conv_transpose_output_padding", (1, 3, 4, 5), (3, 2, 3, 4),
                            strides=[2, 3], pads=[1, 0, 0, 2], output_padding=[1, 2]),
        conv_transpose_case("conv_transpose_groups_dilated", (1, 6, 5, 5), (6, 2, 3, 3),
                            group=3, strides=[2, 2], dilations=[2, 1], bias=False),
        conv_transpose_case("conv_transpose_1d", (2, 3, 7), (3, 4, 4), strides=[2],
                            pads=[1, 2], output_padding=[1]),
    ]


def _norm_and_product_cases() -> list[Case]:
    x = randn(2, 5, 6, 7)
    c = 5
    bn = [x, randn(c, seed=1), randn(c, seed=2), randn(c, seed=3),
          np.abs(randn(c, seed=4)) + 0.5]
    seq = randn(2, 16, 24) * 3 + 1
    return [
        Case("batch_norm", nn.BatchNormOp, {"epsilon": 1e-5}, bn, "BatchNormalization",
             {"epsilon": 1e-5}),
        Case("batch_norm_2d", nn.BatchNormOp, {"epsilon": 1e-3}, [randn(4, 5), *bn[1:]],
             "BatchNormalization", {"epsilon": 1e-3}),
        Case("layer_norm", nn.LayerNormOp, {"axis": 2, "epsilon": 1e-5},
             [seq, randn(24, seed=1), randn(24, seed=2)], "LayerNormalization",
             {"axis": -1, "epsilon": 1e-5}),
        Case("layer_norm_no_bias", nn.LayerNormOp, {"axis": 2, "epsilon": 1e-12},
             [seq, randn(24, seed=1)], "LayerNormalization", {"axis": 2, "epsilon": 1e-12}),
        Case("layer_norm_two_axes", nn.LayerNormOp, {"axis": 1, "epsilon": 1e-5},
             [seq, randn(16, 24, seed=1), randn(24, seed=2)], "LayerNormalization",
             {"axis": 1, "epsilon": 1e-5}),
        Case("matmul_2d", nn.MatMulOp, {}, [randn(7, 9), randn(9, 5, seed=1)], "MatMul"),
        Case("matmul_3d_by_2d", nn.MatMulOp, {}, [randn(2, 7, 9), randn(9, 5, seed=1)],
             "MatMul"),
        Case("matmul_batched_broadcast", nn.MatMulOp, {},
             [randn(2, 1, 7, 9), randn(3, 9, 5, seed=1)], "MatMul"),
        Case("matmul_1d_lhs", nn.MatMulOp, {}, [randn(9), randn(2, 9, 5, seed=1)], "MatMul"),
        Case("matmul_1d_rhs", nn.MatMulOp, {}, [randn(2, 7, 9), randn(9, seed=1)], "MatMul"),
        Case("matmul_1d_both", nn.MatMulOp, {}, [randn(9), randn(9, seed=1)], "MatMul"),
        Case("matmul_i64", nn.MatMulOp, {},
             [rng(1).integers(-5, 5, (3, 4)), rng(2).integers(-5, 5, (4, 2))], "MatMul"),
    ]


def _gemm_cases() -> list[Case]:
    cases = []
    for trans_a in (0, 1):
        for trans_b in (0, 1):
            a = randn(*((6, 4) if trans_a else (4, 6)))
            b = randn(*((5, 6) if trans_b else (6, 5)), seed=1)
            attrs = {"alpha": 0.5, "beta": 2.0, "transA": trans_a, "transB": trans_b}
            props = {"alpha": 0.5, "beta": 2.0, "trans_a": trans_a, "trans_b": trans_b}
            cases.append(Case(f"gemm_ta{trans_a}_tb{trans_b}", nn.GemmOp, props,
                              [a, b, randn(5, seed=2)], "Gemm", attrs))
    plain = {"alpha": 1.0, "beta": 1.0, "trans_a": 0, "trans_b": 1}
    cases += [
        Case("gemm_no_c", nn.GemmOp, plain, [randn(3, 8), randn(4, 8, seed=1)], "Gemm",
             {"transB": 1}),
        Case("gemm_full_c", nn.GemmOp, plain,
             [randn(3, 8), randn(4, 8, seed=1), randn(3, 4, seed=2)], "Gemm", {"transB": 1}),
    ]
    return cases


def _reduce_cases() -> list[Case]:
    x = randn(2, 3, 4, 5)
    cases = []
    for keepdims in (0, 1):
        for axes in ((1,), (0, 2), (1, 2, 3), (0, 1, 2, 3)):
            props = {"axes": list(axes), "keepdims": keepdims}
            tag = f"{''.join(map(str, axes))}_keep{keepdims}"
            cases += [
                Case(f"reduce_mean_{tag}", nn.ReduceMeanOp, props, [x], "ReduceMean",
                     {"axes": list(axes), "keepdims": keepdims}),
                Case(f"reduce_max_{tag}", nn.ReduceMaxOp, props, [x], "ReduceMax",
                     {"axes": list(axes), "keepdims": keepdims}),
                Case(f"reduce_sum_{tag}", nn.ReduceSumOp, props, [x], "ReduceSum",
                     {"keepdims": keepdims}, onnx_inputs=[x, ints(*axes)]),
            ]
    ix = rng(1).integers(-9, 9, (3, 4))
    cases.append(Case("reduce_sum_i64", nn.ReduceSumOp, {"axes": [1], "keepdims": 0}, [ix],
                      "ReduceSum", {"keepdims": 0}, onnx_inputs=[ix, ints(1)]))
    cases.append(Case("global_average_pool", nn.GlobalAveragePoolOp, {}, [randn(2, 3, 7, 9)],
                      "GlobalAveragePool"))
    cases.append(Case("global_average_pool_1d", nn.GlobalAveragePoolOp, {}, [randn(2, 3, 7)],
                      "GlobalAveragePool"))
    return cases


def pool_case(id_: str, cls: type[nn.NNOperation], x_shape: Sequence[int],
              kernel: Sequence[int], strides: Sequence[int] | None = None,
              pads: Sequence[int] | None = None, ceil_mode: int = 0,
              dilations: Sequence[int] | None = None, count_include_pad: int = 0,
              seed: int = 0) -> Case:
    spatial = len(kernel)
    props: dict[str, object] = {
        "kernel_shape": list(kernel), "strides": list(strides or [1] * spatial),
        "pads": list(pads or [0] * 2 * spatial), "ceil_mode": ceil_mode}
    if cls is nn.MaxPoolOp:
        props["dilations"] = list(dilations or [1] * spatial)
        onnx_type = "MaxPool"
    else:
        props["count_include_pad"] = count_include_pad
        onnx_type = "AveragePool"
    return Case(id_, cls, props, [randn(*x_shape, seed=seed)], onnx_type,
                _onnx_window_attrs(props))


def _pool_cases() -> list[Case]:
    cases = [
        pool_case("max_pool_3x3_s2", nn.MaxPoolOp, (2, 3, 12, 11), (3, 3), (2, 2),
                  (1, 1, 1, 1)),
        pool_case("max_pool_ceil", nn.MaxPoolOp, (1, 2, 6, 7), (3, 3), (2, 2), (1, 1, 1, 1), 1),
        pool_case("max_pool_dilated", nn.MaxPoolOp, (1, 2, 11, 12), (3, 2), (1, 2),
                  (1, 0, 2, 1), dilations=(2, 3)),
        pool_case("max_pool_1d", nn.MaxPoolOp, (2, 3, 15), (4,), (3,), (1, 2), 1),
        pool_case("max_pool_3d", nn.MaxPoolOp, (1, 2, 5, 6, 7), (2, 2, 3), (2, 2, 2)),
        pool_case("max_pool_chunked", nn.MaxPoolOp, (4, 33, 64, 64), (2, 2), (2, 2)),
    ]
    for include in (0, 1):
        for ceil in (0, 1):
            cases.append(pool_case(f"avg_pool_pads_incl{include}_ceil{ceil}", nn.AveragePoolOp,
                                   (2, 3, 6, 7), (3, 3), (2, 2), (1, 1, 1, 0), ceil,
                                   count_include_pad=include))
    cases += [
        pool_case("avg_pool_2x2", nn.AveragePoolOp, (1, 4, 8, 8), (2, 2), (2, 2)),
        pool_case("avg_pool_asym", nn.AveragePoolOp, (1, 2, 9, 10), (3, 2), (1, 3),
                  (2, 0, 0, 1), 1, count_include_pad=1),
        pool_case("avg_pool_1d", nn.AveragePoolOp, (2, 3, 11), (3,), (2,), (1, 1), 1),
        pool_case("avg_pool_chunked", nn.AveragePoolOp, (3, 40, 60, 60), (3, 3), (2, 2),
                  (1, 1, 1, 1), 1),
    ]
    return cases


def _movement_cases() -> list[Case]:
    x = randn(2, 3, 4, 5)
    ix = rng(1).integers(-100, 100, (4, 3))
    cases = [
        Case("concat_f32", nn.ConcatOp, {"axis": 1}, [x, randn(2, 1, 4, 5), randn(2, 2, 4, 5)],
             "Concat", {"axis": 1}),
        Case("concat_i64", nn.ConcatOp, {"axis": 0}, [ints(1, 2), ints(3), ints(4, 5, 6)],
             "Concat", {"axis": 0}),
        Case("split", nn.SplitOp, {"axis": 2, "sizes": [1, 3, 0]}, [x], "Split", {"axis": 2},
             onnx_inputs=[x, ints(1, 3, 0)]),
        Case("split_i64", nn.SplitOp, {"axis": 0, "sizes": [2, 2]}, [ix], "Split", {"axis": 0},
             onnx_inputs=[ix, ints(2, 2)]),
        Case("reshape", nn.ReshapeOp, {"shape": [6, 20]}, [x], "Reshape",
             onnx_inputs=[x, ints(6, 20)]),
        Case("reshape_i64_to_scalar", nn.ReshapeOp, {"shape": []}, [ints(7)], "Reshape",
             onnx_inputs=[ints(7), np.zeros(0, np.int64)]),
        Case("expand", nn.ExpandOp, {"shape": [2, 3, 4, 5]}, [randn(3, 1, 5)], "Expand",
             onnx_inputs=[randn(3, 1, 5), ints(2, 1, 4, 1)]),
        Case("expand_i64", nn.ExpandOp, {"shape": [3, 2]}, [ints(4, 5)], "Expand",
             onnx_inputs=[ints(4, 5), ints(3, 1)]),
        Case("transpose", nn.TransposeOp, {"perm": [0, 2, 3, 1]}, [x], "Transpose",
             {"perm": [0, 2, 3, 1]}),
        Case("transpose_bool", nn.TransposeOp, {"perm": [1, 0]}, [ix > 0], "Transpose",
             {"perm": [1, 0]}),
        Case("gather_negative", nn.GatherOp, {"axis": 1}, [x, ints(-1, 0, -3, 2)], "Gather",
             {"axis": 1}),
        Case("gather_scalar_index", nn.GatherOp, {"axis": 0}, [ints(5, 6, 7), ints(-2)[0:1]
                                                               .reshape(())], "Gather",
             {"axis": 0}),
        Case("gather_2d_indices", nn.GatherOp, {"axis": 3}, [x, ints(4, -5, 1, 0).reshape(2, 2)],
             "Gather", {"axis": 3}),
        Case("gather_i64_data", nn.GatherOp, {"axis": 1}, [ix, ints(2, -1)], "Gather",
             {"axis": 1}),
    ]
    for mode in ("constant", "reflect", "edge"):
        pads = [0, 1, 2, 0, 0, 2, 1, 3]
        cases.append(Case(f"pad_{mode}", nn.PadOp, {"pads": pads, "mode": mode, "value": 1.5},
                          [x], "Pad", {"mode": mode},
                          onnx_inputs=[x, ints(*pads), floats(1.5).reshape(())]))
    cases.append(Case("pad_negative_crop", nn.PadOp,
                      {"pads": [0, -1, 2, 0, 0, 1, -2, 1], "mode": "constant", "value": 0.0},
                      [x], "Pad", {"mode": "constant"},
                      onnx_inputs=[x, ints(0, -1, 2, 0, 0, 1, -2, 1)]))
    cases.append(Case("pad_i64", nn.PadOp, {"pads": [1, 2], "mode": "constant", "value": 0.0},
                      [ints(3, 4)], "Pad", {"mode": "constant"},
                      onnx_inputs=[ints(3, 4), ints(1, 2)]))
    return cases


def slice_case(id_: str, x: np.ndarray, where: Sequence[slice]) -> Case:
    """x[where] as an nn.slice (normalised bounds) and an ONNX Slice on every axis."""
    starts, ends, steps, onnx_starts, onnx_ends = [], [], [], [], []
    for s, dim in zip(where, x.shape, strict=True):
        start, stop, step = s.indices(dim)
        starts.append(start)
        ends.append(stop)
        steps.append(step)
        if not range(start, stop, step):
            onnx_starts.append(0)
            onnx_ends.append(0)
            continue
        onnx_starts.append(start)
        # ONNX reads an end of -1 as dim - 1; "run past index 0" is any end < -dim.
        onnx_ends.append(-dim - 1 if stop < 0 else stop)
    props = {"starts": starts, "ends": ends, "steps": steps}
    return Case(id_, nn.SliceOp, props, [x], "Slice",
                onnx_inputs=[x, ints(*onnx_starts), ints(*onnx_ends), ints(*range(x.ndim)),
                             ints(*steps)])


def _slice_cases() -> list[Case]:
    x = randn(4, 5, 6)
    return [
        slice_case("slice_basic", x, [slice(1, 3), slice(None), slice(0, 6, 2)]),
        slice_case("slice_negative_steps", x, [slice(None, None, -1), slice(3, 0, -2),
                                               slice(4, None, -3)]),
        slice_case("slice_empty", x, [slice(3, 1), slice(None), slice(None)]),
        slice_case("slice_i64", rng(1).integers(0, 9, (7,)), [slice(5, None, -2)]),
    ]


def resize_case(mode: str, transform: str, nearest: str, x_shape: Sequence[int],
                scales: Sequence[float]) -> Case:
    x = randn(*x_shape, seed=7)
    sizes = [int(math.floor(d * s)) for d, s in zip(x_shape, scales, strict=True)]
    props = {"mode": mode, "coordinate_transformation_mode": transform, "nearest_mode": nearest,
             "scales": [float(s) for s in scales], "sizes": sizes}
    attrs = {"mode": mode, "coordinate_transformation_mode": transform, "nearest_mode": nearest}
    tag = "x".join(f"{v:g}" for v in scales)
    return Case(f"resize_{mode}_{transform}_{nearest}_{tag}", nn.ResizeOp, props, [x], "Resize",
                attrs, onnx_inputs=[x, None, floats(*scales)])


def _resize_cases() -> list[Case]:
    cases = []
    for transform in nn.ResizeOp.TRANSFORMS:
        for nearest in nn.ResizeOp.NEAREST:
            cases.append(resize_case("nearest", transform, nearest, (1, 2, 5, 7),
                                     (1, 1, 2.5, 0.6)))
            cases.append(resize_case("nearest", transform, nearest, (1, 1, 6, 9),
                                     (1, 1, 1 / 3, 4 / 3)))
        cases.append(resize_case("linear", transform, "round_prefer_floor", (2, 3, 5, 7),
                                 (1, 1, 1.6, 0.5)))
        cases.append(resize_case("linear", transform, "round_prefer_floor", (1, 2, 4, 4),
                                 (1, 1, 2.0, 3.0)))
    cases.append(resize_case("nearest", "asymmetric", "floor", (1, 2, 4, 5), (1, 1, 2, 2)))
    cases.append(resize_case("nearest", "half_pixel", "round_prefer_floor", (2, 3, 4),
                             (1, 3, 0.5)))
    cases.append(resize_case("linear", "align_corners", "floor", (6, 9), (0.5, 1.5)))
    cases.append(resize_case("linear", "pytorch_half_pixel", "floor", (1, 1, 3, 4),
                             (1, 1, 1, 0.25)))
    cases.append(resize_case("linear", "tf_half_pixel_for_nn", "floor", (1, 2, 5, 7),
                             (1, 1, 2.5, 0.6)))
    cases.append(resize_case("linear", "half_pixel", "floor", (1, 2, 3, 5, 7), (1, 1, 2, 1.5, 0.6)))
    cases.append(resize_case("linear", "asymmetric", "floor", (2, 3, 5), (1, 1, 1.6)))
    cases.append(resize_case("nearest", "half_pixel", "round_prefer_ceil", (2, 3, 4, 5, 6),
                             (1, 2, 1.5, 0.6, 2)))
    # onnxruntime: an unchanged shape is a copy, a scale-1 axis is copied, but an axis
    # keeping its size under another scale is still transformed.
    cases.append(resize_case("nearest", "half_pixel", "floor", (1, 1, 3, 2), (1, 1, 1.25, 1)))
    cases.append(resize_case("linear", "half_pixel", "floor", (1, 1, 3, 2), (1, 1, 1.25, 1)))
    cases.append(resize_case("nearest", "half_pixel", "floor", (1, 1, 3, 2), (1, 1, 1.25, 2)))
    cases.append(resize_case("linear", "half_pixel", "floor", (1, 1, 3, 2), (1, 1, 1.25, 2)))
    cases.append(resize_case("linear", "tf_half_pixel_for_nn", "floor", (1, 1, 3, 2),
                             (1, 1, 1, 2)))
    return cases


CASES = (_elementwise_cases() + _binary_cases() + _cast_cases() + _conv_cases()
         + _conv_transpose_cases() + _norm_and_product_cases() + _gemm_cases()
         + _reduce_cases() + _pool_cases() + _movement_cases() + _slice_cases()
         + _resize_cases())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_against_onnxruntime(case: Case) -> None:
    case.check()


def test_every_nn_op_has_a_kernel_and_a_case() -> None:
    all_ops = {op for op in nn.NN.operations if op is not nn.ConstantOp}
    assert kernel_ops() == all_ops
    assert {case.op for case in CASES} == all_ops


def test_constant_has_no_kernel() -> None:
    from xdsl.dialects.builtin import DenseIntOrFPElementsAttr

    attr: Attribute = DenseIntOrFPElementsAttr.from_list(tensor_type((2,), np.float32),
                                                         [1.0, 2.0])
    op = nn.ConstantOp.build_from([], {"value": attr}, "weights")
    with pytest.raises(QuantirError, match=r"nn\.constant 'weights'"):
        compile_kernel(op)


# --------------------------------------------------------------------------------------
# erf accuracy
# --------------------------------------------------------------------------------------


def test_erf_accuracy_against_math_erf() -> None:
    x = np.concatenate([np.linspace(-6, 6, 100_000), rng().standard_normal(20_000) * 2,
                        np.geomspace(1e-30, 1e-2, 500), -np.geomspace(1e-30, 1e-2, 500)]
                       ).astype(np.float32)
    reference = np.array([math.erf(float(v)) for v in x])
    got = erf(x)
    assert got.dtype == np.float32
    error = np.abs(got.astype(np.float64) - reference)
    assert error.max() <= 1e-7
    tiny = np.abs(x) < 1e-2
    assert (error[tiny] / np.abs(reference[tiny])).max() <= 1e-6


def test_erf_special_values() -> None:
    got = erf(np.array([0.0, -0.0, 4.0, 50.0, -50.0, np.inf, -np.inf, np.nan], np.float32))
    np.testing.assert_array_equal(got[:7], [0.0, -0.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    assert np.isnan(got[7])
    assert np.signbit(got[1])
    scalar = erf(np.float32(0.5))
    assert scalar.shape == () and abs(float(scalar) - math.erf(0.5)) < 1e-7


# --------------------------------------------------------------------------------------
# Properties: random window configurations against onnxruntime
# --------------------------------------------------------------------------------------


@st.composite
def conv_configs(draw: st.DrawFn) -> Case:
    spatial = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4 if spatial < 3 else 3)) for _ in range(spatial)]
    dilations = [draw(st.integers(1, 2)) for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * spatial)]
    sizes = [max(draw(st.integers(1, 10 if spatial < 3 else 6)),
                 (k - 1) * d + 1 - pads[i] - pads[spatial + i])
             for i, (k, d) in enumerate(zip(kernel, dilations, strict=True))]
    kind = draw(st.sampled_from(["dense", "depthwise", "multiplier", "grouped"]))
    group = 1
    cg = draw(st.integers(1, 3))
    m = draw(st.integers(1, 4))
    if kind in ("depthwise", "multiplier"):
        group = draw(st.integers(1, 6))
        cg, m = 1, group * (1 if kind == "depthwise" else draw(st.integers(2, 3)))
    elif kind == "grouped":
        group = draw(st.integers(2, 3))
        m *= group
    batch = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return conv_case("conv_property", (batch, cg * group, *sizes), (m, cg, *kernel), bias=bias,
                     strides=strides, pads=pads, dilations=dilations, group=group)


@HYPOTHESIS
@given(conv_configs())
def test_conv_property(case: Case) -> None:
    case.check()


@st.composite
def pool_configs(draw: st.DrawFn) -> Case:
    spatial = draw(st.integers(1, 2))
    is_max = draw(st.booleans())
    kernel = [draw(st.integers(1, 4)) for _ in range(spatial)]
    dilations = [draw(st.integers(1, 2)) if is_max else 1 for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    pads = [draw(st.integers(0, kernel[i % spatial] - 1)) for i in range(2 * spatial)]
    sizes = [max(draw(st.integers(1, 9)), (k - 1) * d + 1)
             for k, d in zip(kernel, dilations, strict=True)]
    ceil = draw(st.integers(0, 1))
    include = draw(st.integers(0, 1))
    cls = nn.MaxPoolOp if is_max else nn.AveragePoolOp
    return pool_case("pool_property", cls, (2, 3, *sizes), kernel, strides, pads, ceil,
                     dilations, include)


@HYPOTHESIS
@given(pool_configs())
def test_pool_property(case: Case) -> None:
    case.check()


@st.composite
def slice_configs(draw: st.DrawFn) -> Case:
    shape = [draw(st.integers(1, 6)) for _ in range(draw(st.integers(1, 3)))]
    bound = st.one_of(st.none(), st.integers(-8, 8))
    where = [slice(draw(bound), draw(bound), draw(st.sampled_from([-3, -2, -1, 1, 2, 3])))
             for _ in shape]
    return slice_case("slice_property", randn(*shape), where)


@HYPOTHESIS
@given(slice_configs())
def test_slice_property(case: Case) -> None:
    case.check()


@st.composite
def conv_transpose_configs(draw: st.DrawFn) -> Case:
    spatial = draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 4)) for _ in range(spatial)]
    dilations = [draw(st.integers(1, 2)) for _ in range(spatial)]
    strides = [draw(st.integers(1, 3)) for _ in range(spatial)]
    output_padding = [draw(st.integers(0, s - 1)) for s in strides]
    sizes = [draw(st.integers(1, 6)) for _ in range(spatial)]
    full = [(n - 1) * s + (k - 1) * d + 1 + op for n, s, k, d, op in zip(
        sizes, strides, kernel, dilations, output_padding, strict=True)]
    pads = [draw(st.integers(0, max(0, (f - 1) // 2))) for f in full] \
        + [draw(st.integers(0, max(0, (f - 1) // 2))) for f in full]
    group = draw(st.integers(1, 3))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return conv_transpose_case("conv_transpose_property",
                               (draw(st.integers(1, 2)), cg * group, *sizes),
                               (cg * group, mg, *kernel), bias=draw(st.booleans()),
                               output_padding=output_padding, strides=strides, pads=pads,
                               dilations=dilations, group=group)


@HYPOTHESIS
@given(conv_transpose_configs())
def test_conv_transpose_property(case: Case) -> None:
    case.check()


@st.composite
def matmul_configs(draw: st.DrawFn) -> Case:
    m, k, n = (draw(st.integers(1, 6)) for _ in range(3))
    batch = st.lists(st.integers(1, 3), max_size=2)
    a_batch, b_batch = draw(batch), draw(batch)
    # Broadcast-compatible batches: make every paired dimension equal or 1.
    for i in range(1, min(len(a_batch), len(b_batch)) + 1):
        if a_batch[-i] != b_batch[-i] and draw(st.booleans()):
            a_batch[-i] = 1
        elif a_batch[-i] != b_batch[-i]:
            b_batch[-i] = 1
    a_shape = [k] if draw(st.booleans()) and not a_batch else [*a_batch, m, k]
    b_shape = [k] if draw(st.booleans()) and not b_batch else [*b_batch, k, n]
    return Case("matmul_property", nn.MatMulOp, {}, [randn(*a_shape), randn(*b_shape, seed=1)],
                "MatMul")


@HYPOTHESIS
@given(matmul_configs())
def test_matmul_property(case: Case) -> None:
    case.check()


@st.composite
def resize_configs(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from(nn.ResizeOp.MODES))
    transform = draw(st.sampled_from(nn.ResizeOp.TRANSFORMS))
    nearest = draw(st.sampled_from(nn.ResizeOp.NEAREST))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    scale = st.sampled_from([0.25, 1 / 3, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0])
    scales = (1.0, 1.0, draw(scale), draw(scale))
    if any(math.floor(d * s) < 1 for d, s in zip(shape, scales, strict=True)):
        scales = (1.0, 1.0, 2.0, 2.0)
    return resize_case(mode, transform, nearest, shape, scales)


@HYPOTHESIS
@given(resize_configs())
def test_resize_property(case: Case) -> None:
    case.check()


# --------------------------------------------------------------------------------------
# Kernel behaviour
# --------------------------------------------------------------------------------------


def test_kernels_do_not_write_inputs() -> None:
    x = randn(1, 4, 9, 9)
    w = randn(4, 1, 3, 3, seed=1)
    b = randn(4, seed=2)
    originals = [a.copy() for a in (x, w, b)]
    op = build(nn.ConvOp, [x, w, b], _conv_props(2, pads=[1, 1, 1, 1], group=4))
    run_kernel(op, [x, w, b])
    for a, original in zip((x, w, b), originals, strict=True):
        np.testing.assert_array_equal(a, original)


def _read_only(*arrays: np.ndarray) -> list[np.ndarray]:
    copies = [a.copy() for a in arrays]
    for a in copies:
        a.flags.writeable = False
    return copies


@pytest.mark.parametrize("cls, inputs, props", [
    (nn.BatchNormOp, [randn(1, 3, 4, 4), randn(3, seed=1), randn(3, seed=2), randn(3, seed=3),
                      np.abs(randn(3, seed=4)) + 0.5], {"epsilon": 1e-5}),
    (nn.ConvOp, [randn(1, 4, 6, 6), randn(4, 1, 3, 3, seed=1), randn(4, seed=2)],
     _conv_props(2, group=4)),
    (nn.ConvOp, [randn(1, 4, 6, 6), randn(2, 4, 3, 3, seed=1)], _conv_props(2)),
], ids=["batch_norm", "depthwise", "dense"])
def test_cached_weights_follow_new_buffers(cls: type[nn.NNOperation], inputs: list[np.ndarray],
                                           props: dict[str, object]) -> None:
    # Folded / reordered weights are cached per read-only buffer: new buffers, even
    # with the same shapes, must be used, and writable ones are never cached.
    kernel = compile_kernel(build(cls, inputs, props))
    x, weights = inputs[0], inputs[1:]
    first = _read_only(*weights)
    second = _read_only(*(w * 2 + 1 for w in weights))
    for ws in (first, second, first, [w.copy() for w in second]):
        (got,) = kernel(x, *ws)
        (fresh,) = compile_kernel(build(cls, inputs, props))(x, *[w.copy() for w in ws])
        np.testing.assert_array_equal(got, fresh)


def test_non_contiguous_inputs() -> None:
    x = randn(1, 6, 9, 8).transpose(0, 1, 3, 2)  # a strided view
    w = randn(6, 1, 3, 3, seed=1)
    for cls, inputs, props in (
            (nn.ConvOp, [x, w], _conv_props(2, pads=[1, 1, 1, 1], group=6)),
            (nn.ConvOp, [x, randn(4, 6, 1, 1, seed=2)], _conv_props(2)),
            (nn.MaxPoolOp, [x], {"kernel_shape": [2, 2], "strides": [1, 1],
                                 "pads": [0, 0, 0, 0], "ceil_mode": 0, "dilations": [1, 1]}),
            (nn.SoftmaxOp, [x], {"axis": 3}),
            (nn.LayerNormOp, [x, randn(9, seed=3)], {"axis": 3, "epsilon": 1e-5}),
            (nn.MatMulOp, [x, randn(9, 4, seed=4)], {})):
        op = build(cls, inputs, props)
        (strided,) = run_kernel(op, inputs)
        (contiguous,) = run_kernel(op, [np.ascontiguousarray(a) for a in inputs])
        np.testing.assert_allclose(strided, contiguous, rtol=1e-6, atol=1e-6)


def test_zero_dim_inputs_give_arrays() -> None:
    x = floats(0.3).reshape(())
    for cls in (nn.SigmoidOp, nn.HardSwishOp, nn.ErfOp, nn.ReluOp, nn.NegOp):
        (result,) = run_kernel(build(cls, [x], {}), [x])
        assert result.shape == () and result.dtype == np.float32


def test_lrn_even_size_follows_the_onnx_window() -> None:
    # ONNX: channel c sums c - floor((size-1)/2) .. c + ceil((size-1)/2), clipped.
    x = randn(2, 6, 3, 4)
    props = {"size": 4, "alpha": 0.01, "beta": 0.75, "bias": 1.5}
    (got,) = run_kernel(build(nn.LRNOp, [x], props), [x])
    square = x.astype(np.float64) ** 2
    total = np.stack([square[:, max(0, c - 1):c + 3].sum(axis=1) for c in range(6)], axis=1)
    expected = x / (1.5 + 0.01 / 4 * total) ** 0.75
    assert_close(got, expected.astype(np.float32))


def test_where_on_bool_branches() -> None:
    # onnxruntime has no bool Where; numpy is the reference.
    cond, a, b = randn(3, 4) > 0, randn(3, 4, seed=1) > 0, randn(4, seed=2) > 0
    (got,) = run_kernel(build(nn.WhereOp, [cond, a, b], {}), [cond, a, b])
    np.testing.assert_array_equal(got, np.where(cond, a, b))
