"""Write every LayerNormalization of an ONNX model out as the graph older exporters emit.

    python make_layernorm_onnx.py IN.onnx OUT.onnx [--square pow|mul] [--divide div|reciprocal]

Each LayerNormalization node `<name>` becomes ReduceMean -> Sub -> Pow(2) (or Mul(d, d))
-> ReduceMean -> Add(eps) -> Sqrt -> Div (or Reciprocal + Mul) -> Mul(scale) -> Add(bias),
nodes named `<name>/ReduceMean`, `<name>/Sub`, ..., epsilon and the exponent scalar
initializers. The golden tests and tests/unit/test_layernorm_passes.py use it to
produce the input of `layernorm-fuse` from tests/data/tiny_vit.onnx.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _rank(model: onnx.ModelProto, name: str) -> int:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    for info in (*graph.value_info, *graph.input, *graph.output):
        if info.name == name and info.type.tensor_type.HasField("shape"):
            return len(info.type.tensor_type.shape.dim)
    raise ValueError(f"the rank of '{name}' is unknown; give LayerNormalization a negative axis")


def _written_out(model: onnx.ModelProto, node: onnx.NodeProto, square: str, divide: str) \
        -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    name = node.name
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = int(attrs.get("axis", -1))
    epsilon = float(attrs.get("epsilon", 1e-5))
    if len([o for o in node.output if o]) > 1:
        raise ValueError(f"{name}: the Mean / InvStdDev outputs are not supported")
    # Negative axes need no rank: -2 normalises over [-2, -1].
    axes = list(range(axis, 0)) if axis < 0 else list(range(axis, _rank(model, node.input[0])))
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None

    def value(suffix: str) -> str:
        return f"{name}/{suffix}_output"

    inits = [numpy_helper.from_array(np.array(epsilon, np.float32), f"{name}/epsilon")]
    reduce_inputs: list[str] = []
    reduce_attrs: dict[str, object] = {"keepdims": 1}
    if _opset(model) >= 18:  # ReduceMean takes its axes as an input from opset 18
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), f"{name}/axes"))
        reduce_inputs = [f"{name}/axes"]
    else:
        reduce_attrs["axes"] = axes

    def make(op_type: str, suffix: str, inputs: list[str], output: str | None = None,
             **attributes: object) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, [output or value(suffix)], name=f"{name}/{suffix}",
                                **attributes)

    nodes = [make("ReduceMean", "ReduceMean", [x, *reduce_inputs], **reduce_attrs),
             make("Sub", "Sub", [x, value("ReduceMean")])]
    centered = value("Sub")
    if square == "pow":
        inits.append(numpy_helper.from_array(np.array(2.0, np.float32), f"{name}/two"))
        nodes.append(make("Pow", "Square", [centered, f"{name}/two"]))
    else:
        nodes.append(make("Mul", "Square", [centered, centered]))
    nodes += [make("ReduceMean", "ReduceMean_1", [value("Square"), *reduce_inputs],
                   **reduce_attrs),
              make("Add", "Add", [value("ReduceMean_1"), f"{name}/epsilon"]),
              make("Sqrt", "Sqrt", [value("Add")])]
    if divide == "div":
        nodes.append(make("Div", "Div", [centered, value("Sqrt")]))
        normed = value("Div")
    else:
        nodes += [make("Reciprocal", "Reciprocal", [value("Sqrt")]),
                  make("Mul", "Normalize", [centered, value("Reciprocal")])]
        normed = value("Normalize")
    output = node.output[0]
    if bias is None:
        nodes.append(make("Mul", "Mul", [normed, scale], output))
    else:
        nodes += [make("Mul", "Mul", [normed, scale]),
                  make("Add", "Add_1", [value("Mul"), bias], output)]
    return nodes, inits


def write_out_layer_norms(model: onnx.ModelProto, square: str = "pow",
                          divide: str = "div") -> onnx.ModelProto:
    """A copy of `model` with every LayerNormalization written out (see the docstring)."""
    if square not in ("pow", "mul") or divide not in ("div", "reciprocal"):
        raise ValueError(f"square must be pow or mul and divide div or reciprocal, got "
                         f"{square} and {divide}")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            written, constants = _written_out(model, node, square, divide)
            nodes += written
            inits += constants
        else:
            nodes.append(node)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    result.graph.initializer.extend(inits)
    onnx.checker.check_model(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--square", choices=("pow", "mul"), default="pow")
    parser.add_argument("--divide", choices=("div", "reciprocal"), default="div")
    args = parser.parse_args()
    onnx.save(write_out_layer_norms(onnx.load(args.source), args.square, args.divide),
              args.target)


if __name__ == "__main__":
    main()
