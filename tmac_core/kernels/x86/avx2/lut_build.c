/* AVX2 twin of generic/lut_build.c:tmac_lut_entries_generic (LAYOUT.md §Tables).
 * One kgroup per step: its 8 lower entries in one ymm, built with the same
 * pairwise add order as the scalar code, rounded half-to-even by cvtps2dq
 * (default MXCSR), then packed and mirrored into the upper 8.
 * Compiled with -mavx2 -mfma -mf16c; called only when dispatch saw AVX2. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"

void tmac_lut_entries_avx2(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                           int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries) {
    /* sign of x_j in entry idx = 0..7: bit j of idx set -> +x_j; x3 always negated */
    const __m256 neg0 = _mm256_castsi256_ps(_mm256_setr_epi32(
        (int)0x80000000, 0, (int)0x80000000, 0, (int)0x80000000, 0, (int)0x80000000, 0));
    const __m256 neg1 = _mm256_castsi256_ps(_mm256_setr_epi32(
        (int)0x80000000, (int)0x80000000, 0, 0, (int)0x80000000, (int)0x80000000, 0, 0));
    const __m256 neg2 = _mm256_castsi256_ps(_mm256_setr_epi32(
        (int)0x80000000, (int)0x80000000, (int)0x80000000, (int)0x80000000, 0, 0, 0, 0));
    const __m256 neg3 = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000));
    /* bytes 0..7 stay, bytes 8..15 take bytes 7..0 (negated afterwards) */
    const __m128i mirror = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m128i upper_sign = _mm_setr_epi8(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256 lim = _mm256_set1_ps(127.0f);

    for (int g = g0; g < g1; g++) {
        const float *v = x + (size_t)4 * g;
        const __m256 inv = _mm256_set1_ps(inv_scales[(4 * g) / act_group]);
        __m256 e0 = _mm256_xor_ps(_mm256_broadcast_ss(v + 0), neg0);
        __m256 e1 = _mm256_xor_ps(_mm256_broadcast_ss(v + 1), neg1);
        __m256 e2 = _mm256_xor_ps(_mm256_broadcast_ss(v + 2), neg2);
        __m256 e3 = _mm256_xor_ps(_mm256_broadcast_ss(v + 3), neg3);
        __m256 t = _mm256_add_ps(_mm256_add_ps(e0, e1), _mm256_add_ps(e2, e3));
        __m256 q = _mm256_mul_ps(t, inv);
        q = _mm256_max_ps(_mm256_min_ps(q, lim), _mm256_sub_ps(_mm256_setzero_ps(), lim));
        __m256i qi = _mm256_cvtps_epi32(q);
        __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
        __m128i b8 = _mm_packs_epi16(w16, w16);                 /* entries 0..7 twice */
        __m128i out = _mm_sign_epi8(_mm_shuffle_epi8(b8, mirror), upper_sign);
        _mm_storeu_si128((__m128i *)(entries + (size_t)16 * g), out);
    }
}
