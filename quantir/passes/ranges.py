"""Calibrated ranges in the IR: what `calibrate` writes and `quantize` reads.

An op's results carry `quantir.ranges = [array<f64: min, max>, ...]` (one entry per
result, empty for results that were not calibrated); a function argument carries
`quantir.range = array<f64: min, max>` in its argument attributes. Keeping them in
the IR lets `quantir-opt -p calibrate{...}` and `-p quantize` run as separate steps
and shows the numbers in every dump.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, DictionaryAttr, f64
from xdsl.ir import BlockArgument, OpResult, SSAValue

RESULTS_KEY = "quantir.ranges"
ARGUMENT_KEY = "quantir.range"


def _pair(values: tuple[float, float] | None) -> DenseArrayBase:
    return DenseArrayBase.from_list(f64, [] if values is None else [float(v) for v in values])


def _unpair(attr: DenseArrayBase) -> tuple[float, float] | None:
    values = attr.get_values()
    return (float(values[0]), float(values[1])) if len(values) == 2 else None


def set_ranges(function: func.FuncOp, ranges: dict[SSAValue, tuple[float, float]]) -> None:
    """Record calibrated ranges on the ops and arguments of `function`."""
    block = function.body.block
    arg_attrs = list(function.arg_attrs.data) if function.arg_attrs is not None else \
        [DictionaryAttr({}) for _ in block.args]
    for index, arg in enumerate(block.args):
        if arg in ranges:
            entries = dict(arg_attrs[index].data)
            entries[ARGUMENT_KEY] = _pair(ranges[arg])
            arg_attrs[index] = DictionaryAttr(entries)
    function.arg_attrs = ArrayAttr(arg_attrs)
    for op in block.ops:
        if any(result in ranges for result in op.results):
            op.attributes[RESULTS_KEY] = ArrayAttr([_pair(ranges.get(r)) for r in op.results])


def get_range(value: SSAValue) -> tuple[float, float] | None:
    """The calibrated (min, max) of a value, or None."""
    if isinstance(value, OpResult):
        attr = value.op.attributes.get(RESULTS_KEY)
        if isinstance(attr, ArrayAttr) and value.index < len(attr.data):
            entry = attr.data[value.index]
            return _unpair(entry) if isinstance(entry, DenseArrayBase) else None
        return None
    if isinstance(value, BlockArgument):
        function = value.block.parent_op()
        if isinstance(function, func.FuncOp) and function.arg_attrs is not None:
            entry = function.arg_attrs.data[value.index].data.get(ARGUMENT_KEY)
            return _unpair(entry) if isinstance(entry, DenseArrayBase) else None
    return None


def copy_ranges(source: func.FuncOp, target: func.FuncOp) -> None:
    """Copy calibrated ranges between two imports of one model (say, batch 8 -> batch 1),
    matching ops by ONNX node name and result index, arguments by position."""
    by_node: dict[tuple[str, int], tuple[float, float]] = {}
    for op in source.body.block.ops:
        for result in op.results:
            found = get_range(result)
            if found is not None:
                by_node[(getattr(op, "node_name", ""), result.index)] = found
    ranges: dict[SSAValue, tuple[float, float]] = {}
    for arg, source_arg in zip(target.body.block.args, source.body.block.args, strict=True):
        found = get_range(source_arg)
        if found is not None:
            ranges[arg] = found
    for op in target.body.block.ops:
        for result in op.results:
            key = (getattr(op, "node_name", ""), result.index)
            if key in by_node:
                ranges[result] = by_node[key]
    set_ranges(target, ranges)
