"""What is installed in the models folder: listing, importing a local GGUF, deleting, re-verifying.

A model counts as installed only when its manifest (`<file>.manifest.json`,
written after the sha256 check) exists and the file's size matches it.
Partial downloads live in `<models>/.partial/` and are never listed. Layout:
`<models>/<owner>--<name>/<file>` for Hub files, `<models>/local/<file>` for
imports (a referenced import keeps only its manifest there). Files are checked by
the runtime's own reader (tmac_core.inspect_model, imported when an import runs:
it loads numpy) and hashed by tmac_core.filehash. Must not import PySide6 or
huggingface_hub.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.catalog.errors import DiskFullError, DownloadCancelledError, InstalledModelNotFoundError, NotAGgufFileError
from app.paths import atomic_write_bytes, fsync_directory
from tmac_core.errors import ModelFormatError, ModelLoadError
from tmac_core.filehash import HashCancelled, sha256_file
from tmac_core.types import ModelSummary

MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_DIR_NAME = ".partial"
LOCAL_DIR_NAME = "local"
DISK_MARGIN_BYTES = 100_000_000  # keep this much free after a download/copy: the OS and the chat DB need room
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class InstalledModel:
    key: str  # "owner/name/file.gguf" for Hub files, "local/file.gguf" for imports
    path: Path  # the GGUF to load
    size: int
    sha256: str
    source: str  # "hub" | "import-copy" | "import-reference"
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
    """Hex sha256 of a file; DownloadCancelledError when `cancel` is set mid-way."""
    try:
        return sha256_file(path, should_stop=cancel.is_set if cancel is not None else None)
    except HashCancelled:
        raise DownloadCancelledError(0, 0) from None


def check_model_file(path: Path) -> ModelSummary:
    """The runtime's full check of a GGUF (tmac_core.inspect_model); NotAGgufFileError with
    the runtime's reason when it fails."""
    from tmac_core import inspect_model  # loads numpy: only where a file is imported

    try:
        return inspect_model(path)
    except ModelFormatError as error:
        raise NotAGgufFileError(Path(path), f"{error.field}: {error.reason}") from error
    except ModelLoadError as error:
        raise NotAGgufFileError(Path(path), str(error)) from error


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
    key = (
        f"{data['repo_id']}/{filename}"
        if data.get("repo_id")
        else f"{relative_folder}/{manifest_file.name[: -len(MANIFEST_SUFFIX)]}"
    )
    return InstalledModel(
        key=key,
        path=path,
        size=size,
        sha256=sha256,
        source=data.get("source", "hub"),
        repo_id=data.get("repo_id"),
        filename=filename,
        commit=data.get("commit"),
        installed_at=float(data.get("installed_at", 0.0)),
        manifest_path=manifest_file,
    )


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


def import_local_gguf(
    models_dir: Path,
    source: Path,
    *,
    copy: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    summary: ModelSummary | None = None,
) -> InstalledModel:
    """Add a GGUF from disk: check it with the runtime's reader, then copy it in while
    hashing it (or hash it and just reference it).

    `summary` is the file's tmac_core.inspect_model result when the caller already has
    it (the check then is not repeated). `progress(bytes_done, total)` is called during
    the copy. A copy is written under a temp name and renamed only when complete.
    """
    source = Path(source).resolve()
    if summary is None:
        summary = check_model_file(source)
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
        try:
            with open(temp, "wb") as writer:
                digest = sha256_file(
                    source, progress=progress, copy_to=writer, should_stop=cancel.is_set if cancel is not None else None
                )
                writer.flush()
                os.fsync(writer.fileno())
        except HashCancelled as stopped:
            temp.unlink(missing_ok=True)
            raise DownloadCancelledError(stopped.done, stopped.total) from None
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
        digest = sha256_file(source)
        stored, kind = str(source), "import-reference"
    manifest_file = local_dir / (name + MANIFEST_SUFFIX)
    write_manifest(
        manifest_file,
        {
            "file": stored,
            "size": size,
            "sha256": digest,
            "source": kind,
            "repo_id": None,
            "commit": None,
            "gguf_version": summary.gguf_version,
            "installed_at": time.time(),
        },
    )
    model = _model_from_manifest(manifest_file, Path(models_dir))
    assert model is not None
    return model
