/* exp for 4 floats in NEON registers, shared by the NEON attention and
 * SwiGLU kernels: the AVX2 tier's method (avx2_exp.h) in 4-lane registers.
 * Include only from AArch64 translation units, after <arm_neon.h>. */
#ifndef TMAC_NEON_EXP_H
#define TMAC_NEON_EXP_H
#include "tmac/platform.h"

/* exp(x), 0 below -87 (so -inf padding lanes contribute nothing) */
TMAC_INLINE float32x4_t exp_f32(float32x4_t x) {
    const uint32x4_t keep = vcgeq_f32(x, vdupq_n_f32(-87.0f));
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));           /* ln 2, high bits */
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));                     /* ln 2, the rest */
    float32x4_t p = vdupq_n_f32(1.0f / 720);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), keep));
}

#endif
