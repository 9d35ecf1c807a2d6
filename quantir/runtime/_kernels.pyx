# cython: language_level=3, boundscheck=False, wraparound=True, cdivision=True, initializedcheck=False
"""Cython kernels of the integer program; `reference.py` is their specification.

Every public function has the signature of the reference function of the same name
and returns the same integers on every input (tests/unit/test_int_kernels.py checks
this with hypothesis). A fast path covers the inputs the integer program produces
(8/16/32-bit storage, int zero points, contiguous or copyable layouts); anything else
(wide or exotic dtypes, general broadcasting, invalid arguments) is handed to the
reference itself, so results, and the errors raised, are the spec's by construction.
The hot loops are C in _int_simd.h.

Exactness of the products (conv2d, matmul). With A = max |x - x_zp| and B = max |w -
w_zp| (from the storage ranges, or measured while an operand is converted), a sum of
K products has partial sums of magnitude <= K * A * B in any order:

* int16 GEMM (AVX2 vpmaddwd, 16 multiply-adds per instruction, twice a float32 FMA):
  when A, B <= 32767 (8-bit operands) and K * A * B < 2^31, int16 operands and int32
  sums are exact. The usual path.
* float BLAS (numpy matmul) otherwise: float32 when K * A * B <= 2^24, float64 when
  <= 2^53, with K split into chunks that each meet the bound, chunk results summed in
  int64. Sums past int32 are then saturated as the spec does (bias added first).
* depthwise: a direct loop, float32 FMA when kh * kw * A * B <= 2^24 (every product
  and partial sum an integer float32 holds), else int32 when < 2^31, else the GEMM.

Fusion. `Epilogue` holds stages (requant, clamp, lookup, add/sub/mul with a broadcast
operand) that run on int32 blocks of a product's result or of any integer tensor and
store the final storage type, so a conv + requant + lookup writes its 8-bit output
without an int32 (or 16-bit) intermediate tensor. `ConvPlan` / `MatmulPlan` keep the
converted (packed) weights of one op; the executor builds them once per program (see
int_kernels.py). Nothing is cached between calls: every call allocates its own
buffers, so plans can run concurrently.
"""

import math
import operator

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc

from quantir.runtime import reference

cnp.import_array()


cdef extern from "_int_simd.h" nogil:
    enum:
        QI_I8, QI_U8, QI_I16, QI_U16, QI_I32, QI_I64, QI_F32, QI_F64
        QI_REQUANT, QI_CLAMP, QI_LOOKUP, QI_ADD, QI_SUB, QI_RSUB, QI_MUL
        QI_SCALAR, QI_ROW, QI_COL, QI_FLAT
        QI_TFLITE, QI_SINGLE, QI_TOSA

    ctypedef struct qi_stage:
        int kind
        int pattern
        int rounding
        int operand
        const int64_t *mult
        const int64_t *shift
        const int64_t *zp_in
        const int64_t *zp_out
        int64_t lo, hi
        const void *table
        int64_t table_min, table_size
        int table_type
        int64_t a_zp, b_zp
        const int32_t *down_m
        const int32_t *down_shift
        const int32_t *down_add
        const int32_t *down_t32
        const int32_t *down_zo

    int qi_epilogue(const void *src, int src_type, Py_ssize_t src_stride, void *dst,
                    int dst_type, Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols,
                    Py_ssize_t row0, Py_ssize_t rdiv, Py_ssize_t channels, Py_ssize_t col0,
                    Py_ssize_t flat0, Py_ssize_t flat_stride, const qi_stage *stages,
                    int nstages, const int32_t *const *operands)

    int64_t qi_to_f32_i8(const int8_t *src, float *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f32_u8(const uint8_t *src, float *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f32_i16(const int16_t *src, float *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f32_u16(const uint16_t *src, float *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f64_i8(const int8_t *src, double *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f64_u8(const uint8_t *src, double *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f64_i16(const int16_t *src, double *dst, Py_ssize_t n, int64_t zp)
    int64_t qi_to_f64_u16(const uint16_t *src, double *dst, Py_ssize_t n, int64_t zp)

    int64_t qi_cols_f32_i8(const int8_t *src, float *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f32_u8(const uint8_t *src, float *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f32_i16(const int16_t *src, float *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f32_u16(const uint16_t *src, float *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f64_i8(const int8_t *src, double *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f64_u8(const uint8_t *src, double *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f64_i16(const int16_t *src, double *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)
    int64_t qi_cols_f64_u16(const uint16_t *src, double *dst, Py_ssize_t rows, Py_ssize_t cols, const int64_t *zp)

    int64_t qi_im2col_f32_i8(const int8_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, float *dst)
    int64_t qi_im2col_f32_u8(const uint8_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, float *dst)
    int64_t qi_im2col_f32_i16(const int16_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, float *dst)
    int64_t qi_im2col_f32_u16(const uint16_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, float *dst)
    int64_t qi_im2col_f64_i8(const int8_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, double *dst)
    int64_t qi_im2col_f64_u8(const uint8_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, double *dst)
    int64_t qi_im2col_f64_i16(const int16_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, double *dst)
    int64_t qi_im2col_f64_u16(const uint16_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, double *dst)

    void qi_acc_f32(int64_t *acc, const float *f, Py_ssize_t n)
    void qi_acc_f64(int64_t *acc, const double *f, Py_ssize_t n)

    void qi_plane_i8(const int8_t *x, Py_ssize_t h, Py_ssize_t w, int32_t zp, int32_t *plane, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pt, Py_ssize_t pl)
    void qi_plane_u8(const uint8_t *x, Py_ssize_t h, Py_ssize_t w, int32_t zp, int32_t *plane, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pt, Py_ssize_t pl)
    void qi_plane_i16(const int16_t *x, Py_ssize_t h, Py_ssize_t w, int32_t zp, int32_t *plane, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pt, Py_ssize_t pl)
    void qi_plane_u16(const uint16_t *x, Py_ssize_t h, Py_ssize_t w, int32_t zp, int32_t *plane, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pt, Py_ssize_t pl)
    void qi_depthwise(const int32_t *plane, Py_ssize_t ph, Py_ssize_t pw, const int32_t *wt,
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
                      Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow, int32_t *acc, int32_t *run,
                      int32_t *phases, Py_ssize_t qw)

    int qi_gemm16(const int16_t *a, Py_ssize_t rows, Py_ssize_t kp, const int16_t *bp,
                  Py_ssize_t panels, int32_t *c)
    int qi_has_avx2()
    void qi_pack16(const int16_t *src, Py_ssize_t k, Py_ssize_t n, Py_ssize_t ld, int16_t *bp)
    int64_t qi_im2col_i16_i8(const int8_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, int16_t *dst)
    int64_t qi_im2col_i16_u8(const uint8_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, int16_t *dst)
    int64_t qi_im2col_i16_i16(const int16_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, int16_t *dst)
    int64_t qi_im2col_i16_u16(const uint16_t *x, Py_ssize_t channels, Py_ssize_t h, Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1, int16_t *dst)
    void qi_to_i16_i8(const int8_t *src, Py_ssize_t rows, Py_ssize_t n, int32_t zp, int16_t *dst, Py_ssize_t kpad)
    void qi_to_i16_u8(const uint8_t *src, Py_ssize_t rows, Py_ssize_t n, int32_t zp, int16_t *dst, Py_ssize_t kpad)
    void qi_to_i16_i16(const int16_t *src, Py_ssize_t rows, Py_ssize_t n, int32_t zp, int16_t *dst, Py_ssize_t kpad)
    void qi_to_i16_u16(const uint16_t *src, Py_ssize_t rows, Py_ssize_t n, int32_t zp, int16_t *dst, Py_ssize_t kpad)

    void qi_dw_phases_i8(const int8_t *x, Py_ssize_t h, Py_ssize_t w, float zp, Py_ssize_t ph, Py_ssize_t qw, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, float *phases)
    void qi_dw_phases_u8(const uint8_t *x, Py_ssize_t h, Py_ssize_t w, float zp, Py_ssize_t ph, Py_ssize_t qw, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, float *phases)
    void qi_dw_phases_i16(const int16_t *x, Py_ssize_t h, Py_ssize_t w, float zp, Py_ssize_t ph, Py_ssize_t qw, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, float *phases)
    void qi_dw_phases_u16(const uint16_t *x, Py_ssize_t h, Py_ssize_t w, float zp, Py_ssize_t ph, Py_ssize_t qw, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, float *phases)
    void qi_dw_taps(const float *phases, Py_ssize_t ph, Py_ssize_t qw, const float *wt, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow, float *acc, float *run)

    int qi_softmax_i8(const int8_t *x, Py_ssize_t rows, Py_ssize_t n, const int32_t *table, int64_t size, int f, int32_t *out, int32_t *e, int64_t *emax)
    int qi_softmax_u8(const uint8_t *x, Py_ssize_t rows, Py_ssize_t n, const int32_t *table, int64_t size, int f, int32_t *out, int32_t *e, int64_t *emax)
    int qi_softmax_i16(const int16_t *x, Py_ssize_t rows, Py_ssize_t n, const int32_t *table, int64_t size, int f, int32_t *out, int32_t *e, int64_t *emax)
    int qi_softmax_u16(const uint16_t *x, Py_ssize_t rows, Py_ssize_t n, const int32_t *table, int64_t size, int f, int32_t *out, int32_t *e, int64_t *emax)
    int qi_softmax_i32(const int32_t *x, Py_ssize_t rows, Py_ssize_t n, const int32_t *table, int64_t size, int f, int32_t *out, int32_t *e, int64_t *emax)

    int64_t qi_ln_stats_i8(const int8_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, int64_t *t)
    int64_t qi_ln_stats_u8(const uint8_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, int64_t *t)
    int64_t qi_ln_stats_i16(const int16_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, int64_t *t)
    int64_t qi_ln_stats_u16(const uint16_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, int64_t *t)
    int64_t qi_ln_stats_i32(const int32_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, int64_t *t)
    void qi_ln_rows_i8(const int8_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, const int64_t *t, int64_t d_bits, int64_t f, int64_t eps, const int64_t *g, const int64_t *beta, int32_t *out, int64_t *d)
    void qi_ln_rows_u8(const uint8_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, const int64_t *t, int64_t d_bits, int64_t f, int64_t eps, const int64_t *g, const int64_t *beta, int32_t *out, int64_t *d)
    void qi_ln_rows_i16(const int16_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, const int64_t *t, int64_t d_bits, int64_t f, int64_t eps, const int64_t *g, const int64_t *beta, int32_t *out, int64_t *d)
    void qi_ln_rows_u16(const uint16_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, const int64_t *t, int64_t d_bits, int64_t f, int64_t eps, const int64_t *g, const int64_t *beta, int32_t *out, int64_t *d)
    void qi_ln_rows_i32(const int32_t *x, Py_ssize_t rows, Py_ssize_t n, int64_t zp, const int64_t *t, int64_t d_bits, int64_t f, int64_t eps, const int64_t *g, const int64_t *beta, int32_t *out, int64_t *d)


# --------------------------------------------------------------------------------------
# Types and small helpers
# --------------------------------------------------------------------------------------

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
F32_EXACT = 2**24
"""Every integer of magnitude <= 2^24 is a float32."""
F64_EXACT = 2**53
ZP_LIMIT = 2**20
"""Zero points of the fast paths: |x - zp| then stays far inside int32 and float32."""

_CODES = {np.dtype(np.int8): QI_I8, np.dtype(np.uint8): QI_U8, np.dtype(np.int16): QI_I16,
          np.dtype(np.uint16): QI_U16, np.dtype(np.int32): QI_I32}
_NARROW = (QI_I8, QI_U8, QI_I16, QI_U16)  # storage types of conv / matmul operands
_MODES = {"tflite": QI_TFLITE, "single": QI_SINGLE, "tosa": QI_TOSA}
PATTERNS = {"scalar": QI_SCALAR, "row": QI_ROW, "col": QI_COL, "flat": QI_FLAT}


cdef int _code(object dtype):
    """The QI_* code of a storage dtype the fast paths handle, else -1."""
    return _CODES.get(dtype, -1)


cdef object _int_value(object value):
    """value as a Python int if it is a 0-d integer (array or scalar), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        return int(value)
    return None


cdef object _int_array(object value):
    """value as an int64 array if it is an integer array or int (not bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        if not -2**63 <= int(value) < 2**63:
            return None
        return np.asarray(value, dtype=np.int64)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.dtype == np.uint64:
        return None
    return arr.astype(np.int64, copy=False)


cdef object _zero_point(object value, Py_ssize_t size):
    """A zero point as an int64 array of `size` entries (an int or a 1-D array of that
    size), when every entry is inside the fast paths' limit; else None."""
    arr = _int_array(value)
    if arr is None or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != size):
        return None
    if arr.size and int(np.abs(arr).max()) > ZP_LIMIT:
        return None
    return np.ascontiguousarray(np.broadcast_to(arr, (size,)), dtype=np.int64)


def int32_operand(value):
    """value as a contiguous int32 array when every entry fits int32, else None."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.dtype == np.uint64:
        return None
    if arr.dtype.itemsize > 4 or arr.dtype == np.uint32:
        if arr.size and (int(arr.min()) < INT32_MIN or int(arr.max()) > INT32_MAX):
            return None
    return np.ascontiguousarray(arr, dtype=np.int32)


def _storage_bound(object dtype, object zp):
    """max |v - zp| over every value v of the integer dtype and every zero point."""
    info = np.iinfo(dtype)
    zps = np.asarray(zp, dtype=np.int64).reshape(-1)
    if zps.size == 0:
        return 0
    return max(int(info.max) - int(zps.min()), int(zps.max()) - int(info.min))


def _chunks(Py_ssize_t k, object bound, object limit):
    """Balanced K chunks whose products, each K_c * bound <= limit, are exact."""
    per = limit // max(int(bound), 1)
    if per >= k:
        return [(0, k)]
    if per < 1:
        return None
    # (ceilings written for non-negative operands: cdivision truncates)
    count = (k + per - 1) // per
    size = (k + count - 1) // count
    return [(start, min(k, start + size)) for start in range(0, k, size)]


# --------------------------------------------------------------------------------------
# Epilogue: stages on int32 blocks
# --------------------------------------------------------------------------------------


class EpilogueError(Exception):
    """A stage met an input outside its domain; the caller re-runs the spec to raise."""


cdef class Epilogue:
    """Stages applied to int32 blocks, then a store in the output type.

    `specs` is a list of tuples (arrays are int64 unless said, one entry per channel
    of the stage's pattern, or one entry for "scalar"):

        ("requant", rounding, pattern, multiplier, shift, zp_in, zp_out, qmin, qmax)
        ("clamp", low, high)
        ("lookup", table, storage_min)          table: int32-valued 1-D
        ("add" | "sub" | "rsub", pattern, operand)     operand: index of an int32 array
        ("mul", pattern, operand, a_zp, b_zp)           given to each call

    sub is x - other, rsub other - x, mul (x - a_zp) * (other - b_zp); each saturates
    to int32 as reference.add / sub / mul. Patterns name how the parameters or the
    operand vary over a [rows, cols] view: "scalar", "row" (the channel of the row),
    "col" (the column), "flat" (every element; operands only).
    """

    cdef qi_stage *stages
    cdef int count
    cdef list keep
    cdef readonly object dtype
    cdef readonly int code
    cdef readonly int operands
    cdef list needs  # (operand index, pattern) of the binary stages

    def __cinit__(self, list specs, object dtype):
        self.count = len(specs)
        self.stages = <qi_stage *> malloc(max(self.count, 1) * sizeof(qi_stage))
        if self.stages == NULL:
            raise MemoryError()
        self.keep = []
        self.dtype = np.dtype(dtype)
        self.code = _code(self.dtype)
        if self.code < 0:
            raise ValueError(f"no epilogue stores {self.dtype}")
        self.operands = 0
        self.needs = []
        cdef int i
        for i in range(self.count):
            self._fill(&self.stages[i], specs[i])

    def __dealloc__(self):
        free(self.stages)

    cdef const int64_t *_array(self, object values):
        arr = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
        self.keep.append(arr)
        return <const int64_t *> cnp.PyArray_DATA(arr)

    cdef const int32_t *_array32(self, object values):
        arr = np.ascontiguousarray(values, dtype=np.int32).reshape(-1)
        self.keep.append(arr)
        return <const int32_t *> cnp.PyArray_DATA(arr)

    cdef void _down(self, qi_stage *s, object mult, object shift, object zp_in,
                    object zp_out) except *:
        """The down_* arrays of a `single` requant whose right shifts are all >= 32
        (the per-column AVX2 path), else NULL."""
        s.down_m = s.down_shift = s.down_add = s.down_t32 = s.down_zo = NULL
        total = 31 - np.asarray(shift, dtype=np.int64).reshape(-1)
        zo = np.asarray(zp_out, dtype=np.int64).reshape(-1)
        if s.rounding != QI_SINGLE or s.pattern != QI_COL or int(total.min()) < 32 \
                or np.any(np.asarray(zp_in) != 0) or int(np.abs(zo).max()) > 65536:
            return
        s.down_m = self._array32(mult)
        s.down_shift = self._array32(total - 32)
        s.down_add = self._array32(np.where(total >= 33, np.left_shift(1, np.maximum(
            total - 33, 0)), 0))
        s.down_t32 = self._array32(np.where(total == 32, -1, 0))
        s.down_zo = self._array32(zo)

    cdef void _fill(self, qi_stage *s, tuple spec) except *:
        kind = spec[0]
        s.operand = 0
        s.pattern = QI_SCALAR
        s.down_m = s.down_shift = s.down_add = s.down_t32 = s.down_zo = NULL
        s.lo = INT32_MIN
        s.hi = INT32_MAX
        if kind == "requant":
            _, rounding, pattern, mult, shift, zp_in, zp_out, lo, hi = spec
            s.kind = QI_REQUANT
            s.rounding = _MODES[rounding]
            s.pattern = PATTERNS[pattern]
            s.mult = self._array(mult)
            s.shift = self._array(shift)
            s.zp_in = self._array(zp_in)
            s.zp_out = self._array(zp_out)
            s.lo, s.hi = lo, hi
            self._down(s, mult, shift, zp_in, zp_out)
        elif kind == "clamp":
            s.kind = QI_CLAMP
            s.lo, s.hi = spec[1], spec[2]
        elif kind == "lookup":
            table = np.asarray(spec[1])
            if _code(table.dtype) < 0:  # stored narrow where it can be (cache footprint)
                table = table.astype(np.int32)
            table = np.ascontiguousarray(table).reshape(-1)
            # 4 bytes of padding: the AVX2 gather reads a dword at each narrow entry
            padded = np.zeros(table.nbytes + 4, np.uint8)
            padded[:table.nbytes] = table.view(np.uint8)
            self.keep.append(padded)
            s.kind = QI_LOOKUP
            s.table = cnp.PyArray_DATA(padded)
            s.table_type = _code(table.dtype)
            s.table_size = table.shape[0]
            s.table_min = spec[2]
        else:
            s.kind = {"add": QI_ADD, "sub": QI_SUB, "rsub": QI_RSUB, "mul": QI_MUL}[kind]
            s.pattern = PATTERNS[spec[1]]
            s.operand = spec[2]
            self.operands = max(self.operands, s.operand + 1)
            self.needs.append((s.operand, s.pattern))
            if kind == "mul":
                s.a_zp, s.b_zp = spec[3], spec[4]

    cdef int check(self, tuple operands, Py_ssize_t channels, Py_ssize_t cols,
                   Py_ssize_t size) except -1:
        """Raise unless every operand is a contiguous int32 array with the entries its
        pattern reads (so no view can read past one)."""
        cdef Py_ssize_t need
        for index, pattern in self.needs:
            if index >= len(operands):
                raise ValueError(f"epilogue operand {index} is missing")
            arr = operands[index]
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.int32
                    and arr.flags.c_contiguous):
                raise TypeError("epilogue operands must be contiguous int32 arrays")
            need = 1 if pattern == QI_SCALAR else channels if pattern == QI_ROW \
                else cols if pattern == QI_COL else size
            if arr.size < need or (pattern == QI_ROW and channels == 0):
                raise ValueError(f"epilogue operand {index} has {arr.size} entries, its "
                                 f"pattern reads {need}")
        return 0

    cdef int run(self, const void *src, int src_type, Py_ssize_t src_stride, void *dst,
                 Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row0,
                 Py_ssize_t rdiv, Py_ssize_t channels, Py_ssize_t col0, Py_ssize_t flat0,
                 Py_ssize_t flat_stride, const int32_t *const *operands) noexcept nogil:
        return qi_epilogue(src, src_type, src_stride, dst, self.code, dst_stride, rows, cols,
                           row0, rdiv, channels, col0, flat0, flat_stride, self.stages,
                           self.count, operands)

    def apply(self, cnp.ndarray x, tuple view, tuple operands):
        """The stages over x (8..32-bit ints, any shape) seen as view = (rows, cols,
        rdiv, channels): a new array of x's shape in the output dtype. `operands`
        are int32 contiguous arrays. Raises EpilogueError when a stage's input is
        outside its domain."""
        cdef int code = _code(x.dtype)
        if code < 0:
            raise TypeError(f"epilogue input of dtype {x.dtype}")
        x = np.ascontiguousarray(x)
        out = np.empty((<object> x).shape, self.dtype)
        cdef Py_ssize_t rows = view[0], cols = view[1], rdiv = view[2], channels = view[3]
        if rows * cols != x.size:
            raise ValueError(f"view {view} does not fit {x.size} elements")
        self.check(operands, channels, cols, x.size)
        cdef const int32_t *pointers[8]
        cdef int i
        if len(operands) > 8:
            raise ValueError("at most 8 epilogue operands")
        for i in range(len(operands)):
            pointers[i] = <const int32_t *> cnp.PyArray_DATA(operands[i])
        cdef const void *src = cnp.PyArray_DATA(x)
        cdef void *dst = cnp.PyArray_DATA(out)
        cdef int err
        with nogil:
            err = self.run(src, code, cols, dst, cols, rows, cols, 0, rdiv, channels, 0, 0, cols,
                           pointers)
        if err:
            raise EpilogueError(err)
        return out


cdef tuple _view(tuple shape, object axis, bint col):
    """(rows, cols, rdiv, channels) of a tensor for stages per channel along `axis`
    (None: none); `col` views the last axis as columns."""
    size = math.prod(shape)
    if axis is None:
        return (1, size, 1, 0) if size else (0, 0, 1, 0)
    if col:
        cols = shape[-1]
        return (size // cols if cols else 0, cols, 1, 0)
    inner = math.prod(shape[axis + 1:])
    return (size // inner if inner else 0, inner, 1, shape[axis])


# --------------------------------------------------------------------------------------
# requantize, lookup and the elementwise ops
# --------------------------------------------------------------------------------------


def requant_spec(object multiplier, object shift, str rounding, object zp_in, object zp_out,
                 object qmin, object qmax, object dtype, Py_ssize_t channels):
    """The epilogue stage of reference.requantize with per-channel parameters of
    `channels` entries (0: per tensor), or None where the fast path does not apply
    (the reference then runs, and raises for invalid arguments)."""
    from quantir.dialects.q import MAX_MULTIPLIER, MAX_SHIFT, MIN_SHIFT

    if rounding not in _MODES:
        return None
    dtype = np.dtype(dtype)
    if _code(dtype) < 0:
        return None
    low, high = _int_value(qmin), _int_value(qmax)
    info = np.iinfo(dtype)
    if low is None or high is None or not info.min <= low <= high <= info.max:
        return None
    size = max(channels, 1)
    params = []
    for value in (multiplier, shift, zp_in, zp_out):
        arr = _int_array(value)
        if arr is None or arr.ndim > 1 or (arr.ndim == 1 and channels == 0) \
                or (arr.ndim == 1 and arr.shape[0] != size):
            return None
        params.append(np.ascontiguousarray(np.broadcast_to(arr, (size,)), dtype=np.int64))
    m, s, z_in, z_out = params
    if int(m.min()) < 0 or int(m.max()) > MAX_MULTIPLIER or int(s.min()) < MIN_SHIFT \
            or int(s.max()) > MAX_SHIFT[rounding]:
        return None
    # |x - zp_in| must not wrap int64 for the range check to mean what the spec's does
    if int(np.abs(z_in).max()) > 2**62 or int(np.abs(z_out).max()) > 2**62:
        return None
    pattern = "row" if channels else "scalar"
    return ("requant", rounding, pattern, m, s, z_in, z_out, low, high)


def requantize(x, multiplier, shift, rounding, zp_in, zp_out, qmin, qmax, dtype, axis=None):
    """reference.requantize (same arguments, same integers)."""
    arr = np.asarray(x)
    # (0-d inputs: the spec returns a numpy scalar, not an array)
    if _code(arr.dtype) >= 0 and arr.size and arr.ndim:
        channels, col, view_axis = 0, False, None
        params_are_arrays = any(np.ndim(p) for p in (multiplier, shift, zp_in, zp_out))
        ok = True
        if axis is not None and params_are_arrays:
            ax = _int_value(axis)
            if ax is None or not -arr.ndim <= ax < max(arr.ndim, 1) or arr.ndim == 0:
                ok = False
            else:
                view_axis = ax % arr.ndim
                channels = arr.shape[view_axis]
                col = view_axis == arr.ndim - 1
        elif params_are_arrays:
            ok = False
        elif axis is not None and (_int_value(axis) is None
                                   or not -arr.ndim <= _int_value(axis) < max(arr.ndim, 1)):
            ok = False
        if ok:
            spec = requant_spec(multiplier, shift, rounding, zp_in, zp_out, qmin, qmax, dtype,
                                channels)
            if spec is not None:
                if col:
                    spec = spec[:2] + ("col",) + spec[3:]
                try:
                    return Epilogue([spec], dtype).apply(arr, _view(arr.shape, view_axis, col), ())
                except EpilogueError:
                    pass
    return reference.requantize(x, multiplier, shift, rounding, zp_in, zp_out, qmin, qmax, dtype,
                                axis)


def lookup(x, table, storage_min):
    """reference.lookup."""
    arr = np.asarray(x)
    tab = np.asarray(table)
    base = _int_value(storage_min)
    if _code(arr.dtype) >= 0 and _code(tab.dtype) >= 0 and tab.ndim == 1 and arr.ndim \
            and arr.size \
            and base is not None and abs(base) <= 2**62:
        try:
            return Epilogue([("lookup", tab, base)], tab.dtype).apply(
                arr, _view(arr.shape, None, False), ())
        except EpilogueError:
            pass
    return reference.lookup(x, table, storage_min)


def binary_layout(tuple big, tuple small):
    """How an operand of shape `small` broadcasts into shape `big`: (pattern, axis)
    with pattern "scalar", "flat" (same shape), "col" (along the last axis only) or
    "row" (along one other axis, `axis`); None for any other broadcast."""
    if len(small) > len(big):
        return None
    padded = (1,) * (len(big) - len(small)) + small
    if any(s != 1 and s != b for s, b in zip(padded, big)):
        return None
    varying = [i for i, s in enumerate(padded) if s != 1]
    if not varying:
        return ("scalar", None)
    if padded == big:
        return ("flat", None)
    if len(varying) == 1:
        axis = varying[0]
        return ("col", axis) if axis == len(big) - 1 else ("row", axis)
    return None


cdef object _binary(str kind, object a, object b, object a_zp, object b_zp):
    """The fast path of add / sub / mul, or None."""
    x, y = np.asarray(a), np.asarray(b)
    if _code(x.dtype) < 0 or _code(y.dtype) < 0:
        return None
    try:
        shape = np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        return None
    if math.prod(shape) == 0 or not shape:  # (0-d: the spec returns a numpy scalar)
        return None
    za, zb = _int_value(a_zp), _int_value(b_zp)
    if kind == "mul" and (za is None or zb is None or abs(za) > 2**62 or abs(zb) > 2**62):
        return None
    if x.shape != shape:
        if y.shape != shape:
            return None
        x, y, za, zb = y, x, zb, za
        kind = {"add": "add", "sub": "rsub", "mul": "mul"}[kind]
    layout = binary_layout(shape, y.shape)
    if layout is None:
        return None
    pattern, axis = layout
    operand = np.ascontiguousarray(y, dtype=np.int32).reshape(-1)
    spec = (kind, pattern, 0) if kind != "mul" else (kind, pattern, 0, za, zb)
    view = _view(shape, axis, pattern == "col")
    return Epilogue([spec], np.int32).apply(x, view, (operand,))


def add(a, b):
    """reference.add."""
    out = _binary("add", a, b, 0, 0)
    return reference.add(a, b) if out is None else out


def sub(a, b):
    """reference.sub."""
    out = _binary("sub", a, b, 0, 0)
    return reference.sub(a, b) if out is None else out


def mul(a, b, a_zp=0, b_zp=0):
    """reference.mul."""
    out = _binary("mul", a, b, a_zp, b_zp)
    return reference.mul(a, b, a_zp, b_zp) if out is None else out


# --------------------------------------------------------------------------------------
# Conversions to float for the BLAS products
# --------------------------------------------------------------------------------------


cdef int64_t _to_float(cnp.ndarray src, int code, cnp.ndarray dst, int64_t zp) except -1:
    """dst = src - zp (contiguous, float32 or float64); returns max |dst|."""
    cdef Py_ssize_t n = src.size
    cdef void *s = cnp.PyArray_DATA(src)
    cdef void *d = cnp.PyArray_DATA(dst)
    cdef bint single = dst.dtype == np.float32
    cdef int64_t best
    with nogil:
        if single:
            if code == QI_I8:
                best = qi_to_f32_i8(<const int8_t *> s, <float *> d, n, zp)
            elif code == QI_U8:
                best = qi_to_f32_u8(<const uint8_t *> s, <float *> d, n, zp)
            elif code == QI_I16:
                best = qi_to_f32_i16(<const int16_t *> s, <float *> d, n, zp)
            else:
                best = qi_to_f32_u16(<const uint16_t *> s, <float *> d, n, zp)
        else:
            if code == QI_I8:
                best = qi_to_f64_i8(<const int8_t *> s, <double *> d, n, zp)
            elif code == QI_U8:
                best = qi_to_f64_u8(<const uint8_t *> s, <double *> d, n, zp)
            elif code == QI_I16:
                best = qi_to_f64_i16(<const int16_t *> s, <double *> d, n, zp)
            else:
                best = qi_to_f64_u16(<const uint16_t *> s, <double *> d, n, zp)
    return best


cdef int64_t _cols_to_float(cnp.ndarray src, int code, cnp.ndarray dst,
                            cnp.ndarray zp) except -1:
    """dst[r, j] = src[r, j] - zp[j] over the last axis (contiguous); returns max |dst|."""
    cdef Py_ssize_t cols = zp.shape[0]
    cdef Py_ssize_t rows = src.size // cols if cols else 0
    cdef void *s = cnp.PyArray_DATA(src)
    cdef void *d = cnp.PyArray_DATA(dst)
    cdef const int64_t *z = <const int64_t *> cnp.PyArray_DATA(zp)
    cdef bint single = dst.dtype == np.float32
    cdef int64_t best
    with nogil:
        if single:
            if code == QI_I8:
                best = qi_cols_f32_i8(<const int8_t *> s, <float *> d, rows, cols, z)
            elif code == QI_U8:
                best = qi_cols_f32_u8(<const uint8_t *> s, <float *> d, rows, cols, z)
            elif code == QI_I16:
                best = qi_cols_f32_i16(<const int16_t *> s, <float *> d, rows, cols, z)
            else:
                best = qi_cols_f32_u16(<const uint16_t *> s, <float *> d, rows, cols, z)
        else:
            if code == QI_I8:
                best = qi_cols_f64_i8(<const int8_t *> s, <double *> d, rows, cols, z)
            elif code == QI_U8:
                best = qi_cols_f64_u8(<const uint8_t *> s, <double *> d, rows, cols, z)
            elif code == QI_I16:
                best = qi_cols_f64_i16(<const int16_t *> s, <double *> d, rows, cols, z)
            else:
                best = qi_cols_f64_u16(<const uint16_t *> s, <double *> d, rows, cols, z)
    return best


cdef int64_t _im2col(const void *x, int code, bint single, Py_ssize_t channels, Py_ssize_t h,
                     Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt,
                     Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0, Py_ssize_t oh1,
                     void *dst) noexcept nogil:
    if single:
        if code == QI_I8:
            return qi_im2col_f32_i8(<const int8_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <float *> dst)
        if code == QI_U8:
            return qi_im2col_f32_u8(<const uint8_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <float *> dst)
        if code == QI_I16:
            return qi_im2col_f32_i16(<const int16_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <float *> dst)
        return qi_im2col_f32_u16(<const uint16_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <float *> dst)
    if code == QI_I8:
        return qi_im2col_f64_i8(<const int8_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <double *> dst)
    if code == QI_U8:
        return qi_im2col_f64_u8(<const uint8_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <double *> dst)
    if code == QI_I16:
        return qi_im2col_f64_i16(<const int16_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <double *> dst)
    return qi_im2col_f64_u16(<const uint16_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, <double *> dst)


cdef int64_t _im2col16(const void *x, int code, Py_ssize_t channels, Py_ssize_t h,
                       Py_ssize_t w, const int64_t *zp, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t ow, Py_ssize_t oh0,
                       Py_ssize_t oh1, int16_t *dst) noexcept nogil:
    if code == QI_I8:
        return qi_im2col_i16_i8(<const int8_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, dst)
    if code == QI_U8:
        return qi_im2col_i16_u8(<const uint8_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, dst)
    if code == QI_I16:
        return qi_im2col_i16_i16(<const int16_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, dst)
    return qi_im2col_i16_u16(<const uint16_t *> x, channels, h, w, zp, kh, kw, sh, sw, dh, dw, pt, pl, ow, oh0, oh1, dst)


cdef void _plane(const void *x, int code, Py_ssize_t h, Py_ssize_t w, int32_t zp,
                 int32_t *plane, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pt,
                 Py_ssize_t pl) noexcept nogil:
    if code == QI_I8:
        qi_plane_i8(<const int8_t *> x, h, w, zp, plane, ph, pw, pt, pl)
    elif code == QI_U8:
        qi_plane_u8(<const uint8_t *> x, h, w, zp, plane, ph, pw, pt, pl)
    elif code == QI_I16:
        qi_plane_i16(<const int16_t *> x, h, w, zp, plane, ph, pw, pt, pl)
    else:
        qi_plane_u16(<const uint16_t *> x, h, w, zp, plane, ph, pw, pt, pl)


INT16_LIMIT = 32767
"""Operands of the int16 GEMM: |value| <= 2^15 - 1 (so no vpmaddwd pair overflows)."""


def int16_gemm_fits(object bound_a, object bound_b, Py_ssize_t k):
    """Whether the int16 GEMM (AVX2) computes a K-term product exactly: both operands
    fit int16 and every partial sum, at most K * A * B in magnitude, fits int32."""
    return bool(qi_has_avx2()) and bound_a <= INT16_LIMIT and bound_b <= INT16_LIMIT \
        and k * bound_a * bound_b < 2**31


def pack_b16(b):
    """[..., K, N] integers (|b| <= 32767) as the int16 panels of qi_gemm16, one row per
    leading index: [count, panels * K/2 * 32] with panel[p][j] = (b[2p][j], b[2p+1][j])
    over 16 columns, zero-padded to even K and whole panels."""
    rows = np.ascontiguousarray(b, dtype=np.int16)
    cdef Py_ssize_t k = rows.shape[rows.ndim - 2], n = rows.shape[rows.ndim - 1]
    cdef Py_ssize_t count = rows.size // (k * n) if k * n else 0
    cdef Py_ssize_t size = ((k + 1) // 2) * ((n + 15) // 16) * 32, j
    packed = np.empty((count, size), np.int16)
    cdef const int16_t *src = <const int16_t *> cnp.PyArray_DATA(rows)
    cdef int16_t *dst = <int16_t *> cnp.PyArray_DATA(packed)
    with nogil:
        for j in range(count):
            qi_pack16(src + j * k * n, k, n, n, dst + j * size)
    return packed


cdef void _to_i16(const void *src, int code, Py_ssize_t rows, Py_ssize_t n, int32_t zp,
                  int16_t *dst, Py_ssize_t kpad) noexcept nogil:
    if code == QI_I8:
        qi_to_i16_i8(<const int8_t *> src, rows, n, zp, dst, kpad)
    elif code == QI_U8:
        qi_to_i16_u8(<const uint8_t *> src, rows, n, zp, dst, kpad)
    elif code == QI_I16:
        qi_to_i16_i16(<const int16_t *> src, rows, n, zp, dst, kpad)
    else:
        qi_to_i16_u16(<const uint16_t *> src, rows, n, zp, dst, kpad)


def _float_type(object bound_a, object bound_b, Py_ssize_t k):
    """float32 when chunks of min(K, 64) terms are exact in it, else float64 (exact
    for any 17-bit operands), else None (the spec's int64 loop is the only exact way)."""
    product = max(int(bound_a) * int(bound_b), 1)
    if product * min(k, 64) <= F32_EXACT:
        return np.float32
    if product * min(k, 64) <= F64_EXACT:
        return np.float64
    return None


# --------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------


_BLOCK_ELEMENTS = 1 << 16
"""Float elements of an im2col block (and of its GEMM result): 256 KiB in float32,
so a block and its product stay in L2 while the epilogue reads them."""


cdef class ConvPlan:
    """reference.conv2d of one op (weights, bias, zero points and geometry fixed), its
    accumulators then run through epilogue `specs` into `dtype`.

    The bias is the epilogue's first stage (operand 0, per output channel); the
    stages of `specs` are "scalar", "row" (per output channel) or "flat" (an operand
    of the output's shape); their operands are given to each call after x.
    """

    cdef readonly tuple x_shape, out_shape
    cdef readonly object x_dtype
    cdef int code
    cdef Py_ssize_t n, c, h, w, m, cg, kh, kw, group, mg, oh, ow
    cdef Py_ssize_t sh, sw, pt, pl, pb, pr, dh, dw
    cdef object x_zp, w_int, bias, bound_a, bound_b
    cdef object weights, float_type
    cdef readonly bint depthwise, int16, dw_float
    cdef object dw_weights, weights16
    cdef Py_ssize_t mg_pad, kp
    cdef Epilogue epilogue, tail
    cdef object specs, dtype
    cdef int operand_count

    def __init__(self, tuple x_shape, object x_dtype, cnp.ndarray w, object bias, object x_zp,
                 object w_zp, strides, pads, dilations, Py_ssize_t group, list specs,
                 object dtype):
        self.x_shape = x_shape
        self.x_dtype = np.dtype(x_dtype)
        self.code = _code(self.x_dtype)
        self.n, self.c, self.h, self.w = x_shape
        self.m, self.cg, self.kh, self.kw = (<object> w).shape
        self.group = group
        self.mg = self.m // group
        (self.sh, self.sw), (self.pt, self.pl, self.pb, self.pr), (self.dh, self.dw) = \
            strides, pads, dilations
        self.oh = reference._window_out(self.h, self.kh, self.sh, self.pt, self.pb, self.dh)
        self.ow = reference._window_out(self.w, self.kw, self.sw, self.pl, self.pr, self.dw)
        self.out_shape = (self.n, self.m, self.oh, self.ow)
        self.x_zp = _zero_point(x_zp, self.c)
        w_zps = _zero_point(w_zp, self.m)
        if self.x_zp is None or w_zps is None:
            raise ValueError("zero points outside the fast path")
        self.w_int = (w.astype(np.int64) - w_zps.reshape(-1, 1, 1, 1)).reshape(self.m, -1)
        self.bound_a = _storage_bound(self.x_dtype, self.x_zp)
        self.bound_b = _bound(self.w_int)
        taps = self.kh * self.kw
        self.depthwise = self.cg == 1 and taps * self.bound_a * self.bound_b < 2**31
        kdim = self.cg * taps
        self.int16 = not self.depthwise and int16_gemm_fits(self.bound_a, self.bound_b, kdim)
        # float32 taps where every sum is an integer below 2^24 (8-bit operands)
        self.dw_float = self.depthwise and taps * self.bound_a * self.bound_b <= F32_EXACT
        if self.depthwise:
            self.dw_weights = np.ascontiguousarray(
                self.w_int, dtype=np.float32 if self.dw_float else np.int32)
        elif self.int16:
            # the weights are the GEMM's A: int16 rows of even length, 6-row tiles
            self.mg_pad = (self.mg + 5) // 6 * 6
            self.kp = (kdim + 1) // 2
            self.weights16 = np.zeros((group, self.mg_pad, 2 * self.kp), np.int16)
            self.weights16[:, :self.mg, :kdim] = self.w_int.reshape(group, self.mg, kdim)
        else:
            self.float_type = _float_type(self.bound_a, self.bound_b, self.cg * taps)
            if self.float_type is None:
                raise ValueError("operands too wide for an exact float product")
            self.weights = np.ascontiguousarray(
                self.w_int.reshape(group, self.mg, self.cg * taps), dtype=self.float_type)
        if bias is None:
            self.bias = np.zeros(self.m, np.int32)
        else:
            b = int32_operand(bias)
            if b is None or b.shape != (self.m,):
                raise ValueError("bias outside the fast path")
            self.bias = b
        self.specs = specs
        self.dtype = np.dtype(dtype)
        self.epilogue = Epilogue([("add", "row", 0)] + specs, dtype)
        # after the spec's own bias add (wide sums); operand 0 (the bias) goes unread
        self.tail = Epilogue(specs, dtype)
        self.operand_count = 1 + max(self.epilogue.operands - 1, 0)

    def __call__(self, cnp.ndarray x, *operands):
        if (<object> x).shape != self.x_shape or x.dtype != self.x_dtype:
            raise ValueError(f"conv plan for {self.x_shape} {self.x_dtype}, got "
                             f"{(<object> x).shape} {x.dtype}")
        x = np.ascontiguousarray(x)
        out = np.empty(self.out_shape, self.dtype)
        ops = (self.bias,) + tuple(operands)
        self.epilogue.check(ops, self.m, self.oh * self.ow, math.prod(self.out_shape))
        if self.depthwise:
            self._depthwise(x, out, ops)
        elif self.int16:
            self._gemm16(x, out, ops)
        else:
            self._gemm(x, out, ops)
        return out

    cdef _gemm16(self, cnp.ndarray x, cnp.ndarray out, tuple ops):
        """im2col in int16, packed into panels, the int16 GEMM with the weights as A
        (exact: int16_gemm_fits), the epilogue on the int32 tile."""
        cdef const int32_t *pointers[8]
        self._pointers(ops, pointers)
        cdef Py_ssize_t taps = self.kh * self.kw, kdim = self.cg * taps, p = self.oh * self.ow
        cdef Py_ssize_t rows = max(1, min(self.oh, _BLOCK_ELEMENTS // max(1, kdim * self.ow)))
        cdef Py_ssize_t cols_max = rows * self.ow, panels_max = (cols_max + 15) // 16
        cols = np.empty(kdim * cols_max, np.int16)
        packed = np.empty(panels_max * self.kp * 32, np.int16)
        tile = np.empty(self.mg_pad * panels_max * 16, np.int32)
        cdef int16_t *cp = <int16_t *> cnp.PyArray_DATA(cols)
        cdef int16_t *pp = <int16_t *> cnp.PyArray_DATA(packed)
        cdef int32_t *tp = <int32_t *> cnp.PyArray_DATA(tile)
        cdef const int16_t *wp = <const int16_t *> cnp.PyArray_DATA(self.weights16)
        cdef const int64_t *zp = <const int64_t *> cnp.PyArray_DATA(self.x_zp)
        cdef const char *xp = <const char *> cnp.PyArray_DATA(x)
        cdef char *op = <char *> cnp.PyArray_DATA(out)
        cdef Py_ssize_t xitem = x.dtype.itemsize, oitem = out.dtype.itemsize
        cdef Py_ssize_t n, g, oh0, oh1, ncols, panels, row0
        cdef const void *xg
        cdef int err = 0
        with nogil:
            for n in range(self.n):
                for g in range(self.group):
                    xg = xp + (n * self.c + g * self.cg) * self.h * self.w * xitem
                    row0 = n * self.m + g * self.mg
                    oh0 = 0
                    while oh0 < self.oh:
                        oh1 = min(self.oh, oh0 + rows)
                        ncols = (oh1 - oh0) * self.ow
                        panels = (ncols + 15) // 16
                        _im2col16(xg, self.code, self.cg, self.h, self.w, zp + g * self.cg,
                                  self.kh, self.kw, self.sh, self.sw, self.dh, self.dw, self.pt,
                                  self.pl, self.ow, oh0, oh1, cp)
                        qi_pack16(cp, kdim, ncols, ncols, pp)
                        qi_gemm16(wp + g * self.mg_pad * 2 * self.kp, self.mg_pad, self.kp, pp,
                                  panels, tp)
                        err |= self.epilogue.run(
                            tp, QI_I32, panels * 16, op + (row0 * p + oh0 * self.ow) * oitem, p,
                            self.mg, ncols, row0, 1, self.m, 0, row0 * p + oh0 * self.ow, p,
                            pointers)
                        oh0 = oh1
        if err:
            raise EpilogueError(err)

    cdef void _pointers(self, tuple ops, const int32_t **pointers) except *:
        cdef int i
        if len(ops) > 8:
            raise ValueError("at most 8 epilogue operands")
        for i in range(len(ops)):
            arr = ops[i]
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.int32
                    and arr.flags.c_contiguous):
                raise TypeError("epilogue operands must be contiguous int32 arrays")
            pointers[i] = <const int32_t *> cnp.PyArray_DATA(arr)

    cdef _depthwise(self, cnp.ndarray x, cnp.ndarray out, tuple ops):
        if self.dw_float:
            self._depthwise_float(x, out, ops)
            return
        cdef const int32_t *pointers[8]
        self._pointers(ops, pointers)
        cdef Py_ssize_t ph = (self.oh - 1) * self.sh + (self.kh - 1) * self.dh + 1
        cdef Py_ssize_t pw = (self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1
        cdef Py_ssize_t qw = self.ow + ((self.kw - 1) * self.dw) // self.sw + 1
        plane_arr = np.empty(ph * pw, np.int32)
        acc_arr = np.empty(self.oh * self.ow, np.int32)
        run_arr = np.empty((self.oh - 1) * pw + self.ow, np.int32)
        phase_arr = np.empty(self.sw * ph * qw if self.sw > 1 or self.sh > 1 else 1, np.int32)
        cdef int32_t *plane = <int32_t *> cnp.PyArray_DATA(plane_arr)
        cdef int32_t *acc = <int32_t *> cnp.PyArray_DATA(acc_arr)
        cdef int32_t *run = <int32_t *> cnp.PyArray_DATA(run_arr)
        cdef int32_t *phases = <int32_t *> cnp.PyArray_DATA(phase_arr)
        cdef const int32_t *wt = <const int32_t *> cnp.PyArray_DATA(self.dw_weights)
        cdef const int64_t *zp = <const int64_t *> cnp.PyArray_DATA(self.x_zp)
        cdef const char *xp = <const char *> cnp.PyArray_DATA(x)
        cdef char *op = <char *> cnp.PyArray_DATA(out)
        cdef Py_ssize_t xitem = x.dtype.itemsize, oitem = out.dtype.itemsize
        cdef Py_ssize_t plane_size = self.h * self.w, p = self.oh * self.ow
        cdef Py_ssize_t n, m, ic, taps = self.kh * self.kw
        cdef int err = 0
        with nogil:
            for n in range(self.n):
                for m in range(self.m):
                    ic = m // self.mg  # one input channel per group
                    if m % self.mg == 0:
                        _plane(xp + (n * self.c + ic) * plane_size * xitem, self.code, self.h,
                               self.w, <int32_t> zp[ic], plane, ph, pw, self.pt, self.pl)
                    qi_depthwise(plane, ph, pw, wt + m * taps, self.kh, self.kw, self.sh,
                                 self.sw, self.dh, self.dw, self.oh, self.ow, acc, run, phases,
                                 qw)
                    err |= self.epilogue.run(acc, QI_I32, p, op + (n * self.m + m) * p * oitem,
                                             p, 1, p, n * self.m + m, 1, self.m, 0,
                                             (n * self.m + m) * p, p, pointers)
        if err:
            raise EpilogueError(err)

    cdef _depthwise_float(self, cnp.ndarray x, cnp.ndarray out, tuple ops):
        """One channel at a time: its phase planes, the taps (float32 FMA, exact: see
        dw_float), the epilogue over the channel's accumulators."""
        cdef const int32_t *pointers[8]
        self._pointers(ops, pointers)
        cdef Py_ssize_t ph = (self.oh - 1) * self.sh + (self.kh - 1) * self.dh + 1
        cdef Py_ssize_t qw = self.ow + ((self.kw - 1) * self.dw) // self.sw
        phase_arr = np.empty(self.sw * ph * qw, np.float32)
        acc_arr = np.empty(self.oh * self.ow, np.float32)
        run_arr = np.empty((self.oh - 1) * qw + self.ow, np.float32)
        cdef float *phases = <float *> cnp.PyArray_DATA(phase_arr)
        cdef float *acc = <float *> cnp.PyArray_DATA(acc_arr)
        cdef float *run = <float *> cnp.PyArray_DATA(run_arr)
        cdef const float *wt = <const float *> cnp.PyArray_DATA(self.dw_weights)
        cdef const int64_t *zp = <const int64_t *> cnp.PyArray_DATA(self.x_zp)
        cdef const char *xp = <const char *> cnp.PyArray_DATA(x)
        cdef char *op = <char *> cnp.PyArray_DATA(out)
        cdef Py_ssize_t xitem = x.dtype.itemsize, oitem = out.dtype.itemsize
        cdef Py_ssize_t plane_size = self.h * self.w, p = self.oh * self.ow
        cdef Py_ssize_t n, m, ic, taps = self.kh * self.kw
        cdef const void *src
        cdef int err = 0
        with nogil:
            for n in range(self.n):
                for m in range(self.m):
                    ic = m // self.mg  # one input channel per group
                    if m % self.mg == 0:
                        src = xp + (n * self.c + ic) * plane_size * xitem
                        if self.code == QI_I8:
                            qi_dw_phases_i8(<const int8_t *> src, self.h, self.w, <float> zp[ic], ph, qw, self.sw, self.pt, self.pl, phases)
                        elif self.code == QI_U8:
                            qi_dw_phases_u8(<const uint8_t *> src, self.h, self.w, <float> zp[ic], ph, qw, self.sw, self.pt, self.pl, phases)
                        elif self.code == QI_I16:
                            qi_dw_phases_i16(<const int16_t *> src, self.h, self.w, <float> zp[ic], ph, qw, self.sw, self.pt, self.pl, phases)
                        else:
                            qi_dw_phases_u16(<const uint16_t *> src, self.h, self.w, <float> zp[ic], ph, qw, self.sw, self.pt, self.pl, phases)
                    qi_dw_taps(phases, ph, qw, wt + m * taps, self.kh, self.kw, self.sh, self.sw,
                               self.dh, self.dw, self.oh, self.ow, acc, run)
                    err |= self.epilogue.run(acc, QI_F32, p, op + (n * self.m + m) * p * oitem,
                                             p, 1, p, n * self.m + m, 1, self.m, 0,
                                             (n * self.m + m) * p, p, pointers)
        if err:
            raise EpilogueError(err)

    cdef _gemm(self, cnp.ndarray x, cnp.ndarray out, tuple ops):
        cdef const int32_t *pointers[8]
        self._pointers(ops, pointers)
        cdef Py_ssize_t taps = self.kh * self.kw, kdim = self.cg * taps, p = self.oh * self.ow
        # output rows per block: the im2col block and its product stay in cache
        cdef Py_ssize_t rows = max(1, min(self.oh, _BLOCK_ELEMENTS // max(1, max(kdim, self.mg) * self.ow)))
        cdef bint single = self.float_type is np.float32
        cdef Py_ssize_t cols_max = rows * self.ow
        cols_buf = np.empty(kdim * cols_max, self.float_type)
        out_buf = np.empty(self.mg * cols_max, self.float_type)
        cdef void *cols_ptr = cnp.PyArray_DATA(cols_buf)
        cdef const int64_t *zp = <const int64_t *> cnp.PyArray_DATA(self.x_zp)
        cdef const char *xp = <const char *> cnp.PyArray_DATA(x)
        cdef char *op = <char *> cnp.PyArray_DATA(out)
        cdef Py_ssize_t xitem = x.dtype.itemsize, oitem = out.dtype.itemsize
        cdef Py_ssize_t n, g, oh0, oh1, ncols, row0
        cdef int64_t bound
        cdef int err = 0
        cdef int src_type = QI_F32 if single else QI_F64
        limit = F32_EXACT if single else F64_EXACT
        cdef cnp.ndarray acc_arr, result
        for n in range(self.n):
            for g in range(self.group):
                wg = self.weights[g]
                for oh0 in range(0, self.oh, rows):
                    oh1 = min(self.oh, oh0 + rows)
                    ncols = (oh1 - oh0) * self.ow
                    with nogil:
                        bound = _im2col(xp + (n * self.c + g * self.cg) * self.h * self.w * xitem,
                                        self.code, single, self.cg, self.h, self.w,
                                        zp + g * self.cg, self.kh, self.kw, self.sh, self.sw,
                                        self.dh, self.dw, self.pt, self.pl, self.ow, oh0, oh1,
                                        cols_ptr)
                    cols = cols_buf[:kdim * ncols].reshape(kdim, ncols)
                    result = out_buf[:self.mg * ncols].reshape(self.mg, ncols)
                    chunks = _chunks(kdim, bound * self.bound_b, limit)
                    total = kdim * bound * self.bound_b
                    row0 = n * self.m + g * self.mg
                    if len(chunks) == 1:
                        np.matmul(wg, cols, out=result)
                        if total < 2**31:
                            err |= self.epilogue.run(
                                cnp.PyArray_DATA(result), src_type, ncols,
                                op + (row0 * p + oh0 * self.ow) * oitem, p, self.mg, ncols,
                                row0, 1, self.m, 0, row0 * p + oh0 * self.ow, p, pointers)
                            continue
                        acc_arr = result.astype(np.int64)
                    else:
                        acc_arr = np.zeros((self.mg, ncols), np.int64)
                        for k0, k1 in chunks:
                            np.matmul(wg[:, k0:k1], cols[k0:k1], out=result)
                            if single:
                                qi_acc_f32(<int64_t *> cnp.PyArray_DATA(acc_arr),
                                           <const float *> cnp.PyArray_DATA(result), self.mg * ncols)
                            else:
                                qi_acc_f64(<int64_t *> cnp.PyArray_DATA(acc_arr),
                                           <const double *> cnp.PyArray_DATA(result), self.mg * ncols)
                    if total < 2**31:
                        err |= self.epilogue.run(
                            cnp.PyArray_DATA(acc_arr), QI_I64, ncols,
                            op + (row0 * p + oh0 * self.ow) * oitem, p, self.mg, ncols,
                            row0, 1, self.m, 0, row0 * p + oh0 * self.ow, p, pointers)
                    else:
                        # sums past int32: the spec's bias add and saturation in int64
                        bias = self.bias[g * self.mg:(g + 1) * self.mg].astype(np.int64)
                        acc32 = np.clip(acc_arr + bias[:, None], INT32_MIN, INT32_MAX) \
                            .astype(np.int32)
                        err |= self.tail.run(
                            cnp.PyArray_DATA(acc32), QI_I32, ncols,
                            op + (row0 * p + oh0 * self.ow) * oitem, p, self.mg, ncols,
                            row0, 1, self.m, 0, row0 * p + oh0 * self.ow, p, pointers)
        if err:
            raise EpilogueError(err)


def _bound(arr):
    return int(np.abs(arr).max()) if arr.size else 0


def conv_plan(x_shape, x_dtype, w, bias, x_zp, w_zp, strides, pads, dilations, group,
              specs=(), dtype=np.int32):
    """A ConvPlan, or None where the fast path does not apply (then the reference,
    which also raises for invalid arguments, is the kernel)."""
    x_dtype = np.dtype(x_dtype)
    w = np.asarray(w)
    if _code(x_dtype) not in _NARROW or _code(w.dtype) not in _NARROW or len(x_shape) != 4 \
            or w.ndim != 4 or isinstance(group, bool):
        return None
    try:
        group = operator.index(group)
        n, c, h, wd = x_shape
        m, cg, kh, kw = w.shape
        if group < 1 or c != cg * group or m % group or 0 in x_shape or 0 in w.shape:
            return None
        (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
        geometry = [operator.index(v) for v in (sh, sw, pt, pl, pb, pr, dh, dw)]
        if min(geometry) < 0 or min(sh, sw, dh, dw) < 1:
            return None
        return ConvPlan(tuple(x_shape), x_dtype, w, bias, x_zp, w_zp, (sh, sw),
                        (pt, pl, pb, pr), (dh, dw), group, list(specs), dtype)
    except (ValueError, TypeError):
        return None


def conv2d(x, w, bias, x_zp, w_zp, strides, pads, dilations, group):
    """reference.conv2d."""
    arr = np.asarray(x)
    plan = conv_plan(arr.shape, arr.dtype, w, bias, x_zp, w_zp, strides, pads, dilations,
                     group)
    if plan is not None:
        try:
            return plan(arr)
        except EpilogueError:
            pass
    return reference.conv2d(x, w, bias, x_zp, w_zp, strides, pads, dilations, group)


# --------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------


cdef class MatmulPlan:
    """reference.matmul with its accumulators run through epilogue `specs` into `dtype`.

    `b` is either a constant (converted once) or None (given to each call, with
    b_shape / b_dtype). The output is viewed as [rows, last axis]: the bias (operand 0)
    is a "col" stage; `specs` stages may be "scalar", "col", "flat" or "row" along
    `row_axis` of the output. Their operands follow a (and b) in each call.
    """

    cdef readonly tuple a_shape, b_shape, out_shape
    cdef readonly object a_dtype, b_dtype
    cdef int a_code, b_code
    cdef int64_t a_zp
    cdef object b_zp, b_const, bound_b, bound_a, float_type
    cdef bint a_vec, b_vec
    cdef Py_ssize_t k, rows, cols, rdiv, channels
    cdef object bias
    cdef Epilogue epilogue, tail
    cdef object dtype
    # the int16 GEMM: A's rows per batch item, padded rows, K pairs, B panels, the
    # batch items of a and b behind each output batch item, and B's packed panels
    cdef readonly bint int16
    cdef Py_ssize_t m, n, mpad, kp, panels
    cdef object a_index, b_index, b_packed

    def __init__(self, tuple a_shape, object a_dtype, object b, tuple b_shape, object b_dtype,
                 object bias, object a_zp, object b_zp, list specs, object dtype,
                 object row_axis=None):
        self.a_shape, self.b_shape = a_shape, b_shape
        self.a_dtype, self.b_dtype = np.dtype(a_dtype), np.dtype(b_dtype)
        self.a_code, self.b_code = _code(self.a_dtype), _code(self.b_dtype)
        if self.a_code not in _NARROW or self.b_code not in _NARROW or not a_shape \
                or not b_shape:
            raise ValueError("operands outside the fast path")
        self.a_vec, self.b_vec = len(a_shape) == 1, len(b_shape) == 1
        a2 = (1,) + a_shape if self.a_vec else a_shape
        b2 = b_shape + (1,) if self.b_vec else b_shape
        if a2[-1] != b2[-2]:
            raise ValueError("inner dimensions differ")
        self.k = a2[-1]
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
        full = tuple(batch) + (a2[-2], b2[-1])
        out = full
        if self.b_vec:
            out = out[:-1]
        if self.a_vec:
            out = out[:-2] + out[-1:] if not self.b_vec else out[:-1]
        self.out_shape = tuple(out)
        if not self.out_shape or 0 in self.out_shape or self.k == 0:
            raise ValueError("empty or 0-d product")
        za = _int_value(a_zp)
        if za is None or abs(za) > ZP_LIMIT:
            raise ValueError("a_zp outside the fast path")
        self.a_zp = za
        n_cols = b2[-1]
        zb = _int_array(b_zp)
        if zb is None or zb.ndim > 1 or (zb.ndim == 1 and (self.b_vec or zb.shape[0] != n_cols)):
            raise ValueError("b_zp outside the fast path")
        if zb.size and int(np.abs(zb).max()) > ZP_LIMIT:
            raise ValueError("b_zp outside the fast path")
        self.b_zp = np.ascontiguousarray(np.broadcast_to(zb, (n_cols,)), dtype=np.int64)
        self.bound_a = _storage_bound(self.a_dtype, za)
        self.cols = self.out_shape[-1]
        self.rows = math.prod(self.out_shape) // self.cols
        self.rdiv, self.channels = 1, 0
        if row_axis is not None:
            self.channels = self.out_shape[row_axis]
            self.rdiv = math.prod(self.out_shape[row_axis + 1:-1])
        if b is not None:
            b = np.asarray(b)
            if b.shape != b_shape or b.dtype != self.b_dtype:
                raise ValueError("constant b does not match its shape")
            b_int = np.asarray(b, dtype=np.int64).reshape(b2) - self.b_zp
            self.bound_b = _bound(b_int)
            self.float_type = _float_type(self.bound_a, self.bound_b, self.k)
            if self.float_type is None:
                raise ValueError("operands too wide for an exact float product")
            self.b_const = b_int.astype(self.float_type)
        else:
            self.b_const = None
            self.bound_b = _storage_bound(self.b_dtype, self.b_zp)
            self.float_type = _float_type(self.bound_a, self.bound_b, self.k)
            if self.float_type is None:
                raise ValueError("operands too wide for an exact float product")
        if bias is None:
            self.bias = np.zeros(self.cols, np.int32)
        else:
            bias32 = int32_operand(bias)
            if bias32 is None or bias32.shape != (self.cols,):
                raise ValueError("bias outside the fast path")
            self.bias = bias32
        self.dtype = np.dtype(dtype)
        self.epilogue = Epilogue([("add", "col", 0)] + specs, dtype)
        self.tail = Epilogue(specs, dtype)
        self.m, self.n = a2[-2], b2[-1]
        # (a 1-d b puts the output's last axis, along which the bias runs, on A's rows:
        # the float path's single [rows, cols] epilogue handles it)
        self.int16 = not self.b_vec and int16_gemm_fits(self.bound_a, self.bound_b, self.k)
        if self.int16:
            self.mpad = (self.m + 5) // 6 * 6  # (cdivision truncates: no -(-m // 6))
            self.kp = (self.k + 1) // 2
            self.panels = (self.n + 15) // 16
            a_batch, b_batch = a2[:-2], b2[:-2]
            self.a_index = np.broadcast_to(np.arange(math.prod(a_batch)).reshape(a_batch),
                                           batch).reshape(-1)
            self.b_index = np.broadcast_to(np.arange(math.prod(b_batch)).reshape(b_batch),
                                           batch).reshape(-1)
            if b is not None:
                self.b_packed = pack_b16(b_int)

    def __call__(self, cnp.ndarray a, *rest):
        if self.int16:
            return self._int16(a, rest)
        return self._float(a, rest)

    cdef _int16(self, cnp.ndarray a, tuple rest):
        """The product by the int16 GEMM (exact: int16_gemm_fits), then the epilogue
        on each batch item's int32 tile rows."""
        if self.b_const is None:
            b, operands = rest[0], rest[1:]
            if (<object> b).shape != self.b_shape or b.dtype != self.b_dtype:
                raise ValueError("b does not match the plan")
            packed = pack_b16(np.subtract(b, self.b_zp, dtype=np.int16, casting="unsafe"))
        else:
            operands = rest
            packed = self.b_packed
        if (<object> a).shape != self.a_shape or a.dtype != self.a_dtype:
            raise ValueError("a does not match the plan")
        ops = (self.bias,) + tuple(operands)
        self.epilogue.check(ops, self.channels, self.cols, self.rows * self.cols)
        cdef const int32_t *pointers[8]
        cdef int i, err = 0
        for i in range(len(ops)):
            pointers[i] = <const int32_t *> cnp.PyArray_DATA(ops[i])
        a = np.ascontiguousarray(a)
        cdef Py_ssize_t count = a.size // (self.m * self.k)
        cdef Py_ssize_t kpad = 2 * self.kp, ldc = 16 * self.panels
        a16 = np.zeros((count, self.mpad, kpad), np.int16)
        cdef const char *ap = <const char *> cnp.PyArray_DATA(a)
        cdef int16_t *a16p = <int16_t *> cnp.PyArray_DATA(a16)
        cdef Py_ssize_t item = a.dtype.itemsize, j
        with nogil:
            for j in range(count):
                _to_i16(ap + j * self.m * self.k * item, self.a_code, self.m, self.k,
                        <int32_t> self.a_zp, a16p + j * self.mpad * kpad, kpad)
        out = np.empty(self.out_shape, self.dtype)
        tile = np.empty((self.mpad, ldc), np.int32)
        cdef int32_t *tp = <int32_t *> cnp.PyArray_DATA(tile)
        cdef char *op = <char *> cnp.PyArray_DATA(out)
        cdef Py_ssize_t oitem = out.dtype.itemsize, bi, ia, ib, batches = len(self.a_index)
        cdef const int16_t *bp = <const int16_t *> cnp.PyArray_DATA(packed)
        cdef Py_ssize_t bstride = packed.shape[1]
        cdef const Py_ssize_t[::1] a_index = np.ascontiguousarray(self.a_index, dtype=np.intp)
        cdef const Py_ssize_t[::1] b_index = np.ascontiguousarray(self.b_index, dtype=np.intp)
        with nogil:
            for bi in range(batches):
                ia, ib = a_index[bi], b_index[bi]
                qi_gemm16(a16p + ia * self.mpad * kpad, self.mpad, self.kp, bp + ib * bstride,
                          self.panels, tp)
                # the output's rows of this batch item: [m, n] (a 1-d a or b drops an
                # axis of size one, which leaves the memory order as it is)
                err |= self.epilogue.run(tp, QI_I32, ldc, op + bi * self.m * self.n * oitem,
                                         self.n, self.m, self.n, bi * self.m, self.rdiv,
                                         self.channels, 0, bi * self.m * self.n, self.n,
                                         pointers)
        if err:
            raise EpilogueError(err)
        return out

    cdef _float(self, cnp.ndarray a, tuple rest):
        cdef cnp.ndarray b
        if self.b_const is None:
            b, operands = rest[0], rest[1:]
            if (<object> b).shape != self.b_shape or b.dtype != self.b_dtype:
                raise ValueError("b does not match the plan")
        else:
            operands = rest
        if (<object> a).shape != self.a_shape or a.dtype != self.a_dtype:
            raise ValueError("a does not match the plan")
        single = self.float_type is np.float32
        a = np.ascontiguousarray(a)
        af = np.empty((<object> a).shape, self.float_type)
        bound_a = _to_float(a, self.a_code, af, self.a_zp)
        if self.a_vec:
            af = af.reshape(1, -1)
        if self.b_const is None:
            b = np.ascontiguousarray(b)
            bf = np.empty((<object> b).shape, self.float_type)
            bound_b = _cols_to_float(b, self.b_code, bf, self.b_zp)
            if self.b_vec:
                bf = bf.reshape(-1, 1)
        else:
            bf, bound_b = self.b_const, self.bound_b
        limit = F32_EXACT if single else F64_EXACT
        chunks = _chunks(self.k, bound_a * bound_b, limit)
        total = self.k * bound_a * bound_b
        if len(chunks) == 1:
            acc = np.matmul(af, bf)
            src_type = QI_F32 if single else QI_F64
        else:
            acc = None
            for k0, k1 in chunks:
                part = np.matmul(af[..., k0:k1], bf[..., k0:k1, :])
                if acc is None:
                    acc = np.zeros(part.shape, np.int64)
                if single:
                    qi_acc_f32(<int64_t *> cnp.PyArray_DATA(acc),
                               <const float *> cnp.PyArray_DATA(part), part.size)
                else:
                    qi_acc_f64(<int64_t *> cnp.PyArray_DATA(acc),
                               <const double *> cnp.PyArray_DATA(part), part.size)
            src_type = QI_I64
        out = np.empty(self.out_shape, self.dtype)
        self.epilogue.check((self.bias,) + tuple(operands), self.channels, self.cols,
                            self.rows * self.cols)
        if total < 2**31:
            self._finish(acc, src_type, out, (self.bias,) + tuple(operands), self.epilogue)
        else:
            # sums past int32: the spec's bias add and saturation in int64
            acc64 = np.asarray(acc).reshape(self.rows, self.cols).astype(np.int64) \
                + self.bias.astype(np.int64)
            acc32 = np.clip(acc64, INT32_MIN, INT32_MAX).astype(np.int32)
            self._finish(acc32, QI_I32, out, (self.bias,) + tuple(operands), self.tail)
        return out

    cdef _finish(self, cnp.ndarray acc, int src_type, cnp.ndarray out, tuple ops,
                 Epilogue epilogue):
        cdef const int32_t *pointers[8]
        cdef int i, err
        if len(ops) > 8:
            raise ValueError("at most 8 epilogue operands")
        for i in range(len(ops)):
            arr = ops[i]
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.int32
                    and arr.flags.c_contiguous):
                raise TypeError("epilogue operands must be contiguous int32 arrays")
            pointers[i] = <const int32_t *> cnp.PyArray_DATA(arr)
        acc = np.ascontiguousarray(acc)
        cdef const void *src = cnp.PyArray_DATA(acc)
        cdef void *dst = cnp.PyArray_DATA(out)
        with nogil:
            err = epilogue.run(src, src_type, self.cols, dst, self.cols, self.rows, self.cols, 0,
                               self.rdiv, self.channels, 0, 0, self.cols, pointers)
        if err:
            raise EpilogueError(err)


def matmul_plan(a_shape, a_dtype, b, b_shape, b_dtype, bias, a_zp, b_zp, specs=(),
                dtype=np.int32, row_axis=None):
    """A MatmulPlan, or None where the fast path does not apply."""
    try:
        return MatmulPlan(tuple(a_shape), a_dtype, b, tuple(b_shape), b_dtype, bias, a_zp, b_zp,
                          list(specs), dtype, row_axis)
    except (ValueError, TypeError):
        return None


def matmul(a, b, bias=None, a_zp=0, b_zp=0):
    """reference.matmul."""
    x, y = np.asarray(a), np.asarray(b)
    plan = matmul_plan(x.shape, x.dtype, y, y.shape, y.dtype, bias, a_zp, b_zp)
    if plan is not None:
        try:
            return plan(x)
        except EpilogueError:
            pass
    return reference.matmul(a, b, bias, a_zp, b_zp)


# --------------------------------------------------------------------------------------
# softmax and layernorm
# --------------------------------------------------------------------------------------


def softmax(x, axis, exp_table, fraction_bits):
    """reference.softmax."""
    arr = np.asarray(x)
    table = np.asarray(exp_table)
    f = _int_value(fraction_bits)
    ax = _int_value(axis)
    cdef int code = _code(arr.dtype)
    if code < 0 or arr.ndim == 0 or arr.size == 0 or table.ndim != 1 or table.shape[0] == 0 \
            or _code(table.dtype) < 0 \
            or int(table[0]) <= 0 or f is None or not 0 <= f <= 62 or ax is None \
            or not -arr.ndim <= ax < arr.ndim:
        return reference.softmax(x, axis, exp_table, fraction_bits)
    ax %= arr.ndim
    moved = np.ascontiguousarray(np.moveaxis(arr, ax, -1))
    table32 = np.ascontiguousarray(table, dtype=np.int32)
    cdef Py_ssize_t n = moved.shape[-1], rows = moved.size // n
    out = np.empty(moved.shape, np.int32)
    scratch = np.empty(n, np.int32)
    cdef int64_t emax = 0
    cdef int bad
    cdef const void *xp = cnp.PyArray_DATA(moved)
    cdef const int32_t *tp = <const int32_t *> cnp.PyArray_DATA(table32)
    cdef int32_t *op = <int32_t *> cnp.PyArray_DATA(out)
    cdef int32_t *ep = <int32_t *> cnp.PyArray_DATA(scratch)
    cdef int64_t size = table32.shape[0]
    cdef int fb = f
    with nogil:
        if code == QI_I8:
            bad = qi_softmax_i8(<const int8_t *> xp, rows, n, tp, size, fb, op, ep, &emax)
        elif code == QI_U8:
            bad = qi_softmax_u8(<const uint8_t *> xp, rows, n, tp, size, fb, op, ep, &emax)
        elif code == QI_I16:
            bad = qi_softmax_i16(<const int16_t *> xp, rows, n, tp, size, fb, op, ep, &emax)
        elif code == QI_U16:
            bad = qi_softmax_u16(<const uint16_t *> xp, rows, n, tp, size, fb, op, ep, &emax)
        else:
            bad = qi_softmax_i32(<const int32_t *> xp, rows, n, tp, size, fb, op, ep, &emax)
    if bad or (int(emax) << f) > INT64_MAX:
        return reference.softmax(x, axis, exp_table, fraction_bits)  # raises
    return np.moveaxis(out, -1, ax) if ax != arr.ndim - 1 else out


def _row_param(value, Py_ssize_t n):
    """An int64 [n] vector of a per-column parameter that broadcasts as [n], or None."""
    arr = _int_array(value)
    if arr is None or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, n)):
        return None
    return np.ascontiguousarray(np.broadcast_to(arr, (n,)), dtype=np.int64)


def layernorm(x, x_zp, gamma, gamma_zp, beta, epsilon_units, fraction_bits):
    """reference.layernorm."""
    arr = np.asarray(x)
    cdef int code = _code(arr.dtype)
    zp = _int_value(x_zp)
    f = _int_value(fraction_bits)
    eps = _int_value(epsilon_units)
    spec = (code >= 0 and arr.ndim >= 1 and arr.size > 0 and zp is not None
            and abs(zp) <= 2**40 and f is not None and 0 <= f <= 62 and eps is not None
            and 0 <= eps <= INT64_MAX)
    g = b = None
    if spec:
        n_ = arr.shape[-1]
        gam, gzp = _int_array(gamma), _int_array(gamma_zp)
        if gam is not None and gzp is not None and gam.ndim <= 1 and gzp.ndim <= 1:
            try:
                g = _row_param(gam - gzp, n_)
            except ValueError:
                g = None
        if beta is not None:
            b = _row_param(beta, n_)
            spec = b is not None
        spec = spec and g is not None
    if not spec:
        return reference.layernorm(x, x_zp, gamma, gamma_zp, beta, epsilon_units, fraction_bits)
    cdef Py_ssize_t n = arr.shape[-1], rows = arr.size // n
    flat = np.ascontiguousarray(arr)
    t = np.empty(rows, np.int64)
    cdef const void *xp = cnp.PyArray_DATA(flat)
    cdef int64_t *tp = <int64_t *> cnp.PyArray_DATA(t)
    cdef int64_t z = zp, dmax
    with nogil:
        if code == QI_I8:
            dmax = qi_ln_stats_i8(<const int8_t *> xp, rows, n, z, tp)
        elif code == QI_U8:
            dmax = qi_ln_stats_u8(<const uint8_t *> xp, rows, n, z, tp)
        elif code == QI_I16:
            dmax = qi_ln_stats_i16(<const int16_t *> xp, rows, n, z, tp)
        elif code == QI_U16:
            dmax = qi_ln_stats_u16(<const uint16_t *> xp, rows, n, z, tp)
        else:
            dmax = qi_ln_stats_i32(<const int32_t *> xp, rows, n, z, tp)
    big = int(dmax)
    if big * big * n > INT64_MAX or big << f > INT64_MAX or dmax < 0:
        return reference.layernorm(x, x_zp, gamma, gamma_zp, beta, epsilon_units,
                                   fraction_bits)  # raises
    out = np.empty(arr.shape, np.int32)
    scratch = np.empty(n, np.int64)
    cdef int64_t d_bits = big.bit_length(), fb = f, ep = eps
    cdef const int64_t *gp = <const int64_t *> cnp.PyArray_DATA(g)
    cdef const int64_t *bp = NULL
    if b is not None:
        bp = <const int64_t *> cnp.PyArray_DATA(b)
    cdef int32_t *op = <int32_t *> cnp.PyArray_DATA(out)
    cdef int64_t *dp = <int64_t *> cnp.PyArray_DATA(scratch)
    with nogil:
        if code == QI_I8:
            qi_ln_rows_i8(<const int8_t *> xp, rows, n, z, tp, d_bits, fb, ep, gp, bp, op, dp)
        elif code == QI_U8:
            qi_ln_rows_u8(<const uint8_t *> xp, rows, n, z, tp, d_bits, fb, ep, gp, bp, op, dp)
        elif code == QI_I16:
            qi_ln_rows_i16(<const int16_t *> xp, rows, n, z, tp, d_bits, fb, ep, gp, bp, op, dp)
        elif code == QI_U16:
            qi_ln_rows_u16(<const uint16_t *> xp, rows, n, z, tp, d_bits, fb, ep, gp, bp, op, dp)
        else:
            qi_ln_rows_i32(<const int32_t *> xp, rows, n, z, tp, d_bits, fb, ep, gp, bp, op, dp)
    return out


# --------------------------------------------------------------------------------------
# Pooling and reductions
# --------------------------------------------------------------------------------------

ctypedef fused storage_t:
    int8_t
    uint8_t
    int16_t
    uint16_t
    int32_t


cdef inline int64_t _round_div(int64_t num, int64_t den) noexcept nogil:
    """reference.round_div for den > 0 (num never INT64_MIN: the callers' checks)."""
    cdef int64_t a = -num if num < 0 else num
    cdef int64_t q = a // den
    cdef int64_t r = a - q * den
    if r >= den - r:
        q += 1
    return -q if num < 0 else q


cdef inline int32_t _sat32(int64_t v) noexcept nogil:
    if v < -2147483648:
        return -2147483648
    if v > 2147483647:
        return 2147483647
    return <int32_t> v


cdef void _max_pool(const storage_t[:, :, :, ::1] x, storage_t[:, :, :, ::1] out,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt,
                    Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw, storage_t lowest) noexcept nogil:
    cdef Py_ssize_t n, c, i, j, a, b, ih, iw
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef bint found
    cdef storage_t best, v
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    found = False
                    best = lowest
                    for a in range(kh):
                        ih = i * sh + a * dh - pt
                        if ih < 0 or ih >= h:
                            continue
                        for b in range(kw):
                            iw = j * sw + b * dw - pl
                            if iw < 0 or iw >= w:
                                continue
                            v = x[n, c, ih, iw]
                            if not found or v > best:
                                best = v
                                found = True
                    out[n, c, i, j] = best


def max_pool2d(x, kernel_shape, strides, pads, dilations=(1, 1), ceil_mode=False):
    """reference.max_pool2d."""
    arr = np.asarray(x)
    if _code(arr.dtype) < 0 or arr.ndim != 4 or arr.size == 0:
        return reference.max_pool2d(x, kernel_shape, strides, pads, dilations, ceil_mode)
    try:
        oh, ow, _ = reference._pool_geometry(arr.shape, kernel_shape, strides, pads, dilations,
                                             ceil_mode)
        (kh, kw), (sh, sw), (pt, pl, _pb, _pr), (dh, dw) = kernel_shape, strides, pads, dilations
        kh, kw, sh, sw, pt, pl, dh, dw = (operator.index(v) for v in
                                          (kh, kw, sh, sw, pt, pl, dh, dw))
    except (ValueError, TypeError):
        return reference.max_pool2d(x, kernel_shape, strides, pads, dilations, ceil_mode)
    src = np.ascontiguousarray(arr)
    out = np.empty((arr.shape[0], arr.shape[1], oh, ow), arr.dtype)
    lowest = np.iinfo(arr.dtype).min
    code = _code(arr.dtype)
    if code == QI_I8:
        _max_pool[int8_t](src, out, kh, kw, sh, sw, pt, pl, dh, dw, lowest)
    elif code == QI_U8:
        _max_pool[uint8_t](src, out, kh, kw, sh, sw, pt, pl, dh, dw, lowest)
    elif code == QI_I16:
        _max_pool[int16_t](src, out, kh, kw, sh, sw, pt, pl, dh, dw, lowest)
    elif code == QI_U16:
        _max_pool[uint16_t](src, out, kh, kw, sh, sw, pt, pl, dh, dw, lowest)
    else:
        _max_pool[int32_t](src, out, kh, kw, sh, sw, pt, pl, dh, dw, lowest)
    return out


cdef int64_t _avg_pool(const storage_t[:, :, :, ::1] x, const int64_t[::1] zp,
                       int64_t[:, :, :, ::1] total, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl) noexcept nogil:
    """Window sums of x - zp (pads add 0); returns max |sum|."""
    cdef Py_ssize_t n, c, i, j, a, b, ih, iw
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef int64_t s, best = 0, z
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            z = zp[c]
            for i in range(total.shape[2]):
                for j in range(total.shape[3]):
                    s = 0
                    for a in range(kh):
                        ih = i * sh + a - pt
                        if ih < 0 or ih >= h:
                            continue
                        for b in range(kw):
                            iw = j * sw + b - pl
                            if iw < 0 or iw >= w:
                                continue
                            s += <int64_t> x[n, c, ih, iw] - z
                    total[n, c, i, j] = s
                    if s < 0:
                        s = -s
                    if s > best:
                        best = s
    return best


def avg_pool2d(x, x_zp, kernel_shape, strides, pads, count_include_pad, fraction_bits,
               ceil_mode=False):
    """reference.avg_pool2d."""
    arr = np.asarray(x)
    f = _int_value(fraction_bits)
    zp = _zero_point(x_zp, arr.shape[1]) if arr.ndim == 4 else None
    if _code(arr.dtype) < 0 or arr.ndim != 4 or arr.size == 0 or zp is None or f is None \
            or not 0 <= f <= 62:
        return reference.avg_pool2d(x, x_zp, kernel_shape, strides, pads, count_include_pad,
                                    fraction_bits, ceil_mode)
    try:
        oh, ow, _ = reference._pool_geometry(arr.shape, kernel_shape, strides, pads, (1, 1),
                                             ceil_mode)
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel_shape, strides, pads
        kh, kw, sh, sw, pt, pl, pb, pr = (operator.index(v) for v in
                                          (kh, kw, sh, sw, pt, pl, pb, pr))
    except (ValueError, TypeError):
        return reference.avg_pool2d(x, x_zp, kernel_shape, strides, pads, count_include_pad,
                                    fraction_bits, ceil_mode)
    src = np.ascontiguousarray(arr)
    total = np.empty((arr.shape[0], arr.shape[1], oh, ow), np.int64)
    code = _code(arr.dtype)
    if code == QI_I8:
        best = _avg_pool[int8_t](src, zp, total, kh, kw, sh, sw, pt, pl)
    elif code == QI_U8:
        best = _avg_pool[uint8_t](src, zp, total, kh, kw, sh, sw, pt, pl)
    elif code == QI_I16:
        best = _avg_pool[int16_t](src, zp, total, kh, kw, sh, sw, pt, pl)
    elif code == QI_U16:
        best = _avg_pool[uint16_t](src, zp, total, kh, kw, sh, sw, pt, pl)
    else:
        best = _avg_pool[int32_t](src, zp, total, kh, kw, sh, sw, pt, pl)
    if int(best) << f > INT64_MAX:
        return reference.avg_pool2d(x, x_zp, kernel_shape, strides, pads, count_include_pad,
                                    fraction_bits, ceil_mode)  # raises
    h, wd = arr.shape[2:]

    def counts(out_len, size, k, s, begin, end_pad):
        start = np.arange(out_len, dtype=np.int64) * s - begin
        end = start + k
        if count_include_pad:
            return np.minimum(end, size + end_pad) - start
        return np.minimum(end, size) - np.maximum(start, 0)

    count = np.maximum(np.multiply.outer(counts(oh, h, kh, sh, pt, pb),
                                         counts(ow, wd, kw, sw, pl, pr)), 1)
    out = np.empty(total.shape, np.int32)
    _divide_rows(total.reshape(-1, oh * ow), np.ascontiguousarray(count).reshape(-1), f,
                 out.reshape(-1, oh * ow))
    return out


cdef void _divide_rows(const int64_t[:, ::1] total, const int64_t[::1] count, int64_t f,
                       int32_t[:, ::1] out) noexcept nogil:
    """out[r, j] = saturate_int32(round_div(total[r, j] << f, count[j]))."""
    cdef Py_ssize_t r, j
    cdef int64_t scale = (<int64_t> 1) << f
    for r in range(total.shape[0]):
        for j in range(total.shape[1]):
            out[r, j] = _sat32(_round_div(total[r, j] * scale, count[j]))


cdef int64_t _row_sums(const storage_t[:, ::1] x, int64_t zp, int64_t[::1] total) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef int64_t s, best = 0
    for r in range(x.shape[0]):
        s = 0
        for j in range(x.shape[1]):
            s += <int64_t> x[r, j] - zp
        total[r] = s
        if s < 0:
            s = -s
        if s > best:
            best = s
    return best


def reduce_mean(x, x_zp, axes, keepdims, fraction_bits):
    """reference.reduce_mean."""
    arr = np.asarray(x)
    zp = _int_value(x_zp)
    f = _int_value(fraction_bits)
    if _code(arr.dtype) < 0 or arr.ndim == 0 or zp is None or abs(zp) > 2**40 or f is None \
            or not 0 <= f <= 62:
        return reference.reduce_mean(x, x_zp, axes, keepdims, fraction_bits)
    try:
        if not axes:
            reduced = tuple(range(arr.ndim))
        else:
            reduced = tuple(sorted({reference._normalise_axis(operator.index(a), arr.ndim)
                                    for a in axes}))
    except (ValueError, TypeError):
        return reference.reduce_mean(x, x_zp, axes, keepdims, fraction_bits)
    kept = tuple(a for a in range(arr.ndim) if a not in reduced)
    count = math.prod(arr.shape[a] for a in reduced)
    rows = math.prod(arr.shape[a] for a in kept)
    if count == 0 or rows == 0 or (not keepdims and not kept):  # 0-d: a numpy scalar
        return reference.reduce_mean(x, x_zp, axes, keepdims, fraction_bits)
    src = np.ascontiguousarray(np.transpose(arr, kept + reduced)).reshape(rows, count)
    total = np.empty(rows, np.int64)
    code = _code(arr.dtype)
    if code == QI_I8:
        best = _row_sums[int8_t](src, zp, total)
    elif code == QI_U8:
        best = _row_sums[uint8_t](src, zp, total)
    elif code == QI_I16:
        best = _row_sums[int16_t](src, zp, total)
    elif code == QI_U16:
        best = _row_sums[uint16_t](src, zp, total)
    else:
        best = _row_sums[int32_t](src, zp, total)
    if int(best) << f > INT64_MAX:
        return reference.reduce_mean(x, x_zp, axes, keepdims, fraction_bits)  # raises
    out = np.empty(rows, np.int32)
    _divide_rows(total.reshape(1, rows), np.full(rows, max(count, 1), np.int64), f,
                 out.reshape(1, rows))
    if keepdims:
        shape = tuple(1 if a in reduced else arr.shape[a] for a in range(arr.ndim))
    else:
        shape = tuple(arr.shape[a] for a in kept)
    return out.reshape(shape)
