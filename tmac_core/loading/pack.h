/* The kernel weight layout written in C (pack.c): the bit planes, the F16 scale pairs and the
 * tile-major (value pair, 64 rows) blocks of kernels/LAYOUT.md §Weights, byte for byte what
 * tmac_core/kernels/layout.py (the spec) writes. fastquant.py is the Python face; every function works on a range of
 * 64-row tiles [t0, t1), so threads split a matrix by tiles, and none keeps state. */
#ifndef TMAC_PACK_H
#define TMAC_PACK_H

#include <stdint.h>

#define TMAC_P_OK 0
#define TMAC_P_E_ARGS (-1)       /* a size, stride or range that does not fit */
#define TMAC_P_E_CODE (-2)       /* a code >= 2^bits; *bad is its flat index row * k + col */
#define TMAC_P_E_NONFINITE (-3)  /* a NaN or infinite scale or zero; *bad is its flat index */
#define TMAC_P_E_F16RANGE (-4)   /* a scale pair outside fp16's range; *bad is its flat index */

#define TMAC_P_TILE_ROWS 64
#define TMAC_P_MAX_BITS 8
#define TMAC_P_MAX_K (1 << 24)

/* Bit planes of the codes (m, k) (uint8, row r at codes + r * row_stride) for tiles [t0, t1):
 * out holds (t1 - t0, k_pad / 8, bits, 64) bytes, out_len of them; rows past m and columns
 * past k are zeros. k_pad is k rounded up to a multiple of 8 or more (layout.py: K, or K
 * rounded up to 64 for one group per row). */
int tmac_pack_planes(const uint8_t *codes, int64_t row_stride, int64_t m, int64_t k, int64_t k_pad, int bits,
                     int64_t t0, int64_t t1, uint8_t *out, int64_t out_len, int64_t *bad);

/* F16 scales. s and z are (m, n) float32 (f64 = 0) or float64 (f64 = 1) with element strides
 * (row, col) each, any of them 0 (a broadcast); z NULL is the symmetric zero 2^(bits-1).
 * In float64, as layout.pack_arrays: sh = s / 2, c = s * ((2^bits - 1) / 2 - z). */

/* The largest |sh| and |c| of the rows [r0, r1) into *peak. */
int tmac_pack_f16_peak(const void *s, int64_t s_rs, int64_t s_cs, const void *z, int64_t z_rs, int64_t z_cs,
                       int f64, int64_t m, int64_t n, int bits, int64_t r0, int64_t r1, double *peak, int64_t *bad);

/* (sh / tensor_scale, c / tensor_scale) rounded to fp16 (nearest even, straight from float64)
 * for tiles [t0, t1): out holds (t1 - t0, n, 2, 64) uint16, out_len of them, rows past m zero. */
int tmac_pack_f16_scales(const void *s, int64_t s_rs, int64_t s_cs, const void *z, int64_t z_rs, int64_t z_cs,
                         int f64, int64_t m, int64_t n, int bits, double tensor_scale, int64_t t0, int64_t t1,
                         uint16_t *out, int64_t out_len, int64_t *bad);

/* Tiles [t0, t1) of a pair of (m, n) arrays of 1- or 2-byte elements (a, b, row strides in
 * elements, contiguous rows) as (t1 - t0, n, 2, 64) elements, out_len of them, rows past m zero:
 * SUPER's fp16 (d, dmin) and int8 (sc, mn). */
int tmac_pack_pairs(const void *a, const void *b, int64_t row_stride, int elem_size, int64_t m, int64_t n,
                    int64_t t0, int64_t t1, void *out, int64_t out_len);


#endif
