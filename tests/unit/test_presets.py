"""The preset pipeline: what `quantir quantize` runs, replayable in `quantir-opt`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import quantir
from quantir.ir import load_module
from quantir.lowering.lower_to_int import lower_to_int
from quantir.passes.presets import pass_spec, preset_pipeline, quantize_model
from quantir.passes.qconfig import QuantConfig, QuantirWarning
from tests.conftest import DATA
from tests.unit.test_cli import run

CNN = DATA / "digits_cnn.onnx"
CALIB = DATA / "digits_calib.npz"
SCRIPT = """
pre_quantization_optimization(equalization, policy=enabled)
post_quantization_optimization(bias_correction, policy=enabled)
quantization_param({/classifier/*}, precision_mode=a16_w16)
"""


def test_pass_spec_quotes_paths_and_skips_unset_options() -> None:
    assert pass_spec("lower-to-int") == "lower-to-int"
    assert pass_spec("calibrate", data="a/b c.npz", method="mse", percentile=None,
                     calibset_size=64) == 'calibrate{data="a/b c.npz" method=mse calibset-size=64}'


def test_order_follows_the_script(tmp_path: Path) -> None:
    script = tmp_path / "s.alls"
    script.write_text(SCRIPT)
    config = QuantConfig.build(script=str(script))
    steps = [step.split("{")[0] for step in
             preset_pipeline(config, str(CALIB), script=str(script)).split(",")]
    assert steps == ["fuse-bn", "cle", "fuse-activation", "calibrate", "quantize",
                     "bias-correction", "lower-to-int"]
    plain = preset_pipeline(QuantConfig.build(), str(CALIB))
    assert "cle" not in plain and "bias-correction" not in plain


def test_quantir_opt_replays_what_quantize_does(tmp_path: Path) -> None:
    """The pipeline in quantir-opt (one import, batch 1) gives the same integer program
    as quantize_model + lower_to_int, and prints the IR after every pass."""
    script = tmp_path / "s.alls"
    script.write_text(SCRIPT + "model_optimization_config(calibration, batch_size=1)\n")
    config = QuantConfig.build(script=str(script))
    pipeline = preset_pipeline(config, str(CALIB), script=str(script))
    out = tmp_path / "opt.qir.mlir"
    result = run("quantir-opt", CNN, "-p", pipeline, "--print-ir-after-all",
                 "--print-large-constants", "-o", out)
    assert result.returncode == 0, result.stderr
    dumps = [line for line in result.stderr.splitlines() if "IR Dump After" in line]
    assert [line.split("After ")[1].split(" ")[0] for line in dumps] == [
        step.split("{")[0] for step in pipeline.split(",")]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        program = lower_to_int(quantize_model(CNN, CALIB, config).module)
    replayed = quantir.Session(load_module(out))
    direct = quantir.Session(program)
    inputs = np.load(DATA / "digits_test.npz")["input"][:20]
    for i in range(len(inputs)):
        feeds = {"input": inputs[i:i + 1]}
        assert np.array_equal(replayed.run(feeds)["logits"], direct.run(feeds)["logits"])


def test_cli_prints_the_pipeline(tmp_path: Path) -> None:
    result = run("quantir", "quantize", CNN, "--calib", CALIB, "-o", tmp_path / "out",
                 "--print-pipeline", "--rounding", "tflite")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == preset_pipeline(QuantConfig.build(), str(CALIB),
                                                    rounding="tflite")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bias_correction", [False, True])
def test_any_module_batch_calibrates_at_the_configured_batch(bias_correction: bool) -> None:
    """The module's batch (here 5) and the calibration batch (1 or 8, neither divides
    the 64 samples nor equals 5) are independent; each sample quantizes (and its
    biases are corrected) as at batch 1."""
    x = np.load(DATA / "digits_test.npz")["input"][:5]
    config = QuantConfig.build(bias_correction=bias_correction)
    single = quantir.Session(quantize_model(CNN, CALIB, config).module)
    expected = np.concatenate([single.run({"input": x[i:i + 1]})["logits"] for i in range(5)])
    for batch_size in (1, 8):
        config = QuantConfig.build(batch_size=batch_size, bias_correction=bias_correction)
        module = quantize_model(CNN, CALIB, config, {"input": [5, 1, 8, 8]}).module
        logits = quantir.Session(module).run({"input": x})["logits"]
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)
