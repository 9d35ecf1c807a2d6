/* Hot loops of the integer kernels (_kernels.pyx); reference.py is their spec.
 *
 * Every function computes exactly what reference.py computes: int64 arithmetic where
 * the spec uses int64 (the build passes -fwrapv, so any wrap-around is numpy's
 * two's-complement wrap too), and float only where a bound proves it exact.
 *
 * target_clones compiles the loop drivers for AVX2 and for the baseline, and the
 * loader picks one for the running CPU. The clone is named by the feature ("avx2"),
 * not by "arch=haswell": GCC dispatches an arch= clone on the CPU model
 * (__builtin_cpu_is), so an AMD CPU with AVX2 would run the baseline. The
 * per-element helpers are always_inline so that each clone gets its own vectorised
 * copy.
 *
 * The epilogue (qi_epilogue) is a small block interpreter: a row of accumulators or
 * stored integers is loaded into an int32 block, every stage (requant, clamp, lookup,
 * add of a broadcast operand, ...) rewrites the block in place, and the block is
 * stored in the output type. Every value between stages fits int32: accumulators are
 * saturated to int32, requant / clamp / lookup results are storage integers.
 */
#ifndef QUANTIR_INT_SIMD_H
#define QUANTIR_INT_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QI_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QI_CLONES
#endif
#define QI_INLINE static inline __attribute__((always_inline))

#define QI_INT32_MIN ((int64_t)INT32_MIN)
#define QI_INT32_MAX ((int64_t)INT32_MAX)

/* Element types (match _kernels.pyx) */
enum { QI_I8 = 0, QI_U8 = 1, QI_I16 = 2, QI_U16 = 3, QI_I32 = 4, QI_I64 = 5, QI_F32 = 6,
       QI_F64 = 7 };
/* Stage kinds */
enum { QI_REQUANT = 0, QI_CLAMP = 1, QI_LOOKUP = 2, QI_ADD = 3, QI_SUB = 4, QI_RSUB = 5,
       QI_MUL = 6 };
/* How a stage's parameters (or its second operand) vary over the [rows, cols] view */
enum { QI_SCALAR = 0, QI_ROW = 1, QI_COL = 2, QI_FLAT = 3 };
/* Rounding modes (q.ROUNDING_MODES order) */
enum { QI_TFLITE = 0, QI_SINGLE = 1, QI_TOSA = 2 };
/* Errors an epilogue reports (the caller re-runs the reference, which raises) */
enum { QI_ERR_RANGE = 1, QI_ERR_TABLE = 2 };

#define QI_BLOCK 512

typedef struct {
    int kind;
    int pattern;
    int rounding;
    int operand;              /* index of the second operand (ADD / SUB / RSUB / MUL) */
    /* REQUANT: per channel (or one entry): multiplier, shift, zero points */
    const int64_t *mult, *shift, *zp_in, *zp_out;
    int64_t lo, hi;           /* REQUANT / CLAMP output range */
    const void *table;        /* LOOKUP: entries of type table_type (QI_I8 .. QI_I32),
                                 followed by 4 bytes of padding (qi_lookup_avx2) */
    int64_t table_min, table_size;
    int table_type;           /* kept narrow: a 2^16-entry int8 table is 64 KiB, not 256 */
    int64_t a_zp, b_zp;       /* MUL */
    /* `single` requant with every right shift t = 31 - shift >= 32, zp_in = 0 and
     * |zp_out| <= 2^16 (else NULL): per channel int32 multiplier, t - 32, the rounding
     * term 2^(t - 33) (0 for t = 32), -1 where t = 32, zp_out (see qi_single_cols_avx2) */
    const int32_t *down_m, *down_shift, *down_add, *down_t32, *down_zo;
} qi_stage;

/* ---------------------------------------------------------------------------------
 * Rounding (reference.scale_round), on v = x - zp_in in the int32 range
 * --------------------------------------------------------------------------------- */

/* floor(y / 2^t) for 0 <= t <= 62 and -2^62 <= y < 2^63 + 2^62: an arithmetic shift
 * written as a logical one of y + 2^62 (AVX2 has 64-bit logical shifts only; 2^62 is
 * a multiple of 2^t, so the bias comes off exactly). */
QI_INLINE int64_t qi_floor_shift(int64_t y, int64_t t) {
    return (int64_t)(((uint64_t)y + ((uint64_t)1 << 62)) >> t) - ((int64_t)1 << (62 - t));
}

/* v * m for v in the int32 range and 0 <= m < 2^31: a 32 x 32 -> 64-bit product (one
 * vpmuldq per four lanes). A v outside int32 only occurs with a flagged range error,
 * whose result is discarded. */
QI_INLINE int64_t qi_mul32(int64_t v, int64_t m) {
    return (int64_t)(int32_t)v * (int64_t)(int32_t)m;
}

/* single: total = 31 - shift in [1, 62]; (v * M + 2^(total - 1)) >> total.
 * v * M >= -2^31 (2^31 - 1) > -2^62, so qi_floor_shift applies. */
QI_INLINE int64_t qi_single(int64_t v, int64_t m, int64_t total, int64_t round_) {
    return qi_floor_shift(qi_mul32(v, m) + round_, total);
}

/* tosa: s = 31 - shift in [2, 62]; round = 2^(s - 1), +-2^30 by the sign when s > 31 */
QI_INLINE int64_t qi_tosa(int64_t v, int64_t m, int64_t total, int64_t round_) {
    int64_t r = round_;
    if (total > 31) r += v >= 0 ? ((int64_t)1 << 30) : -((int64_t)1 << 30);
    return qi_floor_shift(qi_mul32(v, m) + r, total);
}

/* tflite: RDBPOT(SRDHM(saturate_int32(v << left), M), right) */
QI_INLINE int64_t qi_tflite(int64_t v, int64_t m, int64_t left, int64_t right) {
    /* |v| <= 2^31 and left <= 31: the shift cannot overflow int64 */
    int64_t w = (int64_t)((uint64_t)v << left);
    w = w < QI_INT32_MIN ? QI_INT32_MIN : w;
    w = w > QI_INT32_MAX ? QI_INT32_MAX : w;
    int64_t ab = qi_mul32(w, m);
    int64_t t = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
    /* t / 2^31 truncated toward zero: floor((t + 2^31 - 1) / 2^31) for t < 0 */
    int64_t high = qi_floor_shift(t + (t < 0 ? ((int64_t)1 << 31) - 1 : 0), 31);
    if (w == QI_INT32_MIN && m == QI_INT32_MIN) high = QI_INT32_MAX;
    /* RoundingDivideByPOT on an int32-range value */
    int64_t mask = ((int64_t)1 << right) - 1;
    int64_t rem = high & mask;
    int64_t thr = (mask >> 1) + (high < 0);
    return (int64_t)((int32_t)high >> right) + (rem > thr);
}

QI_INLINE int64_t qi_clamp64(int64_t y, int64_t lo, int64_t hi) {
    y = y < lo ? lo : y;
    return y > hi ? hi : y;
}

QI_INLINE int32_t qi_sat32(int64_t y) {
    return (int32_t)qi_clamp64(y, QI_INT32_MIN, QI_INT32_MAX);
}

/* One requant with parameters of channel c (the scalar-parameter loops below hoist
 * the same expressions out of the loop). */
QI_INLINE int64_t qi_requant_one(int64_t x, const qi_stage *s, ptrdiff_t c, int *bad) {
    int64_t v = x - s->zp_in[c];
    *bad |= (v < QI_INT32_MIN) | (v > QI_INT32_MAX);
    int64_t m = s->mult[c], sh = s->shift[c], y;
    if (s->rounding == QI_TFLITE) {
        y = qi_tflite(v, m, sh > 0 ? sh : 0, sh < 0 ? -sh : 0);
    } else {
        int64_t total = 31 - sh;
        int64_t round_ = (int64_t)1 << (total - 1);
        y = s->rounding == QI_SINGLE ? qi_single(v, m, total, round_) : qi_tosa(v, m, total, round_);
    }
    return qi_clamp64(y + s->zp_out[c], s->lo, s->hi);
}

/* ---------------------------------------------------------------------------------
 * Stage loops on an int32 block
 * --------------------------------------------------------------------------------- */

#define QI_REQUANT_LOOP(EXPR)                                                          \
    if (zi == 0) {                                                                     \
        for (ptrdiff_t j = 0; j < n; ++j) {                                            \
            int64_t v = buf[j];                                                        \
            buf[j] = (int32_t)qi_clamp64((EXPR) + zo, lo, hi);                         \
        }                                                                              \
    } else {                                                                           \
        int b = 0;                                                                     \
        for (ptrdiff_t j = 0; j < n; ++j) {                                            \
            int64_t v = (int64_t)buf[j] - zi;                                          \
            b |= (v < QI_INT32_MIN) | (v > QI_INT32_MAX);                              \
            buf[j] = (int32_t)qi_clamp64((EXPR) + zo, lo, hi);                         \
        }                                                                              \
        bad |= b;                                                                      \
    }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QI_HAVE_AVX2_PATH 1
#include <immintrin.h>

static int qi_avx2_state = -1; /* -1 unknown; a benign race: every writer writes the same */

static inline int qi_avx2(void) {
    if (qi_avx2_state < 0) {
        __builtin_cpu_init();
        qi_avx2_state = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return qi_avx2_state;
}

/* The `single` requant of a block, zp_in = 0, with explicit AVX2 (GCC vectorises the
 * portable loop with emulated 64-bit products and shifts). For v in int32 and
 * 0 <= m < 2^31, y = v * m + 2^(t - 1) is a vpmuldq product plus a constant, and
 * floor(y / 2^t) is:
 *   t >= 32: the high dword of y (= floor(y / 2^32), |y| < 2^62 + 2^61) shifted
 *            right arithmetically by t - 32, all in 32-bit lanes (|zo| <= 2^16 keeps
 *            the sum inside int32);
 *   t < 32:  (y + 2^62) >> t - 2^(62 - t) in 64-bit lanes, clamped in 64 bits.
 * Returns the number of leading elements done (the caller finishes the tail). */
__attribute__((target("avx2")))
static ptrdiff_t qi_single_avx2(int32_t *restrict buf, ptrdiff_t n, int64_t m, int64_t total,
                                int64_t zo, int64_t lo, int64_t hi) {
    const __m256i vm = _mm256_set1_epi64x(m);
    const __m256i rnd = _mm256_set1_epi64x((int64_t)1 << (total - 1));
    ptrdiff_t j = 0;
    if (total >= 32 && zo >= -65536 && zo <= 65536) {
        const __m128i sh = _mm_cvtsi32_si128((int)(total - 32));
        const __m256i vzo = _mm256_set1_epi32((int32_t)zo);
        const __m256i vlo = _mm256_set1_epi32((int32_t)lo), vhi = _mm256_set1_epi32((int32_t)hi);
        for (; j + 8 <= n; j += 8) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(buf + j));
            __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(x, vm), rnd);
            __m256i po = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), vm), rnd);
            __m256i r = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
            r = _mm256_add_epi32(_mm256_sra_epi32(r, sh), vzo);
            r = _mm256_min_epi32(_mm256_max_epi32(r, vlo), vhi);
            _mm256_storeu_si256((__m256i *)(buf + j), r);
        }
        return j;
    }
    const __m128i sh = _mm_cvtsi32_si128((int)total);
    const __m256i bias = _mm256_set1_epi64x((int64_t)1 << 62);
    const __m256i unbias = _mm256_set1_epi64x(((int64_t)1 << (62 - total)) - zo);
    const __m256i vlo = _mm256_set1_epi64x(lo), vhi = _mm256_set1_epi64x(hi);
    for (; j + 8 <= n; j += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(buf + j));
        __m256i pe = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, vm), rnd), bias);
        __m256i po = _mm256_add_epi64(
            _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), vm), rnd), bias);
        pe = _mm256_sub_epi64(_mm256_srl_epi64(pe, sh), unbias);
        po = _mm256_sub_epi64(_mm256_srl_epi64(po, sh), unbias);
        pe = _mm256_blendv_epi8(pe, vlo, _mm256_cmpgt_epi64(vlo, pe));
        pe = _mm256_blendv_epi8(pe, vhi, _mm256_cmpgt_epi64(pe, vhi));
        po = _mm256_blendv_epi8(po, vlo, _mm256_cmpgt_epi64(vlo, po));
        po = _mm256_blendv_epi8(po, vhi, _mm256_cmpgt_epi64(po, vhi));
        __m256i r = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
        _mm256_storeu_si256((__m256i *)(buf + j), r);
    }
    return j;
}
#endif

#ifdef QI_HAVE_AVX2_PATH
/* The `single` requant of a block whose element j has the parameters of channel c0 + j,
 * for stages with down_* arrays. With p = v * m (vpmuldq) and h = floor(p / 2^32):
 *   t >= 33: floor((p + 2^(t-1)) / 2^t) = (h + 2^(t-33)) >> (t - 32)
 *            (the low dword of p only adds a fraction below one to the quotient);
 *   t = 32:  floor((p + 2^31) / 2^32), the high dword of p + 2^31.
 * Everything after the products runs in 32-bit lanes with per-lane shifts (vpsravd).
 * Returns the number of leading elements done. */
__attribute__((target("avx2")))
static ptrdiff_t qi_single_cols_avx2(int32_t *restrict buf, ptrdiff_t n, const qi_stage *s,
                                     ptrdiff_t c0) {
    const __m256i two31 = _mm256_set1_epi64x((int64_t)1 << 31);
    const __m256i vlo = _mm256_set1_epi32((int32_t)s->lo), vhi = _mm256_set1_epi32((int32_t)s->hi);
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const ptrdiff_t c = c0 + j;
        __m256i x = _mm256_loadu_si256((const __m256i *)(buf + j));
        __m256i m = _mm256_loadu_si256((const __m256i *)(s->down_m + c));
        __m256i pe = _mm256_mul_epi32(x, m);
        __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32));
        __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
        __m256i h32 = _mm256_blend_epi32(_mm256_srli_epi64(_mm256_add_epi64(pe, two31), 32),
                                         _mm256_add_epi64(po, two31), 0xAA);
        h = _mm256_blendv_epi8(h, h32, _mm256_loadu_si256((const __m256i *)(s->down_t32 + c)));
        h = _mm256_add_epi32(h, _mm256_loadu_si256((const __m256i *)(s->down_add + c)));
        h = _mm256_srav_epi32(h, _mm256_loadu_si256((const __m256i *)(s->down_shift + c)));
        h = _mm256_add_epi32(h, _mm256_loadu_si256((const __m256i *)(s->down_zo + c)));
        h = _mm256_min_epi32(_mm256_max_epi32(h, vlo), vhi);
        _mm256_storeu_si256((__m256i *)(buf + j), h);
    }
    return j;
}
#endif

/* requant of a block whose parameters are those of channel c */
QI_INLINE int qi_requant_fixed(int32_t *restrict buf, ptrdiff_t n, const qi_stage *s,
                               ptrdiff_t c) {
    const int64_t m = s->mult[c], sh = s->shift[c], zi = s->zp_in[c], zo = s->zp_out[c];
    const int64_t lo = s->lo, hi = s->hi;
    int bad = 0;
    if (s->rounding == QI_TFLITE) {
        const int64_t left = sh > 0 ? sh : 0, right = sh < 0 ? -sh : 0;
        QI_REQUANT_LOOP(qi_tflite(v, m, left, right))
    } else if (s->rounding == QI_SINGLE) {
        const int64_t total = 31 - sh, round_ = (int64_t)1 << (total - 1);
#ifdef QI_HAVE_AVX2_PATH
        if (zi == 0 && qi_avx2()) {
            const ptrdiff_t done = qi_single_avx2(buf, n, m, total, zo, lo, hi);
            buf += done;
            n -= done;
        }
#endif
        QI_REQUANT_LOOP(qi_single(v, m, total, round_))
    } else {
        const int64_t total = 31 - sh, round_ = (int64_t)1 << (total - 1);
        QI_REQUANT_LOOP(qi_tosa(v, m, total, round_))
    }
    return bad ? QI_ERR_RANGE : 0;
}

/* requant of a block whose element j has the parameters of channel c0 + j */
QI_INLINE int qi_requant_cols(int32_t *restrict buf, ptrdiff_t n, const qi_stage *s,
                              ptrdiff_t c0) {
    int bad = 0;
#ifdef QI_HAVE_AVX2_PATH
    if (s->down_m && qi_avx2()) {
        const ptrdiff_t done = qi_single_cols_avx2(buf, n, s, c0);
        buf += done;
        n -= done;
        c0 += done;
    }
#endif
    for (ptrdiff_t j = 0; j < n; ++j) buf[j] = (int32_t)qi_requant_one(buf[j], s, c0 + j, &bad);
    return bad ? QI_ERR_RANGE : 0;
}

#ifdef QI_HAVE_AVX2_PATH
/* Table lookups 8 at a time with vpgatherdd. Needs [table_min, table_min + size - 1]
 * inside int32 (checked by the caller) and 4 bytes of padding after the table (a
 * narrow entry is read as the low part of a dword). Lanes outside the table read
 * entry 0 and set *bad. Returns the number of leading elements done. */
__attribute__((target("avx2")))
static ptrdiff_t qi_lookup_avx2(int32_t *restrict buf, ptrdiff_t n, const qi_stage *s, int *bad) {
    const __m256i base = _mm256_set1_epi32((int32_t)s->table_min);
    const __m256i last = _mm256_set1_epi32((int32_t)(s->table_min + s->table_size - 1));
    const int *table = (const int *)s->table;
    __m256i outside = _mm256_setzero_si256();
    ptrdiff_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(buf + j));
        const __m256i out = _mm256_or_si256(_mm256_cmpgt_epi32(base, x), _mm256_cmpgt_epi32(x, last));
        outside = _mm256_or_si256(outside, out);
        const __m256i index = _mm256_andnot_si256(out, _mm256_sub_epi32(x, base));
        __m256i v;
        switch (s->table_type) {
        case QI_I8:
            v = _mm256_i32gather_epi32(table, index, 1);
            v = _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24);
            break;
        case QI_U8:
            v = _mm256_and_si256(_mm256_i32gather_epi32(table, index, 1), _mm256_set1_epi32(0xff));
            break;
        case QI_I16:
            v = _mm256_i32gather_epi32(table, index, 2);
            v = _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 16);
            break;
        case QI_U16:
            v = _mm256_and_si256(_mm256_i32gather_epi32(table, index, 2), _mm256_set1_epi32(0xffff));
            break;
        default:
            v = _mm256_i32gather_epi32(table, index, 4);
        }
        _mm256_storeu_si256((__m256i *)(buf + j), v);
    }
    *bad |= !_mm256_testz_si256(outside, outside);
    return j;
}
#endif

QI_INLINE int qi_lookup_block(int32_t *restrict buf, ptrdiff_t n, const qi_stage *s) {
    const int64_t base = s->table_min, size = s->table_size;
    int bad = 0;
#ifdef QI_HAVE_AVX2_PATH
    if (base >= QI_INT32_MIN && base + size - 1 <= QI_INT32_MAX && qi_avx2()) {
        const ptrdiff_t done = qi_lookup_avx2(buf, n, s, &bad);
        buf += done;
        n -= done;
    }
#endif
    switch (s->table_type) {
#define QI_LOOKUP_CASE(CODE, T)                                                        \
    case CODE: {                                                                       \
        const T *table = (const T *)s->table;                                          \
        for (ptrdiff_t j = 0; j < n; ++j) {                                            \
            const int64_t index = (int64_t)buf[j] - base;                              \
            const int out = (index < 0) | (index >= size);                             \
            bad |= out;                                                                \
            buf[j] = (int32_t)table[out ? 0 : index];                                  \
        }                                                                              \
        break;                                                                         \
    }
        QI_LOOKUP_CASE(QI_I8, int8_t)
        QI_LOOKUP_CASE(QI_U8, uint8_t)
        QI_LOOKUP_CASE(QI_I16, int16_t)
        QI_LOOKUP_CASE(QI_U16, uint16_t)
        QI_LOOKUP_CASE(QI_I32, int32_t)
#undef QI_LOOKUP_CASE
    }
    return bad ? QI_ERR_TABLE : 0;
}

/* The binary ops of reference.py with `buf` as one operand and `other` (int32, with
 * `step` 0 for a broadcast scalar, 1 elementwise) as the other. */
QI_INLINE void qi_binary_block(int32_t *restrict buf, ptrdiff_t n, const qi_stage *s,
                               const int32_t *restrict other, int step) {
    switch (s->kind) {
    case QI_ADD:
        if (step == 0) {
            const int64_t b = other[0];
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32((int64_t)buf[j] + b);
        } else {
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32((int64_t)buf[j] + other[j]);
        }
        break;
    case QI_SUB:
        if (step == 0) {
            const int64_t b = other[0];
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32((int64_t)buf[j] - b);
        } else {
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32((int64_t)buf[j] - other[j]);
        }
        break;
    case QI_RSUB:
        if (step == 0) {
            const int64_t b = other[0];
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32(b - (int64_t)buf[j]);
        } else {
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32((int64_t)other[j] - buf[j]);
        }
        break;
    default: { /* QI_MUL: (a - a_zp) * (b - b_zp), int64 products (wrap as numpy) */
        const int64_t za = s->a_zp, zb = s->b_zp;
        if (step == 0) {
            const int64_t b = (int64_t)other[0] - zb;
            for (ptrdiff_t j = 0; j < n; ++j) buf[j] = qi_sat32(((int64_t)buf[j] - za) * b);
        } else {
            for (ptrdiff_t j = 0; j < n; ++j)
                buf[j] = qi_sat32(((int64_t)buf[j] - za) * ((int64_t)other[j] - zb));
        }
    }
    }
}

/* ---------------------------------------------------------------------------------
 * Loads and stores between typed rows and int32 blocks
 * --------------------------------------------------------------------------------- */

QI_INLINE void qi_load(const void *src, int type, ptrdiff_t offset, ptrdiff_t n,
                       int32_t *restrict buf) {
    switch (type) {
#define QI_LOAD_CASE(CODE, T)                                                          \
    case CODE: {                                                                       \
        const T *p = (const T *)src + offset;                                          \
        for (ptrdiff_t j = 0; j < n; ++j) buf[j] = (int32_t)p[j];                      \
        break;                                                                         \
    }
        QI_LOAD_CASE(QI_I8, int8_t)
        QI_LOAD_CASE(QI_U8, uint8_t)
        QI_LOAD_CASE(QI_I16, int16_t)
        QI_LOAD_CASE(QI_U16, uint16_t)
        QI_LOAD_CASE(QI_I64, int64_t)  /* callers guarantee the int32 range */
        QI_LOAD_CASE(QI_F32, float)    /* exact integers below 2^24 */
        QI_LOAD_CASE(QI_F64, double)   /* exact integers in the int32 range */
#undef QI_LOAD_CASE
    default:
        memcpy(buf, (const int32_t *)src + offset, (size_t)n * sizeof(int32_t));
    }
}

QI_INLINE void qi_store(const int32_t *restrict buf, ptrdiff_t n, void *dst, int type,
                        ptrdiff_t offset) {
    switch (type) {
#define QI_STORE_CASE(CODE, T)                                                         \
    case CODE: {                                                                       \
        T *p = (T *)dst + offset;                                                      \
        for (ptrdiff_t j = 0; j < n; ++j) p[j] = (T)buf[j];                            \
        break;                                                                         \
    }
        QI_STORE_CASE(QI_I8, int8_t)
        QI_STORE_CASE(QI_U8, uint8_t)
        QI_STORE_CASE(QI_I16, int16_t)
        QI_STORE_CASE(QI_U16, uint16_t)
#undef QI_STORE_CASE
    default:
        memcpy((int32_t *)dst + offset, buf, (size_t)n * sizeof(int32_t));
    }
}

/* ---------------------------------------------------------------------------------
 * The epilogue driver
 *
 * The data is a [rows, cols] view (row strides in elements). A QI_ROW stage reads the
 * parameters of channel ((row0 + r) / rdiv) % channels; a QI_COL stage those of
 * column col0 + j; a QI_FLAT operand is read at flat0 + r * flat_stride + j. Returns
 * 0, or the QI_ERR_* bits of the stages that met an input outside their domain.
 * --------------------------------------------------------------------------------- */
QI_CLONES
static int qi_epilogue(const void *src, int src_type, ptrdiff_t src_stride, void *dst,
                       int dst_type, ptrdiff_t dst_stride, ptrdiff_t rows, ptrdiff_t cols,
                       ptrdiff_t row0, ptrdiff_t rdiv, ptrdiff_t channels, ptrdiff_t col0,
                       ptrdiff_t flat0, ptrdiff_t flat_stride, const qi_stage *stages,
                       int nstages, const int32_t *const *operands) {
    int32_t buf[QI_BLOCK];
    int err = 0;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const ptrdiff_t channel = channels > 0 ? ((row0 + r) / rdiv) % channels : 0;
        for (ptrdiff_t j0 = 0; j0 < cols; j0 += QI_BLOCK) {
            const ptrdiff_t n = cols - j0 < QI_BLOCK ? cols - j0 : QI_BLOCK;
            qi_load(src, src_type, r * src_stride + j0, n, buf);
            for (int k = 0; k < nstages; ++k) {
                const qi_stage *s = stages + k;
                switch (s->kind) {
                case QI_REQUANT:
                    if (s->pattern == QI_COL) err |= qi_requant_cols(buf, n, s, col0 + j0);
                    else err |= qi_requant_fixed(buf, n, s, s->pattern == QI_ROW ? channel : 0);
                    break;
                case QI_CLAMP: {
                    const int64_t lo = s->lo, hi = s->hi;
                    for (ptrdiff_t j = 0; j < n; ++j) buf[j] = (int32_t)qi_clamp64(buf[j], lo, hi);
                    break;
                }
                case QI_LOOKUP:
                    err |= qi_lookup_block(buf, n, s);
                    break;
                default: {
                    const int32_t *other = operands[s->operand];
                    switch (s->pattern) {
                    case QI_SCALAR: qi_binary_block(buf, n, s, other, 0); break;
                    case QI_ROW: qi_binary_block(buf, n, s, other + channel, 0); break;
                    case QI_COL: qi_binary_block(buf, n, s, other + col0 + j0, 1); break;
                    default: qi_binary_block(buf, n, s, other + flat0 + r * flat_stride + j0, 1);
                    }
                }
                }
            }
            qi_store(buf, n, dst, dst_type, r * dst_stride + j0);
        }
    }
    return err;
}

/* ---------------------------------------------------------------------------------
 * Products: operands to float (exact: |x - zp| < 2^24), im2col, depthwise
 * --------------------------------------------------------------------------------- */

/* dst[i] = src[i] - zp for a contiguous run; returns max |dst[i]| (as int64) */
#define QI_TO_FLOAT(NAME, ST, DT)                                                      \
    QI_CLONES static int64_t NAME(const ST *restrict src, DT *restrict dst, ptrdiff_t n,   \
                                  int64_t zp) {                                        \
        int32_t lo = INT32_MAX, hi = INT32_MIN;                                        \
        for (ptrdiff_t i = 0; i < n; ++i) {                                            \
            int32_t v = (int32_t)src[i];                                               \
            lo = v < lo ? v : lo;                                                      \
            hi = v > hi ? v : hi;                                                      \
            dst[i] = (DT)((int32_t)src[i] - (int32_t)zp);                              \
        }                                                                              \
        if (n == 0) return 0;                                                          \
        int64_t a = (int64_t)hi - zp, b = zp - (int64_t)lo;                            \
        return a > b ? a : b;                                                          \
    }
QI_TO_FLOAT(qi_to_f32_i8, int8_t, float)
QI_TO_FLOAT(qi_to_f32_u8, uint8_t, float)
QI_TO_FLOAT(qi_to_f32_i16, int16_t, float)
QI_TO_FLOAT(qi_to_f32_u16, uint16_t, float)
QI_TO_FLOAT(qi_to_f64_i8, int8_t, double)
QI_TO_FLOAT(qi_to_f64_u8, uint8_t, double)
QI_TO_FLOAT(qi_to_f64_i16, int16_t, double)
QI_TO_FLOAT(qi_to_f64_u16, uint16_t, double)
#undef QI_TO_FLOAT

/* A [rows, cols] block of src - zp[col] (column zero points, e.g. a matmul's b) */
#define QI_TO_FLOAT_COLS(NAME, ST, DT)                                                 \
    QI_CLONES static int64_t NAME(const ST *restrict src, DT *restrict dst, ptrdiff_t rows, \
                                  ptrdiff_t cols, const int64_t *restrict zp) {        \
        int64_t best = 0;                                                              \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                         \
            for (ptrdiff_t j = 0; j < cols; ++j) {                                     \
                int64_t v = (int64_t)src[r * cols + j] - zp[j];                        \
                int64_t a = v < 0 ? -v : v;                                            \
                best = a > best ? a : best;                                            \
                dst[r * cols + j] = (DT)v;                                             \
            }                                                                          \
        }                                                                              \
        return best;                                                                   \
    }
QI_TO_FLOAT_COLS(qi_cols_f32_i8, int8_t, float)
QI_TO_FLOAT_COLS(qi_cols_f32_u8, uint8_t, float)
QI_TO_FLOAT_COLS(qi_cols_f32_i16, int16_t, float)
QI_TO_FLOAT_COLS(qi_cols_f32_u16, uint16_t, float)
QI_TO_FLOAT_COLS(qi_cols_f64_i8, int8_t, double)
QI_TO_FLOAT_COLS(qi_cols_f64_u8, uint8_t, double)
QI_TO_FLOAT_COLS(qi_cols_f64_i16, int16_t, double)
QI_TO_FLOAT_COLS(qi_cols_f64_u16, uint16_t, double)
#undef QI_TO_FLOAT_COLS

/* im2col of one image and one group, output rows [oh0, oh1):
 * dst[(c * kh + i) * kw + j][(oh - oh0) * ow + q] = x[c][ih][iw] - zp[c] with
 * ih = oh * sh + i * dh - pt, iw = q * sw + j * dw - pl, or 0 outside the input (a
 * padded position holds the zero point). Returns max |dst|. */
#define QI_IM2COL(NAME, ST, DT)                                                        \
    QI_CLONES static int64_t NAME(const ST *restrict x, ptrdiff_t channels, ptrdiff_t h,   \
                                  ptrdiff_t w, const int64_t *restrict zp, ptrdiff_t kh,   \
                                  ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh,  \
                                  ptrdiff_t dw, ptrdiff_t pt, ptrdiff_t pl, ptrdiff_t ow,  \
                                  ptrdiff_t oh0, ptrdiff_t oh1, DT *restrict dst) {    \
        const ptrdiff_t ld = (oh1 - oh0) * ow;                                         \
        int32_t lo = 0, hi = 0;                                                        \
        for (ptrdiff_t c = 0; c < channels; ++c) {                                     \
            const ST *plane = x + c * h * w;                                           \
            const int32_t z = (int32_t)zp[c];                                          \
            for (ptrdiff_t i = 0; i < kh; ++i) {                                       \
                for (ptrdiff_t j = 0; j < kw; ++j) {                                   \
                    DT *row = dst + ((c * kh + i) * kw + j) * ld;                      \
                    const ptrdiff_t off = j * dw - pl;                                 \
                    /* q in [q0, q1) reads inside the row: 0 <= q * sw + off < w */    \
                    ptrdiff_t q0 = off >= 0 ? 0 : (-off + sw - 1) / sw;                \
                    ptrdiff_t q1 = w - off <= 0 ? 0 : (w - off + sw - 1) / sw;         \
                    if (q0 > ow) q0 = ow;                                              \
                    if (q1 > ow) q1 = ow;                                              \
                    if (q1 < q0) q1 = q0;                                              \
                    for (ptrdiff_t oh = oh0; oh < oh1; ++oh, row += ow) {              \
                        const ptrdiff_t ih = oh * sh + i * dh - pt;                    \
                        if (ih < 0 || ih >= h) {                                       \
                            for (ptrdiff_t q = 0; q < ow; ++q) row[q] = 0;             \
                            continue;                                                  \
                        }                                                              \
                        const ST *in = plane + ih * w + off;                           \
                        for (ptrdiff_t q = 0; q < q0; ++q) row[q] = 0;                 \
                        if (sw == 1) {                                                 \
                            for (ptrdiff_t q = q0; q < q1; ++q) {                      \
                                int32_t v = (int32_t)in[q] - z;                        \
                                lo = v < lo ? v : lo;                                  \
                                hi = v > hi ? v : hi;                                  \
                                row[q] = (DT)v;                                        \
                            }                                                          \
                        } else {                                                       \
                            for (ptrdiff_t q = q0; q < q1; ++q) {                      \
                                int32_t v = (int32_t)in[q * sw] - z;                   \
                                lo = v < lo ? v : lo;                                  \
                                hi = v > hi ? v : hi;                                  \
                                row[q] = (DT)v;                                        \
                            }                                                          \
                        }                                                              \
                        for (ptrdiff_t q = q1; q < ow; ++q) row[q] = 0;                \
                    }                                                                  \
                }                                                                      \
            }                                                                          \
        }                                                                              \
        return -(int64_t)lo > (int64_t)hi ? -(int64_t)lo : (int64_t)hi;                \
    }
QI_IM2COL(qi_im2col_f32_i8, int8_t, float)
QI_IM2COL(qi_im2col_f32_u8, uint8_t, float)
QI_IM2COL(qi_im2col_f32_i16, int16_t, float)
QI_IM2COL(qi_im2col_f32_u16, uint16_t, float)
QI_IM2COL(qi_im2col_f64_i8, int8_t, double)
QI_IM2COL(qi_im2col_f64_u8, uint8_t, double)
QI_IM2COL(qi_im2col_f64_i16, int16_t, double)
QI_IM2COL(qi_im2col_f64_u16, uint16_t, double)
QI_IM2COL(qi_im2col_i16_i8, int8_t, int16_t)   /* |x - zp| <= 32767: the caller's bound */
QI_IM2COL(qi_im2col_i16_u8, uint8_t, int16_t)
QI_IM2COL(qi_im2col_i16_i16, int16_t, int16_t)
QI_IM2COL(qi_im2col_i16_u16, uint16_t, int16_t)
#undef QI_IM2COL

/* acc[i] += (int64) f[i] (chunks of a K-split product; each is an exact integer) */
QI_CLONES static void qi_acc_f32(int64_t *restrict acc, const float *restrict f, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) acc[i] += (int64_t)f[i];
}
QI_CLONES static void qi_acc_f64(int64_t *restrict acc, const double *restrict f, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) acc[i] += (int64_t)f[i];
}

/* The zero-padded plane of one channel, x - zp in int32: plane[r][c] = x[r - pt][c - pl]
 * - zp inside the input, 0 elsewhere; plane is [ph][pw]. */
#define QI_PLANE(NAME, ST)                                                             \
    QI_CLONES static void NAME(const ST *restrict x, ptrdiff_t h, ptrdiff_t w, int32_t zp, \
                               int32_t *restrict plane, ptrdiff_t ph, ptrdiff_t pw,    \
                               ptrdiff_t pt, ptrdiff_t pl) {                           \
        for (ptrdiff_t r = 0; r < ph; ++r) {                                           \
            int32_t *row = plane + r * pw;                                             \
            const ptrdiff_t ih = r - pt;                                               \
            if (ih < 0 || ih >= h) {                                                   \
                memset(row, 0, (size_t)pw * sizeof(int32_t));                         \
                continue;                                                              \
            }                                                                          \
            const ST *in = x + ih * w;                                                 \
            for (ptrdiff_t c = 0; c < pw; ++c) {                                       \
                const ptrdiff_t iw = c - pl;                                           \
                row[c] = (iw >= 0 && iw < w) ? (int32_t)in[iw] - zp : 0;               \
            }                                                                          \
        }                                                                              \
    }
QI_PLANE(qi_plane_i8, int8_t)
QI_PLANE(qi_plane_u8, uint8_t)
QI_PLANE(qi_plane_i16, int16_t)
QI_PLANE(qi_plane_u16, uint16_t)
#undef QI_PLANE

/* Depthwise in float32 (exact: kh * kw * max|x - zp| * max|w| <= 2^24, so every
 * product and partial sum is an integer float32 holds; FMA then rounds nothing).
 *
 * qi_dw_phases_*: one channel's x - zp, zero-padded, split by column phase: with the
 * padded plane xp[r][c] = x[r - pt][c - pl] - zp (0 outside the input),
 * phases[p][r][q] = xp[r][q * sw + p] for r < ph, q < qw. With unit strides there is
 * one phase: the padded plane itself. */
#define QI_DW_PHASES(NAME, ST)                                                         \
    QI_CLONES static void NAME(const ST *restrict x, ptrdiff_t h, ptrdiff_t w, float zp,   \
                               ptrdiff_t ph, ptrdiff_t qw, ptrdiff_t sw, ptrdiff_t pt,     \
                               ptrdiff_t pl, float *restrict phases) {                 \
        for (ptrdiff_t p = 0; p < sw; ++p) {                                           \
            /* q in [q0, q1) reads inside the row: 0 <= q * sw + p - pl < w */         \
            const ptrdiff_t off = p - pl;                                              \
            ptrdiff_t q0 = off >= 0 ? 0 : (-off + sw - 1) / sw;                        \
            ptrdiff_t q1 = w - off <= 0 ? 0 : (w - off + sw - 1) / sw;                 \
            if (q0 > qw) q0 = qw;                                                      \
            if (q1 > qw) q1 = qw;                                                      \
            if (q1 < q0) q1 = q0;                                                      \
            for (ptrdiff_t r = 0; r < ph; ++r) {                                       \
                float *row = phases + (p * ph + r) * qw;                               \
                const ptrdiff_t ih = r - pt;                                           \
                if (ih < 0 || ih >= h) {                                               \
                    for (ptrdiff_t q = 0; q < qw; ++q) row[q] = 0.0f;                  \
                    continue;                                                          \
                }                                                                      \
                const ST *in = x + ih * w + off;                                       \
                for (ptrdiff_t q = 0; q < q0; ++q) row[q] = 0.0f;                      \
                if (sw == 1) {                                                         \
                    for (ptrdiff_t q = q0; q < q1; ++q) row[q] = (float)in[q] - zp;    \
                } else {                                                               \
                    for (ptrdiff_t q = q0; q < q1; ++q) row[q] = (float)in[q * sw] - zp; \
                }                                                                      \
                for (ptrdiff_t q = q1; q < qw; ++q) row[q] = 0.0f;                     \
            }                                                                          \
        }                                                                              \
    }
QI_DW_PHASES(qi_dw_phases_i8, int8_t)
QI_DW_PHASES(qi_dw_phases_u8, uint8_t)
QI_DW_PHASES(qi_dw_phases_i16, int16_t)
QI_DW_PHASES(qi_dw_phases_u16, uint16_t)
#undef QI_DW_PHASES

/* The taps over the phases of one channel into acc[oh][ow] (float32). Unit strides:
 * each tap is one multiply-add over the flat run of the plane (the padding columns are
 * computed and dropped; run holds (oh - 1) * qw + ow floats). Else per output row,
 * tap (i, j) reads row r * sh + i * dh of phase (j * dw) % sw from column
 * (j * dw) / sw: contiguous runs again. */
QI_CLONES
static void qi_dw_taps(const float *restrict phases, ptrdiff_t ph, ptrdiff_t qw,
                       const float *restrict wt, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,
                       ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t oh, ptrdiff_t ow,
                       float *restrict acc, float *restrict run) {
    if (sh == 1 && sw == 1) {
        const ptrdiff_t length = (oh - 1) * qw + ow;
        for (ptrdiff_t q = 0; q < length; ++q) run[q] = 0.0f;
        for (ptrdiff_t i = 0; i < kh; ++i) {
            for (ptrdiff_t j = 0; j < kw; ++j) {
                const float weight = wt[i * kw + j];
                const float *tap = phases + i * dh * qw + j * dw;
                for (ptrdiff_t q = 0; q < length; ++q) run[q] += weight * tap[q];
            }
        }
        for (ptrdiff_t r = 0; r < oh; ++r) memcpy(acc + r * ow, run + r * qw, (size_t)ow * sizeof(float));
        return;
    }
    for (ptrdiff_t r = 0; r < oh; ++r) {
        float *out = acc + r * ow;
        for (ptrdiff_t q = 0; q < ow; ++q) out[q] = 0.0f;
        for (ptrdiff_t i = 0; i < kh; ++i) {
            const ptrdiff_t row = r * sh + i * dh;
            for (ptrdiff_t j = 0; j < kw; ++j) {
                const float weight = wt[i * kw + j];
                const float *tap = phases + ((j * dw) % sw * ph + row) * qw + (j * dw) / sw;
                for (ptrdiff_t q = 0; q < ow; ++q) out[q] += weight * tap[q];
            }
        }
    }
}

/* Depthwise taps over one padded plane with int32 accumulators (the caller proved
 * kh * kw * max|x - zp| * max|w - zp| < 2^31). acc is [oh][ow].
 * Unit strides: each tap is one multiply-add over the flat run of the plane (the
 * padding columns are computed and dropped). Other strides: the plane's columns are
 * split by phase (column mod sw) into `phases` ([sw][ph][qw]) so every tap reads a
 * contiguous run. `run` holds (oh - 1) * pw + ow int32. */
QI_CLONES
static void qi_depthwise(const int32_t *restrict plane, ptrdiff_t ph, ptrdiff_t pw,
                         const int32_t *restrict wt, ptrdiff_t kh, ptrdiff_t kw,
                         ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                         ptrdiff_t oh, ptrdiff_t ow, int32_t *restrict acc,
                         int32_t *restrict run, int32_t *restrict phases, ptrdiff_t qw) {
    if (sh == 1 && sw == 1) {
        const ptrdiff_t length = (oh - 1) * pw + ow;
        for (ptrdiff_t q = 0; q < length; ++q) run[q] = 0;
        for (ptrdiff_t i = 0; i < kh; ++i) {
            for (ptrdiff_t j = 0; j < kw; ++j) {
                const int32_t weight = wt[i * kw + j];
                const int32_t *tap = plane + i * dh * pw + j * dw;
                for (ptrdiff_t q = 0; q < length; ++q) run[q] += weight * tap[q];
            }
        }
        for (ptrdiff_t r = 0; r < oh; ++r) memcpy(acc + r * ow, run + r * pw, (size_t)ow * sizeof(int32_t));
        return;
    }
    for (ptrdiff_t p = 0; p < sw; ++p) {
        for (ptrdiff_t r = 0; r < ph; ++r) {
            int32_t *dst = phases + (p * ph + r) * qw;
            const int32_t *src = plane + r * pw;
            for (ptrdiff_t q = 0; q < qw; ++q) {
                const ptrdiff_t c = q * sw + p;
                dst[q] = c < pw ? src[c] : 0;
            }
        }
    }
    for (ptrdiff_t r = 0; r < oh; ++r) {
        int32_t *out = acc + r * ow;
        for (ptrdiff_t q = 0; q < ow; ++q) out[q] = 0;
        for (ptrdiff_t i = 0; i < kh; ++i) {
            const ptrdiff_t row = r * sh + i * dh;
            for (ptrdiff_t j = 0; j < kw; ++j) {
                const int32_t weight = wt[i * kw + j];
                const ptrdiff_t p = (j * dw) % sw, off = (j * dw) / sw;
                const int32_t *tap = phases + (p * ph + row) * qw + off;
                for (ptrdiff_t q = 0; q < ow; ++q) out[q] += weight * tap[q];
            }
        }
    }
}

/* ---------------------------------------------------------------------------------
 * Integer GEMM with int16 operands and int32 sums (AVX2 vpmaddwd)
 *
 * C[i][j] = sum_k A[i][k] B[k][j], exact when every |A|, |B| <= 32767 and every
 * partial sum stays inside int32 (the caller proves K * max|A| * max|B| < 2^31).
 * vpmaddwd multiplies 16 int16 pairs and adds them pairwise into 8 int32 lanes: twice
 * the multiply-adds per instruction of a float32 FMA, and exact.
 *
 * A: rows of kpad = 2 * kp int16 (zero-padded), read as kp int32 pairs (A[i][2p],
 *    A[i][2p+1]) broadcast to all lanes; rows padded to a multiple of 6.
 * B: packed in panels of 16 columns: bp[panel][p][j][2] = (B[2p][16 panel + j],
 *    B[2p+1][16 panel + j]), zero-padded (see pack_b16 in _kernels.pyx).
 * C: int32 [rows][16 * panels].
 * The 6 x 16 tile keeps 12 accumulators, 2 B vectors and 1 A broadcast in the 16
 * registers; a B panel of K <= 1536 stays in L1 / L2 while the tiles of A pass.
 * --------------------------------------------------------------------------------- */
#ifdef QI_HAVE_AVX2_PATH
#define QI_TILE(I)                                                                     \
    do {                                                                               \
        const __m256i a = _mm256_set1_epi32(a32[(I) * kp + p]);                        \
        c##I##0 = _mm256_add_epi32(c##I##0, _mm256_madd_epi16(a, b0));                \
        c##I##1 = _mm256_add_epi32(c##I##1, _mm256_madd_epi16(a, b1));                 \
    } while (0)

__attribute__((target("avx2")))
static void qi_gemm16_tile(const int32_t *restrict a32, ptrdiff_t kp,
                           const int16_t *restrict bp, int32_t *restrict c, ptrdiff_t ldc) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
            c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (ptrdiff_t p = 0; p < kp; ++p) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(bp + p * 32));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bp + p * 32 + 16));
        QI_TILE(0);
        QI_TILE(1);
        QI_TILE(2);
        QI_TILE(3);
        QI_TILE(4);
        QI_TILE(5);
    }
    _mm256_storeu_si256((__m256i *)(c + 0 * ldc), c00);
    _mm256_storeu_si256((__m256i *)(c + 0 * ldc + 8), c01);
    _mm256_storeu_si256((__m256i *)(c + 1 * ldc), c10);
    _mm256_storeu_si256((__m256i *)(c + 1 * ldc + 8), c11);
    _mm256_storeu_si256((__m256i *)(c + 2 * ldc), c20);
    _mm256_storeu_si256((__m256i *)(c + 2 * ldc + 8), c21);
    _mm256_storeu_si256((__m256i *)(c + 3 * ldc), c30);
    _mm256_storeu_si256((__m256i *)(c + 3 * ldc + 8), c31);
    _mm256_storeu_si256((__m256i *)(c + 4 * ldc), c40);
    _mm256_storeu_si256((__m256i *)(c + 4 * ldc + 8), c41);
    _mm256_storeu_si256((__m256i *)(c + 5 * ldc), c50);
    _mm256_storeu_si256((__m256i *)(c + 5 * ldc + 8), c51);
}
#undef QI_TILE
#endif

/* C = A B as above; rows a multiple of 6. Returns 0 without AVX2 (nothing done). */
static int qi_gemm16(const int16_t *a, ptrdiff_t rows, ptrdiff_t kp, const int16_t *bp,
                     ptrdiff_t panels, int32_t *c) {
#ifdef QI_HAVE_AVX2_PATH
    if (!qi_avx2()) return 0;
    const ptrdiff_t ldc = panels * 16;
    for (ptrdiff_t panel = 0; panel < panels; ++panel)
        for (ptrdiff_t i = 0; i < rows; i += 6)
            qi_gemm16_tile((const int32_t *)(a + i * 2 * kp), kp, bp + panel * kp * 32,
                           c + i * ldc + panel * 16, ldc);
    return 1;
#else
    (void)a; (void)rows; (void)kp; (void)bp; (void)panels; (void)c;
    return 0;
#endif
}

/* Pack the [k][n] int16 rows of `src` (row stride ld) into the panels of qi_gemm16:
 * bp[panel][p][j][2] = (src[2p][16 panel + j], src[2p + 1][16 panel + j]), zero past
 * k and n. */
QI_CLONES
static void qi_pack16(const int16_t *restrict src, ptrdiff_t k, ptrdiff_t n, ptrdiff_t ld,
                      int16_t *restrict bp) {
    const ptrdiff_t kp = (k + 1) / 2, panels = (n + 15) / 16;
    for (ptrdiff_t panel = 0; panel < panels; ++panel) {
        const ptrdiff_t j0 = panel * 16, width = n - j0 < 16 ? n - j0 : 16;
        for (ptrdiff_t p = 0; p < kp; ++p) {
            int16_t *out = bp + (panel * kp + p) * 32;
            const int16_t *even = src + 2 * p * ld + j0;
            const int16_t *odd = 2 * p + 1 < k ? even + ld : NULL;
            if (width == 16 && odd) {
                for (ptrdiff_t j = 0; j < 16; ++j) {
                    out[2 * j] = even[j];
                    out[2 * j + 1] = odd[j];
                }
                continue;
            }
            for (ptrdiff_t j = 0; j < 16; ++j) {
                out[2 * j] = j < width ? even[j] : 0;
                out[2 * j + 1] = (j < width && odd) ? odd[j] : 0;
            }
        }
    }
}

static int qi_has_avx2(void) {
#ifdef QI_HAVE_AVX2_PATH
    return qi_avx2();
#else
    return 0;
#endif
}

/* dst[r][k] = src[r][k] - zp for r < rows, k < n, as int16 rows of kpad (zero
 * padded; the caller proved |src - zp| <= 32767 and zeroed the padding rows) */
#define QI_TO_I16(NAME, ST)                                                            \
    QI_CLONES static void NAME(const ST *restrict src, ptrdiff_t rows, ptrdiff_t n,        \
                               int32_t zp, int16_t *restrict dst, ptrdiff_t kpad) {    \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                         \
            const ST *in = src + r * n;                                                \
            int16_t *out = dst + r * kpad;                                             \
            for (ptrdiff_t k = 0; k < n; ++k) out[k] = (int16_t)((int32_t)in[k] - zp); \
            for (ptrdiff_t k = n; k < kpad; ++k) out[k] = 0;                           \
        }                                                                              \
    }
QI_TO_I16(qi_to_i16_i8, int8_t)
QI_TO_I16(qi_to_i16_u8, uint8_t)
QI_TO_I16(qi_to_i16_i16, int16_t)
QI_TO_I16(qi_to_i16_u16, uint16_t)
#undef QI_TO_I16

/* ---------------------------------------------------------------------------------
 * Division: round_div and isqrt exactly as reference.py
 * --------------------------------------------------------------------------------- */

/* round_div(num, den) for den > 0: |num| / den rounded half away from zero, signed.
 * Callers never pass INT64_MIN (the spec's overflow checks exclude it). */
QI_INLINE int64_t qi_round_div(int64_t num, int64_t den) {
    const int64_t a = num < 0 ? -num : num;
    int64_t q = a / den;
    const int64_t r = a - q * den;
    q += r >= den - r;
    return num < 0 ? -q : q;
}

/* floor(sqrt(v)) for v >= 0, the steps of reference.isqrt */
QI_INLINE int64_t qi_isqrt(int64_t v) {
    int64_t r = (int64_t)floor(sqrt((double)v));
    if (r > 3037000499LL) r = 3037000499LL;
    for (int k = 0; k < 2; ++k) {
        int64_t safe = r > 1 ? r : 1;
        if (r > 0 && r > v / safe) r -= 1;
    }
    for (int k = 0; k < 2; ++k) {
        int64_t up = r + 1;
        if (up <= v / up) r = up;
    }
    return r;
}

/* round_div(num, total) for |num| < 2^50 and 0 < total < 2^52 (integers), in double
 * arithmetic: y = |num| / total, correctly rounded, lies on the same side of every
 * integer and half-integer as the exact quotient (a non-tie quotient is at least
 * 1 / (2 total) from them; the rounding error is at most y 2^-53 < 1 / (4 total)),
 * and an exact tie or integer quotient is representable, so
 *     round_div = floor(y) + (y - floor(y) >= 1/2)     (ties away from zero)
 * Branch-free (selects of constants only; floor by the 2^52 trick, exact for
 * 0 <= y < 2^52) so that, compiled without trapping-math assumptions, the loop
 * vectorises; the results are the same. */
QI_INLINE double qi_round_div_exact(double num, double total) {
    const double magic = 4503599627370496.0; /* 2^52 */
    const double sign = num < 0.0 ? -1.0 : 1.0;
    const double y = (num * sign) / total;
    double q = (y + magic) - magic;       /* y rounded to an integer */
    q -= q > y ? 1.0 : 0.0;               /* floor(y) */
    q += y - q >= 0.5 ? 1.0 : 0.0;        /* y - floor(y) is exact (Sterbenz) */
    return q * sign;
}

/* o[j] = saturate_int32(round_div(e[j] << f, total)) for one row, on the conditions of
 * qi_round_div_exact. A function of its own so that the loop vectorises (inside the
 * row loop GCC keeps it scalar). */
QI_CLONES __attribute__((optimize("no-trapping-math")))
static void qi_softmax_divide(const int32_t *restrict e, ptrdiff_t n, int f, int64_t total,
                              int32_t *restrict o) {
    const double scale = (double)((int64_t)1 << f), td = (double)total;
    for (ptrdiff_t j = 0; j < n; ++j) {
        double q = qi_round_div_exact((double)e[j] * scale, td);
        q = q < -2147483648.0 ? -2147483648.0 : q;
        q = q > 2147483647.0 ? 2147483647.0 : q;
        o[j] = (int32_t)q;
    }
}

/* softmax over rows of n values: out = round_div(e << f, sum e) with
 * e = table[min(max - x, size - 1)] (reference.softmax). `e` is scratch of n int32.
 * Returns 1 if some row sum is <= 0; *emax gets max |e| over the tensor (the caller
 * checks emax << f against int64, as the spec's _shl does). */
#define QI_SOFTMAX(NAME, ST, DT)                                                       \
    QI_CLONES static int NAME(const ST *restrict x, ptrdiff_t rows, ptrdiff_t n,           \
                              const int32_t *restrict table, int64_t size, int f,      \
                              int32_t *restrict out, int32_t *restrict e, int64_t *emax) { \
        int bad = 0;                                                                   \
        int64_t best = 0;                                                              \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                         \
            const ST *row = x + r * n;                                                 \
            int64_t top = row[0];                                                      \
            for (ptrdiff_t j = 1; j < n; ++j) top = row[j] > top ? row[j] : top;       \
            int64_t total = 0, large = 0;                                              \
            const DT last = (DT)(size - 1 < INT32_MAX ? size - 1 : INT32_MAX);         \
            for (ptrdiff_t j = 0; j < n; ++j) {                                        \
                const DT d = (DT)top - (DT)row[j]; /* DT holds max - x exactly */      \
                const int32_t v = table[d < last ? d : last];                          \
                e[j] = v;                                                              \
                total += v;                                                            \
                const int64_t a = v < 0 ? -(int64_t)v : v;                             \
                large = a > large ? a : large;                                         \
            }                                                                          \
            best = large > best ? large : best;                                        \
            if (total <= 0) {                                                          \
                bad = 1;                                                               \
                continue;                                                              \
            }                                                                          \
            int32_t *o = out + r * n;                                                  \
            if (f <= 50 && large < ((int64_t)1 << (50 - f)) && total < ((int64_t)1 << 52)) { \
                qi_softmax_divide(e, n, f, total, o);                                  \
            } else {                                                                   \
                for (ptrdiff_t j = 0; j < n; ++j)                                      \
                    o[j] = qi_sat32(qi_round_div((int64_t)e[j] * ((int64_t)1 << f), total)); \
            }                                                                          \
        }                                                                              \
        *emax = best;                                                                  \
        return bad;                                                                    \
    }
QI_SOFTMAX(qi_softmax_i8, int8_t, int32_t)
QI_SOFTMAX(qi_softmax_u8, uint8_t, int32_t)
QI_SOFTMAX(qi_softmax_i16, int16_t, int32_t)
QI_SOFTMAX(qi_softmax_u16, uint16_t, int32_t)
QI_SOFTMAX(qi_softmax_i32, int32_t, int64_t)
#undef QI_SOFTMAX

/* ---------------------------------------------------------------------------------
 * Layer normalisation (reference.layernorm), rows of n values
 * --------------------------------------------------------------------------------- */

/* Pass 1: t[r] = sum(x - zp) per row; returns max |n * (x - zp) - t| over all rows */
#define QI_LN_STATS(NAME, ST)                                                          \
    QI_CLONES static int64_t NAME(const ST *restrict x, ptrdiff_t rows, ptrdiff_t n,       \
                                  int64_t zp, int64_t *restrict t) {                   \
        int64_t best = 0;                                                              \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                         \
            const ST *row = x + r * n;                                                 \
            int64_t sum = 0;                                                           \
            for (ptrdiff_t j = 0; j < n; ++j) sum += (int64_t)row[j] - zp;             \
            t[r] = sum;                                                                \
            for (ptrdiff_t j = 0; j < n; ++j) {                                        \
                int64_t d = (int64_t)n * ((int64_t)row[j] - zp) - sum;                 \
                int64_t a = d < 0 ? -d : d;                                            \
                best = a > best ? a : best;                                            \
            }                                                                          \
        }                                                                              \
        return best;                                                                   \
    }

/* Pass 2 (the caller checked dmax^2 * n and dmax << f fit int64): per row
 * d = n * xi - t, V = sum(d^2) / n, w = V + eps (saturating), k from the bits of w
 * and of dmax, den = isqrt(w << 2k), y = round_div(d << (f + k), den) (0 when den is
 * 0), out = saturate_int32(y * g + beta). `d` is scratch of n int64. */
#define QI_LN_ROWS(NAME, ST)                                                           \
    QI_CLONES static void NAME(const ST *restrict x, ptrdiff_t rows, ptrdiff_t n,          \
                               int64_t zp, const int64_t *restrict t, int64_t d_bits,  \
                               int64_t f, int64_t eps, const int64_t *restrict g,      \
                               const int64_t *restrict beta, int32_t *restrict out,    \
                               int64_t *restrict d) {                                  \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                         \
            const ST *row = x + r * n;                                                 \
            int64_t squares = 0;                                                       \
            for (ptrdiff_t j = 0; j < n; ++j) {                                        \
                d[j] = (int64_t)n * ((int64_t)row[j] - zp) - t[r];                     \
                squares += d[j] * d[j];                                                \
            }                                                                          \
            const int64_t v = squares / n;                                             \
            const int64_t w = v > INT64_MAX - eps ? INT64_MAX : v + eps;               \
            int w_bits;                                                                \
            frexp((double)w, &w_bits);                                                 \
            int64_t k = (61 - (int64_t)w_bits) >> 1; /* floor division by 2 */        \
            if (62 - d_bits - f < k) k = 62 - d_bits - f;                              \
            if (k < 0) k = 0;                                                          \
            const int64_t den = qi_isqrt(w << (2 * k));                                \
            int32_t *o = out + r * n;                                                  \
            const int64_t scale = (int64_t)1 << (f + k);                               \
            /* (a reciprocal estimate corrected by the remainder measured slower than   \
             * Zen 3's 64-bit division, which ends early on these small quotients) */   \
            for (ptrdiff_t j = 0; j < n; ++j) {                                        \
                int64_t y = den > 0 ? qi_round_div(d[j] * scale, den) : 0;             \
                int64_t value = y * g[j];                                              \
                if (beta) value += beta[j];                                            \
                o[j] = qi_sat32(value);                                                \
            }                                                                          \
        }                                                                              \
    }
QI_LN_STATS(qi_ln_stats_i8, int8_t)
QI_LN_STATS(qi_ln_stats_u8, uint8_t)
QI_LN_STATS(qi_ln_stats_i16, int16_t)
QI_LN_STATS(qi_ln_stats_u16, uint16_t)
QI_LN_STATS(qi_ln_stats_i32, int32_t)
QI_LN_ROWS(qi_ln_rows_i8, int8_t)
QI_LN_ROWS(qi_ln_rows_u8, uint8_t)
QI_LN_ROWS(qi_ln_rows_i16, int16_t)
QI_LN_ROWS(qi_ln_rows_u16, uint16_t)
QI_LN_ROWS(qi_ln_rows_i32, int32_t)
#undef QI_LN_STATS
#undef QI_LN_ROWS

#endif
