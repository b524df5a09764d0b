"""PerfPanel: live numbers for the answer being written, and the thread slider.

Decode tok/s (the answer's average and the rolling rate of the last tokens, with
a small chart), time to first token and prompt tok/s come from the engine's
chunks. CPU time is split into the prompt's (per prompt token read) and decoding's
(per generated token after the first), as the engine measured them at the first token
(Chunk.prompt_cpu_s; the arithmetic is app.chat.records.AnswerStats'); CPU use comes from
Chunk.cpu_s and elapsed_s (the engine process's own CPU time, all threads). Watts and joules per token
come from app.power.PowerMeter (RAPL, Windows' EMI, macOS' IOReport or SMC, or a discharging battery), which measures
the whole CPU package or system, not just this app: the label says which. With
no sensor the panel says so plainly instead of showing a made-up number.

The slider writes n_threads to the app's SettingsStore (the window passes the
change on to EngineClient.set_threads, also while an answer runs) and follows the
store when another window changes it; the "now using" figure is Chunk.threads,
i.e. what the engine actually applied.

The panel follows the selected chat: while no answer runs it shows the selected
chat's last answer (show_conversation) from its stored AnswerStats, the split CPU
figures included; the rolling rate and chart only for answers written in this session.
"""

from __future__ import annotations

import os
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from app.catalog.catalog import bits_label
from app.chat.records import AnswerStats
from app.power.readers import NO_SENSOR_REASON, PowerMeter, PowerReading
from app.settings import AppSettings
from app.settings_store import SettingsStore
from app.ui.rate_chart import ROLLING_TOKENS, AnswerRates, RateChart
from app.ui.units import (
    format_cpu_ms_per_token,
    format_joules_per_token,
    format_parameters,
    format_seconds,
    format_tok_s,
    format_watts,
)

POWER_SAMPLE_S = 0.5
REFRESH_MS = 200


def _value_label(name: str, object_name: str = "perfValue") -> QLabel:
    label = QLabel("–")
    label.setObjectName(object_name)
    label.setAccessibleName(name)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class PerfPanel(QWidget):
    def __init__(
        self,
        power_meter: PowerMeter | None,
        settings_store: SettingsStore,
        *,
        default_threads: int | None = None,
        parent=None,
    ) -> None:
        super().__init__(parent)
        self.settings_store = settings_store
        self.setObjectName("perfPanel")
        self.setAccessibleName("Performance")
        self.meter = power_meter if power_meter is not None else PowerMeter()
        self.cpu_count = os.cpu_count() or 1
        self.last_chunk = None
        self.rates = AnswerRates()
        self.conversation_id = 0  # the chat whose answer is shown
        self._answering = False
        self._rates_by_conversation: dict[int, AnswerRates] = {}  # last live answer of each chat
        self._power_start: PowerReading | None = None
        self._power_last_t = 0.0

        self.speed = _value_label("Decode speed", "perfBig")
        self.speed_caption = QLabel("tokens / s")
        self.speed_caption.setObjectName("perfCaption")
        self.speed_now = _value_label("Current speed", "perfCaption")
        self.chart = RateChart()
        self.ttft = _value_label("Time to first token")
        self.prompt_speed = _value_label("Prompt speed")
        self.tokens = _value_label("Tokens")
        self.prompt_cpu = _value_label("Prompt CPU time per prompt token")
        self.cpu_per_token = _value_label("Decode CPU time per generated token")
        self.cpu_use = _value_label("CPU use")
        self.power = _value_label("Power")
        self.energy = _value_label("Energy per token")
        self.threads_used = _value_label("Threads in use")
        self.kernel = _value_label("Kernel")
        self.model = _value_label("Model")
        self.model.setWordWrap(True)

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("threadSlider")
        self.slider.setAccessibleName("Threads")
        self.slider.setAccessibleDescription("How many CPU threads the engine uses; applies from the next token.")
        self.slider.setRange(1, self.cpu_count)
        threads = settings_store.current.n_threads or default_threads
        self.slider.setValue(min(threads or self.cpu_count, self.cpu_count))
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setPageStep(1)
        self.slider_value = QLabel(str(self.slider.value()))
        self.slider_value.setObjectName("perfValue")
        self.slider_value.setMinimumWidth(24)
        self.slider.valueChanged.connect(self._on_slider_moved)
        slider_row = QHBoxLayout()
        slider_row.addWidget(self.slider, 1)
        slider_row.addWidget(self.slider_value)

        headline = QVBoxLayout()
        headline.setSpacing(0)
        headline.addWidget(self.speed, alignment=Qt.AlignmentFlag.AlignLeft)
        headline.addWidget(self.speed_caption)
        headline.addWidget(self.speed_now)
        live = QGroupBox("This answer")
        form = QFormLayout(live)
        form.addRow(headline)
        form.addRow(self.chart)
        form.addRow("First token", self.ttft)
        form.addRow("Prompt", self.prompt_speed)
        form.addRow("Tokens", self.tokens)
        form.addRow("Prompt CPU", self.prompt_cpu)
        form.addRow("Decode CPU", self.cpu_per_token)
        form.addRow("CPU use", self.cpu_use)
        form.addRow("Power", self.power)
        form.addRow("Energy", self.energy)
        engine = QGroupBox("Engine")
        engine_form = QFormLayout(engine)
        engine_form.addRow("Threads", slider_row)
        engine_form.addRow("In use", self.threads_used)
        engine_form.addRow("Kernel", self.kernel)
        engine_form.addRow("Model", self.model)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(live)
        layout.addWidget(engine)
        self._show_power_unavailable()
        # Repainting eight labels per token would take CPU from the engine for numbers nobody can read.
        self._refresh_timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._refresh_timer.timeout.connect(self._render_latest)
        unsubscribe = settings_store.subscribe(self._on_settings_changed)
        self.destroyed.connect(lambda *_: unsubscribe())

    # ---- inputs -------------------------------------------------------------------------------

    def set_engine_info(self, info) -> None:
        if info is None:
            self.kernel.setText("–")
            self.model.setText("not loaded")
            return
        self.kernel.setText(f"{info.tier} · {bits_label(info.bits)} ({info.bits_per_weight:.2f} bits/weight)")
        self.model.setText(f"{info.name}\n{format_parameters(info.n_params)} parameters · context {info.n_ctx}")
        self.threads_used.setText(str(info.n_threads))

    def set_threads(self, n: int) -> None:
        """Move the slider without asking the engine (e.g. restoring a setting)."""
        self.slider.blockSignals(True)
        self.slider.setValue(max(1, min(n, self.cpu_count)))
        self.slider.blockSignals(False)
        self.slider_value.setText(str(self.slider.value()))

    def answer_started(self, conversation_id: int = 0) -> None:
        self.last_chunk = None
        self.conversation_id = conversation_id
        self._answering = True
        self.rates = AnswerRates()
        self._rates_by_conversation[conversation_id] = self.rates
        self.chart.show_rates(self.rates)
        for label in (
            self.speed,
            self.speed_now,
            self.ttft,
            self.prompt_speed,
            self.tokens,
            self.prompt_cpu,
            self.cpu_per_token,
            self.cpu_use,
        ):
            label.setText("…")
        self._power_start = self.meter.read()
        self._power_last_t = 0.0
        if self.meter.sensor is not None:
            self.power.setText("…")
            self.energy.setText("…")

    def show_chunk(self, chunk) -> None:
        """Called per token; the labels are refreshed a few times a second (and at the end)."""
        self.last_chunk = chunk
        self.rates.add(chunk)
        if chunk.finish_reason is not None:
            self._answering = False
            self._refresh_timer.stop()
            self._render(chunk)
        elif not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _render_latest(self) -> None:
        if self.last_chunk is not None:
            self._render(self.last_chunk)

    def _render(self, chunk) -> None:
        if chunk.generated_tokens >= 2 or chunk.finish_reason:
            self.speed.setText(f"{chunk.decode_tok_s:.1f}")
        if chunk.generated_tokens >= 1:
            self.ttft.setText(format_seconds(chunk.ttft_s))
        cached = f" ({chunk.cached_tokens} cached)" if chunk.cached_tokens else ""
        if chunk.prompt_tok_s > 0:
            rate = format_tok_s(chunk.prompt_tok_s, digits=0, unit="tok/s")
            self.prompt_speed.setText(f"{rate} · {chunk.prompt_tokens} tokens{cached}")
        else:
            self.prompt_speed.setText(f"{chunk.prompt_tokens} tokens{cached}")
        self.tokens.setText(str(chunk.generated_tokens))
        self._render_rates(self.rates)
        self._render_cpu(AnswerStats.from_chunk(chunk))
        if chunk.elapsed_s > 0:
            self._show_cpu_use(chunk.cpu_s / chunk.elapsed_s)
        self.threads_used.setText(str(chunk.threads))
        self.chart.update()
        self._update_power(chunk)

    def _render_rates(self, rates: AnswerRates | None) -> None:
        rolling = rates.rolling_tok_s if rates is not None else None
        self.speed_now.setText("–" if rolling is None else f"now {rolling:.1f} tok/s (last {ROLLING_TOKENS} tokens)")

    def _render_cpu(self, stats: AnswerStats | None) -> None:
        """Prompt CPU per prompt token read, decode CPU per generated token: never one mixed figure."""
        prompt = stats.prompt_cpu_s_per_token if stats is not None else None
        if stats is not None and stats.prompt_cpu_s is not None and stats.prompt_tokens_read == 0:
            self.prompt_cpu.setText("all cached")
        else:
            self.prompt_cpu.setText("–" if prompt is None else format_cpu_ms_per_token(prompt))
        decode = stats.decode_cpu_s_per_token if stats is not None else None
        self.cpu_per_token.setText("–" if decode is None else format_cpu_ms_per_token(decode))

    def _show_cpu_use(self, cores: float) -> None:
        self.cpu_use.setText(f"{cores:.1f} of {self.cpu_count} cores ({100 * cores / self.cpu_count:.0f} %)")

    def show_conversation(self, conversation_id: int, stats) -> None:
        """Follow the selected chat: show its last answer's numbers (app.chat.records.AnswerStats, or
        None when it has none). An answer being written keeps the panel until it ends."""
        if self._answering:
            return
        self.conversation_id = conversation_id
        rates = self._rates_by_conversation.get(conversation_id) if stats is not None else None
        self.rates = rates if rates is not None else AnswerRates()
        self.chart.show_rates(rates)
        if stats is None:
            for label in (self.speed, self.speed_now, self.ttft, self.prompt_speed, self.tokens, self.cpu_use):
                label.setText("–")
            self._render_rates(None)
            self._render_cpu(None)
            return

        def shown(value, text) -> str:
            return "–" if value is None else text

        self.speed.setText(shown(stats.decode_tok_s, f"{stats.decode_tok_s or 0:.1f}"))
        self.ttft.setText(shown(stats.ttft_s, format_seconds(stats.ttft_s or 0)))
        cached = f" ({stats.cached_tokens} cached)" if stats.cached_tokens else ""
        if stats.prompt_tok_s:
            rate = format_tok_s(stats.prompt_tok_s, digits=0, unit="tok/s")
            self.prompt_speed.setText(f"{rate} · {stats.prompt_tokens} tokens{cached}")
        else:
            self.prompt_speed.setText(shown(stats.prompt_tokens, f"{stats.prompt_tokens} tokens{cached}"))
        self.tokens.setText(shown(stats.generated_tokens, str(stats.generated_tokens)))
        self._render_rates(rates)
        self._render_cpu(stats)
        if stats.cpu_s is not None and stats.elapsed_s:
            self._show_cpu_use(stats.cpu_s / stats.elapsed_s)
        else:
            self.cpu_use.setText("–")
        if stats.threads:
            self.threads_used.setText(str(stats.threads))

    # ---- power --------------------------------------------------------------------------------

    def _show_power_unavailable(self) -> None:
        if self.meter.sensor is None:
            self.power.setText(NO_SENSOR_REASON)
            self.power.setToolTip(self.meter.unavailable_reason or "")
            self.power.setWordWrap(True)
            self.energy.setText("–")
        else:
            self.power.setToolTip(f"Measured: {self.meter.label}")

    def _update_power(self, chunk) -> None:
        if self.meter.sensor is None or self._power_start is None:
            return
        now = time.monotonic()
        if now - self._power_last_t < POWER_SAMPLE_S and not chunk.finish_reason:
            return
        self._power_last_t = now
        reading = self.meter.read()
        watts = self.meter.watts_between(self._power_start, reading)
        joules = self.meter.joules_between(self._power_start, reading)
        if watts is not None:
            self.power.setText(f"{format_watts(watts)} ({self.meter.label})")
        if joules is not None and chunk.generated_tokens:
            self.energy.setText(format_joules_per_token(joules / chunk.generated_tokens))

    # ---- slider -------------------------------------------------------------------------------

    def _on_slider_moved(self, value: int) -> None:
        self.slider_value.setText(str(value))
        self.settings_store.update(n_threads=value)

    def _on_settings_changed(self, settings: AppSettings, changed: frozenset[str]) -> None:
        if "n_threads" in changed and settings.n_threads and settings.n_threads != self.slider.value():
            self.set_threads(settings.n_threads)  # chosen elsewhere (the speed sweep's "Use the best")
