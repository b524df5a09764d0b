/* Generic spec of one attention block (kernels.h §attention): scores, the
 * block's max, exp-sum and unnormalized weighted sum of V rows. Baseline
 * flags; the twins are x86/avx2/attention.c and arm/neon/attention.c. K and V
 * rows are fp16, widened exactly. Dots use 8 partial sums in a fixed order
 * (one add chain made q.k latency-bound). */
#include <math.h>
#include "tmac/kernels.h"

void tmac_attn_block_generic(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                             const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                             float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o) {
    float s[TMAC_ATTN_MAX_GROUP][TMAC_ATTN_BLOCK];       /* scores, then exp(s - m) */
    float row[TMAC_ATTN_MAX_HEAD_DIM];                   /* one K or V row as fp32 */

    for (int j = 0; j < n_pos; j++) {
        for (int i = 0; i < hd; i++) row[i] = tmac_fp16_to_fp32(k[(size_t)j * hd + i]);
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < hd; i++) p[i % 8] += qg[i] * row[i];
            s[g][j] = (((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))) * scale;
        }
    }
    for (int g = 0; g < G; g++) {
        float mx = s[g][0], total = 0.0f;
        for (int j = 1; j < n_pos; j++) mx = s[g][j] > mx ? s[g][j] : mx;
        for (int j = 0; j < n_pos; j++) {
            s[g][j] = expf(s[g][j] - mx);
            total += s[g][j];
        }
        m[g] = mx;
        l[g] = total;
        for (int i = 0; i < hd; i++) o[(size_t)g * hd + i] = 0.0f;
    }
    for (int j = 0; j < n_pos; j++) {
        for (int i = 0; i < hd; i++) row[i] = tmac_fp16_to_fp32(v[(size_t)j * hd + i]);
        for (int g = 0; g < G; g++) {
            float *og = o + (size_t)g * hd;
            const float w = s[g][j];
            for (int i = 0; i < hd; i++) og[i] += w * row[i];
        }
    }
}
