/* Small fp32 helpers of the forward pass, in C so the compiler sees plain
 * restrict-qualified loops it can vectorize at the baseline ISA (SSE2 / NEON). */
#ifndef TMAC_MODELS_OPS_H
#define TMAC_MODELS_OPS_H

/* Dot product in 8 independent partial sums, a fixed order (reproducible across
 * threads and batch sizes): one add chain made q.k latency-bound. */
static inline float tmac_dot(const float *__restrict a, const float *__restrict b, int n) {
    float p0 = 0, p1 = 0, p2 = 0, p3 = 0, p4 = 0, p5 = 0, p6 = 0, p7 = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        p0 += a[i] * b[i];
        p1 += a[i + 1] * b[i + 1];
        p2 += a[i + 2] * b[i + 2];
        p3 += a[i + 3] * b[i + 3];
        p4 += a[i + 4] * b[i + 4];
        p5 += a[i + 5] * b[i + 5];
        p6 += a[i + 6] * b[i + 6];
        p7 += a[i + 7] * b[i + 7];
    }
    for (; i < n; i++) p0 += a[i] * b[i];
    return ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7));
}

#endif
