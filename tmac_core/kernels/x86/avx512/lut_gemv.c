/* AVX-512BW twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md
 * §Weights). A whole 64-byte index block per zmm: the same vpshufb /
 * vpunpck / vpmaddubsw step as the AVX2 tier, four 16-byte lanes wide, so one
 * step covers the tile's 64 rows for one bit plane and two kgroups.
 * Planes 0-3 and planes 4-7 (bits 5..8) go to separate int16 accumulators,
 * each plane weighted 2^(i mod 4), joined as int32 lo + 16 * hi before the
 * float conversion (§Accumulation). F16_SYM scales derive c = zero_mult * sh
 * by one vmulps; SUPER scales (§Scales SUPER) derive sh and c in the epilogue
 * with the spec's operations, c by one vfmsub (SUPER_NOMIN: vfmsub of 0).
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c;
 * called only when dispatch saw those and XCR0 enables ZMM state. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"

/* One act group's scales: F16(_SYM) s = its (sh, c) / (sh) block, sub unused; SUPER(_NOMIN)
 * s = its super-block's (d, dmin) / (d) block, sub = its group's (sc, mn) / (sc) block; 64 rows each. */
typedef struct {
    const uint16_t *s;
    const int8_t *sub;
    __m512 kb;                 /* SUPER(_NOMIN): code_offset */
    __m512 zm;                 /* F16_SYM: zero_mult */
} group_scales_t;

TMAC_INLINE group_scales_t group_scales(const tmac_weight_t *w, const uint16_t *scales, const int8_t *sub,
                                        int a, int act_group, const int fmt) {
    const size_t k0 = (size_t)a * act_group;     /* first activation of the group */
    const int super = tmac_fmt_super(fmt), rec = tmac_fmt_records(fmt);
    group_scales_t gs;
    gs.s = scales + k0 / (size_t)(super ? w->super_size : w->group_size) * rec * 64;
    gs.sub = super ? sub + k0 / (size_t)w->group_size * rec * 64 : NULL;
    gs.kb = _mm512_set1_ps(w->code_offset);
    gs.zm = _mm512_set1_ps((float)w->zero_mult);
    return gs;
}

/* sh, c of rows r..r+15, exactly the spec's fp32 operations (layout.h tmac_coeffs_at):
 * F16_SYM c = zero_mult * sh; SUPER sh = (0.5 * D) * sf, c = fmsub(kb * D, sf, Dm * mf);
 * SUPER_NOMIN the same with Dm * mf = 0 (fmsub(a, b, +0) = fmaf(a, b, -0)). int8 -> int32
 * goes through int16 because SIMDe's AVX-512 (the emulated test build) lacks vpmovsxbd;
 * one extra instruction per 16 rows and act group. */
TMAC_INLINE void coeffs16(const group_scales_t *gs, int r, const int fmt, __m512 *sh, __m512 *c) {
    const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gs->s + r)));
    if (fmt == TMAC_SCALES_F16) {
        *sh = v0;
        *c = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gs->s + 64 + r)));
        return;
    }
    if (fmt == TMAC_SCALES_F16_SYM) {
        *sh = v0;
        *c = _mm512_mul_ps(gs->zm, v0);
        return;
    }
    const __m128i sc = _mm_loadu_si128((const __m128i *)(gs->sub + r));
    const __m512 sf = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_cvtepi8_epi16(sc)));
    __m512 min_term = _mm512_setzero_ps();
    if (fmt == TMAC_SCALES_SUPER) {
        const __m512 v1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gs->s + 64 + r)));
        const __m128i mn = _mm_loadu_si128((const __m128i *)(gs->sub + 64 + r));
        min_term = _mm512_mul_ps(v1, _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_cvtepi8_epi16(mn))));
    }
    *sh = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v0), sf);
    *c = _mm512_fmsub_ps(_mm512_mul_ps(gs->kb, v0), sf, min_term);
}

/* (float)(lo + 16 * hi) of 16 int16 rows; (float)lo when the weight has no planes 4-7 */
TMAC_INLINE __m512 acc_f32(__m256i lo, __m256i hi, const int has_hi) {
    __m512i a = _mm512_cvtepi16_epi32(lo);
    if (has_hi) a = _mm512_add_epi32(a, _mm512_slli_epi32(_mm512_cvtepi16_epi32(hi), 4));
    return _mm512_cvtepi32_ps(a);
}

/* sh, c of the tile's 64 rows, 16 per vector: computed once per act group and
 * shared by the tokens of gemv2_tile. */
TMAC_INLINE void coeffs64(const group_scales_t *gs, const int fmt, __m512 sh[4], __m512 c[4]) {
    for (int q = 0; q < 4; q++) coeffs16(gs, 16 * q, fmt, &sh[q], &c[q]);
}

/* y[0..31] = fma(xs, c, fma(acc * ls, sh, y)), exactly the generic order; lo
 * (and hi) hold the 32 rows' int16 sums, sh/c their two coefficient vectors. */
TMAC_INLINE void epilogue32(__m512i lo, __m512i hi, const int has_hi, __m512 ls, __m512 xs, const __m512 *sh,
                            const __m512 *c, float *y) {
    const __m512 a0 = acc_f32(_mm512_castsi512_si256(lo), _mm512_castsi512_si256(hi), has_hi);
    const __m512 a1 = acc_f32(_mm512_extracti64x4_epi64(lo, 1), _mm512_extracti64x4_epi64(hi, 1), has_hi);
    __m512 y0 = _mm512_loadu_ps(y), y1 = _mm512_loadu_ps(y + 16);
    y0 = _mm512_fmadd_ps(_mm512_mul_ps(a0, ls), sh[0], y0);
    y1 = _mm512_fmadd_ps(_mm512_mul_ps(a1, ls), sh[1], y1);
    y0 = _mm512_fmadd_ps(xs, c[0], y0);
    y1 = _mm512_fmadd_ps(xs, c[1], y1);
    _mm512_storeu_ps(y, y0);
    _mm512_storeu_ps(y + 16, y1);
}

/* One plane of one kpair into the int16 sums of rows 0-31 (*r0) and 32-63 (*r1). */
TMAC_INLINE void step(__m512i t_lo, __m512i t_hi, const uint8_t *block, __m512i weight, __m512i *r0, __m512i *r1) {
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    const __m512i v = _mm512_loadu_si512((const void *)block);
    const __m512i l = _mm512_shuffle_epi8(t_lo, _mm512_and_si512(v, nibble));
    const __m512i h = _mm512_shuffle_epi8(t_hi, _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble));
    *r0 = _mm512_add_epi16(*r0, _mm512_maddubs_epi16(weight, _mm512_unpacklo_epi8(l, h)));
    *r1 = _mm512_add_epi16(*r1, _mm512_maddubs_epi16(weight, _mm512_unpackhi_epi8(l, h)));
}

/* bits and fmt are compile-time constants at every call: the plane loop
 * unrolls and the other format's code disappears. */
TMAC_INLINE void tile_bits(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int bits,
                           const int fmt) {
    const int has_hi = bits > TMAC_PLANES_PER_ACC;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;            /* (kpairs, bits, 64) */
    /* F16: (n_groups, 2, 64) sh, c; F16_SYM (n_groups, 1, 64) sh; SUPER: (n_super, 2, 64) d, dmin and sub
     * (n_groups, 2, 64) sc, mn; SUPER_NOMIN (n_super, 1, 64) d and (n_groups, 1, 64) sc */
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    TMAC_ALIGN(64) float y[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        /* [planes 0-3, planes 4-7] x [rows 0-31, rows 32-63] */
        __m512i lo0 = _mm512_setzero_si512(), lo1 = _mm512_setzero_si512();
        __m512i hi0 = _mm512_setzero_si512(), hi1 = _mm512_setzero_si512();
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables = lut->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
            const __m512i t_lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables));
            const __m512i t_hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 16)));
            for (int i = 0; i < bits; i++, block += 64) {
                const __m512i weight = _mm512_set1_epi8((char)(1 << (i % TMAC_PLANES_PER_ACC)));
                if (i < TMAC_PLANES_PER_ACC) step(t_lo, t_hi, block, weight, &lo0, &lo1);
                else step(t_lo, t_hi, block, weight, &hi0, &hi1);
            }
        }
        const __m512 ls = _mm512_set1_ps(lut->scales[a]), xs = _mm512_set1_ps(lut->sums[a]);
        const group_scales_t gs = group_scales(w, scales, sub, a, lut->act_group, fmt);
        __m512 sh[4], c[4];
        coeffs64(&gs, fmt, sh, c);
        epilogue32(lo0, hi0, has_hi, ls, xs, sh, c, y);
        epilogue32(lo1, hi1, has_hi, ls, xs, sh + 2, c + 2, y + 32);
    }
    const __m512 ts = _mm512_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 16) _mm512_storeu_ps(y64 + r, _mm512_mul_ps(_mm512_load_ps(y + r), ts));
}

/* One plane of one kpair for two tokens: the index load and nibble split are
 * shared, the lookups and accumulators are per token (rows 0-31, 32-63). */
TMAC_INLINE void step2(__m512i t0_lo, __m512i t0_hi, __m512i t1_lo, __m512i t1_hi, const uint8_t *block,
                       __m512i weight, __m512i *a0, __m512i *a1, __m512i *b0, __m512i *b1) {
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    const __m512i v = _mm512_loadu_si512((const void *)block);
    const __m512i lo = _mm512_and_si512(v, nibble);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    __m512i l = _mm512_shuffle_epi8(t0_lo, lo), h = _mm512_shuffle_epi8(t0_hi, hi);
    *a0 = _mm512_add_epi16(*a0, _mm512_maddubs_epi16(weight, _mm512_unpacklo_epi8(l, h)));
    *a1 = _mm512_add_epi16(*a1, _mm512_maddubs_epi16(weight, _mm512_unpackhi_epi8(l, h)));
    l = _mm512_shuffle_epi8(t1_lo, lo);
    h = _mm512_shuffle_epi8(t1_hi, hi);
    *b0 = _mm512_add_epi16(*b0, _mm512_maddubs_epi16(weight, _mm512_unpacklo_epi8(l, h)));
    *b1 = _mm512_add_epi16(*b1, _mm512_maddubs_epi16(weight, _mm512_unpackhi_epi8(l, h)));
}

/* The same tile for two activation vectors (the AVX2 tier's tile2_bits, one
 * 64-byte block per step). bits stays a run-time value so the compiler keeps
 * the plane loop rolled instead of interleaving unrolled planes; has_hi
 * (bits > 4) is a constant, fmt a run-time value. Bit-identical to two gemv_tile calls. */
TMAC_INLINE void tile2(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                       float *y0_64, float *y1_64, const int has_hi, const int fmt) {
    const int bits = w->bits;
    const int n_lo = has_hi ? TMAC_PLANES_PER_ACC : bits, n_hi = bits - n_lo;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut0->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut0->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    TMAC_ALIGN(64) float y0[64] = {0};
    TMAC_ALIGN(64) float y1[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        /* token 0 (a), token 1 (b): rows 0-31, 32-63; planes 0-3 (lo), 4-7 (hi) */
        __m512i a_lo0 = _mm512_setzero_si512(), a_lo1 = _mm512_setzero_si512();
        __m512i b_lo0 = _mm512_setzero_si512(), b_lo1 = _mm512_setzero_si512();
        __m512i a_hi0 = _mm512_setzero_si512(), a_hi1 = _mm512_setzero_si512();
        __m512i b_hi0 = _mm512_setzero_si512(), b_hi1 = _mm512_setzero_si512();
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables0 = lut0->entries + (size_t)a * pairs_per_group * 32;
        const int8_t *tables1 = lut1->entries + (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, tables0 += 32, tables1 += 32) {
            const __m512i t0_lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables0));
            const __m512i t0_hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables0 + 16)));
            const __m512i t1_lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables1));
            const __m512i t1_hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables1 + 16)));
            __m512i weight = _mm512_set1_epi8(1);
            for (int i = 0; i < n_lo; i++, block += 64, weight = _mm512_add_epi8(weight, weight))
                step2(t0_lo, t0_hi, t1_lo, t1_hi, block, weight, &a_lo0, &a_lo1, &b_lo0, &b_lo1);
            if (has_hi) {
                weight = _mm512_set1_epi8(1);
                for (int i = 0; i < n_hi; i++, block += 64, weight = _mm512_add_epi8(weight, weight))
                    step2(t0_lo, t0_hi, t1_lo, t1_hi, block, weight, &a_hi0, &a_hi1, &b_hi0, &b_hi1);
            }
        }
        const group_scales_t gs = group_scales(w, scales, sub, a, lut0->act_group, fmt);
        __m512 sh[4], c[4];
        coeffs64(&gs, fmt, sh, c);
        __m512 ls = _mm512_set1_ps(lut0->scales[a]), xs = _mm512_set1_ps(lut0->sums[a]);
        epilogue32(a_lo0, a_hi0, has_hi, ls, xs, sh, c, y0);
        epilogue32(a_lo1, a_hi1, has_hi, ls, xs, sh + 2, c + 2, y0 + 32);
        ls = _mm512_set1_ps(lut1->scales[a]);
        xs = _mm512_set1_ps(lut1->sums[a]);
        epilogue32(b_lo0, b_hi0, has_hi, ls, xs, sh, c, y1);
        epilogue32(b_lo1, b_hi1, has_hi, ls, xs, sh + 2, c + 2, y1 + 32);
    }
    const __m512 ts = _mm512_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 16) {
        _mm512_storeu_ps(y0_64 + r, _mm512_mul_ps(_mm512_load_ps(y0 + r), ts));
        _mm512_storeu_ps(y1_64 + r, _mm512_mul_ps(_mm512_load_ps(y1 + r), ts));
    }
}

void tmac_gemv2_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                            float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64) {
    const int has_hi = w->bits > TMAC_PLANES_PER_ACC;
    /* the format is a run-time value here: its branch runs once per act group for both tokens */
    if (has_hi) tile2(w, lut0, lut1, tile, y0_64, y1_64, 1, w->scale_format);
    else tile2(w, lut0, lut1, tile, y0_64, y1_64, 0, w->scale_format);
}

/* constant bits per instance: the plane loop unrolls */
TMAC_INLINE void tile_switch(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int fmt) {
    switch (w->bits) {
    case 1: tile_bits(w, lut, tile, y64, 1, fmt); break;
    case 2: tile_bits(w, lut, tile, y64, 2, fmt); break;
    case 3: tile_bits(w, lut, tile, y64, 3, fmt); break;
    case 4: tile_bits(w, lut, tile, y64, 4, fmt); break;
    case 5: tile_bits(w, lut, tile, y64, 5, fmt); break;
    case 6: tile_bits(w, lut, tile, y64, 6, fmt); break;
    case 7: tile_bits(w, lut, tile, y64, 7, fmt); break;
    default: tile_bits(w, lut, tile, y64, 8, fmt); break;
    }
}

void tmac_gemv_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    switch (w->scale_format) {      /* tmac_check_shapes admitted only these four */
    case TMAC_SCALES_F16: tile_switch(w, lut, tile, y64, TMAC_SCALES_F16); break;
    case TMAC_SCALES_F16_SYM: tile_switch(w, lut, tile, y64, TMAC_SCALES_F16_SYM); break;
    case TMAC_SCALES_SUPER: tile_switch(w, lut, tile, y64, TMAC_SCALES_SUPER); break;
    default: tile_switch(w, lut, tile, y64, TMAC_SCALES_SUPER_NOMIN); break;
    }
}

/* ---- gemm_tile: up to 4 tokens per pass over the index bytes ----
 *
 * The one- and two-token tiles pay, per token and 64-byte index block, two
 * vpshufb and two vpunpck (to put a row's low- and high-nibble lookups side
 * by side for vpmaddubsw): four shuffle-port instructions. Here the unpack
 * moves from the lookups to the indices: vpunpck{l,h}bw of the blocks of
 * planes 2j and 2j+1 puts one row's two PLANES side by side (rows 0-31 in
 * unpacklo, 32-63 in unpackhi, natural order as in §Weights), once per block
 * pair for all tokens. Per token each of the two results needs only a
 * vpshufb per nibble and a vpmaddubsw by (2^(2j mod 4), 2^(2j+1 mod 4)),
 * which weights and adds the two planes: two shuffles per block instead of
 * four. The int16 sums are the §Accumulation ones (same terms, other order;
 * every partial vpmaddubsw result is at most 127 * 12 and the final sums fit,
 * so wrap-around int16 adds give exactly the same values) and the epilogue is
 * epilogue32, so each token's 64 outputs equal gemv_tile bit for bit. An odd
 * last plane pairs with a zero block weighted 0. */

/* Tokens per pass: 4 x (2 tables + 2 or 4 sums) zmm + 4 index zmm fit the 32
 * registers. Measured on Zen 4 (4-bit, 5632 x 2048, 64 tokens, CPU time):
 * 2 tokens 1.17x, 3 1.25x, 4 1.27x, 8 (spills) 1.17x over gemv2_tile.
 * -DGEMM_BLOCK=2..8 builds the others for such a comparison. */
#ifndef GEMM_BLOCK
#define GEMM_BLOCK 4
#endif

/* (2^(2j mod 4), 2^(2j+1 mod 4)) per 16-bit word; 0 for a missing plane 2j+1 */
TMAC_INLINE __m512i pair_weight(int j, const int bits) {
    const int w0 = (2 * j) % TMAC_PLANES_PER_ACC, w1 = (2 * j + 1) % TMAC_PLANES_PER_ACC;
    const int second = 2 * j + 1 < bits ? 1 << w1 : 0;
    return _mm512_set1_epi16((short)((1 << w0) | (second << 8)));
}

TMAC_INLINE void tileN(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T,
                       const int bits, const int fmt) {
    const int has_hi = bits > TMAC_PLANES_PER_ACC;
    const int n_pairs = (bits + 1) / 2;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = luts[0].act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / luts[0].act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;            /* (kpairs, bits, 64) */
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    TMAC_ALIGN(64) float y[GEMM_BLOCK][64];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 64; r += 16) _mm512_store_ps(y[t] + r, _mm512_setzero_ps());

    for (int a = 0; a < n_act_groups; a++) {
        /* per token: [planes 0-3, planes 4-7] x [rows 0-31, rows 32-63] */
        __m512i lo[GEMM_BLOCK][2], hi[GEMM_BLOCK][2];
        for (int t = 0; t < T; t++)
            lo[t][0] = lo[t][1] = hi[t][0] = hi[t][1] = _mm512_setzero_si512();
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const size_t tab0 = (size_t)a * pairs_per_group * 32;
        for (int kp = 0; kp < pairs_per_group; kp++, block += (size_t)bits * 64) {
            __m512i t_lo[GEMM_BLOCK], t_hi[GEMM_BLOCK];
            for (int t = 0; t < T; t++) {
                const int8_t *tables = luts[t].entries + tab0 + (size_t)kp * 32;
                t_lo[t] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tables));
                t_hi[t] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tables + 16)));
            }
            for (int j = 0; j < n_pairs; j++) {
                const __m512i p0 = _mm512_loadu_si512((const void *)(block + (size_t)(2 * j) * 64));
                const __m512i p1 = 2 * j + 1 < bits ? _mm512_loadu_si512((const void *)(block + (size_t)(2 * j + 1) * 64))
                                                    : _mm512_setzero_si512();
                const __m512i u0 = _mm512_unpacklo_epi8(p0, p1), u1 = _mm512_unpackhi_epi8(p0, p1);
                const __m512i l0 = _mm512_and_si512(u0, nibble);
                const __m512i h0 = _mm512_and_si512(_mm512_srli_epi16(u0, 4), nibble);
                const __m512i l1 = _mm512_and_si512(u1, nibble);
                const __m512i h1 = _mm512_and_si512(_mm512_srli_epi16(u1, 4), nibble);
                const __m512i weight = pair_weight(j, bits);
                for (int t = 0; t < T; t++) {
                    __m512i *acc = 2 * j < TMAC_PLANES_PER_ACC ? lo[t] : hi[t];
                    const __m512i s0 = _mm512_add_epi16(_mm512_maddubs_epi16(weight, _mm512_shuffle_epi8(t_lo[t], l0)),
                                                        _mm512_maddubs_epi16(weight, _mm512_shuffle_epi8(t_hi[t], h0)));
                    const __m512i s1 = _mm512_add_epi16(_mm512_maddubs_epi16(weight, _mm512_shuffle_epi8(t_lo[t], l1)),
                                                        _mm512_maddubs_epi16(weight, _mm512_shuffle_epi8(t_hi[t], h1)));
                    acc[0] = _mm512_add_epi16(acc[0], s0);
                    acc[1] = _mm512_add_epi16(acc[1], s1);
                }
            }
        }
        const group_scales_t gs = group_scales(w, scales, sub, a, luts[0].act_group, fmt);
        __m512 sh[4], c[4];
        coeffs64(&gs, fmt, sh, c);
        for (int t = 0; t < T; t++) {
            const __m512 ls = _mm512_set1_ps(luts[t].scales[a]), xs = _mm512_set1_ps(luts[t].sums[a]);
            epilogue32(lo[t][0], hi[t][0], has_hi, ls, xs, sh, c, y[t]);
            epilogue32(lo[t][1], hi[t][1], has_hi, ls, xs, sh + 2, c + 2, y[t] + 32);
        }
    }
    const __m512 ts = _mm512_set1_ps(w->tensor_scale);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 64; r += 16)
            _mm512_storeu_ps(y64 + (size_t)t * 64 + r, _mm512_mul_ps(_mm512_load_ps(y[t] + r), ts));
}

/* T and bits constant per instance (fmt a run-time value): the token and plane loops unroll */
TMAC_INLINE void tileN_bits(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T,
                            const int fmt) {
    switch (w->bits) {
    case 1: tileN(w, luts, tile, y64, T, 1, fmt); break;
    case 2: tileN(w, luts, tile, y64, T, 2, fmt); break;
    case 3: tileN(w, luts, tile, y64, T, 3, fmt); break;
    case 4: tileN(w, luts, tile, y64, T, 4, fmt); break;
    case 5: tileN(w, luts, tile, y64, T, 5, fmt); break;
    case 6: tileN(w, luts, tile, y64, T, 6, fmt); break;
    case 7: tileN(w, luts, tile, y64, T, 7, fmt); break;
    default: tileN(w, luts, tile, y64, T, 8, fmt); break;
    }
}

TMAC_INLINE void tileN_fmt(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T) {
    /* the format is a run-time value here: its branch runs once per act group for all T tokens */
    tileN_bits(w, luts, tile, y64, T, w->scale_format);
}

void tmac_gemm_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64) {
    for (int t = 0; t < n;) {
        const int T = n - t < GEMM_BLOCK ? n - t : GEMM_BLOCK;
        switch (T) {
        case 1: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 1); break;
        case 2: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 2); break;
        case 3: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 3); break;
#if GEMM_BLOCK > 4
        case 4: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 4); break;
        case 5: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 5); break;
        case 6: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 6); break;
        case 7: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 7); break;
#endif
        default: tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, GEMM_BLOCK); break;
        }
        t += T;
    }
}
