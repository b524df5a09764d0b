/* x86 intrinsics, or SIMDe's portable emulation of them when
 * TMAC_EMULATE_X86 is defined: the test driver uses that to check the AVX-512
 * tier against generic on machines whose CPU has no AVX-512. */
#ifndef TMAC_X86_SIMD_H
#define TMAC_X86_SIMD_H
#ifdef TMAC_EMULATE_X86
#  define SIMDE_ENABLE_NATIVE_ALIASES
#  include <simde/x86/avx512.h>
#else
#  include <immintrin.h>
#endif
#endif
