"""Hardened safetensors reader, and the rules for which files of a model folder may be read.

The format (huggingface/safetensors, `safetensors/src/tensor.rs`): an 8-byte little-endian
header length N, N bytes of UTF-8 JSON (an object: tensor name → {"dtype", "shape",
"data_offsets": [begin, end]}, plus an optional "__metadata__" of str → str), which may end in
spaces, then the data buffer. Offsets are relative to the buffer. The crate's validation is
kept, and made stricter where it is silent: the tensors must tile the buffer exactly (sorted
by offset, each begins where the previous ends, the last ends at the end of the file: no hole,
no overlap, no trailing bytes), shape × dtype size must equal each byte range, the header is at
most 100 MB, and a duplicate key in the JSON is an error (the crate keeps the last one).

Why the header is read here and the data mapped, rather than with the `safetensors`
package: every size in the file is untrusted and must end in a typed ModelFormatError that
names the file, the field and the offset (as the GGUF reader does), numpy has no bfloat16
for the package's numpy API to hand out, and the runtime's zone does not depend on that
package. Reading the header is a few kilobytes; the data is mapped read-only and handed out
as zero-copy views, so memory stays flat: only the tensors being repacked are paged in, one
at a time, and none is copied to the Python heap.

The folder rules: a shard or tokenizer file is read only if its real path (symlinks resolved)
lies inside the model folder's real path, is a regular file, and has an allowed suffix.
Pickle-based weights (`.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`) are refused by name and never
opened: unpickling runs arbitrary code. Imports numpy and the standard library only.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from tmac_core.errors import ModelFormatError, ModelLoadError, UnsupportedModelError
from tmac_core.loading.gguf import span_gaps

MAX_HEADER_BYTES = 100_000_000  # the crate's MAX_HEADER_SIZE
MAX_DIMS = 8  # no model tensor has more; a long shape list is an attack on prod()
INT64_MAX = (1 << 63) - 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# safetensors dtype name → (bytes per element, numpy dtype or None when numpy has none).
# Sub-byte types (F4, F6_*) are listed so a file holding them is "unsupported", not "corrupt".
DTYPES: dict[str, tuple[int, str | None]] = {
    "BOOL": (1, "|b1"),
    "U8": (1, "|u1"),
    "I8": (1, "|i1"),
    "F8_E5M2": (1, None),
    "F8_E4M3": (1, None),
    "F8_E8M0": (1, None),
    "I16": (2, "<i2"),
    "U16": (2, "<u2"),
    "F16": (2, "<f2"),
    "BF16": (2, None),
    "I32": (4, "<i4"),
    "U32": (4, "<u4"),
    "F32": (4, "<f4"),
    "I64": (8, "<i8"),
    "U64": (8, "<u8"),
    "F64": (8, "<f8"),
    "C64": (8, "<c8"),
}
SUB_BYTE_DTYPES = frozenset({"F4", "F6_E2M3", "F6_E3M2"})


@dataclass(frozen=True)
class SafeTensorInfo:
    """One tensor of a safetensors file: numpy-order shape, absolute byte range in the file."""

    name: str
    dtype: str  # a DTYPES key
    shape: tuple[int, ...]
    offset: int  # absolute, from the start of the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


def _fail(path: str, field: str, offset: int | None, reason: str) -> NoReturn:
    raise ModelFormatError(path, field, offset, reason)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: bytes, path: str, field: str, offset: int | None = None) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting."""
    try:
        return json.loads(
            text.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError as e:
        _fail(path, field, offset, f"not UTF-8 ({e.reason} at byte {e.start})")
    except RecursionError:
        _fail(path, field, offset, "JSON nested too deeply")
    except ValueError as e:  # json.JSONDecodeError and the hooks above
        _fail(path, field, offset, f"invalid JSON: {e}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_header(header: Any, path: str, data_start: int, file_size: int) -> dict[str, SafeTensorInfo]:
    """Validate a decoded header against the file: every entry, and that the entries tile the buffer."""
    if not isinstance(header, dict):
        _fail(path, "header", 8, f"expected a JSON object, found {type(header).__name__}")
    buffer_len = file_size - data_start
    tensors: dict[str, SafeTensorInfo] = {}
    for name, entry in header.items():
        field = f"header[{name!r}]"
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                _fail(path, field, 8, "__metadata__ must map strings to strings")
            continue
        if not name:
            _fail(path, field, 8, "empty tensor name")
        if not isinstance(entry, dict):
            _fail(path, field, 8, f"expected an object, found {type(entry).__name__}")
        extra = set(entry) - {"dtype", "shape", "data_offsets"}
        if extra or len(entry) != 3:
            _fail(path, field, 8, f"needs exactly dtype, shape and data_offsets (found {sorted(entry)})")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str):
            _fail(path, field + ".dtype", 8, f"expected a string, found {type(dtype).__name__}")
        if dtype in SUB_BYTE_DTYPES:
            raise UnsupportedModelError(f"{path}: tensor {name!r} has dtype {dtype}, which this runtime cannot read")
        if dtype not in DTYPES:
            _fail(path, field + ".dtype", 8, f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(n) and n >= 0 for n in shape):
            _fail(path, field + ".shape", 8, f"expected at most {MAX_DIMS} non-negative integers, found {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= INT64_MAX
        ):
            _fail(path, field + ".data_offsets", 8, f"expected [begin, end] with 0 <= begin <= end, found {offsets!r}")
        n_elements = math.prod(shape)
        nbytes = n_elements * DTYPES[dtype][0]
        begin, end = offsets
        if nbytes != end - begin:
            _fail(
                path,
                field + ".data_offsets",
                8,
                f"shape {shape} of {dtype} is {nbytes} bytes but the range [{begin}, {end}) is {end - begin}",
            )
        if end > buffer_len:
            _fail(
                path,
                field + ".data_offsets",
                8,
                f"range [{begin}, {end}) ends past the data ({buffer_len} bytes): file incomplete, re-download it",
            )
        tensors[name] = SafeTensorInfo(name, dtype, tuple(shape), data_start + begin, nbytes)
    # The tensors must tile the buffer: sorted by offset, no gap, no overlap, nothing after.
    placed = sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes))
    for _, info, gap in span_gaps(((t.offset, t.nbytes, t) for t in placed), data_start):
        if gap < 0:
            _fail(path, f"header[{info.name!r}].data_offsets", 8, "overlaps the tensor before it")
        if gap > 0:
            _fail(path, f"header[{info.name!r}].data_offsets", 8, f"{gap} unused bytes before it")
    expected = placed[-1].offset + placed[-1].nbytes if placed else data_start
    if expected != file_size:
        _fail(path, "data", expected, f"{file_size - expected} bytes after the last tensor")
    return tensors


class SafetensorsFile:
    """One parsed .safetensors file: `tensors` (by name, file order) and mapped tensor bytes.

    Use `SafetensorsFile.open(path)`, a context manager. Views from `tensor_bytes` keep
    the mapping alive after `close()`.
    """

    def __init__(self, path: str, file_size: int, tensors: dict[str, SafeTensorInfo], metadata: dict[str, str]):
        self.path, self.file_size, self.tensors, self.metadata = path, file_size, tensors, metadata
        self._mmap: mmap.mmap | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SafetensorsFile:
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise ModelLoadError(f"{path}: not a regular file")
                size = st.st_size
                head = f.read(8)
                if len(head) < 8:
                    _fail(path, "header_len", 0, f"file is {size} bytes, too short for the 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER_BYTES:
                    _fail(path, "header_len", 0, f"header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
                if 8 + n > size:
                    _fail(path, "header_len", 0, f"header length {n} runs past the end of the file ({size} bytes)")
                raw = f.read(n)
                if len(raw) != n:  # the file shrank under us
                    _fail(path, "header", 8, "file truncated while reading the header")
                if not raw.startswith(b"{"):
                    _fail(path, "header", 8, "header does not start with '{' (not a safetensors file)")
                header = parse_json(raw.rstrip(b" "), path, "header", 8)
                tensors = parse_header(header, path, 8 + n, size)
                meta = header.get("__metadata__") or {}
                out = cls(path, size, tensors, meta)
                if size > 8 + n:  # mmap refuses an empty range; a file of only empty tensors needs none
                    out._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    if out._mmap.size() != size:  # changed between fstat and mmap
                        out.close()
                        _fail(path, "data", None, "file changed size while being opened")
                return out
        except OSError as e:
            raise ModelLoadError(f"{path}: cannot open model file: {e}") from e

    def __enter__(self) -> SafetensorsFile:
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

    def release(self, name: str) -> None:
        """Drop one tensor's pages from this process's resident memory. They stay in the OS
        page cache and fault back in if read again (the mapping is read-only); a first load
        reads each tensor once, so without this the mapped shards would count against its
        memory bound (an 8B GPTQ folder: its whole 5 GB on top of the packed weights)."""
        mapping = self._mmap
        if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):  # Windows: nothing to drop
            return
        info = self.tensors[name]
        start = info.offset // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(info.offset + info.nbytes, self.file_size)
        if end > start:
            mapping.madvise(mmap.MADV_DONTNEED, start, end - start)

    def tensor_bytes(self, name: str) -> np.ndarray:
        """Zero-copy, read-only uint8 view of one tensor's bytes (KeyError if absent)."""
        info = self.tensors[name]
        if info.nbytes == 0:
            return np.zeros(0, np.uint8)
        if self._mmap is None:
            raise ValueError(f"{self.path} is closed")
        view = np.frombuffer(self._mmap, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        view.flags.writeable = False
        return view


# -- which files of a model folder may be read ------------------------------------------------


def confined_file(folder: str | os.PathLike[str], name: str, suffixes: tuple[str, ...], what: str) -> Path:
    """`folder/name` as a real path, proven to be a regular file inside the folder's real path.

    Raises ModelFormatError for a name that is absolute, escapes the folder (by `..` or a
    symlink), has the wrong suffix or names a pickle; ModelLoadError if it does not exist.
    """
    root = Path(folder).resolve()
    field = f"{what} {name!r}"
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name):
        _fail(str(root), field, None, "must be a relative file name inside the model folder")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise UnsupportedModelError(
            f"{root}: {what} {name!r} is a pickle file; pickles can run code when loaded and are never opened"
        )
    if not name.endswith(suffixes):
        _fail(str(root), field, None, f"expected a file ending in {' or '.join(suffixes)}")
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        _fail(str(root), field, None, f"resolves to {path}, outside the model folder")
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ModelLoadError(f"{root}: {what} {name!r} is missing ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        _fail(str(root), field, None, "is not a regular file")
    return path


def read_small_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The whole of a config-sized file, refused past `max_bytes` without reading it all."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read {what}: {e}") from e
    if len(data) > max_bytes:
        _fail(str(path), what, None, f"larger than the {max_bytes}-byte limit")
    return data


def pickle_files(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Names of pickle weight files in the folder (listed, never opened)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return iter(())
    return (n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
