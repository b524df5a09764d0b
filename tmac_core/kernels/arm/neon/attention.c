/* NEON twin of generic/attention.c:tmac_attn_block_generic (kernels.h
 * §attention). Same plan as the AVX2 tier in 4-lane registers: K rows widened
 * once (vcvt_f32_f16) into an L1 row and dotted with each query head, exp as a
 * degree-6 polynomial after range reduction by ln 2, V rows widened per query
 * head into 16 accumulators (64 output columns). Needs hd % 8 == 0.
 * AArch64 baseline NEON; intrinsics only (MSVC ARM64, clang). */
#include <math.h>
#include "tmac/kernels.h"
#if TMAC_ARCH_ARM64
#include <arm_neon.h>
#include "tmac/neon_exp.h"


TMAC_INLINE float32x4_t load_ph(const uint16_t *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

void tmac_attn_block_neon(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                          const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                          float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o) {
    TMAC_ALIGN(16) float s[TMAC_ATTN_MAX_GROUP][TMAC_ATTN_BLOCK];   /* scores, then exp(s - m); -inf padded */
    TMAC_ALIGN(16) float row[TMAC_ATTN_MAX_HEAD_DIM];
    const int n8 = (n_pos + 7) & ~7;

    for (int j = 0; j < n_pos; j++) {
        for (int i = 0; i < hd; i += 4) vst1q_f32(row + i, load_ph(k + (size_t)j * hd + i));
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
            for (int i = 0; i < hd; i += 8) {
                a0 = vfmaq_f32(a0, vld1q_f32(qg + i), vld1q_f32(row + i));
                a1 = vfmaq_f32(a1, vld1q_f32(qg + i + 4), vld1q_f32(row + i + 4));
            }
            s[g][j] = vaddvq_f32(vaddq_f32(a0, a1)) * scale;
        }
    }
    for (int g = 0; g < G; g++) {
        for (int j = n_pos; j < n8; j++) s[g][j] = -INFINITY;
        float32x4_t mx = vdupq_n_f32(-INFINITY);
        for (int j = 0; j < n8; j += 4) mx = vmaxq_f32(mx, vld1q_f32(&s[g][j]));
        const float mg = vmaxvq_f32(mx);
        float32x4_t total = vdupq_n_f32(0);
        for (int j = 0; j < n8; j += 4) {
            const float32x4_t e = exp_f32(vsubq_f32(vld1q_f32(&s[g][j]), vdupq_n_f32(mg)));
            vst1q_f32(&s[g][j], e);
            total = vaddq_f32(total, e);
        }
        m[g] = mg;
        l[g] = vaddvq_f32(total);
    }
    for (int g = 0; g < G; g++) {
        for (int c = 0; c < hd; c += 64) {        /* 64 output columns in 16 accumulators */
            const int nv = (hd - c) / 4 < 16 ? (hd - c) / 4 : 16;
            float32x4_t acc[16];
            for (int u = 0; u < 16; u++) acc[u] = vdupq_n_f32(0);
            for (int j = 0; j < n_pos; j++) {
                const float32x4_t w = vdupq_n_f32(s[g][j]);
                const uint16_t *vr = v + (size_t)j * hd + c;
                for (int u = 0; u < nv; u++) acc[u] = vfmaq_f32(acc[u], w, load_ph(vr + 4 * u));
            }
            for (int u = 0; u < nv; u++) vst1q_f32(o + (size_t)g * hd + c + 4 * u, acc[u]);
        }
    }
}
#endif
