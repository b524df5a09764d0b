/* Port peaks for tests/bench/roofline.py: how many vector ops per ns this CPU sustains
 * for the instruction mixes that bound prompt processing, from L1-resident data.
 *
 *   mix 0  vpshufb ymm, 8 independent chains
 *   mix 1  vpshufb ymm + vpunpcklbw ymm, 4 independent pairs
 *   mix 2  vpmaddubsw ymm, 8 independent chains
 *   mix 3  LUT tile, one token (x86/avx2/lut_gemv.c tile_bits at 4 bits): per plane and
 *          32-byte half: and, srl, and, 2 vpshufb, 2 vpunpck, 2 vpmaddubsw, 2 vpaddw
 *   mix 4  LUT tile, two tokens (lut_gemv.c passN, T = 2) at 4 bits: per plane pair and
 *          half: 2 vpunpck, 4 and, 2 srl shared; per token 4 vpshufb, 4 vpmaddubsw, 4 vpaddw
 *   mix 5  the same at 2 bits (one plane pair per kpair)
 *   mix 6  int8 dot products as llama.cpp's AVX2 Q4_0 GEMM runs them: 64 nibbles unpacked
 *          once (and, srl, and) for 4 tokens; per 32 MACs and token vpmaddubsw, vpmaddwd,
 *          vcvtdq2ps, vfmadd (the block's scale)
 *
 * port_peak_seconds(mix, iters) runs `iters` iterations of a mix (CPU seconds of the calling
 * thread); port_peak_ops(mix) is
 * the vector ALU ops of one iteration (loads not counted: they go to the load ports);
 * port_peak_work(mix) the work of one iteration: weight x token products for the LUT and
 * int8 mixes (a LUT mix's bits are in its weights), ops for mixes 0-2.
 * Benchmark-only code: compiled with -O2 -mavx2 -mfma by tests/bench/roofline.py on the
 * machine that runs it, never shipped. */
#include <immintrin.h>
#include <stdint.h>
#include <time.h>

#define BUF 4096 /* bytes of weight indices / activations: L1-resident */

static uint8_t g_buf[BUF] __attribute__((aligned(64)));
static int8_t g_act[BUF] __attribute__((aligned(64)));
volatile uint64_t port_peak_sink; /* every result ends here: nothing is dead code */

/* this thread's CPU time: on a shared machine the time other processes hold the core is
 * not counted (a sibling hyperthread's load still is) */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sink(__m256i v) { port_peak_sink += (uint64_t)_mm256_extract_epi64(v, 0); }

static void fill(void) {
    for (int i = 0; i < BUF; i++) {
        g_buf[i] = (uint8_t)(i * 37 + 11);
        g_act[i] = (int8_t)(i * 13 - 60);
    }
}

static void run_pshufb(long iters) {
    __m256i x0 = _mm256_loadu_si256((const __m256i *)g_buf), m = _mm256_loadu_si256((const __m256i *)(g_buf + 32));
    __m256i x1 = _mm256_add_epi8(x0, m), x2 = _mm256_add_epi8(x1, m), x3 = _mm256_add_epi8(x2, m);
    __m256i x4 = _mm256_add_epi8(x3, m), x5 = _mm256_add_epi8(x4, m), x6 = _mm256_add_epi8(x5, m);
    __m256i x7 = _mm256_add_epi8(x6, m);
    for (long i = 0; i < iters; i++) {
        x0 = _mm256_shuffle_epi8(x0, m); x1 = _mm256_shuffle_epi8(x1, m);
        x2 = _mm256_shuffle_epi8(x2, m); x3 = _mm256_shuffle_epi8(x3, m);
        x4 = _mm256_shuffle_epi8(x4, m); x5 = _mm256_shuffle_epi8(x5, m);
        x6 = _mm256_shuffle_epi8(x6, m); x7 = _mm256_shuffle_epi8(x7, m);
        __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5), "+x"(x6), "+x"(x7));
    }
    sink(_mm256_xor_si256(_mm256_xor_si256(_mm256_xor_si256(x0, x1), _mm256_xor_si256(x2, x3)),
                          _mm256_xor_si256(_mm256_xor_si256(x4, x5), _mm256_xor_si256(x6, x7))));
}

static void run_pshufb_unpack(long iters) {
    __m256i m = _mm256_loadu_si256((const __m256i *)g_buf);
    __m256i a0 = _mm256_loadu_si256((const __m256i *)(g_buf + 32)), a1 = _mm256_add_epi8(a0, m);
    __m256i a2 = _mm256_add_epi8(a1, m), a3 = _mm256_add_epi8(a2, m);
    __m256i b0 = a3, b1 = a2, b2 = a1, b3 = a0;
    for (long i = 0; i < iters; i++) {
        a0 = _mm256_shuffle_epi8(m, a0); a1 = _mm256_shuffle_epi8(m, a1);
        a2 = _mm256_shuffle_epi8(m, a2); a3 = _mm256_shuffle_epi8(m, a3);
        b0 = _mm256_unpacklo_epi8(b0, a0); b1 = _mm256_unpacklo_epi8(b1, a1);
        b2 = _mm256_unpacklo_epi8(b2, a2); b3 = _mm256_unpacklo_epi8(b3, a3);
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(b0), "+x"(b1), "+x"(b2), "+x"(b3));
    }
    sink(_mm256_xor_si256(_mm256_xor_si256(b0, b1), _mm256_xor_si256(b2, b3)));
}

static void run_maddubs(long iters) {
    __m256i w = _mm256_set1_epi8(3);
    __m256i x0 = _mm256_loadu_si256((const __m256i *)g_buf), x1 = _mm256_add_epi8(x0, w);
    __m256i x2 = _mm256_add_epi8(x1, w), x3 = _mm256_add_epi8(x2, w), x4 = _mm256_add_epi8(x3, w);
    __m256i x5 = _mm256_add_epi8(x4, w), x6 = _mm256_add_epi8(x5, w), x7 = _mm256_add_epi8(x6, w);
    for (long i = 0; i < iters; i++) {
        x0 = _mm256_maddubs_epi16(x0, w); x1 = _mm256_maddubs_epi16(x1, w);
        x2 = _mm256_maddubs_epi16(x2, w); x3 = _mm256_maddubs_epi16(x3, w);
        x4 = _mm256_maddubs_epi16(x4, w); x5 = _mm256_maddubs_epi16(x5, w);
        x6 = _mm256_maddubs_epi16(x6, w); x7 = _mm256_maddubs_epi16(x7, w);
        __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5), "+x"(x6), "+x"(x7));
    }
    sink(_mm256_xor_si256(_mm256_xor_si256(_mm256_xor_si256(x0, x1), _mm256_xor_si256(x2, x3)),
                          _mm256_xor_si256(_mm256_xor_si256(x4, x5), _mm256_xor_si256(x6, x7))));
}

/* lut_gemv.c tile_bits' inner loop at 4 bits: one kpair (its two 16-entry tables) per
 * iteration, 4 planes of 64 bytes: 64 rows x 8 activations x 4 bits, one token */
static void run_lut_gemv4(long iters) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (long it = 0; it < iters; it++) {
        const size_t at = ((size_t)it * 256) % BUF;
        const uint8_t *block = g_buf + at;
        const int8_t *tables = g_act + (at / 8);
        const __m256i t_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables));
        const __m256i t_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables + 16)));
        for (int i = 0; i < 4; i++, block += 64) {
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
    sink(_mm256_xor_si256(_mm256_xor_si256(acc0, acc1), _mm256_xor_si256(acc2, acc3)));
}

/* lut_gemv.c passN with T = 2: one kpair per iteration, `bits` planes (even) of one
 * 32-byte half block: 32 rows x 8 activations x bits, two tokens */
static void run_lut_gemm2(long iters, const int bits) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
    for (long it = 0; it < iters; it++) {
        const size_t at = ((size_t)it * 64 * (size_t)bits) % BUF;
        const uint8_t *block = g_buf + at;
        const int8_t *tables0 = g_act + (at / 8), *tables1 = g_act + BUF / 2 + (at / 8);
        const __m256i t0_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables0));
        const __m256i t0_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables0 + 16)));
        const __m256i t1_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tables1));
        const __m256i t1_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tables1 + 16)));
        for (int j = 0; j < bits; j += 2) {
            const __m256i pa = _mm256_loadu_si256((const __m256i *)(block + (size_t)j * 64));
            const __m256i pb = _mm256_loadu_si256((const __m256i *)(block + (size_t)(j + 1) * 64));
            const __m256i u0 = _mm256_unpacklo_epi8(pa, pb), u1 = _mm256_unpackhi_epi8(pa, pb);
            const __m256i l0 = _mm256_and_si256(u0, nibble), h0 = _mm256_and_si256(_mm256_srli_epi16(u0, 4), nibble);
            const __m256i l1 = _mm256_and_si256(u1, nibble), h1 = _mm256_and_si256(_mm256_srli_epi16(u1, 4), nibble);
            const __m256i weight = _mm256_set1_epi16((short)((1 << (j % 4)) | ((1 << ((j + 1) % 4)) << 8)));
            a0 = _mm256_add_epi16(a0, _mm256_add_epi16(_mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t0_lo, l0)),
                                                       _mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t0_hi, h0))));
            a1 = _mm256_add_epi16(a1, _mm256_add_epi16(_mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t0_lo, l1)),
                                                       _mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t0_hi, h1))));
            b0 = _mm256_add_epi16(b0, _mm256_add_epi16(_mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t1_lo, l0)),
                                                       _mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t1_hi, h0))));
            b1 = _mm256_add_epi16(b1, _mm256_add_epi16(_mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t1_lo, l1)),
                                                       _mm256_maddubs_epi16(weight, _mm256_shuffle_epi8(t1_hi, h1))));
        }
    }
    sink(_mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(b0, b1)));
}

/* 64 weights (32 bytes of nibbles) x 4 tokens per iteration: the unpack is shared by the
 * tokens; per token and 32 weights maddubs (u8 weight x s8 activation), madd by ones
 * (int32 sums), convert, fma with the block's scale into one fp32 accumulator */
static void run_int8(long iters) {
    const __m256i nibble = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256 d = _mm256_set1_ps(0.01f);
    /* one fp32 accumulator per token and block: no fma waits on the previous one */
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (long it = 0; it < iters; it++) {
        const size_t at = ((size_t)it * 32) % (BUF / 4);
        const __m256i q = _mm256_loadu_si256((const __m256i *)(g_buf + at));
        const __m256i w0 = _mm256_and_si256(q, nibble), w1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble);
#define TOKEN(t, c0, c1)                                                                               \
    do {                                                                                               \
        const int8_t *x = g_act + (size_t)(t) * (BUF / 4) + 2 * at;                                    \
        const __m256i s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(w0, _mm256_loadu_si256((const __m256i *)x)), ones); \
        const __m256i s1 =                                                                             \
            _mm256_madd_epi16(_mm256_maddubs_epi16(w1, _mm256_loadu_si256((const __m256i *)(x + 32))), ones); \
        c0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), d, c0);                                           \
        c1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), d, c1);                                           \
    } while (0)
        TOKEN(0, c00, c01);
        TOKEN(1, c10, c11);
        TOKEN(2, c20, c21);
        TOKEN(3, c30, c31);
#undef TOKEN
    }
    const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c00, c01), _mm256_add_ps(c10, c11)),
                                   _mm256_add_ps(_mm256_add_ps(c20, c21), _mm256_add_ps(c30, c31)));
    sink(_mm256_cvttps_epi32(s));
}

/* vector ALU ops per iteration (see the list at the top) */
double port_peak_ops(int mix) {
    switch (mix) {
    case 0: return 8;
    case 1: return 8;
    case 2: return 8;
    case 3: return 4 * 2 * 11;            /* 4 planes x 2 halves x (2 and, srl, 2 shufb, 2 unpack, 2 madd, 2 add) */
    case 4: return 2 * (8 + 2 * 12);      /* 2 plane pairs x (shared 8 + 2 tokens x 12) */
    case 5: return 1 * (8 + 2 * 12);
    case 6: return 3 + 4 * 2 * 4;         /* unpack + 4 tokens x 2 blocks x (maddubs, madd, cvt, fma) */
    default: return -1;
    }
}

/* work per iteration: weight x token products (mixes 3-6), ops (mixes 0-2) */
double port_peak_work(int mix) {
    switch (mix) {
    case 3: return 64.0 * 8;              /* 64 rows x 8 activations, 1 token (4 bits) */
    case 4: return 32.0 * 8 * 2;          /* 32 rows x 8 activations, 2 tokens (4 bits) */
    case 5: return 32.0 * 8 * 2;          /* the same at 2 bits */
    case 6: return 64.0 * 4;              /* 64 weights x 4 tokens */
    default: return port_peak_ops(mix);
    }
}

/* CPU seconds of `iters` iterations of `mix`; -1 for an unknown mix or iters < 1 */
double port_peak_seconds(int mix, long iters) {
    if (mix < 0 || mix > 6 || iters < 1) return -1.0;
    fill();
    double t0 = now_s();
    switch (mix) {
    case 0: run_pshufb(iters); break;
    case 1: run_pshufb_unpack(iters); break;
    case 2: run_maddubs(iters); break;
    case 3: run_lut_gemv4(iters); break;
    case 4: run_lut_gemm2(iters, 4); break;
    case 5: run_lut_gemm2(iters, 2); break;
    default: run_int8(iters); break;
    }
    return now_s() - t0;
}
