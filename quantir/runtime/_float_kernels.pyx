# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython hot loops of the float engine (float_kernels.py has numpy versions of each).

depthwise_conv2d: each channel is copied into a zero-padded plane once; with unit
strides every kernel tap is then one multiply-add over a long contiguous run of
the flattened plane (the padding columns are computed and dropped), which the
compiler vectorises; other strides walk the output rows.
"""

import numpy as np

cimport numpy as cnp
from libc.string cimport memcpy


cdef extern from "_float_simd.h" nogil:
    void quantir_axpy(float* acc, const float* tap, float weight, Py_ssize_t length)
    void quantir_axpy_strided(float* acc, const float* tap, float weight, Py_ssize_t length,
                              Py_ssize_t stride)
    void quantir_bias_activation(float* y, const float* bias, Py_ssize_t channels,
                                 Py_ssize_t plane, int kind, float low, float high)

cnp.import_array()

cdef Py_ssize_t BLOCK = 1024  # floats: 4 KiB of accumulators


def depthwise_conv2d(const float[:, :, :, ::1] x, const float[:, :, :, ::1] w,
                     const float[::1] bias, int multiplier,
                     int stride_h, int stride_w, int pad_top, int pad_left,
                     int dilation_h, int dilation_w, int out_h, int out_w):
    """out[n, c, oh, ow] = bias[c] + sum_{i,j} w[c, 0, i, j] * x[n, c // multiplier, ih, iw]
    with ih = oh * stride_h - pad_top + i * dilation_h (likewise iw); taps outside the
    input read zero. `bias` may be empty (no bias)."""
    cdef Py_ssize_t batch = x.shape[0], channels = w.shape[0]
    cdef Py_ssize_t height = x.shape[2], width = x.shape[3]
    cdef Py_ssize_t kh = w.shape[2], kw = w.shape[3]
    # The padded plane covers every tap of every output position.
    cdef Py_ssize_t plane_h = (out_h - 1) * stride_h + (kh - 1) * dilation_h + 1
    cdef Py_ssize_t plane_w = (out_w - 1) * stride_w + (kw - 1) * dilation_w + 1
    out = np.empty((batch, channels, out_h, out_w), dtype=np.float32)
    plane_array = np.zeros(plane_h * plane_w, dtype=np.float32)
    acc_array = np.empty(out_h * plane_w, dtype=np.float32)
    cdef float[:, :, :, ::1] o = out
    cdef float* plane = <float*> cnp.PyArray_DATA(plane_array)
    cdef float* acc = <float*> cnp.PyArray_DATA(acc_array)
    cdef Py_ssize_t n, c, ic, r, pr, i, j, q, oh, ow, length, copy_w, block, block_end
    cdef Py_ssize_t first_col = pad_left if pad_left > 0 else 0
    cdef Py_ssize_t skip_col = -pad_left if pad_left < 0 else 0
    cdef float weight, start
    cdef const float* src
    cdef float* dst
    cdef const float* tap
    cdef bint has_bias = bias.shape[0] > 0
    copy_w = width - skip_col
    if first_col + copy_w > plane_w:
        copy_w = plane_w - first_col
    length = (out_h - 1) * plane_w + out_w
    with nogil:
        for n in range(batch):
            for c in range(channels):
                ic = c // multiplier
                if c % multiplier == 0 and copy_w > 0:
                    for r in range(height):
                        pr = r + pad_top
                        if pr < 0 or pr >= plane_h:
                            continue
                        memcpy(plane + pr * plane_w + first_col, &x[n, ic, r, skip_col],
                               copy_w * sizeof(float))
                start = bias[c] if has_bias else 0.0
                if stride_h == 1 and stride_w == 1:
                    # Blocks of the flat run stay in L1 while every tap is added.
                    block = 0
                    while block < length:
                        block_end = block + BLOCK if block + BLOCK < length else length
                        for q in range(block, block_end):
                            acc[q] = start
                        for i in range(kh):
                            for j in range(kw):
                                weight = w[c, 0, i, j]
                                tap = plane + i * dilation_h * plane_w + j * dilation_w
                                quantir_axpy(acc + block, tap + block, weight, block_end - block)
                        block = block_end
                    for oh in range(out_h):
                        memcpy(&o[n, c, oh, 0], acc + oh * plane_w, out_w * sizeof(float))
                else:
                    for oh in range(out_h):
                        dst = &o[n, c, oh, 0]
                        for ow in range(out_w):
                            dst[ow] = start
                        for i in range(kh):
                            src = plane + (oh * stride_h + i * dilation_h) * plane_w
                            for j in range(kw):
                                weight = w[c, 0, i, j]
                                quantir_axpy_strided(dst, src + j * dilation_w, weight, out_w,
                                                     stride_w)
    return out



def bias_activation(float[:, :, ::1] y, const float[::1] bias, int kind, float low, float high):
    """In place: y[n, c, :] = activation(y[n, c, :] + bias[c]) in one pass; `bias` may be
    empty. kind: 0 identity, 1 relu, 2 clip to [low, high], 3 hard swish (ONNX)."""
    cdef Py_ssize_t n, batch = y.shape[0], channels = y.shape[1], plane = y.shape[2]
    cdef const float* b = &bias[0] if bias.shape[0] > 0 else NULL
    if y.shape[0] == 0 or channels == 0 or plane == 0:
        return
    with nogil:
        for n in range(batch):
            quantir_bias_activation(&y[n, 0, 0], b, channels, plane, kind, low, high)
