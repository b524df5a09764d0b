"""Loading a Llama-family GGUF into the runtime: repack every matrix to the
chosen bits, gather norms and biases, compute the RoPE frequencies, and build
the Cython LlamaRuntime. No Qt."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tmac_core.config import ModelConfig
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGUFFile
from tmac_core.loading.repack import repack
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
