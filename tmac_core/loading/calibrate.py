"""What each linear layer of a model sees: a float forward pass over a shipped text that
records, per block, the second moment H = X^T X / n of every matrix's input (the importance
the 2-bit preset's quantizer weighs its errors by, AwareQuantizer below).

The pass runs the model itself in numpy, one block at a time, on the source's dequantized
weights: only one block's float32 matrices and the (tokens, width) activations are in memory
at once. Blocks are advanced in order (`Calibrator.layer(l)` for l = 0, 1, ...), so the loader
can quantize block l between two steps, and `Calibrator.advance` can run block l on its
quantized weights: block l + 1 then sees the inputs the quantized model will give it.

The statistics' diagonal E[x_k^2] is what the 2-bit preset uses (AwareQuantizer); the full
matrices are kept for the measurements of alternatives (GPTQ, tests/reference/awarequant_numpy.py).

The text: assets/calibration/us-founding-documents.txt (the Declaration of Independence and
the US Constitution with the Bill of Rights, public domain; assets/calibration/README.md).
It is not the held-out perplexity text (tests/data/alice_ch1-2.txt).

The arithmetic is the runtime's forward (models/_llama.pyx) in float32 for the Llama-family
flags the plan knows (RoPE styles, GQA, q/k/v biases, SiLU or relu² FFN, sub-norms); the
int8 activations of BitNet models are not modelled (their H is the unquantized input's).
Imports numpy and the loaders: no Qt, nothing from tests.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tmac_core.errors import ModelFormatError
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.fastquant import Quantized, quantize_weighted
from tmac_core.loading.gguf import GGUFFile
from tmac_core.perplexity import tokenize
from tmac_core.plan import ModelConfig, TensorSpec
from tmac_core.tokenizer import Tokenizer

# Tokens of calibration text per model: CALIBRATION_WORK block multiply-adds in all (the pass's
# cost), so SmolLM2-135M sees ~940 tokens and a 1.17B model MIN_TOKENS (its first load stays
# near the plain quantizer's), never more than MAX_TOKENS.
CALIBRATION_WORK = 1.0e11
MIN_TOKENS, MAX_TOKENS = 128, 4096
SEQ_LEN = 512  # tokens per calibration sequence (the perplexity benchmark's context), BOS first
TEXT_NAME = "us-founding-documents.txt"

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


class CalibrationError(ModelFormatError):
    """The calibration text is missing, or the model's own forward pass turned non-finite on it."""


def text_path() -> Path:
    """The shipped calibration text: <repo>/assets/calibration, or under sys._MEIPASS when bundled."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "assets" / "calibration" / TEXT_NAME


def calibration_text() -> str:
    path = text_path()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(str(path), "calibration text", None, f"cannot be read: {e}") from None


def n_tokens_for(cfg: ModelConfig, available: int) -> int:
    """Calibration tokens for a model of this shape (CALIBRATION_WORK), at most `available`."""
    per_token = cfg.n_layers * (
        2 * cfg.dim * (cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim + 3 * cfg.dim * cfg.hidden_dim
    )
    want = int(CALIBRATION_WORK // max(per_token, 1))
    return max(1, min(available, MAX_TOKENS, max(MIN_TOKENS, want)))


def sequences(tokens: list[int], bos_id: int | None, n_tokens: int) -> NDArray[np.int64]:
    """(n_seq, len) token ids: the first n_tokens of the text cut into as few equal rows of at most
    SEQ_LEN tokens as hold them, each starting with BOS when the model has one (as the perplexity
    chunks do); the remainder of the division is left out."""
    body = SEQ_LEN - (bos_id is not None)
    ids = tokens[:n_tokens]
    n_rows = -(-len(ids) // body)
    width = len(ids) // n_rows
    prefix = [] if bos_id is None else [bos_id]
    return np.array([prefix + ids[r * width : (r + 1) * width] for r in range(n_rows)], np.int64)


@dataclass
class LayerStats:
    """Second moments of one block's matrix inputs over the tokens, float64: with `full` the
    matrices H = X^T X / n (width, width), else their diagonals E[x_k^2] (width,)."""

    attn_in: F64  # dim: attn_q, attn_k, attn_v
    attn_out: F64  # q_dim: attn_output
    ffn_in: F64  # dim: ffn_gate, ffn_up
    ffn_down: F64  # hidden: ffn_down

    def importance(self, role: str) -> F64:
        """E[x_k^2] (width,) of the input of a matrix of this role."""
        m = self.for_role(role)
        return np.diag(m).copy() if m.ndim == 2 else m

    def for_role(self, role: str) -> F64:
        return {
            "attn_q": self.attn_in,
            "attn_k": self.attn_in,
            "attn_v": self.attn_in,
            "attn_output": self.attn_out,
            "ffn_gate": self.ffn_in,
            "ffn_up": self.ffn_in,
            "ffn_down": self.ffn_down,
        }[role]


def _second_moment(x: F32, full: bool) -> F64:
    x2 = x.reshape(-1, x.shape[-1])
    if not full:
        return np.einsum("ij,ij->j", x2, x2, dtype=np.float64) / x2.shape[0]
    return (x2.T @ x2).astype(np.float64) / x2.shape[0]


def _rmsnorm(x: F32, w: F32, eps: float) -> F32:
    ms = (x.astype(np.float64) ** 2).mean(axis=-1, keepdims=True)
    return (x / np.sqrt(ms + eps)).astype(np.float32) * w


def _rope(v: F32, n_heads: int, cos: F32, sin: F32, neox: bool) -> F32:
    """v (n_seq, len, n_heads * hd) rotated; cos, sin (len, hd/2)."""
    s, n, _ = v.shape
    v = v.reshape(s, n, n_heads, -1)
    half = v.shape[-1] // 2
    a, b = (v[..., :half], v[..., half:]) if neox else (v[..., 0::2], v[..., 1::2])
    c, si = cos[None, :, None, :], sin[None, :, None, :]
    ra, rb = a * c - b * si, a * si + b * c
    out = np.empty_like(v)
    if neox:
        out[..., :half], out[..., half:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out.reshape(s, n, -1)


class Calibrator:
    """The calibration pass over one model, a block at a time (see the module docstring)."""

    def __init__(
        self, source: GGUFFile, cfg: ModelConfig, seqs: NDArray[np.int64], inv_freq: F64, *, full: bool = False
    ) -> None:
        """seqs (n_seq, len): token ids; inv_freq: RoPE's (head_dim/2,); full: keep whole H matrices
        (width^2 floats per input: measurements of alternatives), not only their diagonals."""
        self.source, self.cfg, self.seqs, self.full = source, cfg, seqs, full
        n = seqs.shape[1]
        ang = np.arange(n, dtype=np.float64)[:, None] * inv_freq[None, :]  # (len, hd/2)
        self._cos, self._sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        self._mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
        self.x = self._embed()  # (n_seq, len, dim) the residual stream entering block self.next_layer
        self.next_layer = 0
        self._stats: LayerStats | None = None
        # the current block's float32 matrices by tensor name, as its pass read them (the
        # quantizer reuses them); one block's worth, dropped when the pass moves on
        self.weights: dict[str, F32] = {}

    @property
    def n_tokens(self) -> int:
        return int(self.seqs.size)

    def _embed(self) -> F32:
        name = "token_embd.weight"
        ids = np.unique(self.seqs)
        rows = {}
        src = self.source
        dim = self.cfg.dim
        if hasattr(src, "rows"):  # a GGUF: dequantize only the slabs holding the text's tokens
            step = max(64, (1 << 20) // max(dim, 1))
            for r0 in range(0, self.cfg.vocab_size, step):
                r1 = min(r0 + step, self.cfg.vocab_size)
                want = ids[(ids >= r0) & (ids < r1)]
                if len(want):
                    slab = dequantize_tensor(src.rows(name, r0, r1), name).reshape(r1 - r0, dim)
                    for i in want:
                        rows[int(i)] = slab[i - r0].astype(np.float32)
        else:
            table = dequantize_tensor(src, name).reshape(-1, dim)
            rows = {int(i): table[i].astype(np.float32) for i in ids}
        return np.stack([np.stack([rows[int(t)] for t in seq]) for seq in self.seqs])

    def _matrix(self, name: str, cols: int) -> F32:
        return dequantize_tensor(self.source, name).reshape(-1, cols).astype(np.float32, copy=False)

    def _vector(self, name: str) -> F32:
        return dequantize_tensor(self.source, name).reshape(-1).astype(np.float32)

    def layer(self, layer: int) -> LayerStats:
        """The input statistics of block `layer`, the next block in order (or the current one again)."""
        if self._stats is not None and layer == self.next_layer:
            return self._stats
        if layer != self.next_layer:
            raise ValueError(f"calibration is at block {self.next_layer}; block {layer} was asked")
        self.weights = {}
        self._stats, self._float_out = self._block(layer, {})
        return self._stats

    def advance(self, quantized: dict[str, F32] | None = None) -> None:
        """Move to the next block: its input is this block's output, computed with the float weights
        (quantized None) or with `quantized` (tensor name -> float32 (rows, cols) dequantized matrix)
        in place of the source's where given."""
        if self._stats is None:
            self.layer(self.next_layer)
        if quantized:
            _, self._float_out = self._block(self.next_layer, quantized)
        self.x = self._float_out
        self.next_layer += 1
        self._stats = None
        self.weights = {}

    def _block(self, layer: int, replace: dict[str, F32]) -> tuple[LayerStats, F32]:
        cfg, x = self.cfg, self.x
        p = f"blk.{layer}."
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        q_dim = nh * hd

        def w(role: str, cols: int) -> F32:
            name = p + role + ".weight"
            if name in replace:
                return replace[name]
            self.weights[name] = self._matrix(name, cols)
            return self.weights[name]

        s, n, _ = x.shape

        def lin(a: F32, m: F32) -> F32:  # (s, n, cols) @ m.T as one 2-D product
            return (a.reshape(s * n, -1) @ m.T).reshape(s, n, -1)

        h = _rmsnorm(x, self._vector(p + "attn_norm.weight"), cfg.norm_eps)
        attn_in = _second_moment(h, self.full)
        q, k, v = lin(h, w("attn_q", cfg.dim)), lin(h, w("attn_k", cfg.dim)), lin(h, w("attn_v", cfg.dim))
        if cfg.qkv_bias:
            q = q + self._vector(p + "attn_q.bias")
            k = k + self._vector(p + "attn_k.bias")
            v = v + self._vector(p + "attn_v.bias")
        neox = cfg.rope_style == "neox"
        q = _rope(q, nh, self._cos, self._sin, neox)
        k = _rope(k, nkv, self._cos, self._sin, neox)
        # the runtime's KV cache holds fp16 k and v
        k = k.astype(np.float16).astype(np.float32)
        v = v.astype(np.float16).astype(np.float32)
        q4, k4, v4 = q.reshape(s, n, nh, hd), k.reshape(s, n, nkv, hd), v.reshape(s, n, nkv, hd)
        rep, inv_sqrt = nh // nkv, np.float32(1 / np.sqrt(hd))
        heads = np.empty((s, n, nh, hd), np.float32)
        for i in range(s):  # a (len, len) score matrix at a time, contiguous operands for BLAS
            for head in range(nh):
                sc = np.ascontiguousarray(q4[i, :, head]) @ np.ascontiguousarray(k4[i, :, head // rep]).T
                sc = sc * inv_sqrt + self._mask
                sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
                heads[i, :, head] = (sc / sc.sum(axis=-1, keepdims=True)) @ np.ascontiguousarray(v4[i, :, head // rep])
        o = heads.reshape(s, n, q_dim)
        if cfg.sub_norms:
            o = _rmsnorm(o, self._vector(p + "attn_sub_norm.weight"), cfg.norm_eps)
        attn_out = _second_moment(o, self.full)
        x = x + lin(o, w("attn_output", q_dim))
        h = _rmsnorm(x, self._vector(p + "ffn_norm.weight"), cfg.norm_eps)
        ffn_in = _second_moment(h, self.full)
        g, u = lin(h, w("ffn_gate", cfg.dim)), lin(h, w("ffn_up", cfg.dim))
        if cfg.ffn_act == "relu2":
            f = np.maximum(g, 0) ** 2 * u
        else:
            with np.errstate(over="ignore"):  # exp(-g) = inf for g << 0: silu(g) = -0
                f = g / (1 + np.exp(-g)) * u
        if cfg.sub_norms:
            f = _rmsnorm(f, self._vector(p + "ffn_sub_norm.weight"), cfg.norm_eps)
        ffn_down = _second_moment(f, self.full)
        x = x + lin(f, w("ffn_down", cfg.hidden_dim))
        if not np.isfinite(x).all():
            raise CalibrationError(str(self.source.path), f"block {layer}", None, "the calibration pass is not finite")
        return LayerStats(attn_in, attn_out, ffn_in, ffn_down), x.astype(np.float32)


# - the loader's face -


def aware_matrix(spec: TensorSpec) -> bool:
    """Whether the 2-bit preset quantizes this matrix activation-aware: a block matrix our
    quantizer requantizes to 2 bits (the 4-bit ones and the exact repacks keep their paths)."""
    return spec.bits == 2 and not spec.exact and spec.layer >= 0 and spec.role in _ROLES


_ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


class AwareQuantizer:
    """The 2-bit preset's activation-aware quantizer over one model, for the loader: calibrates
    block by block as matrices are asked for, in the plan's order (blocks ascending), and
    quantizes each matrix by our clipping search with its errors weighed by E[x_k^2] of its
    input (fastquant.quantize_weighted).

    Measured on SmolLM2-135M (Q4_1 source, 3.08 bits/weight, Alice ch. I-II, ctx 512), perplexity:
    plain search 671.7; this with its 943 tokens 128.0 (509 tokens: 139.4; 1886 tokens, float64
    numpy: 128.5); the same with each block's statistics taken on the already-quantized earlier
    blocks' outputs (advance(quantized)) 141.8; GPTQ error compensation with the full H (damping
    0.01, 128-column blocks, each group's scale searched on the compensated weights, 1886 tokens;
    tests/reference/awarequant_numpy.py) 188.3 and two orders of magnitude slower. So: the
    diagonal, on the float model's activations.
    """

    def __init__(self, source: GGUFFile, cfg: ModelConfig, tokenizer: Tokenizer, inv_freq: F64) -> None:
        ids = tokenize(tokenizer, calibration_text())
        if not ids:
            raise CalibrationError(str(text_path()), "calibration text", None, "has no tokens")
        bos = tokenizer.bos_id if tokenizer.add_bos else None
        self.calibrator = Calibrator(source, cfg, sequences(ids, bos, n_tokens_for(cfg, len(ids))), inv_freq)
        self.source = source

    def quantize(self, spec: TensorSpec) -> Quantized:
        """Codes, scales and zeros of one aware_matrix, in our quantizer's groupwise format."""
        cal = self.calibrator
        while cal.next_layer < spec.layer:
            cal.advance()
        imp = cal.layer(spec.layer).importance(spec.role)
        w = cal.weights.get(spec.name)
        if w is None:
            w = dequantize_tensor(self.source, spec.name).reshape(spec.rows, spec.cols)
        return quantize_weighted(w, _floored(imp), spec.bits, spec.group_size)


def _floored(imp: F64) -> NDArray[np.float32]:
    """float32 importances with a floor of 1e-6 x their mean: an input that never fired on the
    text (or a whole group of them) still weighs a little, and the search needs one > 0 per group."""
    floor = max(float(imp.mean()) * 1e-6, 1e-30)
    return np.maximum(imp, floor).astype(np.float32)
