"""LUT kernels for low-bit weights: GEMV/GEMM by table lookup, no dequantization
(T-MAC, arXiv 2407.00088), with scalar, AVX2, AVX-512 and NEON tiers picked at
import by CPU detection (TMAC_KERNELS=generic|avx2|avx512|neon forces one).

No Qt, no app imports. Scripts outside the project rely on these names.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tmac_core import types
from tmac_core.kernels import _kernels, layout
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
    "pack_super",
    "set_num_threads",
    "swiglu",
    "to_fp16",
]

assert LAYOUT_VERSION == layout.LAYOUT_VERSION, "layout.py and layout.h disagree"
assert (
    _kernels.SCALES_F16,
    _kernels.SCALES_SUPER,
    _kernels.SCALES_F16_SYM,
    _kernels.SCALES_SUPER_NOMIN,
    _kernels.MAX_ZERO_MULT,
    _kernels.MAX_BITS,
    _kernels.GROUP_SIZES,
) == (
    layout.SCALES_F16,
    layout.SCALES_SUPER,
    layout.SCALES_F16_SYM,
    layout.SCALES_SUPER_NOMIN,
    layout.MAX_ZERO_MULT,
    layout.MAX_BITS,
    layout.GROUP_SIZES,
), "layout.py and layout.h disagree"
assert MAX_THREADS == types.MAX_THREADS, "tmac_core.types and kernels.h disagree on the thread limit"


def pack(
    codes: ArrayLike,
    scales: ArrayLike,
    zeros: ArrayLike | None = None,
    *,
    bits: int,
    group_size: int,
    tensor_scale: float | None = None,
    symmetric: bool = False,
) -> PackedWeight:
    """Packs b-bit codes into the kernel layout with F16 scales (F16_SYM if symmetric).

    Args:
        codes: uint8 (M, K) in [0, 2**bits).
        scales: float32 (M, K // group_size): w[m, k] = scales[m, g] * (codes[m, k] - zeros[m, g]).
        zeros: float32 like scales, or None for 2**(bits-1). Ternary: bits=2, zeros=1.
        bits: 1..8.
        group_size: 16, 32, 64, 128 or 256 along K, or K for one scale per row (BitNet);
            scales of shape (1, 1) give one scale for the whole tensor.
        tensor_scale: None derives it from the largest scale; a streaming loader that packs
            one matrix in row chunks passes one shared power of two (ValueError if it is
            not one, or if it pushes an fp16 scale out of range).
        symmetric: every group has the same integer zero code z (Q4_0, Q8_0, ternary): store
            only s/2 per group and the per-tensor zero_mult = 2**bits - 1 - 2z, from which the
            kernel derives the offset exactly (LAYOUT.md §Scales F16_SYM); the same outputs,
            bit for bit, as the F16 format whenever its fp16 offset is exact (|zero_mult| = 1).
    """
    m, k = np.shape(codes)
    if symmetric:
        if zeros is None:
            zeros = np.full((1, 1), 1 << (bits - 1), np.float32)
        planes, sh_bits, k_pad, eff_group, ts, zero_mult = layout.pack_sym_arrays(
            codes, scales, zeros, bits=bits, group_size=group_size, tensor_scale=tensor_scale
        )
        return PackedWeight(
            planes,
            sh_bits,
            m,
            k,
            k_pad,
            bits,
            eff_group,
            ts,
            scale_format=layout.SCALES_F16_SYM,
            zero_mult=zero_mult,
        )
    planes, scale_bits, k_pad, eff_group, ts = layout.pack_arrays(
        codes, scales, zeros, bits=bits, group_size=group_size, tensor_scale=tensor_scale
    )
    return PackedWeight(planes, scale_bits, m, k, k_pad, bits, eff_group, ts)


def pack_super(
    codes: ArrayLike,
    d: ArrayLike,
    dmin: ArrayLike | None,
    sc: ArrayLike,
    mn: ArrayLike | None,
    *,
    bits: int,
    group_size: int,
    super_size: int,
    code_offset: float,
) -> PackedWeight:
    """Packs b-bit codes with SUPER (K-quant style) scales: w = d[u]*sc[g]*(q - z0) - dmin[u]*mn[g];
    with dmin and mn None, SUPER_NOMIN scales (Q6_K, Q3_K): w = d[u]*sc[g]*(q - z0), the same
    outputs bit for bit as SUPER with zero mins, without storing them.

    Args:
        codes: uint8 (M, K) in [0, 2**bits).
        d, dmin: float32 or float16 (M, K // super_size), each exactly an fp16 value (dmin: or None).
        sc, mn: integers (M, K // group_size) in [-128, 127] (mn: None exactly when dmin is).
        bits: 1..8.
        group_size: 16, 32, 64, 128 or 256 along K.
        super_size: weights per super-block, a multiple of group_size dividing K.
        code_offset: (2**bits - 1)/2 - z0, z0 the format's fixed code offset.
    """
    planes, supers, subs, k_pad = layout.pack_super_arrays(
        codes, d, dmin, sc, mn, bits=bits, group_size=group_size, super_size=super_size, code_offset=code_offset
    )
    m, k = np.shape(codes)
    return PackedWeight(
        planes,
        supers,
        m,
        k,
        k_pad,
        bits,
        group_size,
        1.0,
        scale_format=layout.SCALES_SUPER if dmin is not None else layout.SCALES_SUPER_NOMIN,
        sub=subs,
        super_size=super_size,
        code_offset=code_offset,
    )


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
        scale_format=packed.scale_format,
        sub=packed.sub,
        super_size=packed.super_size,
        code_offset=packed.code_offset,
        zero_mult=packed.zero_mult,
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
        act_group: 16, 32 or 64: PackedWeight.act_group of the matrices that read x (the
            smallest of them when they differ).
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
