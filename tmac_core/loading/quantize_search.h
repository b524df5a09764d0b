/* The clipping search's passes over one group, written once on 8-lane vectors and
 * included by quantize.c once per instruction set: the baseline (two 4-wide vectors) and,
 * on x86-64, AVX (one 256-bit vector) behind a CPU check. Not a header to include
 * elsewhere. The includer defines:
 *   V8                  the vector type, lane j holding element i + j of a pass
 *   V8_LOAD(p), V8_STORE(p, a), V8_SET(x), V8_ADD, V8_SUB, V8_MUL, V8_MAX, V8_MIN
 *   V8_SUM(a)           float ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))
 *   SEARCH_FN, SEARCH_ATTR  the function's name and attributes (its target ISA)
 * Both instances do the same IEEE operations lane by lane in the same order, never fused,
 * so they return the same bits.
 *
 * Candidates c0..c1 of the search: each pass runs over all of them before the next pass
 * starts, so their dependency chains (sums, then divisions) overlap instead of queueing.
 * Candidate c's refitted (s, z) and weighted error go to s_fit[c], z_fit[c], err[c]. */

#define ROUND_CLAMPED8(x) V8_SUB(V8_ADD(V8_MIN(V8_MAX(x, zero), vq), magic), magic)

static SEARCH_ATTR void SEARCH_FN(const scratch_t *t, int64_t n_pad, float lo, float hi, float qmax, float sw,
                                  float mg, const float *alphas, int c0, int c1, float *s_fit, float *z_fit,
                                  float *err) {
    const float *g = t->g, *imp = t->imp;
    const V8 vq = V8_SET(qmax), vmg = V8_SET(mg), zero = V8_SET(0.0f), magic = V8_SET(ROUND_MAGIC);
    float s[TMAC_Q_MAX_ALPHAS], z[TMAC_Q_MAX_ALPHAS], mq[TMAC_Q_MAX_ALPHAS];
    for (int c = c0; c < c1; c++) {
        float step = (hi - lo) * alphas[c] / qmax;
        s[c] = step > TINY ? step : TINY;
        z[c] = round_clamped(-lo * alphas[c] / s[c], qmax);
    }
    for (int c = c0; c < c1; c++) {
        float *q = t->q + (int64_t)(c - c0) * n_pad;
        V8 sv = V8_SET(s[c]), zc = V8_SET(z[c]), acc = zero;
        for (int64_t i = 0; i < n_pad; i += LANES) {
            V8 qv = ROUND_CLAMPED8(V8_ADD(V8_DIV(V8_LOAD(g + i), sv), zc));
            V8_STORE(q + i, qv);
            acc = V8_ADD(acc, V8_MUL(V8_LOAD(imp + i), qv));
        }
        mq[c] = V8_SUM(acc) / sw;
    }
    /* the refit: weighted least squares of g ~ a * q + b, then (s, z) = (a, -b / a) */
    for (int c = c0; c < c1; c++) {
        const float *q = t->q + (int64_t)(c - c0) * n_pad;
        V8 m = V8_SET(mq[c]), acc_var = zero, acc_cov = zero;
        for (int64_t i = 0; i < n_pad; i += LANES) {
            V8 w = V8_LOAD(imp + i), dq = V8_SUB(V8_LOAD(q + i), m);
            acc_var = V8_ADD(acc_var, V8_MUL(w, V8_MUL(dq, dq)));
            acc_cov = V8_ADD(acc_cov, V8_MUL(V8_MUL(w, dq), V8_SUB(V8_LOAD(g + i), vmg)));
        }
        float var = V8_SUM(acc_var), cov = V8_SUM(acc_cov);
        int ok = var > 0.0f;
        float a = ok ? cov / var : s[c];
        a = a > TINY ? a : s[c];  /* keep a positive step; else the search's */
        float b = ok ? mg - a * mq[c] : -s[c] * z[c];
        s_fit[c] = a;
        z_fit[c] = -b / a;
    }
    for (int c = c0; c < c1; c++) {
        V8 sc = V8_SET(s_fit[c]), zc = V8_SET(z_fit[c]), acc = zero;
        for (int64_t i = 0; i < n_pad; i += LANES) {
            V8 gv = V8_LOAD(g + i);
            V8 d = V8_SUB(V8_MUL(sc, V8_SUB(ROUND_CLAMPED8(V8_ADD(V8_DIV(gv, sc), zc)), zc)), gv);
            acc = V8_ADD(acc, V8_MUL(V8_LOAD(imp + i), V8_MUL(d, d)));
        }
        err[c] = V8_SUM(acc);
    }
}

#undef ROUND_CLAMPED8
