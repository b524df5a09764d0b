"""The repacked-model cache: one file per (source content, bits, layout, quantizer).

Repacking a 1 B model takes minutes (the quantizer searches clipping per group);
reading it back from this file takes a page-cache mmap. The first load streams: each
matrix is written as it is repacked (CacheWriter), so memory holds one piece of one
tensor, never the model. File format, all little-endian:

    b"TMACW\\0\\0\\3"  magic + format version         8 bytes
    header_offset      uint64 (absolute)              8 bytes
    header_len         uint64                         8 bytes
    header_sha256      sha256 of the header bytes     32 bytes
    (zeros to DATA_START = 64)
    data               each array at a 64-byte aligned offset from DATA_START
    header             UTF-8 JSON at header_offset    {"key": ..., "entries": [...]}

The header comes last because the records' offsets and crc32s are known only once the
data is written; the preamble is written last of all, so a file whose write stopped
anywhere has no magic. An entry is {"name", "kind": "packed" | "array"} with, for
packed matrices, the PackedWeight fields (layout v2: scale_format, super_size,
code_offset too; v3: zero_mult) and the records of its planes, scales and, for the SUPER scale
format, sub-scales; for arrays the record "data". A record is {"offset", "nbytes",
"dtype", "shape", "crc32"}.

The file is untrusted input (another process, a bad disk or a person may have
written it), and native code indexes what comes out of it. So before any array or
PackedWeight is built: the header must match its sha256; every entry's name, kind,
shape, dtype and byte length must be what the model plan says (`expected_entries`);
every record must lie inside the data section without overlapping another; and the
crc32 of every record's bytes must match. The data check reads every byte once, split
over threads (zlib.crc32 runs at ~2.5 GB/s per core and releases the GIL); measured on
the 1.17B synthetic model (a 730 MB cache file in the page cache, 2 busy cores) it adds
~0.6 s to a ~1.8 s load and first token (Engine.load, then one token: 1.1-1.4 s → 1.6-2.0 s).
`load_deferred` leaves that check for later (the app runs it once the model answers).
A file that fails any check, and anything that is not a regular
file at the path (a directory, a FIFO, a device, a symlink), is a CacheMiss: the
caller repacks and, for a regular file or a symlink, replaces it.

Writes go to a ".partial-" file in the cache folder, locked (flock) while its writer
lives, fsynced and renamed into place only when complete: a cancelled, crashed or
killed load leaves only a partial file no load reads, and the next write in the
folder deletes the partials no live writer holds (`remove_dead_partials`).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from tmac_core.filehash import sha256_file
from tmac_core.kernels import LAYOUT_VERSION, PackedWeight
from tmac_core.plan import TILE_ROWS, ModelConfig, input_perm_name, tensor_plan, vector_plan

MAGIC = b"TMACW\0\0\3"  # 2: header sha256, record crc32s; 3: header at the end (streamed writes), layout v2 fields
# (layout v3's zero_mult is one more entry field; the key's layout version keeps v2 files from matching)
ALIGN = 64
DATA_START = 64  # magic, header_offset, header_len, header sha256, padding
_PREAMBLE = 8 + 8 + 8 + 32
MAX_HEADER_BYTES = 64 << 20  # a 1000-layer model's header is ~2 MB
CRC_CHUNK = 16 << 20  # bytes per crc32 job: small enough to spread over threads
PARTIAL_PREFIX = ".partial-"
# PackedWeight.scale_format (kernels/LAYOUT.md v3): F16_SYM / SUPER_NOMIN store one record
# where F16 / SUPER store two, and F16_SYM a per-tensor zero_mult
SCALES_F16, SCALES_SUPER, SCALES_F16_SYM, SCALES_SUPER_NOMIN = 0, 1, 2, 3
SUPER_FORMATS = (SCALES_SUPER, SCALES_SUPER_NOMIN)
MAX_ZERO_MULT = 255
# Bump when repack.py or the bits presets change what a cached file holds.
QUANTIZER_VERSION = 5  # 2: output-layer residual pass; 3: 4-bit Q4_1 sub-scales, 6-bit output;
# 4: the 2-bit preset calibrated on assets/calibration (a new text or method bumps it too);
# 5: float output layers at 6 bits in one pass (plan.PRESET_OUTPUT_BITS), no residual pass

Weights = dict[str, "PackedWeight | np.ndarray"]


def default_cache_dir() -> Path:
    """TMAC_CACHE_DIR, else the per-user cache dir (platformdirs)."""
    env = os.environ.get("TMAC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("TMACChat", "TMAC")) / "repacked"


def source_hash(path: str | os.PathLike[str], progress: Callable[[float], None] | None = None) -> str:
    """sha256 of the model file's content (not its name or mtime: a copied or
    re-downloaded file hits the same cache entry, an edited one does not)."""
    report = None if progress is None else (lambda done, total: progress(done / max(total, 1)))
    return sha256_file(path, progress=report)


def cache_key(source_sha256: str, bits: int | None) -> str:
    return f"{source_sha256[:40]}-b{bits}-l{LAYOUT_VERSION}-q{QUANTIZER_VERSION}"


def cache_path(cache_dir: str | os.PathLike[str], key: str) -> Path:
    return Path(cache_dir) / f"{key}.tmacw"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _buffer_sizes(
    m: int, k_pad: int, bits: int, group_size: int, super_size: int, scale_format: int
) -> tuple[int, int, int]:
    """Elements of planes (uint8), scales (uint16) and sub (int8; 0 for the F16 formats) of a
    packed matrix, as kernels/LAYOUT.md lays them out, all tile-major:
    planes (m_pad/64, k_pad/8, bits, 64); F16 scales (m_pad/64, n_groups, R, 64);
    SUPER scales (m_pad/64, n_super, R, 64) and sub (m_pad/64, n_groups, R, 64), with R
    records: 2, or 1 for F16_SYM and SUPER_NOMIN."""
    tiles = -(-m // TILE_ROWS)
    n_groups = k_pad // group_size
    planes = tiles * (k_pad // 8) * bits * 64
    records = 2 if scale_format in (SCALES_F16, SCALES_SUPER) else 1
    if super_size:
        return planes, tiles * (k_pad // super_size) * records * 64, tiles * n_groups * records * 64
    return planes, tiles * n_groups * records * 64, 0


# -- what the plan says the file holds --------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One entry as the model plan says it must be.

    A packed matrix: kind "packed", its PackedWeight fields and the element counts of
    its planes (uint8), scales (uint16, fp16 bits) and sub-scales (int8, SUPER only). An
    array: kind "array", its dtype and shape.
    """

    kind: str
    dtype: str = ""
    shape: tuple[int, ...] = ()
    m: int = 0
    k: int = 0
    k_pad: int = 0
    bits: int = 0
    group_size: int = 0
    n_planes: int = 0
    n_scales: int = 0
    scale_format: int = SCALES_F16
    super_size: int = 0
    n_sub: int = 0


def expected_entries(
    cfg: ModelConfig, bits: int | None, source_types: Mapping[str, str] | str | None = None
) -> dict[str, Expected]:
    """Every entry a cache file for `cfg` at `bits` must hold, and nothing else
    (tmac_core.plan: the matrices, the vectors, and the loader's RoPE frequencies).

    source_types: the GGML type name of each source tensor (ModelSummary.tensor_types),
        which decides the exact-repack groups and the output layer's bits, as in tensor_plan.
    """
    out: dict[str, Expected] = {}
    for spec in tensor_plan(cfg, bits, source_types):
        # as plan.matrix_bytes: grouped scales keep k_pad = K, else K pads to 64
        k_pad = spec.cols if spec.cols % spec.group_size == 0 else -(-spec.cols // 64) * 64
        super_size = spec.super_size
        n_planes, n_scales, n_sub = _buffer_sizes(
            spec.rows, k_pad, spec.bits, spec.group_size, super_size, spec.scale_format
        )
        out[spec.name] = Expected(
            "packed",
            m=spec.rows,
            k=spec.cols,
            k_pad=k_pad,
            bits=spec.bits,
            group_size=spec.group_size,
            n_planes=n_planes,
            n_scales=n_scales,
            scale_format=spec.scale_format,
            super_size=super_size,
            n_sub=n_sub,
        )
        if spec.input_perm:  # an act-order GPTQ matrix: the input permutation its columns follow
            out[input_perm_name(spec.name)] = Expected("array", "int32", (spec.cols,))
    for vec in vector_plan(cfg):
        if vec.role != "rope_freqs":  # folded into rope.inv_freq by the loader
            out[vec.name] = Expected("array", "float32", (vec.size,))
    out["rope.inv_freq"] = Expected("array", "float64", (cfg.head_dim // 2,))
    return out


# -- writing ------------------------------------------------------------------------------


def _tiles(a: np.ndarray, m: int) -> np.ndarray:
    """A flat tile-major buffer as (m_pad/64, per-tile elements), for slicing by rows."""
    return a.reshape(-(-m // TILE_ROWS), -1)


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data) :]


def remove_dead_partials(folder: str | os.PathLike[str]) -> int:
    """Delete the ".partial-" files in `folder` that no live writer holds (a cancelled,
    crashed or killed load's), returns how many. A writer holds an flock on its file
    while it lives; where there is no flock (Windows), an open file cannot be deleted,
    which says the same. Never raises."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        if not (entry.name.startswith(PARTIAL_PREFIX) and entry.name.endswith(".tmacw")):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if _lock_is_free(entry.path):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def _lock_is_free(path: str) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: deleting a file its writer holds open fails by itself
        return True
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the lock we may have taken


class CacheWriter:
    """A cache file written as the repacker produces it, renamed into place by commit().

        with CacheWriter(path, key) as writer:
            writer.add_packed(name, chunks)      # a matrix, in row chunks of multiples of 64
            writer.add_array(name, vector)
            writer.commit()

    Leaving the block without commit() (an error, a cancel) deletes the partial file.
    A packed matrix's planes go to the file chunk by chunk; its scales (and SUPER
    sub-scales), ~1/8 of it, wait in memory for the last chunk, because the chunks'
    tensor_scales are made one before they are written (`_common_scale`).

    Raises OSError (a full disk, a directory at `path`) with nothing left behind at `path`.
    """

    def __init__(self, path: str | os.PathLike[str], key: str) -> None:
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # a FIFO or directory someone put there stays
            raise OSError(f"{self.path} is not a regular file; the cache is not used for this model")
        remove_dead_partials(self.path.parent)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=PARTIAL_PREFIX, suffix=".tmacw")
        self._fd: int | None = fd
        self._committed = False
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until close: this file is alive
        except ImportError:
            pass
        self.entries: list[dict[str, Any]] = []
        self._by_name: dict[str, dict[str, Any]] = {}
        self._end = 0  # data bytes written, relative to DATA_START
        os.ftruncate(fd, DATA_START)  # the preamble stays zero (no magic) until commit

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()

    # - records -

    def _begin_record(self) -> int:
        """Aligned offset for the next record; the bytes skipped read as zeros."""
        self._end = _align(self._end)
        return self._end

    def _append(self, arr: np.ndarray, crc: int) -> int:
        """Append `arr`'s bytes at the end of the data; returns the running crc32."""
        if self._fd is None:
            raise OSError("the cache file was already committed or abandoned")
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data
        os.lseek(self._fd, DATA_START + self._end, os.SEEK_SET)
        _write_all(self._fd, data)
        self._end += len(data)
        return zlib.crc32(data, crc)

    def _record(self, arr: np.ndarray) -> dict[str, Any]:
        offset = self._begin_record()
        crc = self._append(arr, 0)
        return _record_of(offset, arr.nbytes, arr.dtype, arr.shape, crc)

    def add_array(self, name: str, value: Any) -> None:
        arr = np.ascontiguousarray(value)
        self._add({"name": name, "kind": "array", "data": self._record(arr)})

    def _add(self, entry: dict[str, Any]) -> None:
        if entry["name"] in self._by_name:
            raise ValueError(f"{entry['name']} written twice")
        self.entries.append(entry)
        self._by_name[entry["name"]] = entry

    def add_packed(self, name: str, chunks: Iterable[PackedWeight]) -> None:
        """One matrix from its row chunks (each but the last a multiple of 64 rows; the
        same k, k_pad, bits, group size and scale format): tile-major buffers concatenate."""
        planes_at = self._begin_record()
        planes_crc, planes_n = 0, 0
        scales: list[np.ndarray] = []  # each chunk's fp16 bits, then their tensor_scale
        scale_of: list[float] = []
        subs: list[np.ndarray] = []
        first: PackedWeight | None = None
        m = 0
        for chunk in chunks:
            if first is None:
                first = chunk
            elif m % TILE_ROWS or _fields(chunk)[1:] != _fields(first)[1:]:
                raise ValueError(f"{name}: chunk {chunk!r} does not continue {first!r} at row {m}")
            planes_crc = self._append(chunk.planes, planes_crc)
            planes_n += chunk.planes.nbytes
            scales.append(np.array(chunk.scales, np.uint16).reshape(-1))
            scale_of.append(float(chunk.tensor_scale))
            if chunk.scale_format in SUPER_FORMATS:
                subs.append(np.array(chunk.sub, np.int8).reshape(-1))
            m += chunk.m
        if first is None:
            raise ValueError(f"{name}: no rows")
        tensor_scale, all_scales = _common_scale(name, scales, scale_of)
        _, k, k_pad, bits, group_size, scale_format, super_size, code_offset, zero_mult = _fields(first)
        entry = {
            "name": name,
            "kind": "packed",
            "m": m,
            "k": k,
            "k_pad": k_pad,
            "bits": bits,
            "group_size": group_size,
            "tensor_scale": tensor_scale,
            "scale_format": scale_format,
            "super_size": super_size,
            "code_offset": code_offset,
            "zero_mult": zero_mult,
            "planes": _record_of(planes_at, planes_n, np.dtype(np.uint8), (planes_n,), planes_crc),
            "scales": self._record(all_scales),
        }
        if scale_format in SUPER_FORMATS:
            entry["sub"] = self._record(np.concatenate(subs))
        self._add(entry)

    # - finishing -

    def commit(self) -> None:
        """Header, preamble, fsync, then the atomic rename onto `path`."""
        fd = self._fd
        if fd is None:
            raise OSError("the cache file was already committed or abandoned")
        header = json.dumps({"key": self.key, "entries": self.entries}).encode()
        header_offset = DATA_START + _align(self._end)
        os.lseek(fd, header_offset, os.SEEK_SET)
        _write_all(fd, memoryview(header))
        os.ftruncate(fd, header_offset + len(header))
        os.fsync(fd)  # the data and header are on disk before the magic says the file is whole
        preamble = MAGIC + header_offset.to_bytes(8, "little") + len(header).to_bytes(8, "little")
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, memoryview(preamble + hashlib.sha256(header).digest()))
        os.fsync(fd)
        self._fd = None
        if os.name == "nt":  # Windows renames no open file; there is no flock to keep there either
            os.close(fd)
            os.replace(self.tmp, self.path)
        else:  # renamed under the lock, so no cleaner takes the finished file for a dead one
            try:
                os.replace(self.tmp, self.path)
            finally:
                os.close(fd)
        self._committed = True

    def abort(self) -> None:
        """Delete the partial file (nothing once committed). Never raises."""
        fd, self._fd = self._fd, None
        if not self._committed:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
        if fd is not None:
            os.close(fd)


def _record_of(offset: int, nbytes: int, dtype: np.dtype[Any], shape: tuple[int, ...], crc: int) -> dict[str, Any]:
    return {"offset": offset, "nbytes": int(nbytes), "dtype": str(dtype), "shape": list(shape), "crc32": crc}


def _fields(w: PackedWeight) -> tuple[int, int, int, int, int, int, int, float, int]:
    """(m, k, k_pad, bits, group_size, scale_format, super_size, code_offset, zero_mult) of a PackedWeight."""
    return (
        w.m,
        w.k,
        w.k_pad,
        w.bits,
        w.group_size,
        w.scale_format,
        w.super_size,
        float(w.code_offset),
        w.zero_mult,
    )


def _packed(
    args: tuple[np.ndarray, np.ndarray, int, int, int, int, int], entry: dict[str, Any], sub: np.ndarray | None
) -> PackedWeight:
    """A PackedWeight of a checked entry: args = (planes, scales, m, k, k_pad, bits, group_size)."""
    fmt = entry["scale_format"]
    if fmt in SUPER_FORMATS:
        return PackedWeight(
            *args,
            float(entry["tensor_scale"]),
            scale_format=fmt,
            sub=sub,
            super_size=entry["super_size"],
            code_offset=float(entry["code_offset"]),
        )
    return PackedWeight(*args, float(entry["tensor_scale"]), scale_format=fmt, zero_mult=entry["zero_mult"])


def _common_scale(name: str, scales: list[np.ndarray], scale_of: list[float]) -> tuple[float, np.ndarray]:
    """One tensor_scale for a matrix packed in row chunks, and every chunk's fp16 scales under it.

    The packer gives each chunk the power of two that puts its own largest |scale| in
    [2^14, 2^15). The matrix takes the largest of them, which is the one packing it whole
    would choose, and every other chunk's fp16 values are multiplied by
    (its scale / the largest), a power of two <= 1: exact (the same bits a whole pack
    gives) unless a value falls below fp16's normal range (2^-14, i.e. 2^28 below the
    matrix's largest scale, where the whole pack rounds once and this twice), and never
    an overflow, since no value grows. The SUPER format keeps tensor_scale 1.
    """
    top = max(scale_of)
    if not all(s == top for s in scale_of):
        for i, s in enumerate(scale_of):
            if s != top:
                ratio = np.float32(s / top)  # a power of two: exact in float32
                scales[i] = (scales[i].view(np.float16).astype(np.float32) * ratio).astype(np.float16).view(np.uint16)
    out = np.concatenate(scales)
    if ((out & 0x7C00) == 0x7C00).any():  # inf or NaN fp16: the packer never writes one
        raise ValueError(f"{name}: a packed scale is not finite")
    return top, out


def save(path: str | os.PathLike[str], key: str, weights: Mapping[str, Any]) -> None:
    """Write `weights` (PackedWeight matrices and numpy arrays) atomically.

    Raises OSError (e.g. ENOSPC, or a directory at `path`) with nothing left behind at `path`.
    """
    with CacheWriter(path, key) as writer:
        for name, value in weights.items():
            if isinstance(value, PackedWeight):
                writer.add_packed(name, [value])
            else:
                writer.add_array(name, np.asarray(value))
        writer.commit()


# -- reading ------------------------------------------------------------------------------


class CacheMiss(Exception):
    """The cache file is absent or fails a check; the caller repacks."""


def discard(path: str | os.PathLike[str]) -> None:
    """Remove a damaged or stale cache file so it is rebuilt. Only a regular file or a
    symlink (the link, never its target) is removed: a directory or a FIFO someone put at
    the path stays, and the cache is simply not used for this model. Never raises."""
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            os.unlink(path)
    except OSError:
        pass


def _open_regular(path: str | os.PathLike[str]) -> tuple[mmap.mmap, int]:
    """Map a regular file read-only, without following a symlink or blocking on a FIFO."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise CacheMiss(str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise CacheMiss("not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise CacheMiss(str(e)) from None
    try:
        st2 = os.fstat(fd)
        # swapped between lstat and open: not the file we looked at
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise CacheMiss("the file changed while it was opened")
        if st2.st_size < _PREAMBLE:
            raise CacheMiss("too short")
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ), st2.st_size
    except (OSError, ValueError) as e:
        raise CacheMiss(str(e)) from None
    finally:
        os.close(fd)


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CacheMiss(f"{what} is {value!r}, not an integer in [{low}, {high}]")
    return value


def _record(entry: Mapping[str, Any], field: str, dtype: str, shape: tuple[int, ...], size: int) -> dict[str, Any]:
    """Checked {"offset", "nbytes", "crc32"} of one record, for an array of `dtype` and `shape`."""
    rec = entry.get(field)
    name = entry.get("name")
    if not isinstance(rec, dict):
        raise CacheMiss(f"{name}: record {field!r} missing")
    if rec.get("dtype") != dtype:
        raise CacheMiss(f"{name}.{field}: dtype {rec.get('dtype')!r}, the plan says {dtype}")
    if rec.get("shape") != list(shape):
        raise CacheMiss(f"{name}.{field}: shape {rec.get('shape')!r}, the plan says {list(shape)}")
    nbytes = _int(rec.get("nbytes"), 0, size, f"{name}.{field}.nbytes")
    if nbytes != math.prod(shape) * np.dtype(dtype).itemsize:
        raise CacheMiss(f"{name}.{field}: {nbytes} bytes for shape {list(shape)} of {dtype}")
    offset = _int(rec.get("offset"), 0, size, f"{name}.{field}.offset")
    if offset % ALIGN:
        raise CacheMiss(f"{name}.{field}: offset {offset} is not {ALIGN}-byte aligned")
    crc = _int(rec.get("crc32"), 0, 0xFFFFFFFF, f"{name}.{field}.crc32")
    return {"offset": offset, "nbytes": nbytes, "crc32": crc, "dtype": dtype, "shape": shape}


def _check_entries(header: Any, key: str, expected: Mapping[str, Expected] | None, size: int) -> list[Any]:
    """The header's entries, each checked against the plan, as (name, entry, records)."""
    if not isinstance(header, dict) or header.get("key") != key:
        raise CacheMiss("written for another model, bits or layout")
    entries = header.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CacheMiss("no entry list")
    names = [e.get("name") for e in entries]
    if len(set(map(str, names))) != len(names) or not all(isinstance(n, str) for n in names):
        raise CacheMiss("duplicate or missing entry names")
    if expected is not None and set(names) != set(expected):
        extra, missing = sorted(set(names) - set(expected)), sorted(set(expected) - set(names))
        raise CacheMiss(f"entries differ from the plan: unexpected {extra[:3]}, missing {missing[:3]}")
    out = []
    for e in entries:
        name = e["name"]
        want = None if expected is None else expected[name]
        kind = e.get("kind")
        if kind not in ("packed", "array") or (want is not None and kind != want.kind):
            raise CacheMiss(f"{name}: kind {kind!r}")
        if kind == "packed":
            fields = {f: _int(e.get(f), 1, 1 << 31, f"{name}.{f}") for f in ("m", "k", "k_pad", "bits", "group_size")}
            fields["scale_format"] = _int(e.get("scale_format"), SCALES_F16, SCALES_SUPER_NOMIN, f"{name}.scale_format")
            fields["super_size"] = _int(e.get("super_size"), 0, 1 << 31, f"{name}.super_size")
            if want is not None:
                plan = {
                    "m": want.m,
                    "k": want.k,
                    "k_pad": want.k_pad,
                    "bits": want.bits,
                    "group_size": want.group_size,
                    "scale_format": want.scale_format,
                    "super_size": want.super_size,
                }
                if fields != plan:
                    raise CacheMiss(f"{name}: packed as {fields}, the plan says {plan}")
            super_size = fields["super_size"]
            zero_mult = _int(e.get("zero_mult"), -MAX_ZERO_MULT, MAX_ZERO_MULT, f"{name}.zero_mult")
            if (fields["scale_format"] == SCALES_F16_SYM) != (zero_mult % 2 == 1):
                raise CacheMiss(f"{name}: zero_mult {zero_mult} for scale format {fields['scale_format']}")
            if (fields["scale_format"] in SUPER_FORMATS) != (super_size > 0) or (
                super_size and (super_size % fields["group_size"] or fields["k_pad"] % super_size)
            ):
                raise CacheMiss(f"{name}: scale format {fields['scale_format']} with super blocks of {super_size}")
            # the buffer sizes follow from the fields (kernels/LAYOUT.md §Weights)
            n_planes, n_scales, n_sub = _buffer_sizes(
                fields["m"], fields["k_pad"], fields["bits"], fields["group_size"], super_size, fields["scale_format"]
            )
            scale = e.get("tensor_scale")
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale < float("inf"):
                raise CacheMiss(f"{name}: tensor_scale {scale!r}")
            offset = e.get("code_offset")
            if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not math.isfinite(offset):
                raise CacheMiss(f"{name}: code_offset {offset!r}")
            if not super_size and offset != 0:
                raise CacheMiss(f"{name}: code_offset {offset!r} for F16 scales")
            records = [
                _record(e, "planes", "uint8", (n_planes,), size),
                _record(e, "scales", "uint16", (n_scales,), size),
            ]
            if super_size:
                records.append(_record(e, "sub", "int8", (n_sub,), size))
            elif "sub" in e:
                raise CacheMiss(f"{name}: sub-scales for F16 scales")
        else:
            if want is not None:
                dtype, shape = want.dtype, want.shape
            else:
                data = e.get("data")
                raw_shape = data.get("shape") if isinstance(data, dict) else None
                if not isinstance(raw_shape, list) or len(raw_shape) > 4:
                    raise CacheMiss(f"{name}: shape {raw_shape!r}")
                raw_dtype = data.get("dtype") if isinstance(data, dict) else None
                if raw_dtype not in ("float32", "float64"):
                    raise CacheMiss(f"{name}: dtype {raw_dtype!r}")
                dtype = str(raw_dtype)
                shape = tuple(_int(d, 0, size, f"{name}.shape") for d in raw_shape)
            records = [_record(e, "data", dtype, shape, size)]
        out.append((name, e, records))
    return out


def _verify_data(buf: np.ndarray, data_end: int, records: list[dict[str, Any]]) -> None:
    """Every record inside the data section (DATA_START..data_end: before the header),
    none overlapping another, every crc32 right.

    The crc32s run on a thread pool in CRC_CHUNK pieces (zlib releases the GIL), so the
    check costs one read of the file at the speed of all cores.
    """
    data_start = DATA_START
    spans = sorted((data_start + r["offset"], data_start + r["offset"] + r["nbytes"]) for r in records)
    for (_, a_end), (b_start, _) in zip(spans, spans[1:]):
        if b_start < a_end:
            raise CacheMiss("two records overlap")
    if spans and spans[-1][1] > data_end:
        raise CacheMiss("a record runs past the data into the header or the end of the file")

    def crc(rec: dict[str, Any]) -> bool:
        start, end = data_start + rec["offset"], data_start + rec["offset"] + rec["nbytes"]
        value = 0
        for at in range(start, end, CRC_CHUNK):
            value = zlib.crc32(buf[at : min(at + CRC_CHUNK, end)].data, value)
        return value == rec["crc32"]

    # big records first, so one large matrix does not finish last on its own
    ordered = sorted(records, key=lambda r: -r["nbytes"])
    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8))) as pool:
        if not all(pool.map(crc, ordered)):
            raise CacheMiss("checksum mismatch: the data was changed or damaged")


def load(path: str | os.PathLike[str], key: str, expected: Mapping[str, Expected] | None = None) -> Weights:
    """Memory-map a cache file and return its weights as views into the map.

    expected: what the model plan says the file holds (`expected_entries`); every
        entry's name, kind, shape, dtype and length must match it exactly. None checks
        the file's own consistency only.

    Raises CacheMiss on any problem: not a regular file, foreign key, bad magic, a
    header that does not match its sha256 or the plan, records outside the file or
    overlapping, a data checksum that does not match, or a matrix PackedWeight refuses.
    """
    weights, _check = _load(path, key, expected, verify_data=True)
    return weights


def load_deferred(
    path: str | os.PathLike[str], key: str, expected: Mapping[str, Expected] | None = None
) -> tuple[Weights, Callable[[], None]]:
    """load() with every check but the data crc32s, which the returned function runs later (it
    raises CacheMiss), e.g. on a thread once the model answers: on a 730 MB cache file that
    check is ~0.6 s of a ~1.8 s load and first token. It reads the very mapping the weights
    view, so what it checks is what runs. Safe to defer because nothing native indexes by the
    data's values unchecked (codes fit their bit width, act-order permutations are validated
    where they are read): damaged data gives wrong answers until the check finds it, never a
    read out of bounds."""
    return _load(path, key, expected, verify_data=False)


def _load(
    path: str | os.PathLike[str], key: str, expected: Mapping[str, Expected] | None, *, verify_data: bool
) -> tuple[Weights, Callable[[], None]]:
    mapped, size = _open_regular(path)
    try:
        return _read(mapped, size, key, expected, verify_data)
    except CacheMiss as error:
        reason = str(error)
    # out of the except block the failed read's views are gone: unmap now, so the caller
    # can remove the file (Windows refuses to delete a mapped file)
    try:
        mapped.close()
    except BufferError:
        pass  # a view still exports it; it is unmapped when the last one dies
    raise CacheMiss(reason)


def _read(
    mapped: mmap.mmap, size: int, key: str, expected: Mapping[str, Expected] | None, verify_data: bool
) -> tuple[Weights, Callable[[], None]]:
    """_load() on an open mapping of `size` bytes: the weights, and the data check (already run if `verify_data`)."""
    buf = np.frombuffer(mapped, dtype=np.uint8)
    if size < DATA_START or bytes(buf[:8]) != MAGIC:
        raise CacheMiss("bad magic")
    header_offset = int.from_bytes(bytes(buf[8:16]), "little")
    header_len = int.from_bytes(bytes(buf[16:24]), "little")
    if not DATA_START <= header_offset <= size or header_len > min(size - header_offset, MAX_HEADER_BYTES):
        raise CacheMiss("the header lies outside the file")
    if header_offset + header_len != size:
        raise CacheMiss("the file does not end with its header (truncated or extended)")
    header_bytes = bytes(buf[header_offset : header_offset + header_len])
    if hashlib.sha256(header_bytes).digest() != bytes(buf[24:_PREAMBLE]):
        raise CacheMiss("header checksum mismatch")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CacheMiss(f"header: {e}") from None
    checked = _check_entries(header, key, expected, size)
    all_records = [rec for _, _, entry_records in checked for rec in entry_records]

    def check() -> None:
        _verify_data(buf, header_offset, all_records)

    if verify_data:
        check()

    def view(rec: dict[str, Any]) -> np.ndarray:
        start = DATA_START + rec["offset"]
        return buf[start : start + rec["nbytes"]].view(rec["dtype"]).reshape(rec["shape"])

    weights: Weights = {}
    try:
        for name, entry, records in checked:
            if entry["kind"] == "packed":
                args = (
                    view(records[0]),
                    view(records[1]),
                    entry["m"],
                    entry["k"],
                    entry["k_pad"],
                    entry["bits"],
                    entry["group_size"],
                )
                weights[name] = _packed(args, entry, view(records[2]) if len(records) > 2 else None)
            else:
                weights[name] = view(records[0]).copy()  # small vectors; the runtime wants them writable
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise CacheMiss(f"entry: {err}") from None
    return weights, (lambda: None) if verify_data else check


STALE_PARTIAL_S = 3600.0  # a ".partial-" file older than this belongs to no running repack


def clear_cache(folder: Path | None = None) -> int:
    """Delete the repacked models in `folder` (None: default_cache_dir()); returns the bytes freed.

    Only our own regular `*.tmacw` files directly in the folder go: a symlink is never
    followed (nor removed), subfolders and other files are left alone, a missing folder frees 0.
    A write in progress (".partial-…", younger than STALE_PARTIAL_S) is kept for its engine; a
    file another process holds open and the OS refuses to delete (Windows) is skipped. A model
    that is running keeps its mapped copy (POSIX) and is repacked at its next load.
    """
    folder = default_cache_dir() if folder is None else Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, not a directory, unreadable: nothing of ours to free
        return 0
    import time  # only this function needs it

    freed = 0
    now = time.time()
    for entry in entries:
        if not entry.name.endswith(".tmacw"):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if entry.name.startswith(".partial-") and now - info.st_mtime < STALE_PARTIAL_S:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        freed += info.st_size
    return freed
