"""bias-correction reduces the mean output error on held-out data; its error cases."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp

import quantir
from quantir.dialects import nn, q
from quantir.errors import FeedError, PipelineError, QuantirError
from quantir.ir import array_of
from quantir.passes.bias_correction import clipped_normal_mean, correct_biases
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import QuantConfig, QuantirWarning
from tests.conftest import DATA

CNN = DATA / "digits_cnn.onnx"
CALIB = DATA / "digits_calib.npz"
TEST = np.load(DATA / "digits_test.npz")["input"]


def float_and_quantized(model: Path, precision: str, rewrites: str = "fuse-bn,fuse-activation") \
        -> tuple[ModuleOp, ModuleOp]:
    """The calibrated float module and its quantized copy (a8_w8 / a8_w4 ...)."""
    config = QuantConfig.build(precision=precision)
    module = quantir.import_onnx(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantir.compile(module, f"{rewrites},calibrate", calibration=CALIB, config=config)
        reference = module.clone()
        quantir.compile(module, "quantize", config=config)
    return reference, module


def corrected(module: ModuleOp, reference: ModuleOp, mode: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return correct_biases(module, reference, mode, CALIB)


def output_error(module: ModuleOp, model: Path = CNN) -> tuple[float, float]:
    """(mean |out - fp32|, mean signed error) of the logits on the 450 held-out digits."""
    reference = quantir.Session(model, {"input": list(TEST.shape)}).run({"input": TEST})["logits"]
    session = quantir.Session(module)
    out = np.concatenate([session.run({"input": TEST[i:i + 1]})["logits"]
                          for i in range(len(TEST))])
    error = out.astype(np.float64) - reference
    return float(np.abs(error).mean()), float(error.mean())


def biases(module: ModuleOp) -> dict[str, np.ndarray]:
    return {op.node_name: array_of(op.value) for op in module.walk()
            if isinstance(op, q.ConstantOp) and op.node_name.endswith(".bias")}


def test_empirical_reduces_the_mean_error_of_4_bit_weights() -> None:
    reference, module = float_and_quantized(CNN, "a8_w4")
    before = output_error(module)
    lines = corrected(module, reference, "empirical")
    after = output_error(module)
    # Measured: mean |error| 0.630 -> 0.495, mean signed error -0.152 -> -0.012.
    assert after[0] < 0.9 * before[0]
    assert abs(after[1]) < 0.25 * abs(before[1])
    assert len([line for line in lines if line.startswith("corrected")]) == 8  # 7 convs + gemm


def test_empirical_a8_w8_and_the_int32_bias_keeps_its_type() -> None:
    reference, module = float_and_quantized(CNN, "a8_w8")
    types = {op.node_name: op.output.type for op in module.walk() if isinstance(op, q.ConstantOp)}
    before = output_error(module)
    corrected(module, reference, "empirical")
    assert output_error(module)[0] < before[0]  # measured 0.0699 -> 0.0597
    assert {op.node_name: op.output.type for op in module.walk()
            if isinstance(op, q.ConstantOp)} == types
    module.verify()


def test_empirical_corrects_the_float_bias_add_of_a_matmul() -> None:
    reference, module = float_and_quantized(DATA / "tiny_vit.onnx", "a8_w4")
    bias_name = "blocks.0.attention.q.bias"
    old = next(array_of(op.value) for op in module.walk()
               if isinstance(op, nn.ConstantOp) and op.node_name == bias_name)
    before = output_error(module, DATA / "tiny_vit.onnx")
    corrected(module, reference, "empirical")
    new = next(array_of(op.value) for op in module.walk()
               if isinstance(op, nn.ConstantOp) and op.node_name == bias_name)
    assert new.dtype == np.float32 and not np.array_equal(new, old)
    assert output_error(module, DATA / "tiny_vit.onnx")[0] < before[0]  # 0.331 -> 0.281


def test_analytic_uses_the_batch_norm_statistics() -> None:
    reference, module = float_and_quantized(CNN, "a8_w4")
    old = biases(module)
    before = output_error(module)
    lines = corrected(module, reference, "analytic")
    new = biases(module)
    changed = {name for name in old if not np.array_equal(old[name], new[name])}
    # The stem reads the model input and the classifier a pooled residual: no statistics.
    assert "features.0.bias" not in changed and "classifier.bias" not in changed
    assert len(changed) == 6
    assert any("'/classifier/Gemm' alone: no batch-norm statistics" in line for line in lines)
    # Measured: mean signed error -0.152 -> -0.014 (mean |error| 0.630 -> 0.623).
    assert abs(output_error(module)[1]) < 0.25 * abs(before[1])


def test_clipped_normal_mean() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(0.5, 2.0, 2_000_000)
    for low, high in [(0.0, math.inf), (0.0, 6.0), (-math.inf, 1.0), (-math.inf, math.inf)]:
        expected = float(np.clip(samples, low, high).mean())
        got = float(clipped_normal_mean(np.array([0.5]), np.array([2.0]), low, high)[0])
        assert got == pytest.approx(expected, abs=5e-3)
    # ReLU of N(0, 1): 1 / sqrt(2 pi); no spread: the clipped mean itself.
    assert clipped_normal_mean(np.zeros(1), np.ones(1), 0.0, math.inf)[0] == \
        pytest.approx(1 / math.sqrt(2 * math.pi))
    assert clipped_normal_mean(np.array([7.0]), np.zeros(1), 0.0, 6.0)[0] == 6.0


def test_pipeline_with_an_onnx_reference() -> None:
    _, module = float_and_quantized(CNN, "a8_w4")
    before = output_error(module)
    with pytest.warns(QuantirWarning, match="bias-correction: corrected"):
        quantir.compile(module, f'bias-correction{{reference="{CNN}"}}', calibration=CALIB)
    assert output_error(module)[0] < before[0]


def test_quantize_model_runs_it_when_the_script_enables_it() -> None:
    config = QuantConfig.build(precision="a8_w4")
    plain = quantize_model(CNN, CALIB, config).module
    config = QuantConfig.build(precision="a8_w4", bias_correction=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = quantize_model(CNN, CALIB, config)
    messages = [str(w.message) for w in caught]
    assert not any("skipped" in m for m in messages)
    assert any(m.startswith("bias-correction: corrected") for m in messages)
    assert biases(result.module).keys() == biases(plain).keys()
    assert output_error(result.module)[0] < output_error(plain)[0]


# -- errors: one line, the module unchanged ---------------------------------------------


def test_float_module_is_an_error() -> None:
    reference, _ = float_and_quantized(CNN, "a8_w8")
    with pytest.raises(QuantirError, match="not quantized.*run it after quantize"):
        correct_biases(reference.clone(), reference, "analytic")


def test_empirical_without_data_or_reference_is_an_error() -> None:
    reference, module = float_and_quantized(CNN, "a8_w8")
    old = biases(module)
    with pytest.raises(QuantirError, match="no calibration data; give bias-correction"):
        correct_biases(module, reference, "empirical", None)
    with pytest.raises(QuantirError, match="no float reference"):
        quantir.compile(module, "bias-correction", calibration=CALIB)
    with pytest.raises(PipelineError, match="mode=exact is not one of empirical, analytic"):
        quantir.compile(module, "bias-correction{mode=exact}", calibration=CALIB)
    assert all(np.array_equal(old[n], b) for n, b in biases(module).items())


def test_reference_that_does_not_match_is_an_error() -> None:
    # Quantized after cle: the weights differ from the plain model's by channel scales.
    _, module = float_and_quantized(CNN, "a8_w8", "fuse-bn,cle,fuse-activation")
    with pytest.raises(QuantirError, match="does not round to its quantized weight"):
        quantir.compile(module, f'bias-correction{{reference="{CNN}"}}', calibration=CALIB)


class _FailsOnThirdRead:
    """Re-iterable data whose third pass (the second layer's) hits a NaN sample."""

    def __init__(self) -> None:
        self.reads = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.reads += 1
        for i in range(8):
            sample = TEST[i].copy()
            if self.reads == 3 and i == 5:
                sample[0, 0, 0] = np.nan
            yield {"input": sample}


def test_failure_half_way_restores_the_biases() -> None:
    reference, module = float_and_quantized(CNN, "a8_w8")
    old = biases(module)
    with pytest.raises(FeedError, match="NaN"):
        correct_biases(module, reference, "empirical", _FailsOnThirdRead())
    assert all(np.array_equal(old[n], b) for n, b in biases(module).items())
    module.verify()


def test_a_shared_bias_is_copied_before_it_changes() -> None:
    """conv1 and conv2 of the golden module read one bias: conv1 gets its own copy."""
    golden = Path(__file__).parents[1] / "filecheck" / "passes" / "bias_correction.mlir"
    text = golden.read_text().replace(
        "%y = nn.conv %y1d, %w2 {", "%y = nn.conv %y1d, %w2, %b1 {").replace(
        "(tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x8x8xf32>\n  %yq",
        "(tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>, tensor<2xf32>) -> tensor<1x2x8x8xf32>\n  %yq")
    module = quantir.parse_module(text)
    reference = quantir.load_module(golden.parent.parent / "inputs" / "bias_correction_float.mlir")
    corrected(module, reference, "analytic")
    module.verify()
    convs = {op.node_name: op for op in module.walk() if isinstance(op, nn.ConvOp)}
    bias_of = {name: array_of(conv.operands[2].owner.input.owner.value).tolist()
               for name, conv in convs.items() if name != "conv0"}
    assert bias_of == {"conv1": [520, -994], "conv2": [500, -1000]}


def test_one_shot_data_is_an_error_before_any_work() -> None:
    config = QuantConfig.build(precision="a8_w8", bias_correction=True)
    samples = ({"input": sample} for sample in TEST[:8])
    with pytest.raises(QuantirError, match=r"post_quantization_optimization\(bias_correction\): "
                                           "the calibration data is a one-shot iterator"):
        quantize_model(CNN, samples, config)
    assert next(samples)["input"].shape == (1, 8, 8)  # nothing was read
