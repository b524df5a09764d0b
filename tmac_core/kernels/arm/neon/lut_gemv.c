/* NEON twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md §Weights).
 * Per 16-byte lane of an index block: vqtbl1q looks up low nibbles in the
 * table of kgroup 2kp and high nibbles in that of 2kp+1, vzip1/vzip2 pair the
 * two lookups of each row, vpaddlq adds them into int16 and vmlaq_n weights
 * the bit plane. Eight int16x8 accumulators cover the 64 rows; they are
 * flushed once per activation group into the fp32 epilogue with fused
 * multiply-adds in the generic order. Intrinsics only (MSVC ARM64, clang).
 * AArch64 baseline NEON: no dotprod needed. */
#include "tmac/kernels.h"
#if TMAC_ARCH_ARM64
#include <arm_neon.h>

TMAC_INLINE void epilogue8(int16x8_t acc, float32x4_t ls, float32x4_t xs, const uint16_t *sh, const uint16_t *c, float *y) {
    float32x4_t a_lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(acc)));
    float32x4_t a_hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(acc)));
    float32x4_t s_lo = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sh)));
    float32x4_t s_hi = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sh + 4)));
    float32x4_t c_lo = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(c)));
    float32x4_t c_hi = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(c + 4)));
    float32x4_t y_lo = vld1q_f32(y), y_hi = vld1q_f32(y + 4);
    y_lo = vfmaq_f32(y_lo, vmulq_f32(a_lo, ls), s_lo);
    y_hi = vfmaq_f32(y_hi, vmulq_f32(a_hi, ls), s_hi);
    y_lo = vfmaq_f32(y_lo, xs, c_lo);
    y_hi = vfmaq_f32(y_hi, xs, c_hi);
    vst1q_f32(y, y_lo);
    vst1q_f32(y + 4, y_hi);
}

void tmac_gemv_tile_neon(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    const uint8x16_t nibble = vdupq_n_u8(0x0F);
    float y[64];
    for (int r = 0; r < 64; r++) y[r] = 0.0f;

    for (int a = 0; a < n_act_groups; a++) {
        int16x8_t acc[8];            /* acc[L]: rows 8L..8L+7; acc[4+L]: rows 32+8L.. */
        for (int j = 0; j < 8; j++) acc[j] = vdupq_n_s16(0);
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables = lut->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
            const int8x16_t t_lo = vld1q_s8(tables), t_hi = vld1q_s8(tables + 16);
            for (int i = 0; i < bits; i++, block += 64) {
                const int16_t weight = (int16_t)(1 << i);
                for (int lane = 0; lane < 4; lane++) {
                    uint8x16_t v = vld1q_u8(block + 16 * lane);
                    int8x16_t l = vqtbl1q_s8(t_lo, vandq_u8(v, nibble));
                    int8x16_t h = vqtbl1q_s8(t_hi, vshrq_n_u8(v, 4));
                    acc[lane] = vmlaq_n_s16(acc[lane], vpaddlq_s8(vzip1q_s8(l, h)), weight);
                    acc[4 + lane] = vmlaq_n_s16(acc[4 + lane], vpaddlq_s8(vzip2q_s8(l, h)), weight);
                }
            }
        }
        const float32x4_t ls = vdupq_n_f32(lut->scales[a]), xs = vdupq_n_f32(lut->sums[a]);
        const uint16_t *sh = scales + (size_t)a * lut->act_group / w->group_size * 2 * 64;
        const uint16_t *c = sh + 64;
        for (int j = 0; j < 8; j++) epilogue8(acc[j], ls, xs, sh + 8 * j, c + 8 * j, y + 8 * j);
    }
    const float32x4_t ts = vdupq_n_f32(w->tensor_scale);
    for (int r = 0; r < 64; r += 4) vst1q_f32(y64 + r, vmulq_f32(vld1q_f32(y + r), ts));
}

/* The same tile for two activation vectors (prompt chunks). The index bytes
 * and their nibble split (vandq / vshrq) are shared, so per bit plane the
 * loads and splits of the one-token kernel are paid once for both tokens;
 * lookups, zips, pairwise adds and accumulators stay per token. Each half of
 * a 64-byte block (lanes 0-1: rows 0-15/32-47, lanes 2-3: rows 16-31/48-63)
 * is a separate pass, so 8 accumulators, 4 tables, the nibble mask and the
 * temporaries of two lanes fit the 32 q registers without spills. bits stays
 * a run-time value, as on x86 where a constant unrolled plane loop spilled.
 * int16 sums are exact in any order and each token runs the one-token
 * epilogue8 in the same row order, so y0/y1 equal two gemv_tile calls bit
 * for bit. */
void tmac_gemv2_tile_neon(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                          float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut0->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut0->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    const uint8x16_t nibble = vdupq_n_u8(0x0F);
    float y0[64], y1[64];
    for (int r = 0; r < 64; r++) y0[r] = y1[r] = 0.0f;

    for (int a = 0; a < n_act_groups; a++) {
        int16x8_t acc0[8], acc1[8];  /* per token, rows as in the one-token acc[] */
        for (int half = 0; half < 2; half++) {
            int16x8_t a0 = vdupq_n_s16(0), a1 = vdupq_n_s16(0), a2 = vdupq_n_s16(0), a3 = vdupq_n_s16(0);
            int16x8_t b0 = vdupq_n_s16(0), b1 = vdupq_n_s16(0), b2 = vdupq_n_s16(0), b3 = vdupq_n_s16(0);
            const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64 + 32 * half;
            const int8_t *tables0 = lut0->entries + (size_t)a * pairs_per_group * 32;
            const int8_t *tables1 = lut1->entries + (size_t)a * pairs_per_group * 32;
            for (int kp = 0; kp < pairs_per_group; kp++, tables0 += 32, tables1 += 32) {
                const int8x16_t t0_lo = vld1q_s8(tables0), t0_hi = vld1q_s8(tables0 + 16);
                const int8x16_t t1_lo = vld1q_s8(tables1), t1_hi = vld1q_s8(tables1 + 16);
                for (int i = 0; i < bits; i++, block += 64) {
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
            /* lane L = 2*half + {0,1}: zip1 rows 8L.., zip2 rows 32+8L.. */
            acc0[2 * half] = a0; acc0[2 * half + 1] = a1; acc0[4 + 2 * half] = a2; acc0[5 + 2 * half] = a3;
            acc1[2 * half] = b0; acc1[2 * half + 1] = b1; acc1[4 + 2 * half] = b2; acc1[5 + 2 * half] = b3;
        }
        const uint16_t *sh = scales + (size_t)a * lut0->act_group / w->group_size * 2 * 64;
        const uint16_t *c = sh + 64;
        float32x4_t ls = vdupq_n_f32(lut0->scales[a]), xs = vdupq_n_f32(lut0->sums[a]);
        for (int j = 0; j < 8; j++) epilogue8(acc0[j], ls, xs, sh + 8 * j, c + 8 * j, y0 + 8 * j);
        ls = vdupq_n_f32(lut1->scales[a]);
        xs = vdupq_n_f32(lut1->sums[a]);
        for (int j = 0; j < 8; j++) epilogue8(acc1[j], ls, xs, sh + 8 * j, c + 8 * j, y1 + 8 * j);
    }
    const float32x4_t ts = vdupq_n_f32(w->tensor_scale);
    for (int r = 0; r < 64; r += 4) {
        vst1q_f32(y0_64 + r, vmulq_f32(vld1q_f32(y0 + r), ts));
        vst1q_f32(y1_64 + r, vmulq_f32(vld1q_f32(y1 + r), ts));
    }
}
#endif
