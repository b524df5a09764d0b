"""An inter-process lock per download target, so two app windows never write one file.

A lock file `<models>/.partial/<key>.lock` held with an OS lock (fcntl.flock on
POSIX, msvcrt.locking on Windows): the OS drops it when the holder dies, so a lock
left by a crashed window is never stale, whatever the file says. The holder's pid
is written into the file only for the message. The file is removed on release;
whoever locks checks that the file it locked is still the one at the path (another
holder may have removed it in between), and retries otherwise. Pure Python.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

from app.catalog.errors import UnsafePathError
from app.catalog.safepath import clear_leftover, open_regular

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks bytes from the current position
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class LockBusy(Exception):
    """Another process (or another download in this one) holds the lock."""


class TargetLock:
    """`with TargetLock(path):` holds the lock or raises LockBusy at once (never waits)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        for _ in range(20):  # a retry only when a releasing holder removed the file under us
            clear_leftover(self.path)  # a link or FIFO there is no one's lock (we only make regular files)
            handle = open_regular(self.path, "ab")
            fd = os.dup(handle.fileno())
            handle.close()
            if not _try_lock(fd):
                os.close(fd)
                raise LockBusy(str(self.path))
            try:
                current = os.lstat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and stat.S_ISREG(current.st_mode) and current.st_ino == mine.st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            _unlock(fd)
            os.close(fd)
        raise UnsafePathError(self.path, "the lock file keeps changing")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: the next holder re-checks the inode
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> TargetLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """True when someone holds the lock at `path` now (used before deleting a partial download)."""
    lock = TargetLock(path)
    try:
        lock.acquire()
    except LockBusy:
        return True
    lock.release()
    return False
