"""LUT kernels for low-bit weights: GEMV/GEMM by table lookup, no dequantization
(T-MAC, arXiv 2407.00088), with scalar, AVX2, AVX-512 and NEON tiers picked at
import by CPU detection (TMAC_KERNELS=generic|avx2|avx512|neon forces one).

No Qt, no app imports. Scripts outside the project rely on these names.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tmac_core import types
from tmac_core.kernels import layout
from tmac_core.kernels._kernels import (
    ATTN_BLOCK,
    LAYOUT_VERSION,
    MAX_THREADS,
    ActivationTables,
    PackedWeight,
    active_tier,
    attention,
    available_tiers,
    build_tables,
    cpu_features,
    gemm_tables,
    get_num_threads,
    set_num_threads,
    swiglu,
    to_fp16,
)

__all__ = [
    "ATTN_BLOCK",
    "ActivationTables",
    "PackedWeight",
    "LAYOUT_VERSION",
    "MAX_THREADS",
    "active_tier",
    "attention",
    "available_tiers",
    "activation_tables",
    "cpu_features",
    "dequantize",
    "gemm",
    "gemv",
    "get_num_threads",
    "pack",
    "set_num_threads",
    "swiglu",
    "to_fp16",
]

assert LAYOUT_VERSION == layout.LAYOUT_VERSION, "layout.py and layout.h disagree"
assert MAX_THREADS == types.MAX_THREADS, "tmac_core.types and kernels.h disagree on the thread limit"


def pack(
    codes: ArrayLike, scales: ArrayLike, zeros: ArrayLike | None = None, *, bits: int, group_size: int
) -> PackedWeight:
    """Packs b-bit codes into the kernel layout.

    Args:
        codes: uint8 (M, K) in [0, 2**bits).
        scales: float32 (M, K // group_size): w[m, k] = scales[m, g] * (codes[m, k] - zeros[m, g]).
        zeros: float32 like scales, or None for 2**(bits-1). Ternary: bits=2, zeros=1.
        bits: 1, 2, 3 or 4.
        group_size: 32, 64 or 128 along K, or K for one scale per row (BitNet);
            scales of shape (1, 1) give one scale for the whole tensor.
    """
    planes, scale_bits, k_pad, eff_group, tensor_scale = layout.pack_arrays(
        codes, scales, zeros, bits=bits, group_size=group_size
    )
    m, k = np.shape(codes)
    return PackedWeight(planes, scale_bits, m, k, k_pad, bits, eff_group, tensor_scale)


def dequantize(packed: PackedWeight) -> NDArray[np.float64]:
    """The float64 (M, K) weights the kernel computes with (fp16 scale rounding included)."""
    return layout.dequantize(
        packed.planes,
        packed.scales,
        packed.m,
        packed.k,
        packed.k_pad,
        packed.bits,
        packed.group_size,
        packed.tensor_scale,
    )


def _padded_rows(x: ArrayLike, k: int, k_pad: int) -> NDArray[np.float32]:
    rows = np.asarray(x, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != k:
        raise ValueError(f"activations must have {k} columns, got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise ValueError("activations must be finite")
    if k_pad == k:
        return np.ascontiguousarray(rows)
    out = np.zeros((rows.shape[0], k_pad), dtype=np.float32)
    out[:, :k] = rows
    return out


def activation_tables(
    x: ArrayLike, *, k_pad: int | None = None, act_group: int = 64, tier: str | None = None
) -> ActivationTables:
    """Activation tables for x (K,) or (N, K), shared by every matrix that reads x.

    Args:
        x: float32 activations.
        k_pad: the matrices' padded K (PackedWeight.k_pad); defaults to K.
        act_group: 64, or 32 when a matrix has 32-wide scale groups (PackedWeight.act_group).
        tier: force a tier (tests); default the active one.
    """
    x2 = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return build_tables(_padded_rows(x2, x2.shape[1], k_pad or x2.shape[1]), act_group, tier)


def gemm(packed: PackedWeight, X: ArrayLike | ActivationTables, *, tier: str | None = None) -> NDArray[np.float32]:
    """Y (N, M) = X (N, K) @ W.T, through the LUT kernels. X may be prebuilt ActivationTables."""
    if isinstance(X, ActivationTables):
        return gemm_tables(packed, X, tier)
    tables = build_tables(_padded_rows(X, packed.k, packed.k_pad), packed.act_group, tier)
    return gemm_tables(packed, tables, tier)


def gemv(packed: PackedWeight, x: ArrayLike | ActivationTables, *, tier: str | None = None) -> NDArray[np.float32]:
    """y (M,) = W @ x for x float32 (K,) or single-vector ActivationTables."""
    if isinstance(x, ActivationTables):
        if x.n != 1:
            raise ValueError(f"gemv takes tables of one vector, got {x.n}")
        return gemm_tables(packed, x, tier)[0]
    vector = np.asarray(x, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"gemv takes a 1-D vector, got shape {vector.shape}")
    return gemm(packed, vector[None, :], tier=tier)[0]
