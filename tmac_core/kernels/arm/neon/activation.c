/* NEON twin of generic/activation.c:tmac_swiglu_generic: the AVX2 tier's
 * plan in 4-lane registers (neon_exp.h's polynomial exp, a padded buffer for
 * the tail). Agrees with generic to a few ulp. AArch64 baseline NEON. */
#include "tmac/kernels.h"
#if TMAC_ARCH_ARM64
#include <arm_neon.h>
#include "tmac/neon_exp.h"

TMAC_INLINE float32x4_t swiglu4(float32x4_t g, float32x4_t u) {
    const float32x4_t e = exp_f32(vnegq_f32(g));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e)), u);
}

void tmac_swiglu_neon(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(gate + i, swiglu4(vld1q_f32(gate + i), vld1q_f32(up + i)));
    if (i < n) {
        float g[4] = {0}, u[4] = {0};
        for (int j = 0; j < n - i; j++) { g[j] = gate[i + j]; u[j] = up[i + j]; }
        vst1q_f32(g, swiglu4(vld1q_f32(g), vld1q_f32(u)));
        for (int j = 0; j < n - i; j++) gate[i + j] = g[j];
    }
}
#endif
