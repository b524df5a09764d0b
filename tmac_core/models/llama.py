"""Loading a Llama-family GGUF into the runtime: repack every matrix to the
chosen bits, gather norms and biases, compute the RoPE frequencies, and build
the Cython LlamaRuntime. No Qt."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tmac_core.config import ModelConfig
from tmac_core.kernels import PackedWeight, dequantize, pack
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGMLType, GGUFFile
from tmac_core.loading.repack import quantize, repack
from tmac_core.models._llama import LlamaRuntime

MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def inv_frequencies(cfg: ModelConfig, gguf: GGUFFile | None = None) -> np.ndarray:
    """RoPE inverse frequencies (head_dim/2,), with Llama-3 scaling or ggml freq factors."""
    half = cfg.head_dim // 2
    inv = cfg.rope_theta ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.head_dim)
    rs = cfg.rope_scaling
    if rs is not None:          # transformers' _compute_llama3_parameters
        low_wavelen = rs.original_context_length / rs.low_freq_factor
        high_wavelen = rs.original_context_length / rs.high_freq_factor
        wavelen = 2 * math.pi / inv
        smooth = (rs.original_context_length / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
        scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
        mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        inv = np.where(mid, (1 - smooth) * inv / rs.factor + smooth * inv, scaled)
    if cfg.rope_freqs and gguf is not None:     # ggml divides each angle by its factor
        inv = inv / dequantize_tensor(gguf, "rope_freqs.weight").astype(np.float64).reshape(-1)[:half]
    return inv


def layer_bits(cfg: ModelConfig, name: str, bits: int) -> int:
    """The bits=2 preset keeps the most sensitive tensors at 4 bits: the
    embedding/output table, attn_v, and the first and last layers."""
    if bits != 2:
        return bits
    if name in ("token_embd.weight", "output.weight") or ".attn_v." in name:
        return 4
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    return 4 if layer in (0, cfg.n_layers - 1) else 2


# Source types with more than ~5 bits per weight: their output layer would lose
# precision at 4 bits (SmolLM2's tied Q8_0 table: perplexity +10%), so it gets a
# second 4-bit pass on the residual.
PRECISE_TYPES = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q6_K,
                           GGMLType.Q5_K, GGMLType.Q5_0, GGMLType.Q5_1})


def output_residual(gguf: GGUFFile, name: str, packed: PackedWeight) -> PackedWeight:
    """The output layer's error after 4-bit packing, itself packed at 4 bits in
    32-wide groups: logits = W4·x + R4·x carry ~8-bit weights. This is where
    the logits' precision is decided, and one extra pass over one matrix costs
    what llama.cpp pays for keeping that matrix at Q6_K/Q8_0."""
    w = dequantize_tensor(gguf, name).reshape(packed.m, packed.k)
    residual = w - dequantize(packed)
    codes, scales, zeros = quantize(residual, 4, 32)
    return pack(codes, scales, zeros, bits=4, group_size=32)


def load_weights(gguf: GGUFFile, cfg: ModelConfig, bits: int,
                 progress: Callable[[float], None] | None = None) -> dict:
    """Every tensor the runtime needs: PackedWeight matrices, float32 vectors."""
    names = [f"blk.{l}.{m}.weight" for l in range(cfg.n_layers) for m in MATRICES]
    names.append("token_embd.weight")
    if not cfg.tie_embeddings:
        names.append("output.weight")
    weights = {}
    for i, name in enumerate(names):
        weights[name] = repack(gguf, name, layer_bits(cfg, name, bits))
        if progress:
            progress((i + 1) / len(names))
    out_name = "token_embd.weight" if cfg.tie_embeddings else "output.weight"
    if bits == 4 and gguf.tensors[out_name].ggml_type in PRECISE_TYPES:   # 2-bit stays small
        weights["output.residual"] = output_residual(gguf, out_name, weights[out_name])
    vectors = ["output_norm.weight"] + [f"blk.{l}.{n}.weight" for l in range(cfg.n_layers)
                                        for n in ("attn_norm", "ffn_norm")]
    if cfg.qkv_bias:
        vectors += [f"blk.{l}.attn_{x}.bias" for l in range(cfg.n_layers) for x in "qkv"]
    for name in vectors:
        weights[name] = dequantize_tensor(gguf, name).astype(np.float32).reshape(-1)
    weights["rope.inv_freq"] = inv_frequencies(cfg, gguf)
    return weights


def build_runtime(cfg: ModelConfig, weights: dict, n_ctx: int, max_batch: int = 32) -> LlamaRuntime:
    return LlamaRuntime(cfg, weights, n_ctx, max_batch)
