"""DownloadJob (the Qt thread around a download): cancel of a stalled download is prompt, and
every failure reaches the page as a kind and a plain sentence, never a raw exception's text."""

from __future__ import annotations

import random
import time

from app.workers import download_worker
from app.workers.download_worker import DownloadJob

REPO, FILE = "tiny-org/tiny-model-GGUF", "tiny-model-Q8_0.gguf"
DATA = b"GGUF" + random.Random(5).randbytes(200_000)


def _job(qtbot, models_dir, filename=FILE, timeout=10.0):
    job = DownloadJob(REPO, filename, models_dir, timeout=timeout, retries=0)
    failures: list[tuple[str, str]] = []
    cancels: list[tuple[object, object]] = []
    job.failed.connect(lambda kind, text: failures.append((kind, text)))
    job.cancelled.connect(lambda done, total: cancels.append((done, total)))
    return job, failures, cancels


def test_cancel_of_a_stalled_download_arrives_within_a_second(qtbot, fake_hub, models_dir):
    fake_hub.add_repo(REPO, {FILE: DATA}).files[FILE].faults.stall_after_bytes = 20_000
    job, failures, cancels = _job(qtbot, models_dir)
    job.start()
    qtbot.waitUntil(lambda: job.bytes_done > 0, timeout=5000)
    asked = time.monotonic()
    job.cancel()
    qtbot.waitUntil(lambda: bool(cancels), timeout=5000)
    assert time.monotonic() - asked < 1.0 and not failures
    assert job.wait(15)  # the reader thread is bounded by the timeout; the job's own thread ends at once


def test_hostile_file_name_fails_with_its_kind(qtbot, fake_hub, models_dir):
    fake_hub.add_repo(REPO, {FILE: DATA})
    job, failures, _ = _job(qtbot, models_dir, filename=f"{FILE}.manifest.json")
    job.start()
    qtbot.waitUntil(lambda: bool(failures), timeout=5000)
    assert failures[0][0] == download_worker.UNSAFE_NAME == "unsafe_name"
    assert fake_hub.log == []


def test_an_unexpected_exception_becomes_a_plain_sentence(qtbot, models_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("internal: tensor_info[0].ne at offset 12")

    monkeypatch.setattr(download_worker, "download_model_file", broken)
    job, failures, _ = _job(qtbot, models_dir)
    job.start()
    qtbot.waitUntil(lambda: bool(failures), timeout=5000)
    kind, text = failures[0]
    assert kind == download_worker.ERROR and "internal" not in text and FILE in text
