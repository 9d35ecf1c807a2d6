/* Vectorisable inner loops for _float_kernels.pyx.
 *
 * target_clones compiles each function for AVX2 and for the baseline, and the loader
 * picks the best one for the running CPU (GCC function multiversioning), so the
 * package stays portable while using wide vectors where they exist. The clone is
 * chosen by the CPU *feature* ("avx2"), not by model ("arch=haswell" matched only
 * Intel CPUs), and leaves FMA out, so every machine rounds like the baseline.
 */
#ifndef QUANTIR_FLOAT_SIMD_H
#define QUANTIR_FLOAT_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QUANTIR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QUANTIR_CLONES
#endif

/* acc[q] += weight * tap[q] for q in [0, length) */
QUANTIR_CLONES
static void quantir_axpy(float *restrict acc, const float *restrict tap, float weight,
                         ptrdiff_t length) {
    for (ptrdiff_t q = 0; q < length; ++q) {
        acc[q] += weight * tap[q];
    }
}

/* acc[q] += weight * tap[q * stride] for q in [0, length) */
QUANTIR_CLONES
static void quantir_axpy_strided(float *restrict acc, const float *restrict tap, float weight,
                                 ptrdiff_t length, ptrdiff_t stride) {
    for (ptrdiff_t q = 0; q < length; ++q) {
        acc[q] += weight * tap[q * stride];
    }
}

/* Activation kinds of quantir_bias_activation (match float_kernels.py). */
enum { QUANTIR_IDENTITY = 0, QUANTIR_RELU = 1, QUANTIR_CLIP = 2, QUANTIR_HARD_SWISH = 3 };

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* y[c, p] = activation(y[c, p] + bias[c]) over `channels` rows of `plane` values, in
 * place, one pass. Per element the float operations are numpy's, in numpy's order
 * (bias add; relu: max(0, x); clip: min(max(x, lo), hi); hard swish:
 * x * min(max(x * (1/6) + 0.5, 0), 1)), so results are bit-identical to the numpy
 * kernels; max/min with the value second keep NaN as numpy does. */
QUANTIR_CLONES __attribute__((optimize("fp-contract=off")))
static void quantir_bias_activation(float *restrict y, const float *restrict bias,
                                    ptrdiff_t channels, ptrdiff_t plane, int kind,
                                    float low, float high) {
    const float sixth = 1.0f / 6.0f;
    for (ptrdiff_t c = 0; c < channels; ++c) {
        float *row = y + c * plane;
        const float b = bias ? bias[c] : 0.0f;
        ptrdiff_t p = 0;
#if defined(__SSE2__)
        const __m128 vb = _mm_set1_ps(b), zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
        const __m128 vlow = _mm_set1_ps(low), vhigh = _mm_set1_ps(high);
        const __m128 vsixth = _mm_set1_ps(sixth), half = _mm_set1_ps(0.5f);
        for (; p + 4 <= plane; p += 4) {
            __m128 x = _mm_loadu_ps(row + p);
            if (bias) x = _mm_add_ps(x, vb);
            if (kind == QUANTIR_RELU) {
                x = _mm_max_ps(zero, x);              /* 0 > x ? 0 : x: NaN stays */
            } else if (kind == QUANTIR_CLIP) {
                x = _mm_min_ps(vhigh, _mm_max_ps(vlow, x));
            } else if (kind == QUANTIR_HARD_SWISH) {
                __m128 gate = _mm_add_ps(_mm_mul_ps(x, vsixth), half);
                gate = _mm_min_ps(one, _mm_max_ps(zero, gate));
                x = _mm_mul_ps(x, gate);
            }
            _mm_storeu_ps(row + p, x);
        }
#endif
        for (; p < plane; ++p) {
            float x = row[p];
            if (bias) x = x + b;
            if (kind == QUANTIR_RELU) {
                x = 0.0f > x ? 0.0f : x;
            } else if (kind == QUANTIR_CLIP) {
                x = low > x ? low : x;
                x = high < x ? high : x;
            } else if (kind == QUANTIR_HARD_SWISH) {
                float gate = x * sixth + 0.5f;
                gate = 0.0f > gate ? 0.0f : gate;
                gate = 1.0f < gate ? 1.0f : gate;
                x = x * gate;
            }
            row[p] = x;
        }
    }
}

#endif
