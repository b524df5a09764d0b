"""run_in_background: short jobs (hash a file, check a GGUF, list models) off the GUI thread.

The shape of Anki's TaskManager: `fn` runs on a shared thread pool; its
result (or exception) comes back to the GUI thread through a queued signal and is handed to
`on_done` (or `on_error`) there, so callbacks may touch widgets. `fn` itself must not touch
any widget. A `context` QObject ties the callbacks to an owner: once it is deleted they are
dropped instead of crashing on a dead C++ object. QtCore only.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

log = logging.getLogger(__name__)

MAX_WORKERS = 4


class _Dispatcher(QObject):
    """Lives on the GUI thread; `deliver` carries a closure there from any thread."""

    deliver = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.deliver.connect(self._run, Qt.ConnectionType.QueuedConnection)

    @Slot(object)
    def _run(self, closure: Callable[[], None]) -> None:
        closure()


_dispatcher: _Dispatcher | None = None
_executor: ThreadPoolExecutor | None = None


def _on_gui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() == app.thread()


def _ensure_started() -> tuple[_Dispatcher, ThreadPoolExecutor]:
    global _dispatcher, _executor
    assert _on_gui_thread(), "run_in_background must be called from the GUI thread"
    if _dispatcher is None or not shiboken6.isValid(_dispatcher):
        _dispatcher = _Dispatcher()
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="tmac-task")
    return _dispatcher, _executor


def _log_error(error: BaseException) -> None:
    log.error("background task failed:\n%s", "".join(traceback.format_exception(error)))


def run_in_background(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    *,
    context: QObject | None = None,
) -> Future:
    """Run `fn()` on the pool; then, on the GUI thread, `on_done(result)` or `on_error(exception)`.

    Without `on_error` an exception is logged. Returns the concurrent.futures.Future (for
    `cancel()` before it starts, or for tests). Must be called from the GUI thread.
    """
    dispatcher, executor = _ensure_started()

    def finished(future: Future) -> None:  # on the worker thread
        def deliver() -> None:  # on the GUI thread
            if context is not None and not shiboken6.isValid(context):
                return
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                (on_error or _log_error)(error)
            elif on_done is not None:
                on_done(future.result())

        if shiboken6.isValid(dispatcher):
            dispatcher.deliver.emit(deliver)

    future = executor.submit(fn)
    future.add_done_callback(finished)
    return future


def shutdown(wait: bool = False) -> None:
    """Stop accepting work (at application exit). Jobs already running finish; queued ones are dropped."""
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=wait, cancel_futures=True)
        _executor = None
