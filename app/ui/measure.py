"""MeasureDialog: sweep thread counts (and 2-bit vs 4-bit) on this machine and chart the result.

Runs app.workers.sweep_runner.SweepRunner on its own engine process, so the chat's engine
is untouched. The chart (app.ui.sweep_chart) shows speed and cost per token against threads
and rings the best trade-off; the table lists the points. Results are saved per model, bits
and machine and shown again the next time the dialog opens. "Use the best thread count"
writes n_threads to the app's SettingsStore, which the chat's engine and slider follow.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import hardware
from app.paths import AppPaths
from app.perf.sweep import (
    MEASUREMENTS_DIR_NAME,
    SWEEP_TOKENS,
    SweepPoint,
    load_records,
    model_key_for,
    points_from_record,
    thread_counts,
)
from app.settings_store import SettingsStore
from app.ui.sweep_chart import SweepChart
from app.ui.units import format_tok_s
from app.workers.sweep_runner import SWEEP_CONTEXT, SweepRunner


class MeasureDialog(QDialog):
    def __init__(
        self,
        settings_store: SettingsStore,
        paths: AppPaths,
        model_source: str,
        bits: int | None,  # the variant the user is on (None: as in the file); the sweep runs 4- and 2-bit
        parent: QWidget | None = None,
        *,
        threads: list[int] | None = None,
        tokens: int = SWEEP_TOKENS,
        bits_list: list[int] | None = None,
        n_ctx: int = SWEEP_CONTEXT,
    ) -> None:
        super().__init__(parent)
        self.settings_store, self.paths, self.source = settings_store, paths, model_source
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
            "counts within 90 % of the fastest."
        )
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
        self.table.setHorizontalHeaderLabels(
            ["bits", "threads", "decode tok/s", "prompt tok/s", "CPU ms / token", "J / token"]
        )
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
        records = [
            r
            for r in load_records(self.measurements_dir, model_key_for(self.source))
            if r.get("machine") == self.machine
        ]
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
            values = [
                f"{p.bits}",
                f"{p.threads}",
                f"{p.decode_tok_s:.1f}",
                f"{p.prompt_tok_s:.1f}",
                f"{p.cpu_s_per_token * 1000:.1f}",
                "—" if p.joules_per_token is None else f"{p.joules_per_token:.3f}",
            ]
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        lines = []
        for bits, choice in sorted(self.chart.best.items(), reverse=True):
            b = choice.best
            cost = (
                f"{b.joules_per_token:.3f} J"
                if choice.metric == "joules_per_token"
                else f"{b.cpu_s_per_token * 1000:.1f} CPU ms"
            )
            lines.append(
                f"{bits}-bit: best trade-off {b.threads} threads ({format_tok_s(b.decode_tok_s)}, {cost} "
                f"per token); fastest {choice.fastest.threads} threads "
                f"({format_tok_s(choice.fastest.decode_tok_s)})."
            )
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
            self.settings_store.update(n_threads=threads)  # the chat's engine and thread slider follow the store
        except ValueError as error:
            self.status_label.setText(f"Could not use {threads} threads: {error}")
            return
        self.status_label.setText(f"The chat will use {threads} threads.")

    # ---- running -----------------------------------------------------------------------------

    def start(self) -> None:
        bits_list = [b for b, check in self.bits_checks.items() if check.isChecked()]
        if not bits_list or (self.runner is not None and self.runner.running):
            return
        self._set_points([])
        self.runner = SweepRunner(
            self.source,
            bits_list=bits_list,
            threads=self.threads,
            measurements_dir=self.measurements_dir,
            max_tokens=self.tokens_spin.value(),
            n_ctx=self.n_ctx,
            cache_dir=self.paths.engine_cache_dir,
            parent=self,
        )
        self.runner.status.connect(self.status_label.setText)
        self.runner.pointMeasured.connect(lambda point: self._set_points(self.points + [point]))
        self.runner.recordSaved.connect(
            lambda bits, record, path: self.status_label.setText(f"{bits}-bit results saved to {path}")
        )
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
        if completed and self.runner is not None:
            saved = ", ".join(f"{b}-bit" for b in sorted(self.runner.records, reverse=True))
            self.status_label.setText(f"Done. Results saved ({saved}) in {self.measurements_dir}.")

    def done(self, result: int) -> None:  # closing the dialog in any way stops the engine process
        if self.runner is not None:
            self.runner.shutdown()
        super().done(result)
