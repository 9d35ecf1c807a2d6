"""16-bit storage values as two bytes, for products that must stay in 8 bits or
accumulate in 32: x = hi * 256 + lo, and its zero point likewise, zp = zh * 256 + zl,
so that

    x - zp = (hi - zh) * 256 + (lo - zl)
    hi: i8 storage (u8 for u16), scale 256 s, zero point zh
    lo: u8 storage,              scale s,     zero point zl

Splitting x rather than x - zp keeps every part in 8 bits whatever the zero point
(x - zp itself needs 17 bits). `lower-to-int` (a16 products in 32 bits) and
`matmul-decompose{split-16bit}` (16 x 16-bit matmuls as 8-bit ones) both split so.
"""

from __future__ import annotations

import numpy as np

from quantir.dialects.q import PerAxisQuantizedType, QuantizedType, UniformQuantizedType

BYTE = 8
"""Bits per part of a split 16-bit value."""


def byte_types(element: QuantizedType) -> tuple[QuantizedType, QuantizedType]:
    """The types of hi (scale 256 s, zero point zp >> 8) and lo (s, zp & 255)."""
    hi_storage = "i8" if element.is_signed else "u8"
    scales = element.scales
    zps = element.zero_points
    hi_scales = [s * (1 << BYTE) for s in scales]
    hi_zps = [z >> BYTE for z in zps]
    lo_zps = [z & 0xFF for z in zps]
    expressed = element.expressed_type
    if isinstance(element, PerAxisQuantizedType):
        return (PerAxisQuantizedType.get(hi_storage, hi_scales, hi_zps, element.axis, expressed),
                PerAxisQuantizedType.get("u8", scales, lo_zps, element.axis, expressed))
    return (UniformQuantizedType.get(hi_storage, hi_scales[0], hi_zps[0], expressed),
            UniformQuantizedType.get("u8", scales[0], lo_zps[0], expressed))


def split_bytes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-bit storage integers as (hi, lo) with values = hi * 256 + lo: hi in the
    input's signedness (int8 / uint8), lo uint8."""
    wide = np.asarray(values).astype(np.int64)
    hi_dtype = np.int8 if np.asarray(values).dtype.kind == "i" else np.uint8
    return (wide >> BYTE).astype(hi_dtype), (wide & 0xFF).astype(np.uint8)


def split_table(element: QuantizedType) -> tuple[np.ndarray, np.ndarray]:
    """hi and lo of every storage value of `element`, indexed from its minimum: the
    tables of the two `qi.lookup`s that split a value computed at run time."""
    domain = np.arange(element.storage_min, element.storage_max + 1)
    return split_bytes(domain.astype(np.int16 if element.is_signed else np.uint16))
