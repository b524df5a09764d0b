"""The engine process: runs tmac_core.Engine for the GUI, talking over one multiprocessing Pipe.

Started by EngineClient with the "spawn" context, so a native crash, an illegal
instruction or an out-of-memory kill ends this process only. Two threads:

- the main thread runs requests one at a time (Load, Generate) and is the only
  sender on the pipe;
- a reader thread receives requests. It applies SetThreads at once
  (Engine.set_threads is thread-safe and takes effect before the next token, so
  the count's only pending copy is the Engine's) and CancelLoad (it sets the Event
  Engine.load looks at between slabs of the repack), and queues everything else
  for the main thread.

The messages and their encoding are app.workers.protocol: plain JSON, never a
pickle; bytes that do not decode are logged and skipped. Stop does not travel
over the pipe: the GUI sets the shared `cancel` Event, which the engine checks
between tokens. The client clears it before each Generate.

A Generate with `continue_text` goes on with an answer cut at max_tokens: the prompt is the
answer's own prompt followed by its tokens, as generated when the host still has them (the
last answer it streamed, `last_answer`), so at temperature 0 the continuation is the text a
larger max_tokens would have given, and the KV cache already holds all but the last of those
tokens; otherwise (another model since, a restart) the text is tokenized again.

A Generate with `prompt` is a plain completion: that text, tokenized as is (no chat template),
streamed with Engine.stream_tokens, as the command line's server does.

A model read from the repacked-model cache is reported Loaded before the cache file's data
checksums are checked (they cost ~0.6 s of a ~1.8 s load and first token on a 1.17B model); a
thread checks them after, and a mismatch is reported as CacheDamaged (the file discarded) so
the window loads the model again, repacked.

No Qt here: this module is imported in the child, which must stay lean.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine is imported inside load(): importing the kernels can itself fail
    from tmac_core import Engine

from app.catalog.context import choose_n_ctx
from app.hardware import available_memory_bytes
from app.workers.protocol import (
    NOT_READY,
    CacheDamaged,
    CancelLoad,
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

TRIM_FREES = 4  # trimming frees this fraction (1/4) of the context, so the next turns keep the cached prefix
PROGRESS_INTERVAL_S = 0.05  # the repacker reports hundreds of steps; the GUI needs ~20 a second

log = logging.getLogger(__name__)


def source_bytes(source: str) -> int:
    """Bytes of a model's source ("default": the embedded file; a folder: its files together): about what
    its weights take loaded (the repacked matrices are at most the source's bits, usually fewer)."""
    from tmac_core.engine import default_model_path

    path = default_model_path() if source == "default" else source
    if os.path.isdir(path):
        return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    return os.path.getsize(path)


def automatic_n_ctx(source: str) -> int:
    """choose_n_ctx for a model file ("default": the embedded model), read from its header only."""
    from tmac_core.config import inspect_model
    from tmac_core.engine import default_model_path
    from tmac_core.plan import kv_cache_bytes

    path = default_model_path() if source == "default" else source
    config = inspect_model(path).config
    free = available_memory_bytes()
    if free is not None:
        free = max(0, free - source_bytes(source))  # the weights are not loaded yet; they will need about this
    return choose_n_ctx(config.n_ctx_train, kv_cache_bytes(config, 1), free)


def fit_to_context(engine, messages: tuple[ChatLine, ...], max_tokens: int, keep_from: int | None = None):
    """Drop the oldest whole turns until the prompt leaves room for an answer.

    Returns app.chat.trim.FittedPrompt whose `prompt` is engine.render's (token ids,
    template notice) for the kept messages: rendered once when everything fits, and
    the ids go to generation as they are; a history that is too long renders again
    a few times, near the size that fits. If the system prompt and the newest turn
    alone do not fit, Engine.stream_tokens raises ContextOverflowError with the counts.

    Past the context, turns are dropped in steps that free a quarter of the context
    (TRIM_FREES), and `keep_from` (the dropped-turn count of the chat's previous fit, see
    EngineHost.trim_anchor) is reused while the chat still fits behind it: the prompt then
    starts with the same tokens as the last one, so the engine reuses its cached prefix
    instead of reading the whole prompt again every turn.
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

    slack = engine.n_ctx // TRIM_FREES
    fitted = fit_prompt(
        list(messages), render, size, engine.n_ctx - reserve, estimate, slack=slack, keep_from=keep_from
    )
    if isinstance(fitted.prompt, ContextOverflowError):
        raise fitted.prompt
    return fitted


def _as_dicts(messages) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


@dataclass(frozen=True)
class CacheChecked:
    """Queued by the cache-check thread for the main thread, the pipe's only sender."""

    problem: str | None  # None: the data is intact


@dataclass(frozen=True)
class LastAnswer:
    """The answer the host streamed last, as the engine generated it (for a Continue)."""

    prompt: tuple[int, ...]  # the prompt ids it answered
    ids: tuple[int, ...]  # its token ids, not a re-tokenization of its text
    text: str  # its text as sent


class EngineHost:
    """The child's main thread: executes queued requests and reports over the pipe."""

    def __init__(self, conn, cancel) -> None:
        self.conn = conn
        self.cancel = cancel
        self.engine: Engine | None = None  # set by the main thread once loaded; the reader only reads it
        self.requests: queue.Queue[Request | CacheChecked] = queue.Queue()
        self.load_cancel = threading.Event()  # set by CancelLoad; one process serves one load
        # Where the last trimmed prompt started: (messages dropped, the first kept message). A
        # later history that still has that message there is the same chat, grown.
        self.trim_anchor: tuple[int, ChatLine] | None = None
        self.last_answer: LastAnswer | None = None

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
                elif isinstance(request, CacheChecked) and request.problem is not None:
                    self.send(CacheDamaged(request.problem))
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
                # The GUI is gone: stop the answer or load in progress and exit rather than linger as an orphan.
                self.cancel.set()
                self.load_cancel.set()
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
            if isinstance(request, CancelLoad):
                self.load_cancel.set()
                continue
            self.requests.put(request)
            if isinstance(request, Shutdown):
                return

    def _keep_from(self, messages: tuple[ChatLine, ...]) -> int | None:
        """The previous fit's dropped-turn count, if `messages` is the same chat grown since."""
        if self.trim_anchor is None:
            return None
        dropped, first_kept = self.trim_anchor
        start = _kept_start(messages, dropped)
        if start >= len(messages) or messages[start] != first_kept:
            return None
        from app.chat.trim import split_into_turns

        _system, turns = split_into_turns(messages)
        count = 0
        for index, turn in enumerate(turns):
            if count == dropped:
                return index
            count += len(turn)
        return None

    def _remember_trim(self, messages: tuple[ChatLine, ...], dropped: int) -> None:
        start = _kept_start(messages, dropped)
        self.trim_anchor = (dropped, messages[start]) if dropped and start < len(messages) else None

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
        last_t, last_stage = [0.0], [""]  # of the last Progress sent

        def status(s) -> None:  # tmac_core.engine.LoadStatus
            now = time.monotonic()
            if s.stage != last_stage[0] or now - last_t[0] >= PROGRESS_INTERVAL_S or s.fraction >= 1.0:
                last_t[0], last_stage[0] = now, s.stage
                eta = None if s.eta_s is None else float(s.eta_s)
                self.send(Progress(float(s.fraction), str(s.stage), int(s.bytes_done), int(s.bytes_total), eta))

        try:
            from tmac_core import Engine  # here: importing the kernels can itself fail (UnsupportedCpuError)

            n_ctx = request.n_ctx if request.n_ctx is not None else automatic_n_ctx(request.source)
            engine = Engine.load(
                request.source,
                bits=request.bits,
                n_threads=request.n_threads,
                n_ctx=n_ctx,
                cache_dir=request.cache_dir,
                source_sha256=request.source_sha256,
                exact_activations=True if request.exact_activations else None,  # None: the engine's default
                cancel=self.load_cancel,
                status=status,
                defer_cache_check=True,
            )
        except (BrokenPipeError, EOFError):
            raise
        except Exception as error:  # noqa: BLE001 (every load failure is reported, typed, to the user)
            self.send(LoadFailed(error_kind(error), str(error)))
            return
        self.engine, self.last_answer = engine, None
        self.send(Loaded(engine.info))
        checker = threading.Thread(
            target=lambda: self.requests.put(CacheChecked(engine.check_cache())), name="cache-check", daemon=True
        )
        checker.start()

    def generate(self, request: Generate) -> None:
        from tmac_core.errors import ContextOverflowError

        engine, request_id = self.engine, request.request_id
        if engine is None:
            self.send(Failed(request_id, NOT_READY, "No model is loaded in the engine process."))
            return
        self.last_answer, earlier = None, request.continue_text
        try:
            if request.prompt is not None:
                # a plain completion (the local server's /v1/completions): the text as is, BOS first,
                # no chat template, exactly as `python -m tmac_core serve` runs it (EngineBackend)
                ids = engine.tokenizer.encode(request.prompt, allow_special=False, add_special=True)
                self.last_answer = self._stream(engine, request_id, ids, None, request.params, "")
                return
            earlier_tokens = len(engine.tokenizer.encode(earlier, allow_special=False)) if earlier else 0
            if request.fit:
                fitted = fit_to_context(
                    engine,
                    request.messages,
                    request.params.max_tokens + earlier_tokens,
                    self._keep_from(request.messages),
                )
                ids, notice = fitted.prompt
                self._remember_trim(request.messages, len(fitted.dropped))
                if fitted.dropped:
                    self.send(Trimmed(request_id, len(fitted.dropped), fitted.tokens, engine.n_ctx))
            else:
                ids, notice = engine.render(_as_dicts(request.messages))
            self.last_answer = self._stream(engine, request_id, ids, notice, request.params, earlier)
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

    def _stream(self, engine, request_id: int, ids: list[int], notice: str | None, params, earlier: str) -> LastAnswer:
        """Stream the answer to `ids` after `earlier` (the answer so far, "" for a new one); the answer streamed."""
        from tmac_core.tokenizer.detok import StreamingDetokenizer

        prompt = tuple(ids)
        answer = _answer_ids(engine, self.last_answer, prompt, earlier) if earlier else ()
        # A continuation's text is decoded after the answer so far: a SentencePiece word keeps its leading space.
        detok = None
        if earlier:
            detok = StreamingDetokenizer(engine.tokenizer)
            for token in answer:
                detok.add(token)
        new_ids, texts = list(answer), [earlier]
        for chunk in engine.stream_tokens(list(prompt + answer), params, cancel=self.cancel, notice=notice):
            if detok is not None:
                text = detok.add(chunk.token_id) if chunk.token_id is not None else detok.finalize()
                chunk = dataclasses.replace(chunk, text=text)
            if chunk.token_id is not None:
                new_ids.append(chunk.token_id)
            texts.append(chunk.text)
            self.send(ChunkMsg(request_id, chunk))
        return LastAnswer(prompt, tuple(new_ids), "".join(texts))


def _answer_ids(engine, last: LastAnswer | None, prompt: tuple[int, ...], text: str) -> tuple[int, ...]:
    """The token ids of `text`, an answer to `prompt`: as generated when it is the last answer, else tokenized."""
    if last is not None and last.prompt == prompt and last.text == text:
        return last.ids
    return tuple(engine.tokenizer.encode(text, allow_special=False))


def _kept_start(messages: tuple[ChatLine, ...], dropped: int) -> int:
    """Index in `messages` of the first message after the system prompt and `dropped` messages."""
    system = 0
    while system < len(messages) and messages[system].role == "system":
        system += 1
    return system + dropped


def engine_host_main(conn, cancel) -> None:
    """Process entry point (the target EngineClient gives to the spawn context)."""
    # Ctrl+C in a terminal reaches the whole process group; the GUI decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    EngineHost(conn, cancel).run()
