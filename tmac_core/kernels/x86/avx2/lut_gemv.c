/* AVX2 twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md §Weights).
 * Per 32-byte half of an index block: vpshufb looks up the low nibbles in the
 * table of kgroup 2kp and the high nibbles in that of 2kp+1 (32 rows each);
 * vpunpck{l,h}bw puts the two lookups of one row side by side, and vpmaddubsw
 * by (2^i, 2^i) adds them, weights the bit plane and widens to int16 in one
 * instruction. int16 accumulators are flushed to the fp32 epilogue once per
 * activation group (bound: layout.h TMAC_MAX_ACT_GROUP).
 * Compiled with -mavx2 -mfma -mf16c; called only when dispatch saw AVX2+FMA+F16C. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"

/* y[16 rows] = fma(xs, c, fma(acc * ls, sh, y)), exactly the generic order. */
TMAC_INLINE void epilogue16(__m256i acc, __m256 ls, __m256 xs, const uint16_t *sh, const uint16_t *c, float *y) {
    __m256 a_lo = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc)));
    __m256 a_hi = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc, 1)));
    __m256 y_lo = _mm256_loadu_ps(y), y_hi = _mm256_loadu_ps(y + 8);
    y_lo = _mm256_fmadd_ps(_mm256_mul_ps(a_lo, ls), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sh)), y_lo);
    y_hi = _mm256_fmadd_ps(_mm256_mul_ps(a_hi, ls), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sh + 8))), y_hi);
    y_lo = _mm256_fmadd_ps(xs, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)c)), y_lo);
    y_hi = _mm256_fmadd_ps(xs, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(c + 8))), y_hi);
    _mm256_storeu_ps(y, y_lo);
    _mm256_storeu_ps(y + 8, y_hi);
}

TMAC_INLINE void tile_bits(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int bits) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    TMAC_ALIGN(32) float y[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        /* rows 0-15, 32-47 (first half of a block) and 16-31, 48-63 (second half) */
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        __m256i acc2 = _mm256_setzero_si256(), acc3 = _mm256_setzero_si256();
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables = lut->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
            const __m256i t_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables));
            const __m256i t_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables + 16)));
            for (int i = 0; i < bits; i++, block += 64) {
                const __m256i weight = _mm256_set1_epi8((char)(1 << i));
                __m256i v0 = _mm256_loadu_si256((const __m256i *)block);
                __m256i v1 = _mm256_loadu_si256((const __m256i *)(block + 32));
                __m256i l0 = _mm256_shuffle_epi8(t_lo, _mm256_and_si256(v0, nibble));
                __m256i h0 = _mm256_shuffle_epi8(t_hi, _mm256_and_si256(_mm256_srli_epi16(v0, 4), nibble));
                __m256i l1 = _mm256_shuffle_epi8(t_lo, _mm256_and_si256(v1, nibble));
                __m256i h1 = _mm256_shuffle_epi8(t_hi, _mm256_and_si256(_mm256_srli_epi16(v1, 4), nibble));
                acc0 = _mm256_add_epi16(acc0, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l0, h0)));
                acc1 = _mm256_add_epi16(acc1, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l0, h0)));
                acc2 = _mm256_add_epi16(acc2, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l1, h1)));
                acc3 = _mm256_add_epi16(acc3, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l1, h1)));
            }
        }
        const __m256 ls = _mm256_set1_ps(lut->scales[a]), xs = _mm256_set1_ps(lut->sums[a]);
        const uint16_t *sh = scales + (size_t)a * lut->act_group / w->group_size * 2 * 64;
        const uint16_t *c = sh + 64;
        epilogue16(acc0, ls, xs, sh + 0, c + 0, y + 0);
        epilogue16(acc2, ls, xs, sh + 16, c + 16, y + 16);
        epilogue16(acc1, ls, xs, sh + 32, c + 32, y + 32);
        epilogue16(acc3, ls, xs, sh + 48, c + 48, y + 48);
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 8) _mm256_storeu_ps(y64 + r, _mm256_mul_ps(_mm256_load_ps(y + r), ts));
}

/* The same tile for two activation vectors. The index bytes and their nibble
 * split are shared, so per bit plane and token the 4 shifts/ands and 2 loads
 * of the one-token kernel are paid once for both; lookups, unpacks and
 * maddubs stay per token. Each half of a 64-byte block (rows 0-15/32-47 and
 * 16-31/48-63) is a separate pass, so 4 accumulators, 4 tables and the
 * nibbles fit the 16 ymm registers. bits stays a run-time value and the plane
 * weight doubles in a register: with bits constant GCC unrolls the planes,
 * interleaves them and spills accumulators to the stack (9% slower at 4 bits).
 * Integer sums are exact in any order and the epilogue is the one-token one,
 * so y0/y1 equal two gemv_tile calls bit for bit. */
TMAC_INLINE void tile2_bits(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                            float *y0_64, float *y1_64, const int bits) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut0->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut0->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = w->scales + (size_t)tile * w->n_groups * 2 * 64;
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    TMAC_ALIGN(32) float y0[64] = {0};
    TMAC_ALIGN(32) float y1[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        __m256i acc[2][4];                          /* [token][rows 0-15, 32-47, 16-31, 48-63] */
        for (int half = 0; half < 2; half++) {
            __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
            __m256i b0 = _mm256_setzero_si256(), b1 = _mm256_setzero_si256();
            const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64 + 32 * half;
            const int8_t *tables0 = lut0->entries + (size_t)a * pairs_per_group * 32;
            const int8_t *tables1 = lut1->entries + (size_t)a * pairs_per_group * 32;
            for (int kp = 0; kp < pairs_per_group; kp++, tables0 += 32, tables1 += 32) {
                const __m256i t0_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables0));
                const __m256i t0_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables0 + 16)));
                const __m256i t1_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables1));
                const __m256i t1_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables1 + 16)));
                __m256i weight = _mm256_set1_epi8(1);     /* 2^i, doubled per plane: one live register */
                for (int i = 0; i < bits; i++, block += 64, weight = _mm256_add_epi8(weight, weight)) {
                    const __m256i v = _mm256_loadu_si256((const __m256i *)block);
                    const __m256i lo = _mm256_and_si256(v, nibble);
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
                    __m256i l = _mm256_shuffle_epi8(t0_lo, lo), h = _mm256_shuffle_epi8(t0_hi, hi);
                    a0 = _mm256_add_epi16(a0, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l, h)));
                    a1 = _mm256_add_epi16(a1, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l, h)));
                    l = _mm256_shuffle_epi8(t1_lo, lo);
                    h = _mm256_shuffle_epi8(t1_hi, hi);
                    b0 = _mm256_add_epi16(b0, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l, h)));
                    b1 = _mm256_add_epi16(b1, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l, h)));
                }
            }
            acc[0][2 * half] = a0; acc[0][2 * half + 1] = a1;
            acc[1][2 * half] = b0; acc[1][2 * half + 1] = b1;
        }
        const uint16_t *sh = scales + (size_t)a * lut0->act_group / w->group_size * 2 * 64;
        const uint16_t *c = sh + 64;
        __m256 ls = _mm256_set1_ps(lut0->scales[a]), xs = _mm256_set1_ps(lut0->sums[a]);
        epilogue16(acc[0][0], ls, xs, sh + 0, c + 0, y0 + 0);
        epilogue16(acc[0][2], ls, xs, sh + 16, c + 16, y0 + 16);
        epilogue16(acc[0][1], ls, xs, sh + 32, c + 32, y0 + 32);
        epilogue16(acc[0][3], ls, xs, sh + 48, c + 48, y0 + 48);
        ls = _mm256_set1_ps(lut1->scales[a]);
        xs = _mm256_set1_ps(lut1->sums[a]);
        epilogue16(acc[1][0], ls, xs, sh + 0, c + 0, y1 + 0);
        epilogue16(acc[1][2], ls, xs, sh + 16, c + 16, y1 + 16);
        epilogue16(acc[1][1], ls, xs, sh + 32, c + 32, y1 + 32);
        epilogue16(acc[1][3], ls, xs, sh + 48, c + 48, y1 + 48);
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 8) {
        _mm256_storeu_ps(y0_64 + r, _mm256_mul_ps(_mm256_load_ps(y0 + r), ts));
        _mm256_storeu_ps(y1_64 + r, _mm256_mul_ps(_mm256_load_ps(y1 + r), ts));
    }
}

void tmac_gemv2_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                          float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64) {
    tile2_bits(w, lut0, lut1, tile, y0_64, y1_64, w->bits);
}

void tmac_gemv_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    switch (w->bits) {          /* constant bits: the plane loop unrolls */
    case 1: tile_bits(w, lut, tile, y64, 1); break;
    case 2: tile_bits(w, lut, tile, y64, 2); break;
    case 3: tile_bits(w, lut, tile, y64, 3); break;
    default: tile_bits(w, lut, tile, y64, 4); break;
    }
}
