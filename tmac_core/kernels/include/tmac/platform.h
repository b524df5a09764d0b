/* Portability layer shared by every kernel file: restrict, alignment, static
 * asserts and an exact fp16 <-> fp32 conversion for the baseline (no F16C).
 * Everything here is static inline so no ISA-specific copy of a helper can leak
 * into baseline code through the linker (PyTorch's "Linking AVX and non-AVX
 * files" note). */
#ifndef TMAC_PLATFORM_H
#define TMAC_PLATFORM_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__clang__)
#  define TMAC_RESTRICT __restrict
#  define TMAC_INLINE static __forceinline
#  define TMAC_ALIGN(n) __declspec(align(n))
#else
#  define TMAC_RESTRICT __restrict__
#  define TMAC_INLINE static inline __attribute__((always_inline))
#  define TMAC_ALIGN(n) __attribute__((aligned(n)))
#endif

#if defined(__x86_64__) || defined(_M_X64)
#  define TMAC_ARCH_X86_64 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#  define TMAC_ARCH_ARM64 1
#endif

#define TMAC_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

/* IEEE binary16 -> binary32, exact for every input (subnormals, inf, NaN). */
static inline float tmac_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0x1Fu) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {                      /* subnormal: renormalize */
        exp = 113;
        while ((mant & 0x400u) == 0) { mant <<= 1; exp--; }
        bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* binary32 -> binary16, round to nearest, ties to even (as F16C's and NEON's
 * conversions do); overflow gives inf, NaN stays NaN. */
static inline uint16_t tmac_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00u;                  /* NaN */
    if (ax >= 0x477FF000u) return sign | 0x7C00u;                 /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {                                      /* normal half: >= 2^-14 */
        const uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);       /* carry may bump the exponent */
        return sign | (uint16_t)((r - 0x38000000u) >> 13);
    }
    if (ax < 0x33000000u) return sign;                            /* < 2^-25: rounds to zero */
    /* subnormal half: round(mantissa * 2^(e - 126)) in units of 2^-24 */
    const uint32_t e = ax >> 23, mant = (ax & 0x7FFFFFu) | 0x800000u, shift = 126u - e;
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;             /* q may reach 0x400: the smallest normal */
    return sign | (uint16_t)q;
}

#endif
