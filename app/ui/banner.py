"""Banner: a one-line message strip above the chat, with an optional action button, a close
button ("The engine stopped … [Restart engine]", "3 older messages are not visible to the model")
and, when the message has them, technical details behind a Details toggle (a signal name, an
exit code: what helps a bug report, not what a new user must read first)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout


class Banner(QFrame):
    def __init__(self, name: str, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setAccessibleName(name)
        self.kind = ""
        self.tag = ""  # which message is up, for the owner that may take it down again
        self._action: Callable[[], None] | None = None
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self.action_button.clicked.connect(self._run_action)
        self.close_button = QPushButton("Dismiss")
        self.close_button.setAccessibleName(f"Dismiss {name.lower()}")
        self.close_button.setFlat(True)
        self.close_button.clicked.connect(self.hide)
        self.details_button = QToolButton()
        self.details_button.setObjectName("details")
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setAutoRaise(True)
        self.details_button.toggled.connect(self._toggle_details)
        self.details_label = QLabel()
        self.details_label.setObjectName("detailsText")
        self.details_label.setWordWrap(True)
        self.details_label.setTextFormat(Qt.TextFormat.PlainText)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.details_button)
        row.addWidget(self.action_button)
        row.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.details_label)
        self.hide()

    def show_message(
        self,
        kind: str,
        text: str,
        action_text: str = "",
        action: Callable[[], None] | None = None,
        *,
        tag: str = "",
        details: str = "",
    ) -> None:
        """kind: "warning" | "error" | "info" (styled by the theme's QFrame#banner[kind=...]).
        `details`: plain technical text, shown only when the user opens Details."""
        self.kind = kind
        self.tag = tag
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        self._action = action
        self.action_button.setText(action_text)
        self.action_button.setAccessibleName(action_text)
        self.action_button.setVisible(bool(action_text and action))
        self.details_label.setText(details)
        self.details_button.setVisible(bool(details))
        self.details_button.setChecked(False)
        self._toggle_details(False)
        self.show()

    def _toggle_details(self, shown: bool) -> None:
        self.details_label.setVisible(shown and bool(self.details_label.text()))
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _run_action(self) -> None:
        action = self._action
        self.hide()
        if action is not None:
            action()
