"""ChatView: the scrolling list of MessageWidgets for one conversation, with the streaming answer.

Streamed text is buffered and painted by a timer (about 25 times a second), not
per token: re-rendering Markdown for every token would cost more than the
engine spends making it. The view follows the answer down only while the user
is already at the bottom, so scrolling up to read is never fought; a "Jump to
latest" button floats over the bottom edge whenever there is more below, and
after an edit-and-resend an undo bar says what was removed (UndoBar).
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.chat.records import Message
from app.ui.message_widget import MessageWidget
from app.ui.units import format_bytes, format_time_left
from app.workers.protocol import Progress

REPAINT_MS = 40
TARGET_SETTLE_S = 1.0  # how long a scrolled-to message is held in view while heights settle
EMPTY_TEXT = (
    "Ask anything. The model runs on this computer's CPU, offline.\n"
    "Enter sends, Shift+Enter starts a new line, Esc stops the answer."
)


class LoadingCard(QFrame):
    """Shown in the conversation while the model loads (the first launch repacks it: ~25 s), so the
    wait has a stage, a bar, how much of the file is repacked with the time left, and a Cancel
    button, instead of an empty chat that ignores Enter."""

    cancelRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("loadingCard")
        self.setAccessibleName("Loading the model")
        self.title = QLabel("Loading the model…")
        self.title.setObjectName("loadingTitle")
        self.stage = QLabel()
        self.stage.setObjectName("hint")
        self.stage.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setAccessibleName("Model loading progress")
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel loading the model")
        self.cancel_button.setToolTip("Stop loading this model; the model loaded before comes back")
        self.cancel_button.clicked.connect(self._on_cancel)
        hint = QLabel("You can type your first message now: it is sent as soon as the model is ready.")
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        bar_row = QHBoxLayout()
        bar_row.addWidget(self.bar, 1)
        bar_row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addWidget(self.title)
        layout.addWidget(self.stage)
        layout.addLayout(bar_row)
        layout.addWidget(hint)
        self.hide()

    def show_progress(self, fraction: float, stage: str) -> None:
        self.stage.setText(stage[:1].upper() + stage[1:] + "…" if stage else "Starting the engine…")
        self.bar.setValue(int(max(0.0, min(fraction, 1.0)) * 1000))
        if fraction == 0.0 and not stage:  # a new load starts: its Cancel works again
            self.cancel_button.setEnabled(True)
            self.cancel_button.setText("Cancel")
        self.show()

    def show_status(self, status: Progress) -> None:
        """show_progress, and while repacking: "Repacking to 4 bits: 1.20 GB of 4.90 GB · about 40 s left"."""
        self.show_progress(status.fraction, status.stage)
        if status.bytes_total > 0:
            stage = status.stage[:1].upper() + status.stage[1:]
            done = f"{format_bytes(status.bytes_done)} of {format_bytes(status.bytes_total)}"
            self.stage.setText(f"{stage}: {done} · {format_time_left(status.eta_s)}")

    def _on_cancel(self) -> None:
        self.cancel_button.setEnabled(False)  # once: the engine stops at its next slab
        self.cancel_button.setText("Cancelling…")
        self.cancelRequested.emit()


class UndoBar(QFrame):
    """Floats over the bottom of the conversation after an edit-and-resend: what the edit
    removed and an Undo button, until the session withdraws the offer."""

    undoRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("undoBar")
        self.setAccessibleName("Edit removed messages")
        self.label = QLabel()
        self.button = QPushButton("Undo")
        self.button.setAccessibleName("Undo the edit")
        self.button.setToolTip("Put back the old text and the messages after it")
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self.undoRequested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 8, 6)
        layout.addWidget(self.label)
        layout.addWidget(self.button)
        self.setFrameShape(QFrame.Shape.StyledPanel)  # it floats over the text: give it an edge
        self.setAutoFillBackground(True)
        self.hide()


class ChatView(QScrollArea):
    regenerateRequested = Signal(int)  # assistant message id
    editSubmitted = Signal(int, str)  # user message id, new text
    continueRequested = Signal(int)  # assistant message id that stopped at max tokens
    versionRequested = Signal(int, int)  # answer shown, -1/+1: show its previous/next version
    undoRequested = Signal()  # the undo bar's button

    def __init__(self, dark: bool = False, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setAccessibleName("Conversation")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.dark = dark
        self.busy = False
        self.widgets: dict[int, MessageWidget] = {}
        self._pending: dict[int, str] = {}  # message id → text not painted yet
        self._follow = True
        self._target: int | None = None  # a message to keep in view while the layout settles
        self._target_until = 0.0
        content = QWidget()
        content.setObjectName("chatContent")
        self.column = QVBoxLayout(content)
        self.column.setContentsMargins(24, 16, 24, 16)
        self.column.setSpacing(12)
        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setObjectName("emptyChat")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.column.addWidget(self.empty_label)
        self.loading_card = LoadingCard()
        self.column.addWidget(self.loading_card)
        self.column.addStretch(1)
        self.setWidget(content)
        self._repaint = QTimer(self)
        self._repaint.setSingleShot(True)
        self._repaint.setInterval(REPAINT_MS)
        self._repaint.timeout.connect(self._paint_pending)
        self.latest_button = QPushButton("↓  Latest", self.viewport())
        self.latest_button.setObjectName("jumpToLatest")
        self.latest_button.setAccessibleName("Jump to the latest message")
        self.latest_button.setToolTip("Jump to the latest message (End)")
        self.latest_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.latest_button.clicked.connect(self.jump_to_latest)
        self.latest_button.hide()
        self.undo_bar = UndoBar(self.viewport())
        self.undo_bar.undoRequested.connect(self.undoRequested)
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range_changed)

    # ---- content ------------------------------------------------------------------------------

    def set_messages(self, messages: list[Message]) -> None:
        for widget in self.widgets.values():
            self.column.removeWidget(widget)
            widget.deleteLater()
        self.widgets.clear()
        self._pending.clear()
        for message in messages:
            self._add_widget(message)
        self._after_change()
        self._follow = True
        self._target = None
        QTimer.singleShot(0, self, self._settle_after_load)

    def add_message(self, message: Message) -> None:
        """Append a message; a new version of an answer on screen takes that answer's place."""
        if message.version_of is not None:
            shown = next((i for i, w in self.widgets.items() if w.message.turn_id == message.turn_id), None)
            if shown is not None:
                self.replace_message(shown, message)
                return
        self._add_widget(message)
        self._after_change()
        self._follow = True

    def replace_message(self, old_id: int, message: Message) -> None:
        """Show `message` (another version of the same turn) in the widget of `old_id`, in place."""
        widget = self.widgets.pop(old_id, None)
        if widget is None:
            return
        self._pending.pop(old_id, None)
        self.widgets[message.id] = widget
        widget.set_message(message)
        self._after_change()

    def show_undo(self, text: str) -> None:
        """The undo bar with `text`, or none when `text` is empty."""
        self.undo_bar.label.setText(text)
        self.undo_bar.setVisible(bool(text))
        self._place_floating()

    def append_text(self, message_id: int, delta: str) -> None:
        widget = self.widgets.get(message_id)
        if widget is None:
            return
        base = self._pending.get(message_id, widget.text)
        self._pending[message_id] = base + delta
        if not self._repaint.isActive():
            self._repaint.start()

    def finish_message(self, message: Message) -> None:
        self._pending.pop(message.id, None)
        widget = self.widgets.get(message.id)
        if widget is not None:
            widget.set_message(message)
        self._after_change()

    def resume_message(self, message: Message) -> None:
        """`message` streams again (Continue): its widget drops the max-tokens note, the new text is appended."""
        self._pending.pop(message.id, None)
        widget = self.widgets.get(message.id)
        if widget is not None:
            widget.set_message(message)
        self._after_change()
        self._follow = True

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self._after_change()

    def show_loading(self, fraction: float, stage: str) -> None:
        self.loading_card.show_progress(fraction, stage)
        self.empty_label.hide()

    def show_load_status(self, status: Progress) -> None:
        self.loading_card.show_status(status)
        self.empty_label.hide()

    def hide_loading(self) -> None:
        self.loading_card.hide()
        self._after_change()

    def message_widget(self, message_id: int) -> MessageWidget | None:
        return self.widgets.get(message_id)

    def scroll_to_message(self, message_id: int) -> None:
        """Bring one message into view (a search hit) and keep it there while the chat that was
        just opened finishes its layout: blocks above it settle their heights over the next
        few events, which would otherwise push the hit away again."""
        if message_id not in self.widgets:
            return
        self._follow = False
        self._target = message_id
        self._target_until = time.monotonic() + TARGET_SETTLE_S
        self._show_target()

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _settle_after_load(self) -> None:
        if self._target is not None:
            self._show_target()
        else:
            self.scroll_to_bottom()

    def jump_to_latest(self) -> None:
        """Back to the newest text, following the answer again."""
        self._follow = True
        self._target = None
        self.scroll_to_bottom()
        self._update_latest_button()

    # ---- internals ----------------------------------------------------------------------------

    def _add_widget(self, message: Message) -> None:
        widget = MessageWidget(message, self.dark)
        widget.regenerateRequested.connect(self.regenerateRequested)
        widget.editSubmitted.connect(self.editSubmitted)
        widget.continueRequested.connect(self.continueRequested)
        widget.versionRequested.connect(self.versionRequested)
        self.column.insertWidget(self.column.count() - 1, widget)  # above the stretch
        self.widgets[message.id] = widget

    def _after_change(self) -> None:
        self.empty_label.setVisible(not self.widgets and self.loading_card.isHidden())
        # By turn, not id: a version shown may be older than a later turn's messages.
        answers = [w.message for w in self.widgets.values() if w.message.role == "assistant"]
        last_answer = max(answers, key=lambda m: m.turn_id).id if answers else None
        for message_id, widget in self.widgets.items():
            widget.set_actions_enabled(not self.busy, can_regenerate=message_id == last_answer and not self.busy)

    def _paint_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for message_id, text in pending.items():
            widget = self.widgets.get(message_id)
            if widget is not None:
                widget.set_text(text)

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24
        self._update_latest_button()

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._target is not None:
            self._show_target()
        elif self._follow:
            self.verticalScrollBar().setValue(maximum)
        self._update_latest_button()

    def _show_target(self) -> None:
        widget = self.widgets.get(self._target) if self._target is not None else None
        if widget is None or time.monotonic() > self._target_until:
            self._target = None
            return
        self.column.activate()
        self.ensureWidgetVisible(widget, 0, 40)

    def _update_latest_button(self) -> None:
        bar = self.verticalScrollBar()
        more_below = bar.value() < bar.maximum() - 24
        self.latest_button.setVisible(more_below)
        self._place_floating()

    def _place_floating(self) -> None:
        """The undo bar centred at the bottom of the viewport, the "Latest" button at the right, above it."""
        area = self.viewport().rect()
        bottom = area.bottom() - 12
        if self.undo_bar.isVisibleTo(self):
            bar = self.undo_bar
            bar.adjustSize()
            bar.move(max(area.left(), area.center().x() - bar.width() // 2), bottom - bar.height())
            bar.raise_()
            bottom -= bar.height() + 8
        if self.latest_button.isVisibleTo(self):
            button = self.latest_button
            button.adjustSize()
            button.move(area.right() - button.width() - 16, bottom - button.height())
            button.raise_()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._update_latest_button()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_End and event.modifiers() == Qt.KeyboardModifier.NoModifier:
            self.jump_to_latest()
        else:
            super().keyPressEvent(event)
