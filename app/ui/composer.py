"""Composer: the prompt box with Send and Stop.

Enter or Ctrl+Enter sends, Shift+Enter adds a line (what LM Studio, Jan and
GPT4All users expect). While an answer streams, Send turns into Stop, and the
text box stays editable so the next question can be typed meanwhile.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget


class PromptEdit(QPlainTextEdit):
    submitted = Signal()

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if (
            event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class Composer(QWidget):
    sendRequested = Signal(str)
    stopRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        self.busy = False
        self.ready = False
        self.prompt = PromptEdit()
        self.prompt.setObjectName("promptBox")
        self.prompt.setAccessibleName("Message")
        self.prompt.setAccessibleDescription("Type a message. Enter sends, Shift+Enter adds a new line.")
        self.prompt.setPlaceholderText("Message the model…  (Enter to send, Shift+Enter for a new line)")
        self.prompt.setTabChangesFocus(True)
        self.prompt.setFixedHeight(84)
        self.prompt.submitted.connect(self.submit)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.setAccessibleName("Send message")
        self.send_button.setToolTip("Send (Enter or Ctrl+Enter)")
        self.send_button.clicked.connect(self.submit)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setAccessibleName("Stop answer")
        self.stop_button.setToolTip("Stop the answer (Esc)")
        self.stop_button.clicked.connect(self.stopRequested)
        buttons = QVBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(24, 8, 24, 12)
        layout.addWidget(self.prompt, 1)
        layout.addLayout(buttons)
        self._refresh()

    def submit(self) -> None:
        text = self.prompt.toPlainText()
        if self.busy or not self.ready or not text.strip():
            return
        self.sendRequested.emit(text)

    def clear(self) -> None:
        self.prompt.clear()

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._refresh()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Whether the engine can take a message; `reason` is shown when it cannot."""
        self.ready = ready
        self.send_button.setToolTip("Send (Enter or Ctrl+Enter)" if ready else reason)
        self._refresh()

    def _refresh(self) -> None:
        self.send_button.setVisible(not self.busy)
        self.stop_button.setVisible(self.busy)
        self.send_button.setEnabled(self.ready)
