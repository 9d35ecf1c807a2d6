"""Small ONNX models for the frontend golden tests: `python make_onnx.py NAME OUT.onnx`."""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(path: str, nodes, inputs, outputs, initializers=(), opset: int = 17) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def shape_chain(path: str) -> None:
    """Flatten written as Shape -> Gather -> Unsqueeze -> Concat -> Reshape (dynamic batch)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="unsqueeze"),
             helper.make_node("Concat", ["batch1", "minus_one"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="flatten")]
    save(path, nodes, [x], [y], inits)


def old_softmax(path: str) -> None:
    """Opset 11 Softmax on axis 1 of a rank-4 tensor flattens the trailing axes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])
    save(path, [helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=1)], [x], [y],
         opset=11)


def same_upper(path: str) -> None:
    """auto_pad SAME_UPPER with stride 2 pads more at the end."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])
    w = numpy_helper.from_array(np.ones((4, 2, 2, 2), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_UPPER",
                            strides=[2, 2], kernel_shape=[2, 2])
    save(path, [node], [x], [y], [w])


def unsupported(path: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="sin_a"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Sin", ["b"], ["c"], name="sin_b"),
             helper.make_node("Round", ["c"], ["y"], name="round")]
    save(path, nodes, [x], [y])


if __name__ == "__main__":
    globals()[sys.argv[1]](sys.argv[2])
