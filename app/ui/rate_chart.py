"""The live speed of one answer (AnswerRates) and a small chart of it (RateChart).

The prompt / decode CPU split is the engine's (Chunk.prompt_cpu_s, app.chat.records.AnswerStats). The rolling
rate is over the last ROLLING_TOKENS tokens, so moving the thread slider mid-answer shows
at once instead of being averaged away. RateChart draws that rolling rate per token with a
dashed mark where the thread count changed. Pure arithmetic in AnswerRates (no Qt).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

ROLLING_TOKENS = 16
MAX_POINTS = 2048  # a chart point per token; longer answers keep the latest


@dataclass(frozen=True)
class ThreadMark:
    token: int  # the first token generated with the new count
    threads: int


class AnswerRates:
    """Fed every chunk of one answer (Chunk: elapsed_s, generated_tokens, threads, …)."""

    def __init__(self) -> None:
        self.rolling_tok_s: float | None = None
        self.points: list[tuple[int, float]] = []  # (token, rolling tok/s)
        self.marks: list[ThreadMark] = []
        self._window: deque[tuple[int, float]] = deque(maxlen=ROLLING_TOKENS + 1)  # (tokens, elapsed_s)
        self._threads: int | None = None

    def add(self, chunk) -> None:
        tokens = chunk.generated_tokens
        if tokens >= 1 and chunk.token_id is not None:
            if self._threads is not None and chunk.threads != self._threads:
                self.marks.append(ThreadMark(tokens, chunk.threads))
            self._threads = chunk.threads
            if not self._window or self._window[-1][0] != tokens:
                self._window.append((tokens, chunk.elapsed_s))
            first, last = self._window[0], self._window[-1]
            if last[0] > first[0] and last[1] > first[1]:
                self.rolling_tok_s = (last[0] - first[0]) / (last[1] - first[1])
                self.points.append((tokens, self.rolling_tok_s))
                if len(self.points) > MAX_POINTS:
                    del self.points[: len(self.points) - MAX_POINTS]


class RateChart(QWidget):
    """tok/s per token of the current answer; dashed marks where the thread count changed."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("rateChart")
        self.setAccessibleName("Speed chart")
        self.setAccessibleDescription("Tokens per second over the last tokens, with marks where the threads changed")
        self.setMinimumHeight(56)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(64)
        self.rates: AnswerRates | None = None

    def show_rates(self, rates: AnswerRates | None) -> None:
        self.rates = rates
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        muted = QColor(text)
        muted.setAlpha(110)
        plot = QRectF(1, 12, max(10, self.width() - 2), max(10, self.height() - 14))
        painter.setPen(QPen(muted, 1))
        painter.drawLine(plot.bottomLeft(), plot.bottomRight())
        rates = self.rates
        if rates is None or len(rates.points) < 2:
            return
        points = rates.points
        first, last = points[0][0], points[-1][0]
        top = max(rate for _, rate in points) * 1.15 or 1.0
        span = max(1, last - first)

        def x_of(token: int) -> float:
            return plot.left() + (token - first) / span * plot.width()

        path = QPainterPath(QPointF(x_of(first), plot.bottom() - points[0][1] / top * plot.height()))
        for token, rate in points[1:]:
            path.lineTo(QPointF(x_of(token), plot.bottom() - rate / top * plot.height()))
        painter.setPen(QPen(self.palette().color(self.palette().ColorRole.Highlight), 1.5))
        painter.drawPath(path)
        painter.setPen(QPen(muted, 1, Qt.PenStyle.DashLine))
        for mark in rates.marks:
            if first <= mark.token <= last:
                x = x_of(mark.token)
                painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
                painter.drawText(QPointF(x + 3, plot.top() + 1), f"{mark.threads} thr")
        painter.setPen(QPen(text, 1))
        painter.drawText(QPointF(plot.left() + 2, 10), f"{top / 1.15:.0f} tok/s")
