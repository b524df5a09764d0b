"""What the HTTP server asks of a model: the typed Backend protocol, and the command line's backend.

The server (tmac_core.server.app) knows nothing about engines or processes: it hands a
Job to a Backend and hears back through the Job's Sink. Two backends implement it:

    EngineBackend (here)            one tmac_core Engine in one worker thread
                                    (`python -m tmac_core serve`)
    app.server.WindowBackend        the chat window's engine process, queued with
                                    the window's own chats

A backend runs one job at a time (tmac_core.server.scheduler keeps the FIFO queue in
front of it). Every job ends with exactly one of: a final Chunk (finish_reason set)
or a BackendError. Cancel is the Job's threading.Event, which Engine.stream looks at
between prompt chunks and between tokens, so a cancelled job ends within one token.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tmac_core.errors import ContextOverflowError, TmacError
from tmac_core.types import Chunk, EngineInfo

if TYPE_CHECKING:  # annotations only: the engine loads with a model
    from tmac_core.engine import Engine
    from tmac_core.sampling import SamplingParams


class BackendError(Exception):
    """Why a job got no answer: an HTTP status and an OpenAI error code travel with it."""

    status = 500
    code = "internal_error"


class NotReadyError(BackendError):
    """No model is loaded (yet, or any more: the engine process died or is restarting)."""

    status = 503
    code = "model_not_ready"


class PromptTooLongError(BackendError):
    """The prompt does not fit in the context; both token counts are in the message."""

    status = 400
    code = "context_length_exceeded"

    def __init__(self, n_prompt_tokens: int, n_ctx: int) -> None:
        self.n_prompt_tokens, self.n_ctx = n_prompt_tokens, n_ctx
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens. However, your prompt is"
            f" {n_prompt_tokens} tokens (and the answer needs at least one more)."
        )


class AnswerInterruptedError(BackendError):
    """The engine stopped the answer before it ended: the server is stopping (in the app, the
    Local server switch turned off)."""

    status = 503
    code = "interrupted"


class UnsupportedError(BackendError):
    """The backend cannot run this kind of job (the app runs chat only)."""

    status = 400
    code = "unsupported_endpoint"


@dataclass(frozen=True)
class ModelCard:
    """The loaded model as /v1/models and the speed figures describe it."""

    id: str  # what a request's "model" must say
    name: str  # general.name, for people
    n_ctx: int
    bits: int | None  # None: as in the file
    bits_per_weight: float
    tier: str
    threads: int
    created: int  # the model file's modification time (OpenAI's "created")


def model_id(source: str) -> str:
    """A request's model name for a model file: its file name without .gguf (folders: their name)."""
    base = os.path.basename(os.path.normpath(source))
    return base[: -len(".gguf")] if base.lower().endswith(".gguf") else base


def card_from(info: EngineInfo) -> ModelCard:
    """The ModelCard of a loaded model, from the engine's own description of it."""
    try:
        created = int(os.path.getmtime(info.source))
    except OSError:
        created = 0
    return ModelCard(
        id=model_id(info.source),
        name=info.name,
        n_ctx=info.n_ctx,
        bits=info.bits,
        bits_per_weight=info.bits_per_weight,
        tier=info.tier,
        threads=info.n_threads,
        created=created,
    )


class Sink(Protocol):
    """Where a backend reports a job's progress; callable from any thread."""

    def chunk(self, chunk: Chunk) -> None: ...

    def fail(self, error: BackendError) -> None: ...


@dataclass
class Job:
    """One request, as a backend runs it: a chat (messages) or a plain completion (prompt)."""

    model: str  # the ModelCard.id the request was checked against
    params: SamplingParams
    messages: Sequence[Mapping[str, str]] | None = None  # chat: role/content pairs
    prompt: str | None = None  # completion: text continued as is, no chat template
    cancel: threading.Event = field(default_factory=threading.Event)


class Backend(Protocol):
    """A model that answers jobs one at a time."""

    def model(self) -> ModelCard | None:
        """The loaded model, None when none is ready (requests then get 503)."""
        ...

    def start(self, job: Job, sink: Sink) -> None:
        """Begin `job` (never blocks); its chunks and its end arrive on `sink`."""
        ...

    def cancel(self, job: Job) -> None:
        """Stop `job` soon (its final chunk then says "cancelled"); safe from any thread, at any time."""
        ...

    def close(self) -> None: ...


class EngineBackend:
    """A loaded Engine in its own worker thread: the command line's server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._card = card_from(engine.info)
        self._jobs: queue.SimpleQueue[tuple[Job, Sink] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="tmac-server-engine", daemon=True)
        self._worker.start()

    def model(self) -> ModelCard:
        return self._card

    def start(self, job: Job, sink: Sink) -> None:
        self._jobs.put((job, sink))

    def cancel(self, job: Job) -> None:
        job.cancel.set()

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(5.0)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, sink = item
            try:
                for chunk in self._stream(job):
                    sink.chunk(chunk)
            except ContextOverflowError as error:
                sink.fail(PromptTooLongError(error.n_prompt_tokens, error.n_ctx))
            except (TmacError, ValueError) as error:  # a template error, an empty prompt
                failure = BackendError(str(error))
                failure.status, failure.code = 400, getattr(error, "kind", "invalid_request")
                sink.fail(failure)
            except Exception as error:  # noqa: BLE001 - the worker must outlive any one request
                sink.fail(BackendError(f"{type(error).__name__}: {error}"))

    def _stream(self, job: Job) -> Iterator[Chunk]:
        engine = self.engine
        if job.messages is not None:
            return engine.stream(job.messages, job.params, cancel=job.cancel)
        ids = engine.tokenizer.encode(job.prompt or "", allow_special=False, add_special=True)
        return engine.stream_tokens(ids, job.params, cancel=job.cancel)
