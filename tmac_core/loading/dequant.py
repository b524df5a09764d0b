"""Dequantize GGUF tensor data to float32 with numpy, following ggml exactly.

Each `_<type>` function turns (n_blocks, block_bytes) uint8 into (n_blocks, block)
float32 and mirrors `dequantize_row_<type>` in ggml-quants.c, including its order of
float32 operations, so results match ggml bit for bit. Block layouts are quoted from
ggml-common.h above each function. Work is done in chunks of blocks to keep temporaries
in cache. Imports numpy and `tmac_core.loading.gguf` only: no Qt, no `gguf` package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tmac_core.errors import ModelFormatError
from tmac_core.loading.gguf import I2_S_BLOCK_BYTES, GGMLType, GGUFFile, data_layout

_CHUNK_VALUES = 1 << 20  # values per chunk: temporaries stay a few MiB
_NIBBLE_SHIFTS = np.array([0, 4], dtype=np.uint8)
_CRUMB_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
_BIT_SHIFTS = np.arange(8, dtype=np.uint8)
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _half(blocks: np.ndarray, at: int) -> np.ndarray:
    """The fp16 at byte `at` of every block, as float32 of shape (n, 1)."""
    return blocks[:, at : at + 2].copy().view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) bytes → (n, 32): low nibbles are values 0..15, high nibbles 16..31."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)


def _q4_0(blocks: np.ndarray) -> np.ndarray:  # {half d; uint8 qs[16]}
    return (_nibbles(blocks[:, 2:18]).astype(np.int8) - np.int8(8)) * _half(blocks, 0)


def _q4_1(blocks: np.ndarray) -> np.ndarray:  # {half d; half m; uint8 qs[16]}
    return _nibbles(blocks[:, 4:20]) * _half(blocks, 0) + _half(blocks, 2)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    # qh is a little-endian uint32 whose bit j is bit 4 of value j.
    return np.unpackbits(qh, axis=1, bitorder="little") << np.uint8(4)


def _q5_0(blocks: np.ndarray) -> np.ndarray:  # {half d; uint8 qh[4]; uint8 qs[16]}
    q = _nibbles(blocks[:, 6:22]) | _fifth_bits(blocks[:, 2:6])
    return (q.astype(np.int8) - np.int8(16)) * _half(blocks, 0)


def _q5_1(blocks: np.ndarray) -> np.ndarray:  # {half d; half m; uint8 qh[4]; uint8 qs[16]}
    q = _nibbles(blocks[:, 8:24]) | _fifth_bits(blocks[:, 4:8])
    return q * _half(blocks, 0) + _half(blocks, 2)


def _q8_0(blocks: np.ndarray) -> np.ndarray:  # {half d; int8 qs[32]}
    return blocks[:, 2:34].view(np.int8) * _half(blocks, 0)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """(n, 64) bytes → (n, 2, 4, 32) 2-bit values: half h, shift s, position l.

    K-quants walk each 32-byte run four times, two bits deeper each pass, so value
    128h + 32s + l is bits 2s..2s+1 of qs[32h + l].
    """
    return (qs.reshape(-1, 2, 1, 32) >> _CRUMB_SHIFTS[:, None]) & np.uint8(3)


def _q2_k(blocks: np.ndarray) -> np.ndarray:  # {uint8 scales[16]; uint8 qs[64]; half d; half dmin}
    n = len(blocks)
    scales = blocks[:, 0:16]
    dl = (_half(blocks, 80) * (scales & np.uint8(0x0F))).reshape(n, 16, 1)
    ml = (_half(blocks, 82) * (scales >> np.uint8(4))).reshape(n, 16, 1)
    # Each scale covers 16 consecutive outputs, i.e. half a 32-byte pass.
    q = _crumbs(blocks[:, 16:80]).reshape(n, 16, 16)
    return (dl * q - ml).reshape(n, 256)


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """12 bytes → 16 signed 6-bit scales: low 4 bits in s[0:8], high 2 bits in s[8:12]."""
    lo = np.concatenate([s[:, 0:8] & np.uint8(0x0F), s[:, 0:8] >> np.uint8(4)], axis=1)
    hi = (s[:, None, 8:12] >> _CRUMB_SHIFTS[:, None]) & np.uint8(3)  # (n, 4, 4)
    return (lo | (hi.reshape(-1, 16) << np.uint8(4))).astype(np.int8) - np.int8(32)


def _q3_k(blocks: np.ndarray) -> np.ndarray:  # {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d}
    n = len(blocks)
    dl = (_half(blocks, 108) * _q3_k_scales(blocks[:, 96:108])).reshape(n, 16, 1)
    # Pass p = 4h + s uses bit p of hmask[l]; a clear bit subtracts 4.
    high = (blocks[:, None, 0:32] >> _BIT_SHIFTS[:, None]) & np.uint8(1)  # (n, 8, 32)
    q = _crumbs(blocks[:, 32:96]).astype(np.int8) - ((high ^ np.uint8(1)) << np.uint8(2)).astype(np.int8).reshape(
        n, 2, 4, 32
    )
    return (dl * q.reshape(n, 16, 16)).reshape(n, 256)


def _k4_scales_mins(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4 for j = 0..7: 6-bit scales and mins packed into 12 bytes."""
    scales = np.concatenate(
        [s[:, 0:4] & np.uint8(63), (s[:, 8:12] & np.uint8(0x0F)) | ((s[:, 0:4] >> np.uint8(6)) << np.uint8(4))], axis=1
    )
    mins = np.concatenate(
        [s[:, 4:8] & np.uint8(63), (s[:, 8:12] >> np.uint8(4)) | ((s[:, 4:8] >> np.uint8(6)) << np.uint8(4))], axis=1
    )
    return scales, mins


def _k4_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 128) → (n, 8, 32): sub-block 2c is the low nibbles of qs[32c:32c+32], 2c+1 the high."""
    return ((qs.reshape(-1, 4, 1, 32) >> _NIBBLE_SHIFTS[:, None]) & np.uint8(0x0F)).reshape(-1, 8, 32)


def _q4_k(blocks: np.ndarray) -> np.ndarray:  # {half d; half dmin; uint8 scales[12]; uint8 qs[128]}
    n = len(blocks)
    scales, mins = _k4_scales_mins(blocks[:, 4:16])
    d = (_half(blocks, 0) * scales).reshape(n, 8, 1)
    m = (_half(blocks, 2) * mins).reshape(n, 8, 1)
    return (d * _k4_nibbles(blocks[:, 16:144]) - m).reshape(n, 256)


def _q5_k(blocks: np.ndarray) -> np.ndarray:  # {half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}
    n = len(blocks)
    scales, mins = _k4_scales_mins(blocks[:, 4:16])
    d = (_half(blocks, 0) * scales).reshape(n, 8, 1)
    m = (_half(blocks, 2) * mins).reshape(n, 8, 1)
    # Sub-block j takes its fifth bit from bit j of qh[l].
    high = (blocks[:, None, 16:48] >> _BIT_SHIFTS[:, None]) & np.uint8(1)
    q = _k4_nibbles(blocks[:, 48:176]) | (high << np.uint8(4))
    return (d * q - m).reshape(n, 256)


def _q6_k(blocks: np.ndarray) -> np.ndarray:  # {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d}
    n = len(blocks)
    # Per half h (128 values): pass k in 0..3 takes nibble k//2 of ql[64h + 32(k%2) + l]
    # and bits 2k..2k+1 of qh[32h + l].
    low = (blocks[:, 0:128].reshape(n, 2, 1, 2, 32) >> _NIBBLE_SHIFTS[:, None, None]) & np.uint8(0x0F)
    high = (blocks[:, 128:192].reshape(n, 2, 1, 32) >> _CRUMB_SHIFTS[:, None]) & np.uint8(3)
    q = (low.reshape(n, 2, 4, 32) | (high << np.uint8(4))).astype(np.int8) - np.int8(32)
    d = (_half(blocks, 208) * blocks[:, 192:208].view(np.int8)).reshape(n, 16, 1)
    return (d * q.reshape(n, 16, 16)).reshape(n, 256)


def _ternary_digits(qs: np.ndarray, width: int, n_digits: int) -> np.ndarray:
    """TQ1_0 base-3 digits: byte*3^k (mod 256) keeps digit k in the top bits, ×3 >> 8 reads it."""
    scaled = qs.reshape(-1, 1, width) * _POW3[:n_digits, None]  # uint8 wraps on purpose
    return ((scaled.astype(np.uint16) * np.uint16(3)) >> np.uint16(8)).reshape(len(qs), -1)


def _tq1_0(blocks: np.ndarray) -> np.ndarray:  # {uint8 qs[48]; uint8 qh[4]; half d}
    digits = np.concatenate(
        [
            _ternary_digits(blocks[:, 0:32], 32, 5),
            _ternary_digits(blocks[:, 32:48], 16, 5),
            _ternary_digits(blocks[:, 48:52], 4, 4),
        ],
        axis=1,
    )
    return (digits.astype(np.int8) - np.int8(1)) * _half(blocks, 52)


def _tq2_0(blocks: np.ndarray) -> np.ndarray:  # {uint8 qs[64]; half d}
    q = _crumbs(blocks[:, 0:64]).reshape(len(blocks), 256)
    return (q.astype(np.int8) - np.int8(1)) * _half(blocks, 64)


_I2_S_SHIFTS = np.array([6, 4, 2, 0], dtype=np.uint8)


def i2_s_codes(raw: np.ndarray) -> tuple[np.ndarray, float]:
    """Codes (n,) uint8 in {0, 1, 2} and the fp32 scale γ of an I2_S tensor's bytes.

    bitnet.cpp (src/ggml-bitnet-mad.cpp, x86 build with ACT_PARALLEL, its default, and
    the layout of the official 2B-4T file): the tensor is one flat row-major stream of
    128-element blocks of 32 bytes; element j of a block is in byte j % 32 at bits
    6 − 2·(j // 32) (the first 32 elements in bits 7:6). The fp32 γ sits at byte n/4,
    the rest of the 32-byte tail is padding. Weight = (code − 1)·γ. The ARM build packs
    64-element blocks instead; such a file has the same size and cannot be told apart:
    we assume the x86 layout, as every published I2_S file uses.

    Raises ValueError on a code 3, which no I2_S writer emits (an IQ4_NL_4_4 tensor,
    the removed ggml type with the same id, hits it at once).
    """
    n4 = raw.size - 32
    blocks = raw[:n4].reshape(-1, I2_S_BLOCK_BYTES)
    codes = ((blocks[:, None, :] >> _I2_S_SHIFTS[None, :, None]) & np.uint8(3)).reshape(-1)
    if (codes == 3).any():
        raise ValueError(f"I2_S data holds the code 3 ({int((codes == 3).sum())} times): not bitnet.cpp's I2_S")
    return codes, float(raw[n4 : n4 + 4].copy().view("<f4")[0])


def _bf16(blocks: np.ndarray) -> np.ndarray:
    return (blocks.copy().view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)


_DEQUANTIZERS = {
    GGMLType.Q4_0: _q4_0,
    GGMLType.Q4_1: _q4_1,
    GGMLType.Q5_0: _q5_0,
    GGMLType.Q5_1: _q5_1,
    GGMLType.Q8_0: _q8_0,
    GGMLType.Q2_K: _q2_k,
    GGMLType.Q3_K: _q3_k,
    GGMLType.Q4_K: _q4_k,
    GGMLType.Q5_K: _q5_k,
    GGMLType.Q6_K: _q6_k,
    GGMLType.TQ1_0: _tq1_0,
    GGMLType.TQ2_0: _tq2_0,
    GGMLType.BF16: _bf16,
}


def dequantize(raw: np.ndarray | bytes, ggml_type: GGMLType, shape: Sequence[int]) -> np.ndarray:
    """Raw tensor bytes → float32 array in numpy shape (`shape[::-1]`).

    Args:
        raw: the tensor's bytes (e.g. `GGUFFile.tensor_bytes(name)`); not modified.
        ggml_type: its GGML type; every type in `gguf.BLOCK_LAYOUT` is handled.
        shape: GGUF order, ne0 (row length) first.

    Raises:
        ValueError: the byte count does not match shape and type.
    """
    ggml_type = GGMLType(ggml_type)
    raw = np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray)) else raw.reshape(-1)
    block, block_bytes, tail = data_layout(ggml_type)
    np_shape = tuple(int(n) for n in shape)[::-1]
    n_values = int(np.prod(np_shape, dtype=object))
    if np_shape[-1] % block or raw.nbytes != n_values // block * block_bytes + tail:
        raise ValueError(f"{raw.nbytes} bytes do not hold {ggml_type.name} of shape {tuple(shape)}")
    if ggml_type is GGMLType.I2_S:  # one scale for the whole tensor: no per-block kernel
        codes, scale = i2_s_codes(raw)
        return ((codes.astype(np.float32) - np.float32(1)) * np.float32(scale)).reshape(np_shape)
    if ggml_type is GGMLType.F32:
        return raw.view("<f4").astype(np.float32).reshape(np_shape)
    if ggml_type is GGMLType.F16:
        return raw.view("<f2").astype(np.float32).reshape(np_shape)
    blocks = raw.reshape(-1, block_bytes)
    out = np.empty((len(blocks), block), dtype=np.float32)
    step = max(1, _CHUNK_VALUES // block)
    kernel = _DEQUANTIZERS[ggml_type]
    # Garbage scales (inf × 0) give NaN like ggml does; NaN weights are caught at decode
    # time (check_finite below names the tensor), so numpy's warnings would only be noise here.
    with np.errstate(all="ignore"):
        for start in range(0, len(blocks), step):
            out[start : start + step] = kernel(blocks[start : start + step])
    return out.reshape(np_shape)


def dequantize_tensor(gguf: GGUFFile, name: str) -> np.ndarray:
    """One tensor of an open file as float32, numpy shape (KeyError if absent)."""
    info = gguf.tensors[name]
    try:
        out = dequantize(gguf.tensor_bytes(name), info.ggml_type, info.shape)
    except ValueError as e:  # the reader checked the size: this is bad content (I2_S codes)
        raise ModelFormatError(gguf.path, f"tensor {name!r}", info.offset, str(e)) from None
    check_finite(gguf, name, out)
    return out


def check_finite(gguf: GGUFFile, name: str, values: np.ndarray) -> None:
    """ModelFormatError naming the tensor if `values` (read from it) hold a NaN or an
    infinity: a NaN scale or norm would turn every answer into garbage, silently. One
    vectorized pass, once per tensor at load or repack time."""
    if not np.isfinite(values).all():
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        info = gguf.tensors[name]
        raise ModelFormatError(gguf.path, f"tensor {name!r}", info.offset, f"holds {bad} NaN or infinite values")
