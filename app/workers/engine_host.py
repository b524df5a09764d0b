"""The engine process: runs tmac_core.Engine for the GUI, talking over one multiprocessing Pipe.

Started by EngineClient with the "spawn" context, so a native crash, an illegal
instruction or an out-of-memory kill ends this process only. Two threads:

- the main thread runs requests one at a time (Load, Generate) and is the only
  sender on the pipe;
- a reader thread receives requests. It applies SetThreads at once
  (Engine.set_threads is thread-safe and takes effect before the next token, so
  the count's only pending copy is the Engine's) and queues everything else for
  the main thread.

The messages and their encoding are app.workers.protocol: plain JSON, never a
pickle; bytes that do not decode are logged and skipped. Stop does not travel
over the pipe: the GUI sets the shared `cancel` Event, which the engine checks
between tokens. The client clears it before each Generate.

No Qt here: this module is imported in the child, which must stay lean.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time

from app.workers.protocol import (
    NOT_READY,
    ChatLine,
    ChunkMsg,
    Failed,
    Generate,
    Load,
    Loaded,
    LoadFailed,
    Progress,
    ProtocolError,
    Reply,
    Request,
    SetThreads,
    Shutdown,
    Trimmed,
    decode_request,
    encode,
    error_kind,
)

PROGRESS_INTERVAL_S = 0.05  # the repacker reports hundreds of steps; the GUI needs ~20 a second

log = logging.getLogger(__name__)


def fit_to_context(engine, messages: tuple[ChatLine, ...], max_tokens: int):
    """Drop the oldest whole turns until the prompt leaves room for an answer.

    Returns app.chat.trim.FittedPrompt whose `prompt` is engine.render's (token ids,
    template notice) for the kept messages: rendered once when everything fits, and
    the ids go to generation as they are; a history that is too long renders again
    a few times, near the size that fits. If the system prompt and the newest turn
    alone do not fit, Engine.stream_tokens raises ContextOverflowError with the counts.
    """
    from app.chat.trim import fit_prompt
    from tmac_core.errors import ContextOverflowError

    reserve = max(1, min(max_tokens, engine.n_ctx // 4))  # room for the answer

    def estimate(message: ChatLine) -> int:  # content plus the template's role markers; renders check it
        return len(engine.tokenizer.encode(message.content, allow_special=False)) + 8

    def render(kept: list[ChatLine]) -> tuple[list[int], str | None] | ContextOverflowError:
        # A history far too long to render at all (Engine.render says so with its token count)
        # is simply one that does not fit: trimming goes on, and the error is raised only if
        # even the newest turn is too long.
        try:
            return engine.render(_as_dicts(kept))
        except ContextOverflowError as error:
            return error

    def size(prompt: tuple[list[int], str | None] | ContextOverflowError) -> int:
        return prompt.n_prompt_tokens if isinstance(prompt, ContextOverflowError) else len(prompt[0])

    fitted = fit_prompt(list(messages), render, size, engine.n_ctx - reserve, estimate)
    if isinstance(fitted.prompt, ContextOverflowError):
        raise fitted.prompt
    return fitted


def _as_dicts(messages) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


class EngineHost:
    """The child's main thread: executes queued requests and reports over the pipe."""

    def __init__(self, conn, cancel) -> None:
        self.conn = conn
        self.cancel = cancel
        self.engine = None  # set by the main thread once loaded; the reader only reads it
        self.requests: queue.Queue[Request] = queue.Queue()

    def send(self, reply: Reply) -> None:
        self.conn.send_bytes(encode(reply))

    def run(self) -> None:
        reader = threading.Thread(target=self.read_requests, name="engine-requests", daemon=True)
        reader.start()
        try:
            while True:
                request = self.requests.get()
                if isinstance(request, Shutdown):
                    break
                if isinstance(request, Load):
                    self.load(request)
                elif isinstance(request, Generate):
                    self.generate(request)
        except (BrokenPipeError, EOFError, OSError):
            pass  # the GUI went away mid-send; nothing left to report to
        finally:
            if self.engine is not None:
                self.engine.close()
            self.conn.close()

    def read_requests(self) -> None:
        """The reader thread's loop."""
        while True:
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                # The GUI is gone: stop the answer in progress and exit rather than linger as an orphan.
                self.cancel.set()
                self.requests.put(Shutdown())
                return
            try:
                request = decode_request(data)
            except ProtocolError as error:
                log.warning("engine process: skipped a malformed request: %s", error)
                continue
            if isinstance(request, SetThreads):
                self.set_threads(request.n)
                continue
            self.requests.put(request)
            if isinstance(request, Shutdown):
                return

    def set_threads(self, n: int) -> None:
        engine = self.engine
        if engine is None:
            # EngineClient holds a count chosen during loading and sends it after Loaded.
            log.warning("engine process: SetThreads(%d) before a model was loaded, ignored", n)
            return
        try:
            engine.set_threads(n)
        except ValueError as error:
            log.warning("engine process: %s", error)  # the client validates, so this is only a stale value

    def load(self, request: Load) -> None:
        last = {"t": 0.0, "stage": None}

        def progress(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if stage != last["stage"] or now - last["t"] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last.update(t=now, stage=stage)
                self.send(Progress(float(fraction), str(stage)))

        try:
            from tmac_core import Engine  # here: importing the kernels can itself fail (UnsupportedCpuError)

            engine = Engine.load(
                request.source,
                bits=request.bits,
                n_threads=request.n_threads,
                n_ctx=request.n_ctx,
                progress=progress,
                cache_dir=request.cache_dir,
                source_sha256=request.source_sha256,
            )
        except (BrokenPipeError, EOFError):
            raise
        except Exception as error:  # noqa: BLE001 (every load failure is reported, typed, to the user)
            self.send(LoadFailed(error_kind(error), str(error)))
            return
        self.engine = engine
        self.send(Loaded(engine.info))

    def generate(self, request: Generate) -> None:
        from tmac_core.errors import ContextOverflowError

        engine, request_id = self.engine, request.request_id
        if engine is None:
            self.send(Failed(request_id, NOT_READY, "No model is loaded in the engine process."))
            return
        try:
            if request.fit:
                fitted = fit_to_context(engine, request.messages, request.params.max_tokens)
                ids, notice = fitted.prompt
                if fitted.dropped:
                    self.send(Trimmed(request_id, len(fitted.dropped), fitted.tokens, engine.n_ctx))
            else:
                ids, notice = engine.render(_as_dicts(request.messages))
            for chunk in engine.stream_tokens(ids, request.params, cancel=self.cancel, notice=notice):
                self.send(ChunkMsg(request_id, chunk))
        except ContextOverflowError as error:
            self.send(
                Failed(
                    request_id,
                    error.kind,
                    f"The prompt is {error.n_prompt_tokens} tokens but the model's context holds "
                    f"{error.n_ctx}, so there is no room for an answer. Shorten the message or "
                    "raise the context length.",
                )
            )
        except (BrokenPipeError, EOFError):
            raise
        except Exception as error:  # noqa: BLE001 (any failure of one answer is reported; the engine goes on)
            self.send(Failed(request_id, error_kind(error), str(error)))


def engine_host_main(conn, cancel) -> None:
    """Process entry point (the target EngineClient gives to the spawn context)."""
    # Ctrl+C in a terminal reaches the whole process group; the GUI decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    EngineHost(conn, cancel).run()
