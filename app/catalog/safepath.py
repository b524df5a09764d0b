"""Path safety for everything the catalog writes, renames or deletes under the models folder.

Names come from the Hub and from manifests on disk, so both are untrusted: a name is
one plain file name (no separators, no "..", no NUL, no reserved Windows device name)
that cannot be mistaken for our own bookkeeping files. Every folder below the models
folder is checked with lstat, so a symbolic link planted inside the models folder is
never followed for writing or deleting (the models folder itself may be a link: the
user chose it). Files are created with O_NOFOLLOW and opened with O_NONBLOCK, so a
link or a FIFO at a path we own is refused instead of followed or blocked on. Pure
Python: must not import PySide6, huggingface_hub or tmac_core.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from app.catalog.errors import UnsafeFileNameError, UnsafePathError

MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_DIR_NAME = ".partial"
LOCK_SUFFIX = ".lock"
# Suffixes of files this app keeps next to models: a model file must never look like one.
BOOKKEEPING_SUFFIXES = (MANIFEST_SUFFIX, PARTIAL_DIR_NAME, ".incomplete", LOCK_SUFFIX, ".importing", ".tmp")
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in "123456789"
}
_MAX_NAME_BYTES = 200  # below every filesystem's 255, leaving room for our suffixes
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows: the lstat check before open stands in
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


def check_file_name(name: object) -> str:
    """Return `name` if it is one plain file name we may create; UnsafeFileNameError otherwise."""
    if not isinstance(name, str) or not name:
        raise UnsafeFileNameError(name, "not a file name")
    if "\0" in name or any(ord(c) < 32 for c in name):
        raise UnsafeFileNameError(name, "it contains control characters")
    if "/" in name or "\\" in name or os.path.isabs(name):
        raise UnsafeFileNameError(name, "it names a folder path, not one file")
    if ".." in name:
        raise UnsafeFileNameError(name, 'it contains ".."')
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise UnsafeFileNameError(name, "it is too long")
    if not _PLAIN.match(name):
        raise UnsafeFileNameError(name, "only letters, digits, '.', '_' and '-' are allowed, not first a dot")
    if name.split(".")[0].upper() in _WINDOWS_DEVICES:
        raise UnsafeFileNameError(name, "it is a reserved device name on Windows")
    if name.endswith((".", " ")):
        raise UnsafeFileNameError(name, "it ends with a dot")
    lowered = name.lower()  # case-insensitive filesystems: "X.MANIFEST.JSON" is a manifest there
    if lowered.endswith(BOOKKEEPING_SUFFIXES):
        raise UnsafeFileNameError(name, "it would look like one of this app's own bookkeeping files")
    return name


def check_repo_id(repo_id: object) -> tuple[str, str]:
    """(owner, name) of a Hub repository id "owner/name", each part checked like a file name."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise UnsafeFileNameError(repo_id, "not a repository id of the form owner/name")
    owner, name = repo_id.split("/")
    return check_file_name(owner), check_file_name(name)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def safe_folder(models_dir: Path, *parts: str, create: bool = False) -> Path:
    """`models_dir/part/...`, every part a real folder (not a link), created if `create`.

    UnsafePathError when a part is a symbolic link, a file, or not a plain name."""
    folder = Path(models_dir)
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise UnsafePathError(folder / part, "not a folder name inside the models folder")
        folder = folder / part
        info = _lstat(folder)
        if info is None and create:
            with contextlib.suppress(FileExistsError):  # another window made it meanwhile
                folder.mkdir(parents=True)
            info = _lstat(folder)
        if info is None:
            continue  # does not exist (and not asked to create): nothing to follow
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePathError(folder, "it is a symbolic link inside the models folder")
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePathError(folder, "a folder was expected here")
    return folder


def check_inside(models_dir: Path, path: Path) -> Path:
    """Prove that `path` lies in `models_dir` through real folders only; return it unchanged.

    The last component may be anything (unlink and rename never follow it)."""
    root, path = Path(models_dir), Path(path)
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise UnsafePathError(path, "it is outside the models folder") from None
    if not relative.parts or any(p in ("", ".", "..") for p in relative.parts):
        raise UnsafePathError(path, "it is not a file inside the models folder")
    safe_folder(root, *relative.parts[:-1])
    return path


def open_regular(path: Path, mode: str) -> BinaryIO:
    """Open a regular file without following a final symbolic link and without blocking on a FIFO.

    mode: "rb", "ab" (create or append), "wb" (create or truncate), "xb" (create, must not exist).
    UnsafePathError when the path is a link, folder, FIFO, device or socket."""
    flags = {
        "rb": os.O_RDONLY,
        "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "wb": os.O_WRONLY | os.O_CREAT,  # truncated below, once we know it is a regular file
        "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    }[mode]
    path = Path(path)
    info = _lstat(path)
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(path, _what(info) + " is where a file belongs")
    try:
        fd = os.open(path, flags | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY, 0o644)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, getattr(errno, "EMLINK", errno.ELOOP)):
            raise UnsafePathError(path, "a link, folder or special file is where a file belongs") from error
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped in between the lstat and the open
            raise UnsafePathError(path, "a special file is where a file belongs")
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
        if mode == "wb":
            os.ftruncate(fd, 0)
        return cast(BinaryIO, os.fdopen(fd, "wb" if mode == "xb" else mode))
    except BaseException:
        os.close(fd)
        raise


def _what(info: os.stat_result) -> str:
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return "a folder"
    if stat.S_ISFIFO(info.st_mode):
        return "a named pipe (FIFO)"
    return "a special file"


def read_small_file(path: Path, limit: int = 1 << 20) -> bytes:
    """The bytes of a small regular file (a manifest, a sidecar); UnsafePathError for anything else."""
    with open_regular(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafePathError(Path(path), f"it is larger than {limit} bytes")
    return data


def clear_leftover(path: Path) -> None:
    """Make `path` either absent or a regular file: remove a link, FIFO, socket, device or empty
    folder left there (by a crash or by someone else); UnsafePathError for a non-empty folder."""
    info = _lstat(Path(path))
    if info is None or stat.S_ISREG(info.st_mode):
        return
    if stat.S_ISDIR(info.st_mode):
        try:
            os.rmdir(path)
        except OSError as error:
            raise UnsafePathError(Path(path), "a folder with content is where a file belongs") from error
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # unlink removes the link or the FIFO itself, never what a link points to


def unlink_inside(models_dir: Path, path: Path) -> None:
    """Delete one file in the models folder; never through a linked folder, never a folder."""
    check_inside(models_dir, path)
    info = _lstat(path)
    if info is None:
        return
    if stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(Path(path), "it is a folder, not a model file")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def no_raw_os_errors(folder: Path) -> Iterator[None]:
    """Turn a raw OSError from the filesystem into StorageError (the typed one the UI shows)."""
    from app.catalog.errors import DiskFullError, StorageError

    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise DiskFullError(Path(folder)) from error
        raise StorageError(Path(folder), error) from error
