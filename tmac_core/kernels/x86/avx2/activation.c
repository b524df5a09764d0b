/* AVX2 twin of generic/activation.c:tmac_swiglu_generic. The scalar loop
 * called libm's expf per element and was ~7% of a SmolLM2 prompt step; here
 * exp is avx2_exp.h's polynomial, 8 lanes at a time, so results agree with
 * generic to a few ulp, not bit for bit. A ragged tail goes through a padded
 * 8-lane buffer, so every element takes the same path.
 * Compiled with -mavx2 -mfma -mf16c; called only when dispatch saw AVX2+FMA. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"
#include "tmac/avx2_exp.h"

TMAC_INLINE __m256 swiglu8(__m256 g, __m256 u) {
    /* exp(-g) is clamped to e^88 for g < -88: g / huge -> -0, as silu tends to 0 */
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

void tmac_swiglu_avx2(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gate + i, swiglu8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        TMAC_ALIGN(32) float g[8] = {0}, u[8] = {0};
        for (int j = 0; j < n - i; j++) { g[j] = gate[i + j]; u[j] = up[i + j]; }
        _mm256_store_ps(g, swiglu8(_mm256_load_ps(g), _mm256_load_ps(u)));
        for (int j = 0; j < n - i; j++) gate[i + j] = g[j];
    }
}
