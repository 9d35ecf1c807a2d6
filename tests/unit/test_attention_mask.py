"""Attention masks: -3.4e38 added before a softmax must neither wreck the scores'
encoding (calibration) nor the integer add (lowering)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantir
from quantir.dialects import nn
from quantir.lowering.lower_to_int import lower_to_int
from quantir.passes import compile
from quantir.passes.presets import quantize_model
from quantir.passes.qconfig import QuantConfig, QuantirWarning
from quantir.passes.ranges import get_range
from tests.conftest import PRETRAINED, pretrained_path

LENGTH = 16


def masked_softmax_model(path: Path) -> None:
    """softmax(scores + (1 - mask) * -3.4e38), as BERT exports write it."""
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, LENGTH, LENGTH])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, [1, LENGTH])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 2, LENGTH, LENGTH])
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(-3.4028234663852886e38, np.float32), "big")]
    nodes = [helper.make_node("Unsqueeze", ["mask", "axes"], ["m4"], name="unsqueeze"),
             helper.make_node("Cast", ["m4"], ["mf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Sub", ["one", "mf"], ["inv"], name="invert"),
             helper.make_node("Mul", ["inv", "big"], ["bias"], name="scale"),
             helper.make_node("Add", ["scores", "bias"], ["masked"], name="add_mask"),
             helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=3)]
    graph = helper.make_graph(nodes, "g", [scores, mask], [out], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def samples(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        length = int(rng.integers(3, LENGTH))
        mask = np.zeros((1, LENGTH), np.int64)
        mask[0, :length] = 1
        scores = rng.normal(0, 3, (1, 2, LENGTH, LENGTH)).astype(np.float32)
        found.append({"scores": scores, "mask": mask})
    return found


def test_softmax_input_range_ignores_the_mask(tmp_path: Path) -> None:
    path = tmp_path / "masked.onnx"
    masked_softmax_model(path)
    module = quantir.import_onnx(path)
    compile(module, "calibrate", calibration=samples(8, 0))
    (add,) = [op for op in module.walk() if isinstance(op, nn.AddOp)]
    low, high = get_range(add.results[0])
    # Each row's maximum minus 20 at the lowest, not -3.4e38.
    assert -40 < low < 0 < high < 20


@pytest.mark.parametrize("precision", ["a8_w8", "a16_w16"])
def test_masked_softmax_runs_in_integers(tmp_path: Path, precision: str) -> None:
    path = tmp_path / "masked.onnx"
    masked_softmax_model(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantirWarning)
        result = quantize_model(path, samples(8, 0), QuantConfig.build(
            precision=precision, calibset_size=8))
        program = lower_to_int(result.module)
    # Only the Cast of the integer mask has no integer form (its input is not quantized).
    left = [str(w.message) for w in caught if "stays in float" in str(w.message)]
    assert left == ["lower-to-int: nn.cast 'cast' stays in float: no integer form"]
    reference = quantir.Session(path)
    simulation, integer = quantir.Session(result.module), quantir.Session(program)
    step = 1 / 255 if precision == "a8_w8" else 1 / 65535
    tolerance = 0.05 if precision == "a8_w8" else 0.001  # the scores' quantization error
    for feeds in samples(4, 1):
        expected = reference.run(feeds)["probs"]
        found = integer.run(feeds)["probs"]
        masked = np.broadcast_to(feeds["mask"][:, None, None, :] == 0, expected.shape)
        assert np.all(found[masked] <= step)  # masked keys get (next to) nothing
        assert np.abs(found - expected).max() <= tolerance
        assert np.abs(found - simulation.run(feeds)["probs"]).max() <= 1.01 * step


@pytest.mark.pretrained
def test_minilm_with_padding_keeps_its_accuracy_in_integers() -> None:
    model = PRETRAINED["minilm_l3"]
    path = pretrained_path("minilm_l3")

    def feeds(seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        length = int(rng.integers(10, 100))
        ids = np.zeros((1, 128), np.int64)
        ids[0, :length] = rng.integers(1000, 20000, length)
        mask = np.zeros((1, 128), np.int64)
        mask[0, :length] = 1
        return {"input_ids": ids, "attention_mask": mask}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        result = quantize_model(path, [feeds(i) for i in range(8)], QuantConfig.build(
            precision="a16_w16", calibset_size=8), model.input_shapes)
        program = lower_to_int(result.module)
    reference, integer = quantir.Session(path, model.input_shapes), quantir.Session(program)
    name = reference.output_names[-1]
    expected, found = reference.run(feeds(100))[name], integer.run(feeds(100))[name]
    sqnr = 10 * np.log10(np.sum(expected**2) / np.sum((expected - found) ** 2))
    print(f"MiniLM-L3 a16_w16 integer program with padding: SQNR {sqnr:.1f} dB")
    assert sqnr > 40
