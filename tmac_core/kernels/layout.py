"""Numpy pack/unpack of the kernel weight layout: the executable spec of
LAYOUT.md §Weights (version LAYOUT_VERSION), checked against golden bytes in
the tests. Pure numpy: no Qt, no native code.

A weight is w[m, k] = s[m, g] * (q[m, k] - z[m, g]) with q a b-bit code. The
kernel never dequantizes: it reads q as b one-bit planes and stores per
(row, group) s/2 and c = s * ((2^b - 1)/2 - z) as fp16, scaled by one
power-of-two tensor_scale so fp16's range never clips (LAYOUT.md gives the identity).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

LAYOUT_VERSION = 1
TILE_ROWS = 64
GROUP_SIZES = (32, 64, 128)

# byte p of a 64-byte index block holds row ROW_OF_BYTE[p] of the tile (layout.h)
ROW_OF_BYTE = np.array(
    [(8 * (p // 16) + p % 16) if p % 16 < 8 else (32 + 8 * (p // 16) + p % 16 - 8) for p in range(64)], dtype=np.int64
)


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def pack_arrays(
    codes: ArrayLike, scales: ArrayLike, zeros: ArrayLike | None = None, *, bits: int, group_size: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint16], int, int, float]:
    """Packs codes into the kernel layout.

    Args:
        codes: uint8 (M, K), values in [0, 2**bits).
        scales: float32 (M, K // group_size); anything broadcastable to it works
            (a (1, 1) array is one per-tensor scale).
        zeros: float32 like scales, or None for the symmetric 2**(bits-1).
        bits: 1..4 (ternary is bits=2 with zeros=1).
        group_size: 32, 64 or 128 along K, or K itself for one scale per row.

    Returns:
        (planes uint8 flat, fp16 scale bits uint16 flat, k_pad, effective group size, tensor_scale).

    Raises:
        ValueError: on any inconsistent shape, dtype or value.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise ValueError(f"codes must be a non-empty 2-D array, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got {codes.dtype}")
    if bits not in (1, 2, 3, 4):
        raise ValueError(f"bits must be 1, 2, 3 or 4, got {bits}")
    m, k = codes.shape
    if codes.min() < 0 or codes.max() >= (1 << bits):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit weights")
    if group_size in GROUP_SIZES:
        if k % group_size:
            raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
        k_pad, eff_group = k, group_size
    elif group_size == k:
        k_pad = _round_up(k, 64)
        eff_group = k_pad
    else:
        raise ValueError(f"group_size must be 32, 64, 128 or K={k} (per row), got {group_size}")
    n_groups = k // group_size
    s = np.broadcast_to(np.asarray(scales, dtype=np.float64), (m, n_groups))
    z = (
        np.full((m, n_groups), 1 << (bits - 1), dtype=np.float64)
        if zeros is None
        else np.broadcast_to(np.asarray(zeros, dtype=np.float64), (m, n_groups))
    )
    if not (np.isfinite(s).all() and np.isfinite(z).all()):
        raise ValueError("scales and zeros must be finite")

    half = s / 2.0  # (m, n_groups)
    offset = s * (((1 << bits) - 1) / 2.0 - z)  # (m, n_groups)
    peak = max(float(np.abs(half).max()), float(np.abs(offset).max()))
    # a power of two keeps the division exact and puts the peak in [2^14, 2^15)
    tensor_scale = 1.0 if peak == 0.0 else 2.0 ** (math.floor(math.log2(peak)) - 14)
    if not (np.float32(tensor_scale) > 0 and np.isfinite(np.float32(tensor_scale))):
        raise ValueError(f"scales out of range (peak {peak})")

    m_pad = _round_up(m, TILE_ROWS)
    tiles = m_pad // TILE_ROWS
    q = np.zeros((m_pad, k_pad), dtype=np.uint8)
    q[:m, :k] = codes
    planes = np.empty((tiles, k_pad // 8, bits, 64), dtype=np.uint8)
    weights = 1 << np.arange(4, dtype=np.uint8)  # bit j of a nibble <-> k + j
    for i in range(bits):
        plane = ((q >> i) & 1).reshape(m_pad, k_pad // 8, 2, 4)  # (row, kpair, half, j)
        nibbles = (plane * weights).sum(axis=3, dtype=np.uint8)  # (row, kpair, half)
        byte = nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)  # (row, kpair)
        byte = byte.reshape(tiles, TILE_ROWS, k_pad // 8)[:, ROW_OF_BYTE, :]  # rows -> byte order
        planes[:, :, i, :] = byte.transpose(0, 2, 1)

    groups_out = k_pad // eff_group
    sc = np.zeros((m_pad, groups_out, 2), dtype=np.float64)
    sc[:m, :, 0] = half / tensor_scale  # per-row scales: one group of k_pad columns
    sc[:m, :, 1] = offset / tensor_scale
    sc16 = sc.astype(np.float16).reshape(tiles, TILE_ROWS, groups_out, 2).transpose(0, 2, 3, 1)
    return (
        planes.reshape(-1),
        np.ascontiguousarray(sc16).view(np.uint16).reshape(-1),
        k_pad,
        eff_group,
        float(tensor_scale),
    )


def unpack_codes(planes: ArrayLike, m: int, k: int, k_pad: int, bits: int) -> NDArray[np.uint8]:
    """Inverse of the plane packing: uint8 codes (m, k)."""
    m_pad = _round_up(m, TILE_ROWS)
    tiles = m_pad // TILE_ROWS
    p = np.asarray(planes, dtype=np.uint8).reshape(tiles, k_pad // 8, bits, 64)
    q = np.zeros((m_pad, k_pad), dtype=np.uint8)
    row_order = np.argsort(ROW_OF_BYTE)  # byte position of each row
    for i in range(bits):
        byte = p[:, :, i, :][:, :, row_order].transpose(0, 2, 1).reshape(m_pad, k_pad // 8)
        for j in range(8):
            nib = byte & 0x0F if j < 4 else byte >> 4
            q[:, j::8] |= ((nib >> (j % 4)) & 1) << i
    return q[:m, :k]


def unpack_scales(
    scales: ArrayLike, m: int, k_pad: int, group_size: int, tensor_scale: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(s/2, c) as float64 (m, k_pad // group_size), including the fp16 rounding the kernel sees."""
    tiles = _round_up(m, TILE_ROWS) // TILE_ROWS
    groups = k_pad // group_size
    sc16 = np.asarray(scales, dtype=np.uint16).view(np.float16).reshape(tiles, groups, 2, TILE_ROWS)
    sc = sc16.transpose(0, 3, 1, 2).reshape(tiles * TILE_ROWS, groups, 2).astype(np.float64) * tensor_scale
    return sc[:m, :, 0], sc[:m, :, 1]


def dequantize(
    planes: ArrayLike, scales: ArrayLike, m: int, k: int, k_pad: int, bits: int, group_size: int, tensor_scale: float
) -> NDArray[np.float64]:
    """The float64 weights (m, k) the kernel multiplies by: w = 2*sh*q - sh*(2^b - 1) + c."""
    q = unpack_codes(planes, m, k, k_pad, bits).astype(np.float64)
    half, offset = unpack_scales(scales, m, k_pad, group_size, tensor_scale)
    per_col = np.arange(k) // group_size
    sh, c = half[:, per_col], offset[:, per_col]
    return 2.0 * sh * q - sh * ((1 << bits) - 1) + c
