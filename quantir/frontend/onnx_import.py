"""ONNX -> `nn` dialect.

One nn op per ONNX node, attributes normalised (explicit pads, non-negative axes,
static shapes). Every value is either a known constant (initializers, `Constant`
nodes, and anything computed only from constants: shape arithmetic folds away here,
with the same numpy kernels the float engine runs) or an SSA value of a static
tensor type. Inputs that decide a shape (Reshape's shape, Slice's bounds, ...)
must fold to constants; a dynamic input dimension is fixed from `input_shapes`
(the batch dimension defaults to 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from quantir.dialects import nn
from quantir.errors import ModelError, ShapeError, UnsupportedOpError
from quantir.ir import dense_of, element_type_of, shape_of, splat_of, tensor_type
from quantir.runtime.folding import evaluate

NAME_ATTR = "quantir.name"
"""Argument / result attribute holding the ONNX graph input or output name."""

Value = SSAValue | np.ndarray
"""An imported value: an SSA value of the function, or a constant known at import."""


def import_onnx(path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None) \
        -> ModuleOp:
    """Import an ONNX model file as a module with one `func.func @main`."""
    model = load_onnx(path)
    return import_model(model, input_shapes, source=str(path))


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (and its external data), with one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises several types for bad bytes
        raise ModelError(f"{path}: not a readable ONNX model ({_short(error)}); "
                         "check that the file is complete and really an .onnx file") from error
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph found); "
                         "check that the file is complete and really an .onnx file")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as error:  # OSError, ValueError, onnx's ValidationError
        raise ModelError(f"{path}: cannot load external weight data ({_short(error)}); "
                         "keep the data files next to the model") from error
    return model


def import_model(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 source: str = "<model>") -> ModuleOp:
    return _Importer(model, dict(input_shapes or {}), source).run()


# --------------------------------------------------------------------------------------
# The importer
# --------------------------------------------------------------------------------------


@dataclass
class _Importer:
    model: onnx.ModelProto
    input_shapes: dict[str, Sequence[int]]
    source: str
    values: dict[str, Value] = field(default_factory=dict)
    block: Block = field(default_factory=Block)
    # Constants become nn.constant ops once, on first use, keyed by array identity;
    # `kept` holds the arrays so that no id() is reused while importing.
    materialized: dict[int, SSAValue] = field(default_factory=dict)
    kept: list[np.ndarray] = field(default_factory=list)
    opset: int = 0

    def run(self) -> ModuleOp:
        graph = self.model.graph
        self.opset = _default_opset(self.model)
        _check_supported(graph)
        initializer_names = {init.name for init in graph.initializer}
        for init in graph.initializer:
            self.values[init.name] = _to_array(init, f"initializer '{init.name}'")
        input_names, input_types = [], []
        for graph_input in graph.input:
            if graph_input.name in initializer_names:
                continue
            arg_type = tensor_type(self._input_shape(graph_input), self._input_dtype(graph_input))
            arg = self.block.insert_arg(arg_type, len(self.block.args))
            arg.name_hint = _ssa_name(graph_input.name)
            self.values[graph_input.name] = arg
            input_names.append(graph_input.name)
            input_types.append(arg_type)
        for node in _topological(graph):
            self._import_node(node)
        results = []
        for graph_output in graph.output:
            if graph_output.name not in self.values:
                raise ModelError(f"{self.source}: graph output '{graph_output.name}' is not "
                                 "produced by any node")
            results.append(self.ssa(self.values[graph_output.name], graph_output.name))
        self.block.add_op(func.ReturnOp(*results))
        _erase_dead_ops(self.block)
        main = func.FuncOp(
            "main", (input_types, [r.type for r in results]), Region(self.block),
            arg_attrs=_name_attrs(input_names),
            res_attrs=_name_attrs([o.name for o in graph.output]))
        module = ModuleOp([main])
        try:
            module.verify()
        except VerifyException as error:  # an importer bug, or a model ONNX would reject
            raise ModelError(f"{self.source}: imported IR does not verify: "
                             f"{str(error).splitlines()[0]}") from error
        return module

    # -- inputs ------------------------------------------------------------------------

    def _input_shape(self, graph_input: onnx.ValueInfoProto) -> list[int]:
        name = graph_input.name
        dims = graph_input.type.tensor_type.shape.dim
        given = self.input_shapes.get(name)
        if given is not None:
            if len(given) != len(dims) and len(dims) > 0:
                raise ShapeError(f"{self.source}: input '{name}' has rank {len(dims)}, but "
                                 f"input_shapes gives {list(given)}")
            for i, (dim, size) in enumerate(zip(dims, given, strict=False)):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise ShapeError(f"{self.source}: input '{name}' dimension {i} is fixed to "
                                     f"{dim.dim_value} by the model, input_shapes says {size}")
            return [int(d) for d in given]
        shape = []
        for i, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value)
            elif i == 0:
                shape.append(1)  # the batch dimension
            else:
                label = f" ('{dim.dim_param}')" if dim.dim_param else ""
                example = ",".join("1" if j == 0 else (str(d.dim_value) if d.dim_value else "N")
                                   for j, d in enumerate(dims))
                raise ShapeError(
                    f"{self.source}: input '{name}' dimension {i}{label} is dynamic; give it a "
                    f"size with input_shapes={{'{name}': [...]}} "
                    f"(command line: --input-shape {name}={example})")
        return shape

    def _input_dtype(self, graph_input: onnx.ValueInfoProto) -> np.dtype:
        elem = graph_input.type.tensor_type.elem_type
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        except (KeyError, TypeError) as error:
            raise ModelError(f"{self.source}: input '{graph_input.name}' has an unsupported "
                             f"element type {elem}") from error

    # -- nodes -------------------------------------------------------------------------

    def _import_node(self, node: onnx.NodeProto) -> None:
        handler = _HANDLERS[node.op_type]
        inputs: list[Value | None] = []
        for name in node.input:
            if not name:
                inputs.append(None)
            elif name in self.values:
                inputs.append(self.values[name])
            else:
                raise ModelError(f"{self.source}: node '{node.name}' ({node.op_type}) reads "
                                 f"'{name}', which no node or initializer produces")
        node_ctx = _Node(self, node, inputs)
        try:
            outputs = handler(node_ctx)
        except VerifyException as error:
            raise ModelError(f"{node_ctx.where}: {error}") from error
        if len(outputs) < len([n for n in node.output if n]):
            extra = [n for n in node.output[len(outputs):] if n and self._is_used(n)]
            if extra:
                raise UnsupportedOpError(f"{node_ctx.where}: only the first {len(outputs)} "
                                         f"output(s) are supported, but {extra} are used")
        for name, value in zip(node.output, outputs, strict=False):
            if name:
                self.values[name] = value
                if isinstance(value, SSAValue) and value.owner is not None and not isinstance(
                        value.owner, Block):
                    value.name_hint = _ssa_name(name)

    def _is_used(self, name: str) -> bool:
        graph = self.model.graph
        return any(name in n.input for n in graph.node) or any(o.name == name for o in graph.output)

    def ssa(self, value: Value, name: str) -> SSAValue:
        """The SSA value for an imported value, materialising a constant once."""
        if isinstance(value, SSAValue):
            return value
        key = id(value)
        if key not in self.materialized:
            op = nn.ConstantOp.build_from([], {"value": _dense_attr(value)}, name)
            self.block.add_op(op)
            op.results[0].name_hint = _ssa_name(name)
            self.materialized[key] = op.results[0]
            self.kept.append(value)
        return self.materialized[key]


def _dense_attr(array: np.ndarray):
    """A dense attribute; a broadcast (stride-0) array stays one stored value."""
    if array.size > 1 and all(s == 0 for s in array.strides):
        return splat_of(array.flat[0], array.shape, array.dtype)
    return dense_of(array)


@dataclass
class _Node:
    """What a handler sees: the node, its inputs, its attributes, and how to emit ops."""

    importer: _Importer
    node: onnx.NodeProto
    inputs: list[Value | None]

    @property
    def where(self) -> str:
        return f"{self.importer.source}: node '{self.node.name or self.node.output[0]}' " \
               f"({self.node.op_type})"

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]

    @property
    def opset(self) -> int:
        return self.importer.opset

    def attr(self, key: str, default: object = None) -> object:
        for attribute in self.node.attribute:
            if attribute.name == key:
                value = onnx.helper.get_attribute_value(attribute)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, onnx.TensorProto):
                    return _to_array(value, f"attribute '{key}' of {self.where}")
                if isinstance(value, list) and value and isinstance(value[0], bytes):
                    return [v.decode() for v in value]
                return value
        return default

    def input(self, index: int) -> Value | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def required(self, index: int) -> Value:
        value = self.input(index)
        if value is None:
            raise ModelError(f"{self.where}: input {index} is missing")
        return value

    def constant(self, index: int, what: str) -> np.ndarray | None:
        """An input that must be known at import (a shape, axes, pads ...), or None."""
        value = self.input(index)
        if value is None:
            return None
        if isinstance(value, SSAValue):
            raise ShapeError(
                f"{self.where}: its {what} (input '{self.node.input[index]}') depends on model "
                "inputs at run time; quantir needs static shapes: fix the dynamic input "
                "dimensions with input_shapes / --input-shape, or simplify the model")
        return np.asarray(value)

    def shape(self, index: int) -> tuple[int, ...]:
        value = self.required(index)
        return tuple(value.shape) if isinstance(value, np.ndarray) else shape_of(value.type)

    def rank(self, index: int) -> int:
        return len(self.shape(index))

    def emit(self, op_class: type[nn.NNOperation], operands: Sequence[Value],
             props: Mapping[str, object] | None = None, name: str | None = None) -> list[Value]:
        """Build an op; fold it right away when every operand is a constant."""
        name = name or self.name
        if all(isinstance(v, np.ndarray) for v in operands):
            return list(evaluate(op_class, operands, props or {}, name))
        operands_ssa = [self.importer.ssa(v, self._const_name(v, i))
                        for i, v in enumerate(operands)]
        op = op_class.build_from(operands_ssa, props or {}, name)
        self.importer.block.add_op(op)
        return list(op.results)

    def _const_name(self, value: Value, index: int) -> str:
        if isinstance(value, SSAValue):
            return ""
        for input_name, input_value in zip(self.node.input, self.inputs, strict=False):
            if input_value is value:
                return input_name
        return f"{self.name}.const{index}"


# --------------------------------------------------------------------------------------
# Attribute normalisation helpers
# --------------------------------------------------------------------------------------


def _axis(axis: int, rank: int, where: str) -> int:
    if not -rank <= axis < rank:
        raise ModelError(f"{where}: axis {axis} is outside the rank {rank}")
    return axis % rank if rank else 0


def _window_pads(n: _Node, spatial_in: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """Explicit pads from `pads` or `auto_pad` (SAME_UPPER / SAME_LOWER / VALID)."""
    spatial = len(spatial_in)
    auto_pad = n.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(n.attr("pads", [0] * (2 * spatial)))
        if len(pads) != 2 * spatial:
            raise ModelError(f"{n.where}: pads {pads} need {2 * spatial} entries")
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ModelError(f"{n.where}: auto_pad '{auto_pad}' is not NOTSET, VALID, SAME_UPPER "
                         "or SAME_LOWER")
    begins, ends = [], []
    for size, k, s, d in zip(spatial_in, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _reduce_axes(n: _Node, rank: int) -> list[int] | None:
    """The reduction axes (attribute or input by opset); None means 'pass through'."""
    takes_input = (n.node.op_type == "ReduceSum" and n.opset >= 13) or n.opset >= 18
    if takes_input:
        given = n.constant(1, "axes")
        axes = None if given is None else [int(a) for a in given.reshape(-1)]
    else:
        axes = n.attr("axes")
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    return sorted({_axis(int(a), rank, n.where) for a in axes})


# --------------------------------------------------------------------------------------
# Handlers: one per ONNX op type, each returns the node's output values
# --------------------------------------------------------------------------------------

Handler = Callable[[_Node], list[Value]]


def _unary(op_class: type[nn.NNOperation], **defaults: object) -> Handler:
    def handle(n: _Node) -> list[Value]:
        props = {key: n.attr(key, default) for key, default in defaults.items()}
        return n.emit(op_class, [n.required(0)], props)
    return handle


def _binary(op_class: type[nn.NNOperation]) -> Handler:
    def handle(n: _Node) -> list[Value]:
        lhs, rhs = n.required(0), n.required(1)
        return n.emit(op_class, [lhs, _match_dtype(rhs, lhs)])
    return handle


def _variadic(op_class: type[nn.NNOperation]) -> Handler:
    """Sum / Max / Min of n inputs as a chain of binary ops."""
    def handle(n: _Node) -> list[Value]:
        result = n.required(0)
        for i in range(1, len(n.inputs)):
            name = n.name if i == len(n.inputs) - 1 else f"{n.name}.{i}"
            result = n.emit(op_class, [result, n.required(i)], name=name)[0]
        return [result]
    return handle


def _dtype(value: Value) -> np.dtype:
    if isinstance(value, np.ndarray):
        return value.dtype
    from quantir.ir import dtype_of

    return dtype_of(value.type.element_type)  # type: ignore[union-attr]


def _match_dtype(value: Value, like: Value) -> Value:
    """Pow's exponent may have another type than its base: cast a constant to match."""
    if isinstance(value, np.ndarray) and value.dtype != _dtype(like):
        return value.astype(_dtype(like))
    return value


def _conv(n: _Node) -> list[Value]:
    x_shape, w_shape = n.shape(0), n.shape(1)
    spatial = len(x_shape) - 2
    strides = list(n.attr("strides", [1] * spatial))
    dilations = list(n.attr("dilations", [1] * spatial))
    pads = _window_pads(n, x_shape[2:], w_shape[2:], strides, dilations)
    operands = [n.required(0), n.required(1)] + ([n.input(2)] if n.input(2) is not None else [])
    return n.emit(nn.ConvOp, operands, {"strides": strides, "pads": pads,
                                        "dilations": dilations, "group": n.attr("group", 1)})


def _conv_transpose(n: _Node) -> list[Value]:
    x_shape, w_shape = n.shape(0), n.shape(1)
    spatial = len(x_shape) - 2
    strides = list(n.attr("strides", [1] * spatial))
    dilations = list(n.attr("dilations", [1] * spatial))
    output_padding = list(n.attr("output_padding", [0] * spatial))
    kernel = w_shape[2:]
    output_shape = n.attr("output_shape")
    auto_pad = n.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = list(output_shape)[-spatial:] if output_shape is not None else \
            [x_shape[2 + i] * strides[i] for i in range(spatial)]
        begins, ends = [], []
        for i in range(spatial):
            total = (strides[i] * (x_shape[2 + i] - 1) + output_padding[i]
                     + (kernel[i] - 1) * dilations[i] + 1 - target[i])
            total = max(total, 0)
            upper = auto_pad != "SAME_LOWER"
            begins.append(total // 2 if upper else total - total // 2)
            ends.append(total - begins[-1])
        pads = begins + ends
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    else:
        pads = list(n.attr("pads", [0] * (2 * spatial)))
    operands = [n.required(0), n.required(1)] + ([n.input(2)] if n.input(2) is not None else [])
    return n.emit(nn.ConvTransposeOp, operands, {
        "strides": strides, "pads": pads, "dilations": dilations,
        "output_padding": output_padding, "group": n.attr("group", 1)})


def _batch_norm(n: _Node) -> list[Value]:
    return n.emit(nn.BatchNormOp, [n.required(i) for i in range(5)],
                  {"epsilon": float(n.attr("epsilon", 1e-5))})


def _clip(n: _Node) -> list[Value]:
    props: dict[str, object] = {}
    if n.opset < 11:
        props = {"min": float(n.attr("min", -math.inf)), "max": float(n.attr("max", math.inf))}
    else:
        for key, index in (("min", 1), ("max", 2)):
            bound = n.constant(index, f"{key} bound")
            if bound is not None:
                props[key] = float(bound.reshape(-1)[0])
    props = {k: v for k, v in props.items() if math.isfinite(v)}  # type: ignore[arg-type]
    return n.emit(nn.ClipOp, [n.required(0)], props)


def _gelu(n: _Node) -> list[Value]:
    return n.emit(nn.GeluOp, [n.required(0)], {"approximate": n.attr("approximate", "none")})


def _softmax(n: _Node) -> list[Value]:
    shape = n.shape(0)
    rank = len(shape)
    axis = _axis(int(n.attr("axis", -1 if n.opset >= 13 else 1)), rank, n.where)
    if n.opset >= 13 or axis == rank - 1:
        return n.emit(nn.SoftmaxOp, [n.required(0)], {"axis": axis})
    # Before opset 13 Softmax works on the input flattened to 2-d at `axis`.
    flat = [math.prod(shape[:axis]), math.prod(shape[axis:])]
    x = n.emit(nn.ReshapeOp, [n.required(0)], {"shape": flat}, name=f"{n.name}.flatten")[0]
    y = n.emit(nn.SoftmaxOp, [x], {"axis": 1})[0]
    return n.emit(nn.ReshapeOp, [y], {"shape": list(shape)}, name=f"{n.name}.unflatten")


def _layer_norm(n: _Node) -> list[Value]:
    axis = _axis(int(n.attr("axis", -1)), n.rank(0), n.where)
    operands = [n.required(0), n.required(1)] + ([n.input(2)] if n.input(2) is not None else [])
    return n.emit(nn.LayerNormOp, operands, {"axis": axis,
                                             "epsilon": float(n.attr("epsilon", 1e-5))})


def _lrn(n: _Node) -> list[Value]:
    return n.emit(nn.LRNOp, [n.required(0)], {
        "size": int(n.attr("size")), "alpha": float(n.attr("alpha", 1e-4)),
        "beta": float(n.attr("beta", 0.75)), "bias": float(n.attr("bias", 1.0))})


def _reduce(op_class: type[nn.NNOperation]) -> Handler:
    def handle(n: _Node) -> list[Value]:
        axes = _reduce_axes(n, n.rank(0))
        if axes is None:
            return [n.required(0)]
        return n.emit(op_class, [n.required(0)], {"axes": axes,
                                                  "keepdims": int(n.attr("keepdims", 1))})
    return handle


def _pool(op_class: type[nn.NNOperation]) -> Handler:
    def handle(n: _Node) -> list[Value]:
        shape = n.shape(0)
        spatial = len(shape) - 2
        kernel = list(n.attr("kernel_shape"))
        strides = list(n.attr("strides", [1] * spatial))
        dilations = list(n.attr("dilations", [1] * spatial))
        props: dict[str, object] = {
            "kernel_shape": kernel, "strides": strides,
            "pads": _window_pads(n, shape[2:], kernel, strides, dilations),
            "ceil_mode": int(n.attr("ceil_mode", 0))}
        if op_class is nn.MaxPoolOp:
            props["dilations"] = dilations
        else:
            props["count_include_pad"] = int(n.attr("count_include_pad", 0))
        return n.emit(op_class, [n.required(0)], props)
    return handle


def _global_average_pool(n: _Node) -> list[Value]:
    return n.emit(nn.GlobalAveragePoolOp, [n.required(0)])


def _matmul(n: _Node) -> list[Value]:
    return n.emit(nn.MatMulOp, [n.required(0), n.required(1)])


def _gemm(n: _Node) -> list[Value]:
    operands = [n.required(0), n.required(1)] + ([n.input(2)] if n.input(2) is not None else [])
    return n.emit(nn.GemmOp, operands, {
        "alpha": float(n.attr("alpha", 1.0)), "beta": float(n.attr("beta", 1.0)),
        "trans_a": int(n.attr("transA", 0)), "trans_b": int(n.attr("transB", 0))})


def _concat(n: _Node) -> list[Value]:
    inputs = [v for v in n.inputs if v is not None]
    axis = _axis(int(n.attr("axis")), n.rank(0), n.where)
    return n.emit(nn.ConcatOp, inputs, {"axis": axis})


def _split(n: _Node) -> list[Value]:
    shape = n.shape(0)
    axis = _axis(int(n.attr("axis", 0)), len(shape), n.where)
    count = len(n.node.output)
    sizes_given = n.constant(1, "split sizes") if n.opset >= 13 else n.attr("split")
    if sizes_given is not None and len(sizes_given):
        sizes = [int(s) for s in np.asarray(sizes_given).reshape(-1)]
    else:
        count = int(n.attr("num_outputs", count))
        chunk = -(-shape[axis] // count)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(count)]
    return n.emit(nn.SplitOp, [n.required(0)], {"axis": axis, "sizes": sizes})


def _slice(n: _Node) -> list[Value]:
    shape = n.shape(0)
    rank = len(shape)
    if n.opset < 10:
        starts, ends = n.attr("starts"), n.attr("ends")
        axes = n.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = n.constant(1, "starts")
        ends = n.constant(2, "ends")
        axes_given = n.constant(3, "axes")
        steps_given = n.constant(4, "steps")
        axes = list(range(len(starts))) if axes_given is None else axes_given.reshape(-1)
        steps = [1] * len(starts) if steps_given is None else steps_given.reshape(-1)
    full_starts, full_ends, full_steps = [0] * rank, list(shape), [1] * rank
    for start, end, axis, step in zip(np.asarray(starts).reshape(-1), np.asarray(ends).reshape(-1),
                                      axes, steps, strict=True):
        axis = _axis(int(axis), rank, n.where)
        dim, start, end, step = shape[axis], int(start), int(end), int(step)
        if step == 0:
            raise ModelError(f"{n.where}: step 0 on axis {axis}")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        full_starts[axis], full_ends[axis], full_steps[axis] = start, end, step
    return n.emit(nn.SliceOp, [n.required(0)], {
        "starts": full_starts, "ends": full_ends, "steps": full_steps})


def _reshape_to(n: _Node, value: Value, shape: Sequence[int]) -> list[Value]:
    return n.emit(nn.ReshapeOp, [value], {"shape": [int(d) for d in shape]})


def _reshape(n: _Node) -> list[Value]:
    in_shape = n.shape(0)
    if n.opset < 5:
        target = list(n.attr("shape"))
    else:
        target = [int(d) for d in n.constant(1, "target shape").reshape(-1)]
    allow_zero = int(n.attr("allowzero", 0))
    out = [in_shape[i] if d == 0 and not allow_zero else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise ShapeError(f"{n.where}: target shape {target} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(in_shape) % known:
            raise ShapeError(f"{n.where}: cannot reshape {list(in_shape)} to {target}")
        out[out.index(-1)] = math.prod(in_shape) // known
    if math.prod(out) != math.prod(in_shape):
        raise ShapeError(f"{n.where}: cannot reshape {list(in_shape)} to {target}")
    return _reshape_to(n, n.required(0), out)


def _flatten(n: _Node) -> list[Value]:
    shape = n.shape(0)
    axis = int(n.attr("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    return _reshape_to(n, n.required(0), [math.prod(shape[:axis]), math.prod(shape[axis:])])


def _squeeze(n: _Node) -> list[Value]:
    shape = n.shape(0)
    given = n.constant(1, "axes") if n.opset >= 13 else n.attr("axes")
    if given is None or len(given) == 0:
        axes = {i for i, d in enumerate(shape) if d == 1}
    else:
        axes = {_axis(int(a), len(shape), n.where) for a in np.asarray(given).reshape(-1)}
    for axis in axes:
        if shape[axis] != 1:
            raise ShapeError(f"{n.where}: cannot squeeze axis {axis} of size {shape[axis]}")
    return _reshape_to(n, n.required(0), [d for i, d in enumerate(shape) if i not in axes])


def _unsqueeze(n: _Node) -> list[Value]:
    shape = list(n.shape(0))
    given = n.constant(1, "axes") if n.opset >= 13 else n.attr("axes")
    axes = [int(a) for a in np.asarray(given).reshape(-1)]
    rank = len(shape) + len(axes)
    for axis in sorted(_axis(a, rank, n.where) for a in axes):
        shape.insert(axis, 1)
    return _reshape_to(n, n.required(0), shape)


def _transpose(n: _Node) -> list[Value]:
    rank = n.rank(0)
    perm = n.attr("perm", list(range(rank))[::-1])
    return n.emit(nn.TransposeOp, [n.required(0)], {"perm": list(perm)})


def _expand(n: _Node) -> list[Value]:
    target = [int(d) for d in n.constant(1, "target shape").reshape(-1)]
    shape = nn.broadcast_shapes(n.shape(0), tuple(target))
    return n.emit(nn.ExpandOp, [n.required(0)], {"shape": list(shape)})


def _resize(n: _Node) -> list[Value]:
    shape = n.shape(0)
    rank = len(shape)
    mode = n.attr("mode", "nearest")
    if mode not in nn.ResizeOp.MODES:
        raise UnsupportedOpError(f"{n.where}: resize mode '{mode}' is not supported "
                                 f"(supported: {', '.join(nn.ResizeOp.MODES)})")
    if n.opset >= 18 and (n.attr("axes") is not None
                          or n.attr("keep_aspect_ratio_policy", "stretch") != "stretch"):
        raise UnsupportedOpError(f"{n.where}: the axes / keep_aspect_ratio_policy attributes "
                                 "are not supported")
    if n.opset < 11:
        scales = n.constant(1, "scales")
        sizes = None
    else:
        scales = n.constant(2, "scales")
        sizes = n.constant(3, "sizes")
    transform = n.attr("coordinate_transformation_mode",
                       "half_pixel" if n.opset >= 11 else "asymmetric")
    if transform == "tf_crop_and_resize":
        raise UnsupportedOpError(f"{n.where}: coordinate_transformation_mode "
                                 "tf_crop_and_resize is not supported")
    if sizes is not None and sizes.size:
        out = [int(s) for s in sizes.reshape(-1)]
        scale_list = [o / i for o, i in zip(out, shape, strict=True)]
    elif scales is not None and scales.size:
        scale_list = [float(s) for s in scales.reshape(-1)]
        out = [int(math.floor(i * s)) for i, s in zip(shape, scale_list, strict=True)]
    else:
        raise ModelError(f"{n.where}: needs scales or sizes")
    if len(out) != rank:
        raise ModelError(f"{n.where}: scales/sizes need {rank} entries")
    return n.emit(nn.ResizeOp, [n.required(0)], {
        "mode": mode, "coordinate_transformation_mode": transform,
        "nearest_mode": n.attr("nearest_mode", "round_prefer_floor"),
        "scales": scale_list, "sizes": out})


def _pad(n: _Node) -> list[Value]:
    rank = n.rank(0)
    mode = n.attr("mode", "constant")
    if n.opset < 11:
        pads, value = list(n.attr("pads")), float(n.attr("value", 0.0))
    else:
        pads = [int(p) for p in n.constant(1, "pads").reshape(-1)]
        given = n.constant(2, "constant value")
        value = 0.0 if given is None or given.size == 0 else float(given.reshape(-1)[0])
        axes_given = n.constant(3, "axes")
        if axes_given is not None:
            axes = [_axis(int(a), rank, n.where) for a in axes_given.reshape(-1)]
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
            pads = full
    if mode not in ("constant", "reflect", "edge"):
        raise UnsupportedOpError(f"{n.where}: pad mode '{mode}' is not supported")
    return n.emit(nn.PadOp, [n.required(0)], {"pads": pads, "mode": mode, "value": value})


def _gather(n: _Node) -> list[Value]:
    axis = _axis(int(n.attr("axis", 0)), n.rank(0), n.where)
    return n.emit(nn.GatherOp, [n.required(0), n.required(1)], {"axis": axis})


def _constant(n: _Node) -> list[Value]:
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        value = n.attr(key)
        if value is not None:
            return [np.asarray(value, dtype=dtype)]
    raise UnsupportedOpError(f"{n.where}: only numeric Constant values are supported")


def _constant_of_shape(n: _Node) -> list[Value]:
    shape = [int(d) for d in n.constant(0, "shape").reshape(-1)]
    value = n.attr("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return [np.broadcast_to(fill[0], shape)]


def _identity(n: _Node) -> list[Value]:
    return [n.required(0)]


def _cast(n: _Node) -> list[Value]:
    to = n.attr("to")
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(to)))
        element = element_type_of(dtype)
    except Exception as error:
        raise UnsupportedOpError(f"{n.where}: cast to ONNX type {to} is not supported") from error
    if _dtype(n.required(0)) == dtype:
        return [n.required(0)]
    return n.emit(nn.CastOp, [n.required(0)], {"to": element})


def _shape(n: _Node) -> list[Value]:
    shape = n.shape(0)
    start, end = int(n.attr("start", 0)), n.attr("end")
    return [np.asarray(shape[start:None if end is None else int(end)], dtype=np.int64)]


def _where(n: _Node) -> list[Value]:
    x, y = n.required(1), n.required(2)
    return n.emit(nn.WhereOp, [n.required(0), x, _match_dtype(y, x)])


def _prelu(n: _Node) -> list[Value]:
    return n.emit(nn.PReluOp, [n.required(0), n.required(1)])


_HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "Relu": _unary(nn.ReluOp),
    "Clip": _clip,
    "LeakyRelu": _unary(nn.LeakyReluOp, alpha=0.01),
    "PRelu": _prelu,
    "Sigmoid": _unary(nn.SigmoidOp),
    "HardSigmoid": _unary(nn.HardSigmoidOp, alpha=0.2, beta=0.5),
    "HardSwish": _unary(nn.HardSwishOp),
    "Tanh": _unary(nn.TanhOp),
    "Erf": _unary(nn.ErfOp),
    "Gelu": _gelu,
    "Neg": _unary(nn.NegOp),
    "Add": _binary(nn.AddOp),
    "Sub": _binary(nn.SubOp),
    "Mul": _binary(nn.MulOp),
    "Div": _binary(nn.DivOp),
    "Pow": _binary(nn.PowOp),
    "Equal": _binary(nn.EqualOp),
    "Sum": _variadic(nn.AddOp),
    "Max": _variadic(nn.MaxOp),
    "Min": _variadic(nn.MinOp),
    "Sqrt": _unary(nn.SqrtOp),
    "Reciprocal": _unary(nn.ReciprocalOp),
    "Exp": _unary(nn.ExpOp),
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Softmax": _softmax,
    "LayerNormalization": _layer_norm,
    "LRN": _lrn,
    "ReduceMean": _reduce(nn.ReduceMeanOp),
    "ReduceSum": _reduce(nn.ReduceSumOp),
    "ReduceMax": _reduce(nn.ReduceMaxOp),
    "GlobalAveragePool": _global_average_pool,
    "AveragePool": _pool(nn.AveragePoolOp),
    "MaxPool": _pool(nn.MaxPoolOp),
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Resize": _resize,
    "Pad": _pad,
    "Gather": _gather,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Identity": _identity,
    "Dropout": _identity,
    "Cast": _cast,
    "Shape": _shape,
    "Expand": _expand,
    "Where": _where,
}

SUPPORTED_OPS = frozenset(_HANDLERS)


# --------------------------------------------------------------------------------------
# Graph-level helpers
# --------------------------------------------------------------------------------------


def _default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 1


def _check_supported(graph: onnx.GraphProto) -> None:
    """One error listing every unsupported op type with the nodes that use it."""
    unsupported: dict[str, list[str]] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _HANDLERS:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            unsupported.setdefault(key, []).append(node.name or node.output[0])
    if unsupported:
        parts = []
        for op_type, names in sorted(unsupported.items()):
            shown = ", ".join(f"'{n}'" for n in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            parts.append(f"{op_type} (nodes {shown}{more})")
        raise UnsupportedOpError(
            f"unsupported ONNX operators: {'; '.join(parts)}; rewrite them into supported ops "
            "or open an issue asking for them")


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in dependency order (ONNX requires it, but not every exporter obeys)."""
    produced_by = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    order, state = [], [0] * len(graph.node)
    for start in range(len(graph.node)):
        stack = [(start, False)]
        while stack:
            index, expanded = stack.pop()
            if expanded:
                if state[index] != 2:
                    state[index] = 2
                    order.append(graph.node[index])
                continue
            if state[index]:
                continue
            state[index] = 1
            stack.append((index, True))
            for name in graph.node[index].input:
                dep = produced_by.get(name)
                if dep is not None and state[dep] == 0:
                    stack.append((dep, False))
    return order


def _erase_dead_ops(block: Block) -> None:
    for op in reversed(list(block.ops)):
        if isinstance(op, nn.NNOperation) and not any(r.uses for r in op.results):
            block.erase_op(op)


def _to_array(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as error:
        raise ModelError(f"{what}: cannot read its data ({_short(error)})") from error
    if array.dtype == object:
        raise UnsupportedOpError(f"{what}: string tensors are not supported")
    return array


def _name_attrs(names: Sequence[str]) -> ArrayAttr[DictionaryAttr]:
    return ArrayAttr([DictionaryAttr({NAME_ATTR: StringAttr(name)}) for name in names])


def _ssa_name(name: str) -> str | None:
    """A readable SSA name hint from an ONNX value name (xDSL accepts [A-Za-z_][\\w$.]*)."""
    cleaned = re.sub(r"[^\w$.]", "_", name)
    if not cleaned:
        return None
    if not re.match(r"[A-Za-z_]", cleaned):
        cleaned = "v" + cleaned
    return cleaned


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def graph_names(op: Operation) -> tuple[list[str], list[str]]:
    """The ONNX input and output names recorded on a `func.func`."""
    assert isinstance(op, func.FuncOp)
    def names(attrs: ArrayAttr | None, count: int, prefix: str) -> list[str]:
        result = []
        for i in range(count):
            entry = attrs.data[i].data.get(NAME_ATTR) if attrs is not None else None
            result.append(entry.data if isinstance(entry, StringAttr) else f"{prefix}{i}")
        return result
    inputs = names(op.arg_attrs, len(op.function_type.inputs), "arg")
    outputs = names(op.res_attrs, len(op.function_type.outputs), "result")
    return inputs, outputs
