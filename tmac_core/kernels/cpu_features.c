/* CPU feature detection: CPUID + XGETBV on x86-64, getauxval / sysctlbyname /
 * IsProcessorFeaturePresent on ARM64. Baseline flags only: this file must run
 * on any x86-64 or ARMv8 CPU, before anything is known about it. */
#include <string.h>
#include "tmac/cpu.h"

#if TMAC_ARCH_X86_64
#  if defined(_MSC_VER) && !defined(__clang__)
#    include <intrin.h>
static void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    int v[4];
    __cpuidex(v, (int)leaf, (int)sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)v[i];
}
static uint64_t xgetbv0(void) { return _xgetbv(0); }
#  else
#    include <cpuid.h>
static void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
    if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) r[0] = r[1] = r[2] = r[3] = 0;
}
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    /* byte-encoded xgetbv: the mnemonic is missing from some assemblers (numpy does the same) */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#  endif

static void detect_x86(tmac_cpu_features_t *f) {
    unsigned r[4], max_leaf;
    f->is_x86_64 = 1;
    cpuid(0, 0, r);
    max_leaf = r[0];
    cpuid(1, 0, r);
    f->sse3 = (r[2] >> 0) & 1;
    f->ssse3 = (r[2] >> 9) & 1;
    f->fma = (r[2] >> 12) & 1;
    f->sse41 = (r[2] >> 19) & 1;
    f->osxsave = (r[2] >> 27) & 1;
    f->avx = (r[2] >> 28) & 1;
    f->f16c = (r[2] >> 29) & 1;
    if (max_leaf >= 7) {
        cpuid(7, 0, r);
        f->avx2 = (r[1] >> 5) & 1;
        f->bmi2 = (r[1] >> 8) & 1;
        f->avx512f = (r[1] >> 16) & 1;
        f->avx512dq = (r[1] >> 17) & 1;
        f->avx512bw = (r[1] >> 30) & 1;
        f->avx512vl = (r[1] >> 31) & 1;
        f->avx512vbmi = (r[2] >> 1) & 1;
        f->avx512vnni = (r[2] >> 11) & 1;
        cpuid(7, 1, r);
        f->avx_vnni = (r[0] >> 4) & 1;
    }
    /* CPUID says what the core has; XCR0 says what the OS saves on a context
     * switch. Without both, AVX instructions fault (llama.cpp skips this check). */
    f->xcr0 = f->osxsave ? xgetbv0() : 0;
    f->os_avx = (f->xcr0 & 0x6) == 0x6;
    f->os_avx512 = (f->xcr0 & 0xE6) == 0xE6;
}
#endif

#if TMAC_ARCH_ARM64
#  if defined(__linux__)
#    include <sys/auxv.h>
#  elif defined(__APPLE__)
#    include <sys/sysctl.h>
static int sysctl_flag(const char *name) {
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname(name, &v, &n, NULL, 0) == 0 && v;
}
#  elif defined(_WIN32)
#    include <windows.h>
#  endif

static void detect_arm(tmac_cpu_features_t *f) {
    f->is_arm64 = 1;
    f->neon = 1;                              /* Advanced SIMD is mandatory in ARMv8-A */
#  if defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    f->dotprod = (hw >> 20) & 1;              /* HWCAP_ASIMDDP */
    f->sve = (hw >> 22) & 1;                  /* HWCAP_SVE */
    f->i8mm = (hw2 >> 13) & 1;                /* HWCAP2_I8MM */
#  elif defined(__APPLE__)
    f->dotprod = sysctl_flag("hw.optional.arm.FEAT_DotProd");
    f->i8mm = sysctl_flag("hw.optional.arm.FEAT_I8MM");
#  elif defined(_WIN32)
    f->dotprod = IsProcessorFeaturePresent(43) != 0;   /* PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE */
    f->i8mm = IsProcessorFeaturePresent(66) != 0;      /* PF_ARM_V82_I8MM_INSTRUCTIONS_AVAILABLE */
    f->sve = IsProcessorFeaturePresent(46) != 0;       /* PF_ARM_SVE_INSTRUCTIONS_AVAILABLE */
#  endif
}
#endif

void tmac_cpu_detect(tmac_cpu_features_t *f) {
    memset(f, 0, sizeof *f);
#if TMAC_ARCH_X86_64
    detect_x86(f);
#elif TMAC_ARCH_ARM64
    detect_arm(f);
#endif
}

int tmac_isa_supported(const tmac_cpu_features_t *f, tmac_isa_t isa) {
    switch (isa) {
    case TMAC_ISA_GENERIC: return 1;
    case TMAC_ISA_AVX2: return f->is_x86_64 && f->avx && f->avx2 && f->fma && f->f16c && f->os_avx;
    case TMAC_ISA_AVX512:
        return tmac_isa_supported(f, TMAC_ISA_AVX2) && f->avx512f && f->avx512bw && f->avx512vl &&
               f->avx512dq && f->os_avx512;
    case TMAC_ISA_NEON: return f->is_arm64 && f->neon;
    default: return 0;
    }
}

static const char *const k_isa_names[TMAC_ISA_COUNT] = {"generic", "avx2", "avx512", "neon"};

const char *tmac_isa_name(tmac_isa_t isa) {
    return (isa >= 0 && isa < TMAC_ISA_COUNT) ? k_isa_names[isa] : "unknown";
}

int tmac_isa_from_name(const char *name) {
    for (int i = 0; i < TMAC_ISA_COUNT; i++)
        if (strcmp(name, k_isa_names[i]) == 0) return i;
    return -1;
}
