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
 * - w / s is computed as w * (1 / s), the same way in the search and the final codes, so
 *   the codes are exactly those whose error was measured.
 * - sums run over 8 interleaved partial sums (lane j takes elements j, j + 8, ...) added
 *   up in one fixed order, not numpy's pairwise order.
 *
 * The hot passes use 4-wide vectors of the baseline ISA, SSE2 on x86-64 and NEON on ARMv8
 * (no ISA flags, no -march=native, no run-time dispatch), with a scalar twin elsewhere.
 * They use only IEEE add, sub, mul, min and max, never fused, so every platform computes
 * the same bits. Rounding is `(x + 1.5 * 2^23) - 1.5 * 2^23` on a value already clamped to
 * [0, qmax]: round half to even, like numpy's rint, without SSE4.1's round instruction.
 * (GCC's own vectorization of the same loops in plain C was 1.5x slower: it shuffles lanes.)
 * Every row is independent of every other, so results do not depend on how rows are split
 * over threads. */
#include "quantize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8               /* partial sums per reduction: two 4-wide vectors */
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
V_MAP(v_max, a.x[j] > b.x[j] ? a.x[j] : b.x[j])
V_MAP(v_min, a.x[j] < b.x[j] ? a.x[j] : b.x[j])
#  define V_LOAD(p) v_load(p)
#  define V_STORE(p, a) memcpy(p, (a).x, sizeof (a).x)
#  define V_SET(x) v_set(x)
#  define V_ADD v_add
#  define V_SUB v_sub
#  define V_MUL v_mul
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

typedef struct {
    float *g;    /* (n_pad,) the group, scaled; zero padding */
    float *imp;  /* (n_pad,) error weights; zero on the padding, so it adds nothing to any sum */
    float *q;    /* (batch, n_pad) codes of the candidates being refitted */
    int batch;   /* candidates per batch: their q fit in Q_BUDGET floats */
} scratch_t;

#define Q_BUDGET (1 << 16)

/* Candidates c0..c1 of the search: each pass runs over all of them before the next pass
 * starts, so their dependency chains (sums, then divisions) overlap instead of queueing;
 * this is what makes the search fast, more than the vector width. Candidate c's refitted
 * (s, z) and weighted error go to s_fit[c], z_fit[c], err[c]. */
static void try_candidates(const scratch_t *t, int64_t n_pad, float lo, float hi, float qmax, float sw, float mg,
                           const float *alphas, int c0, int c1, float *s_fit, float *z_fit, float *err) {
    const float *g = t->g, *imp = t->imp;
    const v4 vq = V_SET(qmax), vmg = V_SET(mg);
    float s[TMAC_Q_MAX_ALPHAS], z[TMAC_Q_MAX_ALPHAS], mq[TMAC_Q_MAX_ALPHAS];
    for (int c = c0; c < c1; c++) {
        float step = (hi - lo) * alphas[c] / qmax;
        s[c] = step > TINY ? step : TINY;
        z[c] = round_clamped(-lo * alphas[c] / s[c], qmax);
    }
    for (int c = c0; c < c1; c++) {
        float *q = t->q + (int64_t)(c - c0) * n_pad;
        v4 inv = V_SET(1.0f / s[c]), zc = V_SET(z[c]), acc0 = V_SET(0.0f), acc1 = acc0;
        for (int64_t i = 0; i < n_pad; i += LANES) {
            v4 q0 = v_round_clamped(V_ADD(V_MUL(V_LOAD(g + i), inv), zc), vq);
            v4 q1 = v_round_clamped(V_ADD(V_MUL(V_LOAD(g + i + 4), inv), zc), vq);
            V_STORE(q + i, q0);
            V_STORE(q + i + 4, q1);
            acc0 = V_ADD(acc0, V_MUL(V_LOAD(imp + i), q0));
            acc1 = V_ADD(acc1, V_MUL(V_LOAD(imp + i + 4), q1));
        }
        mq[c] = lanes_sum(acc0, acc1) / sw;
    }
    /* the refit: weighted least squares of g ~ a * q + b, then (s, z) = (a, -b / a) */
    for (int c = c0; c < c1; c++) {
        const float *q = t->q + (int64_t)(c - c0) * n_pad;
        v4 m = V_SET(mq[c]), var0 = V_SET(0.0f), var1 = var0, cov0 = var0, cov1 = var0;
        for (int64_t i = 0; i < n_pad; i += LANES) {
            v4 w0 = V_LOAD(imp + i), w1 = V_LOAD(imp + i + 4);
            v4 dq0 = V_SUB(V_LOAD(q + i), m), dq1 = V_SUB(V_LOAD(q + i + 4), m);
            var0 = V_ADD(var0, V_MUL(w0, V_MUL(dq0, dq0)));
            var1 = V_ADD(var1, V_MUL(w1, V_MUL(dq1, dq1)));
            cov0 = V_ADD(cov0, V_MUL(V_MUL(w0, dq0), V_SUB(V_LOAD(g + i), vmg)));
            cov1 = V_ADD(cov1, V_MUL(V_MUL(w1, dq1), V_SUB(V_LOAD(g + i + 4), vmg)));
        }
        float var = lanes_sum(var0, var1), cov = lanes_sum(cov0, cov1);
        int ok = var > 0.0f;
        float a = ok ? cov / var : s[c];
        a = a > TINY ? a : s[c];  /* keep a positive step; else the search's */
        float b = ok ? mg - a * mq[c] : -s[c] * z[c];
        s_fit[c] = a;
        z_fit[c] = -b / a;
    }
    for (int c = c0; c < c1; c++) {
        v4 sc = V_SET(s_fit[c]), inv = V_SET(1.0f / s_fit[c]), zc = V_SET(z_fit[c]);
        v4 acc0 = V_SET(0.0f), acc1 = acc0;
        for (int64_t i = 0; i < n_pad; i += LANES) {
            v4 g0 = V_LOAD(g + i), g1 = V_LOAD(g + i + 4);
            v4 q0 = v_round_clamped(V_ADD(V_MUL(g0, inv), zc), vq);
            v4 q1 = v_round_clamped(V_ADD(V_MUL(g1, inv), zc), vq);
            v4 d0 = V_SUB(V_MUL(sc, V_SUB(q0, zc)), g0), d1 = V_SUB(V_MUL(sc, V_SUB(q1, zc)), g1);
            acc0 = V_ADD(acc0, V_MUL(V_LOAD(imp + i), V_MUL(d0, d0)));
            acc1 = V_ADD(acc1, V_MUL(V_LOAD(imp + i + 4), V_MUL(d1, d1)));
        }
        err[c] = lanes_sum(acc0, acc1);
    }
}

/* Scale and zero for the scaled group in t->g (n real values, max |g| in [1, 2)). */
static void fit_group(const scratch_t *t, int64_t n, float lo, float hi, float qmax, const float *alphas,
                      int n_alphas, float *s_out, float *z_out) {
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
    for (int64_t i = 0; i < n_pad; i += 4) {
        v4 gv = V_LOAD(g + i);
        V_STORE(imp + i, V_ADD(V_ADD(V_MUL(gv, gv), mean_sq), V_SET(TINY)));
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
        try_candidates(t, n_pad, lo, hi, qmax, sw, mg, alphas, c0, c1, s_fit, z_fit, err);
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
                              int n_alphas, const scratch_t *t, uint8_t *codes, float *scale, float *zero) {
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
    fit_group(t, n, lo * up, hi * up, qmax, alphas, n_alphas, &s, &z);
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)round_clamped(g[i] * inv + z, qmax);
    *scale = s * down;
    *zero = z;
    return -1;
}

int tmac_quantize_rows(const void *w, int src_type, int64_t row_stride, int64_t rows, int64_t k, int bits,
                       int64_t group_size, const float *alphas, int n_alphas, uint8_t *codes, float *scales,
                       float *zeros, int64_t *bad) {
    if (!w || !alphas || !codes || !scales || !zeros || !bad) return TMAC_Q_E_ARGS;
    if (src_type < TMAC_Q_F32 || src_type > TMAC_Q_BF16 || bits < 1 || bits > TMAC_Q_MAX_BITS) return TMAC_Q_E_ARGS;
    if (rows < 0 || k < 1 || k > TMAC_Q_MAX_K || group_size < 1 || k % group_size || row_stride < k)
        return TMAC_Q_E_ARGS;
    if (n_alphas < 1 || n_alphas > TMAC_Q_MAX_ALPHAS) return TMAC_Q_E_ARGS;
    for (int c = 0; c < n_alphas; c++)
        if (!(alphas[c] > 0.0f && alphas[c] <= 1.0f)) return TMAC_Q_E_ARGS;
    *bad = -1;
    if (rows == 0) return TMAC_Q_OK;
    int64_t n_pad = (group_size + LANES - 1) / LANES * LANES;
    int batch = (int)(Q_BUDGET / n_pad < n_alphas ? Q_BUDGET / n_pad : n_alphas);
    batch = batch > 0 ? batch : 1;
    float *buf = (float *)malloc((size_t)(2 + batch) * (size_t)n_pad * sizeof(float));
    if (!buf) return TMAC_Q_E_NOMEM;
    scratch_t t = {buf, buf + n_pad, buf + 2 * n_pad, batch};
    float qmax = (float)((1 << bits) - 1);
    int64_t n_groups = k / group_size;
    int rc = TMAC_Q_OK;
    for (int64_t r = 0; r < rows && rc == TMAC_Q_OK; r++)
        for (int64_t gi = 0; gi < n_groups; gi++) {
            int64_t col = gi * group_size;
            int64_t at = quantize_group(w, src_type, r * row_stride + col, group_size, qmax, alphas, n_alphas, &t,
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
