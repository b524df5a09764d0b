"""MeasureDialog: sweep thread counts (and 2-bit vs 4-bit) on this machine and chart the result.

Runs app.workers.sweep_runner.SweepRunner on its own engine process, so the chat's engine
is untouched. The chart (plain QPainter) shows decode tokens/s (solid, left axis) and the
cost per token (dashed, right axis: joules where a power sensor is readable, otherwise
CPU milliseconds) against threads, one colour per bit width, and rings the best trade-off
(app.perf.sweep's rule). Results are saved per model, bits and machine and shown again the
next time the dialog opens.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSizePolicy, QSpinBox,
    QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app import hardware
from app.paths import AppPaths
from app.perf.sweep import (
    MEASUREMENTS_DIR_NAME, SWEEP_TOKENS, SweepPoint, Tradeoff, best_tradeoff, load_records, model_key_for,
    points_from_record, thread_counts,
)
from app.settings import AppSettings, update_settings
from app.workers.sweep_runner import SWEEP_CONTEXT, SweepRunner

BITS_COLORS = {4: QColor("#2e86de"), 2: QColor("#e67e22")}


def cost_metric(points: list[SweepPoint]) -> str:
    """Joules per token when every point has an energy reading, else CPU-seconds per token."""
    return "joules_per_token" if points and all(p.joules_per_token is not None for p in points) else "cpu_s_per_token"


def cost_of(point: SweepPoint, metric: str) -> float:
    return point.joules_per_token if metric == "joules_per_token" else point.cpu_s_per_token * 1000.0


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

    MARGINS = (58, 18, 64, 42)   # left, top, right, bottom

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
        summary = "; ".join(f"{bits}-bit best at {c.best.threads} threads, {c.best.decode_tok_s:.1f} tokens/s"
                            for bits, c in self.best.items())
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

    def _axes(self, painter: QPainter, plot: QRectF, color: QColor, max_speed: float, max_cost: float,
              metric: str, x_of) -> None:
        painter.setPen(QPen(color, 1))
        for i in range(5):
            fraction = i / 4
            y = plot.bottom() - fraction * plot.height()
            painter.drawLine(QPointF(plot.left() - 4, y), QPointF(plot.left(), y))
            painter.drawText(QRectF(0, y - 8, plot.left() - 6, 16), Qt.AlignmentFlag.AlignRight,
                             f"{max_speed * fraction:g}")
            painter.drawLine(QPointF(plot.right(), y), QPointF(plot.right() + 4, y))
            painter.drawText(QRectF(plot.right() + 6, y - 8, 60, 16), Qt.AlignmentFlag.AlignLeft,
                             f"{max_cost * fraction:g}")
        ticks = thread_counts(self.max_threads, limit=16)
        for threads in ticks:
            x = x_of(threads)
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 4))
            painter.drawText(QRectF(x - 15, plot.bottom() + 5, 30, 14), Qt.AlignmentFlag.AlignHCenter, str(threads))
        painter.drawText(QRectF(plot.left(), plot.bottom() + 20, plot.width(), 16), Qt.AlignmentFlag.AlignHCenter,
                         "threads")
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


class MeasureDialog(QDialog):
    settingsChanged = Signal(object)   # AppSettings after "Use N threads" saved n_threads
    threadsChosen = Signal(int)        # the thread count the user adopted

    def __init__(self, settings: AppSettings, paths: AppPaths, model_source: str, bits: int,
                 parent: QWidget | None = None, *, threads: list[int] | None = None, tokens: int = SWEEP_TOKENS,
                 bits_list: list[int] | None = None, n_ctx: int = SWEEP_CONTEXT) -> None:
        super().__init__(parent)
        self.settings, self.paths, self.source = settings, paths, model_source
        self.machine = hardware.machine_label()
        self.threads = threads or thread_counts(hardware.logical_cores())
        self.n_ctx = n_ctx
        self.measurements_dir = Path(paths.data_dir) / MEASUREMENTS_DIR_NAME
        self.runner: SweepRunner | None = None
        self.points: list[SweepPoint] = []
        name = "the built-in SmolLM2 135M" if model_source == "default" else Path(model_source).name
        self.setWindowTitle(f"Measure speed — {name}")
        self.resize(760, 640)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"<b>{name}</b> on {self.machine}"))
        explain = QLabel(
            f"Generates the same short prompt greedily with each thread count ({', '.join(map(str, self.threads))}) "
            "and records decode speed, CPU time per token and, where this computer has a readable power sensor, "
            "energy per token. Best trade-off: the fewest joules (or CPU-seconds) per token among the thread "
            "counts within 90 % of the fastest.")
        explain.setWordWrap(True)
        layout.addWidget(explain)

        controls = QHBoxLayout()
        order = [bits] + [b for b in (4, 2) if b != bits] if bits in (2, 4) else [4, 2]
        chosen = bits_list if bits_list is not None else order
        self.bits_checks: dict[int, QCheckBox] = {}
        for b in order:
            check = QCheckBox(f"{b}-bit")
            check.setChecked(b in chosen)
            self.bits_checks[b] = check
            controls.addWidget(check)
        controls.addWidget(QLabel("Tokens per run:"))
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(4, 512)
        self.tokens_spin.setValue(tokens)
        controls.addWidget(self.tokens_spin)
        controls.addStretch(1)
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        controls.addWidget(self.start_button)
        controls.addWidget(self.cancel_button)
        layout.addLayout(controls)

        self.chart = SweepChart()
        layout.addWidget(self.chart, 1)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["bits", "threads", "decode tok/s", "prompt tok/s",
                                              "CPU ms / token", "J / token"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMaximumHeight(180)
        layout.addWidget(self.table)
        self.best_label = QLabel()
        self.best_label.setObjectName("best")
        self.best_label.setWordWrap(True)
        layout.addWidget(self.best_label)
        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        bottom = QHBoxLayout()
        self.use_button = QPushButton("Use the best thread count for chat")
        self.use_button.setObjectName("useThreads")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self._use_best)
        bottom.addWidget(self.use_button)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        bottom.addWidget(buttons)
        layout.addLayout(bottom)
        self._show_saved()

    # ---- results -----------------------------------------------------------------------------

    def _show_saved(self) -> None:
        records = [r for r in load_records(self.measurements_dir, model_key_for(self.source))
                   if r.get("machine") == self.machine]
        newest: dict[int, dict] = {}
        for record in records:
            newest.setdefault(record["bits"], record)
        points = [p for record in newest.values() for p in points_from_record(record)]
        if points:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(max(r["created_at"] for r in newest.values())))
            self.status_label.setText(f"Showing the measurement saved on {when}. Start measures again.")
        self._set_points(points)

    def _set_points(self, points: list[SweepPoint]) -> None:
        self.points = list(points)
        self.chart.set_data(self.points, max(self.threads))
        self.table.setRowCount(len(self.points))
        for row, p in enumerate(sorted(self.points, key=lambda p: (-p.bits, p.threads))):
            values = [f"{p.bits}", f"{p.threads}", f"{p.decode_tok_s:.1f}", f"{p.prompt_tok_s:.1f}",
                      f"{p.cpu_s_per_token * 1000:.1f}",
                      "—" if p.joules_per_token is None else f"{p.joules_per_token:.3f}"]
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        lines = []
        for bits, choice in sorted(self.chart.best.items(), reverse=True):
            b = choice.best
            cost = (f"{b.joules_per_token:.3f} J" if choice.metric == "joules_per_token"
                    else f"{b.cpu_s_per_token * 1000:.1f} CPU ms")
            lines.append(f"{bits}-bit: best trade-off {b.threads} threads ({b.decode_tok_s:.1f} tokens/s, {cost} "
                         f"per token); fastest {choice.fastest.threads} threads "
                         f"({choice.fastest.decode_tok_s:.1f} tokens/s).")
        if self.chart.best:
            lines.append("Rule: " + next(iter(self.chart.best.values())).rule + ".")
        self.best_label.setText("\n".join(lines))
        self.use_button.setEnabled(bool(self.chart.best))

    def best_threads(self) -> int | None:
        """The best trade-off of the bit width measured first (the one the dialog was opened for)."""
        for bits in self.bits_checks:
            if bits in self.chart.best:
                return self.chart.best[bits].best.threads
        return None

    def _use_best(self) -> None:
        threads = self.best_threads()
        if threads is None:
            return
        try:
            self.settings = update_settings(self.paths.settings_file, n_threads=threads)
        except OSError as error:
            self.status_label.setText(f"Could not save settings: {error}")
            return
        self.status_label.setText(f"The chat will use {threads} threads.")
        self.settingsChanged.emit(self.settings)
        self.threadsChosen.emit(threads)

    # ---- running -----------------------------------------------------------------------------

    def start(self) -> None:
        bits_list = [b for b, check in self.bits_checks.items() if check.isChecked()]
        if not bits_list or (self.runner is not None and self.runner.running):
            return
        self._set_points([])
        self.runner = SweepRunner(self.source, bits_list=bits_list, threads=self.threads,
                                  measurements_dir=self.measurements_dir, max_tokens=self.tokens_spin.value(),
                                  n_ctx=self.n_ctx, cache_dir=self.paths.engine_cache_dir, parent=self)
        self.runner.status.connect(self.status_label.setText)
        self.runner.pointMeasured.connect(lambda point: self._set_points(self.points + [point]))
        self.runner.recordSaved.connect(
            lambda bits, record, path: self.status_label.setText(f"{bits}-bit results saved to {path}"))
        self.runner.finished.connect(self._finished)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.runner.start()

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def _finished(self, completed: bool) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if completed:
            saved = ", ".join(f"{b}-bit" for b in sorted(self.runner.records, reverse=True))
            self.status_label.setText(f"Done. Results saved ({saved}) in {self.measurements_dir}.")

    def done(self, result: int) -> None:  # closing the dialog in any way stops the engine process
        if self.runner is not None:
            self.runner.shutdown()
        super().done(result)
