"""The Cython integer kernels (quantir/runtime/_kernels.pyx) against their spec, reference.py.

Every compiled function must return exactly the reference's integers (same dtype,
shape and values) on every input hypothesis tries, and raise the same exception type
where the reference raises. The strategies lean on the edges: storage minima and
maxima, INT32_MIN / INT32_MAX accumulators and biases, every rounding mode with
shifts from -31 to the mode's maximum, per-channel zero points, strides, pads,
dilations and groups, and products long enough to need the K-split (float32) or the
int64 (wide sums) paths. The fused plan steps (int_kernels.Chain) are checked against
the unfused program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantir.dialects.q import MAX_SHIFT, MIN_SHIFT, ROUNDING_MODES
from quantir.runtime import int_kernels, reference

kernels = pytest.importorskip("quantir.runtime._kernels",
                              reason="the Cython integer kernels are not built")

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
STORAGE = [np.int8, np.uint8, np.int16, np.uint16]
WITH_INT32 = [*STORAGE, np.int32]
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def same(fast: Callable[..., Any], spec: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """fast(*args) is spec(*args): equal arrays of one dtype and shape, or both raise."""
    try:
        expected = spec(*args, **kwargs)
    except (ValueError, TypeError, IndexError, OverflowError) as error:
        with pytest.raises(type(error)):
            fast(*args, **kwargs)
        return
    got = fast(*args, **kwargs)
    assert type(got) is type(expected)  # an array, or the spec's numpy scalar (1-d @ 1-d)
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    mismatch = np.flatnonzero(got.reshape(-1) != expected.reshape(-1))
    assert mismatch.size == 0, (f"{mismatch.size} of {got.size} differ; first at {mismatch[0]}: "
                                f"{got.reshape(-1)[mismatch[0]]} != "
                                f"{expected.reshape(-1)[mismatch[0]]}")


def edgy(dtype: Any) -> st.SearchStrategy[int]:
    """Integers of a dtype, with its minimum and maximum (and 0, +-1) often."""
    info = np.iinfo(dtype)
    edges = sorted({int(info.min), int(info.max), 0, 1, -1 if info.min < 0 else 2,
                    int(info.min) + 1, int(info.max) - 1})
    return st.one_of(st.sampled_from(edges), st.integers(int(info.min), int(info.max)))


def int_arrays(dtype: Any, shape: Any) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.dtype(dtype), shape, elements=edgy(dtype))


def zero_points(dtype: Any, count: int) -> st.SearchStrategy[Any]:
    """An int zero point inside the storage range, or one per channel."""
    info = np.iinfo(dtype)
    single = st.integers(int(info.min), int(info.max))
    return st.one_of(single, st.lists(single, min_size=count, max_size=count)
                     .map(lambda v: np.array(v, np.int64)))


# --------------------------------------------------------------------------------------
# requantize
# --------------------------------------------------------------------------------------


@st.composite
def requant_cases(draw: st.DrawFn) -> tuple:
    rounding = draw(st.sampled_from(ROUNDING_MODES))
    x_dtype = draw(st.sampled_from(WITH_INT32))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6))
    x = draw(int_arrays(x_dtype, shape))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape \
        else None
    channels = shape[axis] if axis is not None else 1
    per_channel = axis is not None and draw(st.booleans())
    count = channels if per_channel else None
    multiplier_values = st.one_of(st.sampled_from([0, 1, 2**30, 2**31 - 1, 1518500250]),
                                  st.integers(0, 2**31 - 1))
    # right shifts below, at and above 32 (the AVX2 paths split there)
    shift_values = st.one_of(st.sampled_from([MIN_SHIFT, -1, 0, 1, MAX_SHIFT[rounding]]),
                             st.integers(MIN_SHIFT, MAX_SHIFT[rounding]))

    def param(values: st.SearchStrategy[int]) -> Any:
        if count is None:
            return draw(values)
        return np.array(draw(st.lists(values, min_size=count, max_size=count)), np.int64)

    multiplier, shift = param(multiplier_values), param(shift_values)
    out_dtype = draw(st.sampled_from(WITH_INT32))
    info = np.iinfo(out_dtype)
    zp_out = param(st.one_of(st.integers(int(info.min), int(info.max)),
                             st.integers(-2**20, 2**20)))
    zp_in = 0 if x_dtype == np.int32 and draw(st.booleans()) else param(
        st.integers(-2**16, 2**16))
    low = draw(st.integers(int(info.min), int(info.max)))
    high = draw(st.integers(low, int(info.max)))
    return x, multiplier, shift, rounding, zp_in, zp_out, low, high, out_dtype, axis


@FAST
@given(requant_cases())
def test_requantize(case: tuple) -> None:
    same(kernels.requantize, reference.requantize, *case)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(ROUNDING_MODES), st.integers(MIN_SHIFT, 29), st.integers(0, 2**31 - 1))
def test_requantize_int32_extremes(rounding: str, shift: int, multiplier: int) -> None:
    """Accumulators at INT32_MIN / INT32_MAX and their neighbours, both rounding ties."""
    x = np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX,
                  -(2**30), 2**30, -3, 3, -(2**15) - 1], np.int32)
    big = np.tile(x, 40).reshape(4, -1)  # long enough for the vector loops
    for out in (np.int8, np.int32):
        info = np.iinfo(out)
        same(kernels.requantize, reference.requantize, big, multiplier, shift, rounding, 0, 0,
             int(info.min), int(info.max), out)
    per_column = np.full(big.shape[-1], multiplier, np.int64)
    shifts = np.resize(np.arange(MIN_SHIFT, MAX_SHIFT[rounding] + 1), big.shape[-1])
    same(kernels.requantize, reference.requantize, big, per_column, shifts, rounding, 0,
         np.resize(np.arange(-5, 5), big.shape[-1]), -128, 127, np.int8, -1)


def test_requantize_rejects_what_the_spec_rejects() -> None:
    x = np.array([INT32_MAX, 0], np.int32)
    for args in [(x, 2**31, 0, "single", 0, 0, -128, 127, np.int8),       # multiplier
                 (x, 1, 31, "single", 0, 0, -128, 127, np.int8),          # shift
                 (x, 1, 0, "nearest", 0, 0, -128, 127, np.int8),          # mode
                 (x, 1, 0, "single", -1, 0, -128, 127, np.int8),          # x - zp_in
                 (x, 1, 0, "single", 0, 0, -129, 127, np.int8),           # range
                 (x, np.ones(3, np.int64), 0, "single", 0, 0, -128, 127, np.int8, 0)]:
        same(kernels.requantize, reference.requantize, *args)


# --------------------------------------------------------------------------------------
# lookup and the elementwise ops
# --------------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_lookup(data: st.DataObject) -> None:
    x_dtype = data.draw(st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]))
    info = np.iinfo(x_dtype)
    x = data.draw(int_arrays(x_dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=7)))
    table_dtype = data.draw(st.sampled_from(WITH_INT32))
    size = int(info.max) - int(info.min) + 1
    table = np.random.default_rng(data.draw(st.integers(0, 99))).integers(
        np.iinfo(table_dtype).min, int(np.iinfo(table_dtype).max) + 1, size).astype(table_dtype)
    # an offset storage_min puts some inputs outside the table: both must raise
    offset = data.draw(st.sampled_from([0, 0, 0, 1, -1]))
    same(kernels.lookup, reference.lookup, x, table, int(info.min) + offset)


@st.composite
def broadcast_pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5))
    # the other operand: the same shape, a scalar, one varying axis, or a general broadcast
    kind = draw(st.sampled_from(["same", "scalar", "axis", "trailing", "general"]))
    if kind == "same":
        other = shape
    elif kind == "scalar":
        other = draw(st.sampled_from([(), (1,), (1,) * len(shape)]))
    elif kind == "axis" and shape:
        axis = draw(st.integers(0, len(shape) - 1))
        other = tuple(s if i == axis else 1 for i, s in enumerate(shape))
        other = other[draw(st.integers(0, axis)):]
    elif kind == "trailing":
        other = shape[draw(st.integers(0, len(shape))):]
    else:
        other = tuple(draw(st.sampled_from([1, s])) for s in shape)
    a = draw(int_arrays(draw(st.sampled_from(WITH_INT32)), shape))
    b = draw(int_arrays(draw(st.sampled_from(WITH_INT32)), other))
    return (a, b) if draw(st.booleans()) else (b, a)


@FAST
@given(broadcast_pair())
def test_add_sub(pair: tuple[np.ndarray, np.ndarray]) -> None:
    same(kernels.add, reference.add, *pair)
    same(kernels.sub, reference.sub, *pair)


@FAST
@given(broadcast_pair(), st.integers(-2**16, 2**16), st.integers(-2**16, 2**16))
def test_mul(pair: tuple[np.ndarray, np.ndarray], a_zp: int, b_zp: int) -> None:
    same(kernels.mul, reference.mul, *pair, a_zp, b_zp)
    same(kernels.mul, reference.mul, *pair)


# --------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw: st.DrawFn, depthwise: bool = False) -> tuple:
    group = draw(st.integers(1, 4))
    cg = 1 if depthwise else draw(st.integers(1, 3))
    mg = draw(st.integers(1, 3))
    c, m = cg * group, mg * group
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, (kh - 1) * dh + 1 - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, (kw - 1) * dw + 1 - pads[1] - pads[3]), 9))
    n = draw(st.integers(1, 2))
    x_dtype, w_dtype = draw(st.sampled_from(STORAGE)), draw(st.sampled_from(STORAGE))
    x = draw(int_arrays(x_dtype, (n, c, h, w)))
    wt = draw(int_arrays(w_dtype, (m, cg, kh, kw)))
    bias = draw(st.one_of(st.none(), int_arrays(np.int32, (m,))))
    return (x, wt, bias, draw(zero_points(x_dtype, c)), draw(zero_points(w_dtype, m)),
            (sh, sw), pads, (dh, dw), group)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_conv2d(case: tuple) -> None:
    same(kernels.conv2d, reference.conv2d, *case)


@FAST
@given(conv_cases(depthwise=True))
def test_conv2d_depthwise(case: tuple) -> None:
    same(kernels.conv2d, reference.conv2d, *case)


@pytest.mark.parametrize("x_dtype, w_dtype", [(np.int8, np.int8), (np.uint8, np.int8),
                                              (np.int16, np.int8), (np.int16, np.int16)])
def test_conv2d_long_sums(x_dtype: Any, w_dtype: Any) -> None:
    """K = 64 * 3 * 3 = 576 terms: float32 needs the K split for 8-bit extremes; 16-bit
    operands take float64 and, past 2^31, the int64 sums saturated as the spec does."""
    rng = np.random.default_rng(7)
    xi, wi = np.iinfo(x_dtype), np.iinfo(w_dtype)
    x = np.where(rng.random((1, 64, 6, 5)) < 0.5, xi.min, xi.max).astype(x_dtype)
    w = np.where(rng.random((8, 64, 3, 3)) < 0.5, wi.min, wi.max).astype(w_dtype)
    w[0] = wi.max  # one channel of same-signed products: the extreme sum
    x[:, :, 0, 0] = xi.max
    bias = np.array([INT32_MAX, INT32_MIN, 0, 1, -1, 5, -5, 2**30], np.int32)
    for x_zp in (0, int(xi.min), int(xi.max)):
        same(kernels.conv2d, reference.conv2d, x, w, bias, x_zp, 0, (1, 1), (1, 1, 1, 1),
             (1, 1), 1)
    same(kernels.conv2d, reference.conv2d, x, w[:, :32], None, 3, 1, (2, 2), (0, 1, 0, 1),
         (1, 2), 2)


def test_conv2d_rejects_what_the_spec_rejects() -> None:
    x = np.zeros((1, 4, 5, 5), np.int8)
    w = np.zeros((6, 2, 3, 3), np.int8)
    for args in [(x, w, None, 0, 0, (1, 1), (0, 0, 0, 0), (1, 1), 3),      # groups
                 (x, w, None, 0, 0, (1, 1), (0, 0, 0, 0), (3, 3), 2),      # window too big
                 (x, w, None, 0, 0, (1, 1), (-1, 0, 0, 0), (1, 1), 2),     # negative pad
                 (x, w, None, np.zeros(3), 0, (1, 1), (0, 0, 0, 0), (1, 1), 2)]:  # x_zp size
        same(kernels.conv2d, reference.conv2d, *args)


# --------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------


@st.composite
def matmul_cases(draw: st.DrawFn) -> tuple:
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 40)), draw(st.integers(1, 6))
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    a_batch = tuple(draw(st.sampled_from([1, b])) for b in batch)
    b_batch = tuple(draw(st.sampled_from([1, b])) for b in batch)[draw(st.integers(0, len(batch))):]
    a_shape = draw(st.sampled_from([(*a_batch, m, k), (k,)]))
    b_shape = draw(st.sampled_from([(*b_batch, k, n), (k,)]))
    a_dtype, b_dtype = draw(st.sampled_from(STORAGE)), draw(st.sampled_from(STORAGE))
    a, b = draw(int_arrays(a_dtype, a_shape)), draw(int_arrays(b_dtype, b_shape))
    a_info, b_info = np.iinfo(a_dtype), np.iinfo(b_dtype)
    a_zp = draw(st.integers(int(a_info.min), int(a_info.max)))
    cols = b_shape[-1] if len(b_shape) > 1 else None
    b_zp = draw(zero_points(b_dtype, cols)) if cols else draw(st.integers(int(b_info.min),
                                                                          int(b_info.max)))
    out_cols = (n if len(b_shape) > 1 else (m if len(a_shape) > 1 else None))
    bias = draw(st.one_of(st.none(), int_arrays(np.int32, (out_cols,)))) if out_cols else None
    return a, b, bias, a_zp, b_zp


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matmul_cases())
def test_matmul(case: tuple) -> None:
    same(kernels.matmul, reference.matmul, *case)


@pytest.mark.parametrize("a_dtype, b_dtype", [(np.int8, np.int8), (np.uint8, np.int8),
                                              (np.int16, np.int16)])
def test_matmul_long_sums(a_dtype: Any, b_dtype: Any) -> None:
    """K = 1536 (MiniLM's FFN) at the extremes: float32 chunks, or wide int64 sums."""
    rng = np.random.default_rng(3)
    ai, bi = np.iinfo(a_dtype), np.iinfo(b_dtype)
    a = np.where(rng.random((2, 5, 1536)) < 0.5, ai.min, ai.max).astype(a_dtype)
    b = np.where(rng.random((1536, 7)) < 0.5, bi.min, bi.max).astype(b_dtype)
    a[0, 0] = ai.max
    b[:, 0] = bi.max
    bias = np.array([INT32_MAX, INT32_MIN, 0, 1, -1, 7, 2**30], np.int32)
    for a_zp in (0, int(ai.min)):
        same(kernels.matmul, reference.matmul, a, b, bias, a_zp, 0)
        same(kernels.matmul, reference.matmul, a, b, None, a_zp, np.arange(7) - 3)


def test_matmul_rejects_what_the_spec_rejects() -> None:
    a, b = np.zeros((2, 3), np.int8), np.zeros((4, 5), np.int8)
    same(kernels.matmul, reference.matmul, a, b)                                 # K
    same(kernels.matmul, reference.matmul, a, np.zeros(3, np.int8), None, 0, np.zeros(3))


# --------------------------------------------------------------------------------------
# softmax, layernorm
# --------------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_softmax(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(WITH_INT32))
    x = data.draw(int_arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    bits = data.draw(st.integers(1, 10))
    scale = data.draw(st.floats(1e-3, 2.0))
    table = reference.softmax_exp_table(scale, bits, data.draw(st.integers(0, 30)))
    if data.draw(st.booleans()):  # a table that stops early, or with odd entries
        table = table[:data.draw(st.integers(1, table.size))]
    if data.draw(st.integers(0, 4)) == 0:
        table = table.copy()
        table[-1] = data.draw(st.sampled_from([-(2**31), -5, 2**31 - 1]))
    fraction = data.draw(st.one_of(st.integers(0, 31), st.sampled_from([40, 62, 63, 70, -1])))
    same(kernels.softmax, reference.softmax, x, axis, table, fraction)


@FAST
@given(st.data())
def test_layernorm(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(WITH_INT32))
    n = data.draw(st.integers(1, 40))
    rows = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4))
    x = data.draw(int_arrays(dtype, (*rows, n)))
    info = np.iinfo(dtype)
    x_zp = data.draw(st.integers(int(info.min), int(info.max)))
    g_dtype = data.draw(st.sampled_from([np.int8, np.int16, np.uint8]))
    gamma = data.draw(int_arrays(g_dtype, (n,)))
    gamma_zp = data.draw(zero_points(g_dtype, n))
    beta = data.draw(st.one_of(st.none(), int_arrays(np.int32, (n,))))
    eps = data.draw(st.one_of(st.integers(0, 2**40), st.sampled_from([0, 2**63 - 1])))
    fraction = data.draw(st.one_of(st.integers(0, 24), st.sampled_from([40, 63])))
    same(kernels.layernorm, reference.layernorm, x, x_zp, gamma, gamma_zp, beta, eps, fraction)


# --------------------------------------------------------------------------------------
# pooling and reductions
# --------------------------------------------------------------------------------------


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple:
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(WITH_INT32))
    x = draw(int_arrays(dtype, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)))
    return x, (kh, kw), strides, pads, draw(st.booleans())


@FAST
@given(pool_cases(), st.integers(1, 2), st.integers(1, 2))
def test_max_pool2d(case: tuple, dh: int, dw: int) -> None:
    x, kernel, strides, pads, ceil_mode = case
    same(kernels.max_pool2d, reference.max_pool2d, x, kernel, strides, pads, (dh, dw), ceil_mode)


@FAST
@given(pool_cases(), st.booleans(), st.data())
def test_avg_pool2d(case: tuple, include_pad: bool, data: st.DataObject) -> None:
    x, kernel, strides, pads, ceil_mode = case
    x_zp = data.draw(zero_points(x.dtype, x.shape[1]))
    fraction = data.draw(st.one_of(st.integers(0, 20), st.sampled_from([40, 62, 70])))
    same(kernels.avg_pool2d, reference.avg_pool2d, x, x_zp, kernel, strides, pads, include_pad,
         fraction, ceil_mode)


@FAST
@given(st.data())
def test_reduce_mean(data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(WITH_INT32))
    x = data.draw(int_arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)))
    axes = data.draw(st.one_of(st.none(), st.lists(st.integers(-x.ndim, x.ndim - 1),
                                                   max_size=x.ndim)))
    info = np.iinfo(dtype)
    x_zp = data.draw(st.integers(int(info.min), int(info.max)))
    fraction = data.draw(st.one_of(st.integers(0, 20), st.sampled_from([40, 62, 70])))
    same(kernels.reduce_mean, reference.reduce_mean, x, x_zp, axes, data.draw(st.booleans()),
         fraction)


# --------------------------------------------------------------------------------------
# Fused epilogues: a product (or a tensor) and its elementwise ops in one pass
# --------------------------------------------------------------------------------------


@st.composite
def stage_lists(draw: st.DrawFn, channels: int, col: bool, dtype: Any = np.int32) \
        -> tuple[list[tuple], list[Callable[[np.ndarray], np.ndarray]], np.dtype]:
    """Epilogue specs and the reference functions they stand for (applied in order
    to `dtype` integers, an accumulator by default, whose channel axis is 1, or the
    last axis with `col`)."""
    specs: list[tuple] = []
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["requant", "requant", "clamp", "lookup"]))
        if kind == "lookup" and np.dtype(dtype).itemsize > 2:
            kind = "requant"
        info = np.iinfo(dtype)
        if kind == "requant":
            rounding = draw(st.sampled_from(ROUNDING_MODES))
            out = draw(st.sampled_from(WITH_INT32))
            per_channel = draw(st.booleans())
            count = channels if per_channel else 0
            shifts = st.integers(MIN_SHIFT, MAX_SHIFT[rounding])
            mults = st.integers(0, 2**31 - 1)
            if per_channel:
                m = np.array(draw(st.lists(mults, min_size=count, max_size=count)), np.int64)
                s = np.array(draw(st.lists(shifts, min_size=count, max_size=count)), np.int64)
            else:
                m, s = draw(mults), draw(shifts)
            zi = 0 if dtype == np.int32 else draw(st.integers(int(info.min), int(info.max)))
            oi = np.iinfo(out)
            zo = draw(st.integers(int(oi.min), int(oi.max)))
            spec = kernels.requant_spec(m, s, rounding, zi, zo, int(oi.min), int(oi.max), out,
                                        count)
            assert spec is not None
            if per_channel and col:
                spec = spec[:2] + ("col",) + spec[3:]
            axis = (-1 if col else 1) if per_channel else None
            specs.append(spec)
            steps.append(lambda x, a=(m, s, rounding, zi, zo, int(oi.min), int(oi.max), out,
                                      axis): reference.requantize(x, *a))
            dtype = out
        elif kind == "clamp":
            low = draw(st.integers(int(info.min), int(info.max)))
            high = draw(st.integers(low, int(info.max)))
            specs.append(("clamp", low, high))
            steps.append(lambda x, lo=low, hi=high: np.clip(x, lo, hi))
        else:
            out = draw(st.sampled_from(WITH_INT32))
            table = np.random.default_rng(draw(st.integers(0, 9))).integers(
                np.iinfo(out).min, int(np.iinfo(out).max) + 1,
                int(info.max) - int(info.min) + 1).astype(out)
            specs.append(("lookup", table, int(info.min)))
            steps.append(lambda x, t=table, b=int(info.min): reference.lookup(x, t, b))
            dtype = out
    return specs, steps, np.dtype(dtype)


def run_steps(steps: list[Callable[[np.ndarray], np.ndarray]], x: np.ndarray) -> np.ndarray:
    for step in steps:
        x = step(x)
    return x


@FAST
@given(conv_cases(), st.data())
def test_conv_plan_with_epilogue(case: tuple, data: st.DataObject) -> None:
    x, w, bias, x_zp, w_zp, strides, pads, dilations, group = case
    specs, steps, dtype = data.draw(stage_lists(w.shape[0], col=False))
    plan = kernels.conv_plan(x.shape, x.dtype, w, bias, x_zp, w_zp, strides, pads, dilations,
                             group, specs, dtype)
    assume(plan is not None)
    same(plan, lambda x: run_steps(steps, reference.conv2d(x, w, bias, x_zp, w_zp, strides, pads,
                                                           dilations, group)), x)


@FAST
@given(matmul_cases(), st.data())
def test_matmul_plan_with_epilogue(case: tuple, data: st.DataObject) -> None:
    a, b, bias, a_zp, b_zp = case
    assume(a.ndim > 1 and b.ndim > 1)
    specs, steps, dtype = data.draw(stage_lists(b.shape[-1], col=True))
    # an elementwise operand along the rows' channel axis and one of the output's shape
    out_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    extra = data.draw(int_arrays(np.int32, out_shape))
    specs.append(("add", "flat", 1))
    runtime_b = data.draw(st.booleans())  # an activation (attention) or a constant weight
    plan = kernels.matmul_plan(a.shape, a.dtype, None if runtime_b else b, b.shape, b.dtype,
                               bias, a_zp, b_zp, specs, np.int32)
    assume(plan is not None)
    operands = (b, extra.reshape(-1)) if runtime_b else (extra.reshape(-1),)
    same(lambda a: plan(a, *operands), lambda a: reference.add(run_steps(
        steps, reference.matmul(a, b, bias, a_zp, b_zp)), extra), a)


@FAST
@given(st.data())
def test_epilogue_on_tensors(data: st.DataObject) -> None:
    """An elementwise chain (kernels.Epilogue.apply) on a stored tensor, per-channel
    along a middle axis, with a broadcast operand."""
    dtype = data.draw(st.sampled_from(WITH_INT32))
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5))
    x = data.draw(int_arrays(dtype, shape))
    specs, steps, out = data.draw(stage_lists(shape[1], col=False, dtype=dtype))
    operand = data.draw(int_arrays(np.int16, (shape[1],)))
    specs.append(("mul", "row", 0, 3, -2))
    steps.append(lambda v: reference.mul(v, operand.reshape(-1, *([1] * (len(shape) - 2))), 3, -2))
    epilogue = kernels.Epilogue(specs, np.int32)
    rows = shape[0] * shape[1]
    view = (rows, x.size // rows, 1, shape[1])
    same(lambda x: epilogue.apply(x, view, (operand.astype(np.int32),)),
         lambda x: run_steps(steps, x), x)


@FAST
@given(st.data())
def test_epilogue_operand_patterns(data: st.DataObject) -> None:
    """Binary stages with operands of every broadcast pattern, on the view the planner
    uses (int_kernels.epilogue_view), against reference add / sub / mul."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    x = data.draw(int_arrays(data.draw(st.sampled_from(WITH_INT32)), shape))
    row_axis: int | None = None
    col = False
    specs: list[tuple] = []
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    operands: list[np.ndarray] = []
    for _ in range(data.draw(st.integers(1, 3))):
        other = data.draw(st.sampled_from([(), shape, shape[-1:],
                                           *[tuple(s if i == a else 1 for i, s in
                                                   enumerate(shape)) for a in range(len(shape))]]))
        layout = kernels.binary_layout(shape, other)
        assert layout is not None
        pattern, axis = layout
        if pattern == "row":
            if row_axis not in (None, axis):
                continue
            row_axis = axis
        col = col or pattern == "col"
        operand = data.draw(int_arrays(np.int32, other))
        kind = data.draw(st.sampled_from(["add", "sub", "rsub", "mul"]))
        index = len(operands)
        operands.append(operand.reshape(-1).copy())
        if kind == "mul":
            specs.append(("mul", pattern, index, 5, -7))
            steps.append(lambda v, o=operand: reference.mul(v, o, 5, -7))
        else:
            specs.append((kind, pattern, index))
            fn = {"add": reference.add, "sub": reference.sub,
                  "rsub": lambda v, o: reference.sub(o, v)}[kind]
            steps.append(lambda v, o=operand, fn=fn: fn(v, o))
    epilogue = kernels.Epilogue(specs, np.int32)
    view = int_kernels.epilogue_view(shape, row_axis, col)
    same(lambda x: epilogue.apply(x, view, tuple(operands)),
         lambda x: run_steps(steps, x).reshape(shape), x)


def test_epilogue_rejects_short_operands() -> None:
    epilogue = kernels.Epilogue([("add", "col", 0)], np.int32)
    x = np.zeros((4, 6), np.int32)
    epilogue.apply(x, (24, 1, 1, 0), (np.zeros(1, np.int32),))  # one column: one entry
    with pytest.raises(ValueError):
        epilogue.apply(x, (4, 6, 1, 0), (np.zeros(5, np.int32),))
    with pytest.raises(TypeError):
        epilogue.apply(x, (4, 6, 1, 0), (np.zeros(6, np.int64),))


def test_fold_tables_keeps_the_errors() -> None:
    """A run of unary stages becomes one table only when no input value errs."""
    table = np.arange(256, dtype=np.int32) - 100  # outputs -100..155
    narrow = np.arange(100, dtype=np.int32)       # a table over 0..99 only
    specs = [("lookup", table, -128), ("lookup", narrow, 0)]
    assert int_kernels.fold_tables(specs, (-128, 127)) == specs  # -100 would err
    folded = int_kernels.fold_tables([("lookup", table, -128), ("clamp", 0, 99),
                                      ("lookup", narrow, 0)], (-128, 127))
    assert len(folded) == 1 and folded[0][0] == "lookup"
    x = np.arange(-128, 128, dtype=np.int8)
    expected = reference.lookup(np.clip(reference.lookup(x, table, -128), 0, 99), narrow, 0)
    got = kernels.Epilogue(folded, np.int32).apply(x, (1, x.size, 1, 0), ())
    assert np.array_equal(got, expected)


def test_fold_tables_takes_stages_on_the_chain_input() -> None:
    """GELU's x * phi(x): a mul whose operand is the chain's input folds into the table
    of the run that starts at the input, and only there."""
    phi = (np.arange(256) // 2).astype(np.int32)  # any table
    specs = [("lookup", phi, -128), ("mul", "flat", 0, 3, -1), ("requant", "single", "scalar",
             np.array([1 << 30]), np.array([-6]), np.array([0]), np.array([2]), -128, 127)]
    folded = int_kernels.fold_tables(specs, (-128, 127), {0})
    assert [spec[0] for spec in folded] == ["lookup"]
    assert int_kernels.fold_tables(specs, (-128, 127), set()) != folded  # not the input
    x = np.arange(-128, 128, dtype=np.int8)
    expected = reference.requantize(reference.mul(reference.lookup(x, phi, -128), x, 3, -1),
                                    1 << 30, -6, "single", 0, 2, -128, 127, np.int8)
    got = kernels.Epilogue(folded, np.int8).apply(x, (1, x.size, 1, 0), ())
    assert np.array_equal(got, expected)


# --------------------------------------------------------------------------------------
# Which implementation runs
# --------------------------------------------------------------------------------------


COMPILED = ["requantize", "conv2d", "matmul", "add", "sub", "mul", "lookup", "softmax",
            "layernorm", "max_pool2d", "avg_pool2d", "reduce_mean"]


@pytest.mark.parametrize("name", COMPILED)
def test_int_kernels_use_the_compiled_functions(name: str) -> None:
    assert int_kernels._compiled is kernels
    assert int_kernels.implementation(name) is getattr(kernels, name)
    assert int_kernels.implementation(name, compiled=None) is getattr(reference, name)


def test_reference_only_kernels_fall_back() -> None:
    """Ops without a compiled kernel (and every op without the extension) run the spec."""
    assert int_kernels.implementation("conv_transpose2d") is reference.conv_transpose2d
    assert int_kernels.implementation("resize_bilinear") is reference.resize_bilinear


def _digits_program(rounding: str):  # noqa: ANN202
    from quantir.lowering.lower_to_int import lower_to_int
    from quantir.passes.presets import quantize_model
    from quantir.passes.qconfig import QuantConfig
    from tests.conftest import DATA

    result = quantize_model(DATA / "digits_cnn.onnx", DATA / "digits_calib.npz",
                            QuantConfig.build(precision="a8_w8"))
    return lower_to_int(result.module, rounding), np.load(DATA / "digits_calib.npz")["input"][:8]


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_fused_integer_program_is_exact(rounding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused plan (compiled chains), the one-op-per-step plan and the plan without
    the extension (numpy reference kernels only) return the same integers."""
    from quantir.runtime.executor import Program, main_function

    module, inputs = _digits_program(rounding)
    function = main_function(module)
    fused = Program(function, fuse=True)
    assert any(len(getattr(step.kernel, "__closure__", None) or ()) and step.op.name != ""
               for step in fused.steps)
    assert len(fused.steps) < len(Program(function).steps)  # chains did form
    runs = [fused.run([x[None]]) for x in inputs]
    unfused = [Program(function).run([x[None]]) for x in inputs]
    monkeypatch.setattr(int_kernels, "_compiled", None)
    reference_only = Program(function, fuse=True)
    assert len(reference_only.steps) == len(Program(function).steps)  # no chains without it
    spec = [reference_only.run([x[None]]) for x in inputs]
    for a, b, c in zip(runs, unfused, spec, strict=True):
        for x, y, z in zip(a, b, c, strict=True):
            assert np.array_equal(x, y) and np.array_equal(x, z)


def _assert_fused_is_exact(module: Any, feeds: list[list[np.ndarray]]) -> None:
    from quantir.runtime.executor import Program, main_function

    function = main_function(module)
    fused, plain = Program(function, fuse=True), Program(function)
    assert len(fused.steps) < len(plain.steps)
    for inputs in feeds:
        for a, b in zip(fused.run(inputs), plain.run(inputs), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("precision", ["a8_w8", "a16_w16"])
def test_fused_attention_with_mask_is_exact(tmp_path: Any, precision: str) -> None:
    """Softmax over scores plus a broadcast attention mask (a last-axis operand)."""
    from quantir.frontend.onnx_import import graph_names
    from quantir.lowering.lower_to_int import lower_to_int
    from quantir.passes.presets import quantize_model
    from quantir.passes.qconfig import QuantConfig
    from quantir.runtime.executor import main_function
    from tests.unit.test_attention_mask import masked_softmax_model, samples

    path = tmp_path / "masked.onnx"
    masked_softmax_model(path)
    result = quantize_model(path, samples(8, 0), QuantConfig.build(precision=precision,
                                                                   calibset_size=8))
    module = lower_to_int(result.module)
    inputs, _ = graph_names(main_function(module))
    _assert_fused_is_exact(module, [[f[name] for name in inputs] for f in samples(3, 1)])


def test_fused_transformer_is_exact() -> None:
    """The tiny ViT: matmuls, softmax, layernorm, GELU tables, residual adds."""
    from quantir.lowering.lower_to_int import lower_to_int
    from quantir.passes.presets import quantize_model
    from quantir.passes.qconfig import QuantConfig
    from tests.conftest import DATA

    result = quantize_model(DATA / "tiny_vit.onnx", DATA / "digits_calib.npz",
                            QuantConfig.build(precision="a8_w8"))
    inputs = np.load(DATA / "digits_calib.npz")["input"][:4]
    _assert_fused_is_exact(lower_to_int(result.module), [[x[None]] for x in inputs])


def test_fused_step_raises_the_ops_own_error() -> None:
    """A value outside a stage's domain: the fused step re-runs its ops' kernels, so
    the error is the op's own (here: a lookup table's domain)."""
    from quantir.dialects import qi
    from quantir.lowering.lower_to_int import lower_to_int
    from quantir.passes.presets import quantize_model
    from quantir.passes.qconfig import QuantConfig
    from quantir.runtime.executor import constant_array, default_kernel, main_function
    from quantir.runtime.fusion import plan_steps
    from tests.conftest import DATA

    result = quantize_model(DATA / "tiny_vit.onnx", DATA / "digits_calib.npz",
                            QuantConfig.build(precision="a8_w8"))
    function = main_function(lower_to_int(result.module))
    ops = [op for op in function.body.block.ops
           if op.name not in ("nn.constant", "q.constant", "func.return")]
    steps = plan_steps(ops, default_kernel, constant_array, True)
    step = next(s for s in steps if s.chain is not None and isinstance(s.ops[0], qi.LookupOp))
    head = step.inputs[0]
    outside = np.full(tuple(head.type.get_shape()), 1000, np.int16)  # past 8-bit tables
    arrays = [outside if v is head else np.zeros(tuple(v.type.get_shape()), np.int8)
              for v in step.inputs]  # (GELU reads its input twice: x * phi(x))
    with pytest.raises(ValueError, match="table's domain"):
        step.kernel(*arrays)


def test_missing_extension_uses_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension every integer op compiles to the reference functions."""
    from quantir.dialects import q
    from quantir.runtime.executor import main_function

    module, inputs = _digits_program("single")
    requant = next(op for op in main_function(module).body.block.ops
                   if isinstance(op, q.RequantOp))
    calls: list[str] = []
    original = reference.requantize
    monkeypatch.setattr(reference, "requantize",
                        lambda *a, **k: calls.append("reference") or original(*a, **k))
    monkeypatch.setattr(int_kernels, "_compiled", None)
    monkeypatch.setattr(int_kernels.implementation, "__defaults__", (None,))
    kernel = int_kernels.compile_kernel(requant)
    x = np.zeros(tuple(requant.input.type.get_shape()), np.int32)
    kernel(x)
    assert calls == ["reference"]
