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
    /* F16: (n_groups, 2, 64) fp16 (sh, c); F16_SYM: (n_groups, 1, 64) sh; SUPER: (n_super, 2, 64)
     * (d, dmin) and sub (n_groups, 2, 64) (sc, mn); SUPER_NOMIN: (n_super, 1, 64) d, sub (n_groups, 1, 64) sc */
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    float y[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        /* planes 0..3 into acc_lo, planes 4..7 into acc_hi with weights 2^(i-4):
         * each fits int16 (see TMAC_MAX_ACT_GROUP) */
        int32_t acc_lo[64] = {0}, acc_hi[64] = {0};
        for (int kp = a * pairs_per_group; kp < (a + 1) * pairs_per_group; kp++) {
            const int8_t *t_lo = lut->entries + (size_t)32 * kp;      /* kgroup of the low nibbles */
            const int8_t *t_hi = t_lo + 16;                          /* kgroup of the high nibbles */
            for (int i = 0; i < bits; i++) {
                const uint8_t *block = planes + ((size_t)kp * bits + i) * 64;
                int32_t *acc = i < TMAC_PLANES_PER_ACC ? acc_lo : acc_hi;
                const int weight = 1 << (i % TMAC_PLANES_PER_ACC);
                for (int p = 0; p < 64; p++) {
                    int pair = t_lo[block[p] & 15] + t_hi[block[p] >> 4];
                    acc[tmac_row_of_byte(p)] += pair * weight;
                }
            }
        }
        const float ls = lut->scales[a], xs = lut->sums[a];
        const int64_t k0 = (int64_t)a * lut->act_group;       /* the group's first activation */
        for (int r = 0; r < 64; r++) {
            assert(acc_lo[r] >= -32768 && acc_lo[r] <= 32767 && acc_hi[r] >= -32768 && acc_hi[r] <= 32767);
            const int32_t acc = acc_lo[r] + 16 * acc_hi[r];      /* |acc| < 2^24: exact in fp32 */
            float sh, c;
            tmac_coeffs_at(w, scales, sub, k0, r, &sh, &c);
            float t = (float)acc * ls;
            y[r] = fmaf(t, sh, y[r]);
            y[r] = fmaf(xs, c, y[r]);
        }
    }
    for (int r = 0; r < 64; r++) y64[r] = y[r] * w->tensor_scale;
}

/* The spec of every tier's gemm_tile: n tokens through the same tile are n
 * one-token tiles (a tier may share index loads between the tokens and add
 * the integer lookups in another order, never change a result bit). */
void tmac_gemm_tile_generic(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64) {
    assert(n >= 1 && n <= TMAC_GEMM_TILE_TOKENS);
    for (int t = 0; t < n; t++) tmac_gemv_tile_generic(w, &luts[t], tile, y64 + (size_t)t * TMAC_TILE_ROWS);
}
