"""GGUF v3 encoding: metadata values, tensors, and the Q8_0/Q4_0/Q4_1 quantizers.

The `synth` command writes random-weight Llama files with `encode_value` and
`encode_tensor`; the tests' whole-file writer (tests/runtime/gguf_writer.py) is built
on the same two. The quantizers reproduce ggml's reference rounding
(`quantize_row_*_ref` in ggml-quants.c) bit for bit. Imports numpy and
`tmac_core.loading.gguf` only: no Qt, no `gguf` package.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from tmac_core.loading.gguf import SCALAR_FORMATS, GGMLType, ValueType


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C `roundf` (halves away from zero); np.round would round halves to even."""
    a = np.abs(x)
    floored = np.floor(a)
    # a - floored is exact in float32, so this never double-rounds like trunc(a + 0.5).
    return np.copysign(floored + np.floor(2 * (a - floored)), x)


def _blocks(x: np.ndarray, block: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % block:
        raise ValueError(f"row length {x.shape[-1]} is not a multiple of {block}")
    return x.reshape(-1, block)


def _half_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype("<f2").reshape(-1, 1).view(np.uint8)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """float rows → Q8_0 blocks (uint8, 34 bytes per 32 values): q = roundf(x / d)."""
    blocks = _blocks(x, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    q = _round_half_away(blocks * inv_d).astype(np.int8)
    return np.concatenate([_half_bytes(d), q.view(np.uint8)], axis=1).reshape(-1)


def _signed_absmax(blocks: np.ndarray) -> np.ndarray:
    # ggml keeps the first element of largest magnitude, sign included.
    index = np.abs(blocks).argmax(axis=1)[:, None]
    return np.take_along_axis(blocks, index, axis=1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    # Element j goes in the low nibble of byte j, element j+16 in its high nibble.
    return q[:, :16] | (q[:, 16:] << np.uint8(4))


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """float rows → Q4_0 blocks (18 bytes per 32 values): d = max/-8, q = x/d + 8."""
    blocks = _blocks(x, 32)
    d = _signed_absmax(blocks) / np.float32(-8)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    # (int8_t) cast truncates; the value is never negative here.
    q = np.minimum(np.trunc(blocks * inv_d + np.float32(8.5)), 15).astype(np.uint8)
    return np.concatenate([_half_bytes(d), _pack_nibbles(q)], axis=1).reshape(-1)


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    """float rows → Q4_1 blocks (20 bytes per 32 values): d = (max-min)/15, m = min."""
    blocks = _blocks(x, 32)
    lo = blocks.min(axis=1, keepdims=True)
    hi = blocks.max(axis=1, keepdims=True)
    d = (hi - lo) / np.float32(15)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    q = np.minimum(np.trunc((blocks - lo) * inv_d + np.float32(0.5)), 15).astype(np.uint8)
    return np.concatenate([_half_bytes(d), _half_bytes(lo), _pack_nibbles(q)], axis=1).reshape(-1)


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float → bf16 bits with round-to-nearest-even (ggml_compute_fp32_to_bf16)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    quiet_nan = (bits >> 16) | 64
    return np.where(is_nan, quiet_nan, rounded).astype("<u2")


QUANTIZERS = {GGMLType.Q8_0: quantize_q8_0, GGMLType.Q4_0: quantize_q4_0, GGMLType.Q4_1: quantize_q4_1}


def encode_tensor(x: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    """float array (numpy shape, last axis contiguous) → raw GGUF tensor bytes (uint8)."""
    ggml_type = GGMLType(ggml_type)
    if ggml_type is GGMLType.F32:
        raw = np.ascontiguousarray(x, dtype="<f4")
    elif ggml_type is GGMLType.F16:
        raw = np.ascontiguousarray(x, dtype="<f2")
    elif ggml_type is GGMLType.BF16:
        raw = to_bf16(x)
    elif ggml_type in QUANTIZERS:
        raw = QUANTIZERS[ggml_type](x)
    else:
        raise ValueError(f"the writer cannot quantize to {ggml_type.name}; use add_raw_tensor")
    return raw.reshape(-1).view(np.uint8)


def _encode_string(text: str | bytes) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(raw)) + raw


def _encode_array(values: Any, element_type: ValueType) -> bytes:
    element_type = ValueType(element_type)
    if element_type is ValueType.STRING:
        body = b"".join(_encode_string(v) for v in values)
    elif element_type is ValueType.ARRAY:
        # Nested arrays are given as (element_type, values) pairs.
        body = b"".join(_encode_array(v, t) for t, v in values)
    else:
        body = np.asarray(values).astype(SCALAR_FORMATS[element_type][1]).tobytes()
    return struct.pack("<IQ", element_type, len(values)) + body


def encode_value(value: Any, value_type: ValueType, element_type: ValueType | None = None) -> bytes:
    """The bytes of one metadata value (without its key and type id)."""
    value_type = ValueType(value_type)
    if value_type is ValueType.STRING:
        return _encode_string(value)
    if value_type is ValueType.ARRAY:
        if element_type is None:
            raise ValueError("arrays need an element_type")
        return _encode_array(value, element_type)
    return struct.pack(SCALAR_FORMATS[value_type][0], value)
