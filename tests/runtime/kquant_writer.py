"""K-quant blocks from float weights, for tests and the perplexity comparison: Q2_K..Q6_K.

The `gguf` package cannot quantize K-quants and llama.cpp is not installed, so this is a
plain, deterministic quantizer (per sub-block min/max or absmax, then 6/8/4-bit
sub-scales under fp16 super-scales; no llama-quantize error search), writing the exact
ggml-common.h block layouts. Its blocks are real K-quant blocks: the `gguf` package's
dequantizer reads them (test_exact_repack.py checks the round trip). Numpy only.
"""

from __future__ import annotations

import numpy as np

QK = 256


def _f16(x: np.ndarray) -> np.ndarray:
    """(n,) float → (n, 2) bytes of fp16."""
    return np.asarray(x, np.float32).astype(np.float16).view(np.uint8).reshape(-1, 2)


def _super_scale(values: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block (n, subs) non-negative floats → (fp16-rounded scale d (n,), integer codes (n, subs) in 0..top)."""
    d = (values.max(axis=1) / top).astype(np.float16).astype(np.float32)
    ints = np.clip(np.rint(values / np.where(d == 0, 1, d)[:, None]), 0, top).astype(np.uint8)
    return d, ints


def _asym(x: np.ndarray, sub: int, qmax: int, smax: int) -> tuple[np.ndarray, ...]:
    """x (n, 256) → codes (n, 256), d, dmin (n,), sc, mn (n, 256 // sub): w ≈ d*sc*q - dmin*mn."""
    n = len(x)
    g = x.reshape(n, QK // sub, sub)
    lo = np.minimum(g.min(axis=2), 0)  # ggml keeps the min <= 0
    scale = (g.max(axis=2) - lo) / qmax
    d, sc = _super_scale(scale, smax)
    dmin, mn = _super_scale(-lo, smax)
    step = (d[:, None] * sc)[:, :, None]
    offset = (dmin[:, None] * mn)[:, :, None]
    q = np.clip(np.rint((g + offset) / np.where(step == 0, 1, step)), 0, qmax).astype(np.uint8)
    return q.reshape(n, QK), d, dmin, sc, mn


def _sym(x: np.ndarray, sub: int, half_range: int, smax: int) -> tuple[np.ndarray, ...]:
    """x (n, 256) → signed codes (n, 256) in [-half_range, half_range), d (n,), sc (n, subs) in [-smax, smax]."""
    n = len(x)
    g = x.reshape(n, QK // sub, sub)
    idx = np.abs(g).argmax(axis=2)[:, :, None]
    scale = -np.take_along_axis(g, idx, axis=2)[:, :, 0] / half_range  # the extreme maps to -half_range
    amax = np.abs(scale).max(axis=1)
    d = (amax / smax).astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(scale / np.where(d == 0, 1, d)[:, None]), -smax, smax).astype(np.int8)
    step = (d[:, None] * sc)[:, :, None]
    q = np.clip(np.rint(g / np.where(step == 0, 1, step)), -half_range, half_range - 1).astype(np.int16)
    return q.reshape(n, QK), d, sc


def _pack_k4_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins → the 12 bytes get_scale_min_k4 reads."""
    out = np.zeros((len(sc), 12), np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    return out


def _pack_nibbles_k4(q: np.ndarray) -> np.ndarray:
    """(n, 256) 4-bit → 128 bytes: sub-block 2c in the low nibbles of qs[32c:32c+32], 2c+1 in the high."""
    q = q.reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128).astype(np.uint8)


def _pack_crumbs(q: np.ndarray) -> np.ndarray:
    """(n, 256) 2-bit → 64 bytes: value 128h + 32s + l in bits 2s of byte 32h + l."""
    q = q.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, 8, 32) single bits → 32 bytes: sub-block j in bit j of byte l."""
    return (bits.astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)


def q4_k(x: np.ndarray) -> np.ndarray:  # {half d; half dmin; uint8 scales[12]; uint8 qs[128]}
    q, d, dmin, sc, mn = _asym(x, 32, 15, 63)
    return np.concatenate([_f16(d), _f16(dmin), _pack_k4_scales(sc, mn), _pack_nibbles_k4(q)], axis=1)


def q5_k(x: np.ndarray) -> np.ndarray:  # {half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}
    q, d, dmin, sc, mn = _asym(x, 32, 31, 63)
    qh = _pack_bits((q >> 4).reshape(-1, 8, 32))
    return np.concatenate([_f16(d), _f16(dmin), _pack_k4_scales(sc, mn), qh, _pack_nibbles_k4(q & 15)], axis=1)


def q2_k(x: np.ndarray) -> np.ndarray:  # {uint8 scales[16]; uint8 qs[64]; half d; half dmin}
    q, d, dmin, sc, mn = _asym(x, 16, 3, 15)
    return np.concatenate([sc | (mn << 4), _pack_crumbs(q), _f16(d), _f16(dmin)], axis=1)


def q3_k(x: np.ndarray) -> np.ndarray:  # {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d}
    q, d, sc = _sym(x, 16, 4, 31)  # 6-bit signed sub-scales
    u = (q + 4).astype(np.uint8)  # crumb + 4*hbit
    s6 = (sc.astype(np.int16) + 32).astype(np.uint8)
    scales = np.zeros((len(x), 12), np.uint8)
    scales[:, 0:8] = (s6[:, 0:8] & 15) | ((s6[:, 8:16] & 15) << 4)
    hi = (s6 >> 4).reshape(-1, 4, 4)  # scale 4p + j: bits 2p of byte 8 + j
    scales[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    hmask = _pack_bits((u >> 2).reshape(-1, 8, 32))
    return np.concatenate([hmask, _pack_crumbs(u & 3), scales, _f16(d)], axis=1)


def q6_k(x: np.ndarray) -> np.ndarray:  # {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d}
    q, d, sc = _sym(x, 16, 32, 127)
    u = (q + 32).astype(np.uint8).reshape(-1, 2, 4, 32)  # half h, pass p, position l
    low, high = u & 15, u >> 4
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8), _f16(d)], axis=1)


QUANTIZERS = {"Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}


def quantize(x: np.ndarray, type_name: str) -> np.ndarray:
    """Float (M, K) with K % 256 == 0 → raw blocks (M, K // 256 * block_bytes) uint8."""
    m, k = x.shape
    blocks = QUANTIZERS[type_name](np.asarray(x, np.float32).reshape(-1, QK))
    return np.ascontiguousarray(blocks, dtype=np.uint8).reshape(m, -1)
