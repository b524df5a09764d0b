"""Typed errors raised by the chat-history store (app.chat.store).

The UI turns each into a specific message; none of them is ever handled by
wiping data. Pure Python: must not import PySide6 or tmac_core.
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
