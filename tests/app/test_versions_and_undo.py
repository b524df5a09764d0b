"""Regenerate keeps answer versions; edit-and-resend removes nothing without an Undo.

Regenerate used to delete the previous answer, and Save & resend deleted every
later turn without a word. The whole window (offscreen Qt, a real store, the
real EngineClient with no model loaded, so every new answer ends as "not
loaded"): the "‹ 1/2 ›" switcher, the version the next prompt includes, and the
undo bar with its three endings (Undo, the next send, the timeout).
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QPlainTextEdit  # noqa: E402

from app.chat.store import AnswerStats, ChatStore  # noqa: E402
from app.paths import app_paths  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.ui.main_window import MainWindow  # noqa: E402
from app.workers import chat_session  # noqa: E402

STATS = AnswerStats(generated_tokens=3, decode_tok_s=10.0, threads=2, bits=2, tier="avx2")


@pytest.fixture
def window(qtbot):
    paths = app_paths().ensure()
    store = ChatStore(paths.chat_db_file)
    win = MainWindow(SettingsStore(AppSettings(), paths.settings_file), paths, store)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    prompts: list[list[str]] = []
    generate = win.client.generate

    def recording_generate(messages, params, fit_to_context=True, continue_text=""):  # the real one, prompt noted
        prompts.append([m["content"] for m in messages])
        return generate(messages, params, fit_to_context, continue_text)

    win.client.generate = recording_generate  # type: ignore[method-assign]
    yield win, prompts
    win.close()
    store.close()


def answer(store: ChatStore, chat_id: int, text: str, version_of: int | None = None) -> int:
    answer_id = store.begin_assistant_message(chat_id, version_of=version_of)
    store.append_partial(answer_id, text)
    store.finish_message(answer_id, STATS)
    return answer_id


def shown(win: MainWindow) -> list[str]:
    return [w.text for w in win.chat_view.widgets.values()]


def wait_answer(qtbot, win: MainWindow) -> None:
    qtbot.waitUntil(lambda: not win.session.busy, timeout=5000)


def test_regenerate_keeps_the_old_answer_behind_a_switcher(qtbot, window):
    win, prompts = window
    store = win.store
    chat = store.create_conversation("Fruit")
    store.add_message(chat.id, "user", "Name a fruit.")
    first = answer(store, chat.id, "Apple")
    store.add_message(chat.id, "user", "And a colour?")
    colour = answer(store, chat.id, "Red")
    win.session.open_conversation(chat.id)
    assert win.chat_view.message_widget(first).version_text() == ""  # one version: no switcher

    qtbot.mouseClick(win.chat_view.message_widget(colour).regenerate_button, Qt.MouseButton.LeftButton)
    new = win.session.answer_id
    widget = win.chat_view.message_widget(new)
    assert widget is not None and win.chat_view.message_widget(colour) is None  # replaced in place
    assert widget.version_text() == "‹ 2/2 ›" and not widget.previous_version.isEnabled()  # not while it streams
    assert prompts[-1] == ["Name a fruit.", "Apple", "And a colour?"]  # the history before the turn
    wait_answer(qtbot, win)
    assert widget.previous_version.isEnabled() and not widget.next_version.isEnabled()

    qtbot.mouseClick(widget.previous_version, Qt.MouseButton.LeftButton)
    assert win.chat_view.message_widget(colour) is widget and widget.version_text() == "‹ 1/2 ›"
    assert shown(win) == ["Name a fruit.", "Apple", "And a colour?", "Red"]
    assert [m.content for m in store.list_messages(chat.id)] == shown(win)
    assert store.answer_versions(colour) == [colour, new]


def test_the_version_shown_is_the_one_the_next_prompt_includes(qtbot, window):
    win, prompts = window
    store = win.store
    chat = store.create_conversation("Fruit")
    store.add_message(chat.id, "user", "Name a fruit.")
    first = answer(store, chat.id, "Apple")
    second = answer(store, chat.id, "Banana", version_of=first)
    win.session.open_conversation(chat.id)
    widget = win.chat_view.message_widget(second)
    assert widget.version_text() == "‹ 2/2 ›" and widget.text == "Banana"
    qtbot.mouseClick(widget.previous_version, Qt.MouseButton.LeftButton)
    assert widget.text == "Apple" and widget.version_text() == "‹ 1/2 ›"
    assert win.session.send("Another one?")
    assert prompts[-1] == ["Name a fruit.", "Apple", "Another one?"]
    wait_answer(qtbot, win)


def edit(qtbot, win: MainWindow, message_id: int, text: str) -> None:
    widget = win.chat_view.message_widget(message_id)
    qtbot.mouseClick(widget.edit_button, Qt.MouseButton.LeftButton)
    widget.editor.findChild(QPlainTextEdit).setPlainText(text)
    save = next(b for b in widget.editor.findChildren(QAbstractButton) if b.text().startswith("Save"))
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)


def arithmetic_chat(store: ChatStore) -> tuple[int, int]:
    chat = store.create_conversation("Sums")
    question = store.add_message(chat.id, "user", "What is 2+2?")
    answer(store, chat.id, "5")
    store.add_message(chat.id, "user", "Sure?")
    answer(store, chat.id, "Yes")
    return chat.id, question.id


def stored_rows(store: ChatStore) -> int:
    return store._db.execute("SELECT count(*) FROM messages").fetchone()[0]


def test_edit_says_what_it_removed_and_undo_puts_it_back(qtbot, window):
    win, prompts = window
    chat_id, question = arithmetic_chat(win.store)
    win.session.open_conversation(chat_id)
    before = win.store.list_messages(chat_id)
    edit(qtbot, win, question, "What is 2+3?")
    bar = win.chat_view.undo_bar
    assert bar.isVisible() and bar.label.text() == "Edited: 3 later messages were removed."
    assert prompts[-1] == ["What is 2+3?"]
    assert win.session.busy  # Undo while the answer to the edit is still coming
    qtbot.mouseClick(bar.button, Qt.MouseButton.LeftButton)
    assert not win.session.busy and not bar.isVisible()
    assert win.store.list_messages(chat_id) == before
    assert shown(win) == ["What is 2+2?", "5", "Sure?", "Yes"]
    qtbot.wait(50)  # the engine's late "not loaded" reply for the undone answer changes nothing
    assert win.store.list_messages(chat_id) == before


def test_the_removal_becomes_final_when_the_chat_moves_on(qtbot, window):
    win, _prompts = window
    chat_id, question = arithmetic_chat(win.store)
    win.session.open_conversation(chat_id)
    edit(qtbot, win, question, "What is 2+3?")
    wait_answer(qtbot, win)
    assert stored_rows(win.store) == 5  # 3 hidden, not deleted, while Undo is offered; the new answer
    assert win.session.send("Thanks")
    assert not win.chat_view.undo_bar.isVisible() and stored_rows(win.store) == 4  # the 3 are gone; 2 new
    assert not win.session.undo_edit()
    wait_answer(qtbot, win)


def test_the_undo_offer_times_out(qtbot, window, monkeypatch):
    monkeypatch.setattr(chat_session, "UNDO_WINDOW_S", 0.3)
    win, _prompts = window
    chat_id, question = arithmetic_chat(win.store)
    win.session.open_conversation(chat_id)
    edit(qtbot, win, question, "What is 2+3?")
    assert win.chat_view.undo_bar.isVisible()
    qtbot.waitUntil(lambda: not win.chat_view.undo_bar.isVisible(), timeout=3000)
    assert stored_rows(win.store) == 2 and [m.content for m in win.store.list_messages(chat_id)][0] == "What is 2+3?"
