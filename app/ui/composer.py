"""Composer: the prompt box with Send and Stop.

Enter or Ctrl+Enter sends, Shift+Enter adds a line (what LM Studio, Jan and
GPT4All users expect). While an answer streams, Send turns into Stop, and the
text box stays editable so the next question can be typed meanwhile. While the
model loads, a message can still be sent: the window queues it (set_queued), the
box says it will go when the model is ready, and Stop takes it back.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

PLACEHOLDER = "Message the model…  (Enter to send, Shift+Enter for a new line)"
QUEUED_TEXT = "Loading the model… your message will be sent when it is ready."


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
        self.can_queue = False  # the model is loading: a message waits for it
        self.queued = False  # a message is waiting in the box
        self.prompt = PromptEdit()
        self.prompt.setObjectName("promptBox")
        self.prompt.setAccessibleName("Message")
        self.prompt.setAccessibleDescription("Type a message. Enter sends, Shift+Enter adds a new line.")
        self.prompt.setPlaceholderText(PLACEHOLDER)
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
        self.note = QLabel()
        self.note.setObjectName("composerNote")
        self.note.setAccessibleName("Message status")
        self.note.setWordWrap(True)
        self.note.hide()
        box = QVBoxLayout()
        box.setSpacing(2)
        box.addWidget(self.prompt)
        box.addWidget(self.note)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(24, 8, 24, 12)
        layout.addLayout(box, 1)
        layout.addLayout(buttons)
        self._refresh()

    def submit(self) -> None:
        text = self.prompt.toPlainText()
        if self.busy or self.queued or not (self.ready or self.can_queue) or not text.strip():
            return
        self.sendRequested.emit(text)

    def clear(self) -> None:
        self.prompt.clear()

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._refresh()

    def set_ready(self, ready: bool, reason: str = "", *, can_queue: bool = False) -> None:
        """Whether the engine can take a message; `reason` is shown when it cannot. `can_queue`:
        it cannot yet, but will (the model is loading), so Send queues the message."""
        self.ready = ready
        self.can_queue = can_queue and not ready
        self.send_button.setToolTip(
            "Send (Enter or Ctrl+Enter)" if ready else QUEUED_TEXT if self.can_queue else reason
        )
        self._refresh()

    def set_queued(self, queued: bool) -> None:
        """A message waits in the box for the model; it stays visible (read-only) until it is sent."""
        self.queued = queued
        self.prompt.setReadOnly(queued)
        self._refresh()

    def _refresh(self) -> None:
        waiting = self.busy or self.queued
        self.send_button.setVisible(not waiting)
        self.stop_button.setVisible(waiting)
        self.stop_button.setToolTip("Don't send this message" if self.queued else "Stop the answer (Esc)")
        self.send_button.setEnabled(self.ready or self.can_queue)
        note = QUEUED_TEXT if self.queued or self.can_queue else ""
        self.note.setText(note)
        self.note.setVisible(bool(note))
        if self.can_queue and not self.queued:
            self.prompt.setPlaceholderText("The model is loading; type now and press Enter, it is sent when ready.")
        else:
            self.prompt.setPlaceholderText(PLACEHOLDER)
