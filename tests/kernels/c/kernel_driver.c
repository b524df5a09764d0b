/* Runs one kernel tier on test cases written by tests/kernels/test_cross_tiers.py
 * and compares it with the generic tier compiled into the same binary AND
 * with the outputs the Python extension's generic tier produced: tables and
 * outputs must match bit for bit. Built for aarch64 (NEON, run under
 * qemu-aarch64), for x86 with SIMDe emulating AVX-512 (TMAC_EMULATE_X86), or
 * with DRIVER_DISPATCH: every tier this CPU offers, taken from dispatch's own
 * table, each also through the thread pool at a different thread count (the
 * Windows build under wine: CPU detection, dispatch and the Win32 pool).
 * A layout-v2 case (bits > 4, SUPER scales, 16-wide act groups) on a tier that
 * dispatch still marks v1-only (tmac_gemv_v1_only) skips the tier's own tiles:
 * tmac_gemm runs the generic one there, and the threaded check covers that. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tmac/kernels.h"

#if defined(DRIVER_NEON)
#  define TIER_NAME "neon"
#  define TIER_ISA TMAC_ISA_NEON
#  define TIER_TILE tmac_gemv_tile_neon
#  define TIER_TILE2 tmac_gemv2_tile_neon
#  define TIER_GEMM tmac_gemm_tile_neon
#  define TIER_ENTRIES tmac_lut_entries_neon
#elif defined(DRIVER_AVX512)
#  define TIER_NAME "avx512"
#  define TIER_ISA TMAC_ISA_AVX512
#  define TIER_TILE tmac_gemv_tile_avx512
#  define TIER_TILE2 tmac_gemv2_tile_avx512     /* two-token tile (optional per tier) */
#  define TIER_GEMM tmac_gemm_tile_avx512       /* multi-token tile (optional per tier) */
#  define TIER_ENTRIES tmac_lut_entries_avx2
#elif defined(DRIVER_DISPATCH)
#  define DRIVER_THREADED 1
static tmac_isa_t g_isa;                       /* the tier under test: one pass per available tier */
static const tmac_kernel_table_t *g_kt;
#  define TIER_NAME tmac_isa_name(g_isa)
#  define TIER_ISA g_isa
#  define TIER_TILE g_kt->gemv_tile
#  define TIER_TILE2 g_kt->gemv2_tile
#  define HAS_TIER_TILE2 (g_kt->gemv2_tile != NULL)
#  define TIER_ENTRIES g_kt->lut_entries
#  define TIER_GEMM g_kt->gemm_tile
#else
#  error "define DRIVER_NEON, DRIVER_AVX512 or DRIVER_DISPATCH"
#endif
#if defined(DRIVER_NEON)
#  define DRIVER_THREADED 1
#endif
#if defined(TIER_TILE2) && !defined(HAS_TIER_TILE2)
#  define HAS_TIER_TILE2 1
#endif

static void *read_exact(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p || fread(p, 1, n, f) != n) { fprintf(stderr, "short read\n"); exit(2); }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s cases.bin\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    int32_t n_cases;
    if (fread(&n_cases, 4, 1, f) != 1) return 2;
    int failures = 0, n_passes = 1;
#if defined(DRIVER_NEON)
    if (tmac_init(NULL) != TMAC_OK || tmac_active_isa() != TMAC_ISA_NEON) {
        printf("FAIL dispatch did not pick neon\n");
        failures++;
    }
    tmac_pool_set_threads(3);
    {
        const tmac_cpu_features_t *cpu = tmac_cpu();
        printf("cpu: neon=%d dotprod=%d i8mm=%d sve=%d\n", cpu->neon, cpu->dotprod, cpu->i8mm, cpu->sve);
    }
#endif
#if defined(DRIVER_DISPATCH)
    if (tmac_init(NULL) != TMAC_OK) { printf("FAIL tmac_init\n"); return 1; }
    printf("cpu: best tier %s, pool threads %d\n", tmac_isa_name(tmac_active_isa()), tmac_pool_get_threads());
    n_passes = 0;
    for (int isa = 0; isa < TMAC_ISA_COUNT; isa++) {
        if (!tmac_isa_available((tmac_isa_t)isa)) continue;
        n_passes++;
        g_isa = (tmac_isa_t)isa;
        g_kt = tmac_table(g_isa);
        /* a new size per tier: the pool stops its workers and starts new ones */
        tmac_pool_set_threads(2 + isa);
        if (fseek(f, 4, SEEK_SET) != 0) return 2;
#endif
    for (int c = 0; c < n_cases; c++) {
        /* m, k, k_pad, bits, group_size, act_group, n_tokens, m_pad, scale_format, super_size, zero_mult */
        int32_t h[11];
        float tensor_scale, code_offset;
        if (fread(h, 4, 11, f) != 11 || fread(&tensor_scale, 4, 1, f) != 1 || fread(&code_offset, 4, 1, f) != 1)
            return 2;
        const int m = h[0], k = h[1], k_pad = h[2], bits = h[3], gs = h[4], ag = h[5], n = h[6], m_pad = h[7];
        const int fmt = h[8], super_size = h[9], zero_mult = h[10];
        const int tiles = m_pad / 64, n_groups = k_pad / gs, n_ag = k_pad / ag;
        const int super = tmac_fmt_super(fmt), rec = tmac_fmt_records(fmt);
        const int n_super = super ? k_pad / super_size : 0;
        uint8_t *planes = read_exact(f, (size_t)tiles * (k_pad / 8) * bits * 64);
        uint16_t *scales = read_exact(f, (size_t)tiles * (super ? n_super : n_groups) * 64 * rec * 2);
        int8_t *sub = super ? read_exact(f, (size_t)tiles * n_groups * 64 * rec) : NULL;
        float *x = read_exact(f, (size_t)n * k_pad * 4);
        float *y_expect = read_exact(f, (size_t)n * m * 4);
        int8_t *e_expect = read_exact(f, (size_t)n * k_pad * 4);
        tmac_weight_t w = {planes, scales, m, k, m_pad, k_pad, bits, gs, n_groups, tensor_scale,
                           fmt, super_size, n_super, code_offset, sub, zero_mult};
        if (tmac_check_shapes(&w, k_pad, ag) != TMAC_OK) { printf("FAIL case %d: bad shapes\n", c); return 2; }
        const int v2_case = bits > 4 || fmt != TMAC_SCALES_F16 || ag < 32;
        const int own_tiles = !(v2_case && tmac_gemv_v1_only(TIER_ISA));   /* else dispatch runs generic */
        int8_t *entries = malloc((size_t)n * k_pad * 4), *entries_g = malloc((size_t)k_pad * 4);
        float *ls = malloc((size_t)n * n_ag * 4), *inv = malloc((size_t)n_ag * 4), *xs = malloc((size_t)n * n_ag * 4);
        float *y = malloc((size_t)n * m * 4);
        float y64[64], y64g[64];
        int bad = 0;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * k_pad;
            tmac_lut_scales(xt, k_pad, ag, ls + t * n_ag, inv, xs + t * n_ag);
            memset(entries + (size_t)t * k_pad * 4, 0x55, (size_t)k_pad * 4);     /* poison */
            TIER_ENTRIES(xt, inv, ag, 0, k_pad / 4, entries + (size_t)t * k_pad * 4);
            tmac_lut_entries_generic(xt, inv, ag, 0, k_pad / 4, entries_g);
            if (memcmp(entries + (size_t)t * k_pad * 4, entries_g, (size_t)k_pad * 4) ||
                memcmp(entries_g, e_expect + (size_t)t * k_pad * 4, (size_t)k_pad * 4)) bad |= 1;
            tmac_lut_t lut = {entries + (size_t)t * k_pad * 4, ls + t * n_ag, xs + t * n_ag, k_pad, ag};
            for (int tile = 0; tile < tiles; tile++) {
                for (int r = 0; r < 64; r++) y64[r] = 0.0f / 0.0f;           /* poison */
                tmac_gemv_tile_generic(&w, &lut, tile, y64g);
                if (own_tiles) TIER_TILE(&w, &lut, tile, y64);
                else memcpy(y64, y64g, sizeof y64);
                int rows = m - tile * 64 < 64 ? m - tile * 64 : 64;
                if (memcmp(y64, y64g, sizeof y64)) bad |= 2;
                if (memcmp(y64, y_expect + (size_t)t * m + tile * 64, (size_t)rows * 4)) bad |= 4;
            }
        }
#if defined(TIER_TILE2)
        /* every adjacent pair of tokens through the two-token tile */
        for (int t = 0; own_tiles && HAS_TIER_TILE2 && t + 1 < n; t++) {
            tmac_lut_t lut0 = {entries + (size_t)t * k_pad * 4, ls + t * n_ag, xs + t * n_ag, k_pad, ag};
            tmac_lut_t lut1 = {entries + (size_t)(t + 1) * k_pad * 4, ls + (t + 1) * n_ag, xs + (t + 1) * n_ag,
                               k_pad, ag};
            float y64b[64];
            for (int tile = 0; tile < tiles; tile++) {
                for (int r = 0; r < 64; r++) y64[r] = y64b[r] = 0.0f / 0.0f;      /* poison */
                TIER_TILE2(&w, &lut0, &lut1, tile, y64, y64b);
                int rows = m - tile * 64 < 64 ? m - tile * 64 : 64;
                if (memcmp(y64, y_expect + (size_t)t * m + tile * 64, (size_t)rows * 4) ||
                    memcmp(y64b, y_expect + (size_t)(t + 1) * m + tile * 64, (size_t)rows * 4)) bad |= 16;
            }
        }
#endif
#if defined(TIER_GEMM)
        /* the multi-token tile for every token count 2..min(n, TMAC_GEMM_TILE_TOKENS) from token 0 */
        for (int cnt = 2; own_tiles && cnt <= n && cnt <= TMAC_GEMM_TILE_TOKENS; cnt++) {
            tmac_lut_t luts[TMAC_GEMM_TILE_TOKENS];
            float yn[TMAC_GEMM_TILE_TOKENS * 64];
            for (int u = 0; u < cnt; u++)
                luts[u] = (tmac_lut_t){entries + (size_t)u * k_pad * 4, ls + u * n_ag, xs + u * n_ag, k_pad, ag};
            for (int tile = 0; tile < tiles; tile++) {
                for (int r = 0; r < TMAC_GEMM_TILE_TOKENS * 64; r++) yn[r] = 0.0f / 0.0f;     /* poison */
                TIER_GEMM(&w, luts, cnt, tile, yn);
                int rows = m - tile * 64 < 64 ? m - tile * 64 : 64;
                for (int u = 0; u < cnt; u++)
                    if (memcmp(yn + u * 64, y_expect + (size_t)u * m + tile * 64, (size_t)rows * 4)) bad |= 32;
            }
        }
#endif
#if defined(DRIVER_THREADED)
        /* the threaded driver on the pool, through dispatch */
        for (int i = 0; i < n * m; i++) y[i] = 0.0f / 0.0f;
        if (tmac_gemm(TIER_ISA, &w, entries, ls, xs, n, k_pad, ag, y, m) != TMAC_OK ||
            memcmp(y, y_expect, (size_t)n * m * 4)) bad |= 8;
#endif
        printf("%s case %d m=%d k=%d bits=%d group=%d act_group=%d n=%d format=%d super=%d%s: %s", TIER_NAME, c, m,
               k, bits, gs, ag, n, fmt, super_size, own_tiles ? "" : " (tier is v1-only: generic tile)",
               bad ? "FAIL" : "ok");
        if (bad & 1) printf(" [tables differ]");
        if (bad & 2) printf(" [tile differs from generic]");
        if (bad & 4) printf(" [tile differs from the extension's generic]");
        if (bad & 8) printf(" [threaded gemm differs]");
        if (bad & 16) printf(" [two-token tile differs]");
        if (bad & 32) printf(" [multi-token tile differs]");
        printf("\n");
        failures += bad != 0;
        free(planes); free(scales); free(sub); free(x); free(y_expect); free(e_expect);
        free(entries); free(entries_g); free(ls); free(inv); free(xs); free(y);
    }
#if defined(DRIVER_DISPATCH)
        printf("tier %s done on %d threads\n", TIER_NAME, tmac_pool_get_threads());
    }
#endif
    fclose(f);
    printf("%d cases, %d failed\n", n_cases * n_passes, failures);
    return failures ? 1 : 0;
}
