"""GGUF tensors -> kernel layout (tmac_core.kernels.PackedWeight), as in the file or at 2/4 bits.

bits=None, "as in the file": every type of tmac_core.plan.EXACT_SOURCES keeps its
codes and scale fields (loading/exact.py: K-quants, Q4_0..Q8_0, TQ1_0/TQ2_0), each
tensor at its own bits; float and non-linear types are requantized at 4 bits.
bits=4 / 2, the smaller/faster presets: Q4_0/Q4_1 at 4 bits keep their codes and
32-wide groups, TQ1_0/TQ2_0 at 2 bits their ternary codes; everything else is
dequantized and requantized by our own quantizer, which picks each group's scale and
zero point to minimise a weighted squared error (a clipping search, then a
least-squares refit), not plain min/max.
Imports numpy, the loaders and the kernels' packers: no Qt.
"""

from __future__ import annotations

import numpy as np

from tmac_core.kernels import PackedWeight, pack, pack_super
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.exact import Exact, ExactF16, decompose_tensor
from tmac_core.loading.gguf import GGMLType, GGUFFile
from tmac_core.plan import FALLBACK_BITS, exact_format

CLIP_GRID = np.linspace(1.0, 0.55, 10, dtype=np.float32)  # shrink factors tried per group
ROW_CHUNK = 1024  # rows quantized at a time (memory)


def pack_exact(ex: Exact, tensor_scale: float | None = None) -> PackedWeight:
    """An exact decomposition in the kernel layout: its own scale format, bits and groups.

    tensor_scale: for the F16 format of a matrix packed in row ranges, the whole matrix's
        (exact.f16_tensor_scale); None derives it from these rows. SUPER ignores it (1).
    """
    if isinstance(ex, ExactF16):
        return pack(ex.codes, ex.scales, ex.zeros, bits=ex.bits, group_size=ex.group_size, tensor_scale=tensor_scale)
    return pack_super(
        ex.codes,
        ex.d,
        ex.dmin,
        ex.sc,
        ex.mn,
        bits=ex.bits,
        group_size=ex.group_size,
        super_size=ex.super_size,
        code_offset=ex.code_offset,
    )


def _q4_1_at_4_bits(gguf: GGUFFile, name: str) -> PackedWeight:
    """The 4-bit preset's Q4_1: w = d*q + m as d*(q - z), z = -m/d, in the F16 format
    (smaller than SUPER; the fp16 offset rounds, the file mode is the exact one)."""
    ex = decompose_tensor(gguf, name)
    assert not isinstance(ex, ExactF16)  # Q4_1 decomposes to SUPER with sc = mn = 1
    d, mins = ex.d.astype(np.float32), -ex.dmin.astype(np.float32)
    # a block with d == 0 is the constant m = m*(q - (-1)) at q = 0
    flat = d == 0
    scales = np.where(flat, mins, d)
    zeros = np.where(flat, -1.0, -mins / np.where(flat, 1.0, d)).astype(np.float32)
    codes = np.where(np.repeat(flat, 32, axis=1), 0, ex.codes).astype(np.uint8)
    return pack(codes, scales, zeros, bits=4, group_size=32)


def quantize(w: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our quantizer: codes, scales, zeros for float weights (M, K), per group along K.

    Error weights follow llama.cpp's make_qkx2_quants idea: a weight's square
    plus the group's mean square, so large weights (which dominate the output)
    are fitted more closely without ignoring the rest.
    """
    m, k = w.shape
    qmax = (1 << bits) - 1
    codes = np.empty((m, k), np.uint8)
    scales = np.empty((m, k // group_size), np.float32)
    zeros = np.empty((m, k // group_size), np.float32)
    for r0 in range(0, m, ROW_CHUNK):
        g = w[r0 : r0 + ROW_CHUNK].astype(np.float32).reshape(-1, k // group_size, group_size)
        imp = g * g + (g * g).mean(axis=2, keepdims=True) + 1e-30
        lo, hi = g.min(axis=2, keepdims=True), g.max(axis=2, keepdims=True)
        best_err = np.full(lo.shape, np.inf, np.float32)
        best_s, best_z = np.zeros_like(lo), np.zeros_like(lo)
        for alpha in CLIP_GRID:
            s = np.maximum((hi - lo) * alpha / qmax, 1e-30)
            z = np.clip(np.rint(-lo * alpha / s), 0, qmax)
            s, z = _refit(g, imp, np.clip(np.rint(g / s + z), 0, qmax), s, z)
            err = (imp * (s * (np.clip(np.rint(g / s + z), 0, qmax) - z) - g) ** 2).sum(axis=2, keepdims=True)
            better = err < best_err
            best_err, best_s, best_z = (
                np.where(better, err, best_err),
                np.where(better, s, best_s),
                np.where(better, z, best_z),
            )
        q = np.clip(np.rint(g / best_s + best_z), 0, qmax)
        rows = slice(r0, r0 + g.shape[0])
        codes[rows] = q.reshape(g.shape[0], k).astype(np.uint8)
        scales[rows], zeros[rows] = best_s[..., 0], best_z[..., 0]
    return codes, scales, zeros


def _refit(
    g: np.ndarray, imp: np.ndarray, q: np.ndarray, s: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of g ~ a*q + b for fixed codes; returns (s, z) = (a, -b/a)."""
    sw = imp.sum(axis=2, keepdims=True)
    mq, mg = (imp * q).sum(axis=2, keepdims=True) / sw, (imp * g).sum(axis=2, keepdims=True) / sw
    var = (imp * (q - mq) ** 2).sum(axis=2, keepdims=True)
    cov = (imp * (q - mq) * (g - mg)).sum(axis=2, keepdims=True)
    ok = var > 0
    a = np.where(ok, cov / np.where(ok, var, 1), s)
    a = np.where(a > 1e-30, a, s)  # keep a positive step; else the search's
    b = np.where(ok, mg - a * mq, -s * z)
    return a, -b / a


def repack(gguf: GGUFFile, name: str, bits: int | None, group_size: int = 64) -> PackedWeight:
    """One weight matrix of the file in the kernel layout.

    bits: None for "as in the file" (exact where the type allows, else 4 bits by our
        quantizer, as tmac_core.plan.tensor_plan says), or 2 / 4 (1 and 3 also work).
    group_size: our quantizer's group (the exact paths keep the source's).
    """
    info = gguf.tensors[name]
    t = info.ggml_type
    if bits is None:
        if exact_format(t.name, info.shape[0]) is not None:
            return pack_exact(decompose_tensor(gguf, name))
        bits = FALLBACK_BITS
    if (bits == 4 and t is GGMLType.Q4_0) or (bits == 2 and t in (GGMLType.TQ1_0, GGMLType.TQ2_0)):
        return pack_exact(decompose_tensor(gguf, name))
    if bits == 4 and t is GGMLType.Q4_1:
        return _q4_1_at_4_bits(gguf, name)
    w = dequantize_tensor(gguf, name)
    w = w.reshape(-1, w.shape[-1])
    gs = group_size if w.shape[1] % group_size == 0 else 32
    codes, scales, zeros = quantize(w, bits, gs)
    return pack(codes, scales, zeros, bits=bits, group_size=gs)


def bits_per_weight(packed: PackedWeight) -> float:
    return 8.0 * packed.nbytes / (packed.m * packed.k)
