"""Chat history in SQLite: conversations and messages that survive crashes and upgrades.

WAL + synchronous=FULL, one transaction per message, partial assistant text
flushed while it streams (at most every `flush_interval_s` or `flush_chars`),
`PRAGMA user_version` schema with ordered migrations. A damaged file or one
from a newer app raises a typed error and is never modified. Messages are
ordered by their row id, never by clock time. Pure Python (sqlite3 only):
must not import PySide6 or tmac_core.

Nothing committed or shown is lost: every SQLite or file-system error becomes a
typed app.chat.errors error (a lock held by another program, a full disk, a
read-only file, a folder at the path), the transaction is rolled back, and
streamed text stays in memory (`get_message` shows it) until a commit of it
succeeds. Text is stored as valid UTF-8 (lone surrogates become U+FFFD), and
search input of any shape runs in bounded time.

Nothing is removed behind the user's back either: Regenerate keeps the earlier
answers of a turn as versions (`version_of`, one shown at a time: the others are
`superseded`), and edit-and-resend hides the later messages (`removed_at`) until
the removal is made final (`purge_removed`: the chat moved on, the undo offer
expired, or the next start) or undone (`undo_edit`). Lists, search and export
see only what is shown.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from app.chat.errors import (
    ChatStoreError,
    ConversationNotFoundError,
    CorruptDatabaseError,
    DatabaseBusyError,
    DiskFullError,
    MessageNotFoundError,
    MessageStateError,
    NewerSchemaError,
    NotADatabaseFileError,
    ReadOnlyDatabaseError,
    StorageError,
    UnsavedTextError,
)
from app.chat.records import (  # re-exported: callers import the record types from here
    COMPLETE,
    ERROR,
    MESSAGE_STATES,
    PARTIAL,
    ROLES,
    STREAMING,
    AnswerStats,
    Conversation,
    EditUndo,
    Message,
    SearchHit,
)
from app.chat.records import (
    conversation_from_row as _conversation_from_row,
)
from app.chat.records import (
    message_from_row as _message_from_row,
)

__all__ = [
    "COMPLETE",
    "ERROR",
    "IN_MEMORY",
    "MESSAGE_STATES",
    "PARTIAL",
    "ROLES",
    "SCHEMA_VERSION",
    "STREAMING",
    "AnswerStats",
    "ChatStore",
    "Conversation",
    "EditUndo",
    "Message",
    "SearchHit",
    "clean_text",
    "fts5_available",
    "move_database_aside",
    "typed_error",
]

_SCHEMA_V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model_id TEXT,
    bits INTEGER,
    system_prompt TEXT NOT NULL DEFAULT '',
    sampling_json TEXT NOT NULL DEFAULT '{}',
    deleted_at REAL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    stats_json TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL CHECK (state IN ('complete', 'streaming', 'partial', 'error'))
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX conversations_by_updated ON conversations(updated);
"""

# v2: answer versions and removal that can be undone (see the module docstring).
# version_of: the id of the turn's first answer (NULL: this is the first, or not an answer);
# superseded: 1 when another version of the turn is the one shown;
# removed_at: hidden by an edit-and-resend, until purge_removed or undo_edit.
_SCHEMA_V2 = """
ALTER TABLE messages ADD COLUMN version_of INTEGER;
ALTER TABLE messages ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN removed_at REAL;
CREATE INDEX messages_by_turn ON messages(conversation_id, version_of);
"""

# MIGRATIONS[i] takes the schema from version i to i+1. Append only; never edit a shipped entry.
MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2]
SCHEMA_VERSION = len(MIGRATIONS)


IN_MEMORY = ":memory:"  # the path of a store that keeps nothing (start-up fallback when the file cannot be used)
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another program's lock before DatabaseBusyError
STREAM_WAIT_S = 0.2  # a streaming flush waits less: its text stays in memory and is retried
FLUSH_RETRY_S = 2.0  # after a failed streaming flush, no new attempt for this long (the GUI must not stall)
# A message's turn: every version of an answer shares it, and it orders the conversation.
_TURN = "COALESCE(version_of, id)"
_SHOWN = "superseded = 0 AND removed_at IS NULL"
# Search bounds: any query runs in bounded time and never reaches SQLite's limits on
# variables, expression depth or LIKE pattern length.
MAX_QUERY_CHARS = 1000
MAX_SEARCH_TERMS = 16
MAX_TERM_CHARS = 100

_SURROGATE = re.compile("[\ud800-\udfff]")
_WORD = re.compile(r"\w")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class _PendingText:
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    last_flush: float = 0.0
    retry_at: float = 0.0  # monotonic time before which a failed flush is not retried
    final: tuple[str, AnswerStats | None] | None = None  # finish_message's state and stats, until it commits


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[Concatenate[ChatStore, _P], _R]) -> Callable[Concatenate[ChatStore, _P], _R]:
    """Serialize a read on the shared connection (writes hold the lock via _transaction); SQLite
    errors become typed ones."""

    def wrapper(self: ChatStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock, self._translated():
            return method(self, *args, **kwargs)

    functools.update_wrapper(wrapper, method)
    return wrapper


def clean_text(text: str) -> str:
    """`text` as valid Unicode: a surrogate pair (UTF-16 leaking through a paste) is joined into its
    character, a lone surrogate becomes U+FFFD. SQLite stores UTF-8, which cannot hold surrogates."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def typed_error(error: sqlite3.Error, path: Path | str) -> ChatStoreError:
    """The app's error for a SQLite one, chosen by SQLite's (extended) result code."""
    name = getattr(error, "sqlite_errorname", "") or ""
    detail = str(error)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return DatabaseBusyError(path, detail)
    if name.startswith("SQLITE_FULL") or "disk is full" in detail:
        return DiskFullError(path, detail)
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return ReadOnlyDatabaseError(path, detail)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return CorruptDatabaseError(Path(path), detail)
    return StorageError(path, detail)


def _file_kind(mode: int) -> str | None:
    """What a non-regular file is, in plain words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def fts5_available() -> bool:
    """Whether this Python's sqlite3 was built with FTS5 (most are; some distro builds are not)."""
    try:
        probe = sqlite3.connect(":memory:")
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
        probe.close()
        return True
    except sqlite3.Error:
        return False


def move_database_aside(path: Path) -> Path:
    """Rename a damaged database (with its -wal/-shm, which belong to it) to `<name>.corrupt-<time>`.

    Only on the user's explicit request. Returns the new path of the main file.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


class ChatStore:
    """One SQLite file of conversations. Safe to share between threads (calls are serialized).

    `ChatStore(IN_MEMORY)` keeps nothing on disk: the app's fallback when the file cannot be used.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval_s: float = 0.25,
        flush_chars: int = 512,
        clock: Callable[[], float] = time.time,
        use_fts: bool | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.temporary = str(path) == IN_MEMORY
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.flush_chars = flush_chars
        self.busy_timeout_s = busy_timeout_s
        self.use_fts = use_fts
        self._clock = clock
        self._lock = threading.RLock()
        self._pending: dict[int, _PendingText] = {}
        self.recovered_message_ids: list[int] = []
        if not self.temporary:
            self._check_existing_file()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise _os_error(error, self.path.parent) from error
        try:
            self._db = sqlite3.connect(
                IN_MEMORY if self.temporary else self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_s,
            )
        except sqlite3.Error as error:
            raise typed_error(error, self.path) from error
        try:
            with self._translated():
                self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a message the user saw as sent must survive power loss, not just an app crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self.has_fts = fts5_available() if self.use_fts is None else self.use_fts
        if self.has_fts:
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone():
                with self._transaction():
                    self._db.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(content)")
            self._rebuild_fts_if_stale()
        # Anything still "streaming" was cut off by a crash or kill: keep its text, mark it interrupted.
        # Written only when there is one, so a file another instance has locked still opens for reading.
        rows = self._db.execute("SELECT id FROM messages WHERE state = ?", (STREAMING,)).fetchall()
        if rows:
            with self._transaction():
                self._db.execute("UPDATE messages SET state = ? WHERE state = ?", (PARTIAL, STREAMING))
        self.recovered_message_ids = [row["id"] for row in rows]
        if self.recovered_message_ids and self.has_fts:
            self._rebuild_fts_if_stale()
        # Hidden by an edit whose undo offer ended with the app (quit or crash): the removal is final.
        # Read first, as above, so a file locked by another instance still opens.
        if self._db.execute("SELECT 1 FROM messages WHERE removed_at IS NOT NULL LIMIT 1").fetchone():
            self.purge_removed()

    # ---- opening, checking, migrating ---------------------------------------------------------

    def _check_existing_file(self) -> None:
        """Read-only look at an existing file before any PRAGMA that could rewrite its header."""
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return
        except OSError as error:
            raise _os_error(error, self.path) from error
        kind = _file_kind(mode)
        if kind is not None:
            # Checked before SQLite opens it: a FIFO would block the open, a folder is no damage to move aside.
            raise NotADatabaseFileError(self.path, kind)
        if self.path.stat().st_size == 0:
            return
        if not os.access(self.path, os.R_OK | os.W_OK):
            # Not damage: say so, or the user would be told to move a healthy file aside.
            raise ReadOnlyDatabaseError(self.path, "check the file's permissions")
        try:
            probe = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_s)
            try:
                version = probe.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise NewerSchemaError(self.path, version, SCHEMA_VERSION)
                verdict = probe.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                probe.close()
        except sqlite3.DatabaseError as error:
            typed = typed_error(error, self.path)
            # Plain SQLITE_ERROR while reading the header is how some damage shows; locks and I/O are not damage.
            if type(typed) is StorageError and getattr(error, "sqlite_errorname", "") == "SQLITE_ERROR":
                typed = CorruptDatabaseError(self.path, str(error))
            raise typed from error
        if verdict != "ok":
            raise CorruptDatabaseError(self.path, f"integrity check: {verdict}")

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > 0 and version < SCHEMA_VERSION:
            # A copy before any migration, so an upgrade can always be undone by hand.
            backup = self.path.with_name(f"{self.path.stem}.backup-v{version}{self.path.suffix}")
            if not backup.exists():
                self._db.execute("VACUUM INTO ?", (str(backup),))
        for step in range(version, SCHEMA_VERSION):
            with self._transaction():
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite's errors as the app's typed ones (app.chat.errors)."""
        try:
            yield
        except sqlite3.Error as error:
            raise typed_error(error, self.path) from error

    @contextmanager
    def _transaction(self, wait_s: float | None = None) -> Iterator[None]:
        """One committed (fsynced) transaction, or a typed error and nothing written.

        `wait_s`: how long to wait for another program's lock (default: the store's busy timeout).
        """
        with self._lock, self._translated(), self._waiting(wait_s):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does); the first error is the one to report.
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    @contextmanager
    def _waiting(self, wait_s: float | None) -> Iterator[None]:
        if wait_s is None or wait_s == self.busy_timeout_s:
            yield
            return
        self._db.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")

    def close(self) -> None:
        """Commit what is still in memory (streamed text, finishes that failed) and close.

        If some text cannot be committed the file is closed all the same and UnsavedTextError
        carries that text, so the caller can still keep it somewhere.
        """
        with self._lock:
            first: ChatStoreError | None = None
            for message_id in list(self._pending):
                try:
                    final = self._pending[message_id].final
                    if final is not None:
                        self.finish_message(message_id, final[1], final[0])
                    else:
                        self.flush(message_id)
                except MessageNotFoundError:
                    self._pending.pop(message_id, None)
                except ChatStoreError as error:
                    first = first or error
            unsaved = {message_id: "".join(p.parts) for message_id, p in self._pending.items() if p.parts}
            self._pending.clear()
            self._db.close()
        if unsaved:
            raise UnsavedTextError(self.path, str(first), unsaved) from first

    def unsaved_text(self) -> dict[int, str]:
        """Text shown but not yet committed, by message id (empty when everything is on disk)."""
        with self._lock:
            return {message_id: "".join(p.parts) for message_id, p in self._pending.items() if p.parts}

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- conversations -------------------------------------------------------------------------

    def create_conversation(
        self,
        title: str = "New chat",
        *,
        model_id: str | None = None,
        bits: int | None = None,
        system_prompt: str = "",
        sampling: dict[str, Any] | None = None,
    ) -> Conversation:
        now = self._clock()
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO conversations (title, created, updated, model_id, bits, system_prompt, sampling_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    clean_text(title),
                    now,
                    now,
                    clean_text(model_id) if model_id is not None else None,
                    bits,
                    clean_text(system_prompt),
                    json.dumps(sampling or {}),
                ),
            )
        return self.get_conversation(_row_id(cursor))

    @_locked
    def get_conversation(self, conversation_id: int) -> Conversation:
        row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise ConversationNotFoundError(conversation_id)
        return _conversation_from_row(row)

    @_locked
    def list_conversations(self, *, include_deleted: bool = False) -> list[Conversation]:
        """Most recently updated first (ties broken by id, so the order is stable)."""
        where = "" if include_deleted else "WHERE deleted_at IS NULL"
        rows = self._db.execute(f"SELECT * FROM conversations {where} ORDER BY updated DESC, id DESC").fetchall()
        return [_conversation_from_row(row) for row in rows]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._update_conversation(conversation_id, "title = ?", (clean_text(title),))

    def set_conversation_settings(self, conversation_id: int, *, system_prompt: str, sampling: dict[str, Any]) -> None:
        """The chat's own system prompt and sampling preset (keys: app.settings.SAMPLING_FIELDS).

        The row is the truth for its chat (app.settings.CONVERSATION_FIELDS says why); `sampling_json`
        written as {} by older versions means "the defaults". Not a new message, so the chat keeps its
        place in the list (`updated` is not touched).
        """
        self._update_conversation(
            conversation_id,
            "system_prompt = ?, sampling_json = ?",
            (clean_text(system_prompt), json.dumps(sampling)),
            touch=False,
        )

    def update_conversation(
        self,
        conversation_id: int,
        *,
        model_id: str | None = None,
        bits: int | None = None,
        system_prompt: str | None = None,
        sampling: dict[str, Any] | None = None,
    ) -> None:
        """Change the per-conversation model/bits/system prompt/sampling; None leaves a field as it is."""
        current = self.get_conversation(conversation_id)
        self._update_conversation(
            conversation_id,
            "model_id = ?, bits = ?, system_prompt = ?, sampling_json = ?",
            (
                clean_text(model_id) if model_id is not None else current.model_id,
                bits if bits is not None else current.bits,
                clean_text(system_prompt) if system_prompt is not None else current.system_prompt,
                json.dumps(sampling if sampling is not None else current.sampling),
            ),
        )

    def delete_conversation(self, conversation_id: int) -> None:
        """Soft delete: hidden from lists and search until `restore_conversation` or `purge_deleted`."""
        self._update_conversation(conversation_id, "deleted_at = ?", (self._clock(),), touch=False)

    def restore_conversation(self, conversation_id: int) -> None:
        self._update_conversation(conversation_id, "deleted_at = NULL", (), touch=False)

    def purge_deleted(self, *, older_than_s: float = 0.0) -> int:
        """Really remove soft-deleted conversations (and their messages). Returns how many."""
        cutoff = self._clock() - older_than_s
        query = "SELECT 1 FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ? LIMIT 1"
        with self._lock, self._translated():
            # Read first: the window purges at every start, and a write lock would make a start-up
            # next to another instance (holding the lock) wait and fail for nothing.
            if self._db.execute(query, (cutoff,)).fetchone() is None:
                return 0
        with self._transaction():
            ids = [
                r["id"]
                for r in self._db.execute(
                    "SELECT id FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ?", (cutoff,)
                )
            ]
            for conversation_id in ids:
                if self.has_fts:
                    self._db.execute(
                        "DELETE FROM messages_fts WHERE rowid IN (SELECT id FROM messages WHERE conversation_id = ?)",
                        (conversation_id,),
                    )
                self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return len(ids)

    def _update_conversation(
        self, conversation_id: int, assignments: str, values: tuple[Any, ...], *, touch: bool = True
    ) -> None:
        if touch:
            assignments += ", updated = ?"
            values = (*values, self._clock())
        with self._transaction():
            cursor = self._db.execute(
                f"UPDATE conversations SET {assignments} WHERE id = ?", (*values, conversation_id)
            )
            if cursor.rowcount == 0:
                raise ConversationNotFoundError(conversation_id)

    def _touch(self, conversation_id: int) -> None:
        self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (self._clock(), conversation_id))

    # ---- messages ------------------------------------------------------------------------------

    def add_message(
        self, conversation_id: int, role: str, content: str, *, stats: AnswerStats | None = None, state: str = COMPLETE
    ) -> Message:
        """Store one whole message in its own transaction (committed, fsynced) and return it."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if state not in MESSAGE_STATES:
            raise ValueError(f"state must be one of {MESSAGE_STATES}, not {state!r}")
        content = clean_text(content)
        with self._transaction():
            message_id = self._insert_message(conversation_id, role, content, stats, state)
            if self.has_fts:
                self._db.execute("INSERT INTO messages_fts (rowid, content) VALUES (?, ?)", (message_id, content))
        return self.get_message(message_id)

    def _insert_message(
        self, conversation_id: int, role: str, content: str, stats: AnswerStats | None, state: str
    ) -> int:
        if self._db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
            raise ConversationNotFoundError(conversation_id)
        cursor = self._db.execute(
            "INSERT INTO messages (conversation_id, role, content, created, stats_json, state)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (conversation_id, role, content, self._clock(), _stats_json(stats), state),
        )
        self._touch(conversation_id)
        return _row_id(cursor)

    @_locked
    def get_message(self, message_id: int) -> Message:
        row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id)
        pending = self._pending.get(message_id)
        message = _message_from_row(row)
        if pending and pending.parts:  # show the caller what it has appended, flushed or not
            message = dataclasses.replace(message, content=message.content + "".join(pending.parts))
        if message.role == "assistant":
            versions = self._turn_ids(message.conversation_id, message.turn_id)
            if len(versions) > 1 and message_id in versions:
                message = dataclasses.replace(message, version=versions.index(message_id) + 1, versions=len(versions))
        return message

    @_locked
    def list_messages(self, conversation_id: int) -> list[Message]:
        """The conversation as shown: one version of each answer, nothing an edit has hidden."""
        self.get_conversation(conversation_id)
        rows = self._db.execute(
            f"SELECT id FROM messages WHERE conversation_id = ? AND {_SHOWN} ORDER BY {_TURN}, id", (conversation_id,)
        ).fetchall()
        return [self.get_message(row["id"]) for row in rows]

    def begin_assistant_message(
        self, conversation_id: int, *, stats: AnswerStats | None = None, version_of: int | None = None
    ) -> int:
        """Create an empty assistant message in state "streaming"; returns its id.

        `version_of`: an answer this one is a new version of (Regenerate). The earlier versions are
        kept, superseded, in the same transaction: the turn always shows exactly one of them."""
        with self._transaction():
            turn = None
            if version_of is not None:
                row = self._db.execute(
                    f"SELECT role, conversation_id, {_TURN} AS turn FROM messages WHERE id = ?", (version_of,)
                ).fetchone()
                if row is None:
                    raise MessageNotFoundError(version_of)
                if row["role"] != "assistant" or row["conversation_id"] != conversation_id:
                    raise MessageStateError(f"Message {version_of} is not an answer of conversation {conversation_id}.")
                turn = row["turn"]
                self._db.execute(
                    f"UPDATE messages SET superseded = 1 WHERE conversation_id = ? AND {_TURN} = ?",
                    (conversation_id, turn),
                )
            message_id = self._insert_message(conversation_id, "assistant", "", stats, STREAMING)
            if turn is not None:
                self._db.execute("UPDATE messages SET version_of = ? WHERE id = ?", (turn, message_id))
        self._pending[message_id] = _PendingText(last_flush=time.monotonic())
        return message_id

    def resume_assistant_message(self, message_id: int) -> Message:
        """Put a finished answer back in state "streaming" so that more text is appended to it
        (Continue after max tokens); finish_message ends it again. Its text stays as it is."""
        with self._lock:
            if message_id in self._pending:
                raise MessageStateError(f"Message {message_id} is still being written.")
            with self._transaction():
                row = self._db.execute("SELECT role, state FROM messages WHERE id = ?", (message_id,)).fetchone()
                if row is None:
                    raise MessageNotFoundError(message_id)
                if row["role"] != "assistant" or row["state"] == STREAMING:
                    raise MessageStateError(f"Message {message_id} is not a finished answer.")
                self._db.execute("UPDATE messages SET state = ? WHERE id = ?", (STREAMING, message_id))
            self._pending[message_id] = _PendingText(last_flush=time.monotonic())
        return self.get_message(message_id)

    @_locked
    def answer_versions(self, message_id: int) -> list[int]:
        """The ids of every version of this message's turn, oldest first (just itself for most)."""
        row = self._db.execute(
            f"SELECT conversation_id, {_TURN} AS turn FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id)
        return self._turn_ids(row["conversation_id"], row["turn"])

    def _turn_ids(self, conversation_id: int, turn: int) -> list[int]:
        rows = self._db.execute(
            f"SELECT id FROM messages WHERE conversation_id = ? AND {_TURN} = ? AND removed_at IS NULL ORDER BY id",
            (conversation_id, turn),
        )
        return [r["id"] for r in rows]

    def show_version(self, message_id: int) -> Message:
        """Make this version the one its turn shows (and the one the next prompt includes)."""
        with self._transaction():
            row = self._db.execute(
                f"SELECT conversation_id, {_TURN} AS turn, removed_at FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None or row["removed_at"] is not None:
                raise MessageNotFoundError(message_id)
            self._db.execute(
                f"UPDATE messages SET superseded = (id != ?) WHERE conversation_id = ? AND {_TURN} = ?",
                (message_id, row["conversation_id"], row["turn"]),
            )
        return self.get_message(message_id)

    def append_partial(self, message_id: int, text: str) -> bool:
        """Add streamed text. Commits only when `flush_interval_s` has passed or `flush_chars` are
        waiting, so a per-token caller costs a few commits a second. Returns True if it committed.

        The text is kept whatever happens: if the commit fails (a lock held by another program, a
        full disk) the typed error is raised, the text stays in memory (get_message shows it) and
        is written by a later flush, finish_message or close; no new attempt is made for
        FLUSH_RETRY_S, so a locked file does not stall every token.
        """
        with self._lock:
            pending = self._pending.get(message_id)
            if pending is None or pending.final is not None:
                raise MessageStateError(f"Message {message_id} is not streaming (begin_assistant_message first).")
            text = clean_text(text)
            pending.parts.append(text)
            pending.chars += len(text)
            now = time.monotonic()
            if now < pending.retry_at:
                return False
            due = now - pending.last_flush >= self.flush_interval_s
            if due or pending.chars >= self.flush_chars:
                self.flush(message_id, wait_s=STREAM_WAIT_S)
                return True
            return False

    def flush(self, message_id: int, *, wait_s: float | None = None) -> None:
        """Commit any appended text now (also done by finish_message and close). On a typed error
        the text stays pending."""
        with self._lock:
            pending = self._pending.get(message_id)
            if pending is None or not pending.parts:
                return
            text = "".join(pending.parts)
            try:
                with self._transaction(wait_s):
                    self._db.execute("UPDATE messages SET content = content || ? WHERE id = ?", (text, message_id))
            except ChatStoreError:
                pending.retry_at = time.monotonic() + FLUSH_RETRY_S
                raise
            pending.parts.clear()
            pending.chars = 0
            pending.last_flush = time.monotonic()

    def finish_message(
        self, message_id: int, stats: AnswerStats | None = None, state: str = COMPLETE, *, wait_s: float | None = None
    ) -> Message:
        """End a streaming message: flush, record stats, set its final state (complete/partial/error).

        If the commit fails, the typed error is raised and the text stays in memory with the final
        state; calling finish_message again (or close) commits both. `wait_s` as for flush.
        """
        if state not in (COMPLETE, PARTIAL, ERROR):
            raise ValueError(f"final state must be complete, partial or error, not {state!r}")
        with self._lock:
            pending = self._pending.get(message_id)
            text = "".join(pending.parts) if pending else ""
            if pending is not None:
                pending.final = (state, stats)
            with self._transaction(wait_s):
                row = self._db.execute(
                    "SELECT conversation_id, content FROM messages WHERE id = ?", (message_id,)
                ).fetchone()
                if row is None:
                    self._pending.pop(message_id, None)  # deleted (e.g. by a truncate): nothing left to keep
                    raise MessageNotFoundError(message_id)
                self._db.execute(
                    "UPDATE messages SET content = content || ?, state = ?, stats_json = ? WHERE id = ?",
                    (text, state, _stats_json(stats), message_id),
                )
                self._touch(row["conversation_id"])
                if self.has_fts:
                    self._db.execute("DELETE FROM messages_fts WHERE rowid = ?", (message_id,))
                    self._db.execute(
                        "INSERT INTO messages_fts (rowid, content) VALUES (?, ?)", (message_id, row["content"] + text)
                    )
            # Only now is the text on disk: until here it stayed pending, visible and retried.
            self._pending.pop(message_id, None)
        return self.get_message(message_id)

    def edit_message_and_truncate(self, message_id: int, new_content: str) -> list[int]:
        """Edit a user message and delete every later message of its conversation (edit-and-resend).
        Returns the ids that were removed."""
        message = self.get_message(message_id)
        if message.role != "user":
            raise MessageStateError(f"Only user messages can be edited (message {message_id} is {message.role}).")
        new_content = clean_text(new_content)
        with self._transaction():
            removed = self._delete_after(message.conversation_id, message.turn_id)
            self._set_content(message_id, new_content)
            self._touch(message.conversation_id)
        self._forget_pending(removed)
        return removed

    def edit_message_and_hide_later(self, message_id: int, new_content: str) -> EditUndo:
        """Edit a user message and hide every later message of its conversation (edit-and-resend),
        in one transaction. Nothing is deleted yet: `undo_edit` puts it all back, `purge_removed`
        makes the removal final."""
        message = self.get_message(message_id)
        if message.role != "user":
            raise MessageStateError(f"Only user messages can be edited (message {message_id} is {message.role}).")
        new_content = clean_text(new_content)
        with self._transaction():
            later = self._db.execute(
                f"SELECT id, {_SHOWN} AS shown FROM messages WHERE conversation_id = ? AND {_TURN} > ?"
                " AND removed_at IS NULL ORDER BY id",
                (message.conversation_id, message.turn_id),
            ).fetchall()
            now = self._clock()
            for row in later:
                self._db.execute("UPDATE messages SET removed_at = ? WHERE id = ?", (now, row["id"]))
            self._set_content(message_id, new_content)
            self._touch(message.conversation_id)
        return EditUndo(
            message.conversation_id,
            message_id,
            message.content,
            tuple(r["id"] for r in later),
            sum(1 for r in later if r["shown"]),
        )

    def undo_edit(self, undo: EditUndo) -> list[int]:
        """Put back what `edit_message_and_hide_later` changed: the old text and the hidden
        messages (with the version each turn showed). What was added after the edit (the answer
        to the edited text) is deleted, as the edit it answered is gone; returns those ids."""
        with self._transaction():
            turn = self._db.execute(f"SELECT {_TURN} FROM messages WHERE id = ?", (undo.message_id,)).fetchone()
            if turn is None:
                raise MessageNotFoundError(undo.message_id)
            deleted = self._delete_after(undo.conversation_id, turn[0], keep_removed=True)
            for message_id in undo.removed_ids:
                self._db.execute("UPDATE messages SET removed_at = NULL WHERE id = ?", (message_id,))
            self._set_content(undo.message_id, undo.old_content)
            self._touch(undo.conversation_id)
        self._forget_pending(deleted)
        return deleted

    def purge_removed(self, conversation_id: int | None = None) -> list[int]:
        """Delete for good what edits have hidden (in one conversation, or everywhere)."""
        where = "removed_at IS NOT NULL" + ("" if conversation_id is None else " AND conversation_id = ?")
        with self._transaction():
            ids = [
                r["id"]
                for r in self._db.execute(
                    f"SELECT id FROM messages WHERE {where}", (() if conversation_id is None else (conversation_id,))
                )
            ]
            for message_id in ids:
                self._delete_message(message_id)
        self._forget_pending(ids)
        return ids

    def truncate_after(self, message_id: int, *, inclusive: bool = False) -> list[int]:
        """Delete the messages after `message_id` (and its turn too if inclusive: every version)."""
        message = self.get_message(message_id)
        with self._transaction():
            removed = self._delete_after(message.conversation_id, message.turn_id - 1 if inclusive else message.turn_id)
            self._touch(message.conversation_id)
        self._forget_pending(removed)
        return removed

    def _forget_pending(self, message_ids: list[int]) -> None:
        # After the delete committed: had it failed, their text would still be wanted.
        for message_id in message_ids:
            self._pending.pop(message_id, None)

    def _set_content(self, message_id: int, content: str) -> None:
        self._db.execute("UPDATE messages SET content = ? WHERE id = ?", (content, message_id))
        if self.has_fts:
            self._db.execute("DELETE FROM messages_fts WHERE rowid = ?", (message_id,))
            self._db.execute("INSERT INTO messages_fts (rowid, content) VALUES (?, ?)", (message_id, content))

    def _delete_after(self, conversation_id: int, after_turn: int, *, keep_removed: bool = False) -> list[int]:
        """Delete the messages whose turn comes after `after_turn` (with every version of each);
        `keep_removed`: not those an edit has hidden (an undo is about to put them back)."""
        hidden = " AND removed_at IS NULL" if keep_removed else ""
        ids = [
            r["id"]
            for r in self._db.execute(
                f"SELECT id FROM messages WHERE conversation_id = ? AND {_TURN} > ?{hidden} ORDER BY id",
                (conversation_id, after_turn),
            )
        ]
        for message_id in ids:
            self._delete_message(message_id)
        return ids

    def _delete_message(self, message_id: int) -> None:
        self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        if self.has_fts:
            self._db.execute("DELETE FROM messages_fts WHERE rowid = ?", (message_id,))

    # ---- search --------------------------------------------------------------------------------

    @_locked
    def search(self, query: str, *, limit: int = 50) -> list[SearchHit]:
        """Find messages (and titles) containing every word of `query`. Deleted conversations, answer
        versions not shown and messages an edit has hidden are skipped (a hit must be on screen).

        Any input is accepted: terms are bounded in number and length (search_terms), words go to
        FTS5 as quoted phrases (never parsed as its syntax), terms without a letter or digit (which
        FTS5 cannot index) are matched with LIKE.
        """
        terms = search_terms(query)
        if not terms:
            return []
        limit = max(1, min(int(limit), 1000))
        hits: list[SearchHit] = []
        title_clause = " AND ".join("c.title LIKE ? ESCAPE '\\'" for _ in terms)
        for row in self._db.execute(
            f"SELECT c.id, c.title FROM conversations c WHERE c.deleted_at IS NULL AND {title_clause}"
            " ORDER BY c.updated DESC LIMIT ?",
            (*[_like(t) for t in terms], limit),
        ):
            hits.append(SearchHit(row["id"], row["title"], None, row["title"]))
        words = [t for t in terms if _WORD.search(t)]
        if self.has_fts and words:
            others = [t for t in terms if t not in words]
            # Each word quoted, so user input can never be parsed as FTS5 syntax; "*" allows prefixes.
            match = " ".join('"' + t.replace('"', '""') + '"*' for t in words)
            like = "".join(" AND m.content LIKE ? ESCAPE '\\'" for _ in others)
            rows = self._db.execute(
                "SELECT m.id, m.conversation_id, c.title, snippet(messages_fts, 0, char(2), char(3), '…', 12) AS snip"
                " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                " JOIN conversations c ON c.id = m.conversation_id"
                f" WHERE messages_fts MATCH ? AND c.deleted_at IS NULL{like}"
                " AND m.superseded = 0 AND m.removed_at IS NULL ORDER BY m.id DESC LIMIT ?",
                (match, *[_like(t) for t in others], limit),
            )
            hits += [SearchHit(r["conversation_id"], r["title"], r["id"], _unmark(r["snip"])) for r in rows]
        else:
            clause = " AND ".join("m.content LIKE ? ESCAPE '\\'" for _ in terms)
            rows = self._db.execute(
                "SELECT m.id, m.conversation_id, c.title, m.content FROM messages m"
                f" JOIN conversations c ON c.id = m.conversation_id WHERE c.deleted_at IS NULL AND {clause}"
                " AND m.superseded = 0 AND m.removed_at IS NULL ORDER BY m.id DESC LIMIT ?",
                (*[_like(t) for t in terms], limit),
            )
            hits += [
                SearchHit(r["conversation_id"], r["title"], r["id"], _snippet(r["content"], terms[0])) for r in rows
            ]
        return hits[:limit]

    def _rebuild_fts_if_stale(self) -> None:
        # Counts differ after a crash mid-stream (streaming text is indexed when it finishes) or after
        # writes by an FTS-less Python build; a rebuild is cheap at chat-history sizes.
        indexed = self._db.execute("SELECT count(*) FROM messages_fts").fetchone()[0]
        stored = self._db.execute("SELECT count(*) FROM messages WHERE state != ?", (STREAMING,)).fetchone()[0]
        if indexed == stored:
            return
        with self._transaction():
            self._db.execute("DELETE FROM messages_fts")
            self._db.execute(
                "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages WHERE state != ?",
                (STREAMING,),
            )


def search_terms(query: str) -> list[str]:
    """The terms of a search query, bounded: valid Unicode, no control characters (NUL included),
    at most MAX_SEARCH_TERMS distinct terms of at most MAX_TERM_CHARS characters each."""
    query = _CONTROL.sub(" ", clean_text(query[:MAX_QUERY_CHARS]))
    terms: list[str] = []
    for term in query.split():
        term = term[:MAX_TERM_CHARS]
        if term not in terms:
            terms.append(term)
        if len(terms) == MAX_SEARCH_TERMS:
            break
    return terms


def _row_id(cursor: sqlite3.Cursor) -> int:
    row_id = cursor.lastrowid
    assert row_id is not None, "an INSERT always sets lastrowid"
    return row_id


def _os_error(error: OSError, path: Path) -> ChatStoreError:
    """A file-system error met before SQLite opens the file, typed like SQLite's own."""
    if error.errno == errno.ENOSPC:
        return DiskFullError(path, str(error))
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ReadOnlyDatabaseError(path, str(error))
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return StorageError(path, f"a file is in the way of the folder: {error}")
    return StorageError(path, str(error))


def _unmark(snippet: str) -> str:
    """FTS5 marks the matched words with the two markers given to snippet(): control
    characters no chat text contains, dropped here (brackets were shown raw, and could
    not be told apart from brackets in the text)."""
    return snippet.replace("\x02", "").replace("\x03", "")


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _snippet(content: str, term: str, width: int = 60) -> str:
    at = content.lower().find(term.lower())
    start = max(0, at - width // 2)
    return ("…" if start else "") + content[start : start + width] + ("…" if start + width < len(content) else "")


def _stats_json(stats: AnswerStats | None) -> str:
    return json.dumps(stats.to_json() if stats is not None else {})
