# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding of the float-source quantizer (quantize.c): one call quantizes a block of
rows with the GIL released, so tmac_core.loading.fastquant runs blocks on several
threads at once. Every shape is checked here, in Python ints, before C sees a pointer;
C checks them again. Use tmac_core.loading.fastquant; this module is its private half."""
from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t

cdef extern from "quantize.h" nogil:
    int TMAC_Q_F32, TMAC_Q_F16, TMAC_Q_BF16
    int TMAC_Q_OK, TMAC_Q_E_NOMEM, TMAC_Q_E_NONFINITE
    int TMAC_Q_MAX_BITS, TMAC_Q_MAX_ALPHAS, TMAC_Q_MAX_K
    int tmac_quantize_rows(const void *w, int src_type, int64_t row_stride, int64_t rows, int64_t k, int bits,
                           int64_t group_size, const float *alphas, int n_alphas, const float *col_imp,
                           uint8_t *codes, float *scales, float *zeros, int64_t *bad)

MAX_BITS = TMAC_Q_MAX_BITS
MAX_K = TMAC_Q_MAX_K


cdef Py_ssize_t _run(const void *src, int src_type, Py_ssize_t row_stride, Py_ssize_t rows, Py_ssize_t k, int bits,
          Py_ssize_t group_size, const float[::1] alphas, uint8_t[:, ::1] codes, float[:, ::1] scales,
          float[:, ::1] zeros, const float *col_imp=NULL):
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
                                <int>alphas.shape[0], col_imp, &codes[0, 0], &scales[0, 0], &zeros[0, 0], &bad)
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


def quantize_f32_weighted(const float[:, ::1] w, int bits, Py_ssize_t group_size, const float[::1] alphas,
                          const float[::1] col_imp, uint8_t[:, ::1] codes, float[:, ::1] scales, float[:, ::1] zeros):
    """As quantize_f32 with each column's error weighed by col_imp (K,) (E[x_k^2] of the layer's
    input) instead of the weights' own magnitudes. col_imp: finite, >= 0, some weight > 0 in
    every group (ValueError otherwise)."""
    if col_imp.shape[0] != w.shape[1]:
        raise ValueError(f"{col_imp.shape[0]} column importances for K={w.shape[1]}")
    for g0 in range(0, col_imp.shape[0], max(group_size, 1)):
        part = col_imp[g0 : g0 + group_size]
        if not all(0.0 <= v <= 3.4e38 for v in part) or not max(part) > 0.0:
            raise ValueError(f"column importances must be finite and >= 0, some > 0 in each group (at {g0})")
    return _run(&w[0, 0] if w.shape[0] and w.shape[1] else NULL, TMAC_Q_F32,
                _row_stride(w.shape[0], w.shape[1], w.strides[0], 4), w.shape[0], w.shape[1], bits,
                group_size, alphas, codes, scales, zeros, &col_imp[0] if col_imp.shape[0] else NULL)


# - the kernel weight layout (pack.c): layout.py's packing, byte for byte -


cdef extern from "pack.h" nogil:
    int TMAC_P_OK, TMAC_P_E_CODE, TMAC_P_E_NONFINITE, TMAC_P_E_F16RANGE
    int TMAC_P_TILE_ROWS, TMAC_P_MAX_K
    int tmac_pack_planes(const uint8_t *codes, int64_t row_stride, int64_t m, int64_t k, int64_t k_pad, int bits,
                         int64_t t0, int64_t t1, uint8_t *out, int64_t out_len, int64_t *bad)
    int tmac_pack_f16_peak(const void *s, int64_t s_rs, int64_t s_cs, const void *z, int64_t z_rs, int64_t z_cs,
                           int f64, int64_t m, int64_t n, int bits, int64_t r0, int64_t r1, double *peak,
                           int64_t *bad)
    int tmac_pack_f16_scales(const void *s, int64_t s_rs, int64_t s_cs, const void *z, int64_t z_rs, int64_t z_cs,
                             int f64, int64_t m, int64_t n, int bits, double tensor_scale, int64_t t0, int64_t t1,
                             uint16_t *out, int64_t out_len, int64_t *bad)
    int tmac_pack_pairs(const void *a, const void *b, int64_t row_stride, int elem_size, int64_t m, int64_t n,
                        int64_t t0, int64_t t1, void *out, int64_t out_len)

TILE_ROWS = TMAC_P_TILE_ROWS

ctypedef fused real:
    float
    double


cdef inline Py_ssize_t _tiles(Py_ssize_t m) noexcept nogil:
    return (m + TMAC_P_TILE_ROWS - 1) // TMAC_P_TILE_ROWS


cdef _check_tiles(Py_ssize_t m, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t out_len, Py_ssize_t per_tile):
    if m < 1:
        raise ValueError("no rows")
    if not 0 <= t0 <= t1 <= _tiles(m):
        raise ValueError(f"tiles {t0}..{t1} are not within the {_tiles(m)} tiles of {m} rows")
    if out_len != (t1 - t0) * per_tile:
        raise ValueError(f"the destination holds {out_len} values, tiles {t0}..{t1} need {(t1 - t0) * per_tile}")


def pack_planes(const uint8_t[:, ::1] codes, int bits, Py_ssize_t k_pad, Py_ssize_t t0, Py_ssize_t t1,
                uint8_t[::1] out):
    """The bit planes of tiles [t0, t1) of codes (M, K) into out ((t1 - t0) * k_pad / 8 * bits * 64 bytes).
    Returns -1, or the flat index (row * K + col) of a code >= 2**bits, where it stopped."""
    cdef Py_ssize_t m = codes.shape[0], k = codes.shape[1]
    if not 1 <= bits <= TMAC_Q_MAX_BITS:
        raise ValueError(f"bits={bits} is outside [1, {TMAC_Q_MAX_BITS}]")
    if not 1 <= k <= TMAC_P_MAX_K or k_pad < k or k_pad % 8 or k_pad > TMAC_P_MAX_K + 64:
        raise ValueError(f"K={k} with k_pad={k_pad}: k_pad must be K or more, a multiple of 8")
    _check_tiles(m, t0, t1, out.shape[0], k_pad // 8 * bits * TMAC_P_TILE_ROWS)
    cdef int64_t bad = -1
    cdef int rc
    if t0 == t1:
        return -1
    cdef Py_ssize_t stride = _row_stride(m, k, codes.strides[0], 1)
    with nogil:
        rc = tmac_pack_planes(&codes[0, 0], stride, m, k, k_pad, bits, t0, t1, &out[0], out.shape[0], &bad)
    if rc == TMAC_P_E_CODE:
        return bad
    if rc != TMAC_P_OK:
        raise ValueError(f"the plane packer refused its arguments (code {rc})")  # a check above missed one
    return -1


cdef _f16_check(Py_ssize_t m, Py_ssize_t n, Py_ssize_t zm, Py_ssize_t zn, int bits, tuple strides, Py_ssize_t size):
    if any(st % size for st in strides):  # C indexes by elements
        raise ValueError(f"scale or zero strides {strides} are not whole elements of {size} bytes")
    if not 1 <= bits <= TMAC_Q_MAX_BITS:
        raise ValueError(f"bits={bits} is outside [1, {TMAC_Q_MAX_BITS}]")
    if m < 1 or not 1 <= n <= TMAC_P_MAX_K or (zm, zn) != (m, n):
        raise ValueError(f"scales {(m, n)} and zeros {(zm, zn)} must be the same non-empty shape")


def f16_peak(const real[:, :] s, const real[:, :] z, bint has_zeros, int bits):
    """The largest |s / 2| and |s * ((2**bits - 1) / 2 - z)| (z = 2**(bits - 1) without zeros), in
    float64 as layout.pack_arrays computes them. s, z: (M, n), any strides (0 for a broadcast).
    Raises ValueError if a scale or zero is not finite."""
    cdef Py_ssize_t size = sizeof(real)
    _f16_check(s.shape[0], s.shape[1], z.shape[0], z.shape[1], bits,
               (s.strides[0], s.strides[1], z.strides[0], z.strides[1]), size)
    cdef double peak = 0.0
    cdef int64_t bad = -1
    cdef int rc
    with nogil:
        rc = tmac_pack_f16_peak(&s[0, 0], s.strides[0] // size, s.strides[1] // size,
                                &z[0, 0] if has_zeros else NULL, z.strides[0] // size, z.strides[1] // size,
                                real is double, s.shape[0], s.shape[1], bits, 0, s.shape[0], &peak, &bad)
    if rc == TMAC_P_E_NONFINITE:
        raise ValueError("scales and zeros must be finite")
    if rc != TMAC_P_OK:
        raise ValueError(f"the scale packer refused its arguments (code {rc})")
    return peak


def f16_scales(const real[:, :] s, const real[:, :] z, bint has_zeros, int bits, double tensor_scale,
               uint16_t[::1] out):
    """The F16 scale pairs (fp16 bits of s / 2 / tensor_scale and s * ((2**bits - 1) / 2 - z) /
    tensor_scale) of every tile, (tiles, n, 2, 64) uint16, into out. Raises ValueError if one is
    not finite or overflows fp16."""
    cdef Py_ssize_t m = s.shape[0], n = s.shape[1], size = sizeof(real)
    _f16_check(m, n, z.shape[0], z.shape[1], bits, (s.strides[0], s.strides[1], z.strides[0], z.strides[1]), size)
    _check_tiles(m, 0, _tiles(m), out.shape[0], n * 2 * TMAC_P_TILE_ROWS)
    cdef int64_t bad = -1
    cdef int rc
    with nogil:
        rc = tmac_pack_f16_scales(&s[0, 0], s.strides[0] // size, s.strides[1] // size,
                                  &z[0, 0] if has_zeros else NULL, z.strides[0] // size, z.strides[1] // size,
                                  real is double, m, n, bits, tensor_scale, 0, _tiles(m), &out[0], out.shape[0], &bad)
    if rc == TMAC_P_E_NONFINITE:
        raise ValueError("scales and zeros must be finite")
    if rc == TMAC_P_E_F16RANGE:
        raise ValueError(f"tensor_scale={tensor_scale} leaves scales outside fp16's range")
    if rc != TMAC_P_OK:
        raise ValueError(f"the scale packer refused its arguments (code {rc})")


cdef _pairs(const void *a, const void *b, Py_ssize_t a_stride, Py_ssize_t b_stride, Py_ssize_t m, Py_ssize_t n,
            Py_ssize_t bm, Py_ssize_t bn, int size, void *out, Py_ssize_t out_len):
    if (bm, bn) != (m, n) or a_stride != b_stride:
        raise ValueError(f"the pair's arrays {(m, n)} and {(bm, bn)} must have one shape and row stride")
    if not 1 <= n <= TMAC_P_MAX_K:
        raise ValueError(f"{n} values per row")
    _check_tiles(m, 0, _tiles(m), out_len, n * 2 * TMAC_P_TILE_ROWS)
    cdef int rc
    cdef Py_ssize_t stride = n if m == 1 else a_stride // size
    with nogil:
        rc = tmac_pack_pairs(a, b, stride, size, m, n, 0, _tiles(m), out, out_len)
    if rc != TMAC_P_OK:
        raise ValueError(f"the pair packer refused its arguments (code {rc})")


def pair_tiles_u16(const uint16_t[:, ::1] a, const uint16_t[:, ::1] b, uint16_t[::1] out):
    """(a, b), both (M, n), as (tiles, n, 2, 64) into out, rows past M zero (SUPER's fp16 d, dmin)."""
    _pairs(&a[0, 0], &b[0, 0], a.strides[0], b.strides[0], a.shape[0], a.shape[1], b.shape[0], b.shape[1], 2,
           &out[0], out.shape[0])


def pair_tiles_i8(const int8_t[:, ::1] a, const int8_t[:, ::1] b, int8_t[::1] out):
    """As pair_tiles_u16 for int8 (SUPER's sc, mn)."""
    _pairs(&a[0, 0], &b[0, 0], a.strides[0], b.strides[0], a.shape[0], a.shape[1], b.shape[0], b.shape[1], 1,
           &out[0], out.shape[0])
