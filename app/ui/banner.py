"""Banner: a one-line message strip above the chat, with an optional action button and a close
button ("The engine stopped … [Restart engine]", "3 older messages are not visible to the model")."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton


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
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button)
        self.hide()

    def show_message(
        self,
        kind: str,
        text: str,
        action_text: str = "",
        action: Callable[[], None] | None = None,
        *,
        tag: str = "",
    ) -> None:
        """kind: "warning" | "error" | "info" (styled by the theme's QFrame#banner[kind=...])."""
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
        self.show()

    def _run_action(self) -> None:
        action = self._action
        self.hide()
        if action is not None:
            action()
