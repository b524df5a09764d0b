/* NEON twin of generic/lut_build.c:tmac_lut_entries_generic (LAYOUT.md §Tables).
 * Entries 0..7 of one kgroup in two float32x4 (same pairwise add order as the
 * scalar code), vcvtnq rounds half to even, saturating narrows to int8, and
 * vrev64 + vneg build the mirrored upper half. Intrinsics only (no GCC vector
 * operators) so MSVC ARM64 and clang compile it too. AArch64 baseline NEON. */
#include "tmac/kernels.h"
#if TMAC_ARCH_ARM64
#include <arm_neon.h>

static const uint32_t k_neg_lo[3][4] = {   /* sign masks of x0, x1, x2 for entries 0..3 */
    {0x80000000u, 0, 0x80000000u, 0},
    {0x80000000u, 0x80000000u, 0, 0},
    {0x80000000u, 0x80000000u, 0x80000000u, 0x80000000u},
};
static const uint32_t k_neg_hi[3][4] = {   /* ... and for entries 4..7 (bit 2 set) */
    {0x80000000u, 0, 0x80000000u, 0},
    {0x80000000u, 0x80000000u, 0, 0},
    {0, 0, 0, 0},
};

TMAC_INLINE float32x4_t flip(float32x4_t v, uint32x4_t mask) {
    return vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(v), mask));
}

void tmac_lut_entries_neon(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                           int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries) {
    const uint32x4_t n0l = vld1q_u32(k_neg_lo[0]), n1l = vld1q_u32(k_neg_lo[1]), n2l = vld1q_u32(k_neg_lo[2]);
    const uint32x4_t n0h = vld1q_u32(k_neg_hi[0]), n1h = vld1q_u32(k_neg_hi[1]), n2h = vld1q_u32(k_neg_hi[2]);
    const float32x4_t lim = vdupq_n_f32(127.0f), nlim = vdupq_n_f32(-127.0f);
    for (int g = g0; g < g1; g++) {
        const float *v = x + (size_t)4 * g;
        const float32x4_t inv = vdupq_n_f32(inv_scales[(4 * g) / act_group]);
        const float32x4_t x0 = vdupq_n_f32(v[0]), x1 = vdupq_n_f32(v[1]), x2 = vdupq_n_f32(v[2]);
        const float32x4_t e3 = vdupq_n_f32(-v[3]);
        float32x4_t t_lo = vaddq_f32(vaddq_f32(flip(x0, n0l), flip(x1, n1l)), vaddq_f32(flip(x2, n2l), e3));
        float32x4_t t_hi = vaddq_f32(vaddq_f32(flip(x0, n0h), flip(x1, n1h)), vaddq_f32(flip(x2, n2h), e3));
        t_lo = vmaxq_f32(vminq_f32(vmulq_f32(t_lo, inv), lim), nlim);
        t_hi = vmaxq_f32(vminq_f32(vmulq_f32(t_hi, inv), lim), nlim);
        int16x8_t q16 = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(t_lo)), vqmovn_s32(vcvtnq_s32_f32(t_hi)));
        int8x8_t q8 = vqmovn_s16(q16);                       /* entries 0..7 */
        int8x8_t mirrored = vneg_s8(vrev64_s8(q8));           /* entries 8..15 = -entries 7..0 */
        vst1q_s8(entries + (size_t)16 * g, vcombine_s8(q8, mirrored));
    }
}
#endif
