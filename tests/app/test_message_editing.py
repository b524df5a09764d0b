"""Editing an older message: its own keys belong to its editor, not to the window.

Ctrl+Enter in the edit box saves and resends that edit (it used to send the
unrelated draft in the message box); Esc cancels the edit (it used to stop the
answer). Offscreen Qt, real key events through Qt's shortcut machinery.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QAction, QKeySequence, QShortcut  # noqa: E402
from PySide6.QtWidgets import QMainWindow, QPlainTextEdit  # noqa: E402

from app.chat.records import COMPLETE, AnswerStats, Message  # noqa: E402
from app.ui.message_widget import MessageWidget  # noqa: E402


@pytest.fixture
def window_with_message(qtbot):
    """A window whose Esc (an action, like "Stop answer") and Ctrl+Enter (a shortcut, like
    "send the draft") record what fired, holding one user message."""
    window = QMainWindow()
    fired: list[str] = []
    stop = QAction("Stop answer", window)
    stop.setShortcut(QKeySequence(Qt.Key.Key_Escape))
    stop.triggered.connect(lambda: fired.append("stop"))
    window.addAction(stop)
    for keys in ("Ctrl+Return", "Ctrl+Enter"):
        QShortcut(QKeySequence(keys), window, lambda: fired.append("send draft"))
    message = Message(
        id=7, conversation_id=1, role="user", content="first text", created=0.0, stats=AnswerStats(), state=COMPLETE
    )
    widget = MessageWidget(message, dark=False)
    window.setCentralWidget(widget)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window, widget, fired


def open_editor(qtbot, widget: MessageWidget) -> QPlainTextEdit:
    widget.begin_edit()
    box = widget.editor.findChild(QPlainTextEdit)
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=2000)
    return box


@pytest.mark.parametrize("key", [Qt.Key.Key_Return, Qt.Key.Key_Enter])
def test_ctrl_enter_in_the_edit_box_resends_the_edit_not_the_draft(qtbot, window_with_message, key):
    _window, widget, fired = window_with_message
    box = open_editor(qtbot, widget)
    box.setPlainText("edited text")
    with qtbot.waitSignal(widget.editSubmitted, timeout=2000) as sent:
        qtbot.keyClick(box, key, Qt.KeyboardModifier.ControlModifier)
    assert sent.args == [7, "edited text"]
    assert fired == [] and widget.editor is None


def test_escape_in_the_edit_box_cancels_the_edit_not_the_answer(qtbot, window_with_message):
    _window, widget, fired = window_with_message
    box = open_editor(qtbot, widget)
    box.setPlainText("half-edited")
    qtbot.keyClick(box, Qt.Key.Key_Escape)
    assert fired == [] and widget.editor is None
    assert widget.message.content == "first text"


def test_outside_the_edit_box_the_window_keys_still_work(qtbot, window_with_message):
    window, widget, fired = window_with_message
    window.setFocus()
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert fired == ["stop"]
