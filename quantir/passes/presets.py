"""The main job, as a sound pass order: import, calibrate, quantize (`quantir quantize`).

    result = quantize_model("model.onnx", "calib.npz", QuantConfig.build(precision="a8_w8"))
    result.module            # the quantization-annotated module (runs in quantir.Session)
    result.encodings()       # AIMET-format activation / param encodings
    result.summary()         # one row per layer: name, op, precision, scales

Calibration runs on an import at the calibration batch size (dynamic batch models
only); the ranges then move by ONNX node name onto the batch-1 import that is
quantized and written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from quantir.dialects import q
from quantir.frontend.onnx_import import import_onnx, load_onnx
from quantir.passes import compile
from quantir.passes.ranges import copy_ranges
from quantir.runtime.executor import main_function


@dataclass
class SummaryRow:
    layer: str
    op: str
    precision: str
    source: str
    output_scale: str
    weight_scales: str


@dataclass
class QuantizationResult:
    module: ModuleOp
    config: Any

    def encodings(self) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
        """AIMET-format (activation_encodings, param_encodings)."""
        from quantir.passes.encodings_file import entries_for_type

        activations: dict[str, list[dict]] = {}
        params: dict[str, list[dict]] = {}
        for op in self.module.walk():
            if isinstance(op, q.QuantizeOp):
                activations[op.node_name] = entries_for_type(op.output.type.element_type)
            elif isinstance(op, q.ConstantOp):
                params[op.node_name] = entries_for_type(op.output.type.element_type)
        return activations, params

    def summary(self) -> list[SummaryRow]:
        """One row per layer (a conv with its batch norm and activation is one layer)."""
        from quantir.dialects import nn
        from quantir.passes.legality import Annotated
        from quantir.passes.quantize import group_layers, op_kind

        function = main_function(self.module)
        ops = [op for op in function.body.block.ops
               if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp)]
        layer_of = group_layers(ops)
        last: dict[Operation, Operation] = {}  # anchor -> the op writing the layer output
        for member, anchor in layer_of.items():
            last[anchor] = member
        quantized = {op.input: op for op in function.body.block.ops
                     if isinstance(op, q.QuantizeOp)}
        # The widths the module runs at, which legalize may have changed.
        running = {layer.op: layer.mode() for layer in Annotated(self.module).layers}
        rows = []
        for op in ops:
            if op in layer_of:
                continue
            layer = self.config.layer(op.node_name, op_kind(op))
            output = last.get(op, op).results[0]
            weights = [operand.owner.input.type.element_type for operand in op.operands
                       if isinstance(operand.owner, q.DequantizeOp)
                       and isinstance(operand.owner.input.owner, q.ConstantOp)]
            members = "+".join([op_kind(m) for m in layer_of if layer_of[m] is op]
                               + ([op.properties["activation"].data]  # type: ignore[attr-defined]
                                  if "activation" in op.properties else []))
            precision = "float" if layer.float_fallback else str(layer.precision)
            mode = running.get(op)
            if mode is not None and not layer.float_fallback and str(mode) != precision:
                precision = f"{mode} (was {precision})"
            rows.append(SummaryRow(
                op.node_name, op_kind(op) + (f"+{members}" if members else ""),
                precision, layer.source,
                _scales(quantized[output].output.type.element_type)
                if output in quantized else "-",
                _scales(weights[0]) if weights else "-"))
        return rows


def _scales(element: q.QuantizedType) -> str:
    scales = element.scales
    low, high = min(scales), max(scales)
    text = f"{low:.3g}" if math.isclose(low, high) else f"{low:.3g}..{high:.3g}"
    return f"{text} ({element.storage_name})"


def quantize_model(model: str | Path, calibration: Any, config: Any,
                   input_shapes: Mapping[str, Sequence[int]] | None = None) \
        -> QuantizationResult:
    """Import, calibrate and quantize an ONNX model (nothing is written).

    With `config.bias_correction` (the script line
    `post_quantization_optimization(bias_correction, policy=enabled)`), the quantized
    biases are then corrected empirically on the calibration data against the float
    module (`bias-correction{mode=empirical}`): the data is read once more per layer,
    so it must be re-iterable (a file, an array, a list; not a generator)."""
    from quantir.dialects import nn
    from quantir.passes.bias_correction import check_data, copy_corrected_biases
    from quantir.passes.quantize import op_kind

    if config.bias_correction:
        check_data(calibration, "post_quantization_optimization(bias_correction)")
    settings = config.calibration
    calibration_shapes = _batched_shapes(model, input_shapes, settings.batch_size,
                                         settings.calibset_size)
    # Batch norms fold first (CLE needs them gone), then equalization if the script
    # asks for it, then activations join their producers; both imports get the same.
    rewrites = ",".join(["fuse-bn", *(["cle"] if config.equalization else []),
                         "fuse-activation"])
    calibrated = import_onnx(model, calibration_shapes)
    compile(calibrated, f"{rewrites},calibrate", calibration=calibration, config=config)
    module = import_onnx(model, input_shapes)
    compile(module, rewrites, config=config)
    layers = [op for op in main_function(module).body.block.ops
              if isinstance(op, nn.NNOperation) and not isinstance(op, nn.ConstantOp)]
    config.check_globs([op.node_name for op in layers], {op_kind(op) for op in layers})
    copy_ranges(main_function(calibrated), main_function(module))
    tensor_names = _tensor_names(load_onnx(model))
    compile(module, "quantize", config=config, tensor_names=tensor_names)
    if config.bias_correction:
        # Bias correction (post_quantization_optimization(bias_correction,
        # policy=enabled)) runs the data through the module, so it runs on the
        # calibration import, whose batch divides the data (the module's may not),
        # against the float module `quantize` leaves in the context. The corrected
        # biases then move over layer by layer: quantization is batch-independent.
        compile(calibrated, "quantize,bias-correction{mode=empirical}",
                calibration=calibration, config=config, tensor_names=tensor_names)
        copy_corrected_biases(calibrated, module)
    return QuantizationResult(module, config)


def preset_pipeline(config: Any, calibration: str, *, precision: str | None = None,
                    weights: str | None = None, activations: str | None = None,
                    script: str | None = None, overrides: str | None = None,
                    rounding: str = "single", target: str | None = None,
                    legalize: bool = False) -> str:
    """The pass pipeline `quantir quantize` runs, as one `quantir-opt -p` string: batch
    norms fold, equalization when the script asks for it, activations fuse, then
    calibrate, quantize, bias correction when asked for, the target's legalize (when
    asked for) and legality check, and lower-to-int. Every option
    is explicit, so `quantir-opt model.onnx -p '...' --print-ir-after-all` shows each
    step (it calibrates at batch 1)."""
    settings = config.calibration
    steps = ["fuse-bn", *(["cle"] if config.equalization else []), "fuse-activation",
             pass_spec("calibrate", data=calibration, method=settings.method,
                       calibset_size=settings.calibset_size, percentile=settings.percentile),
             pass_spec("quantize", precision=precision, weights=weights,
                       activations=activations, script=script, overrides=overrides)]
    if config.bias_correction:
        steps.append(pass_spec("bias-correction", mode="empirical", data=calibration,
                               calibset_size=settings.calibset_size))
    if legalize:
        steps.append(pass_spec("legalize", target=target))
    if target is not None:
        steps.append(pass_spec("legality", target=target))
    steps.append(pass_spec("lower-to-int", rounding=rounding))
    if target is not None:  # the integer program too (IR level 3)
        steps.append(pass_spec("legality", target=target))
    return ",".join(steps)


def pass_spec(name: str, **options: object) -> str:
    """`name{a=1 b="x/y"}` with the options that are set (kebab-case, paths quoted)."""
    given = []
    for key, value in options.items():
        if value is None:
            continue
        text = str(value)
        if not text.replace("_", "").replace("-", "").replace(".", "").isalnum():
            text = '"' + text.replace('"', '\\"') + '"'
        given.append(f"{key.replace('_', '-')}={text}")
    return f"{name}{{{' '.join(given)}}}" if given else name


def _batched_shapes(model: str | Path, input_shapes: Mapping[str, Sequence[int]] | None,
                    batch_size: int, calibset_size: int | None) -> dict[str, list[int]] | None:
    """Input shapes with a dynamic batch set to the calibration batch size (when that
    divides the calibration set; else 1), whatever batch the quantized module gets."""
    shapes = {name: list(shape) for name, shape in (input_shapes or {}).items()}
    if batch_size <= 1 or (calibset_size and calibset_size % batch_size):
        batch_size = 1
    if batch_size == 1 and not shapes:
        return None
    graph = load_onnx(model).graph
    initializers = {init.name for init in graph.initializer}
    for graph_input in graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if graph_input.name in initializers or not dims or dims[0].HasField("dim_value"):
            continue
        base = shapes.get(graph_input.name) or [d.dim_value for d in dims]
        if all(base[1:]):  # other dynamic dimensions need sizes from the user
            shapes[graph_input.name] = [batch_size, *base[1:]]
    return shapes or None


def _tensor_names(model: onnx.ModelProto) -> dict[tuple[str, int], str]:
    """(node name, output index) -> the ONNX tensor name (SSA names drop suffixes)."""
    return {(node.name or node.output[0], index): output
            for node in model.graph.node for index, output in enumerate(node.output)}
