"""GGUF keys → ModelConfig, and `inspect_model`: what the runtime thinks of a file.

This is the only place that knows GGUF's key names (`llama.embedding_length`, ...);
everything else uses ModelConfig's names (tmac_core.plan, which owns the dataclass).
`config_from_gguf` validates every value and every expected tensor shape before
any kernel sees them. Imports the standard library, tmac_core.loading.gguf (numpy),
tmac_core.plan and the architecture registry: no Qt, no app code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.limits import (
    MAX_DIM,
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_HIDDEN_DIM,
    MAX_LAYERS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
    MIN_SEQ_LEN,
)
from tmac_core.loading.gguf import GGMLType, GGUFFile, ValueType
from tmac_core.models import architecture
from tmac_core.plan import MATRIX_ROLES, ModelConfig, RopeScaling
from tmac_core.types import ModelSummary

__all__ = ["ModelConfig", "RopeScaling", "config_from_gguf", "inspect_model"]


def config_from_gguf(gguf: GGUFFile) -> ModelConfig:
    """Read and validate hyperparameters and tensor shapes.

    Raises:
        UnsupportedModelError: the architecture or a RoPE variant is not supported.
        ModelFormatError: a key is missing, mistyped or absurd; a tensor is missing
            or has the wrong shape.
    """
    gguf_arch = gguf.architecture
    try:
        arch = architecture(_registry_name(gguf))
    except UnsupportedModelError as error:
        raise UnsupportedModelError(f"{gguf.path}: {error}") from None
    p = gguf_arch + "."  # the file's key prefix ("llama." for a llama-bitnet file too)
    dim = gguf.get_int(p + "embedding_length", min_value=1, max_value=MAX_DIM)
    n_heads = gguf.get_int(p + "attention.head_count", min_value=1, max_value=MAX_HEADS)
    n_kv_heads = gguf.get_int(p + "attention.head_count_kv", n_heads, min_value=1, max_value=MAX_HEADS)
    if dim % n_heads:
        _fail(gguf, p + "attention.head_count", f"{n_heads} heads do not divide dim {dim}")
    if n_heads % n_kv_heads:
        _fail(gguf, p + "attention.head_count_kv", f"{n_kv_heads} kv heads do not divide {n_heads} heads")
    head_dim = gguf.get_int(p + "attention.key_length", dim // n_heads, min_value=1, max_value=MAX_HEAD_DIM)
    if gguf.get_int(p + "attention.value_length", head_dim) != head_dim:
        raise UnsupportedModelError(f"{gguf.path}: key and value head sizes differ")
    rope_dim = gguf.get_int(p + "rope.dimension_count", head_dim, min_value=1)
    if rope_dim != head_dim:
        raise UnsupportedModelError(
            f"{gguf.path}: partial rotary embedding ({rope_dim} of {head_dim} head dimensions) is not supported"
        )
    if head_dim % 2:
        _fail(gguf, p + "attention.key_length", f"head size {head_dim} is odd; RoPE needs pairs")
    tokens = gguf.get_array("tokenizer.ggml.tokens", element_type=ValueType.STRING)
    vocab_size = len(tokens)
    if not 1 <= vocab_size <= MAX_VOCAB:
        _fail(gguf, "tokenizer.ggml.tokens", f"{vocab_size} tokens outside [1, {MAX_VOCAB}]")
    declared_vocab = gguf.get_int(p + "vocab_size", vocab_size)
    if declared_vocab != vocab_size:
        _fail(gguf, p + "vocab_size", f"says {declared_vocab} but the vocabulary has {vocab_size} tokens")
    config = arch.config(
        dim=dim,
        hidden_dim=gguf.get_int(p + "feed_forward_length", min_value=1, max_value=MAX_HIDDEN_DIM),
        n_layers=gguf.get_int(p + "block_count", min_value=1, max_value=MAX_LAYERS),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        vocab_size=vocab_size,
        n_ctx_train=gguf.get_int(p + "context_length", min_value=MIN_SEQ_LEN, max_value=MAX_SEQ_LEN),
        rope_theta=gguf.get_float(p + "rope.freq_base", 10000.0, positive=True),
        norm_eps=gguf.get_float(p + "attention.layer_norm_rms_epsilon", positive=True, max_value=1.0),
        rope_scaling=_rope_scaling(gguf, p),
        tie_embeddings="output.weight" not in gguf.tensors,
        rope_freqs="rope_freqs.weight" in gguf.tensors,
    )
    config.check_tensors(gguf)
    return config


def inspect_model(path: str | os.PathLike[str]) -> ModelSummary:
    """Validate `path` (a GGUF file or a Hugging Face model folder) as a model this
    runtime can load, and summarise it.

    Runs the hardened reader (metadata and tensor index only: nothing is dequantized)
    and `config_from_gguf` (architecture, hyperparameters, every tensor's shape).

    Raises:
        ModelFormatError: corrupt, truncated or malformed (the message names the field
            and the byte offset).
        UnsupportedModelError: well-formed, but not a model this runtime runs.
        ModelLoadError: the file cannot be opened.
    """
    if os.path.isdir(path):  # a Hugging Face model folder
        from tmac_core.loading.hf import inspect_folder

        return inspect_folder(path)
    with GGUFFile.open(path) as gguf:
        config = config_from_gguf(gguf)
        try:
            name = str(gguf.get_str("general.name", "")).strip()
        except ModelFormatError:  # a mistyped name is no reason to refuse the model
            name = ""
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # non-UTF-8 bytes: U+FFFD
        tensor_types = {name_: info.ggml_type.name for name_, info in gguf.tensors.items()}
        counts: dict[str, int] = {}
        for info in gguf.tensors.values():
            counts[info.ggml_type.name] = counts.get(info.ggml_type.name, 0) + info.n_elements
        return ModelSummary(
            path=os.fspath(gguf.path),
            name=name or Path(gguf.path).stem,
            gguf_arch=gguf.architecture,
            config=config,
            n_params=sum(counts.values()),
            file_size=gguf.file_size,
            file_type=max(counts, key=counts.__getitem__) if counts else "?",
            tensor_types=tensor_types,
            gguf_version=gguf.version,
        )


def _registry_name(gguf: GGUFFile) -> str:
    """The architecture a file runs as: its `general.architecture`, except that a
    "llama" file whose every block projection is I2_S is a BitNet-trained Llama
    (bitnet.cpp's Falcon3-*-1.58bit and Falcon-E GGUFs) and runs as "llama-bitnet",
    so its int8 activations can be computed exactly.

    Only I2_S says "trained ternary": bitnet.cpp writes it, and only from ternary
    checkpoints (its converter unpacks a BitNet-packed folder, llama-quantize I2_S 1).
    TQ1_0/TQ2_0 say nothing of the training: upstream llama.cpp writes them from any
    float Llama (`llama-quantize ... TQ2_0`, `convert_hf_to_gguf --outtype tq2_0`),
    which was never trained with int8 activations, so a "llama" TQ file stays "llama"
    (the same tables as every other quantized Llama). The weights and the layer graph
    of both names are the same (no sub-norms, interleaved RoPE; bitnet.py)."""
    name = gguf.architecture
    if name != "llama":
        return name
    projections = []  # blk.N.<role>.weight for the seven block matrices
    for tensor, info in gguf.tensors.items():
        parts = tensor.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in MATRIX_ROLES and parts[3] == "weight":
            projections.append(info.ggml_type)
    if projections and all(t is GGMLType.I2_S for t in projections):
        return "llama-bitnet"
    return name


def _fail(gguf: GGUFFile, key: str, reason: str) -> NoReturn:
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
        raise UnsupportedModelError(
            f"{gguf.path}: RoPE scaling type {kind or 'linear'!r} is not supported (supported: llama3)"
        )
    # ggml has no keys for these; llama.cpp bakes them into rope_freqs.weight. Our own
    # writer stores them so a file can carry Llama-3 scaling without that tensor.
    low = gguf.get_float(p + "rope.scaling.low_freq_factor", 1.0, positive=True)
    high = gguf.get_float(p + "rope.scaling.high_freq_factor", 4.0, positive=True)
    if high <= low:
        _fail(gguf, p + "rope.scaling.high_freq_factor", f"high_freq_factor {high} must exceed low_freq_factor {low}")
    original = gguf.get_int(p + "rope.scaling.original_context_length", 8192, min_value=1, max_value=MAX_SEQ_LEN)
    return RopeScaling(factor, low, high, original)
