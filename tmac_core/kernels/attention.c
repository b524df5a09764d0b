/* Causal grouped-query attention over the fp16 KV cache (kernels.h
 * §attention). Baseline flags: the per-tier part is attn_block; this file
 * shares out the work and folds the blocks' partial softmaxes together.
 *
 * Prompt chunks (n > 1): one item per (token, KV head), folding its blocks as
 * it goes. Decode (n == 1): one item per (KV head, block), so two threads have
 * work even with three KV heads, and the calling thread folds the partials
 * afterwards. Both fold the same block results in the same order with the same
 * function, so a token's output is identical either way. */
#include <math.h>
#include <stdlib.h>
#include "tmac/kernels.h"

typedef struct {
    tmac_attn_block_fn block;
    const float *q;
    const uint16_t *k, *v;
    float *out;
    float *partials;            /* decode: (n_kv, n_blocks, G, hd + 2): m, l, o per block */
    int pos, n_heads, n_kv, G, hd, n_ctx, n_blocks;
    float scale;
} attn_job_t;

/* acc := acc (+) one block, in log-sum-exp form. Starts from m = -inf,
 * l = 0, o = 0; the one place partial results are combined. */
static void fold(float *acc_m, float *acc_l, float *acc_o, float m, float l, const float *o, int hd) {
    const float mx = m > *acc_m ? m : *acc_m;
    const float a = expf(*acc_m - mx), b = expf(m - mx);
    *acc_l = *acc_l * a + l * b;
    for (int i = 0; i < hd; i++) acc_o[i] = acc_o[i] * a + o[i] * b;
    *acc_m = mx;
}

static void finish(const float *acc_o, float acc_l, float *out, int hd) {
    for (int i = 0; i < hd; i++) out[i] = acc_o[i] / acc_l;
}

/* blocks 0..n_blocks-1 cover positions 0..last; block b holds [64b, min(64b + 64, last + 1)) */
static int block_len(int b, int last) {
    const int start = b * TMAC_ATTN_BLOCK, end = last + 1;
    return end - start < TMAC_ATTN_BLOCK ? end - start : TMAC_ATTN_BLOCK;
}

static void prompt_task(void *ctx, int item, int thread) {
    (void)thread;
    const attn_job_t *j = (const attn_job_t *)ctx;
    const int t = item / j->n_kv, kvh = item % j->n_kv, G = j->G, hd = j->hd, last = j->pos + t;  /* < n_ctx */
    const size_t q_dim = (size_t)j->n_heads * hd;
    const float *q = j->q + (size_t)t * q_dim + (size_t)kvh * G * hd;           /* (G, hd) */
    const uint16_t *k = j->k + (size_t)kvh * j->n_ctx * hd, *v = j->v + (size_t)kvh * j->n_ctx * hd;
    float bm[TMAC_ATTN_MAX_GROUP], bl[TMAC_ATTN_MAX_GROUP], acc_m[TMAC_ATTN_MAX_GROUP], acc_l[TMAC_ATTN_MAX_GROUP];
    float bo[TMAC_ATTN_MAX_GROUP * TMAC_ATTN_MAX_HEAD_DIM], acc_o[TMAC_ATTN_MAX_GROUP * TMAC_ATTN_MAX_HEAD_DIM];
    for (int g = 0; g < G; g++) {
        acc_m[g] = -INFINITY;
        acc_l[g] = 0.0f;
        for (int i = 0; i < hd; i++) acc_o[g * hd + i] = 0.0f;
    }
    for (int b = 0; b * TMAC_ATTN_BLOCK <= last; b++) {
        const size_t row0 = (size_t)b * TMAC_ATTN_BLOCK * hd;
        j->block(q, G, hd, j->scale, k + row0, v + row0, block_len(b, last), bm, bl, bo);
        for (int g = 0; g < G; g++) fold(&acc_m[g], &acc_l[g], acc_o + g * hd, bm[g], bl[g], bo + g * hd, hd);
    }
    float *out = j->out + (size_t)t * q_dim + (size_t)kvh * G * hd;
    for (int g = 0; g < G; g++) finish(acc_o + g * hd, acc_l[g], out + g * hd, hd);
}

static void decode_task(void *ctx, int item, int thread) {
    (void)thread;
    const attn_job_t *j = (const attn_job_t *)ctx;
    const int kvh = item / j->n_blocks, b = item % j->n_blocks, G = j->G, hd = j->hd;
    const size_t row0 = ((size_t)kvh * j->n_ctx + (size_t)b * TMAC_ATTN_BLOCK) * hd;
    float *part = j->partials + (size_t)item * G * (hd + 2);                      /* m (G), l (G), o (G, hd) */
    j->block(j->q + (size_t)kvh * G * hd, G, hd, j->scale, j->k + row0, j->v + row0, block_len(b, j->pos),
             part, part + G, part + 2 * G);
}

int tmac_attention(tmac_isa_t isa, const float *q, int n, int pos, int n_heads, int n_kv_heads, int hd,
                   const uint16_t *k_cache, const uint16_t *v_cache, int n_ctx, float scale, float *out) {
    const tmac_kernel_table_t *kt = tmac_table(isa);
    if (!kt) return TMAC_E_ISA;
    if (n < 1 || pos < 0 || n_ctx < 1 || n_ctx > TMAC_MAX_DIM || (int64_t)pos + n > n_ctx) return TMAC_E_SHAPE;
    if (n_heads < 1 || n_heads > TMAC_MAX_HEADS || n_kv_heads < 1 || n_heads % n_kv_heads) return TMAC_E_SHAPE;
    if (n_heads / n_kv_heads > TMAC_ATTN_MAX_GROUP || hd < 1 || hd > TMAC_ATTN_MAX_HEAD_DIM) return TMAC_E_SHAPE;
    if (!isfinite(scale) || !q || !k_cache || !v_cache || !out) return TMAC_E_SHAPE;
    /* with the bounds above the element counts fit int64; they must also be addressable */
    if ((uint64_t)n_kv_heads * (uint64_t)n_ctx * (uint64_t)hd > (uint64_t)PTRDIFF_MAX / sizeof(uint16_t) ||
        (uint64_t)n * (uint64_t)n_heads * (uint64_t)hd > (uint64_t)PTRDIFF_MAX / sizeof(float))
        return TMAC_E_SHAPE;
    attn_job_t j = {hd % 8 == 0 ? kt->attn_block : tmac_attn_block_generic, q, k_cache, v_cache, out, NULL,
                    pos, n_heads, n_kv_heads, n_heads / n_kv_heads, hd, n_ctx, 0, scale};
    if (n > 1) {
        if ((int64_t)n * n_kv_heads > TMAC_MAX_ITEMS) return TMAC_E_SHAPE;
        return tmac_parallel_for(n * n_kv_heads, prompt_task, &j);
    }

    j.n_blocks = pos / TMAC_ATTN_BLOCK + 1;
    if ((int64_t)n_kv_heads * j.n_blocks > TMAC_MAX_ITEMS) return TMAC_E_SHAPE;
    const size_t per_item = (size_t)j.G * (hd + 2);
    const uint64_t n_partials = (uint64_t)per_item * (uint64_t)n_kv_heads * (uint64_t)j.n_blocks;
    if (n_partials > (uint64_t)SIZE_MAX / sizeof(float)) return TMAC_E_NOMEM;
    j.partials = malloc(sizeof(float) * (size_t)n_partials);
    if (!j.partials) return TMAC_E_NOMEM;
    int rc = tmac_parallel_for(n_kv_heads * j.n_blocks, decode_task, &j);
    if (rc == TMAC_OK) {
        float acc_o[TMAC_ATTN_MAX_HEAD_DIM];
        for (int kvh = 0; kvh < n_kv_heads; kvh++) {
            for (int g = 0; g < j.G; g++) {
                float acc_m = -INFINITY, acc_l = 0.0f;
                for (int i = 0; i < hd; i++) acc_o[i] = 0.0f;
                for (int b = 0; b < j.n_blocks; b++) {
                    const float *part = j.partials + ((size_t)kvh * j.n_blocks + b) * per_item;
                    fold(&acc_m, &acc_l, acc_o, part[g], part[j.G + g], part + 2 * j.G + (size_t)g * hd, hd);
                }
                finish(acc_o, acc_l, out + ((size_t)kvh * j.G + g) * hd, hd);
            }
        }
    }
    free(j.partials);
    return rc;
}

void tmac_fp32_to_fp16_row(const float *x, uint16_t *out, int n) {
    for (int i = 0; i < n; i++) out[i] = tmac_fp32_to_fp16(x[i]);
}
