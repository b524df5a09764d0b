/* AVX2 twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md §Weights).
 * Per 32-byte half of an index block (32 rows, one pass over K each): vpshufb looks up the low nibbles in the
 * table of kgroup 2kp and the high nibbles in that of 2kp+1 (32 rows each);
 * vpunpck{l,h}bw puts the two lookups of one row side by side, and vpmaddubsw
 * by (2^i, 2^i) adds them, weights the bit plane and widens to int16 in one
 * instruction. int16 accumulators are flushed to the fp32 epilogue once per
 * activation group (bound: layout.h TMAC_MAX_ACT_GROUP).
 * Compiled with -mavx2 -mfma -mf16c; called only when dispatch saw AVX2+FMA+F16C. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"

/* y[16 rows] = fma(xs, c, fma(acc * ls, sh, y)), exactly the generic order. */
TMAC_INLINE void epilogue16(__m256i acc, __m256 ls, __m256 xs, const uint16_t *sh, const uint16_t *c,
                            __m256 *y_lo, __m256 *y_hi) {
    __m256 a_lo = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc)));
    __m256 a_hi = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc, 1)));
    *y_lo = _mm256_fmadd_ps(_mm256_mul_ps(a_lo, ls), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sh)), *y_lo);
    *y_hi = _mm256_fmadd_ps(_mm256_mul_ps(a_hi, ls), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sh + 8))), *y_hi);
    *y_lo = _mm256_fmadd_ps(xs, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)c)), *y_lo);
    *y_hi = _mm256_fmadd_ps(xs, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(c + 8))), *y_hi);
}

/* One pass over K for one 32-byte half of every index block: rows r0..r0+15
 * (low-nibble unpack) and r0+32..r0+47 (high), r0 = 16 * half. Keeping the
 * pass to 32 rows lets the fp32 sums live in registers for the whole pass. */
TMAC_INLINE void half_bits(const tmac_weight_t *w, const tmac_lut_t *lut, const uint8_t *planes,
                           const uint16_t *scales, int half, float *y64, const int bits) {
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const int r0 = 16 * half;
    __m256 y0 = _mm256_setzero_ps(), y1 = _mm256_setzero_ps();   /* rows r0..r0+15 */
    __m256 y2 = _mm256_setzero_ps(), y3 = _mm256_setzero_ps();   /* rows r0+32..r0+47 */
    const uint8_t *block = planes + 32 * half;
    const int8_t *tables = lut->entries;

    for (int a = 0; a < n_act_groups; a++) {
        __m256i acc_lo = _mm256_setzero_si256(), acc_hi = _mm256_setzero_si256();
        for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
            const __m256i t_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables));
            const __m256i t_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables + 16)));
            for (int i = 0; i < bits; i++, block += 64) {
                const __m256i weight = _mm256_set1_epi8((char)(1 << i));
                __m256i v = _mm256_loadu_si256((const __m256i *)block);
                __m256i l = _mm256_shuffle_epi8(t_lo, _mm256_and_si256(v, nibble));
                __m256i h = _mm256_shuffle_epi8(t_hi, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
                acc_lo = _mm256_add_epi16(acc_lo, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l, h)));
                acc_hi = _mm256_add_epi16(acc_hi, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l, h)));
            }
        }
        const __m256 ls = _mm256_set1_ps(lut->scales[a]), xs = _mm256_set1_ps(lut->sums[a]);
        const uint16_t *sh = scales + (size_t)((a * lut->act_group) / w->group_size) * 2 * 64;
        const uint16_t *c = sh + 64;
        epilogue16(acc_lo, ls, xs, sh + r0, c + r0, &y0, &y1);
        epilogue16(acc_hi, ls, xs, sh + 32 + r0, c + 32 + r0, &y2, &y3);
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    _mm256_storeu_ps(y64 + r0, _mm256_mul_ps(y0, ts));
    _mm256_storeu_ps(y64 + r0 + 8, _mm256_mul_ps(y1, ts));
    _mm256_storeu_ps(y64 + r0 + 32, _mm256_mul_ps(y2, ts));
    _mm256_storeu_ps(y64 + r0 + 40, _mm256_mul_ps(y3, ts));
}

TMAC_INLINE void tile_bits(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int bits) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    half_bits(w, lut, planes, scales, 0, y64, bits);
    half_bits(w, lut, planes, scales, 1, y64, bits);
}

void tmac_gemv_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    switch (w->bits) {          /* constant bits: the plane loop unrolls */
    case 1: tile_bits(w, lut, tile, y64, 1); break;
    case 2: tile_bits(w, lut, tile, y64, 2); break;
    case 3: tile_bits(w, lut, tile, y64, 3); break;
    default: tile_bits(w, lut, tile, y64, 4); break;
    }
}
