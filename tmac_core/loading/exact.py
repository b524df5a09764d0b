"""GGUF quantized blocks → the kernels' weight parameters, exactly: no float dequant, no requantizing.

Every type in tmac_core.plan.EXACT_SOURCES is the kernels' weight model as stored:
a code per weight and per group of weights a scale and an offset built from the
block's own fields (kernels/LAYOUT.md "Source mappings"). `decompose` copies the
codes bit for bit and hands the block's scale fields over unchanged:

- SUPER format (K-quants, Q4_1, Q5_1): w = d*sc*(q - z0) - dmin*mn with the fp16
  d/dmin of each super-block and the integer sc/mn of each group, as the file has
  them. The kernel derives its per-group (s/2, offset) from them in fp32 with one
  rounding (the offset only), so a weight is ggml's within a stated bound
  (tests/runtime/test_exact_repack.py says which are bit for bit).
  Q6_K and Q3_K have no mins (symmetric): the SUPER_NOMIN format stores d and sc alone.
- F16_SYM format (Q4_0, Q5_0, Q8_0, TQ1_0, TQ2_0): one scale d per block and a fixed
  zero code, w = d*(q - z); the packer's fp16 d/2 is d's own bits, and the kernel's
  offset zero_mult*d/2 (zero_mult = 2^b - 1 - 2z = -1 or +1) is exact in fp32.

Rows are independent (a GGUF row is whole blocks), so `decompose_tensor` takes a row
range: a streaming loader repacks a big matrix piece by piece. Block layouts are
ggml-common.h's, quoted above each function; the bit unpacking is dequant.py's.
Imports numpy, the GGUF reader, dequant.py's unpackers and tmac_core.plan: no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tmac_core.loading.dequant import (
    _BIT_SHIFTS,
    _CRUMB_SHIFTS,
    _NIBBLE_SHIFTS,
    _crumbs,
    _fifth_bits,
    _k4_nibbles,
    _k4_scales_mins,
    _nibbles,
    _q3_k_scales,
    _ternary_digits,
    check_finite,
)
from tmac_core.loading.gguf import BLOCK_LAYOUT, GGMLType, GGUFFile
from tmac_core.plan import EXACT_SOURCES, SourceFormat

U8 = NDArray[np.uint8]


@dataclass(frozen=True)
class ExactF16:
    """Weights w[m, k] = scales[m, g] * (codes[m, k] - zeros[m, g]), g = k // group_size:
    the arguments of kernels.pack (F16 scale format). Every scale is an fp16 value of the file."""

    codes: U8  # (M, K) in [0, 2**bits)
    bits: int
    group_size: int
    scales: NDArray[np.float32]  # (M, K // group_size)
    zeros: NDArray[np.float32]  # (M, K // group_size): the type's fixed zero code
    symmetric: bool = False  # one zero code for every group: the F16_SYM format


@dataclass(frozen=True)
class ExactSuper:
    """Weights w[m, k] = d[m, u]*sc[m, g]*(codes[m, k] - z0) - dmin[m, u]*mn[m, g],
    u = k // super_size, g = k // group_size, code_offset = (2**bits - 1)/2 - z0:
    the arguments of kernels.pack_super (SUPER scale format), as the file stores them."""

    codes: U8  # (M, K) in [0, 2**bits)
    bits: int
    group_size: int
    super_size: int
    code_offset: float
    d: NDArray[np.float16]  # (M, K // super_size)
    dmin: NDArray[np.float16]  # (M, K // super_size)
    sc: NDArray[np.int8]  # (M, K // group_size)
    mn: NDArray[np.int8]  # (M, K // group_size)
    symmetric: bool = False  # the type has no mins (dmin, mn all zero): the SUPER_NOMIN format


Exact = ExactF16 | ExactSuper


def _half(blocks: U8, at: int) -> NDArray[np.float16]:
    """The fp16 at byte `at` of every block, shape (n,)."""
    return blocks[:, at : at + 2].copy().view("<f2")[:, 0].astype(np.float16)


# Each unpacker: (n, block_bytes) blocks → (codes (n, block) uint8, d (n,) fp16,
# dmin (n,) fp16 or None, sc/mn (n, block // group) int8 or None).
_Parts = tuple[U8, NDArray[np.float16], NDArray[np.float16] | None, NDArray[np.int8] | None, NDArray[np.int8] | None]


def _q4_0(b: U8) -> _Parts:  # {half d; uint8 qs[16]}: w = d*(q - 8)
    return _nibbles(b[:, 2:18]), _half(b, 0), None, None, None


def _q5_0(b: U8) -> _Parts:  # {half d; uint8 qh[4]; uint8 qs[16]}: w = d*(q - 16)
    return _nibbles(b[:, 6:22]) | _fifth_bits(b[:, 2:6]), _half(b, 0), None, None, None


def _q8_0(b: U8) -> _Parts:  # {half d; int8 qs[32]}: code = qs + 128, w = d*(code - 128)
    return b[:, 2:34] ^ np.uint8(0x80), _half(b, 0), None, None, None


def _with_min(codes: U8, d: NDArray[np.float16], m: NDArray[np.float16]) -> _Parts:
    """Q4_1/Q5_1: w = d*q + m = d*1*(q - 0) - (-m)*1; fp16 negation is exact."""
    ones = np.ones((len(codes), 1), np.int8)
    return codes, d, -m, ones, ones


def _q4_1(b: U8) -> _Parts:  # {half d; half m; uint8 qs[16]}
    return _with_min(_nibbles(b[:, 4:20]), _half(b, 0), _half(b, 2))


def _q5_1(b: U8) -> _Parts:  # {half d; half m; uint8 qh[4]; uint8 qs[16]}
    return _with_min(_nibbles(b[:, 8:24]) | _fifth_bits(b[:, 4:8]), _half(b, 0), _half(b, 2))


def _q2_k(b: U8) -> _Parts:  # {uint8 scales[16]; uint8 qs[64]; half d; half dmin}: 4-bit sc (low), mn (high)
    codes = _crumbs(b[:, 16:80]).reshape(len(b), 256)
    sc = (b[:, 0:16] & np.uint8(0x0F)).astype(np.int8)
    mn = (b[:, 0:16] >> np.uint8(4)).astype(np.int8)
    return codes, _half(b, 80), _half(b, 82), sc, mn


def _q3_k(b: U8) -> _Parts:  # {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d}
    # ggml's value is crumb - 4 where the hmask bit is clear: code = crumb + 4*bit, z0 = 4
    n = len(b)
    high = (b[:, None, 0:32] >> _BIT_SHIFTS[:, None]) & np.uint8(1)  # (n, 8, 32)
    codes = _crumbs(b[:, 32:96]).reshape(n, 8, 32) | (high << np.uint8(2))
    return codes.reshape(n, 256), _half(b, 108), np.zeros(n, np.float16), _q3_k_scales(b[:, 96:108]), None


def _q4_k(b: U8) -> _Parts:  # {half d; half dmin; uint8 scales[12]; uint8 qs[128]}
    sc, mn = _k4_scales_mins(b[:, 4:16])
    codes = _k4_nibbles(b[:, 16:144]).reshape(len(b), 256)
    return codes, _half(b, 0), _half(b, 2), sc.astype(np.int8), mn.astype(np.int8)


def _q5_k(b: U8) -> _Parts:  # {half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}
    sc, mn = _k4_scales_mins(b[:, 4:16])
    high = (b[:, None, 16:48] >> _BIT_SHIFTS[:, None]) & np.uint8(1)  # sub-block j: bit j of qh[l]
    codes = _k4_nibbles(b[:, 48:176]) | (high << np.uint8(4))
    return codes.reshape(len(b), 256), _half(b, 0), _half(b, 2), sc.astype(np.int8), mn.astype(np.int8)


def _q6_k(b: U8) -> _Parts:  # {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d}: code = q + 32, z0 = 32
    n = len(b)
    # half h, pass p: nibble p//2 of ql[64h + 32(p%2) + l], bits 2p..2p+1 of qh[32h + l]
    low = (b[:, 0:128].reshape(n, 2, 1, 2, 32) >> _NIBBLE_SHIFTS[:, None, None]) & np.uint8(0x0F)
    high = (b[:, 128:192].reshape(n, 2, 1, 32) >> _CRUMB_SHIFTS[:, None]) & np.uint8(3)
    codes = low.reshape(n, 2, 4, 32) | (high << np.uint8(4))
    return codes.reshape(n, 256), _half(b, 208), np.zeros(n, np.float16), b[:, 192:208].view(np.int8), None


def _tq1_0(b: U8) -> _Parts:  # {uint8 qs[48]; uint8 qh[4]; half d}: base-3 digits, w = d*(digit - 1)
    digits = np.concatenate(
        [_ternary_digits(b[:, 0:32], 32, 5), _ternary_digits(b[:, 32:48], 16, 5), _ternary_digits(b[:, 48:52], 4, 4)],
        axis=1,
    )
    return digits.astype(np.uint8), _half(b, 52), None, None, None


def _tq2_0(b: U8) -> _Parts:  # {uint8 qs[64]; half d}: w = d*(crumb - 1)
    return _crumbs(b[:, 0:64]).reshape(len(b), 256), _half(b, 64), None, None, None


# type → (unpacker, the fixed zero code z0 of its weight model)
_UNPACK: dict[GGMLType, tuple[Callable[[U8], _Parts], int]] = {
    GGMLType.Q4_0: (_q4_0, 8),
    GGMLType.Q5_0: (_q5_0, 16),
    GGMLType.Q8_0: (_q8_0, 128),
    GGMLType.Q4_1: (_q4_1, 0),
    GGMLType.Q5_1: (_q5_1, 0),
    GGMLType.Q2_K: (_q2_k, 0),
    GGMLType.Q3_K: (_q3_k, 4),
    GGMLType.Q4_K: (_q4_k, 0),
    GGMLType.Q5_K: (_q5_k, 0),
    GGMLType.Q6_K: (_q6_k, 32),
    GGMLType.TQ1_0: (_tq1_0, 1),
    GGMLType.TQ2_0: (_tq2_0, 1),
}


def source_format(ggml_type: GGMLType) -> SourceFormat | None:
    """The exact format of a type (tmac_core.plan.EXACT_SOURCES), None if it has none."""
    return EXACT_SOURCES.get(GGMLType(ggml_type).name)


def decompose(raw: U8 | bytes, ggml_type: GGMLType, k: int) -> Exact:
    """Whole rows of one tensor's raw bytes → its exact kernel parameters.

    Args:
        raw: the bytes of M whole rows (row-major, as GGUF stores them); not modified.
        ggml_type: a type of tmac_core.plan.EXACT_SOURCES.
        k: the row length (GGUF ne0), a multiple of the type's block size.

    Raises:
        ValueError: a type without an exact format, or a byte count that is not whole rows.
    The fp16 fields are returned as stored, NaN and infinities included: callers check them
    (decompose_tensor does, naming the tensor).
    """
    ggml_type = GGMLType(ggml_type)
    fmt = source_format(ggml_type)
    if fmt is None:
        raise ValueError(f"{ggml_type.name} has no exact kernel format")
    raw = np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray)) else np.asarray(raw).reshape(-1)
    block, block_bytes = BLOCK_LAYOUT[ggml_type]
    row_bytes = k // block * block_bytes
    if k <= 0 or k % block or raw.nbytes % row_bytes:
        raise ValueError(f"{raw.nbytes} bytes are not whole rows of {k} {ggml_type.name} values")
    m = raw.nbytes // row_bytes
    unpack, z0 = _UNPACK[ggml_type]
    codes, d, dmin, sc, mn = unpack(raw.reshape(-1, block_bytes))
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(m, k)
    if not fmt.super_size:  # F16 format: one scale per block, repeated over groups wider than a block
        scales = np.repeat(d.astype(np.float32).reshape(m, k // block), block // fmt.group_size, axis=1)
        return ExactF16(codes, fmt.bits, fmt.group_size, scales, np.full_like(scales, z0), fmt.symmetric)
    assert dmin is not None and sc is not None  # every SUPER unpacker returns them
    assert not fmt.symmetric or (mn is None and not dmin.any())  # Q6_K, Q3_K: no mins
    n_groups = k // fmt.group_size
    return ExactSuper(
        codes,
        fmt.bits,
        fmt.group_size,
        fmt.super_size,
        ((1 << fmt.bits) - 1) / 2 - z0,
        d.reshape(m, k // fmt.super_size),
        dmin.reshape(m, k // fmt.super_size),
        np.ascontiguousarray(sc, dtype=np.int8).reshape(m, n_groups),
        np.zeros((m, n_groups), np.int8)
        if mn is None
        else np.ascontiguousarray(mn, dtype=np.int8).reshape(m, n_groups),
        fmt.symmetric,
    )


def decompose_tensor(gguf: GGUFFile, name: str, rows: tuple[int, int] | None = None) -> Exact:
    """Rows [start, stop) of one matrix of an open file (all rows by default), exactly.

    Raises:
        KeyError: no such tensor. ValueError: its type has no exact format, or a bad row range.
        ModelFormatError: a NaN or infinite scale in the rows read.
    """
    info = gguf.tensors[name]
    k, m = info.shape[0], int(np.prod(info.shape[1:], dtype=np.int64))
    start, stop = (0, m) if rows is None else rows
    if not 0 <= start < stop <= m:
        raise ValueError(f"rows {start}..{stop} are not within the {m} rows of {name!r}")
    block, block_bytes = BLOCK_LAYOUT[info.ggml_type]
    row_bytes = k // block * block_bytes
    out = decompose(gguf.tensor_bytes(name)[start * row_bytes : stop * row_bytes], info.ggml_type, k)
    if isinstance(out, ExactF16):
        check_finite(gguf, name, out.scales)
    else:
        check_finite(gguf, name, np.concatenate([out.d.reshape(-1), out.dmin.reshape(-1)]))
    return out


def f16_tensor_scale(gguf: GGUFFile, name: str) -> float | None:
    """The one tensor_scale kernels.pack gives the whole of an F16-format matrix (None for
    SUPER types, whose tensor_scale is 1), for a loader that packs it in row ranges: every
    such type's peak |s/2|, |offset| is max |d| / 2, and pack puts it in [2^14, 2^15).
    Reads only the fp16 d of each block.

    Raises:
        ModelFormatError: a NaN or infinite d.
    """
    info = gguf.tensors[name]
    fmt = source_format(info.ggml_type)
    if fmt is None or fmt.super_size:
        return None
    block_bytes = BLOCK_LAYOUT[info.ggml_type][1]
    at = {GGMLType.TQ1_0: 52, GGMLType.TQ2_0: 64}.get(info.ggml_type, 0)  # d leads the other F16 types
    d = _half(gguf.tensor_bytes(name).reshape(-1, block_bytes), at).astype(np.float64)
    check_finite(gguf, name, d)
    peak = float(np.abs(d).max(initial=0.0)) / 2
    return 1.0 if peak == 0.0 else float(2.0 ** (math.floor(math.log2(peak)) - 14))
