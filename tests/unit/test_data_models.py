"""The bundled test models in tests/data/ (made by scripts/make_test_models.py).

Checks they load, use only ops quantir is expected to handle, stay small, and still reach
their fp32 accuracy on the bundled digits test split. No torch here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

ALLOWED_OPS = frozenset(
    """
    Conv ConvTranspose BatchNormalization Relu Clip LeakyRelu PRelu Sigmoid HardSigmoid
    HardSwish Tanh Erf Gelu Add Sub Mul Div Pow Sqrt Reciprocal Exp MatMul Gemm Softmax
    LayerNormalization ReduceMean ReduceSum ReduceMax GlobalAveragePool AveragePool MaxPool
    Concat Split Slice Reshape Flatten Transpose Squeeze Unsqueeze Resize Pad Gather Constant
    Identity Cast Shape Expand Where Equal
    """.split()
)

MIN_ACCURACY = {"digits_cnn": 0.95, "tiny_vit": 0.90}
MAX_MODEL_BYTES = 1_000_000
MODELS = sorted(MIN_ACCURACY)


def model_path(name: str) -> Path:
    return DATA_DIR / f"{name}.onnx"


def load_test_split() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA_DIR / "digits_test.npz") as data:
        return data["input"], data["label"]


def shape_of(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", MODELS)
def test_model_is_valid_and_self_contained(name: str) -> None:
    model = onnx.load(str(model_path(name)))
    onnx.checker.check_model(model, full_check=True)
    default_opsets = [opset.version for opset in model.opset_import if opset.domain == ""]
    assert default_opsets == [17]
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


@pytest.mark.parametrize("name", MODELS)
def test_model_io_has_dynamic_batch(name: str) -> None:
    graph = onnx.load(str(model_path(name))).graph
    assert [value.name for value in graph.input] == ["input"]
    assert [value.name for value in graph.output] == ["logits"]
    input_shape = shape_of(graph.input[0])
    output_shape = shape_of(graph.output[0])
    assert isinstance(input_shape[0], str) and input_shape[1:] == [1, 8, 8]
    assert output_shape == [input_shape[0], 10]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("name", MODELS)
def test_model_uses_only_supported_ops(name: str) -> None:
    graph = onnx.load(str(model_path(name))).graph
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)
    op_types = {node.op_type for node in graph.node}
    assert op_types <= ALLOWED_OPS, sorted(op_types - ALLOWED_OPS)


def test_cnn_keeps_batchnorm_and_residual() -> None:
    op_types = [node.op_type for node in onnx.load(str(model_path("digits_cnn"))).graph.node]
    assert op_types.count("BatchNormalization") == 7
    assert op_types.count("Clip") == 2
    assert op_types.count("Add") == 1


def test_vit_has_explicit_attention() -> None:
    op_types = [node.op_type for node in onnx.load(str(model_path("tiny_vit"))).graph.node]
    assert op_types.count("Softmax") == 2
    assert op_types.count("LayerNormalization") == 5
    assert op_types.count("Erf") == 2
    assert "ReduceMean" in op_types


@pytest.mark.parametrize("name", MODELS)
def test_model_file_is_small(name: str) -> None:
    assert model_path(name).stat().st_size < MAX_MODEL_BYTES


@pytest.mark.parametrize("name", MODELS)
def test_model_accuracy(name: str) -> None:
    inputs, labels = load_test_split()
    session = ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs})
    assert logits.shape == (len(labels), 10)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= MIN_ACCURACY[name]


def test_data_files() -> None:
    inputs, labels = load_test_split()
    assert inputs.dtype == np.float32 and inputs.shape == (450, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (450,)
    assert set(labels.tolist()) == set(range(10))
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0

    with np.load(DATA_DIR / "digits_calib.npz") as calib:
        assert calib["input"].dtype == np.float32 and calib["input"].shape == (64, 1, 8, 8)

    sample = np.load(DATA_DIR / "digits_sample.npy")
    assert sample.dtype == np.float32 and sample.shape == (4, 1, 8, 8)
    np.testing.assert_array_equal(sample, inputs[:4])
