"""One fenced code block of a chat message: a language label, a Copy button and the code,
highlighted with Pygments, never wrapped (a horizontal scroll bar instead), as tall as its lines.

Highlighting lexes the whole block once per update and hands each line its token
formats, so multi-line strings and comments are coloured right (a per-line
lexer would not know it is inside a docstring).
"""

from __future__ import annotations

from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.styles import get_style_by_name
from pygments.util import ClassNotFound
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QSyntaxHighlighter, QTextCharFormat
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSizePolicy, QVBoxLayout

LIGHT_STYLE, DARK_STYLE = "friendly", "github-dark"


def _lexer_for(language: str):
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False) if language else TextLexer()
    except ClassNotFound:
        return TextLexer()


def _formats_for(style_name: str) -> dict:
    style = get_style_by_name(style_name)
    formats = {}
    for token, spec in style:
        fmt = QTextCharFormat()
        if spec["color"]:
            fmt.setForeground(QColor("#" + spec["color"]))
        if spec["bold"]:
            fmt.setFontWeight(QFont.Weight.Bold)
        if spec["italic"]:
            fmt.setFontItalic(True)
        formats[token] = fmt
    return formats


def flash_text(button: QPushButton, text: str, ms: int = 1500) -> None:
    """Show `text` on the button briefly (e.g. "Copied"), then its usual label again."""
    usual = button.property("usualText") or button.text()
    button.setProperty("usualText", usual)
    button.setText(text)
    QTimer.singleShot(ms, button, lambda: button.setText(usual))


class PygmentsHighlighter(QSyntaxHighlighter):
    def __init__(self, document, language: str, dark: bool) -> None:
        super().__init__(document)
        self.lexer = _lexer_for(language)
        self.formats = _formats_for(DARK_STYLE if dark else LIGHT_STYLE)
        self.line_spans: list[list[tuple[int, int, QTextCharFormat]]] = []

    def lex(self, code: str) -> None:
        """Token spans per line for `code`; call before rehighlight()."""
        lines: list[list[tuple[int, int, QTextCharFormat]]] = [[]]
        column = 0
        for token, value in self.lexer.get_tokens(code):
            while token not in self.formats and token.parent is not None:
                token = token.parent
            fmt = self.formats.get(token)
            for i, piece in enumerate(value.split("\n")):
                if i:
                    lines.append([])
                    column = 0
                if piece and fmt is not None and fmt.foreground().style() != Qt.BrushStyle.NoBrush:
                    lines[-1].append((column, len(piece), fmt))
                column += len(piece)
        self.line_spans = lines

    def highlightBlock(self, text: str) -> None:  # noqa: N802 (Qt's name)
        number = self.currentBlock().blockNumber()
        if number < len(self.line_spans):
            for start, length, fmt in self.line_spans[number]:
                self.setFormat(start, length, fmt)


class CodeBlockWidget(QFrame):
    def __init__(self, code: str, language: str, dark: bool, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("codeBlock")
        self.language = language
        self.code = ""
        header = QHBoxLayout()
        header.setContentsMargins(8, 2, 2, 0)
        self.language_label = QLabel(language or "code")
        self.language_label.setObjectName("codeLanguage")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName("codeCopyButton")
        self.copy_button.setAccessibleName(f"Copy {language or 'code'} code block")
        self.copy_button.setToolTip("Copy this code to the clipboard")
        self.copy_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.copy_button.clicked.connect(self.copy)
        header.addWidget(self.language_label)
        header.addStretch(1)
        header.addWidget(self.copy_button)
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("codeText")
        self.editor.setReadOnly(True)
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.editor.setFrameShape(QFrame.Shape.NoFrame)
        self.editor.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.editor.setAccessibleName(f"{language or 'Code'} code")
        self.editor.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.highlighter = PygmentsHighlighter(self.editor.document(), language, dark)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.setSpacing(0)
        layout.addLayout(header)
        layout.addWidget(self.editor)
        self.set_code(code)

    def set_code(self, code: str) -> None:
        if code == self.code:
            return
        self.code = code
        self.highlighter.lex(code)
        self.editor.setPlainText(code)  # re-highlights through highlightBlock
        self._fit_height()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code)
        flash_text(self.copy_button, "Copied")

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit_height()

    def _fit_height(self) -> None:
        metrics = self.editor.fontMetrics()
        lines = self.code.split("\n")
        height = metrics.lineSpacing() * max(1, len(lines)) + 2 * self.editor.document().documentMargin() + 4
        widest = max(metrics.horizontalAdvance(line) for line in lines) + 2 * self.editor.document().documentMargin()
        if widest > self.editor.viewport().width():
            height += self.editor.horizontalScrollBar().sizeHint().height()
        self.editor.setFixedHeight(int(height))
