/* Packed layouts of the LUT kernels, version TMAC_LAYOUT_VERSION.
 * Written down three times: here (structs + static asserts), in LAYOUT.md
 * (prose, same section names) and in tmac_core/kernels/layout.py (numpy
 * pack/unpack, tested against golden bytes). Change one, change all three and
 * bump the version. */
#ifndef TMAC_LAYOUT_H
#define TMAC_LAYOUT_H

#include <math.h>
#include "tmac/platform.h"

#define TMAC_LAYOUT_VERSION 3

#define TMAC_TILE_ROWS 64          /* output rows per weight tile (one zmm of indices) */
#define TMAC_KGROUP 4              /* activations per 16-entry table */
#define TMAC_LUT_ENTRIES 16
#define TMAC_KPAIR 8               /* activations per index byte: two kgroups */
#define TMAC_MAX_BITS 8
/* int16 accumulation bound (LAYOUT.md §Accumulation): planes 0..3 and planes 4..7
 * go to two accumulators, each at most 127 * 2 * (2^4 - 1) * A/8, which must stay
 * <= 32767: it holds for A <= 64 (30480) and fails at A = 128. */
#define TMAC_MAX_ACT_GROUP 64
#define TMAC_MIN_ACT_GROUP 16
#define TMAC_PLANES_PER_ACC 4      /* planes summed into one int16 accumulator */

/* §Scale formats (tmac_weight_t.scale_format) */
#define TMAC_SCALES_F16 0          /* v1: fp16 (sh, c) per row and group */
#define TMAC_SCALES_SUPER 1        /* K-quant style: fp16 (d, dmin) per super-block, int8 (sc, mn) per group */
#define TMAC_SCALES_F16_SYM 2      /* v3: fp16 sh per row and group, c = zero_mult * sh (symmetric sources) */
#define TMAC_SCALES_SUPER_NOMIN 3  /* v3: SUPER without mins: fp16 d per super-block, int8 sc per group */
#define TMAC_SCALES_FORMATS 4
/* F16_SYM: |zero_mult| <= 255, so zero_mult * sh (11 significant bits) is exact in fp32 */
#define TMAC_MAX_ZERO_MULT 255

/* §Weights. w[m,k] = s[m,g] * (q[m,k] - z[m,g]), q in [0, 2^bits), bits 1..8.
 * planes: (m_pad/64 tiles, k_pad/8 kpairs, bits, 64 bytes). Byte p of a 64-byte
 *   block: lane L = p/16, u = p%16, row = u < 8 ? 8L + u : 32 + 8L + (u - 8);
 *   low nibble = plane bits of q at k = 8*kpair + 0..3 (bit j <-> k + j),
 *   high nibble = the same for k = 8*kpair + 4..7.
 * F16 (§Scales F16) scales: (m_pad/64 tiles, n_groups, 2, 64) fp16, natural row order:
 *   [0] = sh = s/2 / tensor_scale, [1] = c = s*((2^bits-1)/2 - z) / tensor_scale.
 * SUPER (§Scales SUPER), w = d[u]*sc[g]*(q - z0) - dmin[u]*mn[g], u the super-block:
 *   scales: (m_pad/64 tiles, n_super, 2, 64) fp16, natural row order: [0] = d, [1] = dmin;
 *   sub:    (m_pad/64 tiles, n_groups, 2, 64) int8, natural row order: [0] = sc, [1] = mn;
 *   the epilogue derives sh, c from them exactly (tmac_super_coeffs).
 * F16_SYM (§Scales F16_SYM): scales (m_pad/64 tiles, n_groups, 1, 64) fp16 = sh / tensor_scale;
 *   c = zero_mult * sh in fp32 (exact), zero_mult = 2^bits - 1 - 2z, one per tensor.
 * SUPER_NOMIN (§Scales SUPER_NOMIN), w = d[u]*sc[g]*(q - z0): scales (m_pad/64, n_super, 1, 64)
 *   fp16 d, sub (m_pad/64, n_groups, 1, 64) int8 sc (tmac_super_nomin_coeffs). */
typedef struct {
    const uint8_t *planes;
    const uint16_t *scales;
    int32_t m, k;                  /* logical shape */
    int32_t m_pad, k_pad;          /* m_pad = roundup(m, 64); k_pad % group_size == 0 */
    int32_t bits;                  /* 1..8 */
    int32_t group_size;            /* along K: 16, 32, 64, 128, 256, or k_pad (per-row scales, k_pad % 64 == 0) */
    int32_t n_groups;              /* k_pad / group_size */
    float tensor_scale;            /* power of two that keeps the fp16 scales in range (SUPER: 1) */
    int32_t scale_format;          /* TMAC_SCALES_F16, _SUPER, _F16_SYM or _SUPER_NOMIN */
    int32_t super_size;            /* SUPER(_NOMIN): weights per super-block, a multiple of group_size dividing k_pad; else 0 */
    int32_t n_super;               /* SUPER(_NOMIN): k_pad / super_size; else 0 */
    float code_offset;             /* SUPER(_NOMIN): kb = (2^bits - 1)/2 - z0; else 0 */
    const int8_t *sub;             /* SUPER: the int8 (sc, mn) above; SUPER_NOMIN: sc; else NULL */
    int32_t zero_mult;             /* F16_SYM: c = zero_mult * sh, odd, |zero_mult| <= TMAC_MAX_ZERO_MULT; else 0 */
} tmac_weight_t;

/* §Tables. One per activation vector x (k_pad,), zero-padded past k.
 * entries: (k_pad/4, 16) int8; entry idx of kgroup g ~ sum_j x[4g+j] * (bit j of idx ? +1 : -1) / scale,
 *   round half to even, |entry| <= 127, entries[15 - idx] = -entries[idx].
 * scales: (k_pad/act_group) fp32 = max over the group's kgroups of sum|x_j| / 127.
 * sums:   (k_pad/act_group) fp32 = sum of x over the group, in kgroup order. */
typedef struct {
    const int8_t *entries;
    const float *scales;
    const float *sums;
    int32_t k_pad;
    int32_t act_group;             /* 16, 32 or 64 */
} tmac_lut_t;

TMAC_STATIC_ASSERT(TMAC_TILE_ROWS == 64, "the byte->row map assumes 4 lanes of 16 bytes");
TMAC_STATIC_ASSERT(TMAC_KPAIR == 2 * TMAC_KGROUP, "one index byte holds two kgroups");
TMAC_STATIC_ASSERT(127 * 2 * ((1 << TMAC_PLANES_PER_ACC) - 1) * (TMAC_MAX_ACT_GROUP / TMAC_KPAIR) <= 32767,
                   "int16 accumulators overflow at this activation group size");
TMAC_STATIC_ASSERT(TMAC_MAX_BITS <= 2 * TMAC_PLANES_PER_ACC, "two int16 accumulators hold at most 8 planes");
/* acc = acc_lo + 16 * acc_hi must convert to float exactly */
TMAC_STATIC_ASSERT(30480 * 17 < (1 << 24), "the int32 accumulator must be exact in fp32");
TMAC_STATIC_ASSERT(sizeof(uint16_t) == 2, "fp16 scales are stored as uint16");

/* Row of the output tile that byte p (0..63) of an index block belongs to. */
static inline int tmac_row_of_byte(int p) {
    int lane = p >> 4, u = p & 15;
    return u < 8 ? 8 * lane + u : 32 + 8 * lane + (u - 8);
}

/* Byte (0..63) of an index block that holds row r (0..63) of the tile: the inverse of
 * tmac_row_of_byte. */
static inline int tmac_byte_of_row(int r) {
    return 16 * ((r % 32) / 8) + (r % 8) + (r >= 32 ? 8 : 0);
}

/* Scale formats that keep SUPER's super-blocks and int8 sub-scales */
static inline int tmac_fmt_super(int fmt) { return fmt == TMAC_SCALES_SUPER || fmt == TMAC_SCALES_SUPER_NOMIN; }

/* fp16 (and int8) records per row and group (super-block): 2 = (sh, c) or (d, dmin) / (sc, mn);
 * 1 = sh, or d / sc */
static inline int tmac_fmt_records(int fmt) { return fmt == TMAC_SCALES_F16 || fmt == TMAC_SCALES_SUPER ? 2 : 1; }

/* The fp16 scale blocks of one tile: (n_groups or n_super, records, 64) */
static inline const uint16_t *tmac_tile_scales(const tmac_weight_t *w, int tile) {
    const int fmt = w->scale_format;
    return w->scales + (size_t)tile * (tmac_fmt_super(fmt) ? w->n_super : w->n_groups) * tmac_fmt_records(fmt) * 64;
}

/* The int8 sub-scale blocks of one tile, (n_groups, records, 64); NULL without sub-scales */
static inline const int8_t *tmac_tile_sub(const tmac_weight_t *w, int tile) {
    const int fmt = w->scale_format;
    return tmac_fmt_super(fmt) ? w->sub + (size_t)tile * w->n_groups * tmac_fmt_records(fmt) * 64 : NULL;
}

/* §Scales F16_SYM: c = zero_mult * sh in fp32. Exact: sh is an fp16 value (11 significant
 * bits) and |zero_mult| <= 255 (8 bits), 19 bits in all, and |c| < 2^15 * 255 stays far from
 * fp32's range, so c is the same float as version 2's fp16 c wherever that one was exact. */
static inline float tmac_sym_offset(int32_t zero_mult, float sh) { return (float)zero_mult * sh; }

/* §Scales SUPER: the epilogue coefficients of row r in group g of super-block u,
 * EXACTLY these fp32 operations in every tier (kernel files build with
 * -ffp-contract=off): sh = (0.5 * D) * sf is exact (11 + 8 significant bits);
 * code_offset * D and Dm * mf are exact, so c has ONE rounding, in the fma. */
static inline void tmac_super_coeffs(uint16_t d, uint16_t dmin, int8_t sc, int8_t mn, float code_offset,
                                     float *sh, float *c) {
    const float D = tmac_fp16_to_fp32(d), Dm = tmac_fp16_to_fp32(dmin);
    const float sf = (float)sc, mf = (float)mn;
    *sh = (0.5f * D) * sf;
    *c = fmaf(code_offset * D, sf, -(Dm * mf));
}

/* §Scales SUPER_NOMIN: tmac_super_coeffs with dmin = mn = 0, the same IEEE operations:
 * c = fmaf(code_offset * D, sf, -0.0f), which is what fmaf(.., .., -(0 * 0)) computes. */
static inline void tmac_super_nomin_coeffs(uint16_t d, int8_t sc, float code_offset, float *sh, float *c) {
    const float D = tmac_fp16_to_fp32(d);
    const float sf = (float)sc;
    *sh = (0.5f * D) * sf;
    *c = fmaf(code_offset * D, sf, -0.0f);
}

/* sh, c of row r (0..63) at activation k, from one tile's scales and sub (tmac_tile_scales,
 * tmac_tile_sub): read (F16), derived (F16_SYM, SUPER, SUPER_NOMIN). The scalar spec every
 * tier's epilogue reproduces. */
static inline void tmac_coeffs_at(const tmac_weight_t *w, const uint16_t *scales, const int8_t *sub, int64_t k,
                                  int r, float *sh, float *c) {
    const int fmt = w->scale_format, rec = tmac_fmt_records(fmt);
    if (tmac_fmt_super(fmt)) {
        const uint16_t *su = scales + (size_t)(k / w->super_size) * rec * 64;
        const int8_t *sg = sub + (size_t)(k / w->group_size) * rec * 64;
        if (fmt == TMAC_SCALES_SUPER) tmac_super_coeffs(su[r], su[64 + r], sg[r], sg[64 + r], w->code_offset, sh, c);
        else tmac_super_nomin_coeffs(su[r], sg[r], w->code_offset, sh, c);
    } else {
        const uint16_t *sg = scales + (size_t)(k / w->group_size) * rec * 64;
        *sh = tmac_fp16_to_fp32(sg[r]);
        *c = fmt == TMAC_SCALES_F16 ? tmac_fp16_to_fp32(sg[64 + r]) : tmac_sym_offset(w->zero_mult, *sh);
    }
}

/* Row `row` (0 <= row < w->m) of a packed matrix as fp32: out[k] for k < w->k, the
 * weights the kernel multiplies by, w = 2*sh*q - sh*(2^bits - 1) + c (layout.py's
 * dequantize, in double, rounded once to float), sh and c by tmac_coeffs_at. The model runtime reads the embedding table this
 * way: the same packed table the (tied) output layer uses. */
static inline void tmac_weight_row_f32(const tmac_weight_t *w, int row, float *out) {
    int tile = row / TMAC_TILE_ROWS, r = row % TMAC_TILE_ROWS, byte_pos = tmac_byte_of_row(r);
    int kpairs = w->k_pad / TMAC_KPAIR;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * w->bits * 64;     /* (kpairs, bits, 64) */
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    for (int k = 0; k < w->k; k++) {
        int kp = k / TMAC_KPAIR, j = k % TMAC_KPAIR, q = 0;
        for (int i = 0; i < w->bits; i++) {
            uint8_t byte = planes[((size_t)kp * w->bits + i) * 64 + byte_pos];
            int nibble = j < TMAC_KGROUP ? (byte & 15) : (byte >> 4);
            q |= ((nibble >> (j % TMAC_KGROUP)) & 1) << i;
        }
        float shf, cf;
        tmac_coeffs_at(w, scales, sub, k, r, &shf, &cf);
        const double sh = shf, c = cf;
        out[k] = (float)((2.0 * sh * q - sh * ((1 << w->bits) - 1) + c) * w->tensor_scale);
    }
}

#endif
