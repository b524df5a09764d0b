# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Llama-family forward pass (llama, mistral, qwen2) on the LUT kernels.

llama2.c-shaped and read top to bottom: embedding row, then per layer
RMSNorm -> Q/K/V (one shared activation table) -> RoPE -> grouped-query
attention over the KV cache -> output projection -> RMSNorm -> gate/up (one
shared table) -> SwiGLU -> down; then the final norm and the output layer.
A call processes a chunk of up to `max_batch` tokens (the GEMM path for
prompts, n = 1 for decode) entirely in C with the GIL released; matrix
multiplies and attention (fp16 KV cache, tmac_attention) run on the kernel
thread pool. No Qt.
"""
from libc.math cimport sqrtf
from libc.stdint cimport int8_t, int32_t, uint16_t

import mmap

import numpy as np

from tmac_core.errors import KernelError, ModelLoadError, UnsupportedModelError
from tmac_core.kernels._kernels cimport (
    PackedWeight, k_active_isa, k_attention, k_fp32_to_fp16_row, k_gemm_multi, k_lut_build, k_swiglu, k_weight,
    tmac_weight_row_f32, tmac_weight_t,
)
from tmac_core.kernels._kernels import MAX_DIM as _MAX_DIM, MAX_ELEMS as _MAX_ELEMS
from tmac_core.plan import input_perm_name, tensor_plan, vector_plan

INT_MAX = 2**31 - 1  # forward_chunk's loops index the scratch buffers with C int
MAX_BATCH = 4096     # tokens per forward call (the engine uses 32)
_DIMS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size")


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
    for name, n in sizes.items():
        limit = _MAX_ELEMS if name.startswith("the KV cache") else INT_MAX
        if n > limit:
            raise UnsupportedModelError(f"{name} would hold {n} elements, more than the runtime's limit of {limit}")
    return sizes


cdef struct Layer:
    const float *attn_norm      # (dim,)
    const float *ffn_norm       # (dim,)
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
    cdef int vocab_size, n_ctx, max_batch, act_group_out
    cdef float eps
    cdef bint neox
    cdef Layer *layers
    cdef const tmac_weight_t *embedding
    cdef const tmac_weight_t *output
    cdef const tmac_weight_t *output_residual   # second 4-bit pass of the output layer, or NULL
    cdef const tmac_weight_t *embedding_residual  # the same matrix when embeddings are tied, or NULL
    cdef float *logits_residual                  # (max_batch, vocab) scratch for that pass
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
    cdef object _keep
    cdef object _layers_buf
    cdef readonly object logits_array

    def __init__(self, cfg, weights, n_ctx, max_batch=32):
        """cfg: tmac_core.plan.ModelConfig; weights: dict of PackedWeight (matrices)
        and float32 arrays (norms, biases) under the names tmac_core.plan lists.

        Every size is checked (checked_sizes) before a buffer is made, and every weight
        against the plan before a pointer into it is taken: ModelLoadError names a
        weight that does not fit, UnsupportedModelError a size out of range."""
        if cfg.ffn_act != "silu" or cfg.sub_norms:
            raise UnsupportedModelError(f"the forward pass has no {cfg.ffn_act!r} feed-forward"
                                        f"{' or sub-norms' if cfg.sub_norms else ''} yet")
        checked_sizes(cfg, n_ctx, max_batch)
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
        # Names and shapes from the plan; the bits and groups each matrix was packed with
        # are the loader's (checked against the plan there) and travel in its PackedWeight.
        # The residual pass is the loader's choice too: present or not.
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
            if wo.bits <= 2:
                L.act_group_o = 32
            if wd.bits <= 2:
                L.act_group_down = 32
        self._set_input_perms(cfg, weights, keep)
        emb = matrices["token_embd"]
        out = emb if cfg.tie_embeddings else matrices["output"]
        self.embedding, self.output, self.act_group_out = k_weight(emb), k_weight(out), out.act_group
        self.output_residual = self.embedding_residual = NULL
        if "output.residual" in weights:
            # output = out + residual, each 4-bit: ~8-bit logits for one more table pass
            res = weights["output.residual"]
            if not isinstance(res, PackedWeight) or res.shape != out.shape or res.k_pad != out.k:
                raise ModelLoadError(f"output.residual: expected a packed {out.shape} matrix, got {res!r}")
            keep.append(res)
            self.output_residual = k_weight(res)
            self.act_group_out = min(out.act_group, res.act_group)
            if cfg.tie_embeddings:
                self.embedding_residual = self.output_residual

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
        if self.output_residual != NULL:
            fv = buf(B * self.vocab_size); self.logits_residual = &fv[0]
        fv = self.logits_array.reshape(-1); self.logits = &fv[0]
        cdef int8_t[::1] ev = buf(B * (k_max // 4) * 16, dtype=np.int8)
        self.lut_entries = &ev[0]
        fv = buf(B * (k_max // 32)); self.lut_scales = &fv[0]
        fv = buf(B * (k_max // 32)); self.lut_sums = &fv[0]
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
        scratch = np.empty(self.dim, dtype=np.float32)
        cdef float[::1] ov = out
        cdef float[::1] sv = scratch
        self.embed(token, &ov[0], &sv[0])
        return out

    cdef void embed(self, int token, float *out, float *scratch) noexcept nogil:
        """out (dim,) = the token's embedding row (plus its residual row when the
        tied output layer carries one); scratch (dim,) may not alias out."""
        cdef int i
        tmac_weight_row_f32(self.embedding, token, out)
        if self.embedding_residual != NULL:
            tmac_weight_row_f32(self.embedding_residual, token, scratch)
            for i in range(self.dim):
                out[i] = out[i] + scratch[i]

    cdef int matmul(self, const tmac_weight_t *w, const float *x, int n, int k, int ag, float *y) noexcept nogil:
        """y (n, w.m) = x (n, k) @ W.T."""
        cdef int ld = w.m
        return self.matmul_shared(1, &w, &y, &ld, x, n, k, ag)

    cdef int matmul_shared(self, int n_w, const tmac_weight_t **ws, float **ys, int *ldys, const float *x,
                           int n, int k, int ag) noexcept nogil:
        """ys[i] (n, ws[i].m) = x (n, k) @ ws[i].T for matrices reading the same input:
        one table build and one pool call for all of them."""
        cdef int tier = k_active_isa()
        cdef int rc = k_lut_build(tier, x, n, k, ag, self.lut_entries, self.lut_scales, self.lut_sums)
        if rc == 0:
            rc = k_gemm_multi(tier, n_w, ws, self.lut_entries, self.lut_scales, self.lut_sums, n, k, ag, ys, ldys)
        return rc

    cdef int matmul_perm(self, int n_w, const tmac_weight_t **ws, float **ys, int *ldys,
                         const int32_t **perms, const float *x, int n, int k, int ag) noexcept nogil:
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
            rc |= self.matmul_shared(m, sub_w, sub_y, sub_ld, src, n, k, ag)
        return rc

    cdef int matmul_p(self, const tmac_weight_t *w, const int32_t *perm, const float *x, int n, int k, int ag,
                      float *y) noexcept nogil:
        """matmul of one matrix reading x[:, perm] (perm NULL: x)."""
        cdef int ld = w.m
        return self.matmul_perm(1, &w, &y, &ld, &perm, x, n, k, ag)

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
        # 1. embedding rows into the residual stream x
        for t in range(n):
            self.embed(tokens[t], self.x + <size_t>t * D, self.xb)
        for l in range(self.n_layers):
            L = &self.layers[l]
            P = &self.perms[l]
            kc = self.k_cache + <size_t>l * self.n_ctx * self.kv_dim      # (n_kv_heads, n_ctx, HD)
            vc = self.v_cache + <size_t>l * self.n_ctx * self.kv_dim
            # 2. attention: RMSNorm, then q, k, v from one shared table
            for t in range(n):
                rmsnorm(self.xb + <size_t>t * D, self.x + <size_t>t * D, L.attn_norm, D, self.eps)
            ws[0], ws[1], ws[2] = L.wq, L.wk, L.wv
            ys[0], ys[1], ys[2] = self.q, self.k, self.v
            ldys[0], ldys[1], ldys[2] = self.q_dim, self.kv_dim, self.kv_dim
            pp[0], pp[1], pp[2] = P.q, P.k, P.v
            rc |= self.matmul_perm(3, ws, ys, ldys, pp, self.xb, n, D, L.act_group_in)
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
            rc |= self.matmul_p(L.wo, P.o, self.attn_out, n, self.q_dim, L.act_group_o, self.xb2)
            for i in range(<Py_ssize_t>n * D):
                self.x[i] += self.xb2[i]
            # 5. feed-forward: RMSNorm, gate and up from one table, SwiGLU, down, residual add
            for t in range(n):
                rmsnorm(self.xb + <size_t>t * D, self.x + <size_t>t * D, L.ffn_norm, D, self.eps)
            ws[0], ws[1] = L.w_gate, L.w_up
            ys[0], ys[1] = self.hb, self.hb2
            ldys[0], ldys[1] = self.hidden_dim, self.hidden_dim
            pp[0], pp[1] = P.gate, P.up
            rc |= self.matmul_perm(2, ws, ys, ldys, pp, self.xb, n, D, L.act_group_in)
            rc |= k_swiglu(k_active_isa(), self.hb, self.hb2, n * self.hidden_dim)  # <= INT_MAX: checked_sizes
            rc |= self.matmul_p(L.w_down, P.down, self.hb, n, self.hidden_dim, L.act_group_down, self.xb2)
            for i in range(<Py_ssize_t>n * D):
                self.x[i] += self.xb2[i]
        # 6. final RMSNorm and the output layer (plus its residual pass), for the last or every token
        cdef int n_out = n if all_logits else 1
        for t in range(n_out):
            rmsnorm(self.xb + <size_t>t * D, self.x + <size_t>(t if all_logits else n - 1) * D, self.output_norm, D, self.eps)
        if self.output_residual == NULL:
            rc |= self.matmul(self.output, self.xb, n_out, D, self.act_group_out, self.logits)
        else:
            ws[0], ws[1] = self.output, self.output_residual
            ys[0], ys[1] = self.logits, self.logits_residual
            ldys[0], ldys[1] = self.vocab_size, self.vocab_size
            rc |= self.matmul_shared(2, ws, ys, ldys, self.xb, n_out, D, self.act_group_out)
            for i in range(<Py_ssize_t>n_out * self.vocab_size):
                self.logits[i] = self.logits[i] + self.logits_residual[i]
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
