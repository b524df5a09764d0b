"""The Qt binding itself. PySide6 6.12.0 on Python 3.11 drops a reference to None on every call of
a method that returns nothing (setText, setVisible, processEvents...) and one to True on every
Python-side emit(); the process aborts (none_dealloc / bool_dealloc) after tens of thousands of
calls, which a streaming chat or a download progress bar reaches in minutes. Such a binding
must not be installed (pin PySide6 != 6.12.0)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Emitter(QObject):
    value = Signal(object)


def test_emit_and_void_calls_keep_reference_counts(qtbot):
    emitter = _Emitter()
    received = []
    emitter.value.connect(received.append)
    label = QLabel()
    qtbot.addWidget(label)
    before_true, before_none = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(100):
        emitter.value.emit(i)
        label.setText(str(i))
    assert received == list(range(100)) and label.text() == "99"
    # A few references may come and go elsewhere; the bug shows as -100.
    assert abs(sys.getrefcount(True) - before_true) < 20, "PySide6 emit() leaks references to True"
    assert abs(sys.getrefcount(None) - before_none) < 20, "PySide6 void methods leak references to None"
