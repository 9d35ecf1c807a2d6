/* Vectorisable inner loops for _float_kernels.pyx.
 *
 * target_clones compiles each function for AVX2+FMA and for the baseline, and the
 * loader picks the best one for the running CPU (GCC function multiversioning), so
 * the package stays portable while using wide vectors where they exist.
 */
#ifndef QUANTIR_FLOAT_SIMD_H
#define QUANTIR_FLOAT_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QUANTIR_CLONES __attribute__((target_clones("arch=haswell", "default")))
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

#endif
