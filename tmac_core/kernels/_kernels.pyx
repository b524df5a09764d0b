# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding of the C LUT kernels: tier detection, thread pool, table build and
GEMM/GEMV. Every size is checked here before native code sees a pointer, in
Python ints (no wrap-around) against the limits of kernels.h, and the GIL is
released around every kernel call. Use the names re-exported by
tmac_core.kernels; this module is its private half."""
import operator
import os

import numpy as np

from tmac_core.errors import KernelError, UnsupportedCpuError

if tmac_init(NULL) != TMAC_OK:
    raise KernelError("kernel initialisation failed")

LAYOUT_VERSION = TMAC_LAYOUT_VERSION
MAX_THREADS = TMAC_MAX_THREADS
TILE_ROWS = TMAC_TILE_ROWS
# size limits of the API (kernels.h); anything larger is a ValueError here
MAX_DIM = TMAC_MAX_DIM              # m, k_pad, tokens per call, KV positions
MAX_ELEMS = TMAC_MAX_ELEMS          # m_pad * k_pad of a weight; n * k_pad of tables
MAX_HEADS = TMAC_MAX_HEADS
cdef Py_ssize_t ELEMENTWISE_CHUNK = 1 << 30   # elementwise kernels take an int count: longer inputs go in pieces


def cpu_features():
    """What CPUID/XGETBV (x86) or the OS (ARM) report about this CPU."""
    cdef const tmac_cpu_features_t *f = tmac_cpu()
    return {
        "arch": "x86_64" if f.is_x86_64 else ("arm64" if f.is_arm64 else "other"),
        "sse3": bool(f.sse3), "ssse3": bool(f.ssse3), "sse4_1": bool(f.sse41),
        "avx": bool(f.avx), "avx2": bool(f.avx2), "fma": bool(f.fma), "f16c": bool(f.f16c),
        "bmi2": bool(f.bmi2), "osxsave": bool(f.osxsave),
        "avx512f": bool(f.avx512f), "avx512bw": bool(f.avx512bw), "avx512vl": bool(f.avx512vl),
        "avx512dq": bool(f.avx512dq), "avx512_vnni": bool(f.avx512vnni),
        "avx512_vbmi": bool(f.avx512vbmi), "avx_vnni": bool(f.avx_vnni),
        "xcr0": int(f.xcr0), "os_avx": bool(f.os_avx), "os_avx512": bool(f.os_avx512),
        "neon": bool(f.neon), "dotprod": bool(f.dotprod), "i8mm": bool(f.i8mm), "sve": bool(f.sve),
    }


def available_tiers():
    """Tiers compiled in and runnable on this CPU, slowest first."""
    return [tmac_isa_name(i).decode() for i in range(TMAC_ISA_COUNT) if tmac_isa_available(i)]


_FORCED = os.environ.get("TMAC_KERNELS", "").strip().lower()
if _FORCED and tmac_init(_FORCED.encode()) != TMAC_OK:
    raise UnsupportedCpuError(f"TMAC_KERNELS={_FORCED!r} asks for a kernel tier this CPU or build cannot run; "
                              f"available here: {', '.join(available_tiers())}")


def active_tier():
    """The tier used when a call does not name one (best, or TMAC_KERNELS)."""
    return tmac_isa_name(tmac_active_isa()).decode()


cdef int _isa_id(object tier) except -1:
    if tier is None:
        return tmac_active_isa()
    cdef int i = tmac_isa_from_name(str(tier).encode())
    if i < 0:
        raise ValueError(f"unknown kernel tier {tier!r}; tiers are generic, avx2, avx512, neon")
    if not tmac_isa_available(i):
        raise UnsupportedCpuError(f"kernel tier {tier!r} cannot run on this CPU or build; "
                                  f"available: {', '.join(available_tiers())}")
    return i


def _size(name, value, lo, hi):
    """value as a Python int in [lo, hi], else a ValueError naming it (never a
    wrapped C int or an OverflowError)."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}={v} is outside [{lo}, {hi}]")
    return v


def _raise_for(int rc, what):
    if rc == TMAC_E_SHAPE:
        raise ValueError(f"{what}: inconsistent or too large shapes")
    raise KernelError(f"{what} failed (code {rc})")


def set_num_threads(n):
    """Size of the kernel thread pool, from the next kernel call on (also mid-generation)."""
    tmac_pool_set_threads(_size("thread count", n, 1, TMAC_MAX_THREADS))


def get_num_threads():
    return tmac_pool_get_threads()


def pool_stats():
    """The thread pool's counters since it started (kernels.h tmac_pool_stats_t): calls,
    jobs (calls shared with the workers), worker_items, wakeups, caller_sleeps, caller_wait_seconds."""
    cdef tmac_pool_stats_t s
    tmac_pool_stats(&s)
    return {"calls": s.calls, "jobs": s.jobs, "worker_items": s.worker_items, "wakeups": s.wakeups,
            "caller_sleeps": s.caller_sleeps, "caller_wait_seconds": s.caller_wait_seconds}


GROUP_SIZES = (16, 32, 64, 128, 256)   # besides one group per row (group_size == k_pad, k_pad % 64 == 0)
SCALES_F16 = TMAC_SCALES_F16
SCALES_SUPER = TMAC_SCALES_SUPER
SCALES_F16_SYM = TMAC_SCALES_F16_SYM
SCALES_SUPER_NOMIN = TMAC_SCALES_SUPER_NOMIN
MAX_ZERO_MULT = TMAC_MAX_ZERO_MULT
MAX_BITS = TMAC_MAX_BITS


def _act_group_of(group_size):
    """Activation-table group size a weight with these scale groups reads: min(64, group_size)."""
    return 16 if group_size == 16 else (64 if group_size % 64 == 0 else 32)


def _float32_finite(name, value):
    """value as a float that is finite as a float32 (the type the kernels read), else ValueError."""
    try:
        v = float(value)
    except OverflowError:
        v = float("inf")
    with np.errstate(over="ignore"):
        finite = np.isfinite(np.float32(v))
    if not finite:
        raise ValueError(f"{name} must be finite as a float32, got {value}")
    return v


cdef class PackedWeight:
    """A weight matrix in the kernel layout (LAYOUT.md §Weights). Built by
    tmac_core.kernels.pack() (F16 or, symmetric, F16_SYM scales) or pack_super() (SUPER
    or, without mins, SUPER_NOMIN scales); holds the numpy buffers the struct points into."""

    def __cinit__(self, planes, scales, m, k, k_pad, bits, group_size, tensor_scale, *,
                  scale_format=TMAC_SCALES_F16, sub=None, super_size=0, code_offset=0.0, zero_mult=0):
        m = _size("m", m, 1, TMAC_MAX_DIM)
        k_pad = _size("k_pad", k_pad, 1, TMAC_MAX_DIM)
        k = _size("k", k, 1, k_pad)
        bits = _size("bits", bits, 1, TMAC_MAX_BITS)
        group_size = _size("group_size", group_size, 16, k_pad)
        scale_format = _size("scale_format", scale_format, TMAC_SCALES_F16, TMAC_SCALES_SUPER_NOMIN)
        zero_mult = _size("zero_mult", zero_mult, -TMAC_MAX_ZERO_MULT, TMAC_MAX_ZERO_MULT)
        is_super = scale_format in (TMAC_SCALES_SUPER, TMAC_SCALES_SUPER_NOMIN)
        records = 2 if scale_format in (TMAC_SCALES_F16, TMAC_SCALES_SUPER) else 1
        if (scale_format == TMAC_SCALES_F16_SYM) != (zero_mult % 2 == 1):
            raise ValueError(f"zero_mult={zero_mult}: F16_SYM scales need an odd one (2^bits - 1 - 2z), "
                             f"the other formats 0")
        per_row = group_size == k_pad and k_pad % 64 == 0
        if group_size not in GROUP_SIZES and not per_row or k_pad % group_size:
            raise ValueError(f"inconsistent packed weight: m={m} k={k} k_pad={k_pad} bits={bits} "
                             f"group_size={group_size} (groups are 16, 32, 64, 128 or 256 wide and divide "
                             f"k_pad, or one group per row with k_pad a multiple of 64)")
        m_pad = (m + TMAC_TILE_ROWS - 1) // TMAC_TILE_ROWS * TMAC_TILE_ROWS
        if m_pad * k_pad > TMAC_MAX_ELEMS:
            raise ValueError(f"packed weight of {m} x {k_pad} is larger than the kernels' limit of "
                             f"{TMAC_MAX_ELEMS} elements")
        n_groups = k_pad // group_size
        n_super = 0
        if not is_super:
            if sub is not None or super_size != 0 or code_offset != 0:
                raise ValueError("F16 scales take no sub, super_size or code_offset (those are SUPER's)")
            co = 0.0
        else:
            if sub is None:
                raise ValueError("SUPER scales need the int8 sub-scales `sub`")
            super_size = _size("super_size", super_size, group_size, k_pad)
            if super_size % group_size or k_pad % super_size:
                raise ValueError(f"super_size={super_size} must be a multiple of group_size={group_size} "
                                 f"and divide k_pad={k_pad}")
            n_super = k_pad // super_size
            co = _float32_finite("code_offset", code_offset)
        tiles = m_pad // TMAC_TILE_ROWS
        # Python ints: these products must not wrap, whatever the shape claims
        expect_planes = tiles * (k_pad // 8) * bits * 64
        expect_scales = tiles * (n_super if is_super else n_groups) * records * 64
        expect_sub = tiles * n_groups * records * 64
        # sizes before the contiguous copies, so a wrong claim is refused before anything is allocated
        if np.size(planes) != expect_planes or np.size(scales) != expect_scales:
            raise ValueError(f"packed buffers have {np.size(planes)} / {np.size(scales)} elements, "
                             f"the shape needs {expect_planes} / {expect_scales}")
        if sub is not None and np.size(sub) != expect_sub:
            raise ValueError(f"sub-scale buffer has {np.size(sub)} elements, the shape needs {expect_sub}")
        ts = _float32_finite("tensor_scale", tensor_scale)
        if not (ts > 0 and np.float32(ts) > 0):
            raise ValueError(f"tensor_scale must be positive and finite, got {tensor_scale}")
        planes = np.ascontiguousarray(planes, dtype=np.uint8).reshape(-1)
        scales = np.ascontiguousarray(scales, dtype=np.uint16).reshape(-1)
        if planes.shape[0] != expect_planes or scales.shape[0] != expect_scales:
            raise ValueError(f"packed buffers have {planes.shape[0]} / {scales.shape[0]} elements, "
                             f"the shape needs {expect_planes} / {expect_scales}")
        cdef const int8_t[::1] bv
        if sub is not None:
            sub = np.ascontiguousarray(sub, dtype=np.int8).reshape(-1)
            if sub.shape[0] != expect_sub:
                raise ValueError(f"sub-scale buffer has {sub.shape[0]} elements, the shape needs {expect_sub}")
            bv = sub
            self.c.sub = &bv[0]
        else:
            self.c.sub = NULL
        self.planes = planes
        self.scales = scales
        self.sub = sub
        cdef const uint8_t[::1] pv = planes
        cdef const uint16_t[::1] sv = scales
        self.c.planes = &pv[0]
        self.c.scales = &sv[0]
        self.c.m, self.c.k, self.c.m_pad, self.c.k_pad = m, k, m_pad, k_pad
        self.c.bits, self.c.group_size, self.c.n_groups = bits, group_size, n_groups
        self.c.tensor_scale = ts
        self.c.scale_format, self.c.super_size, self.c.n_super = scale_format, super_size, n_super
        self.c.code_offset = co
        self.c.zero_mult = zero_mult
        # the C check every kernel call makes, once here: a weight that exists is usable
        if tmac_check_shapes(&self.c, k_pad, _act_group_of(group_size)) != TMAC_OK:
            raise ValueError(f"packed weight m={m} k={k} k_pad={k_pad} bits={bits} group_size={group_size} "
                             f"scale_format={scale_format} super_size={super_size} fails the kernels' shape check")

    @property
    def shape(self):
        return (self.c.m, self.c.k)

    @property
    def m(self): return self.c.m
    @property
    def k(self): return self.c.k
    @property
    def m_pad(self): return self.c.m_pad
    @property
    def k_pad(self): return self.c.k_pad
    @property
    def bits(self): return self.c.bits
    @property
    def group_size(self): return self.c.group_size
    @property
    def n_groups(self): return self.c.n_groups
    @property
    def tensor_scale(self): return self.c.tensor_scale
    @property
    def scale_format(self): return self.c.scale_format
    @property
    def super_size(self): return self.c.super_size
    @property
    def n_super(self): return self.c.n_super
    @property
    def code_offset(self): return self.c.code_offset
    @property
    def zero_mult(self): return self.c.zero_mult

    @property
    def act_group(self):
        """Activation-table group size this weight reads: min(64, group_size) (64 per row)."""
        return _act_group_of(self.c.group_size)

    @property
    def nbytes(self):
        return self.planes.nbytes + self.scales.nbytes + (0 if self.sub is None else self.sub.nbytes)

    def __reduce__(self):
        return (_rebuild_packed_weight, (self.planes, self.scales, self.c.m, self.c.k, self.c.k_pad, self.c.bits,
                                         self.c.group_size, self.c.tensor_scale, self.c.scale_format, self.sub,
                                         self.c.super_size, self.c.code_offset, self.c.zero_mult))

    def __repr__(self):
        fmt = (f", super_size={self.c.super_size}"
               if self.c.scale_format in (TMAC_SCALES_SUPER, TMAC_SCALES_SUPER_NOMIN) else "")
        if self.c.scale_format == TMAC_SCALES_F16_SYM:
            fmt += f", symmetric (zero_mult={self.c.zero_mult})"
        elif self.c.scale_format == TMAC_SCALES_SUPER_NOMIN:
            fmt += ", no mins"
        return (f"PackedWeight(m={self.c.m}, k={self.c.k}, bits={self.c.bits}, "
                f"group_size={self.c.group_size}{fmt}, {self.nbytes} bytes)")


def _rebuild_packed_weight(planes, scales, m, k, k_pad, bits, group_size, tensor_scale, scale_format, sub,
                           super_size, code_offset, zero_mult=0):
    """Unpickling: PackedWeight with its keyword-only arguments."""
    return PackedWeight(planes, scales, m, k, k_pad, bits, group_size, tensor_scale, scale_format=scale_format,
                        sub=sub, super_size=super_size, code_offset=code_offset, zero_mult=zero_mult)


cdef class ActivationTables:
    """16-entry int8 tables of one or more activation vectors (LAYOUT.md §Tables).
    Build once per input vector and reuse for every matrix that reads it."""

    def __cinit__(self, n, k_pad, act_group):
        n = _size("n", n, 1, TMAC_MAX_DIM)
        k_pad = _size("k_pad", k_pad, 1, TMAC_MAX_DIM)
        act_group = _size("act_group", act_group, 16, 64)
        if act_group not in (16, 32, 64) or k_pad % act_group:
            raise ValueError(f"bad table shape n={n} k_pad={k_pad} act_group={act_group}")
        if n * k_pad > TMAC_MAX_ELEMS:
            raise ValueError(f"tables for {n} x {k_pad} activations are larger than the kernels' limit of "
                             f"{TMAC_MAX_ELEMS} elements")
        self.n, self.k_pad, self.act_group = n, k_pad, act_group
        self.entries = np.empty((n, k_pad // 4, 16), dtype=np.int8)
        self.scales = np.empty((n, k_pad // act_group), dtype=np.float32)
        self.sums = np.empty((n, k_pad // act_group), dtype=np.float32)


def build_tables(x, act_group, tier=None):
    """Tables for x: float32 (n, k_pad), zero-padded by the caller."""
    cdef int isa_id = _isa_id(tier)
    shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"activations must be 2-D (n, k_pad), got shape {shape}")
    # sizes checked before the contiguous copy below can allocate anything
    cdef ActivationTables t = ActivationTables(shape[0], shape[1], act_group)
    cdef const float[:, ::1] xv = np.ascontiguousarray(x, dtype=np.float32)
    cdef int8_t[:, :, ::1] ev = t.entries
    cdef float[:, ::1] sv = t.scales
    cdef float[:, ::1] uv = t.sums
    cdef int rc
    with nogil:
        rc = tmac_lut_build(isa_id, &xv[0, 0], t.n, t.k_pad, t.act_group, &ev[0, 0, 0], &sv[0, 0], &uv[0, 0])
    if rc != TMAC_OK:
        _raise_for(rc, "table build")
    return t


def gemm_tables(PackedWeight w, ActivationTables t, tier=None, out=None):
    """y (n, m) = W @ x_i for each table set i. out: optional float32 (n, m) C-contiguous."""
    cdef int isa_id = _isa_id(tier)
    if t.k_pad != w.c.k_pad or tmac_check_shapes(&w.c, t.k_pad, t.act_group) != TMAC_OK:
        raise ValueError(f"tables (k_pad={t.k_pad}, act_group={t.act_group}) do not fit weight "
                         f"{w!r} (k_pad={w.c.k_pad})")
    if out is None:
        out = np.empty((t.n, w.c.m), dtype=np.float32)
    cdef float[:, ::1] yv = out
    if yv.shape[0] != t.n or yv.shape[1] != w.c.m:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(t.n, w.c.m)}")
    cdef const int8_t[:, :, ::1] ev = t.entries
    cdef const float[:, ::1] sv = t.scales
    cdef const float[:, ::1] uv = t.sums
    cdef int rc
    with nogil:
        rc = tmac_gemm(isa_id, &w.c, &ev[0, 0, 0], &sv[0, 0], &uv[0, 0], t.n, t.k_pad, t.act_group,
                       &yv[0, 0], w.c.m)
    if rc != TMAC_OK:
        _raise_for(rc, "gemm")
    return out


def time_gemv(PackedWeight w, x, int iters, tier=None):
    """Seconds per call of one full GEMV (table build + kernel) for x float32 (k_pad,),
    timed in C around each call so Python overhead stays out of benchmarks."""
    cdef int isa_id = _isa_id(tier)
    cdef const float[::1] xv = np.ascontiguousarray(x, dtype=np.float32)
    if xv.shape[0] != w.c.k_pad or iters < 1:
        raise ValueError(f"x must have k_pad={w.c.k_pad} elements and iters >= 1")
    cdef int ag = w.act_group
    cdef ActivationTables t = ActivationTables(1, w.c.k_pad, ag)
    cdef int8_t[:, :, ::1] ev = t.entries
    cdef float[:, ::1] sv = t.scales
    cdef float[:, ::1] uv = t.sums
    y = np.empty(w.c.m, dtype=np.float32)
    times = np.empty(iters, dtype=np.float64)
    cdef float[::1] yv = y
    cdef double[::1] tv = times
    cdef int i, rc = 0
    cdef double t0
    with nogil:
        for i in range(iters):
            t0 = tmac_now_seconds()
            rc = rc | tmac_lut_build(isa_id, &xv[0], 1, w.c.k_pad, ag, &ev[0, 0, 0], &sv[0, 0], &uv[0, 0])
            rc = rc | tmac_gemm(isa_id, &w.c, &ev[0, 0, 0], &sv[0, 0], &uv[0, 0], 1, w.c.k_pad, ag, &yv[0], w.c.m)
            tv[i] = tmac_now_seconds() - t0
    if rc != TMAC_OK:
        _raise_for(rc, "gemv")
    return times


def attention(q, k_cache, v_cache, pos, n_kv_heads, float scale, tier=None):
    """Causal grouped-query attention of n queries at positions pos..pos+n-1.
    q: float32 (n, n_heads, hd); k_cache, v_cache: uint16 fp16 bits (n_kv_heads, n_ctx, hd)
    holding positions 0..pos+n-1. Returns float32 (n, n_heads, hd)."""
    cdef int isa_id = _isa_id(tier)
    # sizes as Python ints, bounded, before any of them becomes a C int and
    # before the contiguous copies below can allocate anything
    q_shape, k_shape = np.shape(q), np.shape(k_cache)
    if len(q_shape) != 3 or len(k_shape) != 3 or k_shape != np.shape(v_cache):
        raise ValueError(f"q {q_shape} must be (n, n_heads, hd) and the caches {k_shape}, {np.shape(v_cache)} "
                         f"one (n_kv_heads, n_ctx, hd) shape")
    n_ctx = _size("n_ctx", k_shape[1], 1, TMAC_MAX_DIM)
    n_q = _size("query count", q_shape[0], 1, n_ctx)
    heads = _size("n_heads", q_shape[1], 1, TMAC_MAX_HEADS)
    head_dim = _size("head_dim", q_shape[2], 1, TMAC_ATTN_MAX_HEAD_DIM)
    kv_heads = _size("n_kv_heads", n_kv_heads, 1, heads)
    if k_shape[0] != kv_heads or k_shape[2] != head_dim:
        raise ValueError(f"caches {k_shape} do not fit {kv_heads} KV heads of {head_dim}")
    if heads % kv_heads or heads // kv_heads > TMAC_ATTN_MAX_GROUP:
        raise ValueError(f"{heads} query heads do not share {kv_heads} KV heads in groups of at most "
                         f"{TMAC_ATTN_MAX_GROUP}")
    pos = _size("pos", pos, 0, n_ctx - n_q)
    cdef const float[:, :, ::1] qv = np.ascontiguousarray(q, dtype=np.float32)
    cdef const uint16_t[:, :, ::1] kv = np.ascontiguousarray(k_cache, dtype=np.uint16)
    cdef const uint16_t[:, :, ::1] vv = np.ascontiguousarray(v_cache, dtype=np.uint16)
    cdef int n = n_q, n_heads = heads, hd = head_dim, n_kv = kv_heads, c_pos = pos, c_ctx = n_ctx
    out = np.empty((n, n_heads, hd), dtype=np.float32)
    cdef float[:, :, ::1] ov = out
    cdef int rc
    with nogil:
        rc = tmac_attention(isa_id, &qv[0, 0, 0], n, c_pos, n_heads, n_kv, hd, &kv[0, 0, 0], &vv[0, 0, 0],
                            c_ctx, scale, &ov[0, 0, 0])
    if rc != TMAC_OK:
        _raise_for(rc, "attention")
    return out


def to_fp16(x):
    """float32 -> fp16 bits (uint16), rounded as the KV cache rounds them."""
    cdef const float[::1] xv = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(xv.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] ov = out
    cdef Py_ssize_t i = 0, total = xv.shape[0]
    with nogil:
        while i < total:
            tmac_fp32_to_fp16_row(&xv[i], &ov[i],
                                  <int>(total - i if total - i < ELEMENTWISE_CHUNK else ELEMENTWISE_CHUNK))
            i += ELEMENTWISE_CHUNK
    return out.reshape(np.shape(x))


def swiglu(gate, up, tier=None):
    """silu(gate) * up, elementwise, as the forward pass computes it (float32)."""
    cdef int isa_id = _isa_id(tier)
    out = np.array(gate, dtype=np.float32, order="C", copy=True)
    cdef const float[::1] uv = np.ascontiguousarray(up, dtype=np.float32).reshape(-1)
    if out.shape != np.shape(up):
        raise ValueError(f"gate {out.shape} and up {np.shape(up)} differ in shape")
    cdef float[::1] gv = out.reshape(-1)
    cdef int rc = TMAC_OK
    cdef Py_ssize_t i = 0, total = gv.shape[0]
    with nogil:
        while i < total:
            rc = rc | tmac_swiglu(isa_id, &gv[i], &uv[i],
                                  <int>(total - i if total - i < ELEMENTWISE_CHUNK else ELEMENTWISE_CHUNK))
            i += ELEMENTWISE_CHUNK
    if rc != TMAC_OK:
        _raise_for(rc, "swiglu")
    return out


def weight_row(PackedWeight w, int row):
    """Row `row` of a packed matrix as float32 (K,), read by tmac_weight_row_f32 as the
    runtime reads its embedding table (layout.py's dequantize is the reference)."""
    if row < 0 or row >= w.c.m:
        raise ValueError(f"row must lie in [0, {w.c.m}), got {row}")
    out = np.empty(w.c.k, dtype=np.float32)
    cdef float[::1] ov = out
    with nogil:
        tmac_weight_row_f32(&w.c, row, &ov[0])
    return out


ATTN_BLOCK = TMAC_ATTN_BLOCK


cdef int k_active_isa() noexcept nogil:
    return tmac_active_isa()


cdef int k_lut_build(int tier, const float *x, int n, int k_pad, int act_group,
                     int8_t *entries, float *scales, float *sums) noexcept nogil:
    return tmac_lut_build(tier, x, n, k_pad, act_group, entries, scales, sums)


cdef int k_gemm_multi(int tier, int n_w, const tmac_weight_t *const *w, const int8_t *entries,
                      const float *scales, const float *sums, int n, int k_pad, int act_group,
                      float *const *y, const int *ldy) noexcept nogil:
    return tmac_gemm_multi(tier, n_w, w, entries, scales, sums, n, k_pad, act_group, y, ldy)


cdef int k_attention(int tier, const float *q, int n, int pos, int n_heads, int n_kv_heads, int hd,
                     const uint16_t *k_cache, const uint16_t *v_cache, int n_ctx, float scale,
                     float *out) noexcept nogil:
    return tmac_attention(tier, q, n, pos, n_heads, n_kv_heads, hd, k_cache, v_cache, n_ctx, scale, out)


cdef void k_fp32_to_fp16_row(const float *x, uint16_t *out, int n) noexcept nogil:
    tmac_fp32_to_fp16_row(x, out, n)


cdef int k_swiglu(int tier, float *gate, const float *up, int n) noexcept nogil:
    return tmac_swiglu(tier, gate, up, n)


cdef const tmac_weight_t *k_weight(PackedWeight w) noexcept:
    return &w.c


cdef double k_now() noexcept nogil:
    return tmac_now_seconds()
