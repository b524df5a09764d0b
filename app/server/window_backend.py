"""WindowBackend: the local server's requests run on the chat window's own engine process.

tmac_core.server calls this Backend from its event-loop thread; every call hops to the
GUI thread with a queued signal, where the window's EngineClient lives, so nothing here
blocks the GUI and nothing touches the client from another thread. Requests are the
client's "background" requests: they and the window's chats run one at a time in arrival
order (EngineClient's queue), a server request never interrupts the person at the keyboard,
and a chat the person starts while a server answer runs waits for that answer to end
(ChatSession shows it waiting). The person's Stop button stops the window's answer only.
Chats (/v1/chat/completions) and plain completions (/v1/completions, the prompt continued
with no chat template) both run on the window's engine.

The served model is the one the window has loaded; a request naming another model is
refused by the server (404) before it gets here. The engine process dying, restarting or
loading another model fails the running and waiting requests with 503, and requests are
answered again once the window's engine has loaded a model.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from app.workers.engine_client import EngineClient
from app.workers.protocol import CANCELLED, EngineState
from tmac_core.server.backend import (
    AnswerInterruptedError,
    BackendError,
    Job,
    ModelCard,
    NotReadyError,
    PromptTooLongError,
    Sink,
    card_from,
)
from tmac_core.types import Chunk, EngineInfo


def _failure(kind: str, message: str) -> BackendError:
    """An engine failure kind (app.workers.protocol, tmac_core.errors) as the server's error."""
    if kind == "context_overflow":
        error: BackendError = BackendError(message)
        error.status, error.code = PromptTooLongError.status, PromptTooLongError.code
        return error
    if kind == CANCELLED:
        return BackendError("cancelled before it started")
    if kind in ("not_ready", "restarted", "superseded", "engine_busy"):
        return NotReadyError(f"The app's engine could not answer: {message}")
    error = BackendError(message)
    error.status, error.code = (400, kind) if kind in ("invalid_argument", "chat_template") else (500, kind)
    return error


class WindowBackend(QObject):
    """A tmac_core.server Backend over the window's EngineClient (create it on the GUI thread)."""

    _submitted = Signal(object, object)  # Job, Sink: from the server's thread
    _cancelled = Signal(object)  # Job

    def __init__(self, client: EngineClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        # read from the server's thread: a reference swap, so always a whole card or None
        self._card: ModelCard | None = None
        if client.info is not None and client.state in (EngineState.READY, EngineState.GENERATING):
            self._card = card_from(client.info)
        # the job the scheduler started (it starts one at a time): waiting in the client's queue or running
        self._running: tuple[int, Job, Sink] | None = None  # (request id, job, sink)
        client.loaded.connect(self._on_loaded)
        client.stateChanged.connect(self._on_state)
        client.chunk.connect(self._on_chunk)
        client.failed.connect(self._on_failed)
        client.died.connect(self._on_died)
        self._submitted.connect(self._submit, Qt.ConnectionType.QueuedConnection)
        self._cancelled.connect(self._cancel, Qt.ConnectionType.QueuedConnection)

    # ---- the Backend protocol (any thread) -----------------------------------------------------

    def model(self) -> ModelCard | None:
        return self._card

    def start(self, job: Job, sink: Sink) -> None:
        self._submitted.emit(job, sink)

    def cancel(self, job: Job) -> None:
        job.cancel.set()
        self._cancelled.emit(job)

    def close(self) -> None:
        pass  # the window owns the engine

    # ---- on the GUI thread ---------------------------------------------------------------------

    def _submit(self, job: Job, sink: Sink) -> None:
        if (
            self._card is None
            or self._card.id != job.model
            or self.client.state
            not in (
                EngineState.READY,
                EngineState.GENERATING,
            )
        ):
            sink.fail(NotReadyError("The app's model changed or is not loaded; list /v1/models and retry."))
            return
        if job.messages is None:
            request_id = self.client.complete(job.prompt or "", job.params, background=True)
        else:
            messages = [dict(m) for m in job.messages]
            # fit_to_context off: an API client sends the history it wants; too long is its 400
            request_id = self.client.generate(messages, job.params, fit_to_context=False, background=True)
        self._running = (request_id, job, sink)

    def _cancel(self, job: Job) -> None:
        if self._running is not None and self._running[1] is job:
            # running: the engine stops within one token and its final chunk ends the job;
            # still queued behind a window chat: withdrawn, and its failure ends the job
            self.client.stop(self._running[0])

    def abandon(self) -> None:
        """On the GUI thread, as the server stops: end every request now (the GUI thread is about
        to wait for the server's thread, so a final chunk could not reach it), and stop the
        engine if the answer it is writing is the server's."""
        if self._running is not None:
            self.client.stop(self._running[0])
        self._fail_all(AnswerInterruptedError("The app's local server was switched off."))

    def _on_chunk(self, request_id: int, chunk: Any) -> None:
        running = self._running
        if running is None or running[0] != request_id or not isinstance(chunk, Chunk):
            return
        running[2].chunk(chunk)
        if chunk.finish_reason is not None:
            self._running = None
        elif running[1].cancel.is_set():
            self.client.stop(running[0])

    def _on_failed(self, request_id: int, kind: str, message: str) -> None:
        running = self._running
        if running is not None and running[0] == request_id:
            self._running = None
            running[2].fail(_failure(kind, message))

    def _on_loaded(self, info: Any) -> None:
        if isinstance(info, EngineInfo):
            self._card = card_from(info)

    def _on_state(self, state: EngineState) -> None:
        if state in (EngineState.STARTING, EngineState.LOADING, EngineState.STOPPED, EngineState.DEAD):
            self._card = None
            self._fail_all(NotReadyError("The app's engine is restarting or loading a model; retry shortly."))

    def _on_died(self, reason: str) -> None:
        self._card = None
        self._fail_all(NotReadyError(f"The app's engine stopped ({reason}); it answers again once restarted."))

    def _fail_all(self, error: BackendError) -> None:
        running, self._running = self._running, None
        if running is not None:
            running[2].fail(error)
