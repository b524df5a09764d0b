"""ChatSession: the GUI-thread controller between the chat history (ChatStore) and the engine.

It turns "send", "regenerate", "edit and resend" and "stop" into store writes
and EngineClient requests, and streamed chunks back into store writes: the
answer is created as a "streaming" message, its text goes through
ChatStore.append_partial (committed at most every ~0.25 s), and it is finished
as complete, partial (stopped, engine died) or error, with its stats. So a
crash of the engine process loses at most a quarter second of text, and the
chat history is written by the GUI process only.

A store that cannot write (another program holds the lock, the disk is full)
never costs a shown answer: the streamed text stays on screen and in the
store's memory, the final commit is retried with a growing pause (and once
more at close), and `notice("history", …)` says what happened; when a retry
succeeds, `notice("saved", …)` says so.

Continue (an answer that stopped at max_tokens) appends to that same answer: the message goes
back to "streaming", the engine goes on from the answer's own tokens (app.workers.engine_host),
and `answerResumed` tells the view; the stats are then those of the continuation, with the
answer's earlier tokens in AnswerStats.earlier_tokens.

Nothing is removed without saying so: Regenerate adds a version of the answer
(the earlier ones stay, `show_version` switches), and an edit-and-resend hides
the later messages and offers an undo (`undoOffered`) until the chat moves on
(the next send, edit or regenerate, another chat, closing) or UNDO_WINDOW_S
passes; only then are they deleted.

An answer asked for while the local server answers another program waits for that answer
to end (EngineClient runs them in arrival order and never stops the other program's):
`waitingChanged` and a "waiting" notice say so, and Stop withdraws it.

QtCore only: widgets listen to the signals and never touch the store while an
answer streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.chat.errors import ChatStoreError, MessageNotFoundError
from app.chat.records import COMPLETE, ERROR, PARTIAL, AnswerStats, EditUndo, Message
from app.chat.store import STREAM_WAIT_S, ChatStore
from app.settings import AppSettings, conversation_sampling, for_conversation
from app.workers.engine_client import EngineClient
from app.workers.protocol import CANCELLED
from tmac_core.errors import ContextOverflowError

NEW_CHAT_TITLE = "New chat"
TITLE_LENGTH = 48
RETRY_FIRST_S = 2.0  # the first retry of an answer whose final commit failed; doubles up to RETRY_MAX_S
RETRY_MAX_S = 60.0
UNDO_WINDOW_S = 30.0  # how long an edit's removal of later messages can be undone


def undo_text(undo: EditUndo) -> str:
    """The undo bar's sentence for an edit-and-resend."""
    if not undo.shown:
        return "Edited."
    if undo.shown == 1:
        return "Edited: 1 later message was removed."
    return f"Edited: {undo.shown} later messages were removed."


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def sampling_params_from(settings: AppSettings) -> Any:
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
    answerResumed = Signal(object)  # the Message (streaming again) a Continue appends to
    busyChanged = Signal(bool)
    # the answer asked for waits for another program's answer (the local server's) to end: True
    # when it starts waiting, False when the engine takes it (or it ends without starting)
    waitingChanged = Signal(bool)
    # kind ("trimmed" | "template" | "error" | "overflow" | "history" | "saved" | "waiting"), text; "history": the chat
    # history could not be written (the text says what is kept), "saved": what could not be written now is
    notice = Signal(str, str)
    undoOffered = Signal(str)  # what an edit removed, with an Undo offer ("": the offer ended)
    versionShown = Signal(int, object)  # the answer that was shown, the Message (another version) shown now

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
        self._last_chunk: Any = None
        self._trimmed = 0
        self._earlier_tokens: int | None = None  # a continued answer's tokens before this generation
        self._answer_conversation = 0
        self._answer_text: list[str] = []  # the streamed answer as shown, whatever the store managed to write
        self._store_warned = False  # one "history" notice per answer for failed streaming writes
        # Answers whose final commit failed: id → (state, stats); the store keeps their text in memory.
        self._unsaved: dict[int, tuple[str, AnswerStats]] = {}
        self._retry_s = RETRY_FIRST_S
        self._retry = QTimer(self)
        self._retry.setSingleShot(True)
        self._retry.timeout.connect(self.retry_unsaved)
        self._undo: EditUndo | None = None  # the last edit-and-resend, while it can be undone
        self._undo_timer = QTimer(self)
        self._undo_timer.setSingleShot(True)
        self._undo_timer.timeout.connect(self.finalize_edit)
        client.chunk.connect(self._on_client_chunk)
        client.failed.connect(self._on_client_failed)
        client.died.connect(self._on_client_died)
        client.trimmed.connect(self._on_client_trimmed)
        client.requestStarted.connect(self._on_client_started)
        self._waiting = False

    @property
    def busy(self) -> bool:
        return self.answer_id is not None

    # ---- conversation selection --------------------------------------------------------------

    def open_conversation(self, conversation_id: int) -> None:
        self.finalize_edit()
        self.conversation_id = conversation_id
        self.conversationChanged.emit(conversation_id)

    def new_conversation(self) -> int:
        """An empty chat (reused if the current one has no messages yet)."""
        try:
            if self.conversation_id and not self.busy and not self.store.list_messages(self.conversation_id):
                self.conversationChanged.emit(self.conversation_id)
                return self.conversation_id
            # A new chat starts from the default system prompt and sampling (app.settings.CONVERSATION_FIELDS).
            fields = self._conversation_fields(self._settings())
            conversation = self.store.create_conversation(NEW_CHAT_TITLE, **fields)
        except ChatStoreError as error:
            self._store_failed(error, "No new chat was created")
            return 0
        self.open_conversation(conversation.id)
        return conversation.id

    def _conversation_fields(self, settings: AppSettings) -> dict[str, Any]:
        info = self.client.info
        return {
            "model_id": info.name if info else None,
            "bits": info.bits if info else settings.default_bits,
            "system_prompt": settings.system_prompt,
            "sampling": conversation_sampling(settings),
        }

    # ---- actions -----------------------------------------------------------------------------

    def send(self, text: str) -> bool:
        """Store the user's message and ask for an answer. False if refused (busy, empty) or if the
        message could not be stored (then the "history" notice says why, and the caller keeps the draft)."""
        text = text.strip()
        if not text or self.busy:
            return False
        self.finalize_edit()  # the chat moves on: what the last edit removed is gone for good
        self.retry_unsaved()  # a write now is a good moment for what failed before
        if not self.conversation_id and not self.new_conversation():
            return False
        try:
            conversation = self.store.get_conversation(self.conversation_id)
            if conversation.title == NEW_CHAT_TITLE and not self.store.list_messages(self.conversation_id):
                self.store.rename_conversation(self.conversation_id, title_from(text))
            message = self.store.add_message(self.conversation_id, "user", text)
        except ChatStoreError as error:
            self._store_failed(error, "Your message was not sent; it is still in the message box")
            return False
        self.messageAdded.emit(message)
        self._ask()
        return True

    def regenerate(self, answer_id: int) -> bool:
        """Ask again for the answer of that turn. The new answer is a new version: the earlier ones
        stay, one switch away (`show_version`), and the prompt is the history before the turn."""
        if self.busy:
            return False
        try:
            answer = self.store.get_message(answer_id)
        except ChatStoreError as error:
            self._store_failed(error, "The answer was kept and not regenerated")
            return False
        if answer.role != "assistant":
            return False
        self.finalize_edit()
        self._ask(replacing=answer)
        return True

    def continue_answer(self, answer_id: int) -> bool:
        """Go on with the answer `answer_id` where max_tokens cut it: the new text is appended to it.
        False when busy, or it is not an answer that stopped at max_tokens, or the store failed."""
        if self.busy:
            return False
        try:
            answer = self.store.get_message(answer_id)
        except ChatStoreError as error:
            self._store_failed(error, "The answer was not continued")
            return False
        if answer.role != "assistant" or answer.state != COMPLETE or answer.stats.finish_reason != "length":
            return False
        self.finalize_edit()
        self._ask(resuming=answer)
        return True

    def show_version(self, answer_id: int, step: int) -> bool:
        """Show the version `step` places before (-1) or after (+1) the shown answer `answer_id`;
        the version shown is the one the next prompt includes. Not while an answer streams."""
        if self.busy:
            return False
        try:
            versions = self.store.answer_versions(answer_id)
            index = versions.index(answer_id) + step if answer_id in versions else -1
            if not 0 <= index < len(versions):
                return False
            message = self.store.show_version(versions[index])
        except ChatStoreError as error:
            self._store_failed(error, "The answer shown was not changed")
            return False
        self.versionShown.emit(answer_id, message)
        return True

    def edit_and_resend(self, user_message_id: int, text: str) -> bool:
        """Change a user message and answer it again. The later messages are hidden, not deleted:
        `undoOffered` says how many, and `undo_edit` puts them back until the chat moves on."""
        text = text.strip()
        if not text or self.busy:
            return False
        self.finalize_edit()
        try:
            undo = self.store.edit_message_and_hide_later(user_message_id, text)
        except ChatStoreError as error:
            self._store_failed(error, "The edit was not saved and nothing was removed")
            return False
        self._undo = undo
        self._undo_timer.start(int(UNDO_WINDOW_S * 1000))
        self.historyChanged.emit(self.conversation_id)
        self.undoOffered.emit(undo_text(undo))
        self._ask()
        return True

    def undo_edit(self) -> bool:
        """Take back the last edit-and-resend: its answer (stopped if it is still coming) goes, the
        old text and the later messages come back. False if there is nothing to undo or the store
        could not write (the offer then stays)."""
        undo = self._undo
        if undo is None:
            return False
        if self.busy:
            self.client.stop(self.request_id)
            self._finish(PARTIAL, self._stats_so_far())
        try:
            deleted = self.store.undo_edit(undo)
        except ChatStoreError as error:
            self._store_failed(error, "The edit was not undone")
            return False
        for answer_id in deleted:
            self._unsaved.pop(answer_id, None)
        self._undo = None
        self._undo_timer.stop()
        self.undoOffered.emit("")
        self.historyChanged.emit(self.conversation_id)
        return True

    def finalize_edit(self) -> None:
        """End the undo offer of the last edit: what it hid is deleted now."""
        undo, self._undo = self._undo, None
        if undo is None:
            return
        self._undo_timer.stop()
        self.undoOffered.emit("")
        try:
            self.store.purge_removed(undo.conversation_id)
        except ChatStoreError:
            pass  # still hidden, never shown again: the next start deletes it (ChatStore purges at open)

    def stop(self) -> None:
        if self.busy:
            self.client.stop(self.request_id)

    def close(self) -> None:
        """The window is closing: keep the answer in progress as a partial one, now, and try once
        more to save what could not be saved (what still fails, ChatStore.close reports)."""
        if self.busy:
            self.client.stop(self.request_id)
            self._finish(PARTIAL, self._stats_so_far())
        self._retry.stop()
        self.finalize_edit()
        for answer_id, (state, stats) in list(self._unsaved.items()):
            try:
                self.store.finish_message(answer_id, stats, state)
            except ChatStoreError:
                continue
            del self._unsaved[answer_id]

    @property
    def unsaved_answers(self) -> list[int]:
        """Ids of finished answers whose text is shown but not yet committed (retried)."""
        return list(self._unsaved)

    def retry_unsaved(self) -> None:
        """Try again to commit the answers whose final commit failed (the retry timer, the next send)."""
        if not self._unsaved:
            return
        for answer_id, (state, stats) in list(self._unsaved.items()):
            try:
                # A short wait: the text is safe in memory, and the GUI must not freeze on a lock.
                self.store.finish_message(answer_id, stats, state, wait_s=STREAM_WAIT_S)
            except MessageNotFoundError:
                del self._unsaved[answer_id]  # deleted meanwhile (its chat was purged): nothing to keep
            except ChatStoreError:
                self._retry.start(int(self._retry_s * 1000))
                self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
                return
            else:
                del self._unsaved[answer_id]
        self._retry_s = RETRY_FIRST_S
        self.notice.emit("saved", "The answer that could not be saved before is now in the chat history.")

    def _store_failed(self, error: ChatStoreError, consequence: str) -> None:
        self.notice.emit("history", f"{error} {consequence}.")

    def _ask(self, replacing: Message | None = None, resuming: Message | None = None) -> None:
        """Start an answer: to the whole chat, or (`replacing`) a new version of that answer, made
        from the history before its turn, or (`resuming`) more of that answer, appended to it."""
        before = replacing or resuming
        try:
            # The conversation row is the truth for its system prompt and sampling; the global settings fill the rest.
            conversation = self.store.get_conversation(self.conversation_id)
            settings = for_conversation(self._settings(), conversation.system_prompt, conversation.sampling)
            # Empty answers (failed, or cut off before their first token) would only confuse the model.
            history = [
                m
                for m in self.store.list_messages(self.conversation_id)
                if not (m.role == "assistant" and not m.content) and (before is None or m.turn_id < before.turn_id)
            ]
            self.store.update_conversation(self.conversation_id, **self._conversation_fields(settings))
            if resuming is not None:
                answer = self.store.resume_assistant_message(resuming.id)
            else:
                answer_id = self.store.begin_assistant_message(
                    self.conversation_id, version_of=replacing.id if replacing is not None else None
                )
                answer = self.store.get_message(answer_id)
        except ChatStoreError as error:
            self._store_failed(error, "No answer was requested; send the message again when it can be saved")
            return
        messages = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt.strip() else []
        messages += [{"role": m.role, "content": m.content} for m in history if m.role != "system"]
        self.answer_id = answer.id
        self._answer_conversation = self.conversation_id
        self._answer_text = [answer.content]  # what is shown already ("" for a new answer)
        self._store_warned = False
        self._last_chunk = None
        self._trimmed = 0
        self._earlier_tokens = None
        if resuming is not None:
            earlier = resuming.stats
            self._earlier_tokens = (earlier.generated_tokens or 0) + (earlier.earlier_tokens or 0)
            self.answerResumed.emit(answer)
        else:
            self.messageAdded.emit(answer)
        self.busyChanged.emit(True)
        self.request_id = self.client.generate(
            messages, sampling_params_from(settings), continue_text=answer.content if resuming is not None else ""
        )
        if self.client.is_waiting(self.request_id):
            # the local server is answering another program: this answer runs next, never stopping it
            self._set_waiting(True)
            self.notice.emit(
                "waiting", "The local server is answering another program; your answer starts when it finishes."
            )

    def _set_waiting(self, waiting: bool) -> None:
        if waiting != self._waiting:
            self._waiting = waiting
            self.waitingChanged.emit(waiting)

    def _on_client_started(self, request_id: int) -> None:
        if request_id == self.request_id:
            self._set_waiting(False)

    # ---- engine events -----------------------------------------------------------------------

    def _on_client_chunk(self, request_id: int, chunk: Any) -> None:
        if request_id != self.request_id or self.answer_id is None:
            return
        self._last_chunk = chunk
        if chunk.notice and chunk.generated_tokens <= 1:
            self.notice.emit("template", chunk.notice)  # e.g. the model's chat template was replaced by a fallback
        if chunk.text:
            self._answer_text.append(chunk.text)
            try:
                self.store.append_partial(self.answer_id, chunk.text)
            except ChatStoreError as error:  # the store keeps the text and writes it later
                if not self._store_warned:
                    self._store_warned = True
                    self._store_failed(error, "The answer is kept on screen and will be saved when possible")
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
        if kind == CANCELLED:  # stopped while it waited its turn: an answer stopped before its first token
            self._finish(PARTIAL, self._stats_so_far())
            return
        stats = dataclasses.replace(self._stats_so_far(), error=f"{kind}: {text}")
        has_text = any(self._answer_text)
        self._finish(PARTIAL if has_text else ERROR, stats)
        self.notice.emit("overflow" if kind == ContextOverflowError.kind else "error", text)

    def _on_client_died(self, reason: str) -> None:
        if self.answer_id is None:
            return
        self._finish(PARTIAL, dataclasses.replace(self._stats_so_far(), error=f"engine died: {reason}"))

    def _stats_so_far(self) -> AnswerStats:
        return AnswerStats.from_chunk(self._last_chunk, self.client.info) if self._last_chunk else AnswerStats()

    def _finish(self, state: str, stats: AnswerStats) -> None:
        answer_id = self.answer_id
        assert answer_id is not None, "_finish is called only while an answer streams"
        if self._trimmed:
            stats = dataclasses.replace(stats, trimmed_messages=self._trimmed)
        if self._earlier_tokens:
            stats = dataclasses.replace(stats, earlier_tokens=self._earlier_tokens)
        failed: ChatStoreError | None = None
        try:
            message = self.store.finish_message(answer_id, stats, state)
        except ChatStoreError as error:
            failed = error
            self._unsaved[answer_id] = (state, stats)
            message = self._message_as_shown(answer_id, state, stats)
        shown = "".join(self._answer_text)
        if len(message.content) < len(shown):
            # Never replace what the user saw with less (e.g. a row another program rewrote meanwhile).
            message = dataclasses.replace(message, content=shown)
        self.answer_id = None
        self.request_id = None
        self._set_waiting(False)
        self.answerFinished.emit(message)
        self.busyChanged.emit(False)
        if failed is not None:
            self._store_failed(failed, "The answer stays on screen and will be saved as soon as possible")
            self._retry.start(int(self._retry_s * 1000))

    def _message_as_shown(self, answer_id: int, state: str, stats: AnswerStats) -> Message:
        """The finished answer from memory, for the view, when its commit failed."""
        try:
            message = self.store.get_message(answer_id)  # the stored part plus the text still in memory
        except ChatStoreError:
            message = Message(answer_id, self._answer_conversation, "assistant", "", 0.0, stats, state)
        return dataclasses.replace(message, state=state, stats=stats)
