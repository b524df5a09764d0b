/* Benchmark-only reference: the classic dequantize-to-int8 GEMV that
 * llama.cpp-style kernels use (4-bit codes unpacked to int8, activations
 * quantized to int8 per 32, vpmaddubsw dot products, fp32 per-block scales).
 * Built at bench time for this machine (-march=native is fine here: it is
 * never shipped), run on 1..n threads. Not part of the product. */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>

typedef struct {
    const uint8_t *w;      /* (m, k/2) nibbles, low nibble = even k */
    const float *wd;       /* (m, k/32) scales */
    const int8_t *x8;      /* (k) */
    const float *xd;       /* (k/32) */
    float *y;
    int m0, m1, k;
} job_t;

static float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static void *rows(void *arg) {
    const job_t *j = (const job_t *)arg;
    const __m256i low = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8), ones = _mm256_set1_epi16(1);
    for (int m = j->m0; m < j->m1; m++) {
        const uint8_t *w = j->w + (size_t)m * (j->k / 2);
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < j->k / 32; b++) {
            __m128i packed = _mm_loadu_si128((const __m128i *)(w + 16 * b));
            __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
            q = _mm256_sub_epi8(q, eight);                                   /* int8 weights */
            __m256i x = _mm256_loadu_si256((const __m256i *)(j->x8 + 32 * b));
            __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
            __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
            acc = _mm256_fmadd_ps(s, _mm256_set1_ps(j->wd[(size_t)m * (j->k / 32) + b] * j->xd[b]), acc);
        }
        j->y[m] = hsum(acc);
    }
    return 0;
}

/* y (m) = W x for Q4-like W; quantizes x to int8 per 32 first (part of the timed work). */
void ref_q4_gemv(const uint8_t *w, const float *wd, const float *x, int8_t *x8, float *xd,
                 float *y, int m, int k, int threads) {
    for (int b = 0; b < k / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) { float a = x[32 * b + i] < 0 ? -x[32 * b + i] : x[32 * b + i]; if (a > amax) amax = a; }
        float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        xd[b] = d;
        for (int i = 0; i < 32; i++) x8[32 * b + i] = (int8_t)__builtin_lrintf(x[32 * b + i] * inv);
    }
    pthread_t tid[16];
    job_t jobs[16];
    if (threads < 1) threads = 1;
    if (threads > 16) threads = 16;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job_t){w, wd, x8, xd, y, (int)((long)m * t / threads), (int)((long)m * (t + 1) / threads), k};
        if (t) pthread_create(&tid[t], 0, rows, &jobs[t]);
    }
    rows(&jobs[0]);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], 0);
}
