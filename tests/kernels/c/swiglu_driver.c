/* Runs one tier's SwiGLU (built for aarch64 and run under qemu-aarch64: NEON)
 * against the generic tier in the same binary, on every length 1..40 (the
 * SIMD body and the padded tail) and on gates in the saturated ends: within
 * 5e-7 relative (1e-30 absolute where silu underflows), never NaN. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "tmac/kernels.h"

#if defined(DRIVER_NEON)
#  define TIER TMAC_ISA_NEON
#else
#  error "define DRIVER_NEON"
#endif

static unsigned long long g_state = 88172645463325252ULL;

static float uniform(void) {      /* in [-1, 1) */
    g_state ^= g_state << 13; g_state ^= g_state >> 7; g_state ^= g_state << 17;
    return (float)(g_state >> 40) / (float)(1 << 23) - 1.0f;
}

static int run_case(const float *gate, const float *up, int n) {
    float *t = malloc((size_t)n * 4), *g = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++) t[i] = g[i] = gate[i];
    int bad = tmac_swiglu(TIER, t, up, n) != TMAC_OK || tmac_swiglu(TMAC_ISA_GENERIC, g, up, n) != TMAC_OK;
    for (int i = 0; i < n; i++) {
        const float diff = fabsf(t[i] - g[i]), mag = fabsf(g[i]);
        if (isnan(t[i]) || diff > 5e-7f * mag + 1e-30f) {
            printf("  gate %g up %g: tier %.9g generic %.9g\n", gate[i], up[i], t[i], g[i]);
            bad = 1;
        }
    }
    free(t); free(g);
    return bad;
}

int main(void) {
    if (tmac_init(NULL) != TMAC_OK) { printf("FAIL init\n"); return 1; }
    int n_cases = 0, failures = 0;
    float gate[64], up[64];
    for (int n = 1; n <= 40; n++, n_cases++) {
        for (int i = 0; i < n; i++) { gate[i] = 12.0f * uniform(); up[i] = uniform(); }
        const int bad = run_case(gate, up, n);
        printf("swiglu n=%d: %s\n", n, bad ? "FAIL" : "ok");
        failures += bad;
    }
    const float extremes[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 86.0f, 88.0f, 90.0f, 1e6f,
                              -80.0f, -87.5f, -88.5f, -1e6f};
    const int n_ext = (int)(sizeof extremes / sizeof extremes[0]);
    for (int i = 0; i < n_ext; i++) { gate[i] = extremes[i]; up[i] = -1.5f; }
    const int bad = run_case(gate, up, n_ext);
    printf("swiglu extremes: %s\n", bad ? "FAIL" : "ok");
    failures += bad;
    n_cases++;
    printf("%d cases, %d failed\n", n_cases, failures);
    return failures ? 1 : 0;
}
