"""tmac_core.filehash: the one block-wise sha256 (cache keys, downloads, imports)."""

from __future__ import annotations

import hashlib
import io

import pytest

from tmac_core import filehash


def test_digest_progress_and_copy_agree_with_hashlib(tmp_path, monkeypatch):
    monkeypatch.setattr(filehash, "BLOCK_BYTES", 1000)
    data = bytes(range(256)) * 37  # 9472 bytes: ten blocks, the last short
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    seen, copy = [], io.BytesIO()
    digest = filehash.sha256_file(path, progress=lambda done, total: seen.append((done, total)), copy_to=copy)
    assert digest == hashlib.sha256(data).hexdigest()
    assert copy.getvalue() == data
    assert [d for d, _ in seen] == [min(1000 * i, len(data)) for i in range(1, 11)]
    assert {t for _, t in seen} == {len(data)}


def test_empty_file_and_stop(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert filehash.sha256_file(empty) == hashlib.sha256(b"").hexdigest()
    monkeypatch.setattr(filehash, "BLOCK_BYTES", 10)
    path = tmp_path / "data"
    path.write_bytes(b"x" * 100)
    calls = iter([False, False, True])
    with pytest.raises(filehash.HashCancelled) as stopped:
        filehash.sha256_file(path, should_stop=lambda: next(calls))
    assert (stopped.value.done, stopped.value.total) == (20, 100)
