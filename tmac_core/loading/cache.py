"""The repacked-model cache: one file per (source content, bits, layout, quantizer).

Repacking a 1 B model takes minutes (the quantizer searches clipping per group);
reading it back from this file takes a page-cache mmap. File format, all
little-endian:

    b"TMACW\\0\\0\\2"  magic + format version         8 bytes
    header_len         uint64                         8 bytes
    header_sha256      sha256 of the header bytes     32 bytes
    header             UTF-8 JSON, header_len bytes   {"key": ..., "entries": [...]}
    data               each array at a 64-byte aligned offset from the data start

An entry is {"name", "kind": "packed" | "array"} with, for packed matrices, the
PackedWeight fields and the records of its planes and scales, for arrays the record
"data". A record is {"offset", "nbytes", "dtype", "shape", "crc32"}.

The file is untrusted input (another process, a bad disk or a person may have
written it), and native code indexes what comes out of it. So before any array or
PackedWeight is built: the header must match its sha256; every entry's name, kind,
shape, dtype and byte length must be what the model plan says (`expected_entries`);
every record must lie inside the file without overlapping another; and the crc32 of
every record's bytes must match. The data check reads every byte once, split over
threads (zlib.crc32 runs at ~2.5 GB/s per core and releases the GIL); measured on the
1.17B synthetic model (a 730 MB cache file in the page cache, 2 busy cores) it adds
~0.2 s to a ~0.2 s Engine.load, and it faults the weights in, which the first token
would otherwise do. A file that fails any check, and anything
that is not a regular file at the path (a directory, a FIFO, a device, a symlink), is
a CacheMiss: the caller repacks and, for a regular file or a symlink, replaces it.
Writes go to a temporary file renamed into place, so a crash or a full disk leaves no
half file behind.
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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tmac_core.filehash import sha256_file
from tmac_core.kernels import LAYOUT_VERSION, PackedWeight
from tmac_core.plan import TILE_ROWS, ModelConfig, tensor_plan, vector_plan

MAGIC = b"TMACW\0\0\2"  # 2: header sha256, record crc32s
ALIGN = 64
_PREAMBLE = 8 + 8 + 32  # magic, header_len, header sha256
MAX_HEADER_BYTES = 64 << 20  # a 1000-layer model's header is ~2 MB
CRC_CHUNK = 16 << 20  # bytes per crc32 job: small enough to spread over threads
# Bump when repack.py or the bits presets change what a cached file holds.
QUANTIZER_VERSION = 2  # 2: output-layer residual pass

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


# -- what the plan says the file holds --------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One entry as the model plan says it must be.

    A packed matrix: kind "packed", its PackedWeight fields and the element counts of
    its planes (uint8) and scales (uint16, fp16 bits). An array: kind "array", its
    dtype and shape.
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


def expected_entries(
    cfg: ModelConfig, bits: int | None, source_types: Mapping[str, str] | str | None = None
) -> dict[str, Expected]:
    """Every entry a cache file for `cfg` at `bits` must hold, and nothing else
    (tmac_core.plan: the matrices, the vectors, and the loader's RoPE frequencies).

    source_types: the GGML type name of each source tensor (ModelSummary.tensor_types),
        which decides the exact-repack groups and the residual pass, as in tensor_plan.
    """
    out: dict[str, Expected] = {}
    for spec in tensor_plan(cfg, bits, source_types):
        tiles = -(-spec.rows // TILE_ROWS)
        # as plan.matrix_bytes: grouped scales keep k_pad = K, else K pads to 64
        k_pad = spec.cols if spec.cols % spec.group_size == 0 else -(-spec.cols // 64) * 64
        out[spec.name] = Expected(
            "packed",
            m=spec.rows,
            k=spec.cols,
            k_pad=k_pad,
            bits=spec.bits,
            group_size=spec.group_size,
            n_planes=tiles * (k_pad // 8) * spec.bits * 64,
            n_scales=tiles * (k_pad // spec.group_size) * 2 * 64,
        )
    for vec in vector_plan(cfg):
        if vec.role != "rope_freqs":  # folded into rope.inv_freq by the loader
            out[vec.name] = Expected("array", "float32", (vec.size,))
    out["rope.inv_freq"] = Expected("array", "float64", (cfg.head_dim // 2,))
    return out


# -- writing ------------------------------------------------------------------------------


def save(path: str | os.PathLike[str], key: str, weights: Mapping[str, Any]) -> None:
    """Write `weights` (PackedWeight matrices and numpy arrays) atomically.

    Raises OSError (e.g. ENOSPC, or a directory at `path`) with nothing left behind at `path`.
    """
    entries: list[dict[str, Any]] = []
    blobs: list[tuple[int, np.ndarray]] = []
    offset = 0

    def place(value: Any) -> dict[str, Any]:
        nonlocal offset
        arr = np.ascontiguousarray(value)
        record = {
            "offset": offset,
            "nbytes": int(arr.nbytes),
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
            "crc32": zlib.crc32(arr.reshape(-1).view(np.uint8).data),
        }
        blobs.append((offset, arr))
        offset = _align(offset + arr.nbytes)
        return record

    for name, value in weights.items():
        if isinstance(value, PackedWeight):
            entries.append(
                {
                    "name": name,
                    "kind": "packed",
                    "m": value.m,
                    "k": value.k,
                    "k_pad": value.k_pad,
                    "bits": value.bits,
                    "group_size": value.group_size,
                    "tensor_scale": float(value.tensor_scale),
                    "planes": place(value.planes),
                    "scales": place(value.scales),
                }
            )
        else:
            entries.append({"name": name, "kind": "array", "data": place(np.asarray(value))})
    header = json.dumps({"key": key, "entries": entries}).encode()
    data_start = _align(_PREAMBLE + len(header))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # a FIFO or directory someone put there stays
        raise OSError(f"{path} is not a regular file; the cache is not used for this model")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".tmacw")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + hashlib.sha256(header).digest() + header)
            for rel, arr in blobs:
                f.seek(data_start + rel)
                f.write(arr.reshape(-1).view(np.uint8).data)
            f.truncate(data_start + offset)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
            if want is not None:
                plan = {"m": want.m, "k": want.k, "k_pad": want.k_pad, "bits": want.bits, "group_size": want.group_size}
                if fields != plan:
                    raise CacheMiss(f"{name}: packed as {fields}, the plan says {plan}")
            # the buffer sizes follow from the fields (kernels/LAYOUT.md §Weights)
            tiles = -(-fields["m"] // TILE_ROWS)
            n_planes = tiles * (fields["k_pad"] // 8) * fields["bits"] * 64
            n_scales = tiles * (fields["k_pad"] // fields["group_size"]) * 2 * 64
            scale = e.get("tensor_scale")
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale < float("inf"):
                raise CacheMiss(f"{name}: tensor_scale {scale!r}")
            records = [
                _record(e, "planes", "uint8", (n_planes,), size),
                _record(e, "scales", "uint16", (n_scales,), size),
            ]
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


def _verify_data(buf: np.ndarray, data_start: int, records: list[dict[str, Any]]) -> None:
    """Every record inside the file, none overlapping another, every crc32 right.

    The crc32s run on a thread pool in CRC_CHUNK pieces (zlib releases the GIL), so the
    check costs one read of the file at the speed of all cores.
    """
    spans = sorted((data_start + r["offset"], data_start + r["offset"] + r["nbytes"]) for r in records)
    for (_, a_end), (b_start, _) in zip(spans, spans[1:]):
        if b_start < a_end:
            raise CacheMiss("two records overlap")
    if spans and spans[-1][1] > buf.shape[0]:
        raise CacheMiss("a record runs past the end of the file")

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
    mapped, size = _open_regular(path)
    try:
        return _read(mapped, size, key, expected)
    except CacheMiss as error:
        reason = str(error)
    # out of the except block the failed read's views are gone: unmap now, so the caller
    # can remove the file (Windows refuses to delete a mapped file)
    try:
        mapped.close()
    except BufferError:
        pass  # a view still exports it; it is unmapped when the last one dies
    raise CacheMiss(reason)


def _read(mapped: mmap.mmap, size: int, key: str, expected: Mapping[str, Expected] | None) -> Weights:
    """load() on an open mapping of `size` bytes."""
    buf = np.frombuffer(mapped, dtype=np.uint8)
    if bytes(buf[:8]) != MAGIC:
        raise CacheMiss("bad magic")
    header_len = int.from_bytes(bytes(buf[8:16]), "little")
    if header_len > min(size - _PREAMBLE, MAX_HEADER_BYTES):
        raise CacheMiss("header runs past the end of the file")
    header_bytes = bytes(buf[_PREAMBLE : _PREAMBLE + header_len])
    if hashlib.sha256(header_bytes).digest() != bytes(buf[16:_PREAMBLE]):
        raise CacheMiss("header checksum mismatch")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CacheMiss(f"header: {e}") from None
    data_start = _align(_PREAMBLE + header_len)
    checked = _check_entries(header, key, expected, size)
    _verify_data(buf, data_start, [rec for _, _, records in checked for rec in records])

    def view(rec: dict[str, Any]) -> np.ndarray:
        start = data_start + rec["offset"]
        return buf[start : start + rec["nbytes"]].view(rec["dtype"]).reshape(rec["shape"])

    weights: Weights = {}
    try:
        for name, entry, records in checked:
            if entry["kind"] == "packed":
                weights[name] = PackedWeight(
                    view(records[0]),
                    view(records[1]),
                    entry["m"],
                    entry["k"],
                    entry["k_pad"],
                    entry["bits"],
                    entry["group_size"],
                    float(entry["tensor_scale"]),
                )
            else:
                weights[name] = view(records[0]).copy()  # small vectors; the runtime wants them writable
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise CacheMiss(f"entry: {err}") from None
    return weights


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
