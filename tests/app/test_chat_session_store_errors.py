"""ChatSession when the chat history cannot be written: the answer on screen is never lost.

A second process holds the database's write lock for longer than the busy timeout, or the disk
(a real 1 MiB tmpfs) fills up, while a real engine streams an answer. The session must keep
showing the whole answer, say what happened (`notice("history", …)`), retry the final commit,
and end with the full text on disk once the database can be written again.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from app.chat.store import ChatStore  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.workers.chat_session import ChatSession  # noqa: E402
from app.workers.engine_client import EngineClient  # noqa: E402
from tests.app.live_engine import ANSWER_TIMEOUT_MS, LOAD_TIMEOUT_MS, LONG_PROMPT, engine_cache_dir  # noqa: E402,F401
from tests.app.test_store_attacks import (  # noqa: E402
    fill,
    lock_held_by_another_process,
    small_disk,  # noqa: F401 (fixture)
    stored_content,
)


class Recorder:
    """What a ChatSession emitted."""

    def __init__(self, session: ChatSession) -> None:
        self.deltas: list[str] = []
        self.finished: list = []
        self.notices: list[tuple[str, str]] = []
        session.answerText.connect(lambda _id, text: self.deltas.append(text))
        session.answerFinished.connect(self.finished.append)
        session.notice.connect(lambda kind, text: self.notices.append((kind, text)))

    @property
    def shown(self) -> str:
        return "".join(self.deltas)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.notices]


@pytest.fixture
def engine(qtbot, engine_cache_dir):  # noqa: F811 (fixture imported above)
    client = EngineClient(cache_dir=engine_cache_dir)
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        client.load("default", 4, n_ctx=512, n_threads=2)
    yield client
    client.shutdown()


def settings() -> AppSettings:
    return AppSettings(temperature=0.0, seed=0, max_tokens=200, n_ctx=512)


@pytest.mark.engine
def test_a_lock_held_past_the_busy_timeout_keeps_the_answer_and_saves_it_later(qtbot, engine, tmp_path):
    path = tmp_path / "chats.sqlite3"
    store = ChatStore(path)  # the real 5 s busy timeout
    session = ChatSession(store, engine, settings)
    seen = Recorder(session)
    assert session.send(LONG_PROMPT)
    answer_id = session.answer_id
    qtbot.waitUntil(lambda: len(seen.deltas) >= 3, timeout=ANSWER_TIMEOUT_MS)
    with lock_held_by_another_process(path, 7.0):
        qtbot.wait(600)  # tokens keep arriving while the file is locked
        session.stop()
        qtbot.waitUntil(lambda: bool(seen.finished), timeout=ANSWER_TIMEOUT_MS)
        shown = seen.shown
        (message,) = seen.finished
        assert message.id == answer_id and message.content == shown and shown.strip()
        assert "history" in seen.kinds() and session.unsaved_answers == [answer_id]
        assert store.get_message(answer_id).content == shown  # a reload of the chat shows it too
    qtbot.waitUntil(lambda: not session.unsaved_answers, timeout=20_000)
    assert seen.notices[-1][0] == "saved"
    assert stored_content(path, answer_id) == (shown, "partial")
    store.close()


@pytest.mark.engine
def test_a_full_disk_keeps_the_answer_and_saves_it_when_there_is_room(qtbot, engine, small_disk):  # noqa: F811
    path = small_disk / "chats.sqlite3"
    store = ChatStore(path)
    session = ChatSession(store, engine, settings)
    seen = Recorder(session)
    assert session.send(LONG_PROMPT)
    answer_id = session.answer_id
    qtbot.waitUntil(lambda: len(seen.deltas) >= 3, timeout=ANSWER_TIMEOUT_MS)
    filler = fill(small_disk)
    qtbot.waitUntil(lambda: bool(seen.finished), timeout=ANSWER_TIMEOUT_MS)
    (message,) = seen.finished
    assert message.content == seen.shown and len(seen.shown) > 100
    assert "history" in seen.kinds() and "disk is full" in dict(seen.notices)["history"]
    assert session.unsaved_answers == [answer_id]
    filler.unlink()
    qtbot.waitUntil(lambda: not session.unsaved_answers, timeout=20_000)
    assert stored_content(path, answer_id) == (seen.shown, "complete")
    store.close()


def test_a_message_that_cannot_be_stored_is_not_sent_and_says_why(qtbot, tmp_path):
    path = tmp_path / "chats.sqlite3"
    store = ChatStore(path, busy_timeout_s=0.2)
    session = ChatSession(store, EngineClient(), settings)  # never loaded: nothing may reach the engine
    seen = Recorder(session)
    session.new_conversation()
    with lock_held_by_another_process(path, 1.5):
        assert session.send("Hello") is False
    assert seen.kinds() == ["history"] and "still in the message box" in seen.notices[0][1]
    assert not session.busy and store.list_messages(session.conversation_id) == []
    store.close()
