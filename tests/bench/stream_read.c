/* A streaming DRAM read for the benchmarks' bandwidth line: `threads` POSIX threads each
 * sum their own contiguous slice of one buffer with eight independent 64-bit
 * accumulators (no dependency chain, so the loads and not the adds are the limit).
 * Benchmark-only code: compiled by tests/bench/machine.py on the machine that runs the
 * benchmark, never shipped. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct {
    const uint64_t *words; /* [n] this thread's slice */
    size_t n;
    uint64_t sum; /* written so the compiler cannot drop the loads */
} slice_t;

static void *read_slice(void *arg) {
    slice_t *s = (slice_t *)arg;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    size_t i = 0;
    for (; i + 8 <= s->n; i += 8) {
        a0 += s->words[i + 0]; a1 += s->words[i + 1]; a2 += s->words[i + 2]; a3 += s->words[i + 3];
        a4 += s->words[i + 4]; a5 += s->words[i + 5]; a6 += s->words[i + 6]; a7 += s->words[i + 7];
    }
    for (; i < s->n; i++) a0 += s->words[i];
    s->sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    return NULL;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best wall time in seconds of `passes` reads of buf[0..bytes) split over `threads`
 * threads (1..64); -1 on bad arguments or a thread that could not start. */
double stream_read_seconds(const void *buf, size_t bytes, int threads, int passes) {
    if (buf == NULL || threads < 1 || threads > 64 || passes < 1 || bytes < 64 * (size_t)threads) return -1.0;
    pthread_t tid[64];
    slice_t slices[64];
    size_t words = bytes / sizeof(uint64_t), per = words / (size_t)threads;
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        double t0 = now_s();
        for (int t = 0; t < threads; t++) {
            slices[t].words = (const uint64_t *)buf + (size_t)t * per;
            slices[t].n = t == threads - 1 ? words - (size_t)t * per : per;
            if (pthread_create(&tid[t], NULL, read_slice, &slices[t]) != 0) {
                for (int j = 0; j < t; j++) pthread_join(tid[j], NULL);
                return -1.0;
            }
        }
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}
