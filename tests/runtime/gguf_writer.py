"""A whole-file GGUF v3 writer for the tests: round trips, tiny models, mutation fixtures.

`build()` also returns where every field landed, so mutation tests can corrupt one
field by offset. Values and tensors are encoded by the runtime's own
`tmac_core.loading.gguf_write` (which `synth` uses too); only the file assembly and the
layout record live here, because nothing outside the tests writes whole files this way.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tmac_core.loading.gguf import DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLType, ValueType, data_layout
from tmac_core.loading.gguf_write import encode_tensor, encode_value


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

    def add(self, key: str, value: Any, value_type: ValueType, element_type: ValueType | None = None) -> None:
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

    def add_raw_tensor(self, name: str, raw: np.ndarray | bytes, ggml_type: GGMLType, shape: Sequence[int]) -> None:
        """Store already-encoded bytes; `shape` is in GGUF order (ne0 first)."""
        ggml_type = GGMLType(ggml_type)
        raw = np.frombuffer(raw, np.uint8) if isinstance(raw, bytes) else raw.reshape(-1)
        block, block_bytes, tail = data_layout(ggml_type)
        shape = tuple(int(n) for n in shape)
        n_elements = int(np.prod(shape, dtype=object))
        if shape[0] % block or raw.nbytes != n_elements // block * block_bytes + tail:
            raise ValueError(f"{name}: {raw.nbytes} bytes do not fit shape {shape} as {ggml_type.name}")
        if any(n == name for n, *_ in self._tensors):
            raise ValueError(f"duplicate tensor name {name!r}")
        self._tensors.append((name, ggml_type, shape, raw.view(np.uint8)))

    def build(self) -> tuple[bytes, GGUFLayout]:
        """The whole file in memory plus where each field landed."""
        layout = GGUFLayout()
        out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", self.version, len(self._tensors), len(self._kv)))
        for key, vtype, value in self._kv:
            start = len(out)
            out += encode_value(key, ValueType.STRING)
            type_offset = len(out)
            out += struct.pack("<I", vtype)
            layout.kv.append(KVLayout(key, start, type_offset, len(out)))
            out += value
        layout.tensor_infos_start = len(out)
        rel = 0
        for name, ggml_type, shape, raw in self._tensors:
            start = len(out)
            out += encode_value(name, ValueType.STRING)
            n_dims_offset = len(out)
            out += struct.pack("<I", len(shape))
            ne_offsets = [len(out) + 8 * j for j in range(len(shape))]
            out += struct.pack(f"<{len(shape)}Q", *shape)
            type_offset = len(out)
            out += struct.pack("<I", ggml_type)
            layout.tensors.append(
                TensorInfoLayout(name, start, n_dims_offset, ne_offsets, type_offset, len(out), rel, raw.nbytes)
            )
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
