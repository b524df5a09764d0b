"""SweepChart: decode tokens/s and cost per token against the thread count, one colour per bit width.

A plain QPainter widget for MeasureDialog: speed is the solid line on the left axis, the
cost per token the dashed one on the right axis (joules where every point has an energy
reading, otherwise CPU milliseconds), and the best trade-off of each bit width
(app.perf.sweep.best_tradeoff) is ringed. Axis tops are round numbers (nice_ceiling).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.perf.sweep import SweepPoint, Tradeoff, best_tradeoff, thread_counts
from app.ui.units import format_tok_s

BITS_COLORS = {4: QColor("#2e86de"), 2: QColor("#e67e22")}


def cost_metric(points: list[SweepPoint]) -> str:
    """Joules per token when every point has an energy reading, else CPU-seconds per token."""
    return "joules_per_token" if points and all(p.joules_per_token is not None for p in points) else "cpu_s_per_token"


def cost_of(point: SweepPoint, metric: str) -> float:
    joules = point.joules_per_token
    if metric == "joules_per_token" and joules is not None:
        return joules
    return point.cpu_s_per_token * 1000.0


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value`, so four axis steps are round numbers."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * scale >= value:
            return step * scale
    return 10.0 * scale


def cost_unit(metric: str) -> str:
    return "J / token" if metric == "joules_per_token" else "CPU ms / token"


class SweepChart(QWidget):
    """Tokens/s and cost per token against threads, per bit width; the best trade-off ringed."""

    MARGINS = (58, 18, 64, 42)  # left, top, right, bottom

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[SweepPoint] = []
        self.best: dict[int, Tradeoff] = {}
        self.max_threads = 1
        self.setMinimumSize(420, 260)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName("Speed and cost per token against thread count")

    def set_data(self, points: list[SweepPoint], max_threads: int) -> None:
        self.points = sorted(points, key=lambda p: (p.bits, p.threads))
        self.max_threads = max([max_threads] + [p.threads for p in points])
        self.best = {}
        for bits in sorted({p.bits for p in points}):
            choice = best_tradeoff([p for p in points if p.bits == bits])
            if choice is not None:
                self.best[bits] = choice
        summary = "; ".join(
            f"{bits}-bit best at {c.best.threads} threads, {format_tok_s(c.best.decode_tok_s)}"
            for bits, c in self.best.items()
        )
        self.setAccessibleDescription(summary or "No measurements yet.")
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text_color = self.palette().color(self.foregroundRole())
        left, top, right, bottom = self.MARGINS
        plot = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        painter.setPen(QPen(text_color, 1))
        painter.drawRect(plot)
        if not self.points:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No measurements yet: press Start.")
            return
        metric = cost_metric(self.points)
        max_speed = nice_ceiling(max(p.decode_tok_s for p in self.points) * 1.08)
        costs = [cost_of(p, metric) for p in self.points if cost_of(p, metric) != float("inf")]
        max_cost = nice_ceiling((max(costs) if costs else 1.0) * 1.08)
        x_span = max(1, self.max_threads - 1)

        def x_of(threads: int) -> float:
            return plot.left() + (threads - 1) / x_span * plot.width() if self.max_threads > 1 else plot.center().x()

        def y_of(value: float, top_value: float) -> float:
            return plot.bottom() - min(value, top_value) / top_value * plot.height()

        self._axes(painter, plot, text_color, max_speed, max_cost, metric, x_of)
        for bits in sorted({p.bits for p in self.points}, reverse=True):
            color = BITS_COLORS.get(bits, text_color)
            series = [p for p in self.points if p.bits == bits]
            speed_path, cost_path = QPainterPath(), QPainterPath()
            for i, p in enumerate(series):
                speed_xy = QPointF(x_of(p.threads), y_of(p.decode_tok_s, max_speed))
                cost_xy = QPointF(x_of(p.threads), y_of(cost_of(p, metric), max_cost))
                (speed_path.moveTo if i == 0 else speed_path.lineTo)(speed_xy)
                (cost_path.moveTo if i == 0 else cost_path.lineTo)(cost_xy)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(color, 2))
            painter.drawPath(speed_path)
            painter.setPen(QPen(color, 1.5, Qt.PenStyle.DashLine))
            painter.drawPath(cost_path)
            for p in series:
                painter.setPen(QPen(color, 1.5))
                painter.setBrush(color)
                painter.drawEllipse(QPointF(x_of(p.threads), y_of(p.decode_tok_s, max_speed)), 3.5, 3.5)
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(QRectF(x_of(p.threads) - 3, y_of(cost_of(p, metric), max_cost) - 3, 6, 6))
            choice = self.best.get(bits)
            if choice is not None:
                center = QPointF(x_of(choice.best.threads), y_of(choice.best.decode_tok_s, max_speed))
                painter.setPen(QPen(color, 2.5))
                painter.drawEllipse(center, 9, 9)
                painter.setPen(QPen(text_color, 1))
                painter.drawText(center + QPointF(-40, -14), f"best {bits}-bit: {choice.best.threads}t")
        self._legend(painter, plot, text_color, metric)

    def _axes(
        self, painter: QPainter, plot: QRectF, color: QColor, max_speed: float, max_cost: float, metric: str, x_of
    ) -> None:
        painter.setPen(QPen(color, 1))
        for i in range(5):
            fraction = i / 4
            y = plot.bottom() - fraction * plot.height()
            painter.drawLine(QPointF(plot.left() - 4, y), QPointF(plot.left(), y))
            painter.drawText(
                QRectF(0, y - 8, plot.left() - 6, 16), Qt.AlignmentFlag.AlignRight, f"{max_speed * fraction:g}"
            )
            painter.drawLine(QPointF(plot.right(), y), QPointF(plot.right() + 4, y))
            painter.drawText(
                QRectF(plot.right() + 6, y - 8, 60, 16), Qt.AlignmentFlag.AlignLeft, f"{max_cost * fraction:g}"
            )
        ticks = thread_counts(self.max_threads, limit=16)
        for threads in ticks:
            x = x_of(threads)
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 4))
            painter.drawText(QRectF(x - 15, plot.bottom() + 5, 30, 14), Qt.AlignmentFlag.AlignHCenter, str(threads))
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + 20, plot.width(), 16), Qt.AlignmentFlag.AlignHCenter, "threads"
        )
        painter.save()
        painter.translate(12, plot.center().y())
        painter.rotate(-90)
        painter.drawText(QRectF(-80, -8, 160, 16), Qt.AlignmentFlag.AlignCenter, "tokens / s (solid)")
        painter.restore()
        painter.save()
        painter.translate(self.width() - 8, plot.center().y())
        painter.rotate(90)
        painter.drawText(QRectF(-90, -8, 180, 16), Qt.AlignmentFlag.AlignCenter, f"{cost_unit(metric)} (dashed)")
        painter.restore()

    def _legend(self, painter: QPainter, plot: QRectF, color: QColor, metric: str) -> None:
        y = plot.top() + 14
        for bits in sorted({p.bits for p in self.points}, reverse=True):
            swatch = BITS_COLORS.get(bits, color)
            painter.setPen(QPen(swatch, 3))
            painter.drawLine(QPointF(plot.left() + 8, y - 4), QPointF(plot.left() + 26, y - 4))
            painter.setPen(QPen(color, 1))
            painter.drawText(QPointF(plot.left() + 32, y), f"{bits}-bit")
            y += 16
