"""What is installed in the models folder: listing, importing a local GGUF or model folder, deleting, re-verifying.

A model counts as installed only when its manifest (`<file>.manifest.json`,
written after the sha256 check) exists and the file's size matches it.
Partial downloads live in `<models>/.partial/` and are never listed. Layout:
`<models>/<owner>--<name>/<file>` for Hub files, `<models>/local/<file>` for
imports (a referenced import keeps only its manifest there). A Hugging Face model folder
(config.json + safetensors + tokenizer files) is installed the same way as one folder
`<file>/` beside `<file>.manifest.json`; its manifest lists every file with its size and
sha256, and only the names in FOLDER_FILES (and *.safetensors) are ever copied or
downloaded: never .bin/.pt/.pth pickles or code. Files are checked by
the runtime's own reader (tmac_core.inspect_model, imported when an import runs:
it loads numpy) and hashed by tmac_core.filehash. Must not import PySide6 or
huggingface_hub.
"""

from __future__ import annotations

import errno
import hashlib
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
    files: tuple[str, ...] = ()  # a model folder's files (empty for a GGUF)

    @property
    def is_folder(self) -> bool:
        return bool(self.files)


# The files of a Hugging Face model folder we copy or download; anything else is left behind.
FOLDER_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "model.safetensors.index.json",
        "quantize_config.json",
    }
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # never copied, downloaded or opened
MAX_FOLDER_FILES = 4096  # shards and all: a bound on what a manifest may list


def allowed_folder_file(name: str) -> bool:
    """Whether a model folder's file `name` is one we copy/download: FOLDER_FILES or a plain *.safetensors."""
    try:
        check_file_name(name)
    except UnsafeFileNameError:
        return False
    return name in FOLDER_FILES or name.endswith(".safetensors")


def folder_digest(file_sha256: dict[str, str]) -> str:
    """One sha256 for a model folder: over its files' names and sha256s (sorted), as `sha256sum` prints them."""
    listing = "".join(f"{file_sha256[name]}  {name}\n" for name in sorted(file_sha256))
    return hashlib.sha256(listing.encode()).hexdigest()


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


def ensure_disk_room(folder: Path, missing_bytes: int) -> None:
    """DiskFullError unless the volume of `folder` has `missing_bytes` free plus DISK_MARGIN_BYTES."""
    needed = missing_bytes + DISK_MARGIN_BYTES
    free = free_disk_bytes(folder)
    if needed > free:
        raise DiskFullError(folder, needed, free)


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
        size, sha256 = _size_and_sha256(size, sha256, "")
        if not isinstance(commit, (str, type(None))) or not isinstance(data.get("installed_at", 0.0), (int, float)):
            raise ValueError("commit or installed_at")
        files = _manifest_files(data.get("files"), size, sha256)
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
    if files:
        if not stat.S_ISDIR(info.st_mode) or not _folder_matches(path, files, follow=source == "import-reference"):
            _log.warning("ignoring %s: not the model folder its manifest lists", path)
            return None
    elif not stat.S_ISREG(info.st_mode) or info.st_size != size:
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
        files=tuple(sorted(files)),
    )


def _manifest_files(raw: object, size: int, sha256: str) -> dict[str, tuple[int, str]]:
    """A folder manifest's `files` ({name: {"size", "sha256"}}) checked against its total size and
    digest; {} for a GGUF's manifest. ValueError for anything that does not add up."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw or len(raw) > MAX_FOLDER_FILES:
        raise ValueError("files must be a non-empty object")
    files: dict[str, tuple[int, str]] = {}
    for name, entry in raw.items():
        if not allowed_folder_file(name) or not isinstance(entry, dict):
            raise ValueError(f"file {name!r} is not one a model folder may hold")
        file_size, file_sha = entry.get("size"), entry.get("sha256")
        files[name] = _size_and_sha256(file_size, file_sha, f"file {name!r}: ")
    if sum(s for s, _ in files.values()) != size or folder_digest({n: h for n, (_, h) in files.items()}) != sha256:
        raise ValueError("the files do not add up to the folder's size and sha256")
    return files


def _size_and_sha256(size: object, sha256: object, what: str) -> tuple[int, str]:
    """A manifest's size (an int ≥ 0, not a bool) and sha256 (64 lowercase hex digits); ValueError naming `what`."""
    if type(size) is not int or size < 0 or not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError(f"{what}size or sha256")
    return size, sha256


def _folder_matches(folder: Path, files: dict[str, tuple[int, str]], *, follow: bool) -> bool:
    """Every listed file is there, a regular file (a link only in the user's own referenced folder,
    and then only to a file inside it) of the listed size."""
    for name, (size, _) in files.items():
        try:
            info = (folder / name).stat() if follow else os.lstat(folder / name)
        except OSError:
            return False
        if follow and not (folder / name).resolve().is_relative_to(folder.resolve()):
            return False
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return False
    return True


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
    """Re-hash the file (or every file of a folder) against its manifest (the "Repair" button)."""
    try:
        if model.is_folder:
            return folder_digest({name: sha256_of_file(model.path / name) for name in model.files}) == model.sha256
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
        if model.is_folder:  # only the files we put there; a folder with anything else in it stays
            for name in model.files:
                if os.path.lexists(model.path / name):
                    unlink_inside(models_dir, model.path / name)
            try:
                os.rmdir(model.path)
            except OSError as error:
                _log.warning("left %s in place: %s", model.path, error)
        else:
            unlink_inside(models_dir, model.path)


def _import_name(original: str, suffix: str = ".gguf") -> str:
    """A safe file name for an imported file or folder (the original may be anything the user has)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", original).replace("..", "_")[:150].strip("._-") or f"model{suffix}"
    try:
        return check_file_name(name)
    except UnsafeFileNameError:  # a reserved device name or one of our suffixes: make it plainly a model
        return check_file_name(f"model-{name}{suffix}" if not name.startswith("model-") else f"model{suffix}")


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
        ensure_disk_room(local_dir, size)
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


def folder_files(folder: Path) -> dict[str, int]:
    """The files of a model folder we would copy ({name: size}, allow-listed, regular files whose real
    path is inside the folder); UnsafePathError for an allow-listed name that leads outside it."""
    root = Path(folder).resolve()
    found: dict[str, int] = {}
    for entry in sorted(root.iterdir()):
        if not allowed_folder_file(entry.name):
            continue  # pickles, READMEs, code, images: never copied
        real = entry.resolve()
        if not real.is_relative_to(root) or not real.is_file():
            raise UnsafePathError(entry, "a model file must be a regular file inside the model folder")
        found[entry.name] = real.stat().st_size
        if len(found) > MAX_FOLDER_FILES:
            raise UnsafePathError(root, f"more than {MAX_FOLDER_FILES} model files")
    return found


def folder_size_and_digest(folder: Path, *, cancel: threading.Event | None = None) -> tuple[int, str]:
    """What a folder's manifest would say: total bytes and folder_digest (a duplicate check reads this)."""
    files = folder_files(folder)
    return sum(files.values()), folder_digest(
        {name: sha256_of_file(Path(folder) / name, cancel=cancel) for name in files}
    )


def import_local_folder(
    models_dir: Path,
    source: Path,
    *,
    copy: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    summary: ModelSummary | None = None,
) -> InstalledModel:
    """Add a Hugging Face model folder: check it with the runtime's reader (config, safetensors
    headers, shards inside the folder, pickles refused), then copy its allow-listed files in while
    hashing them (or hash them and reference the folder). A copy is assembled in a hidden
    `.<name>.importing` folder and renamed into place only when complete."""
    source = Path(source).resolve()
    if summary is None:
        summary = check_model_file(source)
    files = folder_files(source)
    if not any(name.endswith(".safetensors") for name in files):
        raise NotAGgufFileError(source, "no .safetensors weights in the folder")
    total = sum(files.values())
    local_dir = safe_folder(Path(models_dir), LOCAL_DIR_NAME, create=True)
    name = _unique_local_name(local_dir, _import_name(source.name, ""))
    hashes: dict[str, str] = {}
    should_stop = cancel.is_set if cancel is not None else None
    if copy:
        ensure_disk_room(local_dir, total)
        temp = local_dir / f".{name}.importing"
        if os.path.lexists(temp):
            raise UnsafePathError(temp, "a leftover of an earlier import is in the way")
        os.mkdir(temp)
        done = 0

        def report(file_done: int, _file_total: int) -> None:
            if progress is not None:
                progress(done + file_done, total)

        try:
            for file, size in files.items():
                with open_regular(temp / file, "xb") as writer:
                    hashes[file] = sha256_file(
                        source / file,
                        progress=report,
                        copy_to=writer,
                        should_stop=should_stop,
                    )
                    writer.flush()
                    os.fsync(writer.fileno())
                done += size
        except BaseException as error:
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(error, HashCancelled):
                raise DownloadCancelledError(error.done, error.total) from None
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise DiskFullError(local_dir) from error
            raise
        fsync_directory(temp)
        os.replace(temp, local_dir / name)
        fsync_directory(local_dir)
        stored, kind = name, "import-copy"
    else:
        try:
            hashes = {file: sha256_file(source / file, should_stop=should_stop) for file in files}
        except HashCancelled as stopped:
            raise DownloadCancelledError(stopped.done, stopped.total) from None
        stored, kind = str(source), "import-reference"
    return write_folder_manifest(
        Path(models_dir),
        local_dir / (name + MANIFEST_SUFFIX),
        stored,
        {file: (files[file], hashes[file]) for file in files},
        source=kind,
    )


def write_folder_manifest(
    models_dir: Path,
    manifest_file: Path,
    stored: str,
    files: dict[str, tuple[int, str]],
    *,
    source: str,
    repo_id: str | None = None,
    commit: str | None = None,
) -> InstalledModel:
    """Write a model folder's manifest ({name: (size, sha256)}) and return the model it now lists."""
    write_manifest(
        manifest_file,
        {
            "file": stored,
            "files": {name: {"size": size, "sha256": sha} for name, (size, sha) in sorted(files.items())},
            "size": sum(size for size, _ in files.values()),
            "sha256": folder_digest({name: sha for name, (_, sha) in files.items()}),
            "source": source,
            "repo_id": repo_id,
            "commit": commit,
            "installed_at": time.time(),
        },
    )
    model = _model_from_manifest(manifest_file, models_dir)
    if model is None:
        raise UnsafePathError(manifest_file, "the folder changed while it was installed")
    return model
