/* x86 intrinsics, or SIMDe's portable emulation of them when
 * TMAC_EMULATE_X86 is defined: the test driver uses that to check the AVX-512
 * tier against generic on machines whose CPU has no AVX-512. */
#ifndef TMAC_X86_SIMD_H
#define TMAC_X86_SIMD_H
#ifdef TMAC_EMULATE_X86
#  define SIMDE_ENABLE_NATIVE_ALIASES
#  include <simde/x86/avx512.h>
/* SIMDe 0.7.4 (Debian 12) lacks these three; build them from 256-bit halves */
static inline __m512i tmac_emu_cvtepi16_epi32(__m256i a) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(a))),
                              _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a, 1)), 1);
}
static inline __m512 tmac_emu_cvtepi32_ps(__m512i a) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_cvtepi32_ps(_mm512_castsi512_si256(a))),
                              _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(a, 1)), 1);
}
static inline __m512 tmac_emu_cvtph_ps(__m256i a) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_cvtph_ps(_mm256_castsi256_si128(a))),
                              _mm256_cvtph_ps(_mm256_extracti128_si256(a, 1)), 1);
}
#  define _mm512_cvtepi16_epi32 tmac_emu_cvtepi16_epi32
#  define _mm512_cvtepi32_ps tmac_emu_cvtepi32_ps
#  define _mm512_cvtph_ps tmac_emu_cvtph_ps
#else
#  include <immintrin.h>
#endif
#include <stdint.h>

/* Bytes ahead of the index block being read that a weight tile prefetches
 * into L1, one cache line per 64-byte block read. The hardware prefetcher
 * alone left the AVX2 decode GEMV at 60-70% of the streaming-read bandwidth
 * on Zen 3 (2560 x 6912 ternary and 4-bit tiles); a software prefetch 2-16 KB
 * ahead made it 20-25% faster, with no clear winner inside that range
 * (docs/BENCHMARKS.md). The address is computed as an integer: past the end
 * of the buffer it is a hint that cannot fault, and no out-of-bounds pointer
 * is ever formed. */
#define TMAC_PREFETCH_AHEAD 8192
#define TMAC_PREFETCH_AHEAD_OF(p) \
    _mm_prefetch((const char *)((uintptr_t)(p) + TMAC_PREFETCH_AHEAD), _MM_HINT_T0)
#endif
