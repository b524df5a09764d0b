"""EngineClient: the GUI side of the engine process (QtCore only, never blocks the GUI thread).

Starts app.workers.engine_host in a child process with the multiprocessing
"spawn" context (fork would copy Qt's threads and locks into the child), sends
it commands over a Pipe and turns its replies into Qt signals. The pipe is
polled by a QTimer (15 ms while loading or generating, slower when idle): a
poll that finds nothing costs one syscall, works the same on Windows (where
Pipe ends are not sockets a QSocketNotifier could watch), and a tick also checks
whether the process is still alive, so a crash is reported as `died` with its
exit code or signal name.

Stop sets a shared Event that the engine checks between tokens; no pipe
round-trip. Every load starts a fresh process (the old one is retired), so
"load another model" and restart() share one path and memory is really freed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.workers.engine_host import LOAD_REQUEST, engine_host_main
from tmac_core.types import MAX_THREADS

STOPPED, STARTING, LOADING, READY, GENERATING, DEAD = "stopped", "starting", "loading", "ready", "generating", "dead"
BUSY_POLL_MS = 15
IDLE_POLL_MS = 100
RETIRE_GRACE_S = 5.0      # a retired process gets this long to exit by itself before it is killed


def default_thread_count() -> int:
    """Physical cores − 1 (at least 1): the GUI keeps a core, so the kernel threads, which wait
    for each other at every step, are not held up by repaints (on 2 cores, 1 thread beats 2)."""
    from app.hardware import logical_cores, physical_cores

    return max(1, (physical_cores() or logical_cores()) - 1)


def describe_exit(exitcode: int | None) -> str:
    """A sentence for the user about how the engine process ended."""
    if exitcode is None:
        return "the engine process stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {"SIGKILL": " (often the system running out of memory)", "SIGILL": " (an unsupported CPU instruction)",
                "SIGSEGV": " (a crash in native code)"}.get(name, "")
        return f"the engine process was killed by {name}{hint}"
    if exitcode > 0xFFFF:   # Windows NTSTATUS codes such as 0xC0000005 (access violation)
        return f"the engine process crashed with code 0x{exitcode:08X}"
    return f"the engine process exited with code {exitcode}"


class EngineClient(QObject):
    stateChanged = Signal(str)          # stopped | starting | loading | ready | generating | dead
    loadProgress = Signal(float, str)   # fraction 0..1, stage
    loaded = Signal(object)             # tmac_core.types.EngineInfo
    chunk = Signal(int, object)         # request id, tmac_core.types.Chunk
    failed = Signal(int, str, str)      # request id (-1 = load), error type name, message for the user
    died = Signal(str)                  # the process ended unexpectedly: reason
    trimmed = Signal(int, int, int, int)  # request id, dropped messages, prompt tokens kept, n_ctx

    def __init__(self, parent: QObject | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.state = STOPPED
        self.info = None
        self.active_request: int | None = None
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._conn = None
        self._cancel = None
        self._last_load: dict[str, Any] | None = None
        self._threads: int | None = None
        self._next_request = 1
        self._queued: tuple[int, list[dict], dict, bool] | None = None   # waits for the running answer to end
        self._retired: list[tuple[Any, float]] = []
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._poll)

    # ---- commands ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def threads(self) -> int | None:
        """The thread count last asked for (None: the engine's default)."""
        return self._threads

    def load(self, source: str, bits: int, n_ctx: int | None = None, n_threads: int | None = None) -> None:
        """Start a fresh engine process and load `source` ("default" or a .gguf path) at `bits`."""
        if n_threads is not None:
            self._threads = n_threads
        self._last_load = {"source": str(source), "bits": int(bits), "n_ctx": n_ctx}
        self._start_process()

    def restart(self) -> None:
        """New process, same model (after a crash, or to apply a new context length)."""
        if self._last_load is None:
            raise RuntimeError("restart() before any load()")
        self._start_process()

    def generate(self, messages: list[dict], params, fit_to_context: bool = True) -> int:
        """Ask for an answer; chunks arrive on `chunk` with the returned id.

        If an answer is still running it is stopped first and this one starts when it
        has ended. With fit_to_context the oldest turns are dropped (and `trimmed`
        emitted) when the history would not leave room for the answer.
        """
        request_id = self._next_request
        self._next_request += 1
        request = (request_id, [dict(m) for m in messages], dataclasses.asdict(params), fit_to_context)
        if self.state == GENERATING:
            if self._queued is not None:    # superseded before it started
                self._emit_later(self.failed.emit, self._queued[0], "Superseded", "A newer request replaced this one.")
            self._queued = request
            self.stop()
        elif self.state == READY:
            self._send_generate(request)
        else:
            reason = "The engine has stopped; restart it first." if self.state == DEAD else \
                "The model is not loaded yet."
            self._emit_later(self.failed.emit, request_id, "EngineNotReady", reason)
        return request_id

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def set_threads(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
            raise ValueError(f"thread count must be an integer in [1, {MAX_THREADS}], got {n!r}")
        self._threads = n
        if self._conn is not None and self.state not in (DEAD, STOPPED):
            self._safe_send(("set_threads", n))

    def shutdown(self) -> None:
        """Stop the process (at app exit). Waits at most ~1 s, then kills it."""
        self._timer.stop()
        process = self._detach_process()
        for old, _ in self._retired:
            if old.is_alive():
                old.kill()
        self._retired.clear()
        if process is not None:
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        self._set_state(STOPPED)

    # ---- process lifecycle -------------------------------------------------------------------

    def _start_process(self) -> None:
        self._retire_current()
        self.info = None
        parent_end, child_end = self._context.Pipe(duplex=True)
        self._cancel = self._context.Event()
        self._process = self._context.Process(target=engine_host_main, args=(child_end, self._cancel),
                                              name="tmac-engine", daemon=True)
        self._set_state(STARTING)
        self._process.start()
        child_end.close()   # ours is closed so EOF on parent_end means the child is gone
        self._conn = parent_end
        options = dict(self._last_load, n_threads=self._threads, cache_dir=self.cache_dir)
        self._conn.send(("load", options))
        self._set_state(LOADING)
        self._timer.start(BUSY_POLL_MS)

    def _detach_process(self):
        """Forget the current process (asking it to stop); returns it for the caller to reap."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if self._cancel is not None:
            self._cancel.set()
        self._cancel = None
        self._queued = None
        self.active_request = None
        if conn is not None:
            try:
                conn.send(("shutdown",))
            except (OSError, ValueError):
                pass
            conn.close()
        return process

    def _retire_current(self) -> None:
        interrupted = self.active_request
        process = self._detach_process()
        if interrupted is not None:
            self.failed.emit(interrupted, "EngineRestarted", "The engine was restarted before the answer finished.")
        if process is not None:
            self._retired.append((process, time.monotonic()))

    def _reap_retired(self) -> None:
        still = []
        for process, since in self._retired:
            if process.is_alive():
                if time.monotonic() - since > RETIRE_GRACE_S:
                    process.kill()
                still.append((process, since))
            else:
                process.join(0)
        self._retired = still

    # ---- receiving ---------------------------------------------------------------------------

    def _poll(self) -> None:
        if self._retired:
            self._reap_retired()
        if self._conn is None:
            if not self._retired:
                self._timer.stop()
            return
        self._drain()
        if self._process is not None and not self._process.is_alive():
            self._on_process_died()

    def _drain(self) -> None:
        try:
            while self._conn is not None and self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            pass  # the pipe closed: the liveness check in _poll reports it

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "chunk":
            _, request_id, chunk = message
            self.chunk.emit(request_id, chunk)
            if chunk.finish_reason is not None:
                self._request_ended(request_id)
        elif kind == "progress":
            self.loadProgress.emit(message[1], message[2])
        elif kind == "loaded":
            self.info = message[1]
            self._set_state(READY)
            self.loaded.emit(self.info)
        elif kind == "trimmed":
            self.trimmed.emit(*message[1:])
        elif kind == "failed":
            _, request_id, error_type, text = message
            if request_id == LOAD_REQUEST:
                self._retire_current()
                self._set_state(STOPPED)
                self.failed.emit(request_id, error_type, text)
            else:
                self.failed.emit(request_id, error_type, text)
                self._request_ended(request_id)

    def _request_ended(self, request_id: int) -> None:
        if request_id != self.active_request:
            return
        self.active_request = None
        queued, self._queued = self._queued, None
        if queued is not None and self._conn is not None:
            self._send_generate(queued)
        else:
            self._set_state(READY)

    def _send_generate(self, request: tuple) -> None:
        self._cancel.clear()    # cleared here, before the command, so an old Stop cannot hit the new answer
        self.active_request = request[0]
        self._set_state(GENERATING)
        if not self._safe_send(("generate", *request)):
            return
        self._timer.start(BUSY_POLL_MS)

    def _safe_send(self, message: tuple) -> bool:
        try:
            self._conn.send(message)
            return True
        except (OSError, ValueError):
            self._on_process_died()
            return False

    def _on_process_died(self) -> None:
        process = self._process
        self._drain()   # chunks sent just before the end are still the user's text
        if self._process is not process:
            return      # a load failure arrived in the drain and already retired it
        if process is not None:
            process.join(0.05)   # the exit code is usually there already; never wait longer
        reason = describe_exit(process.exitcode if process is not None else None)
        self._detach_process()
        self._set_state(DEAD)
        self.died.emit(reason)

    # ---- helpers -----------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self._timer.isActive():
            self._timer.setInterval(BUSY_POLL_MS if state in (STARTING, LOADING, GENERATING) else IDLE_POLL_MS)
        self.stateChanged.emit(state)

    def _emit_later(self, emit, *args) -> None:
        # Emitted from the event loop, so a caller connecting after generate() still hears it.
        QTimer.singleShot(0, self, lambda: emit(*args))
