"""Hardened GGUF v2/v3 reader: header, metadata, tensor index, memory-mapped data.

Every count, length, offset and size read from the file is an untrusted integer
and is checked against the real file size and fixed limits before it is used
(the GGUF parsing CVEs of llama.cpp and the gguf libraries all came from trusting one). The data
section is mapped read-only and handed out as zero-copy numpy views. Failures raise
ModelFormatError naming the file, the field and the byte offset; well-formed files
this runtime cannot run raise UnsupportedModelError. Imports numpy and the standard
library only: no Qt, no `gguf` package, no app code.
"""

from __future__ import annotations

import enum
import math
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import numpy as np

from tmac_core.errors import ModelFormatError, ModelLoadError, UnsupportedModelError

K = TypeVar("K")

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 used 32-bit counts and is gone upstream too
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 16  # 64 KiB pages are the largest real use; 2^31 is an attack
MAX_STRING_BYTES = 1 << 30  # ggml GGUF_MAX_STRING_LENGTH
MAX_KEY_BYTES = 1 << 16  # GGUF spec: keys are at most 65535 bytes
MAX_ARRAY_ELEMENTS = 1 << 30  # ggml GGUF_MAX_ARRAY_ELEMENTS
MAX_ARRAY_DEPTH = 4  # gguf-py recursed without limit → RecursionError (§1.1)
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME is 64 including the NUL
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_COUNT = 1 << 24  # n_tensors / n_kv hard cap on top of the file-size bound
INT64_MAX = (1 << 63) - 1
_HEADER_BYTES = 24  # magic, version, n_tensors, n_kv
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name len, name, n_dims, ne[0], type, offset


class ValueType(enum.IntEnum):
    """Metadata value type ids (gguf spec `gguf_metadata_value_type`)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# (struct format, numpy dtype) of every fixed-size value type; all little-endian.
SCALAR_FORMATS: dict[ValueType, tuple[str, str]] = {
    ValueType.UINT8: ("<B", "<u1"),
    ValueType.INT8: ("<b", "<i1"),
    ValueType.UINT16: ("<H", "<u2"),
    ValueType.INT16: ("<h", "<i2"),
    ValueType.UINT32: ("<I", "<u4"),
    ValueType.INT32: ("<i", "<i4"),
    ValueType.FLOAT32: ("<f", "<f4"),
    ValueType.BOOL: ("<B", "<u1"),
    ValueType.UINT64: ("<Q", "<u8"),
    ValueType.INT64: ("<q", "<i8"),
    ValueType.FLOAT64: ("<d", "<f8"),
}
INT_TYPES = frozenset(
    {
        ValueType.UINT8,
        ValueType.INT8,
        ValueType.UINT16,
        ValueType.INT16,
        ValueType.UINT32,
        ValueType.INT32,
        ValueType.UINT64,
        ValueType.INT64,
    }
)
FLOAT_TYPES = frozenset({ValueType.FLOAT32, ValueType.FLOAT64})


class GGMLType(enum.IntEnum):
    """Tensor type ids of ggml (ggml.h `enum ggml_type`); the gaps are removed types."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    I2_S = 36  # bitnet.cpp's ternary type; upstream ggml used 36 for IQ4_NL_4_4, since removed
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


# (elements per block, bytes per block) of the types we can read (ggml type_traits).
BLOCK_LAYOUT: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.BF16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.TQ1_0: (256, 54),
    GGMLType.TQ2_0: (256, 66),
}
# I2_S (bitnet.cpp, the official BitNet b1.58 2B-4T GGUF) is not a block type: 2-bit
# codes of the whole tensor in 128-element blocks of 32 bytes, then one fp32 scale
# padded to a 32-byte tail (n/4 + 32 bytes; loading/dequant.py:_i2_s has the layout).
I2_S_BLOCK, I2_S_BLOCK_BYTES, I2_S_TAIL_BYTES = 128, 32, 32
# Ids ggml used once and removed; a file carrying them is old, not corrupt. 36 is read
# as I2_S (bitnet.cpp reuses it); an IQ4_NL_4_4 tensor then fails its code check.
REMOVED_TYPE_NAMES = {
    4: "Q4_2",
    5: "Q4_3",
    31: "Q4_0_4_4",
    32: "Q4_0_4_8",
    33: "Q4_0_8_8",
    37: "IQ4_NL_4_8",
    38: "IQ4_NL_8_8",
}


def data_layout(ggml_type: GGMLType) -> tuple[int, int, int]:
    """(elements per block, bytes per block, bytes after the last block) of a type we read:
    a tensor's row length is a multiple of the block, its data n/block·bytes + tail."""
    if ggml_type is GGMLType.I2_S:
        return I2_S_BLOCK, I2_S_BLOCK_BYTES, I2_S_TAIL_BYTES
    block, block_bytes = BLOCK_LAYOUT[ggml_type]
    return block, block_bytes, 0


_MISSING: Any = object()


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor index.

    `shape` is in GGUF order, ne0 (the contiguous row length) first, so the numpy
    shape is `shape[::-1]`. `offset` is absolute in the file, not data-section relative.
    """

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class _Cursor:
    """Bounds-checked little-endian reads from a buffer (bytes or mmap)."""

    __slots__ = ("buf", "pos", "end", "path")

    def __init__(self, buf: bytes | mmap.mmap, end: int, path: str):
        self.buf, self.pos, self.end, self.path = buf, 0, end, path

    def fail(self, field: str, reason: str, offset: int | None = None) -> NoReturn:
        raise ModelFormatError(self.path, field, self.pos if offset is None else offset, reason)

    def need(self, n: int, field: str) -> None:
        if n > self.end - self.pos:
            self.fail(field, f"needs {n} bytes but only {self.end - self.pos} remain (file truncated or corrupt)")

    def scalar(self, fmt: str, size: int, field: str) -> Any:
        self.need(size, field)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, field: str) -> int:
        return self.scalar("<I", 4, field)

    def u64(self, field: str) -> int:
        return self.scalar("<Q", 8, field)

    def raw_string(self, field: str, max_bytes: int) -> bytes:
        start = self.pos
        n = self.u64(field + ".length")
        if n > max_bytes:
            self.fail(field + ".length", f"string length {n} exceeds the limit {max_bytes}", start)
        self.need(n, field)
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def name_string(self, field: str, max_bytes: int) -> str:
        """A key or tensor name: non-empty, strict UTF-8."""
        start = self.pos
        raw = self.raw_string(field, max_bytes)
        if not raw:
            self.fail(field, "empty name", start)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(field, f"name is not valid UTF-8: {raw[:80]!r}", start)

    def string_array(self, count: int, field: str) -> list[str]:
        # Hot path: a vocabulary is ~50-250k strings, so the checks are inlined.
        buf, pos, end = self.buf, self.pos, self.end
        out: list[str] = []
        unpack = struct.Struct("<Q").unpack_from
        for i in range(count):
            if end - pos < 8:
                self.pos = pos
                self.fail(f"{field}[{i}].length", "file truncated inside a string array")
            n = unpack(buf, pos)[0]
            if n > MAX_STRING_BYTES or n > end - pos - 8:
                self.fail(
                    f"{field}[{i}].length",
                    f"string length {n} runs past the end of the file ({end - pos - 8} bytes left)",
                    pos,
                )
            # Token text may be arbitrary bytes (byte-fallback vocabularies):
            # surrogateescape keeps them lossless, `.encode('utf-8', 'surrogateescape')`.
            out.append(buf[pos + 8 : pos + 8 + n].decode("utf-8", "surrogateescape"))
            pos += 8 + n
        self.pos = pos
        return out


def _value_type(cur: _Cursor, type_id: int, field: str, offset: int) -> ValueType:
    try:
        return ValueType(type_id)
    except ValueError:
        cur.fail(field, f"invalid metadata value type {type_id}", offset)


def _read_value(cur: _Cursor, vtype: ValueType, field: str, depth: int) -> tuple[Any, ValueType | None]:
    """One metadata value. Returns (value, element type or None)."""
    if vtype in SCALAR_FORMATS:
        fmt, _ = SCALAR_FORMATS[vtype]
        start = cur.pos
        value = cur.scalar(fmt, struct.calcsize(fmt), field)
        if vtype is ValueType.BOOL:
            if value > 1:
                cur.fail(field, f"bool value is {value}, not 0 or 1", start)
            value = bool(value)
        return value, None
    if vtype is ValueType.STRING:
        return cur.raw_string(field, MAX_STRING_BYTES).decode("utf-8", "surrogateescape"), None
    return _read_array(cur, field, depth)


def _read_array(cur: _Cursor, field: str, depth: int) -> tuple[Any, ValueType]:
    start = cur.pos
    elem_type = _value_type(cur, cur.u32(field + ".element_type"), field + ".element_type", start)
    count_at = cur.pos
    count = cur.u64(field + ".count")
    if elem_type is ValueType.ARRAY and depth + 1 >= MAX_ARRAY_DEPTH:
        cur.fail(field, f"arrays nested deeper than {MAX_ARRAY_DEPTH}", start)
    # Every element occupies at least this many bytes, so the file size bounds the count
    # before anything is allocated.
    min_bytes = {ValueType.STRING: 8, ValueType.ARRAY: 12}.get(elem_type)
    if min_bytes is None:
        min_bytes = struct.calcsize(SCALAR_FORMATS[elem_type][0])
    if count > MAX_ARRAY_ELEMENTS or count * min_bytes > cur.end - cur.pos:
        cur.fail(
            field + ".count",
            f"array of {count} {elem_type.name} elements does not fit in"
            f" the {cur.end - cur.pos} bytes left in the file",
            count_at,
        )
    if elem_type is ValueType.STRING:
        return cur.string_array(count, field), elem_type
    if elem_type is ValueType.ARRAY:
        items = []
        for i in range(count):
            sub_field = f"{field}[{i}]"
            cur.need(12, sub_field)
            items.append(_read_array(cur, sub_field, depth + 1)[0])
        return items, elem_type
    # Copy out of the map so metadata never pins the mmap open.
    values = np.frombuffer(cur.buf, dtype=SCALAR_FORMATS[elem_type][1], count=count, offset=cur.pos).copy()
    if elem_type is ValueType.BOOL:
        if count and values.max() > 1:
            cur.fail(field, "bool array holds a value other than 0 or 1")
        values = values.astype(bool)
    cur.pos += count * min_bytes
    values.flags.writeable = False
    return values, elem_type


def _tensor_type(cur: _Cursor, type_id: int, field: str, name: str, offset: int) -> GGMLType:
    if type_id in REMOVED_TYPE_NAMES:
        raise UnsupportedModelError(
            f"{cur.path}: tensor {name!r} uses quantization type"
            f" {REMOVED_TYPE_NAMES[type_id]} ({type_id}), which ggml removed"
        )
    try:
        ggml_type = GGMLType(type_id)
    except ValueError:
        cur.fail(field, f"unknown tensor type id {type_id} in tensor {name!r}", offset)
    if ggml_type not in BLOCK_LAYOUT and ggml_type is not GGMLType.I2_S:
        supported = ", ".join([t.name for t in BLOCK_LAYOUT] + [GGMLType.I2_S.name])
        raise UnsupportedModelError(
            f"{cur.path}: tensor {name!r} has type {ggml_type.name},"
            f" which this runtime cannot read (supported: {supported})"
        )
    return ggml_type


def _read_tensor_info(cur: _Cursor, i: int, offset_fields: dict[str, int]) -> TensorInfo:
    """One tensor-index entry, its offset still relative to the data section.

    Records where its `.offset` field is in `offset_fields`, for later error messages.
    """
    field = f"tensor_info[{i}]"
    start = cur.pos
    name = cur.name_string(field + ".name", MAX_TENSOR_NAME_BYTES)
    if name in offset_fields:
        cur.fail(field + ".name", f"duplicate tensor name {name!r}", start)
    dims_at = cur.pos
    n_dims = cur.u32(field + ".n_dims")
    if not 1 <= n_dims <= MAX_DIMS:
        cur.fail(field + ".n_dims", f"tensor {name!r} has {n_dims} dimensions (must be 1..{MAX_DIMS})", dims_at)
    shape = []
    for j in range(n_dims):
        ne_at = cur.pos
        ne = cur.u64(f"{field}.ne[{j}]")
        if not 1 <= ne <= INT64_MAX:  # a negative int64 arrives here as a huge uint64
            cur.fail(f"{field}.ne[{j}]", f"tensor {name!r} dimension {j} is {ne} (must be 1..{INT64_MAX})", ne_at)
        shape.append(ne)
    type_at = cur.pos
    ggml_type = _tensor_type(cur, cur.u32(field + ".type"), field + ".type", name, type_at)
    offset_at = cur.pos
    rel_offset = cur.u64(field + ".offset")
    n_elements = math.prod(shape)
    if n_elements > INT64_MAX:
        cur.fail(
            f"{field}.ne",
            f"tensor {name!r} shape {shape} has {n_elements} elements, more than int64 can count",
            dims_at,
        )
    block, block_bytes, tail = data_layout(ggml_type)
    if shape[0] % block:
        cur.fail(
            f"{field}.ne[0]",
            f"tensor {name!r} row length {shape[0]} is not a multiple of the {ggml_type.name} block size {block}",
            dims_at + 4,
        )
    nbytes = n_elements // block * block_bytes + tail
    if nbytes > cur.end:
        cur.fail(f"{field}.ne", f"tensor {name!r} needs {nbytes} bytes, more than the whole file ({cur.end})", dims_at)
    offset_fields[name] = offset_at
    return TensorInfo(name, ggml_type, tuple(shape), rel_offset, nbytes)


def span_gaps(spans: Iterable[tuple[int, int, K]], begin: int) -> Iterator[tuple[K | None, K, int]]:
    """For byte spans (start, nbytes, key) in the order the caller sorted them (by start):
    (key of the span before or None, key, gap), where gap = start − the end of the span
    before (or `begin` for the first): > 0 bytes no span covers, < 0 an overlap. The one
    placement check of the GGUF and safetensors readers (loading/safetensors.py), each
    deciding which gaps its format allows."""
    end, before = begin, None
    for start, nbytes, key in spans:
        yield before, key, start - end
        end, before = start + nbytes, key


class GGUFFile:
    """A parsed GGUF file: `metadata`, `tensors` (ordered) and mapped tensor bytes.

    Use `GGUFFile.open(path)` (a context manager) or `GGUFFile.from_bytes(data)`.
    Views from `tensor_bytes` keep the mapping alive after `close()`.
    """

    def __init__(self, buf: bytes | mmap.mmap, size: int, path: str, mapping: mmap.mmap | None = None):
        self.path = path
        self.file_size = size
        self._buf: bytes | mmap.mmap | None = buf  # None once closed
        self._mmap = mapping
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, tuple[ValueType, ValueType | None]] = {}
        self._kv_where: dict[str, tuple[int, int]] = {}  # key → (kv index, value offset)
        self.tensors: dict[str, TensorInfo] = {}
        self._parse(buf)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GGUFFile:
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _HEADER_BYTES:  # mmap refuses empty files; say what is wrong instead
                    head = f.read(_HEADER_BYTES)
                    return cls(head, len(head), path)
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ModelLoadError(f"{path}: cannot open model file: {e}") from e
        try:
            return cls(mapping, size, path, mapping)
        except BaseException:
            mapping.close()
            raise

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "<memory>") -> GGUFFile:
        return cls(bytes(data), len(data), path)

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # numpy views still export it; it is unmapped when the last one dies
            self._mmap = None
        self._buf = None

    def _parse(self, buf: bytes | mmap.mmap) -> None:
        cur = _Cursor(buf, self.file_size, self.path)
        if self.file_size < 4:
            cur.fail("magic", f"not a GGUF file (too short: {self.file_size} bytes)", 0)
        magic = buf[0:4]
        if magic != GGUF_MAGIC:
            cur.fail("magic", f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})", 0)
        cur.pos = 4
        version = cur.u32("version")
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and version:  # e.g. 0x03000000 is v3 byte-swapped
                reason = f"big-endian GGUF (version field {version:#x}) is not supported"
            else:
                reason = f"unsupported GGUF version {version} (supported: 2, 3)"
            cur.fail("version", reason, 4)
        self.version = version
        n_tensors = cur.u64("n_tensors")
        n_kv = cur.u64("n_kv")
        left = cur.end - cur.pos
        if n_tensors > MAX_COUNT or n_tensors * _MIN_TENSOR_INFO_BYTES > left:
            cur.fail("n_tensors", f"tensor count {n_tensors} exceeds what the file can hold", 8)
        if n_kv > MAX_COUNT or n_kv * _MIN_KV_BYTES > left:
            cur.fail("n_kv", f"metadata count {n_kv} exceeds what the file can hold", 16)
        for i in range(n_kv):
            self._read_kv(cur, i)
        alignment = self._alignment(cur)
        offset_fields: dict[str, int] = {}
        for i in range(n_tensors):
            info = _read_tensor_info(cur, i, offset_fields)
            self.tensors[info.name] = info
        self.alignment = alignment
        self.data_offset = -(-cur.pos // alignment) * alignment  # first aligned byte after the index
        self._place_tensors(cur, offset_fields)

    def _read_kv(self, cur: _Cursor, i: int) -> None:
        start = cur.pos
        key = cur.name_string(f"kv[{i}].key", MAX_KEY_BYTES)
        if key in self.metadata:
            cur.fail(f"kv[{i}].key", f"duplicate key {key!r}", start)
        field = f"kv[{i}] {key!r}"
        type_at = cur.pos
        vtype = _value_type(cur, cur.u32(field + ".type"), field + ".type", type_at)
        value_at = cur.pos
        value, elem_type = _read_value(cur, vtype, field, 0)
        self.metadata[key] = value
        self.metadata_types[key] = (vtype, elem_type)
        self._kv_where[key] = (i, value_at)

    def _alignment(self, cur: _Cursor) -> int:
        if "general.alignment" not in self.metadata:
            return DEFAULT_ALIGNMENT
        field, offset = self.kv_location("general.alignment")
        if self.metadata_types["general.alignment"][0] is not ValueType.UINT32:
            cur.fail(field, "general.alignment must be a uint32", offset)
        value = self.metadata["general.alignment"]
        if value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
            cur.fail(field, f"alignment {value} is not a power of two in 1..{MAX_ALIGNMENT}", offset)
        return value

    def _place_tensors(self, cur: _Cursor, offset_fields: dict[str, int]) -> None:
        """Make offsets absolute and check alignment, file bounds and overlap."""
        alignment, placed = self.alignment, []
        for i, info in enumerate(list(self.tensors.values())):
            field, offset_at = f"tensor_info[{i}].offset", offset_fields[info.name]
            if info.offset % alignment:
                cur.fail(
                    field,
                    f"tensor {info.name!r} offset {info.offset} is not a multiple of the alignment {alignment}",
                    offset_at,
                )
            start = self.data_offset + info.offset
            if start + info.nbytes > self.file_size:
                cur.fail(
                    field,
                    f"tensor {info.name!r} data [{start}, {start + info.nbytes}) is"
                    f" outside the file ({self.file_size} bytes): file incomplete,"
                    " re-download it",
                    offset_at,
                )
            placed.append((start, i, info))
            self.tensors[info.name] = TensorInfo(info.name, info.ggml_type, info.shape, start, info.nbytes)
        placed.sort(key=lambda p: p[0])
        # alignment padding may leave gaps between tensors; only an overlap is a fault
        for before, (j, b), gap in span_gaps(((start, info.nbytes, (i, info)) for start, i, info in placed), 0):
            if before is not None and gap < 0:
                cur.fail(
                    f"tensor_info[{j}].offset",
                    f"tensor {b.name!r} data overlaps tensor {before[1].name!r}",
                    offset_fields[b.name],
                )

    # -- typed metadata access: every getter checks the stored type first (§1.3) --

    def kv_location(self, key: str) -> tuple[str, int | None]:
        """(field name, value offset) of a key, for error messages."""
        if key in self._kv_where:
            index, offset = self._kv_where[key]
            return f"kv[{index}] {key!r}", offset
        return f"kv {key!r}", None

    def _typed(self, key: str, default: Any, allowed: frozenset[ValueType], what: str) -> Any:
        if key not in self.metadata:
            if default is not _MISSING:
                return _MISSING
            raise ModelFormatError(self.path, f"kv {key!r}", None, "required key is missing")
        vtype = self.metadata_types[key][0]
        if vtype not in allowed:
            field, offset = self.kv_location(key)
            raise ModelFormatError(self.path, field, offset, f"expected {what}, found {vtype.name}")
        return self.metadata[key]

    def _reject(self, key: str, reason: str) -> NoReturn:
        field, offset = self.kv_location(key)
        raise ModelFormatError(self.path, field, offset, reason)

    def get_int(
        self, key: str, default: Any = _MISSING, *, min_value: int | None = None, max_value: int | None = None
    ) -> int:
        """An integer value of any integer type, optionally range-checked."""
        value = self._typed(key, default, INT_TYPES, "an integer")
        if value is _MISSING:
            return default
        if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
            self._reject(key, f"value {value} outside [{min_value}, {max_value}]")
        return int(value)

    def get_float(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        positive: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> float:
        """A finite float (integers accepted); NaN and infinities are always refused."""
        value = self._typed(key, default, FLOAT_TYPES | INT_TYPES, "a number")
        if value is _MISSING:
            return default
        value = float(value)
        if not math.isfinite(value):
            self._reject(key, f"value {value} is not finite")
        if positive and value <= 0:
            self._reject(key, f"value {value} must be positive")
        if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
            self._reject(key, f"value {value} outside [{min_value}, {max_value}]")
        return value

    def get_str(self, key: str, default: Any = _MISSING) -> str:
        value = self._typed(key, default, frozenset({ValueType.STRING}), "a string")
        return default if value is _MISSING else value

    def get_bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._typed(key, default, frozenset({ValueType.BOOL}), "a bool")
        return default if value is _MISSING else value

    def get_array(
        self, key: str, default: Any = _MISSING, *, element_type: ValueType | frozenset[ValueType] | None = None
    ) -> Any:
        """An array: a read-only numpy array for numbers, a list of str for strings.

        Args:
            element_type: a ValueType or a set of them the elements must have.
        """
        value = self._typed(key, default, frozenset({ValueType.ARRAY}), "an array")
        if value is _MISSING:
            return default
        found = self.metadata_types[key][1]
        allowed = {element_type} if isinstance(element_type, ValueType) else element_type
        if allowed is not None and found not in allowed:
            names = "/".join(sorted(t.name for t in allowed))
            found_name = "no type" if found is None else found.name
            self._reject(key, f"expected an array of {names}, found an array of {found_name}")
        return value

    @property
    def architecture(self) -> str:
        return self.get_str("general.architecture")

    # -- tensor data --

    def tensor_bytes(self, name: str) -> np.ndarray:
        """Zero-copy, read-only uint8 view of one tensor's data (KeyError if absent)."""
        info = self.tensors[name]
        if self._buf is None:
            raise ValueError(f"{self.path} is closed")
        view = np.frombuffer(self._buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        view.flags.writeable = False
        return view

    def tensor_view(self, name: str) -> np.ndarray:
        """F32/F16/BF16 tensors as typed views in numpy shape; quantized as (rows, row_bytes)."""
        info = self.tensors[name]
        raw = self.tensor_bytes(name)
        np_shape = info.shape[::-1]
        if info.ggml_type is GGMLType.F32:
            return raw.view("<f4").reshape(np_shape)
        if info.ggml_type is GGMLType.F16:
            return raw.view("<f2").reshape(np_shape)
        if info.ggml_type is GGMLType.BF16:
            return raw.view("<u2").reshape(np_shape)
        return raw.reshape(*np_shape[:-1], -1)

    def rows(self, name: str, r0: int, r1: int) -> GGUFFile:
        """This file seen through rows r0..r1 of the matrix `name`: a GGUFFile sharing this
        one's buffer and metadata whose only tensor is `name`, cut to those rows, so a
        per-tensor function (repack, dequantize_tensor) runs on a slab of a big matrix.
        Closing it leaves this file open."""
        info = self.tensors[name]
        n_rows = info.n_elements // info.shape[0] if info.shape else 0
        if len(info.shape) != 2 or not 0 <= r0 < r1 <= n_rows:
            raise ValueError(f"rows {r0}..{r1} of {name!r}, shape {info.shape}")
        part = object.__new__(GGUFFile)  # no second parse: the header was read once
        part.__dict__.update(self.__dict__)
        part._mmap = None
        if info.ggml_type is GGMLType.I2_S:
            # one stream of 128-element blocks with the tensor's fp32 scale after the last one
            # (dequant.i2_s_codes): a slab of rows would lose the scale, so only the whole matrix
            if (r0, r1) != (0, n_rows):
                raise ValueError(f"rows {r0}..{r1} of the I2_S tensor {name!r}: I2_S is read whole")
            part.tensors = {name: info}
            return part
        row_bytes = info.nbytes // n_rows
        part.tensors = {
            name: TensorInfo(
                name, info.ggml_type, (info.shape[0], r1 - r0), info.offset + r0 * row_bytes, (r1 - r0) * row_bytes
            )
        }
        return part

    def release(self, name: str) -> None:
        """Drop one tensor's pages from this process's resident memory. They stay in the
        OS page cache and fault back in if read again; a first load reads each tensor once,
        so without this the whole mapped file would count against its memory bound."""
        mapping = self._mmap
        if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):  # bytes, or Windows: nothing to drop
            return
        info = self.tensors[name]
        start = info.offset // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(info.offset + info.nbytes, self.file_size)
        if end > start:
            mapping.madvise(mmap.MADV_DONTNEED, start, end - start)
