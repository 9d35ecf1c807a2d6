"""Numpy arithmetic of the `q` types: quantize, dequantize, and encodings from a range.

Convention: `r = scale * (q - zero_point)`. Calibration and fake-quant use these; the
integer program's own kernels live in `quantir.runtime`.

Encodings follow the QNN rules (`seeds/qnn-quantization.txt`): the range always
includes 0, float 0 is exactly representable, the range is at least `MIN_RANGE`, and
`scale = (max - min) / (2^bits - 1)`. Symmetric encodings use the narrow grid
`[-(2^(bits-1) - 1), 2^(bits-1) - 1]` around zero point 0 (signed) or `2^(bits-1)`
(unsigned), so `scale = max(|min|, |max|) / (2^(bits-1) - 1)`.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

import numpy as np
from xdsl.ir import Attribute

from quantir.dialects.q import (
    STORAGE_WIDTHS,
    PerAxisQuantizedType,
    QuantizedType,
    UniformQuantizedType,
    storage_range,
)
from quantir.errors import QuantirError

MIN_RANGE = 0.0001
"""QNN's minimum encoding range (max - min)."""


def storage_dtype(qtype: QuantizedType) -> np.dtype:
    """The numpy dtype holding the storage integers (4-bit values live in 8-bit ints)."""
    bits = max(qtype.storage_bits, 8)
    return np.dtype(f"{'' if qtype.is_signed else 'u'}int{bits}")


def _per_element(qtype: QuantizedType, shape: tuple[int, ...], axis_dim: int | None) \
        -> tuple[np.ndarray, np.ndarray]:
    """Scales (f64) and zero points (i64) shaped to broadcast against an array."""
    scales = np.asarray(qtype.scales, dtype=np.float64)
    zero_points = np.asarray(qtype.zero_points, dtype=np.int64)
    if not isinstance(qtype, PerAxisQuantizedType):
        return scales.reshape(()), zero_points.reshape(())
    axis = qtype.axis if axis_dim is None else axis_dim
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"per-axis axis {axis} is outside the rank {len(shape)} of the array")
    axis %= len(shape)
    if shape[axis] != qtype.num_channels:
        raise ValueError(f"{qtype.num_channels} per-axis scales for dimension {axis} of size "
                         f"{shape[axis]}")
    broadcast = [1] * len(shape)
    broadcast[axis] = -1
    return scales.reshape(broadcast), zero_points.reshape(broadcast)


def quantize_array(x: np.ndarray, qtype: QuantizedType, axis_dim: int | None = None) \
        -> np.ndarray:
    """`clamp(round_half_even(x / scale) + zero_point)` in the storage dtype.

    Per-axis types apply channel i's scale to index i of dimension `axis_dim` (default:
    the type's axis; `axis_dim` lets a caller quantize an array laid out differently).
    `axis_dim` is ignored for per-tensor types. The division is done in float64 (ONNX
    QuantizeLinear divides in float32; the two can differ at exact ties). Infinities
    saturate; NaN is an error.
    """
    values = np.asarray(x, dtype=np.float64)
    if np.isnan(values).any():
        raise QuantirError(f"cannot quantize NaN to {qtype} (check the data or the model)")
    scales, zero_points = _per_element(qtype, values.shape, axis_dim)
    with np.errstate(over="ignore"):  # huge / tiny scale overflows to inf, then saturates
        rounded = np.rint(values / scales) + zero_points
    clamped = np.clip(rounded, qtype.storage_min, qtype.storage_max)
    return clamped.astype(storage_dtype(qtype))


def dequantize_array(q: np.ndarray, qtype: QuantizedType, axis_dim: int | None = None) \
        -> np.ndarray:
    """`scale * (q - zero_point)` as float32.

    The product is formed in float64 and rounded once to float32: for a scale that is
    itself a float32 and |q - zp| < 2^24 this is exact before the final rounding, so it
    matches ONNX DequantizeLinear's float32 arithmetic bit for bit.
    """
    values = np.asarray(q).astype(np.int64)
    scales, zero_points = _per_element(qtype, values.shape, axis_dim)
    return ((values - zero_points) * scales).astype(np.float32)


@dataclass(frozen=True)
class Encoding:
    """A per-tensor encoding: `r = scale * (q - zero_point)` on `bits`-bit storage.

    `qmin` / `qmax` are the integers the encoding uses (the narrow grid for symmetric
    encodings); `min` / `max` are the float range they span, snapped to the grid
    (what QNN / AIMET export as encoding-min / encoding-max).
    """

    scale: float
    zero_point: int
    bits: int
    signed: bool
    symmetric: bool

    @property
    def qmin(self) -> int:
        if self.symmetric:
            return self.zero_point - ((1 << (self.bits - 1)) - 1)
        return storage_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        if self.symmetric:
            return self.zero_point + ((1 << (self.bits - 1)) - 1)
        return storage_range(self.bits, self.signed)[1]

    @property
    def min(self) -> float:
        return (self.qmin - self.zero_point) * self.scale

    @property
    def max(self) -> float:
        return (self.qmax - self.zero_point) * self.scale

    @property
    def storage(self) -> str:
        """The storage spelling of this encoding (`i8`, `u16`, ...)."""
        return f"{'i' if self.signed else 'u'}{self.bits}"

    def to_type(self, expressed: str | Attribute = "f32") -> UniformQuantizedType:
        """The `!q.uniform` type of this encoding (storage width must be 4, 8, 16 or 32)."""
        if self.bits not in STORAGE_WIDTHS:
            raise ValueError(f"no quantized type stores {self.bits} bits: expected one of "
                             f"{', '.join(map(str, STORAGE_WIDTHS))}")
        return UniformQuantizedType.get(self.storage, self.scale, self.zero_point, expressed)


def encoding_from_range(min: float, max: float, bits: int = 8, symmetric: bool = False,
                        signed: bool = True) -> Encoding:
    """The QNN encoding of the float range [min, max] on `bits`-bit storage.

    Asymmetric: the range is widened to include 0 and to at least `MIN_RANGE`, then
    `scale = (max - min) / (2^bits - 1)` and the zero point is `qmin + round(-min /
    scale)` (half to even), which shifts the range onto the grid so 0.0 is exact.
    Symmetric: `scale = max(|min|, |max|, MIN_RANGE / 2) / (2^(bits-1) - 1)`, zero point 0
    (signed) or 2^(bits-1) (unsigned).

    `min` / `max` shadow the builtins here (QNN's names), hence `builtins.max`.
    """
    low, high = float(min), float(max)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise QuantirError(f"cannot encode the range [{low}, {high}]: it is not finite "
                           f"(check the calibration data for inf / NaN)")
    if low > high:
        raise ValueError(f"range minimum {low} is greater than its maximum {high}")
    if not 2 <= bits <= 32:
        raise ValueError(f"bit width {bits} is outside [2, 32]")
    if symmetric:
        half = (1 << (bits - 1)) - 1
        absmax = builtins.max(abs(low), abs(high), MIN_RANGE / 2)
        zero_point = 0 if signed else 1 << (bits - 1)
        return Encoding(absmax / half, zero_point, bits, signed, True)
    low, high = builtins.min(low, 0.0), builtins.max(high, 0.0)
    high = builtins.max(high, low + MIN_RANGE)
    scale = (high - low) / ((1 << bits) - 1)
    qmin = storage_range(bits, signed)[0]
    # -low / scale is in [0, 2^bits - 1], so the zero point stays in storage range.
    return Encoding(scale, qmin + round(-low / scale), bits, signed, False)
