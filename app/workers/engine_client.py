"""EngineClient: the GUI side of the engine process (QtCore only, never blocks the GUI thread).

Starts app.workers.engine_host in a child process with the multiprocessing
"spawn" context (fork would copy Qt's threads and locks into the child), sends
it commands over a Pipe and turns its replies into Qt signals. The pipe is
polled by a QTimer (15 ms while loading or generating, slower when idle): a
poll that finds nothing costs one syscall, works the same on Windows (where
Pipe ends are not sockets a QSocketNotifier could watch), and a tick also checks
whether the process is still alive, so a crash is reported as `died` with its
exit code or signal name.

A watchdog rides on the same timer: when the engine has sent nothing for
STALL_S seconds while it should be answering (or loading), `stalled` is emitted
once so the window can offer a restart; it never kills the process by itself (a
huge prompt on a slow CPU may simply take long), and `resumed` follows if the
engine speaks again.

Stop sets a shared Event that the engine checks between tokens; no pipe
round-trip. cancel_load() sends CancelLoad: the engine stops between slabs of the
repack and answers LoadFailed("load_cancelled"), its partial cache file deleted.
Every load starts a fresh process (the old one is retired), so "load another
model" and restart() share one path and memory is really freed. switch() is the
other way to load another model: when free memory holds both, the new model loads
in a second process while the current one keeps answering, and takes over only
once it is ready (after the answer in progress); if it fails or is cancelled, the
current one simply stays (`switchFailed`), nothing is reloaded.
The messages are app.workers.protocol's typed records, sent as JSON; a reply
that does not decode is logged and skipped, so a confused engine process cannot
run code here or take the window down.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as SyncEvent
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.workers.engine_host import engine_host_main
from app.workers.protocol import (
    CANCELLED,
    LOAD_CANCELLED,
    NOT_READY,
    RESTARTED,
    SUPERSEDED,
    CacheDamaged,
    CancelLoad,
    ChatLine,
    ChunkMsg,
    EngineState,
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
    decode_reply,
    encode,
)
from tmac_core.types import MAX_THREADS, EngineInfo

STOPPED, STARTING, LOADING = EngineState.STOPPED, EngineState.STARTING, EngineState.LOADING
READY, GENERATING, DEAD = EngineState.READY, EngineState.GENERATING, EngineState.DEAD
BUSY_POLL_MS = 15
IDLE_POLL_MS = 100
RETIRE_GRACE_S = 5.0  # a retired process gets this long to exit by itself before it is killed
STALL_S = 60.0  # silence while loading or generating after which the engine counts as hung

SWITCH_MEMORY_FACTOR = 1.5  # free memory wanted for a switch alongside: this × the new model's estimate

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Candidate:
    """A second engine process loading the model a switch() asked for, while the current one serves."""

    process: SpawnProcess
    conn: Connection
    cancel: SyncEvent
    load: Load
    info: EngineInfo | None = None  # Loaded: waits for the answer in progress to end


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
        hint = {
            "SIGKILL": " (often the system running out of memory)",
            "SIGILL": " (an unsupported CPU instruction)",
            "SIGSEGV": " (a crash in native code)",
        }.get(name, "")
        return f"the engine process was killed by {name}{hint}"
    if exitcode > 0xFFFF:  # Windows NTSTATUS codes such as 0xC0000005 (access violation)
        return f"the engine process crashed with code 0x{exitcode:08X}"
    return f"the engine process exited with code {exitcode}"


def whole_frame_waiting(conn: Connection) -> bool:
    """True when `conn` holds at least one complete message, so recv_bytes cannot block the
    GUI thread on a frame the engine has only half written (it hung or died mid-send).

    A multiprocessing frame is a 4-byte big-endian length (or -1 and an 8-byte length) and
    the data. On POSIX the duplex pipe is a socketpair: FIONREAD says how many bytes wait and
    MSG_PEEK reads the length without consuming it. Windows pipes carry whole messages, so
    poll() is enough there.
    """
    if not conn.poll():
        return False
    if os.name != "posix":
        return True
    import fcntl  # POSIX-only modules
    import termios

    fd = conn.fileno()
    waiting = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, waiting)
    try:
        with socket.socket(fileno=os.dup(fd)) as peer:  # a dup: closing it must not close conn
            head = peer.recv(12, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return True  # not a socket (a one-way pipe): nothing to peek with, as before
    if len(head) < 4:
        return False
    (size,) = struct.unpack("!i", head[:4])
    if size == -1:
        return len(head) == 12 and waiting[0] >= 12 + struct.unpack("!Q", head[4:12])[0]
    return waiting[0] >= 4 + size


class EngineClient(QObject):
    stateChanged = Signal(object)  # app.workers.protocol.EngineState
    loadProgress = Signal(float, str)  # fraction 0..1, stage
    loadStatus = Signal(object)  # app.workers.protocol.Progress: the same with bytes repacked and an ETA
    loaded = Signal(object)  # tmac_core.types.EngineInfo
    loadFailed = Signal(str, str)  # error kind, message for the user (the process is then gone: STOPPED)
    chunk = Signal(int, object)  # request id, tmac_core.types.Chunk
    failed = Signal(int, str, str)  # request id, error kind (protocol.py, tmac_core.errors), message for the user
    died = Signal(str)  # the process ended unexpectedly: reason
    requestStarted = Signal(int)  # request id: sent to the engine (a request that waited its turn starts now)
    trimmed = Signal(int, int, int, int)  # request id, dropped messages, prompt tokens kept, n_ctx
    stalled = Signal(float)  # seconds the engine has been silent while it should be loading or answering
    resumed = Signal()  # it spoke again after `stalled`
    cacheDamaged = Signal(str)  # the repacked copy the model came from was damaged: reloading it, repacked
    switchFailed = Signal(str, str)  # kind, message: the model switch() loaded alongside failed; the current stays

    def __init__(self, parent: QObject | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(parent)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.state = STOPPED
        self.info: EngineInfo | None = None
        self.active_request: int | None = None
        self._context = multiprocessing.get_context("spawn")
        self._process: SpawnProcess | None = None
        self._conn: Connection | None = None
        self._cancel: SyncEvent | None = None
        self._last_load: Load | None = None
        self._threads: int | None = None
        self._next_request = 1
        # Requests waiting for the running answer to end, in arrival order (see generate)
        self._queued: collections.deque[Generate] = collections.deque()
        self._background: set[int] = set()  # ids of the queued or running background requests
        self._retired: list[tuple[Any, float]] = []
        self._candidate: _Candidate | None = None
        self.stall_s = STALL_S
        self._last_heard = time.monotonic()
        self._stall_reported = False
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._poll)

    # ---- commands ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def threads(self) -> int | None:
        """The thread count last asked for (None: the engine's default). Kept for the next load
        and for a change made while loading, which is sent when the model is loaded."""
        return self._threads

    def load(
        self,
        source: str,
        bits: int | None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        source_sha256: str | None = None,
        exact_activations: bool = False,
    ) -> None:
        """Start a fresh engine process and load `source` ("default" or a .gguf path) at `bits`
        (None: as in the file).

        `source_sha256`: the file's digest when the caller knows it (a download manifest), so
        the engine does not re-read the file to find its repacked copy in the cache.
        `exact_activations`: Engine.load's option (a model trained with int8 activations only).
        """
        self._drop_candidate()  # a switch still loading is superseded
        if n_threads is not None:
            self._threads = n_threads
        self._last_load = Load(
            source=str(source),
            bits=None if bits is None else int(bits),
            n_ctx=n_ctx,
            n_threads=None,
            cache_dir=self.cache_dir,
            source_sha256=source_sha256,
            exact_activations=exact_activations,
        )
        self._start_process()

    def switch(
        self,
        source: str,
        bits: int | None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        source_sha256: str | None = None,
        *,
        need_bytes: int,
        free_bytes: int | None,
        exact_activations: bool = False,
    ) -> bool:
        """Load `source` in a second process while the current model keeps answering; it takes over
        when it is ready (`loaded`, after the answer in progress). False, and nothing started, when
        no model is running or free memory does not hold SWITCH_MEMORY_FACTOR × `need_bytes` (the new
        model's estimate) besides it: then load() (the current model goes first) is the way."""
        if self.state not in (READY, GENERATING) or self._conn is None or self._candidate is not None:
            return False
        if free_bytes is None or free_bytes < SWITCH_MEMORY_FACTOR * need_bytes:
            return False
        if n_threads is not None:
            self._threads = n_threads
        load = Load(
            source=str(source),
            bits=None if bits is None else int(bits),
            n_ctx=n_ctx,
            n_threads=self._threads,
            cache_dir=self.cache_dir,
            source_sha256=source_sha256,
            exact_activations=exact_activations,
        )
        parent_end, child_end = self._context.Pipe(duplex=True)
        cancel = self._context.Event()
        process = self._context.Process(
            target=engine_host_main, args=(child_end, cancel), name="tmac-engine-next", daemon=True
        )
        process.start()
        child_end.close()
        parent_end.send_bytes(encode(load))
        self._candidate = _Candidate(process, parent_end, cancel, load)
        return True

    @property
    def switching(self) -> bool:
        """A switch() is loading its model alongside the current one."""
        return self._candidate is not None

    def restart(self) -> None:
        """New process, same model (after a crash, or to apply a new context length)."""
        if self._last_load is None:
            raise RuntimeError("restart() before any load()")
        self._drop_candidate()
        self._start_process()

    def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        params,
        fit_to_context: bool = True,
        continue_text: str = "",
        *,
        background: bool = False,
    ) -> int:
        """Ask for an answer; chunks arrive on `chunk` with the returned id.

        If the window's own answer is still running it is stopped first and this one starts
        when it has ended (a newer one replaces it). A `background` request (the local
        server's, for another program) is never stopped for another: a request made while one
        runs waits its turn behind it (`requestStarted` says when it is sent), and a background
        request itself always waits its turn. With fit_to_context the oldest turns are dropped
        (and `trimmed` emitted) when the history would not leave room for the answer.
        `continue_text`: the answer to `messages` so far, to go on from (the chunks carry the
        new text only).
        """
        lines = tuple(ChatLine(str(m["role"]), str(m["content"])) for m in messages)
        request_id = self._next_request
        request = Generate(request_id, lines, params, bool(fit_to_context), str(continue_text))
        return self._submit(request, background)

    def complete(self, prompt: str, params, *, background: bool = False) -> int:
        """Continue `prompt` as is, with no chat template (a plain completion); like generate()."""
        request = Generate(self._next_request, (), params, False, prompt=str(prompt))
        return self._submit(request, background)

    def is_waiting(self, request_id: int) -> bool:
        """The request is queued behind another's answer (not yet sent to the engine)."""
        return any(queued.request_id == request_id for queued in self._queued)

    def _submit(self, request: Generate, background: bool) -> int:
        request_id = request.request_id
        self._next_request += 1
        if self.state == GENERATING:
            if background:
                self._background.add(request_id)
            else:
                # the window's own requests: a newer one replaces the one still waiting
                for old in [q for q in self._queued if q.request_id not in self._background]:
                    self._queued.remove(old)
                    self._emit_later(self.failed.emit, old.request_id, SUPERSEDED, "A newer request replaced this one.")
                if self.active_request not in self._background:
                    self.stop()  # the window's own answer gives way; another program's runs to its end
            self._queued.append(request)
        elif self.state == READY:
            if background:
                self._background.add(request_id)
            self._send_generate(request)
        else:
            reason = (
                "The engine has stopped; restart it first." if self.state == DEAD else "The model is not loaded yet."
            )
            self._emit_later(self.failed.emit, request_id, NOT_READY, reason)
        return request_id

    def stop(self, request_id: int | None = None) -> None:
        """Stop the running answer, within one token; with `request_id`, only that request:
        the running one is stopped, a waiting one is withdrawn (`failed` with kind "cancelled"),
        anything else is left alone (the Stop button never stops another program's answer)."""
        if request_id is not None and request_id != self.active_request:
            for queued in list(self._queued):
                if queued.request_id == request_id:
                    self._queued.remove(queued)
                    self._background.discard(request_id)
                    self._emit_later(self.failed.emit, request_id, CANCELLED, "Stopped before it started.")
            return
        if self._cancel is not None:
            self._cancel.set()

    def cancel_load(self) -> bool:
        """Ask the loading engine to stop (it does between slabs of the repack, and deletes its
        partial cache file); `loadFailed` then comes with kind "load_cancelled" (`switchFailed`
        for a switch(): the current model stays). False when nothing is loading."""
        if self._candidate is not None:
            self._drop_candidate()
            self._emit_later(self.switchFailed.emit, LOAD_CANCELLED, "Loading the other model was cancelled.")
            return True
        if self.state not in (STARTING, LOADING):
            return False
        return self._safe_send(CancelLoad())

    def set_threads(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
            raise ValueError(f"thread count must be an integer in [1, {MAX_THREADS}], got {n!r}")
        self._threads = n
        if self.state in (READY, GENERATING):  # while loading it waits for Loaded (see _handle)
            self._safe_send(SetThreads(n))

    def shutdown(self) -> None:
        """Stop the process (at app exit). Waits at most ~1 s, then kills it."""
        self._timer.stop()
        self._drop_candidate()
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

    def _drop_candidate(self) -> None:
        """Stop a switch's process (its model is not wanted, or failed): retired like any other."""
        candidate, self._candidate = self._candidate, None
        if candidate is None:
            return
        candidate.cancel.set()
        try:
            candidate.conn.send_bytes(encode(CancelLoad()))
            candidate.conn.send_bytes(encode(Shutdown()))
        except (OSError, ValueError):
            pass
        candidate.conn.close()
        self._retired.append((candidate.process, time.monotonic()))

    def _poll_candidate(self) -> None:
        """Read the switch's process: progress, then Loaded (take over) or a failure (drop it)."""
        candidate = self._candidate
        if candidate is None:
            return
        try:
            while whole_frame_waiting(candidate.conn):
                try:
                    reply = decode_reply(candidate.conn.recv_bytes())
                except ProtocolError as error:
                    log.warning("skipped a malformed message from the next engine process: %s", error)
                    continue
                if isinstance(reply, Progress):
                    self.loadProgress.emit(reply.fraction, reply.stage)
                    self.loadStatus.emit(reply)
                elif isinstance(reply, Loaded):
                    candidate.info = reply.info
                    break
                elif isinstance(reply, LoadFailed):
                    self._drop_candidate()
                    self.switchFailed.emit(reply.kind, reply.message)
                    return
                else:
                    log.warning("skipped %s from the next engine process while it loads", type(reply).__name__)
        except (EOFError, OSError):
            pass
        if candidate.info is None and not candidate.process.is_alive():
            candidate.process.join(0.05)
            self._drop_candidate()
            self.switchFailed.emit("engine_died", describe_exit(candidate.process.exitcode))
        elif candidate.info is not None and self.state in (READY, DEAD):  # DEAD: the old one crashed meanwhile
            self._take_over()

    def _take_over(self) -> None:
        """The switch's model is ready and no answer runs: it becomes the engine, the old one retires."""
        candidate, self._candidate = self._candidate, None
        assert candidate is not None and candidate.info is not None
        self._retire_current()
        self._process, self._conn, self._cancel = candidate.process, candidate.conn, candidate.cancel
        self._last_load = dataclasses.replace(candidate.load, n_threads=None)
        info = candidate.info
        if self._threads is not None and info.n_threads != self._threads:
            if not self._safe_send(SetThreads(self._threads)):
                return
            info = dataclasses.replace(info, n_threads=self._threads)
        self.info = info
        self._heard()
        if self.state == READY:
            self.stateChanged.emit(READY)  # the same state, another model: listeners refresh
        else:
            self._set_state(READY)
        self._timer.start(IDLE_POLL_MS)
        self.loaded.emit(info)

    def _start_process(self) -> None:
        load = self._last_load
        if load is None:
            raise RuntimeError("no model to load")
        self._retire_current()
        self.info = None
        parent_end, child_end = self._context.Pipe(duplex=True)
        self._cancel = self._context.Event()
        self._process = self._context.Process(
            target=engine_host_main, args=(child_end, self._cancel), name="tmac-engine", daemon=True
        )
        self._set_state(STARTING)
        self._process.start()
        child_end.close()  # ours is closed so EOF on parent_end means the child is gone
        self._conn = parent_end
        parent_end.send_bytes(encode(dataclasses.replace(load, n_threads=self._threads)))
        self._set_state(LOADING)
        self._timer.start(BUSY_POLL_MS)

    def _detach_process(self):
        """Forget the current process (asking it to stop); returns it for the caller to reap."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if self._cancel is not None:
            self._cancel.set()
        self._cancel = None
        self._queued.clear()
        self._background.clear()
        self.active_request = None
        if conn is not None:
            try:
                conn.send_bytes(encode(Shutdown()))
            except (OSError, ValueError):
                pass
            conn.close()
        return process

    def _retire_current(self) -> None:
        interrupted = self.active_request
        waiting = [queued.request_id for queued in self._queued]
        process = self._detach_process()
        if interrupted is not None:
            self.failed.emit(interrupted, RESTARTED, "The engine was restarted before the answer finished.")
        for request_id in waiting:
            self.failed.emit(request_id, RESTARTED, "The engine was restarted before the answer started.")
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
        if self._candidate is not None:
            self._poll_candidate()
        if self._conn is None:
            if not self._retired and self._candidate is None:
                self._timer.stop()
            return
        self._drain()
        if self._process is not None and not self._process.is_alive():
            self._on_process_died()
        elif self.state in (LOADING, GENERATING) and not self._stall_reported:
            silent = time.monotonic() - self._last_heard
            if silent > self.stall_s:
                self._stall_reported = True
                self.stalled.emit(silent)

    def _drain(self) -> None:
        try:
            while self._conn is not None and whole_frame_waiting(self._conn):
                data = self._conn.recv_bytes()
                try:
                    reply = decode_reply(data)
                except ProtocolError as error:
                    log.warning("skipped a malformed message from the engine process: %s", error)
                    continue
                self._heard()
                self._handle(reply)
        except (EOFError, OSError):
            pass  # the pipe closed: the liveness check in _poll reports it

    def _handle(self, reply: Reply) -> None:
        if isinstance(reply, (Progress, Loaded, LoadFailed)) and self.state != LOADING:
            log.warning(
                "skipped %s from the engine process: it is %s, not loading", type(reply).__name__, self.state.value
            )
            return
        if isinstance(reply, ChunkMsg):
            self.chunk.emit(reply.request_id, reply.chunk)
            if reply.chunk.finish_reason is not None:
                self._request_ended(reply.request_id)
        elif isinstance(reply, Progress):
            self.loadProgress.emit(reply.fraction, reply.stage)
            self.loadStatus.emit(reply)
        elif isinstance(reply, Loaded):
            info = reply.info
            if self._threads is not None and info.n_threads != self._threads:
                # The count changed while the model was loading: the engine applies it before its first token.
                if not self._safe_send(SetThreads(self._threads)):
                    return
                info = dataclasses.replace(info, n_threads=self._threads)
            self.info = info
            self._set_state(READY)
            self.loaded.emit(info)
        elif isinstance(reply, Trimmed):
            self.trimmed.emit(reply.request_id, reply.dropped_messages, reply.prompt_tokens, reply.n_ctx)
        elif isinstance(reply, LoadFailed):
            self._retire_current()
            self._set_state(STOPPED)
            self.loadFailed.emit(reply.kind, reply.message)
        elif isinstance(reply, Failed):
            self.failed.emit(reply.request_id, reply.kind, reply.message)
            self._request_ended(reply.request_id)
        elif isinstance(reply, CacheDamaged):
            log.warning("the repacked-model cache file was damaged (%s): loading the model again", reply.message)
            self.cacheDamaged.emit(reply.message)
            self.restart()  # the engine discarded the file: this load repacks

    def _request_ended(self, request_id: int) -> None:
        if request_id != self.active_request:
            return
        self.active_request = None
        self._background.discard(request_id)
        if self._queued and self._conn is not None:
            self._send_generate(self._queued.popleft())
        else:
            self._set_state(READY)

    def _send_generate(self, request: Generate) -> None:
        if self._cancel is not None:
            self._cancel.clear()  # cleared here, before the command, so an old Stop cannot hit the new answer
        self.active_request = request.request_id
        self._set_state(GENERATING)
        if not self._safe_send(request):
            return
        self._timer.start(BUSY_POLL_MS)
        self.requestStarted.emit(request.request_id)

    def _safe_send(self, request: Request) -> bool:
        if self._conn is None:
            return False  # no process (retired meanwhile): nothing to send to
        try:
            self._conn.send_bytes(encode(request))
            return True
        except (OSError, ValueError):
            self._on_process_died()
            return False

    def _on_process_died(self) -> None:
        process = self._process
        self._drain()  # chunks sent just before the end are still the user's text
        if self._process is not process:
            return  # a load failure arrived in the drain and already retired it
        if process is not None:
            process.join(0.05)  # the exit code is usually there already; never wait longer
        reason = describe_exit(process.exitcode if process is not None else None)
        self._detach_process()
        self._set_state(DEAD)
        self.died.emit(reason)

    # ---- helpers -----------------------------------------------------------------------------

    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        if self._stall_reported:
            self._stall_reported = False
            self.resumed.emit()

    def _set_state(self, state: EngineState) -> None:
        if state == self.state:
            return
        if state in (LOADING, GENERATING):  # the watchdog counts from here
            self._last_heard = time.monotonic()
            self._stall_reported = False
        self.state = state
        if self._timer.isActive():
            self._timer.setInterval(BUSY_POLL_MS if state in (STARTING, LOADING, GENERATING) else IDLE_POLL_MS)
        self.stateChanged.emit(state)

    def _emit_later(self, emit, *args) -> None:
        # Emitted from the event loop, so a caller connecting after generate() still hears it.
        QTimer.singleShot(0, self, lambda: emit(*args))
