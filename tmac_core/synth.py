"""Random-weight GGUF files for benchmarks: real shapes and timings, garbage text.

`write_synthetic(path, SynthSpec(...))` streams the tensors to disk a slab of rows at
a time, so a 1.17B-parameter file needs memory for one slab, not for the model.
Weights are N(0, 0.02), norms 1. Ternary types (tq1_0, tq2_0, i2_s: BitNet b1.58
files) hold those weights ternarized with one scale per tensor, as BitNet's converters
write them, and keep the embedding table F16. The vocabulary is byte-level BPE ("gpt2"):
three ChatML control tokens, the 256 byte tokens, merged pairs, then merged triples up
to vocab_size (a Llama-3-sized 128256 included), so both
our tokenizer and llama.cpp's load the file and tokenize any text. The tensors are the
ones tmac_core.plan lists for the spec's ModelConfig. Imports numpy, tmac_core.loading
and the plan: no Qt.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tmac_core.loading.gguf import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    I2_S_BLOCK,
    I2_S_TAIL_BYTES,
    GGMLType,
    ValueType,
    data_layout,
)
from tmac_core.loading.gguf_write import encode_tensor, encode_value
from tmac_core.models import ARCHITECTURES
from tmac_core.plan import ModelConfig, gguf_shapes, n_params
from tmac_core.tokenizer.bpe import bytes_to_unicode

WEIGHT_TYPES = {
    "f32": GGMLType.F32,
    "f16": GGMLType.F16,
    "bf16": GGMLType.BF16,
    "q8_0": GGMLType.Q8_0,
    "q4_0": GGMLType.Q4_0,
    "q4_1": GGMLType.Q4_1,
    "tq1_0": GGMLType.TQ1_0,
    "tq2_0": GGMLType.TQ2_0,
    "i2_s": GGMLType.I2_S,
}
TERNARY = frozenset({GGMLType.TQ1_0, GGMLType.TQ2_0, GGMLType.I2_S})
# llama.cpp's `enum llama_ftype` for general.file_type (informational; bitnet.cpp's
# I2_S value was not checked, so an i2_s file does not state one)
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "bf16": 32, "tq1_0": 36, "tq2_0": 37}
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MAX_VOCAB = len(SPECIALS) + 256 + 256 * 256 * 257  # specials, bytes, byte pairs, pairs + a byte
SLAB_ELEMENTS = 1 << 23  # rows generated and encoded together: ~32 MB of float32
STD = 0.02
# BitNet's absmean weight scale γ = mean|w| of a tensor, for N(0, STD) weights: its
# expectation, so every slab of a tensor shares one scale as a per-tensor γ must
TERNARY_SCALE = STD * float(np.sqrt(2 / np.pi))


# The 1.17B benchmark model (tests/bench): TinyLlama's shape with SmolLM2's vocabulary.
BENCH_CONFIG = ARCHITECTURES["llama"].config(
    dim=2048, hidden_dim=5632, n_layers=22, n_heads=32, n_kv_heads=4, head_dim=64, vocab_size=49152, n_ctx_train=4096
)


# microsoft/bitnet-b1.58-2B-4T's shapes (its GGUF metadata, research/native-lowbit.md §2.8)
BITNET_2B4T_CONFIG = ARCHITECTURES["bitnet-b1.58"].config(
    dim=2560,
    hidden_dim=6912,
    n_layers=30,
    n_heads=20,
    n_kv_heads=5,
    head_dim=128,
    vocab_size=128256,
    n_ctx_train=4096,
    rope_theta=500000.0,
    tie_embeddings=True,
)


@dataclass(frozen=True)
class SynthSpec:
    """The model to write (its ModelConfig) and how to fill it."""

    config: ModelConfig = BENCH_CONFIG
    weight_type: str = "q4_0"
    add_bos: bool = False  # the vocabulary asks for a BOS before every text (Llama-3 style)
    seed: int = 0
    norm_jitter: float = 0.0  # norm weights 1 + norm_jitter·N(0, 1) (tests: make them matter)

    def check(self) -> None:
        """ValueError naming the first shape llama.cpp or our runtime would refuse."""
        c = self.config
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"weight type {self.weight_type!r} is not one of {', '.join(WEIGHT_TYPES)}")
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "n_ctx_train"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(c, name)}")
        if c.dim % c.n_heads or (c.dim // c.n_heads) % 2 or c.head_dim != c.dim // c.n_heads:
            raise ValueError(f"{c.n_heads} heads must split dim {c.dim} into even head sizes")
        if c.n_heads % c.n_kv_heads:
            raise ValueError(f"{c.n_kv_heads} kv heads do not divide {c.n_heads} heads")
        block = max(data_layout(WEIGHT_TYPES[self.weight_type])[0], 32)
        if c.dim % block or c.hidden_dim % block:
            raise ValueError(f"dim and hidden_dim must be multiples of {block}, got {c.dim} and {c.hidden_dim}")
        if not len(SPECIALS) + 256 < c.vocab_size <= MAX_VOCAB:
            raise ValueError(
                f"vocab_size must be in [{len(SPECIALS) + 257}, {MAX_VOCAB}]"
                " (specials, 256 bytes, at least one merged pair)"
            )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> numpy shape (rows, row length), in file order: the embedding
        table, the blocks, then the output norm and layer (the order fixes each
        tensor's random stream, so it stays as the benchmark files were written)."""
        shapes = {name: shape[::-1] for name, shape in gguf_shapes(self.config).items()}
        place = {name: 0 if name == "token_embd.weight" else 1 if name.startswith("blk.") else 2 for name in shapes}
        return {name: shapes[name] for name in sorted(shapes, key=place.__getitem__)}

    @property
    def n_params(self) -> int:
        return n_params(self.config)


def vocabulary(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges: specials, the 256 byte tokens, then two-byte
    merges, commonest-looking bytes (space, letters, digits) first, then three-byte
    merges (a pair token and a byte) when the pairs run out."""
    chars = bytes_to_unicode()
    order = sorted(
        range(256),
        key=lambda b: (
            b != 0x20,
            not chr(b).islower(),
            not chr(b).isalpha(),
            not chr(b).isdigit(),
            not 0x21 <= b < 0x7F,
            b,
        ),
    )
    n_merges = vocab_size - len(SPECIALS) - 256
    merges = [f"{chars[a]} {chars[b]}" for a in order for b in order][:n_merges]
    if n_merges > len(merges):  # pairs exhausted: a pair token, then one more byte (lazily: 16.7M exist)
        pairs = [m.replace(" ", "") for m in merges]
        triples = (f"{p} {chars[b]}" for p in pairs for b in order)
        merges += itertools.islice(triples, n_merges - len(merges))
    tokens = list(SPECIALS) + [chars[b] for b in range(256)] + [m.replace(" ", "") for m in merges]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))  # CONTROL, NORMAL
    return tokens, types, merges


def _metadata(spec: SynthSpec) -> list[tuple[str, object, ValueType, ValueType | None]]:
    c = spec.config
    tokens, types, merges = vocabulary(c.vocab_size)
    s, u, f = ValueType.STRING, ValueType.UINT32, ValueType.FLOAT32
    p = c.arch + "."
    size = f"{spec.n_params / 1e9:.2f}B" if spec.n_params >= 1e9 else f"{spec.n_params / 1e6:.1f}M"
    file_type = [("general.file_type", FILE_TYPES[spec.weight_type], u, None)] if spec.weight_type in FILE_TYPES else []
    return [
        ("general.architecture", c.arch, s, None),
        ("general.name", f"synthetic {c.arch} {size} ({spec.weight_type})", s, None),
        *file_type,
        (p + "block_count", c.n_layers, u, None),
        (p + "context_length", c.n_ctx_train, u, None),
        (p + "embedding_length", c.dim, u, None),
        (p + "feed_forward_length", c.hidden_dim, u, None),
        (p + "attention.head_count", c.n_heads, u, None),
        (p + "attention.head_count_kv", c.n_kv_heads, u, None),
        (p + "rope.freq_base", c.rope_theta, f, None),
        (p + "attention.layer_norm_rms_epsilon", c.norm_eps, f, None),
        (p + "rope.dimension_count", c.head_dim, u, None),
        (p + "vocab_size", c.vocab_size, u, None),
        ("tokenizer.ggml.model", "gpt2", s, None),
        ("tokenizer.ggml.pre", "gpt-2", s, None),
        ("tokenizer.ggml.tokens", tokens, ValueType.ARRAY, s),
        ("tokenizer.ggml.token_type", types, ValueType.ARRAY, ValueType.INT32),
        ("tokenizer.ggml.merges", merges, ValueType.ARRAY, s),
        ("tokenizer.ggml.bos_token_id", 1, u, None),
        ("tokenizer.ggml.eos_token_id", 2, u, None),
        ("tokenizer.ggml.padding_token_id", 0, u, None),
        ("tokenizer.ggml.add_bos_token", spec.add_bos, ValueType.BOOL, None),
        ("tokenizer.chat_template", CHATML, s, None),
    ]


def _tensor_type(spec: SynthSpec, name: str, shape: tuple[int, ...]) -> GGMLType:
    t = WEIGHT_TYPES[spec.weight_type]
    if len(shape) == 1:
        return GGMLType.F32
    return GGMLType.F16 if t in TERNARY and name == "token_embd.weight" else t


def _nbytes(ggml_type: GGMLType, shape: tuple[int, ...]) -> int:
    block, block_bytes, tail = data_layout(ggml_type)
    return int(np.prod(shape)) // block * block_bytes + tail


def ternarize(x: np.ndarray, scale: float) -> np.ndarray:
    """BitNet's weight quantization with a given absmean γ: clamp(round(x/γ), −1, 1) as int8."""
    return np.clip(np.rint(x / np.float32(scale)), -1, 1).astype(np.int8)


def encode_tq2_0(t: np.ndarray, scale: float) -> np.ndarray:
    """Ternary values (n,) (n a multiple of 256) as TQ2_0 blocks {uint8 qs[64]; half d}:
    element 128c + 32l + m in qs[32c + m] bits 2l..2l+1 (ggml quantize_row_tq2_0_ref)."""
    codes = (t.reshape(-1, 2, 4, 32) + 1).astype(np.uint8)
    qs = (codes << (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]).sum(axis=2, dtype=np.uint8)
    d = np.full((len(codes), 1), scale, "<f2").view(np.uint8)
    return np.concatenate([qs.reshape(-1, 64), d], axis=1).reshape(-1)


def _trits_byte(codes: np.ndarray) -> np.ndarray:
    """ggml's TQ1_0 byte of trits (most significant first, 5 of them): ceil(v·256/243)."""
    v = np.zeros(codes.shape[1:], np.uint16)
    for c in codes:
        v = v * 3 + c
    return ((v * 256 + 242) // 243).astype(np.uint8)


def encode_tq1_0(t: np.ndarray, scale: float) -> np.ndarray:
    """Ternary values (n,) as TQ1_0 blocks {uint8 qs[48]; uint8 qh[4]; half d}
    (ggml quantize_row_tq1_0_ref): qs[m] carries elements m + 32n, qs[32 + m]
    elements 160 + m + 16n, qh[j] elements 240 + j + 4n with a trailing ×3."""
    c = (t.reshape(-1, 256) + 1).astype(np.uint16)
    head = _trits_byte(c[:, :160].reshape(-1, 5, 32).transpose(1, 0, 2))
    mid = _trits_byte(c[:, 160:240].reshape(-1, 5, 16).transpose(1, 0, 2))
    tail4 = c[:, 240:256].reshape(-1, 4, 4).transpose(1, 0, 2)  # [n][block][j] = element 240 + 4n + j
    v = np.zeros(tail4.shape[1:], np.uint16)
    for digit in tail4:
        v = v * 3 + digit
    qh = ((v * 3 * 256 + 242) // 243).astype(np.uint8)
    d = np.full((len(c), 1), scale, "<f2").view(np.uint8)
    return np.concatenate([head, mid, qh, d], axis=1).reshape(-1)


def encode_i2_s_codes(t: np.ndarray) -> np.ndarray:
    """Ternary values (n,) (n a multiple of 128) as I2_S code bytes, without the tail:
    element j of each 128-block in byte j % 32 at bits 6 − 2·(j // 32)
    (loading/dequant.py:i2_s_codes reads it back)."""
    codes = (t.reshape(-1, 4, 32) + 1).astype(np.uint8)
    shifts = np.array([6, 4, 2, 0], np.uint8)[None, :, None]
    return (codes << shifts).sum(axis=1, dtype=np.uint8).reshape(-1)


def i2_s_tail(scale: float) -> bytes:
    """The 32 bytes after an I2_S tensor's codes: the fp32 γ, then zeros."""
    return struct.pack("<f", scale) + bytes(I2_S_TAIL_BYTES - 4)


def encode_ternary(x: np.ndarray, ggml_type: GGMLType, scale: float = TERNARY_SCALE) -> np.ndarray:
    """Rows of float weights ternarized with γ = scale and encoded (I2_S: codes only;
    the tensor's tail follows its last slab)."""
    t = ternarize(x.reshape(-1), scale)
    if ggml_type is GGMLType.TQ2_0:
        return encode_tq2_0(t, scale)
    if ggml_type is GGMLType.TQ1_0:
        return encode_tq1_0(t, scale)
    if t.size % I2_S_BLOCK:
        raise ValueError(f"I2_S needs a multiple of {I2_S_BLOCK} values, got {t.size}")
    return encode_i2_s_codes(t)


def _header(spec: SynthSpec, shapes: dict[str, tuple[int, ...]]) -> bytes:
    """GGUF v3 header, metadata and tensor index (ne0 first), padded to the alignment."""
    out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", 3, len(shapes), len(_metadata(spec))))
    for key, value, vtype, etype in _metadata(spec):
        out += encode_value(key, ValueType.STRING) + struct.pack("<I", vtype) + encode_value(value, vtype, etype)
    offset = 0
    for name, shape in shapes.items():
        ggml_type = _tensor_type(spec, name, shape)
        ne = shape[::-1]
        out += encode_value(name, ValueType.STRING) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset)
        offset += -(-_nbytes(ggml_type, shape) // DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
    out += bytes(-len(out) % DEFAULT_ALIGNMENT)
    return bytes(out)


def write_synthetic(
    path: str | os.PathLike[str], spec: SynthSpec, progress: Callable[[float], None] | None = None
) -> int:
    """Write the model to `path` (atomically: a temp file, then a rename); returns its size.

    Each tensor draws from its own seeded generator, so a tensor's values depend on
    the seed and its name's position only, not on the slab size.
    """
    spec.check()
    shapes = spec.tensor_shapes()
    total = sum(int(np.prod(s)) for s in shapes.values())
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    done = 0
    try:
        with open(tmp, "wb") as f:
            f.write(_header(spec, shapes))
            for index, (name, shape) in enumerate(shapes.items()):
                ggml_type = _tensor_type(spec, name, shape)
                if len(shape) == 1:  # norms 1 (+ jitter), biases 0
                    fill = np.ones if name.endswith(".weight") else np.zeros
                    v = fill(shape, np.float32)
                    if spec.norm_jitter and name.endswith(".weight"):
                        rng = np.random.default_rng([spec.seed, index])
                        v += np.float32(spec.norm_jitter) * rng.standard_normal(shape, dtype=np.float32)
                    f.write(encode_tensor(v, ggml_type).tobytes())
                else:
                    rng = np.random.default_rng([spec.seed, index])
                    rows, k = shape
                    slab = max(1, SLAB_ELEMENTS // k)
                    for r0 in range(0, rows, slab):
                        x = rng.standard_normal((min(slab, rows - r0), k), dtype=np.float32)
                        x *= np.float32(STD)
                        enc = encode_ternary(x, ggml_type) if ggml_type in TERNARY else encode_tensor(x, ggml_type)
                        f.write(enc.tobytes())
                    if ggml_type is GGMLType.I2_S:
                        f.write(i2_s_tail(TERNARY_SCALE))
                f.write(bytes(-f.tell() % DEFAULT_ALIGNMENT))
                done += int(np.prod(shape))
                if progress:
                    progress(done / total)
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return size


# -- GPTQ folders (EfficientQAT's -GPTQ exports) ------------------------------------------

GPTQ_BITS = (2, 3, 4)
# fp16 GPTQ scales drawn uniformly from these ranges: s·(q − z) then spreads about like
# N(0, STD) weights for uniform codes and zero points
GPTQ_SCALES = {2: (0.008, 0.016), 3: (0.004, 0.008), 4: (0.002, 0.004)}
_LLAMA_PROJECTIONS = (
    ("self_attn.q_proj", "dim", "dim"),  # (name, output rows, input length) as ModelConfig fields
    ("self_attn.k_proj", "kv_dim", "dim"),
    ("self_attn.v_proj", "kv_dim", "dim"),
    ("self_attn.o_proj", "dim", "dim"),
    ("mlp.gate_proj", "hidden_dim", "dim"),
    ("mlp.up_proj", "hidden_dim", "dim"),
    ("mlp.down_proj", "dim", "hidden_dim"),
)


@dataclass(frozen=True)
class GPTQSynthSpec:
    """A Llama checkpoint folder in EfficientQAT's `-GPTQ` export format (GPTQModel,
    `checkpoint_format` gptq_v2, asymmetric, desc_act false): every projection as qweight /
    qzeros / scales / g_idx, fp16 embeddings, norms and lm_head, config.json with its
    quantization_config, and a byte-level BPE tokenizer.json (the synthetic vocabulary)."""

    config: ModelConfig = BENCH_CONFIG
    bits: int = 2
    group_size: int = 128
    add_bos: bool = False
    seed: int = 0

    def check(self) -> None:
        c = self.config
        if c.arch != "llama":
            raise ValueError(f"GPTQ folders are written for the llama architecture, not {c.arch!r}")
        if self.bits not in GPTQ_BITS:
            raise ValueError(f"GPTQ bits must be one of {GPTQ_BITS}, got {self.bits}")
        SynthSpec(c, weight_type="f16").check()  # the same shape rules as a GGUF file's
        for size in (c.dim, c.hidden_dim):
            if size % self.group_size:
                raise ValueError(f"group_size {self.group_size} does not divide {size}")
        if (c.n_kv_heads * c.head_dim) % 32:
            raise ValueError("the key/value width must be a multiple of 32 (qzeros packs 32 bits along it)")

    def layer_shape(self, field_out: str, field_in: str) -> tuple[int, int]:
        c = self.config
        width = {"dim": c.dim, "kv_dim": c.n_kv_heads * c.head_dim, "hidden_dim": c.hidden_dim}
        return width[field_out], width[field_in]

    def tensors(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Hugging Face tensor name -> (safetensors dtype, shape), in file order."""
        c = self.config
        out: dict[str, tuple[str, tuple[int, ...]]] = {"model.embed_tokens.weight": ("F16", (c.vocab_size, c.dim))}
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = ("F16", (c.dim,))
            out[p + "post_attention_layernorm.weight"] = ("F16", (c.dim,))
            for proj, rows_field, k_field in _LLAMA_PROJECTIONS:
                n, k = self.layer_shape(rows_field, k_field)
                out[f"{p}{proj}.qweight"] = ("I32", (k * self.bits // 32, n))
                out[f"{p}{proj}.qzeros"] = ("I32", (k // self.group_size, n * self.bits // 32))
                out[f"{p}{proj}.scales"] = ("F16", (k // self.group_size, n))
                out[f"{p}{proj}.g_idx"] = ("I32", (k,))
        out["model.norm.weight"] = ("F16", (c.dim,))
        if not c.tie_embeddings:
            out["lm_head.weight"] = ("F16", (c.vocab_size, c.dim))
        return out

    @property
    def n_params(self) -> int:
        return n_params(self.config)

    def quantization_config(self) -> dict[str, object]:
        """What GPTQModel's save_quantized writes for EfficientQAT's transfer script
        (QuantizeConfig(bits, group_size, sym=False, desc_act=False, format='gptq_v2'))."""
        return {
            "bits": self.bits,
            "group_size": self.group_size,
            "desc_act": False,
            "sym": False,
            "lm_head": False,
            "quant_method": "gptq",
            "checkpoint_format": "gptq_v2",
            "format": "gptq_v2",
            "pack_dtype": "int32",
            "damp_percent": 0.01,
            "static_groups": False,
            "true_sequential": True,
            "meta": {"quantizer": ["gptqmodel:synthetic"]},
        }


def gptq_tensor(spec: GPTQSynthSpec, index: int, name: str, shape: tuple[int, ...], r0: int, r1: int) -> np.ndarray:
    """Rows r0..r1 of tensor `name` (position `index` in spec.tensors()): the same values
    whatever the slab, so a test regenerates what the writer wrote. qweight and qzeros are
    uniform random int32 words (every packed field a uniform code or zero point), scales
    uniform in GPTQ_SCALES, g_idx k // group_size, norms 1, embeddings N(0, STD)."""
    part = name.rpartition(".")[2]
    if part == "g_idx":
        return (np.arange(r0, r1, dtype=np.int32) // spec.group_size).astype("<i4")
    if len(shape) == 1:
        return np.ones(r1 - r0, "<f2")
    width = shape[1]
    rng = np.random.default_rng([spec.seed, index, r0])  # one stream per slab start: slabs fixed below
    if part in ("qweight", "qzeros"):
        return np.frombuffer(rng.bytes(4 * (r1 - r0) * width), "<i4").reshape(r1 - r0, width)
    if part == "scales":
        lo, hi = GPTQ_SCALES[spec.bits]
        return rng.uniform(lo, hi, (r1 - r0, width)).astype("<f2")
    return (rng.standard_normal((r1 - r0, width), dtype=np.float32) * np.float32(STD)).astype("<f2")


def gptq_tensor_values(spec: GPTQSynthSpec, name: str) -> np.ndarray:
    """The whole of tensor `name` as write_gptq_folder writes it (tests; small models)."""
    tensors = spec.tensors()
    index = list(tensors).index(name)
    shape = tensors[name][1]
    return np.concatenate([gptq_tensor(spec, index, name, shape, r0, r1) for r0, r1 in _slabs(shape)])


def _slabs(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Row ranges a tensor is generated in: ~SLAB_ELEMENTS each (fixed: they seed the values)."""
    rows = shape[0]
    step = max(1, SLAB_ELEMENTS // (shape[1] if len(shape) > 1 else rows))
    return [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]


def _safetensors_header(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> bytes:
    """u64 length + JSON header (padded with spaces to 8 bytes, as the safetensors package
    writes it), tensors contiguous in the given order."""
    import json

    item = {"F16": 2, "I32": 4}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        nbytes = item[dtype] * int(np.prod(shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _hf_config(spec: GPTQSynthSpec) -> dict[str, object]:
    c = spec.config
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": c.dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.n_ctx_train,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
        "quantization_config": spec.quantization_config(),
    }


def _tokenizer_files(spec: GPTQSynthSpec) -> dict[str, object]:
    """tokenizer.json (byte-level BPE: the GGUF files' synthetic vocabulary), tokenizer_config.json
    and generation_config.json."""
    tokens, _types, merges = vocabulary(spec.config.vocab_size)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    added: list[dict[str, object]] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
        | {"special": True}
        for i, t in enumerate(SPECIALS)
    ]
    model: dict[str, object] = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None}
    model |= {"end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    model |= {"vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges}
    return {
        "tokenizer.json": {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": None,
            "decoder": byte_level,
            "model": model,
        },
        "tokenizer_config.json": {
            "bos_token": SPECIALS[1],
            "eos_token": SPECIALS[2],
            "add_bos_token": spec.add_bos,
            "chat_template": CHATML,
        },
        "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2},
    }


def write_gptq_folder(
    folder: str | os.PathLike[str], spec: GPTQSynthSpec, progress: Callable[[float], None] | None = None
) -> int:
    """Write the checkpoint folder (model.safetensors streamed a slab at a time, so an 8B model
    needs memory for one slab; the folder appears under its name only when complete).
    Returns model.safetensors' size."""
    import json
    import shutil

    spec.check()
    tensors = spec.tensors()
    folder = os.fspath(folder)
    tmp = f"{folder}.tmp{os.getpid()}"
    total = sum(int(np.prod(shape)) for _, shape in tensors.values())
    done = 0
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
            f.write(_safetensors_header(tensors))
            for index, (name, (_dtype, shape)) in enumerate(tensors.items()):
                for r0, r1 in _slabs(shape):
                    f.write(gptq_tensor(spec, index, name, shape, r0, r1).tobytes())
                done += int(np.prod(shape))
                if progress:
                    progress(done / total)
            size = f.tell()
        files = {"config.json": _hf_config(spec), **_tokenizer_files(spec)}
        for name, value in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as out:
                json.dump(value, out, ensure_ascii=False)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return size
