"""Chat-history store: persistence, streaming flushes, crash recovery, corrupt/newer files, search, edits."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.chat import store as store_module
from app.chat.errors import (
    ConversationNotFoundError,
    CorruptDatabaseError,
    DatabaseBusyError,
    MessageNotFoundError,
    MessageStateError,
    NewerSchemaError,
)
from app.chat.store import SCHEMA_VERSION, AnswerStats, ChatStore, EditUndo, move_database_aside

REPO_ROOT = Path(__file__).resolve().parents[2]
STATS = AnswerStats(
    generated_tokens=12, decode_tok_s=20.5, ttft_s=0.3, prompt_tok_s=150.0, threads=2, bits=2, tier="avx2"
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chats.sqlite3"


def test_pragmas_and_schema_version(db_path):
    with ChatStore(db_path) as chats:
        assert chats._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert chats._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert chats._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert chats._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_survives_close_and_reopen(db_path):
    with ChatStore(db_path) as chats:
        conversation = chats.create_conversation(
            "Trip", model_id="qwen2.5-0.5b-instruct", bits=2, system_prompt="Be brief.", sampling={"temperature": 0.2}
        )
        chats.add_message(conversation.id, "user", "Hello")
        answer = chats.begin_assistant_message(conversation.id)
        chats.append_partial(answer, "Hi ")
        chats.append_partial(answer, "there")
        chats.finish_message(answer, STATS)
    with ChatStore(db_path) as chats:
        (again,) = chats.list_conversations()
        assert (again.title, again.model_id, again.bits, again.system_prompt, again.sampling) == (
            "Trip",
            "qwen2.5-0.5b-instruct",
            2,
            "Be brief.",
            {"temperature": 0.2},
        )
        messages = chats.list_messages(again.id)
        assert [(m.role, m.content, m.state) for m in messages] == [
            ("user", "Hello", "complete"),
            ("assistant", "Hi there", "complete"),
        ]
        assert messages[1].stats == STATS
        assert chats.recovered_message_ids == []


def test_append_partial_coalesces_commits(db_path):
    with ChatStore(db_path, flush_interval_s=0.25, flush_chars=1000) as chats:
        conversation = chats.create_conversation()
        message_id = chats.begin_assistant_message(conversation.id)
        committed = [chats.append_partial(message_id, "x") for _ in range(50)]
        assert committed.count(True) <= 1  # 50 quick tokens → at most one commit
        chats._pending[message_id].last_flush -= 1.0  # pretend a second went by
        assert chats.append_partial(message_id, "y") is True
        stored = chats._db.execute("SELECT content FROM messages WHERE id = ?", (message_id,)).fetchone()[0]
        assert stored == "x" * 50 + "y"
        assert chats.get_message(message_id).state == "streaming"


def test_append_partial_flushes_on_size(db_path):
    with ChatStore(db_path, flush_interval_s=3600, flush_chars=10) as chats:
        conversation = chats.create_conversation()
        message_id = chats.begin_assistant_message(conversation.id)
        assert chats.append_partial(message_id, "12345") is False
        assert chats.append_partial(message_id, "67890") is True


def test_append_to_unknown_or_finished_message_is_an_error(db_path):
    with ChatStore(db_path) as chats:
        conversation = chats.create_conversation()
        message_id = chats.begin_assistant_message(conversation.id)
        chats.finish_message(message_id, state="error")
        with pytest.raises(MessageStateError):
            chats.append_partial(message_id, "late")
        with pytest.raises(ConversationNotFoundError):
            chats.add_message(999, "user", "nobody")


def test_streaming_message_left_open_becomes_partial(db_path):
    chats = ChatStore(db_path, flush_interval_s=0)
    conversation = chats.create_conversation()
    message_id = chats.begin_assistant_message(conversation.id)
    chats.append_partial(message_id, "half an ans")
    chats._db.close()  # no finish_message: as if the app died
    with ChatStore(db_path) as reopened:
        message = reopened.get_message(message_id)
        assert (message.state, message.content) == ("partial", "half an ans")
        assert reopened.recovered_message_ids == [message_id]
        assert [hit.message_id for hit in reopened.search("half")] == [message_id]


_STREAMER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from app.chat.store import ChatStore
    chats = ChatStore(sys.argv[1], flush_interval_s=0.25, flush_chars=10**9)
    conversation = chats.create_conversation("crash test")
    chats.add_message(conversation.id, "user", "tell me a long story")
    message_id = chats.begin_assistant_message(conversation.id)
    print(message_id, flush=True)
    sent = 0
    while True:
        chats.append_partial(message_id, "0123456789")
        sent += 10
        print(sent, flush=True)
        time.sleep(0.005)
""")


def test_sigkill_while_streaming_loses_at_most_the_unflushed_tail(db_path):
    child = subprocess.Popen(
        [sys.executable, "-c", _STREAMER, str(db_path), str(REPO_ROOT)], stdout=subprocess.PIPE, text=True
    )
    try:
        message_id = int(child.stdout.readline())
        started, sent = time.monotonic(), 0
        while time.monotonic() - started < 1.2:
            sent = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    rate = sent / 1.2  # chars per second the child was producing
    with ChatStore(db_path) as chats:
        (conversation,) = chats.list_conversations()
        messages = chats.list_messages(conversation.id)
        assert [m.content for m in messages if m.role == "user"] == ["tell me a long story"]
        answer = chats.get_message(message_id)
        assert answer.state == "partial"
        assert answer.content == ("0123456789" * (len(answer.content) // 10))
        lost = sent - len(answer.content)
        assert lost <= rate * 0.25 + 200, (sent, len(answer.content))  # ≤ one flush interval (+ pipe slack)
        assert chats._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_corrupt_file_gives_error_and_is_left_untouched(db_path):
    db_path.write_bytes(b"this is not a database, just some bytes" * 100)
    before = db_path.read_bytes()
    with pytest.raises(CorruptDatabaseError) as caught:
        ChatStore(db_path)
    assert caught.value.path == db_path and str(db_path) in str(caught.value)
    assert db_path.read_bytes() == before
    moved = move_database_aside(db_path)
    assert moved.read_bytes() == before and not db_path.exists()
    with ChatStore(db_path) as fresh:  # a new, empty history can then be created
        assert fresh.list_conversations() == []


def test_damaged_page_in_real_database_is_detected(db_path):
    with ChatStore(db_path) as chats:
        conversation = chats.create_conversation()
        for index in range(300):
            chats.add_message(conversation.id, "user", f"message {index} " + "x" * 200)
        chats._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path.read_bytes())
    page = 4096
    data[3 * page : 4 * page] = b"\xff" * page  # trash one b-tree page in the middle
    db_path.write_bytes(bytes(data))
    before = db_path.read_bytes()
    with pytest.raises(CorruptDatabaseError):
        ChatStore(db_path)
    assert db_path.read_bytes() == before


def test_newer_schema_gives_error_and_is_left_untouched(db_path):
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE future (x)")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    before = db_path.read_bytes()
    with pytest.raises(NewerSchemaError) as caught:
        ChatStore(db_path)
    assert caught.value.found_version == SCHEMA_VERSION + 1
    assert db_path.read_bytes() == before


def test_migrations_apply_in_order_with_backup(db_path, monkeypatch):
    with ChatStore(db_path) as chats:
        chats.add_message(chats.create_conversation("old").id, "user", "kept")
    monkeypatch.setattr(
        store_module,
        "MIGRATIONS",
        [*store_module.MIGRATIONS, "ALTER TABLE conversations ADD COLUMN pinned INTEGER DEFAULT 0"],
    )
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with ChatStore(db_path) as chats:
        assert chats._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert chats._db.execute("SELECT pinned FROM conversations").fetchone()[0] == 0
        assert [m.content for m in chats.list_messages(chats.list_conversations()[0].id)] == ["kept"]
    assert (db_path.parent / f"chats.backup-v{SCHEMA_VERSION}.sqlite3").exists()


def test_list_order_rename_delete_restore_purge(db_path):
    clock = iter(range(1000, 2000))
    with ChatStore(db_path, clock=lambda: float(next(clock))) as chats:
        first = chats.create_conversation("first")
        second = chats.create_conversation("second")
        assert [c.title for c in chats.list_conversations()] == ["second", "first"]
        chats.add_message(first.id, "user", "bump")
        assert [c.title for c in chats.list_conversations()] == ["first", "second"]
        chats.rename_conversation(second.id, "renamed")
        assert chats.get_conversation(second.id).title == "renamed"
        chats.delete_conversation(first.id)
        assert [c.title for c in chats.list_conversations()] == ["renamed"]
        assert chats.search("bump") == []
        chats.restore_conversation(first.id)
        assert len(chats.list_conversations()) == 2
        chats.delete_conversation(first.id)
        assert chats.purge_deleted() == 1
        with pytest.raises(ConversationNotFoundError):
            chats.get_conversation(first.id)
        assert chats._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


@pytest.mark.parametrize("use_fts", [True, False], ids=["fts5", "like"])
def test_search(db_path, use_fts):
    with ChatStore(db_path, use_fts=use_fts) as chats:
        assert chats.has_fts is use_fts
        a = chats.create_conversation("Cooking")
        b = chats.create_conversation("Travel plans")
        chats.add_message(a.id, "user", "How long do I boil an egg?")
        chats.add_message(b.id, "user", "Trains from Lyon to Turin")
        chats.add_message(b.id, "assistant", 'The "egg" train? 100% sure_not')
        hits = chats.search("egg")
        assert {(h.conversation_id, h.message_id is not None) for h in hits} == {(a.id, True), (b.id, True)}
        assert [h.conversation_id for h in chats.search("travel")] == [b.id]  # title match
        assert [h.conversation_id for h in chats.search("lyon turin")] == [b.id]
        assert {h.message_id for h in chats.search('"egg"')} >= {m.id for m in chats.list_messages(b.id)[1:]}
        assert chats.search("100%") and chats.search("") == []


def test_edit_user_message_truncates_the_rest(db_path):
    with ChatStore(db_path) as chats:
        conversation = chats.create_conversation()
        question = chats.add_message(conversation.id, "user", "What is 2+2?")
        answer = chats.add_message(conversation.id, "assistant", "5")
        follow_up = chats.add_message(conversation.id, "user", "Sure?")
        removed = chats.edit_message_and_truncate(question.id, "What is 2+3?")
        assert removed == [answer.id, follow_up.id]
        assert [m.content for m in chats.list_messages(conversation.id)] == ["What is 2+3?"]
        assert [h.message_id for h in chats.search("2+3")] == [question.id]
        with pytest.raises(MessageStateError):
            chats.edit_message_and_truncate(chats.add_message(conversation.id, "assistant", "5").id, "x")


def test_regenerate_removes_last_answer(db_path):
    with ChatStore(db_path) as chats:
        conversation = chats.create_conversation()
        chats.add_message(conversation.id, "user", "hi")
        answer = chats.add_message(conversation.id, "assistant", "bad answer")
        assert chats.truncate_after(answer.id, inclusive=True) == [answer.id]
        assert [m.role for m in chats.list_messages(conversation.id)] == ["user"]


@pytest.mark.parametrize("use_fts", [True, False], ids=["fts5", "like"])
def test_search_snippets_are_the_text_itself_without_markers(db_path, use_fts):
    with ChatStore(db_path, use_fts=use_fts) as chats:
        chat = chats.create_conversation("Arrays")
        chats.add_message(chat.id, "user", "Index [0] of the array, then the egg")
        (hit,) = [h for h in chats.search("egg") if h.message_id]
        assert "[0]" in hit.snippet and "egg" in hit.snippet
        assert not any(c in hit.snippet for c in "\x02\x03") and "[egg]" not in hit.snippet


def test_stats_rows_written_before_answer_stats_still_load(db_path):
    # What the app stored before AnswerStats: a dict with its own key names.
    old = {
        "tokens": 12,
        "tokens_per_s": 20.5,
        "ttft_s": 0.3,
        "prompt_tokens_per_s": 150.0,
        "threads": 2,
        "prompt_tokens": 30,
        "cached_tokens": 8,
        "cpu_s": 1.25,
        "elapsed_s": 0.9,
        "finish_reason": "length",
        "bits": 2,
        "kernel_tier": "avx2",
        "model": "SmolLM2",
        "error": "stopped",
        "trimmed_messages": 4,
    }
    with ChatStore(db_path) as chats:
        conversation = chats.create_conversation()
        answer = chats.add_message(conversation.id, "assistant", "Hi")
        damaged = chats.add_message(conversation.id, "assistant", "Hello")
        with chats._transaction():
            chats._db.execute("UPDATE messages SET stats_json = ? WHERE id = ?", (json.dumps(old), answer.id))
            chats._db.execute(
                "UPDATE messages SET stats_json = ? WHERE id = ?",
                (json.dumps({"tokens": "many", "threads": True, "bits": 4, "later": 1}), damaged.id),
            )
    with ChatStore(db_path) as chats:
        stats = chats.get_message(answer.id).stats
        assert stats == AnswerStats(
            generated_tokens=12,
            decode_tok_s=20.5,
            ttft_s=0.3,
            prompt_tok_s=150.0,
            threads=2,
            prompt_tokens=30,
            cached_tokens=8,
            cpu_s=1.25,
            elapsed_s=0.9,
            finish_reason="length",
            bits=2,
            tier="avx2",
            model="SmolLM2",
            error="stopped",
            trimmed_messages=4,
        )
        assert chats.get_message(damaged.id).stats == AnswerStats(bits=4), "bad values are skipped, not fatal"
        chats.finish_message(chats.begin_assistant_message(conversation.id), stats)
        row = chats._db.execute("SELECT stats_json FROM messages ORDER BY id DESC LIMIT 1").fetchone()[0]
        assert json.loads(row) == stats.to_json() and "decode_tok_s" in json.loads(row)


def test_answer_stats_from_a_final_chunk():
    from tmac_core.types import Chunk

    chunk = Chunk(
        text="",
        token_id=None,
        prompt_tokens=30,
        cached_tokens=8,
        generated_tokens=12,
        prompt_tok_s=150.04,
        decode_tok_s=20.512,
        ttft_s=0.3004,
        elapsed_s=0.9001,
        cpu_s=1.2501,
        threads=2,
        finish_reason="stop",
    )
    stats = AnswerStats.from_chunk(chunk)
    assert (stats.generated_tokens, stats.decode_tok_s, stats.prompt_tok_s, stats.ttft_s) == (12, 20.51, 150.0, 0.3)
    assert stats.finish_reason == "stop" and stats.bits is None and stats.error is None
    assert AnswerStats.from_json(stats.to_json()) == stats


def test_a_chat_keeps_its_own_system_prompt_and_sampling(db_path):
    """The conversation row is the truth for its chat's system prompt and sampling (app.settings
    CONVERSATION_FIELDS); changing them does not move the chat in the list."""
    from app.settings import AppSettings, conversation_sampling, for_conversation

    ticks = iter(range(1, 1000))
    defaults = AppSettings(system_prompt="Be brief.", temperature=0.7)
    with ChatStore(db_path, clock=lambda: float(next(ticks))) as chats:
        older = chats.create_conversation(
            "Older", system_prompt=defaults.system_prompt, sampling=conversation_sampling(defaults)
        )
        newer = chats.create_conversation("Newer")  # as rows were written before chats kept their sampling
        chats.set_conversation_settings(
            older.id,
            system_prompt="Answer like a pirate.",
            sampling=conversation_sampling(defaults.replace(temperature=0.1, seed=7)),
        )
        assert [c.id for c in chats.list_conversations()] == [newer.id, older.id]
        with pytest.raises(ConversationNotFoundError):
            chats.set_conversation_settings(999, system_prompt="", sampling={})
    with ChatStore(db_path) as chats:
        own = chats.get_conversation(older.id)
        chat = for_conversation(defaults, own.system_prompt, own.sampling)
        assert (chat.system_prompt, chat.temperature, chat.seed, chat.top_k) == ("Answer like a pirate.", 0.1, 7, 40)
        old = chats.get_conversation(newer.id)
        assert old.sampling == {} and for_conversation(defaults, old.system_prompt, old.sampling).temperature == 0.7


def answered(chats: ChatStore, conversation_id: int, text: str, *, version_of: int | None = None) -> int:
    """An answer streamed and finished the way ChatSession does it; returns its id."""
    answer_id = chats.begin_assistant_message(conversation_id, version_of=version_of)
    chats.append_partial(answer_id, text)
    chats.finish_message(answer_id, STATS)
    return answer_id


def test_regenerate_keeps_the_earlier_answer_as_a_version_to_switch_back_to(db_path):
    with ChatStore(db_path) as chats:
        chat = chats.create_conversation()
        question = chats.add_message(chat.id, "user", "Name a fruit.")
        first = answered(chats, chat.id, "Apple")
        second = answered(chats, chat.id, "Banana", version_of=first)
        shown = chats.list_messages(chat.id)
        assert [(m.id, m.version, m.versions) for m in shown] == [(question.id, 1, 1), (second, 2, 2)]
        assert chats.answer_versions(first) == chats.answer_versions(second) == [first, second]
        # A third version of the turn (regenerating the second) joins the same turn.
        third = answered(chats, chat.id, "Cherry", version_of=second)
        follow_up = chats.add_message(chat.id, "user", "Another one?")
        assert chats.show_version(first).content == "Apple"
        assert [m.content for m in chats.list_messages(chat.id)] == ["Name a fruit.", "Apple", "Another one?"]
        assert [h.message_id for h in chats.search("Cherry")] == []  # only what is shown is found
        assert [h.message_id for h in chats.search("Apple")] == [first]
        with pytest.raises(MessageStateError):
            chats.begin_assistant_message(chat.id, version_of=question.id)  # a user message has no versions
    with ChatStore(db_path) as chats:  # the choice is stored, not kept in memory
        shown = chats.list_messages(chat.id)
        assert [(m.id, m.version, m.versions) for m in shown] == [
            (question.id, 1, 1),
            (first, 1, 3),
            (follow_up.id, 1, 1),
        ]
        assert chats.get_message(third).version == 3
        # truncate_after on a version removes the whole turn, every version of it
        assert chats.truncate_after(third, inclusive=True) == [first, second, third, follow_up.id]
        assert [m.id for m in chats.list_messages(chat.id)] == [question.id]


def test_edit_hides_later_messages_and_undo_puts_them_back(db_path):
    with ChatStore(db_path) as chats:
        chat = chats.create_conversation()
        question = chats.add_message(chat.id, "user", "What is 2+2?")
        first = answered(chats, chat.id, "5")
        second = answered(chats, chat.id, "4", version_of=first)
        follow_up = chats.add_message(chat.id, "user", "Sure?")
        chats.show_version(first)
        before = chats.list_messages(chat.id)
        undo = chats.edit_message_and_hide_later(question.id, "What is 2+3?")
        assert undo.shown == 2 and set(undo.removed_ids) == {first, second, follow_up.id}
        assert [m.content for m in chats.list_messages(chat.id)] == ["What is 2+3?"]
        assert chats.search("Sure") == []
        answer_to_edit = answered(chats, chat.id, "5, surely")
        assert chats.undo_edit(undo) == [answer_to_edit]
        # the old text, the later messages, and the version that was shown
        assert chats.list_messages(chat.id) == before
        with pytest.raises(MessageStateError):
            chats.edit_message_and_hide_later(first, "an answer is not edited")


def test_a_removal_becomes_final_when_purged_or_at_the_next_start(db_path):
    with ChatStore(db_path) as chats:
        chat = chats.create_conversation()
        question = chats.add_message(chat.id, "user", "Hello")
        answer = answered(chats, chat.id, "Hi")
        undo = chats.edit_message_and_hide_later(question.id, "Hello there")
        assert chats._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2  # hidden, not deleted
        assert chats.purge_removed(chat.id) == [answer]
        assert chats._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        again = answered(chats, chat.id, "Hello!")
        chats.edit_message_and_hide_later(question.id, "Hello again")
        assert undo.removed_ids == (answer,)
    with ChatStore(db_path) as chats:  # the undo offer ended with the app: the removal is final
        assert chats._db.execute("SELECT id FROM messages").fetchall()[0][0] == question.id
        assert chats._db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        assert [m.content for m in chats.list_messages(chat.id)] == ["Hello again"]
        with pytest.raises(MessageNotFoundError):
            chats.get_message(again)


def test_a_database_written_by_schema_version_1_opens_and_gains_versions(db_path):
    # The file as the app wrote it before answer versions: schema 1, exactly as shipped.
    old = sqlite3.connect(db_path)
    old.executescript(store_module.MIGRATIONS[0])
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO conversations (title, created, updated) VALUES ('Old chat', 1.0, 1.0)")
    old.execute(
        "INSERT INTO messages (conversation_id, role, content, created, state)"
        " VALUES (1, 'user', 'Hi', 1.0, 'complete')"
    )
    old.execute(
        "INSERT INTO messages (conversation_id, role, content, created, stats_json, state)"
        " VALUES (1, 'assistant', 'Hello', 2.0, '{\"tokens\": 3}', 'complete')"
    )
    old.commit()
    old.close()
    with ChatStore(db_path) as chats:
        assert chats._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
        user, answer = chats.list_messages(1)
        assert (user.content, answer.content, answer.stats.generated_tokens) == ("Hi", "Hello", 3)
        assert (answer.version_of, answer.version, answer.versions) == (None, 1, 1)
        newer = answered(chats, 1, "Hello again", version_of=answer.id)
        assert [(m.content, m.version, m.versions) for m in chats.list_messages(1)][1] == ("Hello again", 2, 2)
        assert chats.search("Hi")[0].message_id == user.id
    assert (db_path.parent / "chats.backup-v1.sqlite3").exists()
    with ChatStore(db_path) as chats:
        assert chats.answer_versions(newer) == [answer.id, newer]


def _version_writes() -> dict[str, Callable[[ChatStore, int, int, int], object]]:
    # (store, conversation, user message, answer) → a write of answer versions or edit undo
    return {
        "begin_assistant_message(version_of)": lambda s, c, u, a: s.begin_assistant_message(c, version_of=a),
        "show_version": lambda s, c, u, a: s.show_version(a),
        "edit_message_and_hide_later": lambda s, c, u, a: s.edit_message_and_hide_later(u, "Edited"),
        "undo_edit": lambda s, c, u, a: s.undo_edit(EditUndo(c, u, "Hello", (a,), 1)),
        "purge_removed": lambda s, c, u, a: s.purge_removed(c),
    }


@pytest.mark.parametrize("write", sorted(_version_writes()))
def test_version_and_undo_writes_commit_or_change_nothing(db_path, write):
    from tests.app.test_store_attacks import lock_held_by_another_process

    chats = ChatStore(db_path, busy_timeout_s=0.2)
    conversation = chats.create_conversation("Kept")
    user = chats.add_message(conversation.id, "user", "Hello")
    answer = answered(chats, conversation.id, "Hi")
    chats._db.execute("UPDATE messages SET removed_at = 1.0 WHERE id = ?", (answer,))  # as an edit leaves it
    before = [tuple(r) for r in chats._db.execute("SELECT * FROM messages")]
    with lock_held_by_another_process(db_path, 1.0):
        with pytest.raises(DatabaseBusyError):
            _version_writes()[write](chats, conversation.id, user.id, answer)
        assert [tuple(r) for r in chats._db.execute("SELECT * FROM messages")] == before
    assert not chats._db.in_transaction
    chats.close()
