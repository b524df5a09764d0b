"""Chat history in SQLite: conversations and messages that survive crashes and upgrades.

WAL + synchronous=FULL, one transaction per message, partial assistant text
flushed while it streams (at most every `flush_interval_s` or `flush_chars`),
`PRAGMA user_version` schema with ordered migrations. A damaged file or one
from a newer app raises a typed error and is never modified. Messages are
ordered by their row id, never by clock time. Pure Python (sqlite3 only):
must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.chat.errors import (
    ChatStoreError,
    ConversationNotFoundError,
    CorruptDatabaseError,
    MessageNotFoundError,
    MessageStateError,
    NewerSchemaError,
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
    Message,
    SearchHit,
)
from app.chat.records import (
    conversation_from_row as _conversation_from_row,
)
from app.chat.records import (
    message_from_row as _message_from_row,
)

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

# MIGRATIONS[i] takes the schema from version i to i+1. Append only; never edit a shipped entry.
MIGRATIONS: list[str] = [_SCHEMA_V1]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class _PendingText:
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    last_flush: float = 0.0


def _locked(method):
    """Serialize a read on the shared connection (writes already hold the lock via _transaction)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


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
    """One SQLite file of conversations. Safe to share between threads (calls are serialized)."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval_s: float = 0.25,
        flush_chars: int = 512,
        clock: Callable[[], float] = time.time,
        use_fts: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.flush_chars = flush_chars
        self._clock = clock
        self._lock = threading.RLock()
        self._pending: dict[int, _PendingText] = {}
        self._check_existing_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a message the user saw as sent must survive power loss, not just an app crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self.has_fts = fts5_available() if use_fts is None else use_fts
        if self.has_fts:
            self._db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(content)")
            self._rebuild_fts_if_stale()
        # Anything still "streaming" was cut off by a crash or kill: keep its text, mark it interrupted.
        with self._transaction():
            rows = self._db.execute("SELECT id FROM messages WHERE state = ?", (STREAMING,)).fetchall()
            self._db.execute("UPDATE messages SET state = ? WHERE state = ?", (PARTIAL, STREAMING))
        self.recovered_message_ids: list[int] = [row["id"] for row in rows]
        if self.recovered_message_ids and self.has_fts:
            self._rebuild_fts_if_stale()

    # ---- opening, checking, migrating ---------------------------------------------------------

    def _check_existing_file(self) -> None:
        """Read-only look at an existing file before any PRAGMA that could rewrite its header."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        if not os.access(self.path, os.R_OK | os.W_OK):
            # Not damage: say so, or the user would be told to move a healthy file aside.
            raise ChatStoreError(f"Cannot read and write the chat history file {self.path} (check its permissions).")
        try:
            probe = sqlite3.connect(self.path, isolation_level=None)
            try:
                version = probe.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise NewerSchemaError(self.path, version, SCHEMA_VERSION)
                verdict = probe.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                probe.close()
        except sqlite3.DatabaseError as error:
            raise CorruptDatabaseError(self.path, str(error)) from error
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
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for message_id in list(self._pending):
                self.flush(message_id)
            self._db.close()

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
                (title, now, now, model_id, bits, system_prompt, json.dumps(sampling or {})),
            )
        return self.get_conversation(cursor.lastrowid)

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
        self._update_conversation(conversation_id, "title = ?", (title,))

    def set_conversation_settings(self, conversation_id: int, *, system_prompt: str, sampling: dict[str, Any]) -> None:
        """The chat's own system prompt and sampling preset (keys: app.settings.SAMPLING_FIELDS).

        The row is the truth for its chat (app.settings.CONVERSATION_FIELDS says why); `sampling_json`
        written as {} by older versions means "the defaults". Not a new message, so the chat keeps its
        place in the list (`updated` is not touched).
        """
        self._update_conversation(
            conversation_id, "system_prompt = ?, sampling_json = ?", (system_prompt, json.dumps(sampling)), touch=False
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
                model_id if model_id is not None else current.model_id,
                bits if bits is not None else current.bits,
                system_prompt if system_prompt is not None else current.system_prompt,
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
        self, conversation_id: int, assignments: str, values: tuple, *, touch: bool = True
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
        return cursor.lastrowid

    @_locked
    def get_message(self, message_id: int) -> Message:
        row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id)
        pending = self._pending.get(message_id)
        message = _message_from_row(row)
        if pending and pending.parts:  # show the caller what it has appended, flushed or not
            message = dataclasses.replace(message, content=message.content + "".join(pending.parts))
        return message

    @_locked
    def list_messages(self, conversation_id: int) -> list[Message]:
        self.get_conversation(conversation_id)
        rows = self._db.execute(
            "SELECT id FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [self.get_message(row["id"]) for row in rows]

    def begin_assistant_message(self, conversation_id: int, *, stats: AnswerStats | None = None) -> int:
        """Create an empty assistant message in state "streaming"; returns its id."""
        with self._transaction():
            message_id = self._insert_message(conversation_id, "assistant", "", stats, STREAMING)
        self._pending[message_id] = _PendingText(last_flush=time.monotonic())
        return message_id

    def append_partial(self, message_id: int, text: str) -> bool:
        """Add streamed text. Commits only when `flush_interval_s` has passed or `flush_chars` are
        waiting, so a per-token caller costs a few commits a second. Returns True if it committed."""
        with self._lock:
            pending = self._pending.get(message_id)
            if pending is None:
                raise MessageStateError(f"Message {message_id} is not streaming (begin_assistant_message first).")
            pending.parts.append(text)
            pending.chars += len(text)
            due = time.monotonic() - pending.last_flush >= self.flush_interval_s
            if due or pending.chars >= self.flush_chars:
                self.flush(message_id)
                return True
            return False

    def flush(self, message_id: int) -> None:
        """Commit any appended text now (also done by finish_message and close)."""
        with self._lock:
            pending = self._pending.get(message_id)
            if pending is None or not pending.parts:
                return
            text = "".join(pending.parts)
            with self._transaction():
                self._db.execute("UPDATE messages SET content = content || ? WHERE id = ?", (text, message_id))
            pending.parts.clear()
            pending.chars = 0
            pending.last_flush = time.monotonic()

    def finish_message(self, message_id: int, stats: AnswerStats | None = None, state: str = COMPLETE) -> Message:
        """End a streaming message: flush, record stats, set its final state (complete/partial/error)."""
        if state not in (COMPLETE, PARTIAL, ERROR):
            raise ValueError(f"final state must be complete, partial or error, not {state!r}")
        with self._lock:
            pending = self._pending.pop(message_id, None)
            text = "".join(pending.parts) if pending else ""
            with self._transaction():
                row = self._db.execute(
                    "SELECT conversation_id, content FROM messages WHERE id = ?", (message_id,)
                ).fetchone()
                if row is None:
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
        return self.get_message(message_id)

    def edit_message_and_truncate(self, message_id: int, new_content: str) -> list[int]:
        """Edit a user message and delete every later message of its conversation (edit-and-resend).
        Returns the ids that were removed."""
        message = self.get_message(message_id)
        if message.role != "user":
            raise MessageStateError(f"Only user messages can be edited (message {message_id} is {message.role}).")
        with self._transaction():
            removed = self._delete_after(message.conversation_id, message_id)
            self._db.execute("UPDATE messages SET content = ? WHERE id = ?", (new_content, message_id))
            if self.has_fts:
                self._db.execute("DELETE FROM messages_fts WHERE rowid = ?", (message_id,))
                self._db.execute("INSERT INTO messages_fts (rowid, content) VALUES (?, ?)", (message_id, new_content))
            self._touch(message.conversation_id)
        return removed

    def truncate_after(self, message_id: int, *, inclusive: bool = False) -> list[int]:
        """Delete the messages after `message_id` (and it too if inclusive), e.g. for "regenerate"."""
        message = self.get_message(message_id)
        with self._transaction():
            removed = self._delete_after(message.conversation_id, message_id - 1 if inclusive else message_id)
            self._touch(message.conversation_id)
        return removed

    def _delete_after(self, conversation_id: int, after_id: int) -> list[int]:
        ids = [
            r["id"]
            for r in self._db.execute(
                "SELECT id FROM messages WHERE conversation_id = ? AND id > ? ORDER BY id", (conversation_id, after_id)
            )
        ]
        for message_id in ids:
            self._pending.pop(message_id, None)
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            if self.has_fts:
                self._db.execute("DELETE FROM messages_fts WHERE rowid = ?", (message_id,))
        return ids

    # ---- search --------------------------------------------------------------------------------

    @_locked
    def search(self, query: str, *, limit: int = 50) -> list[SearchHit]:
        """Find messages (and titles) containing every word of `query`. Deleted conversations are skipped."""
        terms = query.split()
        if not terms:
            return []
        hits: list[SearchHit] = []
        title_clause = " AND ".join("c.title LIKE ? ESCAPE '\\'" for _ in terms)
        for row in self._db.execute(
            f"SELECT c.id, c.title FROM conversations c WHERE c.deleted_at IS NULL AND {title_clause}"
            " ORDER BY c.updated DESC LIMIT ?",
            (*[_like(t) for t in terms], limit),
        ):
            hits.append(SearchHit(row["id"], row["title"], None, row["title"]))
        if self.has_fts:
            # Each word quoted, so user input can never be parsed as FTS5 syntax; "*" allows prefixes.
            match = " ".join('"' + t.replace('"', '""') + '"*' for t in terms)
            rows = self._db.execute(
                "SELECT m.id, m.conversation_id, c.title, snippet(messages_fts, 0, char(2), char(3), '…', 12) AS snip"
                " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE messages_fts MATCH ? AND c.deleted_at IS NULL ORDER BY m.id DESC LIMIT ?",
                (match, limit),
            )
            hits += [SearchHit(r["conversation_id"], r["title"], r["id"], _unmark(r["snip"])) for r in rows]
        else:
            clause = " AND ".join("m.content LIKE ? ESCAPE '\\'" for _ in terms)
            rows = self._db.execute(
                "SELECT m.id, m.conversation_id, c.title, m.content FROM messages m"
                f" JOIN conversations c ON c.id = m.conversation_id WHERE c.deleted_at IS NULL AND {clause}"
                " ORDER BY m.id DESC LIMIT ?",
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
