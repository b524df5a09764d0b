"""One chat message on screen: who said it, the text (Markdown prose and code blocks), a Copy
button, Edit (user) or Regenerate (assistant), and under an answer its stats line.
An answer regenerated before shows "‹ 1/2 ›" to switch between its versions.

The text is re-rendered as a list of blocks (app.ui.markdown_blocks); while an
answer streams, blocks that did not change keep their widgets, so a growing code
block is updated in place rather than rebuilt.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.chat.export import stats_line
from app.chat.records import ERROR, PARTIAL, STREAMING, Message
from app.ui.code_block import CodeBlockWidget, flash_text
from app.ui.markdown_blocks import Block, split_blocks
from app.ui.markdown_html import prose_to_html

ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System"}


def state_note(message: Message) -> str:
    error = message.stats.error or ""
    if message.state == STREAMING:
        return ""
    if message.state == PARTIAL:
        if error.startswith("engine died"):
            return "Interrupted: " + error.removeprefix("engine died: ") + "."
        return "Stopped before the end." if not error else f"Interrupted ({error})."
    if message.state == ERROR:
        return f"No answer: {error}" if error else "No answer."
    if message.stats.finish_reason == "length":
        return "Reached the max-tokens limit."
    if message.stats.finish_reason == "context_full":
        return "Stopped: the context is full."
    return ""


class ProseLabel(QTextBrowser):
    """One prose block: wraps to the width it is given, selectable, links open in the browser.

    `markdown` True renders the block through app.ui.markdown_html (answers);
    False shows it as the exact characters typed (the user's own messages).
    A frameless, scroll-less text browser whose height follows its text rather
    than a QLabel: a label cannot break a long word (a URL, a hash), so one such
    word used to widen the whole conversation past the window's right edge.
    Here lines wrap at word boundaries, or anywhere when a word is wider than
    the line, and selecting and copying gives back exactly the characters shown."""

    def __init__(self, text: str, markdown: bool = True, parent=None) -> None:
        super().__init__(parent)
        self.markdown = markdown
        self.source_text = ""
        self.setObjectName("messageText")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setOpenExternalLinks(markdown)
        self.setOpenLinks(markdown)
        flags = (
            Qt.TextInteractionFlag.TextBrowserInteraction
            if markdown
            else Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.setTextInteractionFlags(flags)
        self.viewport().setAutoFillBackground(False)
        self.document().setDocumentMargin(0)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(40)
        self.set_source(text)

    def set_source(self, text: str) -> None:
        self.source_text = text
        if self.markdown:
            self.setHtml(prose_to_html(text))
        else:
            self.setPlainText(text)
        self._fit_height()

    def shown_text(self) -> str:
        """What a reader sees: the document as plain text (line separators as newlines)."""
        return self.document().toPlainText().replace("\u2028", "\n")

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit_height()

    def _fit_height(self) -> None:
        self.document().setTextWidth(max(self.viewport().width(), 1))
        height = int(self.document().size().height() + 0.999) + self.frameWidth() * 2
        if self.height() != height:
            self.setFixedHeight(height)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(super().sizeHint().width(), self.height())

    def wheelEvent(self, event) -> None:  # noqa: N802
        event.ignore()  # the conversation scrolls, not this block (it has nothing to scroll)


class EditBox(QPlainTextEdit):
    """The box for editing an older message. Ctrl+Enter and Esc are its own keys while it
    has focus: the window's "send the draft" and "stop the answer" shortcuts must not
    fire for them (Qt offers every key to window shortcuts first; accepting the
    ShortcutOverride claims it for this widget)."""

    submitted = Signal()
    cancelled = Signal()

    @staticmethod
    def _owned(event) -> str | None:
        key, ctrl = event.key(), bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and ctrl:
            return "submit"
        if key == Qt.Key.Key_Escape and event.modifiers() == Qt.KeyboardModifier.NoModifier:
            return "cancel"
        return None

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and self._owned(event):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event) -> None:
        owned = self._owned(event)
        if owned == "submit":
            self.submitted.emit()
        elif owned == "cancel":
            self.cancelled.emit()
        else:
            super().keyPressEvent(event)


class MessageWidget(QFrame):
    regenerateRequested = Signal(int)
    editSubmitted = Signal(int, str)
    continueRequested = Signal(int)  # assistant message id: it stopped at max tokens, go on
    versionRequested = Signal(int, int)  # the answer shown, -1 (the previous version) or +1 (the next)

    def __init__(self, message: Message, dark: bool, parent=None) -> None:
        super().__init__(parent)
        self.message = message
        self.dark = dark
        self.text = message.content
        self._blocks: list[tuple[Block, QWidget]] = []
        self.setObjectName("userMessage" if message.role == "user" else "assistantMessage")
        self.setAccessibleName(f"{ROLE_NAMES.get(message.role, message.role)} message")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)

        self.role_label = QLabel(ROLE_NAMES.get(message.role, message.role))
        self.role_label.setObjectName("roleLabel")
        self.copy_button = self._tool_button("Copy", "Copy message", "Copy the whole message as Markdown")
        self.copy_button.clicked.connect(self.copy)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.role_label)
        header.addStretch(1)
        header.addWidget(self.copy_button)
        self.edit_button = self.regenerate_button = self.continue_button = None
        self._actions_enabled = True
        self.previous_version = self._tool_button("‹", "Previous answer version", "Show the previous answer")
        self.next_version = self._tool_button("›", "Next answer version", "Show the next answer")
        self.version_label = QLabel()
        self.version_label.setObjectName("versionLabel")
        self.previous_version.clicked.connect(lambda: self.versionRequested.emit(self.message.id, -1))
        self.next_version.clicked.connect(lambda: self.versionRequested.emit(self.message.id, 1))
        for widget in (self.previous_version, self.version_label, self.next_version):
            widget.hide()
            header.insertWidget(header.count() - 1, widget)  # before Copy
        if message.role == "user":
            self.edit_button = self._tool_button("Edit", "Edit message", "Edit this message and send it again")
            self.edit_button.clicked.connect(self.begin_edit)
            header.addWidget(self.edit_button)
        elif message.role == "assistant":
            self.regenerate_button = self._tool_button("Regenerate", "Regenerate answer", "Ask for a new answer")
            self.regenerate_button.clicked.connect(lambda: self.regenerateRequested.emit(self.message.id))
            self.continue_button = self._tool_button(
                "Continue", "Continue answer", "The answer stopped at the maximum length: ask the model to go on"
            )
            self.continue_button.clicked.connect(lambda: self.continueRequested.emit(self.message.id))
            self.continue_button.hide()
            header.addWidget(self.continue_button)
            header.addWidget(self.regenerate_button)

        self.body = QVBoxLayout()
        self.body.setContentsMargins(0, 0, 0, 0)
        self.body.setSpacing(6)
        self.note_label = QLabel()
        self.note_label.setObjectName("stateNote")
        self.note_label.setWordWrap(True)
        self.stats_label = QLabel()
        self.stats_label.setObjectName("statsLine")
        self.stats_label.setAccessibleName("Answer statistics")
        self.stats_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.editor: QFrame | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addLayout(self.body)
        layout.addWidget(self.note_label)
        layout.addWidget(self.stats_label)
        self.set_message(message)

    def _tool_button(self, text: str, accessible: str, tip: str) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName("messageAction")
        button.setAccessibleName(accessible)
        button.setToolTip(tip)
        button.setFlat(True)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        return button

    # ---- content ------------------------------------------------------------------------------

    def set_message(self, message: Message) -> None:
        """Show a stored message (final text, state and stats)."""
        self.message = message
        self.set_text(message.content)
        note = state_note(message)
        self.note_label.setText(note)
        self.note_label.setVisible(bool(note))
        line = stats_line(message.stats) if message.role == "assistant" else ""
        self.stats_label.setText(line)
        self.stats_label.setVisible(bool(line))
        self._show_versions()

    def _show_versions(self) -> None:
        message = self.message
        several = message.versions > 1
        self.version_label.setText(f"{message.version}/{message.versions}")
        self.version_label.setAccessibleName(f"Answer version {message.version} of {message.versions}")
        for widget in (self.previous_version, self.version_label, self.next_version):
            widget.setVisible(several)
        self.previous_version.setEnabled(self._actions_enabled and message.version > 1)
        self.next_version.setEnabled(self._actions_enabled and message.version < message.versions)

    def version_text(self) -> str:
        """The switcher as a reader sees it, e.g. "‹ 1/2 ›" ("" when the answer has one version)."""
        if self.version_label.isHidden():
            return ""
        return f"{self.previous_version.text()} {self.version_label.text()} {self.next_version.text()}"

    def set_text(self, text: str) -> None:
        self.text = text
        if self.message.role == "user":  # what the user typed, exactly: no Markdown, no HTML
            blocks = [Block("plain", text)] if text else []
        else:
            blocks = split_blocks(text) or ([Block("text", "…")] if self.message.state == STREAMING else [])
        for index, block in enumerate(blocks):
            if index < len(self._blocks):
                old, widget = self._blocks[index]
                if old == block:
                    continue
                if old.kind == block.kind and (block.kind != "code" or old.language == block.language):
                    self._update_block(widget, block)
                    self._blocks[index] = (block, widget)
                    continue
                self._remove_blocks_from(index)
            widget = self._make_block(block)
            self.body.addWidget(widget)
            self._blocks.append((block, widget))
        self._remove_blocks_from(len(blocks))

    def _make_block(self, block: Block) -> QWidget:
        if block.kind == "code":
            return CodeBlockWidget(block.text, block.language, self.dark)
        return ProseLabel(block.text, markdown=block.kind == "text")

    @staticmethod
    def _update_block(widget: QWidget, block: Block) -> None:
        if isinstance(widget, CodeBlockWidget):
            widget.set_code(block.text)
        elif isinstance(widget, ProseLabel):
            widget.set_source(block.text)

    def _remove_blocks_from(self, index: int) -> None:
        for _, widget in self._blocks[index:]:
            self.body.removeWidget(widget)
            widget.deleteLater()
        del self._blocks[index:]

    def code_blocks(self) -> list[CodeBlockWidget]:
        return [w for _, w in self._blocks if isinstance(w, CodeBlockWidget)]

    # ---- actions ------------------------------------------------------------------------------

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        flash_text(self.copy_button, "Copied")

    def set_actions_enabled(self, enabled: bool, can_regenerate: bool) -> None:
        self._actions_enabled = enabled  # the versions too: no switching while an answer streams
        self._show_versions()
        if self.edit_button is not None:
            self.edit_button.setEnabled(enabled)
        if self.continue_button is not None:
            # Only the last answer, and only when it ran out of tokens (not stopped, not finished).
            self.continue_button.setVisible(can_regenerate and self.message.stats.finish_reason == "length")
            self.continue_button.setEnabled(enabled)
        if self.regenerate_button is not None:
            self.regenerate_button.setVisible(can_regenerate)
            self.regenerate_button.setEnabled(enabled)

    def begin_edit(self) -> None:
        if self.editor is not None:
            return
        self.editor = QFrame()
        self.editor.setObjectName("messageEditor")
        text_box = EditBox(self.message.content)
        text_box.setToolTip("Ctrl+Enter saves and resends; Esc cancels")
        text_box.setAccessibleName("Edited message")
        text_box.setObjectName("editBox")
        text_box.setTabChangesFocus(True)  # Tab reaches Cancel and Save
        save = QPushButton("Save && resend")
        save.setAccessibleName("Save edited message and send it again")
        save.setDefault(True)
        cancel = QPushButton("Cancel")
        cancel.setAccessibleName("Cancel editing")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(cancel)
        buttons.addWidget(save)
        layout = QVBoxLayout(self.editor)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(text_box)
        layout.addLayout(buttons)
        save.clicked.connect(lambda: self.submit_edit(text_box.toPlainText()))
        cancel.clicked.connect(self.end_edit)
        text_box.submitted.connect(save.click)
        text_box.cancelled.connect(self.end_edit)
        self.body.addWidget(self.editor)
        for _, widget in self._blocks:
            widget.hide()
        text_box.setFocus()

    def submit_edit(self, text: str) -> None:
        if text.strip():
            self.end_edit()
            self.editSubmitted.emit(self.message.id, text)

    def end_edit(self) -> None:
        if self.editor is None:
            return
        self.body.removeWidget(self.editor)
        self.editor.deleteLater()
        self.editor = None
        for _, widget in self._blocks:
            widget.show()
