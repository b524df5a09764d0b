"""Random-weight GGUF files for benchmarks: real shapes and timings, garbage text.

`write_synthetic(path, SynthSpec(...))` streams the tensors to disk a slab of rows at
a time, so a 1.17B-parameter file needs memory for one slab, not for the model.
Weights are N(0, 0.02), norms 1. The vocabulary is byte-level BPE ("gpt2"): three
ChatML control tokens, the 256 byte tokens and merged pairs up to vocab_size, so both
our tokenizer and llama.cpp's load the file and tokenize any text. The tensors are the
ones tmac_core.plan lists for the spec's ModelConfig. Imports numpy, tmac_core.loading
and the plan: no Qt.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tmac_core.loading.gguf import BLOCK_LAYOUT, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLType, ValueType
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
}
# llama.cpp's `enum llama_ftype` for general.file_type (informational)
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "bf16": 32}
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MAX_VOCAB = len(SPECIALS) + 256 + 256 * 256 * 257  # specials, bytes, byte pairs, pairs + a byte
SLAB_ELEMENTS = 1 << 23  # rows generated and encoded together: ~32 MB of float32
STD = 0.02


# The 1.17B benchmark model (tests/bench): TinyLlama's shape with SmolLM2's vocabulary.
BENCH_CONFIG = ARCHITECTURES["llama"].config(
    dim=2048, hidden_dim=5632, n_layers=22, n_heads=32, n_kv_heads=4, head_dim=64, vocab_size=49152, n_ctx_train=4096
)


@dataclass(frozen=True)
class SynthSpec:
    """The model to write (its ModelConfig) and how to fill it."""

    config: ModelConfig = BENCH_CONFIG
    weight_type: str = "q4_0"
    add_bos: bool = False  # the vocabulary asks for a BOS before every text (Llama-3 style)
    seed: int = 0

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
        block = BLOCK_LAYOUT[WEIGHT_TYPES[self.weight_type]][0]
        if c.dim % max(block, 32) or c.hidden_dim % max(block, 32):
            raise ValueError(f"dim and hidden_dim must be multiples of 32, got {c.dim} and {c.hidden_dim}")
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
    merges, commonest-looking bytes (space, letters, digits) first, then (for vocabularies
    past 65,795, such as Llama 3's 128,256) three-byte merges of a pair and a byte."""
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
    pairs = [(chars[a], chars[b]) for a in order for b in order]
    merges = [f"{a} {b}" for a, b in pairs[:n_merges]]
    if n_merges > len(pairs):  # "ab" + "c": both parts are tokens by then, so BPE can build it
        triples = (f"{a}{b} {chars[c]}" for a, b in pairs for c in order)
        merges += [next(triples) for _ in range(n_merges - len(pairs))]
    tokens = list(SPECIALS) + [chars[b] for b in range(256)] + [m.replace(" ", "") for m in merges]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))  # CONTROL, NORMAL
    return tokens, types, merges


def _metadata(spec: SynthSpec) -> list[tuple[str, object, ValueType, ValueType | None]]:
    c = spec.config
    tokens, types, merges = vocabulary(c.vocab_size)
    s, u, f = ValueType.STRING, ValueType.UINT32, ValueType.FLOAT32
    p = c.arch + "."
    size = f"{spec.n_params / 1e9:.2f}B" if spec.n_params >= 1e9 else f"{spec.n_params / 1e6:.1f}M"
    return [
        ("general.architecture", c.arch, s, None),
        ("general.name", f"synthetic {c.arch} {size} ({spec.weight_type})", s, None),
        ("general.file_type", FILE_TYPES[spec.weight_type], u, None),
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


def _tensor_type(spec: SynthSpec, shape: tuple[int, ...]) -> GGMLType:
    return GGMLType.F32 if len(shape) == 1 else WEIGHT_TYPES[spec.weight_type]


def _nbytes(ggml_type: GGMLType, shape: tuple[int, ...]) -> int:
    block, block_bytes = BLOCK_LAYOUT[ggml_type]
    return int(np.prod(shape)) // block * block_bytes


def _header(spec: SynthSpec, shapes: dict[str, tuple[int, ...]]) -> bytes:
    """GGUF v3 header, metadata and tensor index (ne0 first), padded to the alignment."""
    out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", 3, len(shapes), len(_metadata(spec))))
    for key, value, vtype, etype in _metadata(spec):
        out += encode_value(key, ValueType.STRING) + struct.pack("<I", vtype) + encode_value(value, vtype, etype)
    offset = 0
    for name, shape in shapes.items():
        ggml_type = _tensor_type(spec, shape)
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
                ggml_type = _tensor_type(spec, shape)
                if len(shape) == 1:  # norms 1, biases 0
                    fill = np.ones if name.endswith(".weight") else np.zeros
                    f.write(encode_tensor(fill(shape, np.float32), ggml_type).tobytes())
                else:
                    rng = np.random.default_rng([spec.seed, index])
                    rows, k = shape
                    slab = max(1, SLAB_ELEMENTS // k)
                    for r0 in range(0, rows, slab):
                        x = rng.standard_normal((min(slab, rows - r0), k), dtype=np.float32)
                        x *= np.float32(STD)
                        f.write(encode_tensor(x, ggml_type).tobytes())
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
