"""DownloadJob: one model file (or model folder) downloaded in the background, reported through Qt signals.

Runs app.catalog.download.download_model_file (download_model_folder for a folder model)
on its own thread (a download can take
an hour; it must not hold one of run_in_background's few pool threads). Everything the
thread reports is relayed through a queued signal, so the public signals are always
emitted on the GUI thread. Cancel sets a threading.Event that the download checks every
few hundredths of a second, also while the Hub sends nothing; the bytes so far stay in
`<models>/.partial/` (fsynced), so a later job for the
same file, in this run or after a restart, resumes with an HTTP Range request
(`pending_downloads()` lists what can be resumed). Free space is checked before any
network traffic. QtCore only.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal, Slot

from app.catalog import installed
from app.catalog.download import (
    DownloadProgress,
    PartialDownload,
    download_model_file,
    download_model_folder,
    hub_offline,
    list_partial_downloads,
)
from app.catalog.errors import (
    ChecksumMismatchError,
    DiskFullError,
    DownloadCancelledError,
    DownloadInProgressError,
    DownloadInterruptedError,
    DownloadStalledError,
    GatedModelError,
    HubOfflineError,
    HubProtocolError,
    ModelFileError,
    ModelNotFoundError,
    StorageError,
    UnsafeFileNameError,
    UnsafePathError,
)

# Failure kinds (the first argument of DownloadJob.failed), so the UI can offer the right action.
# Each error class owns its kind; these names are for the UI's comparisons.
NOT_FOUND, GATED, OFFLINE = ModelNotFoundError.kind, GatedModelError.kind, HubOfflineError.kind
DISK_FULL, CHECKSUM, INTERRUPTED = DiskFullError.kind, ChecksumMismatchError.kind, DownloadInterruptedError.kind
IN_PROGRESS, PROTOCOL, ERROR = DownloadInProgressError.kind, HubProtocolError.kind, ModelFileError.kind
STALLED, UNSAFE_NAME, UNSAFE_PATH = DownloadStalledError.kind, UnsafeFileNameError.kind, UnsafePathError.kind
STORAGE = StorageError.kind
_log = logging.getLogger(__name__)


def failure_kind(error: BaseException) -> str:
    return error.kind if isinstance(error, ModelFileError) else ERROR


def pending_downloads(models_dir: Path) -> dict[tuple[str, str], PartialDownload]:
    """Resumable downloads by (repo_id, filename), with at least one byte on disk."""
    return {(p.repo_id, p.filename): p for p in list_partial_downloads(models_dir) if p.bytes_done > 0}


def check_free_space(models_dir: Path, expected_size: int, already_have: int = 0) -> None:
    """Raise DiskFullError if the rest of the file plus the safety margin does not fit."""
    needed = max(0, expected_size - already_have) + installed.DISK_MARGIN_BYTES
    free = installed.free_disk_bytes(models_dir)
    if needed > free:
        raise DiskFullError(Path(models_dir), needed, free)


class DownloadJob(QObject):
    """Download one file. Create on the GUI thread, connect, then start(); one use per job."""

    progress = Signal(object, object, float, object)  # bytes done, total, bytes/s, seconds left (None: unknown)
    finished = Signal(object)  # app.catalog.installed.InstalledModel (sha256 verified)
    failed = Signal(str, str)  # kind (NOT_FOUND, GATED, ...), message for the user
    cancelled = Signal(object, object)  # bytes kept on disk, total: resumable later

    _relay = Signal(str, object)  # worker thread → GUI thread

    def __init__(
        self,
        repo_id: str,
        filename: str,
        models_dir: Path,
        *,
        token: str | None = None,
        expected_size: int | None = None,
        retries: int = 3,
        timeout: float = 10.0,
        folder: bool = False,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.folder = folder  # `filename` names the model folder: its allow-listed files are fetched
        self.repo_id, self.filename, self.models_dir = repo_id, filename, Path(models_dir)
        self.token, self.expected_size, self.retries, self.timeout = token, expected_size, retries, timeout
        self.bytes_done, self.total = 0, expected_size or 0
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False
        self._relay.connect(self._on_relay, Qt.ConnectionType.QueuedConnection)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done

    def start(self) -> None:
        """Check free space (no network), then download on a new thread. Failures arrive on `failed`."""
        if self._thread is not None:
            raise RuntimeError("a DownloadJob runs once")
        self._thread = threading.Thread(target=self._run, name=f"download {self.filename}", daemon=True)
        if hub_offline():
            self._done = True
            self._relay.emit("failed", HubOfflineError("HF_HUB_OFFLINE is set"))
            return
        if self.expected_size:
            partial = pending_downloads(self.models_dir).get((self.repo_id, self.filename))
            try:
                check_free_space(self.models_dir, self.expected_size, partial.bytes_done if partial else 0)
            except DiskFullError as error:
                self._done = True
                self._relay.emit("failed", error)
                return
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Join the thread (application exit, tests); True when it has ended."""
        if self._thread is None or not self._thread.is_alive():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            download = download_model_folder if self.folder else download_model_file
            model = download(
                self.repo_id,
                self.filename,
                self.models_dir,
                token=self.token,
                progress=self._report,
                cancel=self._cancel,
                retries=self.retries,
                timeout=self.timeout,
            )
        except DownloadCancelledError as error:
            self._relay.emit("cancelled", error)
        except Exception as error:  # noqa: BLE001 - the thread boundary: everything becomes a message
            self._relay.emit("failed", error)
        else:
            self._relay.emit("finished", model)

    def _report(self, update: DownloadProgress) -> None:
        self._relay.emit("progress", update)

    # ---- GUI thread --------------------------------------------------------------------------

    @Slot(str, object)
    def _on_relay(self, what: str, payload: object) -> None:
        if what == "progress" and isinstance(payload, DownloadProgress):
            self.bytes_done, self.total = payload.bytes_done, payload.total
            self.progress.emit(payload.bytes_done, payload.total, payload.bytes_per_s, payload.eta_s)
            return
        self._done = True
        if what == "finished" and isinstance(payload, installed.InstalledModel):
            self.bytes_done = self.total = payload.size
            self.finished.emit(payload)
        elif what == "cancelled" and isinstance(payload, DownloadCancelledError):
            self.cancelled.emit(payload.bytes_done, payload.total)
        elif isinstance(payload, ModelFileError):
            self.failed.emit(failure_kind(payload), str(payload) or type(payload).__name__)
        else:  # not one of our typed errors: a bug below; the user gets a sentence, the log the rest
            error = payload if isinstance(payload, BaseException) else None
            _log.error("download of %s/%s failed: %r", self.repo_id, self.filename, payload, exc_info=error)
            if isinstance(payload, OSError):
                message = f"Could not write the model file: {payload.strerror or 'input/output error'}."
            else:
                message = f"The download of {self.filename} failed unexpectedly."
            self.failed.emit(ERROR, message)
