"""Numpy pack/unpack of the kernel weight layout: the executable spec of
LAYOUT.md §Weights (version LAYOUT_VERSION), checked against golden bytes in
the tests. Numpy, and the C packer it routes to: no Qt.

A weight is w[m, k] = s[m, g] * (q[m, k] - z[m, g]) with q a b-bit code (b = 1..8).
The kernel never dequantizes: it reads q as b one-bit planes and multiplies per
(row, group) by sh = s/2 and c = s * ((2^b - 1)/2 - z). Four scale formats hold them:
F16 stores (sh, c) as fp16, scaled by one power-of-two tensor_scale so fp16's range
never clips; F16_SYM (one zero code z for the whole tensor: Q4_0, Q8_0, ternary) stores
sh alone and the kernel derives c = zero_mult * sh, zero_mult = 2^b - 1 - 2z, exactly;
SUPER (K-quants) stores fp16 (d, dmin) per super-block and int8 (sc, mn) per group,
w = d*sc*(q - z0) - dmin*mn, and the kernel derives (sh, c) from them exactly
(super_coeffs; LAYOUT.md gives the identities); SUPER_NOMIN is SUPER without the
mins (Q6_K, Q3_K): d and sc alone.

pack_arrays, pack_sym_arrays and pack_super_arrays hand the bit planes and scale tiles to the C packer
(loading/packer.py, pack.c) unless native=False: the numpy functions here stay the
spec, and the tests compare the two byte for byte.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

LAYOUT_VERSION = 3
TILE_ROWS = 64
MAX_BITS = 8
GROUP_SIZES = (16, 32, 64, 128, 256)
SCALES_F16 = 0
SCALES_SUPER = 1
SCALES_F16_SYM = 2
SCALES_SUPER_NOMIN = 3
MAX_ZERO_MULT = 255  # |zero_mult| * an fp16 sh (11 significant bits) stays exact in fp32

# byte p of a 64-byte index block holds row ROW_OF_BYTE[p] of the tile (layout.h)
ROW_OF_BYTE = np.array(
    [(8 * (p // 16) + p % 16) if p % 16 < 8 else (32 + 8 * (p // 16) + p % 16 - 8) for p in range(64)], dtype=np.int64
)


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def act_group_for(group_size: int) -> int:
    """Activation-table group size of a weight with these scale groups: min(64, group_size);
    per-row groups (a multiple of 64 wide) read 64."""
    return min(64, group_size)


def _check_codes(codes: ArrayLike, bits: int) -> NDArray[np.integer]:
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
        raise ValueError(f"codes must be a non-empty 2-D array, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"codes must be integers, got {c.dtype}")
    if not (isinstance(bits, int) and 1 <= bits <= MAX_BITS):
        raise ValueError(f"bits must be 1..{MAX_BITS}, got {bits}")
    if c.min() < 0 or c.max() >= (1 << bits):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit weights")
    return c


def _pack_planes(codes: NDArray[np.integer], bits: int, k_pad: int) -> NDArray[np.uint8]:
    """planes (m_pad/64, k_pad/8, bits, 64) of codes (M, K), zero-padded, flattened."""
    m, k = codes.shape
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
    return planes.reshape(-1)


def scale_records(scale_format: int) -> int:
    """Values per row and group (super-block) of a scale format: 2 for F16 (sh, c) and SUPER
    (d, dmin) / (sc, mn); 1 for F16_SYM (sh) and SUPER_NOMIN (d) / (sc)."""
    return 2 if scale_format in (SCALES_F16, SCALES_SUPER) else 1


def _to_tiles(per_row: NDArray[np.generic], m: int) -> NDArray[np.generic]:
    """(m, n, r) per-row values -> (m_pad/64, n, r, 64) natural row order, zero rows past m."""
    tiles = _round_up(m, TILE_ROWS) // TILE_ROWS
    out = np.zeros((tiles * TILE_ROWS,) + per_row.shape[1:], dtype=per_row.dtype)
    out[:m] = per_row
    r = per_row.shape[2]
    return np.ascontiguousarray(out.reshape(tiles, TILE_ROWS, per_row.shape[1], r).transpose(0, 2, 3, 1))


def _from_tiles(flat: ArrayLike, dtype: type[np.generic], m: int, n: int, records: int = 2) -> NDArray[np.generic]:
    """Inverse of _to_tiles: (m, n, records)."""
    tiles = _round_up(m, TILE_ROWS) // TILE_ROWS
    t = np.asarray(flat).view(dtype).reshape(tiles, n, records, TILE_ROWS)
    return t.transpose(0, 3, 1, 2).reshape(tiles * TILE_ROWS, n, records)[:m]


def _check_tensor_scale(tensor_scale: float) -> float:
    ts = float(tensor_scale)
    if not (ts > 0 and math.isfinite(ts) and math.frexp(ts)[0] == 0.5):
        raise ValueError(f"tensor_scale must be a positive power of two, got {tensor_scale}")
    if not (np.float32(ts) == ts and np.float32(ts) >= np.finfo(np.float32).tiny and np.isfinite(np.float32(ts))):
        raise ValueError(f"tensor_scale {tensor_scale} is not a normal float32")
    return ts


def pack_arrays(
    codes: ArrayLike,
    scales: ArrayLike,
    zeros: ArrayLike | None = None,
    *,
    bits: int,
    group_size: int,
    tensor_scale: float | None = None,
    native: bool = True,
) -> tuple[NDArray[np.uint8], NDArray[np.uint16], int, int, float]:
    """Packs codes into the kernel layout with F16 scales.

    Args:
        codes: uint8 (M, K), values in [0, 2**bits).
        scales: float32 (M, K // group_size); anything broadcastable to it works
            (a (1, 1) array is one per-tensor scale).
        zeros: float32 like scales, or None for the symmetric 2**(bits-1).
        bits: 1..8 (ternary is bits=2 with zeros=1).
        group_size: 16, 32, 64, 128 or 256 along K, or K itself for one scale per row.
        tensor_scale: None to derive it from the peak |sh|, |c| (it puts the peak in
            [2^14, 2^15)); else a power of two that keeps every fp16 value finite (a matrix
            packed in row chunks shares one).
        native: the C packer (the same bytes, faster); False for the numpy spec alone.

    Returns:
        (planes uint8 flat, fp16 scale bits uint16 flat, k_pad, effective group size, tensor_scale).

    Raises:
        ValueError: on any inconsistent shape, dtype or value.
    """
    codes = _check_codes_fast(codes, bits) if native else _check_codes(codes, bits)
    m, k = codes.shape
    if group_size in GROUP_SIZES:
        if k % group_size:
            raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
        k_pad, eff_group = k, group_size
    elif group_size == k:
        k_pad = _round_up(k, 64)
        eff_group = k_pad
    else:
        raise ValueError(f"group_size must be one of {GROUP_SIZES} or K={k} (per row), got {group_size}")
    n_groups = k // group_size
    if native:
        return _pack_native(codes, scales, zeros, bits, k_pad, eff_group, n_groups, tensor_scale)
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
    if tensor_scale is None:
        tensor_scale = _tensor_scale_of(max(float(np.abs(half).max()), float(np.abs(offset).max())))
    else:
        tensor_scale = _check_tensor_scale(tensor_scale)

    sc = np.empty((m, k_pad // eff_group, 2), dtype=np.float64)  # per-row scales: one group of k_pad columns
    sc[:, :, 0] = half / tensor_scale
    sc[:, :, 1] = offset / tensor_scale
    with np.errstate(over="ignore"):
        sc16 = sc.astype(np.float16)
    if not np.isfinite(sc16).all():
        raise ValueError(f"tensor_scale={tensor_scale} leaves scales outside fp16's range")
    return (
        _pack_planes(codes, bits, k_pad),
        _to_tiles(sc16, m).view(np.uint16).reshape(-1),
        k_pad,
        eff_group,
        float(tensor_scale),
    )


def _tensor_scale_of(peak: float) -> float:
    """The power of two that puts the peak |sh|, |c| in [2^14, 2^15) (the division by it is exact)."""
    tensor_scale = 1.0 if peak == 0.0 else 2.0 ** (math.floor(math.log2(peak)) - 14)
    if not (np.float32(tensor_scale) > 0 and np.isfinite(np.float32(tensor_scale))):
        raise ValueError(f"scales out of range (peak {peak})")
    return tensor_scale


def zero_mult_of(zeros: ArrayLike, bits: int) -> int:
    """F16_SYM's per-tensor multiplier 2^bits - 1 - 2z of one zero code z shared by every group
    (c = s*((2^b - 1)/2 - z) = zero_mult * s/2). ValueError unless the zeros are one integer
    with |zero_mult| <= MAX_ZERO_MULT."""
    z = np.unique(np.asarray(zeros, dtype=np.float64))
    if z.size != 1 or not np.isfinite(z[0]) or z[0] != np.rint(z[0]):
        raise ValueError("symmetric scales need one integer zero code for the whole tensor")
    zero_mult = (1 << bits) - 1 - 2 * int(z[0])
    if abs(zero_mult) > MAX_ZERO_MULT:
        raise ValueError(f"zero code {int(z[0])} at {bits} bits gives zero_mult {zero_mult}, beyond {MAX_ZERO_MULT}")
    return zero_mult


def pack_sym_arrays(
    codes: ArrayLike,
    scales: ArrayLike,
    zeros: ArrayLike,
    *,
    bits: int,
    group_size: int,
    tensor_scale: float | None = None,
    native: bool = True,
) -> tuple[NDArray[np.uint8], NDArray[np.uint16], int, int, float, int]:
    """Packs codes into the kernel layout with F16_SYM scales: pack_arrays' planes, tensor_scale
    and fp16 sh (the same rule, so the same bits), without the c records, which the kernel
    derives as zero_mult * sh (exact in fp32).

    Args: as pack_arrays; zeros: one integer zero code for the whole tensor (an array of equal
        values or a scalar).

    Returns:
        (planes uint8 flat, fp16 sh bits uint16 (m_pad/64, n_groups, 1, 64) flat, k_pad,
        effective group size, tensor_scale, zero_mult).
    """
    zero_mult = zero_mult_of(zeros, bits)
    zero = (((1 << bits) - 1) - zero_mult) // 2
    m = np.shape(codes)[0]
    planes, pairs, k_pad, eff_group, ts = pack_arrays(
        codes,
        scales,
        np.full((1, 1), zero, np.float32),
        bits=bits,
        group_size=group_size,
        tensor_scale=tensor_scale,
        native=native,
    )
    tiles = _round_up(m, TILE_ROWS) // TILE_ROWS
    sh = np.ascontiguousarray(pairs.reshape(tiles, k_pad // eff_group, 2, TILE_ROWS)[:, :, :1, :]).reshape(-1)
    return planes, sh, k_pad, eff_group, ts, zero_mult


def _check_codes_fast(codes: ArrayLike, bits: int) -> NDArray[np.integer]:
    """_check_codes without its two passes over a uint8 matrix: the C packer checks the range."""
    c = np.asarray(codes)
    if c.dtype != np.uint8:
        return _check_codes(c, bits).astype(np.uint8)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
        raise ValueError(f"codes must be a non-empty 2-D array, got shape {c.shape}")
    if not (isinstance(bits, int) and 1 <= bits <= MAX_BITS):
        raise ValueError(f"bits must be 1..{MAX_BITS}, got {bits}")
    return c


def _pack_native(
    codes: NDArray[np.integer],
    scales: ArrayLike,
    zeros: ArrayLike | None,
    bits: int,
    k_pad: int,
    eff_group: int,
    n_groups: int,
    tensor_scale: float | None,
) -> tuple[NDArray[np.uint8], NDArray[np.uint16], int, int, float]:
    """pack_arrays' result from the C packer: the same checks, the same float64 arithmetic."""
    from tmac_core.loading import packer as fastquant

    m = codes.shape[0]
    s, z = np.asarray(scales), None if zeros is None else np.asarray(zeros)
    peak = fastquant.f16_peak(s, z, (m, n_groups), bits)  # checks that they are finite
    tensor_scale = _tensor_scale_of(peak) if tensor_scale is None else _check_tensor_scale(tensor_scale)
    scale_bits = fastquant.f16_scales(s, z, (m, n_groups), bits, tensor_scale)
    planes = fastquant.pack_planes(np.asarray(codes, np.uint8), bits, k_pad)
    return planes, scale_bits, k_pad, eff_group, float(tensor_scale)


def _exact_fp16(name: str, values: ArrayLike, shape: tuple[int, int]) -> NDArray[np.float16]:
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"{name} must be float16 or float32, got {v.dtype}")
    try:
        v64 = np.broadcast_to(v.astype(np.float64), shape)
    except ValueError:
        raise ValueError(f"{name} has shape {v.shape}, expected {shape}") from None
    with np.errstate(over="ignore"):
        h = v64.astype(np.float16)
    if not (np.isfinite(v64).all() and (h.astype(np.float64) == v64).all()):
        raise ValueError(f"{name} must be finite and exactly representable in fp16")
    return h


def _int8_sub(name: str, values: ArrayLike, shape: tuple[int, int]) -> NDArray[np.int8]:
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got {v.dtype}")
    try:
        v = np.broadcast_to(v, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {np.shape(values)}, expected {shape}") from None
    if v.size and (v.min() < -128 or v.max() > 127):
        raise ValueError(f"{name} must lie in [-128, 127] (int8)")
    return v.astype(np.int8)


def pack_super_arrays(
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
    native: bool = True,
) -> tuple[NDArray[np.uint8], NDArray[np.uint16], NDArray[np.int8], int]:
    """Packs codes into the kernel layout with SUPER scales: w = d[u]*sc[g]*(q - z0) - dmin[u]*mn[g],
    or SUPER_NOMIN scales (dmin and mn None): w = d[u]*sc[g]*(q - z0).

    Args:
        codes: uint8 (M, K), values in [0, 2**bits).
        d, dmin: float32 or float16 (M, K // super_size), each value exactly an fp16; dmin None: no mins.
        sc, mn: integers (M, K // group_size) in [-128, 127]; mn None exactly when dmin is.
        bits: 1..8.
        group_size: 16, 32, 64, 128 or 256 along K (K a multiple of it).
        super_size: a multiple of group_size dividing K.
        code_offset: kb = (2**bits - 1)/2 - z0, z0 the format's fixed code offset.
        native: the C packer (the same bytes, faster); False for the numpy spec alone.

    Returns:
        (planes uint8 flat, fp16 (d, dmin) or (d) bits uint16 flat, int8 (sc, mn) or (sc) flat, k_pad = K).

    Raises:
        ValueError: on any inconsistent shape, dtype or value.
    """
    codes = _check_codes_fast(codes, bits) if native else _check_codes(codes, bits)
    m, k = codes.shape
    if (dmin is None) != (mn is None):
        raise ValueError("dmin and mn are both given (SUPER) or both None (SUPER_NOMIN)")
    if group_size not in GROUP_SIZES or k % group_size:
        raise ValueError(f"group_size must be one of {GROUP_SIZES} and divide K={k}, got {group_size}")
    if not (isinstance(super_size, int) and super_size > 0 and super_size % group_size == 0 and k % super_size == 0):
        raise ValueError(f"super_size={super_size} must be a multiple of group_size={group_size} dividing K={k}")
    if not np.isfinite(np.float32(code_offset)):
        raise ValueError(f"code_offset must be finite, got {code_offset}")
    n_super, n_groups = k // super_size, k // group_size
    if dmin is None or mn is None:  # SUPER_NOMIN: one record each, a few % of the planes' bytes
        d16 = _exact_fp16("d", d, (m, n_super))[:, :, None]
        sc8 = _int8_sub("sc", sc, (m, n_groups))[:, :, None]
        planes = fastquant_planes(codes, bits, k) if native else _pack_planes(codes, bits, k)
        return planes, _to_tiles(d16, m).view(np.uint16).reshape(-1), _to_tiles(sc8, m).view(np.int8).reshape(-1), k
    if native:
        from tmac_core.loading import packer as fastquant

        d16, dmin16 = _exact_fp16("d", d, (m, n_super)), _exact_fp16("dmin", dmin, (m, n_super))
        sc8, mn8 = _int8_sub("sc", sc, (m, n_groups)), _int8_sub("mn", mn, (m, n_groups))
        return (
            fastquant.pack_planes(np.asarray(codes, np.uint8), bits, k),
            fastquant.pair_tiles(d16, dmin16).view(np.uint16),
            fastquant.pair_tiles(sc8, mn8).view(np.int8),
            k,
        )
    supers = np.stack([_exact_fp16("d", d, (m, n_super)), _exact_fp16("dmin", dmin, (m, n_super))], axis=2)
    subs = np.stack([_int8_sub("sc", sc, (m, n_groups)), _int8_sub("mn", mn, (m, n_groups))], axis=2)
    return (
        _pack_planes(codes, bits, k),
        _to_tiles(supers, m).view(np.uint16).reshape(-1),
        _to_tiles(subs, m).view(np.int8).reshape(-1),
        k,
    )


def fastquant_planes(codes: NDArray[np.integer], bits: int, k_pad: int) -> NDArray[np.uint8]:
    """The C packer's _pack_planes (the same bytes)."""
    from tmac_core.loading import packer as fastquant

    return fastquant.pack_planes(np.asarray(codes, np.uint8), bits, k_pad)


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
    scales: ArrayLike, m: int, k_pad: int, group_size: int, tensor_scale: float, zero_mult: int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """F16 (zero_mult None): (sh, c) as float64 (m, k_pad // group_size), including the fp16
    rounding the kernel sees. F16_SYM: sh and c = zero_mult * sh (sym_offset)."""
    records = 2 if zero_mult is None else 1
    sc = _from_tiles(np.asarray(scales, dtype=np.uint16), np.float16, m, k_pad // group_size, records)
    if zero_mult is not None:
        sh32 = sc[:, :, 0].astype(np.float32)
        return sh32.astype(np.float64) * tensor_scale, sym_offset(zero_mult, sh32).astype(np.float64) * tensor_scale
    sc64 = sc.astype(np.float64) * tensor_scale
    return sc64[:, :, 0], sc64[:, :, 1]


def sym_offset(zero_mult: int, sh: NDArray[np.float32]) -> NDArray[np.float32]:
    """F16_SYM's c = zero_mult * sh in fp32, the kernels' operation (layout.h tmac_sym_offset): exact."""
    return np.float32(zero_mult) * np.asarray(sh, dtype=np.float32)


def unpack_super(
    scales: ArrayLike, sub: ArrayLike, m: int, k_pad: int, group_size: int, super_size: int, *, mins: bool = True
) -> tuple[NDArray[np.float16], NDArray[np.float16], NDArray[np.int8], NDArray[np.int8]]:
    """SUPER: (d, dmin) fp16 (m, k_pad // super_size) and (sc, mn) int8 (m, k_pad // group_size).
    SUPER_NOMIN (mins False): d and sc, with dmin and mn zeros."""
    records = 2 if mins else 1
    supers = _from_tiles(np.asarray(scales, dtype=np.uint16), np.float16, m, k_pad // super_size, records)
    subs = _from_tiles(np.asarray(sub, dtype=np.int8), np.int8, m, k_pad // group_size, records)
    d, sc = supers[:, :, 0].view(np.float16), subs[:, :, 0].view(np.int8)
    if not mins:
        return d, np.zeros_like(d), sc, np.zeros_like(sc)
    return d, supers[:, :, 1].view(np.float16), sc, subs[:, :, 1].view(np.int8)


def _fmaf(a: NDArray[np.float32], b: NDArray[np.float32], c: NDArray[np.float32]) -> NDArray[np.float32]:
    """C's fmaf elementwise: a*b + c rounded once to float32 (nearest, ties to even).
    a*b is exact in float64 (24 + 24 bits); the sum's float64 rounding error e comes from
    TwoSum, and decides the one case float64 -> float32 gets wrong: a sum that lands
    exactly halfway between two float32 although the exact value does not."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)  # s + e == p + c64 exactly
    with np.errstate(over="ignore"):
        r = s.astype(np.float32)
        r64 = r.astype(np.float64)
        toward = np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32)
        other = np.nextafter(r, toward)  # the float32 on s's other side
    o64 = other.astype(np.float64)
    tie = (r64 != s) & (np.abs(s - r64) == np.abs(o64 - s)) & (e != 0)
    pick_other = tie & ((e > 0) == (o64 > s))
    return np.where(pick_other, other, r).astype(np.float32)


def super_coeffs(
    d: ArrayLike, dmin: ArrayLike, sc: ArrayLike, mn: ArrayLike, code_offset: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(sh, c) of SUPER scales, EXACTLY the fp32 operations of the kernels' epilogue
    (layout.h tmac_super_coeffs): sh = (0.5*D)*sf, c = fmaf(code_offset*D, sf, -(Dm*mf))."""
    D = np.asarray(d, dtype=np.float16).astype(np.float32)
    Dm = np.asarray(dmin, dtype=np.float16).astype(np.float32)
    sf = np.asarray(sc, dtype=np.int8).astype(np.float32)
    mf = np.asarray(mn, dtype=np.int8).astype(np.float32)
    sh = (np.float32(0.5) * D) * sf
    c = _fmaf(np.float32(code_offset) * D, sf, -(Dm * mf))
    return sh, c


def super_nomin_coeffs(
    d: ArrayLike, sc: ArrayLike, code_offset: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(sh, c) of SUPER_NOMIN scales (layout.h tmac_super_nomin_coeffs): super_coeffs' operations
    with dmin = mn = 0, c = fmaf(code_offset*D, sf, -0)."""
    D = np.asarray(d, dtype=np.float16).astype(np.float32)
    sf = np.asarray(sc, dtype=np.int8).astype(np.float32)
    sh = (np.float32(0.5) * D) * sf
    c = _fmaf(np.float32(code_offset) * D, sf, np.full(sf.shape, -0.0, np.float32))
    return sh, c


def dequantize(
    planes: ArrayLike,
    scales: ArrayLike,
    m: int,
    k: int,
    k_pad: int,
    bits: int,
    group_size: int,
    tensor_scale: float,
    *,
    scale_format: int = SCALES_F16,
    sub: ArrayLike | None = None,
    super_size: int = 0,
    code_offset: float = 0.0,
    zero_mult: int = 0,
) -> NDArray[np.float64]:
    """The float64 weights (m, k) the kernel multiplies by: w = (2*sh*q - sh*(2^b - 1) + c) * tensor_scale,
    (sh, c) read from fp16 (F16), c = zero_mult * sh (F16_SYM) or derived in fp32 by super_coeffs
    (SUPER) / super_nomin_coeffs (SUPER_NOMIN)."""
    q = unpack_codes(planes, m, k, k_pad, bits).astype(np.float64)
    per_col = np.arange(k) // group_size
    if scale_format in (SCALES_F16, SCALES_F16_SYM):
        mult = zero_mult if scale_format == SCALES_F16_SYM else None
        half, offset = unpack_scales(scales, m, k_pad, group_size, 1.0, mult)
        sh, c = half[:, per_col], offset[:, per_col]
    elif scale_format in (SCALES_SUPER, SCALES_SUPER_NOMIN):
        if sub is None:
            raise ValueError("SUPER scales need sub")
        mins = scale_format == SCALES_SUPER
        d, dmin, sc, mn = unpack_super(scales, sub, m, k_pad, group_size, super_size, mins=mins)
        super_of_group = np.arange(k_pad // group_size) * group_size // super_size
        if mins:
            sh32, c32 = super_coeffs(d[:, super_of_group], dmin[:, super_of_group], sc, mn, code_offset)
        else:
            sh32, c32 = super_nomin_coeffs(d[:, super_of_group], sc, code_offset)
        sh, c = sh32.astype(np.float64)[:, per_col], c32.astype(np.float64)[:, per_col]
    else:
        raise ValueError(f"unknown scale_format {scale_format}")
    return (2.0 * sh * q - sh * ((1 << bits) - 1) + c) * tensor_scale
