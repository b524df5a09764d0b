/* Tier selection and the threaded drivers around the per-tier kernels.
 * Baseline flags only: this runs before anything is known about the CPU.
 * A tier is offered only if it was compiled in AND this CPU and OS can run
 * it; TMAC_KERNELS (passed in as `force`) may pick any offered tier and asking
 * for another one is an error, never an illegal instruction. */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "tmac/kernels.h"

static tmac_cpu_features_t g_cpu;
static tmac_kernel_table_t g_tables[TMAC_ISA_COUNT];
static int g_available[TMAC_ISA_COUNT];
static tmac_isa_t g_active = TMAC_ISA_GENERIC;
/* Tiers whose gemv tiles still implement only layout v1 (bits <= 4, F16 scales,
 * act groups 32/64); tmac_gemm hands them the generic tile for other weights.
 * A tier that implements all of LAYOUT.md version 2 drops out of this list. */
static const int g_gemv_v1_only[TMAC_ISA_COUNT] = {0};
static int g_initialized;

static void fill_tables(void) {
    g_tables[TMAC_ISA_GENERIC].lut_entries = tmac_lut_entries_generic;
    g_tables[TMAC_ISA_GENERIC].gemv_tile = tmac_gemv_tile_generic;
    g_tables[TMAC_ISA_GENERIC].gemm_tile = tmac_gemm_tile_generic;
    g_tables[TMAC_ISA_GENERIC].attn_block = tmac_attn_block_generic;
    g_tables[TMAC_ISA_GENERIC].swiglu = tmac_swiglu_generic;
    g_available[TMAC_ISA_GENERIC] = 1;
#if TMAC_ARCH_X86_64
    if (tmac_isa_supported(&g_cpu, TMAC_ISA_AVX2)) {
        g_tables[TMAC_ISA_AVX2].lut_entries = tmac_lut_entries_avx2;
        g_tables[TMAC_ISA_AVX2].gemv_tile = tmac_gemv_tile_avx2;
        g_tables[TMAC_ISA_AVX2].gemv2_tile = tmac_gemv2_tile_avx2;
        g_tables[TMAC_ISA_AVX2].gemm_tile = tmac_gemm_tile_avx2;
        g_tables[TMAC_ISA_AVX2].attn_block = tmac_attn_block_avx2;
        g_tables[TMAC_ISA_AVX2].swiglu = tmac_swiglu_avx2;
        g_available[TMAC_ISA_AVX2] = 1;
    }
    if (tmac_isa_supported(&g_cpu, TMAC_ISA_AVX512)) {
        /* the table build is O(K) per token and attention reads fp16 rows of
         * 64-128 values; the AVX2 ones are already fast enough next to the
         * O(M*K) GEMV, so the tier reuses them */
        g_tables[TMAC_ISA_AVX512].lut_entries = tmac_lut_entries_avx2;
        g_tables[TMAC_ISA_AVX512].gemv_tile = tmac_gemv_tile_avx512;
        g_tables[TMAC_ISA_AVX512].gemv2_tile = tmac_gemv2_tile_avx512;
        g_tables[TMAC_ISA_AVX512].gemm_tile = tmac_gemm_tile_avx512;
        g_tables[TMAC_ISA_AVX512].attn_block = tmac_attn_block_avx2;
        g_tables[TMAC_ISA_AVX512].swiglu = tmac_swiglu_avx2;
        g_available[TMAC_ISA_AVX512] = 1;
    }
#endif
#if TMAC_ARCH_ARM64
    g_tables[TMAC_ISA_NEON].lut_entries = tmac_lut_entries_neon;
    g_tables[TMAC_ISA_NEON].gemv_tile = tmac_gemv_tile_neon;
    g_tables[TMAC_ISA_NEON].gemv2_tile = tmac_gemv2_tile_neon;
    g_tables[TMAC_ISA_NEON].gemm_tile = tmac_gemm_tile_neon;
    g_tables[TMAC_ISA_NEON].attn_block = tmac_attn_block_neon;
    g_tables[TMAC_ISA_NEON].swiglu = tmac_swiglu_neon;
    g_available[TMAC_ISA_NEON] = 1;
#endif
}

int tmac_init(const char *force) {
    if (!g_initialized) {
        tmac_cpu_detect(&g_cpu);
        fill_tables();
        /* best = highest available: x86 and ARM tiers never coexist in one build */
        g_active = TMAC_ISA_GENERIC;
        for (int i = TMAC_ISA_COUNT - 1; i > 0; i--)
            if (g_available[i]) { g_active = (tmac_isa_t)i; break; }
        /* the pool's one-time setup (and its fork handler) here, at import,
         * before any thread can race to it from a nogil kernel call */
        (void)tmac_pool_get_threads();
        g_initialized = 1;
    }
    if (force && force[0]) {
        int isa = tmac_isa_from_name(force);
        if (isa < 0 || !g_available[isa]) return TMAC_E_ISA;
        g_active = (tmac_isa_t)isa;
    }
    return TMAC_OK;
}

const tmac_cpu_features_t *tmac_cpu(void) { return &g_cpu; }
tmac_isa_t tmac_active_isa(void) { return g_active; }

int tmac_isa_available(tmac_isa_t isa) {
    return isa >= 0 && isa < TMAC_ISA_COUNT && g_available[isa];
}

const tmac_kernel_table_t *tmac_table(tmac_isa_t isa) {
    return tmac_isa_available(isa) ? &g_tables[isa] : NULL;
}

static int valid_act_group(int act_group) {
    return act_group == 16 || act_group == 32 || act_group == 64;
}

/* group sizes of LAYOUT.md §Weights: 16..256, or one group per row (k_pad % 64 == 0) */
static int valid_group_size(int group_size, int k_pad) {
    switch (group_size) {
    case 16: case 32: case 64: case 128: case 256: return 1;
    default: return group_size == k_pad && k_pad % 64 == 0;
    }
}

int tmac_gemv_v1_only(tmac_isa_t isa) {
    return isa >= 0 && isa < TMAC_ISA_COUNT && g_gemv_v1_only[isa];
}

static int is_v1_weight(const tmac_weight_t *w, int act_group) {
    return w->bits <= 4 && w->scale_format == TMAC_SCALES_F16 && act_group >= 32;
}

int tmac_check_shapes(const tmac_weight_t *w, int k_pad, int act_group) {
    if (!w || !w->planes || !w->scales) return TMAC_E_SHAPE;
    if (!valid_act_group(act_group)) return TMAC_E_SHAPE;
    if (w->bits < 1 || w->bits > TMAC_MAX_BITS) return TMAC_E_SHAPE;
    /* bounds first: every sum and product below then stays inside int / int64 */
    if (w->m < 1 || w->m > TMAC_MAX_DIM || w->k_pad < 1 || w->k_pad > TMAC_MAX_DIM) return TMAC_E_SHAPE;
    if (w->k < 1 || w->k > w->k_pad || w->k_pad != k_pad) return TMAC_E_SHAPE;
    if (w->m_pad != (w->m + TMAC_TILE_ROWS - 1) / TMAC_TILE_ROWS * TMAC_TILE_ROWS) return TMAC_E_SHAPE;
    if (!valid_group_size(w->group_size, k_pad) || w->group_size % act_group) return TMAC_E_SHAPE;
    if (k_pad % w->group_size || w->n_groups != k_pad / w->group_size) return TMAC_E_SHAPE;
    if (!(w->tensor_scale > 0.0f) || isinf(w->tensor_scale)) return TMAC_E_SHAPE;
    if ((int64_t)w->m_pad * w->k_pad > TMAC_MAX_ELEMS) return TMAC_E_SHAPE;
    const int fmt = w->scale_format;
    if (fmt < 0 || fmt >= TMAC_SCALES_FORMATS) return TMAC_E_SHAPE;
    if (fmt == TMAC_SCALES_F16_SYM) {
        /* c = zero_mult * sh must stay exact in fp32 (layout.h tmac_sym_offset); 2^b - 1 - 2z is odd */
        if (w->zero_mult < -TMAC_MAX_ZERO_MULT || w->zero_mult > TMAC_MAX_ZERO_MULT || w->zero_mult % 2 == 0)
            return TMAC_E_SHAPE;
    } else if (w->zero_mult != 0) {
        return TMAC_E_SHAPE;
    }
    uint64_t scale_blocks;     /* fp16 (.., records, 64) blocks per tile */
    if (!tmac_fmt_super(fmt)) {
        if (w->sub || w->super_size != 0 || w->n_super != 0 || w->code_offset != 0.0f) return TMAC_E_SHAPE;
        scale_blocks = (uint64_t)w->n_groups;
    } else {
        if (!w->sub || !isfinite(w->code_offset)) return TMAC_E_SHAPE;
        if (w->super_size < w->group_size || w->super_size > k_pad) return TMAC_E_SHAPE;
        if (w->super_size % w->group_size || k_pad % w->super_size) return TMAC_E_SHAPE;
        if (w->n_super != k_pad / w->super_size) return TMAC_E_SHAPE;
        scale_blocks = (uint64_t)w->n_super;
    }
    /* the buffers' sizes must be addressable (a 32-bit build) */
    const uint64_t records = (uint64_t)tmac_fmt_records(fmt);
    const uint64_t tiles = (uint64_t)w->m_pad / TMAC_TILE_ROWS;
    const uint64_t plane_bytes = tiles * ((uint64_t)w->k_pad / TMAC_KPAIR) * (uint64_t)w->bits * 64;
    const uint64_t scale_bytes = tiles * scale_blocks * records * 64 * sizeof(uint16_t);
    const uint64_t sub_bytes = tiles * (uint64_t)w->n_groups * records * 64;
    if (plane_bytes > (uint64_t)PTRDIFF_MAX || scale_bytes > (uint64_t)PTRDIFF_MAX) return TMAC_E_SHAPE;
    if (sub_bytes > (uint64_t)PTRDIFF_MAX) return TMAC_E_SHAPE;
    return TMAC_OK;
}

int tmac_swiglu(tmac_isa_t isa, float *gate, const float *up, int n) {
    const tmac_kernel_table_t *kt = tmac_table(isa);
    if (!kt) return TMAC_E_ISA;
    if (n > 0) kt->swiglu(gate, up, n);
    return TMAC_OK;
}

/* ---- table build ---- */

#define LUT_CHUNK 2048             /* activations per work item: a multiple of every act group */
TMAC_STATIC_ASSERT(LUT_CHUNK % TMAC_MAX_ACT_GROUP == 0, "a chunk holds whole act groups");

typedef struct {
    const tmac_kernel_table_t *kt;
    const float *x;
    int k_pad, act_group, chunks_per_row;
    int8_t *entries;
    float *scales, *sums;
} lut_job_t;

static void lut_task(void *ctx, int item, int thread) {
    (void)thread;
    const lut_job_t *j = (const lut_job_t *)ctx;
    const int row = item / j->chunks_per_row, chunk = item % j->chunks_per_row;
    const int k0 = chunk * LUT_CHUNK;
    const int k1 = k0 + LUT_CHUNK < j->k_pad ? k0 + LUT_CHUNK : j->k_pad;
    const float *x = j->x + (size_t)row * j->k_pad;
    const int a0 = k0 / j->act_group, n_groups = j->k_pad / j->act_group;
    float inv[LUT_CHUNK / TMAC_MIN_ACT_GROUP];
    float *scales = j->scales + (size_t)row * n_groups, *sums = j->sums + (size_t)row * n_groups;
    tmac_lut_scales(x + k0, k1 - k0, j->act_group, scales + a0, inv, sums + a0);
    /* entries use inv indexed from the chunk's first act group */
    j->kt->lut_entries(x + k0, inv, j->act_group, 0, (k1 - k0) / 4,
                       j->entries + (size_t)row * (j->k_pad / 4) * 16 + (size_t)(k0 / 4) * 16);
}

int tmac_lut_build(tmac_isa_t isa, const float *x, int n, int k_pad, int act_group,
                   int8_t *entries, float *scales, float *sums) {
    const tmac_kernel_table_t *kt = tmac_table(isa);
    if (!kt) return TMAC_E_ISA;
    if (!valid_act_group(act_group) || k_pad <= 0 || k_pad % act_group || n <= 0) return TMAC_E_SHAPE;
    if (k_pad > TMAC_MAX_DIM || n > TMAC_MAX_DIM || (int64_t)n * k_pad > TMAC_MAX_ELEMS) return TMAC_E_SHAPE;
    if (!x || !entries || !scales || !sums) return TMAC_E_SHAPE;
    lut_job_t j = {kt, x, k_pad, act_group, (k_pad + LUT_CHUNK - 1) / LUT_CHUNK, entries, scales, sums};
    const int64_t n_items = (int64_t)n * j.chunks_per_row;
    if (n_items > TMAC_MAX_ITEMS) return TMAC_E_SHAPE;
    return tmac_parallel_for((int)n_items, lut_task, &j);
}

/* ---- GEMV / GEMM ---- */

typedef struct {
    tmac_gemv_tile_fn gemv_tile;
    tmac_gemv2_tile_fn gemv2_tile;             /* NULL: pairs of tokens loop gemv_tile */
    tmac_gemm_tile_fn gemm_tile;               /* NULL: gemv2_tile / gemv_tile */
    const tmac_weight_t *w;
    const int8_t *entries;
    const float *scales, *sums;
    int n, k_pad, act_group, tokens_per_item, n_token_chunks, ldy;
    float *y;
} gemm_job_t;

static void gemm_task(void *ctx, int item, int thread) {
    (void)thread;
    const gemm_job_t *j = (const gemm_job_t *)ctx;
    const int tile = item / j->n_token_chunks, chunk = item % j->n_token_chunks;
    const int t0 = chunk * j->tokens_per_item;
    const int t1 = t0 + j->tokens_per_item < j->n ? t0 + j->tokens_per_item : j->n;
    const int rows = j->w->m - tile * TMAC_TILE_ROWS < TMAC_TILE_ROWS ? j->w->m - tile * TMAC_TILE_ROWS
                                                                       : TMAC_TILE_ROWS;   /* m <= TMAC_MAX_DIM */
    const int n_groups = j->k_pad / j->act_group;
    const size_t lut_stride = (size_t)(j->k_pad / 4) * 16;
    if (j->gemm_tile != NULL && t1 - t0 > 1) {
        /* prompt chunks: up to TMAC_GEMM_TILE_TOKENS tokens per call share the index loads;
         * the tile's weights stay in L1/L2 across the calls of this item */
        TMAC_ALIGN(64) float yn[TMAC_GEMM_TILE_TOKENS][TMAC_TILE_ROWS];
        tmac_lut_t luts[TMAC_GEMM_TILE_TOKENS];
        for (int t = t0; t < t1;) {
            const int cnt = t1 - t < TMAC_GEMM_TILE_TOKENS ? t1 - t : TMAC_GEMM_TILE_TOKENS;
            for (int u = 0; u < cnt; u++)
                luts[u] = (tmac_lut_t){j->entries + (size_t)(t + u) * lut_stride, j->scales + (size_t)(t + u) * n_groups,
                                       j->sums + (size_t)(t + u) * n_groups, j->k_pad, j->act_group};
            j->gemm_tile(j->w, luts, cnt, tile, &yn[0][0]);
            for (int u = 0; u < cnt; u++, t++)
                memcpy(j->y + (size_t)t * j->ldy + (size_t)tile * TMAC_TILE_ROWS, yn[u], sizeof(float) * (size_t)rows);
        }
        return;
    }
    TMAC_ALIGN(64) float y64[2][TMAC_TILE_ROWS];
    /* the tile's weights stay in L1/L2 across the tokens of this item */
    for (int t = t0; t < t1;) {
        tmac_lut_t lut[2];
        const int pair = j->gemv2_tile != NULL && t + 1 < t1;
        for (int u = 0; u <= pair; u++) {
            lut[u] = (tmac_lut_t){j->entries + (size_t)(t + u) * lut_stride,
                                  j->scales + (size_t)(t + u) * n_groups, j->sums + (size_t)(t + u) * n_groups,
                                  j->k_pad, j->act_group};
        }
        if (pair) j->gemv2_tile(j->w, &lut[0], &lut[1], tile, y64[0], y64[1]);
        else j->gemv_tile(j->w, &lut[0], tile, y64[0]);
        for (int u = 0; u <= pair; u++, t++)
            memcpy(j->y + (size_t)t * j->ldy + (size_t)tile * TMAC_TILE_ROWS, y64[u], sizeof(float) * (size_t)rows);
    }
}

/* Several matrices that read the same tables (Q/K/V, gate/up) in one pool
 * call: one wake-up and one barrier instead of one per matrix, and the tiles
 * of all of them are shared out together (a 3-tile K matrix alone leaves one
 * of two threads idle a third of the time). */
typedef struct {
    gemm_job_t jobs[TMAC_MAX_MULTI];
    int first_item[TMAC_MAX_MULTI + 1];
    int n_jobs;
} multi_job_t;

static void multi_task(void *ctx, int item, int thread) {
    const multi_job_t *mj = (const multi_job_t *)ctx;
    int j = 0;
    while (item >= mj->first_item[j + 1]) j++;
    gemm_task((void *)&mj->jobs[j], item - mj->first_item[j], thread);
}

int tmac_gemm_multi(tmac_isa_t isa, int n_w, const tmac_weight_t *const *w, const int8_t *entries,
                    const float *scales, const float *sums, int n, int k_pad, int act_group,
                    float *const *y, const int *ldy) {
    const tmac_kernel_table_t *kt = tmac_table(isa);
    if (!kt) return TMAC_E_ISA;
    if (n_w < 1 || n_w > TMAC_MAX_MULTI || n <= 0 || n > TMAC_MAX_DIM) return TMAC_E_SHAPE;
    if (!w || !entries || !scales || !sums || !y || !ldy) return TMAC_E_SHAPE;
    if ((int64_t)n * k_pad > TMAC_MAX_ELEMS) return TMAC_E_SHAPE;         /* the tables' size */
    int total_tiles = 0;           /* <= TMAC_MAX_MULTI * TMAC_MAX_DIM / 64: an int */
    for (int i = 0; i < n_w; i++) {
        int rc = tmac_check_shapes(w[i], k_pad, act_group);
        if (rc != TMAC_OK) return rc;
        if (!y[i] || ldy[i] < w[i]->m) return TMAC_E_SHAPE;
        total_tiles += w[i]->m_pad / TMAC_TILE_ROWS;
    }
    /* enough items to keep every thread busy; otherwise whole token ranges per tile */
    const int want_items = 4 * tmac_pool_get_threads();
    int n_chunks = total_tiles >= want_items ? 1 : (want_items + total_tiles - 1) / total_tiles;
    if (n_chunks > n) n_chunks = n;
    const int per_item = (n + n_chunks - 1) / n_chunks;
    n_chunks = (n + per_item - 1) / per_item;
    multi_job_t mj;
    mj.n_jobs = n_w;
    mj.first_item[0] = 0;
    int64_t n_items = 0;
    for (int i = 0; i < n_w; i++) {
        /* a tier still at layout v1 hands what it cannot do to the generic tile */
        const int routed = tmac_gemv_v1_only(isa) && !is_v1_weight(w[i], act_group);
        const tmac_kernel_table_t *wkt = routed ? &g_tables[TMAC_ISA_GENERIC] : kt;
        gemm_job_t j = {wkt->gemv_tile, wkt->gemv2_tile, wkt->gemm_tile, w[i], entries, scales, sums,
                        n, k_pad, act_group, per_item, n_chunks, ldy[i], y[i]};
        mj.jobs[i] = j;
        n_items += (int64_t)(w[i]->m_pad / TMAC_TILE_ROWS) * n_chunks;
        if (n_items > TMAC_MAX_ITEMS) return TMAC_E_SHAPE;
        mj.first_item[i + 1] = (int)n_items;
    }
    return tmac_parallel_for((int)n_items, multi_task, &mj);
}

int tmac_gemm(tmac_isa_t isa, const tmac_weight_t *w, const int8_t *entries, const float *scales,
              const float *sums, int n, int k_pad, int act_group, float *y, int ldy) {
    return tmac_gemm_multi(isa, 1, &w, entries, scales, sums, n, k_pad, act_group, &y, &ldy);
}
