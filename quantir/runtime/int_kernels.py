"""Kernels of the integer program: `qi` ops, `q.requant`, and `nn` data movement on
quantized tensors.

Each op compiles once into a closure holding its zero points, multipliers and tables.
The arithmetic is `quantir.runtime.reference` (the spec); where the Cython extension
`_kernels` provides a function of the same name, the closure calls that instead (the
property tests prove the two equal). Without the extension everything runs on the
reference, with one warning.

`Chain` compiles the fused steps of the fast plan (fusion.py): a qi.conv2d / qi.matmul
and the elementwise ops on its result, or elementwise ops alone, as one compiled
product plus epilogue (`_kernels.ConvPlan` / `MatmulPlan` / `Epilogue`) that writes
only the last op's storage integers. A chain computes exactly what its ops' own
kernels compute; where a value falls outside a stage's domain it re-runs them, so the
error raised is the op's own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, TensorType
from xdsl.ir import Attribute, Operation, SSAValue

from quantir.dialects import nn, q, qi
from quantir.dialects.q import PerAxisQuantizedType, QuantizedType, UniformQuantizedType
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


# --------------------------------------------------------------------------------------
# Fused steps: a product and the elementwise ops on its result (see fusion.py)
# --------------------------------------------------------------------------------------

PRODUCT_OPS = (qi.Conv2dOp, qi.MatMulOp)
ELEMENTWISE_OPS = (q.RequantOp, qi.ClampOp, qi.LookupOp, qi.AddOp, qi.SubOp, qi.MulOp)
_CONSTANT_OPS = (nn.ConstantOp, q.ConstantOp)


def _static_shape(value: SSAValue) -> tuple[int, ...] | None:
    type_ = value.type
    if not isinstance(type_, TensorType):
        return None
    shape = tuple(type_.get_shape())
    return shape if all(d >= 0 for d in shape) else None


def _fast_dtype(value: SSAValue) -> np.dtype | None:
    """The storage dtype of a value when the compiled kernels take it, else None."""
    type_ = value.type
    if _compiled is None or not isinstance(type_, TensorType):
        return None
    try:
        dtype = np.dtype(dtype_of(type_.element_type))
    except (KeyError, TypeError, ValueError, AssertionError):
        return None
    return dtype if dtype in _compiled._CODES else None


class Chain:
    """Ops that run as one step: a head, then elementwise ops each on the previous
    op's only result.

    The head is a qi.conv2d / qi.matmul with constant weights (its accumulators go
    through the elementwise ops in cache, and only the last op's storage integers are
    written), or an elementwise op. The elementwise ops are q.requant, qi.clamp,
    qi.lookup, and qi.add / sub / mul whose other operand broadcasts into the result
    along at most one axis (or has its shape). Each becomes a stage of a compiled
    `Epilogue`; a chain that cannot compile runs its ops' kernels one after another.
    The planner (fusion.py) decides which ops join; `join` says whether one can.
    """

    def __init__(self, head: Operation, value: SSAValue, constant: Callable[[Operation],
                 np.ndarray]):
        self.ops: list[Operation] = [head]
        self.value = value  # the chain's current result
        self.shape = _static_shape(value)
        self.constant = constant
        self.product = isinstance(head, PRODUCT_OPS)
        self.row_axis: int | None = 1 if isinstance(head, qi.Conv2dOp) else None
        self.specs: list[tuple] = []
        # operands of the binary stages: a constant (int32 array) or a value of the step
        self.operands: list[np.ndarray | SSAValue] = []
        self.inputs: list[SSAValue] = []  # runtime inputs of the step, head's first
        self.head_inputs = 0  # how many of `inputs` the head reads

    # ---- building ---------------------------------------------------------------------

    @staticmethod
    def start(op: Operation, constant: Callable[[Operation], np.ndarray]) -> Chain | None:
        """A chain headed by `op`, or None when `op` cannot head one."""
        if _compiled is None or len(op.results) != 1 or _static_shape(op.results[0]) is None:
            return None
        if isinstance(op, qi.Conv2dOp):
            if not all(isinstance(v.owner, _CONSTANT_OPS) for v in op.operands[1:]):
                return None
            chain = Chain(op, op.results[0], constant)
            chain.inputs = [op.operands[0]]
            chain.head_inputs = 1
            return chain
        if isinstance(op, qi.MatMulOp):
            if len(op.operands) == 3 and not isinstance(op.operands[2].owner, _CONSTANT_OPS):
                return None
            chain = Chain(op, op.results[0], constant)
            chain.inputs = [v for v in op.operands[:2] if not isinstance(v.owner, _CONSTANT_OPS)]
            if op.operands[0] not in chain.inputs:
                return None  # a constant lhs: not worth a plan
            chain.head_inputs = len(chain.inputs)
            return chain
        if not isinstance(op, ELEMENTWISE_OPS):
            return None
        # the head's data input becomes the chain's value, the op its first stage
        operands = list(op.operands)
        if isinstance(op, qi.AddOp | qi.SubOp | qi.MulOp):
            shape = _static_shape(op.results[0])
            full = [v for v in operands if _static_shape(v) == shape
                    and not isinstance(v.owner, _CONSTANT_OPS)]
            if not full:
                return None
            data = full[0]
        else:
            data = operands[0]
        if _fast_dtype(data) is None or _static_shape(data) is None:
            return None
        chain = Chain(op, data, constant)
        chain.ops = []
        chain.inputs = [data]
        chain.head_inputs = 1
        if not chain.join(op):
            return None
        return chain

    def join(self, op: Operation) -> bool:
        """Add `op` (reading the chain's value) as a stage if it fits; True if added.
        The step then runs where `op` stands (its other operands are computed)."""
        if len(op.results) != 1 or self.value not in op.operands or self.shape is None:
            return False
        result = op.results[0]
        if _static_shape(result) != self.shape or _fast_dtype(result) is None:
            return False
        try:
            stage = self._stage(op)
        except (QuantirError, ValueError, TypeError, KeyError):
            return False
        if stage is None:
            return False
        spec, pattern, axis, operand = stage
        if not self._accepts(pattern, axis):
            return False
        if pattern == "row":
            self.row_axis = axis
        if operand is not None:
            index = len(self.operands) + (1 if self.product else 0)  # the bias is operand 0
            spec = spec[:2] + (index,) + spec[3:]
            self.operands.append(operand)
            if isinstance(operand, SSAValue):
                self.inputs.append(operand)
        self.specs.append(spec)
        self.ops.append(op)
        self.value = result
        return True

    def _accepts(self, pattern: str, axis: int | None) -> bool:
        if pattern in ("scalar", "flat"):
            return True
        if isinstance(self.ops[0], qi.Conv2dOp) if self.ops else False:
            return pattern == "row" and axis == 1
        if pattern == "col":
            return True
        return self.row_axis is None or self.row_axis == axis

    def _stage(self, op: Operation) \
            -> tuple[tuple, str, int | None, np.ndarray | SSAValue | None] | None:
        """(spec, pattern, axis, operand) of `op` as a stage, or None."""
        assert _compiled is not None and self.shape is not None
        ndim = len(self.shape)
        if isinstance(op, q.RequantOp):
            result = element(op.output.type)
            if not isinstance(result, UniformQuantizedType):
                return None
            axis = op.axis.value.data if op.axis is not None else None
            source = op.input.type
            zp_in = zero_point(source) \
                if isinstance(source, TensorType) and isinstance(source.element_type,
                                                                 QuantizedType) else 0
            if axis is None:
                if isinstance(zp_in, np.ndarray):
                    return None
                channels, pattern = 0, "scalar"
            else:
                axis %= ndim
                channels = self.shape[axis]
                pattern = "col" if axis == ndim - 1 else "row"
            multiplier = np.asarray(op.multipliers, np.int64)
            shift = np.asarray(op.shifts, np.int64)
            if axis is None:
                multiplier, shift = multiplier.reshape(()), shift.reshape(())
            spec = _compiled.requant_spec(multiplier, shift, op.rounding_mode,
                                          zp_in, result.zero_point, result.storage_min,
                                          result.storage_max, storage(op.output.type),
                                          channels)
            if spec is None:
                return None
            if pattern == "col":
                spec = spec[:2] + ("col",) + spec[3:]
            return spec, pattern, axis, None
        if isinstance(op, qi.ClampOp):
            return ("clamp", props(op).int("min"), props(op).int("max")), "scalar", None, None
        if isinstance(op, qi.LookupOp):
            table = table_of(op, "table").astype(storage(op.output.type))
            if table.ndim != 1:
                return None
            return ("lookup", table, element(op.input.type).storage_min), "scalar", None, None
        if isinstance(op, qi.AddOp | qi.SubOp | qi.MulOp):
            lhs, rhs = op.operands
            if lhs is rhs:
                return None
            first = lhs is self.value
            other = rhs if first else lhs
            other_shape = _static_shape(other)
            if other_shape is None or _fast_dtype(other) is None:
                return None
            layout = _compiled.binary_layout(self.shape, other_shape)
            if layout is None:
                return None
            pattern, axis = layout
            if isinstance(other.owner, _CONSTANT_OPS):
                array = _compiled.int32_operand(self.constant(other.owner))
                if array is None:
                    return None
                operand: np.ndarray | SSAValue = array.reshape(-1)
            else:
                operand = other
            if isinstance(op, qi.MulOp):
                za, zb = zero_point(lhs.type), zero_point(rhs.type)
                if isinstance(za, np.ndarray) or isinstance(zb, np.ndarray):
                    return None
                if not first:
                    za, zb = zb, za
                return ("mul", pattern, 0, int(za), int(zb)), pattern, axis, operand
            kind = "add" if isinstance(op, qi.AddOp) else ("sub" if first else "rsub")
            return (kind, pattern, 0), pattern, axis, operand
        return None

    # ---- compiling --------------------------------------------------------------------

    def compile(self) -> tuple[Kernel, list[SSAValue]]:
        """The step's kernel and its runtime inputs (head inputs, then operands)."""
        composed = _composed(self.ops, self.inputs, self.constant)
        fused = None
        try:
            fused = self._fused()
        except (QuantirError, ValueError, TypeError):
            fused = None
        if fused is None:
            return composed, list(self.inputs)
        assert _compiled is not None
        failure = (_compiled.EpilogueError, ValueError, TypeError)

        def kernel(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
            try:
                return (fused(*arrays),)
            except failure:
                # a value outside a stage's domain: the ops' own kernels raise the
                # spec's error (or, for anything else, compute the spec's result)
                return composed(*arrays)

        return kernel, list(self.inputs)

    def _fused(self) -> Callable[..., np.ndarray] | None:
        assert _compiled is not None and self.shape is not None
        head = self.ops[0]
        dtype = storage(self.value.type)
        domain = None
        inputs: set[int] = set()
        if not self.product:
            info = np.iinfo(_fast_dtype(self.inputs[0]) or np.int32)
            domain = (int(info.min), int(info.max))
            # operands that are the chain's input: stages on them are functions of it
            inputs = {i for i, o in enumerate(self.operands) if o is self.inputs[0]}
        self.specs = fold_tables(self.specs, domain, inputs)
        base = 1 if self.product else 0
        used = {spec[2] - base for spec in self.specs if spec[0] in _BINARY}
        count = self.head_inputs
        runtime = [isinstance(o, SSAValue) for o in self.operands]
        constants = [None if r else o for r, o in zip(runtime, self.operands, strict=True)]

        unused = np.zeros(1, np.int32)  # an operand no stage reads any more (folded)

        def operands_of(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
            values = iter(arrays[count:])
            return tuple((np.ascontiguousarray(next(values), dtype=np.int32).reshape(-1)
                          if i in used else (next(values), unused)[1]) if r else c
                         for i, (r, c) in enumerate(zip(runtime, constants, strict=True)))

        if isinstance(head, qi.Conv2dOp):
            p = props(head)
            x = head.operands[0]
            x_shape, x_dtype = _static_shape(x), _fast_dtype(x)
            owners = [v.owner for v in head.operands[1:]]
            w = self.constant(owners[0])  # type: ignore[arg-type]
            bias = self.constant(owners[1]) if len(owners) > 1 else None  # type: ignore[arg-type]
            plan = _compiled.conv_plan(x_shape, x_dtype, w, bias, zero_point(x.type),
                                       zero_point(head.operands[1].type), p.ints("strides"),
                                       p.ints("pads"), p.ints("dilations"), p.int("group"),
                                       self.specs, dtype)
            if plan is None:
                return None
            return lambda *arrays: plan(arrays[0], *operands_of(arrays))
        if isinstance(head, qi.MatMulOp):
            a, b = head.operands[0], head.operands[1]
            b_const = self.constant(b.owner) if isinstance(b.owner, _CONSTANT_OPS) else None  # type: ignore[arg-type]
            bias = self.constant(head.operands[2].owner) \
                if len(head.operands) == 3 else None  # type: ignore[arg-type]
            row_axis = self.row_axis if self.row_axis is not None \
                and self.row_axis < len(self.shape) - 1 else None
            plan = _compiled.matmul_plan(_static_shape(a), _fast_dtype(a), b_const,
                                         _static_shape(b), _fast_dtype(b), bias,
                                         zero_point(a.type), zero_point(b.type), self.specs,
                                         dtype, row_axis)
            if plan is None:
                return None
            if b_const is None:
                return lambda *arrays: plan(arrays[0], arrays[1], *operands_of(arrays))
            return lambda *arrays: plan(arrays[0], *operands_of(arrays))
        epilogue = _compiled.Epilogue(self.specs, dtype)
        view = self._view()
        return lambda *arrays: epilogue.apply(arrays[0], view, operands_of(arrays))

    def _view(self) -> tuple[int, int, int, int]:
        """(rows, cols, rdiv, channels) of the elementwise chain's tensor."""
        assert self.shape is not None
        return epilogue_view(self.shape, self.row_axis,
                             any(spec_pattern(spec) == "col" for spec in self.specs))


def spec_pattern(spec: tuple) -> str:
    """The pattern ("scalar", "row", "col", "flat") of an epilogue spec."""
    if spec[0] == "requant":
        return spec[2]
    if spec[0] in ("add", "sub", "rsub", "mul"):
        return spec[1]
    return "scalar"


def epilogue_view(shape: tuple[int, ...], row_axis: int | None, col: bool) \
        -> tuple[int, int, int, int]:
    """(rows, cols, rdiv, channels) of a tensor for `Epilogue.apply`: "row" stages
    along `row_axis`, "col" stages (when `col`) along the last axis."""
    size = math.prod(shape)
    if col:
        cols = shape[-1] if shape else 1
        rows = size // cols if cols else 0
        if row_axis is None or row_axis == len(shape) - 1:
            return rows, cols, 1, 0
        return rows, cols, math.prod(shape[row_axis + 1:-1]), shape[row_axis]
    if row_axis is None:
        return 1, size, 1, 0
    inner = math.prod(shape[row_axis + 1:])
    return (size // inner if inner else 0), inner, 1, shape[row_axis]


def _composed(ops: list[Operation], inputs: list[SSAValue],
              constant: Callable[[Operation], np.ndarray]) -> Kernel:
    """The ops' own kernels one after another (same results as separate steps)."""
    kernels = [compile_kernel(op) for op in ops]
    known: dict[SSAValue, np.ndarray] = {}
    for op in ops:
        for value in op.operands:
            if isinstance(value.owner, _CONSTANT_OPS):
                known[value] = constant(value.owner)  # type: ignore[arg-type]

    def run(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        env = dict(known)
        env.update(zip(inputs, arrays, strict=True))
        outputs: tuple[np.ndarray, ...] = ()
        for op, kernel in zip(ops, kernels, strict=True):
            outputs = kernel(*[env[v] for v in op.operands])
            env.update(zip(op.results, outputs, strict=True))
        return outputs

    return run


TABLE_LIMIT = 1 << 16
"""Largest input domain a run of unary stages is tabulated over."""


def _domain_after(spec: tuple, domain: tuple[int, int] | None) -> tuple[int, int] | None:
    """The range of values a stage can output, given its input range (None: int32)."""
    if spec[0] == "requant":
        return int(spec[7]), int(spec[8])
    if spec[0] == "clamp":
        low, high = int(spec[1]), int(spec[2])
        if domain is not None:
            low, high = max(low, domain[0]), min(high, max(domain[1], low))
        return low, max(low, high)
    if spec[0] == "lookup":
        table = np.asarray(spec[1])
        return int(table.min()), int(table.max())
    return None


_BINARY = ("add", "sub", "rsub", "mul")


def fold_tables(specs: list[tuple], domain: tuple[int, int] | None,
                inputs: set[int] | frozenset[int] = frozenset()) -> list[tuple]:
    """Runs of two or more unary per-tensor stages (requant, clamp, lookup) on inputs
    of at most TABLE_LIMIT values become one lookup table: the run evaluated on every
    value of its input range. A run that starts at the chain's input may also hold
    binary stages whose operand is that input itself (operand indices `inputs`, e.g.
    GELU's x * phi(x)): they are functions of it too. A run where some value of the
    range is outside a stage's domain stays as it is, so the fused step raises exactly
    where the ops would."""
    assert _compiled is not None

    def unary(spec: tuple, at_input: bool) -> bool:
        if spec[0] in ("clamp", "lookup"):
            return True
        if spec[0] == "requant":
            return spec[2] == "scalar"
        return at_input and spec[0] in _BINARY and spec[1] == "flat" and spec[2] in inputs

    out: list[tuple] = []
    index = 0
    while index < len(specs):
        end = index
        while end < len(specs) and unary(specs[end], index == 0):
            end += 1
        if end - index >= 2 and domain is not None \
                and domain[1] - domain[0] + 1 <= TABLE_LIMIT:
            values = np.arange(domain[0], domain[1] + 1, dtype=np.int32)
            run = specs[index:end]
            count = max([spec[2] + 1 for spec in run if spec[0] in _BINARY], default=0)
            operands = tuple(values if i in inputs else np.zeros(1, np.int32)
                             for i in range(count))
            try:
                table = _compiled.Epilogue(run, np.int32).apply(
                    values, (1, values.size, 1, 0), operands)
            except _compiled.EpilogueError:
                table = None
            if table is not None:
                out.append(("lookup", _narrow(table), domain[0]))
                for spec in specs[index:end]:
                    domain = _domain_after(spec, domain)
                index = end
                continue
        if index < len(specs):
            out.append(specs[index])
            domain = _domain_after(specs[index], domain)
            index += 1
    return out


def _narrow(table: np.ndarray) -> np.ndarray:
    """The table in the narrowest storage type that holds its values (a smaller table
    stays in cache: 2^16 int8 entries are 64 KiB, as int32 256 KiB)."""
    low, high = (int(table.min()), int(table.max())) if table.size else (0, 0)
    for dtype in (np.int8, np.uint8, np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return table.astype(dtype)
    return table.astype(np.int32)
