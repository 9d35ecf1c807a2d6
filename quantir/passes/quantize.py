"""`quantize`: float `nn` module + calibrated ranges -> quantization-annotated module.

What it does, per the configuration (QuantConfig from the pipeline, or the options):

* Layers. A conv / conv_transpose / gemm / matmul / add followed by batch norm and
  an activation (ReLU, Clip, HardSwish, ...) is one layer: only its last tensor is
  quantized (the accelerator never writes the intermediate ones). Data-movement ops
  (reshape, transpose, slice, max_pool, ...) keep their input's encoding.
* Activations. Every other float tensor gets `q.quantize` at its producer's output
  width; each consumer reads it through `q.dequantize`. Where a consumer takes
  another width than the producer writes, a `q.precision_change` sits between them,
  carrying both layer names and the configuration lines that chose the widths.
* Weights become `q.constant`s (symmetric; per channel along the output channels by
  default), biases int32 at s_x * s_w (16-bit with their own scale under
  `double_scale_initialization`), other float constants per tensor.
* Layers left in float keep float inputs (their producers' values dequantized) and
  float outputs. Overrides (AIMET / QNN JSON) replace calibrated encodings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Block, BlockArgument, Operation, OpResult, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn, q
from quantir.dialects.q_math import Encoding, encoding_from_range, quantize_array
from quantir.errors import QuantirError
from quantir.ir import array_of, dense_of
from quantir.passes.calibrate import value_label
from quantir.passes.ranges import get_range
from quantir.runtime.executor import main_function

INT32_MAX = 2**31 - 1

ANCHORS = (nn.ConvOp, nn.ConvTransposeOp, nn.GemmOp, nn.MatMulOp, nn.AddOp, nn.SubOp)
"""Ops that start a layer: batch norm and an activation after them belong to it."""
FOLDED_NORMS = (nn.BatchNormOp,)
FUSED_ACTIVATIONS = (nn.ReluOp, nn.ClipOp, nn.LeakyReluOp, nn.HardSwishOp, nn.HardSigmoidOp,
                     nn.SigmoidOp, nn.PReluOp, nn.GeluOp)
PASSTHROUGH = (nn.ReshapeOp, nn.TransposeOp, nn.SliceOp, nn.SplitOp, nn.ExpandOp, nn.MaxPoolOp,
               nn.PadOp, nn.GatherOp)
"""Data movement: the output takes the input's encoding (no requantization)."""
WEIGHTED = (nn.ConvOp, nn.ConvTransposeOp, nn.GemmOp, nn.MatMulOp)


def op_kind(op: Operation) -> str:
    """`conv`, `matmul`, ... (the nn op name without its dialect)."""
    return op.name.split(".", 1)[-1]


@dataclass(frozen=True)
class QuantizePass(ModulePass):
    """Annotate a calibrated float module with q ops. Options left unset come from the
    pipeline's QuantConfig; without one they build it (precision a8_w8, per-channel
    symmetric weights, asymmetric activations, a model script, an overrides JSON)."""

    name = "quantize"

    precision: str | None = None
    weights: str | None = None
    activations: str | None = None
    script: str | None = None
    overrides: str | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        config = self.config(getattr(ctx, "config", None))
        # Passes after this one that compare with the float model (bias-correction)
        # find it here: the annotated module keeps only the quantized weights.
        ctx.float_reference = op.clone()  # type: ignore[attr-defined]
        _Quantizer(config, main_function(op), getattr(ctx, "tensor_names", None) or {}).run()

    def config(self, given: object):  # type: ignore[no-untyped-def]
        from quantir.passes.qconfig import QuantConfig

        if given is not None and not any((self.precision, self.weights, self.activations,
                                          self.script, self.overrides)):
            return given
        return QuantConfig.build(precision=self.precision, weights=self.weights,
                                 activations=self.activations, script=self.script,
                                 overrides=self.overrides, base=given)


class _Quantizer:
    def __init__(self, config, function: func.FuncOp,  # type: ignore[no-untyped-def]
                 tensor_names: dict[tuple[str, int], str]):
        self.config = config
        self.tensor_names = tensor_names
        self.function = function
        self.block: Block = function.body.block
        self.layer_of: dict[Operation, Operation] = {}  # op -> the anchor of its layer
        self.internal: set[SSAValue] = set()  # tensors inside a layer: never quantized
        self.encodings: dict[SSAValue, Encoding] = {}
        self.dequantized: dict[tuple[SSAValue, int], SSAValue] = {}

    # -- configuration -----------------------------------------------------------------

    def layer(self, op: Operation):  # type: ignore[no-untyped-def]
        anchor = self.layer_of.get(op, op)
        return self.config.layer(getattr(anchor, "node_name", ""), op_kind(anchor))

    def tensor_name(self, value: SSAValue) -> str:
        """The ONNX tensor name of a value (what encodings files key on): from the
        pipeline's `tensor_names` handle, a model input's recorded name, else the SSA
        name."""
        if isinstance(value, OpResult):
            exact = self.tensor_names.get((getattr(value.op, "node_name", ""), value.index))
            if exact is not None:
                return exact
        if isinstance(value, BlockArgument) and self.function.arg_attrs is not None:
            recorded = self.function.arg_attrs.data[value.index].data.get("quantir.name")
            if recorded is not None:
                return recorded.data  # type: ignore[attr-defined]
        return _value_name(value)

    def in_float(self, op: Operation) -> bool:
        return isinstance(op, nn.NNOperation) and self.layer(op).float_fallback

    # -- the pass ----------------------------------------------------------------------

    def run(self) -> None:
        ops = [op for op in self.block.ops if isinstance(op, nn.NNOperation)
               and not isinstance(op, nn.ConstantOp)]
        self.group_layers(ops)
        for arg in self.block.args:
            self.quantize_value(arg)
        for op in ops:
            # Members of a layer (its batch norm, its activation) fold into the anchor.
            if not self.in_float(op) and op not in self.layer_of:
                self.quantize_constants(op)
            for result in op.results:
                self.quantize_value(result)

    def group_layers(self, ops: Sequence[Operation]) -> None:
        self.layer_of = group_layers(ops)
        for member, anchor in self.layer_of.items():
            # The member's input from inside the layer (a bias add may take it second).
            for operand in member.operands:
                owner = operand.owner
                if owner is anchor or (isinstance(owner, Operation)
                                       and self.layer_of.get(owner) is anchor):
                    self.internal.add(operand)

    # -- activations -------------------------------------------------------------------

    def quantize_value(self, value: SSAValue) -> None:
        if value in self.internal or not _is_float_tensor(value):
            return
        producer = value.op if isinstance(value, OpResult) else None
        if producer is not None and self.in_float(producer):
            return
        consumers = [use.operation for use in value.uses
                     if not isinstance(use.operation, func.ReturnOp)]
        encoding = self.activation_encoding(value, producer, consumers)
        if encoding is None:
            return
        self.encodings[value] = encoding
        name = self.tensor_name(value)
        quantize = q.QuantizeOp(value, encoding.to_type(), name)
        if producer is None:
            self.block.insert_op_before(quantize, self.block.first_op)  # type: ignore[arg-type]
        else:
            self.block.insert_op_after(quantize, producer)
        for use in list(value.uses):
            if use.operation is quantize:
                continue
            bits = self.input_bits(use.operation, encoding)
            use.operation.operands[use.index] = self.read(quantize.results[0], value, bits,
                                                          use.operation)

    def activation_encoding(self, value: SSAValue, producer: Operation | None,
                            consumers: list[Operation]) -> Encoding | None:
        override = self.override("activation", value)
        if override is not None and override.is_float:
            return None
        if override is not None and override.has_range:
            return override.encoding()
        if isinstance(producer, PASSTHROUGH) and override is None:
            source = self.encodings.get(producer.operands[0])
            if source is not None:
                return source
        found = get_range(value)
        if found is None:
            raise QuantirError(f"quantize: {value_label(value)} has no calibrated range; run "
                               "the calibrate pass first (quantir quantize does)")
        if producer is not None:
            layer = self.layer(producer)
            bits, symmetric = layer.precision.output_bits, layer.activations == "symmetric"
        else:
            layers = [self.layer(c) for c in consumers if isinstance(c, nn.NNOperation)] \
                or [self.config.layer("", "")]
            bits = max(layer.precision.activation_bits for layer in layers)
            symmetric = any(layer.activations == "symmetric" for layer in layers)
        if override is not None:  # a width-only entry: the calibrated range at that width
            bits, symmetric = override.bits, override.symmetric
        return encoding_from_range(*found, bits=bits, symmetric=symmetric)

    def input_bits(self, consumer: Operation, encoding: Encoding) -> int:
        """The width a consumer reads: its layer's input width (float layers and data
        movement read whatever the producer wrote)."""
        if not isinstance(consumer, nn.NNOperation) or self.in_float(consumer) \
                or isinstance(consumer, PASSTHROUGH):
            return encoding.bits
        return self.layer(consumer).precision.activation_bits

    def read(self, quantized: SSAValue, value: SSAValue, bits: int,
             consumer: Operation) -> SSAValue:
        """The dequantized value at `bits` (one q.dequantize per width, shared)."""
        key = (value, bits)
        if key in self.dequantized:
            return self.dequantized[key]
        encoding = target = self.encodings[value]
        source = quantized
        anchor = quantized.op  # type: ignore[attr-defined]
        if bits != encoding.bits:
            found = get_range(value) or (encoding.min, encoding.max)
            target = encoding_from_range(*found, bits=bits, symmetric=encoding.symmetric)
            producer = value.op if isinstance(value, OpResult) else None
            producer = self.layer_of.get(producer, producer) if producer is not None else None
            change = q.PrecisionChangeOp(
                quantized, target.to_type(), f"{self.tensor_name(value)}.to_{bits}bit",
                producer=_node(producer, value), consumer=_node(consumer, value),
                reason=self.reason(producer, consumer, encoding.bits, bits))
            self.block.insert_op_after(change, anchor)
            source, anchor = change.results[0], change
        dequantize = q.DequantizeOp(source, self.tensor_name(value))
        self.block.insert_op_after(dequantize, anchor)
        self.dequantized[key] = dequantize.results[0]
        # Data movement after this reads the dequantized value: it keeps this encoding.
        self.encodings[dequantize.results[0]] = target
        return dequantize.results[0]

    def reason(self, producer: Operation | None, consumer: Operation, produced: int,
               consumed: int) -> str:
        """`P writes 16 bits (script.alls:3); C reads 8 bits (default)`. A data-movement
        producer passes on the width of the layer before it, which the source names:
        `/Transpose writes 16 bits (as /patch_embed/Conv: script.alls:2)`."""
        origin = self.data_origin(producer)
        source = self.layer(origin).source if origin is not None else "model input"
        if origin is not None and origin is not producer:
            source = f"as {_node(origin, None)}: {source}"
        return (f"{_node(producer, None)} writes {produced} bits ({source}); "
                f"{_node(consumer, None)} reads {consumed} bits ({self.layer(consumer).source})")

    def data_origin(self, op: Operation | None) -> Operation | None:
        """The layer whose encoding a data-movement op passes on (None: a model input)."""
        while isinstance(op, PASSTHROUGH):
            value = op.operands[0]
            while isinstance(value.owner, q.DequantizeOp | q.PrecisionChangeOp | q.QuantizeOp):
                value = value.owner.operands[0]
            if not isinstance(value, OpResult):
                return None
            op = self.layer_of.get(value.op, value.op)
        return op

    # -- constants ---------------------------------------------------------------------

    def quantize_constants(self, op: Operation) -> None:
        layer = self.layer(op)
        for index, operand in enumerate(op.operands):
            owner = operand.owner
            if not isinstance(owner, nn.ConstantOp) or not _is_float_tensor(operand):
                continue
            values = array_of(owner.value)  # type: ignore[arg-type]
            role = _constant_role(op, index)
            override = self.override("param", operand)
            if override is not None and override.is_float:
                continue  # the overrides keep this parameter in float
            axis = _output_channel_axis(op, values.ndim) if role == "weight" else None
            if override is not None and override.has_range:
                qtype: q.QuantizedType = override.to_type(axis=axis or 0)
            elif role == "bias":
                qtype = self.bias_type(values, op, layer, override.bits if override else None)
            else:
                bits = override.bits if override is not None else \
                    layer.precision.activation_bits if role == "data" else \
                    layer.precision.weight_bits
                symmetric = role != "data" or (override is not None and override.symmetric)
                per_channel = role == "weight" and layer.weights == "per-channel"
                qtype = _constant_type(values, bits, symmetric, axis if per_channel else None)
            constant = q.ConstantOp(dense_of(quantize_array(values, qtype)),
                                    TensorType(qtype, list(values.shape)), owner.node_name)
            dequantize = q.DequantizeOp(constant, owner.node_name)
            self.block.insert_ops_before([constant, dequantize], op)
            op.operands[index] = dequantize.results[0]
            if not any(owner.results[0].uses):
                self.block.erase_op(owner)

    def bias_type(self, values: np.ndarray, op: Operation, layer,  # type: ignore[no-untyped-def]
                  bits: int | None) -> q.QuantizedType:
        """See `bias_type` (the module function); `bits` comes from an overrides entry."""
        weight = op.operands[1].owner
        weight_type = weight.input.type.element_type if isinstance(weight, q.DequantizeOp) \
            else None
        return bias_type(values, self.input_scale(op.operands[0]),
                         weight_type if isinstance(weight_type, q.QuantizedType) else None,
                         bits, layer.bias_mode == "double_scale_initialization")

    def input_scale(self, value: SSAValue) -> float | None:
        """The scale of the activation an op reads (None if it reads a float tensor)."""
        owner = value.owner
        if isinstance(owner, q.DequantizeOp):
            element = owner.input.type.element_type
            if isinstance(element, q.UniformQuantizedType):
                return element.scale
        return None

    def override(self, kind: str, value: SSAValue):  # type: ignore[no-untyped-def]
        """The overrides-file entry of an activation or a parameter, or None."""
        overrides = getattr(self.config, "overrides", None)
        if overrides is None:
            return None
        if kind == "activation":
            return overrides.activation(self.tensor_name(value))
        return overrides.param(getattr(value.owner, "node_name", ""))


def bias_type(values: np.ndarray, input_scale: float | None,
              weight_type: q.QuantizedType | None, bits: int | None = None,
              double_scale: bool = False) -> q.QuantizedType:
    """The encoding of a bias: int32 at s_x * s_w (per channel when the weights are);
    `bits` (an overrides width) or `double_scale` (double_scale_initialization) give a
    symmetric per-tensor encoding with its own scale (16 bits by default); a bias of an
    op that reads a float input or float weights gets its own 32-bit scale."""
    if bits is not None or double_scale:
        return _constant_type(values, bits or 16, True, None)
    if input_scale is None or weight_type is None:
        return _constant_type(values, 32, True, None)
    scales = np.array([input_scale * s for s in weight_type.scales])
    # 16-bit inputs and weights put s_x * s_w near 1e-10: a bias that would not fit
    # int32 there is stored at s_x * s_w * 2^k, the smallest k that fits (lowering
    # adds it to the accumulator shifted left by k).
    per_channel = values.reshape(len(scales), -1) if len(scales) > 1 else values.reshape(1, -1)
    largest = float(np.max(np.abs(per_channel) / scales.reshape(-1, 1))) if values.size else 0
    if largest > INT32_MAX:
        scales = scales * 2.0 ** math.ceil(math.log2(largest / INT32_MAX))
    scales = [float(s) for s in scales]
    if len(scales) == 1:
        return q.UniformQuantizedType.get("i32", scales[0], 0)
    return q.PerAxisQuantizedType.get("i32", tuple(scales), (0,) * len(scales), axis=0)


def group_layers(ops: Sequence[Operation]) -> dict[Operation, Operation]:
    """Layer members (a batch norm, an activation) -> the anchor op of their layer.

    A member follows the anchor (or the previous member) as the sole user of its
    first operand: conv -> batch_norm -> relu is one layer, whose output is relu's.
    An op carrying a fused activation (fuse-activation: `activation = "relu"`, a conv
    or a residual add) is a whole layer by itself: its output is the layer's.
    """
    layer_of: dict[Operation, Operation] = {}
    for op in ops:
        if not isinstance(op, ANCHORS) or "activation" in op.properties:
            continue
        current = op
        allowed: tuple[type, ...] = (*FOLDED_NORMS, *FUSED_ACTIVATIONS) \
            if isinstance(op, WEIGHTED) else FUSED_ACTIVATIONS
        while len(current.results) == 1:
            uses = list(current.results[0].uses)
            if len(uses) != 1:
                break
            user = uses[0].operation
            if current is op and isinstance(op, WEIGHTED) and _is_bias_add(user, uses[0].index):
                # MatMul + Add(bias) as exporters write a Linear: the bias joins the
                # accumulator, as Gemm's would (no rounding to 8 bits in between).
                layer_of[user] = op
                current, allowed = user, FUSED_ACTIVATIONS
                continue
            if not isinstance(user, allowed) or uses[0].index != 0:
                break
            layer_of[user] = op
            current = user
            allowed = FUSED_ACTIVATIONS if isinstance(user, FOLDED_NORMS) else ()
    return layer_of


def layer_groups(ops: Sequence[Operation]) -> dict[Operation, list[Operation]]:
    """Each layer as its anchor -> its ops in program order (the anchor first; the last
    writes the layer's output), from `group_layers`."""
    layer_of = group_layers(ops)
    groups: dict[Operation, list[Operation]] = {}
    for op in ops:
        anchor = op
        while anchor in layer_of:  # conv -> bias add -> relu: the root
            anchor = layer_of[anchor]
        groups.setdefault(anchor, []).append(op)
    return groups


def _is_bias_add(user: Operation, index: int) -> bool:
    """An add of a constant that does not broadcast the producer's output any larger."""
    if not isinstance(user, nn.AddOp) or "activation" in user.properties:
        return False
    other = user.operands[1 - index]
    return isinstance(other.owner, nn.ConstantOp) and \
        user.results[0].type == user.operands[index].type


def _constant_type(values: np.ndarray, bits: int, symmetric: bool,
                   axis: int | None) -> q.QuantizedType:
    """The encoding of a constant from its own range: per tensor, or per channel along
    `axis` (symmetric, as QNN requires for per-channel encodings)."""
    if axis is None:
        return encoding_from_range(float(values.min()), float(values.max()), bits=bits,
                                   symmetric=symmetric).to_type()
    rows = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    encodings = [encoding_from_range(float(row.min()), float(row.max()), bits=bits,
                                     symmetric=True) for row in rows]
    return q.PerAxisQuantizedType.get(encodings[0].storage, tuple(e.scale for e in encodings),
                                      tuple(e.zero_point for e in encodings), axis=axis)


def _output_channel_axis(op: Operation, rank: int) -> int | None:
    if isinstance(op, nn.ConvOp):
        return 0
    if isinstance(op, nn.ConvTransposeOp):
        return 1 if op.props.int("group") == 1 else None
    if isinstance(op, nn.GemmOp):
        return 0 if op.props.int("trans_b") else 1
    if isinstance(op, nn.MatMulOp):
        return rank - 1 if rank >= 2 else None
    return None


def _constant_role(op: Operation, index: int) -> str:
    """weight / bias / param (normalisation scales, symmetric) / data (asymmetric)."""
    if isinstance(op, WEIGHTED) and index == 1:
        return "weight"
    if isinstance(op, nn.ConvOp | nn.ConvTransposeOp) and index == 2:
        return "bias"
    if isinstance(op, nn.GemmOp) and index == 2:
        return "bias" if len(op.operands[2].type.get_shape()) <= 1 else "data"  # type: ignore[attr-defined]
    if isinstance(op, nn.LayerNormOp | nn.BatchNormOp | nn.PReluOp):
        return "param"
    return "data"


def _is_float_tensor(value: SSAValue) -> bool:
    type_ = value.type
    return isinstance(type_, TensorType) and type_.element_type == nn.f32


def _value_name(value: SSAValue) -> str:
    if value.name_hint:
        return value.name_hint
    if isinstance(value, OpResult):
        return f"{getattr(value.op, 'node_name', value.op.name)}:{value.index}"
    if isinstance(value, BlockArgument):
        return f"arg{value.index}"
    return "value"


def _node(op: Operation | None, value: SSAValue | None) -> str:
    if op is None:
        return f"input {_value_name(value)}" if value is not None else "model input"
    return getattr(op, "node_name", op.name)


__all__ = ["QuantizePass", "bias_type", "group_layers", "layer_groups", "op_kind"]
