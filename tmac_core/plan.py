"""What a model is: its hyperparameters (`ModelConfig`) and the tensors the runtime
holds for it (`tensor_plan`, `vector_plan`), with their exact packed and KV-cache sizes.

The one owner of this knowledge. The GGUF shape check (`ModelConfig.expected_tensors`),
the weight loader (models/loader.py), the forward pass's shape checks (models/_llama.pyx),
the synthetic-model writer (synth.py), the test model writer and the app's size and
speed estimates (app/catalog/catalog.py) all read it. Names are llama.cpp's GGUF tensor
names; shapes here are (rows, cols) as the kernels see a matrix, GGUF lists ne0 first.

Standard library only: the app imports this module (and tmac_core.types) without
loading numpy or the compiled runtime (tests/test_boundaries.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, Unpack

if TYPE_CHECKING:  # annotations only: this module stays standard library at run time
    from tmac_core.loading.gguf import GGUFFile

TILE_ROWS = 64  # kernels/LAYOUT.md §Weights: rows pad to a multiple of 64
GROUP_SIZES = (32, 64, 128)  # scale groups along K (kernels/layout.py GROUP_SIZES)
KV_BYTES_PER_VALUE = 2  # the KV cache holds fp16 K and V (models/_llama.pyx)
ROPE_STYLES = ("interleaved", "neox")  # pairs (2i, 2i+1) as llama, or (i, i + hd/2) as qwen2
FFN_ACTIVATIONS = ("silu",)  # gated FFN: down(act(gate) * up)

# Source types with more than ~5 bits per weight: their output layer would lose
# precision at 4 bits (SmolLM2's tied Q8_0 table: perplexity +10%), so the 4-bit
# plan adds a second 4-bit pass on its residual (models/loader.py:output_residual).
PRECISE_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1"})
# Source types repacked without requantizing (loading/repack.py): Q4_0/Q4_1 at 4 bits
# keep their 32-wide groups, TQ1_0/TQ2_0 at 2 bits their ternary codes in 128-wide groups.
EXACT_GROUPS = {(4, "Q4_0"): 32, (4, "Q4_1"): 32, (2, "TQ1_0"): 128, (2, "TQ2_0"): 128}
RESIDUAL_BITS, RESIDUAL_GROUP = 4, 32
MATRIX_ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 RoPE frequency scaling (HF `rope_scaling` with rope_type "llama3")."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context_length: int


@dataclass(frozen=True)
class ModelConfig:
    """Shapes, hyperparameters and architecture flags of one Llama-family model.

    Build it through an `Architecture` (tmac_core.models.architecture(name).config(...))
    or `tmac_core.config.config_from_gguf`, so the flags below are decided once, by the architecture.
    """

    dim: int  # embedding width (d_model)
    hidden_dim: int  # feed-forward width
    n_layers: int
    n_heads: int
    n_kv_heads: int  # grouped-query attention: n_heads % n_kv_heads == 0
    head_dim: int  # usually dim // n_heads; Mistral-Nemo-style files differ
    vocab_size: int
    n_ctx_train: int  # trained context length
    rope_theta: float = 10000.0  # GGUF's default when the key is absent
    norm_eps: float = 1e-5  # RMSNorm epsilon (always read from a file; the catalog lists shapes only)
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False  # output projection reuses token_embd.weight
    arch: str = "llama"  # the architecture we run it as (tmac_core.models.ARCHITECTURES)
    rope_freqs: bool = False  # file has `rope_freqs.weight` (ggml per-frequency divisors)
    # Architecture flags: the forward pass and the plan switch on these, never on `arch`.
    rope_style: str = "interleaved"  # one of ROPE_STYLES
    qkv_bias: bool = False  # q, k and v projections carry biases (qwen2)
    ffn_act: str = "silu"  # one of FFN_ACTIVATIONS
    sub_norms: bool = False  # RMSNorm before attn_output and ffn_down (BitNet's sub-norms)

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model needs from its file → its GGUF shape (ne0 first)."""
        return gguf_shapes(self)

    def extra_tensors(self, gguf: GGUFFile) -> list[str]:
        """Tensors in the file the model does not use (worth a log line, not an error)."""
        expected = self.expected_tensors()
        return [name for name in gguf.tensors if name not in expected]

    def check_tensors(self, gguf: GGUFFile) -> None:
        """ModelFormatError naming the first missing or misshapen tensor."""
        from tmac_core.errors import ModelFormatError

        for name, expected in self.expected_tensors().items():
            info = gguf.tensors.get(name)
            if info is None:
                raise ModelFormatError(gguf.path, f"tensor {name!r}", None, "required tensor is missing")
            if info.shape != expected:
                raise ModelFormatError(
                    gguf.path,
                    f"tensor {name!r}",
                    info.offset,
                    f"has shape {list(info.shape)}, expected {list(expected)} (GGUF order, ne0 first)",
                )


class _Shapes(TypedDict):
    """The ModelConfig fields every model states (ShapeFields: the ones with a default too)."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    n_ctx_train: int


class ShapeFields(_Shapes, total=False):
    """The ModelConfig fields a model's file or catalog entry decides (Architecture.config's
    keywords); the architecture flags are not among them. Left out: ModelConfig's default."""

    rope_theta: float
    norm_eps: float
    rope_scaling: RopeScaling | None
    tie_embeddings: bool
    rope_freqs: bool


@dataclass(frozen=True)
class Architecture:
    """What sets one architecture apart: the flags its ModelConfig carries.

    One instance per file in tmac_core/models/, registered in models/__init__.py.
    """

    name: str  # ModelConfig.arch
    rope_style: str = "interleaved"
    qkv_bias: bool = False
    ffn_act: str = "silu"
    sub_norms: bool = False

    def __post_init__(self) -> None:
        if self.rope_style not in ROPE_STYLES or self.ffn_act not in FFN_ACTIVATIONS:
            raise ValueError(
                f"{self.name}: rope_style {self.rope_style!r} / ffn_act {self.ffn_act!r}"
                f" not among {ROPE_STYLES} / {FFN_ACTIVATIONS}"
            )

    def config(self, **fields: Unpack[ShapeFields]) -> ModelConfig:
        """A ModelConfig of this architecture: the shapes given, the flags decided here."""
        return ModelConfig(
            **fields,
            arch=self.name,
            rope_style=self.rope_style,
            qkv_bias=self.qkv_bias,
            ffn_act=self.ffn_act,
            sub_norms=self.sub_norms,
        )


@dataclass(frozen=True)
class TensorSpec:
    """One packed matrix the runtime holds: y (rows,) = W (rows, cols) @ x (cols,)."""

    name: str  # GGUF tensor name ("output.residual" is ours: no GGUF tensor)
    rows: int
    cols: int
    role: str  # "token_embd", "output", "output_residual" or one of MATRIX_ROLES
    bits: int  # 1..4
    group_size: int  # scale group along K (PackedWeight.group_size)
    act_group: int  # activation-table group it reads (PackedWeight.act_group)
    layer: int = -1  # block index, -1 outside the blocks


@dataclass(frozen=True)
class VectorSpec:
    """One float32 vector the runtime holds (norm weights, biases) or the loader reads."""

    name: str
    size: int
    role: str  # "attn_norm", "ffn_norm", "output_norm", "attn_q_bias", ...
    layer: int = -1


def layer_bits(cfg: ModelConfig, role: str, layer: int, bits: int) -> int:
    """The bits=2 preset keeps the most sensitive tensors at 4 bits: the
    embedding/output table, attn_v, and the first and last layers."""
    if bits != 2:
        return bits
    if role in ("token_embd", "output", "attn_v") or layer in (0, cfg.n_layers - 1):
        return 4
    return 2


def group_size_for(bits: int, cols: int, source_type: str | None) -> int:
    """The scale group loading/repack.py gives a matrix: the source's own groups where it
    repacks exactly, else our quantizer's 64 (32 when 64 does not divide the row)."""
    exact = EXACT_GROUPS.get((bits, source_type)) if source_type is not None else None
    if exact is not None:
        return exact
    return 64 if cols % 64 == 0 else 32


def act_group_for(group_size: int) -> int:
    """PackedWeight.act_group: min(64, group_size), so 16 for 16-wide groups (K-quants' Q6_K, Q3_K, Q2_K)."""
    return 16 if group_size == 16 else (64 if group_size % 64 == 0 else 32)


def _matrices(cfg: ModelConfig) -> list[tuple[str, int, int, str, int]]:
    """(name, rows, cols, role, layer) of every matrix the file provides, in file-index order."""
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out = [("token_embd.weight", cfg.vocab_size, cfg.dim, "token_embd", -1)]
    if not cfg.tie_embeddings:
        out.append(("output.weight", cfg.vocab_size, cfg.dim, "output", -1))
    shapes = {
        "attn_q": (q_dim, cfg.dim),
        "attn_k": (kv_dim, cfg.dim),
        "attn_v": (kv_dim, cfg.dim),
        "attn_output": (cfg.dim, q_dim),
        "ffn_gate": (cfg.hidden_dim, cfg.dim),
        "ffn_up": (cfg.hidden_dim, cfg.dim),
        "ffn_down": (cfg.dim, cfg.hidden_dim),
    }
    for layer in range(cfg.n_layers):
        out += [(f"blk.{layer}.{role}.weight", *shapes[role], role, layer) for role in MATRIX_ROLES]
    return out


def output_source(cfg: ModelConfig) -> str:
    """The GGUF tensor the output layer multiplies by."""
    return "token_embd.weight" if cfg.tie_embeddings else "output.weight"


def tensor_plan(cfg: ModelConfig, bits: int, source: str | Mapping[str, str] | None = None) -> list[TensorSpec]:
    """Every matrix the runtime packs for `cfg` at `bits` (2 or 4), residual pass included.

    source: the GGML type name of the file's matrices ("Q8_0"), one per tensor name
        (ModelSummary.tensor_types), or None when unknown (then: our quantizer's groups,
        no residual pass). It decides the exact-repack groups and the residual pass.
    """

    def type_of(name: str) -> str | None:
        return source if source is None or isinstance(source, str) else source.get(name)

    plan = []
    for name, rows, cols, role, layer in _matrices(cfg):
        b = layer_bits(cfg, role, layer, bits)
        group = group_size_for(b, cols, type_of(name))
        plan.append(TensorSpec(name, rows, cols, role, b, group, act_group_for(group), layer))
    if bits == 4 and type_of(output_source(cfg)) in PRECISE_TYPES:  # the 2-bit preset stays small
        plan.append(
            TensorSpec(
                "output.residual",
                cfg.vocab_size,
                cfg.dim,
                "output_residual",
                RESIDUAL_BITS,
                RESIDUAL_GROUP,
                act_group_for(RESIDUAL_GROUP),
            )
        )
    return plan


def vector_plan(cfg: ModelConfig) -> list[VectorSpec]:
    """Every vector tensor the model reads from its file, in file-index order."""
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out = [VectorSpec("output_norm.weight", cfg.dim, "output_norm")]
    if cfg.rope_freqs:
        out.append(VectorSpec("rope_freqs.weight", cfg.head_dim // 2, "rope_freqs"))
    for layer in range(cfg.n_layers):
        b = f"blk.{layer}."
        out += [
            VectorSpec(b + "attn_norm.weight", cfg.dim, "attn_norm", layer),
            VectorSpec(b + "ffn_norm.weight", cfg.dim, "ffn_norm", layer),
        ]
        if cfg.qkv_bias:
            out += [
                VectorSpec(b + "attn_q.bias", q_dim, "attn_q_bias", layer),
                VectorSpec(b + "attn_k.bias", kv_dim, "attn_k_bias", layer),
                VectorSpec(b + "attn_v.bias", kv_dim, "attn_v_bias", layer),
            ]
        if cfg.sub_norms:
            out += [
                VectorSpec(b + "attn_sub_norm.weight", q_dim, "attn_sub_norm", layer),
                VectorSpec(b + "ffn_sub_norm.weight", cfg.hidden_dim, "ffn_sub_norm", layer),
            ]
    return out


# llama.cpp's file-index order: top-level tensors, then each block's in graph order
FILE_ORDER = (
    "token_embd",
    "output_norm",
    "output",
    "rope_freqs",
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "attn_q_bias",
    "attn_k_bias",
    "attn_v_bias",
    "attn_sub_norm",
    "ffn_sub_norm",
)


def gguf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the file must hold → its GGUF shape (ne0 first; a matrix is (cols, rows))."""
    entries: list[tuple[int, str, str, tuple[int, ...]]]  # (layer, role, name, GGUF shape)
    entries = [(layer, role, name, (cols, rows)) for name, rows, cols, role, layer in _matrices(cfg)]
    entries += [(v.layer, v.role, v.name, (v.size,)) for v in vector_plan(cfg)]
    entries.sort(key=lambda e: (e[0], FILE_ORDER.index(e[1])))
    return {name: shape for _, _, name, shape in entries}


def matrix_bytes(spec: TensorSpec) -> int:
    """Bytes of one PackedWeight (planes + fp16 scales), as LAYOUT.md §Weights lays it out:
    planes (m_pad/64, k_pad/8, bits, 64) uint8, scales (m_pad/64, n_groups, 2, 64) fp16."""
    tiles = -(-spec.rows // TILE_ROWS)
    # grouped scales keep k_pad = K; one scale per row pads K to a multiple of 64
    k_pad = spec.cols if spec.cols % spec.group_size == 0 else -(-spec.cols // 64) * 64
    n_groups = k_pad // spec.group_size
    return tiles * (k_pad // 8) * spec.bits * 64 + tiles * n_groups * 2 * 64 * 2


def packed_bytes(plan: list[TensorSpec]) -> int:
    """Bytes of all packed matrices: EngineInfo.packed_bytes, byte for byte."""
    return sum(matrix_bytes(spec) for spec in plan)


def kv_cache_bytes(cfg: ModelConfig, n_ctx: int) -> int:
    """Bytes of the fp16 K and V caches: (n_layers, n_kv_heads, n_ctx, head_dim) each."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * n_ctx * cfg.head_dim * KV_BYTES_PER_VALUE


def n_params(cfg: ModelConfig) -> int:
    """Weights the file holds for the model (every matrix and vector element)."""
    return sum(rows * cols for _, rows, cols, _, _ in _matrices(cfg)) + sum(v.size for v in vector_plan(cfg))


__all__ = [
    "Architecture",
    "ModelConfig",
    "RopeScaling",
    "ShapeFields",
    "TensorSpec",
    "VectorSpec",
    "act_group_for",
    "gguf_shapes",
    "group_size_for",
    "kv_cache_bytes",
    "layer_bits",
    "matrix_bytes",
    "n_params",
    "output_source",
    "packed_bytes",
    "tensor_plan",
    "vector_plan",
]
