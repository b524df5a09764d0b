"""Typed errors raised by the chat-history store (app.chat.store).

The UI turns each into a specific message; none of them is ever handled by
wiping data. Every SQLite or file-system error the store meets is one of
these (app.chat.store translates them), so a caller catches ChatStoreError and
never a raw sqlite3/OSError/UnicodeError. Pure Python: must not import PySide6
or tmac_core.
"""

from __future__ import annotations

from pathlib import Path


class ChatStoreError(Exception):
    """Base class for every chat-history error."""


class CorruptDatabaseError(ChatStoreError):
    """The file exists but SQLite cannot read it (or its integrity check fails).

    The file is left exactly as it was; `move_database_aside()` renames it on the user's request.
    """

    def __init__(self, path: Path, detail: str) -> None:
        self.path = Path(path)
        self.detail = detail
        super().__init__(f"The chat history file {self.path} is damaged and cannot be opened ({detail}).")


class NewerSchemaError(ChatStoreError):
    """The database was written by a newer version of the app; opening it read-write could lose data."""

    def __init__(self, path: Path, found_version: int, supported_version: int) -> None:
        self.path = Path(path)
        self.found_version = found_version
        self.supported_version = supported_version
        super().__init__(
            f"The chat history file {self.path} was written by a newer T-MAC Chat "
            f"(schema {found_version}; this version understands up to {supported_version}). "
            "Update the app to open it; the file has not been changed."
        )


class NotADatabaseFileError(ChatStoreError):
    """Something other than a regular file (a folder, a FIFO, a device) sits at the database path.

    Not damage: moving it aside would be wrong advice, so it has its own type. `what` says what it is.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        super().__init__(
            f"{self.path} is {what}, not a chat database. Move it away or rename it, then start the app again."
        )


class StorageError(ChatStoreError):
    """Reading or writing the history failed for a reason outside the app (lock, space, permissions, I/O).

    `detail` is SQLite's or the OS's own words. Nothing was half-written: the transaction was rolled
    back, and text being streamed stays in memory (ChatStore keeps it until a commit succeeds).
    """

    reason = "could not be read or written"

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"The chat history {path} {self.reason} ({detail}).")


class DatabaseBusyError(StorageError):
    """Another program (often a second T-MAC Chat) held the database lock for longer than the store waits."""

    reason = "is locked by another program (another T-MAC Chat window?)"


class DiskFullError(StorageError):
    """The disk (or the database's size limit) is full: SQLITE_FULL or ENOSPC."""

    reason = "cannot grow: the disk is full"


class ReadOnlyDatabaseError(StorageError):
    """The file or its folder cannot be written (permissions, a read-only file system)."""

    reason = "cannot be written (read-only file or folder)"


class UnsavedTextError(StorageError):
    """Closing the store could not commit some text; `texts` maps message id → the text not saved."""

    reason = "could not save everything before closing"

    def __init__(self, path: Path | str, detail: str, texts: dict[int, str]) -> None:
        self.texts = texts
        super().__init__(path, detail)


class ConversationNotFoundError(ChatStoreError, KeyError):
    def __init__(self, conversation_id: int) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"No conversation with id {conversation_id}.")


class MessageNotFoundError(ChatStoreError, KeyError):
    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        super().__init__(f"No message with id {message_id}.")


class MessageStateError(ChatStoreError):
    """An operation that needs a particular message state (e.g. append to a streaming message) got another."""
