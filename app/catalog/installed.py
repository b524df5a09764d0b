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
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.catalog.errors import (
    DiskFullError,
    DownloadCancelledError,
    InstalledModelNotFoundError,
    NotAGgufFileError,
    UnsafeFileNameError,
    UnsafePathError,
)
from app.catalog.safepath import (
    MANIFEST_SUFFIX,
    PARTIAL_DIR_NAME,
    check_file_name,
    check_inside,
    check_repo_id,
    open_regular,
    read_small_file,
    safe_folder,
    unlink_inside,
)
from app.paths import atomic_write_bytes, fsync_directory
from tmac_core.errors import ModelFormatError, ModelLoadError
from tmac_core.filehash import HashCancelled, sha256_file
from tmac_core.types import ModelSummary

__all__ = ["MANIFEST_SUFFIX", "PARTIAL_DIR_NAME"]  # re-exported: download.py and the page import them from here
LOCAL_DIR_NAME = "local"
DISK_MARGIN_BYTES = 100_000_000  # keep this much free after a download/copy: the OS and the chat DB need room
_SOURCES = {"hub", "import-copy", "import-reference"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_log = logging.getLogger(__name__)


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
    """`<models>/<owner>--<name>`; UnsafeFileNameError (a ValueError) for an unsafe repo id."""
    owner, name = check_repo_id(repo_id)
    return Path(models_dir) / f"{owner}--{name}"


def installed_file_path(models_dir: Path, repo_id: str, filename: str) -> Path:
    """Where a Hub file goes. One plain file name: no folders, no "..", no leading dot, nothing
    that looks like a manifest or a partial download (UnsafeFileNameError, a ValueError)."""
    return repo_folder(models_dir, repo_id) / check_file_name(filename)


def manifest_path_for(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + MANIFEST_SUFFIX)


def write_manifest(manifest_file: Path, fields: dict[str, object]) -> None:
    # temp file + rename: a link planted at the manifest's name is replaced, never written through
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
    """The model a manifest describes, or None (logged) when the manifest is unreadable, names a
    file outside its own folder, or the file is missing, a link, or of the wrong size.

    A manifest is untrusted input: only a referenced import may name a file elsewhere (the
    user's own file, which is never written or deleted); every other manifest names exactly
    the file beside it (`<file>.manifest.json` → `<file>`)."""
    try:
        check_inside(models_dir, manifest_file)
        data = json.loads(read_small_file(manifest_file).decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        source, stored, size, sha256 = data.get("source", "hub"), data["file"], data["size"], data["sha256"]
        repo_id, commit = data.get("repo_id"), data.get("commit")
        if source not in _SOURCES or not isinstance(stored, str):
            raise ValueError(f"source {source!r} / file {stored!r}")
        if type(size) is not int or size < 0 or not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ValueError("size or sha256")
        if not isinstance(commit, (str, type(None))) or not isinstance(data.get("installed_at", 0.0), (int, float)):
            raise ValueError("commit or installed_at")
        if source == "import-reference":
            path = Path(stored)
            if not path.is_absolute():
                raise ValueError("a referenced file must be an absolute path")
        else:
            own_name = manifest_file.name[: -len(MANIFEST_SUFFIX)]
            if check_file_name(stored) != own_name:
                raise ValueError(f"it names {stored!r}, not the file beside it")
            path = manifest_file.parent / stored
        if repo_id is not None and repo_folder(models_dir, repo_id) != manifest_file.parent:
            raise ValueError(f"repo_id {repo_id!r} does not match its folder")
    except (OSError, ValueError, KeyError, TypeError, UnicodeError, UnsafePathError) as error:
        _log.warning("ignoring manifest %s: %s", manifest_file, error)
        return None  # one bad manifest must not hide the other models
    try:
        info = path.stat() if source == "import-reference" else os.lstat(path)
    except OSError:
        return None  # not there (yet, or any more): not installed
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        if stat.S_ISLNK(info.st_mode):
            _log.warning("ignoring %s: a model file in the models folder must not be a link", path)
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
        source=source,
        repo_id=repo_id,
        filename=filename,
        commit=commit,
        installed_at=float(data.get("installed_at", 0.0)),
        manifest_path=manifest_file,
    )


def list_installed(models_dir: Path) -> list[InstalledModel]:
    """Every verified, complete model (sorted by key). Partial and temp files are never listed."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    try:
        folders = sorted(p for p in models_dir.iterdir() if not p.name.startswith("."))
    except OSError as error:
        _log.warning("cannot list the models folder %s: %s", models_dir, error)
        return []
    for folder in folders:
        if folder.is_symlink():  # a linked folder could make a delete reach outside the models folder
            _log.warning("ignoring %s: a folder in the models folder must not be a link", folder)
            continue
        if not folder.is_dir():
            continue
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
    unlink_inside(models_dir, model.manifest_path)  # UnsafePathError if a folder became a link meanwhile
    fsync_directory(model.manifest_path.parent)
    if model.source != "import-reference":
        unlink_inside(models_dir, model.path)


def _import_name(original: str) -> str:
    """A safe file name for an imported file (the original may be anything the user has)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", original).replace("..", "_")[:150].strip("._-") or "model.gguf"
    try:
        return check_file_name(name)
    except UnsafeFileNameError:  # a reserved device name or one of our suffixes: make it plainly a model
        return check_file_name(f"model-{name}.gguf" if not name.startswith("model-") else "model.gguf")


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
    local_dir = safe_folder(Path(models_dir), LOCAL_DIR_NAME, create=True)
    name = _unique_local_name(local_dir, _import_name(source.name))
    if copy:
        free = free_disk_bytes(local_dir)
        if size + DISK_MARGIN_BYTES > free:
            raise DiskFullError(local_dir, size + DISK_MARGIN_BYTES, free)
        target = local_dir / name
        temp = local_dir / f".{name}.importing"
        try:
            with open_regular(temp, "xb") as writer:  # never through a link planted at the temp name
                digest = sha256_file(
                    source, progress=progress, copy_to=writer, should_stop=cancel.is_set if cancel is not None else None
                )
                writer.flush()
                os.fsync(writer.fileno())
        except HashCancelled as stopped:
            temp.unlink(missing_ok=True)
            raise DownloadCancelledError(stopped.done, stopped.total) from None
        except FileExistsError:
            raise UnsafePathError(temp, "a leftover of an earlier import is in the way") from None
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
