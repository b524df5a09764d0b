"""Qwen2 / Qwen2.5: Llama's graph with biases on the q, k and v projections and
neox-style RoPE (pairs (i, i + head_dim/2))."""

from tmac_core.plan import Architecture

ARCH = Architecture("qwen2", rope_style="neox", qkv_bias=True)
