/* Runs the attention of one tier (built for aarch64 and run under
 * qemu-aarch64: NEON) on generated cases and compares it with the generic
 * tier in the same binary: outputs within 1e-5 of the largest value (more for
 * sharp softmaxes, whose weights carry the scores' rounding), and a
 * query's output the same bit for bit alone (decode) and inside a chunk. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tmac/kernels.h"

#if defined(DRIVER_NEON)
#  define TIER TMAC_ISA_NEON
#else
#  error "define DRIVER_NEON"
#endif

static unsigned long long g_state = 88172645463325252ULL;

static float gauss(void) {        /* sum of uniforms: enough spread for scores */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        g_state ^= g_state << 13; g_state ^= g_state >> 7; g_state ^= g_state << 17;
        s += (float)(g_state >> 40) / (float)(1 << 24) - 0.5f;
    }
    return s * 1.7f;
}

static int run_case(int n, int pos, int H, int n_kv, int hd, float q_scale) {
    const int n_ctx = pos + n + 2;
    const size_t qn = (size_t)n * H * hd, cn = (size_t)n_kv * n_ctx * hd;
    float *q = malloc(qn * 4), *kf = malloc(cn * 4), *out_t = malloc(qn * 4), *out_g = malloc(qn * 4);
    float *alone = malloc((size_t)H * hd * 4);
    uint16_t *k = malloc(cn * 2), *v = malloc(cn * 2);
    for (size_t i = 0; i < qn; i++) q[i] = gauss() * q_scale;
    for (size_t i = 0; i < cn; i++) kf[i] = gauss() * 3;
    tmac_fp32_to_fp16_row(kf, k, (int)cn);
    for (size_t i = 0; i < cn; i++) kf[i] = gauss();
    tmac_fp32_to_fp16_row(kf, v, (int)cn);
    const float scale = 1.0f / sqrtf((float)hd);
    int bad = 0;
    if (tmac_attention(TIER, q, n, pos, H, n_kv, hd, k, v, n_ctx, scale, out_t) != TMAC_OK ||
        tmac_attention(TMAC_ISA_GENERIC, q, n, pos, H, n_kv, hd, k, v, n_ctx, scale, out_g) != TMAC_OK) {
        printf("FAIL call n=%d pos=%d H=%d kv=%d hd=%d\n", n, pos, H, n_kv, hd);
        bad = 1;
    } else {
        float big = 1.0f, worst = 0.0f;
        for (size_t i = 0; i < qn; i++) big = fabsf(out_g[i]) > big ? fabsf(out_g[i]) : big;
        for (size_t i = 0; i < qn; i++) {
            float d = fabsf(out_t[i] - out_g[i]);
            worst = d > worst || d != d ? d : worst;
        }
        /* scores of a few hundred (q_scale 40) put their fp32 rounding into the exponent */
        const float tol = 1e-5f * big * (q_scale > 4.0f ? q_scale / 4.0f : 1.0f);
        if (!(worst <= tol)) {
            printf("FAIL tier vs generic n=%d pos=%d H=%d kv=%d hd=%d: max diff %g\n", n, pos, H, n_kv, hd, worst);
            bad = 1;
        }
        for (int t = 0; t < n && !bad; t++) {
            tmac_attention(TIER, q + (size_t)t * H * hd, 1, pos + t, H, n_kv, hd, k, v, n_ctx, scale, alone);
            if (memcmp(alone, out_t + (size_t)t * H * hd, (size_t)H * hd * 4) != 0) {
                printf("FAIL alone vs chunk n=%d pos=%d t=%d\n", n, pos, t);
                bad = 1;
            }
        }
    }
    free(q); free(kf); free(out_t); free(out_g); free(alone); free(k); free(v);
    return bad;
}

int main(void) {
    if (tmac_init(NULL) != TMAC_OK || tmac_active_isa() != TIER) {
        printf("FAIL dispatch did not pick the tier\n");
        return 1;
    }
    tmac_pool_set_threads(3);
    static const int shapes[][5] = {   /* n, pos, heads, kv heads, head dim */
        {1, 0, 9, 3, 64}, {1, 63, 9, 3, 64}, {1, 64, 9, 3, 64}, {1, 337, 9, 3, 64}, {7, 61, 9, 3, 64},
        {32, 112, 9, 3, 64}, {1, 300, 4, 4, 128}, {3, 150, 32, 8, 128}, {2, 90, 16, 1, 72}, {3, 70, 6, 2, 40},
        {1, 10, 2, 1, 256},
    };
    const float q_scales[] = {0.1f, 2.0f, 40.0f};
    int cases = 0, failed = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int i = 0; i < 3; i++, cases++)
            failed += run_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4], q_scales[i]);
    printf("%d cases, %d failed\n", cases, failed);
    return failed != 0;
}
