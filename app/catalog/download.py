"""Download a model from the Hugging Face Hub — one GGUF file, or the allow-listed files of a
model folder (safetensors, shards, config, tokenizer) — resumable, cancellable, verified.

Metadata comes from the real `huggingface_hub` client (`get_hf_file_metadata`,
and `HfApi.model_info(files_metadata=True)` when the ETag is not the LFS
sha256), so HF_ENDPOINT, HF_HUB_OFFLINE and tokens behave as users expect;
both env vars are also re-read at call time, because the library reads them
only at import. The body is fetched with the library's own HTTP session and
HTTP Range, into `<models>/.partial/<sha256>.incomplete`: huggingface_hub ≥ 1.18
deletes its partial file on failure and never resumes across runs,
so we keep our own. The file is renamed into place and
its manifest written only after the sha256 matches.

A model folder (download_model_folder) lists the repo's files once (`model_info` with
files metadata, pinned to one commit), keeps only app.catalog.installed.allowed_folder_file
names (never pickles), and fetches each into a hidden `.<folder>.<commit>.incoming` folder
beside its final place, with the same Range resume per file: LFS files are checked against
their sha256, small git files against their git blob sha1. The folder is renamed into place
and its manifest written only when every file is verified; a later call resumes it.

Everything the server says is checked: a 206 must start where we asked (else we
restart from 0), a body must not be longer than the file, an empty file is refused.
Every blocking network call runs on a helper thread, so a cancel is honoured within
_POLL_S even while the server sends nothing; a body that sends nothing for `timeout`
seconds is a stall (resumed, then DownloadStalledError). Every raw client or OS error
becomes one of app.catalog.errors. Paths go through app.catalog.safepath (no link is
followed for writing or deleting, no name from the Hub can escape the models folder),
and app.catalog.filelock keeps two app windows from writing one file. Must not import
PySide6 or tmac_core.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from app.catalog.errors import (
    ChecksumMismatchError,
    DiskFullError,
    DownloadCancelledError,
    DownloadError,
    DownloadInProgressError,
    DownloadInterruptedError,
    DownloadStalledError,
    GatedModelError,
    HubOfflineError,
    HubProtocolError,
    ModelFileError,
    ModelNotFoundError,
    UnsafePathError,
)
from app.catalog.filelock import LockBusy, TargetLock, is_locked
from app.catalog.installed import (
    MANIFEST_SUFFIX,
    PARTIAL_DIR_NAME,
    PICKLE_SUFFIXES,
    InstalledModel,
    _model_from_manifest,
    allowed_folder_file,
    ensure_disk_room,
    installed_file_path,
    manifest_path_for,
    repo_folder,
    sha256_of_file,
    write_folder_manifest,
    write_manifest,
)
from app.catalog.safepath import (
    LOCK_SUFFIX,
    check_inside,
    clear_leftover,
    no_raw_os_errors,
    open_regular,
    read_small_file,
    safe_folder,
)
from app.paths import atomic_write_bytes, fsync_directory

try:  # huggingface_hub 2.x uses httpx2, 1.x httpx; both expose the same exception tree
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _http  # type: ignore[no-redef]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_CHUNK = 1024 * 1024
_PROGRESS_EVERY_S = 0.1
_POLL_S = 0.05  # how often a wait checks the cancel flag: a cancel is honoured well within a second
_QUEUED_CHUNKS = 16  # body chunks the reader thread may run ahead of the writer (each as received, ≤ ~64 KiB)
_active_downloads: set[str] = set()
_active_lock = threading.Lock()
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class RemoteFileInfo:
    repo_id: str
    filename: str
    commit: str
    size: int
    sha256: str
    url: str  # where the bytes are (resolve URL pinned to `commit`, or the CDN location)


@dataclass(frozen=True)
class DownloadProgress:
    bytes_done: int
    total: int
    bytes_per_s: float  # over this call's transfer (resumed bytes excluded)
    eta_s: float | None


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL to use, reading HF_ENDPOINT now (huggingface_hub only reads it at import)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _translate(error: BaseException, repo_id: str, filename: str, timeout: float = 0.0) -> ModelFileError:
    """Hub/HTTP/OS exceptions → our typed errors with user-facing text (the raw one is logged)."""
    if isinstance(error, ModelFileError):
        return error
    _log.info("download of %s/%s: %r", repo_id, filename, error)
    if isinstance(error, GatedRepoError):  # before RepositoryNotFoundError: it is a subclass
        return GatedModelError(repo_id)
    if isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)):
        return ModelNotFoundError(repo_id, filename)
    if isinstance(error, OfflineModeIsEnabled):
        return HubOfflineError("HF_HUB_OFFLINE is set")
    if isinstance(error, (_http.ConnectError, _http.ConnectTimeout)):
        return HubOfflineError()
    if isinstance(error, _http.TimeoutException):  # connected, then the server went silent
        return DownloadStalledError(0, 0, timeout)
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return GatedModelError(repo_id, f"HTTP {status}")
        if status == 404:
            return ModelNotFoundError(repo_id, filename, "HTTP 404")
        return DownloadError(f"The Hub answered HTTP {status} for {filename}; try again later.")
    if isinstance(error, (_http.NetworkError, ConnectionError)):
        return HubOfflineError()
    if isinstance(error, (_http.HTTPError, _http.InvalidURL, _http.StreamError, ValueError, KeyError, TypeError)):
        # a malformed answer, a redirect loop or to a non-HTTP URL, an unparsable header or JSON
        return HubProtocolError(f"The Hub's answer about {filename} could not be understood; try again later.")
    if isinstance(error, OSError):
        return DownloadError(f"The download of {filename} failed: {error.strerror or 'input/output error'}.")
    return DownloadError(f"The download of {filename} failed unexpectedly; try again later.")


def _cancellable(call: Callable[[], _T], cancel: threading.Event | None) -> _T:
    """Run a blocking network call on a helper thread so a cancel returns within _POLL_S.

    The helper is left to finish on its own (its own timeout bounds it); its result is dropped."""
    if cancel is None:
        return call()
    outcome: list[tuple[bool, object]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            outcome.append((False, error))
        done.set()

    threading.Thread(target=run, name="hub request", daemon=True).start()
    while not done.wait(_POLL_S):
        if cancel.is_set():
            raise DownloadCancelledError(0, 0)
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]  # what call() returned


def fetch_file_info(
    repo_id: str,
    filename: str,
    *,
    revision: str = "main",
    token: str | bool | None = None,
    endpoint: str | None = None,
    timeout: float = 10.0,
    cancel: threading.Event | None = None,
) -> RemoteFileInfo:
    """Ask the Hub for the file's commit, size and LFS sha256 (no body is downloaded)."""
    if hub_offline():
        raise HubOfflineError("HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint(endpoint)
    try:
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
        meta = _cancellable(lambda: get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint), cancel)
        commit, sha256, size = meta.commit_hash or "", (meta.etag or "").lower(), meta.size
        if not _COMMIT.match(commit):
            raise HubProtocolError(f"The Hub sent an invalid commit id {commit[:50]!r} for {filename}.")
        if not _SHA256.match(sha256) or not size:
            # Not an LFS etag (or no size): the per-file LFS sha256 is in the repo info.
            info = _cancellable(
                lambda: HfApi(endpoint=endpoint, token=token).model_info(
                    repo_id, revision=commit, files_metadata=True, timeout=timeout
                ),
                cancel,
            )
            sibling = next((s for s in info.siblings or [] if s.rfilename == filename), None)
            if sibling is None or sibling.lfs is None or not _SHA256.match(sibling.lfs.sha256 or ""):
                raise HubProtocolError(f"The Hub publishes no sha256 for {filename}; refusing an unverifiable file.")
            sha256, size = sibling.lfs.sha256, sibling.lfs.size
        if type(size) is not int or size <= 0:
            raise HubProtocolError(f"The Hub lists {filename} as an empty file; that is not a model.")
        location = meta.location
        if urlsplit(location).scheme not in ("http", "https"):
            raise HubProtocolError(f"The Hub sent an unusable address for {filename}.")
        same_origin = urlsplit(location)[:2] == urlsplit(endpoint)[:2]
        # Pin the body to the commit we just resolved, so a push during the download can't mix versions.
        if same_origin:
            location = hf_hub_url(repo_id, filename, revision=commit, endpoint=endpoint)
    except Exception as error:  # noqa: BLE001 - every failure is translated into a typed error
        raise _translate(error, repo_id, filename, timeout) from error
    return RemoteFileInfo(repo_id, filename, commit, size, sha256, location)


MAX_SMALL_FILE_BYTES = 64 << 20  # a non-LFS (git) file of a model folder: config, tokenizer, index


@dataclass(frozen=True)
class RemoteFolderFile:
    name: str
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # small files kept in git: their blob id


def list_folder_files(
    repo_id: str,
    *,
    revision: str = "main",
    token: str | bool | None = None,
    endpoint: str | None = None,
    timeout: float = 10.0,
    cancel: threading.Event | None = None,
) -> tuple[str, list[RemoteFolderFile]]:
    """The commit and the allow-listed files of a model repo (sharded or not).

    HubProtocolError when the repo has no safetensors weights (pickles only: refused, not
    fetched), a file has no size or checksum, or a small file is implausibly large."""
    if hub_offline():
        raise HubOfflineError("HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint(endpoint)
    try:
        info = _cancellable(
            lambda: HfApi(endpoint=endpoint, token=token).model_info(
                repo_id, revision=revision, files_metadata=True, timeout=timeout
            ),
            cancel,
        )
        commit = info.sha or ""
        if not _COMMIT.match(commit):
            raise HubProtocolError(f"The Hub sent an invalid commit id {commit[:50]!r} for {repo_id}.")
        files: list[RemoteFolderFile] = []
        pickles: list[str] = []
        for sibling in info.siblings or []:
            name = sibling.rfilename
            if name.lower().endswith(PICKLE_SUFFIXES):
                pickles.append(name)
            if not allowed_folder_file(name):  # also refuses names with folders in them
                continue
            lfs = sibling.lfs
            if lfs is not None:
                if not _SHA256.match(lfs.sha256 or "") or type(lfs.size) is not int or lfs.size <= 0:
                    raise HubProtocolError(f"The Hub publishes no sha256 or size for {name}; refusing it.")
                files.append(RemoteFolderFile(name, lfs.size, lfs.sha256, None))
            else:
                size, blob = sibling.size, sibling.blob_id or ""
                if (
                    type(size) is not int
                    or not 0 < size <= MAX_SMALL_FILE_BYTES
                    or not re.match(r"^[0-9a-f]{40}$", blob)
                ):
                    raise HubProtocolError(f"The Hub lists {name} without a usable size or git id; refusing it.")
                files.append(RemoteFolderFile(name, size, None, blob))
    except Exception as error:  # noqa: BLE001 - every failure is translated into a typed error
        raise _translate(error, repo_id, "the file list", timeout) from error
    if not any(f.name.endswith(".safetensors") for f in files):
        what = (
            f"only pickle weights ({', '.join(pickles[:3])}), which are never downloaded" if pickles else "no weights"
        )
        raise HubProtocolError(f"{repo_id} has {what}: no .safetensors files.")
    if not any(f.name == "config.json" for f in files):
        raise HubProtocolError(f"{repo_id} has no config.json: not a model folder.")
    return commit, sorted(files, key=lambda f: f.name)


def _git_blob_sha1(path: Path) -> str:
    with open_regular(path, "rb") as handle:
        data = handle.read(MAX_SMALL_FILE_BYTES + 1)
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def download_model_folder(
    repo_id: str,
    folder_name: str,
    models_dir: Path,
    *,
    revision: str = "main",
    token: str | bool | None = None,
    endpoint: str | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    cancel: threading.Event | None = None,
    retries: int = 3,
    timeout: float = 10.0,
) -> InstalledModel:
    """Download, verify and install a model folder as `<models>/<owner>--<name>/<folder_name>/`.

    The errors are download_model_file's. Progress counts bytes over all files."""
    models_dir = Path(models_dir)
    final_path = installed_file_path(models_dir, repo_id, folder_name)
    commit, files = list_folder_files(
        repo_id, revision=revision, token=token, endpoint=endpoint, timeout=timeout, cancel=cancel
    )
    total = sum(f.size for f in files)
    with no_raw_os_errors(models_dir):
        safe_folder(models_dir, final_path.parent.name)
        manifest = manifest_path_for(final_path)
        if os.path.lexists(manifest):
            model = _model_from_manifest(manifest, models_dir)
            if model is not None and model.commit == commit:
                return model
        staging_name = f".{folder_name}.{commit[:12]}.incoming"
        # One key per repo and commit: it names the folder's locks and its note in .partial, which
        # list_partial_downloads reads so the card can show and resume (or discard) the folder.
        key = hashlib.sha256(f"{repo_id}@{commit}".encode()).hexdigest()
        part_key = partial_path(models_dir, key)
        safe_folder(models_dir, PARTIAL_DIR_NAME, create=True)
        with _download_locks(models_dir, final_path, part_key, folder_name):
            staging = safe_folder(models_dir, final_path.parent.name, staging_name, create=True)
            note = {"repo_id": repo_id, "filename": folder_name, "commit": commit, "size": total, "sha256": key}
            sidecar = _write_partial_note(part_key, {**note, "folder": staging_name})
            ensure_disk_room(models_dir, total - sum(_present_size(staging, f) for f in files))
            hashes: dict[str, str] = {}
            done_before = 0
            for file in files:
                try:
                    hashes[file.name] = _fetch_folder_file(
                        staging,
                        repo_id,
                        commit,
                        file,
                        token,
                        endpoint,
                        progress,
                        cancel,
                        retries,
                        timeout,
                        done_before,
                        total,
                    )
                except DownloadCancelledError as stopped:  # counted over the whole folder
                    raise DownloadCancelledError(done_before + stopped.bytes_done, total) from None
                done_before += file.size
            check_inside(models_dir, final_path)
            if os.path.lexists(final_path):
                raise UnsafePathError(final_path, "something else is where the model folder belongs")
            fsync_directory(staging)
            os.replace(staging, final_path)
            fsync_directory(final_path.parent)
            sidecar.unlink(missing_ok=True)
            return write_folder_manifest(
                models_dir,
                manifest,
                final_path.name,
                {f.name: (f.size, hashes[f.name]) for f in files},
                source="hub",
                repo_id=repo_id,
                commit=commit,
            )


def _write_partial_note(part: Path, note: dict[str, object]) -> Path:
    """Write what `part` is a partial download of (its note in .partial, which list_partial_downloads
    reads so the card can show, resume or discard it); returns the note's path."""
    sidecar = _sidecar_path(part)
    clear_leftover(sidecar)
    atomic_write_bytes(sidecar, json.dumps(note).encode())
    return sidecar


def _check_digest(part: Path, name: str, expected: str, actual: str, also_remove: Path | None = None) -> None:
    """ChecksumMismatchError, the downloaded `part` (and `also_remove`, its note) deleted, unless the digests match."""
    if actual == expected:
        return
    part.unlink(missing_ok=True)
    if also_remove is not None:
        also_remove.unlink(missing_ok=True)
    raise ChecksumMismatchError(name, expected, actual)


def _present_size(staging: Path, file: RemoteFolderFile) -> int:
    for path in (staging / file.name, staging / (file.name + ".incomplete")):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            return min(info.st_size, file.size)
    return 0


def _fetch_folder_file(
    staging: Path,
    repo_id: str,
    commit: str,
    file: RemoteFolderFile,
    token: str | bool | None,
    endpoint: str | None,
    progress: Callable[[DownloadProgress], None] | None,
    cancel: threading.Event | None,
    retries: int,
    timeout: float,
    done_before: int,
    total: int,
) -> str:
    """One file of a folder download, into `staging`: kept if already there and verified, else
    resumed from its `.incomplete` part. Returns its sha256 (for the manifest)."""
    target, part = staging / file.name, staging / (file.name + ".incomplete")
    clear_leftover(target)
    clear_leftover(part)
    if os.path.lexists(target):
        if os.lstat(target).st_size == file.size and _verified(target, file):
            return file.sha256 or sha256_of_file(target, cancel=cancel)
        target.unlink()
    url = hf_hub_url(repo_id, file.name, revision=commit, endpoint=hub_endpoint(endpoint))
    info = RemoteFileInfo(repo_id, file.name, commit, file.size, file.sha256 or "", url)

    def report(update: DownloadProgress) -> None:
        if progress is not None:
            left = total - done_before - update.bytes_done
            eta = left / update.bytes_per_s if update.bytes_per_s > 0 else None
            progress(DownloadProgress(done_before + update.bytes_done, total, update.bytes_per_s, eta))

    digest = _fetch_into(part, info, token, hub_endpoint(endpoint), report, cancel, retries, timeout)
    if file.sha256 is not None:
        _check_digest(part, file.name, file.sha256, digest)
    if file.git_sha1 is not None:
        _check_digest(part, file.name, file.git_sha1, _git_blob_sha1(part))
    os.replace(part, target)
    return digest


def _verified(path: Path, file: RemoteFolderFile) -> bool:
    if file.sha256 is not None:
        return sha256_of_file(path) == file.sha256
    return _git_blob_sha1(path) == file.git_sha1


def partial_path(models_dir: Path, sha256: str) -> Path:
    return Path(models_dir) / PARTIAL_DIR_NAME / f"{sha256}.incomplete"


def _sidecar_path(part: Path) -> Path:
    return part.with_suffix(".json")


def _partial_lock_path(part: Path) -> Path:
    return part.with_suffix(LOCK_SUFFIX)


def _target_lock_path(models_dir: Path, final_path: Path) -> Path:
    key = final_path.relative_to(models_dir).as_posix().encode()
    return Path(models_dir) / PARTIAL_DIR_NAME / f"target-{hashlib.sha256(key).hexdigest()[:32]}{LOCK_SUFFIX}"


@dataclass(frozen=True)
class PartialDownload:
    """A download that stopped before the end (cancel, lost connection, app closed): it can be resumed."""

    repo_id: str
    filename: str
    commit: str
    sha256: str
    size: int
    bytes_done: int
    path: Path  # the .incomplete file (may not exist yet if it stopped before the first byte)


def list_partial_downloads(models_dir: Path) -> list[PartialDownload]:
    """Every resumable download under `models_dir`, read from the sidecars download_model_file writes.

    A sidecar that is unreadable, not a regular file or names an unsafe file is skipped (never
    trusted as a path); a partial file that is a link, folder or FIFO counts as 0 bytes.
    """
    folder = Path(models_dir) / PARTIAL_DIR_NAME
    found: list[PartialDownload] = []
    try:
        safe_folder(Path(models_dir), PARTIAL_DIR_NAME)
        sidecars = sorted(folder.glob("*.json")) if folder.is_dir() else []
    except (OSError, UnsafePathError) as error:
        _log.warning("cannot list partial downloads: %s", error)
        return found
    for sidecar in sidecars:
        try:
            data = json.loads(read_small_file(sidecar).decode("utf-8"))
            repo_id, filename, sha256 = str(data["repo_id"]), str(data["filename"]), str(data["sha256"])
            size, commit = int(data["size"]), str(data.get("commit", ""))
            installed_file_path(models_dir, repo_id, filename)  # raises ValueError for unsafe names
        except (OSError, ValueError, KeyError, TypeError, UnsafePathError) as error:
            _log.warning("ignoring partial-download note %s: %s", sidecar, error)
            continue
        if not _SHA256.match(sha256) or sidecar.stem != sha256 or size <= 0:
            continue
        staging = _staging_folder(models_dir, repo_id, data.get("folder"))
        if staging is not None:  # a model folder: the files fetched so far
            found.append(
                PartialDownload(repo_id, filename, commit, sha256, size, min(_bytes_in(staging), size), staging)
            )
            continue
        part = partial_path(models_dir, sha256)
        try:
            info = os.lstat(part)
            done = info.st_size if stat.S_ISREG(info.st_mode) else 0
        except OSError:
            done = 0
        found.append(PartialDownload(repo_id, filename, commit, sha256, size, min(done, size), part))
    return found


def _staging_folder(models_dir: Path, repo_id: str, name: object) -> Path | None:
    """The staging folder a folder download's note names, or None (no folder, or not one of ours)."""
    if not isinstance(name, str) or not name.startswith(".") or not name.endswith(".incoming"):
        return None
    if "/" in name or "\\" in name or ".." in name[1:]:
        return None
    return repo_folder(models_dir, repo_id) / name


def _bytes_in(staging: Path) -> int:
    """Bytes of the regular files in a staging folder (not a link: then 0)."""
    try:
        if not stat.S_ISDIR(os.lstat(staging).st_mode):
            return 0
        return sum(
            e.stat(follow_symlinks=False).st_size for e in os.scandir(staging) if e.is_file(follow_symlinks=False)
        )
    except OSError:
        return 0


def _busy_here(*keys: Path) -> bool:
    with _active_lock:
        return any(str(key) in _active_downloads for key in keys)


def discard_partial_download(models_dir: Path, sha256: str) -> None:
    """Delete a partial download and its sidecar (the user chose to start over or not to resume).

    DownloadInProgressError while this or another app window is downloading it; UnsafePathError
    when `.partial` is a link or a folder with content sits where the file belongs."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    part = partial_path(models_dir, sha256)
    if _busy_here(part):
        raise DownloadInProgressError(sha256[:12])
    check_inside(models_dir, part)
    if part.parent.is_dir() and is_locked(_partial_lock_path(part)):
        raise DownloadInProgressError(sha256[:12], other_process=True)
    staging = next((p.path for p in list_partial_downloads(models_dir) if p.sha256 == sha256 and p.path != part), None)
    with no_raw_os_errors(models_dir):
        if staging is not None:  # a model folder's files so far: only inside the models folder, never through a link
            check_inside(models_dir, staging)
            if os.path.isdir(staging) and not os.path.islink(staging):
                shutil.rmtree(staging)
        clear_leftover(part)
        part.unlink(missing_ok=True)
        clear_leftover(_sidecar_path(part))
        _sidecar_path(part).unlink(missing_ok=True)


def remove_stale_partials(models_dir: Path, *, older_than_s: float = 14 * 86400) -> list[Path]:
    """Start-up sweep: delete partial downloads nobody resumed for `older_than_s`. Returns what went.

    Never raises: this runs unattended. Locks held by a running download and everything that is
    not a file (a folder, a link's target) are left alone; a link or FIFO itself is removed."""
    folder = Path(models_dir) / PARTIAL_DIR_NAME
    removed: list[Path] = []
    try:
        safe_folder(Path(models_dir), PARTIAL_DIR_NAME)
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except (OSError, UnsafePathError) as error:
        _log.warning("not sweeping partial downloads: %s", error)
        return removed
    cutoff = time.time() - older_than_s
    for path in entries:
        try:
            info = os.lstat(path)
            if _busy_here(path, path.with_suffix(".incomplete")) or stat.S_ISDIR(info.st_mode):
                continue
            if info.st_mtime >= cutoff:
                continue
            if path.suffix == LOCK_SUFFIX:
                if is_locked(path):
                    continue
            elif is_locked(path.with_suffix(LOCK_SUFFIX)):
                continue
            path.unlink(missing_ok=True)  # never follows: removes a link itself, not its target
            removed.append(path)
        except (OSError, UnsafePathError) as error:
            _log.warning("could not sweep %s: %s", path, error)
    return removed


@contextmanager
def _download_locks(models_dir: Path, final_path: Path, part: Path, filename: str) -> Iterator[None]:
    """Hold the target's and the partial file's locks, in this process and across processes."""
    keys = [str(final_path), str(part)]
    with _active_lock:
        if any(key in _active_downloads for key in keys):
            raise DownloadInProgressError(filename)
        _active_downloads.update(keys)
    locks = [TargetLock(_target_lock_path(models_dir, final_path)), TargetLock(_partial_lock_path(part))]
    held: list[TargetLock] = []
    try:
        for lock in locks:
            try:
                lock.acquire()
            except LockBusy:
                raise DownloadInProgressError(filename, other_process=True) from None
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
        with _active_lock:
            _active_downloads.difference_update(keys)


def download_model_file(
    repo_id: str,
    filename: str,
    models_dir: Path,
    *,
    revision: str = "main",
    token: str | bool | None = None,
    endpoint: str | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    cancel: threading.Event | None = None,
    retries: int = 3,
    timeout: float = 10.0,
) -> InstalledModel:
    """Download, verify and install one GGUF; resumes any earlier partial download of the same file.

    Raises UnsafeFileNameError (before any request), ModelNotFoundError, GatedModelError,
    HubOfflineError, DiskFullError, ChecksumMismatchError, DownloadCancelledError,
    DownloadInterruptedError / DownloadStalledError (after `retries` in-call resumes),
    DownloadInProgressError (this or another app window is downloading it), HubProtocolError,
    UnsafePathError (a link or special file in the way) or StorageError. Nothing else.
    `timeout` bounds every connect and every silence of the server, in seconds.
    """
    models_dir = Path(models_dir)
    final_path = installed_file_path(models_dir, repo_id, filename)
    info = fetch_file_info(
        repo_id, filename, revision=revision, token=token, endpoint=endpoint, timeout=timeout, cancel=cancel
    )
    with no_raw_os_errors(models_dir):
        safe_folder(models_dir, final_path.parent.name)  # a link there: refused before anything is read
        already = _already_installed(models_dir, final_path, info)
        if already is not None:
            return already
        safe_folder(models_dir, PARTIAL_DIR_NAME, create=True)
        part = partial_path(models_dir, info.sha256)
        with _download_locks(models_dir, final_path, part, filename):
            return _download_locked(
                models_dir, final_path, part, info, token, endpoint, progress, cancel, retries, timeout
            )


def _download_locked(
    models_dir: Path,
    final_path: Path,
    part: Path,
    info: RemoteFileInfo,
    token: str | bool | None,
    endpoint: str | None,
    progress: Callable[[DownloadProgress], None] | None,
    cancel: threading.Event | None,
    retries: int,
    timeout: float,
) -> InstalledModel:
    already = _already_installed(models_dir, final_path, info)  # another window may have just finished it
    if already is not None:
        return already
    clear_leftover(part)  # a link, FIFO or empty folder left at our path: removed, never opened
    note = {"repo_id": info.repo_id, "filename": info.filename, "commit": info.commit, "size": info.size}
    sidecar = _write_partial_note(part, {**note, "sha256": info.sha256})
    offset = os.lstat(part).st_size if os.path.lexists(part) else 0
    ensure_disk_room(models_dir, info.size - min(offset, info.size))
    digest = _fetch_into(part, info, token, hub_endpoint(endpoint), progress, cancel, retries, timeout)
    _check_digest(part, info.filename, info.sha256, digest, also_remove=sidecar)
    safe_folder(models_dir, final_path.parent.name, create=True)
    check_inside(models_dir, final_path)
    if os.path.isdir(final_path) and not os.path.islink(final_path):
        raise UnsafePathError(final_path, "a folder is where the model file belongs")
    os.replace(part, final_path)  # replaces a link at final_path itself, never writes through it
    fsync_directory(final_path.parent)
    sidecar.unlink(missing_ok=True)
    return _write_hub_manifest(models_dir, final_path, info)


def _already_installed(models_dir: Path, final_path: Path, info: RemoteFileInfo) -> InstalledModel | None:
    manifest = manifest_path_for(final_path)
    if os.path.lexists(manifest):
        model = _model_from_manifest(manifest, models_dir)
        if model is not None and model.sha256 == info.sha256:
            return model
        return None
    try:
        present = os.lstat(final_path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(present.st_mode) and present.st_size == info.size:
        # File present but manifest lost (crash between rename and manifest): hash instead of re-downloading.
        if sha256_of_file(final_path) == info.sha256:
            return _write_hub_manifest(models_dir, final_path, info)
    return None


def _write_hub_manifest(models_dir: Path, final_path: Path, info: RemoteFileInfo) -> InstalledModel:
    manifest = final_path.with_name(final_path.name + MANIFEST_SUFFIX)
    write_manifest(
        manifest,
        {
            "file": final_path.name,
            "size": info.size,
            "sha256": info.sha256,
            "source": "hub",
            "repo_id": info.repo_id,
            "commit": info.commit,
            "installed_at": time.time(),
        },
    )
    model = _model_from_manifest(manifest, models_dir)
    if model is None:  # replaced under us between the write and the read
        raise UnsafePathError(manifest, "the file or its manifest changed while it was installed")
    return model


def _write_chunk(handle: BinaryIO, chunk: bytes) -> None:
    handle.write(chunk)  # a separate function so tests can simulate ENOSPC mid-write


class _Restart(Exception):
    """The server's answer does not continue our partial file: start again from byte 0."""


class _Overflow(_Restart):
    """The body goes past the file's size: what was written from this answer is suspect too."""


class _Stalled(Exception):
    """Nothing arrived for the stall time."""


class _BodyReader(threading.Thread):
    """One GET on its own thread, handing ("head", response) / ("data", bytes) / ("end", None) /
    ("error", exception) to the writer through a small queue, so the writer can check cancel
    and stalls while the socket read blocks. Told to stop, it drops the connection at its next
    chunk or when its read timeout ends a silent wait."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        super().__init__(name="download body", daemon=True)
        self.url, self.headers, self.timeout = url, headers, timeout
        self.items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with get_session().stream(
                "GET", self.url, headers=self.headers, follow_redirects=True, timeout=_http.Timeout(self.timeout)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                self._put("head", response)
                for chunk in response.iter_bytes():  # as received: a 1 MiB buffer would lose its bytes on a drop
                    if self.stop.is_set():
                        return
                    self._put("data", chunk)
            self._put("end", None)
        except BaseException as error:  # noqa: BLE001 - handed to the writer, which translates it
            self._put("error", error)

    def _put(self, kind: str, payload: object) -> None:
        while not self.stop.is_set():
            try:
                self.items.put((kind, payload), timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def next(self, cancel: threading.Event | None, stall_s: float) -> tuple[str, object]:
        """The next item, ("cancel", None) within _POLL_S of a cancel, or _Stalled after
        `stall_s` seconds without any item."""
        deadline = time.monotonic() + stall_s
        while True:
            if cancel is not None and cancel.is_set():
                return "cancel", None
            try:
                return self.items.get(timeout=_POLL_S)
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise _Stalled from None


def _range_start(response: _http.Response, offset: int, size: int) -> int:
    """Where the body of `response` starts in the file: 0 for a 200, the checked Content-Range
    start for a 206. _Restart when a 206 does not start at `offset` or names another size."""
    if response.status_code != 206:
        return 0  # a 200 answering a Range request sends the whole file
    match = _CONTENT_RANGE.match((response.headers.get("Content-Range") or "").strip())
    if match is None or match.group(3) not in (str(size), "*"):
        raise _Restart
    start, end = int(match.group(1)), int(match.group(2))
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) != end - start + 1:
        raise _Restart  # the label and the body disagree: neither can be trusted
    if start not in (0, offset):
        raise _Restart
    return start


def _fetch_into(
    part: Path,
    info: RemoteFileInfo,
    token: str | bool | None,
    endpoint: str,
    progress: Callable[[DownloadProgress], None] | None,
    cancel: threading.Event | None,
    retries: int,
    timeout: float,
) -> str:
    """Fill `part` up to info.size with HTTP Range requests; return the sha256 of the whole file."""
    digest = hashlib.sha256()
    offset = 0
    if os.path.lexists(part):  # hash what an earlier run left, so the final check covers every byte
        with open_regular(part, "rb") as existing:
            while block := existing.read(_CHUNK * 4):
                digest.update(block)
                offset += len(block)
        if offset > info.size:
            part.unlink()
            digest, offset = hashlib.sha256(), 0
    headers = build_hf_headers(token=token)
    if urlsplit(info.url)[:2] != urlsplit(endpoint)[:2]:
        headers.pop("authorization", None)  # never send the token to a CDN host
    headers["Accept-Encoding"] = "identity"
    started, fetched, last_report = time.monotonic(), 0, 0.0
    attempt = 0
    last_problem = "response ended early"
    while offset < info.size:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelledError(offset, info.size)
        request_headers = dict(headers)
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        reader = _BodyReader(info.url, request_headers, timeout)
        reader.start()
        try:
            handle: BinaryIO | None = None
            try:
                while True:
                    kind, payload = reader.next(cancel, timeout)
                    if kind == "cancel":
                        raise DownloadCancelledError(offset, info.size)
                    if kind == "error":
                        assert isinstance(payload, BaseException)
                        raise payload
                    if kind == "end":
                        break
                    if kind == "head":
                        assert isinstance(payload, _http.Response)
                        if _range_start(payload, offset, info.size) == 0 and offset:
                            digest, offset = hashlib.sha256(), 0  # the server sends the whole file: start over
                        handle = open_regular(part, "ab" if offset else "wb")
                        continue
                    assert isinstance(payload, bytes) and handle is not None
                    if offset + len(payload) > info.size:
                        raise _Overflow
                    _write_chunk(handle, payload)
                    digest.update(payload)
                    offset += len(payload)
                    fetched += len(payload)
                    now = time.monotonic()
                    if progress and (now - last_report >= _PROGRESS_EVERY_S or offset == info.size):
                        last_report = now
                        speed = fetched / max(now - started, 1e-6)
                        eta = (info.size - offset) / speed if speed > 0 else None
                        progress(DownloadProgress(offset, info.size, speed, eta))
            finally:
                reader.stop.set()
                if handle is not None:
                    handle.flush()
                    os.fsync(handle.fileno())  # what we report as resumable must be on disk
                    handle.close()
        except _Restart:
            # Ours may be intact, but after a wrong answer starting from 0 is the only safe one.
            part.unlink(missing_ok=True)
            digest, offset = hashlib.sha256(), 0
            attempt += 1
            if attempt > retries:
                raise HubProtocolError(
                    f"The server keeps sending the wrong part of {info.filename}; try again later."
                ) from None
            continue
        except (_Stalled, _http.TimeoutException) as error:
            if isinstance(error, (_http.ConnectTimeout, _http.PoolTimeout)) and fetched == 0 and attempt >= retries:
                raise HubOfflineError() from error
            attempt += 1
            if attempt > retries:
                raise DownloadStalledError(offset, info.size, timeout) from None
            continue
        except OSError as error:
            if isinstance(error, HfHubHTTPError):
                if error.response is not None and error.response.status_code == 416 and offset:
                    part.unlink(missing_ok=True)  # our partial no longer matches the server's file
                    digest, offset = hashlib.sha256(), 0
                    attempt += 1
                    if attempt <= retries:
                        continue
                raise _translate(error, info.repo_id, info.filename, timeout) from error
            if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                part.unlink(missing_ok=True)  # free the space; a disk-full partial helps nobody
                raise DiskFullError(part.parent.parent) from error
            if isinstance(error, ConnectionError):  # e.g. offline mode switched on
                raise _translate(error, info.repo_id, info.filename, timeout) from error
            raise  # a filesystem error: download_model_file makes it a StorageError
        except _http.TransportError as error:
            attempt += 1
            last_problem = "the connection broke"
            if attempt > retries:
                if isinstance(error, _http.ConnectError) and fetched == 0 and offset == 0:
                    raise HubOfflineError() from error
                raise DownloadInterruptedError(offset, info.size, last_problem) from error
            if cancel is not None and cancel.wait(min(0.2 * attempt, 2.0)):
                raise DownloadCancelledError(offset, info.size) from None
            if cancel is None:
                time.sleep(min(0.2 * attempt, 2.0))
            continue
        except ModelFileError:
            raise
        except Exception as error:  # noqa: BLE001 - anything else the client raised: typed, logged
            raise _translate(error, info.repo_id, info.filename, timeout) from error
        if offset < info.size:  # the body ended early without a transport error
            attempt += 1
            if attempt > retries:
                raise DownloadInterruptedError(offset, info.size, last_problem)
    return digest.hexdigest()
