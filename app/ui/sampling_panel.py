"""SamplingPanel: the open chat's system prompt and sampling (temperature, top-k, top-p, min-p,
repeat penalty, max tokens, seed), and the global context length.

A chat keeps its own system prompt and sampling (app.settings.CONVERSATION_FIELDS): with a
chat open the panel edits that chat's row in the ChatStore, and "Use as default for new
chats" copies the values into the SettingsStore, where new chats start from. With no chat
open it edits those defaults directly. Changes apply to the next answer. The context length
is global and sizes the KV cache, so it applies when the model is loaded again; the panel
says so and offers the reload.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.chat.errors import ConversationNotFoundError
from app.chat.store import ChatStore
from app.settings import CONVERSATION_FIELDS, AppSettings, for_conversation
from app.settings_store import SettingsStore

NO_SEED = -1


AUTOMATIC_CONTEXT_SHOWN = 2048  # the box's value while the context is automatic and no engine has chosen yet


def context_is_automatic(settings: AppSettings) -> bool:
    """Whether the engine chooses the context (from the model's trained context and free memory):
    the user has not chosen one (n_ctx None)."""
    return settings.n_ctx is None


class SamplingPanel(QWidget):
    reloadRequested = Signal()  # the context length changed and the user asked to apply it

    def __init__(self, settings_store: SettingsStore, chat_store: ChatStore, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("samplingPanel")
        self.setAccessibleName("Sampling settings")
        self.settings_store, self.chat_store = settings_store, chat_store
        self.conversation_id = 0  # the chat whose values are shown; 0: the defaults for new chats
        self._automatic_context: int | None = None  # what the engine chose, while the user has not chosen
        self._loaded_context = self._shown_context(settings_store.current)
        self._loading = False
        self.scope_label = QLabel()
        self.scope_label.setObjectName("hint")
        self.scope_label.setWordWrap(True)
        self.default_button = QPushButton("Use as default for new chats")
        self.default_button.setAccessibleName("Use this chat's system prompt and sampling as the default for new chats")
        self.default_button.clicked.connect(self.use_as_default)
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setAccessibleName("System prompt")
        self.system_prompt.setPlaceholderText(
            "Instructions the model sees before every chat. Empty: the model's own default."
        )
        self.system_prompt.setFixedHeight(72)
        self.system_prompt.setTabChangesFocus(True)  # Tab moves on; a tab character is never a prompt
        self.temperature = self._double("Temperature", 0.0, 2.0, 0.05, "0 = always the most likely token")
        self.top_k = self._int("Top-k", 0, 1000, "0 = off")
        self.top_p = self._double("Top-p", 0.01, 1.0, 0.01, "1 = off")
        self.min_p = self._double("Min-p", 0.0, 1.0, 0.01, "0 = off")
        self.repeat_penalty = self._double("Repeat penalty", 1.0, 2.0, 0.01, "1 = off")
        self.max_tokens = self._int("Max tokens", 1, 32768, "Longest answer, in tokens")
        self.seed = self._int("Seed", NO_SEED, 2**31 - 1, "Same seed and settings give the same answer")
        self.seed.setSpecialValueText("random")
        self.context = self._int("Context length", 128, 131072, "Tokens the model can see; applies on reload")
        self.context.setSingleStep(256)
        self.context_note = QLabel("Applies when the model is reloaded.")
        self.context_note.setObjectName("hint")
        self.context_note.setWordWrap(True)
        self.reload_button = QPushButton("Reload model")
        self.reload_button.setAccessibleName("Reload model with the new context length")
        self.reload_button.clicked.connect(self.reloadRequested)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setAccessibleName("Reset sampling settings to defaults")
        self.reset_button.clicked.connect(self.reset_to_defaults)

        sampling = QGroupBox("Sampling")
        form = QFormLayout(sampling)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-k", self.top_k)
        form.addRow("Top-p", self.top_p)
        form.addRow("Min-p", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Seed", self.seed)
        form.addRow(self.reset_button)
        model = QGroupBox("Context")
        model_form = QFormLayout(model)
        model_form.addRow("Length", self.context)
        model_form.addRow(self.context_note)
        model_form.addRow(self.reload_button)
        prompt = QGroupBox("System prompt")
        prompt_layout = QVBoxLayout(prompt)
        prompt_layout.addWidget(self.system_prompt)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 0, 8, 8)
        layout.addWidget(self.scope_label)
        layout.addWidget(prompt)
        layout.addWidget(sampling)
        layout.addWidget(self.default_button)
        layout.addWidget(model)
        layout.addStretch(1)

        # Typing in the system prompt saves after a pause, not per keystroke.
        self._save_timer = QTimer(self, singleShot=True, interval=400)
        self._save_timer.timeout.connect(self._emit)
        self.system_prompt.textChanged.connect(lambda: None if self._loading else self._save_timer.start())
        for box in (
            self.temperature,
            self.top_k,
            self.top_p,
            self.min_p,
            self.repeat_penalty,
            self.max_tokens,
            self.seed,
            self.context,
        ):
            box.valueChanged.connect(self._emit)
        unsubscribe = settings_store.subscribe(self._on_settings_changed)
        self.destroyed.connect(lambda *_: unsubscribe())
        self.show_conversation(0)

    def _double(self, name: str, low: float, high: float, step: float, tip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(step)
        box.setDecimals(2)
        box.setAccessibleName(name)
        box.setToolTip(tip)
        return box

    def _int(self, name: str, low: int, high: int, tip: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setAccessibleName(name)
        box.setToolTip(tip)
        return box

    def show_conversation(self, conversation_id: int) -> None:
        """Show (and from now on edit) this chat's values; 0 shows the defaults for new chats."""
        self._save_timer.stop()
        self.conversation_id = conversation_id
        self.set_settings(self._shown_settings())
        self.scope_label.setText(
            "This chat's system prompt and sampling." if conversation_id else "Defaults for new chats."
        )
        self.default_button.setVisible(bool(conversation_id))

    def _shown_settings(self) -> AppSettings:
        defaults = self.settings_store.current
        if not self.conversation_id:
            return defaults
        try:
            conversation = self.chat_store.get_conversation(self.conversation_id)
        except ConversationNotFoundError:
            return defaults
        return for_conversation(defaults, conversation.system_prompt, conversation.sampling)

    def set_settings(self, settings: AppSettings) -> None:
        self._loading = True
        if self.system_prompt.toPlainText() != settings.system_prompt:
            self.system_prompt.setPlainText(settings.system_prompt)
        self.temperature.setValue(settings.temperature)
        self.top_k.setValue(settings.top_k)
        self.top_p.setValue(settings.top_p)
        self.min_p.setValue(settings.min_p)
        self.repeat_penalty.setValue(max(1.0, settings.repeat_penalty))
        self.max_tokens.setValue(settings.max_tokens)
        self.seed.setValue(NO_SEED if settings.seed is None else min(settings.seed, 2**31 - 1))
        self.context.setValue(self._shown_context(settings))
        self._save_timer.stop()
        self._loading = False
        self._show_context_state()

    def _shown_context(self, settings: AppSettings) -> int:
        if settings.n_ctx is not None:
            return settings.n_ctx
        return self._automatic_context if self._automatic_context is not None else AUTOMATIC_CONTEXT_SHOWN

    def mark_context_loaded(self, n_ctx: int, automatic: bool = False) -> None:
        """The engine now runs with this context; the reload hint hides when it matches the setting.
        `automatic`: the engine chose it (the user has not), so the box shows it as the value."""
        self._loaded_context = n_ctx
        self._automatic_context = n_ctx if automatic else None
        if automatic:
            self._loading = True
            self.context.setValue(n_ctx)
            self._loading = False
        self._show_context_state()

    def reset_to_defaults(self) -> None:
        defaults = AppSettings()
        self.set_settings(defaults.replace(system_prompt=self.system_prompt.toPlainText(), n_ctx=self.context.value()))
        self._emit()

    def _show_context_state(self) -> None:
        pending = self.context.value() != self._loaded_context
        self.context_note.setVisible(pending)
        self.reload_button.setVisible(pending)

    def values(self) -> dict:
        seed = self.seed.value()
        prompt = self.system_prompt.toPlainText()
        return {
            "system_prompt": prompt if prompt.strip() else "",  # only blanks: no prompt (the model's default)
            "temperature": round(self.temperature.value(), 2),
            "top_k": self.top_k.value(),
            "top_p": round(self.top_p.value(), 2),
            "min_p": round(self.min_p.value(), 2),
            "repeat_penalty": round(self.repeat_penalty.value(), 2),
            "max_tokens": self.max_tokens.value(),
            "seed": None if seed == NO_SEED else seed,
            "n_ctx": self.context.value(),
        }

    def chat_values(self) -> dict:
        """The values that belong to a chat (CONVERSATION_FIELDS), as shown."""
        values = self.values()
        return {name: values[name] for name in CONVERSATION_FIELDS}

    def save_now(self) -> None:
        """Store a system prompt still being typed (before a message is sent)."""
        if self._save_timer.isActive():
            self._save_timer.stop()
            self._emit()

    def use_as_default(self) -> None:
        self.settings_store.update(**self.chat_values())

    def _emit(self) -> None:
        if self._loading:
            return
        self._show_context_state()
        self._loading = True  # our own store changes need not be shown again
        try:
            context = self.context.value()
            if context != self._shown_context(self.settings_store.current):  # the user's own choice
                self.settings_store.update(n_ctx=context)
            values = self.chat_values()
            if not self.conversation_id:
                self.settings_store.update(**values)
                return
            system_prompt = values.pop("system_prompt")
            try:
                self.chat_store.set_conversation_settings(
                    self.conversation_id, system_prompt=system_prompt, sampling=values
                )
            except ConversationNotFoundError:  # purged meanwhile: nothing left to change
                pass
        finally:
            self._loading = False

    def _on_settings_changed(self, settings: AppSettings, changed: frozenset[str]) -> None:
        if self._loading:
            return
        if (not self.conversation_id and changed & set(CONVERSATION_FIELDS)) or "n_ctx" in changed:
            self.set_settings(self._shown_settings())  # changed elsewhere (the self-test, a script)
