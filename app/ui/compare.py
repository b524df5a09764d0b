"""CompareDialog: the same prompt answered by the 4-bit and the 2-bit variant, side by side.

The variants run one after the other, each in its own engine process
(app.workers.compare_runner), so the speeds are fair. Under each answer: decode and
prompt tokens/s, bits per weight and memory (repacked weights + KV cache).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.paths import AppPaths
from app.settings_store import SettingsStore
from app.ui.units import format_mb, format_tok_s
from app.workers.compare_runner import COMPARE_CONTEXT, COMPARE_TOKENS, CompareRunner

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."
BITS_ORDER = (4, 2)


def stats_text(info, chunk) -> str:
    """The figures under one answer (EngineInfo + the final Chunk)."""
    memory = info.packed_bytes + info.kv_cache_bytes
    return (
        f"decode {format_tok_s(chunk.decode_tok_s)} · prompt {format_tok_s(chunk.prompt_tok_s)} · "
        f"{chunk.generated_tokens} tokens ({chunk.finish_reason})\n"
        f"{info.bits_per_weight:.2f} bits per weight · memory {format_mb(memory)} "
        f"({format_mb(info.packed_bytes)} weights + {format_mb(info.kv_cache_bytes)} KV cache at "
        f"{info.n_ctx} tokens) · {info.n_threads} threads · {info.tier}"
    )


class CompareDialog(QDialog):
    def __init__(
        self,
        settings_store: SettingsStore,
        paths: AppPaths,
        model_source: str,
        parent: QWidget | None = None,
        *,
        max_tokens: int = COMPARE_TOKENS,
        n_ctx: int = COMPARE_CONTEXT,
        prompt: str = DEFAULT_PROMPT,
    ) -> None:
        super().__init__(parent)
        self.settings_store, self.paths, self.source, self.n_ctx = settings_store, paths, model_source, n_ctx
        self.runner: CompareRunner | None = None
        name = "the built-in SmolLM2 135M" if model_source == "default" else Path(model_source).name
        self.setWindowTitle(f"2-bit vs 4-bit — {name}")
        self.resize(900, 600)
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"<b>{name}</b>: the same prompt, answered greedily by the 4-bit and then the 2-bit "
            "variant, each alone on the machine so the speeds compare fairly."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.prompt_edit = QPlainTextEdit(prompt)
        self.prompt_edit.setObjectName("prompt")
        self.prompt_edit.setAccessibleName("Prompt for both variants")
        self.prompt_edit.setMaximumHeight(80)
        layout.addWidget(self.prompt_edit)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Answer length (tokens):"))
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(4, 2048)
        self.tokens_spin.setValue(max_tokens)
        controls.addWidget(self.tokens_spin)
        controls.addStretch(1)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        controls.addWidget(self.run_button)
        controls.addWidget(self.cancel_button)
        layout.addLayout(controls)

        grid = QGridLayout()
        self.answers: dict[int, QPlainTextEdit] = {}
        self.stats: dict[int, QLabel] = {}
        for column, bits in enumerate(BITS_ORDER):
            grid.addWidget(QLabel(f"<b>{bits}-bit</b>"), 0, column)
            answer = QPlainTextEdit()
            answer.setReadOnly(True)
            answer.setObjectName(f"answer{bits}")
            answer.setAccessibleName(f"{bits}-bit answer")
            grid.addWidget(answer, 1, column)
            stats = QLabel("—")
            stats.setObjectName(f"stats{bits}")
            stats.setWordWrap(True)
            grid.addWidget(stats, 2, column)
            self.answers[bits], self.stats[bits] = answer, stats
        layout.addLayout(grid, 1)
        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def run(self) -> None:
        prompt = self.prompt_edit.toPlainText().strip()
        if not prompt or (self.runner is not None and self.runner.running):
            return
        for bits in BITS_ORDER:
            self.answers[bits].clear()
            self.stats[bits].setText("waiting…")
        self.runner = CompareRunner(
            self.source,
            prompt,
            bits_order=BITS_ORDER,
            max_tokens=self.tokens_spin.value(),
            n_ctx=self.n_ctx,
            n_threads=self.settings_store.current.n_threads,
            cache_dir=self.paths.engine_cache_dir,
            parent=self,
        )
        self.runner.status.connect(self.status_label.setText)
        self.runner.variantStarted.connect(lambda bits: self.stats[bits].setText("loading…"))
        self.runner.text.connect(self._append)
        self.runner.variantFinished.connect(
            lambda bits, chunk: self.stats[bits].setText(stats_text(self.runner.infos[bits], chunk))
        )
        self.runner.failed.connect(lambda bits, message: self.stats[bits].setText(f"failed: {message}"))
        self.runner.finished.connect(self._finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.runner.start()

    def _append(self, bits: int, text: str) -> None:
        view = self.answers[bits]
        cursor = view.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def _finished(self, completed: bool) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def done(self, result: int) -> None:  # closing the dialog stops whichever engine process is running
        if self.runner is not None:
            self.runner.shutdown()
        super().done(result)
