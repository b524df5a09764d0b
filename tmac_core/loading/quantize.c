/* Our float-source quantizer in C: the algorithm of repack.py's quantize(), per group of
 * `group_size` values along a row:
 *
 *   imp = w^2 + mean(w^2) + 1e-30        error weights (llama.cpp's make_qkx2_quants idea)
 *   for each clip factor a:              a clipping search
 *       s = (max - min) * a / qmax, z = rint(-min * a / s), q = rint(w / s + z) in [0, qmax]
 *       (s, z) = weighted least squares of w ~ s * (q - z) for these codes (a refit)
 *       err = sum imp * (s * (rint(w / s + z) - z) - w)^2
 *   keep the (s, z) with the smallest err; codes = rint(w / s + z) in [0, qmax]
 *
 * Where it differs from the numpy original, on purpose:
 * - each group is first scaled by a power of two so its largest magnitude is in [1, 2).
 *   That is exact, so ordinary weights round as before, but squares of large weights no
 *   longer overflow float32 (numpy gives up on groups with |w| > ~1e9) and tiny ones do not
 *   underflow; a group below 2^-100 is the all-zero group.
 * - a constant group c != 0 is stored exactly (s = |c| / qmax, z = 0 or qmax); numpy's
 *   search has no spread to scale and stores it as ~0.
 * - sums run over 8 interleaved partial sums (lane j takes elements j, j + 8, ...) added
 *   up in one fixed order, not numpy's pairwise order.
 * w / s stays a true division (5% slower than w * (1 / s)): weights that were
 * dequantized from a grid (Q4_1 -> 2 bits) land exactly on rounding ties often, and a tie
 * broken the other way moves a weight by a whole step. With the division the codes are
 * numpy's, and the test that compares our runtime with the numpy reference on a 2-bit
 * SmolLM2 agrees on the same tokens.
 *
 * col_imp (optional, K values >= 0 per row position): the error weights of an activation-aware
 * caller, imp = col_imp / max(col_imp over the group) in place of w^2 + mean(w^2): with
 * col_imp = E[x_k^2] of the layer's input (loading/calibrate.py) the search minimises the
 * group's share of the output error rather than the weights' error.
 *
 * The hot passes (quantize_search.h) run on 8 lanes: two 4-wide vectors of the baseline
 * ISA, SSE2 on x86-64 and NEON on ARMv8 (no ISA flags, no -march=native), a scalar twin
 * elsewhere, and on x86-64 one AVX vector when the CPU has AVX (a function compiled for
 * it, chosen at run time: 1.5x faster). They use only IEEE add, sub, mul, div, min and max,
 * never fused, so every build and CPU computes the same bits. Rounding is
 * `(x + 1.5 * 2^23) - 1.5 * 2^23` on a value already clamped to [0, qmax]: round half to
 * even, like numpy's rint, without SSE4.1's round instruction. (GCC's own vectorization of
 * the same loops in plain C was 1.7x slower than the SSE2 version: it shuffles lanes.)
 * Every row is independent of every other, so results do not depend on how rows are split
 * over threads. */
#include "quantize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8               /* partial sums per reduction: one 8-lane vector */
#define ROUND_MAGIC 12582912.0f  /* 1.5 * 2^23 */
#define TINY 1e-30f           /* numpy's floor on a step, and its epsilon in imp */

#if !defined(TMAC_Q_SCALAR) && (defined(__SSE2__) || defined(_M_X64))
#  include <emmintrin.h>
typedef __m128 v4;
#  define V_LOAD(p) _mm_loadu_ps(p)
#  define V_STORE(p, a) _mm_storeu_ps(p, a)
#  define V_SET(x) _mm_set1_ps(x)
#  define V_ADD(a, b) _mm_add_ps(a, b)
#  define V_SUB(a, b) _mm_sub_ps(a, b)
#  define V_MUL(a, b) _mm_mul_ps(a, b)
#  define V_DIV(a, b) _mm_div_ps(a, b)
#  define V_MAX(a, b) _mm_max_ps(a, b)
#  define V_MIN(a, b) _mm_min_ps(a, b)
static inline void v_lanes(v4 a, float out[4]) { _mm_storeu_ps(out, a); }
#elif !defined(TMAC_Q_SCALAR) && (defined(__ARM_NEON) || defined(_M_ARM64))
#  include <arm_neon.h>
typedef float32x4_t v4;
#  define V_LOAD(p) vld1q_f32(p)
#  define V_STORE(p, a) vst1q_f32(p, a)
#  define V_SET(x) vdupq_n_f32(x)
#  define V_ADD(a, b) vaddq_f32(a, b)
#  define V_SUB(a, b) vsubq_f32(a, b)
#  define V_MUL(a, b) vmulq_f32(a, b)
#  define V_DIV(a, b) vdivq_f32(a, b)
#  define V_MAX(a, b) vmaxq_f32(a, b)
#  define V_MIN(a, b) vminq_f32(a, b)
static inline void v_lanes(v4 a, float out[4]) { vst1q_f32(out, a); }
#else  /* the scalar twin: other CPUs, and the tests' build (-DTMAC_Q_SCALAR) to compare with */
typedef struct { float x[4]; } v4;
static inline v4 v_load(const float *p) { v4 r; memcpy(r.x, p, sizeof r.x); return r; }
static inline v4 v_set(float x) { v4 r = {{x, x, x, x}}; return r; }
#  define V_MAP(name, expr) \
    static inline v4 name(v4 a, v4 b) { v4 r; for (int j = 0; j < 4; j++) r.x[j] = (expr); return r; }
V_MAP(v_add, a.x[j] + b.x[j])
V_MAP(v_sub, a.x[j] - b.x[j])
V_MAP(v_mul, a.x[j] * b.x[j])
V_MAP(v_div, a.x[j] / b.x[j])
V_MAP(v_max, a.x[j] > b.x[j] ? a.x[j] : b.x[j])
V_MAP(v_min, a.x[j] < b.x[j] ? a.x[j] : b.x[j])
#  define V_LOAD(p) v_load(p)
#  define V_STORE(p, a) memcpy(p, (a).x, sizeof (a).x)
#  define V_SET(x) v_set(x)
#  define V_ADD v_add
#  define V_SUB v_sub
#  define V_MUL v_mul
#  define V_DIV v_div
#  define V_MAX v_max
#  define V_MIN v_min
static inline void v_lanes(v4 a, float out[4]) { memcpy(out, a.x, sizeof a.x); }
#endif

static inline float round_clamped(float x, float qmax) {
    x = x > 0.0f ? x : 0.0f;  /* never NaN here: inputs are finite and steps are >= TINY */
    x = x < qmax ? x : qmax;
    return (x + ROUND_MAGIC) - ROUND_MAGIC;
}

/* round_clamped on 4 lanes, the same operations in the same order */
static inline v4 v_round_clamped(v4 x, v4 qmax) {
    x = V_MIN(V_MAX(x, V_SET(0.0f)), qmax);
    return V_SUB(V_ADD(x, V_SET(ROUND_MAGIC)), V_SET(ROUND_MAGIC));
}

/* The sum of 8 partial sums, lanes 0-3 in lo and 4-7 in hi: ((0+4) + (1+5)) + ((2+6) + (3+7)). */
static inline float lanes_sum(v4 lo, v4 hi) {
    float a[4];
    v_lanes(V_ADD(lo, hi), a);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* ---- sources -> float32 ---- */

/* fp16 bits -> float32, exact for every finite value, subnormals included, without float
 * subnormal arithmetic: the exponent is rebased in integer bits, and a subnormal m * 2^-24
 * is computed as (2^-14 + m * 2^-24) - 2^-14. Branch-free, so the loop vectorizes.
 * Inf/NaN are caught by the caller (is_nonfinite) before the result is used. */
static inline float f16_to_f32(uint16_t h) {
    uint32_t mag = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t normal_bits = (mag + ((uint32_t)(127 - 15) << 23)) | sign;
    uint32_t sub_bits = mag + ((uint32_t)(127 - 14) << 23);
    float normal, sub;
    memcpy(&normal, &normal_bits, 4);
    memcpy(&sub, &sub_bits, 4);
    sub = sub - 6.103515625e-05f;  /* 2^-14 */
    sub = sign ? -sub : sub;
    return (mag & 0x0f800000u) ? normal : sub;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int is_nonfinite(const void *src, int src_type, int64_t i) {
    if (src_type == TMAC_Q_F32) {
        uint32_t bits;
        memcpy(&bits, (const float *)src + i, 4);
        return (bits & 0x7f800000u) == 0x7f800000u;
    }
    uint16_t h = ((const uint16_t *)src)[i];
    uint16_t exp_mask = src_type == TMAC_Q_F16 ? 0x7c00u : 0x7f80u;
    return (h & exp_mask) == exp_mask;
}

/* Loads the n values of one group that start at element `at` as float32 into g,
 * zero-padded to a multiple of LANES. Returns the index in the group of the first
 * non-finite value, or -1. */
static int64_t load_group(const void *src, int src_type, int64_t at, int64_t n, float *g) {
    int64_t n_pad = (n + LANES - 1) / LANES * LANES;
    uint32_t bad = 0;
    if (src_type == TMAC_Q_F32) {
        const float *x = (const float *)src + at;
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], 4);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
            g[i] = x[i];
        }
    } else if (src_type == TMAC_Q_F16) {
        const uint16_t *x = (const uint16_t *)src + at;
        for (int64_t i = 0; i < n; i++) {
            bad |= (x[i] & 0x7c00u) == 0x7c00u;
            g[i] = f16_to_f32(x[i]);
        }
    } else {
        const uint16_t *x = (const uint16_t *)src + at;
        for (int64_t i = 0; i < n; i++) {
            bad |= (x[i] & 0x7f80u) == 0x7f80u;
            g[i] = bf16_to_f32(x[i]);
        }
    }
    for (int64_t i = n; i < n_pad; i++) g[i] = 0.0f;
    if (!bad) return -1;
    for (int64_t i = 0; i < n; i++)
        if (is_nonfinite(src, src_type, at + i)) return i;
    return -1;  /* not reached: `bad` saw one */
}

/* ---- one group ---- */

typedef struct scratch scratch_t;
typedef void (*search_fn)(const scratch_t *t, int64_t n_pad, float lo, float hi, float qmax, float sw, float mg,
                          const float *alphas, int c0, int c1, float *s_fit, float *z_fit, float *err);
struct scratch {
    float *g;          /* (n_pad,) the group, scaled; zero padding */
    float *imp;        /* (n_pad,) error weights; zero on the padding, so it adds nothing to any sum */
    float *q;          /* (batch, n_pad) codes of the candidates being refitted */
    int batch;         /* candidates per batch: their q fit in Q_BUDGET floats */
    search_fn search;  /* search_baseline, or search_avx */
};

#define Q_BUDGET (1 << 16)

/* the baseline instance: 8 lanes as two 4-wide vectors */
typedef struct { v4 lo, hi; } v8;
static inline v8 v8_load(const float *p) { v8 r = {V_LOAD(p), V_LOAD(p + 4)}; return r; }
static inline void v8_store(float *p, v8 a) { V_STORE(p, a.lo); V_STORE(p + 4, a.hi); }
static inline v8 v8_set(float x) { v8 r = {V_SET(x), V_SET(x)}; return r; }
#define V8_PAIRWISE(name, op) \
    static inline v8 name(v8 a, v8 b) { v8 r = {op(a.lo, b.lo), op(a.hi, b.hi)}; return r; }
V8_PAIRWISE(v8_add, V_ADD)
V8_PAIRWISE(v8_sub, V_SUB)
V8_PAIRWISE(v8_mul, V_MUL)
V8_PAIRWISE(v8_div, V_DIV)
V8_PAIRWISE(v8_max, V_MAX)
V8_PAIRWISE(v8_min, V_MIN)
#define V8 v8
#define V8_LOAD v8_load
#define V8_STORE v8_store
#define V8_SET v8_set
#define V8_ADD v8_add
#define V8_SUB v8_sub
#define V8_MUL v8_mul
#define V8_DIV v8_div
#define V8_MAX v8_max
#define V8_MIN v8_min
#define V8_SUM(a) lanes_sum((a).lo, (a).hi)
#define SEARCH_FN search_baseline
#define SEARCH_ATTR
#include "quantize_search.h"
#undef V8
#undef V8_LOAD
#undef V8_STORE
#undef V8_SET
#undef V8_ADD
#undef V8_SUB
#undef V8_MUL
#undef V8_DIV
#undef V8_MAX
#undef V8_MIN
#undef V8_SUM
#undef SEARCH_FN
#undef SEARCH_ATTR

/* the AVX instance on x86-64, used when the CPU and the OS have AVX: 1.5x faster than the
 * baseline, the same bits. AVX only, no FMA (it would round differently). */
#if !defined(TMAC_Q_SCALAR) && !defined(TMAC_Q_NO_AVX) && (defined(__x86_64__) || defined(_M_X64))
#  define HAVE_AVX_SEARCH 1
#  include <immintrin.h>
#  if defined(__GNUC__) || defined(__clang__)
#    define AVX_ATTR __attribute__((target("avx")))
#  else
#    include <intrin.h>
#    define AVX_ATTR  /* MSVC compiles any intrinsic without a flag */
#  endif
static inline AVX_ATTR float avx_sum(__m256 a) {
    return lanes_sum(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
}
#  define V8 __m256
#  define V8_LOAD _mm256_loadu_ps
#  define V8_STORE _mm256_storeu_ps
#  define V8_SET _mm256_set1_ps
#  define V8_ADD _mm256_add_ps
#  define V8_SUB _mm256_sub_ps
#  define V8_MUL _mm256_mul_ps
#  define V8_DIV _mm256_div_ps
#  define V8_MAX _mm256_max_ps
#  define V8_MIN _mm256_min_ps
#  define V8_SUM avx_sum
#  define SEARCH_FN search_avx
#  define SEARCH_ATTR AVX_ATTR
#  include "quantize_search.h"

static int cpu_has_avx(void) {
#  if defined(__GNUC__) || defined(__clang__)
    return __builtin_cpu_supports("avx");  /* checks that the OS saves YMM state, too */
#  else
    int r[4];
    __cpuid(r, 1);
    if (!(r[2] & (1 << 27)) || !(r[2] & (1 << 28))) return 0;  /* OSXSAVE, AVX */
    return (_xgetbv(0) & 6) == 6;                              /* XMM and YMM state enabled */
#  endif
}
#endif

/* Scale and zero for the scaled group in t->g (n real values, max |g| in [1, 2)). */
static void fit_group(const scratch_t *t, int64_t n, float lo, float hi, float qmax, const float *alphas,
                      int n_alphas, const float *col_imp, float *s_out, float *z_out) {
    int64_t n_pad = (n + LANES - 1) / LANES * LANES;
    const float *g = t->g;
    float *imp = t->imp;
    v4 acc0 = V_SET(0.0f), acc1 = acc0;
    for (int64_t i = 0; i < n_pad; i += LANES) {
        v4 g0 = V_LOAD(g + i), g1 = V_LOAD(g + i + 4);
        acc0 = V_ADD(acc0, V_MUL(g0, g0));
        acc1 = V_ADD(acc1, V_MUL(g1, g1));
    }
    v4 mean_sq = V_SET(lanes_sum(acc0, acc1) / (float)n);
    v4 sw0 = V_SET(0.0f), sw1 = sw0, swg0 = sw0, swg1 = sw0;
    if (col_imp) {  /* the caller's importance, scaled so its largest is 1 (sums stay in range) */
        float peak = 0.0f;
        for (int64_t i = 0; i < n; i++) peak = col_imp[i] > peak ? col_imp[i] : peak;
        for (int64_t i = 0; i < n; i++) imp[i] = col_imp[i] / peak + TINY;
    } else {
        for (int64_t i = 0; i < n_pad; i += 4) {
            v4 gv = V_LOAD(g + i);
            V_STORE(imp + i, V_ADD(V_ADD(V_MUL(gv, gv), mean_sq), V_SET(TINY)));
        }
    }
    for (int64_t i = n; i < n_pad; i++) imp[i] = 0.0f;  /* the padding weighs nothing */
    for (int64_t i = 0; i < n_pad; i += LANES) {
        v4 w0 = V_LOAD(imp + i), w1 = V_LOAD(imp + i + 4);
        sw0 = V_ADD(sw0, w0);
        sw1 = V_ADD(sw1, w1);
        swg0 = V_ADD(swg0, V_MUL(w0, V_LOAD(g + i)));
        swg1 = V_ADD(swg1, V_MUL(w1, V_LOAD(g + i + 4)));
    }
    float sw = lanes_sum(sw0, sw1);
    float mg = lanes_sum(swg0, swg1) / sw;

    float s_fit[TMAC_Q_MAX_ALPHAS], z_fit[TMAC_Q_MAX_ALPHAS], err[TMAC_Q_MAX_ALPHAS];
    for (int c0 = 0; c0 < n_alphas; c0 += t->batch) {
        int c1 = c0 + t->batch < n_alphas ? c0 + t->batch : n_alphas;
        t->search(t, n_pad, lo, hi, qmax, sw, mg, alphas, c0, c1, s_fit, z_fit, err);
    }
    /* the first smallest error wins, as in numpy's running `err < best_err`; an error that
     * overflowed still leaves the first candidate (numpy would keep a zero step) */
    int best = 0;
    for (int c = 1; c < n_alphas; c++)
        if (err[c] < err[best]) best = c;
    *s_out = s_fit[best];
    *z_out = z_fit[best];
}

/* One group: its codes, scale and zero. Returns the index of a non-finite value, or -1. */
static int64_t quantize_group(const void *w, int src_type, int64_t at, int64_t n, float qmax, const float *alphas,
                              int n_alphas, const float *col_imp, const scratch_t *t, uint8_t *codes, float *scale,
                              float *zero) {
    float *g = t->g;  /* a local copy: stores to codes (uint8) may alias anything, t->g included */
    int64_t bad = load_group(w, src_type, at, n, g);
    if (bad >= 0) return bad;
    int64_t n8 = n / LANES * LANES;
    float mn[LANES], mx[LANES];
    for (int j = 0; j < LANES; j++) mn[j] = mx[j] = g[0];
    for (int64_t i = 0; i < n8; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float v = g[i + j];
            mn[j] = v < mn[j] ? v : mn[j];
            mx[j] = v > mx[j] ? v : mx[j];
        }
    float lo = mn[0], hi = mx[0];
    for (int j = 1; j < LANES; j++) {
        lo = mn[j] < lo ? mn[j] : lo;
        hi = mx[j] > hi ? mx[j] : hi;
    }
    for (int64_t i = n8; i < n; i++) {
        lo = g[i] < lo ? g[i] : lo;
        hi = g[i] > hi ? g[i] : hi;
    }
    float peak = hi > -lo ? hi : -lo;
    int e;
    frexpf(peak, &e);  /* peak = m * 2^e, m in [0.5, 1) */
    if (peak == 0.0f || e < -99) {  /* all zero, or below 2^-100: numpy's result for it */
        memset(codes, 0, (size_t)n);
        *scale = TINY, *zero = 0.0f;
        return -1;
    }
    if (lo == hi) {  /* a constant group, stored exactly */
        *scale = fabsf(lo) / qmax;
        *zero = lo > 0.0f ? 0.0f : qmax;
        memset(codes, lo > 0.0f ? (int)qmax : 0, (size_t)n);
        return -1;
    }
    float up = ldexpf(1.0f, 1 - e), down = ldexpf(1.0f, e - 1);  /* exact powers of two */
    for (int64_t i = 0; i < n; i++) g[i] *= up;
    float s, z;
    fit_group(t, n, lo * up, hi * up, qmax, alphas, n_alphas, col_imp, &s, &z);
    for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)round_clamped(g[i] / s + z, qmax);
    *scale = s * down;
    *zero = z;
    return -1;
}

int tmac_quantize_rows(const void *w, int src_type, int64_t row_stride, int64_t rows, int64_t k, int bits,
                       int64_t group_size, const float *alphas, int n_alphas, const float *col_imp, uint8_t *codes,
                       float *scales, float *zeros, int64_t *bad) {
    if (!w || !alphas || !codes || !scales || !zeros || !bad) return TMAC_Q_E_ARGS;
    if (src_type < TMAC_Q_F32 || src_type > TMAC_Q_BF16 || bits < 1 || bits > TMAC_Q_MAX_BITS) return TMAC_Q_E_ARGS;
    if (rows < 0 || k < 1 || k > TMAC_Q_MAX_K || group_size < 1 || k % group_size || row_stride < k)
        return TMAC_Q_E_ARGS;
    if (n_alphas < 1 || n_alphas > TMAC_Q_MAX_ALPHAS) return TMAC_Q_E_ARGS;
    for (int c = 0; c < n_alphas; c++)
        if (!(alphas[c] > 0.0f && alphas[c] <= 1.0f)) return TMAC_Q_E_ARGS;
    if (col_imp)  /* finite, >= 0, and some weight in every group */
        for (int64_t g0 = 0; g0 < k; g0 += group_size) {
            float peak = 0.0f;
            for (int64_t i = g0; i < g0 + group_size; i++) {
                if (!(col_imp[i] >= 0.0f && col_imp[i] <= 3.4e38f)) return TMAC_Q_E_ARGS;
                peak = col_imp[i] > peak ? col_imp[i] : peak;
            }
            if (!(peak > 0.0f)) return TMAC_Q_E_ARGS;
        }
    *bad = -1;
    if (rows == 0) return TMAC_Q_OK;
    int64_t n_pad = (group_size + LANES - 1) / LANES * LANES;
    int batch = (int)(Q_BUDGET / n_pad < n_alphas ? Q_BUDGET / n_pad : n_alphas);
    batch = batch > 0 ? batch : 1;
    float *buf = (float *)malloc((size_t)(2 + batch) * (size_t)n_pad * sizeof(float));
    if (!buf) return TMAC_Q_E_NOMEM;
    scratch_t t = {buf, buf + n_pad, buf + 2 * n_pad, batch, search_baseline};
#if defined(HAVE_AVX_SEARCH)
    if (cpu_has_avx()) t.search = search_avx;
#endif
    float qmax = (float)((1 << bits) - 1);
    int64_t n_groups = k / group_size;
    int rc = TMAC_Q_OK;
    for (int64_t r = 0; r < rows && rc == TMAC_Q_OK; r++)
        for (int64_t gi = 0; gi < n_groups; gi++) {
            int64_t col = gi * group_size;
            int64_t at = quantize_group(w, src_type, r * row_stride + col, group_size, qmax, alphas, n_alphas,
                                        col_imp ? col_imp + col : NULL, &t,
                                        codes + r * k + col, scales + r * n_groups + gi, zeros + r * n_groups + gi);
            if (at >= 0) {
                *bad = r * k + col + at;
                rc = TMAC_Q_E_NONFINITE;
                break;
            }
        }
    free(buf);
    return rc;
}
