"""A message line that can be an error: a plain sentence, and the technical detail behind "Details".

Used on the Models page's cards and its notice line. `show_error` styles it as an error (a red
border, readable in both themes) with the detail collapsed; `show_info` as a neutral note;
`show_html` for a sentence with a link (the gated-model page). The `label` holds the sentence,
`details_label` the detail, `details_button` toggles it.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QToolButton, QVBoxLayout, QWidget

from app.catalog.messages import PlainError

# borders, not text colours, so both read in the light and the dark theme alike
ERROR_STYLE = (
    'QFrame#errorNotice[level="error"] { border: 1px solid #c0392b; border-left: 4px solid #c0392b;'
    " border-radius: 4px; }"
)
INFO_STYLE = 'QFrame#errorNotice[level="info"] { border: 1px solid palette(mid); border-radius: 4px; }'


class ErrorNotice(QFrame):
    """Hidden until it has something to say."""

    def __init__(self, accessible_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("errorNotice")
        self.setAccessibleName(accessible_name)
        self.setStyleSheet(ERROR_STYLE + INFO_STYLE)
        self.level = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(2)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setOpenExternalLinks(True)
        self.label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.LinksAccessibleByMouse
        )
        layout.addWidget(self.label)
        self.details_button = QToolButton()
        self.details_button.setObjectName("details")
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setAutoRaise(True)
        self.details_button.toggled.connect(self._toggle_details)
        layout.addWidget(self.details_button)
        self.details_label = QLabel()
        self.details_label.setObjectName("detailsText")
        self.details_label.setWordWrap(True)
        self.details_label.setTextFormat(Qt.TextFormat.PlainText)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.details_label)
        self.clear()

    def text(self) -> str:
        return self.label.text()

    def clear(self) -> None:
        self._show("", "", "", rich=False)

    def show_info(self, text: str) -> None:
        self._show("info", text, "", rich=False)

    def show_error(self, error: PlainError | str, detail: str = "") -> None:
        if isinstance(error, PlainError):
            self._show("error", error.text, error.detail, rich=False)
        else:
            self._show("error", error, detail, rich=False)

    def show_html(self, level: str, html_text: str, detail: str = "") -> None:
        """`html_text` is trusted markup written by the app (escape anything else that goes in)."""
        self._show(level, html_text, detail, rich=True)

    def _show(self, level: str, text: str, detail: str, *, rich: bool) -> None:
        self.level = level if text else ""
        self.setProperty("level", self.level)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text if rich else html.escape(text, quote=False).replace("\n", "<br>"))
        self.label.setAccessibleDescription(f"{'Error: ' if level == 'error' else ''}{text}")
        self.details_label.setText(detail)
        self.details_button.setChecked(False)
        self.details_button.setVisible(bool(detail))
        self.details_label.setVisible(False)
        self.setVisible(bool(text))

    def _toggle_details(self, shown: bool) -> None:
        self.details_label.setVisible(shown)
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
