/* Scalar activation tables: the spec every tier's lut_entries must match bit
 * for bit (LAYOUT.md §Tables). Compiled with baseline flags and
 * -ffp-contract=off so no multiply-add is fused behind our back. */
#include <math.h>
#include "tmac/kernels.h"

void tmac_lut_scales(const float *TMAC_RESTRICT x, int k_pad, int act_group,
                     float *TMAC_RESTRICT scales, float *TMAC_RESTRICT inv_scales, float *TMAC_RESTRICT sums) {
    const int n_groups = k_pad / act_group;
    for (int a = 0; a < n_groups; a++) {
        float amax = 0.0f, sum = 0.0f;
        for (int g = a * act_group / 4; g < (a + 1) * act_group / 4; g++) {
            const float *v = x + (size_t)4 * g;
            /* pairwise order, as a 2-wide SIMD tree would do it */
            float mag = (fabsf(v[0]) + fabsf(v[1])) + (fabsf(v[2]) + fabsf(v[3]));
            if (mag > amax) amax = mag;
            sum += (v[0] + v[1]) + (v[2] + v[3]);
        }
        float scale = amax / 127.0f;
        scales[a] = scale;
        inv_scales[a] = scale > 0.0f ? 1.0f / scale : 0.0f;
        sums[a] = sum;
    }
}

/* Entry idx of kgroup g for idx < 8 (bit 3 clear, so x3 enters negated); the
 * upper half is the mirror: entries[15 - idx] = -entries[idx], exact because
 * round-half-to-even is symmetric. */
void tmac_lut_entries_generic(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                              int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries) {
    for (int g = g0; g < g1; g++) {
        const float *v = x + (size_t)4 * g;
        const float inv = inv_scales[(4 * g) / act_group];
        int8_t *e = entries + (size_t)16 * g;
        for (int idx = 0; idx < 8; idx++) {
            float s0 = (idx & 1) ? v[0] : -v[0];
            float s1 = (idx & 2) ? v[1] : -v[1];
            float s2 = (idx & 4) ? v[2] : -v[2];
            float t = (s0 + s1) + (s2 + -v[3]);
            float q = nearbyintf(t * inv);         /* default rounding: half to even */
            if (q > 127.0f) q = 127.0f;
            if (q < -127.0f) q = -127.0f;
            e[idx] = (int8_t)q;
            e[15 - idx] = (int8_t)-q;
        }
    }
}
