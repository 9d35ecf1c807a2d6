"""`layernorm-decompose` and `layernorm-fuse`: float function kept, exact round trip,
and every near miss of the written-out form left alone.

Metric for "keeps the float function": max |after - before| / max |before| <= 1e-4 on
each float output of quantir.Session, on real inputs (digits for the tiny ViT, token
ids for MiniLM-L3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import Block, Region, SSAValue
from xdsl.passes import ModulePass, PassPipeline

import quantir
from quantir.dialects import nn, q
from quantir.ir import dense_of, splat_of
from quantir.passes import pipeline_context
from quantir.passes.layernorm_decompose import LayerNormDecomposePass
from quantir.passes.layernorm_fuse import LayerNormFusePass, fuse_layer_norms
from quantir.passes.qconfig import QuantConfig
from tests.conftest import DATA, PRETRAINED, pretrained_path, random_feeds
from tests.filecheck.inputs.make_layernorm_onnx import write_out_layer_norms

TOLERANCE = 1e-4
VIT = DATA / "tiny_vit.onnx"
STEPS_WITH_BIAS = {"mean", "center", "square", "variance", "epsilon", "add_epsilon", "sqrt",
                   "rsqrt", "normalize", "scale", "shift"}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def run_passes(module: ModuleOp, *passes: ModulePass) -> ModuleOp:
    """Apply passes as a pipeline would (the passes are not in the registry here)."""
    PassPipeline(tuple(passes)).apply(pipeline_context(), module)
    module.verify()
    return module


def layer_norms(module: ModuleOp) -> list[nn.LayerNormOp]:
    return [op for op in module.walk() if isinstance(op, nn.LayerNormOp)]


def text(module: ModuleOp) -> str:
    return quantir.print_module(module, elide_limit=None)


def max_relative_error(reference: quantir.Session, candidate: quantir.Session,
                       feeds: Iterable[Mapping[str, np.ndarray]]) -> float:
    """The worst max|diff| / max|reference| over the float outputs and the feeds."""
    worst = 0.0
    for feed in feeds:
        expected, actual = reference.run(feed), candidate.run(feed)
        assert list(actual) == list(expected)
        for name, want in expected.items():
            if want.dtype.kind != "f":
                np.testing.assert_array_equal(actual[name], want)
                continue
            scale = max(float(np.max(np.abs(want))), 1e-12)
            diff = np.max(np.abs(actual[name].astype(np.float64) - want))
            worst = max(worst, float(diff) / scale)
    return worst


def digits_feeds(count: int = 32) -> list[dict[str, np.ndarray]]:
    images = np.load(DATA / "digits_test.npz")["input"][:count]
    return [{"input": images[i:i + 1]} for i in range(count)]


def minilm_feeds(session: quantir.Session, count: int = 3) -> list[dict[str, np.ndarray]]:
    shapes = PRETRAINED["minilm_l3"].input_shapes
    dtypes = dict(zip(session.input_names, session.input_dtypes, strict=True))
    return [random_feeds(shapes, dtypes, seed) for seed in range(count)]


# --------------------------------------------------------------------------------------
# layernorm-decompose
# --------------------------------------------------------------------------------------


def test_decompose_vit_keeps_float_function() -> None:
    original = quantir.import_onnx(VIT)
    names = [op.node_name for op in layer_norms(original)]
    assert len(names) == 5
    decomposed = run_passes(quantir.import_onnx(VIT), LayerNormDecomposePass())
    assert not layer_norms(decomposed)
    # Every LayerNorm became its eleven named steps (all five have a bias).
    for name in names:
        steps = {op.node_name.removeprefix(f"{name}/") for op in decomposed.walk()
                 if isinstance(op, nn.NNOperation) and op.node_name.startswith(f"{name}/")}
        assert steps == STEPS_WITH_BIAS
    error = max_relative_error(quantir.Session(original), quantir.Session(decomposed),
                               digits_feeds())
    assert error <= TOLERANCE


def test_decompose_then_fuse_restores_vit_exactly() -> None:
    original = text(quantir.import_onnx(VIT))
    module = run_passes(quantir.import_onnx(VIT), LayerNormDecomposePass(), LayerNormFusePass())
    # Same ops, operands, axis, epsilon, names and SSA names: the same text.
    assert text(module) == original


def test_decomposed_variance_path_takes_16_bits_by_glob() -> None:
    """The step names are what per-layer globs select: `*/variance` at a16 puts a
    precision change into and out of each of the five variance reductions."""
    module = quantir.import_onnx(VIT)
    config = QuantConfig.build(precision="a8_w8", layers={"*/variance": "a16_w16"})
    run_passes(module, LayerNormDecomposePass())
    quantir.compile(module, "calibrate,quantize", calibration=str(DATA / "digits_calib.npz"),
                    config=config)
    changes = [op for op in module.walk() if isinstance(op, q.PrecisionChangeOp)]
    into = [c for c in changes if c.consumer.data.endswith("/variance")]
    out_of = [c for c in changes if c.producer.data.endswith("/variance")]
    assert len(into) == len(out_of) == 5


# --------------------------------------------------------------------------------------
# layernorm-fuse on whole models
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("square", "divide"), [("pow", "div"), ("mul", "reciprocal")])
def test_fuse_written_out_vit(tmp_path: Path, square: str, divide: str) -> None:
    path = tmp_path / "vit_written_out.onnx"
    onnx.save(write_out_layer_norms(onnx.load(VIT), square, divide), path)
    written_out = quantir.import_onnx(path)
    assert not layer_norms(written_out)
    before = quantir.Session(written_out)  # compiled now: the fusion rewrites the module
    fused = fuse_layer_norms(written_out)
    written_out.verify()

    original = quantir.import_onnx(VIT)
    expected = layer_norms(original)
    assert len(fused) == 5 and layer_norms(written_out) == fused
    for got, want in zip(fused, expected, strict=True):
        assert got.node_name == want.node_name  # the pieces' scope, <name>/ReduceMean...
        assert got.properties["axis"] == want.properties["axis"]
        assert got.properties["epsilon"] == want.properties["epsilon"]
        assert [o.owner.node_name for o in got.operands[1:]] == \
            [o.owner.node_name for o in want.operands[1:]]  # the same gamma and beta
    # Only constants the LayerNorms still read are left: epsilon and the 2 are gone.
    constants = {op.node_name for op in written_out.walk() if isinstance(op, nn.ConstantOp)}
    assert not any(c.endswith(("/epsilon", "/two")) for c in constants)
    feeds = digits_feeds()
    after = quantir.Session(written_out)
    assert max_relative_error(quantir.Session(original), after, feeds) <= TOLERANCE
    assert max_relative_error(before, after, feeds) <= TOLERANCE


def test_fuse_leaves_models_without_written_out_layer_norms_alone() -> None:
    module = quantir.import_onnx(VIT)
    original = text(module)
    assert fuse_layer_norms(module) == []
    assert text(module) == original


@pytest.mark.pretrained
def test_minilm_decompose_keeps_float_function_and_round_trips() -> None:
    spec = PRETRAINED["minilm_l3"]
    path = pretrained_path("minilm_l3")
    original = quantir.import_onnx(path, spec.input_shapes)
    assert len(layer_norms(original)) == 7
    reference = quantir.Session(original)
    decomposed = run_passes(quantir.import_onnx(path, spec.input_shapes),
                            LayerNormDecomposePass())
    assert not layer_norms(decomposed)
    error = max_relative_error(reference, quantir.Session(decomposed), minilm_feeds(reference))
    assert error <= TOLERANCE
    assert len(fuse_layer_norms(decomposed)) == 7
    decomposed.verify()
    assert text(decomposed) == text(original)


# --------------------------------------------------------------------------------------
# layernorm-fuse on one written-out LayerNorm, and its near misses
# --------------------------------------------------------------------------------------

# [8, 8, 8]: a keepdims-0 mean [8, 8] still broadcasts against x (wrongly).
X_SHAPE = (8, 8, 8)


@dataclass(frozen=True)
class Chain:
    """A written-out LayerNorm over x [8, 8, 8]; the defaults are an exact match."""

    square: str = "pow"  # pow | mul
    divide: str = "div"  # div | reciprocal
    swap: bool = False  # commutative ops with their operands the other way round
    axes: tuple[int, ...] = (2,)
    variance_axes: tuple[int, ...] | None = None  # None: the same as axes
    keepdims: int = 1
    epsilon: tuple[float, ...] = (1e-5,)
    epsilon_shape: tuple[int, ...] = (1,)
    exponent: float = 2.0
    gamma: str = "constant"  # constant | argument | none
    gamma_shape: tuple[int, ...] = (8,)
    bias: str = "constant"  # constant | argument | none
    sub_swapped: bool = False
    div_swapped: bool = False
    also_returned: str | None = None  # an intermediate the function returns as well


def gamma_values(chain: Chain) -> np.ndarray:
    return np.linspace(0.5, 2.0, int(np.prod(chain.gamma_shape))).reshape(chain.gamma_shape)


def build_chain(chain: Chain) -> ModuleOp:
    """`@main(x[, gamma][, beta])` computing the chain (ops named `ln/<step>`)."""
    x_type = TensorType(f32, X_SHAPE)
    arg_types = [x_type]
    if chain.gamma == "argument":
        arg_types.append(TensorType(f32, chain.gamma_shape))
    if chain.bias == "argument":
        arg_types.append(TensorType(f32, (8,)))
    block = Block(arg_types=arg_types)
    args = list(block.args)
    x = args.pop(0)
    values: dict[str, SSAValue] = {}

    def emit(cls: type[nn.NNOperation], operands: list[SSAValue], step: str,
             properties: Mapping[str, object] | None = None) -> SSAValue:
        op = cls.build_from(operands, properties or {}, f"ln/{step}")
        block.add_op(op)
        op.results[0].name_hint = step
        values[step] = op.results[0]
        return op.results[0]

    def constant(array: np.ndarray, step: str) -> SSAValue:
        # dense_of makes a rank-0 array shape [1]; splat_of keeps the rank.
        value = (splat_of(float(array), (), np.float32) if array.ndim == 0
                 else dense_of(array.astype(np.float32)))
        return emit(nn.ConstantOp, [], step, {"value": value})

    def commutative(cls: type[nn.NNOperation], a: SSAValue, b: SSAValue, step: str) -> SSAValue:
        return emit(cls, [b, a] if chain.swap else [a, b], step)

    reduce = {"axes": list(chain.axes), "keepdims": chain.keepdims}
    mean = emit(nn.ReduceMeanOp, [x], "mean", reduce)
    centered = emit(nn.SubOp, [mean, x] if chain.sub_swapped else [x, mean], "center")
    if chain.square == "pow":
        two = constant(np.full((1,), chain.exponent), "two")
        square = emit(nn.PowOp, [centered, two], "square")
    else:
        square = emit(nn.MulOp, [centered, centered], "square")
    variance_axes = chain.variance_axes or chain.axes
    variance = emit(nn.ReduceMeanOp, [square], "variance",
                    {"axes": list(variance_axes), "keepdims": chain.keepdims})
    epsilon = constant(np.resize(np.array(chain.epsilon), chain.epsilon_shape), "epsilon")
    shifted = commutative(nn.AddOp, variance, epsilon, "add_epsilon")
    std = emit(nn.SqrtOp, [shifted], "sqrt")
    if chain.divide == "div":
        normed = emit(nn.DivOp, [std, centered] if chain.div_swapped else [centered, std],
                      "normalize")
    else:
        inv = emit(nn.ReciprocalOp, [std], "rsqrt")
        normed = commutative(nn.MulOp, centered, inv, "normalize")
    out = normed
    if chain.gamma != "none":
        gamma = (args.pop(0) if chain.gamma == "argument"
                 else constant(gamma_values(chain), "gamma"))
        out = commutative(nn.MulOp, out, gamma, "scale")
    if chain.bias != "none":
        beta = args.pop(0) if chain.bias == "argument" else constant(
            np.linspace(-1.0, 1.0, 8), "beta")
        out = commutative(nn.AddOp, out, beta, "shift")
    results = [out] + ([values[chain.also_returned]] if chain.also_returned else [])
    block.add_op(func.ReturnOp(*results))
    main = func.FuncOp("main", (arg_types, [r.type for r in results]), Region(block))
    module = ModuleOp([main])
    module.verify()
    return module


def reference_layer_norm(x: np.ndarray, chain: Chain) -> np.ndarray:
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=chain.axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=chain.axes, keepdims=True)
    gamma = gamma_values(chain)
    beta = np.linspace(-1.0, 1.0, 8) if chain.bias == "constant" else 0.0
    return (x64 - mean) / np.sqrt(var + chain.epsilon[0]) * gamma + beta


MATCHING = {
    "pow-div": Chain(),
    "mul-reciprocal": Chain(square="mul", divide="reciprocal"),
    "swapped-operands": Chain(square="mul", divide="reciprocal", swap=True),
    "rank-0-epsilon": Chain(epsilon_shape=()),
    "two-axes": Chain(axes=(1, 2), gamma_shape=(8, 8)),
    "no-bias": Chain(bias="none"),
}


@pytest.mark.parametrize("chain", MATCHING.values(), ids=MATCHING.keys())
def test_fuse_matches_written_out_layer_norm(chain: Chain) -> None:
    module = build_chain(chain)
    x = np.random.default_rng(0).normal(3.0, 2.0, X_SHAPE).astype(np.float32)
    before = quantir.Session(module).run({"arg0": x})["result0"]
    fused = fuse_layer_norms(module)
    module.verify()
    assert len(fused) == 1
    (op,) = fused
    ops = [o for o in module.walk() if isinstance(o, nn.NNOperation)]
    # What is left: the LayerNorm and its gamma (and beta).
    assert {o.name for o in ops} == {"nn.layer_norm", "nn.constant"}
    assert len(ops) == (2 if chain.bias == "none" else 3)
    assert op.node_name == "ln" and op.output.name_hint == ("scale" if chain.bias == "none"
                                                            else "shift")
    assert op.props.int("axis") == chain.axes[0]
    assert op.props.float("epsilon") == pytest.approx(chain.epsilon[0], rel=1e-7)
    assert (op.bias is None) == (chain.bias == "none")
    after = quantir.Session(module).run({"arg0": x})["result0"]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after, reference_layer_norm(x, chain), rtol=1e-5, atol=1e-5)


def test_fuse_stops_at_the_scale_when_the_add_reads_no_constant() -> None:
    """An Add of a non-constant after the scale is not the LayerNorm's bias: the fused
    op has none and the Add stays, reading it."""
    module = build_chain(Chain(bias="argument"))
    (op,) = fuse_layer_norms(module)
    module.verify()
    assert op.bias is None
    (add,) = [o for o in module.walk() if isinstance(o, nn.AddOp)]
    assert add.lhs is op.output and isinstance(add.rhs.owner, Block)


NEAR_MISSES = {
    "epsilon-per-row": Chain(epsilon=(1e-5, 2e-5, 3e-5, 4e-5, 5e-5, 6e-5, 7e-5, 8e-5),
                             epsilon_shape=(8, 1)),
    "epsilon-widens-the-variance": Chain(epsilon_shape=(8,)),
    "epsilon-negative": Chain(epsilon=(-1e-5,)),
    "exponent-3": Chain(exponent=3.0),
    "axes-not-trailing": Chain(axes=(1,)),
    "variance-over-other-axes": Chain(variance_axes=(1, 2)),
    "keepdims-0": Chain(keepdims=0),
    "sub-swapped": Chain(sub_swapped=True),
    "div-swapped": Chain(div_swapped=True),
    "gamma-not-constant": Chain(gamma="argument"),
    "gamma-not-broadcastable": Chain(gamma_shape=(8, 1)),
    "no-gamma": Chain(gamma="none"),
    **{f"{step}-has-another-reader": Chain(divide="reciprocal", also_returned=step)
       for step in ("mean", "center", "square", "variance", "add_epsilon", "sqrt", "rsqrt",
                    "normalize")},
    "pow-div-normalize-has-another-reader": Chain(also_returned="normalize"),
}


@pytest.mark.parametrize("chain", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_fuse_leaves_near_misses_alone(chain: Chain) -> None:
    module = build_chain(chain)
    original = text(module)
    assert fuse_layer_norms(module) == []
    assert text(module) == original
    # The same chain without its defect does fuse: each case misses by one thing only.
    exact = replace(chain, epsilon=(1e-5,), epsilon_shape=(1,), exponent=2.0, axes=(2,),
                    variance_axes=None, keepdims=1, sub_swapped=False, div_swapped=False,
                    gamma="constant", gamma_shape=(8,), also_returned=None)
    assert len(fuse_layer_norms(build_chain(exact))) == 1
