/* CPU feature detection and instruction-set tiers. Compiled with baseline
 * flags only: detection must run on every CPU, including ones without AVX. */
#ifndef TMAC_CPU_H
#define TMAC_CPU_H

#include "tmac/platform.h"

typedef enum {
    TMAC_ISA_GENERIC = 0,
    TMAC_ISA_AVX2 = 1,
    TMAC_ISA_AVX512 = 2,
    TMAC_ISA_NEON = 3,
    TMAC_ISA_COUNT = 4
} tmac_isa_t;

typedef struct {
    int is_x86_64, is_arm64;
    /* x86: what CPUID reports */
    int sse3, ssse3, sse41, fma, f16c, avx, avx2, bmi2, osxsave;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512vbmi, avx_vnni;
    uint64_t xcr0;                 /* 0 when OSXSAVE is off: the OS saves no AVX state */
    int os_avx, os_avx512;         /* XCR0 says the OS saves YMM / ZMM+opmask state */
    /* arm64 */
    int neon, dotprod, i8mm, sve;
} tmac_cpu_features_t;

void tmac_cpu_detect(tmac_cpu_features_t *f);
/* Whether this CPU and OS can run a tier. */
int tmac_isa_supported(const tmac_cpu_features_t *f, tmac_isa_t isa);
const char *tmac_isa_name(tmac_isa_t isa);
int tmac_isa_from_name(const char *name);   /* -1 if unknown */

#endif
