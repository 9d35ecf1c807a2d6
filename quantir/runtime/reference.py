"""The executable specification of quantir's integer program, in plain numpy.

One function per integer op. The lowering emits these ops and `quantir run` executes
them; the Cython kernels (`_kernels.pyx`) must return the same integers as this file
on every input. Each docstring states the formula; where the formula and the code
disagree, the code is the spec and the docstring is the bug.

Conventions:

- Integer tensors are numpy arrays in their storage dtype (int8, uint8, int16,
  uint16, int32). Every computation runs in int64.
- "Accumulator" results (conv, matmul, add, ..., softmax, layernorm) are np.int32:
  the exact int64 value SATURATED to [-2^31, 2^31 - 1] at the end (`saturate_int32`).
  The int64 arithmetic before that is exact when the storage types are at most 16
  bits (a sum of K products of two 17-bit differences needs K < 2^29); wider inputs
  may overflow int64 and are outside this spec.
- Zero points are Python ints or 1-D int arrays (per channel, along the axis each
  function names). `x - zp` is formed in int64.
- Layout is NCHW; `pads` follow ONNX order (top, left, bottom, right) and must be >= 0.
- `fraction_bits` (F) adds F fraction bits to a quotient: `round_div(v << F, den)`.
  A `v << F` that would leave int64 raises ValueError rather than wrap.

Requantization (`requantize`, `scale_round`) implements the named rounding modes of
`q.requant` (see `quantir.dialects.q.RequantOp`); `quantize_multiplier` derives the
(multiplier, shift) pair of a real scale ratio.

Integer products may run as float64 BLAS products (`_int_matmul`) only when a bound
proves every partial sum is an integer below 2^53, so they are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from xdsl.utils.exceptions import VerifyException

from quantir.dialects.nn import window_output_size
from quantir.dialects.q import MAX_MULTIPLIER, MAX_SHIFT, MIN_SHIFT, ROUNDING_MODES
from quantir.runtime.resize_coordinates import (
    TRANSFORMS,
    nearest_index,
    source_coordinates,
)

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_F64_EXACT = 2**53
"""Every integer of magnitude <= 2^53 is a float64."""




# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _i64(value: ArrayLike) -> np.ndarray:
    """An int64 view or copy of an integer array (or Python int)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _along(value: ArrayLike, axis: int, ndim: int, what: str, size: int | None = None) \
        -> np.ndarray:
    """An int scalar as a 0-d int64 array, or a 1-D array shaped to broadcast along `axis`."""
    arr = _i64(value)
    if arr.ndim == 0:
        return arr
    if arr.ndim != 1:
        raise ValueError(f"{what} must be an int or a 1-D array, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{what} has {arr.shape[0]} entries for a dimension of size {size}")
    shape = [1] * ndim
    shape[axis] = arr.shape[0]
    return arr.reshape(shape)


def _normalise_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"axis {axis} is outside the rank {ndim}")
    return axis % max(ndim, 1)


def _check_mode(rounding: str) -> None:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode '{rounding}': expected one of "
                         f"{', '.join(ROUNDING_MODES)}")


def _bound(arr: np.ndarray) -> int:
    """max |arr| as a Python int (0 for an empty array)."""
    return int(np.abs(arr).max()) if arr.size else 0


def _int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul of two int64 arrays, exactly, as int64.

    Runs in float64 (BLAS) when K * max|a| * max|b| <= 2^53: then every product and
    every partial sum, in whatever order or with FMA, is an integer of magnitude <= 2^53,
    which float64 holds exactly, so no step rounds. Otherwise in int64 (numpy's loop).
    """
    k = a.shape[-1]
    if k * _bound(a) * _bound(b) <= _F64_EXACT:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a, b)


def _window_out(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                dilation: int = 1, ceil_mode: bool = False) -> int:
    """ONNX output length of a sliding window along one axis: `nn.window_output_size`
    (floor or ceil of (size + pads - effective kernel) / stride, plus one), with its
    preconditions checked and its error raised as ValueError."""
    if stride < 1 or dilation < 1 or kernel < 1:
        raise ValueError(f"kernel {kernel}, stride {stride} and dilation {dilation} must be >= 1")
    if pad_begin < 0 or pad_end < 0:
        raise ValueError(f"negative pads ({pad_begin}, {pad_end}) are not supported")
    try:
        return window_output_size(size, kernel, stride, pad_begin, pad_end, dilation, ceil_mode)
    except VerifyException as error:
        raise ValueError(str(error)) from error


def saturate_int32(v: ArrayLike) -> np.ndarray:
    """clamp(v, -2^31, 2^31 - 1) as np.int32 (v: integers representable in int64)."""
    return np.clip(_i64(v), INT32_MIN, INT32_MAX).astype(np.int32)


def _shl(v: np.ndarray, bits: int, what: str) -> np.ndarray:
    """v << bits, raising ValueError when a value would leave int64."""
    if bits < 0:
        raise ValueError(f"{what}: fraction_bits {bits} must be >= 0")
    if _bound(v) << bits > INT64_MAX:
        raise ValueError(f"{what}: values up to {_bound(v)} with {bits} fraction bits "
                         "overflow int64")
    return v << bits


def _check_int32_range(x: np.ndarray, what: str) -> None:
    if x.size and (int(x.min()) < INT32_MIN or int(x.max()) > INT32_MAX):
        raise ValueError(f"{what} has values outside the int32 range "
                         f"[{int(x.min())}, {int(x.max())}]")


# --------------------------------------------------------------------------------------
# Fixed-point multipliers and rounding
# --------------------------------------------------------------------------------------


def quantize_multiplier(real: float, rounding: str = "tflite") -> tuple[int, int]:
    """(multiplier, shift) with real ~= multiplier * 2^(shift - 31), multiplier a Q31 int32.

        q, e = frexp(real)             q in [0.5, 1)
        M = int(round(q * 2^31))       Python round: ties to even (q * 2^31 is exact)
        if M == 2^31: M = 2^30; e += 1
        shift = e

    real == 0, or e < -31 after the carry (real below ~2^-32), gives (0, 0): the
    product rounds to 0 in every mode. Raises ValueError for a negative or non-finite
    real, and for shift > q.MAX_SHIFT[rounding] (tflite 31, single 30, tosa 29).
    """
    _check_mode(rounding)
    real = float(real)
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"scale ratio {real} must be finite and >= 0")
    if real == 0:
        return 0, 0
    q, e = math.frexp(real)
    m = int(round(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        e += 1
    if e < MIN_SHIFT:
        return 0, 0
    if e > MAX_SHIFT[rounding]:
        raise ValueError(f"scale ratio {real} too large for rounding mode '{rounding}' "
                         f"(shift {e} > {MAX_SHIFT[rounding]})")
    return m, e


def quantize_multipliers(reals: ArrayLike, rounding: str = "tflite") \
        -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` of each element: (int32 multipliers, int64 shifts), same shape."""
    values = np.asarray(reals, dtype=np.float64)
    pairs = [quantize_multiplier(float(r), rounding) for r in values.reshape(-1)]
    multipliers = np.array([m for m, _ in pairs], dtype=np.int32).reshape(values.shape)
    shifts = np.array([s for _, s in pairs], dtype=np.int64).reshape(values.shape)
    return multipliers, shifts


def srdhm(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul (gemmlowp) of int32-range values, as int64.

        if a == b == -2^31: 2^31 - 1
        else: ab = a * b; nudge = 2^30 if ab >= 0 else 1 - 2^30
              (ab + nudge) / 2^31, truncated toward zero

    i.e. round(a * b / 2^31) with ties toward +inf (2.5 -> 3, -2.5 -> -2).
    """
    a64, b64 = _i64(a), _i64(b)
    ab = a64 * b64
    t = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where((a64 == INT32_MIN) & (b64 == INT32_MIN), INT32_MAX, high).astype(np.int64)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """RoundingDivideByPOT (gemmlowp): round(x / 2^exponent), ties away from zero, int64.

        mask = 2^exponent - 1; rem = x & mask; thr = (mask >> 1) + (x < 0)
        (x >> exponent) + (rem > thr)          (>> arithmetic; 0 <= exponent <= 31)
    """
    x64, e64 = _i64(x), _i64(exponent)
    mask = np.left_shift(np.int64(1), e64) - 1
    rem = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e64) + (rem > threshold)


def scale_round(x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike,
                rounding: str = "tflite") -> np.ndarray:
    """round(x * multiplier * 2^(shift - 31)) with the named rounding, as int64.

    `x`: integers in the int32 range (any integer dtype); `multiplier` in
    [0, 2^31 - 1] and `shift` in [-31, q.MAX_SHIFT[rounding]], ints or arrays that
    broadcast against x. Modes (`>>` is an arithmetic shift, i.e. floor division):

    - tflite (TFLite reference, double rounding):
          v = saturate_int32(x << max(shift, 0))
          out = rounding_divide_by_pot(srdhm(v, M), max(-shift, 0))
      srdhm rounds ties toward +inf, then the division by 2^-shift rounds ties away
      from zero. Saturates when x << shift leaves int32; the result is in int32.
    - single (TFLITE_SINGLE_ROUNDING, shift <= 30): total = 31 - shift in [1, 62],
          out = (x * M + 2^(total - 1)) >> total = floor(x * M / 2^total + 1/2)
      (one rounding, ties toward +inf).
    - tosa (TOSA apply_scale_32 with double_round = true, shift <= 29): s = 31 - shift
      in [2, 62], round = 2^(s - 1), plus 2^30 if x >= 0 else -2^30 when s > 31,
          out = (x * M + round) >> s.

    |x * M| < 2^62, so every step is exact in int64. `single` and `tosa` return the
    exact value even where it leaves int32 (TFLite DCHECKs and TOSA REQUIREs that it
    does not; `requantize` clamps it to the output range either way).
    """
    _check_mode(rounding)
    x64, m64, s64 = _i64(x), _i64(multiplier), _i64(shift)
    _check_int32_range(x64, "scale_round input")
    if m64.size and (int(m64.min()) < 0 or int(m64.max()) > MAX_MULTIPLIER):
        raise ValueError(f"multiplier outside the Q31 range [0, {MAX_MULTIPLIER}]")
    if s64.size and (int(s64.min()) < MIN_SHIFT or int(s64.max()) > MAX_SHIFT[rounding]):
        raise ValueError(f"shift outside [{MIN_SHIFT}, {MAX_SHIFT[rounding]}] for rounding "
                         f"'{rounding}'")
    if rounding == "tflite":
        left = np.maximum(s64, 0)
        right = np.maximum(-s64, 0)
        v = np.clip(np.left_shift(x64, left), INT32_MIN, INT32_MAX)
        return rounding_divide_by_pot(srdhm(v, m64), right)
    total = 31 - s64
    round_ = np.left_shift(np.int64(1), total - 1)
    if rounding == "tosa":
        round_ = round_ + np.where(total > 31, np.where(x64 >= 0, 1 << 30, -(1 << 30)), 0)
    return (x64 * m64 + round_) >> total


def requantize(x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike, rounding: str,
               zp_in: ArrayLike, zp_out: ArrayLike, qmin: int, qmax: int, dtype: DTypeLike,
               axis: int | None = None) -> np.ndarray:
    """q.requant: clamp(scale_round(x - zp_in, M, shift) + zp_out, qmin, qmax) in `dtype`.

    With `axis`, multiplier, shift and any of zp_in / zp_out given as 1-D arrays hold
    one entry per index of that axis of x; without it they must broadcast as they are.
    x - zp_in must lie in the int32 range (it does for storage up to 16 bits and for
    int32 accumulators with zp_in = 0).
    """
    x64 = _i64(x)
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    if not info.min <= qmin <= qmax <= info.max:
        raise ValueError(f"[{qmin}, {qmax}] is not a range inside {dtype}")
    if axis is None:
        params = [_i64(p) for p in (multiplier, shift, zp_in, zp_out)]
    else:
        axis = _normalise_axis(axis, x64.ndim)
        params = [_along(p, axis, x64.ndim, what, x64.shape[axis])
                  for p, what in ((multiplier, "multiplier"), (shift, "shift"),
                                  (zp_in, "zp_in"), (zp_out, "zp_out"))]
    m, s, z_in, z_out = params
    y = scale_round(x64 - z_in, m, s, rounding) + z_out
    return np.clip(y, qmin, qmax).astype(dtype)


def round_div(num: ArrayLike, den: ArrayLike) -> np.ndarray:
    """num / den rounded to nearest, ties away from zero, for den > 0 (int64, broadcasting).

        q = |num| // den; r = |num| - q * den; q += (2r >= den); sign(num) * q
    """
    n64, d64 = _i64(num), _i64(den)
    if d64.size and int(d64.min()) <= 0:
        raise ValueError("round_div needs a positive divisor")
    a = np.abs(n64)
    q = a // d64
    r = a - q * d64
    q = q + (r >= d64 - r)
    return np.where(n64 < 0, -q, q)


def isqrt(v: ArrayLike) -> np.ndarray:
    """floor(sqrt(v)) exactly, elementwise, for int64 v >= 0 (int64 result).

    r = floor(sqrt(float64(v))) is within 1 of the answer for v < 2^63; then
    r -= 1 while r * r > v and r += 1 while (r + 1)^2 <= v, both tested by division
    (r > v // r, r + 1 <= v // (r + 1)) so nothing overflows.
    """
    v64 = _i64(v)
    if v64.size and int(v64.min()) < 0:
        raise ValueError("isqrt of a negative number")
    r = np.floor(np.sqrt(v64.astype(np.float64))).astype(np.int64)
    r = np.minimum(r, 3037000499)  # isqrt(2^63 - 1)
    for _ in range(2):
        safe = np.maximum(r, 1)
        r = np.where((r > 0) & (r > v64 // safe), r - 1, r)
    for _ in range(2):
        up = r + 1
        r = np.where(up <= v64 // up, up, r)
    return r


# --------------------------------------------------------------------------------------
# Elementwise
# --------------------------------------------------------------------------------------


def add(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """saturate_int32(a + b), numpy broadcasting (operands already on one scale)."""
    return saturate_int32(_i64(a) + _i64(b))


def sub(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """saturate_int32(a - b), numpy broadcasting."""
    return saturate_int32(_i64(a) - _i64(b))


def mul(a: ArrayLike, b: ArrayLike, a_zp: ArrayLike = 0, b_zp: ArrayLike = 0) -> np.ndarray:
    """saturate_int32((a - a_zp) * (b - b_zp)), numpy broadcasting (zero points too)."""
    return saturate_int32((_i64(a) - _i64(a_zp)) * (_i64(b) - _i64(b_zp)))


def lookup(x: ArrayLike, table: np.ndarray, storage_min: int) -> np.ndarray:
    """table[x - storage_min] in table's dtype: a table lists the output of every input.

    Raises ValueError when an index falls outside the table.
    """
    index = _i64(x) - storage_min
    table = np.asarray(table)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= table.shape[0]):
        raise ValueError(f"input values outside the table's domain [{storage_min}, "
                         f"{storage_min + table.shape[0] - 1}]")
    return table[index]


# --------------------------------------------------------------------------------------
# Convolution and matrix products
# --------------------------------------------------------------------------------------


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, x_zp: ArrayLike,
           w_zp: ArrayLike, strides: Sequence[int], pads: Sequence[int],
           dilations: Sequence[int], group: int) -> np.ndarray:
    """Integer 2-d convolution (ONNX Conv) -> int32 [N, M, OH, OW].

        acc[n, m, i, j] = sum_{c in group(m), kh, kw} (x[n, c, i*sh + kh*dh - pt, j*sw + kw*dw - pl]
                          - x_zp) * (w[m, c mod C/g, kh, kw] - w_zp[m]) + bias[m]

    x [N, C, H, W]; w [M, C/group, KH, KW]; pads (top, left, bottom, right): padded
    positions hold x_zp, so they add 0. x_zp: int or [C] (axis 1); w_zp: int or [M]
    (axis 0); bias: int [M] or None. OH = (H + pt + pb - dh*(KH-1) - 1) // sh + 1.
    Group convolution and depthwise (C/group = 1, any channel multiplier) included.
    Exact int64 sums, saturated to int32.
    """
    x64, w64 = _i64(x), _i64(w)
    n, c, h, wd = x64.shape
    m, cg, kh, kw = w64.shape
    if group < 1 or c != cg * group or m % group:
        raise ValueError(f"conv2d: {c} input channels, {m} outputs and weights of {cg} "
                         f"channels do not fit {group} groups")
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh = _window_out(h, kh, sh, pt, pb, dh)
    ow = _window_out(wd, kw, sw, pl, pr, dw)
    mg = m // group
    xi = x64 - _along(x_zp, 1, 4, "x_zp", c)
    wi = w64 - _along(w_zp, 0, 4, "w_zp", m)
    xp = np.pad(xi, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    cols = np.empty((n, group, cg, kh, kw, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                        j * dw:j * dw + (ow - 1) * sw + 1:sw]
            cols[:, :, :, i, j] = window.reshape(n, group, cg, oh, ow)
    acc = _int_matmul(wi.reshape(1, group, mg, cg * kh * kw),
                      cols.reshape(n, group, cg * kh * kw, oh * ow))
    acc = acc.reshape(n, m, oh, ow)
    if bias is not None:
        acc = acc + _along(bias, 1, 4, "bias", m)
    return saturate_int32(acc)


def conv_transpose2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, x_zp: ArrayLike,
                     w_zp: ArrayLike, strides: Sequence[int], pads: Sequence[int],
                     dilations: Sequence[int], group: int,
                     output_padding: Sequence[int] = (0, 0)) -> np.ndarray:
    """Integer transposed convolution (ONNX ConvTranspose) -> int32 [N, M, OH, OW].

        full[n, g*M/g + j, ih*sh + kh*dh, iw*sw + kw*dw] +=
            (x[n, c, ih, iw] - x_zp) * (w[c, j, kh, kw] - w_zp[g*M/g + j])   for c in group g
        acc = full[:, :, pt:pt + OH, pl:pl + OW] + bias

    x [N, C, H, W]; w [C, M/group, KH, KW]; OH = sh*(H-1) + output_padding_h +
    dh*(KH-1) + 1 - pt - pb (positions past the last tap, reached through
    output_padding, are 0 + bias). x_zp: int or [C]; w_zp: int, [M] (output channel
    g*M/g + j) or [M/group] (w's axis 1: entry j for every group); bias int [M] or None.
    Exact int64 sums, saturated to int32.
    """
    x64, w64 = _i64(x), _i64(w)
    n, c, h, wd = x64.shape
    cw, mg, kh, kw = w64.shape
    if group < 1 or c != cw or c % group:
        raise ValueError(f"conv_transpose2d: {c} input channels and weights {w64.shape} do "
                         f"not fit {group} groups")
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oph, opw = output_padding
    if min(pt, pl, pb, pr, oph, opw) < 0:
        raise ValueError("conv_transpose2d: negative pads / output_padding are not supported")
    cg, m = c // group, mg * group
    oh = sh * (h - 1) + oph + dh * (kh - 1) + 1 - pt - pb
    ow = sw * (wd - 1) + opw + dw * (kw - 1) + 1 - pl - pr
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_transpose2d: empty output {oh}x{ow}")
    xi = x64 - _along(x_zp, 1, 4, "x_zp", c)
    wi = w64.reshape(group, cg, mg, kh, kw)
    w_zp64 = _i64(w_zp)
    if w_zp64.ndim == 1 and w_zp64.shape[0] == m:
        wi = wi - w_zp64.reshape(group, 1, mg, 1, 1)
    elif w_zp64.ndim == 1 and w_zp64.shape[0] == mg:  # along w's axis 1, shared by groups
        wi = wi - w_zp64.reshape(1, 1, mg, 1, 1)
    elif w_zp64.ndim == 1:
        raise ValueError(f"w_zp has {w_zp64.shape[0]} entries for {m} output channels")
    else:
        wi = wi - w_zp64
    # cols[n, g, (j, kh, kw), (ih, iw)] = W_g^T @ x_g
    cols = _int_matmul(wi.reshape(1, group, cg, mg * kh * kw).transpose(0, 1, 3, 2),
                       xi.reshape(n, group, cg, h * wd))
    cols = cols.reshape(n, m, kh, kw, h, wd)
    full_h = max((h - 1) * sh + (kh - 1) * dh + 1, pt + oh)
    full_w = max((wd - 1) * sw + (kw - 1) * dw + 1, pl + ow)
    full = np.zeros((n, m, full_h, full_w), np.int64)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i * dh:i * dh + (h - 1) * sh + 1:sh,
                 j * dw:j * dw + (wd - 1) * sw + 1:sw] += cols[:, :, i, j]
    acc = full[:, :, pt:pt + oh, pl:pl + ow]
    if bias is not None:
        acc = acc + _along(bias, 1, 4, "bias", m)
    return saturate_int32(acc)


def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, a_zp: ArrayLike = 0,
           b_zp: ArrayLike = 0) -> np.ndarray:
    """saturate_int32((a - a_zp) @ (b - b_zp) + bias), numpy matmul broadcasting.

    a [..., K]; b [..., K, N] or [K]; a_zp an int; b_zp an int or [N] (per column, the
    last axis of a 2-D+ b); bias int [N] (added along the last axis) or None.
    """
    a64, b64 = _i64(a), _i64(b)
    zb = _i64(b_zp)
    if zb.ndim == 1 and (b64.ndim < 2 or zb.shape[0] != b64.shape[-1]):
        raise ValueError(f"per-column b_zp of {zb.shape[0]} entries for b of shape {b64.shape}")
    acc = _int_matmul(a64 - _i64(a_zp), b64 - zb)
    if bias is not None:
        acc = acc + _i64(bias)
    return saturate_int32(acc)


# --------------------------------------------------------------------------------------
# Pooling and reductions
# --------------------------------------------------------------------------------------


def _pool_geometry(x_shape: tuple[int, ...], kernel_shape: Sequence[int], strides: Sequence[int],
                   pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool) \
        -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """Output size and the np.pad widths that hold every (ceil-mode) window."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel_shape, strides, pads, dilations
    h, wd = x_shape[2:]
    oh = _window_out(h, kh, sh, pt, pb, dh, ceil_mode)
    ow = _window_out(wd, kw, sw, pl, pr, dw, ceil_mode)
    end_h = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - pt - h)
    end_w = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - pl - wd)
    return oh, ow, ((0, 0), (0, 0), (pt, end_h), (pl, end_w))


def max_pool2d(x: np.ndarray, kernel_shape: Sequence[int], strides: Sequence[int],
               pads: Sequence[int], dilations: Sequence[int] = (1, 1),
               ceil_mode: bool = False) -> np.ndarray:
    """ONNX MaxPool on integers, same dtype as x.

        out[n, c, i, j] = max over in-input taps (kh, kw) of x[n, c, i*sh + kh*dh - pt, ...]

    Padded positions never win; a window with no input position (only possible with
    degenerate pads) gives the dtype's minimum. Output sizes follow ONNX (floor, or
    ceil without a last window that starts in the end padding).
    """
    x = np.asarray(x)
    x64 = _i64(x)
    oh, ow, widths = _pool_geometry(x.shape, kernel_shape, strides, pads, dilations, ceil_mode)
    (kh, kw), (sh, sw), (dh, dw) = kernel_shape, strides, dilations
    xp = np.pad(x64, widths, constant_values=INT64_MIN)
    out = np.full((*x.shape[:2], oh, ow), INT64_MIN, np.int64)
    for i in range(kh):
        for j in range(kw):
            np.maximum(out, xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                               j * dw:j * dw + (ow - 1) * sw + 1:sw], out=out)
    out[out == INT64_MIN] = np.iinfo(x.dtype).min
    return out.astype(x.dtype)


def avg_pool2d(x: np.ndarray, x_zp: ArrayLike, kernel_shape: Sequence[int],
               strides: Sequence[int], pads: Sequence[int], count_include_pad: bool,
               fraction_bits: int, ceil_mode: bool = False) -> np.ndarray:
    """ONNX AveragePool on integers -> int32, with `fraction_bits` extra fraction bits.

        out = round_div(sum_window(x - x_zp) << F, count)      (ties away from zero)

    Padded positions add 0. count per axis (start = i*s - pad_begin, end = start + k):
    min(end, size + pad_end) - start with count_include_pad (the window clipped to the
    padded input, as onnxruntime), else min(end, size) - max(start, 0); the window's
    count is the product (a window without input positions divides 0 by 1). The result
    is the mean in units of 2^-F input scales. x_zp: int or [C]. Saturated to int32.
    """
    x64 = _i64(x)
    oh, ow, widths = _pool_geometry(x64.shape, kernel_shape, strides, pads, (1, 1), ceil_mode)
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel_shape, strides, pads
    h, wd = x64.shape[2:]
    xp = np.pad(x64 - _along(x_zp, 1, 4, "x_zp", x64.shape[1]), widths)
    total = np.zeros((*x64.shape[:2], oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            total += xp[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]

    def counts(out: int, size: int, k: int, s: int, begin: int, end_pad: int) -> np.ndarray:
        start = np.arange(out, dtype=np.int64) * s - begin
        end = start + k
        if count_include_pad:
            return np.minimum(end, size + end_pad) - start
        return np.minimum(end, size) - np.maximum(start, 0)

    count = np.multiply.outer(counts(oh, h, kh, sh, pt, pb), counts(ow, wd, kw, sw, pl, pr))
    return saturate_int32(round_div(_shl(total, fraction_bits, "avg_pool2d"),
                                    np.maximum(count, 1)))


def reduce_mean(x: np.ndarray, x_zp: ArrayLike, axes: Sequence[int] | None, keepdims: bool,
                fraction_bits: int) -> np.ndarray:
    """ONNX ReduceMean on integers -> int32, with `fraction_bits` extra fraction bits.

        out = round_div(sum_{axes}(x - x_zp) << F, count)     count = prod(shape[axes])

    axes None (or empty) reduces every axis; x_zp an int or an array broadcasting
    against x. The result is the mean in units of 2^-F input scales, saturated to int32.
    """
    x64 = _i64(x)
    if not axes:
        axes_t = tuple(range(x64.ndim))
    else:
        axes_t = tuple(sorted({_normalise_axis(a, x64.ndim) for a in axes}))
    count = math.prod(x64.shape[a] for a in axes_t)
    total = np.sum(x64 - _i64(x_zp), axis=axes_t, keepdims=keepdims, dtype=np.int64)
    return saturate_int32(round_div(_shl(total, fraction_bits, "reduce_mean"), max(count, 1)))


# --------------------------------------------------------------------------------------
# Softmax and layernorm
# --------------------------------------------------------------------------------------


def softmax_exp_table(input_scale: float, bits: int, table_bits: int = 20) -> np.ndarray:
    """int32 table of exp(-input_scale * d) in units of 2^-table_bits, d in [0, 2^bits).

        table[d] = rint(exp(-input_scale * d) * 2^table_bits)     (float64, ties to even)

    table[0] = 2^table_bits is the largest entry; entries decrease towards 0.
    """
    input_scale = float(input_scale)
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"softmax input scale {input_scale} must be finite and > 0")
    if not 1 <= bits <= 16:
        raise ValueError(f"softmax table over {bits}-bit inputs: bits must be in [1, 16]")
    if not 0 <= table_bits <= 30:
        raise ValueError(f"table_bits {table_bits} must be in [0, 30]")
    d = np.arange(1 << bits, dtype=np.float64)
    return np.rint(np.exp(-input_scale * d) * float(1 << table_bits)).astype(np.int32)


def softmax(x: np.ndarray, axis: int, exp_table: np.ndarray, fraction_bits: int) -> np.ndarray:
    """Integer softmax along `axis` -> int32 probabilities in units of 2^-F.

        d = max(x, axis) - x                 (int64, >= 0; zero points cancel)
        e = exp_table[min(d, len(table) - 1)]
        out = round_div(e << F, sum(e, axis))     (ties away from zero)

    exp_table[d] ~ exp(-s * d) * 2^T (`softmax_exp_table`), so out ~ 2^F * softmax(s * x).
    d past the table's end takes its last entry (a table may stop once exp rounds to 0).
    The row sum is >= table[0] > 0, and out <= 2^F; saturated to int32.
    """
    x64 = _i64(x)
    table = _i64(exp_table)
    if table.ndim != 1 or table.shape[0] == 0 or int(table[0]) <= 0:
        raise ValueError("exp_table must be a non-empty 1-D table with a positive entry at 0")
    axis = _normalise_axis(axis, x64.ndim)
    d = np.max(x64, axis=axis, keepdims=True) - x64
    e = table[np.minimum(d, table.shape[0] - 1)]
    total = np.sum(e, axis=axis, keepdims=True)
    return saturate_int32(round_div(_shl(e, fraction_bits, "softmax"), total))


def layernorm_epsilon_units(epsilon: float, input_scale: float, n: int) -> int:
    """epsilon in the (s/n)^2 units of `layernorm`'s V: round(epsilon * n * n / (s * s)).

    Computed in float64 as written, rounded half to even (Python round), clamped to
    [0, 2^63 - 1] (also when s * s underflows to 0).
    """
    epsilon, input_scale = float(epsilon), float(input_scale)
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise ValueError(f"layernorm input scale {input_scale} must be finite and > 0")
    if not (math.isfinite(epsilon) and epsilon >= 0) or n < 1:
        raise ValueError(f"layernorm epsilon {epsilon} must be finite and >= 0, n {n} >= 1")
    square = input_scale * input_scale
    if square == 0.0:  # the scale squared underflows: epsilon dominates any variance
        return INT64_MAX if epsilon > 0 else 0
    units = epsilon * n * n / square
    if not units < 2.0**63:
        return INT64_MAX
    return min(int(round(units)), INT64_MAX)


def layernorm(x: np.ndarray, x_zp: ArrayLike, gamma: np.ndarray, gamma_zp: ArrayLike,
              beta: np.ndarray | None, epsilon_units: int, fraction_bits: int) -> np.ndarray:
    """Integer layer normalisation over the LAST axis -> int32.

        n = x.shape[-1]; xi = x - x_zp (int64); t = sum(xi)
        d = n * xi - t                       = n * (xi - mean)
        V = sum(d * d) // n                  = n^2 * var(xi), floored
        w = V + epsilon_units                (the sum saturates at 2^63 - 1)
        k = max(0, min((61 - e) // 2, 62 - b - F))   per row, e = bits of w (frexp of
                                             float64(w)), b = bits of max |d| overall
        den = isqrt(w << 2k)                 = 2^k sqrt(w), k extra bits of precision
        y = round_div(d << (F + k), den)     (y = 0 where den == 0)
        out = saturate_int32(y * (gamma - gamma_zp) + beta)

    Derivation: with input scale s, d is (x - mean) in units of s/n and V the variance
    in units of (s/n)^2, so with epsilon_units = eps / (s/n)^2 (`layernorm_epsilon_units`)
    y = d * 2^F / sqrt(V + eps_u) ~ 2^F * (x - mean) / sqrt(var + eps), the normalised
    value in units of 2^-F. With gamma's scale s_g the output scale is s_g * 2^-F, and
    beta (int [n], or None for 0) must be quantized to that scale. gamma int [n];
    gamma_zp int or [n]. Raises ValueError when d * d * n or d << F would leave int64.
    """
    x64 = _i64(x)
    n = x64.shape[-1]
    if fraction_bits < 0:
        raise ValueError(f"fraction_bits {fraction_bits} must be >= 0")
    if epsilon_units < 0:
        raise ValueError(f"epsilon_units {epsilon_units} must be >= 0")
    xi = x64 - _i64(x_zp)
    t = np.sum(xi, axis=-1, keepdims=True)
    d = n * xi - t
    dmax = _bound(d)
    if dmax * dmax * n > INT64_MAX or dmax << fraction_bits > INT64_MAX:
        raise ValueError(f"layernorm over {n} values with deviations up to {dmax} and "
                         f"{fraction_bits} fraction bits overflows int64")
    v = np.sum(d * d, axis=-1, keepdims=True) // n
    eps = np.int64(epsilon_units)
    w = np.where(v > INT64_MAX - eps, INT64_MAX, v + eps)
    # isqrt(w) alone keeps only half of w's bits: scale w by 4^k first (w << 2k < 2^62,
    # d << (F + k) < 2^63), so den carries k more bits of sqrt(w).
    w_bits = np.frexp(w.astype(np.float64))[1].astype(np.int64)
    d_bits = int(dmax).bit_length()
    k = np.clip(np.minimum((61 - w_bits) // 2, 62 - d_bits - fraction_bits), 0, None)
    den = isqrt(w << (2 * k))
    y = np.where(den > 0, round_div(d << (fraction_bits + k), np.maximum(den, 1)), 0)
    g = _i64(gamma) - _i64(gamma_zp)
    out = y * g
    if beta is not None:
        out = out + _i64(beta)
    return saturate_int32(out)


# --------------------------------------------------------------------------------------
# Resize
# --------------------------------------------------------------------------------------


def _resize_plan(shape: tuple[int, ...], output_shape: Sequence[int],
                 scales: Sequence[float] | None) -> tuple[list[float], list[bool]]:
    """Per-axis scales (default output / input) and which axes are copied unchanged.

    As onnxruntime (and the float kernel): nothing moves when the output shape equals
    the input shape, whatever the scales, nor along an axis of scale 1 and equal size.
    """
    out = tuple(int(o) for o in output_shape)
    if len(out) != len(shape) or any(o < 1 for o in out) or 0 in shape:
        raise ValueError(f"Resize of shape {shape} to {out}: one positive size per axis")
    if scales is None:
        scale_list = [o / i for o, i in zip(out, shape, strict=True)]
    else:
        scale_list = [float(s) for s in scales]
        if len(scale_list) != len(shape) or any(not s > 0 for s in scale_list):
            raise ValueError(f"Resize scales {scale_list}: one positive scale per axis")
    same = out == tuple(shape)
    keep = [same or (scale_list[a] == 1 and out[a] == shape[a]) for a in range(len(shape))]
    return scale_list, keep


def resize_nearest(x: np.ndarray, output_shape: Sequence[int],
                   coordinate_transformation_mode: str = "half_pixel",
                   nearest_mode: str = "round_prefer_floor",
                   scales: Sequence[float] | None = None) -> np.ndarray:
    """ONNX Resize, mode nearest, any rank; same dtype as x (a gather: no arithmetic).

    Per axis: c = transform(arange(out), scale) in float32 (half_pixel:
    (o + 0.5) / scale - 0.5; pytorch_half_pixel: the same, 0 when out == 1;
    align_corners: o * (in - 1) / (out - 1), 0 when out == 1; asymmetric: o / scale;
    tf_half_pixel_for_nn: (o + 0.5) / scale), then index = clip(nearest_mode(c), 0,
    in - 1) (round_* use std::round, the prefer_floor variant floors exact halves).
    `scales` default to output / input per axis (what the importer stores when the
    model gives sizes); see `_resize_plan` for the axes left unchanged.
    """
    x = np.asarray(x)
    scale_list, keep = _resize_plan(x.shape, output_shape, scales)
    out = x
    for axis, in_len in enumerate(x.shape):
        if keep[axis]:
            continue
        coords = source_coordinates(int(output_shape[axis]), in_len, scale_list[axis],
                                coordinate_transformation_mode)
        out = np.take(out, nearest_index(coords, in_len, nearest_mode), axis=axis)
    return out.copy() if out is x else out


def resize_bilinear(x: np.ndarray, x_zp: ArrayLike, output_shape: Sequence[int],
                    coordinate_transformation_mode: str, fraction_bits: int,
                    scales: Sequence[float] | None = None) -> np.ndarray:
    """ONNX Resize, mode linear, over H and W of NCHW -> int32 in units of 2^-2F input scales.

    Per spatial axis: c = clip(transform(arange(out), scale), 0, in - 1) in float32 (the
    transforms of `resize_nearest`), lo = floor(c), hi = min(lo + 1, in - 1),
    frac = c - lo (exact in float32), and the weights are quantized to F bits:

        w_hi = floor(frac * 2^F + 1/2);  w_lo = 2^F - w_hi     (w_lo + w_hi = 2^F exactly)
        out[n, c, i, j] = sum_{a in {lo,hi}(i), b in {lo,hi}(j)} wy_a[i] * wx_b[j] * (x[n, c, a, b] - x_zp)

    computed axis by axis (H, then W) in int64, exactly; an unchanged axis (see
    `resize_nearest`) has weight 2^F. So the result is the interpolated value at scale
    s_in * 2^-(2F): a constant input v gives v * 2^(2F). x_zp: int or [C]. N and C
    must not change. Saturated to int32.
    """
    x64 = _i64(x)
    if x64.ndim != 4:
        raise ValueError(f"resize_bilinear takes NCHW input, got rank {x64.ndim}")
    if tuple(output_shape[:2]) != x64.shape[:2]:
        raise ValueError(f"resize_bilinear resizes H and W only: {x64.shape} -> "
                         f"{tuple(output_shape)}")
    if not 0 <= fraction_bits <= 15:
        raise ValueError(f"fraction_bits {fraction_bits} must be in [0, 15]")
    if coordinate_transformation_mode not in TRANSFORMS[:4]:
        raise ValueError(f"linear Resize coordinate transformation "
                         f"'{coordinate_transformation_mode}' is not supported (expected one "
                         f"of {', '.join(TRANSFORMS[:4])})")
    scale_list, keep = _resize_plan(x64.shape, output_shape, scales)
    one = 1 << fraction_bits
    out = x64 - _along(x_zp, 1, 4, "x_zp", x64.shape[1])
    for axis in (2, 3):
        in_len, out_len = x64.shape[axis], int(output_shape[axis])
        if keep[axis]:
            out = out * one
            continue
        coords = source_coordinates(out_len, in_len, scale_list[axis], coordinate_transformation_mode)
        c = np.clip(coords, np.float32(0), np.float32(in_len - 1))
        lo = np.floor(c).astype(np.intp)
        hi = np.minimum(lo + 1, in_len - 1)
        frac = (c - lo.astype(np.float32)).astype(np.float64)
        w_hi = np.floor(frac * one + 0.5).astype(np.int64)
        w_lo = one - w_hi
        bshape = [1, 1, 1, 1]
        bshape[axis] = out_len
        out = np.take(out, lo, axis=axis) * w_lo.reshape(bshape) \
            + np.take(out, hi, axis=axis) * w_hi.reshape(bshape)
    return saturate_int32(out)
