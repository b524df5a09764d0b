"""The whole window against the real engine process on the embedded model (offscreen Qt, no mocks).

Each test builds a MainWindow on a private TMAC_CHAT_HOME (tests/app/conftest.py)
and drives it the way a user does: typing in the composer, clicking Send, Stop,
Regenerate, the thread slider, the banner's "Restart engine".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time

import pytest

from tests.app.live_engine import ANSWER_TIMEOUT_MS, LOAD_TIMEOUT_MS, LONG_PROMPT, engine_cache_dir  # noqa: F401

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QScrollBar,
)

from app.chat.store import AnswerStats, ChatStore  # noqa: E402
from app.paths import app_paths  # noqa: E402
from app.settings import AppSettings, load_settings  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.ui.main_window import MainWindow  # noqa: E402
from app.ui.sampling_panel import AUTOMATIC_CONTEXT_SHOWN  # noqa: E402
from app.workers.protocol import EngineState  # noqa: E402

pytestmark = pytest.mark.engine


class Harness:
    """A MainWindow plus what it emitted, with the steps the tests repeat."""

    def __init__(self, qtbot, window: MainWindow) -> None:
        self.qtbot, self.window = qtbot, window
        self.chunks: list = []
        self.finished: list = []
        window.session.answerChunk.connect(self.chunks.append)
        window.session.answerFinished.connect(self.finished.append)

    def start_engine(self):
        with self.qtbot.waitSignal(self.window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
            self.window.start_engine()
        return blocker.args[0]

    def send(self, text: str) -> None:
        self.chunks.clear()
        self.window.composer.prompt.setPlainText(text)
        self.qtbot.mouseClick(self.window.composer.send_button, Qt.MouseButton.LeftButton)
        assert self.window.session.busy, "Send should start an answer"

    def wait_chunks(self, n: int) -> None:
        self.qtbot.waitUntil(lambda: len(self.chunks) >= n, timeout=ANSWER_TIMEOUT_MS)

    def wait_answer(self, after: int | None = None):
        """The next finished answer. `after`: how many had finished before the request was made,
        when the event loop ran since (an answer can finish within the wait for another signal)."""
        count = len(self.finished) if after is None else after
        self.qtbot.waitUntil(lambda: len(self.finished) > count, timeout=ANSWER_TIMEOUT_MS)
        return self.finished[-1]

    def messages(self):
        return self.window.store.list_messages(self.window.session.conversation_id)


@pytest.fixture
def open_window(qtbot, engine_cache_dir):  # noqa: F811 (fixture imported above)
    stores: list[ChatStore] = []

    def open_(**settings) -> Harness:
        paths = app_paths().ensure()
        store = ChatStore(paths.chat_db_file)
        stores.append(store)
        base = {"temperature": 0.0, "seed": 0, "max_tokens": 24, "n_ctx": 512}
        window = MainWindow(SettingsStore(AppSettings(**{**base, **settings}), paths.settings_file), paths, store)
        qtbot.addWidget(window)
        window.show()
        return Harness(qtbot, window)

    yield open_
    for store in stores:
        store.close()


def test_send_streams_an_answer_into_the_view_the_panel_and_the_database(open_window):
    h = open_window()
    info = h.start_engine()
    painted: list[str] = []
    h.window.session.answerText.connect(lambda _id, _t: painted.append(h.window.perf_panel.tokens.text()))
    h.send("What is the capital of France?")
    assert h.window.composer.stop_button.isVisible() and not h.window.composer.send_button.isVisible()
    answer = h.wait_answer()

    assert len(h.chunks) >= 3 and h.chunks[-1].finish_reason in ("stop", "length")
    assert "Paris" in answer.content
    shown = h.window.chat_view.message_widget(answer.id)
    assert shown is not None and shown.text == answer.content
    user, stored = h.messages()
    assert (user.role, user.content) == ("user", "What is the capital of France?")
    assert stored.state == "complete" and stored.content == answer.content
    for name in ("generated_tokens", "decode_tok_s", "ttft_s", "prompt_tok_s", "threads", "tier"):
        assert getattr(stored.stats, name) is not None, name
    assert stored.stats.bits == info.bits and stored.stats.tier == info.tier  # bits None: as in the file
    assert "tok/s" in shown.stats_label.text() and shown.stats_label.isVisible()
    assert float(h.window.perf_panel.speed.text()) > 0
    assert h.window.conversations.list.item(0).text() == "What is the capital of France?"
    assert h.window.composer.send_button.isVisible() and h.window.composer.prompt.toPlainText() == ""


def test_stop_button_keeps_the_partial_answer(open_window, qtbot):
    h = open_window(max_tokens=400)
    h.start_engine()
    h.send(LONG_PROMPT)
    h.wait_chunks(5)
    qtbot.mouseClick(h.window.composer.stop_button, Qt.MouseButton.LeftButton)
    answer = h.wait_answer()
    assert answer.state == "partial" and answer.content
    assert h.chunks[-1].finish_reason == "cancelled" and h.chunks[-1].generated_tokens < 200
    widget = h.window.chat_view.message_widget(answer.id)
    assert widget.note_label.isVisible() and "Stopped" in widget.note_label.text()


def test_ctrl_enter_sends_and_escape_stops(open_window, qtbot):
    h = open_window(max_tokens=400)
    h.start_engine()
    h.window.activateWindow()
    qtbot.waitUntil(h.window.isActiveWindow, timeout=3000)
    h.window.composer.prompt.setFocus()
    qtbot.keyClicks(h.window.composer.prompt, LONG_PROMPT)
    qtbot.keyClick(h.window.composer.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert h.window.session.busy and h.window.composer.prompt.toPlainText() == ""
    h.wait_chunks(3)
    qtbot.keyClick(h.window, Qt.Key.Key_Escape)
    assert h.wait_answer().state == "partial"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to change the thread count")
def test_thread_slider_changes_the_engine_threads_mid_answer(open_window):
    h = open_window(max_tokens=300, n_threads=2)
    h.start_engine()
    h.send(LONG_PROMPT)
    h.wait_chunks(3)
    assert h.chunks[-1].threads == 2
    h.window.perf_panel.slider.setValue(1)
    h.qtbot.waitUntil(lambda: h.chunks[-1].threads == 1, timeout=ANSWER_TIMEOUT_MS)
    assert h.chunks[-1].finish_reason is None, "the new count must apply while the answer is still running"
    h.qtbot.waitUntil(lambda: h.window.perf_panel.threads_used.text() == "1", timeout=5000)
    h.window.session.stop()
    answer = h.wait_answer()
    assert answer.stats.threads == 1
    h.window.settings_store.flush()
    assert load_settings(h.window.paths.settings_file).settings.n_threads == 1


def test_regenerate_replaces_the_last_answer(open_window, qtbot):
    h = open_window()
    h.start_engine()
    h.send("Name a fruit.")
    first = h.wait_answer()
    button = h.window.chat_view.message_widget(first.id).regenerate_button
    assert button.isVisible() and button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    second = h.wait_answer()
    assert second.id != first.id
    assert second.content == first.content, "greedy decoding with the same history repeats itself"
    messages = h.messages()
    assert [m.role for m in messages] == ["user", "assistant"] and messages[1].id == second.id
    assert h.window.chat_view.message_widget(first.id) is None


def test_edit_and_resend_truncates_and_answers_the_new_text(open_window, qtbot):
    h = open_window()
    h.start_engine()
    h.send("What is the capital of Italy?")
    h.wait_answer()
    user = h.messages()[0]
    widget = h.window.chat_view.message_widget(user.id)
    qtbot.mouseClick(widget.edit_button, Qt.MouseButton.LeftButton)
    widget.editor.findChild(QPlainTextEdit).setPlainText("What is the capital of France?")
    save = next(b for b in widget.editor.findChildren(QAbstractButton) if b.text().startswith("Save"))
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    answer = h.wait_answer()
    messages = h.messages()
    assert [m.content for m in messages[:1]] == ["What is the capital of France?"]
    assert len(messages) == 2 and messages[1].id == answer.id and "Paris" in answer.content


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signal")
def test_engine_killed_mid_answer_keeps_the_window_and_the_text(open_window, qtbot):
    h = open_window(max_tokens=400)
    h.start_engine()
    h.send(LONG_PROMPT)
    h.wait_chunks(3)
    answer_id = h.window.session.answer_id
    started = time.monotonic()
    h.qtbot.waitUntil(lambda: time.monotonic() - started > 0.6, timeout=10_000)
    # Read the file through its own connection: the partial text must be committed while streaming.
    with sqlite3.connect(h.window.store.path) as db:
        content, state = db.execute("SELECT content, state FROM messages WHERE id = ?", (answer_id,)).fetchone()
    assert state == "streaming" and content, "partial text is flushed while the answer streams"

    with qtbot.waitSignal(h.window.client.died, timeout=10_000):
        os.kill(h.window.client.pid, signal.SIGKILL)
    assert h.window.isVisible()
    banner = h.window.engine_banner
    # a plain sentence up front; the signal behind Details, for a bug report
    assert banner.isVisible() and "stopped unexpectedly" in banner.label.text()
    assert "SIGKILL" not in banner.label.text() and "SIGKILL" in banner.details_label.text()
    assert banner.details_button.isVisible() and not banner.details_label.isVisible()
    banner.details_button.click()
    assert banner.details_label.isVisible()
    assert banner.action_button.text() == "Restart engine" and banner.action_button.isVisible()
    stored = h.window.store.get_message(answer_id)
    assert stored.state == "partial" and stored.content.startswith(content)
    assert h.window.chat_view.message_widget(answer_id).text == stored.content
    assert "Interrupted" in h.window.chat_view.message_widget(answer_id).note_label.text()
    assert not h.window.composer.send_button.isEnabled() and not h.window.session.busy

    with qtbot.waitSignal(h.window.client.loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(banner.action_button, Qt.MouseButton.LeftButton)
    assert not banner.isVisible() and h.window.composer.send_button.isEnabled()
    h.send("Say hi.")
    assert h.wait_answer().state in ("complete", "partial")


def test_conversations_survive_an_app_restart(open_window):
    h = open_window()
    h.start_engine()
    h.send("What is the capital of France?")
    answer = h.wait_answer()
    h.window.close()
    h.window.store.close()

    again = open_window()  # a new window and store on the same data folder
    assert again.window.session.conversation_id == answer.conversation_id
    assert again.window.conversations.list.item(0).text() == "What is the capital of France?"
    widget = again.window.chat_view.message_widget(answer.id)
    assert widget is not None and widget.text == answer.content
    assert "tok/s" in widget.stats_label.text()


def test_context_overflow_shows_the_counts(open_window):
    h = open_window(n_ctx=128)
    h.start_engine()
    h.send("Summarise this: " + "The quick brown fox jumps over the lazy dog. " * 40)
    answer = h.wait_answer()
    assert answer.state == "error"
    banner = h.window.notice_banner
    assert banner.isVisible() and "holds 128" in banner.label.text() and "tokens" in banner.label.text()


def test_a_long_chat_is_trimmed_and_the_user_is_told(open_window):
    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        conversation = store.create_conversation("Long chat")
        filler = "An old message about gardening and tomatoes, kept for the record. " * 5
        for turn in range(8):
            store.add_message(conversation.id, "user", f"Question {turn}: {filler}")
            store.add_message(conversation.id, "assistant", f"Answer {turn}: {filler}")
    h = open_window(n_ctx=256, max_tokens=8)
    assert h.window.session.conversation_id == conversation.id
    h.start_engine()
    h.send("What is 2 + 2?")
    answer = h.wait_answer()
    assert answer.state == "complete" and answer.stats.trimmed_messages >= 2
    banner = h.window.notice_banner
    assert banner.isVisible() and "not visible to the model" in banner.label.text()
    assert len(h.messages()) == 18, "trimming limits what the model sees, never the stored history"


def test_chat_list_search_rename_delete_undo_and_export(open_window, tmp_path, qtbot):
    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        first = store.create_conversation("Tomatoes")
        store.add_message(first.id, "user", "How deep should I plant tomato seedlings?")
        store.add_message(
            first.id,
            "assistant",
            "Plant them deep, up to the first leaves.",
            stats=AnswerStats(generated_tokens=9, decode_tok_s=50.0),
        )
        second = store.create_conversation("Bread")
        store.add_message(second.id, "user", "Why does sourdough rise?")
    h = open_window()
    listing = h.window.conversations
    assert [listing.list.item(i).text() for i in range(listing.list.count())] == ["Bread", "Tomatoes"]

    qtbot.keyClicks(listing.search_box, "seedlings")
    qtbot.waitUntil(lambda: listing.list.count() == 1 and "seedlings" in listing.list.item(0).text(), timeout=3000)
    qtbot.mouseClick(
        listing.list.viewport(),
        Qt.MouseButton.LeftButton,
        pos=listing.list.visualItemRect(listing.list.item(0)).center(),
    )
    assert h.window.session.conversation_id == first.id
    listing.search_box.clear()
    qtbot.waitUntil(lambda: listing.list.count() == 2, timeout=3000)

    listing.rename(first.id, "Tomato planting")
    assert h.window.store.get_conversation(first.id).title == "Tomato planting"
    listing.delete(first.id)
    assert listing.undo_bar.isVisible() and listing.list.count() == 1
    assert h.window.chat_view.widgets == {}
    qtbot.mouseClick(listing.undo_button, Qt.MouseButton.LeftButton)
    assert listing.list.count() == 2 and h.window.session.conversation_id == first.id

    markdown = listing.export_to(first.id, tmp_path / "chat", "markdown")
    text = markdown.read_text(encoding="utf-8")
    assert markdown.suffix == ".md" and "# Tomato planting" in text and "Plant them deep" in text
    exported = json.loads(listing.export_to(first.id, tmp_path / "chat.json", "json").read_text(encoding="utf-8"))
    assert [m["content"] for m in exported["messages"]][0] == "How deep should I plant tomato seedlings?"
    assert exported["messages"][1]["stats"]["generated_tokens"] == 9


def test_shortcuts_new_chat_and_find(open_window, qtbot):
    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        old = store.create_conversation("Old chat")
        store.add_message(old.id, "user", "hello")
    h = open_window()
    assert h.window.session.conversation_id == old.id
    h.window.activateWindow()  # window shortcuts only fire in the active window
    qtbot.waitUntil(h.window.isActiveWindow, timeout=3000)
    qtbot.keyClick(h.window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert h.window.session.conversation_id != old.id and h.window.chat_view.widgets == {}
    qtbot.keyClick(h.window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert h.window.conversations.search_box.hasFocus()


def test_sampling_panel_changes_are_saved(open_window, qtbot):
    h = open_window()
    panel = h.window.sampling_panel
    panel.temperature.setValue(1.25)
    panel.seed.setValue(42)
    panel.system_prompt.setPlainText("Answer like a pirate.")
    qtbot.waitUntil(lambda: h.window.settings.system_prompt == "Answer like a pirate.", timeout=3000)
    h.window.settings_store.flush()
    saved = load_settings(h.window.paths.settings_file).settings
    assert (saved.temperature, saved.seed, saved.system_prompt) == (1.25, 42, "Answer like a pirate.")
    assert saved.max_tokens == 24, "fields nobody touched keep their values"


def test_each_chat_keeps_its_own_system_prompt_and_sampling(open_window, qtbot):
    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        old = store.create_conversation("Old chat")  # as written before chats kept their sampling: {}
        store.add_message(old.id, "user", "hello")
    h = open_window()
    panel = h.window.sampling_panel
    assert h.window.session.conversation_id == old.id and panel.conversation_id == old.id
    assert panel.max_tokens.value() == 24 and panel.default_button.isVisible(), "an old chat runs with the defaults"

    h.window.new_chat()
    short = h.window.session.conversation_id
    assert short != old.id and panel.conversation_id == short
    panel.max_tokens.setValue(3)
    panel.system_prompt.setPlainText("Answer like a pirate.")
    h.start_engine()
    h.send("Tell me a long story about the sea.")
    assert h.wait_answer().stats.generated_tokens <= 3
    row = h.window.store.get_conversation(short)
    assert row.system_prompt == "Answer like a pirate." and row.sampling["max_tokens"] == 3
    assert (h.window.settings.max_tokens, h.window.settings.system_prompt) == (24, ""), "defaults untouched"

    h.window.conversations.conversationActivated.emit(old.id)
    assert panel.max_tokens.value() == 24 and panel.system_prompt.toPlainText() == ""
    h.window.conversations.conversationActivated.emit(short)
    assert panel.max_tokens.value() == 3 and panel.system_prompt.toPlainText() == "Answer like a pirate."
    qtbot.mouseClick(panel.default_button, Qt.MouseButton.LeftButton)
    assert (h.window.settings.max_tokens, h.window.settings.system_prompt) == (3, "Answer like a pirate.")
    h.window.new_chat()
    fresh = h.window.store.get_conversation(h.window.session.conversation_id)
    assert fresh.id not in (old.id, short) and fresh.sampling["max_tokens"] == 3
    assert fresh.system_prompt == "Answer like a pirate."
    h.window.settings_store.flush()
    assert load_settings(h.window.paths.settings_file).settings.max_tokens == 3


def test_every_window_shares_the_one_settings_store(open_window, tmp_path):
    h = open_window(theme="light")
    window, settings = h.window, h.window.settings_store
    window.open_measure()
    window.open_about()
    holders = [window.models_page, window.perf_panel, window.sampling_panel] + window._dialogs
    assert len(holders) == 5 and all(holder.settings_store is settings for holder in holders)
    settings.update(n_threads=1)  # as the speed sweep's "Use the best thread count" does
    assert window.perf_panel.slider.value() == 1 and window.client._threads == 1
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    settings.update(models_dir=str(folder))
    assert str(folder) in window.models_page.folder_label.text()
    settings.update(theme="dark")
    assert window.dark
    with pytest.raises(ValueError, match="n_threads"):
        settings.update(n_threads=0)
    assert window.settings.n_threads == 1


def test_every_control_has_an_accessible_name(open_window):
    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        chat = store.create_conversation("Code")
        store.add_message(chat.id, "user", "Show me a loop.")
        store.add_message(chat.id, "assistant", "Here:\n```python\nfor i in range(3):\n    print(i)\n```\nDone.")
    h = open_window()
    widget = h.window.chat_view.message_widget(2)
    assert widget.code_blocks() and widget.regenerate_button.isVisibleTo(h.window)
    h.window.notice_banner.show_message("info", "A notice", "Act", lambda: None)
    kinds = (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QLineEdit, QPlainTextEdit, QListWidget)
    unnamed = []
    for kind in kinds:
        for widget in h.window.chat_page.findChildren(kind):
            if isinstance(widget, QScrollBar) or widget.objectName() == "qt_spinbox_lineedit":
                continue  # parts of a scroll area or a spin box, named through their owner
            if widget.isVisibleTo(h.window.chat_page) and not widget.accessibleName():
                unnamed.append(f"{type(widget).__name__} {widget.objectName()!r}")
    assert not unnamed, unnamed


def test_copy_buttons_copy_the_code_block_and_the_message(open_window, qtbot):
    paths = app_paths().ensure()
    answer = "Here:\n```python\nfor i in range(3):\n    print(i)\n```\nDone."
    with ChatStore(paths.chat_db_file) as store:
        chat = store.create_conversation("Code")
        store.add_message(chat.id, "user", "Show me a loop.")
        message = store.add_message(chat.id, "assistant", answer)
    h = open_window()
    widget = h.window.chat_view.message_widget(message.id)
    [code] = widget.code_blocks()
    assert code.language_label.text() == "python"
    clipboard = QGuiApplication.clipboard()
    qtbot.mouseClick(code.copy_button, Qt.MouseButton.LeftButton)
    assert clipboard.text() == "for i in range(3):\n    print(i)"
    assert code.copy_button.text() == "Copied"
    qtbot.mouseClick(widget.copy_button, Qt.MouseButton.LeftButton)
    assert clipboard.text() == answer


def test_choosing_a_model_on_the_models_page_loads_it_with_progress(open_window, qtbot):
    h = open_window()
    h.start_engine()
    assert h.window.client.info.bits is None and not h.window.engine_banner.isVisible()  # as in the file
    assert "as in the file" in h.window.model_label.text()
    progress: list[float] = []
    h.window.client.loadProgress.connect(lambda fraction, _stage: progress.append(fraction))
    with qtbot.waitSignal(h.window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        h.window.models_page.modelChosen.emit("default", 2)
        assert h.window.progress.isVisible() or h.window.client.state == EngineState.READY
    assert blocker.args[0].bits == 2 and progress and progress[-1] == 1.0
    assert not h.window.progress.isVisible() and "2-bit" in h.window.model_label.text()
    assert h.window.tabs.currentWidget() is h.window.chat_page
    h.window.settings_store.flush()
    saved = load_settings(h.window.paths.settings_file).settings
    assert (saved.model_source, saved.default_bits) == ("default", 2)
    h.send("Say hi.")
    assert h.wait_answer().stats.bits == 2
    # 135M parameters at 2 bits: the answers turn to nonsense, and the chat says so without blocking.
    banner = h.window.engine_banner
    assert banner.isVisible() and banner.kind == "warning" and "135M parameters" in banner.label.text()
    # the native low-bit model to take instead (the best that fits this machine: app.catalog.inventory)
    assert h.window.models_page.alternative.name in banner.label.text()
    assert banner.action_button.text() == "Load at 4-bit"
    with qtbot.waitSignal(h.window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        banner.action_button.click()
    assert blocker.args[0].bits == 4 and not banner.isVisible()


def test_theme_choice_restyles_and_is_saved(open_window):
    h = open_window(theme="light")
    h.window.set_theme("dark")
    assert h.window.dark and h.window.palette().window().color().lightness() < 80
    h.window.set_theme("light")
    assert not h.window.dark and h.window.palette().window().color().lightness() > 200
    h.window.settings_store.flush()
    assert load_settings(h.window.paths.settings_file).settings.theme == "light"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Just prose.", [("text", "Just prose.", "")]),
        (
            "Intro\n```python\nx = 1\n```\nOutro",
            [("text", "Intro", ""), ("code", "x = 1", "python"), ("text", "Outro", "")],
        ),
        ("Streaming\n```c\nint x;\nint y", [("text", "Streaming", ""), ("code", "int x;\nint y", "c")]),
        ("~~~\nplain\n~~~", [("code", "plain", "")]),
        ("````md\n```inner```\n````", [("code", "```inner```", "md")]),
    ],
)
def test_messages_split_into_prose_and_code_blocks(text, expected):
    from app.ui.markdown_blocks import split_blocks

    assert [(b.kind, b.text, b.language) for b in split_blocks(text)] == expected


def test_a_streamed_code_block_grows_in_place(open_window, qtbot):
    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        chat = store.create_conversation("Streaming")
        answer_id = store.begin_assistant_message(chat.id)
    h = open_window()
    view = h.window.chat_view
    view.append_text(answer_id, "Here:\n```python\ndef f():")
    qtbot.waitUntil(lambda: len(view.message_widget(answer_id).code_blocks()) == 1, timeout=2000)
    block = view.message_widget(answer_id).code_blocks()[0]
    for piece in ("\n    return", " 1", "\n```\nDone."):
        view.append_text(answer_id, piece)
    qtbot.waitUntil(lambda: view.message_widget(answer_id).text.endswith("Done."), timeout=2000)
    assert view.message_widget(answer_id).code_blocks() == [block], "the same widget, updated, not rebuilt"
    assert block.code == "def f():\n    return 1"


def test_a_message_sent_while_loading_is_queued_and_the_header_shows_the_context(open_window, qtbot):
    """First launch: the model takes a while to load. The chat shows a loading card with the stage,
    Enter queues the message (it was silently ignored), and it is answered once the model is ready.
    With the context left at its default the engine chooses it from the model and free memory, and
    the header shows the last prompt and answer against it."""
    from app.catalog.context import choose_n_ctx
    from app.hardware import available_memory_bytes

    h = open_window(n_ctx=AppSettings().n_ctx)
    card = h.window.chat_view.loading_card
    stages: list[tuple[bool, str]] = []
    h.window.client.loadProgress.connect(lambda _f, stage: stages.append((card.isVisible(), stage)))
    question = "What is the capital of France?"
    answered_before = len(h.finished)
    with qtbot.waitSignal(h.window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        h.window.start_engine()
        assert card.isVisible() and not h.window.chat_view.empty_label.isVisible()
        h.window.composer.prompt.setPlainText(question)
        qtbot.keyClick(h.window.composer.prompt, Qt.Key.Key_Return)
        assert h.window.composer.queued and h.window.composer.prompt.toPlainText() == question
        assert "your message will be sent when it is ready" in h.window.composer.note.text()
    info = blocker.args[0]
    assert stages and all(visible for visible, _ in stages) and card.stage.text()
    # The queued message is sent within the Loaded reply's handling, and a fast engine's whole answer
    # can be read in that same poll, before waitSignal returns: count from before the load.
    answer = h.wait_answer(after=answered_before)
    assert "Paris" in answer.content and h.messages()[0].content == question
    assert not card.isVisible() and not h.window.composer.queued and h.window.composer.prompt.toPlainText() == ""

    assert info.n_ctx == choose_n_ctx(info.n_ctx_train, info.kv_cache_bytes // info.n_ctx, available_memory_bytes())
    assert info.n_ctx > AUTOMATIC_CONTEXT_SHOWN or info.n_ctx_train <= AUTOMATIC_CONTEXT_SHOWN
    assert h.window.sampling_panel.context.value() == info.n_ctx
    assert not h.window.sampling_panel.reload_button.isVisibleTo(h.window.sampling_panel)
    h.window.settings_store.flush()
    assert load_settings(h.window.paths.settings_file).settings.n_ctx is None  # still automatic
    last = h.chunks[-1]
    used = last.prompt_tokens + last.generated_tokens
    assert h.window.context_label.text() == f"Context {used:,} / {info.n_ctx:,} tokens"
    assert h.window.chat_title.text() == question


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signal")
def test_a_crash_restarts_the_engine_once_then_leaves_it_to_the_user(open_window, qtbot):
    from app.ui.main_window import AUTO_RESTART_DELAY_MS

    h = open_window()
    h.start_engine()
    banner, client = h.window.engine_banner, h.window.client
    with qtbot.waitSignal(client.died, timeout=10_000):
        os.kill(client.pid, signal.SIGKILL)
    assert "SIGKILL" in banner.details_label.text() and "Restarting it" in banner.label.text()
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        pass  # nobody clicks: it comes back by itself
    assert banner.isVisible() and banner.kind == "info" and "was restarted" in banner.label.text()

    with qtbot.waitSignal(client.died, timeout=10_000):  # again, before any answer worked: a crash loop
        os.kill(client.pid, signal.SIGKILL)
    qtbot.wait(AUTO_RESTART_DELAY_MS + 500)
    assert client.state == EngineState.DEAD and "Restarting" not in banner.label.text()
    assert banner.isVisible() and banner.action_button.text() == "Restart engine"

    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        qtbot.mouseClick(banner.action_button, Qt.MouseButton.LeftButton)
    h.send("Say hi.")
    assert h.wait_answer().state == "complete"
    with qtbot.waitSignal(client.died, timeout=10_000):  # an answer worked since: once more by itself
        os.kill(client.pid, signal.SIGKILL)
    assert "Restarting it" in banner.label.text()
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        pass


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signal")
def test_a_hung_engine_offers_a_restart(open_window, qtbot):
    h = open_window(max_tokens=400)
    h.start_engine()
    h.window.client.stall_s = 1.0
    h.send(LONG_PROMPT)
    h.wait_chunks(3)
    pid = h.window.client.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        banner = h.window.engine_banner
        qtbot.waitUntil(lambda: banner.isVisible() and banner.tag == "stalled", timeout=5000)
        assert "has not responded" in banner.label.text() and banner.action_button.text() == "Restart engine"
        assert h.window.isVisible() and h.window.session.busy
        with qtbot.waitSignal(h.window.client.loaded, timeout=LOAD_TIMEOUT_MS):
            qtbot.mouseClick(banner.action_button, Qt.MouseButton.LeftButton)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the restart may have killed and reaped it already
            os.kill(pid, signal.SIGCONT)
    qtbot.waitUntil(lambda: bool(h.finished), timeout=5000)  # ended by the restart itself
    answer = h.finished[-1]
    assert answer.state == "partial" and answer.content  # what had streamed is kept
    assert not h.window.session.busy and h.window.composer.send_button.isEnabled()


def test_continue_after_an_answer_cut_at_max_tokens(open_window, qtbot):
    """Continue appends to the same answer, and at temperature 0 the result is the answer a larger
    max_tokens gives: the engine goes on from the answer's own tokens, not from a new user turn."""
    h = open_window(max_tokens=8)
    h.start_engine()
    h.send(LONG_PROMPT)
    first = h.wait_answer()
    assert first.stats.finish_reason == "length"
    widget = h.window.chat_view.message_widget(first.id)
    assert widget.continue_button.isVisible() and widget.continue_button.isEnabled()
    assert "max-tokens" in widget.note_label.text()
    h.window.composer.prompt.setPlainText("a draft that must stay")
    qtbot.mouseClick(widget.continue_button, Qt.MouseButton.LeftButton)
    assert h.window.session.busy and not widget.note_label.isVisible()  # streaming again, in the same widget
    continued = h.wait_answer()
    user, answer = h.messages()
    assert (user.content, answer.id, continued.id) == (LONG_PROMPT, first.id, first.id)
    assert answer.content == continued.content and answer.content.startswith(first.content)
    assert len(answer.content) > len(first.content) and answer.stats.finish_reason == "length"
    assert (answer.stats.earlier_tokens, answer.stats.generated_tokens) == (8, 8)  # the stats are the continuation's
    assert widget.stats_label.text().startswith("8 tokens · continued after 8 tokens")
    assert widget.text == answer.content and widget.continue_button.isVisible()  # cut again: can go on
    assert h.window.composer.prompt.toPlainText() == "a draft that must stay"
    # the same question with room for 16 tokens at once, in a new chat
    h.window.settings_store.update(max_tokens=16)
    h.window.new_chat()
    h.window.composer.prompt.clear()
    h.send(LONG_PROMPT)
    reference = h.wait_answer()
    assert reference.stats.generated_tokens == 16 and reference.stats.finish_reason == "length"
    assert answer.content == reference.content
