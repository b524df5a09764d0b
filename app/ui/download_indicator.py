"""A small status-bar widget: how many downloads run and how far they are, seen from every page.

The Models page emits downloadsChanged(count, bytes_done, bytes_total) whenever a download
starts, progresses or ends; this widget shows "Downloading 2 models · 41 %" with a thin bar,
hides itself when none runs, and emits `clicked` (the window shows the Models page).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QStatusBar, QWidget


class DownloadIndicator(QWidget):
    clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("downloadIndicator")
        self.setAccessibleName("Downloads in progress")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Show the Models page")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setMaximumWidth(120)
        self.bar.setMaximumHeight(10)
        self.bar.setTextVisible(False)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        self.setVisible(False)

    @classmethod
    def for_page(cls, page: QWidget, status_bar: QStatusBar, show_page: Callable[[], None]) -> DownloadIndicator:
        """Add an indicator to `status_bar` that follows `page.downloadsChanged`; a click calls `show_page`."""
        indicator = cls(status_bar)
        status_bar.addPermanentWidget(indicator)
        page.downloadsChanged.connect(indicator.set_downloads)  # type: ignore[attr-defined]  # ModelManagerPage
        indicator.clicked.connect(show_page)
        return indicator

    def set_downloads(self, count: int, done: int, total: int) -> None:
        if count <= 0:
            self.setVisible(False)
            return
        fraction = done / total if total > 0 else 0.0
        noun = "model" if count == 1 else "models"
        self.label.setText(f"Downloading {count} {noun} · {fraction:.0%}")
        self.bar.setValue(int(1000 * min(fraction, 1.0)))
        self.setAccessibleDescription(self.label.text())
        self.setVisible(True)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's name)
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mousePressEvent(event)
