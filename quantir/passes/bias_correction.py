"""`bias-correction{mode=empirical|analytic}`: move the systematic output error of the
quantized layers into their biases.

Quantized weights W_q = W + e shift the mean of a layer's output by e E[x], and
quantized inputs shift it further; a bias can take the shift back. The pass runs on
the quantization-annotated module (after `quantize`) and rewrites, per output channel,
the bias of every conv / gemm / matmul whose weight is a quantized constant. An int32
bias stays an int32 `q.constant` at its scale (s_x * s_w): the correction is rounded to
that grid, saturating at the storage range (reported). A float bias (the `nn.add` of a
constant after a MatMul) takes the correction in float.

Two modes, both against the float reference module (below):

* `empirical` (Hailo's iterative bias correction, Finkelstein et al. 2019; Nagel et al.
  2019, section 4.2, empirical): over the calibration data, the mean per output
  channel of the layer's pre-activation output in the float reference minus the same
  mean in the quantized module, layer by layer in program order, so each layer is
  measured with the corrections of the layers before it in place. Pre-activation:
  the op's own output without its fused `activation` (conv + ReLU is corrected before
  the ReLU); for MatMul + bias add, the add's output. Cost: one float run over the
  data, then one quantized run per layer (each stopping at that layer).
* `analytic` (data-free, Nagel et al. 2019, section 4.2): -e E[x], with E[x] per input
  channel from the batch-norm statistics of the layer producing the input
  (`quantir.bn_stats`, left by `fuse-bn`): that layer's pre-activation is taken as
  N(beta, gamma^2) per channel, and its ReLU / clip as clipping that normal, whose mean
  is the clipped-normal formula (`clipped_normal_mean`). A layer whose input has no
  such statistics (the model input, a residual add, a pooling) is left alone and
  reported; zero padding is ignored (as in the paper).

The float reference. The annotated module holds W_q only, so the float weights come
from the float module `quantize` ran on: `correct_biases(module, reference, ...)` in
Python (`quantize_model` keeps a copy before quantizing), or the `reference=FILE`
option (an `.mlir` of that module printed with its constants, or the `.onnx` model;
batch norms in it are folded as `fuse-bn` does). Layers match by ONNX node name, and
each matched weight must round to the quantized one (within half a step, clipped
values aside): a reference that `cle` or another rewrite changed differently is an
error, not a silent miscorrection.

Left alone, one report line each: layers running in float (their weights are not
quantized: no weight error, and their bias is float), layers without a bias (no bias
is created: the layer's integer program keeps the shape `quantize` gave it; add a zero
bias to the model to correct such a layer), layers absent from the reference. Every
corrected layer is reported with its largest |correction| in LSB of its output
encoding. All reports are QuantirWarning lines (`bias-correction: ...`).

Errors (QuantirError, one line, the module unchanged): a module without quantized
weights, no reference, empirical mode without data (`data=FILE` or
`quantir.compile(..., calibration=...)`), a reference that does not match. Data read
in empirical mode must be re-iterable (a file, an array, a list: the pass reads it once
per layer). If reading fails half-way, every bias already rewritten is restored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn, q
from quantir.dialects.q_math import dequantize_array
from quantir.errors import PipelineError, QuantirError
from quantir.ir import array_of, dense_of, dtype_of, is_elided, shape_of
from quantir.passes.constants import report
from quantir.passes.fuse_bn import bn_stats, fuse_batch_norms
from quantir.passes.quantize import FOLDED_NORMS, FUSED_ACTIVATIONS
from quantir.runtime.executor import Program, main_function

MODES = ("empirical", "analytic")
CORRECTED = (nn.ConvOp, nn.GemmOp, nn.MatMulOp)
Q_CHAIN = (q.DequantizeOp, q.QuantizeOp, q.PrecisionChangeOp)


@dataclass(frozen=True)
class BiasCorrectionPass(ModulePass):
    """Correct the biases of a quantization-annotated module (see the module docstring).

    `reference`: the float model file (default: the float module the pipeline's
    `quantize` pass saw, which it leaves in the context as `float_reference`);
    `data` / `calibset_size`: the data for mode=empirical (default: the pipeline's
    calibration handle and QuantConfig)."""

    name = "bias-correction"

    mode: str = "empirical"
    reference: str | None = None
    data: str | None = None
    calibset_size: int | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode not in MODES:
            raise PipelineError(f"bias-correction: mode={self.mode} is not one of "
                                f"{', '.join(MODES)}")
        settings = getattr(getattr(ctx, "config", None), "calibration", None)
        calibset_size = self.calibset_size or getattr(settings, "calibset_size", None)
        reference = _load_reference(self.reference) if self.reference else \
            getattr(ctx, "float_reference", None)
        correct_biases(op, reference, self.mode,
                       self.data or getattr(ctx, "calibration", None), calibset_size)


def correct_biases(module: ModuleOp, reference: ModuleOp | None, mode: str = "empirical",
                   calibration: Any = None, calibset_size: int | None = None) -> list[str]:
    """Correct `module`'s biases in place against the float `reference` module (the
    module `quantize` ran on); returns the report lines (also warned)."""
    name = f"bias-correction{{mode={mode}}}"
    function = main_function(module)
    layers, lines = _layers(function)
    if not any(isinstance(op, q.ConstantOp) for op in function.body.block.ops):
        raise QuantirError(f"{name}: the module is not quantized (no q.constant weights); "
                           "run it after quantize, e.g. -p 'calibrate,quantize,"
                           "bias-correction{reference=model.onnx}'")
    if reference is None:
        raise QuantirError(f"{name}: no float reference: the quantized module keeps only the "
                           "quantized weights; give bias-correction{reference=FILE} (the float "
                           ".onnx or .mlir quantize ran on) or call correct_biases(module, "
                           "float_module, ...)")
    if mode == "empirical":
        check_data(calibration, name)
    layers, unmatched = _match(layers, main_function(reference))
    lines += unmatched
    if mode == "analytic":
        corrections, skipped = _analytic(layers)
        lines += skipped
        lines += _apply(layers, corrections)
    else:
        lines += _empirical(function, main_function(reference), layers, calibration,
                            calibset_size)
    return report("bias-correction", lines)


def copy_corrected_biases(source: ModuleOp, target: ModuleOp) -> None:
    """Give each layer of `target` the bias its namesake in `source` has: two imports of
    one model (at different batches, say), quantized alike, one of them corrected."""
    corrected = {_node(layer.anchor): layer.bias.constant
                 for layer in _layers(main_function(source))[0]}
    for layer in _layers(main_function(target))[0]:
        found = corrected.get(_node(layer.anchor))
        if found is None or found.value == layer.bias.constant.value:
            continue
        if found.output.type != layer.bias.constant.output.type:
            raise QuantirError(f"bias-correction: the bias of {layer.label} has another "
                               "type in the corrected module; quantize both alike")
        layer.bias.detach()
        layer.bias.constant.properties["value"] = found.value


def check_data(calibration: Any, name: str = "bias-correction{mode=empirical}") -> None:
    """Raise QuantirError unless `calibration` is data empirical correction can use: it
    is read once per layer, so a one-shot iterator (a generator) will not do."""
    if calibration is None:
        raise QuantirError(f"{name}: no calibration data; give bias-correction{{data=FILE}} or "
                           "quantir.compile(..., calibration=...), or use mode=analytic "
                           "(data-free)")
    if isinstance(calibration, Iterator):
        raise QuantirError(f"{name}: the calibration data is a one-shot iterator (e.g. a "
                           "generator), but bias correction reads it once per layer; give a "
                           "file, an array or a list")


# -- layers ----------------------------------------------------------------------------


@dataclass
class _Bias:
    """The bias operand `index` of `op`: an nn.constant, or a q.constant read through a
    q.dequantize. `divisor`: what the op multiplies it by (gemm's beta)."""

    op: Operation
    index: int
    divisor: float = 1.0

    @property
    def constant(self) -> nn.ConstantOp | q.ConstantOp:
        owner = self.op.operands[self.index].owner
        if isinstance(owner, q.DequantizeOp):
            owner = owner.input.owner
        assert isinstance(owner, nn.ConstantOp | q.ConstantOp)
        return owner

    def add(self, delta: np.ndarray) -> tuple[Attribute, bool]:
        """Add `delta` (per channel, in output units) to the bias; the old value
        attribute (to restore it) and whether the quantized bias saturated."""
        self.detach()
        constant = self.constant
        old = constant.value
        values = array_of(old)  # type: ignore[arg-type]
        delta = (delta / self.divisor).reshape(values.shape)
        saturated = False
        if isinstance(constant, q.ConstantOp):
            # In steps of the bias's own scale, on the integers (exact for any int32).
            qtype = constant.output.type.element_type  # type: ignore[attr-defined]
            wanted = values.astype(np.int64) + np.rint(delta / _broadcast(qtype.scales, qtype,
                                                                          values.ndim))
            new = np.clip(wanted, qtype.storage_min, qtype.storage_max).astype(values.dtype)
            saturated = bool(np.any(new != wanted))
        else:
            new = (values.astype(np.float64) + delta).astype(values.dtype)
        constant.properties["value"] = dense_of(new)
        return old, saturated

    def detach(self) -> None:
        """Give the op its own copy of the bias constant (and q.dequantize) if shared."""
        operand = self.op.operands[self.index]
        chain: list[Operation] = [operand.owner]  # type: ignore[list-item]
        if isinstance(chain[0], q.DequantizeOp):
            chain.insert(0, chain[0].input.owner)  # type: ignore[arg-type]
        if all(len(list(op.results[0].uses)) == 1 for op in chain):
            return
        mapping: dict[SSAValue, SSAValue] = {}
        copies = []
        for op in chain:  # the q.dequantize copy reads the q.constant copy
            copies.append(op.clone(value_mapper=mapping))
            mapping[op.results[0]] = copies[-1].results[0]
        block = self.op.parent_block()
        assert block is not None
        block.insert_ops_before(copies, self.op)
        self.op.operands[self.index] = copies[-1].results[0]


@dataclass
class _Layer:
    anchor: Operation  # the conv / gemm / matmul
    pre: Operation  # its output without a fused activation is the pre-activation
    bias: _Bias
    weight: np.ndarray  # W_q as the module computes with it (float32)
    lsb: float | None  # the scale of the layer's output encoding
    reference: Operation | None = None  # the `pre` op of the float reference
    reference_weight: np.ndarray | None = None

    @property
    def label(self) -> str:
        return f"'{_node(self.anchor)}'"

    @property
    def axis(self) -> int:
        """The channel axis of the pre-activation output."""
        return -1 if isinstance(self.anchor, nn.MatMulOp) else 1


def _node(op: Operation) -> str:
    return getattr(op, "node_name", op.name)


def _layers(function: func.FuncOp) -> tuple[list[_Layer], list[str]]:
    """The layers to correct, in program order, and a line per layer left alone."""
    layers, lines = [], []
    for anchor in function.body.block.ops:
        if not isinstance(anchor, CORRECTED):
            continue
        weight_owner = anchor.operands[1].owner
        if isinstance(weight_owner, nn.ConstantOp):
            lines.append(f"left '{_node(anchor)}' alone: it runs in float (its weights are "
                         "not quantized)")
            continue
        if not (isinstance(weight_owner, q.DequantizeOp)
                and isinstance(weight_owner.input.owner, q.ConstantOp)):
            continue  # a product of two computed tensors (attention): no weights
        pre = _pre_activation(anchor)
        bias, why = _find_bias(anchor, pre)
        if bias is None:
            lines.append(f"left '{_node(anchor)}' alone: {why}")
            continue
        weight = dequantize_array(array_of(weight_owner.input.owner.value),  # type: ignore[arg-type]
                                  weight_owner.input.type.element_type)  # type: ignore[attr-defined]
        layers.append(_Layer(anchor, pre, bias, weight, _output_lsb(pre)))
    return layers, lines


def _pre_activation(anchor: Operation) -> Operation:
    """The op whose output, without a fused activation, is the layer's pre-activation:
    the add of a constant (a bias) reading the anchor's output, else the anchor itself.
    (`quantize` keeps MatMul + bias Add as one layer; q ops between them are looked
    through.)"""
    if anchor.properties.get("activation") is not None:
        return anchor
    value = anchor.results[0]
    while len(uses := list(value.uses)) == 1:
        user = uses[0].operation
        if isinstance(user, Q_CHAIN):
            value = user.results[0]
            continue
        if isinstance(user, nn.AddOp) and user.properties.get("activation") is None \
                and _constant_of(user.operands[1 - uses[0].index]) is not None:
            return user
        break
    return anchor


def _constant_of(value: SSAValue) -> nn.ConstantOp | q.ConstantOp | None:
    """The constant `value` is (directly, or through one q.dequantize), or None."""
    owner = value.owner
    if isinstance(owner, q.DequantizeOp):
        owner = owner.input.owner
    return owner if isinstance(owner, nn.ConstantOp | q.ConstantOp) else None


def _channels(anchor: Operation, weight_shape: tuple[int, ...]) -> int:
    if isinstance(anchor, nn.ConvOp):
        return weight_shape[0]
    if isinstance(anchor, nn.GemmOp):
        return weight_shape[0] if anchor.props.int("trans_b") else weight_shape[1]
    return weight_shape[-1]


def _find_bias(anchor: Operation, pre: Operation) -> tuple[_Bias | None, str]:
    """The layer's bias operand, or why there is none to correct."""
    if pre is not anchor:  # MatMul (or conv) + Add of a constant
        index = next(i for i, operand in enumerate(pre.operands)
                     if _constant_of(operand) is not None)
        bias = _Bias(pre, index)
    elif isinstance(anchor, nn.ConvOp | nn.GemmOp) and len(anchor.operands) == 3:
        beta = anchor.props.float("beta") if isinstance(anchor, nn.GemmOp) else 1.0
        if beta == 0.0:
            return None, "its bias is multiplied by beta = 0"
        bias = _Bias(anchor, 2, beta)
    else:
        return None, ("no bias to correct (bias-correction creates none; give the layer a "
                      "zero bias in the model to correct it)")
    constant = _constant_of(bias.op.operands[bias.index])
    if constant is None:
        return None, "its bias is computed, not a constant"
    if is_elided(constant.value):
        return None, "its bias constant was elided when the module was printed"
    channels = _channels(anchor, shape_of(anchor.operands[1].type))
    shape = shape_of(constant.output.type)
    if pre is not anchor:  # an add's operand broadcasts against the output
        rank = len(shape_of(pre.results[0].type))
        shape = (1,) * (rank - len(shape)) + shape
        axis = rank - 1 if isinstance(anchor, nn.MatMulOp) else 1
    else:  # conv's bias, gemm's C: a vector over the output channels
        axis = len(shape) - 1
    if math.prod(shape) != channels or any(n != 1 for i, n in enumerate(shape) if i != axis):
        return None, f"its bias (shape {list(shape_of(constant.output.type))}) is not one " \
                     "value per output channel"
    return bias, ""


def _output_lsb(pre: Operation) -> float | None:
    """The scale of the layer's output encoding (after its standalone activation or
    batch norm, if any); None if the layer writes float."""
    value = pre.results[0]
    while len(uses := list(value.uses)) == 1 and \
            isinstance(uses[0].operation, (*FUSED_ACTIVATIONS, *FOLDED_NORMS)):
        value = uses[0].operation.results[0]
    for use in value.uses:
        if isinstance(use.operation, q.QuantizeOp):
            return float(use.operation.output.type.element_type.scales[0])  # type: ignore[attr-defined]
    return None


# -- the float reference ---------------------------------------------------------------


def _load_reference(path: str) -> ModuleOp:
    from quantir.runtime.session import load_any

    module = load_any(path)
    if any(isinstance(op, nn.BatchNormOp) for op in module.walk()):
        fuse_batch_norms(module)
    return module


def _match(layers: list[_Layer], reference: func.FuncOp) -> tuple[list[_Layer], list[str]]:
    """Pair each layer with the reference op of the same node name; check the weights."""
    by_name: dict[str, list[Operation]] = {}
    for op in reference.body.block.ops:
        if isinstance(op, CORRECTED):
            by_name.setdefault(op.node_name, []).append(op)
    matched, lines = [], []
    for layer in layers:
        found = [op for op in by_name.get(_node(layer.anchor), [])
                 if type(op) is type(layer.anchor)]
        weight = _constant_of(found[0].operands[1]) if len(found) == 1 else None
        if not isinstance(weight, nn.ConstantOp) or is_elided(weight.value):
            lines.append(f"left {layer.label} alone: the reference has no {layer.anchor.name} "
                         "of that name with a float constant weight")
            continue
        layer.reference_weight = array_of(weight.value)  # type: ignore[arg-type]
        _check_weight(layer)
        layer.reference = _pre_activation(found[0])
        if (layer.reference is found[0]) != (layer.pre is layer.anchor):
            lines.append(f"left {layer.label} alone: its bias add differs in the reference")
            continue
        matched.append(layer)
    return matched, lines


def _check_weight(layer: _Layer) -> None:
    """The reference weight must quantize to the module's (within half a step)."""
    owner = layer.anchor.operands[1].owner
    qtype = owner.input.type.element_type  # type: ignore[attr-defined]
    float_weight = layer.reference_weight
    assert float_weight is not None
    if float_weight.shape != layer.weight.shape:
        raise QuantirError(f"bias-correction: the reference weight of {layer.label} has shape "
                           f"{list(float_weight.shape)}, the quantized one "
                           f"{list(layer.weight.shape)}; give the float module quantize ran on")
    scales = _broadcast(qtype.scales, qtype, layer.weight.ndim)
    zero_points = _broadcast(qtype.zero_points, qtype, layer.weight.ndim)
    inside = (float_weight >= (qtype.storage_min - zero_points) * scales) \
        & (float_weight <= (qtype.storage_max - zero_points) * scales)  # not clipped
    off = np.abs(layer.weight.astype(np.float64) - float_weight) > 0.5 * scales * 1.001 + 1e-7
    if np.any(off & inside):
        raise QuantirError(f"bias-correction: the reference weight of {layer.label} does not "
                           "round to its quantized weight; give the float module quantize ran "
                           "on (after the same fuse-bn / cle rewrites)")


def _broadcast(values: tuple[float, ...] | tuple[int, ...], qtype: q.QuantizedType,
               ndim: int) -> np.ndarray:
    """A type's scales or zero points shaped to broadcast against an `ndim` array."""
    axis = qtype.axis if isinstance(qtype, q.PerAxisQuantizedType) else None
    return np.asarray(values).reshape([-1 if i == axis else 1 for i in range(ndim)])


# -- empirical -------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by an observer once the value it waits for is computed."""


class _ChannelMeans:
    """Per-channel means of some ops' pre-activation outputs, over data fed to a function.

    An op with a fused activation is evaluated once more without it on the operands the
    program computed (the observer sees every value, constants aside).
    """

    def __init__(self, function: func.FuncOp, targets: dict[Operation, int],
                 stop_at: Operation | None = None):
        self.program = Program(function)
        self.targets = targets
        self.stop_at = stop_at
        self.bare: dict[Operation, Callable[..., tuple[np.ndarray, ...]]] = {}
        for op in targets:
            if op.properties.get("activation") is not None:
                self.bare[op] = _without_activation(op)
        self.sums: dict[Operation, np.ndarray] = {}
        self.counts: dict[Operation, int] = {}
        self.seen: dict[SSAValue, np.ndarray] = {}
        self.wanted = {operand for op in self.bare for operand in op.operands}
        self.by_result = {op.results[0]: op for op in targets}

    def observe(self, value: SSAValue, array: np.ndarray) -> None:
        if value in self.wanted:
            self.seen[value] = array
        op = self.by_result.get(value)
        if op is None:
            return
        if op in self.bare:
            array = self.bare[op](*[self.seen[v] if v in self.seen else _constant_array(v)
                                    for v in op.operands])[0]
        axis = self.targets[op] % array.ndim
        rows = np.moveaxis(array, axis, -1).reshape(-1, array.shape[axis])
        self.sums[op] = self.sums.get(op, 0) + rows.sum(axis=0, dtype=np.float64)
        self.counts[op] = self.counts.get(op, 0) + rows.shape[0]
        if op is self.stop_at:
            raise _Stop

    def run(self, batches: Iterator[list[np.ndarray]]) -> dict[Operation, np.ndarray]:
        for inputs in batches:
            try:
                self.program.run(inputs, self.observe)
            except _Stop:
                pass
        return {op: self.sums[op] / self.counts[op] for op in self.sums}


def _without_activation(op: Operation) -> Callable[..., tuple[np.ndarray, ...]]:
    """The float kernel of `op` without its fused activation."""
    from quantir.runtime.float_kernels import compile_kernel

    assert isinstance(op, nn.NNOperation)
    properties = {key: value for key, value in op.properties.items()
                  if not key.startswith("activation") and key != "onnx_name"}
    block = Block(arg_types=[operand.type for operand in op.operands])
    return compile_kernel(type(op).build_from(list(block.args), properties, op.node_name))


def _constant_array(value: SSAValue) -> np.ndarray:
    owner = value.owner
    assert isinstance(owner, nn.ConstantOp), f"{value} is neither computed nor a constant"
    return array_of(owner.value)  # type: ignore[arg-type]


def _feeds(function: func.FuncOp, calibration: Any,
           calibset_size: int | None) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Batches of the data at the function's batch size, as Program inputs."""
    from quantir.frontend.onnx_import import graph_names
    from quantir.passes.calibration_data import load_calibration_data

    args = function.body.block.args
    names = graph_names(function)[0]
    shapes = [shape_of(arg.type) for arg in args]
    batch = shapes[0][0] if shapes and shapes[0] else 1
    data = load_calibration_data(calibration, names, [s[1:] for s in shapes],
                                 [dtype_of(arg.type.element_type) for arg in args],  # type: ignore[attr-defined]
                                 calibset_size)

    def batches() -> Iterator[list[np.ndarray]]:
        for feeds in data.batches(batch):
            count = len(feeds[names[0]])
            if count != batch:
                raise QuantirError(f"bias-correction: the data ends with {count} samples, not "
                                   f"a batch of {batch} (the module's batch size); import the "
                                   "model with batch 1 or use a multiple of the batch")
            yield [feeds[name] for name in names]

    return batches


def _empirical(function: func.FuncOp, reference: func.FuncOp, layers: list[_Layer],
               calibration: Any, calibset_size: int | None) -> list[str]:
    if [shape_of(a.type) for a in reference.body.block.args] != \
            [shape_of(a.type) for a in function.body.block.args]:
        raise QuantirError("bias-correction: the reference's input shapes differ from the "
                           "module's; import both with the same input shapes")
    batches = _feeds(function, calibration, calibset_size)
    targets = {layer.reference: layer.axis for layer in layers}
    expected = _ChannelMeans(reference, targets).run(batches())  # type: ignore[arg-type]
    undo: list[tuple[Operation, Attribute]] = []
    lines = []
    try:
        for layer in layers:
            measured = _ChannelMeans(function, {layer.pre: layer.axis}, layer.pre).run(batches())
            delta = expected[layer.reference] - measured[layer.pre]  # type: ignore[index]
            lines.append(_correct(layer, delta, undo))
    except BaseException:
        for constant, value in reversed(undo):
            constant.properties["value"] = value
        raise
    return lines


# -- analytic --------------------------------------------------------------------------


def _analytic(layers: list[_Layer]) -> tuple[dict[Operation, np.ndarray], list[str]]:
    """-e E[x] per layer whose input mean the batch-norm statistics give."""
    corrections, lines = {}, []
    for layer in layers:
        mean = _input_mean(layer.anchor.operands[0])
        error = layer.weight.astype(np.float64) - layer.reference_weight  # type: ignore[operator]
        shift = _expected_shift(layer.anchor, error, mean) if mean is not None else None
        if shift is None:
            lines.append(f"left {layer.label} alone: no batch-norm statistics describe its "
                         "input (mode=analytic reads quantir.bn_stats of the layer producing "
                         "it, as fuse-bn records them; mode=empirical needs none)")
            continue
        corrections[layer.anchor] = -shift
    return corrections, lines


def _apply(layers: list[_Layer], corrections: dict[Operation, np.ndarray]) -> list[str]:
    undo: list[tuple[Operation, Attribute]] = []
    return [_correct(layer, corrections[layer.anchor], undo) for layer in layers
            if layer.anchor in corrections]


def _correct(layer: _Layer, delta: np.ndarray,
             undo: list[tuple[Operation, Attribute]]) -> str:
    old, saturated = layer.bias.add(delta)
    undo.append((layer.bias.constant, old))
    largest = float(np.max(np.abs(delta))) if delta.size else 0.0
    size = f"{largest / layer.lsb:.3g} output LSB ({largest:.3g})" if layer.lsb else \
        f"{largest:.3g} (the output is float)"
    return f"corrected {layer.label}: largest |correction| {size}" + \
        ("; the bias saturated its storage range" if saturated else "")


def _through_q(value: SSAValue) -> SSAValue:
    """The float value behind a chain of q.dequantize / q.quantize / q.precision_change."""
    while isinstance(value.owner, Q_CHAIN):
        value = value.owner.operands[0]  # type: ignore[union-attr]
    return value


def _input_mean(value: SSAValue) -> np.ndarray | None:
    """E[x] per channel (axis 1) of a layer input from the batch-norm statistics of its
    producer, through its ReLU / clip (standalone or fused); None without statistics."""
    low, high = -math.inf, math.inf
    value = _through_q(value)
    producer = value.owner
    if isinstance(producer, nn.ReluOp | nn.ClipOp):
        low = 0.0 if isinstance(producer, nn.ReluOp) else producer.props.float("min", -math.inf)
        high = math.inf if isinstance(producer, nn.ReluOp) else \
            producer.props.float("max", math.inf)
        value = _through_q(producer.operands[0])
        producer = value.owner
    if not isinstance(producer, Operation):
        return None
    stats = bn_stats(producer)
    if stats is None:
        return None
    if isinstance(producer, nn.NNOperation) and producer.props.has("activation"):
        kind = producer.props.str("activation")
        if kind == "relu":
            low = max(low, 0.0)
        elif kind == "clip":
            low = max(low, producer.props.float("activation_min", -math.inf))
            high = min(high, producer.props.float("activation_max", math.inf))
        else:
            return None  # HardSwish & co: no closed form here
    beta, gamma = stats
    return clipped_normal_mean(beta, np.abs(gamma), low, high)


def clipped_normal_mean(mean: np.ndarray, std: np.ndarray, low: float,
                        high: float) -> np.ndarray:
    """E[clip(z, low, high)] for z ~ N(mean, std^2), elementwise (Nagel et al. 2019,
    appendix: the ReLU case is low = 0, high = inf):

        low Phi(a) + high (1 - Phi(b)) + mean (Phi(b) - Phi(a)) + std (phi(a) - phi(b)),
        a = (low - mean) / std, b = (high - mean) / std

    (a term with an infinite bound is 0); std = 0 gives clip(mean, low, high).
    """
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    safe = np.where(std > 0, std, 1.0)
    cdf = np.vectorize(lambda t: 0.5 * (1.0 + math.erf(t / math.sqrt(2.0))), otypes=[float])

    def pdf(t: np.ndarray) -> np.ndarray:  # 0 at an infinite bound
        finite = np.isfinite(t)
        return np.where(finite, np.exp(-0.5 * np.square(np.where(finite, t, 0.0))), 0.0) \
            / math.sqrt(2 * math.pi)

    a, b = (low - mean) / safe, (high - mean) / safe
    result = mean * (cdf(b) - cdf(a)) + safe * (pdf(a) - pdf(b))
    if math.isfinite(low):
        result = result + low * cdf(a)
    if math.isfinite(high):
        result = result + high * (1.0 - cdf(b))
    return np.where(std > 0, result, np.clip(mean, low, high))


def _expected_shift(anchor: Operation, error: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """e E[x] per output channel (None when E[x] does not fit the layer's input)."""
    if isinstance(anchor, nn.ConvOp):
        group = anchor.props.int("group")
        outputs, per_group = error.shape[:2]
        if mean.size != per_group * group:
            return None
        kernel_sums = error.reshape(outputs, per_group, -1).sum(axis=2)
        means = mean.reshape(group, per_group)[np.arange(outputs) // (outputs // group)]
        return (kernel_sums * means).sum(axis=1)
    if isinstance(anchor, nn.GemmOp):
        if anchor.props.int("trans_a"):
            return None
        matrix = error if anchor.props.int("trans_b") else error.T  # (N, K)
        return anchor.props.float("alpha") * matrix @ mean if matrix.shape[1] == mean.size \
            else None
    if len(shape_of(anchor.operands[0].type)) != 2 or error.ndim != 2 \
            or error.shape[0] != mean.size:
        return None  # a batch norm's channels are the matmul's features only in 2-d
    return mean @ error
