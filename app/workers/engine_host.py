"""The engine process: runs tmac_core.Engine for the GUI, talking over one multiprocessing Pipe.

Started by EngineClient with the "spawn" context, so a native crash, an illegal
instruction or an out-of-memory kill ends this process only. Two threads:

- the main thread runs commands one at a time (load, generate) and is the only
  sender on the pipe;
- a reader thread receives commands. It applies "set_threads" immediately
  (Engine.set_threads is thread-safe and takes effect before the next token),
  queues everything else for the main thread, and sets nothing else.

Stop does not travel over the pipe: the GUI sets the shared `cancel` Event,
which Engine.stream checks between tokens. The client clears it before each
generate command.

Messages, parent → child:  ("load", options) · ("generate", request_id, messages,
params_dict, fit) · ("set_threads", n) · ("shutdown",)
Messages, child → parent:  ("progress", fraction, stage) · ("loaded", EngineInfo) ·
("chunk", request_id, Chunk) · ("trimmed", request_id, dropped_messages, prompt_tokens,
n_ctx) · ("failed", request_id, error_type, message)   (request_id -1 = the load)

No Qt here: this module is imported in the child, which must stay lean.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import threading
import time
from typing import Any

LOAD_REQUEST = -1
PROGRESS_INTERVAL_S = 0.05    # the repacker reports hundreds of steps; the GUI needs ~20 a second


@dataclasses.dataclass(frozen=True)
class ChatLine:
    """A message with attributes, the shape app.chat.trim.fit_history works on."""
    role: str
    content: str


class _EngineSlot:
    """The engine shared between the two threads; only set_threads crosses over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.engine = None
        self._pending_threads: int | None = None

    def install(self, engine) -> None:
        with self._lock:
            self.engine = engine
            if self._pending_threads is not None:
                engine.set_threads(self._pending_threads)
                self._pending_threads = None

    def set_threads(self, n: int) -> None:
        with self._lock:
            if self.engine is None:
                self._pending_threads = n   # a slider moved while the model was still loading
            else:
                self.engine.set_threads(n)


def _read_commands(conn, commands: "queue.Queue[tuple]", slot: _EngineSlot, cancel) -> None:
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            # The GUI is gone: stop the answer in progress and exit rather than linger as an orphan.
            cancel.set()
            commands.put(("shutdown",))
            return
        if command[0] == "set_threads":
            try:
                slot.set_threads(int(command[1]))
            except ValueError:
                pass  # out of range: the client validates, so this is only a stale value
        else:
            commands.put(command)
            if command[0] == "shutdown":
                return


def fit_to_context(engine, messages: list[dict], max_tokens: int) -> tuple[list[dict], int, int]:
    """Drop the oldest whole turns until the prompt leaves room for an answer.

    Returns (kept messages, how many were dropped, prompt tokens of the kept ones).
    The system prompt and the newest turn are always kept; if they alone do not fit,
    Engine.stream raises ContextOverflowError with the counts.
    """
    from app.chat.trim import fit_history, split_into_turns

    reserve = max(1, min(max_tokens, engine.n_ctx // 4))   # room for the answer
    budget = engine.n_ctx - reserve
    lines = [ChatLine(m["role"], m["content"]) for m in messages]
    # Per-message estimate: content tokens plus the template's role markers; checked exactly below.
    fitted = fit_history(lines, lambda m: len(engine.tokenizer.encode(m.content, allow_special=False)) + 8, budget)
    kept = fitted.kept
    tokens = engine.count_tokens([dataclasses.asdict(m) for m in kept])
    while tokens > budget:
        system, turns = split_into_turns(kept)
        if len(turns) <= 1:
            break
        kept = system + [m for turn in turns[1:] for m in turn]
        tokens = engine.count_tokens([dataclasses.asdict(m) for m in kept])
    return [dataclasses.asdict(m) for m in kept], len(lines) - len(kept), tokens


class EngineHost:
    """The child's main thread: executes queued commands and reports over the pipe."""

    def __init__(self, conn, cancel) -> None:
        self.conn = conn
        self.cancel = cancel
        self.slot = _EngineSlot()
        self.commands: "queue.Queue[tuple]" = queue.Queue()

    def send(self, *message: Any) -> None:
        self.conn.send(message)

    def run(self) -> None:
        reader = threading.Thread(target=_read_commands, name="engine-commands",
                                  args=(self.conn, self.commands, self.slot, self.cancel), daemon=True)
        reader.start()
        try:
            while True:
                command = self.commands.get()
                if command[0] == "shutdown":
                    break
                if command[0] == "load":
                    self.load(**command[1])
                elif command[0] == "generate":
                    self.generate(*command[1:])
        except (BrokenPipeError, EOFError, OSError):
            pass  # the GUI went away mid-send; nothing left to report to
        finally:
            if self.slot.engine is not None:
                self.slot.engine.close()
            self.conn.close()

    def load(self, source: str, bits: int, n_ctx: int | None, n_threads: int | None, cache_dir) -> None:
        last = {"t": 0.0, "stage": None}

        def progress(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if stage != last["stage"] or now - last["t"] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last.update(t=now, stage=stage)
                self.send("progress", float(fraction), stage)

        try:
            from tmac_core import Engine   # here: importing the kernels can itself fail (UnsupportedCpuError)

            engine = Engine.load(source, bits=bits, n_threads=n_threads, n_ctx=n_ctx, progress=progress,
                                 cache_dir=cache_dir)
        except Exception as error:  # every load failure is reported, typed, to the user
            self.send("failed", LOAD_REQUEST, type(error).__name__, str(error))
            return
        self.slot.install(engine)
        self.send("loaded", engine.info)

    def generate(self, request_id: int, messages: list[dict], params: dict, fit: bool) -> None:
        from tmac_core import SamplingParams
        from tmac_core.errors import ContextOverflowError

        engine = self.slot.engine
        if engine is None:
            self.send("failed", request_id, "EngineNotLoaded", "No model is loaded in the engine process.")
            return
        try:
            sampling = SamplingParams(**params)
            if fit:
                messages, dropped, tokens = fit_to_context(engine, messages, sampling.max_tokens)
                if dropped:
                    self.send("trimmed", request_id, dropped, tokens, engine.n_ctx)
            for chunk in engine.stream(messages, sampling, cancel=self.cancel):
                self.send("chunk", request_id, chunk)
        except ContextOverflowError as error:
            self.send("failed", request_id, "ContextOverflowError",
                      f"The prompt is {error.n_prompt_tokens} tokens but the model's context holds "
                      f"{error.n_ctx}, so there is no room for an answer. Shorten the message or "
                      "raise the context length.")
        except (BrokenPipeError, EOFError):
            raise
        except Exception as error:
            self.send("failed", request_id, type(error).__name__, str(error))


def engine_host_main(conn, cancel) -> None:
    """Process entry point (the target EngineClient gives to the spawn context)."""
    # Ctrl+C in a terminal reaches the whole process group; the GUI decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    EngineHost(conn, cancel).run()
