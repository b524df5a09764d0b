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

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, Unpack

if TYPE_CHECKING:  # annotations only: this module stays standard library at run time
    from tmac_core.loading.gguf import GGUFFile

TILE_ROWS = 64  # kernels/LAYOUT.md §Weights: rows pad to a multiple of 64
GROUP_SIZES = (16, 32, 64, 128, 256)  # scale groups along K (kernels/layout.py GROUP_SIZES)
KV_BYTES_PER_VALUE = 2  # the KV cache holds fp16 K and V (models/_llama.pyx)
ROPE_STYLES = ("interleaved", "neox")  # pairs (2i, 2i+1) as llama, or (i, i + hd/2) as qwen2
FFN_ACTIVATIONS = ("silu", "relu2")  # gated FFN: down(act(gate) * up); relu2 = relu(g)² (BitNet b1.58)
# How a block's linear layers see their input: as it is, or quantized per token to int8
# by absmax first (BitNet's W1.58A8 training arithmetic; never the output layer's input)
ACT_QUANTS = ("none", "int8_token")

# Source types with more than ~5 bits per weight: their output layer would lose
# precision at 4 bits (SmolLM2's tied Q8_0 table: perplexity +10%), so where it is
# requantized ("as in the file" for a float one, the 4-bit preset for any) it runs at
# PRESET_OUTPUT_BITS.
PRECISE_TYPES = frozenset({"F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1"})
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})  # not quantized: "as in the file" means 4 bits (output layer 6)
# Source types the bits=2/4 presets repack without requantizing (loading/repack.py): Q4_0/Q4_1
# at 4 bits keep their 32-wide groups (Q4_1's scales as int8 sub-scales: PRESET_SUPER_MAX),
# TQ1_0/TQ2_0 at 2 bits their ternary codes in 128-wide groups.
EXACT_GROUPS = {(4, "Q4_0"): 32, (4, "Q4_1"): 32, (2, "TQ1_0"): 128, (2, "TQ2_0"): 128, (2, "I2_S"): 128}
# Such an output matrix runs at 6 bits in one pass: 6.5 bits per weight, where a second 4-bit pass
# on the 4-bit matrix's residual (quantizer versions 2-4) cost 9.5-10 for one more table pass. It is
# read whole every token: on BitNet b1.58 2B-4T's tied F16 table, 39% of the bytes per token with the
# two passes. SmolLM2, Alice ch. I-II, ctx 512: tied Q8_0 table at 4-bit preset 19.357 against 19.300
# with the residual pass (float 19.302); its F16 file "as in the file" 22.276 at 4.92 bits per weight
# against 22.259 at 5.55 (the body at 4 bits off its Q4_1 grid); 5 bits would give 19.969.
PRESET_OUTPUT_BITS = 6
FALLBACK_BITS = 4  # what "as in the file" runs a float or non-linear (IQ*) tensor at, by our quantizer
# the kernels' scale formats (kernels/LAYOUT.md, layout.py): F16 (sh, c) and SUPER (d, dmin, sc, mn);
# F16_SYM and SUPER_NOMIN are the same without the zero / min records, for symmetric sources
SCALES_F16, SCALES_SUPER, SCALES_F16_SYM, SCALES_SUPER_NOMIN = 0, 1, 2, 3
# The 4-bit preset's Q4_1 in the SUPER format: the file's fp16 (d, m) per 32 become int8 (sc, mn)
# under one fp16 (d, dmin) per super-block, 4 + 16/32 + 32/S bits per weight instead of 4 + 32/32.
# S: the largest multiple of 32 up to PRESET_SUPER_MAX dividing the row (192 for SmolLM2's 576-wide
# rows, 256 for its 1536-wide ones). SmolLM2 with the 6-bit output: perplexity 19.344 at 5.04 bits
# per weight; with S the whole row 19.469 at 4.96 (float 19.302).
PRESET_SUPER_MAX = 256


@dataclass(frozen=True)
class SourceFormat:
    """How the kernels hold one GGML type exactly: its codes as `bits`-bit planes, one
    (sub-)scale per `group_size` weights along K, and either the F16 scale format
    (super_size 0: per-group fp16 scale and offset, exact for these types) or the SUPER
    format (per `super_size` weights the file's fp16 d/dmin, per group its integer scale/min).
    symmetric: one zero code for every group (Q4_0, Q8_0, ternary) or no mins (Q6_K, Q3_K):
    the F16_SYM / SUPER_NOMIN formats, which store no offset or min records.
    """

    bits: int
    group_size: int
    super_size: int = 0
    symmetric: bool = False

    @property
    def scale_format(self) -> int:
        return scale_format_of(self.super_size, self.symmetric)


def scale_format_of(super_size: int, symmetric: bool) -> int:
    """The kernels' scale format of a matrix with these super-blocks (0: none) and symmetry."""
    if super_size:
        return SCALES_SUPER_NOMIN if symmetric else SCALES_SUPER
    return SCALES_F16_SYM if symmetric else SCALES_F16


# Every GGML type whose weights are exactly the kernels' weight model ("as in the file"
# mode: loading/exact.py decomposes them; kernels/LAYOUT.md "Source mappings").
EXACT_SOURCES: dict[str, SourceFormat] = {
    "Q2_K": SourceFormat(2, 16, 256),
    "Q3_K": SourceFormat(3, 16, 256, symmetric=True),
    "Q4_K": SourceFormat(4, 32, 256),
    "Q5_K": SourceFormat(5, 32, 256),
    "Q6_K": SourceFormat(6, 16, 256, symmetric=True),
    "Q4_1": SourceFormat(4, 32, 32),
    "Q5_1": SourceFormat(5, 32, 32),
    "Q4_0": SourceFormat(4, 32, symmetric=True),
    "Q5_0": SourceFormat(5, 32, symmetric=True),
    "Q8_0": SourceFormat(8, 32, symmetric=True),
    "TQ1_0": SourceFormat(2, 128, symmetric=True),
    "TQ2_0": SourceFormat(2, 128, symmetric=True),
}
# Ternary with one fp32 scale per tensor (BitNet's I2_S): exact too, its scale carried by the
# kernels' fp32 tensor_scale (loading/repack.py:_exact_ternary), not by loading/exact.py's blocks.
PER_TENSOR_TERNARY: dict[str, SourceFormat] = {"I2_S": SourceFormat(2, 128, symmetric=True)}
# GPTQ / EfficientQAT layers of a Hugging Face folder (loading/gptq.py) carry a source type
# name of our own, "GPTQ_W{bits}G{group}" (group -1: per output channel) plus "_ACT" when the
# checkpoint is act-order (desc_act): such a layer's kernel columns are its input channels
# sorted by group, and the runtime gathers its input by the permutation the loader stores
# under input_perm_name(name).
GPTQ_KERNEL_GROUPS = (16, 32, 64, 128, 256)  # gptq.KERNEL_GROUP_SIZES: groups the kernels run
# A GPTQ checkpoint keeps its embedding table in fp16, and "as in the file" runs that table at
# 8 bits rather than FALLBACK_BITS: only one row per token is read, so the bits cost memory,
# not speed, and at 4 bits it was the largest error of the tiny GPTQ models (logits 0.11
# relative L2 from transformers' against 0.01, tests/runtime/test_gptq_engine.py).
NATIVE_EMBEDDING_BITS = 8
_GPTQ_TYPE = re.compile(r"GPTQ_W([2-4])G(-1|[1-9][0-9]*)(_ACT)?")
BITS_MODES: tuple[int | None, ...] = (None, 4, 2)  # "as in the file", then the smaller/faster variants
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
    act_quant: str = "none"  # one of ACT_QUANTS

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
    act_quant: str = "none"

    def __post_init__(self) -> None:
        if (
            self.rope_style not in ROPE_STYLES
            or self.ffn_act not in FFN_ACTIVATIONS
            or self.act_quant not in ACT_QUANTS
        ):
            raise ValueError(
                f"{self.name}: rope_style {self.rope_style!r} / ffn_act {self.ffn_act!r} / act_quant"
                f" {self.act_quant!r} not among {ROPE_STYLES} / {FFN_ACTIVATIONS} / {ACT_QUANTS}"
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
            act_quant=self.act_quant,
        )


@dataclass(frozen=True)
class TensorSpec:
    """One packed matrix the runtime holds: y (rows,) = W (rows, cols) @ x (cols,)."""

    name: str  # GGUF tensor name
    rows: int
    cols: int
    role: str  # "token_embd", "output" or one of MATRIX_ROLES
    bits: int  # 1..8
    group_size: int  # scale group along K (PackedWeight.group_size)
    act_group: int  # activation-table group it reads (PackedWeight.act_group)
    layer: int = -1  # block index, -1 outside the blocks
    super_size: int = 0  # SUPER scale format: weights per super-block along K; 0: the F16 format
    source_type: str | None = None  # the GGML type whose blocks it keeps (exactly, but for the 4-bit
    # preset's Q4_1: int8 sub-scales, codes re-rounded to them); None: requantized
    input_perm: bool = False  # reads its input gathered by Weights[input_perm_name(name)] (act-order GPTQ)
    symmetric: bool = False  # the F16_SYM / SUPER_NOMIN scale formats (SourceFormat.symmetric)

    @property
    def scale_format(self) -> int:
        return scale_format_of(self.super_size, self.symmetric)

    @property
    def exact(self) -> bool:
        """Runs the file's own codes and scales (no requantization)."""
        return self.source_type is not None


@dataclass(frozen=True)
class VectorSpec:
    """One float32 vector the runtime holds (norm weights, biases) or the loader reads."""

    name: str
    size: int
    role: str  # "attn_norm", "ffn_norm", "output_norm", "attn_q_bias", ...
    layer: int = -1


def layer_bits(cfg: ModelConfig, role: str, layer: int, bits: int) -> int:
    """The bits=2 preset keeps the most sensitive tensors at 4 bits: the
    embedding/output table, attn_v, and the first and last layers. Its 2-bit block matrices
    are requantized activation-aware, calibrated on a shipped text (loading/calibrate.py)."""
    if bits != 2:
        return bits
    if role in ("token_embd", "output", "attn_v") or layer in (0, cfg.n_layers - 1):
        return 4
    return 2


def group_size_for(bits: int, cols: int, source_type: str | None) -> int:
    """The scale group loading/repack.py gives a matrix at the bits=2/4 presets: the source's
    own groups where it repacks exactly, else our quantizer's 64 (32 when 64 does not divide the row)."""
    exact = EXACT_GROUPS.get((bits, source_type)) if source_type is not None else None
    if exact is not None:
        return exact
    return 64 if cols % 64 == 0 else 32


def kept_symmetric(source_type: str | None) -> bool:
    """A source type whose kept codes run in a symmetric scale format (SourceFormat.symmetric)."""
    if source_type is None:
        return False
    fmt = EXACT_SOURCES.get(source_type) or PER_TENSOR_TERNARY.get(source_type)
    return fmt is not None and fmt.symmetric


def preset_super_size(bits: int, cols: int, source_type: str | None) -> int:
    """The super-block the bits=2/4 presets give a matrix (see PRESET_SUPER_MAX); 0: the F16 format."""
    if (bits, source_type) != (4, "Q4_1") or cols % 32:
        return 0
    return max(s for s in range(32, min(cols, PRESET_SUPER_MAX) + 1, 32) if cols % s == 0)


def gptq_type(bits: int, group_size: int, act_order: bool) -> str:
    """The source type name of a GPTQ layer (see GPTQ_KERNEL_GROUPS)."""
    return f"GPTQ_W{bits}G{group_size}" + ("_ACT" if act_order else "")


def parse_gptq_type(source_type: str | None) -> tuple[int, int, bool] | None:
    """(bits, GPTQ group size or -1, act-order) of a GPTQ source type name; None for any other type."""
    m = _GPTQ_TYPE.fullmatch(source_type) if source_type is not None else None
    return None if m is None else (int(m.group(1)), int(m.group(2)), m.group(3) is not None)


def gptq_label(source_type: str) -> str | None:
    """How a GPTQ source reads to a person: "native GPTQ w2g128" ("... w4 per-channel", "..., act-order")."""
    parsed = parse_gptq_type(source_type)
    if parsed is None:
        return None
    bits, group, act = parsed
    grouping = f"g{group}" if group > 0 else " per-channel"
    return f"native GPTQ w{bits}{grouping}" + (", act-order" if act else "")


def gptq_format(bits: int, group_size: int, cols: int) -> SourceFormat | None:
    """The SUPER format loading/gptq.py unpacks a GPTQ layer of `cols` inputs to (G = S = group,
    sc = 1, mn = zero point, d = dmin = scale): per channel (group -1, or a group as long as the
    row) one scale per row is the super-block and the kernel group is the largest that divides
    the row. None when the kernels cannot run the groups (gptq.py refuses such a layer)."""
    if group_size == -1 or group_size >= cols:
        kernel = next((g for g in reversed(GPTQ_KERNEL_GROUPS) if cols % g == 0), None)
        return None if kernel is None else SourceFormat(bits, kernel, cols)
    if group_size not in GPTQ_KERNEL_GROUPS or cols % group_size:
        return None
    return SourceFormat(bits, group_size, group_size)


def input_perm_name(name: str) -> str:
    """The loader's Weights entry holding an act-order layer's input permutation: int32 (cols,),
    kernel column i reads input channel perm[i]."""
    return name + ".perm"


def exact_format(source_type: str | None, cols: int) -> SourceFormat | None:
    """The format "as in the file" runs a matrix of this type in, or None when it is
    requantized (float and non-linear types, or a row that is not whole groups)."""
    if source_type is None:
        return None
    gptq = parse_gptq_type(source_type)
    if gptq is not None:
        return gptq_format(gptq[0], gptq[1], cols)
    fmt = EXACT_SOURCES.get(source_type) or PER_TENSOR_TERNARY.get(source_type)
    return fmt if fmt is not None and cols % fmt.group_size == 0 else None


def is_quantized(source: str | Mapping[str, str] | None) -> bool:
    """Whether "as in the file" means the file's own quantization: some matrix type is not float.
    A float (or unknown) source runs at 4 bits by our quantizer instead."""
    if source is None:
        return False
    types = {source} if isinstance(source, str) else set(source.values())
    return bool(types - FLOAT_TYPES)


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


def tensor_plan(cfg: ModelConfig, bits: int | None, source: str | Mapping[str, str] | None = None) -> list[TensorSpec]:
    """Every matrix the runtime packs for `cfg`.

    bits: None for "as in the file" (each exact type at its own bits and scale format,
        EXACT_SOURCES, and GPTQ layers in gptq_format; the rest at 4 bits by our quantizer),
        or the 4 / 2 presets (our quantizer; Q4_0 at 4 and TQ1_0/TQ2_0 at 2 keep their codes,
        Q4_1 at 4 its 32-wide blocks in the SUPER format, preset_super_size).
    source: the GGML type name of the file's matrices ("Q8_0"), one per tensor name
        (ModelSummary.tensor_types), or None when unknown (then: our quantizer's groups,
        output layer at 4 bits). It decides the exact-repack formats and the output layer's bits.
    """

    def type_of(name: str) -> str | None:
        return source if source is None or isinstance(source, str) else source.get(name)

    native = bits is None and any(
        parse_gptq_type(t) for t in ([source] if isinstance(source, str) else (source or {}).values())
    )
    plan = []
    for name, rows, cols, role, layer in _matrices(cfg):
        t = type_of(name)
        fmt = exact_format(t, cols) if bits is None else None
        if fmt is not None:
            spec = TensorSpec(
                name,
                rows,
                cols,
                role,
                fmt.bits,
                fmt.group_size,
                act_group_for(fmt.group_size),
                layer,
                fmt.super_size,
                t,
                input_perm=(parse_gptq_type(t) or (0, 0, False))[2],
                symmetric=fmt.symmetric,
            )
        else:
            b = FALLBACK_BITS if bits is None else layer_bits(cfg, role, layer, bits)
            if bits in (None, 4) and name == output_source(cfg) and t in PRECISE_TYPES:
                b = PRESET_OUTPUT_BITS
            if native and role == "token_embd" and t in FLOAT_TYPES:
                b = NATIVE_EMBEDDING_BITS
            group = group_size_for(b, cols, t)
            kept = t if t is not None and EXACT_GROUPS.get((b, t)) == group else None
            spec = TensorSpec(
                name,
                rows,
                cols,
                role,
                b,
                group,
                act_group_for(group),
                layer,
                preset_super_size(b, cols, kept),
                source_type=kept,
                symmetric=kept_symmetric(kept),
            )
        plan.append(spec)
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
    """Bytes of one PackedWeight as kernels/LAYOUT.md §Weights lays it out: planes
    (m_pad/64, k_pad/8, bits, 64) uint8, then for the F16 format scales (m_pad/64,
    n_groups, 2, 64) fp16; for SUPER scales (m_pad/64, n_super, 2, 64) fp16 (d, dmin)
    and sub (m_pad/64, n_groups, 2, 64) int8 (sc, mn); the symmetric formats (F16_SYM,
    SUPER_NOMIN) one record where these have 2."""
    tiles = -(-spec.rows // TILE_ROWS)
    # grouped scales keep k_pad = K; one scale per row pads K to a multiple of 64
    k_pad = spec.cols if spec.cols % spec.group_size == 0 else -(-spec.cols // 64) * 64
    n_groups = k_pad // spec.group_size
    planes = tiles * (k_pad // 8) * spec.bits * 64
    records = 1 if spec.symmetric else 2
    if spec.super_size:
        return planes + tiles * (k_pad // spec.super_size) * records * 64 * 2 + tiles * n_groups * records * 64
    return planes + tiles * n_groups * records * 64 * 2


def packed_bytes(plan: list[TensorSpec]) -> int:
    """Bytes of all packed matrices: EngineInfo.packed_bytes, byte for byte."""
    return sum(matrix_bytes(spec) for spec in plan)


def bits_per_weight(cfg: ModelConfig, bits: int | None, source: str | Mapping[str, str] | None = None) -> float:
    """Bits per weight that will run: packed bytes over the
    matrices' weights, as EngineInfo.bits_per_weight measures it after loading."""
    plan = tensor_plan(cfg, bits, source)
    weights = sum(spec.rows * spec.cols for spec in plan)
    return 8.0 * packed_bytes(plan) / max(weights, 1)


@dataclass(frozen=True)
class SourceSummary:
    """What loading a file means, for the UI before it loads (tmac_core.plan.source_summary)."""

    type_mix: dict[str, int]  # GGML type name → weights of the model's matrices stored in it
    exact: bool  # "as in the file" repacks every matrix without requantizing
    requantized: tuple[str, ...]  # types "as in the file" requantizes to 4 bits (float, IQ*), sorted
    quantized: bool  # a quantized source: "as in the file" is the default (is_quantized)
    bits_per_weight: dict[int | None, float]  # bits mode (BITS_MODES: None, 4, 2) → bits per weight that runs


def source_summary(cfg: ModelConfig, source: Mapping[str, str]) -> SourceSummary:
    """The source type mix, whether "as in the file" is exact, and the bits per weight of every mode."""
    mix: dict[str, int] = {}
    requantized = set()
    for spec in tensor_plan(cfg, None, source):
        t = source.get(spec.name, "?")
        mix[t] = mix.get(t, 0) + spec.rows * spec.cols
        if not spec.exact:
            requantized.add(t)
    return SourceSummary(
        type_mix=dict(sorted(mix.items(), key=lambda kv: -kv[1])),
        exact=not requantized,
        requantized=tuple(sorted(requantized)),
        quantized=is_quantized(source),
        bits_per_weight={mode: bits_per_weight(cfg, mode, source) for mode in BITS_MODES},
    )


def mode_name(bits: int | None) -> str:
    """How the CLI and logs spell a bits mode: "file" for None, else the number."""
    return "file" if bits is None else str(bits)


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
    "BITS_MODES",
    "EXACT_SOURCES",
    "SourceFormat",
    "SourceSummary",
    "act_group_for",
    "bits_per_weight",
    "exact_format",
    "gguf_shapes",
    "gptq_format",
    "gptq_label",
    "gptq_type",
    "input_perm_name",
    "parse_gptq_type",
    "kept_symmetric",
    "preset_super_size",
    "scale_format_of",
    "group_size_for",
    "is_quantized",
    "kv_cache_bytes",
    "layer_bits",
    "matrix_bytes",
    "mode_name",
    "n_params",
    "output_source",
    "packed_bytes",
    "source_summary",
    "tensor_plan",
    "vector_plan",
]
