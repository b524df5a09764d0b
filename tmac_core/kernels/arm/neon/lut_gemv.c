/* NEON twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md §Weights).
 * Per 16-byte lane of an index block: vqtbl1q looks up low nibbles in the
 * table of kgroup 2kp and high nibbles in that of 2kp+1, vzip1/vzip2 pair the
 * two lookups of each row, vpaddlq adds them into int16 and vmlaq_n weights
 * the bit plane. Eight int16x8 accumulators cover the 64 rows (eight more
 * for planes 4-7 of 5..8-bit weights, weighted 2^(i-4) and joined as int32
 * lo + 16 * hi, LAYOUT.md §Accumulation); they are flushed once per
 * activation group into the fp32 epilogue with fused multiply-adds in the
 * generic order, F16_SYM scales deriving c = zero_mult * sh and SUPER(_NOMIN)
 * scales (§Scales SUPER) deriving sh and c there.
 * Intrinsics only (MSVC ARM64, clang).
 * AArch64 baseline NEON: no dotprod needed. */
#include "tmac/kernels.h"
#if TMAC_ARCH_ARM64
#include <arm_neon.h>

/* One act group's scales: F16(_SYM) s = its (sh, c) / (sh) block, sub unused; SUPER(_NOMIN)
 * s = its super-block's (d, dmin) / (d) block, sub = its group's (sc, mn) / (sc) block; 64 rows each. */
typedef struct {
    const uint16_t *s;
    const int8_t *sub;
    float32x4_t kb;            /* SUPER(_NOMIN): code_offset */
    float32x4_t zm;            /* F16_SYM: zero_mult */
} group_scales_t;

TMAC_INLINE group_scales_t group_scales(const tmac_weight_t *w, const uint16_t *scales, const int8_t *sub,
                                        int a, int act_group, const int fmt) {
    const size_t k0 = (size_t)a * act_group;     /* first activation of the group */
    const int super = tmac_fmt_super(fmt), rec = tmac_fmt_records(fmt);
    group_scales_t gs;
    gs.s = scales + k0 / (size_t)(super ? w->super_size : w->group_size) * rec * 64;
    gs.sub = super ? sub + k0 / (size_t)w->group_size * rec * 64 : NULL;
    gs.kb = vdupq_n_f32(w->code_offset);
    gs.zm = vdupq_n_f32((float)w->zero_mult);
    return gs;
}

/* sh, c of rows r..r+3 (layout.h tmac_coeffs_at). F16_SYM: c = zero_mult * sh. SUPER:
 * sh = (0.5 * D) * sf and c = -(Dm * mf - kb * D * sf) with one rounding (vfmsq), which
 * equals the spec's fmaf(kb * D, sf, -(Dm * mf)): round to nearest is symmetric.
 * SUPER_NOMIN: c = -0 + kb * D * sf with one rounding (vfmaq), the spec's fmaf(kb * D, sf, -0).
 * sf, mf: the rows' sub-scales as float. */
TMAC_INLINE void coeffs4(const group_scales_t *gs, int r, float32x4_t sf, float32x4_t mf, const int fmt,
                         float32x4_t *sh, float32x4_t *c) {
    const float32x4_t v0 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(gs->s + r)));
    if (fmt == TMAC_SCALES_F16) {
        *sh = v0;
        *c = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(gs->s + 64 + r)));
        return;
    }
    if (fmt == TMAC_SCALES_F16_SYM) {
        *sh = v0;
        *c = vmulq_f32(gs->zm, v0);
        return;
    }
    *sh = vmulq_f32(vmulq_f32(vdupq_n_f32(0.5f), v0), sf);
    if (fmt == TMAC_SCALES_SUPER) {
        const float32x4_t v1 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(gs->s + 64 + r)));
        *c = vnegq_f32(vfmsq_f32(vmulq_f32(v1, mf), vmulq_f32(gs->kb, v0), sf));
    } else {
        *c = vfmaq_f32(vdupq_n_f32(-0.0f), vmulq_f32(gs->kb, v0), sf);
    }
}

/* sh, c of rows r..r+7, 4 per vector (the two-token tile computes them once for both tokens) */
TMAC_INLINE void coeffs8(const group_scales_t *gs, int r, const int fmt, float32x4_t sh[2], float32x4_t c[2]) {
    float32x4_t sf_lo = vdupq_n_f32(0.0f), sf_hi = sf_lo, mf_lo = sf_lo, mf_hi = sf_lo;
    if (tmac_fmt_super(fmt)) {
        const int16x8_t sc = vmovl_s8(vld1_s8(gs->sub + r));
        sf_lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(sc)));
        sf_hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(sc)));
    }
    if (fmt == TMAC_SCALES_SUPER) {
        const int16x8_t mn = vmovl_s8(vld1_s8(gs->sub + 64 + r));
        mf_lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(mn)));
        mf_hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(mn)));
    }
    coeffs4(gs, r, sf_lo, mf_lo, fmt, &sh[0], &c[0]);
    coeffs4(gs, r + 4, sf_hi, mf_hi, fmt, &sh[1], &c[1]);
}

/* (float)(lo + 16 * hi) of 4 int16 rows; (float)lo when the weight has no planes 4-7 */
TMAC_INLINE float32x4_t acc_f32(int16x4_t lo, int16x4_t hi, const int has_hi) {
    int32x4_t a = vmovl_s16(lo);
    if (has_hi) a = vaddq_s32(a, vshll_n_s16(hi, 4));
    return vcvtq_f32_s32(a);
}

/* y[0..7] = fma(xs, c, fma(acc * ls, sh, y)), exactly the generic order; lo (and
 * hi) hold the 8 rows' int16 sums, sh/c their two coefficient vectors. */
TMAC_INLINE void epilogue8(int16x8_t lo, int16x8_t hi, const int has_hi, float32x4_t ls, float32x4_t xs,
                           const float32x4_t *sh, const float32x4_t *c, float *y) {
    const float32x4_t a_lo = acc_f32(vget_low_s16(lo), vget_low_s16(hi), has_hi);
    const float32x4_t a_hi = acc_f32(vget_high_s16(lo), vget_high_s16(hi), has_hi);
    float32x4_t y_lo = vld1q_f32(y), y_hi = vld1q_f32(y + 4);
    y_lo = vfmaq_f32(y_lo, vmulq_f32(a_lo, ls), sh[0]);
    y_hi = vfmaq_f32(y_hi, vmulq_f32(a_hi, ls), sh[1]);
    y_lo = vfmaq_f32(y_lo, xs, c[0]);
    y_hi = vfmaq_f32(y_hi, xs, c[1]);
    vst1q_f32(y, y_lo);
    vst1q_f32(y + 4, y_hi);
}

/* One plane of one kpair, all four 16-byte lanes, into acc[L] (rows 8L..) and
 * acc[4 + L] (rows 32 + 8L..). */
TMAC_INLINE void step(int8x16_t t_lo, int8x16_t t_hi, const uint8_t *block, int16_t weight, int16x8_t acc[8]) {
    const uint8x16_t nibble = vdupq_n_u8(0x0F);
    for (int lane = 0; lane < 4; lane++) {
        uint8x16_t v = vld1q_u8(block + 16 * lane);
        int8x16_t l = vqtbl1q_s8(t_lo, vandq_u8(v, nibble));
        int8x16_t h = vqtbl1q_s8(t_hi, vshrq_n_u8(v, 4));
        acc[lane] = vmlaq_n_s16(acc[lane], vpaddlq_s8(vzip1q_s8(l, h)), weight);
        acc[4 + lane] = vmlaq_n_s16(acc[4 + lane], vpaddlq_s8(vzip2q_s8(l, h)), weight);
    }
}

/* bits stays a run-time value (the plane loop rolled, as today); has_hi
 * (bits > 4: planes 4-7 in 8 more accumulators, 32 q registers hold them) and
 * fmt are constants. */
TMAC_INLINE void tile1(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64,
                      const int has_hi, const int fmt) {
    const int bits = w->bits;
    const int n_lo = has_hi ? TMAC_PLANES_PER_ACC : bits, n_hi = bits - n_lo;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;            /* (kpairs, bits, 64) */
    /* F16: (n_groups, 2, 64) sh, c; F16_SYM (n_groups, 1, 64) sh; SUPER: (n_super, 2, 64) d, dmin and sub
     * (n_groups, 2, 64) sc, mn; SUPER_NOMIN (n_super, 1, 64) d and (n_groups, 1, 64) sc */
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    float y[64];
    for (int r = 0; r < 64; r++) y[r] = 0.0f;

    for (int a = 0; a < n_act_groups; a++) {
        int16x8_t acc[8], acc_hi[8];     /* acc[L]: rows 8L..8L+7; acc[4+L]: rows 32+8L..; acc_hi: planes 4-7 */
        for (int j = 0; j < 8; j++) acc[j] = acc_hi[j] = vdupq_n_s16(0);
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables = lut->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
            const int8x16_t t_lo = vld1q_s8(tables), t_hi = vld1q_s8(tables + 16);
            for (int i = 0; i < n_lo; i++, block += 64) step(t_lo, t_hi, block, (int16_t)(1 << i), acc);
            if (has_hi)
                for (int i = 0; i < n_hi; i++, block += 64) step(t_lo, t_hi, block, (int16_t)(1 << i), acc_hi);
        }
        const float32x4_t ls = vdupq_n_f32(lut->scales[a]), xs = vdupq_n_f32(lut->sums[a]);
        const group_scales_t gs = group_scales(w, scales, sub, a, lut->act_group, fmt);
        for (int j = 0; j < 8; j++) {
            float32x4_t sh[2], c[2];
            coeffs8(&gs, 8 * j, fmt, sh, c);
            epilogue8(acc[j], acc_hi[j], has_hi, ls, xs, sh, c, y + 8 * j);
        }
    }
    const float32x4_t ts = vdupq_n_f32(w->tensor_scale);
    for (int r = 0; r < 64; r += 4) vst1q_f32(y64 + r, vmulq_f32(vld1q_f32(y + r), ts));
}

void tmac_gemv_tile_neon(const tmac_weight_t *w, const tmac_lut_t *lut, int t, float *TMAC_RESTRICT y64) {
    const int has_hi = w->bits > TMAC_PLANES_PER_ACC;
    switch (w->scale_format) {      /* tmac_check_shapes admitted only these four */
    case TMAC_SCALES_F16:
        if (has_hi) tile1(w, lut, t, y64, 1, TMAC_SCALES_F16);
        else tile1(w, lut, t, y64, 0, TMAC_SCALES_F16);
        break;
    case TMAC_SCALES_F16_SYM:
        if (has_hi) tile1(w, lut, t, y64, 1, TMAC_SCALES_F16_SYM);
        else tile1(w, lut, t, y64, 0, TMAC_SCALES_F16_SYM);
        break;
    case TMAC_SCALES_SUPER:
        if (has_hi) tile1(w, lut, t, y64, 1, TMAC_SCALES_SUPER);
        else tile1(w, lut, t, y64, 0, TMAC_SCALES_SUPER);
        break;
    default:
        if (has_hi) tile1(w, lut, t, y64, 1, TMAC_SCALES_SUPER_NOMIN);
        else tile1(w, lut, t, y64, 0, TMAC_SCALES_SUPER_NOMIN);
        break;
    }
}

/* Planes [p0, p0 + n) of every kpair of one act group, lanes 2*half and
 * 2*half+1 of each block, for two tokens. The index bytes and their nibble
 * split (vandq / vshrq) are shared by the tokens; lookups, zips, pairwise adds
 * and accumulators are per token. acc[0..3]: token 0's rows of lane 2h (zip1),
 * lane 2h+1 (zip1), lane 2h (zip2), lane 2h+1 (zip2); acc[4..7] token 1's. */
TMAC_INLINE void pass2(const uint8_t *block, const int bits, const int p0, const int n, int pairs,
                       const int8_t *tables0, const int8_t *tables1, int16x8_t acc[8]) {
    const uint8x16_t nibble = vdupq_n_u8(0x0F);
    int16x8_t a0 = vdupq_n_s16(0), a1 = vdupq_n_s16(0), a2 = vdupq_n_s16(0), a3 = vdupq_n_s16(0);
    int16x8_t b0 = vdupq_n_s16(0), b1 = vdupq_n_s16(0), b2 = vdupq_n_s16(0), b3 = vdupq_n_s16(0);
    block += (size_t)p0 * 64;
    for (int kp = 0; kp < pairs; kp++, tables0 += 32, tables1 += 32, block += (size_t)(bits - n) * 64) {
        const int8x16_t t0_lo = vld1q_s8(tables0), t0_hi = vld1q_s8(tables0 + 16);
        const int8x16_t t1_lo = vld1q_s8(tables1), t1_hi = vld1q_s8(tables1 + 16);
        for (int i = 0; i < n; i++, block += 64) {
            const int16_t weight = (int16_t)(1 << i);
            const uint8x16_t v0 = vld1q_u8(block), v1 = vld1q_u8(block + 16);
            const uint8x16_t lo0 = vandq_u8(v0, nibble), hi0 = vshrq_n_u8(v0, 4);
            const uint8x16_t lo1 = vandq_u8(v1, nibble), hi1 = vshrq_n_u8(v1, 4);
            int8x16_t l = vqtbl1q_s8(t0_lo, lo0), h = vqtbl1q_s8(t0_hi, hi0);
            a0 = vmlaq_n_s16(a0, vpaddlq_s8(vzip1q_s8(l, h)), weight);
            a2 = vmlaq_n_s16(a2, vpaddlq_s8(vzip2q_s8(l, h)), weight);
            l = vqtbl1q_s8(t0_lo, lo1);
            h = vqtbl1q_s8(t0_hi, hi1);
            a1 = vmlaq_n_s16(a1, vpaddlq_s8(vzip1q_s8(l, h)), weight);
            a3 = vmlaq_n_s16(a3, vpaddlq_s8(vzip2q_s8(l, h)), weight);
            l = vqtbl1q_s8(t1_lo, lo0);
            h = vqtbl1q_s8(t1_hi, hi0);
            b0 = vmlaq_n_s16(b0, vpaddlq_s8(vzip1q_s8(l, h)), weight);
            b2 = vmlaq_n_s16(b2, vpaddlq_s8(vzip2q_s8(l, h)), weight);
            l = vqtbl1q_s8(t1_lo, lo1);
            h = vqtbl1q_s8(t1_hi, hi1);
            b1 = vmlaq_n_s16(b1, vpaddlq_s8(vzip1q_s8(l, h)), weight);
            b3 = vmlaq_n_s16(b3, vpaddlq_s8(vzip2q_s8(l, h)), weight);
        }
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
}

/* The same tile for two activation vectors (prompt chunks): per bit plane
 * the loads and splits of the one-token kernel are paid once for both tokens.
 * Each half of a 64-byte block (lanes 0-1: rows 0-15/32-47, lanes 2-3: rows
 * 16-31/48-63) is a separate pass, so 8 accumulators, 4 tables, the nibble
 * mask and the temporaries of two lanes fit the 32 q registers without
 * spills; bits 5..8 take a second pass per half for planes 4-7, for the same
 * reason. bits stays a run-time value, as on x86 where a constant unrolled
 * plane loop spilled. int16 sums are exact in any order and each token runs
 * the one-token epilogue8, so y0/y1 equal two gemv_tile calls bit for bit. */
TMAC_INLINE void tile2(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                       float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64, const int has_hi, const int fmt) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut0->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut0->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    float y0[64], y1[64];
    for (int r = 0; r < 64; r++) y0[r] = y1[r] = 0.0f;

    for (int a = 0; a < n_act_groups; a++) {
        const float32x4_t ls0 = vdupq_n_f32(lut0->scales[a]), xs0 = vdupq_n_f32(lut0->sums[a]);
        const float32x4_t ls1 = vdupq_n_f32(lut1->scales[a]), xs1 = vdupq_n_f32(lut1->sums[a]);
        const group_scales_t gs = group_scales(w, scales, sub, a, lut0->act_group, fmt);
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables0 = lut0->entries + (size_t)a * pairs_per_group * 32;
        const int8_t *tables1 = lut1->entries + (size_t)a * pairs_per_group * 32;
        for (int half = 0; half < 2; half++) {
            int16x8_t lo[8], hi[8];          /* as pass2's acc */
            if (has_hi) {
                pass2(block + 32 * half, bits, 0, TMAC_PLANES_PER_ACC, pairs_per_group, tables0, tables1, lo);
                pass2(block + 32 * half, bits, TMAC_PLANES_PER_ACC, bits - TMAC_PLANES_PER_ACC, pairs_per_group,
                      tables0, tables1, hi);
            } else {
                pass2(block + 32 * half, bits, 0, bits, pairs_per_group, tables0, tables1, lo);
                for (int j = 0; j < 8; j++) hi[j] = vdupq_n_s16(0);
            }
            /* lane L = 2*half + {0,1}: zip1 rows 8L.., zip2 rows 32+8L.. */
            for (int j = 0; j < 4; j++) {
                const int row = (j & 2 ? 32 : 0) + 8 * (2 * half + (j & 1));
                float32x4_t sh[2], c[2];
                coeffs8(&gs, row, fmt, sh, c);
                epilogue8(lo[j], hi[j], has_hi, ls0, xs0, sh, c, y0 + row);
                epilogue8(lo[4 + j], hi[4 + j], has_hi, ls1, xs1, sh, c, y1 + row);
            }
        }
    }
    const float32x4_t ts = vdupq_n_f32(w->tensor_scale);
    for (int r = 0; r < 64; r += 4) {
        vst1q_f32(y0_64 + r, vmulq_f32(vld1q_f32(y0 + r), ts));
        vst1q_f32(y1_64 + r, vmulq_f32(vld1q_f32(y1 + r), ts));
    }
}

void tmac_gemv2_tile_neon(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int t,
                          float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64) {
    const int has_hi = w->bits > TMAC_PLANES_PER_ACC;
    switch (w->scale_format) {      /* tmac_check_shapes admitted only these four */
    case TMAC_SCALES_F16:
        if (has_hi) tile2(w, lut0, lut1, t, y0_64, y1_64, 1, TMAC_SCALES_F16);
        else tile2(w, lut0, lut1, t, y0_64, y1_64, 0, TMAC_SCALES_F16);
        break;
    case TMAC_SCALES_F16_SYM:
        if (has_hi) tile2(w, lut0, lut1, t, y0_64, y1_64, 1, TMAC_SCALES_F16_SYM);
        else tile2(w, lut0, lut1, t, y0_64, y1_64, 0, TMAC_SCALES_F16_SYM);
        break;
    case TMAC_SCALES_SUPER:
        if (has_hi) tile2(w, lut0, lut1, t, y0_64, y1_64, 1, TMAC_SCALES_SUPER);
        else tile2(w, lut0, lut1, t, y0_64, y1_64, 0, TMAC_SCALES_SUPER);
        break;
    default:
        if (has_hi) tile2(w, lut0, lut1, t, y0_64, y1_64, 1, TMAC_SCALES_SUPER_NOMIN);
        else tile2(w, lut0, lut1, t, y0_64, y1_64, 0, TMAC_SCALES_SUPER_NOMIN);
        break;
    }
}
/* ---- gemm_tile: two tokens per pass, lookups widened by vaddl ----
 *
 * A row's low- and high-nibble lookups sit at the same byte of the two vqtbl1q
 * results, and vaddl_s8 / vaddl_high_s8 add them straight into int16 (rows
 * 8L.. from bytes 0-7, 32+8L.. from bytes 8-15: the rows of vzip1 / vzip2 in
 * pass2): per token, lane and plane two lookups, two widening adds and two
 * multiply-accumulates instead of also two zips and two pairwise adds. The
 * index loads and nibble splits are shared by the tokens. Same int16 sums,
 * same epilogue8: bit-identical to gemv_tile per token (the spec,
 * generic/lut_gemv.c tmac_gemm_tile_generic). */

/* pass2 with vaddl for T (1 or 2) tokens; acc as in pass2 (token 1 in acc[4..7]) */
TMAC_INLINE void passN(const uint8_t *block, const int bits, const int p0, const int n, int pairs,
                       const int8_t *tables0, const int8_t *tables1, const int T, int16x8_t acc[8]) {
    const uint8x16_t nibble = vdupq_n_u8(0x0F);
    int16x8_t a0 = vdupq_n_s16(0), a1 = vdupq_n_s16(0), a2 = vdupq_n_s16(0), a3 = vdupq_n_s16(0);
    int16x8_t b0 = vdupq_n_s16(0), b1 = vdupq_n_s16(0), b2 = vdupq_n_s16(0), b3 = vdupq_n_s16(0);
    block += (size_t)p0 * 64;
    for (int kp = 0; kp < pairs; kp++, tables0 += 32, tables1 += 32, block += (size_t)(bits - n) * 64) {
        const int8x16_t t0_lo = vld1q_s8(tables0), t0_hi = vld1q_s8(tables0 + 16);
        const int8x16_t t1_lo = T == 2 ? vld1q_s8(tables1) : t0_lo, t1_hi = T == 2 ? vld1q_s8(tables1 + 16) : t0_hi;
        for (int i = 0; i < n; i++, block += 64) {
            const int16_t weight = (int16_t)(1 << i);
            const uint8x16_t v0 = vld1q_u8(block), v1 = vld1q_u8(block + 16);
            const uint8x16_t lo0 = vandq_u8(v0, nibble), hi0 = vshrq_n_u8(v0, 4);
            const uint8x16_t lo1 = vandq_u8(v1, nibble), hi1 = vshrq_n_u8(v1, 4);
            int8x16_t l = vqtbl1q_s8(t0_lo, lo0), h = vqtbl1q_s8(t0_hi, hi0);
            a0 = vmlaq_n_s16(a0, vaddl_s8(vget_low_s8(l), vget_low_s8(h)), weight);
            a2 = vmlaq_n_s16(a2, vaddl_high_s8(l, h), weight);
            l = vqtbl1q_s8(t0_lo, lo1);
            h = vqtbl1q_s8(t0_hi, hi1);
            a1 = vmlaq_n_s16(a1, vaddl_s8(vget_low_s8(l), vget_low_s8(h)), weight);
            a3 = vmlaq_n_s16(a3, vaddl_high_s8(l, h), weight);
            if (T == 2) {
                l = vqtbl1q_s8(t1_lo, lo0);
                h = vqtbl1q_s8(t1_hi, hi0);
                b0 = vmlaq_n_s16(b0, vaddl_s8(vget_low_s8(l), vget_low_s8(h)), weight);
                b2 = vmlaq_n_s16(b2, vaddl_high_s8(l, h), weight);
                l = vqtbl1q_s8(t1_lo, lo1);
                h = vqtbl1q_s8(t1_hi, hi1);
                b1 = vmlaq_n_s16(b1, vaddl_s8(vget_low_s8(l), vget_low_s8(h)), weight);
                b3 = vmlaq_n_s16(b3, vaddl_high_s8(l, h), weight);
            }
        }
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
}

/* tile2's structure for T (1 or 2) tokens; T, has_hi and fmt constant */
TMAC_INLINE void tileN(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *TMAC_RESTRICT y64,
                       const int T, const int has_hi, const int fmt) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = luts[0].act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / luts[0].act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    float y[2][64];
    for (int r = 0; r < 64; r++) y[0][r] = y[1][r] = 0.0f;

    for (int a = 0; a < n_act_groups; a++) {
        const group_scales_t gs = group_scales(w, scales, sub, a, luts[0].act_group, fmt);
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const size_t tab = (size_t)a * pairs_per_group * 32;
        const int8_t *tables0 = luts[0].entries + tab, *tables1 = T == 2 ? luts[1].entries + tab : tables0;
        for (int half = 0; half < 2; half++) {
            int16x8_t lo[8], hi[8];          /* as pass2's acc */
            if (has_hi) {
                passN(block + 32 * half, bits, 0, TMAC_PLANES_PER_ACC, pairs_per_group, tables0, tables1, T, lo);
                passN(block + 32 * half, bits, TMAC_PLANES_PER_ACC, bits - TMAC_PLANES_PER_ACC, pairs_per_group,
                      tables0, tables1, T, hi);
            } else {
                passN(block + 32 * half, bits, 0, bits, pairs_per_group, tables0, tables1, T, lo);
                for (int j = 0; j < 8; j++) hi[j] = vdupq_n_s16(0);
            }
            /* lane L = 2*half + {0,1}: bytes 0-7 rows 8L.., bytes 8-15 rows 32+8L.. */
            for (int j = 0; j < 4; j++) {
                const int row = (j & 2 ? 32 : 0) + 8 * (2 * half + (j & 1));
                float32x4_t sh[2], c[2];
                coeffs8(&gs, row, fmt, sh, c);
                for (int t = 0; t < T; t++) {
                    const float32x4_t ls = vdupq_n_f32(luts[t].scales[a]), xs = vdupq_n_f32(luts[t].sums[a]);
                    epilogue8(lo[4 * t + j], hi[4 * t + j], has_hi, ls, xs, sh, c, y[t] + row);
                }
            }
        }
    }
    const float32x4_t ts = vdupq_n_f32(w->tensor_scale);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 64; r += 4) vst1q_f32(y64 + (size_t)t * 64 + r, vmulq_f32(vld1q_f32(y[t] + r), ts));
}

TMAC_INLINE void tileN_fmt(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T) {
    const int has_hi = w->bits > TMAC_PLANES_PER_ACC;
    switch (w->scale_format) {      /* tmac_check_shapes admitted only these four */
    case TMAC_SCALES_F16:
        if (has_hi) tileN(w, luts, tile, y64, T, 1, TMAC_SCALES_F16);
        else tileN(w, luts, tile, y64, T, 0, TMAC_SCALES_F16);
        break;
    case TMAC_SCALES_F16_SYM:
        if (has_hi) tileN(w, luts, tile, y64, T, 1, TMAC_SCALES_F16_SYM);
        else tileN(w, luts, tile, y64, T, 0, TMAC_SCALES_F16_SYM);
        break;
    case TMAC_SCALES_SUPER:
        if (has_hi) tileN(w, luts, tile, y64, T, 1, TMAC_SCALES_SUPER);
        else tileN(w, luts, tile, y64, T, 0, TMAC_SCALES_SUPER);
        break;
    default:
        if (has_hi) tileN(w, luts, tile, y64, T, 1, TMAC_SCALES_SUPER_NOMIN);
        else tileN(w, luts, tile, y64, T, 0, TMAC_SCALES_SUPER_NOMIN);
        break;
    }
}

void tmac_gemm_tile_neon(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64) {
    int t = 0;
    for (; t + 2 <= n; t += 2) tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 2);
    if (t < n) tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 1);
}
#endif
