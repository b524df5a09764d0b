"""A plain numpy Llama forward pass: the semantic reference the Cython runtime
is checked against. Short and readable on purpose; float64 throughout, on the
same dequantized weights the kernels use."""

import numpy as np


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


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


def forward(cfg, W, tokens, inv_freq):
    """Logits (n, vocab) for tokens at positions 0..n-1. W: name -> float64 array."""
    n, hd = len(tokens), cfg.head_dim
    pos = np.arange(n, dtype=np.float64)
    x = W["token_embd.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(cfg.n_layers):
        p = f"blk.{l}."
        h = rmsnorm(x, W[p + "attn_norm.weight"], cfg.norm_eps)
        q, k, v = (h @ W[p + f"attn_{m}.weight"].T for m in "qkv")
        if cfg.qkv_bias:
            q, k, v = q + W[p + "attn_q.bias"], k + W[p + "attn_k.bias"], v + W[p + "attn_v.bias"]
        q = rope(q, cfg.n_heads, hd, pos, inv_freq, cfg.rope_style == "neox").reshape(n, cfg.n_heads, hd)
        k = rope(k, cfg.n_kv_heads, hd, pos, inv_freq, cfg.rope_style == "neox").reshape(n, cfg.n_kv_heads, hd)
        v = v.reshape(n, cfg.n_kv_heads, hd)
        group = cfg.n_heads // cfg.n_kv_heads
        out = np.empty((n, cfg.n_heads, hd))
        for head in range(cfg.n_heads):
            s = q[:, head] @ k[:, head // group].T / np.sqrt(hd) + mask
            a = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, head] = (a / a.sum(axis=1, keepdims=True)) @ v[:, head // group]
        x = x + out.reshape(n, -1) @ W[p + "attn_output.weight"].T
        h = rmsnorm(x, W[p + "ffn_norm.weight"], cfg.norm_eps)
        g, u = h @ W[p + "ffn_gate.weight"].T, h @ W[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "ffn_down.weight"].T
    out_w = W["token_embd.weight"] if cfg.tie_embeddings else W["output.weight"]
    return rmsnorm(x, W["output_norm.weight"], cfg.norm_eps) @ out_w.T
