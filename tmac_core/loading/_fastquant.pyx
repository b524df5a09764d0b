# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding of the float-source quantizer (quantize.c): one call quantizes a block of
rows with the GIL released, so tmac_core.loading.fastquant runs blocks on several
threads at once. Every shape is checked here, in Python ints, before C sees a pointer;
C checks them again. Use tmac_core.loading.fastquant; this module is its private half."""
from libc.stdint cimport uint8_t, uint16_t, int64_t

cdef extern from "quantize.h" nogil:
    int TMAC_Q_F32, TMAC_Q_F16, TMAC_Q_BF16
    int TMAC_Q_OK, TMAC_Q_E_NOMEM, TMAC_Q_E_NONFINITE
    int TMAC_Q_MAX_BITS, TMAC_Q_MAX_ALPHAS, TMAC_Q_MAX_K
    int tmac_quantize_rows(const void *w, int src_type, int64_t row_stride, int64_t rows, int64_t k, int bits,
                           int64_t group_size, const float *alphas, int n_alphas, uint8_t *codes, float *scales,
                           float *zeros, int64_t *bad)

MAX_BITS = TMAC_Q_MAX_BITS
MAX_K = TMAC_Q_MAX_K


cdef Py_ssize_t _run(const void *src, int src_type, Py_ssize_t row_stride, Py_ssize_t rows, Py_ssize_t k, int bits,
          Py_ssize_t group_size, const float[::1] alphas, uint8_t[:, ::1] codes, float[:, ::1] scales,
          float[:, ::1] zeros):
    if not 1 <= bits <= TMAC_Q_MAX_BITS:
        raise ValueError(f"bits={bits} is outside [1, {TMAC_Q_MAX_BITS}]")
    if not 1 <= k <= TMAC_Q_MAX_K:
        raise ValueError(f"K={k} is outside [1, {TMAC_Q_MAX_K}]")
    if group_size < 1 or k % group_size:
        raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
    if row_stride < k:
        raise ValueError(f"rows overlap or run backwards (row stride {row_stride} < K={k})")
    if not 1 <= alphas.shape[0] <= TMAC_Q_MAX_ALPHAS:
        raise ValueError(f"{alphas.shape[0]} clip factors; 1 to {TMAC_Q_MAX_ALPHAS} are allowed")
    n_groups = k // group_size
    if (codes.shape[0], codes.shape[1]) != (rows, k):
        raise ValueError(f"codes have shape {(codes.shape[0], codes.shape[1])}, expected {(rows, k)}")
    for name, out in (("scales", scales), ("zeros", zeros)):
        if (out.shape[0], out.shape[1]) != (rows, n_groups):
            raise ValueError(f"{name} have shape {(out.shape[0], out.shape[1])}, expected {(rows, n_groups)}")
    if rows == 0:
        return -1
    cdef int64_t bad = -1
    cdef int rc
    with nogil:
        rc = tmac_quantize_rows(src, src_type, row_stride, rows, k, bits, group_size, &alphas[0],
                                <int>alphas.shape[0], &codes[0, 0], &scales[0, 0], &zeros[0, 0], &bad)
    if rc == TMAC_Q_E_NONFINITE:
        return bad
    if rc == TMAC_Q_E_NOMEM:
        raise MemoryError("quantizer scratch")
    if rc != TMAC_Q_OK:
        raise ValueError(f"quantizer refused its arguments (code {rc})")  # a check above missed one
    return -1


cdef Py_ssize_t _row_stride(Py_ssize_t rows, Py_ssize_t k, Py_ssize_t stride_bytes, Py_ssize_t itemsize):
    # numpy may give a single row any stride: it is never followed
    return k if rows == 1 else stride_bytes // itemsize


def quantize_f32(const float[:, ::1] w, int bits, Py_ssize_t group_size, const float[::1] alphas,
                 uint8_t[:, ::1] codes, float[:, ::1] scales, float[:, ::1] zeros):
    """Codes (rows, K), scales and zeros (rows, K / group_size) of float32 rows w (rows, K),
    written into the given arrays. alphas: the clip factors the search tries.
    Returns -1, or the flat index (row * K + col) of the first NaN or infinity, where it stopped."""
    return _run(&w[0, 0] if w.shape[0] and w.shape[1] else NULL, TMAC_Q_F32,
                _row_stride(w.shape[0], w.shape[1], w.strides[0], 4), w.shape[0], w.shape[1], bits,
                group_size, alphas, codes, scales, zeros)


def quantize_f16(const uint16_t[:, ::1] w, int bits, Py_ssize_t group_size, const float[::1] alphas,
                 uint8_t[:, ::1] codes, float[:, ::1] scales, float[:, ::1] zeros):
    """As quantize_f32, for IEEE half-precision rows given as their uint16 bits."""
    return _run(&w[0, 0] if w.shape[0] and w.shape[1] else NULL, TMAC_Q_F16,
                _row_stride(w.shape[0], w.shape[1], w.strides[0], 2), w.shape[0], w.shape[1], bits,
                group_size, alphas, codes, scales, zeros)


def quantize_bf16(const uint16_t[:, ::1] w, int bits, Py_ssize_t group_size, const float[::1] alphas,
                  uint8_t[:, ::1] codes, float[:, ::1] scales, float[:, ::1] zeros):
    """As quantize_f32, for bfloat16 rows given as their uint16 bits."""
    return _run(&w[0, 0] if w.shape[0] and w.shape[1] else NULL, TMAC_Q_BF16,
                _row_stride(w.shape[0], w.shape[1], w.strides[0], 2), w.shape[0], w.shape[1], bits,
                group_size, alphas, codes, scales, zeros)
