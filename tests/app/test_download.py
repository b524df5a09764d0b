"""Downloads against the fake Hub: verified success, resume, corruption, typed errors, disk space, cancel."""

from __future__ import annotations

import errno
import hashlib
import random
import shutil
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from app.catalog import download
from app.catalog.download import DownloadProgress, download_model_file, fetch_file_info, partial_path
from app.catalog.errors import (
    ChecksumMismatchError,
    DiskFullError,
    DownloadCancelledError,
    DownloadInterruptedError,
    GatedModelError,
    HubOfflineError,
    ModelNotFoundError,
)
from app.catalog.installed import list_installed

REPO, FILE = "tiny-org/tiny-model-GGUF", "tiny-model-Q8_0.gguf"
DATA = b"GGUF" + random.Random(7).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def _serve(hub, **repo_options):
    hub.add_repo(REPO, {FILE: DATA, "README.md": b"# tiny\n"}, **repo_options)
    return hub


def _assert_nothing_installed(models_dir: Path) -> None:
    assert list_installed(models_dir) == []
    assert not (models_dir / "tiny-org--tiny-model-GGUF" / FILE).exists()


def _body_requests(hub):
    return [r for r in hub.requests("GET") if "/resolve/" in r.path or r.path.startswith("/cdn/")]


def test_download_verifies_sha256_and_installs(fake_hub, models_dir):
    _serve(fake_hub)
    updates: list[DownloadProgress] = []
    model = download_model_file(REPO, FILE, models_dir, progress=updates.append, timeout=2)
    assert model.path.read_bytes() == DATA and model.sha256 == SHA and model.size == len(DATA)
    assert model.commit == fake_hub.repos[REPO].commit
    assert [m.key for m in list_installed(models_dir)] == [f"{REPO}/{FILE}"]
    assert updates[-1].bytes_done == updates[-1].total == len(DATA)
    assert not partial_path(models_dir, SHA).exists()
    # The body was fetched by commit hash, not by "main".
    assert all(fake_hub.repos[REPO].commit in r.path for r in _body_requests(fake_hub))
    # A second call finds it installed and fetches no body.
    before = len(_body_requests(fake_hub))
    assert download_model_file(REPO, FILE, models_dir, timeout=2).path == model.path
    assert len(_body_requests(fake_hub)) == before


def test_download_via_cdn_redirect(fake_hub_with_cdn, models_dir):
    _serve(fake_hub_with_cdn)
    model = download_model_file(REPO, FILE, models_dir, timeout=2)
    assert model.path.read_bytes() == DATA
    assert [r.path for r in _body_requests(fake_hub_with_cdn)] == [f"/cdn/{SHA}"]


def test_sha256_from_repo_info_when_etag_is_not_lfs(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).etag_not_sha256 = True
    info = fetch_file_info(REPO, FILE, timeout=2)
    assert info.sha256 == SHA and info.size == len(DATA)
    assert fake_hub.requests("GET", f"/api/models/{REPO}/revision/")


def test_dropped_connection_then_second_call_fetches_only_the_remainder(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).drop_after_bytes = 100_000
    with pytest.raises(DownloadInterruptedError) as caught:
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    kept = partial_path(models_dir, SHA).stat().st_size
    assert 0 < kept < len(DATA) and caught.value.bytes_done == kept
    _assert_nothing_installed(models_dir)

    model = download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert model.path.read_bytes() == DATA
    last = _body_requests(fake_hub)[-1]
    assert last.range == f"bytes={kept}-" and last.status == 206
    assert last.body_bytes == len(DATA) - kept


def test_dropped_connection_is_resumed_within_one_call(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).drop_after_bytes = 50_000
    model = download_model_file(REPO, FILE, models_dir, retries=2, timeout=2)
    assert model.path.read_bytes() == DATA
    assert [r.range is not None for r in _body_requests(fake_hub)] == [False, True]


def test_server_ignoring_range_restarts_cleanly(fake_hub, models_dir):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.drop_after_bytes, faults.ignore_range = 100_000, True
    with pytest.raises(DownloadInterruptedError):
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert download_model_file(REPO, FILE, models_dir, timeout=2).path.read_bytes() == DATA


def test_same_size_corrupted_body_is_rejected_and_deleted(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).corrupt_body = True
    with pytest.raises(ChecksumMismatchError) as caught:
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert caught.value.expected == SHA
    _assert_nothing_installed(models_dir)
    assert not partial_path(models_dir, SHA).exists()


def test_missing_file_and_missing_repo_are_not_found(fake_hub, models_dir):
    _serve(fake_hub)
    with pytest.raises(ModelNotFoundError):
        download_model_file(REPO, "no-such-file.gguf", models_dir, timeout=2)
    with pytest.raises(ModelNotFoundError):
        download_model_file("nobody/nothing-GGUF", FILE, models_dir, timeout=2)
    _assert_nothing_installed(models_dir)


@pytest.mark.parametrize("status", [401, 403])
def test_gated_repo_asks_for_license_and_token(fake_hub, models_dir, status):
    _serve(fake_hub, gated=True, gated_status=status)
    with pytest.raises(GatedModelError, match="token"):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    _assert_nothing_installed(models_dir)
    model = download_model_file(REPO, FILE, models_dir, token=fake_hub.valid_token, timeout=2)
    assert model.path.read_bytes() == DATA


def test_gated_repo_uses_hf_token_env(fake_hub, models_dir, monkeypatch):
    _serve(fake_hub, gated=True)
    monkeypatch.setenv("HF_TOKEN", fake_hub.valid_token)
    assert download_model_file(REPO, FILE, models_dir, timeout=2).sha256 == SHA


def test_server_down_is_offline(fake_hub, models_dir):
    _serve(fake_hub)
    fake_hub.stop()
    started = time.monotonic()
    with pytest.raises(HubOfflineError):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert time.monotonic() - started < 5


def test_hf_hub_offline_makes_no_request(fake_hub, models_dir, monkeypatch):
    _serve(fake_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: we re-read it at call time
    with pytest.raises(HubOfflineError):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert fake_hub.log == []


def test_disk_space_precheck_refuses_before_fetching(fake_hub, models_dir, monkeypatch):
    _serve(fake_hub)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskFullError) as caught:
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert caught.value.free == 1000 and caught.value.needed > len(DATA)
    assert _body_requests(fake_hub) == []
    _assert_nothing_installed(models_dir)


def test_disk_full_while_writing_removes_partial(fake_hub, models_dir, monkeypatch):
    _serve(fake_hub)

    def no_space(handle, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "_write_chunk", no_space)
    with pytest.raises(DiskFullError):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert not partial_path(models_dir, SHA).exists()
    _assert_nothing_installed(models_dir)


def test_cancel_mid_download_then_resume(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).seconds_per_chunk = 0.01
    cancel = threading.Event()

    def cancel_after_first_bytes(update: DownloadProgress) -> None:
        if update.bytes_done > 0:
            cancel.set()

    with pytest.raises(DownloadCancelledError):
        download_model_file(REPO, FILE, models_dir, progress=cancel_after_first_bytes, cancel=cancel, timeout=2)
    kept = partial_path(models_dir, SHA).stat().st_size
    assert 0 < kept < len(DATA)
    _assert_nothing_installed(models_dir)

    fake_hub.faults(REPO, FILE).seconds_per_chunk = 0.0
    model = download_model_file(REPO, FILE, models_dir, timeout=2)
    assert model.path.read_bytes() == DATA
    # The cancelled request is logged when the server notices, possibly after the resumed one.
    resumed = [r for r in _body_requests(fake_hub) if r.range is not None]
    assert [(r.range, r.body_bytes) for r in resumed] == [(f"bytes={kept}-", len(DATA) - kept)]


def test_stale_partials_are_swept(models_dir):
    stale = partial_path(models_dir, "a" * 64)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    fresh = partial_path(models_dir, "b" * 64)
    fresh.write_bytes(b"y")
    old = time.time() - 30 * 86400
    import os

    os.utime(stale, (old, old))
    assert download.remove_stale_partials(models_dir) == [stale]
    assert fresh.exists() and not stale.exists()
