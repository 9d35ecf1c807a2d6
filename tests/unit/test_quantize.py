"""`quantir quantize` and the calibrate / quantize passes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import quantir
from quantir.dialects import q
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import QuantConfig
from tests.conftest import DATA
from tests.unit.test_cli import assert_one_line_error, run

CNN = DATA / "digits_cnn.onnx"
VIT = DATA / "tiny_vit.onnx"
CALIB = DATA / "digits_calib.npz"


def top1(module, inputs: np.ndarray, labels: np.ndarray) -> float:
    session = quantir.Session(module)
    logits = np.concatenate([session.run({"input": inputs[i:i + 1]})["logits"]
                             for i in range(len(inputs))])
    return float((logits.argmax(axis=1) == labels).mean())


@pytest.mark.parametrize("model", [CNN, VIT])
def test_a8_w8_and_a16_w16_accuracy(model: Path) -> None:
    test = np.load(DATA / "digits_test.npz")
    inputs, labels = test["input"][:200], test["label"][:200]
    fp32 = top1(quantir.import_onnx(model), inputs, labels)
    a8 = top1(quantize_model(model, CALIB, QuantConfig.build(precision="a8_w8")).module,
              inputs, labels)
    a16 = top1(quantize_model(model, CALIB, QuantConfig.build(precision="a16_w16")).module,
               inputs, labels)
    assert a8 >= fp32 - 0.005
    assert abs(a16 - fp32) <= 0.001


def test_quantize_writes_module_and_encodings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "conv+relu" in result.stdout and "a8_w8" in result.stdout
    module = quantir.load_module(out / "model.q.mlir")
    assert any(isinstance(op, q.ConstantOp) for op in module.walk())
    encodings = json.loads((out / "encodings.json").read_text())
    # After fuse-activation the layer output is the conv's tensor (see the closing note).
    assert "/features/features.0/Conv_output_0" in encodings["activation_encodings"]
    assert len(encodings["param_encodings"]["features.0.weight"]) == 16  # per channel
    # The annotated module runs with quantir run; built for batch 1, it takes the
    # sample file's batch of 4 one at a time.
    ran = run("quantir", "run", out / "model.q.mlir", "--input", DATA / "digits_sample.npy",
              "-o", tmp_path / "ran")
    assert ran.returncode == 0, ran.stderr
    assert list(np.load(tmp_path / "ran" / "logits.npy").argmax(axis=1)) == [2, 0, 4, 9]
    np.save(tmp_path / "odd.npy", np.load(DATA / "digits_sample.npy")[:, :, :7])
    ran = run("quantir", "run", out / "model.q.mlir", "--input", tmp_path / "odd.npy",
              "-o", tmp_path / "odd")
    assert ran.returncode == 1 and "has shape [4, 1, 7, 8]" in ran.stderr


def test_encodings_file_feeds_back_as_overrides(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert run("quantir", "quantize", CNN, "--calib", CALIB, "-o", first,
               "--calib-method", "percentile").returncode == 0
    again = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", second,
                "--overrides", first / "encodings.json")
    assert again.returncode == 0, again.stderr
    a = json.loads((first / "encodings.json").read_text())
    b = json.loads((second / "encodings.json").read_text())
    assert a == b


def test_mixed_precision_inserts_named_precision_change(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", out, "--script",
                 DATA / "configs" / "digits_mixed.alls")
    assert result.returncode == 0, result.stderr
    module = quantir.load_module(out / "model.q.mlir")
    changes = [op for op in module.walk() if isinstance(op, q.PrecisionChangeOp)]
    assert changes
    first = changes[0]
    assert first.properties["producer"].data == "/features/features.0/Conv"
    assert first.properties["consumer"].data == "/features/features.3/Conv"
    assert "digits_mixed.alls:9" in first.properties["reason"].data


def test_float_fallback_layer_stays_float(tmp_path: Path) -> None:
    config = QuantConfig.build(layers={"/classifier/*": "float"})
    module = quantize_model(CNN, CALIB, config).module
    gemm = next(op for op in module.walk() if op.name == "nn.gemm")
    assert all(operand.owner.name != "q.dequantize" or operand is gemm.operands[0]
               for operand in gemm.operands)
    assert not any(isinstance(use.operation, q.QuantizeOp) for use in gemm.results[0].uses)


# -- bad input: one line, non-zero exit, nothing written ----------------------------------


def quantize_fails(tmp_path: Path, *args: str | Path, fragments: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    result = run("quantir", "quantize", CNN, "-o", out, *args)
    assert_one_line_error(result, *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_too_few_calibration_samples(tmp_path: Path) -> None:
    quantize_fails(tmp_path, "--calib", CALIB, "--calibset-size", "100",
                   fragments=("64", "100"))


def test_nan_in_calibration_data(tmp_path: Path) -> None:
    data = np.load(CALIB)["input"].copy()
    data[17, 0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", data)
    quantize_fails(tmp_path, "--calib", tmp_path / "nan.npy", fragments=("NaN", "17"))


def test_sample_shape_mismatch(tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((64, 1, 7, 7), np.float32))
    quantize_fails(tmp_path, "--calib", tmp_path / "bad.npy", fragments=("shape",))


def test_unknown_precision_mode(tmp_path: Path) -> None:
    quantize_fails(tmp_path, "--calib", CALIB, "--precision", "a9_w8", fragments=("a9_w8",))


def test_malformed_script_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.alls"
    script.write_text("# ok\nquantization_param({conv*}, precision_mode=a16_w16\n")
    quantize_fails(tmp_path, "--calib", CALIB, "--script", script, fragments=("bad.alls:2",))


def test_malformed_overrides(tmp_path: Path) -> None:
    overrides = tmp_path / "o.json"
    overrides.write_text('{"activation_encodings": {"x": [{"bitwidth": 7}]}, '
                         '"param_encodings": {}}')
    quantize_fails(tmp_path, "--calib", CALIB, "--overrides", overrides, fragments=("bitwidth",))


def test_glob_matching_nothing_warns(tmp_path: Path) -> None:
    script = tmp_path / "s.alls"
    script.write_text("quantization_param({nothing_like_this*}, precision_mode=a16_w16)\n")
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", tmp_path / "out",
                 "--script", script)
    assert result.returncode == 0, result.stderr
    assert "nothing_like_this*" in result.stderr and "s.alls:1" in result.stderr


def test_never_activated_tensor_warns(tmp_path: Path) -> None:
    np.save(tmp_path / "zeros.npy", np.zeros((8, 1, 8, 8), np.float32))
    result = run("quantir", "quantize", CNN, "--calib", tmp_path / "zeros.npy", "-o",
                 tmp_path / "out", "--calibset-size", "8")
    assert result.returncode == 0, result.stderr
    assert "never activates" in result.stderr and "model input 'input'" in result.stderr
