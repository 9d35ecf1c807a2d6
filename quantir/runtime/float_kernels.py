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
treated as immutable: derived data (folded batch-norm scale and shift) is cached
while the same read-only buffer comes back.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided
from xdsl.dialects.builtin import TensorType
from xdsl.irdl import IRDLOperation

from quantir.dialects import nn
from quantir.errors import QuantirError
from quantir.ir import dtype_of, shape_of

__all__ = ["Kernel", "compile_kernel", "erf", "kernel_ops"]

Kernel = Callable[..., tuple[np.ndarray, ...]]
"""A compiled op: input arrays in operand order -> one array per result."""

_Fn = Callable[..., np.ndarray]
_Factory = Callable[[IRDLOperation], Kernel]

# About 256 KiB of float32 per chunk: window sweeps keep their few working arrays in L2.
_CHUNK_ELEMENTS = 1 << 16


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


class _Derived:
    """Caches f(*arrays) while the same read-only buffers come back.

    Keys are the buffers' addresses, shapes, strides and dtypes; the arrays are kept
    alive with the entry, so an address cannot be reused by other data meanwhile.
    Writable arrays are never cached (they may change between calls).
    """

    def __init__(self, fn: Callable[..., object]):
        self._fn = fn
        self._entry: tuple[tuple, tuple, object] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _key(arrays: Sequence[np.ndarray]) -> tuple | None:
        if not all(isinstance(a, np.ndarray) and not a.flags.writeable for a in arrays):
            return None
        return tuple((a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
                     for a in arrays)

    def __call__(self, *arrays: np.ndarray) -> object:
        key = self._key(arrays)
        entry = self._entry
        if key is not None and entry is not None and entry[0] == key:
            return entry[2]
        value = self._fn(*arrays)
        if key is not None:
            with self._lock:
                self._entry = (key, arrays, value)
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

    def softmax(x: np.ndarray) -> np.ndarray:
        # Subtract the max first: exp never overflows and the largest term is 1.
        e = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=np.empty(shape, dtype))
        np.exp(e, out=e)
        e /= np.sum(e, axis=axis, keepdims=True)
        return e

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


def _build_binary(ufunc: np.ufunc, quiet: bool = False) -> Callable[[IRDLOperation], _Fn]:
    def build(op: IRDLOperation) -> _Fn:
        return _quiet(ufunc) if quiet else ufunc

    return build


def _build_div(op: IRDLOperation) -> _Fn:
    if np.issubdtype(_out_dtype(op), np.integer):
        def int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            # ONNX integer Div truncates toward zero; numpy's // floors.
            q = np.floor_divide(a, b)
            q += (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
            return q

        return _quiet(int_div)
    return _quiet(np.divide)


def _build_prelu(op: IRDLOperation) -> _Fn:
    return lambda x, slope: np.where(x < 0, x * slope, x)


def _build_where(op: IRDLOperation) -> _Fn:
    return np.where


# --------------------------------------------------------------------------------------
# Sliding windows (depthwise conv, pooling): phase-split flat sweeps
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WindowPlan:
    """How to sweep a window over the spatial axes of (rows, *spatial) arrays.

    The padded input is split into stride phases (for stride 1 there is one phase:
    the padded input itself), each a (rows, *q) buffer. Within a phase every kernel
    tap is a stride-1 shift, so each tap becomes one contiguous slice of length
    `length` of the flattened buffer: long inner loops instead of one short numpy
    loop per output row. The accumulator holds out[0] x q[1:] per row (a few padding
    columns too many); `crop` cuts out the real outputs.
    """

    phases: int
    q: tuple[int, ...]
    plane: int
    copies: tuple[tuple[int, tuple[slice, ...], tuple[slice, ...]], ...]
    taps: tuple[tuple[int, int], ...]
    length: int
    acc_shape: tuple[int, ...]
    crop: tuple[slice, ...]
    out: tuple[int, ...]


def _window_plan(size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 pads_begin: Sequence[int], dilations: Sequence[int],
                 out: Sequence[int]) -> _WindowPlan:
    rank = len(size)
    # Phase buffers must reach the last tap of the last window: q = out + max tap shift.
    q = tuple(out[i] + (kernel[i] - 1) * dilations[i] // strides[i] for i in range(rank))
    qstrides = tuple(math.prod(q[i + 1:]) for i in range(rank))
    taps_nd = list(itertools.product(*(range(k) for k in kernel)))
    phase_of = {}
    taps = []
    for tap in taps_nd:
        phase = tuple(tap[i] * dilations[i] % strides[i] for i in range(rank))
        shift = sum(tap[i] * dilations[i] // strides[i] * qstrides[i] for i in range(rank))
        taps.append((phase_of.setdefault(phase, len(phase_of)), shift))
    copies = []
    for phase, index in phase_of.items():
        dst, src = [], []
        for i in range(rank):
            s, a, pb = strides[i], phase[i], pads_begin[i]
            # Buffer index j holds padded coordinate j*s + a, input coordinate j*s + a - pb.
            lo = max(0, -((a - pb) // s))
            hi = min(q[i], -((a - pb - size[i]) // s))
            if hi <= lo:
                break
            first = lo * s + a - pb
            dst.append(slice(lo, hi))
            src.append(slice(first, first + (hi - lo - 1) * s + 1, s))
        else:
            copies.append((index, tuple(dst), tuple(src)))
    length = sum((out[i] - 1) * qstrides[i] for i in range(rank)) + 1
    acc_shape = (out[0], *q[1:])
    crop = (slice(None), slice(None), *(slice(0, o) for o in out[1:]))
    return _WindowPlan(len(phase_of), q, math.prod(q), tuple(copies), tuple(taps), length,
                       acc_shape, crop, tuple(out))


class _Sweep:
    """Runs a window plan over row chunks small enough to stay in cache."""

    def __init__(self, plan: _WindowPlan, rows: int, fill: float, dtype: np.dtype):
        self.plan = plan
        self.rows = rows
        self.fill = fill
        self.dtype = dtype
        per_row = plan.plane * plan.phases + 2 * math.prod(plan.acc_shape)
        self.chunk = max(1, min(rows, _CHUNK_ELEMENTS * 3 // max(per_row, 1)))

    def buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plan = self.plan
        # Fill once per call: chunks overwrite the same interior, borders stay `fill`.
        phases = np.full((plan.phases, self.chunk, plan.plane), self.fill, self.dtype)
        acc = np.empty((self.chunk, math.prod(plan.acc_shape)), self.dtype)
        tmp = np.empty((self.chunk, plan.length), self.dtype)
        return phases, acc, tmp

    def load(self, phases: np.ndarray, x_rows: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Copy rows r0:r1 of the input into the phase buffers; returns them (rows, plane)."""
        rows = r1 - r0
        buf = phases[:, :rows]
        shaped = buf.reshape(self.plan.phases, rows, *self.plan.q)
        for index, dst, src in self.plan.copies:
            shaped[index][(slice(None), *dst)] = x_rows[(slice(r0, r1), *src)]
        return buf

    def cropped(self, acc: np.ndarray) -> np.ndarray:
        rows = acc.shape[0]
        return acc.reshape(rows, *self.plan.acc_shape)[self.plan.crop]


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
    sweep = _Sweep(plan, rows, -math.inf if is_max else 0.0, dtype)
    inv_count = None
    if not is_max:
        include_pad = bool(_props(op).int("count_include_pad"))
        # onnxruntime's divisor: the window clipped to the input (count_include_pad=0)
        # or to the padded input (=1; windows that ceil_mode lets run past the end
        # padding are clipped there too).
        counts = []
        for i in range(spatial):
            start = np.arange(out_shape[2 + i]) * strides[i] - pads_begin[i]
            end = start + kernel[i]
            if include_pad:
                counts.append(np.minimum(end, x_shape[2 + i] + pads_end[i]) - start)
            else:
                counts.append(np.minimum(end, x_shape[2 + i]) - np.maximum(start, 0))
        count = np.ones((), np.float64)
        for c in counts:
            count = np.multiply.outer(count, c)
        inv_count = (1.0 / count).astype(dtype)
    combine = np.maximum if is_max else np.add

    def pool(x: np.ndarray) -> np.ndarray:
        x_rows = x.reshape(rows, *x_shape[2:])
        out = np.empty((rows, *out_shape[2:]), dtype)
        phases, acc_buf, _ = sweep.buffers()
        length = plan.length
        for r0 in range(0, rows, sweep.chunk):
            r1 = min(rows, r0 + sweep.chunk)
            buf = sweep.load(phases, x_rows, r0, r1)
            acc = acc_buf[:r1 - r0]
            head = acc[:, :length]
            (phase, shift), *rest = plan.taps
            np.copyto(head, buf[phase, :, shift:shift + length])
            for phase, shift in rest:
                combine(head, buf[phase, :, shift:shift + length], out=head)
            if inv_count is None:
                np.copyto(out[r0:r1], sweep.cropped(acc))
            else:
                np.multiply(sweep.cropped(acc), inv_count, out=out[r0:r1])
        return out.reshape(out_shape)

    return pool


def _build_global_average_pool(op: IRDLOperation) -> _Fn:
    x_shape, out_shape = _in_shape(op), _out_shape(op)
    n, c = x_shape[:2]
    return lambda x: x.reshape(n, c, -1).mean(axis=2).reshape(out_shape)


# --------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------


def _padded(x: np.ndarray, pads_begin: Sequence[int], pads_end: Sequence[int],
            dtype: np.dtype) -> np.ndarray:
    """A C-contiguous zero-padded copy of x over its spatial axes (x itself if no pads)."""
    if not any(pads_begin) and not any(pads_end):
        return np.ascontiguousarray(x, dtype=dtype)
    shape = (*x.shape[:2], *(d + b + e for d, b, e in zip(x.shape[2:], pads_begin, pads_end,
                                                           strict=True)))
    out = np.zeros(shape, dtype)
    out[(slice(None), slice(None), *(slice(b, b + d) for b, d in zip(pads_begin, x.shape[2:],
                                                                     strict=True)))] = x
    return out


def _build_conv(op: IRDLOperation) -> _Fn:
    x_shape, w_shape, out_shape = _in_shape(op, 0), _in_shape(op, 1), _out_shape(op)
    dtype = _out_dtype(op)
    has_bias = len(op.operands) == 3
    spatial = len(x_shape) - 2
    group = _props(op).int("group")
    strides, pads_begin, pads_end, dilations = _spatial_props(op, spatial)
    n, c = x_shape[:2]
    m, cg = w_shape[:2]
    kernel = w_shape[2:]
    out_sp = out_shape[2:]
    taps = math.prod(kernel)
    positions = math.prod(out_sp)

    if group == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides) \
            and not any(pads_begin) and not any(pads_end):
        # 1x1 stride-1 conv: a plain (m, c) @ (c, positions) product per image.
        def pointwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
            y = np.matmul(w.reshape(m, c), x.reshape(n, c, positions))
            if b is not None:
                y += b.reshape(m, 1)
            return y.reshape(out_shape)

        return pointwise

    if group == c and cg == 1 and m == c:
        return _depthwise_conv(x_shape, kernel, strides, pads_begin, dilations, out_shape,
                               dtype)

    # im2col over a padded copy: a strided view (n, group, cg, *kernel, *out) of the
    # windows, copied once into (n, group, cg * taps, positions), then one batched
    # matmul with the (group, m / group, cg * taps) weights.
    mg = m // group
    padded_sp = [d + b + e for d, b, e in zip(x_shape[2:], pads_begin, pads_end, strict=True)]
    item = np.dtype(dtype).itemsize
    el_strides = [math.prod(padded_sp[i + 1:]) for i in range(spatial)]
    plane = math.prod(padded_sp)
    view_shape = (n, group, cg, *kernel, *out_sp)
    view_strides = tuple(item * s for s in (
        c * plane, cg * plane, plane,
        *(dilations[i] * el_strides[i] for i in range(spatial)),
        *(strides[i] * el_strides[i] for i in range(spatial))))
    rows = cg * taps

    def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        xp = _padded(x, pads_begin, pads_end, dtype)
        windows = as_strided(xp, view_shape, view_strides, writeable=False)
        cols = windows.reshape(n, group, rows, positions)
        y = np.matmul(w.reshape(group, mg, rows), cols)
        if b is not None:
            y += b.reshape(group, mg, 1)
        return y.reshape(out_shape)

    return conv


def _depthwise_conv(x_shape: tuple[int, ...], kernel: Sequence[int], strides: Sequence[int],
                    pads_begin: Sequence[int], dilations: Sequence[int],
                    out_shape: tuple[int, ...], dtype: np.dtype) -> _Fn:
    """One filter per channel: taps accumulate as multiply-adds over flat phase slices."""
    n, c = x_shape[:2]
    plan = _window_plan(x_shape[2:], kernel, strides, pads_begin, dilations, out_shape[2:])
    rows = n * c
    taps = math.prod(kernel)
    sweep = _Sweep(plan, rows, 0.0, dtype)
    ones = (1,) * (len(x_shape) - 2)

    def per_row(w: np.ndarray, b: np.ndarray | None = None) \
            -> tuple[np.ndarray, np.ndarray | None]:
        # (taps, rows, 1) weights and (rows, 1, ...) bias: row r is channel r % c.
        wt = np.tile(w.reshape(c, taps).T.astype(dtype), (1, n)).reshape(taps, rows, 1)
        bt = None if b is None else np.tile(b.astype(dtype), n).reshape(rows, *ones)
        return wt, bt

    derived = _Derived(per_row)

    def depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        wt, bt = derived(w) if b is None else derived(w, b)
        x_rows = x.reshape(rows, *x_shape[2:])
        out = np.empty((rows, *out_shape[2:]), dtype)
        phases, acc_buf, tmp_buf = sweep.buffers()
        length = plan.length
        for r0 in range(0, rows, sweep.chunk):
            r1 = min(rows, r0 + sweep.chunk)
            buf = sweep.load(phases, x_rows, r0, r1)
            acc = acc_buf[:r1 - r0]
            head = acc[:, :length]
            tmp = tmp_buf[:r1 - r0]
            (phase, shift), *rest = plan.taps
            np.multiply(buf[phase, :, shift:shift + length], wt[0, r0:r1], out=head)
            for t, (phase, shift) in enumerate(rest, 1):
                np.multiply(buf[phase, :, shift:shift + length], wt[t, r0:r1], out=tmp)
                head += tmp
            if bt is None:
                np.copyto(out[r0:r1], sweep.cropped(acc))
            else:
                np.add(sweep.cropped(acc), bt[r0:r1], out=out[r0:r1])
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
    channel_shape = (x_shape[1], *(1,) * (len(x_shape) - 2))

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
        y = np.multiply(x, k, out=np.empty(x_shape, dtype))
        y += shift
        return y

    return batch_norm


def _build_layer_norm(op: IRDLOperation) -> _Fn:
    x_shape, dtype = _in_shape(op), _out_dtype(op)
    props = _props(op)
    axis, epsilon = props.int("axis"), props.float("epsilon")
    outer, inner = math.prod(x_shape[:axis]), math.prod(x_shape[axis:])
    tail = x_shape[axis:]

    def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None) \
            -> np.ndarray:
        x2 = x.reshape(outer, inner)
        # float32 two-pass statistics, as onnxruntime: mean, then mean((x - mean)^2).
        d = np.subtract(x2, x2.mean(axis=1, keepdims=True), out=np.empty((outer, inner), dtype))
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
            y *= alpha
        if c is not None and beta != 0:
            y += c if beta == 1 else c * beta
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
        fill = np.array(value).astype(dtype)

        def pad_constant(x: np.ndarray) -> np.ndarray:
            out = np.full(out_shape, fill, dtype)
            out[interior] = x[crop]
            return out

        return pad_constant
    numpy_mode = {"reflect": "reflect", "edge": "edge"}[mode]
    return lambda x: np.pad(x[crop], grow, mode=numpy_mode)


def _resize_source(out_len: int, in_len: int, scale: float, transform: str) -> np.ndarray:
    """Input coordinates of the output positions, in float32 like onnxruntime."""
    x = np.arange(out_len, dtype=np.float32)
    s = np.float32(scale)
    if transform == "half_pixel":
        return (x + np.float32(0.5)) / s - np.float32(0.5)
    if transform == "pytorch_half_pixel":
        if out_len <= 1:
            return np.zeros(out_len, np.float32)
        return (x + np.float32(0.5)) / s - np.float32(0.5)
    if transform == "align_corners":
        if out_len <= 1:
            return np.zeros(out_len, np.float32)
        return x * np.float32(in_len - 1) / np.float32(out_len - 1)
    if transform == "asymmetric":
        return x / s
    if transform == "tf_half_pixel_for_nn":
        return (x + np.float32(0.5)) / s
    raise QuantirError(f"Resize coordinate transformation {transform!r} is not supported")


def _nearest_index(coords: np.ndarray, in_len: int, rounding: str) -> np.ndarray:
    wide = coords.astype(np.float64)
    # std::round (half away from zero) for the round_* modes, as onnxruntime.
    rounded = np.sign(wide) * np.floor(np.abs(wide) + 0.5)
    if rounding == "round_prefer_floor":
        halfway = wide == np.trunc(wide) + 0.5
        index = np.where(halfway, np.floor(wide), rounded)
    elif rounding == "round_prefer_ceil":
        index = rounded
    elif rounding == "floor":
        index = np.floor(wide)
    else:
        index = np.ceil(wide)
    return np.clip(index, 0, in_len - 1).astype(np.intp)


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
        if scales[axis] == 1 and out_len == in_len:
            # onnxruntime copies unscaled axes whatever the transform (tf_half_pixel_for_nn
            # and ceil rounding would otherwise shift them by one).
            continue
        coords = _resize_source(out_len, in_len, scales[axis], transform)
        if mode == "nearest":
            index = _nearest_index(coords, in_len, rounding)
            if out_len == in_len and np.array_equal(index, np.arange(in_len)):
                continue
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
        if out_len == in_len and np.array_equal(lo, np.arange(in_len)) and not w_hi[~same].any():
            continue
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


def compile_kernel(op: IRDLOperation) -> Kernel:
    """The numpy kernel of an nn op; raises QuantirError for an op without one."""
    factory = _FACTORIES.get(type(op))
    if factory is None:
        raise QuantirError(f"{op.name} '{_node_name(op)}': no float kernel for this op")
    return factory(op)
