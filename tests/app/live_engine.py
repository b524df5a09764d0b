"""Shared pieces for the tests that run the real engine process on the embedded model (no mocks).

`engine_cache_dir` (session-wide) holds the repacked model, so only the first
test of a run pays for repacking; TMAC_CACHE_DIR points there for code that
reads it (MainWindow, the self-test subprocess). `ChunkLog` records what an
EngineClient emits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

LOAD_TIMEOUT_MS = 120_000  # the first load repacks the model (~10-20 s on a slow CI machine)
ANSWER_TIMEOUT_MS = 60_000
# Greedy decoding of this prompt gives a long answer, so there is time to act mid-answer.
LONG_PROMPT = "Write a long story about a dragon who learns to fly."  # greedy: 300+ tokens


@pytest.fixture(scope="session")
def engine_cache_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("repacked")
    previous = os.environ.get("TMAC_CACHE_DIR")
    os.environ["TMAC_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("TMAC_CACHE_DIR", None)
    else:
        os.environ["TMAC_CACHE_DIR"] = previous


@dataclass
class ChunkLog:
    chunks: dict[int, list] = field(default_factory=dict)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)
    trims: list[tuple[int, int, int, int]] = field(default_factory=list)

    def attach(self, client) -> ChunkLog:
        client.chunk.connect(lambda rid, chunk: self.chunks.setdefault(rid, []).append(chunk))
        client.failed.connect(lambda *args: self.failures.append(args))
        client.died.connect(self.deaths.append)
        client.trimmed.connect(lambda *args: self.trims.append(args))
        return self

    def of(self, request_id: int) -> list:
        return self.chunks.get(request_id, [])

    def finished(self, request_id: int) -> bool:
        chunks = self.of(request_id)
        return bool(chunks) and chunks[-1].finish_reason is not None

    def text(self, request_id: int) -> str:
        return "".join(chunk.text for chunk in self.of(request_id))
