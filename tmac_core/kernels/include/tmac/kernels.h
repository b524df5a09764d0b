/* Public C API of the LUT kernels: per-tier entry points (suffix = ISA tag,
 * same file names in every tier folder) and the dispatching entry points the
 * Cython binding and the runtime call. The generic tier is the spec. */
#ifndef TMAC_KERNELS_H
#define TMAC_KERNELS_H

#include "tmac/layout.h"
#include "tmac/cpu.h"

#define TMAC_OK 0
#define TMAC_E_SHAPE -1            /* inconsistent shapes or group sizes */
#define TMAC_E_ISA -2              /* tier not compiled in or not supported by this CPU */
#define TMAC_E_NOMEM -3
#define TMAC_E_THREADS -4

/* Size limits of the API, checked at every entry point (and again by the
 * binding, which says which one failed). The struct fields and loop indices
 * are int; every offset into a buffer is computed in size_t from them, and
 * these bounds keep every int product (tile * 64, n_heads * hd, item counts)
 * far from INT_MAX. 2^24 is 64x the widest published LLM matrix dimension
 * (a 256k vocabulary); 2^36 elements is a 32 GiB 4-bit matrix. */
#define TMAC_MAX_DIM (1 << 24)                /* m, k_pad, tokens per call, KV positions */
#define TMAC_MAX_ELEMS ((int64_t)1 << 36)     /* m_pad * k_pad of a weight; n * k_pad of tables */
#define TMAC_MAX_HEADS (1 << 16)              /* query heads of one attention call */
#define TMAC_MAX_ITEMS (1 << 30)              /* work items of one tmac_parallel_for */

/* Per-tier kernels. lut_entries fills the tables of kgroups [g0, g1) of one
 * activation vector whose per-group scales are already known (pass 2 of
 * tmac_lut_build). gemv_tile computes the 64 outputs of one weight tile:
 * y64[r] = sum over act groups of ((float)acc * ls) * sh + xs * c, fused
 * multiply-adds in that order, then times tensor_scale. */
typedef void (*tmac_lut_entries_fn)(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                                    int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries);
typedef void (*tmac_gemv_tile_fn)(const tmac_weight_t *w, const tmac_lut_t *lut, int tile,
                                  float *TMAC_RESTRICT y64);
/* gemv2_tile: gemv_tile for two activation vectors at once, bit-identical to
 * two gemv_tile calls (prompt chunks share one pass over the index bytes).
 * Optional: NULL in a tier's table means GEMM loops gemv_tile. */
typedef void (*tmac_gemv2_tile_fn)(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1,
                                   int tile, float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64);
/* gemm_tile: gemv_tile for n (1..TMAC_GEMM_TILE_TOKENS) activation vectors
 * luts[0..n-1] at once, y64 (n, 64); bit-identical to n gemv_tile calls.
 * The prompt path: each index load serves several tokens and the two planes
 * of a row are paired once per load instead of once per token and lookup
 * (generic/lut_gemm.c). Optional: NULL in a tier's table means GEMM uses
 * gemv2_tile / gemv_tile. Decode (one token) never calls it. */
#define TMAC_GEMM_TILE_TOKENS 8
typedef void (*tmac_gemm_tile_fn)(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile,
                                  float *TMAC_RESTRICT y64);

/* Attention over an fp16 KV cache is cut into blocks of TMAC_ATTN_BLOCK key
 * positions counted from position 0. attn_block computes one block of one KV
 * head for the G query heads that share it (q: (G, hd); k, v: (n_pos, hd)
 * fp16 bits, n_pos <= TMAC_ATTN_BLOCK):
 *   s[g][j] = scale * dot(q[g], k[j]),  m[g] = max_j s[g][j],
 *   l[g] = sum_j exp(s[g][j] - m[g]),   o[g] = sum_j exp(s[g][j] - m[g]) * v[j]
 * (o not divided by l). SIMD tiers need hd % 8 == 0; tmac_attention uses the
 * generic twin for other head sizes. Tiers differ from generic in summation
 * order and in exp (a polynomial), so they agree to ~1e-6, not bit for bit. */
#define TMAC_ATTN_BLOCK 64
#define TMAC_ATTN_MAX_GROUP 16         /* query heads per KV head */
#define TMAC_ATTN_MAX_HEAD_DIM 256
typedef void (*tmac_attn_block_fn)(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                                   const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                                   float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o);

/* §activation. swiglu: gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i] in
 * place (SwiGLU's silu(gate) * up). SIMD tiers use a polynomial exp and agree
 * with generic to a few ulp. */
typedef void (*tmac_swiglu_fn)(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n);

typedef struct {
    tmac_lut_entries_fn lut_entries;
    tmac_gemv_tile_fn gemv_tile;
    tmac_gemv2_tile_fn gemv2_tile;
    tmac_gemm_tile_fn gemm_tile;
    tmac_attn_block_fn attn_block;
    tmac_swiglu_fn swiglu;
} tmac_kernel_table_t;

void tmac_attn_block_generic(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                             const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                             float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o);

void tmac_swiglu_generic(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n);
void tmac_lut_entries_generic(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                              int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries);
void tmac_gemv_tile_generic(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64);
void tmac_gemm_tile_generic(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64);
#if TMAC_ARCH_X86_64
void tmac_lut_entries_avx2(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                           int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries);
void tmac_gemv_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64);
void tmac_gemv2_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                          float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64);
void tmac_gemv_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64);
void tmac_gemv2_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                            float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64);
void tmac_gemm_tile_avx512(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64);
void tmac_gemm_tile_avx2(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64);
void tmac_swiglu_avx2(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n);
void tmac_attn_block_avx2(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                          const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                          float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o);
#endif
#if TMAC_ARCH_ARM64
void tmac_lut_entries_neon(const float *TMAC_RESTRICT x, const float *TMAC_RESTRICT inv_scales,
                           int act_group, int g0, int g1, int8_t *TMAC_RESTRICT entries);
void tmac_gemv_tile_neon(const tmac_weight_t *w, const tmac_lut_t *lut, int tile, float *TMAC_RESTRICT y64);
void tmac_gemv2_tile_neon(const tmac_weight_t *w, const tmac_lut_t *lut0, const tmac_lut_t *lut1, int tile,
                          float *TMAC_RESTRICT y0_64, float *TMAC_RESTRICT y1_64);
void tmac_gemm_tile_neon(const tmac_weight_t *w, const tmac_lut_t *luts, int n, int tile, float *TMAC_RESTRICT y64);
void tmac_swiglu_neon(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n);
void tmac_attn_block_neon(const float *TMAC_RESTRICT q, int G, int hd, float scale,
                          const uint16_t *TMAC_RESTRICT k, const uint16_t *TMAC_RESTRICT v, int n_pos,
                          float *TMAC_RESTRICT m, float *TMAC_RESTRICT l, float *TMAC_RESTRICT o);
#endif

/* Pass 1 of the table build, shared by every tier so scales and sums are
 * bit-identical everywhere: per act group, scale = max_g ((|x0|+|x1|)+(|x2|+|x3|)) / 127,
 * inv = scale > 0 ? 1/scale : 0, sum = sequential sum of ((x0+x1)+(x2+x3)). */
void tmac_lut_scales(const float *TMAC_RESTRICT x, int k_pad, int act_group,
                     float *TMAC_RESTRICT scales, float *TMAC_RESTRICT inv_scales, float *TMAC_RESTRICT sums);

/* ---- dispatch (dispatch.c) ---- */
/* Fills the table once. force: NULL/"" for the best tier, else a tier name.
 * Returns TMAC_OK, or TMAC_E_ISA if the forced tier is unknown or unsupported. */
int tmac_init(const char *force);
const tmac_cpu_features_t *tmac_cpu(void);
tmac_isa_t tmac_active_isa(void);
int tmac_isa_available(tmac_isa_t isa);    /* compiled in and runnable here */
const tmac_kernel_table_t *tmac_table(tmac_isa_t isa);  /* NULL if not available */
/* 1 if the tier's gemv tiles do only layout v1 (bits <= 4, F16 scales, act groups
 * 32/64, whether or not the tier is available here): tmac_gemm runs other weights
 * on the generic tile. */
int tmac_gemv_v1_only(tmac_isa_t isa);

/* Checks a weight against a table set, every field and the size limits above
 * included (its buffers must hold m_pad/64 * k_pad/8 * bits * 64 plane bytes,
 * m_pad/64 * n_groups * 64 * R fp16 values for F16 scales, or m_pad/64 * n_super *
 * 64 * R fp16 values and m_pad/64 * n_groups * 64 * R sub bytes for SUPER, with
 * R = tmac_fmt_records: 2, or 1 for F16_SYM and SUPER_NOMIN: the caller's part;
 * F16_SYM's zero_mult odd and within TMAC_MAX_ZERO_MULT, 0 for the other formats);
 * TMAC_OK or TMAC_E_SHAPE. */
int tmac_check_shapes(const tmac_weight_t *w, int k_pad, int act_group);

/* Builds n tables (x: (n, k_pad) -> entries (n, k_pad/4, 16), scales/sums
 * (n, k_pad/act_group), act_group 16, 32 or 64) on the thread pool with the given tier. */
int tmac_lut_build(tmac_isa_t isa, const float *x, int n, int k_pad, int act_group,
                   int8_t *entries, float *scales, float *sums);
/* y (n, ldy) += nothing: y[t*ldy + m] = (W @ x_t)[m] for the n tables in luts,
 * which share k_pad and act_group (entries/scales/sums strided per token). */
int tmac_gemm(tmac_isa_t isa, const tmac_weight_t *w, const int8_t *entries, const float *scales,
              const float *sums, int n, int k_pad, int act_group, float *y, int ldy);
/* tmac_gemm for n_w (<= TMAC_MAX_MULTI) matrices reading the same tables, in one
 * pool call; results are identical to n_w separate tmac_gemm calls. */
#define TMAC_MAX_MULTI 4
int tmac_gemm_multi(tmac_isa_t isa, int n_w, const tmac_weight_t *const *w, const int8_t *entries,
                    const float *scales, const float *sums, int n, int k_pad, int act_group,
                    float *const *y, const int *ldy);

/* SwiGLU of n values in place with the tier's swiglu (serial: it is O(n) next
 * to the O(n * dim) matrices around it). TMAC_E_ISA or TMAC_OK. */
int tmac_swiglu(tmac_isa_t isa, float *gate, const float *up, int n);

/* ---- attention (attention.c) ---- */
/* Causal grouped-query attention of n query tokens at positions pos..pos+n-1:
 * q, out: (n, n_heads * hd); query head h reads KV head h / (n_heads / n_kv_heads).
 * k_cache, v_cache: (n_kv_heads, n_ctx, hd) fp16 bits holding positions
 * 0..pos+n-1. Each query's blocks are folded in block order by one scalar
 * function, so a query's output does not depend on n, on how the work is
 * shared out or on the thread count. TMAC_E_SHAPE for inconsistent sizes,
 * TMAC_E_NOMEM if scratch cannot be allocated. */
int tmac_attention(tmac_isa_t isa, const float *q, int n, int pos, int n_heads, int n_kv_heads, int hd,
                   const uint16_t *k_cache, const uint16_t *v_cache, int n_ctx, float scale, float *out);
/* out[i] = x[i] rounded to fp16 (nearest, ties to even; what F16C and NEON do). */
void tmac_fp32_to_fp16_row(const float *x, uint16_t *out, int n);

/* Monotonic clock in seconds (benchmarks time calls in C, without Python overhead). */
double tmac_now_seconds(void);

/* ---- thread pool (thread_pool.c) ---- */
#define TMAC_MAX_THREADS 256               /* tmac_core.types.MAX_THREADS mirrors it */
typedef void (*tmac_task_fn)(void *ctx, int item, int thread);
int tmac_pool_set_threads(int n);          /* takes effect at the next parallel call */
int tmac_pool_get_threads(void);
/* Runs fn(ctx, i, thread) for i in [0, n_items) on the pool and waits;
 * TMAC_E_SHAPE unless 0 <= n_items <= TMAC_MAX_ITEMS. The pool survives fork():
 * the child starts its own threads at its first parallel call (POSIX). */
int tmac_parallel_for(int n_items, tmac_task_fn fn, void *ctx);
/* What the pool has done since it started (counts never reset): calls of
 * tmac_parallel_for; jobs, those of them shared with the workers (the others,
 * 0 or 1 item or a 1-thread pool, ran on the caller alone); worker_items, the
 * items of those jobs that workers ran; wakeups, the jobs that found workers
 * asleep and woke them (a system call); caller_sleeps and caller_wait_seconds,
 * how often and how long the caller, its own items done, waited for a worker's
 * last item. For benchmarks and tests. */
typedef struct {
    int64_t calls, jobs, worker_items, wakeups, caller_sleeps;
    double caller_wait_seconds;
} tmac_pool_stats_t;
void tmac_pool_stats(tmac_pool_stats_t *out);

#endif
