"""Download one model file from the Hugging Face Hub: resumable, cancellable, sha256-verified.

Metadata comes from the real `huggingface_hub` client (`get_hf_file_metadata`,
and `HfApi.model_info(files_metadata=True)` when the ETag is not the LFS
sha256), so HF_ENDPOINT, HF_HUB_OFFLINE and tokens behave as users expect;
both env vars are also re-read at call time, because the library reads them
only at import. The body is fetched with the library's own HTTP session and
HTTP Range, into `<models>/.partial/<sha256>.incomplete`: huggingface_hub ≥ 1.18
deletes its partial file on failure and never resumes across runs
(reliability.md §3.1), so we keep our own. The file is renamed into place and
its manifest written only after the sha256 matches. Must not import PySide6
or tmac_core.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
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
    GatedModelError,
    HubOfflineError,
    HubProtocolError,
    ModelNotFoundError,
)
from app.catalog.installed import (
    DISK_MARGIN_BYTES,
    MANIFEST_SUFFIX,
    PARTIAL_DIR_NAME,
    InstalledModel,
    _model_from_manifest,
    free_disk_bytes,
    installed_file_path,
    manifest_path_for,
    sha256_of_file,
    write_manifest,
)
from app.paths import fsync_directory

try:  # huggingface_hub 2.x uses httpx2, 1.x httpx; both expose the same exception tree
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as _http  # type: ignore[no-redef]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024
_PROGRESS_EVERY_S = 0.1
_active_downloads: set[str] = set()
_active_lock = threading.Lock()


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


def _translate(error: BaseException, repo_id: str, filename: str) -> DownloadError:
    """Hub/HTTP exceptions → our typed errors with user-facing text."""
    if isinstance(error, DownloadError):
        return error
    if isinstance(error, GatedRepoError):  # before RepositoryNotFoundError: it is a subclass
        return GatedModelError(repo_id)
    if isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)):
        return ModelNotFoundError(repo_id, filename, type(error).__name__)
    if isinstance(error, OfflineModeIsEnabled):
        return HubOfflineError("HF_HUB_OFFLINE is set")
    if isinstance(error, (_http.ConnectError, _http.ConnectTimeout, _http.TimeoutException, _http.NetworkError)):
        return HubOfflineError(type(error).__name__)
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return GatedModelError(repo_id, f"HTTP {status}")
        if status == 404:
            return ModelNotFoundError(repo_id, filename, "HTTP 404")
        return DownloadError(f"The Hub answered HTTP {status} for {filename}; try again later.")
    return DownloadError(f"Download of {filename} failed: {error}")


def fetch_file_info(
    repo_id: str,
    filename: str,
    *,
    revision: str = "main",
    token: str | bool | None = None,
    endpoint: str | None = None,
    timeout: float = 10.0,
) -> RemoteFileInfo:
    """Ask the Hub for the file's commit, size and LFS sha256 (no body is downloaded)."""
    if hub_offline():
        raise HubOfflineError("HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint(endpoint)
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint)
    except Exception as error:  # noqa: BLE001 - every failure is translated into a typed error
        raise _translate(error, repo_id, filename) from error
    commit, sha256, size = meta.commit_hash or "", (meta.etag or "").lower(), meta.size
    if not _COMMIT.match(commit):
        raise HubProtocolError(f"The Hub sent an invalid commit id {commit!r} for {filename}.")
    if not _SHA256.match(sha256) or not size:
        # Not an LFS etag (or no size): the per-file LFS sha256 is in the repo info.
        try:
            info = HfApi(endpoint=endpoint, token=token).model_info(
                repo_id, revision=commit, files_metadata=True, timeout=timeout
            )
        except Exception as error:  # noqa: BLE001
            raise _translate(error, repo_id, filename) from error
        sibling = next((s for s in info.siblings or [] if s.rfilename == filename), None)
        if sibling is None or sibling.lfs is None or not _SHA256.match(sibling.lfs.sha256 or ""):
            raise HubProtocolError(f"The Hub publishes no sha256 for {filename}; refusing an unverifiable file.")
        sha256, size = sibling.lfs.sha256, sibling.lfs.size
    same_origin = urlsplit(meta.location)[:2] == urlsplit(endpoint)[:2]
    # Pin the body to the commit we just resolved, so a push during the download can't mix versions.
    location = hf_hub_url(repo_id, filename, revision=commit, endpoint=endpoint) if same_origin else meta.location
    return RemoteFileInfo(repo_id, filename, commit, int(size), sha256, location)


def partial_path(models_dir: Path, sha256: str) -> Path:
    return Path(models_dir) / PARTIAL_DIR_NAME / f"{sha256}.incomplete"


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

    A sidecar that is unreadable or names an unsafe file is skipped (never trusted as a path).
    """
    folder = Path(models_dir) / PARTIAL_DIR_NAME
    found: list[PartialDownload] = []
    if not folder.is_dir():
        return found
    for sidecar in sorted(folder.glob("*.json")):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            repo_id, filename, sha256 = str(data["repo_id"]), str(data["filename"]), str(data["sha256"])
            size, commit = int(data["size"]), str(data.get("commit", ""))
            installed_file_path(models_dir, repo_id, filename)  # raises ValueError for unsafe names
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _SHA256.match(sha256) or sidecar.stem != sha256:
            continue
        part = partial_path(models_dir, sha256)
        try:
            done = part.stat().st_size
        except OSError:
            done = 0
        found.append(PartialDownload(repo_id, filename, commit, sha256, size, min(done, size), part))
    return found


def discard_partial_download(models_dir: Path, sha256: str) -> None:
    """Delete a partial download and its sidecar (the user chose to start over or not to resume)."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    with _active_lock:
        if str(partial_path(models_dir, sha256)) in _active_downloads:
            raise DownloadInProgressError(sha256[:12])
    part = partial_path(models_dir, sha256)
    part.unlink(missing_ok=True)
    part.with_suffix(".json").unlink(missing_ok=True)


def remove_stale_partials(models_dir: Path, *, older_than_s: float = 14 * 86400) -> list[Path]:
    """Start-up sweep: delete partial downloads nobody resumed for `older_than_s`. Returns what went."""
    folder = Path(models_dir) / PARTIAL_DIR_NAME
    removed = []
    if folder.is_dir():
        cutoff = time.time() - older_than_s
        for path in folder.iterdir():
            with _active_lock:
                busy = str(path.with_suffix(".incomplete")) in _active_downloads
            if not busy and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


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

    Raises ModelNotFoundError, GatedModelError, HubOfflineError, DiskFullError, ChecksumMismatchError,
    DownloadCancelledError, DownloadInterruptedError (after `retries` in-call resumes) or HubProtocolError.
    """
    models_dir = Path(models_dir)
    final_path = installed_file_path(models_dir, repo_id, filename)
    info = fetch_file_info(repo_id, filename, revision=revision, token=token, endpoint=endpoint, timeout=timeout)
    already = _already_installed(models_dir, final_path, info)
    if already is not None:
        return already
    part = partial_path(models_dir, info.sha256)
    part.parent.mkdir(parents=True, exist_ok=True)
    with _active_lock:
        if str(part) in _active_downloads:
            raise DownloadInProgressError(filename)
        _active_downloads.add(str(part))
    try:
        part.with_suffix(".json").write_text(
            json.dumps(
                {
                    "repo_id": repo_id,
                    "filename": filename,
                    "commit": info.commit,
                    "size": info.size,
                    "sha256": info.sha256,
                }
            )
        )
        offset = part.stat().st_size if part.exists() else 0
        needed = info.size - min(offset, info.size) + DISK_MARGIN_BYTES
        free = free_disk_bytes(models_dir)
        if needed > free:
            raise DiskFullError(models_dir, needed, free)
        digest = _fetch_into(part, info, token, hub_endpoint(endpoint), progress, cancel, retries, timeout)
        if digest != info.sha256:
            part.unlink(missing_ok=True)
            part.with_suffix(".json").unlink(missing_ok=True)
            raise ChecksumMismatchError(filename, info.sha256, digest)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final_path)
        fsync_directory(final_path.parent)
        part.with_suffix(".json").unlink(missing_ok=True)
        return _write_hub_manifest(models_dir, final_path, info)
    finally:
        with _active_lock:
            _active_downloads.discard(str(part))


def _already_installed(models_dir: Path, final_path: Path, info: RemoteFileInfo) -> InstalledModel | None:
    manifest = manifest_path_for(final_path)
    if manifest.exists():
        model = _model_from_manifest(manifest, models_dir)
        if model is not None and model.sha256 == info.sha256:
            return model
    elif final_path.is_file() and final_path.stat().st_size == info.size:
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
    assert model is not None
    return model


def _write_chunk(handle: BinaryIO, chunk: bytes) -> None:
    handle.write(chunk)  # a separate function so tests can simulate ENOSPC mid-write


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
    if part.exists():  # hash what an earlier run left, so the final check covers every byte
        with open(part, "rb") as handle:
            while block := handle.read(_CHUNK * 4):
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
    while offset < info.size:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelledError(offset, info.size)
        request_headers = dict(headers)
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            with get_session().stream(
                "GET", info.url, headers=request_headers, follow_redirects=True, timeout=_http.Timeout(timeout)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                if offset and response.status_code == 200:  # server ignored Range: start over
                    digest, offset = hashlib.sha256(), 0
                with open(part, "ab" if offset else "wb") as handle:
                    try:
                        # as received: a 1 MiB buffer would lose its bytes on a drop
                        for chunk in response.iter_bytes():
                            if cancel is not None and cancel.is_set():
                                raise DownloadCancelledError(offset, info.size)
                            if offset + len(chunk) > info.size:
                                raise HubProtocolError(f"The server sent more than {info.size} bytes.")
                            _write_chunk(handle, chunk)
                            digest.update(chunk)
                            offset += len(chunk)
                            fetched += len(chunk)
                            now = time.monotonic()
                            if progress and (now - last_report >= _PROGRESS_EVERY_S or offset == info.size):
                                last_report = now
                                speed = fetched / max(now - started, 1e-6)
                                eta = (info.size - offset) / speed if speed > 0 else None
                                progress(DownloadProgress(offset, info.size, speed, eta))
                    finally:
                        handle.flush()
                        os.fsync(handle.fileno())  # what we report as resumable must be on disk
        except OSError as error:
            if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                part.unlink(missing_ok=True)  # free the space; a disk-full partial helps nobody
                raise DiskFullError(part.parent.parent) from error
            if isinstance(error, HfHubHTTPError):
                if error.response is not None and error.response.status_code == 416 and offset:
                    part.unlink(missing_ok=True)  # our partial no longer matches the server's file
                    digest, offset = hashlib.sha256(), 0
                    continue
            # Offline switched on, permission denied on the models folder, ...: typed, with the OS's words.
            raise _translate(error, info.repo_id, info.filename) from error
        except _http.TransportError as error:
            attempt += 1
            if attempt > retries:
                if isinstance(error, (_http.ConnectError, _http.ConnectTimeout)) and fetched == 0 and offset == 0:
                    raise HubOfflineError(type(error).__name__) from error
                raise DownloadInterruptedError(offset, info.size, type(error).__name__) from error
            time.sleep(min(0.2 * attempt, 2.0))
            continue
        if offset < info.size:  # the body ended early without a transport error
            attempt += 1
            if attempt > retries:
                raise DownloadInterruptedError(offset, info.size, "response ended early")
    return digest.hexdigest()
