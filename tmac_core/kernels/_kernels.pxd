# Cython view of include/tmac/kernels.h (1:1). Everything is nogil: the
# binding releases the GIL around every kernel call.
from libc.stdint cimport uint8_t, uint16_t, int8_t, int32_t, int64_t, uint64_t

cdef extern from "tmac/kernels.h" nogil:
    int TMAC_LAYOUT_VERSION
    int TMAC_MAX_BITS
    int TMAC_SCALES_F16
    int TMAC_SCALES_SUPER
    int TMAC_SCALES_F16_SYM
    int TMAC_SCALES_SUPER_NOMIN
    int TMAC_MAX_ZERO_MULT
    int TMAC_TILE_ROWS
    int TMAC_OK
    int TMAC_E_SHAPE
    int TMAC_E_ISA
    int TMAC_E_NOMEM
    int TMAC_E_THREADS
    int TMAC_MAX_THREADS
    int TMAC_MAX_DIM
    int64_t TMAC_MAX_ELEMS
    int TMAC_MAX_HEADS
    int TMAC_MAX_ITEMS

    ctypedef struct tmac_weight_t:
        const uint8_t *planes
        const uint16_t *scales
        int32_t m, k, m_pad, k_pad, bits, group_size, n_groups
        float tensor_scale
        int32_t scale_format, super_size, n_super
        float code_offset
        const int8_t *sub
        int32_t zero_mult

    ctypedef struct tmac_cpu_features_t:
        int is_x86_64, is_arm64
        int sse3, ssse3, sse41, fma, f16c, avx, avx2, bmi2, osxsave
        int avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512vbmi, avx_vnni
        uint64_t xcr0
        int os_avx, os_avx512
        int neon, dotprod, i8mm, sve

    ctypedef int tmac_isa_t
    int TMAC_ISA_COUNT

    int tmac_init(const char *force)
    const tmac_cpu_features_t *tmac_cpu()
    tmac_isa_t tmac_active_isa()
    int tmac_isa_available(tmac_isa_t isa)
    const char *tmac_isa_name(tmac_isa_t isa)
    int tmac_isa_from_name(const char *name)
    int tmac_check_shapes(const tmac_weight_t *w, int k_pad, int act_group)
    void tmac_weight_row_f32(const tmac_weight_t *w, int row, float *out)
    int tmac_lut_build(tmac_isa_t isa, const float *x, int n, int k_pad, int act_group,
                       int8_t *entries, float *scales, float *sums)
    int tmac_gemm(tmac_isa_t isa, const tmac_weight_t *w, const int8_t *entries, const float *scales,
                  const float *sums, int n, int k_pad, int act_group, float *y, int ldy)
    int tmac_gemm_multi(tmac_isa_t isa, int n_w, const tmac_weight_t *const *w, const int8_t *entries,
                        const float *scales, const float *sums, int n, int k_pad, int act_group,
                        float *const *y, const int *ldy)
    double tmac_now_seconds()
    float tmac_fp16_to_fp32(uint16_t h)
    uint16_t tmac_fp32_to_fp16(float f)
    int TMAC_ATTN_BLOCK
    int TMAC_ATTN_MAX_GROUP
    int TMAC_ATTN_MAX_HEAD_DIM
    int tmac_attention(tmac_isa_t isa, const float *q, int n, int pos, int n_heads, int n_kv_heads, int hd,
                       const uint16_t *k_cache, const uint16_t *v_cache, int n_ctx, float scale, float *out)
    void tmac_fp32_to_fp16_row(const float *x, uint16_t *out, int n)
    int tmac_swiglu(tmac_isa_t isa, float *gate, const float *up, int n)
    int tmac_pool_set_threads(int n)
    int tmac_pool_get_threads()
    ctypedef struct tmac_pool_stats_t:
        int64_t calls, jobs, worker_items, wakeups, caller_sleeps
        double caller_wait_seconds
    void tmac_pool_stats(tmac_pool_stats_t *out)


cdef class PackedWeight:
    cdef tmac_weight_t c
    cdef readonly object planes        # uint8 (m_pad/64, k_pad/8, bits, 64), flattened
    cdef readonly object scales        # uint16 fp16 bits, flattened: F16 (m_pad/64, n_groups, 2, 64) (sh, c);
                                       # F16_SYM (m_pad/64, n_groups, 1, 64) sh;
                                       # SUPER (m_pad/64, n_super, 2, 64) (d, dmin); SUPER_NOMIN (.., 1, 64) d
    cdef readonly object sub           # SUPER: int8 (m_pad/64, n_groups, 2, 64) (sc, mn), flattened;
                                       # SUPER_NOMIN (m_pad/64, n_groups, 1, 64) sc; F16(_SYM): None


cdef class ActivationTables:
    cdef readonly object entries       # int8 (n, k_pad/4, 16)
    cdef readonly object scales        # float32 (n, k_pad/act_group)
    cdef readonly object sums          # float32 (n, k_pad/act_group)
    cdef readonly int n, k_pad, act_group


# C-level entry points for other extension modules (the model runtime): they
# reach the one kernel table and the one thread pool through this module.
cdef int k_active_isa() noexcept nogil
cdef int k_lut_build(int isa, const float *x, int n, int k_pad, int act_group,
                     int8_t *entries, float *scales, float *sums) noexcept nogil
cdef int k_gemm_multi(int isa, int n_w, const tmac_weight_t *const *w, const int8_t *entries,
                      const float *scales, const float *sums, int n, int k_pad, int act_group,
                      float *const *y, const int *ldy) noexcept nogil
cdef int k_attention(int isa, const float *q, int n, int pos, int n_heads, int n_kv_heads, int hd,
                     const uint16_t *k_cache, const uint16_t *v_cache, int n_ctx, float scale,
                     float *out) noexcept nogil
cdef void k_fp32_to_fp16_row(const float *x, uint16_t *out, int n) noexcept nogil
cdef int k_swiglu(int isa, float *gate, const float *up, int n) noexcept nogil
cdef const tmac_weight_t *k_weight(PackedWeight w) noexcept
cdef double k_now() noexcept nogil   # monotonic seconds (tmac_now_seconds)
