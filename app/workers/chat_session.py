"""ChatSession: the GUI-thread controller between the chat history (ChatStore) and the engine.

It turns "send", "regenerate", "edit and resend" and "stop" into store writes
and EngineClient requests, and streamed chunks back into store writes: the
answer is created as a "streaming" message, its text goes through
ChatStore.append_partial (committed at most every ~0.25 s), and it is finished
as complete, partial (stopped, engine died) or error, with its stats. So a
crash of the engine process loses at most a quarter second of text, and the
chat history is written by the GUI process only.

QtCore only: widgets listen to the signals and never touch the store while an
answer streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from app.chat.store import COMPLETE, ERROR, PARTIAL, AnswerStats, ChatStore, Message
from app.settings import AppSettings, conversation_sampling, for_conversation
from app.workers.engine_client import EngineClient
from tmac_core.errors import ContextOverflowError

NEW_CHAT_TITLE = "New chat"
TITLE_LENGTH = 48


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def sampling_params_from(settings: AppSettings):
    """The tmac_core SamplingParams for the current settings (validated by its constructor)."""
    from tmac_core import SamplingParams

    return SamplingParams(
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )


class ChatSession(QObject):
    conversationChanged = Signal(int)  # the conversation now shown (0 = none yet)
    historyChanged = Signal(int)  # messages were added/removed other than by streaming: reload the view
    messageAdded = Signal(object)  # Message (the user's, or the empty answer that starts streaming)
    answerText = Signal(int, str)  # message id, text delta
    answerChunk = Signal(object)  # tmac_core Chunk of the current answer (for the perf panel)
    answerFinished = Signal(object)  # the final Message
    busyChanged = Signal(bool)
    notice = Signal(str, str)  # kind ("trimmed" | "template" | "error" | "overflow"), text

    def __init__(
        self, store: ChatStore, client: EngineClient, settings: Callable[[], AppSettings], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.client = client
        self._settings = settings
        self.conversation_id = 0
        self.request_id: int | None = None
        self.answer_id: int | None = None
        self._last_chunk = None
        self._trimmed = 0
        client.chunk.connect(self._on_client_chunk)
        client.failed.connect(self._on_client_failed)
        client.died.connect(self._on_client_died)
        client.trimmed.connect(self._on_client_trimmed)

    @property
    def busy(self) -> bool:
        return self.answer_id is not None

    # ---- conversation selection --------------------------------------------------------------

    def open_conversation(self, conversation_id: int) -> None:
        self.conversation_id = conversation_id
        self.conversationChanged.emit(conversation_id)

    def new_conversation(self) -> int:
        """An empty chat (reused if the current one has no messages yet)."""
        if self.conversation_id and not self.busy and not self.store.list_messages(self.conversation_id):
            self.conversationChanged.emit(self.conversation_id)
            return self.conversation_id
        # A new chat starts from the default system prompt and sampling (app.settings.CONVERSATION_FIELDS).
        conversation = self.store.create_conversation(NEW_CHAT_TITLE, **self._conversation_fields(self._settings()))
        self.open_conversation(conversation.id)
        return conversation.id

    def _conversation_fields(self, settings: AppSettings) -> dict:
        info = self.client.info
        return {
            "model_id": info.name if info else None,
            "bits": info.bits if info else settings.default_bits,
            "system_prompt": settings.system_prompt,
            "sampling": conversation_sampling(settings),
        }

    # ---- actions -----------------------------------------------------------------------------

    def send(self, text: str) -> bool:
        """Store the user's message and ask for an answer. False if refused (busy, empty)."""
        text = text.strip()
        if not text or self.busy:
            return False
        if not self.conversation_id:
            self.new_conversation()
        conversation = self.store.get_conversation(self.conversation_id)
        if conversation.title == NEW_CHAT_TITLE and not self.store.list_messages(self.conversation_id):
            self.store.rename_conversation(self.conversation_id, title_from(text))
        self.messageAdded.emit(self.store.add_message(self.conversation_id, "user", text))
        self._ask()
        return True

    def regenerate(self, answer_id: int) -> bool:
        """Drop an answer (and anything after it) and ask again."""
        if self.busy:
            return False
        self.store.truncate_after(answer_id, inclusive=True)
        self.historyChanged.emit(self.conversation_id)
        self._ask()
        return True

    def edit_and_resend(self, user_message_id: int, text: str) -> bool:
        text = text.strip()
        if not text or self.busy:
            return False
        self.store.edit_message_and_truncate(user_message_id, text)
        self.historyChanged.emit(self.conversation_id)
        self._ask()
        return True

    def stop(self) -> None:
        if self.busy:
            self.client.stop()

    def close(self) -> None:
        """The window is closing: keep the answer in progress as a partial one, now."""
        if self.busy:
            self.client.stop()
            self._finish(PARTIAL, self._stats_so_far())

    def _ask(self) -> None:
        # The conversation row is the truth for its system prompt and sampling; the global settings fill the rest.
        conversation = self.store.get_conversation(self.conversation_id)
        settings = for_conversation(self._settings(), conversation.system_prompt, conversation.sampling)
        # Empty answers (failed, or cut off before their first token) would only confuse the model.
        history = [
            m for m in self.store.list_messages(self.conversation_id) if not (m.role == "assistant" and not m.content)
        ]
        messages = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt.strip() else []
        messages += [{"role": m.role, "content": m.content} for m in history if m.role != "system"]
        self.store.update_conversation(self.conversation_id, **self._conversation_fields(settings))
        self.answer_id = self.store.begin_assistant_message(self.conversation_id)
        self._last_chunk = None
        self._trimmed = 0
        self.messageAdded.emit(self.store.get_message(self.answer_id))
        self.busyChanged.emit(True)
        self.request_id = self.client.generate(messages, sampling_params_from(settings))

    # ---- engine events -----------------------------------------------------------------------

    def _on_client_chunk(self, request_id: int, chunk) -> None:
        if request_id != self.request_id or self.answer_id is None:
            return
        self._last_chunk = chunk
        if chunk.notice and chunk.generated_tokens <= 1:
            self.notice.emit("template", chunk.notice)  # e.g. the model's chat template was replaced by a fallback
        if chunk.text:
            self.store.append_partial(self.answer_id, chunk.text)
            self.answerText.emit(self.answer_id, chunk.text)
        self.answerChunk.emit(chunk)
        if chunk.finish_reason is not None and self.answer_id is not None:  # a listener may have closed us
            state = PARTIAL if chunk.finish_reason == "cancelled" else COMPLETE
            self._finish(state, AnswerStats.from_chunk(chunk, self.client.info))

    def _on_client_trimmed(self, request_id: int, dropped: int, tokens: int, n_ctx: int) -> None:
        if request_id != self.request_id:
            return
        self._trimmed = dropped
        self.notice.emit(
            "trimmed",
            f"{dropped} older message{'s' if dropped != 1 else ''} "
            f"{'are' if dropped != 1 else 'is'} not visible to the model: the context holds "
            f"{n_ctx} tokens and the rest of this chat uses {tokens}.",
        )

    def _on_client_failed(self, request_id: int, kind: str, text: str) -> None:
        if request_id != self.request_id or self.answer_id is None:
            return
        stats = dataclasses.replace(self._stats_so_far(), error=f"{kind}: {text}")
        has_text = bool(self.store.get_message(self.answer_id).content)
        self._finish(PARTIAL if has_text else ERROR, stats)
        self.notice.emit("overflow" if kind == ContextOverflowError.kind else "error", text)

    def _on_client_died(self, reason: str) -> None:
        if self.answer_id is None:
            return
        self._finish(PARTIAL, dataclasses.replace(self._stats_so_far(), error=f"engine died: {reason}"))

    def _stats_so_far(self) -> AnswerStats:
        return AnswerStats.from_chunk(self._last_chunk, self.client.info) if self._last_chunk else AnswerStats()

    def _finish(self, state: str, stats: AnswerStats) -> None:
        if self._trimmed:
            stats = dataclasses.replace(stats, trimmed_messages=self._trimmed)
        message: Message = self.store.finish_message(self.answer_id, stats, state)
        self.answer_id = None
        self.request_id = None
        self.answerFinished.emit(message)
        self.busyChanged.emit(False)
