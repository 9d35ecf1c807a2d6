"""The integer reference kernels (quantir/runtime/reference.py), the spec of the integer program.

Rounding edge cases are pinned with hand-computed values; the rounding modes are
checked against exact rational arithmetic (fractions) and against Python-int
transcriptions of gemmlowp / TOSA; the compute ops against float64 numpy, brute-force
loops or onnxruntime on integer-valued float inputs (exact in float for these sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantir.dialects.nn import window_output_size
from quantir.dialects.q import MAX_SHIFT
from quantir.runtime import reference as ref
from tests.unit.test_float_kernels import run_onnx as run_onnx_node

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RNG_SEED = 1234


# --------------------------------------------------------------------------------------
# Python-int transcriptions of the rounding modes (independent of numpy)
# --------------------------------------------------------------------------------------


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q


def py_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    return _trunc_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)


def py_rdbpot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    return (x >> exponent) + ((x & mask) > (mask >> 1) + (x < 0))


def py_tflite(x: int, m: int, shift: int) -> int:
    v = min(max(x << max(shift, 0), INT32_MIN), INT32_MAX)
    return py_rdbpot(py_srdhm(v, m), max(-shift, 0))


def py_tosa(x: int, m: int, shift: int) -> int:
    s = 31 - shift
    round_ = 1 << (s - 1)
    if s > 31:
        round_ += (1 << 30) if x >= 0 else -(1 << 30)
    return (x * m + round_) >> s


def exact(x: int, m: int, shift: int) -> Fraction:
    return Fraction(x * m) * Fraction(2) ** (shift - 31)


def round_half_away(value: Fraction) -> int:
    n = math.floor(abs(value) + Fraction(1, 2))
    return n if value >= 0 else -n


# --------------------------------------------------------------------------------------
# Rounding: pinned edge cases
# --------------------------------------------------------------------------------------


def test_srdhm_int32_min_squared_saturates() -> None:
    assert ref.srdhm(INT32_MIN, INT32_MIN) == INT32_MAX
    # (-2^31)(2^31 - 1) / 2^31 = -(2^31 - 1) exactly.
    assert ref.srdhm(INT32_MIN, INT32_MAX) == -INT32_MAX
    assert ref.srdhm(INT32_MAX, INT32_MAX) == INT32_MAX - 1
    # The saturating path goes through the vectorised form too.
    out = ref.srdhm(np.array([INT32_MIN, INT32_MIN, 5]), np.array([INT32_MIN, 1 << 30, 1 << 30]))
    np.testing.assert_array_equal(out, [INT32_MAX, -(1 << 30), 3])


def test_srdhm_ties_round_toward_plus_infinity() -> None:
    # a * 2^30 / 2^31 = a / 2: the nudge 1 - 2^30 plus truncation sends negative ties up.
    a = np.array([-5, -3, -1, 1, 3, 5])
    np.testing.assert_array_equal(ref.srdhm(a, 1 << 30), [-2, -1, 0, 1, 2, 3])


def test_rounding_divide_by_pot_ties_away_from_zero() -> None:
    x = np.array([-5, -4, -3, -1, 1, 3, 4, 5])
    np.testing.assert_array_equal(ref.rounding_divide_by_pot(x, 1), [-3, -2, -2, -1, 1, 2, 2, 3])
    np.testing.assert_array_equal(ref.rounding_divide_by_pot(x, 0), x)
    assert ref.rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert ref.rounding_divide_by_pot(INT32_MAX, 31) == 1
    assert ref.rounding_divide_by_pot(-(1 << 30), 31) == -1  # -0.5: away from zero
    assert ref.rounding_divide_by_pot(-(1 << 30) + 1, 31) == 0
    assert ref.rounding_divide_by_pot(1 << 30, 31) == 1


def test_tflite_shift_zero() -> None:
    # real = M / 2^31; INT32_MIN * INT32_MAX / 2^31 = -(2^31 - 1).
    assert ref.scale_round(INT32_MIN, INT32_MAX, 0) == -INT32_MAX
    assert ref.scale_round(INT32_MAX, INT32_MAX, 0) == INT32_MAX - 1
    # M = 2^30 (real 0.5): SRDHM alone, ties toward +inf in every mode at shift 0.
    x = np.array([-5, -3, 3, 5])
    for mode in ("tflite", "single", "tosa"):
        np.testing.assert_array_equal(ref.scale_round(x, 1 << 30, 0, mode), [-2, -1, 2, 3])


def test_tflite_shift_31_saturates_the_left_shift() -> None:
    x = np.array([0, 1, -1, 3, -3])
    # 1 << 31 saturates to 2^31 - 1, SRDHM(2^31 - 1, 2^30) = 2^30; -1 << 31 is exact.
    out = ref.scale_round(x, 1 << 30, 31, "tflite")
    np.testing.assert_array_equal(out, [0, 1 << 30, -(1 << 30), 1 << 30, -(1 << 30)])
    with pytest.raises(ValueError, match="shift"):
        ref.scale_round(x, 1 << 30, 31, "single")
    with pytest.raises(ValueError, match="shift"):
        ref.scale_round(x, 1 << 30, 30, "tosa")


def test_single_shift_30() -> None:
    # total = 1: (x * M + 1) >> 1, half up.
    x = np.array([1, -1, -3, 3, 1000])
    np.testing.assert_array_equal(ref.scale_round(x, 1, 30, "single"), [1, 0, -1, 2, 500])
    assert ref.scale_round(1000, 3, 30, "single") == 1500
    # Exact even outside int32 (requantize clamps it).
    assert ref.scale_round(3, INT32_MAX, 30, "single") == 3 * (1 << 30) - 1


def test_negative_ties_per_mode() -> None:
    # real = 0.25 (M = 2^30, shift -1): x / 4 for x = -10, -6, 6, 10 is -2.5, -1.5, 1.5, 2.5.
    x = np.array([-10, -6, 6, 10])
    expected = {
        "tflite": [-3, -2, 2, 3],  # SRDHM exact (x / 2), then RDBPOT: ties away from zero
        "single": [-2, -1, 2, 3],  # one rounding, half up
        "tosa": [-3, -2, 2, 3],    # double round: +-2^30 by the sign, then half up
    }
    for mode, values in expected.items():
        np.testing.assert_array_equal(ref.scale_round(x, 1 << 30, -1, mode), values, err_msg=mode)


def test_tosa_single_round_below_shift_32() -> None:
    # s = 31 - shift <= 31: no double rounding, the same as single.
    x = np.arange(-40, 41)
    for shift in (0, 1, 5, 29):
        np.testing.assert_array_equal(ref.scale_round(x, 123456789, shift, "tosa"),
                                      ref.scale_round(x, 123456789, shift, "single"))


def test_scale_round_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="int32"):
        ref.scale_round(np.array([2**31]), 1, 0)
    with pytest.raises(ValueError, match="multiplier"):
        ref.scale_round(1, -1, 0)
    with pytest.raises(ValueError, match="multiplier"):
        ref.scale_round(1, 2**31, 0)
    with pytest.raises(ValueError, match="shift"):
        ref.scale_round(1, 1, -32)
    with pytest.raises(ValueError, match="rounding mode"):
        ref.scale_round(1, 1, 0, "upward")


# --------------------------------------------------------------------------------------
# quantize_multiplier
# --------------------------------------------------------------------------------------


def test_quantize_multiplier_values() -> None:
    assert ref.quantize_multiplier(0.5) == (1 << 30, 0)
    assert ref.quantize_multiplier(1.0) == (1 << 30, 1)
    assert ref.quantize_multiplier(0.75) == (3 << 29, 0)
    assert ref.quantize_multiplier(0.0) == (0, 0)
    # q * 2^31 = 2^30 + 0.5 and 2^30 + 1.5: Python round, ties to even.
    assert ref.quantize_multiplier((2**30 + 0.5) / 2**31) == (1 << 30, 0)
    assert ref.quantize_multiplier((2**30 + 1.5) / 2**31) == ((1 << 30) + 2, 0)


def test_quantize_multiplier_carry() -> None:
    # q = 1 - 2^-40 rounds to 2^31: M halves, the exponent grows.
    assert ref.quantize_multiplier(1 - 2**-40) == (1 << 30, 1)
    assert ref.quantize_multiplier((1 - 2**-40) * 2**-10) == (1 << 30, -9)
    # The carry lifts e = -32 to -31, which is representable.
    assert ref.quantize_multiplier((1 - 2**-40) * 2**-32) == (1 << 30, -31)


def test_quantize_multiplier_tiny_reals_are_zero() -> None:
    assert ref.quantize_multiplier(2**-32) == (1 << 30, -31)
    assert ref.quantize_multiplier(2**-33) == (0, 0)
    assert ref.quantize_multiplier(1e-300) == (0, 0)
    assert ref.quantize_multiplier(5e-324) == (0, 0)


@pytest.mark.parametrize("mode", ["tflite", "single", "tosa"])
def test_quantize_multiplier_too_large(mode: str) -> None:
    limit = MAX_SHIFT[mode]
    # The largest shift is accepted, one more is an error naming the ratio.
    assert ref.quantize_multiplier(2.0 ** (limit - 1), mode) == (1 << 30, limit)
    with pytest.raises(ValueError, match=r"scale ratio .* too large for rounding mode"):
        ref.quantize_multiplier(2.0 ** limit, mode)


@pytest.mark.parametrize("real", [-1.0, -0.0 - 1e-9, math.inf, math.nan])
def test_quantize_multiplier_rejects_negative_and_non_finite(real: float) -> None:
    with pytest.raises(ValueError):
        ref.quantize_multiplier(real)


@given(st.floats(min_value=2**-31, max_value=2.0**28, allow_nan=False))
def test_quantize_multiplier_approximates(real: float) -> None:
    m, shift = ref.quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    value = Fraction(m) * Fraction(2) ** (shift - 31)
    assert abs(value - Fraction(real)) <= Fraction(2) ** (shift - 32)


def test_quantize_multipliers_elementwise() -> None:
    reals = np.array([[0.5, 1.0], [2**-40, 0.3]])
    m, s = ref.quantize_multipliers(reals, "single")
    assert m.dtype == np.int32 and s.dtype == np.int64 and m.shape == (2, 2)
    for index in np.ndindex(reals.shape):
        assert (int(m[index]), int(s[index])) == ref.quantize_multiplier(reals[index], "single")
    with pytest.raises(ValueError, match="too large"):
        ref.quantize_multipliers(np.array([0.5, 2.0**31]))


# --------------------------------------------------------------------------------------
# Rounding: properties
# --------------------------------------------------------------------------------------

_int32 = st.integers(INT32_MIN, INT32_MAX)
_multiplier = st.integers(0, INT32_MAX)


@st.composite
def _scaling(draw: st.DrawFn, mode: str) -> tuple[list[int], int, int]:
    shift = draw(st.integers(-31, MAX_SHIFT[mode]))
    m = draw(_multiplier)
    xs = draw(st.lists(_int32, min_size=1, max_size=8))
    # Small values too, where ties happen.
    xs += draw(st.lists(st.integers(-64, 64), min_size=1, max_size=8))
    return xs, m, shift


@pytest.mark.parametrize("mode", ["tflite", "single", "tosa"])
@given(data=st.data())
def test_scale_round_matches_the_python_transcription(mode: str, data: st.DataObject) -> None:
    xs, m, shift = data.draw(_scaling(mode))
    out = ref.scale_round(np.array(xs, dtype=np.int64), m, shift, mode)
    assert out.dtype == np.int64
    for x, y in zip(xs, out.tolist(), strict=True):
        if mode == "single":
            total = 31 - shift
            assert y == (x * m + (1 << (total - 1))) >> total
        elif mode == "tosa":
            assert y == py_tosa(x, m, shift), (x, m, shift)
        else:
            assert y == py_tflite(x, m, shift), (x, m, shift)


@pytest.mark.parametrize("mode", ["tflite", "single", "tosa"])
@given(data=st.data())
def test_scale_round_is_within_one_of_exact(mode: str, data: st.DataObject) -> None:
    xs, m, shift = data.draw(_scaling(mode))
    # tflite saturates x << shift: keep to the inputs that do not.
    xs = [x for x in xs if INT32_MIN <= x << max(shift, 0) <= INT32_MAX]
    out = ref.scale_round(np.array(xs, dtype=np.int64), m, shift, mode).tolist()
    for x, y in zip(xs, out, strict=True):
        value = exact(x, m, shift)
        assert abs(y - value) <= 1
        assert abs(y - round(value)) <= 1
        if mode == "single":
            assert y == math.floor(value + Fraction(1, 2))


@given(data=st.data())
def test_tflite_and_single_differ_by_at_most_one(data: st.DataObject) -> None:
    xs, m, shift = data.draw(_scaling("single"))
    xs = [x for x in xs if INT32_MIN <= x << max(shift, 0) <= INT32_MAX]
    x = np.array(xs, dtype=np.int64)
    diff = ref.scale_round(x, m, shift, "tflite") - ref.scale_round(x, m, shift, "single")
    assert np.abs(diff).max(initial=0) <= 1


@given(st.lists(st.tuples(_int32, _multiplier, st.integers(-31, 31)), min_size=1, max_size=16))
def test_scale_round_per_element_parameters(cases: list[tuple[int, int, int]]) -> None:
    x, m, s = (np.array(column, dtype=np.int64) for column in zip(*cases, strict=True))
    out = ref.scale_round(x, m, s, "tflite")
    assert out.tolist() == [py_tflite(*case) for case in cases]


# --------------------------------------------------------------------------------------
# requantize
# --------------------------------------------------------------------------------------


def test_requantize_saturates_to_the_output_range() -> None:
    x = np.array([-1000, -256, -5, 0, 5, 240, 1000], dtype=np.int32)
    # real 0.5, zp_out 10: -1000 -> -490 -> -128; 240 -> 130 -> 127.
    out = ref.requantize(x, 1 << 30, 0, "tflite", 0, 10, -128, 127, np.int8)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, [-128, -118, 8, 10, 13, 127, 127])
    # A narrow (symmetric) range clamps inside the storage range.
    out = ref.requantize(x, 1 << 30, 0, "tflite", 0, 0, -127, 127, np.int8)
    assert out.min() == -127
    # single / tosa values past int32 clamp too.
    big = np.array([INT32_MAX, INT32_MIN], dtype=np.int32)
    out = ref.requantize(big, INT32_MAX, 30, "single", 0, 0, 0, 255, np.uint8)
    np.testing.assert_array_equal(out, [255, 0])


def test_requantize_zero_points() -> None:
    x = np.array([0, 100, 128, 129, 255], dtype=np.uint8)
    # (x - 128) * 1.0 + 3 in int8: 0 -> -125, 255 -> 130 -> 127.
    out = ref.requantize(x, 1 << 30, 1, "tflite", 128, 3, -128, 127, np.int8)
    np.testing.assert_array_equal(out, [-125, -25, 3, 4, 127])
    with pytest.raises(ValueError, match="range"):
        ref.requantize(x, 1 << 30, 1, "tflite", 128, 3, -128, 200, np.int8)


@pytest.mark.parametrize("mode", ["tflite", "single", "tosa"])
def test_requantize_per_axis(mode: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    acc = rng.integers(-(2**20), 2**20, size=(2, 4, 3, 3), dtype=np.int32)
    reals = np.array([0.001, 0.02, 0.3, 0.0071])
    m, s = ref.quantize_multipliers(reals, mode)
    zp_in = np.array([0, 5, -7, 100])
    out = ref.requantize(acc, m, s, mode, zp_in, -3, -128, 127, np.int8, axis=1)
    for c in range(4):
        expected = ref.requantize(acc[:, c], int(m[c]), int(s[c]), mode, int(zp_in[c]), -3,
                                  -128, 127, np.int8)
        np.testing.assert_array_equal(out[:, c], expected)
    # Negative axis names the same dimension; a wrong length is an error.
    np.testing.assert_array_equal(
        ref.requantize(acc, m, s, mode, zp_in, -3, -128, 127, np.int8, axis=-3), out)
    with pytest.raises(ValueError, match="entries"):
        ref.requantize(acc, m, s, mode, zp_in, -3, -128, 127, np.int8, axis=2)


def test_requantize_matches_float_rounding_mostly() -> None:
    rng = np.random.default_rng(RNG_SEED)
    acc = rng.integers(-(2**24), 2**24, size=4096)
    real = 0.000123
    m, s = ref.quantize_multiplier(real)
    out = ref.requantize(acc, m, s, "tflite", 0, 0, -(2**15), 2**15 - 1, np.int16)
    expected = np.clip(np.rint(acc * real), -(2**15), 2**15 - 1)
    assert np.abs(out - expected).max() <= 1


# --------------------------------------------------------------------------------------
# round_div, isqrt, saturate
# --------------------------------------------------------------------------------------


def test_round_div_ties_away_from_zero() -> None:
    num = np.array([-7, -5, -3, -1, 0, 1, 3, 5, 7])
    np.testing.assert_array_equal(ref.round_div(num, 2), [-4, -3, -2, -1, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ref.round_div(np.array([-4, -5, -6, 4, 5, 6]), 3),
                                  [-1, -2, -2, 1, 2, 2])
    with pytest.raises(ValueError, match="positive"):
        ref.round_div(num, 0)


@given(st.lists(st.tuples(st.integers(-(2**62), 2**62), st.integers(1, 2**40)), min_size=1,
                max_size=16))
def test_round_div_exact(cases: list[tuple[int, int]]) -> None:
    num, den = (np.array(column, dtype=np.int64) for column in zip(*cases, strict=True))
    out = ref.round_div(num, den).tolist()
    assert out == [round_half_away(Fraction(n, d)) for n, d in cases]


def test_isqrt_exact() -> None:
    rng = np.random.default_rng(RNG_SEED)
    k = rng.integers(0, 3037000499, size=2000, dtype=np.int64)
    values = np.concatenate([
        rng.integers(0, 2**63 - 1, size=2000, dtype=np.int64),
        rng.integers(0, 2**20, size=500, dtype=np.int64),
        k * k, k * k - 1, k * k + 1, k * k + 2 * k,  # squares and their neighbours
        np.array([0, 1, 2, 3, 4, 2**52, 2**53 + 1, 2**62 - 1, 2**62, 2**62 + 1,
                  3037000499**2, 3037000499**2 - 1, 2**63 - 1], dtype=np.int64)])
    values = values[values >= 0]
    out = ref.isqrt(values)
    assert out.dtype == np.int64
    assert out.tolist() == [math.isqrt(v) for v in values.tolist()]
    with pytest.raises(ValueError):
        ref.isqrt(np.array([-1]))


def test_saturate_int32() -> None:
    out = ref.saturate_int32(np.array([-(2**40), INT32_MIN - 1, INT32_MIN, 0, INT32_MAX, 2**33]))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [INT32_MIN, INT32_MIN, INT32_MIN, 0, INT32_MAX, INT32_MAX])


# --------------------------------------------------------------------------------------
# Elementwise ops and lookup
# --------------------------------------------------------------------------------------


def test_add_sub_mul_broadcast_and_saturate() -> None:
    a = np.array([[INT32_MAX], [-5]], dtype=np.int32)
    b = np.array([1, 2, -3], dtype=np.int32)
    assert ref.add(a, b).tolist() == [[INT32_MAX, INT32_MAX, INT32_MAX - 3], [-4, -3, -8]]
    assert ref.sub(a, b).tolist() == [[INT32_MAX - 1, INT32_MAX - 2, INT32_MAX], [-6, -7, -2]]
    assert ref.add(a, b).dtype == np.int32
    x = np.array([0, 255, 100], dtype=np.uint8)
    y = np.array([-128, 127, 0], dtype=np.int8)
    assert ref.mul(x, y, 128, -1).tolist() == [-128 * -127, 127 * 128, -28 * 1]
    big = np.array([INT32_MIN], dtype=np.int32)
    assert ref.mul(big, big).tolist() == [INT32_MAX]


def test_lookup() -> None:
    table = (np.arange(256) // 2 - 64).astype(np.int8)
    x = np.array([[-128, 0], [127, 5]], dtype=np.int8)
    out = ref.lookup(x, table, -128)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, table[x.astype(np.int64) + 128])
    with pytest.raises(ValueError, match="domain"):
        ref.lookup(x, table[:200], -128)
    with pytest.raises(ValueError, match="domain"):
        ref.lookup(x, table, -100)


# --------------------------------------------------------------------------------------
# onnxruntime on integer-valued float tensors
# --------------------------------------------------------------------------------------


def run_onnx(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, object],
             opset: int = 19) -> np.ndarray:
    """One ONNX node in onnxruntime; None inputs are left empty."""
    return run_onnx_node(op_type, inputs, attrs, opset=opset)[0]


# --------------------------------------------------------------------------------------
# Convolution and matmul
# --------------------------------------------------------------------------------------


def _conv_brute(xi: np.ndarray, wi: np.ndarray, strides: Sequence[int], pads: Sequence[int],
                dilations: Sequence[int], group: int) -> np.ndarray:
    """float64 conv of zero-point-free values, one output position at a time."""
    n, c, h, w = xi.shape
    m, cg, kh, kw = wi.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh = window_output_size(h, kh, sh, pt, pb, dh)
    ow = window_output_size(w, kw, sw, pl, pr, dw)
    xp = np.pad(xi, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = np.zeros((n, m, oh, ow))
    mg = m // group
    for g in range(group):
        ws = wi[g * mg:(g + 1) * mg]
        for i in range(oh):
            for j in range(ow):
                win = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + (kh - 1) * dh + 1:dh,
                         j * sw:j * sw + (kw - 1) * dw + 1:dw]
                out[:, g * mg:(g + 1) * mg, i, j] = np.einsum("nckl,mckl->nm", win, ws)
    return out


CONV_CASES = [
    # (N, C, H, W), (M, KH, KW), strides, pads, dilations, group
    ((2, 3, 7, 6), (4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 4, 9, 8), (6, 3, 2), (2, 1), (0, 2, 1, 0), (1, 2), 2),
    ((2, 4, 8, 8), (8, 3, 3), (2, 2), (1, 0, 2, 1), (2, 1), 4),  # depthwise, multiplier 2
    ((1, 5, 5, 5), (3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise
    ((1, 2, 4, 4), (2, 4, 4), (3, 3), (2, 2, 2, 2), (1, 1), 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_float64(case: tuple) -> None:
    x_shape, (m, kh, kw), strides, pads, dilations, group = case
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(0, 256, size=x_shape, dtype=np.uint8)
    w = rng.integers(-127, 128, size=(m, x_shape[1] // group, kh, kw), dtype=np.int8)
    w_zp = rng.integers(-3, 4, size=m)
    bias = rng.integers(-(2**20), 2**20, size=m, dtype=np.int32)
    out = ref.conv2d(x, w, bias, 131, w_zp, strides, pads, dilations, group)
    assert out.dtype == np.int32
    xi = x.astype(np.float64) - 131
    wi = w.astype(np.float64) - w_zp.reshape(-1, 1, 1, 1)
    expected = _conv_brute(xi, wi, strides, pads, dilations, group) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(out, expected)
    # Same as onnxruntime's float Conv on the zero-point-free values (exact in float32).
    onnx = run_onnx("Conv", [xi.astype(np.float32), wi.astype(np.float32)],
                    {"strides": strides, "pads": pads, "dilations": dilations, "group": group})
    np.testing.assert_array_equal(out, onnx + bias.reshape(1, -1, 1, 1))
    # Per-channel activation zero point along C.
    x_zp = rng.integers(120, 135, size=x_shape[1])
    out = ref.conv2d(x, w, None, x_zp, 0, strides, pads, dilations, group)
    xi = x.astype(np.float64) - x_zp.reshape(1, -1, 1, 1)
    expected = _conv_brute(xi, w.astype(np.float64), strides, pads, dilations, group)
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_conv2d_random_geometry(data: st.DataObject) -> None:
    group = data.draw(st.sampled_from([1, 2, 3]))
    cg, mg = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    strides = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    dilations = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)))
    pads = data.draw(st.tuples(*[st.integers(0, 2)] * 4))
    h = data.draw(st.integers((kh - 1) * dilations[0] + 1, 8))
    w = data.draw(st.integers((kw - 1) * dilations[1] + 1, 8))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(2, cg * group, h, w), dtype=np.int8)
    wt = rng.integers(-128, 128, size=(mg * group, cg, kh, kw), dtype=np.int8)
    x_zp, w_zp = int(rng.integers(-128, 128)), int(rng.integers(-10, 10))
    out = ref.conv2d(x, wt, None, x_zp, w_zp, strides, pads, dilations, group)
    expected = _conv_brute(x.astype(np.float64) - x_zp, wt.astype(np.float64) - w_zp, strides,
                           pads, dilations, group)
    np.testing.assert_array_equal(out, expected)


def test_conv2d_saturates_and_checks_groups() -> None:
    x = np.full((1, 1, 3, 3), 127, np.int8)
    w = np.full((1, 1, 3, 3), 127, np.int8)
    bias = np.array([INT32_MAX], np.int32)
    out = ref.conv2d(x, w, bias, 0, 0, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert out.tolist() == [[[[INT32_MAX]]]]
    with pytest.raises(ValueError, match="groups"):
        ref.conv2d(np.zeros((1, 3, 4, 4), np.int8), np.zeros((4, 2, 1, 1), np.int8), None, 0,
                   0, (1, 1), (0, 0, 0, 0), (1, 1), 2)


CONV_TRANSPOSE_CASES = [
    # (N, C, H, W), (M, KH, KW), strides, pads, dilations, group, output_padding
    ((2, 3, 4, 5), (4, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0)),
    ((1, 4, 3, 4), (6, 3, 2), (2, 2), (1, 0, 1, 1), (1, 1), 2, (1, 0)),
    ((1, 4, 5, 3), (4, 2, 3), (2, 3), (0, 1, 1, 0), (2, 1), 4, (1, 2)),
    ((2, 2, 3, 3), (3, 4, 4), (2, 2), (1, 1, 1, 1), (1, 1), 1, (0, 0)),
]


def _conv_transpose_brute(xi: np.ndarray, wi: np.ndarray, strides: Sequence[int],
                          pads: Sequence[int], dilations: Sequence[int], group: int,
                          output_padding: Sequence[int]) -> np.ndarray:
    n, c, h, w = xi.shape
    _, mg, kh, kw = wi.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    oh = sh * (h - 1) + output_padding[0] + dh * (kh - 1) + 1 - pt - pb
    ow = sw * (w - 1) + output_padding[1] + dw * (kw - 1) + 1 - pl - pr
    out = np.zeros((n, mg * group, oh, ow))
    cg = c // group
    for ci in range(c):
        g = ci // cg
        for ih in range(h):
            for iw in range(w):
                for a in range(kh):
                    for b in range(kw):
                        oy, ox = ih * sh + a * dh - pt, iw * sw + b * dw - pl
                        if 0 <= oy < oh and 0 <= ox < ow:
                            out[:, g * mg:(g + 1) * mg, oy, ox] += xi[:, ci, ih, iw, None] \
                                * wi[ci, :, a, b]
    return out


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES)
def test_conv_transpose2d_matches_float64(case: tuple) -> None:
    x_shape, (m, kh, kw), strides, pads, dilations, group, output_padding = case
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, size=x_shape, dtype=np.int8)
    w = rng.integers(-127, 128, size=(x_shape[1], m // group, kh, kw), dtype=np.int8)
    w_zp = rng.integers(-3, 4, size=m)
    bias = rng.integers(-1000, 1000, size=m, dtype=np.int32)
    out = ref.conv_transpose2d(x, w, bias, -2, w_zp, strides, pads, dilations, group,
                               output_padding)
    assert out.dtype == np.int32
    xi = x.astype(np.float64) + 2
    # Output channel g * M/g + j of weight column j in group g.
    wi = w.astype(np.float64).reshape(group, -1, m // group, kh, kw) \
        - w_zp.reshape(group, 1, m // group, 1, 1)
    wi = wi.reshape(w.shape)
    expected = _conv_transpose_brute(xi, wi, strides, pads, dilations, group, output_padding)
    np.testing.assert_array_equal(out, expected + bias.reshape(1, -1, 1, 1))
    # A zero point per column of w (axis 1) is shared by the groups.
    column_zp = w_zp[:m // group]
    shared = ref.conv_transpose2d(x, w, None, -2, column_zp, strides, pads, dilations, group,
                                  output_padding)
    np.testing.assert_array_equal(shared, ref.conv_transpose2d(
        x, w, None, -2, np.tile(column_zp, group), strides, pads, dilations, group,
        output_padding))
    onnx = run_onnx("ConvTranspose", [xi.astype(np.float32), wi.astype(np.float32)],
                    {"strides": strides, "pads": pads, "dilations": dilations, "group": group,
                     "output_padding": output_padding})
    np.testing.assert_array_equal(out, onnx + bias.reshape(1, -1, 1, 1))


def test_matmul_matches_float64() -> None:
    rng = np.random.default_rng(RNG_SEED)
    a = rng.integers(-128, 128, size=(2, 3, 5, 7), dtype=np.int8)
    b = rng.integers(0, 256, size=(3, 7, 4), dtype=np.uint8)
    b_zp = rng.integers(120, 136, size=4)
    bias = rng.integers(-500, 500, size=4, dtype=np.int32)
    out = ref.matmul(a, b, bias, 3, b_zp)
    assert out.dtype == np.int32 and out.shape == (2, 3, 5, 4)
    expected = (a.astype(np.float64) - 3) @ (b.astype(np.float64) - b_zp) + bias
    np.testing.assert_array_equal(out, expected)
    # 1-D b: a matrix-vector product.
    v = rng.integers(-128, 128, size=7, dtype=np.int8)
    out = ref.matmul(a, v, None, 0, 5)
    np.testing.assert_array_equal(out, a.astype(np.float64) @ (v.astype(np.float64) - 5))
    with pytest.raises(ValueError, match="per-column"):
        ref.matmul(a, v, None, 0, np.zeros(7, np.int64))


def test_matmul_int64_path_when_float_is_not_exact() -> None:
    rng = np.random.default_rng(RNG_SEED)
    a = rng.integers(-(2**26), 2**26, size=(3, 64))
    b = rng.integers(-(2**26), 2**26, size=(64, 2))
    # 64 * 2^52 > 2^53: the float64 product would round; the int64 one must be exact.
    expected = a.astype(object) @ b.astype(object)
    np.testing.assert_array_equal(ref._int_matmul(a, b), expected.astype(np.int64))
    np.testing.assert_array_equal(
        ref.matmul(a, b), np.clip(expected, INT32_MIN, INT32_MAX).astype(np.int64))


# --------------------------------------------------------------------------------------
# Pooling and reductions
# --------------------------------------------------------------------------------------

POOL_CASES = [
    # kernel, strides, pads, dilations, ceil_mode
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((2, 3), (2, 1), (0, 1, 1, 2), (1, 1), True),
    ((2, 2), (3, 3), (0, 0, 0, 0), (1, 1), True),
    ((3, 2), (1, 2), (2, 1, 0, 1), (2, 2), False),
    ((2, 2), (2, 2), (1, 1, 1, 1), (2, 1), True),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_brute_force(case: tuple) -> None:
    kernel, strides, pads, dilations, ceil_mode = case
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, size=(2, 3, 8, 7), dtype=np.int8)
    out = ref.max_pool2d(x, kernel, strides, pads, dilations, ceil_mode)
    assert out.dtype == np.int8
    h, w = x.shape[2:]
    oh = window_output_size(h, kernel[0], strides[0], pads[0], pads[2], dilations[0], ceil_mode)
    ow = window_output_size(w, kernel[1], strides[1], pads[1], pads[3], dilations[1], ceil_mode)
    expected = np.empty((2, 3, oh, ow), np.int8)
    for i in range(oh):
        for j in range(ow):
            taps = [(i * strides[0] - pads[0] + a * dilations[0],
                     j * strides[1] - pads[1] + b * dilations[1])
                    for a in range(kernel[0]) for b in range(kernel[1])]
            inside = [(y, z) for y, z in taps if 0 <= y < h and 0 <= z < w]
            expected[:, :, i, j] = np.max([x[:, :, y, z] for y, z in inside], axis=0)
    np.testing.assert_array_equal(out, expected)
    # Negative data: the padding (never a winner) must not leak a 0.
    neg = np.full((1, 1, 4, 4), -100, np.int8)
    assert (ref.max_pool2d(neg, kernel, strides, pads, dilations, ceil_mode) == -100).all()


@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[3] == (1, 1)])
@pytest.mark.parametrize("include_pad", [False, True])
def test_avg_pool2d_matches_onnxruntime(case: tuple, include_pad: bool) -> None:
    kernel, strides, pads, _, ceil_mode = case
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(0, 256, size=(2, 3, 8, 7), dtype=np.uint8)
    x_zp = 117
    fbits = 6
    out = ref.avg_pool2d(x, x_zp, kernel, strides, pads, include_pad, fbits, ceil_mode)
    assert out.dtype == np.int32
    xi = x.astype(np.float32) - x_zp
    onnx = run_onnx("AveragePool", [xi], {
        "kernel_shape": kernel, "strides": strides, "pads": pads,
        "count_include_pad": int(include_pad), "ceil_mode": int(ceil_mode)})
    assert out.shape == onnx.shape
    # Exactly the rounded mean: recover the window count from the float mean.
    scaled = onnx.astype(np.float64) * 2**fbits
    assert np.abs(out - scaled).max() <= 0.5 + 1e-3
    # Brute-force sums and counts with exact ties.
    h, w = x.shape[2:]
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            y0, z0 = i * strides[0] - pads[0], j * strides[1] - pads[1]
            ys = [y for y in range(y0, y0 + kernel[0]) if 0 <= y < h]
            zs = [z for z in range(z0, z0 + kernel[1]) if 0 <= z < w]
            if include_pad:
                count = (min(y0 + kernel[0], h + pads[2]) - y0) * (min(z0 + kernel[1], w + pads[3])
                                                                   - z0)
            else:
                count = len(ys) * len(zs)
            total = xi[:, :, ys][:, :, :, zs].astype(np.int64).sum(axis=(2, 3))
            expected = [[round_half_away(Fraction(int(t) << fbits, count)) for t in row]
                        for row in total]
            assert out[:, :, i, j].tolist() == expected


def test_avg_pool2d_per_channel_zero_point_and_ties() -> None:
    x = np.array([[[[1, 2]], [[-1, -2]]]], dtype=np.int8)  # (1, 2, 1, 2)
    # Means 1.5 and -1.5 round away from zero; then channel zero points 1 and -1.
    out = ref.avg_pool2d(x, 0, (1, 2), (1, 1), (0, 0, 0, 0), False, 0)
    assert out.ravel().tolist() == [2, -2]
    out = ref.avg_pool2d(x, np.array([1, -1]), (1, 2), (1, 1), (0, 0, 0, 0), False, 1)
    assert out.ravel().tolist() == [1, -1]  # means 0.5, -0.5 in units of 1/2


@pytest.mark.parametrize("axes, keepdims", [((1,), True), ((-1, 2), False), (None, False),
                                            ((0, 3), True)])
def test_reduce_mean(axes: tuple[int, ...] | None, keepdims: bool) -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, size=(2, 3, 4, 5), dtype=np.int8)
    fbits = 5
    out = ref.reduce_mean(x, -7, axes, keepdims, fbits)
    assert out.dtype == np.int32
    xi = x.astype(np.int64) + 7
    axes_t = tuple(range(4)) if axes is None else tuple(a % 4 for a in axes)
    total = xi.sum(axis=axes_t, keepdims=keepdims)
    count = math.prod(x.shape[a] for a in axes_t)
    expected = np.array([round_half_away(Fraction(int(t) << fbits, count))
                         for t in total.ravel().tolist()]).reshape(total.shape)
    np.testing.assert_array_equal(out, expected)
    mean = xi.astype(np.float64).mean(axis=axes_t, keepdims=keepdims)
    assert np.abs(out / 2**fbits - mean).max() <= 2 ** -(fbits + 1)


# --------------------------------------------------------------------------------------
# Softmax and layernorm
# --------------------------------------------------------------------------------------


def test_softmax_exp_table() -> None:
    table = ref.softmax_exp_table(0.05, 8, 20)
    assert table.dtype == np.int32 and table.shape == (256,)
    assert table[0] == 2**20
    assert (np.diff(table) <= 0).all()
    assert table[20] == round(math.exp(-1.0) * 2**20)
    with pytest.raises(ValueError):
        ref.softmax_exp_table(0.0, 8)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_matches_float(axis: int) -> None:
    rng = np.random.default_rng(RNG_SEED)
    scale, fbits = 0.06, 15
    x = rng.integers(-128, 128, size=(4, 10, 12), dtype=np.int8)
    table = ref.softmax_exp_table(scale, 8)
    out = ref.softmax(x, axis, table, fbits)
    assert out.dtype == np.int32
    sums = out.sum(axis=axis)
    assert np.abs(sums - 2**fbits).max() <= x.shape[axis] / 2
    z = scale * x.astype(np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    expected = e / e.sum(axis=axis, keepdims=True)
    assert np.abs(out / 2**fbits - expected).max() <= 2**-fbits + 1e-4


def test_softmax_exact_values_and_short_table() -> None:
    x = np.array([[3, 3, 1, -120]], dtype=np.int8)
    table = np.array([8, 4, 2, 1, 0], dtype=np.int32)
    # d = 0, 0, 2, 123 -> e = 8, 8, 2, 0 (past the table: last entry); sum 18.
    out = ref.softmax(x, -1, table, 4)
    assert out.tolist() == [[round_half_away(Fraction(8 << 4, 18))] * 2
                            + [round_half_away(Fraction(2 << 4, 18)), 0]]
    # Rows with one value: the whole mass.
    assert ref.softmax(np.array([[5]], np.int8), 1, table, 10).tolist() == [[1024]]


def _layernorm_float(x: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def test_layernorm_matches_float() -> None:
    rng = np.random.default_rng(RNG_SEED)
    s, eps, fbits, n = 0.04, 1e-3, 12, 64
    x = rng.integers(-128, 128, size=(3, 5, n), dtype=np.int8)
    x_zp = 9
    units = ref.layernorm_epsilon_units(eps, s, n)
    assert units == round(eps * n * n / (s * s))
    one = np.ones(n, np.int8)
    y = ref.layernorm(x, x_zp, one, 0, None, units, fbits)
    assert y.dtype == np.int32
    expected = _layernorm_float(s * (x.astype(np.float64) - x_zp), eps)
    err = np.abs(y / 2**fbits - expected)
    assert err.max() <= 2**-fbits + 2e-3 * np.abs(expected).max()
    # gamma and beta: out = y * (gamma - gamma_zp) + beta, exactly.
    gamma = rng.integers(0, 256, size=n, dtype=np.uint8)
    gamma_zp = rng.integers(100, 130, size=n)
    beta = rng.integers(-(2**20), 2**20, size=n, dtype=np.int32)
    out = ref.layernorm(x, x_zp, gamma, gamma_zp, beta, units, fbits)
    np.testing.assert_array_equal(
        out, y.astype(np.int64) * (gamma.astype(np.int64) - gamma_zp) + beta)


def test_layernorm_exact_small_case() -> None:
    # x = [1, 2, 3, 6]: t = 12, d = 4x - 12 = [-8, -4, 0, 12], V = 224 // 4 = 56.
    x = np.array([[1, 2, 3, 6]], dtype=np.int8)
    out = ref.layernorm(x, 0, np.ones(4, np.int8), 0, None, 8, 4)
    den = math.isqrt(56 + 8)  # 8
    assert out.tolist() == [[round_half_away(Fraction(d << 4, den)) for d in (-8, -4, 0, 12)]]


def test_layernorm_constant_rows() -> None:
    x = np.full((2, 8), 7, np.int8)
    beta = np.arange(8, dtype=np.int32)
    gamma = np.full(8, 3, np.int8)
    # d = 0 everywhere: y = 0 (den = isqrt(eps); with eps 0, den = 0 is defined as y = 0).
    for units in (0, 5):
        out = ref.layernorm(x, 0, gamma, 0, beta, units, 8)
        np.testing.assert_array_equal(out, np.broadcast_to(beta, (2, 8)))


def test_layernorm_epsilon_units_edge_cases() -> None:
    assert ref.layernorm_epsilon_units(0.0, 0.1, 16) == 0
    assert ref.layernorm_epsilon_units(1e300, 1e-300, 1024) == 2**63 - 1
    # A saturated epsilon does not overflow V + eps: the output is then ~0.
    x = np.array([[-100, 100]], np.int8)
    out = ref.layernorm(x, 0, np.ones(2, np.int8), 0, None, 2**63 - 1, 8)
    assert out.tolist() == [[0, 0]]
    with pytest.raises(ValueError):
        ref.layernorm_epsilon_units(1e-5, 0.0, 4)


def test_fraction_bits_overflow_is_an_error() -> None:
    x = np.full((1, 1, 2, 2), 2**31 - 1, np.int64)
    with pytest.raises(ValueError, match="overflow"):
        ref.reduce_mean(x, -(2**31), None, False, 31)
    with pytest.raises(ValueError, match="overflow"):
        ref.avg_pool2d(x, 0, (2, 2), (1, 1), (0, 0, 0, 0), False, 40)
    with pytest.raises(ValueError, match="overflow"):
        ref.softmax(x, 1, np.array([2**30], np.int32), 40)


def test_layernorm_rejects_int64_overflow() -> None:
    x = np.array([[-(2**31), 2**31 - 1] * 4], dtype=np.int64)
    with pytest.raises(ValueError, match="overflows"):
        ref.layernorm(x, 0, np.ones(8, np.int8), 0, None, 0, 30)


# --------------------------------------------------------------------------------------
# Resize
# --------------------------------------------------------------------------------------

RESIZE_TRANSFORMS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]


def _onnx_resize(x: np.ndarray, sizes: Sequence[int], mode: str, transform: str,
                 nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    return run_onnx("Resize", [x, None, None, np.array(sizes, np.int64)], {
        "mode": mode, "coordinate_transformation_mode": transform,
        "nearest_mode": nearest_mode})


@pytest.mark.parametrize("transform", RESIZE_TRANSFORMS + ["tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil"])
def test_resize_nearest_matches_onnxruntime(transform: str, nearest_mode: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, size=(1, 2, 5, 4), dtype=np.int8)
    for sizes in ((1, 2, 10, 8), (1, 2, 3, 7), (1, 2, 1, 4)):
        out = ref.resize_nearest(x, sizes, transform, nearest_mode)
        assert out.dtype == np.int8
        onnx = _onnx_resize(x.astype(np.float32), sizes, "nearest", transform, nearest_mode)
        np.testing.assert_array_equal(out, onnx, err_msg=str(sizes))


@pytest.mark.parametrize("transform", RESIZE_TRANSFORMS)
def test_resize_bilinear_matches_onnxruntime(transform: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(0, 256, size=(2, 3, 5, 6), dtype=np.uint8)
    x_zp = 128
    xi = x.astype(np.float32) - x_zp
    fbits = 12
    for sizes in ((2, 3, 7, 9), (2, 3, 3, 4), (2, 3, 5, 11), (2, 3, 1, 6)):
        out = ref.resize_bilinear(x, x_zp, sizes, transform, fbits)
        assert out.dtype == np.int32
        onnx = _onnx_resize(xi, sizes, "linear", transform).astype(np.float64)
        # Each axis's weights are off by at most 2^-(F+1): two axes, |x - zp| <= 128.
        err = np.abs(out / 2 ** (2 * fbits) - onnx)
        assert err.max() <= 2 * 128 * 2**-fbits, sizes


def test_resize_bilinear_exact_for_dyadic_weights() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, size=(1, 2, 4, 5), dtype=np.int8)
    # Scale 2 with half_pixel: fractions 0.25 / 0.75, exact with F >= 2.
    for fbits in (2, 7):
        out = ref.resize_bilinear(x, 0, (1, 2, 8, 10), "half_pixel", fbits)
        onnx = _onnx_resize(x.astype(np.float32), (1, 2, 8, 10), "linear", "half_pixel")
        np.testing.assert_array_equal(out, onnx.astype(np.float64) * 2 ** (2 * fbits))
    # A constant input stays constant: weights sum to 2^F on every axis.
    const = np.full((1, 1, 3, 3), 50, np.uint8)
    out = ref.resize_bilinear(const, np.array([10]), (1, 1, 7, 5), "align_corners", 6)
    assert (out == 40 * 2**12).all()
    # Same shape: untouched, in units of 2^-2F.
    np.testing.assert_array_equal(ref.resize_bilinear(x, 1, x.shape, "half_pixel", 3),
                                  (x.astype(np.int64) - 1) * 64)
    with pytest.raises(ValueError, match="H and W"):
        ref.resize_bilinear(x, 0, (1, 4, 4, 5), "half_pixel", 3)
