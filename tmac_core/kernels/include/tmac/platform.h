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

#endif
