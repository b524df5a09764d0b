"""InputGuard: two keyboard and mouse rules for every widget of the app, installed once on the QApplication.

1. Tab moves focus out of every multi-line text box (Shift+Tab back): a QPlainTextEdit or
   QTextEdit would otherwise insert tab characters forever, a keyboard trap (the system prompt
   was saved full of tabs). Applied when a widget is first polished, so boxes made later (the
   edit box of an older message, a dialog's) are covered without each one remembering to.
2. Spin boxes, combo boxes and sliders take the mouse wheel only when they have focus: a wheel
   turn over an unfocused one scrolls the panel it sits in instead of changing a setting
   (Top-k 40 → 30 while scrolling, saved). They get Qt.FocusPolicy.StrongFocus, so the wheel
   does not focus them either; a click or Tab does.

Why an application-wide filter and not per-widget code: the rules are about a class of widget,
and the next panel someone adds must follow them without knowing about them. The filter looks at
two event types only and returns at once for all others.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QPlainTextEdit,
    QScrollBar,
    QTextBrowser,
    QTextEdit,
    QWidget,
)

WHEEL_ON_FOCUS_ONLY = (QAbstractSpinBox, QComboBox, QAbstractSlider)
_POLISH = QEvent.Type.Polish
_WHEEL = QEvent.Type.Wheel


def guard_text_box(box: QPlainTextEdit | QTextEdit) -> None:
    """Tab leaves the box. A QTextBrowser keeps Tab for stepping through its links (it lets
    focus go on after the last one, so it is no trap)."""
    if not isinstance(box, QTextBrowser):
        box.setTabChangesFocus(True)


def guard_wheel_input(widget: QWidget) -> None:
    if widget.focusPolicy() == Qt.FocusPolicy.WheelFocus:
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)


class InputGuard(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        kind = event.type()
        if kind == _POLISH:
            if isinstance(watched, (QPlainTextEdit, QTextEdit)):
                guard_text_box(watched)
            elif isinstance(watched, WHEEL_ON_FOCUS_ONLY) and not isinstance(watched, QScrollBar):
                guard_wheel_input(watched)
        elif (
            kind == _WHEEL
            and isinstance(watched, WHEEL_ON_FOCUS_ONLY)
            and not isinstance(watched, QScrollBar)  # a scroll bar is what the wheel is for
            and not watched.hasFocus()
        ):
            # Not accepted and not delivered: Qt passes an ignored wheel event on to the parent,
            # i.e. the scroll area around the panel.
            event.ignore()
            return True
        return False


_guard: InputGuard | None = None


def install_input_guard(app: QCoreApplication) -> InputGuard:
    """Install the one InputGuard on `app` (again is harmless: Qt keeps a filter once)."""
    global _guard
    if _guard is None:
        _guard = InputGuard()
    app.installEventFilter(_guard)
    return _guard
