/* Scalar LUT GEMV over one 64-row weight tile: the spec of every tier's
 * gemv_tile (LAYOUT.md §Weights, §Accumulation, §Epilogue). Written for
 * clarity, not speed; it is also the fallback on CPUs without AVX2. */
#include <assert.h>
#include <math.h>
#include "tmac/kernels.h"

void tmac_gemv_tile_generic(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;   /* (kpairs, bits, 64) */
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64; /* (n_groups, 2, 64) */
    float y[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        int32_t acc[64] = {0};                  /* fits int16: see TMAC_MAX_ACT_GROUP */
        for (int kp = a * pairs_per_group; kp < (a + 1) * pairs_per_group; kp++) {
            const int8_t *t_lo = lut->entries + (size_t)32 * kp;      /* kgroup of the low nibbles */
            const int8_t *t_hi = t_lo + 16;                          /* kgroup of the high nibbles */
            for (int i = 0; i < bits; i++) {
                const uint8_t *block = planes + ((size_t)kp * bits + i) * 64;
                for (int p = 0; p < 64; p++) {
                    int pair = t_lo[block[p] & 15] + t_hi[block[p] >> 4];
                    acc[tmac_row_of_byte(p)] += pair * (1 << i);
                }
            }
        }
        const float ls = lut->scales[a], xs = lut->sums[a];
        const uint16_t *sg = scales + (size_t)a * lut->act_group / w->group_size * 2 * 64;
        for (int r = 0; r < 64; r++) {
            assert(acc[r] >= -32768 && acc[r] <= 32767);
            float t = (float)acc[r] * ls;
            y[r] = fmaf(t, tmac_fp16_to_fp32(sg[r]), y[r]);
            y[r] = fmaf(xs, tmac_fp16_to_fp32(sg[64 + r]), y[r]);
        }
    }
    for (int r = 0; r < 64; r++) y64[r] = y[r] * w->tensor_scale;
}
