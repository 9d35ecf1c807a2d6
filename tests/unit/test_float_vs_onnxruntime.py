"""Float outputs of quantir.Session match onnxruntime on every test model.

Metric: max |quantir - onnxruntime| / max |onnxruntime| <= 1e-4 on each output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import quantir
from tests.conftest import DATA, PRETRAINED, light_models, pretrained_path, random_feeds

TOLERANCE = 1e-4


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale


def onnxruntime_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def assert_matches(path: Path, feeds: dict[str, np.ndarray],
                   input_shapes: dict[str, list[int]] | None = None) -> None:
    session = quantir.Session(path, input_shapes)
    ours = session.run(feeds)
    reference = onnxruntime_outputs(path, feeds)
    assert list(ours) == list(reference)
    for name, expected in reference.items():
        assert ours[name].shape == expected.shape, name
        assert ours[name].dtype == expected.dtype, name
        if expected.dtype.kind == "f":
            error = relative_error(ours[name], expected)
            assert error <= TOLERANCE, f"{name}: relative error {error:.2e}"
        else:
            np.testing.assert_array_equal(ours[name], expected)


@pytest.mark.parametrize("model", ["digits_cnn", "tiny_vit"])
def test_digits_models(model: str) -> None:
    inputs = np.load(DATA / "digits_test.npz")["input"][:64]
    assert_matches(DATA / f"{model}.onnx", {"input": inputs}, {"input": list(inputs.shape)})


@pytest.mark.parametrize("model", ["digits_cnn", "tiny_vit"])
def test_digits_models_default_batch_one(model: str) -> None:
    inputs = np.load(DATA / "digits_sample.npy")[:1]
    assert_matches(DATA / f"{model}.onnx", {"input": inputs})


@pytest.mark.pretrained
@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_pretrained(name: str) -> None:
    model = PRETRAINED[name]
    path = pretrained_path(name)
    session = quantir.Session(path, model.input_shapes)
    dtypes = dict(zip(session.input_names, session.input_dtypes, strict=True))
    feeds = random_feeds(model.input_shapes, dtypes)
    assert_matches(path, feeds, model.input_shapes)


@pytest.mark.parametrize("path", light_models(), ids=lambda p: p.stem)
def test_light_models(path: Path, tmp_path: Path) -> None:
    """The onnx package's light models: placeholder weights, real graphs (opset 9).

    Placeholder weights blow some logits up to ~5e9, where one float32 ulp is 512 and
    summation order alone changes a softmax completely: the final softmax's input is
    compared too (as an extra output), and its output only while the logits are small
    enough for float32 to decide it."""
    import onnx

    module = quantir.import_onnx(path)
    module.verify()
    session = quantir.Session(module)
    (name,) = session.input_names
    feeds = random_feeds({name: list(session.input_shapes[0])}, {name: session.input_dtypes[0]})
    model = onnx.load(str(path))
    last = model.graph.node[-1]
    if last.op_type != "Softmax":
        assert_matches(path, feeds)
        return
    model.graph.output.append(onnx.helper.make_tensor_value_info(
        last.input[0], onnx.TensorProto.FLOAT, None))
    exposed = tmp_path / path.name
    onnx.save(model, str(exposed))
    logits = onnxruntime_outputs(exposed, feeds)[last.input[0]]
    if float(np.abs(logits).max()) < 1e3:
        assert_matches(exposed, feeds)
        return
    ours = quantir.Session(exposed).run(feeds)[last.input[0]]
    error = relative_error(ours, logits)
    assert error <= TOLERANCE, f"{last.input[0]}: relative error {error:.2e}"


def test_external_data_weights(tmp_path: Path) -> None:
    """Weights stored in a separate data file next to the model."""
    import onnx

    model = onnx.load(str(DATA / "digits_cnn.onnx"))
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.weights", size_threshold=0)
    assert (tmp_path / "external.weights").stat().st_size > 10_000
    inputs = np.load(DATA / "digits_sample.npy")
    assert_matches(path, {"input": inputs}, {"input": list(inputs.shape)})


def test_external_data_missing(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(DATA / "digits_cnn.onnx"))
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(quantir.QuantirError, match="external"):
        quantir.import_onnx(path)


def test_weights_as_constant_nodes(tmp_path: Path) -> None:
    """Weights given as Constant nodes instead of initializers."""
    import onnx
    from onnx import helper

    model = onnx.load(str(DATA / "tiny_vit.onnx"))
    constants = [helper.make_node("Constant", [], [init.name], value=init, name=f"const_{i}")
                 for i, init in enumerate(model.graph.initializer)]
    del model.graph.initializer[:]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(constants + nodes)
    path = tmp_path / "constants.onnx"
    onnx.save(model, str(path))
    inputs = np.load(DATA / "digits_sample.npy")
    assert_matches(path, {"input": inputs}, {"input": list(inputs.shape)})


def test_observer_sees_every_value() -> None:
    session = quantir.Session(DATA / "digits_cnn.onnx")
    x = np.load(DATA / "digits_sample.npy")[:1]
    seen: list[tuple[str, tuple[int, ...]]] = []
    outputs = session.run({"input": x}, observer=lambda v, a: seen.append((v.name_hint, a.shape)))
    computed = [r for op in session.program.steps for r in op.op.results]
    assert len(seen) == 1 + len(computed)  # the argument, then every op result
    assert seen[0] == ("input", (1, 1, 8, 8))
    assert [name for name, _ in seen[1:]] == [r.name_hint for r in computed]
    assert seen[-1][1] == outputs["logits"].shape


@pytest.mark.parametrize("model", ["digits_cnn", "tiny_vit"])
def test_fused_plan_matches_the_exact_plan(model: str) -> None:
    """Plain runs fold batch norms and activations; observed runs execute every op."""
    session = quantir.Session(DATA / f"{model}.onnx", {"input": [16, 1, 8, 8]})
    assert len(session.fast_program.steps) < len(session.program.steps) or model == "tiny_vit"
    x = np.load(DATA / "digits_test.npz")["input"][:16]
    fused = session.run({"input": x})["logits"]
    exact = session.run({"input": x}, observer=lambda value, array: None)["logits"]
    assert relative_error(fused, exact) <= 1e-5
