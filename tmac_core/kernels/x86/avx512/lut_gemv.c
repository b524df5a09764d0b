/* AVX-512BW twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md
 * §Weights). A whole 64-byte index block per zmm: the same vpshufb /
 * vpunpck / vpmaddubsw step as the AVX2 tier, four 16-byte lanes wide, so one
 * step covers the tile's 64 rows for one bit plane and two kgroups.
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c;
 * called only when dispatch saw those and XCR0 enables ZMM state. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"

/* y[32 rows] = fma(xs, c, fma(acc * ls, sh, y)), exactly the generic order. */
TMAC_INLINE void epilogue32(__m512i acc, __m512 ls, __m512 xs, const uint16_t *sh, const uint16_t *c, float *y) {
    __m512 a_lo = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc)));
    __m512 a_hi = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc, 1)));
    __m512 y_lo = _mm512_loadu_ps(y), y_hi = _mm512_loadu_ps(y + 16);
    y_lo = _mm512_fmadd_ps(_mm512_mul_ps(a_lo, ls), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sh)), y_lo);
    y_hi = _mm512_fmadd_ps(_mm512_mul_ps(a_hi, ls), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sh + 16))), y_hi);
    y_lo = _mm512_fmadd_ps(xs, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)c)), y_lo);
    y_hi = _mm512_fmadd_ps(xs, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(c + 16))), y_hi);
    _mm512_storeu_ps(y, y_lo);
    _mm512_storeu_ps(y + 16, y_hi);
}

TMAC_INLINE void tile_bits(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int bits) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    TMAC_ALIGN(64) float y[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        __m512i acc_lo = _mm512_setzero_si512();   /* rows 0-31 */
        __m512i acc_hi = _mm512_setzero_si512();   /* rows 32-63 */
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables = lut->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
            const __m512i t_lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables));
            const __m512i t_hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 16)));
            for (int i = 0; i < bits; i++, block += 64) {
                const __m512i weight = _mm512_set1_epi8((char)(1 << i));
                __m512i v = _mm512_loadu_si512((const void *)block);
                __m512i l = _mm512_shuffle_epi8(t_lo, _mm512_and_si512(v, nibble));
                __m512i h = _mm512_shuffle_epi8(t_hi, _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble));
                acc_lo = _mm512_add_epi16(acc_lo, _mm512_maddubs_epi16(weight, _mm512_unpacklo_epi8(l, h)));
                acc_hi = _mm512_add_epi16(acc_hi, _mm512_maddubs_epi16(weight, _mm512_unpackhi_epi8(l, h)));
            }
        }
        const __m512 ls = _mm512_set1_ps(lut->scales[a]), xs = _mm512_set1_ps(lut->sums[a]);
        const uint16_t *sh = scales + (size_t)a * lut->act_group / w->group_size * 2 * 64;
        const uint16_t *c = sh + 64;
        epilogue32(acc_lo, ls, xs, sh, c, y);
        epilogue32(acc_hi, ls, xs, sh + 32, c + 32, y + 32);
    }
    const __m512 ts = _mm512_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 16) _mm512_storeu_ps(y64 + r, _mm512_mul_ps(_mm512_load_ps(y + r), ts));
}

/* The same tile for two activation vectors (the AVX2 tier's tile2_bits, one
 * 64-byte block per step): the index load and nibble split are shared, the
 * lookups and accumulators are per token. bits stays a run-time value so the
 * compiler keeps the plane loop rolled instead of interleaving unrolled
 * planes. Bit-identical to two gemv_tile calls. */
TMAC_INLINE void tile2(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                       float *y0_64, float *y1_64) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut0->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut0->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    TMAC_ALIGN(64) float y0[64] = {0};
    TMAC_ALIGN(64) float y1[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        __m512i a_lo = _mm512_setzero_si512(), a_hi = _mm512_setzero_si512();   /* token 0: rows 0-31, 32-63 */
        __m512i b_lo = _mm512_setzero_si512(), b_hi = _mm512_setzero_si512();   /* token 1 */
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables0 = lut0->entries + (size_t)a * pairs_per_group * 32;
        const int8_t *tables1 = lut1->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables0 += 32, tables1 += 32) {
            const __m512i t0_lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables0));
            const __m512i t0_hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables0 + 16)));
            const __m512i t1_lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables1));
            const __m512i t1_hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables1 + 16)));
            __m512i weight = _mm512_set1_epi8(1);
            for (int i = 0; i < bits; i++, block += 64, weight = _mm512_add_epi8(weight, weight)) {
                const __m512i v = _mm512_loadu_si512((const void *)block);
                const __m512i lo = _mm512_and_si512(v, nibble);
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
                __m512i l = _mm512_shuffle_epi8(t0_lo, lo), h = _mm512_shuffle_epi8(t0_hi, hi);
                a_lo = _mm512_add_epi16(a_lo, _mm512_maddubs_epi16(weight, _mm512_unpacklo_epi8(l, h)));
                a_hi = _mm512_add_epi16(a_hi, _mm512_maddubs_epi16(weight, _mm512_unpackhi_epi8(l, h)));
                l = _mm512_shuffle_epi8(t1_lo, lo);
                h = _mm512_shuffle_epi8(t1_hi, hi);
                b_lo = _mm512_add_epi16(b_lo, _mm512_maddubs_epi16(weight, _mm512_unpacklo_epi8(l, h)));
                b_hi = _mm512_add_epi16(b_hi, _mm512_maddubs_epi16(weight, _mm512_unpackhi_epi8(l, h)));
            }
        }
        const uint16_t *sh = scales + (size_t)a * lut0->act_group / w->group_size * 2 * 64;
        const uint16_t *c = sh + 64;
        __m512 ls = _mm512_set1_ps(lut0->scales[a]), xs = _mm512_set1_ps(lut0->sums[a]);
        epilogue32(a_lo, ls, xs, sh, c, y0);
        epilogue32(a_hi, ls, xs, sh + 32, c + 32, y0 + 32);
        ls = _mm512_set1_ps(lut1->scales[a]);
        xs = _mm512_set1_ps(lut1->sums[a]);
        epilogue32(b_lo, ls, xs, sh, c, y1);
        epilogue32(b_hi, ls, xs, sh + 32, c + 32, y1 + 32);
    }
    const __m512 ts = _mm512_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 16) {
        _mm512_storeu_ps(y0_64 + r, _mm512_mul_ps(_mm512_load_ps(y0 + r), ts));
        _mm512_storeu_ps(y1_64 + r, _mm512_mul_ps(_mm512_load_ps(y1 + r), ts));
    }
}

void tmac_gemv2_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                            float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64) {
    tile2(w, lut0, lut1, tile, y0_64, y1_64);
}

void tmac_gemv_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    switch (w->bits) {
    case 1: tile_bits(w, lut, tile, y64, 1); break;
    case 2: tile_bits(w, lut, tile, y64, 2); break;
    case 3: tile_bits(w, lut, tile, y64, 3); break;
    default: tile_bits(w, lut, tile, y64, 4); break;
    }
}
