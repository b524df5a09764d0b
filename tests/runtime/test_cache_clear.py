"""tmac_core.loading.cache.clear_cache: frees our repacked files and nothing else."""

from __future__ import annotations

import os
import time

import pytest

from tmac_core.loading import cache


def test_clear_cache_removes_only_our_files_and_reports_the_bytes(tmp_path):
    folder = tmp_path / "repacked"
    folder.mkdir()
    (folder / "a.tmacw").write_bytes(b"x" * 1000)
    (folder / "b.tmacw").write_bytes(b"y" * 24)
    (folder / "notes.txt").write_bytes(b"keep")
    (folder / "sub.tmacw").mkdir()  # a directory with our suffix is not ours to delete
    (folder / "sub.tmacw" / "inner.tmacw").write_bytes(b"z" * 7)
    fresh = folder / ".partial-123.tmacw"  # a repack being written right now
    fresh.write_bytes(b"p" * 50)
    stale = folder / ".partial-old.tmacw"  # left by a crash long ago
    stale.write_bytes(b"s" * 60)
    old = time.time() - 2 * cache.STALE_PARTIAL_S
    os.utime(stale, (old, old))

    assert cache.clear_cache(folder) == 1000 + 24 + 60
    assert sorted(p.name for p in folder.iterdir()) == [".partial-123.tmacw", "notes.txt", "sub.tmacw"]
    assert (folder / "sub.tmacw" / "inner.tmacw").exists()
    assert cache.clear_cache(folder) == 0


def test_clear_cache_never_follows_a_symlink(tmp_path):
    folder, elsewhere = tmp_path / "repacked", tmp_path / "precious"
    folder.mkdir()
    elsewhere.mkdir()
    target = elsewhere / "model.tmacw"
    target.write_bytes(b"m" * 100)
    try:
        (folder / "link.tmacw").symlink_to(target)
    except OSError:
        pytest.skip("symlinks are not available here")
    assert cache.clear_cache(folder) == 0
    assert target.read_bytes() == b"m" * 100 and (folder / "link.tmacw").is_symlink()


def test_clear_cache_tolerates_a_missing_folder_or_a_file_in_its_place(tmp_path, monkeypatch):
    assert cache.clear_cache(tmp_path / "never-made") == 0
    (tmp_path / "a-file").write_bytes(b"x")
    assert cache.clear_cache(tmp_path / "a-file") == 0
    monkeypatch.setenv("TMAC_CACHE_DIR", str(tmp_path / "env-cache"))
    (tmp_path / "env-cache").mkdir()
    (tmp_path / "env-cache" / "k.tmacw").write_bytes(b"k" * 9)
    assert cache.clear_cache() == 9  # None: the runtime's default folder
