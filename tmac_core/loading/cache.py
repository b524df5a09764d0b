"""The repacked-model cache: one file per (source content, bits, layout, quantizer).

Repacking a 1 B model takes minutes (the quantizer searches clipping per group);
reading it back from this file takes a page-cache mmap. File format, all
little-endian:

    b"TMACW\\0\\0\\1"  magic + format version         8 bytes
    header_len         uint64                         8 bytes
    header             UTF-8 JSON, header_len bytes   {"key": ..., "entries": [...]}
    data               each array at a 64-byte aligned offset from the file start

An entry is {"name", "kind": "packed" | "array", "offset", "nbytes", "dtype",
"shape"} and, for packed matrices, the PackedWeight fields plus the offsets of
its planes and scales. A cache file that fails any check is a miss: it is
deleted and rebuilt, never trusted. Writes go to a temporary file renamed into
place, so a crash or a full disk leaves no half file behind.
"""

from __future__ import annotations

import json
import mmap
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tmac_core.filehash import sha256_file
from tmac_core.kernels import LAYOUT_VERSION, PackedWeight

MAGIC = b"TMACW\0\0\1"
ALIGN = 64
# Bump when repack.py or the bits presets change what a cached file holds.
QUANTIZER_VERSION = 2  # 2: output-layer residual pass
_DTYPES = {"uint8", "uint16", "float32", "float64"}


def default_cache_dir() -> Path:
    """TMAC_CACHE_DIR, else the per-user cache dir (platformdirs)."""
    env = os.environ.get("TMAC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("TMACChat", "TMAC")) / "repacked"


def source_hash(path: str | os.PathLike, progress: Callable[[float], None] | None = None) -> str:
    """sha256 of the model file's content (not its name or mtime: a copied or
    re-downloaded file hits the same cache entry, an edited one does not)."""
    report = None if progress is None else (lambda done, total: progress(done / max(total, 1)))
    return sha256_file(path, progress=report)


def cache_key(source_sha256: str, bits: int) -> str:
    return f"{source_sha256[:40]}-b{bits}-l{LAYOUT_VERSION}-q{QUANTIZER_VERSION}"


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"{key}.tmacw"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def save(path: str | os.PathLike, key: str, weights: dict) -> None:
    """Write `weights` (PackedWeight matrices and numpy arrays) atomically.

    Raises OSError (e.g. ENOSPC) with nothing left behind at `path`.
    """
    entries, blobs, offset = [], [], 0

    def place(arr: np.ndarray) -> dict:
        nonlocal offset
        arr = np.ascontiguousarray(arr)
        record = {"offset": offset, "nbytes": int(arr.nbytes), "dtype": str(arr.dtype), "shape": list(arr.shape)}
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
    data_start = _align(16 + len(header))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".tmacw")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            for rel, arr in blobs:
                f.seek(data_start + rel)
                f.write(memoryview(arr).cast("B"))
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


class CacheMiss(Exception):
    """The cache file is absent or fails a check; the caller repacks."""


def load(path: str | os.PathLike, key: str) -> dict:
    """Memory-map a cache file and return its weights as views into the map.

    Raises CacheMiss on any problem: absent, foreign key, bad magic, offsets or
    shapes that do not fit the file, or a matrix PackedWeight refuses.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 16:
                raise CacheMiss("too short")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise CacheMiss(str(e)) from None
    buf = np.frombuffer(mapped, dtype=np.uint8)
    if bytes(buf[:8]) != MAGIC:
        raise CacheMiss("bad magic")
    header_len = int.from_bytes(bytes(buf[8:16]), "little")
    if header_len > size - 16:
        raise CacheMiss("header runs past the end of the file")
    try:
        header = json.loads(bytes(buf[16 : 16 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheMiss(f"header: {e}") from None
    if not isinstance(header, dict) or header.get("key") != key:
        raise CacheMiss("written for another model, bits or layout")
    data_start = _align(16 + header_len)

    def view(rec) -> np.ndarray:
        try:
            off, nbytes, dtype, shape = int(rec["offset"]), int(rec["nbytes"]), rec["dtype"], rec["shape"]
            if dtype not in _DTYPES or off < 0 or nbytes < 0 or data_start + off + nbytes > size:
                raise CacheMiss("array outside the file")
            arr = buf[data_start + off : data_start + off + nbytes].view(dtype)
            return arr.reshape([int(d) for d in shape])
        except (KeyError, TypeError, ValueError) as e:
            raise CacheMiss(f"entry: {e}") from None

    weights = {}
    try:
        for e in header["entries"]:
            if e["kind"] == "packed":
                weights[e["name"]] = PackedWeight(
                    view(e["planes"]),
                    view(e["scales"]),
                    int(e["m"]),
                    int(e["k"]),
                    int(e["k_pad"]),
                    int(e["bits"]),
                    int(e["group_size"]),
                    float(e["tensor_scale"]),
                )
            else:
                weights[e["name"]] = view(e["data"]).copy()  # small vectors; the runtime wants them writable
    except (KeyError, TypeError, ValueError) as e:
        raise CacheMiss(f"entry: {e}") from None
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
