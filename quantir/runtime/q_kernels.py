"""Simulation kernels of the `q` ops: exact fake quantization in numpy.

A quantized tensor is held as its integers (the storage dtype of q_math); the float
ops between a `q.dequantize` and a `q.quantize` run on the float kernels. So a run
of an annotated module computes exactly what its encodings say, rounding included.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation

from quantir.dialects import q
from quantir.dialects.q_math import dequantize_array, quantize_array
from quantir.errors import QuantirError

Kernel = Callable[..., tuple[np.ndarray, ...]]


def _element(type_) -> q.QuantizedType:  # type: ignore[no-untyped-def]
    assert isinstance(type_, TensorType)
    element = type_.element_type
    assert isinstance(element, q.QuantizedType)
    return element


def _quantize(op: q.QuantizeOp) -> Kernel:
    target = _element(op.output.type)
    return lambda x: (quantize_array(x, target),)


def _dequantize(op: q.DequantizeOp) -> Kernel:
    source = _element(op.input.type)
    return lambda x: (dequantize_array(x, source),)


def _precision_change(op: q.PrecisionChangeOp) -> Kernel:
    # At the annotated level a precision change is a re-quantization of the value
    # the source encoding represents; lowering turns it into an integer requant.
    source, target = _element(op.input.type), _element(op.output.type)
    return lambda x: (quantize_array(dequantize_array(x, source), target),)


_FACTORIES: dict[type[Operation], Callable[..., Kernel]] = {
    q.QuantizeOp: _quantize,
    q.DequantizeOp: _dequantize,
    q.PrecisionChangeOp: _precision_change,
}


def compile_kernel(op: Operation) -> Kernel:
    factory = _FACTORIES.get(type(op))
    if factory is None:
        name = getattr(op, "node_name", "")
        raise QuantirError(f"{op.name} '{name}': no simulation kernel; this op belongs to the "
                           "integer program (run it after lowering)")
    return factory(op)
