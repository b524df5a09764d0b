"""Chat history under attack: locks held by another process, a full disk, odd things at the database
path, lone surrogates and pathological search input. Qt-free.

What must hold: nothing committed or shown is lost (the text of a write that failed stays in
memory and is committed later), every failure is a typed ChatStoreError (never a raw sqlite3,
OS or Unicode error), start-up problems say in plain words what they are, and search input of
any shape answers quickly.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.chat.errors import (
    ChatStoreError,
    CorruptDatabaseError,
    DatabaseBusyError,
    DiskFullError,
    NotADatabaseFileError,
    ReadOnlyDatabaseError,
    StorageError,
    UnsavedTextError,
)
from app.chat.store import IN_MEMORY, ChatStore, clean_text, search_terms
from app.main import close_store, open_store

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chats.sqlite3"


# ---- helpers: another process holding the lock, a small real disk ---------------------------------------


@contextlib.contextmanager
def lock_held_by_another_process(path: Path, seconds: float, *, exclusive_mode: bool = False) -> Iterator[None]:
    """A second process that takes the database's write lock (BEGIN EXCLUSIVE) and keeps it for
    `seconds`; yields once the lock is held. `exclusive_mode`: locking_mode=EXCLUSIVE as well, so not
    even readers get in (what a foreign tool or a stuck instance can do)."""
    script = textwrap.dedent(
        f"""
        import sqlite3, sys, time
        db = sqlite3.connect({str(path)!r}, isolation_level=None)
        if {exclusive_mode!r}:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("SELECT count(*) FROM messages").fetchone()
        print("locked", flush=True)
        time.sleep({seconds!r})
        db.execute("COMMIT")
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.wait(timeout=seconds + 30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs): running out of space gives the OS's own ENOSPC."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


def stored_content(path: Path, message_id: int) -> tuple[str, str]:
    """(content, state) as another connection sees it on disk."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT content, state FROM messages WHERE id = ?", (message_id,)).fetchone()
    finally:
        db.close()


# ---- 1. nothing shown is lost -------------------------------------------------------------------------------


def test_a_lock_held_longer_than_the_busy_timeout_loses_no_streamed_text(db_path):
    """The real defaults (5 s busy timeout) against a process holding BEGIN EXCLUSIVE for 6.5 s."""
    chats = ChatStore(db_path, flush_interval_s=0.0)
    conversation = chats.create_conversation()
    answer = chats.begin_assistant_message(conversation.id)
    chats.append_partial(answer, "Before the lock. ")
    with lock_held_by_another_process(db_path, 6.5):
        with pytest.raises(DatabaseBusyError) as caught:
            chats.append_partial(answer, "During the lock.")
        assert "locked by another program" in str(caught.value)
        assert chats.get_message(answer).content == "Before the lock. During the lock."
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError):
            chats.finish_message(answer)
        assert time.monotonic() - started >= 4.5  # it did wait the busy timeout
        # The failed finish kept the text: it is still shown, not the empty row on disk.
        assert chats.get_message(answer).content == "Before the lock. During the lock."
        assert chats.list_messages(conversation.id)[0].content == "Before the lock. During the lock."
    finished = chats.finish_message(answer)
    assert (finished.content, finished.state) == ("Before the lock. During the lock.", "complete")
    chats.close()
    assert stored_content(db_path, answer) == ("Before the lock. During the lock.", "complete")


def test_a_full_database_keeps_the_text_until_there_is_room(db_path):
    """SQLITE_FULL for real, through SQLite's own size limit (max_page_count)."""
    chats = ChatStore(db_path, flush_chars=10)
    conversation = chats.create_conversation()
    answer = chats.begin_assistant_message(conversation.id)
    pages = chats._db.execute("PRAGMA page_count").fetchone()[0]
    chats._db.execute(f"PRAGMA max_page_count={pages}")
    big = "All work and no play. " * 5000  # ~110 kB: needs new pages
    with pytest.raises(DiskFullError):
        chats.append_partial(answer, big)
    with pytest.raises(DiskFullError):
        chats.finish_message(answer)
    assert chats.get_message(answer).content == big
    chats._db.execute("PRAGMA max_page_count=1073741823")
    assert chats.finish_message(answer).content == big
    chats.close()
    assert stored_content(db_path, answer) == (big, "complete")


def test_a_real_full_disk_keeps_the_text_and_close_reports_what_was_not_saved(small_disk):
    path = small_disk / "chats.sqlite3"
    chats = ChatStore(path, flush_chars=10)
    conversation = chats.create_conversation()
    answer = chats.begin_assistant_message(conversation.id)
    filler = fill(small_disk)
    text = "Text the user has already read. " * 2000
    with pytest.raises(DiskFullError):
        chats.append_partial(answer, text)
    with pytest.raises(DiskFullError):
        chats.finish_message(answer)
    assert chats.get_message(answer).content == text
    with pytest.raises(UnsavedTextError) as caught:
        chats.close()
    assert caught.value.texts == {answer: text}
    filler.unlink()
    again = ChatStore(path)  # the disk has room again: what was committed is intact
    assert again.list_messages(conversation.id)[0].content == ""
    again.close()


def test_close_store_writes_unsaved_text_to_a_file(db_path, capsys):
    chats = ChatStore(db_path, flush_chars=10)
    conversation = chats.create_conversation()
    answer = chats.begin_assistant_message(conversation.id)
    chats._db.execute(f"PRAGMA max_page_count={chats._db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(DiskFullError):
        chats.append_partial(answer, "x" * 200_000)
    close_store(chats, db_path.parent)
    (kept,) = db_path.parent.glob("unsaved-answers-*.txt")
    assert "x" * 200_000 in kept.read_text(encoding="utf-8")
    assert str(kept) in capsys.readouterr().err


WRITES: dict[str, Callable[[ChatStore, int, int], object]] = {
    "create_conversation": lambda s, c, m: s.create_conversation("Another"),
    "rename_conversation": lambda s, c, m: s.rename_conversation(c, "Renamed"),
    "set_conversation_settings": lambda s, c, m: s.set_conversation_settings(c, system_prompt="Hi", sampling={}),
    "update_conversation": lambda s, c, m: s.update_conversation(c, model_id="other"),
    "delete_conversation": lambda s, c, m: s.delete_conversation(c),
    "add_message": lambda s, c, m: s.add_message(c, "user", "Hello again"),
    "begin_assistant_message": lambda s, c, m: s.begin_assistant_message(c),
    "edit_message_and_truncate": lambda s, c, m: s.edit_message_and_truncate(m, "Edited"),
    "truncate_after": lambda s, c, m: s.truncate_after(m),
    "purge_deleted": lambda s, c, m: (s.delete_conversation(s.create_conversation().id), s.purge_deleted()),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_every_write_commits_or_raises_a_typed_error_and_changes_nothing(db_path, write):
    chats = ChatStore(db_path, busy_timeout_s=0.2)
    conversation = chats.create_conversation("Kept")
    first = chats.add_message(conversation.id, "user", "Hello")
    chats.add_message(conversation.id, "assistant", "Hi")
    before = chats._db.execute("SELECT * FROM messages").fetchall(), chats.list_conversations(include_deleted=True)
    with lock_held_by_another_process(db_path, 1.0):
        with pytest.raises(DatabaseBusyError):
            WRITES[write](chats, conversation.id, first.id)
        after = chats._db.execute("SELECT * FROM messages").fetchall(), chats.list_conversations(include_deleted=True)
        assert [tuple(r) for r in after[0]] == [tuple(r) for r in before[0]] and after[1] == before[1]
    assert not chats._db.in_transaction  # rolled back: the connection is usable again
    WRITES[write](chats, conversation.id, first.id)
    chats.close()


# ---- 2. typed errors at start-up, and the app still starts ---------------------------------------------------


def test_a_folder_at_the_database_path_is_reported_as_a_folder(db_path):
    db_path.mkdir()
    with pytest.raises(NotADatabaseFileError) as caught:
        ChatStore(db_path)
    assert f"{db_path} is a folder, not a chat database" in str(caught.value)
    assert not isinstance(caught.value, CorruptDatabaseError)  # no "move the damaged file aside"


def test_a_fifo_at_the_database_path_is_reported_and_never_blocks(db_path):
    os.mkfifo(db_path)
    script = (
        "import sys; from app.chat.store import ChatStore\n"
        "try:\n    ChatStore(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(db_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.startswith("NotADatabaseFileError") and "named pipe (FIFO)" in done.stdout, done


def test_a_database_locked_by_another_instance_is_not_called_damaged(db_path):
    ChatStore(db_path).close()
    with lock_held_by_another_process(db_path, 3.0, exclusive_mode=True):
        with pytest.raises(DatabaseBusyError) as caught:
            ChatStore(db_path, busy_timeout_s=0.2)
    assert "locked by another program" in str(caught.value)


def test_a_write_lock_of_another_instance_does_not_stop_the_history_from_opening(db_path):
    with ChatStore(db_path) as chats:
        chats.add_message(chats.create_conversation("Old").id, "user", "Hello")
    with lock_held_by_another_process(db_path, 3.0):
        started = time.monotonic()
        with ChatStore(db_path, busy_timeout_s=2.0) as chats:
            assert [c.title for c in chats.list_conversations()] == ["Old"]
        assert time.monotonic() - started < 1.5  # opening did not wait for the lock


def test_start_up_writes_nothing_when_there_is_nothing_to_write(db_path):
    """What the window does at every start (open, purge old deleted chats, list) works next to an
    instance that holds the write lock, without waiting for it."""
    with ChatStore(db_path) as chats:
        chats.delete_conversation(chats.create_conversation("Recent bin").id)
    with lock_held_by_another_process(db_path, 3.0):
        started = time.monotonic()
        with ChatStore(db_path, busy_timeout_s=2.0) as chats:
            assert chats.purge_deleted(older_than_s=3600) == 0
            assert chats.list_conversations() == []
        assert time.monotonic() - started < 1.5


def test_starting_on_a_full_disk_is_a_typed_error(small_disk):
    fill(small_disk)
    with pytest.raises(DiskFullError) as caught:
        ChatStore(small_disk / "chats.sqlite3")
    assert "disk is full" in str(caught.value)


def test_a_read_only_folder_is_a_typed_error(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(ChatStoreError) as caught:
        ChatStore(small_disk / "chats.sqlite3")
    assert isinstance(caught.value, (ReadOnlyDatabaseError, StorageError))


def test_a_read_only_database_file_is_a_typed_error(small_disk):
    path = small_disk / "chats.sqlite3"
    ChatStore(path).close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(ReadOnlyDatabaseError):
        ChatStore(path)


@pytest.mark.parametrize("case", ["folder", "fifo", "corrupt-kept", "locked"])
def test_the_app_starts_on_an_in_memory_history_and_says_why(db_path, case):
    told: list[str] = []
    if case == "folder":
        db_path.mkdir()
    elif case == "fifo":
        os.mkfifo(db_path)
    elif case == "corrupt-kept":
        db_path.write_bytes(b"This is not a database at all. " * 100)
    holder = lock_held_by_another_process(db_path, 8.0, exclusive_mode=True) if case == "locked" else None
    if holder is not None:
        ChatStore(db_path).close()
        holder.__enter__()
    try:
        store, warning = open_store(db_path, move_aside=lambda error: False, tell=told.append)
    finally:
        if holder is not None:
            holder.__exit__(None, None, None)
    assert store.temporary and told == [warning] and "will not be saved" in warning
    store.add_message(store.create_conversation().id, "user", "still works")
    store.close()
    if case == "folder":
        assert "is a folder, not a chat database" in warning and db_path.is_dir()


def test_a_damaged_file_moved_aside_on_request_gives_a_fresh_history(db_path):
    db_path.write_bytes(b"garbage " * 512)
    store, warning = open_store(db_path, move_aside=lambda error: True, tell=lambda text: None)
    assert warning == "" and not store.temporary and store.list_conversations() == []
    store.close()
    assert len(list(db_path.parent.glob("chats.sqlite3.corrupt-*"))) == 1


def test_an_in_memory_store_keeps_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ChatStore(IN_MEMORY) as chats:
        chats.add_message(chats.create_conversation().id, "user", "hi")
    assert list(tmp_path.iterdir()) == []


# ---- 3. text: lone surrogates, pathological search --------------------------------------------------------------

LONE = "broken \ud83d and \udc00 halves"
PAIR = "a pair \ud83d\ude00 joined"


def test_clean_text_joins_pairs_and_replaces_lone_surrogates():
    assert clean_text(LONE) == "broken \ufffd and \ufffd halves"
    assert clean_text(PAIR) == "a pair \U0001f600 joined"
    assert clean_text("plain ✓") == "plain ✓"


def test_lone_surrogates_in_every_field_are_stored_as_replacement_characters(db_path):
    with ChatStore(db_path, flush_interval_s=0.0) as chats:
        conversation = chats.create_conversation(LONE, model_id=LONE, system_prompt=LONE, sampling={"x": LONE})
        chats.rename_conversation(conversation.id, PAIR)
        chats.set_conversation_settings(conversation.id, system_prompt=LONE, sampling={"x": LONE})
        chats.update_conversation(conversation.id, model_id=PAIR, system_prompt=PAIR)
        user = chats.add_message(conversation.id, "user", LONE)
        answer = chats.begin_assistant_message(conversation.id)
        chats.append_partial(answer, LONE)
        chats.finish_message(answer)
        chats.edit_message_and_truncate(user.id, PAIR)
        chats.add_message(conversation.id, "assistant", LONE)
        assert chats.search(LONE) is not None
    with ChatStore(db_path) as chats:
        (conversation,) = chats.list_conversations()
        assert (conversation.title, conversation.model_id, conversation.system_prompt) == (
            clean_text(PAIR),
            clean_text(PAIR),
            clean_text(PAIR),
        )
        assert [m.content for m in chats.list_messages(conversation.id)] == [clean_text(PAIR), clean_text(LONE)]
        assert chats.search("\ufffd") is not None


PATHOLOGICAL = {
    "thousands of terms": " ".join(f"w{i}" for i in range(5000)),
    "one very long term": "a" * 200_000,
    "many long terms": " ".join("b" * 5000 for _ in range(200)),
    "only punctuation": "?! ... ,;: --- ((( )))",
    "fts5 operators": 'NEAR(a b, 2) AND OR NOT ^start col:term * - + " "',
    "unbalanced quotes": '"""" \' " "a',
    "nul and controls": "hello\x00world \x01\x02\x03 \x7f",
    "surrogates": "\ud800 \udfff x\ud83d",
    "percent and underscore": "100% a_b \\ %_",
    "only spaces": " \t\n   ",
}


@pytest.mark.parametrize("use_fts", [True, False], ids=["fts5", "like"])
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_search_input_answers_quickly_without_errors(db_path, use_fts, name):
    with ChatStore(db_path, use_fts=use_fts) as chats:
        conversation = chats.create_conversation("Searchable")
        for i in range(200):
            chats.add_message(conversation.id, "user", f"message {i}: hello world?! 100% a_b (((")
        started = time.monotonic()
        hits = chats.search(PATHOLOGICAL[name])
        assert time.monotonic() - started < 2.0
        assert isinstance(hits, list)


@pytest.mark.parametrize("use_fts", [True, False], ids=["fts5", "like"])
def test_search_finds_punctuation_and_operators_literally(db_path, use_fts):
    with ChatStore(db_path, use_fts=use_fts) as chats:
        conversation = chats.create_conversation("Plain")
        wow = chats.add_message(conversation.id, "user", "Really?! That works")
        chats.add_message(conversation.id, "user", "Nothing here")
        percent = chats.add_message(conversation.id, "user", "It is 100% done")
        assert [h.message_id for h in chats.search("?!")] == [wow.id]
        assert [h.message_id for h in chats.search("really ?!")] == [wow.id]
        assert [h.message_id for h in chats.search("100%")] == [percent.id]
        assert chats.search("That OR zzz") == []  # "OR" is a word to find, not an operator


def test_search_terms_are_bounded():
    terms = search_terms(" ".join(f"t{i}" for i in range(10_000)) + " " + "z" * 10_000)
    assert 0 < len(terms) <= 16 and all(len(t) <= 100 for t in terms)
    assert search_terms("a\x00b") == ["a", "b"]
    assert search_terms("dup dup dup") == ["dup"]
