"""Numpy float kernels for the `nn` dialect: one compiled closure per op.

`compile_kernel(op)` reads the op's properties and static types once, precomputes
what it can (index arrays, window plans, resize weights) and returns a closure that
takes the op's input arrays in operand order (an absent optional operand is not
passed) and returns one array per result, with exactly the result type's dtype.

The kernels serve calibration, so they aim at onnxruntime's numbers and speed:
float32 throughout, whole-array numpy calls (no per-element Python loops), BLAS
for every contraction. Results may be views of inputs (reshape, transpose, slice,
split); no kernel ever writes into its inputs.

Read-only weight arrays (such as `quantir.ir.array_of` views of constants) are
treated as immutable: derived data (folded batch-norm scale and shift, reordered
conv weights) is cached while the same read-only array object comes back.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided
from xdsl.dialects.builtin import TensorType
from xdsl.irdl import IRDLOperation

from quantir.dialects import nn
from quantir.dialects.q import QuantizedType
from quantir.dialects.q_math import quantize_array
from quantir.errors import QuantirError
from quantir.ir import dtype_of, shape_of
from quantir.runtime.resize_coordinates import nearest_index, source_coordinates

try:  # Cython hot loops; without them the numpy paths below do the same work, slower.
    from quantir.runtime import _float_kernels as _compiled
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None
    warnings.warn("quantir: the Cython float kernels are not built; using the slower numpy "
                  "kernels (reinstall with a C compiler to build them)", stacklevel=2)

__all__ = ["InPlace", "Kernel", "compile_epilogue", "compile_kernel", "erf", "kernel_ops"]

Kernel = Callable[..., tuple[np.ndarray, ...]]
"""A compiled op: input arrays in operand order -> one array per result."""

InPlace = Callable[[np.ndarray], None]
"""A compiled elementwise epilogue that overwrites its (float32, writable) input."""

_Fn = Callable[..., np.ndarray]
_Factory = Callable[[IRDLOperation], Kernel]
_T = TypeVar("_T")

# --------------------------------------------------------------------------------------
# Op introspection
# --------------------------------------------------------------------------------------


def _props(op: IRDLOperation) -> nn.Props:
    return nn.Props(op.properties)


def _node_name(op: IRDLOperation) -> str:
    attr = op.properties.get("onnx_name")
    return getattr(attr, "data", "?")


def _in_shape(op: IRDLOperation, index: int = 0) -> tuple[int, ...]:
    return shape_of(op.operands[index].type)


def _out_shape(op: IRDLOperation, index: int = 0) -> tuple[int, ...]:
    return shape_of(op.results[index].type)


def _out_dtype(op: IRDLOperation, index: int = 0) -> np.dtype:
    type_ = op.results[index].type
    assert isinstance(type_, TensorType)
    return dtype_of(type_.element_type)


def _single(build: Callable[[IRDLOperation], _Fn]) -> _Factory:
    """Wrap a one-result builder: the kernel returns a 1-tuple of the result dtype.

    `np.asarray` also turns the numpy scalars that ufuncs return for 0-d inputs
    back into arrays; it copies nothing when the dtype already matches.
    """

    def factory(op: IRDLOperation) -> Kernel:
        fn = build(op)
        dtype = _out_dtype(op)

        def kernel(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
            return (np.asarray(fn(*inputs), dtype=dtype),)

        return kernel

    return factory


def _quiet(fn: _Fn) -> _Fn:
    """onnxruntime returns inf / nan silently (exp overflow, x / 0); so do we."""

    def run(*inputs: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*inputs)

    return run


class _Derived(Generic[_T]):
    """Caches f(*arrays) while the same read-only array objects come back.

    Executors pass a constant's array object again on every run, so identity is
    the key (cheap, unlike reading buffer addresses); the entry keeps the arrays
    alive, so their ids cannot be reused meanwhile. Writable arrays are never
    cached: they may change between calls. The entry is one tuple, replaced in one
    assignment, so concurrent calls never see half of it.
    """

    def __init__(self, fn: Callable[..., _T]) -> None:
        self._fn = fn
        self._entry: tuple[tuple[np.ndarray, ...], _T] | None = None

    def __call__(self, *arrays: np.ndarray) -> _T:
        entry = self._entry
        if entry is not None and len(entry[0]) == len(arrays) \
                and all(a is b for a, b in zip(entry[0], arrays, strict=True)):
            return entry[1]
        value = self._fn(*arrays)
        if all(isinstance(a, np.ndarray) and not a.flags.writeable for a in arrays):
            self._entry = (arrays, value)
        return value


# --------------------------------------------------------------------------------------
# erf
# --------------------------------------------------------------------------------------

# erf(x) = tanh(x * R(x^2)) on |x| <= 3.92 (beyond, erf rounds to +-1 in float32).
# R is a degree-9 weighted minimax fit of atanh(erf(x)) / x, weighted by the
# sensitivity of tanh so the error is uniform in erf; coefficients are float32
# values, highest power first. The polynomial runs in float32 (it is well
# conditioned); tanh runs in float64 because numpy's float32 tanh adds ~1 ulp.
# Max error against math.erf: 9e-8 absolute, 2e-7 relative (tiny inputs included).
_ERF_CLAMP = 3.92
_ERF_COEFFS = (
    1.739352967211616e-10, -8.226805903177592e-09, 1.5150600063407182e-07,
    -1.2443549621821148e-06, 1.093986384148593e-06, 6.998722528805956e-05,
    -0.0005963139701634645, -0.00020593877707142383, 0.10277198255062103,
    1.128379225730896,
)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function of a float array, as float32 (no scipy needed)."""
    x = np.asarray(x, dtype=np.float32)
    xc = np.clip(x, -_ERF_CLAMP, _ERF_CLAMP, out=np.empty(x.shape, np.float32))
    s = np.multiply(xc, xc, out=np.empty(x.shape, np.float32))
    acc = np.multiply(s, _ERF_COEFFS[0], out=np.empty(x.shape, np.float32))
    acc += _ERF_COEFFS[1]
    for coeff in _ERF_COEFFS[2:]:
        acc *= s
        acc += coeff
    acc *= xc
    wide = acc.astype(np.float64)
    np.tanh(wide, out=wide)
    return wide.astype(np.float32)


# --------------------------------------------------------------------------------------
# Elementwise
# --------------------------------------------------------------------------------------


def _build_relu(op: IRDLOperation) -> _Fn:
    return lambda x: np.maximum(x, 0)


def _build_sigmoid(op: IRDLOperation) -> _Fn:
    shape, dtype = _out_shape(op), _out_dtype(op)

    def sigmoid(x: np.ndarray) -> np.ndarray:
        # 1 / (1 + exp(-x)): exp overflows to inf for very negative x, giving 0.
        t = np.negative(x, out=np.empty(shape, dtype))
        np.exp(t, out=t)
        t += 1
        return np.reciprocal(t, out=t)

    return _quiet(sigmoid)


def _build_tanh(op: IRDLOperation) -> _Fn:
    return np.tanh


def _build_erf(op: IRDLOperation) -> _Fn:
    return erf


def _build_sqrt(op: IRDLOperation) -> _Fn:
    return _quiet(np.sqrt)


def _build_reciprocal(op: IRDLOperation) -> _Fn:
    return _quiet(np.reciprocal)


def _build_exp(op: IRDLOperation) -> _Fn:
    return _quiet(np.exp)


def _build_neg(op: IRDLOperation) -> _Fn:
    return np.negative


def _build_hard_swish(op: IRDLOperation) -> _Fn:
    shape, dtype = _out_shape(op), _out_dtype(op)

    def hard_swish(x: np.ndarray) -> np.ndarray:
        # ONNX: x * max(0, min(1, x / 6 + 0.5)), with alpha = 1/6 as onnxruntime.
        t = np.multiply(x, 1 / 6, out=np.empty(shape, dtype))
        t += 0.5
        np.clip(t, 0, 1, out=t)
        t *= x
        return t

    return hard_swish


def _build_leaky_relu(op: IRDLOperation) -> _Fn:
    alpha = _props(op).float("alpha")
    if 0 <= alpha <= 1:
        # max(x, alpha * x) equals the select for slopes in [0, 1], in one pass less.
        return lambda x: np.maximum(x, x * alpha)
    return lambda x: np.where(x >= 0, x, x * alpha)


def _build_hard_sigmoid(op: IRDLOperation) -> _Fn:
    props = _props(op)
    alpha, beta = props.float("alpha"), props.float("beta")
    shape, dtype = _out_shape(op), _out_dtype(op)

    def hard_sigmoid(x: np.ndarray) -> np.ndarray:
        t = np.multiply(x, alpha, out=np.empty(shape, dtype))
        t += beta
        return np.clip(t, 0, 1, out=t)

    return hard_sigmoid


def _build_gelu(op: IRDLOperation) -> _Fn:
    shape, dtype = _out_shape(op), _out_dtype(op)
    if _props(op).str("approximate") == "tanh":
        scale = math.sqrt(2 / math.pi)

        def gelu_tanh(x: np.ndarray) -> np.ndarray:
            # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            t = np.multiply(x, x, out=np.empty(shape, dtype))
            t *= 0.044715
            t += 1
            t *= x
            t *= scale
            np.tanh(t, out=t)
            t += 1
            t *= x
            t *= 0.5
            return t

        return gelu_tanh

    def gelu(x: np.ndarray) -> np.ndarray:
        # 0.5 x (1 + erf(x / sqrt 2))
        t = erf(np.multiply(x, 1 / math.sqrt(2)))
        t += 1
        t *= x
        t *= 0.5
        return t

    return gelu


def _build_clip(op: IRDLOperation) -> _Fn:
    props = _props(op)
    low, high = props.float("min", -math.inf), props.float("max", math.inf)
    low_arg = None if low == -math.inf else low
    high_arg = None if high == math.inf else high
    if low_arg is None and high_arg is None:
        return lambda x: x
    return lambda x: np.clip(x, low_arg, high_arg)


def _build_softmax(op: IRDLOperation) -> _Fn:
    axis = _props(op).int("axis")
    shape, dtype = _out_shape(op), _out_dtype(op)
    outer, length, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    ones = np.ones(length, dtype)
    # Below float32 (float16) exp overflows at 11: always shift per row there.
    limit = 80.0 if np.dtype(dtype).itemsize >= 4 else -math.inf

    def softmax(x: np.ndarray) -> np.ndarray:
        x3 = x.reshape(outer, length, inner)
        e = np.empty((outer, length, inner), dtype)
        if e.size == 0:
            return e.reshape(shape)
        top, bottom = x3.max(), x3.min()
        if top - bottom < limit:
            # One shift for the whole tensor (two fast flat reductions instead of a slow
            # one per row): exp cannot overflow, and with a range below 80 no row's
            # terms all underflow, so every row sum stays a normal positive number.
            np.subtract(x3, top, out=e)
        else:
            # The usual per-row max: the largest term of each row is exactly 1.
            np.subtract(x3, x3.max(axis=1, keepdims=True), out=e)
        np.exp(e, out=e)
        if inner == 1:
            sums = np.matmul(e.reshape(outer, length), ones).reshape(outer, 1, 1)
        else:
            sums = e.sum(axis=1, keepdims=True)
        e /= sums
        return e.reshape(shape)

    return softmax


def _build_lrn(op: IRDLOperation) -> _Fn:
    props = _props(op)
    size, alpha, beta, bias = props.int("size"), props.float("alpha"), props.float("beta"), \
        props.float("bias")
    shape, dtype = _out_shape(op), _out_dtype(op)
    channels = shape[1]
    # ONNX: channel c sums the squares of channels c - floor((size-1)/2) .. c + ceil((size-1)/2).
    before = (size - 1) // 2
    after = size - 1 - before

    def lrn(x: np.ndarray) -> np.ndarray:
        padded = np.zeros((shape[0], channels + before + after, *shape[2:]), dtype)
        np.square(x, out=padded[:, before:before + channels])
        # `size` shifted adds over the channel window (size is small: 3..11).
        acc = padded[:, 0:channels].copy()
        for j in range(1, size):
            acc += padded[:, j:j + channels]
        acc *= alpha / size
        acc += bias
        np.power(acc, -beta, out=acc)
        acc *= x
        return acc

    return lrn


def _build_cast(op: IRDLOperation) -> _Fn:
    dtype = _out_dtype(op)
    # The wrapper converts to the result dtype; only the warnings need silencing
    # (float -> int of nan / inf is undefined in ONNX too).
    return _quiet(lambda x: x.astype(dtype, copy=False))


def _collapsed_shapes(shapes: Sequence[tuple[int, ...]], out: tuple[int, ...]) \
        -> list[tuple[int, ...]]:
    """Equivalent lower-rank shapes for a broadcast: adjacent axes merge when every
    operand is either full or broadcast on both. A (C, 1, 1) per-channel operand on
    (N, C, H, W) becomes (C, 1) on (N, C, H*W): numpy then runs H*W-long inner loops
    instead of one W-long loop per (c, h) row, which costs a lot on short rows."""
    rank = len(out)
    aligned = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    merged: list[list[int]] = [[] for _ in shapes]
    previous: tuple[bool, ...] | None = None
    for axis in range(rank):
        if out[axis] == 1:
            continue  # a size-1 axis merges with anything
        pattern = tuple(s[axis] != 1 for s in aligned)
        if pattern == previous:
            for dims, s in zip(merged, aligned, strict=True):
                dims[-1] *= s[axis]
        else:
            for dims, s in zip(merged, aligned, strict=True):
                dims.append(s[axis])
        previous = pattern
    return [tuple(dims) for dims in merged]


def _broadcasting(op: IRDLOperation, fn: _Fn) -> _Fn:
    """fn on the op's operands reshaped to their collapsed broadcast shapes."""
    shapes = [_in_shape(op, i) for i in range(len(op.operands))]
    out = _out_shape(op)
    collapsed = _collapsed_shapes(shapes, out)
    if collapsed == shapes:
        return fn

    def run(*inputs: np.ndarray) -> np.ndarray:
        # A list, not a generator: CPython keeps a spare tuple per generator-splat call,
        # which shows up as memory growing with the number of runs.
        return np.reshape(fn(*[np.reshape(x, s) for x, s in zip(inputs, collapsed,
                                                               strict=True)]), out)

    return run


def _build_binary(ufunc: np.ufunc, quiet: bool = False) -> Callable[[IRDLOperation], _Fn]:
    def build(op: IRDLOperation) -> _Fn:
        return _broadcasting(op, _quiet(ufunc) if quiet else ufunc)

    return build


def _build_div(op: IRDLOperation) -> _Fn:
    if np.issubdtype(_out_dtype(op), np.integer):
        def int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            # ONNX integer Div truncates toward zero; numpy's // floors.
            q = np.floor_divide(a, b)
            q += (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
            return q

        return _broadcasting(op, _quiet(int_div))
    return _broadcasting(op, _quiet(np.divide))


def _build_prelu(op: IRDLOperation) -> _Fn:
    return _broadcasting(op, lambda x, slope: np.where(x < 0, x * slope, x))


def _build_where(op: IRDLOperation) -> _Fn:
    return _broadcasting(op, np.where)


# --------------------------------------------------------------------------------------
# Sliding windows (conv, pooling): flat slices of stride-phase buffers
# --------------------------------------------------------------------------------------

# Working set of one chunk, in elements. Window sweeps (pooling, depthwise) stay
# within L2; im2col chunks are larger so the GEMM gets wide enough matrices, yet
# small enough that their scratch buffers are reused, not fresh pages every call.
_CHUNK_ELEMENTS = 1 << 18
_GEMM_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class _WindowPlan:
    """How a window slides over the spatial axes of (rows, *spatial) arrays.

    The padded input is split into its stride phases (one phase, the padded input
    itself, for stride 1): in a phase every kernel tap is a stride-1 shift. Each
    row's phase is a `q`-shaped plane stored flat, rows back to back, so a tap is
    ONE contiguous slice `[shift, shift + rows * plane)` of the flat buffer: numpy
    runs every tap as a single long 1-d loop whatever the plane size, instead of one
    short loop per row. Output (i0, i1, ...) of a row sits at plane offset
    sum(i_k * qstride_k); the other offsets are padding garbage, cut by `crop`.
    `tail` extra elements after the last row keep every shifted slice in bounds.
    """

    phases: int
    q: tuple[int, ...]
    plane: int
    tail: int
    copies: tuple[tuple[int, tuple[slice, ...], tuple[slice, ...]], ...]
    taps: tuple[tuple[int, int], ...]
    crop: tuple[slice, ...]


def _window_plan(size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 pads_begin: Sequence[int], dilations: Sequence[int],
                 out: Sequence[int]) -> _WindowPlan:
    rank = len(size)
    # A phase must reach the last tap of the last window: q = out + largest tap shift.
    q = tuple(out[i] + (kernel[i] - 1) * dilations[i] // strides[i] for i in range(rank))
    qstrides = tuple(math.prod(q[i + 1:]) for i in range(rank))
    phase_of: dict[tuple[int, ...], int] = {}
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        phase = tuple(tap[i] * dilations[i] % strides[i] for i in range(rank))
        shift = sum(tap[i] * dilations[i] // strides[i] * qstrides[i] for i in range(rank))
        taps.append((phase_of.setdefault(phase, len(phase_of)), shift))
    copies = []
    for phase, index in phase_of.items():
        dst, src = [], []
        for i in range(rank):
            s, a, pb = strides[i], phase[i], pads_begin[i]
            # Phase index j holds padded coordinate j*s + a, input coordinate j*s + a - pb.
            lo = max(0, -((a - pb) // s))
            hi = min(q[i], -((a - pb - size[i]) // s))
            if hi <= lo:
                break
            first = lo * s + a - pb
            dst.append(slice(lo, hi))
            src.append(slice(first, first + (hi - lo - 1) * s + 1, s))
        else:
            copies.append((index, tuple(dst), tuple(src)))
    crop = (slice(None), *(slice(0, o) for o in out))
    return _WindowPlan(len(phase_of), q, math.prod(q), max(shift for _, shift in taps),
                       tuple(copies), tuple(taps), crop)


class _PhaseBuffer:
    """The flat phase buffers of a plan for chunks of up to `chunk` rows."""

    def __init__(self, plan: _WindowPlan, chunk: int, fill: float, dtype: np.dtype):
        self.plan = plan
        self.chunk = chunk
        # Filled once per call: every chunk rewrites the same interior positions, so
        # the padding stays `fill`. Stale rows after a short last chunk are read only
        # by garbage (cropped) positions.
        self.flat = np.full((plan.phases, chunk * plan.plane + plan.tail), fill, dtype)

    def load(self, x_rows: np.ndarray, r0: int, r1: int) -> None:
        plan = self.plan
        rows = r1 - r0
        shaped = self.flat[:, :rows * plan.plane].reshape(plan.phases, rows, *plan.q)
        for index, dst, src in plan.copies:
            shaped[index][(slice(None), *dst)] = x_rows[(slice(r0, r1), *src)]

    def tap(self, t: int, rows: int) -> np.ndarray:
        """Tap t for `rows` rows: a contiguous (rows * plane,) slice."""
        phase, shift = self.plan.taps[t]
        return self.flat[phase, shift:shift + rows * self.plan.plane]


def _chunk_rows(total: int, per_row: int, budget: int = _CHUNK_ELEMENTS) -> int:
    return max(1, min(total, budget // max(per_row, 1)))


def _spatial_props(op: IRDLOperation, spatial: int, with_dilations: bool = True) \
        -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    props = _props(op)
    pads = props.ints("pads")
    dilations = props.ints("dilations") if with_dilations else (1,) * spatial
    return props.ints("strides"), pads[:spatial], pads[spatial:], dilations


def _build_pool(op: IRDLOperation) -> _Fn:
    x_shape, out_shape, dtype = _in_shape(op), _out_shape(op), _out_dtype(op)
    spatial = len(x_shape) - 2
    is_max = isinstance(op, nn.MaxPoolOp)
    kernel = _props(op).ints("kernel_shape")
    strides, pads_begin, pads_end, dilations = _spatial_props(op, spatial, is_max)
    plan = _window_plan(x_shape[2:], kernel, strides, pads_begin, dilations, out_shape[2:])
    rows = x_shape[0] * x_shape[1]
    chunk = _chunk_rows(rows, (plan.phases + 1) * plan.plane)
    fill = -math.inf if is_max else 0.0
    inv_count = None
    if not is_max:
        include_pad = bool(_props(op).int("count_include_pad"))
        # onnxruntime's divisor: the window clipped to the input (count_include_pad=0)
        # or to the padded input (=1: windows that ceil_mode runs past the end
        # padding are clipped there too).
        count = np.ones((), np.float64)
        for i in range(spatial):
            start = np.arange(out_shape[2 + i]) * strides[i] - pads_begin[i]
            end = start + kernel[i]
            if include_pad:
                count = np.multiply.outer(count, np.minimum(end, x_shape[2 + i] + pads_end[i])
                                          - start)
            else:
                count = np.multiply.outer(count, np.minimum(end, x_shape[2 + i])
                                          - np.maximum(start, 0))
        inv_count = (1.0 / count).astype(dtype)
    combine = np.maximum if is_max else np.add
    taps = len(plan.taps)

    def pool(x: np.ndarray) -> np.ndarray:
        x_rows = x.reshape(rows, *x_shape[2:])
        out = np.empty((rows, *out_shape[2:]), dtype)
        buffer = _PhaseBuffer(plan, chunk, fill, dtype)
        acc_buf = np.empty(chunk * plan.plane, dtype)
        for r0 in range(0, rows, chunk):
            r1 = min(rows, r0 + chunk)
            n = r1 - r0
            buffer.load(x_rows, r0, r1)
            acc = acc_buf[:n * plan.plane]
            if taps == 1:
                np.copyto(acc, buffer.tap(0, n))
            else:
                combine(buffer.tap(0, n), buffer.tap(1, n), out=acc)
                for t in range(2, taps):
                    combine(acc, buffer.tap(t, n), out=acc)
            valid = acc.reshape(n, *plan.q)[plan.crop]
            if inv_count is None:
                np.copyto(out[r0:r1], valid)
            else:
                np.multiply(valid, inv_count, out=out[r0:r1])
        return out.reshape(out_shape)

    return pool


def _build_global_average_pool(op: IRDLOperation) -> _Fn:
    x_shape, out_shape = _in_shape(op), _out_shape(op)
    n, c = x_shape[:2]
    return lambda x: x.reshape(n, c, -1).mean(axis=2).reshape(out_shape)


# --------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------


def _build_conv(op: IRDLOperation) -> _Fn:
    x_shape, w_shape, out_shape = _in_shape(op, 0), _in_shape(op, 1), _out_shape(op)
    dtype = _out_dtype(op)
    spatial = len(x_shape) - 2
    group = _props(op).int("group")
    strides, pads_begin, pads_end, dilations = _spatial_props(op, spatial)
    n, c = x_shape[:2]
    m, cg = w_shape[:2]
    kernel = w_shape[2:]
    positions = math.prod(out_shape[2:])

    if group == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides) \
            and not any(pads_begin) and not any(pads_end):
        # 1x1 stride-1 conv: a plain (m, c) @ (c, positions) product per image.
        def pointwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
            y = np.matmul(w.reshape(m, c), x.reshape(n, c, positions))
            if b is not None:
                y += b.reshape(m, 1)
            return y.reshape(out_shape)

        return pointwise

    if cg == 1 and spatial == 2 and dtype == np.float32 and _compiled is not None:
        return _compiled_depthwise_conv(x_shape, out_shape, m // c, strides, pads_begin,
                                        dilations)
    plan = _window_plan(x_shape[2:], kernel, strides, pads_begin, dilations, out_shape[2:])
    if cg == 1:
        return _depthwise_conv(plan, x_shape, out_shape, m // c, dtype)
    return _im2col_conv(plan, x_shape, out_shape, group, dtype)


def _im2col_conv(plan: _WindowPlan, x_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 group: int, dtype: np.dtype) -> _Fn:
    """Dense and grouped conv: im2col from flat tap slices, one batched GEMM per chunk.

    A chunk is some output rows (first spatial axis) of some images, sized so the
    im2col matrix and the GEMM result stay in cache. cols[g, tap, channel, image,
    position] takes one strided copy per tap; the GEMM runs the (group, m/g,
    taps * c/g) weights, reordered to tap-major columns once per weight buffer.
    """
    n, c = x_shape[:2]
    m = out_shape[1]
    cg, mg = c // group, m // group
    taps = len(plan.taps)
    spatial = len(x_shape) - 2
    plane = plan.plane
    row = plane // plan.q[0]  # flat positions per output row of the first spatial axis
    out_rows = out_shape[2]
    per_row = (taps * c + m) * row
    # Whole images per chunk when an image fits, else one image, some rows at a time.
    span_rows = _chunk_rows(out_rows, per_row, _GEMM_CHUNK_ELEMENTS)
    images = _chunk_rows(n, per_row * out_rows, _GEMM_CHUNK_ELEMENTS) \
        if span_rows == out_rows else 1
    item = np.dtype(dtype).itemsize
    rest = plan.crop[2:]

    def reorder(w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(
            w.reshape(group, mg, cg, taps).transpose(0, 1, 3, 2).reshape(group, mg, taps * cg),
            dtype=dtype)

    weights = _Derived(reorder)

    def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        wt = weights(w)
        x_rows = x.reshape(n * c, *x_shape[2:])
        out = np.empty(out_shape, dtype)
        bias = None if b is None else b.reshape(m, 1, *(1,) * spatial)
        buffer = _PhaseBuffer(plan, images * c, 0.0, dtype)
        cols_buf = np.empty((group, taps, cg, images, span_rows * row), dtype)
        y_buf = np.empty((group, mg, images * span_rows * row), dtype)
        for i0 in range(0, n, images):
            i1 = min(n, i0 + images)
            k = i1 - i0
            buffer.load(x_rows, i0 * c, i1 * c)
            for a in range(0, out_rows, span_rows):
                z = min(out_rows, a + span_rows)
                span = (z - a) * row
                cols = cols_buf[:, :, :, :k, :span]
                for t, (phase, shift) in enumerate(plan.taps):
                    # Rows of every channel and image at this tap's shift; the bounds
                    # hold: a valid position reads inside its own channel's plane, a
                    # cropped one at most `tail` past the last plane.
                    src = as_strided(buffer.flat[phase, shift + a * row:], (group, cg, k, span),
                                     (cg * plane * item, plane * item, c * plane * item, item),
                                     writeable=False)
                    np.copyto(cols[:, t], src)
                y = np.matmul(wt, cols.reshape(group, taps * cg, k * span),
                              out=y_buf[:, :, :k * span])
                valid = y.reshape(m, k, z - a, *plan.q[1:])[(slice(None), slice(None),
                                                             slice(None), *rest)]
                dst = out[i0:i1, :, a:z].swapaxes(0, 1)
                if bias is None:
                    np.copyto(dst, valid)
                else:
                    np.add(valid, bias, out=dst)
        return out

    return conv


def _compiled_depthwise_conv(x_shape: tuple[int, ...], out_shape: tuple[int, ...],
                             multiplier: int, strides: Sequence[int], pads_begin: Sequence[int],
                             dilations: Sequence[int]) -> _Fn:
    """2-d float32 depthwise conv with the Cython direct loop (_float_kernels.pyx)."""
    assert _compiled is not None
    no_bias = np.zeros(0, np.float32)
    out_h, out_w = out_shape[2:]

    def depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        return _compiled.depthwise_conv2d(
            np.ascontiguousarray(x), np.ascontiguousarray(w),
            no_bias if b is None else np.ascontiguousarray(b), multiplier,
            strides[0], strides[1], pads_begin[0], pads_begin[1], dilations[0], dilations[1],
            out_h, out_w)

    return depthwise


def _depthwise_conv(plan: _WindowPlan, x_shape: tuple[int, ...], out_shape: tuple[int, ...],
                    multiplier: int, dtype: np.dtype) -> _Fn:
    """One input channel per group (depthwise, any channel multiplier).

    Per chunk of (image, channel) rows: cols[tap] is one flat copy of the tap's
    slice, then a batched (multiplier x taps) @ (taps x plane) product per row.
    This beats accumulating the taps elementwise: those are 2 passes per tap over
    memory with a per-row weight, the copies are 1 pass and BLAS does the rest.
    """
    n, c = x_shape[:2]
    rows = n * c
    taps = len(plan.taps)
    spatial = len(x_shape) - 2
    chunk = _chunk_rows(rows, (plan.phases + taps) * plan.plane)

    def per_row(w: np.ndarray, b: np.ndarray | None = None) \
            -> tuple[np.ndarray, np.ndarray | None]:
        # Row r = (image, channel): its (multiplier, taps) weights and bias.
        wt = np.tile(w.reshape(c, multiplier, taps).astype(dtype), (n, 1, 1))
        bt = None if b is None else np.tile(b.astype(dtype).reshape(c, multiplier), (n, 1))
        return wt, None if bt is None else bt.reshape(rows, multiplier, *(1,) * spatial)

    derived = _Derived(per_row)

    def depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        wt, bt = derived(w) if b is None else derived(w, b)
        x_rows = x.reshape(rows, *x_shape[2:])
        out = np.empty((rows, multiplier, *out_shape[2:]), dtype)
        buffer = _PhaseBuffer(plan, chunk, 0.0, dtype)
        cols_buf = np.empty((taps, chunk * plan.plane), dtype)
        for r0 in range(0, rows, chunk):
            r1 = min(rows, r0 + chunk)
            k = r1 - r0
            buffer.load(x_rows, r0, r1)
            cols = cols_buf[:, :k * plan.plane]
            for t in range(taps):
                np.copyto(cols[t], buffer.tap(t, k))
            y = np.matmul(wt[r0:r1], cols.reshape(taps, k, plan.plane).transpose(1, 0, 2))
            valid = y.reshape(k * multiplier, *plan.q)[plan.crop]
            valid = valid.reshape(k, multiplier, *out_shape[2:])
            if bt is None:
                np.copyto(out[r0:r1], valid)
            else:
                np.add(valid, bt[r0:r1], out=out[r0:r1])
        return out.reshape(out_shape)

    return depthwise


def _build_conv_transpose(op: IRDLOperation) -> _Fn:
    x_shape, w_shape, out_shape = _in_shape(op, 0), _in_shape(op, 1), _out_shape(op)
    dtype = _out_dtype(op)
    spatial = len(x_shape) - 2
    group = _props(op).int("group")
    strides, pads_begin, _, dilations = _spatial_props(op, spatial)
    n, cin = x_shape[:2]
    in_sp = x_shape[2:]
    mg = w_shape[1]
    kernel = w_shape[2:]
    taps = math.prod(kernel)
    cg = cin // group
    m = mg * group
    positions = math.prod(in_sp)
    # Scatter target before cropping the pads: every tap lands inside it, and it
    # reaches the (output_padding-extended) output end.
    full_sp = tuple(max((in_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1,
                        pads_begin[i] + out_shape[2 + i]) for i in range(spatial))
    tap_slices = [
        (slice(None), slice(None), *(slice(tap[i] * dilations[i],
                                           tap[i] * dilations[i] + (in_sp[i] - 1) * strides[i] + 1,
                                           strides[i]) for i in range(spatial)))
        for tap in itertools.product(*(range(k) for k in kernel))]
    crop = (slice(None), slice(None),
            *(slice(pads_begin[i], pads_begin[i] + out_shape[2 + i]) for i in range(spatial)))

    def conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        # cols[n, g, (mg, taps), p] = W_g^T @ x_g; the transposed view goes to BLAS as is.
        wt = w.reshape(group, cg, mg * taps).transpose(0, 2, 1)
        cols = np.matmul(wt, x.reshape(n, group, cg, positions))
        cols = cols.reshape(n, m, taps, *in_sp)
        full = np.zeros((n, m, *full_sp), dtype)
        for t, where in enumerate(tap_slices):
            full[where] += cols[:, :, t]
        y = full[crop]
        if b is not None:
            return np.add(y, b.reshape(m, *(1,) * spatial), dtype=dtype)
        return np.ascontiguousarray(y)

    return conv_transpose


# --------------------------------------------------------------------------------------
# Normalisation and matrix products
# --------------------------------------------------------------------------------------


def _build_batch_norm(op: IRDLOperation) -> _Fn:
    x_shape, dtype = _in_shape(op), _out_dtype(op)
    epsilon = _props(op).float("epsilon")
    # (N, C, H*W) with (C, 1) factors: long inner loops (see _collapsed_shapes).
    flat = (x_shape[0], x_shape[1], math.prod(x_shape[2:]))
    channel_shape = (x_shape[1], 1)

    def fold(scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray) \
            -> tuple[np.ndarray, np.ndarray]:
        # y = (x - mean) / sqrt(var + eps) * scale + bias = x * k + (bias - mean * k)
        k = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
        shift = bias.astype(np.float64) - mean.astype(np.float64) * k
        return k.astype(dtype).reshape(channel_shape), shift.astype(dtype).reshape(channel_shape)

    folded = _Derived(fold)

    def batch_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                   var: np.ndarray) -> np.ndarray:
        k, shift = folded(scale, bias, mean, var)
        y = np.multiply(x.reshape(flat), k, out=np.empty(flat, dtype))
        y += shift
        return y.reshape(x_shape)

    return batch_norm


def _build_layer_norm(op: IRDLOperation) -> _Fn:
    x_shape, dtype = _in_shape(op), _out_dtype(op)
    props = _props(op)
    axis, epsilon = props.int("axis"), props.float("epsilon")
    outer, inner = math.prod(x_shape[:axis]), math.prod(x_shape[axis:])
    tail = x_shape[axis:]
    ones = np.ones(inner, dtype)

    def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None) \
            -> np.ndarray:
        x2 = x.reshape(outer, inner)
        # float32 two-pass statistics, as onnxruntime: mean, then mean((x - mean)^2).
        # Row sums as a matrix-vector product: BLAS beats numpy's per-row reduction.
        mean = np.matmul(x2, ones)
        mean *= 1 / inner
        d = np.subtract(x2, mean[:, None], out=np.empty((outer, inner), dtype))
        var = np.einsum("ij,ij->i", d, d)
        var *= 1 / inner
        var += epsilon
        np.sqrt(var, out=var)
        d /= var[:, None]
        d *= np.broadcast_to(scale, tail).reshape(inner)
        if bias is not None:
            d += np.broadcast_to(bias, tail).reshape(inner)
        return d.reshape(x_shape)

    return layer_norm


def _build_matmul(op: IRDLOperation) -> _Fn:
    a_shape, b_shape, out_shape = _in_shape(op, 0), _in_shape(op, 1), _out_shape(op)
    if len(b_shape) == 2 and len(a_shape) > 2:
        # (..., k) @ (k, n): one large GEMM instead of a batch of small ones.
        k = a_shape[-1]
        return lambda a, b: np.matmul(a.reshape(-1, k), b).reshape(out_shape)
    return np.matmul


def _build_gemm(op: IRDLOperation) -> _Fn:
    props = _props(op)
    alpha, beta = props.float("alpha"), props.float("beta")
    trans_a, trans_b = props.int("trans_a"), props.int("trans_b")

    def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        # Transposed views go to BLAS without a copy.
        y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
        if alpha != 1:
            y = y * alpha
        if c is not None and beta != 0:
            y = y + (c if beta == 1 else c * beta)
        return y

    return gemm


# --------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------


def _build_reduce(reduce: Callable[..., np.ndarray]) -> Callable[[IRDLOperation], _Fn]:
    def build(op: IRDLOperation) -> _Fn:
        props = _props(op)
        axes, keepdims = props.ints("axes"), bool(props.int("keepdims"))
        return lambda x: reduce(x, axis=axes, keepdims=keepdims)

    return build


# --------------------------------------------------------------------------------------
# Data movement
# --------------------------------------------------------------------------------------


def _build_concat(op: IRDLOperation) -> _Fn:
    axis = _props(op).int("axis")
    return lambda *inputs: np.concatenate(inputs, axis=axis)


def _split_factory(op: IRDLOperation) -> Kernel:
    props = _props(op)
    axis, sizes = props.int("axis"), props.ints("sizes")
    bounds = np.cumsum((0, *sizes)).tolist()
    where = [(slice(None),) * axis + (slice(lo, hi),)
             for lo, hi in itertools.pairwise(bounds)]
    dtypes = [_out_dtype(op, i) for i in range(len(op.results))]

    def split(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(x[w], dtype=d) for w, d in zip(where, dtypes, strict=True))

    return split


def _python_slice(start: int, end: int, step: int) -> slice:
    """The Python slice selecting range(start, end, step) of an axis (clamped bounds)."""
    picked = range(start, end, step)
    if not picked:
        return slice(0, 0)
    stop = picked[-1] + (1 if step > 0 else -1)
    # A negative stop would count from the end: None runs down to index 0 instead.
    return slice(picked[0], stop if stop >= 0 else None, step)


def _build_slice(op: IRDLOperation) -> _Fn:
    props = _props(op)
    where = tuple(_python_slice(s, e, st) for s, e, st in zip(
        props.ints("starts"), props.ints("ends"), props.ints("steps"), strict=True))
    return lambda x: x[where]


def _build_reshape(op: IRDLOperation) -> _Fn:
    shape = _props(op).ints("shape")
    return lambda x: x.reshape(shape)


def _build_expand(op: IRDLOperation) -> _Fn:
    shape = _props(op).ints("shape")
    # A writable copy: a broadcast view would be read-only and alias its input.
    return lambda x: np.array(np.broadcast_to(x, shape))


def _build_transpose(op: IRDLOperation) -> _Fn:
    perm = _props(op).ints("perm")
    return lambda x: x.transpose(perm)


def _build_pad(op: IRDLOperation) -> _Fn:
    props = _props(op)
    pads, mode, value = props.ints("pads"), props.str("mode"), props.float("value")
    x_shape, out_shape, dtype = _in_shape(op), _out_shape(op), _out_dtype(op)
    rank = len(x_shape)
    begins, ends = pads[:rank], pads[rank:]
    # Negative pads crop the input first; the rest pads.
    crop = tuple(slice(max(0, -b), d - max(0, -e)) for b, e, d in zip(begins, ends, x_shape,
                                                                          strict=True))
    grow = [(max(0, b), max(0, e)) for b, e in zip(begins, ends, strict=True)]
    interior = tuple(slice(b, b + s.stop - s.start) for (b, _), s in zip(grow, crop,
                                                                         strict=True))
    if mode == "constant":
        element = op.results[0].type.element_type  # type: ignore[attr-defined]
        if isinstance(element, QuantizedType):  # the integer program pads with q(value)
            fill = quantize_array(np.array(value, dtype=np.float32), element)
        else:
            fill = np.array(value).astype(dtype)

        def pad_constant(x: np.ndarray) -> np.ndarray:
            out = np.full(out_shape, fill, dtype)
            out[interior] = x[crop]
            return out

        return pad_constant
    numpy_mode = {"reflect": "reflect", "edge": "edge"}[mode]
    return lambda x: np.pad(x[crop], grow, mode=numpy_mode)


def _build_resize(op: IRDLOperation) -> _Fn:
    props = _props(op)
    x_shape, dtype = _in_shape(op), _out_dtype(op)
    sizes, scales = props.ints("sizes"), props.floats("scales")
    mode, transform = props.str("mode"), props.str("coordinate_transformation_mode")
    rounding = props.str("nearest_mode")
    rank = len(x_shape)
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    for axis in range(rank):
        in_len, out_len = x_shape[axis], sizes[axis]
        if tuple(sizes) == tuple(x_shape) or (scales[axis] == 1 and out_len == in_len):
            # onnxruntime copies the input when no size changes, and copies each axis
            # of scale 1, whatever the transform (tf_half_pixel_for_nn or ceil rounding
            # would shift them, a scale like 1.25 on 2 pixels too).
            continue
        coords = source_coordinates(out_len, in_len, scales[axis], transform)
        if mode == "nearest":
            index = nearest_index(coords, in_len, rounding)
            steps.append(lambda x, a=axis, i=index: np.take(x, i, axis=a))
            continue
        # Linear: onnxruntime clamps the coordinate into the input, takes its two
        # neighbours and weights |c - other neighbour| (0.5 each at the last pixel).
        c = np.clip(coords, np.float32(0), np.float32(in_len - 1))
        lo = c.astype(np.intp)
        hi = np.minimum(lo + 1, in_len - 1)
        w_lo = np.abs(c - hi.astype(np.float32))
        w_hi = np.abs(c - lo.astype(np.float32))
        same = lo == hi
        w_lo[same] = 0.5
        w_hi[same] = 0.5
        bshape = [1] * rank
        bshape[axis] = out_len
        w_lo = w_lo.astype(dtype).reshape(bshape)
        w_hi = w_hi.astype(dtype).reshape(bshape)

        def linear(x: np.ndarray, a: int = axis, lo: np.ndarray = lo, hi: np.ndarray = hi,
                   w_lo: np.ndarray = w_lo, w_hi: np.ndarray = w_hi) -> np.ndarray:
            y = np.take(x, lo, axis=a)
            y *= w_lo
            y += np.take(x, hi, axis=a) * w_hi
            return y

        steps.append(linear)

    def resize(x: np.ndarray) -> np.ndarray:
        for step in steps:
            x = step(x)
        return x if steps else x.copy()

    return resize


def _build_gather(op: IRDLOperation) -> _Fn:
    axis = _props(op).int("axis")
    # np.take counts negative indices from the end, as ONNX Gather does.
    return lambda data, indices: np.take(data, indices, axis=axis)


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------

_FACTORIES: dict[type[IRDLOperation], _Factory] = {
    nn.ReluOp: _single(_build_relu),
    nn.SigmoidOp: _single(_build_sigmoid),
    nn.TanhOp: _single(_build_tanh),
    nn.ErfOp: _single(_build_erf),
    nn.SqrtOp: _single(_build_sqrt),
    nn.ReciprocalOp: _single(_build_reciprocal),
    nn.ExpOp: _single(_build_exp),
    nn.NegOp: _single(_build_neg),
    nn.HardSwishOp: _single(_build_hard_swish),
    nn.LeakyReluOp: _single(_build_leaky_relu),
    nn.HardSigmoidOp: _single(_build_hard_sigmoid),
    nn.GeluOp: _single(_build_gelu),
    nn.ClipOp: _single(_build_clip),
    nn.SoftmaxOp: _single(_build_softmax),
    nn.LRNOp: _single(_build_lrn),
    nn.CastOp: _single(_build_cast),
    nn.AddOp: _single(_build_binary(np.add)),
    nn.SubOp: _single(_build_binary(np.subtract)),
    nn.MulOp: _single(_build_binary(np.multiply)),
    nn.DivOp: _single(_build_div),
    nn.PowOp: _single(_build_binary(np.power, quiet=True)),
    nn.MaxOp: _single(_build_binary(np.maximum)),
    nn.MinOp: _single(_build_binary(np.minimum)),
    nn.EqualOp: _single(_build_binary(np.equal)),
    nn.PReluOp: _single(_build_prelu),
    nn.WhereOp: _single(_build_where),
    nn.ConvOp: _single(_build_conv),
    nn.ConvTransposeOp: _single(_build_conv_transpose),
    nn.BatchNormOp: _single(_build_batch_norm),
    nn.LayerNormOp: _single(_build_layer_norm),
    nn.MatMulOp: _single(_build_matmul),
    nn.GemmOp: _single(_build_gemm),
    nn.ReduceMeanOp: _single(_build_reduce(np.mean)),
    nn.ReduceSumOp: _single(_build_reduce(np.sum)),
    nn.ReduceMaxOp: _single(_build_reduce(np.max)),
    nn.GlobalAveragePoolOp: _single(_build_global_average_pool),
    nn.AveragePoolOp: _single(_build_pool),
    nn.MaxPoolOp: _single(_build_pool),
    nn.ConcatOp: _single(_build_concat),
    nn.SplitOp: _split_factory,
    nn.SliceOp: _single(_build_slice),
    nn.ReshapeOp: _single(_build_reshape),
    nn.ExpandOp: _single(_build_expand),
    nn.TransposeOp: _single(_build_transpose),
    nn.PadOp: _single(_build_pad),
    nn.ResizeOp: _single(_build_resize),
    nn.GatherOp: _single(_build_gather),
}


def kernel_ops() -> frozenset[type[IRDLOperation]]:
    """The op classes `compile_kernel` accepts."""
    return frozenset(_FACTORIES)


def _inplace_hard_swish(x: np.ndarray) -> None:
    gate = np.multiply(x, np.float32(1 / 6))
    gate += np.float32(0.5)
    np.clip(gate, 0, 1, out=gate)
    x *= gate


# Activation kinds of the compiled epilogue (enum in _float_simd.h).
_EPILOGUE_KINDS = {type(None): 0, nn.ReluOp: 1, nn.ClipOp: 2, nn.HardSwishOp: 3}


def compile_epilogue(activation: IRDLOperation | None, bias: np.ndarray | None) -> InPlace | None:
    """In place on a fresh float32 (N, C, ...) array: add `bias` per channel, then apply
    `activation` (Relu, Clip or HardSwish); None if the activation has no such form.

    One pass with the Cython extension, else numpy; either way the float operations
    are those of the separate kernels (bias add, then the activation).
    """
    if type(activation) not in _EPILOGUE_KINDS:
        return None
    if activation is not None and _out_dtype(activation) != np.float32:
        return None
    kind = _EPILOGUE_KINDS[type(activation)]
    low, high = -math.inf, math.inf
    if isinstance(activation, nn.ClipOp):
        props = _props(activation)
        low, high = props.float("min", -math.inf), props.float("max", math.inf)
    bias32 = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if _compiled is not None:
        no_bias = np.zeros(0, np.float32)

        def compiled_epilogue(y: np.ndarray) -> None:
            channels = y.shape[1] if y.ndim > 1 else 1
            _compiled.bias_activation(y.reshape(y.shape[0] if y.ndim > 1 else 1, channels, -1),
                                      no_bias if bias32 is None else bias32, kind, low, high)

        return compiled_epilogue

    def numpy_epilogue(y: np.ndarray) -> None:
        if bias32 is not None:
            y += bias32.reshape(-1, *([1] * (y.ndim - 2)))
        if kind == 1:
            np.maximum(y, np.float32(0), out=y)
        elif kind == 2:
            np.clip(y, None if low == -math.inf else low, None if high == math.inf else high,
                    out=y)
        elif kind == 3:
            _inplace_hard_swish(y)

    return numpy_epilogue


def compile_kernel(op: IRDLOperation) -> Kernel:
    """The numpy kernel of an nn op; raises QuantirError for an op without one.

    An op carrying a fused activation (`activation = "relu"`, ...: fuse-activation)
    applies it to its result: see `_then_activation`.
    """
    factory = _FACTORIES.get(type(op))
    if factory is None:
        raise QuantirError(f"{op.name} '{_node_name(op)}': no float kernel for this op")
    kernel = factory(op)
    if isinstance(op, nn.FusedActivationOperation):
        activation = op.activation_op()
        if activation is not None:
            return _then_activation(kernel, activation)
    return kernel


def _then_activation(kernel: Kernel, activation: IRDLOperation) -> Kernel:
    """`kernel`, then the standalone `activation` op's own code on its result: the
    in-place epilogue where there is one (Relu, Clip, HardSwish in float32), else the
    activation's kernel. Either way the numbers are those of the unfused graph.

    The ops that may carry an activation (conv, conv_transpose, gemm, matmul, add)
    return fresh arrays, never views of their inputs, so overwriting is safe; a
    read-only or strided result (a 0-d ufunc result, say) is copied first.
    """
    epilogue = compile_epilogue(activation, None)
    if epilogue is None:
        separate = compile_kernel(activation)

        def then_kernel(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
            return separate(*kernel(*inputs))

        return then_kernel

    def then_in_place(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        (y,) = kernel(*inputs)
        if not (y.flags.writeable and y.flags.c_contiguous):
            # order="C": np.array keeps a transposed (F-order) result's layout.
            y = np.array(y, dtype=np.float32, order="C")
        epilogue(y)
        return (y,)

    return then_in_place
