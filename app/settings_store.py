"""SettingsStore: the app's one current AppSettings, shared by every window.

`update(**changes)` checks each value with app.settings' field checks (a bad value raises
ValueError and changes nothing), swaps in the new frozen AppSettings, tells the subscribers
at once and saves the file a moment later: a burst of changes (a slider dragged across
eight thread counts, a spin box held down) is one write. `flush()` writes what is pending
now; the app calls it on quit. Every window holds the same store, so no window re-reads
the file or keeps a copy that another window's change would make stale.

Pure Python (threading only): must not import PySide6.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.settings import AppSettings, check_changes, save_settings

SAVE_DELAY_S = 0.5

Subscriber = Callable[[AppSettings, frozenset[str]], None]  # (the new settings, the names of the fields that changed)


class SettingsStore:
    """The current settings, validated on change, saved atomically after SAVE_DELAY_S, with subscribers.

    The delayed save runs on a threading.Timer rather than a timer the caller drives: the store
    stays Qt-free and needs no event loop to keep its promise that a change reaches the disk
    (the self-test and scripts have none running at times), and the write (temp file + fsync +
    rename) stays off the GUI thread. Subscribers are called on the thread that called update(),
    which in the app is the GUI thread; a failed background save goes to `on_save_error`
    handlers on the timer's thread (a Qt caller hops back with a queued signal).
    """

    def __init__(self, settings: AppSettings, path: Path | None, *, save_delay_s: float = SAVE_DELAY_S) -> None:
        self._current = settings
        self.path = Path(path) if path is not None else None  # None: kept in memory only
        self.save_delay_s = save_delay_s
        self._lock = threading.Lock()  # guards _current, _dirty and _timer
        self._save_lock = threading.Lock()  # one writer at a time, so saves land in order
        self._dirty = False
        self._timer: threading.Timer | None = None
        self._subscribers: list[Subscriber] = []
        self._error_handlers: list[Callable[[OSError], None]] = []

    @property
    def current(self) -> AppSettings:
        return self._current

    def update(self, **changes: Any) -> AppSettings:
        """Apply `changes` (AppSettings field names) and return the new settings.

        Raises ValueError naming the first field that is unknown or fails its check; then
        nothing changes. Changes equal to the current values notify nobody and save nothing.
        """
        values = check_changes(changes)
        with self._lock:
            old = self._current
            changed = frozenset(name for name, value in values.items() if getattr(old, name) != value)
            if not changed:
                return old
            self._current = new = old.replace(**{name: values[name] for name in changed})
            self._dirty = True
            self._schedule_save()
        for callback in list(self._subscribers):
            callback(new, changed)
        return new

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(settings, changed_names)` after every change; returns the function that stops it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def on_save_error(self, handler: Callable[[OSError], None]) -> Callable[[], None]:
        """Call `handler(error)` when a delayed save fails (the change stays pending for the next try)."""
        self._error_handlers.append(handler)
        return lambda: self._error_handlers.remove(handler) if handler in self._error_handlers else None

    @property
    def pending(self) -> bool:
        """True while a change has not reached the file."""
        return self._dirty

    def flush(self) -> None:
        """Write a pending change now (and cancel the delayed save). Raises OSError if the write fails."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._save(raise_errors=True)

    # ---- saving ------------------------------------------------------------------------------

    def _schedule_save(self) -> None:  # called with _lock held
        if self.path is None:
            self._dirty = False
            return
        if self._timer is not None:
            self._timer.cancel()  # a later change restarts the wait: one write per burst
        self._timer = threading.Timer(self.save_delay_s, self._save)
        self._timer.daemon = True  # never keeps a closing app alive; flush() is the quit-time write
        self._timer.start()

    def _save(self, raise_errors: bool = False) -> None:
        with self._save_lock:
            with self._lock:
                if not self._dirty or self.path is None:
                    return
                snapshot, self._dirty = self._current, False
            try:
                save_settings(snapshot, self.path)
            except OSError as error:
                with self._lock:
                    self._dirty = True  # still unsaved: the next change or flush() tries again
                if raise_errors:
                    raise
                for handler in list(self._error_handlers):
                    handler(error)
