"""Llama (2, 3, 3.2; SmolLM2, TinyLlama, Mistral): the reference graph every other
architecture here is a variation of. Pairs (2i, 2i+1) rotate under RoPE, no biases,
SwiGLU feed-forward."""

from tmac_core.plan import Architecture

ARCH = Architecture("llama", rope_style="interleaved")
