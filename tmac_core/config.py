"""Model hyperparameters in the project's one vocabulary, translated from GGUF keys.

This is the only place that knows GGUF's key names (`llama.embedding_length`, ...);
everything else uses `dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim,
vocab_size, seq_len` (aesthetics.md §8.5). `ModelConfig.from_gguf` validates every
value and every expected tensor shape before any kernel sees them (reliability.md
§1.2, app-level checks). Imports the standard library and `tmac_core.loading.gguf`
only: no Qt, no app code.
"""

from __future__ import annotations

from dataclasses import dataclass

from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.loading.gguf import GGUFFile, ValueType

# GGUF architecture name → the architecture we run it as. Mistral files converted by
# older llama.cpp use their own key prefix but Llama's tensors.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}

# Sane upper bounds: far above any real model, far below what overflows a buffer.
MAX_DIM = 1 << 16
MAX_HIDDEN_DIM = 1 << 20
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_VOCAB = 1 << 22
MAX_SEQ_LEN = 1 << 24


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 RoPE frequency scaling (HF `rope_scaling` with rope_type "llama3")."""
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context_length: int


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and hyperparameters of one Llama-family model."""
    dim: int                 # embedding width (d_model)
    hidden_dim: int          # feed-forward width
    n_layers: int
    n_heads: int
    n_kv_heads: int          # grouped-query attention: n_heads % n_kv_heads == 0
    head_dim: int            # usually dim // n_heads; Mistral-Nemo-style files differ
    vocab_size: int
    seq_len: int             # trained context length
    rope_theta: float
    norm_eps: float          # RMSNorm epsilon
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False   # output projection reuses token_embd.weight
    arch: str = "llama"            # "llama" | "qwen2"
    qkv_bias: bool = False         # qwen2 has biases on q, k and v
    rope_freqs: bool = False       # file has `rope_freqs.weight` (ggml per-frequency divisors)

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelConfig:
        """Read and validate hyperparameters and tensor shapes.

        Raises:
            UnsupportedModelError: the architecture or a RoPE variant is not supported.
            ModelFormatError: a key is missing, mistyped or absurd; a tensor is missing
                or has the wrong shape.
        """
        gguf_arch = gguf.architecture
        if gguf_arch not in ARCHITECTURES:
            supported = ", ".join(sorted(ARCHITECTURES))
            raise UnsupportedModelError(f"{gguf.path}: unsupported architecture {gguf_arch!r}"
                                        f" (supported: {supported})")
        p = gguf_arch + "."
        dim = gguf.get_int(p + "embedding_length", min_value=1, max_value=MAX_DIM)
        n_heads = gguf.get_int(p + "attention.head_count", min_value=1, max_value=MAX_HEADS)
        n_kv_heads = gguf.get_int(p + "attention.head_count_kv", n_heads, min_value=1,
                                  max_value=MAX_HEADS)
        if dim % n_heads:
            _fail(gguf, p + "attention.head_count", f"{n_heads} heads do not divide dim {dim}")
        if n_heads % n_kv_heads:
            _fail(gguf, p + "attention.head_count_kv",
                  f"{n_kv_heads} kv heads do not divide {n_heads} heads")
        head_dim = gguf.get_int(p + "attention.key_length", dim // n_heads, min_value=1,
                                max_value=MAX_HEAD_DIM)
        if gguf.get_int(p + "attention.value_length", head_dim) != head_dim:
            raise UnsupportedModelError(f"{gguf.path}: key and value head sizes differ")
        rope_dim = gguf.get_int(p + "rope.dimension_count", head_dim, min_value=1)
        if rope_dim != head_dim:
            raise UnsupportedModelError(f"{gguf.path}: partial rotary embedding ({rope_dim} of"
                                        f" {head_dim} head dimensions) is not supported")
        if head_dim % 2:
            _fail(gguf, p + "attention.key_length", f"head size {head_dim} is odd; RoPE needs pairs")
        tokens = gguf.get_array("tokenizer.ggml.tokens", element_type=ValueType.STRING)
        vocab_size = len(tokens)
        if not 1 <= vocab_size <= MAX_VOCAB:
            _fail(gguf, "tokenizer.ggml.tokens", f"{vocab_size} tokens outside [1, {MAX_VOCAB}]")
        declared_vocab = gguf.get_int(p + "vocab_size", vocab_size)
        if declared_vocab != vocab_size:
            _fail(gguf, p + "vocab_size", f"says {declared_vocab} but the vocabulary has"
                  f" {vocab_size} tokens")
        config = cls(
            dim=dim,
            hidden_dim=gguf.get_int(p + "feed_forward_length", min_value=1, max_value=MAX_HIDDEN_DIM),
            n_layers=gguf.get_int(p + "block_count", min_value=1, max_value=MAX_LAYERS),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            vocab_size=vocab_size,
            seq_len=gguf.get_int(p + "context_length", min_value=1, max_value=MAX_SEQ_LEN),
            rope_theta=gguf.get_float(p + "rope.freq_base", 10000.0, positive=True),
            norm_eps=gguf.get_float(p + "attention.layer_norm_rms_epsilon", positive=True,
                                    max_value=1.0),
            rope_scaling=_rope_scaling(gguf, p),
            tie_embeddings="output.weight" not in gguf.tensors,
            arch=ARCHITECTURES[gguf_arch],
            qkv_bias=ARCHITECTURES[gguf_arch] == "qwen2",
            rope_freqs="rope_freqs.weight" in gguf.tensors,
        )
        config.check_tensors(gguf)
        return config

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model needs → its GGUF shape (ne0 first)."""
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        shapes = {"token_embd.weight": (self.dim, self.vocab_size),
                  "output_norm.weight": (self.dim,)}
        if not self.tie_embeddings:
            shapes["output.weight"] = (self.dim, self.vocab_size)
        if self.rope_freqs:
            shapes["rope_freqs.weight"] = (self.head_dim // 2,)
        for i in range(self.n_layers):
            b = f"blk.{i}."
            shapes.update({
                b + "attn_norm.weight": (self.dim,),
                b + "attn_q.weight": (self.dim, q_dim),
                b + "attn_k.weight": (self.dim, kv_dim),
                b + "attn_v.weight": (self.dim, kv_dim),
                b + "attn_output.weight": (q_dim, self.dim),
                b + "ffn_norm.weight": (self.dim,),
                b + "ffn_gate.weight": (self.dim, self.hidden_dim),
                b + "ffn_up.weight": (self.dim, self.hidden_dim),
                b + "ffn_down.weight": (self.hidden_dim, self.dim),
            })
            if self.qkv_bias:
                shapes.update({b + "attn_q.bias": (q_dim,), b + "attn_k.bias": (kv_dim,),
                               b + "attn_v.bias": (kv_dim,)})
        return shapes

    def extra_tensors(self, gguf: GGUFFile) -> list[str]:
        """Tensors in the file the model does not use (worth a log line, not an error)."""
        expected = self.expected_tensors()
        return [name for name in gguf.tensors if name not in expected]

    def check_tensors(self, gguf: GGUFFile) -> None:
        """ModelFormatError naming the first missing or misshapen tensor."""
        for name, expected in self.expected_tensors().items():
            info = gguf.tensors.get(name)
            if info is None:
                raise ModelFormatError(gguf.path, f"tensor {name!r}", None,
                                       "required tensor is missing")
            if info.shape != expected:
                raise ModelFormatError(gguf.path, f"tensor {name!r}", info.offset,
                                       f"has shape {list(info.shape)}, expected {list(expected)}"
                                       " (GGUF order, ne0 first)")


def _fail(gguf: GGUFFile, key: str, reason: str):
    field, offset = gguf.kv_location(key)
    raise ModelFormatError(gguf.path, field, offset, reason)


def _rope_scaling(gguf: GGUFFile, p: str) -> RopeScaling | None:
    """Llama-3 scaling from `{arch}.rope.scaling.*`; None when absent or "none"."""
    kind = gguf.get_str(p + "rope.scaling.type", None)
    factor = gguf.get_float(p + "rope.scaling.factor", 1.0, positive=True)
    if kind != "llama3":
        if kind == "none" or factor == 1.0:
            return None
        # llama.cpp reads a factor without a type as linear scaling.
        raise UnsupportedModelError(f"{gguf.path}: RoPE scaling type {kind or 'linear'!r} is not"
                                    " supported (supported: llama3)")
    # ggml has no keys for these; llama.cpp bakes them into rope_freqs.weight. Our own
    # writer stores them so a file can carry Llama-3 scaling without that tensor.
    low = gguf.get_float(p + "rope.scaling.low_freq_factor", 1.0, positive=True)
    high = gguf.get_float(p + "rope.scaling.high_freq_factor", 4.0, positive=True)
    if high <= low:
        _fail(gguf, p + "rope.scaling.high_freq_factor",
              f"high_freq_factor {high} must exceed low_freq_factor {low}")
    original = gguf.get_int(p + "rope.scaling.original_context_length", 8192, min_value=1,
                            max_value=MAX_SEQ_LEN)
    return RopeScaling(factor, low, high, original)
