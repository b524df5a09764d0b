"""What is installed in the models folder: listing, importing a local GGUF, deleting, re-verifying.

A model counts as installed only when its manifest (`<file>.manifest.json`,
written after the sha256 check) exists and the file's size matches it.
Partial downloads live in `<models>/.partial/` and are never listed. Layout:
`<models>/<owner>--<name>/<file>` for Hub files, `<models>/local/<file>` for
imports (a referenced import keeps only its manifest there). Pure Python: must
not import PySide6, huggingface_hub or tmac_core.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.catalog.errors import DiskFullError, DownloadCancelledError, InstalledModelNotFoundError, NotAGgufFileError
from app.paths import atomic_write_bytes, fsync_directory

MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_DIR_NAME = ".partial"
LOCAL_DIR_NAME = "local"
GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)
DISK_MARGIN_BYTES = 100_000_000      # keep this much free after a download/copy: the OS and the chat DB need room
_HASH_BLOCK = 4 * 1024 * 1024
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class InstalledModel:
    key: str                  # "owner/name/file.gguf" for Hub files, "local/file.gguf" for imports
    path: Path                # the GGUF to load
    size: int
    sha256: str
    source: str               # "hub" | "import-copy" | "import-reference"
    repo_id: str | None
    filename: str
    commit: str | None
    installed_at: float
    manifest_path: Path


def repo_folder(models_dir: Path, repo_id: str) -> Path:
    owner, _, name = repo_id.partition("/")
    if not (_SAFE_PART.match(owner) and _SAFE_PART.match(name)):
        raise ValueError(f"unsafe repo id {repo_id!r}")
    return Path(models_dir) / f"{owner}--{name}"


def installed_file_path(models_dir: Path, repo_id: str, filename: str) -> Path:
    if not _SAFE_PART.match(filename):  # one plain file name: no folders, no "..", no leading dot
        raise ValueError(f"unsafe file name {filename!r}")
    return repo_folder(models_dir, repo_id) / filename


def manifest_path_for(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + MANIFEST_SUFFIX)


def write_manifest(manifest_file: Path, fields: dict) -> None:
    atomic_write_bytes(manifest_file, json.dumps(fields, indent=2, sort_keys=True).encode() + b"\n")


def free_disk_bytes(folder: Path) -> int:
    """Free bytes on the volume that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def sha256_of_file(path: Path, *, cancel: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelledError(0, 0)
            digest.update(block)
    return digest.hexdigest()


def read_gguf_header(path: Path) -> tuple[int, int, int]:
    """Return (version, tensor_count, metadata_kv_count) or raise NotAGgufFileError. Reads 24 bytes."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(24)
    except OSError as error:
        raise NotAGgufFileError(Path(path), f"cannot read: {error.strerror or error}") from error
    if len(header) < 24 or header[:4] != GGUF_MAGIC:
        raise NotAGgufFileError(Path(path), "it does not start with the GGUF signature")
    version, tensor_count, kv_count = struct.unpack("<IQQ", header[4:24])
    if version not in SUPPORTED_GGUF_VERSIONS:
        raise NotAGgufFileError(Path(path), f"GGUF version {version} is not supported (need 2 or 3)")
    # Sanity bounds only; the runtime's hardened reader does the full check when loading.
    if tensor_count > 1_000_000 or kv_count > 1_000_000:
        raise NotAGgufFileError(Path(path), "its header counts are implausible")
    return version, tensor_count, kv_count


def _model_from_manifest(manifest_file: Path, models_dir: Path) -> InstalledModel | None:
    try:
        data = json.loads(manifest_file.read_text(encoding="utf-8"))
        stored = Path(data["file"])
        path = stored if stored.is_absolute() else manifest_file.parent / stored
        size, sha256 = int(data["size"]), str(data["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # one bad manifest must not hide the other models
    try:
        if not path.is_file() or path.stat().st_size != size:
            return None
    except OSError:
        return None
    relative_folder = manifest_file.parent.relative_to(models_dir).as_posix()
    filename = path.name
    key = (f"{data['repo_id']}/{filename}" if data.get("repo_id")
           else f"{relative_folder}/{manifest_file.name[:-len(MANIFEST_SUFFIX)]}")
    return InstalledModel(key=key, path=path, size=size, sha256=sha256, source=data.get("source", "hub"),
                          repo_id=data.get("repo_id"), filename=filename, commit=data.get("commit"),
                          installed_at=float(data.get("installed_at", 0.0)), manifest_path=manifest_file)


def list_installed(models_dir: Path) -> list[InstalledModel]:
    """Every verified, complete model (sorted by key). Partial and temp files are never listed."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for manifest_file in sorted(folder.glob("*" + MANIFEST_SUFFIX)):
            model = _model_from_manifest(manifest_file, models_dir)
            if model is not None:
                found.append(model)
    return sorted(found, key=lambda m: m.key)


def find_installed(models_dir: Path, key: str) -> InstalledModel:
    for model in list_installed(models_dir):
        if model.key == key:
            return model
    raise InstalledModelNotFoundError(key)


def verify_installed(model: InstalledModel) -> bool:
    """Re-hash the file against its manifest (the "Repair" button)."""
    try:
        return sha256_of_file(model.path) == model.sha256
    except OSError:
        return False


def delete_installed(models_dir: Path, key: str) -> None:
    """Remove a model. The manifest goes first, so a half-finished delete never looks installed.
    A referenced import's original file is the user's and is never deleted."""
    model = find_installed(models_dir, key)
    model.manifest_path.unlink()
    fsync_directory(model.manifest_path.parent)
    if model.source != "import-reference":
        model.path.unlink(missing_ok=True)


def _unique_local_name(local_dir: Path, name: str) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 2
    while (local_dir / candidate).exists() or (local_dir / (candidate + MANIFEST_SUFFIX)).exists():
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    return candidate


def import_local_gguf(models_dir: Path, source: Path, *, copy: bool = True,
                      progress: Callable[[int, int], None] | None = None,
                      cancel: threading.Event | None = None) -> InstalledModel:
    """Add a GGUF from disk: check its header, hash it, then copy it in (or just reference it).

    `progress(bytes_done, total)` is called during the copy. A copy is written under a temp name
    and renamed only when complete.
    """
    source = Path(source).resolve()
    version, _, _ = read_gguf_header(source)
    size = source.stat().st_size
    local_dir = Path(models_dir) / LOCAL_DIR_NAME
    local_dir.mkdir(parents=True, exist_ok=True)
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", source.name).lstrip(".") or "model.gguf"
    name = _unique_local_name(local_dir, safe_name)
    if copy:
        free = free_disk_bytes(local_dir)
        if size + DISK_MARGIN_BYTES > free:
            raise DiskFullError(local_dir, size + DISK_MARGIN_BYTES, free)
        target = local_dir / name
        temp = local_dir / f".{name}.importing"
        digest, done = hashlib.sha256(), 0
        try:
            with open(source, "rb") as reader, open(temp, "wb") as writer:
                while block := reader.read(_HASH_BLOCK):
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelledError(done, size)
                    digest.update(block)
                    writer.write(block)
                    done += len(block)
                    if progress:
                        progress(done, size)
                writer.flush()
                os.fsync(writer.fileno())
        except OSError as error:
            temp.unlink(missing_ok=True)
            if error.errno == errno.ENOSPC:
                raise DiskFullError(local_dir) from error
            raise
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        os.replace(temp, target)
        fsync_directory(local_dir)
        stored, kind = name, "import-copy"
    else:
        digest = hashlib.sha256()
        with open(source, "rb") as reader:
            while block := reader.read(_HASH_BLOCK):
                digest.update(block)
        stored, kind = str(source), "import-reference"
    manifest_file = local_dir / (name + MANIFEST_SUFFIX)
    write_manifest(manifest_file, {"file": stored, "size": size, "sha256": digest.hexdigest(), "source": kind,
                                   "repo_id": None, "commit": None, "gguf_version": version,
                                   "installed_at": time.time()})
    model = _model_from_manifest(manifest_file, Path(models_dir))
    assert model is not None
    return model
