"""Typed errors of the model catalog, downloads and installed-model management.

Every error carries a sentence fit to show the user as is (`str(error)`) and
the fields the UI needs to offer an action, and a stable `kind` (a short
identifier the UI matches on to choose that action). Pure Python: must not import
PySide6, huggingface_hub or tmac_core (so the UI can catch these without
pulling in the network stack).
"""

from __future__ import annotations

from pathlib import Path


class CatalogError(Exception):
    """assets/catalog.json is missing, unreadable or fails validation (a packaging bug, not a user error)."""

    kind = "catalog"


class ModelFileError(Exception):
    """Base class for everything that can go wrong getting a model file onto disk."""

    kind = "error"


class DownloadError(ModelFileError):
    """Base class for download failures."""


class ModelNotFoundError(DownloadError):
    kind = "not_found"

    def __init__(self, repo_id: str, filename: str, detail: str = "") -> None:
        self.repo_id, self.filename = repo_id, filename
        super().__init__(
            f"{filename} was not found in {repo_id} on Hugging Face" + (f" ({detail})." if detail else ".")
        )


class GatedModelError(DownloadError):
    kind = "gated"

    def __init__(self, repo_id: str, detail: str = "") -> None:
        self.repo_id = repo_id
        super().__init__(
            f"{repo_id} requires accepting its license on huggingface.co/{repo_id} and a Hugging Face access "
            "token (set HF_TOKEN or log in with `hf auth login`), then try again." + (f" ({detail})" if detail else "")
        )


class HubOfflineError(DownloadError):
    kind = "offline"

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "Cannot reach Hugging Face: you appear to be offline (or offline mode is on)."
            + (f" ({detail})" if detail else "")
        )


class DownloadInterruptedError(DownloadError):
    """The connection broke mid-file; the bytes so far are kept and the next attempt resumes."""

    kind = "interrupted"

    def __init__(self, bytes_done: int, total: int, detail: str = "") -> None:
        self.bytes_done, self.total = bytes_done, total
        super().__init__(
            f"The download was interrupted at {bytes_done} of {total} bytes; "
            "try again to resume." + (f" ({detail})" if detail else "")
        )


class DownloadCancelledError(DownloadError):
    kind = "cancelled"

    def __init__(self, bytes_done: int, total: int) -> None:
        self.bytes_done, self.total = bytes_done, total
        super().__init__(f"Download cancelled at {bytes_done} of {total} bytes; it can be resumed later.")


class DownloadInProgressError(DownloadError):
    kind = "in_progress"

    def __init__(self, filename: str, *, other_process: bool = False) -> None:
        self.filename, self.other_process = filename, other_process
        where = " in another T-MAC Chat window" if other_process else ""
        super().__init__(f"{filename} is already being downloaded{where}; wait for that download to finish.")


class DownloadStalledError(DownloadError):
    """No byte arrived for the stall time, also after reconnecting: the bytes so far are kept."""

    kind = "stalled"

    def __init__(self, bytes_done: int, total: int, seconds: float) -> None:
        self.bytes_done, self.total, self.seconds = bytes_done, total, seconds
        super().__init__(
            f"The download stalled: nothing arrived for {seconds:.0f} seconds (at {bytes_done} of {total} bytes). "
            "Try again later to resume."
        )


class UnsafeFileNameError(DownloadError, ValueError):
    """A file or repository name from the Hub or a manifest that this app will not create on disk.

    Also a ValueError, so callers that validated names with ValueError keep working."""

    kind = "unsafe_name"

    def __init__(self, name: object, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"Refusing the file name {str(name)[:80]!r}: {reason}.")


class UnsafePathError(ModelFileError):
    """A path in the models folder is not what we would write or delete: a symbolic link, a folder
    or special file where a file belongs, or a place outside the models folder."""

    kind = "unsafe_path"

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"Refusing to touch {self.path}: {reason}. Remove it by hand, then try again.")


class StorageError(ModelFileError):
    """The models folder could not be written (permissions, read-only disk, I/O error)."""

    kind = "storage"

    def __init__(self, folder: Path, error: OSError) -> None:
        self.folder, self.errno = Path(folder), error.errno
        reason = error.strerror or type(error).__name__
        super().__init__(f"Could not write in the models folder {self.folder}: {reason}.")


class DiskFullError(ModelFileError):
    kind = "disk_full"

    def __init__(self, folder: Path, needed: int | None = None, free: int | None = None) -> None:
        self.folder, self.needed, self.free = Path(folder), needed, free
        if needed is not None and free is not None:
            text = f"Not enough disk space in {self.folder}: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free."
        else:
            text = f"The disk holding {self.folder} is full."
        super().__init__(text + " Free some space or choose another models folder in Settings.")


class ChecksumMismatchError(ModelFileError):
    kind = "checksum"

    def __init__(self, filename: str, expected: str, actual: str) -> None:
        self.filename, self.expected, self.actual = filename, expected, actual
        super().__init__(
            f"{filename} arrived damaged (sha256 {actual[:12]}… instead of {expected[:12]}…); "
            "the bad file was deleted. Try the download again."
        )


class HubProtocolError(DownloadError):
    """The server answered something we refuse to trust (missing/odd commit, etag or size)."""

    kind = "protocol"


class NotAGgufFileError(ModelFileError):
    kind = "not_gguf"

    def __init__(self, path: Path, detail: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path.name} is not a usable GGUF model file ({detail}).")


class InstalledModelNotFoundError(ModelFileError, KeyError):
    kind = "not_installed"

    def __init__(self, model_key: str) -> None:
        self.model_key = model_key
        super().__init__(f"No installed model {model_key!r}.")
