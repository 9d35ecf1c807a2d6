"""ONNX import across opsets: attribute / input forms, normalisation, errors.

Each case is a small model checked against onnxruntime (float outputs within 1e-5
relative) so that the normalised attributes mean what ONNX means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import quantir
from quantir.errors import ShapeError, UnsupportedOpError
from tests.unit.test_float_vs_onnxruntime import onnxruntime_outputs, relative_error


def model_file(tmp_path: Path, nodes: list, inputs: dict[str, list], outputs: list[str],
               opset: int, initializers: dict[str, np.ndarray] | None = None,
               input_type: int = TensorProto.FLOAT) -> Path:
    graph = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info(n, input_type, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    path = tmp_path / "case.onnx"
    onnx.save(model, str(path))
    return path


def check(path: Path, feeds: dict[str, np.ndarray]) -> None:
    ours = quantir.Session(path).run(feeds)
    reference = onnxruntime_outputs(path, feeds)
    for name, expected in reference.items():
        assert ours[name].shape == expected.shape, name
        assert relative_error(ours[name], expected) <= 1e-5, name


X = np.random.default_rng(0).uniform(-3, 3, (1, 4, 6, 6)).astype(np.float32)
node = helper.make_node
i64 = np.int64

CASES = {
    "clip_opset9_attrs": (9, [node("Clip", ["x"], ["y"], min=-1.0, max=2.0)], {}),
    "clip_opset13_min_only": (13, [node("Clip", ["x", "lo"], ["y"])],
                              {"lo": np.array(0.5, np.float32)}),
    "pad_opset9_reflect": (9, [node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1],
                                    mode="reflect")], {}),
    "pad_opset18_axes": (18, [node("Pad", ["x", "p", "v", "a"], ["y"])],
                         {"p": np.array([1, 0, 2, 1], i64), "v": np.array(0.5, np.float32),
                          "a": np.array([2, 3], i64)}),
    "slice_opset9_attrs": (9, [node("Slice", ["x"], ["y"], starts=[1, -4], ends=[3, 1000],
                                    axes=[1, 3])], {}),
    "slice_negative_step": (13, [node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                            {"s": np.array([-1, 4], i64), "e": np.array([-1000, 0], i64),
                             "a": np.array([3, 2], i64), "st": np.array([-2, -1], i64)}),
    "split_opset11_attr": (11, [node("Split", ["x"], ["y", "z"], axis=1, split=[1, 3])], {}),
    "split_opset18_num_outputs": (18, [node("Split", ["x"], ["y", "z", "w"], axis=2,
                                            num_outputs=3)], {}),
    "squeeze_unsqueeze_opset11": (11, [node("Unsqueeze", ["x"], ["u"], axes=[0, -1]),
                                       node("Squeeze", ["u"], ["y"], axes=[0])], {}),
    "reduce_sum_opset13_axes_input": (13, [node("ReduceSum", ["x", "a"], ["y"], keepdims=0)],
                                      {"a": np.array([-1, 1], i64)}),
    "reduce_mean_opset18_no_axes": (18, [node("ReduceMean", ["x"], ["y"])], {}),
    "softmax_opset11_axis2": (11, [node("Softmax", ["x"], ["y"], axis=2)], {}),
    "resize_opset11_sizes_linear": (11, [node("Resize", ["x", "roi", "sc", "sz"], ["y"],
                                              mode="linear")],
                                    {"roi": np.zeros(0, np.float32),
                                     "sc": np.zeros(0, np.float32),
                                     "sz": np.array([1, 4, 9, 12], i64)}),
    "resize_opset13_scales_nearest": (13, [node("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                                                coordinate_transformation_mode="asymmetric",
                                                nearest_mode="floor")],
                                      {"sc": np.array([1, 1, 2, 2], np.float32)}),
    "maxpool_same_upper_ceil": (13, [node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3],
                                          strides=[2, 2], auto_pad="SAME_UPPER")], {}),
    "averagepool_ceil_pads": (13, [node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                        strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1)], {}),
    "conv_transpose_output_shape": (13, [node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                                              output_shape=[13, 13])],
                                    {"w": np.full((4, 2, 3, 3), 0.1, np.float32)}),
    "sum_three_inputs": (13, [node("Sum", ["x", "x", "x"], ["y"])], {}),
    "gemm_opset9_transposes": (9, [node("Flatten", ["x"], ["f"]),
                                   node("Gemm", ["f", "b", "c"], ["y"], transB=1, alpha=0.5,
                                        beta=2.0)],
                               {"b": np.ones((5, 144), np.float32),
                                "c": np.arange(5, dtype=np.float32)}),
    "pow_int_exponent": (13, [node("Pow", ["x", "e"], ["y"])], {"e": np.array(2, i64)}),
    "expand_and_where": (13, [node("Expand", ["x", "s"], ["big"]),
                              node("Equal", ["big", "big"], ["c"]),
                              node("Where", ["c", "big", "zero"], ["y"])],
                         {"s": np.array([2, 1, 1, 1], i64), "zero": np.array(0, np.float32)}),
    "cast_roundtrip": (13, [node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                            node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)], {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_matches_onnxruntime(tmp_path: Path, case: str) -> None:
    opset, nodes, initializers = CASES[case]
    outputs = [o for o in nodes[-1].output]
    path = model_file(tmp_path, nodes, {"x": list(X.shape)}, outputs, opset, initializers)
    check(path, {"x": X})


def test_shape_from_runtime_value_is_reported(tmp_path: Path) -> None:
    """A Reshape whose target is computed from the input's values cannot be static."""
    nodes = [node("Cast", ["x"], ["target"], to=TensorProto.INT64),
             node("Reshape", ["data", "target"], ["y"], name="reshape_by_value")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ShapeError, match="'reshape_by_value' \\(Reshape\\): its target shape"):
        quantir.import_onnx(path)


def test_unsupported_attribute_value(tmp_path: Path) -> None:
    path = model_file(tmp_path, [node("Resize", ["x", "", "sc"], ["y"], mode="cubic",
                                      name="up")], {"x": [1, 1, 2, 2]}, ["y"], 13,
                      {"sc": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(UnsupportedOpError, match="node 'up' \\(Resize\\): resize mode 'cubic'"):
        quantir.import_onnx(path)


def test_input_shape_must_agree_with_static_dims(tmp_path: Path) -> None:
    path = model_file(tmp_path, [node("Relu", ["x"], ["y"])], {"x": ["n", 3]}, ["y"], 13)
    assert quantir.Session(path, {"x": [5, 3]}).input_shapes == [(5, 3)]
    with pytest.raises(ShapeError, match="dimension 1 is fixed to 3"):
        quantir.import_onnx(path, {"x": [5, 4]})


def test_every_op_keeps_its_node_name() -> None:
    from quantir.dialects import nn
    from tests.conftest import DATA

    graph = onnx.load(str(DATA / "tiny_vit.onnx")).graph
    node_names = {n.name for n in graph.node}
    module = quantir.import_onnx(DATA / "tiny_vit.onnx")
    ops = [op for op in module.walk() if isinstance(op, nn.NNOperation)
           and not isinstance(op, nn.ConstantOp)]
    assert ops and all(op.node_name in node_names for op in ops)
