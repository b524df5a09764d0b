/* AVX2 twin of generic/attention.c:tmac_attn_block_generic (kernels.h
 * §attention). K rows are widened once (vcvtph2ps) into an L1 row and dotted
 * with each of the G query heads; exp is a degree-6 polynomial after range
 * reduction by ln 2 (relative error < 2e-7); V rows are widened per query head
 * while 8 accumulators hold 64 output columns. Needs hd % 8 == 0.
 * Compiled with -mavx2 -mfma -mf16c; called only when dispatch saw AVX2+FMA+F16C. */
#include <math.h>
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"
#include "tmac/avx2_exp.h"

TMAC_INLINE float hsum(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TMAC_INLINE __m256 load_ph(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

void tmac_attn_block_avx2(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                          const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                          float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o) {
    TMAC_ALIGN(32) float s[TMAC_ATTN_MAX_GROUP][TMAC_ATTN_BLOCK];   /* scores, then exp(s - m); -inf padded */
    TMAC_ALIGN(32) float row[TMAC_ATTN_MAX_HEAD_DIM];
    const int n8 = (n_pos + 7) & ~7;

    for (int j = 0; j < n_pos; j++) {
        for (int i = 0; i < hd; i += 8) _mm256_store_ps(row + i, load_ph(k + (size_t)j * hd + i));
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * hd;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            int i = 0;
            for (; i + 16 <= hd; i += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_load_ps(row + i), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i + 8), _mm256_load_ps(row + i + 8), a1);
            }
            if (i < hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_load_ps(row + i), a0);
            s[g][j] = hsum(_mm256_add_ps(a0, a1)) * scale;
        }
    }
    for (int g = 0; g < G; g++) {
        for (int j = n_pos; j < n8; j++) s[g][j] = -INFINITY;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        for (int j = 0; j < n8; j += 8) mx = _mm256_max_ps(mx, _mm256_load_ps(&s[g][j]));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float mg = _mm_cvtss_f32(m4);
        __m256 total = _mm256_setzero_ps();
        for (int j = 0; j < n8; j += 8) {
            const __m256 e = exp_ps(_mm256_sub_ps(_mm256_load_ps(&s[g][j]), _mm256_set1_ps(mg)));
            _mm256_store_ps(&s[g][j], e);
            total = _mm256_add_ps(total, e);
        }
        m[g] = mg;
        l[g] = hsum(total);
    }
    for (int g = 0; g < G; g++) {
        for (int c = 0; c < hd; c += 64) {        /* 64 output columns in 8 accumulators */
            const int nv = (hd - c) / 8 < 8 ? (hd - c) / 8 : 8;
            __m256 acc[8];
            for (int u = 0; u < 8; u++) acc[u] = _mm256_setzero_ps();
            for (int j = 0; j < n_pos; j++) {
                const __m256 w = _mm256_set1_ps(s[g][j]);
                const uint16_t *vr = v + (size_t)j * hd + c;
                if (nv == 8) {          /* the common case with a constant trip count: fully unrolled */
                    for (int u = 0; u < 8; u++) acc[u] = _mm256_fmadd_ps(w, load_ph(vr + 8 * u), acc[u]);
                } else {
                    for (int u = 0; u < nv; u++) acc[u] = _mm256_fmadd_ps(w, load_ph(vr + 8 * u), acc[u]);
                }
            }
            for (int u = 0; u < nv; u++) _mm256_storeu_ps(o + (size_t)g * hd + c + 8 * u, acc[u]);
        }
    }
}
