"""`calibrate{method=...}`: run the float engine over calibration data once and record
the range of every float activation (see ranges.py for where the ranges go).

The data comes from the `data` option (a file or directory, see calibration_data.py)
or from the pipeline's handle (`quantir.compile(..., calibration=...)`). Observers are
streaming: memory depends on the number of tensors and histogram bins, not on the
number of samples.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, BlockArgument, OpResult, SSAValue
from xdsl.passes import ModulePass

from quantir.dialects import nn
from quantir.errors import QuantirError
from quantir.ir import dtype_of, shape_of
from quantir.passes.ranges import set_ranges
from quantir.runtime.executor import Program, main_function


class CalibrationWarning(UserWarning):
    """A calibrated range that says the data never exercised a tensor."""


def value_label(value: SSAValue) -> str:
    """How a user finds a value: its tensor name and the node that produces it."""
    if isinstance(value, OpResult):
        node = getattr(value.op, "node_name", value.op.name)
        return f"'{value.name_hint or value.index}' (output of node '{node}')"
    if isinstance(value, BlockArgument):
        return f"model input '{value.name_hint or value.index}'"
    return repr(value)


@dataclass(frozen=True)
class CalibratePass(ModulePass):
    """Observe every float activation over the calibration data; store the ranges.

    Options left unset come from the pipeline's QuantConfig (its calibration
    settings), else from the defaults: method minmax, every sample, percentile 99.9.
    """

    name = "calibrate"

    method: str | None = None
    data: str | None = None
    calibset_size: int | None = None
    percentile: float | None = None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from quantir.passes.calibration_data import load_calibration_data
        from quantir.passes.observers import METHODS, make_observer, range_is_degenerate

        config = getattr(ctx, "config", None)
        settings = getattr(config, "calibration", None)
        method = self.method or getattr(settings, "method", None) or "minmax"
        if method not in METHODS:
            raise QuantirError(f"calibrate: unknown method '{method}'; choose one of "
                               f"{', '.join(METHODS)}")
        percentile = self.percentile or getattr(settings, "percentile", None) or 99.9
        calibset_size = self.calibset_size or getattr(settings, "calibset_size", None)
        source = self.data or getattr(ctx, "calibration", None)
        if source is None:
            raise QuantirError("calibrate: no calibration data; give calibrate{data=FILE} or "
                               "quantir.compile(..., calibration=...)")

        function = main_function(op)
        block = function.body.block
        input_names = _input_names(function)
        shapes = [shape_of(arg.type) for arg in block.args]
        batch = shapes[0][0] if shapes and shapes[0] else 1
        data = load_calibration_data(source, input_names, [s[1:] for s in shapes],
                                     [dtype_of(arg.type.element_type) for arg in block.args],
                                     calibset_size)
        if batch > 1 and len(data) % batch:
            raise QuantirError(
                f"calibrate: {len(data)} samples do not fill batches of {batch} (the module's "
                "batch size); import the model with batch 1 or use a multiple of the batch")

        observers: dict[SSAValue, object] = {}
        softmax_axes = {value: axis for value, axis in _softmax_inputs(block)}

        def observe(value: SSAValue, array: np.ndarray) -> None:
            if array.dtype.kind != "f":
                return
            axis = softmax_axes.get(value)
            if axis is not None:
                array = _softmax_relevant(array, axis)
            observer = observers.get(value)
            if observer is None:
                bits, symmetric = _activation_format(config, value)
                observer = observers[value] = make_observer(method, bits=bits,
                                                            symmetric=symmetric,
                                                            percentile=percentile)
            try:
                observer.update(array)  # type: ignore[attr-defined]
            except QuantirError as error:
                raise QuantirError(f"calibrate: {value_label(value)}: {error}") from error

        program = Program(function)
        progress = _progress(_known_length(data), method)
        for feeds in data.batches(batch):
            program.run([feeds[name] for name in input_names], observe)
            progress.update(len(next(iter(feeds.values()))))
        progress.close()

        ranges = {value: observer.range() for value, observer in observers.items()}  # type: ignore[attr-defined]
        for value, (low, high) in ranges.items():
            # A constant tensor (an attention-mask sum, say) is fine; one that stayed at
            # zero belongs to a branch the data never exercised.
            if range_is_degenerate(low, high) and max(abs(low), abs(high)) < 1e-6:
                warnings.warn(f"calibrate: {value_label(value)} has the range [{low:g}, {high:g}]"
                              ": the calibration data never activates it; its encoding is the "
                              "minimum range", CalibrationWarning, stacklevel=2)
        set_ranges(function, ranges)


SOFTMAX_SPAN = 20.0
"""A softmax input below its row's maximum by more than this adds under exp(-20) = 2e-9
to its row's sum: as good as minus infinity for any 8- or 16-bit output."""


def _softmax_inputs(block: Block) -> list[tuple[SSAValue, int]]:
    """Values read only by softmaxes (one axis): their ranges need only the top span."""
    found = []
    for op in block.ops:
        for value in op.results:
            readers = [use.operation for use in value.uses]
            if readers and all(isinstance(r, nn.SoftmaxOp) for r in readers):
                axes = {r.props.int("axis") for r in readers}  # type: ignore[attr-defined]
                if len(axes) == 1:
                    found.append((value, axes.pop()))
    return found


def _softmax_relevant(array: np.ndarray, axis: int) -> np.ndarray:
    """The values a softmax input's encoding must cover: each raised to its row maximum
    minus SOFTMAX_SPAN. An attention mask's -3.4e38 (or -10000) then leaves the range
    alone and saturates to the encoding's minimum, where the softmax sees exp(-span)."""
    return np.maximum(array, array.max(axis=axis, keepdims=True) - np.float32(SOFTMAX_SPAN))


def _input_names(function: func.FuncOp) -> list[str]:
    from quantir.frontend.onnx_import import graph_names

    return graph_names(function)[0]


def _activation_format(config: object, value: SSAValue) -> tuple[int, bool]:
    """Bits and symmetry the value will be quantized with (for mse / entropy searches)."""
    if config is None or not isinstance(value, OpResult):
        return 8, False
    producer = value.op
    kind = producer.name.split(".", 1)[-1]
    layer = config.layer(getattr(producer, "node_name", ""), kind)  # type: ignore[attr-defined]
    return layer.precision.output_bits, layer.activations == "symmetric"


def _known_length(data: object) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except QuantirError:  # a Python iterator of unknown length
        return None


def _progress(total: int | None, method: str):  # type: ignore[no-untyped-def]
    """A tqdm bar on a terminal, nothing otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"calibrate ({method})", unit="sample",
                disable=not sys.stderr.isatty(), leave=False)
