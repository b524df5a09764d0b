"""GGUF v3 writer and the Q8_0/Q4_0/Q4_1 quantizers it stores tensors with.

Used by the tests (round trips, mutation fixtures) and by the `synth` command that
writes random-weight Llama files. `build()` also returns where every field landed,
so mutation tests can corrupt one field by offset. The quantizers reproduce ggml's
reference rounding (`quantize_row_*_ref` in ggml-quants.c) bit for bit. Imports numpy
and `tmac_core.loading.gguf` only: no Qt, no `gguf` package.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tmac_core.loading.gguf import (BLOCK_LAYOUT, DEFAULT_ALIGNMENT, GGUF_MAGIC, SCALAR_FORMATS,
                                    GGMLType, ValueType)


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


QUANTIZERS = {GGMLType.Q8_0: quantize_q8_0, GGMLType.Q4_0: quantize_q4_0,
              GGMLType.Q4_1: quantize_q4_1}


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


@dataclass
class KVLayout:
    """Where one metadata entry landed: `start` is its key-length field."""
    key: str
    start: int
    type_offset: int
    value_offset: int


@dataclass
class TensorInfoLayout:
    """Where one tensor-index entry landed (absolute file offsets of each field)."""
    name: str
    start: int
    n_dims_offset: int
    ne_offsets: list[int]
    type_offset: int
    offset_offset: int
    data_start: int
    nbytes: int


@dataclass
class GGUFLayout:
    """Byte offsets of every field of a written file, for targeted corruption in tests."""
    kv: list[KVLayout] = field(default_factory=list)
    tensors: list[TensorInfoLayout] = field(default_factory=list)
    tensor_infos_start: int = 0
    data_start: int = 0
    size: int = 0
    version_offset: int = 4
    n_tensors_offset: int = 8
    n_kv_offset: int = 16

    def kv_by_key(self, key: str) -> KVLayout:
        return next(k for k in self.kv if k.key == key)

    def tensor_by_name(self, name: str) -> TensorInfoLayout:
        return next(t for t in self.tensors if t.name == name)


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


class GGUFWriter:
    """Collects metadata and tensors, then writes one GGUF v3 file.

    Tensors are given in numpy shape (last axis contiguous) and stored in GGUF order
    (ne0 first). Data is padded to `alignment` after every tensor, as ggml does.
    """

    def __init__(self, alignment: int = DEFAULT_ALIGNMENT, version: int = 3):
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment} is not a power of two")
        self.alignment = alignment
        self.version = version
        self._kv: list[tuple[str, ValueType, bytes]] = []
        self._tensors: list[tuple[str, GGMLType, tuple[int, ...], np.ndarray]] = []
        if alignment != DEFAULT_ALIGNMENT:
            self.add("general.alignment", alignment, ValueType.UINT32)

    def add(self, key: str, value: Any, value_type: ValueType,
            element_type: ValueType | None = None) -> None:
        if any(k == key for k, _, _ in self._kv):
            raise ValueError(f"duplicate key {key!r}")
        self._kv.append((key, ValueType(value_type), encode_value(value, value_type, element_type)))

    def add_string(self, key: str, value: str) -> None:
        self.add(key, value, ValueType.STRING)

    def add_uint32(self, key: str, value: int) -> None:
        self.add(key, value, ValueType.UINT32)

    def add_float32(self, key: str, value: float) -> None:
        self.add(key, value, ValueType.FLOAT32)

    def add_bool(self, key: str, value: bool) -> None:
        self.add(key, value, ValueType.BOOL)

    def add_array(self, key: str, values: Sequence, element_type: ValueType) -> None:
        self.add(key, values, ValueType.ARRAY, element_type)

    def add_tensor(self, name: str, x: np.ndarray, ggml_type: GGMLType = GGMLType.F32) -> None:
        """Store a float array, converted or quantized to `ggml_type`."""
        x = np.asarray(x)
        self.add_raw_tensor(name, encode_tensor(x, ggml_type), ggml_type, x.shape[::-1])

    def add_raw_tensor(self, name: str, raw: np.ndarray | bytes, ggml_type: GGMLType,
                       shape: Sequence[int]) -> None:
        """Store already-encoded bytes; `shape` is in GGUF order (ne0 first)."""
        ggml_type = GGMLType(ggml_type)
        raw = np.frombuffer(raw, np.uint8) if isinstance(raw, bytes) else raw.reshape(-1)
        block, block_bytes = BLOCK_LAYOUT[ggml_type]
        shape = tuple(int(n) for n in shape)
        n_elements = int(np.prod(shape, dtype=object))
        if shape[0] % block or raw.nbytes != n_elements // block * block_bytes:
            raise ValueError(f"{name}: {raw.nbytes} bytes do not fit shape {shape} as {ggml_type.name}")
        if any(n == name for n, *_ in self._tensors):
            raise ValueError(f"duplicate tensor name {name!r}")
        self._tensors.append((name, ggml_type, shape, raw.view(np.uint8)))

    def build(self) -> tuple[bytes, GGUFLayout]:
        """The whole file in memory plus where each field landed."""
        layout = GGUFLayout()
        out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", self.version, len(self._tensors),
                                                 len(self._kv)))
        for key, vtype, value in self._kv:
            start = len(out)
            out += _encode_string(key)
            type_offset = len(out)
            out += struct.pack("<I", vtype)
            layout.kv.append(KVLayout(key, start, type_offset, len(out)))
            out += value
        layout.tensor_infos_start = len(out)
        rel = 0
        for name, ggml_type, shape, raw in self._tensors:
            start = len(out)
            out += _encode_string(name)
            n_dims_offset = len(out)
            out += struct.pack("<I", len(shape))
            ne_offsets = [len(out) + 8 * j for j in range(len(shape))]
            out += struct.pack(f"<{len(shape)}Q", *shape)
            type_offset = len(out)
            out += struct.pack("<I", ggml_type)
            layout.tensors.append(TensorInfoLayout(name, start, n_dims_offset, ne_offsets,
                                                   type_offset, len(out), rel, raw.nbytes))
            out += struct.pack("<Q", rel)
            rel += -(-raw.nbytes // self.alignment) * self.alignment
        data_start = -(-len(out) // self.alignment) * self.alignment
        out += bytes(data_start - len(out))
        layout.data_start = data_start
        for info, (_, _, _, raw) in zip(layout.tensors, self._tensors):
            info.data_start += data_start
            out += raw.tobytes()
            out += bytes(-len(out) % self.alignment)
        layout.size = len(out)
        return bytes(out), layout

    def write(self, path: str | os.PathLike) -> GGUFLayout:
        """Write atomically (temp file, then rename) so a crash never leaves half a model."""
        data, layout = self.build()
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return layout
