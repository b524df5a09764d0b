"""sha256 of a file, read in blocks, with progress and a way to stop early.

The one implementation for the runtime's cache key and the app's download and
import checks. Standard library only, so the app may import it without numpy
or the native extension.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import BinaryIO

BLOCK_BYTES = 16 << 20  # 16 MiB reads: a 4 GB file is ~250 calls, each long enough to show progress


class HashCancelled(Exception):
    """`should_stop` returned True; `done` of `total` bytes had been read."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"hashing stopped after {done} of {total} bytes")
        self.done, self.total = done, total


def sha256_file(
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    copy_to: BinaryIO | None = None,
) -> str:
    """Hex sha256 of the file's bytes. `progress(done, total)` after every block;
    `should_stop()` before every block (HashCancelled when it says so); every block
    is also written to `copy_to` when given (copy and hash in one read)."""
    digest = hashlib.sha256()
    total, done = os.path.getsize(path), 0
    with open(path, "rb") as handle:
        while True:
            if should_stop is not None and should_stop():
                raise HashCancelled(done, total)
            block = handle.read(BLOCK_BYTES)
            if not block:
                break
            digest.update(block)
            if copy_to is not None:
                copy_to.write(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()
