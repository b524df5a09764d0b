# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Llama-family forward pass (llama, mistral, qwen2, bitnet) on the LUT kernels.

llama2.c-shaped and read top to bottom: embedding row, then per layer
RMSNorm -> Q/K/V (one shared activation table) -> RoPE -> grouped-query
attention over the KV cache -> [sub-norm] -> output projection -> RMSNorm ->
gate/up (one shared table) -> SwiGLU or relu² -> [sub-norm] -> down; then the
final norm and the output layer. BitNet's flags (ModelConfig.sub_norms,
ffn_act "relu2", act_quant "int8_token") switch on the bracketed steps and the
per-token int8 quantization of every block matmul's input (BitLinear).
A call processes a chunk of up to `max_batch` tokens (the GEMM path for
prompts, n = 1 for decode) entirely in C with the GIL released; matrix
multiplies and attention (fp16 KV cache, tmac_attention) run on the kernel
thread pool. No Qt.
"""
from libc.math cimport fabsf, fmaxf, rintf, sqrtf
from libc.stdint cimport int8_t, int32_t, uint16_t

import mmap

import numpy as np

from tmac_core.errors import KernelError, ModelLoadError, UnsupportedModelError
from tmac_core.kernels._kernels cimport (
    PackedWeight, k_active_isa, k_attention, k_fp32_to_fp16_row, k_gemm_multi, k_lut_build, k_now, k_swiglu,
    k_weight, tmac_weight_row_f32, tmac_weight_t,
)
from tmac_core.kernels._kernels import MAX_DIM as _MAX_DIM, MAX_ELEMS as _MAX_ELEMS
from tmac_core.plan import input_perm_name, tensor_plan, vector_plan

INT_MAX = 2**31 - 1  # forward_chunk's loops index the scratch buffers with C int
MAX_BATCH = 4096     # tokens per forward call (the engine uses 32)
_DIMS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size")
# The forward pass's phases as set_profiling times them, in the order a layer runs them. A
# matmul phase holds its matrices' table builds, kernel calls (the pool's included) and, for
# BitLinear inputs, the int8 step; "attention" RoPE, the KV cache writes and tmac_attention;
# "other" the embedding row, norms, residual adds and the feed-forward activation.
PHASES = ("qkv", "attention", "attn_output", "gate_up", "down", "output", "other")
cdef enum:                          # indices into LlamaRuntime.phase_s, as in PHASES
    PH_QKV, PH_ATTN, PH_O, PH_GATE_UP, PH_DOWN, PH_OUT, PH_OTHER, N_PHASES


def checked_sizes(cfg, n_ctx, max_batch):
    """Element counts of every buffer the runtime allocates, computed in Python ints
    (no overflow) and each checked against what the C code can index.

    Raises UnsupportedModelError naming the first dimension or buffer out of range
    (a model file that would overflow an index is refused, not run), ValueError for
    an n_ctx or max_batch out of range.
    """
    for name in _DIMS:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIM:
            raise UnsupportedModelError(f"{name} = {value!r} is outside [1, {_MAX_DIM}]")
    for name, value, high in (("n_ctx", n_ctx, _MAX_DIM), ("max_batch", max_batch, MAX_BATCH)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ValueError(f"{name} must be an integer in [1, {high}], got {value!r}")
    if cfg.n_heads % cfg.n_kv_heads or cfg.head_dim % 2:
        raise UnsupportedModelError(f"{cfg.n_heads} heads over {cfg.n_kv_heads} KV heads of size {cfg.head_dim}")
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    k_max = max(cfg.dim, cfg.hidden_dim, q_dim)
    sizes = {
        "the KV cache (per K and V)": cfg.n_layers * n_ctx * kv_dim,   # indexed with size_t
        "the RoPE table": n_ctx * (cfg.head_dim // 2),
        "the residual stream": max_batch * cfg.dim,
        "the query scratch": max_batch * q_dim,
        "the key/value scratch": max_batch * kv_dim,
        "the feed-forward scratch": max_batch * cfg.hidden_dim,
        "the logits": max_batch * cfg.vocab_size,
        "the activation tables": max_batch * (k_max // 4) * 16,
    }
    if cfg.act_quant == "int8_token":
        # exact mode: each token's int8 input as two rows of exact tables (_exact_tables)
        sizes["the activation tables"] *= 2
        sizes["the split outputs"] = 2 * max_batch * max(q_dim + 2 * kv_dim, 2 * cfg.hidden_dim, cfg.dim)
        sizes["the output layer's split outputs"] = 3 * cfg.vocab_size  # precise_head: 3 rows
    for name, n in sizes.items():
        limit = _MAX_ELEMS if name.startswith("the KV cache") else INT_MAX
        if n > limit:
            raise UnsupportedModelError(f"{name} would hold {n} elements, more than the runtime's limit of {limit}")
    return sizes


cdef struct Layer:
    const float *attn_norm      # (dim,)
    const float *ffn_norm       # (dim,)
    const float *attn_sub_norm  # (q_dim,) or NULL (ModelConfig.sub_norms)
    const float *ffn_sub_norm   # (hidden_dim,) or NULL
    const float *bq             # (q_dim,) or NULL (ModelConfig.qkv_bias)
    const float *bk             # (kv_dim,) or NULL
    const float *bv             # (kv_dim,) or NULL
    const tmac_weight_t *wq     # (q_dim, dim)
    const tmac_weight_t *wk     # (kv_dim, dim)
    const tmac_weight_t *wv     # (kv_dim, dim)
    const tmac_weight_t *wo     # (dim, q_dim)
    const tmac_weight_t *w_gate # (hidden_dim, dim)
    const tmac_weight_t *w_up   # (hidden_dim, dim)
    const tmac_weight_t *w_down # (dim, hidden_dim)
    int act_group_in, act_group_o, act_group_down   # activation-table group of each input (32 or 64)


cdef struct InputPerms:
    # act-order GPTQ: a matrix's kernel column i reads input channel perm[i] (int32 (K,)); NULL:
    # in order. Matrices reading one input share a pointer exactly when their perms are equal.
    const int32_t *q
    const int32_t *k
    const int32_t *v
    const int32_t *o
    const int32_t *gate
    const int32_t *up
    const int32_t *down


def input_perms(cfg, weights):
    """{(role, layer): int32 (cols,) permutation} of the act-order matrices, from the loader's
    Weights entries under plan.input_perm_name; each checked to be a permutation of its matrix's
    columns (the gather indexes with it), identity ones dropped, equal ones of a layer the same array."""
    out = {}
    for spec in tensor_plan(cfg, 4):
        raw = weights.get(input_perm_name(spec.name))
        if raw is None or spec.layer < 0:
            continue
        perm = np.ascontiguousarray(raw, dtype=np.int32)
        if (perm.shape != (spec.cols,) or not np.array_equal(np.asarray(raw), perm)
                or not np.array_equal(np.sort(perm), np.arange(spec.cols, dtype=np.int32))):
            raise ModelLoadError(f"{input_perm_name(spec.name)}: expected a permutation of {spec.cols} columns")
        if np.array_equal(perm, np.arange(spec.cols, dtype=np.int32)):
            continue
        same = [p for (role, layer), p in out.items() if layer == spec.layer and np.array_equal(p, perm)]
        out[spec.role, spec.layer] = same[0] if same else perm
    return out


cdef const int32_t *_perm(dict perms, str role, int layer) except? NULL:
    """The data of perms[role, layer] (kept alive by the runtime), NULL when the matrix has none."""
    cdef const int32_t[::1] pv
    if (role, layer) not in perms:
        return NULL
    pv = perms[role, layer]
    return &pv[0]


cdef inline void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) noexcept nogil:
    cdef double ss = 0.0
    cdef int i
    for i in range(n):
        ss = ss + x[i] * x[i]
    cdef float inv = 1.0 / sqrtf(<float>(ss / n) + eps)
    for i in range(n):
        out[i] = x[i] * inv * weight[i]


cdef inline void relu2_glu(float *gate, const float *up, Py_ssize_t n) noexcept nogil:
    """gate = relu(gate)² · up (BitNet b1.58's feed-forward: transformers ACT2FN["relu2"])."""
    cdef Py_ssize_t i
    cdef float g
    for i in range(n):
        g = gate[i] if gate[i] > 0 else 0.0
        gate[i] = g * g * up[i]


cdef inline float absmax_int8(const float *x, int k, float *q) noexcept nogil:
    """q (k,) = clamp(round_half_even(x · s), −128, 127) with s = 127 / max(|x|, 1e-5),
    BitNet's per-token activation quantization (transformers ActQuant, bitnet.cpp
    I2_S); returns s. rintf rounds half to even in the default rounding mode."""
    cdef float m = 0.0, v
    cdef int i
    for i in range(k):
        m = fmaxf(m, fabsf(x[i]))
    cdef float s = 127.0 / fmaxf(m, 1e-5)
    for i in range(k):
        v = rintf(x[i] * s)
        q[i] = -128.0 if v < -128.0 else (127.0 if v > 127.0 else v)
    return s


cdef inline void exact_tables(const float *q, int k, int ag, int8_t *hi_entries, float *hi_scales,
                              float *hi_sums, int8_t *lo_entries, float *lo_scales, float *lo_sums) noexcept nogil:
    """Activation tables (kernels/LAYOUT.md §Tables) of one int8 row q (k,), split as
    q = 32·hi + lo (hi in [−4, 4], lo in [−16, 15]) so that every entry, a signed sum
    of four values, is an exact integer within ±127 (±16 and ±64): scale 1, no
    rounding, and the kernel's int16/fp32 accumulation of them is exact. The whole
    int8 range would need ±512, which no single int8 table holds without rounding."""
    cdef int g, j, idx, a
    cdef int hv[4]
    cdef int lv[4]
    cdef int th, tl, sh = 0, sl = 0, qi
    for g in range(k // 4):
        for j in range(4):
            qi = <int>q[4 * g + j]
            hv[j] = (qi + 16) >> 5            # arithmetic shift: floor((q + 16) / 32)
            lv[j] = qi - 32 * hv[j]
            sh += hv[j]
            sl += lv[j]
        for idx in range(16):
            th = 0
            tl = 0
            for j in range(4):
                if (idx >> j) & 1:
                    th += hv[j]
                    tl += lv[j]
                else:
                    th -= hv[j]
                    tl -= lv[j]
            hi_entries[16 * g + idx] = <int8_t>th
            lo_entries[16 * g + idx] = <int8_t>tl
        if (4 * g + 4) % ag == 0:             # the group's scale and sum (exact integers in fp32)
            a = (4 * g) // ag
            hi_scales[a] = 1.0
            lo_scales[a] = 1.0
            hi_sums[a] = sh
            lo_sums[a] = sl
            sh = 0
            sl = 0


cdef inline void rope(float *v, int n_heads, int hd, const float *cos_row, const float *sin_row,
                      bint neox) noexcept nogil:
    """Rotate each head's pairs: (2i, 2i+1) (rope_style "interleaved"), or (i, i + hd/2) ("neox")."""
    cdef int h, i, a, b
    cdef float x0, x1
    for h in range(n_heads):
        for i in range(hd // 2):
            a = h * hd + (i if neox else 2 * i)
            b = a + (hd // 2 if neox else 1)
            x0 = v[a]
            x1 = v[b]
            v[a] = x0 * cos_row[i] - x1 * sin_row[i]
            v[b] = x0 * sin_row[i] + x1 * cos_row[i]


cdef class LlamaRuntime:
    """Weights, KV cache and scratch of one loaded model; `forward` runs a chunk."""
    cdef int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, q_dim, kv_dim
    cdef int vocab_size, n_ctx, max_batch, act_group_out, k_max
    cdef float eps
    cdef bint neox, relu2, act_int8, exact
    cdef Layer *layers
    cdef const tmac_weight_t *embedding
    cdef const tmac_weight_t *output
    cdef const float *output_norm
    cdef float *rope_cos
    cdef float *rope_sin
    cdef uint16_t *k_cache          # (n_layers, n_kv_heads, n_ctx, head_dim) fp16
    cdef uint16_t *v_cache          # same
    cdef float *x                   # (max_batch, dim) residual stream
    cdef float *xb                  # (max_batch, dim) normed input of a block
    cdef float *xb2                 # (max_batch, dim) a block's output before the residual add
    cdef float *q                   # (max_batch, q_dim)
    cdef float *k                   # (max_batch, kv_dim)
    cdef float *v                   # (max_batch, kv_dim)
    cdef float *attn_out            # (max_batch, q_dim) attention output, input of attn_output
    cdef float *hb                  # (max_batch, hidden_dim) gate, then silu(gate) * up
    cdef float *hb2                 # (max_batch, hidden_dim) up
    cdef float *logits              # (max_batch, vocab_size)
    cdef InputPerms *perms          # (n_layers,)
    cdef float *x_perm              # (max_batch, max K) an input gathered by a perm
    cdef object _perms_buf
    cdef int8_t *lut_entries
    cdef float *lut_scales
    cdef float *lut_sums
    cdef float *act_q               # (max_batch, k_max) int8 values of a BitLinear input, as floats
    cdef float *act_s               # (max_batch,) their per-token scales s (x ≈ q / s)
    cdef float *y_split             # (2·max_batch, sum of a shared matmul's rows) exact mode's outputs
    cdef float *act_r               # (k_max,) precise_head: one token's input minus its int8 part
    cdef float *y_head              # (3, vocab_size) precise_head: the three rows' outputs
    cdef object _keep
    cdef bint profiling             # set_profiling: forward_chunk adds each phase's time to phase_s
    cdef double phase_s[N_PHASES]   # seconds per PHASES entry since profiling was switched on
    cdef long long profiled_tokens  # tokens forward_chunk ran while profiling
    cdef object _phase_bytes        # {phase: bytes of the matrices it reads per token}
    cdef object _layers_buf
    cdef readonly object logits_array

    def __init__(self, cfg, weights, n_ctx, max_batch=32, exact_activations=False):
        """cfg: tmac_core.plan.ModelConfig; weights: dict of PackedWeight (matrices)
        and float32 arrays (norms, biases) under the names tmac_core.plan lists.

        exact_activations (act_quant "int8_token" models only): build each BitLinear's
        tables from its int8 input without rounding (exact_tables), so every integer
        dot product Σ q_x·(q_w − 1) is exact; costs a two-row GEMM per matmul. The
        output layer, whose input is float, then reads it as int8 part (exact) plus
        remainder (tables): ~16-bit activations there (precise_head). Off: the int8
        input goes through the ordinary table quantization (one rounding of each
        4-term sum to 127 levels per group), and the output layer's float input too.

        Every size is checked (checked_sizes) before a buffer is made, and every weight
        against the plan before a pointer into it is taken: ModelLoadError names a
        weight that does not fit, UnsupportedModelError a size out of range."""
        if cfg.ffn_act not in ("silu", "relu2") or cfg.act_quant not in ("none", "int8_token"):
            raise UnsupportedModelError(f"the forward pass has no {cfg.ffn_act!r} feed-forward"
                                        f" or {cfg.act_quant!r} activation quantization")
        if exact_activations and cfg.act_quant != "int8_token":
            raise ValueError("exact_activations needs a model whose activations are int8 (act_quant)")
        checked_sizes(cfg, n_ctx, max_batch)
        self.relu2, self.act_int8 = cfg.ffn_act == "relu2", cfg.act_quant == "int8_token"
        self.exact = bool(exact_activations)
        self.dim, self.hidden_dim, self.n_layers = cfg.dim, cfg.hidden_dim, cfg.n_layers
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_dim, self.kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.vocab_size, self.eps, self.neox = cfg.vocab_size, cfg.norm_eps, cfg.rope_style == "neox"
        self.n_ctx, self.max_batch = n_ctx, max_batch
        keep = []

        def mat(spec):
            w = weights[spec.name]
            if not isinstance(w, PackedWeight) or w.shape != (spec.rows, spec.cols) or w.k_pad != spec.cols:
                raise ModelLoadError(f"{spec.name}: expected a packed ({spec.rows}, {spec.cols}) matrix, got {w!r}")
            keep.append(w)
            return w

        def vec(spec):
            a = np.ascontiguousarray(weights[spec.name], dtype=np.float32).reshape(-1)
            if a.shape[0] != spec.size:
                raise ModelLoadError(f"{spec.name}: expected {spec.size} floats, got {a.shape[0]}")
            keep.append(a)
            return a

        cdef float[::1] fv
        self._layers_buf = bytearray(sizeof(Layer) * self.n_layers)
        cdef unsigned char[::1] lbuf = self._layers_buf
        self.layers = <Layer *>&lbuf[0]
        cdef Layer *L
        for l in range(self.n_layers):
            L = &self.layers[l]
            L.bq = L.bk = L.bv = NULL
            L.attn_sub_norm = L.ffn_sub_norm = NULL
        # Names and shapes from the plan; the bits and groups each matrix was packed with
        # are the loader's (checked against the plan there) and travel in its PackedWeight.
        matrices = {}
        for spec in tensor_plan(cfg, 4):
            if spec.layer < 0:
                matrices[spec.role] = mat(spec)
            else:
                matrices[spec.role, spec.layer] = mat(spec)
        for spec in vector_plan(cfg):
            if spec.role == "rope_freqs":           # folded into rope.inv_freq by the loader
                continue
            fv = vec(spec)
            if spec.role == "output_norm":
                self.output_norm = &fv[0]
                continue
            L = &self.layers[spec.layer]
            if spec.role == "attn_norm":
                L.attn_norm = &fv[0]
            elif spec.role == "ffn_norm":
                L.ffn_norm = &fv[0]
            elif spec.role == "attn_q_bias":
                L.bq = &fv[0]
            elif spec.role == "attn_k_bias":
                L.bk = &fv[0]
            elif spec.role == "attn_v_bias":
                L.bv = &fv[0]
            elif spec.role == "attn_sub_norm":
                L.attn_sub_norm = &fv[0]
            elif spec.role == "ffn_sub_norm":
                L.ffn_sub_norm = &fv[0]
        for l in range(self.n_layers):
            L = &self.layers[l]
            wq, wk, wv = matrices["attn_q", l], matrices["attn_k", l], matrices["attn_v", l]
            wo, wd = matrices["attn_output", l], matrices["ffn_down", l]
            wg, wu = matrices["ffn_gate", l], matrices["ffn_up", l]
            L.wq, L.wk, L.wv, L.wo = k_weight(wq), k_weight(wk), k_weight(wv), k_weight(wo)
            L.w_gate, L.w_up, L.w_down = k_weight(wg), k_weight(wu), k_weight(wd)
            # one table per input vector, fine enough for every matrix that reads it
            L.act_group_in = min(w.act_group for w in (wq, wk, wv, wg, wu))
            L.act_group_o, L.act_group_down = wo.act_group, wd.act_group
            # <=2-bit layers: attention outputs and SwiGLU products carry outlier
            # channels, and a 32-wide table scale keeps one from flattening 63
            # neighbours (2-bit SmolLM2 top-1 agreement 84% -> 90% of the float pass)
            if wo.bits <= 2 and not self.act_int8:   # int8 inputs have no such outliers left
                L.act_group_o = 32
            if wd.bits <= 2 and not self.act_int8:
                L.act_group_down = 32
        self._set_input_perms(cfg, weights, keep)
        emb = matrices["token_embd"]
        out = emb if cfg.tie_embeddings else matrices["output"]
        self.embedding, self.output, self.act_group_out = k_weight(emb), k_weight(out), out.act_group
        roles = {"qkv": ("attn_q", "attn_k", "attn_v"), "attn_output": ("attn_output",),
                 "gate_up": ("ffn_gate", "ffn_up"), "down": ("ffn_down",)}
        self._phase_bytes = {ph: sum(matrices[r, l].nbytes for r in rs for l in range(self.n_layers))
                             for ph, rs in roles.items()}
        self._phase_bytes["output"] = out.nbytes   # a tied embedding is read once per token, here
        self.profiling, self.profiled_tokens = False, 0

        # RoPE table (n_ctx, head_dim/2) from the inverse frequencies (scaling already applied);
        # forward_chunk reads row pos of it for every position < n_ctx
        inv_freq = np.asarray(weights["rope.inv_freq"], dtype=np.float64).reshape(-1)
        if inv_freq.shape != (self.head_dim // 2,) or not np.isfinite(inv_freq).all():
            raise ModelLoadError(f"rope.inv_freq: expected {self.head_dim // 2} finite frequencies,"
                                 f" got {inv_freq.shape[0]}")
        angles = np.arange(n_ctx, dtype=np.float64)[:, None] * inv_freq[None, :]
        cos_t = np.ascontiguousarray(np.cos(angles), dtype=np.float32)
        sin_t = np.ascontiguousarray(np.sin(angles), dtype=np.float32)
        if cos_t.shape != (n_ctx, self.head_dim // 2) or sin_t.shape != cos_t.shape:
            raise ModelLoadError(f"RoPE table is {cos_t.shape}, expected ({n_ctx}, {self.head_dim // 2})")
        keep += [cos_t, sin_t]
        fv = cos_t.reshape(-1); self.rope_cos = &fv[0]
        fv = sin_t.reshape(-1); self.rope_sin = &fv[0]

        def buf(*shape, dtype=np.float32):
            a = np.zeros(shape, dtype=dtype)
            keep.append(a)
            return a

        def lazy_zeros(n):
            """n fp16 zeros in an anonymous mapping: pages become resident only as
            positions are written. numpy would advise transparent huge pages for a
            large array, and then a few positions per layer fault in 2 MB each, so a
            4096-token cache is fully resident after ~200 tokens."""
            try:
                area = mmap.mmap(-1, max(n, 1) * 2)
            except (OSError, OverflowError) as e:
                raise ModelLoadError(f"cannot reserve {n * 2} bytes for the KV cache: {e}") from None
            a = np.frombuffer(area, dtype=np.uint16, count=n)
            keep.append(area)
            return a

        # fp16 K/V (as llama.cpp keeps them): half the bytes attention streams per
        # token; each (layer, KV head) is contiguous so a block of positions is one read
        cdef uint16_t[::1] hv
        hv = lazy_zeros(self.n_layers * n_ctx * self.kv_dim); self.k_cache = &hv[0]
        hv = lazy_zeros(self.n_layers * n_ctx * self.kv_dim); self.v_cache = &hv[0]
        B = max_batch
        k_max = max(self.dim, self.hidden_dim, self.q_dim)
        self.k_max = k_max
        fv = buf(B * self.dim); self.x = &fv[0]
        fv = buf(B * self.dim); self.xb = &fv[0]
        fv = buf(B * self.dim); self.xb2 = &fv[0]
        fv = buf(B * self.q_dim); self.q = &fv[0]
        fv = buf(B * self.kv_dim); self.k = &fv[0]
        fv = buf(B * self.kv_dim); self.v = &fv[0]
        fv = buf(B * self.q_dim); self.attn_out = &fv[0]
        fv = buf(B * self.hidden_dim); self.hb = &fv[0]
        fv = buf(B * self.hidden_dim); self.hb2 = &fv[0]
        fv = buf(B * k_max); self.x_perm = &fv[0]
        self.logits_array = buf(B, self.vocab_size)
        fv = self.logits_array.reshape(-1); self.logits = &fv[0]
        T = max(2 * B, 3) if self.act_int8 else B   # exact mode: two table rows per token
        cdef int8_t[::1] ev = buf(T * (k_max // 4) * 16, dtype=np.int8)
        self.lut_entries = &ev[0]
        # one table scale and sum per act group of 16 activations, the smallest (layout v2: G=16 weights)
        fv = buf(T * (k_max // 16)); self.lut_scales = &fv[0]
        fv = buf(T * (k_max // 16)); self.lut_sums = &fv[0]
        self.act_q = self.act_s = self.y_split = self.act_r = self.y_head = NULL
        if self.act_int8:
            fv = buf(B * k_max); self.act_q = &fv[0]
            fv = buf(B); self.act_s = &fv[0]
            fv = buf(2 * B * max(self.q_dim + 2 * self.kv_dim, 2 * self.hidden_dim, self.dim))
            self.y_split = &fv[0]
            fv = buf(k_max); self.act_r = &fv[0]
            fv = buf(3 * self.vocab_size); self.y_head = &fv[0]
        self._keep = keep

    def _set_input_perms(self, cfg, weights, keep):
        """self.perms from the loader's act-order permutations (input_perms)."""
        perms = input_perms(cfg, weights)
        keep.extend(perms.values())
        self._perms_buf = bytearray(sizeof(InputPerms) * self.n_layers)
        cdef unsigned char[::1] pbuf = self._perms_buf
        self.perms = <InputPerms *>&pbuf[0]
        cdef InputPerms *P
        for l in range(self.n_layers):
            P = &self.perms[l]
            P.q, P.k, P.v = _perm(perms, "attn_q", l), _perm(perms, "attn_k", l), _perm(perms, "attn_v", l)
            P.o, P.down = _perm(perms, "attn_output", l), _perm(perms, "ffn_down", l)
            P.gate, P.up = _perm(perms, "ffn_gate", l), _perm(perms, "ffn_up", l)

    def embedding_row(self, int token):
        """The fp32 embedding of one token, as the forward pass reads it."""
        if token < 0 or token >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        out = np.empty(self.dim, dtype=np.float32)
        cdef float[::1] ov = out
        self.embed(token, &ov[0])
        return out

    def block_matmul(self, int layer, str role, x):
        """y (n, rows) = x (n, cols) @ W.T for one block matrix (role: a MATRIX_ROLES name),
        computed as the forward pass computes it: the BitLinear path (int8 input, exact
        or table-quantized) for act_quant models. For tests of the arithmetic."""
        roles = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
        if not 0 <= layer < self.n_layers or role not in roles:
            raise ValueError(f"no matrix {role!r} in layer {layer}")
        cdef Layer *L = &self.layers[layer]
        cdef const tmac_weight_t *w = NULL
        cdef int ag = L.act_group_in
        i = roles.index(role)
        if i == 0: w = L.wq
        elif i == 1: w = L.wk
        elif i == 2: w = L.wv
        elif i == 3: w, ag = L.wo, L.act_group_o
        elif i == 4: w = L.w_gate
        elif i == 5: w = L.w_up
        else: w, ag = L.w_down, L.act_group_down
        cdef const float[:, ::1] xv = np.ascontiguousarray(x, dtype=np.float32)
        if xv.shape[1] != w.k or not 1 <= xv.shape[0] <= self.max_batch:
            raise ValueError(f"x must be (1..{self.max_batch}, {w.k}), got {tuple(np.shape(x))}")
        out = np.empty((xv.shape[0], w.m), dtype=np.float32)
        cdef float[:, ::1] ov = out
        cdef int n = <int>xv.shape[0], k = w.k, rc
        with nogil:
            rc = self.matmul(w, &xv[0, 0], n, k, ag, &ov[0, 0], True)
        if rc != 0:
            raise KernelError(f"matmul failed (code {rc})")
        return out

    def set_profiling(self, bint on):
        """Time every phase of the forward pass (PHASES) from the next call on, from zero
        (on), or stop (off: the counts stay readable). Two clock reads per phase and layer;
        the arithmetic, and so every logit, is the same either way."""
        cdef int i
        if on:
            for i in range(N_PHASES):
                self.phase_s[i] = 0.0
            self.profiled_tokens = 0
        self.profiling = on

    def phase_profile(self):
        """(seconds per phase, bytes of the matrices each phase reads per token, tokens run)
        since set_profiling(True); phases as in PHASES."""
        seconds = {name: self.phase_s[i] for i, name in enumerate(PHASES)}
        return seconds, {name: self._phase_bytes.get(name, 0) for name in PHASES}, self.profiled_tokens

    cdef double mark(self, double since, int phase) noexcept nogil:
        """Profiling: add now - since to `phase` (phase < 0: start only) and return now;
        not profiling: 0.0, no clock read."""
        cdef double now
        if not self.profiling:
            return 0.0
        now = k_now()
        if phase >= 0:
            self.phase_s[phase] += now - since
        return now

    cdef void embed(self, int token, float *out) noexcept nogil:
        """out (dim,) = the token's embedding row."""
        tmac_weight_row_f32(self.embedding, token, out)

    cdef int matmul(self, const tmac_weight_t *w, const float *x, int n, int k, int ag, float *y,
                    bint bitlinear) noexcept nogil:
        """y (n, w.m) = x (n, k) @ W.T."""
        cdef int ld = w.m
        return self.matmul_shared(1, &w, &y, &ld, x, n, k, ag, bitlinear)

    cdef int matmul_shared(self, int n_w, const tmac_weight_t **ws, float **ys, int *ldys, const float *x,
                           int n, int k, int ag, bint bitlinear) noexcept nogil:
        """ys[i] (n, ws[i].m) = x (n, k) @ ws[i].T for matrices reading the same input:
        one table build and one pool call for all of them. bitlinear: a block matmul,
        whose input a model with act_quant "int8_token" quantizes per token first."""
        cdef int tier = k_active_isa()
        cdef int rc, t, i, j, m, off
        cdef size_t groups = <size_t>(k // ag), kq = <size_t>(k // 4) * 16
        cdef float *y
        cdef const float *yh
        cdef const float *yl
        cdef float *split_ys[3]
        cdef int split_ld[3]
        if not (bitlinear and self.act_int8):
            rc = k_lut_build(tier, x, n, k, ag, self.lut_entries, self.lut_scales, self.lut_sums)
            if rc == 0:
                rc = k_gemm_multi(tier, n_w, ws, self.lut_entries, self.lut_scales, self.lut_sums, n, k, ag, ys, ldys)
            return rc
        for t in range(n):
            self.act_s[t] = absmax_int8(x + <size_t>t * k, k, self.act_q + <size_t>t * k)
        if not self.exact:
            rc = k_lut_build(tier, self.act_q, n, k, ag, self.lut_entries, self.lut_scales, self.lut_sums)
            if rc == 0:
                rc = k_gemm_multi(tier, n_w, ws, self.lut_entries, self.lut_scales, self.lut_sums, n, k, ag, ys, ldys)
            for i in range(n_w):
                m = ws[i].m
                for t in range(n):
                    y = ys[i] + <size_t>t * ldys[i]
                    for j in range(m):
                        y[j] = y[j] / self.act_s[t]
            return rc
        # exact: rows 0..n-1 of the tables hold the high parts, rows n..2n-1 the low parts
        for t in range(n):
            exact_tables(self.act_q + <size_t>t * k, k, ag,
                         self.lut_entries + t * kq, self.lut_scales + t * groups, self.lut_sums + t * groups,
                         self.lut_entries + (n + t) * kq, self.lut_scales + (n + t) * groups,
                         self.lut_sums + (n + t) * groups)
        off = 0
        for i in range(n_w):
            split_ys[i] = self.y_split + off
            split_ld[i] = ws[i].m
            off += 2 * n * ws[i].m
        rc = k_gemm_multi(tier, n_w, ws, self.lut_entries, self.lut_scales, self.lut_sums, 2 * n, k, ag,
                          split_ys, split_ld)
        for i in range(n_w):
            m = ws[i].m
            for t in range(n):
                y = ys[i] + <size_t>t * ldys[i]
                yh = split_ys[i] + <size_t>t * m
                yl = split_ys[i] + <size_t>(n + t) * m
                for j in range(m):
                    y[j] = (32.0 * yh[j] + yl[j]) / self.act_s[t]
        return rc

    cdef int precise_head(self, const tmac_weight_t *w, float *y, const float *x, int n, int k,
                          int ag) noexcept nogil:
        """y (n, w.m) = x (n, k) @ w.T for the output layer in exact mode: each token's
        float x = q/s + r with q its absmax int8 (exact tables, two rows) and r the
        remainder (|r| <= max|x|/254: ordinary tables, one row), so the table rounding
        applies to r only. One token at a time (3 rows)."""
        cdef int tier = k_active_isa()
        cdef int rc = 0, t, j
        cdef int m = w.m
        cdef size_t groups = <size_t>(k // ag), kq = <size_t>(k // 4) * 16
        cdef float s
        cdef float *yt
        cdef float *split = self.y_head    # (3, m): the two exact rows and the remainder's
        for t in range(n):
            s = absmax_int8(x + <size_t>t * k, k, self.act_q)
            for j in range(k):
                self.act_r[j] = x[<size_t>t * k + j] - self.act_q[j] / s
            exact_tables(self.act_q, k, ag, self.lut_entries, self.lut_scales, self.lut_sums,
                         self.lut_entries + kq, self.lut_scales + groups, self.lut_sums + groups)
            rc |= k_lut_build(tier, self.act_r, 1, k, ag, self.lut_entries + 2 * kq, self.lut_scales + 2 * groups,
                              self.lut_sums + 2 * groups)
            rc |= k_gemm_multi(tier, 1, &w, self.lut_entries, self.lut_scales, self.lut_sums, 3, k, ag,
                               &split, &m)
            yt = y + <size_t>t * m
            for j in range(m):
                yt[j] = (32.0 * split[j] + split[m + j]) / s + split[2 * m + j]
        return rc

    cdef int matmul_perm(self, int n_w, const tmac_weight_t **ws, float **ys, int *ldys,
                         const int32_t **perms, const float *x, int n, int k, int ag,
                         bint bitlinear) noexcept nogil:
        """matmul_shared where matrix i (n_w <= 3) reads x[:, perms[i]] (act-order GPTQ; NULL:
        x itself): one gather and one table set per distinct perm."""
        cdef const tmac_weight_t *sub_w[3]
        cdef float *sub_y[3]
        cdef int sub_ld[3]
        cdef bint done[3]
        cdef int i, j, m, t, c, rc = 0
        cdef const float *src
        for i in range(n_w):
            done[i] = False
        for i in range(n_w):
            if done[i]:
                continue
            m = 0
            for j in range(i, n_w):
                if not done[j] and perms[j] == perms[i]:
                    sub_w[m], sub_y[m], sub_ld[m] = ws[j], ys[j], ldys[j]
                    m += 1
                    done[j] = True
            src = x
            if perms[i] != NULL:
                for t in range(n):
                    for c in range(k):
                        self.x_perm[<size_t>t * k + c] = x[<size_t>t * k + perms[i][c]]
                src = self.x_perm
            rc |= self.matmul_shared(m, sub_w, sub_y, sub_ld, src, n, k, ag, bitlinear)
        return rc

    cdef int matmul_p(self, const tmac_weight_t *w, const int32_t *perm, const float *x, int n, int k, int ag,
                      float *y, bint bitlinear) noexcept nogil:
        """matmul of one matrix reading x[:, perm] (perm NULL: x)."""
        cdef int ld = w.m
        return self.matmul_perm(1, &w, &y, &ld, &perm, x, n, k, ag, bitlinear)

    cdef int forward_chunk(self, const int32_t *tokens, int n, int pos, bint all_logits) noexcept nogil:
        cdef int t, l, h, rc = 0, D = self.dim, HD = self.head_dim
        cdef Py_ssize_t i                   # products below are bounded by checked_sizes; 64-bit anyway
        cdef size_t rope_row
        cdef Layer *L
        cdef uint16_t *kc
        cdef uint16_t *vc
        cdef const tmac_weight_t *ws[3]
        cdef float *ys[3]
        cdef int ldys[3]
        cdef const int32_t *pp[3]
        cdef InputPerms *P
        cdef double tp = self.mark(0.0, -1)  # profiling: when the current phase began
        if self.profiling:
            self.profiled_tokens += n
        # 1. embedding rows into the residual stream x
        for t in range(n):
            self.embed(tokens[t], self.x + <size_t>t * D)
        for l in range(self.n_layers):
            L = &self.layers[l]
            P = &self.perms[l]
            kc = self.k_cache + <size_t>l * self.n_ctx * self.kv_dim      # (n_kv_heads, n_ctx, HD)
            vc = self.v_cache + <size_t>l * self.n_ctx * self.kv_dim
            # 2. attention: RMSNorm, then q, k, v from one shared table
            for t in range(n):
                rmsnorm(self.xb + <size_t>t * D, self.x + <size_t>t * D, L.attn_norm, D, self.eps)
            tp = self.mark(tp, PH_OTHER)
            ws[0], ws[1], ws[2] = L.wq, L.wk, L.wv
            ys[0], ys[1], ys[2] = self.q, self.k, self.v
            ldys[0], ldys[1], ldys[2] = self.q_dim, self.kv_dim, self.kv_dim
            pp[0], pp[1], pp[2] = P.q, P.k, P.v
            rc |= self.matmul_perm(3, ws, ys, ldys, pp, self.xb, n, D, L.act_group_in, True)
            tp = self.mark(tp, PH_QKV)
            # 3. biases (qkv_bias), RoPE, and k, v into the fp16 cache at positions pos..pos+n-1
            for t in range(n):
                if L.bq != NULL:
                    for i in range(self.q_dim):
                        self.q[t * self.q_dim + i] += L.bq[i]
                    for i in range(self.kv_dim):
                        self.k[t * self.kv_dim + i] += L.bk[i]
                        self.v[t * self.kv_dim + i] += L.bv[i]
                rope_row = <size_t>(pos + t) * (HD // 2)        # pos + t < n_ctx (forward checks)
                rope(self.q + <size_t>t * self.q_dim, self.n_heads, HD, self.rope_cos + rope_row,
                     self.rope_sin + rope_row, self.neox)
                rope(self.k + <size_t>t * self.kv_dim, self.n_kv_heads, HD, self.rope_cos + rope_row,
                     self.rope_sin + rope_row, self.neox)
                for h in range(self.n_kv_heads):
                    k_fp32_to_fp16_row(self.k + t * self.kv_dim + h * HD,
                                       kc + (<size_t>h * self.n_ctx + pos + t) * HD, HD)
                    k_fp32_to_fp16_row(self.v + t * self.kv_dim + h * HD,
                                       vc + (<size_t>h * self.n_ctx + pos + t) * HD, HD)
            # 4. grouped-query attention over the cache, output projection, residual add
            rc |= k_attention(k_active_isa(), self.q, n, pos, self.n_heads, self.n_kv_heads, HD, kc, vc,
                              self.n_ctx, 1.0 / sqrtf(HD), self.attn_out)
            tp = self.mark(tp, PH_ATTN)
            if L.attn_sub_norm != NULL:
                for t in range(n):
                    rmsnorm(self.attn_out + <size_t>t * self.q_dim, self.attn_out + <size_t>t * self.q_dim,
                            L.attn_sub_norm, self.q_dim, self.eps)
            tp = self.mark(tp, PH_OTHER)
            rc |= self.matmul_p(L.wo, P.o, self.attn_out, n, self.q_dim, L.act_group_o, self.xb2, True)
            tp = self.mark(tp, PH_O)
            for i in range(<Py_ssize_t>n * D):
                self.x[i] += self.xb2[i]
            # 5. feed-forward: RMSNorm, gate and up from one table, SwiGLU, down, residual add
            for t in range(n):
                rmsnorm(self.xb + <size_t>t * D, self.x + <size_t>t * D, L.ffn_norm, D, self.eps)
            tp = self.mark(tp, PH_OTHER)
            ws[0], ws[1] = L.w_gate, L.w_up
            ys[0], ys[1] = self.hb, self.hb2
            ldys[0], ldys[1] = self.hidden_dim, self.hidden_dim
            pp[0], pp[1] = P.gate, P.up
            rc |= self.matmul_perm(2, ws, ys, ldys, pp, self.xb, n, D, L.act_group_in, True)
            tp = self.mark(tp, PH_GATE_UP)
            if self.relu2:
                relu2_glu(self.hb, self.hb2, <Py_ssize_t>n * self.hidden_dim)
            else:
                rc |= k_swiglu(k_active_isa(), self.hb, self.hb2, n * self.hidden_dim)  # <= INT_MAX: checked_sizes
            if L.ffn_sub_norm != NULL:
                for t in range(n):
                    rmsnorm(self.hb + <size_t>t * self.hidden_dim, self.hb + <size_t>t * self.hidden_dim,
                            L.ffn_sub_norm, self.hidden_dim, self.eps)
            tp = self.mark(tp, PH_OTHER)
            rc |= self.matmul_p(L.w_down, P.down, self.hb, n, self.hidden_dim, L.act_group_down, self.xb2, True)
            tp = self.mark(tp, PH_DOWN)
            for i in range(<Py_ssize_t>n * D):
                self.x[i] += self.xb2[i]
        # 6. final RMSNorm and the output layer, for the last or every token
        cdef int n_out = n if all_logits else 1
        for t in range(n_out):
            rmsnorm(self.xb + <size_t>t * D, self.x + <size_t>(t if all_logits else n - 1) * D, self.output_norm, D, self.eps)
        tp = self.mark(tp, PH_OTHER)
        if self.exact:
            rc |= self.precise_head(self.output, self.logits, self.xb, n_out, D, self.act_group_out)
        else:
            ws[0], ys[0], ldys[0] = self.output, self.logits, self.vocab_size
            rc |= self.matmul_shared(1, ws, ys, ldys, self.xb, n_out, D, self.act_group_out, False)
        self.mark(tp, PH_OUT)
        return rc

    def forward(self, tokens, pos, bint all_logits=False):
        """Runs tokens (at most max_batch) at positions pos.. and returns a view of
        the logits: (vocab,) of the last token, or (n, vocab) with all_logits."""
        cdef const int32_t[::1] tv = np.ascontiguousarray(tokens, dtype=np.int32)
        cdef Py_ssize_t n_tokens = tv.shape[0]
        if n_tokens < 1 or n_tokens > self.max_batch:
            raise ValueError(f"a chunk holds 1..{self.max_batch} tokens, got {n_tokens}")
        cdef int n = <int>n_tokens, rc
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or pos < 0 or pos + n > self.n_ctx:
            raise ValueError(f"positions {pos}..{pos + n - 1} do not fit the context of {self.n_ctx}")
        if np.min(tokens) < 0 or np.max(tokens) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        cdef int c_pos = pos
        with nogil:
            rc = self.forward_chunk(&tv[0], n, c_pos, all_logits)
        if rc != 0:
            raise KernelError(f"forward pass failed (code {rc})")
        return self.logits_array[:n] if all_logits else self.logits_array[0]
