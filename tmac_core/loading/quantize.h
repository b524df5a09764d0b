/* Our float-source quantizer (quantize.c): float32 / float16 / bfloat16 rows -> b-bit codes
 * with a per-group scale and float zero point, w ~ scale * (code - zero). The algorithm is
 * tmac_core/loading/repack.py's quantize() (a clipping search, each candidate refitted by
 * weighted least squares); fastquant.py is the Python face. */
#ifndef TMAC_QUANTIZE_H
#define TMAC_QUANTIZE_H

#include <stdint.h>

enum { TMAC_Q_F32 = 0, TMAC_Q_F16 = 1, TMAC_Q_BF16 = 2 };

#define TMAC_Q_OK 0
#define TMAC_Q_E_ARGS (-1)       /* an argument out of range (bits, group size, shapes, grid) */
#define TMAC_Q_E_NOMEM (-2)
#define TMAC_Q_E_NONFINITE (-3)  /* a NaN or an infinity in the input; *bad is its flat index */

#define TMAC_Q_MAX_BITS 8
#define TMAC_Q_MAX_ALPHAS 64
#define TMAC_Q_MAX_K (1 << 24)

/* Quantizes `rows` rows of `k` values. Row r starts at element r * row_stride of `w`
 * (elements of the source type). codes: uint8 (rows, k); scales, zeros: float32
 * (rows, k / group_size), all contiguous. alphas: the clip factors tried per group.
 * col_imp: NULL, or (k,) error weights per column, finite and >= 0 with a positive one in
 * every group, used in place of the weights' own (w^2 + mean w^2) in every row.
 * Each row's result depends only on that row: any split of rows over threads gives
 * the same output. Scales are > 0, and finite for |w| < 2^125. */
int tmac_quantize_rows(const void *w, int src_type, int64_t row_stride, int64_t rows, int64_t k, int bits,
                       int64_t group_size, const float *alphas, int n_alphas, const float *col_imp, uint8_t *codes,
                       float *scales, float *zeros, int64_t *bad);

#endif
