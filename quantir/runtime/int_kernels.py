"""Kernels of the integer program: `qi` ops, `q.requant`, and `nn` data movement on
quantized tensors.

Each op compiles once into a closure holding its zero points, multipliers and tables.
The arithmetic is `quantir.runtime.reference` (the spec); where the Cython extension
`_kernels` provides a function of the same name, the closure calls that instead (the
property tests prove the two equal). Without the extension everything runs on the
reference, with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, TensorType
from xdsl.ir import Attribute, Operation

from quantir.dialects import nn, q, qi
from quantir.dialects.q import PerAxisQuantizedType, QuantizedType
from quantir.errors import ModelError, QuantirError
from quantir.ir import array_of, dtype_of, is_elided
from quantir.runtime import reference

try:  # Cython hot loops; the reference computes the same integers, slower.
    from quantir.runtime import _kernels as _compiled
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None
    warnings.warn("quantir: the Cython integer kernels are not built; the integer program "
                  "runs on the numpy reference kernels (reinstall with a C compiler)",
                  stacklevel=2)

Kernel = Callable[..., tuple[np.ndarray, ...]]


def implementation(name: str, compiled: ModuleType | None = _compiled) -> Callable:
    """The Cython function `name` if the extension has it, else the reference one."""
    fast = getattr(compiled, name, None) if compiled is not None else None
    return fast if fast is not None else getattr(reference, name)


# --------------------------------------------------------------------------------------
# Type helpers
# --------------------------------------------------------------------------------------


def element(type_: Attribute) -> QuantizedType:
    assert isinstance(type_, TensorType) and isinstance(type_.element_type, QuantizedType)
    return type_.element_type


def zero_point(type_: Attribute) -> int | np.ndarray:
    """The zero point: an int, or one per channel (1-d) for a per-axis type."""
    found = element(type_)
    if isinstance(found, PerAxisQuantizedType):
        return np.asarray(found.zero_points, dtype=np.int64)
    return found.zero_points[0]


def storage(type_: Attribute) -> np.dtype:
    assert isinstance(type_, TensorType)
    return dtype_of(type_.element_type)


def table_of(op: Operation, key: str) -> np.ndarray:
    attr = op.properties[key]
    if is_elided(attr):
        raise ModelError(f"{op.name} '{getattr(op, 'node_name', '')}': its {key} was elided "
                         "when the module was printed; print it with --print-large-constants")
    assert isinstance(attr, DenseIntOrFPElementsAttr)
    return array_of(attr)


def props(op: Operation) -> nn.Props:
    return nn.Props(op.properties)


# --------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------


def _requant(op: q.RequantOp) -> Kernel:
    source, target = op.input.type, op.output.type
    result = element(target)
    axis = op.axis.value.data if op.axis is not None else None
    multiplier = np.asarray(op.multipliers, dtype=np.int64)
    shift = np.asarray(op.shifts, dtype=np.int64)
    zp_in = zero_point(source) if isinstance(source.element_type, QuantizedType) else 0  # type: ignore[attr-defined]
    zp_out = zero_point(target)
    if isinstance(result, PerAxisQuantizedType):
        # A per-channel result (a rescale of per-channel accumulators): one zero point
        # per channel along its axis, scalar multipliers repeated.
        if axis is not None and axis != result.axis:
            raise QuantirError(f"q.requant '{op.node_name}': multipliers along axis {axis}, "
                               f"result channels along {result.axis}")
        axis = result.axis
        count = result.num_channels
        multiplier = np.broadcast_to(multiplier, (count,)) if multiplier.size == 1 else multiplier
        shift = np.broadcast_to(shift, (count,)) if shift.size == 1 else shift
    elif axis is None:
        multiplier, shift = multiplier.reshape(()), shift.reshape(())
    if isinstance(zp_in, np.ndarray) and axis is None:
        raise QuantirError(f"q.requant '{op.node_name}': a per-channel input needs per-channel "
                           "multipliers")
    dtype, rounding = storage(target), op.rounding_mode
    low, high = result.storage_min, result.storage_max
    requantize = implementation("requantize")

    def kernel(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return (requantize(x, multiplier, shift, rounding, zp_in, zp_out, low, high, dtype,
                           axis),)

    return kernel


def _conv2d(op: qi.Conv2dOp) -> Kernel:
    p = props(op)
    x_zp, w_zp = zero_point(op.input.type), zero_point(op.weight.type)
    strides, pads, dilations, group = (p.ints("strides"), p.ints("pads"), p.ints("dilations"),
                                       p.int("group"))
    conv2d = implementation("conv2d")

    def kernel(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) \
            -> tuple[np.ndarray, ...]:
        return (conv2d(x, w, b, x_zp, w_zp, strides, pads, dilations, group),)

    return kernel


def _conv_transpose2d(op: qi.ConvTranspose2dOp) -> Kernel:
    p = props(op)
    x_zp, w_zp = zero_point(op.input.type), zero_point(op.weight.type)
    conv = implementation("conv_transpose2d")
    args = (p.ints("strides"), p.ints("pads"), p.ints("dilations"), p.int("group"),
            p.ints("output_padding"))

    def kernel(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) \
            -> tuple[np.ndarray, ...]:
        return (conv(x, w, b, x_zp, w_zp, *args),)

    return kernel


def _matmul(op: qi.MatMulOp) -> Kernel:
    a_zp, b_zp = zero_point(op.lhs.type), zero_point(op.rhs.type)
    matmul = implementation("matmul")

    def kernel(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) \
            -> tuple[np.ndarray, ...]:
        return (matmul(a, b, bias, a_zp, b_zp),)

    return kernel


def _elementwise(name: str) -> Callable[[Operation], Kernel]:
    def factory(op: Operation) -> Kernel:
        fn = implementation(name)
        return lambda a, b: (fn(a, b),)

    return factory


def _mul(op: qi.MulOp) -> Kernel:
    a_zp, b_zp = zero_point(op.lhs.type), zero_point(op.rhs.type)
    mul = implementation("mul")
    return lambda a, b: (mul(a, b, a_zp, b_zp),)


def _clamp(op: qi.ClampOp) -> Kernel:
    low, high = props(op).int("min"), props(op).int("max")
    return lambda x: (np.clip(x, low, high),)


def _lookup(op: qi.LookupOp) -> Kernel:
    table = table_of(op, "table").astype(storage(op.output.type))
    storage_min = element(op.input.type).storage_min
    lookup = implementation("lookup")
    return lambda x: (lookup(x, table, storage_min),)


def _softmax(op: qi.SoftmaxOp) -> Kernel:
    table = table_of(op, "exp_table")
    axis, fraction = props(op).int("axis"), props(op).int("fraction_bits")
    softmax = implementation("softmax")
    return lambda x: (softmax(x, axis, table, fraction),)


def _layernorm(op: qi.LayerNormOp) -> Kernel:
    p = props(op)
    x_zp, gamma_zp = zero_point(op.input.type), zero_point(op.scale.type)
    epsilon, fraction = p.int("epsilon_units"), p.int("fraction_bits")
    layernorm = implementation("layernorm")

    def kernel(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
        return (layernorm(x, x_zp, gamma, gamma_zp, beta, epsilon, fraction),)

    return kernel


def _max_pool2d(op: qi.MaxPool2dOp) -> Kernel:
    p = props(op)
    args = (p.ints("kernel_shape"), p.ints("strides"), p.ints("pads"), p.ints("dilations"),
            bool(p.int("ceil_mode")))
    max_pool2d = implementation("max_pool2d")
    return lambda x: (max_pool2d(x, *args),)


def _avg_pool2d(op: qi.AvgPool2dOp) -> Kernel:
    p = props(op)
    x_zp = zero_point(op.input.type)
    args = (p.ints("kernel_shape"), p.ints("strides"), p.ints("pads"),
            bool(p.int("count_include_pad")), p.int("fraction_bits"), bool(p.int("ceil_mode")))
    avg_pool2d = implementation("avg_pool2d")
    return lambda x: (avg_pool2d(x, x_zp, *args),)


def _reduce_mean(op: qi.ReduceMeanOp) -> Kernel:
    p = props(op)
    x_zp = zero_point(op.input.type)
    args = (p.ints("axes"), bool(p.int("keepdims")), p.int("fraction_bits"))
    reduce_mean = implementation("reduce_mean")
    return lambda x: (reduce_mean(x, x_zp, *args),)


def _resize_linear(op: qi.ResizeLinearOp) -> Kernel:
    p = props(op)
    x_zp = zero_point(op.input.type)
    sizes, mode = p.ints("sizes"), p.str("coordinate_transformation_mode")
    fraction, scales = p.int("fraction_bits"), p.floats("scales")
    resize = implementation("resize_bilinear")
    return lambda x: (resize(x, x_zp, sizes, mode, fraction, scales),)


_FACTORIES: dict[type[Operation], Callable[..., Kernel]] = {
    q.RequantOp: _requant,
    qi.Conv2dOp: _conv2d,
    qi.ConvTranspose2dOp: _conv_transpose2d,
    qi.MatMulOp: _matmul,
    qi.AddOp: _elementwise("add"),
    qi.SubOp: _elementwise("sub"),
    qi.MulOp: _mul,
    qi.ClampOp: _clamp,
    qi.LookupOp: _lookup,
    qi.SoftmaxOp: _softmax,
    qi.LayerNormOp: _layernorm,
    qi.MaxPool2dOp: _max_pool2d,
    qi.AvgPool2dOp: _avg_pool2d,
    qi.ReduceMeanOp: _reduce_mean,
    qi.ResizeLinearOp: _resize_linear,
}

MOVEMENT_OPS: tuple[type[nn.NNOperation], ...] = (
    nn.ReshapeOp, nn.TransposeOp, nn.SliceOp, nn.ConcatOp, nn.SplitOp, nn.GatherOp,
    nn.PadOp, nn.ExpandOp, nn.ReduceMaxOp, nn.MinOp, nn.MaxOp)
"""nn ops that run as they are on quantized tensors: they move integers or pick among
them (min / max of one encoding), computing no new value."""


def is_integer_op(op: Operation) -> bool:
    """Ops of the integer program this module runs (everything else: float/q kernels)."""
    if type(op) in _FACTORIES:
        return True
    return isinstance(op, nn.NNOperation) and any(
        isinstance(r.type, TensorType) and isinstance(r.type.element_type, QuantizedType)
        for r in op.results)


def compile_kernel(op: Operation) -> Kernel:
    factory = _FACTORIES.get(type(op))
    if factory is not None:
        return factory(op)
    if isinstance(op, MOVEMENT_OPS) or (isinstance(op, nn.ResizeOp)
                                        and props(op).str("mode") == "nearest"):
        from quantir.runtime.float_kernels import compile_kernel as movement

        return movement(op)  # moves integers as they are (pads with the zero point)
    raise QuantirError(f"{op.name} '{getattr(op, 'node_name', '')}': no integer kernel for "
                       "this op on quantized tensors")
