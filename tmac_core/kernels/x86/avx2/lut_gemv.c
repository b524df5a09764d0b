/* AVX2 twin of generic/lut_gemv.c:tmac_gemv_tile_generic (LAYOUT.md §Weights).
 * Per 32-byte half of an index block: vpshufb looks up the low nibbles in the
 * table of kgroup 2kp and the high nibbles in that of 2kp+1 (32 rows each);
 * vpunpck{l,h}bw puts the two lookups of one row side by side, and vpmaddubsw
 * by (2^i, 2^i) adds them, weights the bit plane and widens to int16 in one
 * instruction. Planes 0-3 and planes 4-7 (bits 5..8) go to separate int16
 * accumulators, each plane weighted 2^(i mod 4), joined as int32 lo + 16 * hi
 * (LAYOUT.md §Accumulation); they are flushed to the fp32 epilogue once per
 * activation group (bound: layout.h TMAC_MAX_ACT_GROUP). F16_SYM scales derive
 * c = zero_mult * sh by one vmulps; SUPER scales (§Scales SUPER) derive sh and c
 * in the epilogue, c by one vfmsub (SUPER_NOMIN: vfmsub of 0). The scale format
 * is a compile-time constant of every tile function (fmt).
 * Compiled with -mavx2 -mfma -mf16c; called only when dispatch saw AVX2+FMA+F16C. */
#include "tmac/kernels.h"
#include "tmac/x86_simd.h"

/* One act group's scales: F16(_SYM) s = its (sh, c) / (sh) block, sub unused; SUPER(_NOMIN)
 * s = its super-block's (d, dmin) / (d) block, sub = its group's (sc, mn) / (sc) block; 64 rows each. */
typedef struct {
    const uint16_t *s;
    const int8_t *sub;
    __m256 kb;                 /* SUPER(_NOMIN): code_offset */
    __m256 zm;                 /* F16_SYM: zero_mult */
} group_scales_t;

TMAC_INLINE group_scales_t group_scales(const tmac_weight_t *w, const uint16_t *scales, const int8_t *sub,
                                        int a, int act_group, const int fmt) {
    const size_t k0 = (size_t)a * act_group;     /* first activation of the group */
    const int super = tmac_fmt_super(fmt), rec = tmac_fmt_records(fmt);
    group_scales_t gs;
    gs.s = scales + k0 / (size_t)(super ? w->super_size : w->group_size) * rec * 64;
    gs.sub = super ? sub + k0 / (size_t)w->group_size * rec * 64 : NULL;
    gs.kb = _mm256_set1_ps(w->code_offset);
    gs.zm = _mm256_set1_ps((float)w->zero_mult);
    return gs;
}

/* sh, c of rows r..r+7, exactly the spec's fp32 operations (layout.h tmac_coeffs_at):
 * F16_SYM c = zero_mult * sh; SUPER sh = (0.5 * D) * sf, c = fmsub(kb * D, sf, Dm * mf);
 * SUPER_NOMIN the same with Dm * mf = 0 (fmsub(a, b, +0) = fmaf(a, b, -0)). */
TMAC_INLINE void coeffs8(const group_scales_t *gs, int r, const int fmt, __m256 *sh, __m256 *c) {
    const __m256 v0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gs->s + r)));
    if (fmt == TMAC_SCALES_F16) {
        *sh = v0;
        *c = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gs->s + 64 + r)));
        return;
    }
    if (fmt == TMAC_SCALES_F16_SYM) {
        *sh = v0;
        *c = _mm256_mul_ps(gs->zm, v0);
        return;
    }
    const __m256 sf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(gs->sub + r))));
    __m256 min_term = _mm256_setzero_ps();
    if (fmt == TMAC_SCALES_SUPER) {
        const __m256 v1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gs->s + 64 + r)));
        const __m256 mf =
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(gs->sub + 64 + r))));
        min_term = _mm256_mul_ps(v1, mf);
    }
    *sh = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v0), sf);
    *c = _mm256_fmsub_ps(_mm256_mul_ps(gs->kb, v0), sf, min_term);
}

/* (float)(lo + 16 * hi) of 8 int16 rows; (float)lo when the weight has no planes 4-7 */
TMAC_INLINE __m256 acc_f32(__m128i lo, __m128i hi, const int has_hi) {
    __m256i a = _mm256_cvtepi16_epi32(lo);
    if (has_hi) a = _mm256_add_epi32(a, _mm256_slli_epi32(_mm256_cvtepi16_epi32(hi), 4));
    return _mm256_cvtepi32_ps(a);
}

/* y[r..r+15] = fma(xs, c, fma(acc * ls, sh, y)), exactly the generic order;
 * lo (and hi) hold the 16 rows' int16 sums. scales_first only orders the
 * source: GCC schedules the one-token tile best with the scales read last (as
 * v1 did; 2% on the 4-bit GEMV) and the two-token tile with them read first
 * (6% on its 2-bit case). */
TMAC_INLINE void epilogue16(__m256i lo, __m256i hi, const int has_hi, __m256 ls, __m256 xs,
                            const group_scales_t *gs, int r, const int fmt, float *y, const int scales_first) {
    __m256 sh0, c0, sh1, c1;
    if (scales_first) {
        coeffs8(gs, r, fmt, &sh0, &c0);
        coeffs8(gs, r + 8, fmt, &sh1, &c1);
    }
    const __m256 a0 = acc_f32(_mm256_castsi256_si128(lo), _mm256_castsi256_si128(hi), has_hi);
    const __m256 a1 = acc_f32(_mm256_extracti128_si256(lo, 1), _mm256_extracti128_si256(hi, 1), has_hi);
    __m256 y0 = _mm256_loadu_ps(y + r), y1 = _mm256_loadu_ps(y + r + 8);
    if (!scales_first) {
        coeffs8(gs, r, fmt, &sh0, &c0);
        coeffs8(gs, r + 8, fmt, &sh1, &c1);
    }
    y0 = _mm256_fmadd_ps(_mm256_mul_ps(a0, ls), sh0, y0);
    y1 = _mm256_fmadd_ps(_mm256_mul_ps(a1, ls), sh1, y1);
    y0 = _mm256_fmadd_ps(xs, c0, y0);
    y1 = _mm256_fmadd_ps(xs, c1, y1);
    _mm256_storeu_ps(y + r, y0);
    _mm256_storeu_ps(y + r + 8, y1);
}

/* One plane of one kpair, 32 bytes of its block (rows 16h..16h+15 and 32+16h.. of
 * half h), into the int16 sums of the unpacklo (*r0) and unpackhi (*r1) rows. */
TMAC_INLINE void step_half(__m256i t_lo, __m256i t_hi, const uint8_t *block, __m256i weight, __m256i *r0,
                           __m256i *r1) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i v = _mm256_loadu_si256((const __m256i *)block);
    const __m256i l = _mm256_shuffle_epi8(t_lo, _mm256_and_si256(v, nibble));
    const __m256i h = _mm256_shuffle_epi8(t_hi, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
    *r0 = _mm256_add_epi16(*r0, _mm256_maddubs_epi16(weight, _mm256_unpacklo_epi8(l, h)));
    *r1 = _mm256_add_epi16(*r1, _mm256_maddubs_epi16(weight, _mm256_unpackhi_epi8(l, h)));
}

/* bits 5..8: planes 0-3 and 4-7 need 8 accumulators for a whole block, more
 * than the 16 ymm registers hold beside tables and temporaries, so each half
 * of the block is its own pass over the group (4 accumulators). */
TMAC_INLINE void tile_hi_bits(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int bits,
                              const int fmt) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;            /* (kpairs, bits, 64) */
    /* F16: (n_groups, 2, 64) sh, c; F16_SYM (n_groups, 1, 64) sh; SUPER: (n_super, 2, 64) d, dmin and sub
     * (n_groups, 2, 64) sc, mn; SUPER_NOMIN (n_super, 1, 64) d and (n_groups, 1, 64) sc */
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    TMAC_ALIGN(32) float y[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        const __m256 ls = _mm256_set1_ps(lut->scales[a]), xs = _mm256_set1_ps(lut->sums[a]);
        const group_scales_t gs = group_scales(w, scales, sub, a, lut->act_group, fmt);
        for (int half = 0; half < 2; half++) {
            /* [planes 0-3, planes 4-7] x [unpacklo rows, unpackhi rows] */
            __m256i lo0 = _mm256_setzero_si256(), lo1 = _mm256_setzero_si256();
            __m256i hi0 = _mm256_setzero_si256(), hi1 = _mm256_setzero_si256();
            const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64 + 32 * half;
            const int8_t *tables = lut->entries + (size_t)a * pairs_per_group * 32;
            for (int kp = 0; kp < pairs_per_group; kp++, tables += 32) {
                const __m256i t_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables));
                const __m256i t_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables + 16)));
                for (int i = 0; i < bits; i++, block += 64) {
                    if (half == 0) TMAC_PREFETCH_AHEAD_OF(block);     /* half 1 reads the same lines */
                    const __m256i weight = _mm256_set1_epi8((char)(1 << (i % TMAC_PLANES_PER_ACC)));
                    if (i < TMAC_PLANES_PER_ACC) step_half(t_lo, t_hi, block, weight, &lo0, &lo1);
                    else step_half(t_lo, t_hi, block, weight, &hi0, &hi1);
                }
            }
            epilogue16(lo0, hi0, 1, ls, xs, &gs, 16 * half, fmt, y, 0);
            epilogue16(lo1, hi1, 1, ls, xs, &gs, 32 + 16 * half, fmt, y, 0);
        }
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 8) _mm256_storeu_ps(y64 + r, _mm256_mul_ps(_mm256_load_ps(y + r), ts));
}

/* bits 1..4: one pass over whole blocks, 4 accumulators. */
TMAC_INLINE void tile_bits(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int bits,
                           const int fmt) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i zero = _mm256_setzero_si256();
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
                TMAC_PREFETCH_AHEAD_OF(block);
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
        const group_scales_t gs = group_scales(w, scales, sub, a, lut->act_group, fmt);
        epilogue16(acc0, zero, 0, ls, xs, &gs, 0, fmt, y, 0);
        epilogue16(acc2, zero, 0, ls, xs, &gs, 16, fmt, y, 0);
        epilogue16(acc1, zero, 0, ls, xs, &gs, 32, fmt, y, 0);
        epilogue16(acc3, zero, 0, ls, xs, &gs, 48, fmt, y, 0);
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 8) _mm256_storeu_ps(y64 + r, _mm256_mul_ps(_mm256_load_ps(y + r), ts));
}

/* Planes [p0, p0 + n) of every kpair of one act group, one 32-byte half of each
 * block, for two tokens: a0/a1 token 0's unpacklo/unpackhi rows, b0/b1 token
 * 1's. The index load and nibble split are shared by the tokens. */
TMAC_INLINE void pass2(const uint8_t *block, const int bits, const int p0, const int n, int pairs,
                       const int8_t *tables0, const int8_t *tables1, __m256i acc[4]) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    __m256i b0 = _mm256_setzero_si256(), b1 = _mm256_setzero_si256();
    block += (size_t)p0 * 64;
    for (int kp = 0; kp < pairs; kp++, tables0 += 32, tables1 += 32, block += (size_t)(bits - n) * 64) {
        const __m256i t0_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables0));
        const __m256i t0_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables0 + 16)));
        const __m256i t1_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables1));
        const __m256i t1_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables1 + 16)));
        __m256i weight = _mm256_set1_epi8(1);     /* 2^i, doubled per plane: one live register */
        for (int i = 0; i < n; i++, block += 64, weight = _mm256_add_epi8(weight, weight)) {
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
    acc[0] = a0; acc[1] = a1; acc[2] = b0; acc[3] = b1;
}

/* The same tile for two activation vectors. The index bytes and their nibble
 * split are shared, so per bit plane and token the 4 shifts/ands and 2 loads
 * of the one-token kernel are paid once for both; lookups, unpacks and
 * maddubs stay per token. Each half of a 64-byte block (rows 0-15/32-47 and
 * 16-31/48-63) is a separate pass, so 4 accumulators, 4 tables and the
 * nibbles fit the 16 ymm registers; bits 5..8 take a second pass per half for
 * planes 4-7, for the same reason. bits stays a run-time value and the plane
 * weight doubles in a register: with bits constant GCC unrolls the planes,
 * interleaves them and spills accumulators to the stack (9% slower at 4 bits).
 * Integer sums are exact in any order and the epilogue is the one-token one,
 * so y0/y1 equal two gemv_tile calls bit for bit. has_hi (bits > 4) and fmt
 * are constants. */
TMAC_INLINE void tile2_bits(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                            float *y0_64, float *y1_64, const int has_hi, const int fmt) {
    const int bits = w->bits;
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = lut0->act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / lut0->act_group;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    TMAC_ALIGN(32) float y0[64] = {0};
    TMAC_ALIGN(32) float y1[64] = {0};

    for (int a = 0; a < n_act_groups; a++) {
        const __m256 ls0 = _mm256_set1_ps(lut0->scales[a]), xs0 = _mm256_set1_ps(lut0->sums[a]);
        const __m256 ls1 = _mm256_set1_ps(lut1->scales[a]), xs1 = _mm256_set1_ps(lut1->sums[a]);
        const group_scales_t gs = group_scales(w, scales, sub, a, lut0->act_group, fmt);
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const int8_t *tables0 = lut0->entries + (size_t)a * pairs_per_group * 32;
        const int8_t *tables1 = lut1->entries + (size_t)a * pairs_per_group * 32;
        for (int half = 0; half < 2; half++) {
            __m256i lo[4], hi[4];               /* [token 0 lo/hi rows, token 1 lo/hi rows] */
            if (has_hi) {
                pass2(block + 32 * half, bits, 0, TMAC_PLANES_PER_ACC, pairs_per_group, tables0, tables1, lo);
                pass2(block + 32 * half, bits, TMAC_PLANES_PER_ACC, bits - TMAC_PLANES_PER_ACC, pairs_per_group,
                      tables0, tables1, hi);
            } else {
                pass2(block + 32 * half, bits, 0, bits, pairs_per_group, tables0, tables1, lo);
                hi[0] = hi[1] = hi[2] = hi[3] = _mm256_setzero_si256();
            }
            epilogue16(lo[0], hi[0], has_hi, ls0, xs0, &gs, 16 * half, fmt, y0, 1);
            epilogue16(lo[1], hi[1], has_hi, ls0, xs0, &gs, 32 + 16 * half, fmt, y0, 1);
            epilogue16(lo[2], hi[2], has_hi, ls1, xs1, &gs, 16 * half, fmt, y1, 1);
            epilogue16(lo[3], hi[3], has_hi, ls1, xs1, &gs, 32 + 16 * half, fmt, y1, 1);
        }
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    for (int r = 0; r < 64; r += 8) {
        _mm256_storeu_ps(y0_64 + r, _mm256_mul_ps(_mm256_load_ps(y0 + r), ts));
        _mm256_storeu_ps(y1_64 + r, _mm256_mul_ps(_mm256_load_ps(y1 + r), ts));
    }
}

TMAC_INLINE void tile2_fmt(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                           float *y0_64, float *y1_64, const int fmt) {
    if (w->bits > TMAC_PLANES_PER_ACC) tile2_bits(w, lut0, lut1, tile, y0_64, y1_64, 1, fmt);
    else tile2_bits(w, lut0, lut1, tile, y0_64, y1_64, 0, fmt);
}

void tmac_gemv2_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                          float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64) {
    switch (w->scale_format) {
    case TMAC_SCALES_F16: tile2_fmt(w, lut0, lut1, tile, y0_64, y1_64, TMAC_SCALES_F16); break;
    case TMAC_SCALES_F16_SYM: tile2_fmt(w, lut0, lut1, tile, y0_64, y1_64, TMAC_SCALES_F16_SYM); break;
    case TMAC_SCALES_SUPER: tile2_fmt(w, lut0, lut1, tile, y0_64, y1_64, TMAC_SCALES_SUPER); break;
    default: tile2_fmt(w, lut0, lut1, tile, y0_64, y1_64, TMAC_SCALES_SUPER_NOMIN); break;
    }
}

/* constant bits per instance: the plane loop unrolls */
TMAC_INLINE void tile_switch(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *y64, const int fmt) {
    switch (w->bits) {
    case 1: tile_bits(w, lut, tile, y64, 1, fmt); break;
    case 2: tile_bits(w, lut, tile, y64, 2, fmt); break;
    case 3: tile_bits(w, lut, tile, y64, 3, fmt); break;
    case 4: tile_bits(w, lut, tile, y64, 4, fmt); break;
    case 5: tile_hi_bits(w, lut, tile, y64, 5, fmt); break;
    case 6: tile_hi_bits(w, lut, tile, y64, 6, fmt); break;
    case 7: tile_hi_bits(w, lut, tile, y64, 7, fmt); break;
    default: tile_hi_bits(w, lut, tile, y64, 8, fmt); break;
    }
}

void tmac_gemv_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64) {
    switch (w->scale_format) {      /* tmac_check_shapes admitted only these four */
    case TMAC_SCALES_F16: tile_switch(w, lut, tile, y64, TMAC_SCALES_F16); break;
    case TMAC_SCALES_F16_SYM: tile_switch(w, lut, tile, y64, TMAC_SCALES_F16_SYM); break;
    case TMAC_SCALES_SUPER: tile_switch(w, lut, tile, y64, TMAC_SCALES_SUPER); break;
    default: tile_switch(w, lut, tile, y64, TMAC_SCALES_SUPER_NOMIN); break;
    }
}

/* ---- gemm_tile: two tokens per pass, bit planes paired on the indices ----
 *
 * As in the AVX-512 tier (x86/avx512/lut_gemv.c, gemm_tile): vpunpck{l,h}bw
 * of the 32-byte halves of planes p and p+1 puts one row's two planes side
 * by side (unpacklo: rows 16h..16h+15, unpackhi: 32+16h.., natural order, the
 * rows epilogue16 expects), once per load for both tokens; per token and
 * half block two vpshufb and two vpmaddubsw by (2^(p mod 4), 2^(p+1 mod 4))
 * instead of two vpshufb, two vpunpck and two vpmaddubsw per plane. Same
 * int16 sums (other order, no saturation: each vpmaddubsw result is at most
 * 127 * 12), same epilogue: bit-identical to gemv_tile per token. */

/* IN_REGISTER(v): an empty asm that needs v in a register at this point, so
 * each accumulator update stays where the source puts it. Without it GCC reassociates
 * the unrolled planes' vpaddw into a tree, keeps every partial product live
 * and spills accumulators to the stack. The int16 adds wrap and so commute:
 * their order leaves the sums unchanged. */
#if defined(__GNUC__) && !defined(TMAC_EMULATE_X86)
#  define IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#  define IN_REGISTER(v) ((void)0)
#endif

/* acc += the weighted lookups of one token's tables t_lo, t_hi at nibbles l, h */
TMAC_INLINE __m256i lookup_add(__m256i acc, __m256i weight, __m256i t_lo, __m256i t_hi, __m256i l, __m256i h) {
    acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t_lo, l)));
    IN_REGISTER(acc);
    acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t_hi, h)));
    IN_REGISTER(acc);
    return acc;
}

/* planes p0..p0+np-1 of one half block for T (1 or 2) tokens into
 * acc[2t] (unpacklo rows) and acc[2t+1] (unpackhi rows) */
TMAC_INLINE void passN(const uint8_t *block, const int bits, const int p0, const int np, int pairs,
                       const int8_t *tables0, const int8_t *tables1, const int T, __m256i acc[4]) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    __m256i b0 = _mm256_setzero_si256(), b1 = _mm256_setzero_si256();
    for (int kp = 0; kp < pairs; kp++, block += (size_t)bits * 64, tables0 += 32, tables1 += 32) {
        const __m256i t0_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables0));
        const __m256i t0_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables0 + 16)));
        __m256i t1_lo = t0_lo, t1_hi = t0_hi;
        if (T == 2) {
            t1_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables1));
            t1_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables1 + 16)));
        }
        for (int j = 0; j < np; j += 2) {
            const int second = j + 1 < np;
            const __m256i pa = _mm256_loadu_si256((const __m256i *)(block + (size_t)(p0 + j) * 64));
            const __m256i pb = second ? _mm256_loadu_si256((const __m256i *)(block + (size_t)(p0 + j + 1) * 64))
                                      : _mm256_setzero_si256();
            /* (2^(j mod 4), 2^(j+1 mod 4)) per word, 0 for a missing plane p0+j+1 (p0 is 0 or 4) */
            const __m256i weight = _mm256_set1_epi16(
                (short)((1 << (j % TMAC_PLANES_PER_ACC)) | ((second ? 1 << ((j + 1) % TMAC_PLANES_PER_ACC) : 0) << 8)));
            const __m256i u0 = _mm256_unpacklo_epi8(pa, pb), u1 = _mm256_unpackhi_epi8(pa, pb);
            const __m256i l0 = _mm256_and_si256(u0, nibble), h0 = _mm256_and_si256(_mm256_srli_epi16(u0, 4), nibble);
            a0 = lookup_add(a0, weight, t0_lo, t0_hi, l0, h0);
            if (T == 2) b0 = lookup_add(b0, weight, t1_lo, t1_hi, l0, h0);
            const __m256i l1 = _mm256_and_si256(u1, nibble), h1 = _mm256_and_si256(_mm256_srli_epi16(u1, 4), nibble);
            a1 = lookup_add(a1, weight, t0_lo, t0_hi, l1, h1);
            if (T == 2) b1 = lookup_add(b1, weight, t1_lo, t1_hi, l1, h1);
        }
    }
    acc[0] = a0; acc[1] = a1; acc[2] = b0; acc[3] = b1;
}

/* T, has_hi and fmt are constants, and so is bits for bits 1..4: the plane
 * loop unrolls without branches and the four accumulators stay in registers
 * (with bits a run-time value GCC spilled one to the stack and branched on the
 * plane count every kpair). bits 5..8 keep it a run-time value: their two
 * passes per half need no more registers than that. */
TMAC_INLINE void tileN_bits(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T,
                            const int bits, const int has_hi, const int fmt) {
    const int kpairs = w->k_pad / TMAC_KPAIR;
    const int pairs_per_group = luts[0].act_group / TMAC_KPAIR;
    const int n_act_groups = w->k_pad / luts[0].act_group;
    const int n_lo = has_hi ? TMAC_PLANES_PER_ACC : bits;
    const uint8_t *planes = w->planes + (size_t)tile * kpairs * bits * 64;
    const uint16_t *scales = tmac_tile_scales(w, tile);
    const int8_t *sub = tmac_tile_sub(w, tile);
    TMAC_ALIGN(32) float y[2][64];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 64; r += 8) _mm256_store_ps(y[t] + r, _mm256_setzero_ps());

    for (int a = 0; a < n_act_groups; a++) {
        const group_scales_t gs = group_scales(w, scales, sub, a, luts[0].act_group, fmt);
        const uint8_t *block = planes + (size_t)a * pairs_per_group * bits * 64;
        const size_t tab = (size_t)a * pairs_per_group * 32;
        const int8_t *tables0 = luts[0].entries + tab, *tables1 = T == 2 ? luts[1].entries + tab : tables0;
        for (int half = 0; half < 2; half++) {
            __m256i lo[4], hi[4];               /* [token 0 lo/hi rows, token 1 lo/hi rows] */
            passN(block + 32 * half, bits, 0, n_lo, pairs_per_group, tables0, tables1, T, lo);
            if (has_hi)
                passN(block + 32 * half, bits, TMAC_PLANES_PER_ACC, bits - TMAC_PLANES_PER_ACC, pairs_per_group,
                      tables0, tables1, T, hi);
            else
                hi[0] = hi[1] = hi[2] = hi[3] = _mm256_setzero_si256();
            for (int t = 0; t < T; t++) {
                const __m256 ls = _mm256_set1_ps(luts[t].scales[a]), xs = _mm256_set1_ps(luts[t].sums[a]);
                epilogue16(lo[2 * t], hi[2 * t], has_hi, ls, xs, &gs, 16 * half, fmt, y[t], 1);
                epilogue16(lo[2 * t + 1], hi[2 * t + 1], has_hi, ls, xs, &gs, 32 + 16 * half, fmt, y[t], 1);
            }
        }
    }
    const __m256 ts = _mm256_set1_ps(w->tensor_scale);
    for (int t = 0; t < T; t++)
        for (int r = 0; r < 64; r += 8)
            _mm256_storeu_ps(y64 + (size_t)t * 64 + r, _mm256_mul_ps(_mm256_load_ps(y[t] + r), ts));
}

TMAC_INLINE void tileN_switch(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T,
                              const int fmt) {
    switch (w->bits) {
    case 1: tileN_bits(w, luts, tile, y64, T, 1, 0, fmt); break;
    case 2: tileN_bits(w, luts, tile, y64, T, 2, 0, fmt); break;
    case 3: tileN_bits(w, luts, tile, y64, T, 3, 0, fmt); break;
    case 4: tileN_bits(w, luts, tile, y64, T, 4, 0, fmt); break;
    default: tileN_bits(w, luts, tile, y64, T, w->bits, 1, fmt); break;
    }
}

TMAC_INLINE void tileN_fmt(const tmac_weight_t *w, const tmac_lut_t *luts, int tile, float *y64, const int T) {
    switch (w->scale_format) {
    case TMAC_SCALES_F16: tileN_switch(w, luts, tile, y64, T, TMAC_SCALES_F16); break;
    case TMAC_SCALES_F16_SYM: tileN_switch(w, luts, tile, y64, T, TMAC_SCALES_F16_SYM); break;
    case TMAC_SCALES_SUPER: tileN_switch(w, luts, tile, y64, T, TMAC_SCALES_SUPER); break;
    default: tileN_switch(w, luts, tile, y64, T, TMAC_SCALES_SUPER_NOMIN); break;
    }
}

void tmac_gemm_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64) {
    int t = 0;
    for (; t + 2 <= n; t += 2) tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 2);
    if (t < n) tileN_fmt(w, luts + t, tile, y64 + (size_t)t * 64, 1);
}
