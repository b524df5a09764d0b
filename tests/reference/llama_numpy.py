"""A plain numpy Llama-family forward pass: the semantic reference the Cython runtime
is checked against. Short and readable on purpose; float64 throughout, on the
same dequantized weights the kernels use.

BitNet b1.58 (ModelConfig flags): sub-norms before attn_output and ffn_down,
relu(gate)² · up, and with act_quant "int8_token" the W1.58A8 arithmetic of
transformers' BitLinear / bitnet.cpp: every block matmul's input quantized per token
to int8 by absmax (round half to even), the integer product scaled back; the output
layer's input is not quantized."""

import numpy as np


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def absmax_int8(x):
    """(q, s): q = clamp(round_half_even(x·s), −128, 127), s = 127 / max(|x|, 1e-5) per row."""
    s = 127.0 / np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-5)
    return np.clip(np.rint(x * s), -128, 127), s


def rope(v, n_heads, head_dim, positions, inv_freq, neox):
    v = v.reshape(len(positions), n_heads, head_dim).copy()
    ang = positions[:, None] * inv_freq[None, :]  # (n, hd/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = v[..., : head_dim // 2], v[..., head_dim // 2 :]
    else:
        a, b = v[..., 0::2], v[..., 1::2]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    if neox:
        v[..., : head_dim // 2], v[..., head_dim // 2 :] = ra, rb
    else:
        v[..., 0::2], v[..., 1::2] = ra, rb
    return v.reshape(len(positions), -1)


def forward(cfg, W, tokens, inv_freq, kv_dtype=np.float64):
    """Logits (n, vocab) for tokens at positions 0..n-1. W: name -> float64 array.

    kv_dtype np.float16 rounds k and v as the runtime's fp16 KV cache stores them: with
    int8 activations a rounding that differs before one quantization moves a level."""
    n, hd = len(tokens), cfg.head_dim
    pos = np.arange(n, dtype=np.float64)
    x = W["token_embd.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)

    def linear(h, name):  # a block's matmul: BitLinear when the model quantizes activations
        if cfg.act_quant == "int8_token":
            q, s = absmax_int8(h)
            return (q @ W[name].T) / s
        return h @ W[name].T

    for l in range(cfg.n_layers):
        p = f"blk.{l}."
        h = rmsnorm(x, W[p + "attn_norm.weight"], cfg.norm_eps)
        q, k, v = (linear(h, p + f"attn_{m}.weight") for m in "qkv")
        if cfg.qkv_bias:
            q, k, v = q + W[p + "attn_q.bias"], k + W[p + "attn_k.bias"], v + W[p + "attn_v.bias"]
        q = rope(q, cfg.n_heads, hd, pos, inv_freq, cfg.rope_style == "neox").reshape(n, cfg.n_heads, hd)
        k = rope(k, cfg.n_kv_heads, hd, pos, inv_freq, cfg.rope_style == "neox").reshape(n, cfg.n_kv_heads, hd)
        v = v.reshape(n, cfg.n_kv_heads, hd).astype(kv_dtype).astype(np.float64)
        k = k.astype(kv_dtype).astype(np.float64)
        group = cfg.n_heads // cfg.n_kv_heads
        out = np.empty((n, cfg.n_heads, hd))
        for head in range(cfg.n_heads):
            s = q[:, head] @ k[:, head // group].T / np.sqrt(hd) + mask
            a = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, head] = (a / a.sum(axis=1, keepdims=True)) @ v[:, head // group]
        out = out.reshape(n, -1)
        if cfg.sub_norms:
            out = rmsnorm(out, W[p + "attn_sub_norm.weight"], cfg.norm_eps)
        x = x + linear(out, p + "attn_output.weight")
        h = rmsnorm(x, W[p + "ffn_norm.weight"], cfg.norm_eps)
        g, u = linear(h, p + "ffn_gate.weight"), linear(h, p + "ffn_up.weight")
        f = np.maximum(g, 0) ** 2 * u if cfg.ffn_act == "relu2" else g / (1 + np.exp(-g)) * u
        if cfg.sub_norms:
            f = rmsnorm(f, W[p + "ffn_sub_norm.weight"], cfg.norm_eps)
        x = x + linear(f, p + "ffn_down.weight")
    out_w = W["token_embd.weight"] if cfg.tie_embeddings else W["output.weight"]
    return rmsnorm(x, W["output_norm.weight"], cfg.norm_eps) @ out_w.T
