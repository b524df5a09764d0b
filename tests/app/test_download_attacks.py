"""Downloads under attack: hostile names and manifests, links and special files in the models
folder, a misbehaving Hub (Range ignored or lied about, empty files, stalls, odd redirects,
raw client errors) and two app windows downloading one file. Everything against the fake Hub.

The promise checked throughout: nothing outside the models folder is written or deleted, every
failure is one of app.catalog.errors (with a plain message), and nothing blocks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.catalog import download
from app.catalog.download import (
    discard_partial_download,
    download_model_file,
    list_partial_downloads,
    partial_path,
    remove_stale_partials,
)
from app.catalog.errors import (
    ChecksumMismatchError,
    DownloadCancelledError,
    DownloadInProgressError,
    DownloadInterruptedError,
    DownloadStalledError,
    HubProtocolError,
    InstalledModelNotFoundError,
    ModelFileError,
    UnsafeFileNameError,
    UnsafePathError,
)
from app.catalog.installed import delete_installed, list_installed

REPO, FILE = "tiny-org/tiny-model-GGUF", "tiny-model-Q8_0.gguf"
FOLDER = "tiny-org--tiny-model-GGUF"
DATA = b"GGUF" + random.Random(11).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
ROOT = Path(__file__).resolve().parents[2]


def _serve(hub, files=None):
    hub.add_repo(REPO, files if files is not None else {FILE: DATA})
    return hub


def _body_requests(hub):
    return [r for r in hub.requests("GET") if "/resolve/" in r.path or r.path.startswith("/cdn/")]


def _outside(tmp_path: Path) -> Path:
    """A folder beside the models folder holding a file the download code must never touch."""
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    (folder / "victim.gguf").write_bytes(b"precious user data")
    return folder


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim.gguf"]
    assert (outside / "victim.gguf").read_bytes() == b"precious user data"


def _run_bounded(call, seconds: float):
    """Run `call` on a thread; fail the test (instead of hanging it) if it blocks."""
    outcome: list = []

    def run():
        try:
            outcome.append(("ok", call()))
        except BaseException as error:  # noqa: BLE001 - inspected by the test
            outcome.append(("error", error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    return outcome[0]


# ---- 1. names from the Hub ---------------------------------------------------------------------

HOSTILE_FILE_NAMES = [
    "../evil.gguf",
    "..",
    ".",
    "/etc/passwd",
    "sub/model.gguf",
    "sub\\model.gguf",
    "C:\\Windows\\evil.gguf",
    "evil\0.gguf",
    "evil\n.gguf",
    ".hidden.gguf",
    "",
    "a" * 300 + ".gguf",
    "model..gguf",
    "model.gguf.",
    "CON",
    "con.gguf",
    "NUL.txt",
    "LPT1.gguf",
    "com9.gguf",
    f"{FILE}.manifest.json",
    "x.MANIFEST.JSON",
    "model.partial",
    "model.incomplete",
    "model.lock",
    "model.importing",
]


@pytest.mark.parametrize("name", HOSTILE_FILE_NAMES)
def test_hostile_file_names_are_refused_before_any_request(fake_hub, models_dir, tmp_path, name):
    _serve(fake_hub, {FILE: DATA, name: DATA} if name and "\0" not in name else None)
    outside = _outside(tmp_path)
    with pytest.raises(UnsafeFileNameError) as caught:
        download_model_file(REPO, name, models_dir, timeout=2)
    assert caught.value.kind == "unsafe_name" and "Refusing" in str(caught.value)
    assert fake_hub.log == []
    assert list(models_dir.iterdir()) == []
    _untouched(outside)


@pytest.mark.parametrize("repo_id", ["../x", "a/b/c", "a/..", "./a", "CON/x", "a/x.manifest.json", "", "noslash"])
def test_hostile_repo_ids_are_refused_before_any_request(fake_hub, models_dir, repo_id):
    with pytest.raises(UnsafeFileNameError):
        download_model_file(repo_id, FILE, models_dir, timeout=2)
    assert fake_hub.log == [] and list(models_dir.iterdir()) == []


# ---- 1. links in the models folder -------------------------------------------------------------


def test_linked_repo_folder_is_not_written_through(fake_hub, models_dir, tmp_path):
    _serve(fake_hub)
    outside = _outside(tmp_path)
    (models_dir / FOLDER).symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    _untouched(outside)


def test_linked_partial_folder_is_not_written_through(fake_hub, models_dir, tmp_path):
    _serve(fake_hub)
    outside = _outside(tmp_path)
    (models_dir / ".partial").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    _untouched(outside)
    assert list_partial_downloads(models_dir) == []
    assert remove_stale_partials(models_dir, older_than_s=0) == []
    with pytest.raises(UnsafePathError):
        discard_partial_download(models_dir, SHA)
    _untouched(outside)


@pytest.mark.parametrize("which", ["partial", "sidecar", "final", "manifest"])
def test_links_at_our_file_paths_are_replaced_never_followed(fake_hub, models_dir, tmp_path, which):
    _serve(fake_hub)
    outside = _outside(tmp_path)
    part = partial_path(models_dir, SHA)
    target = {
        "partial": part,
        "sidecar": part.with_suffix(".json"),
        "final": models_dir / FOLDER / FILE,
        "manifest": models_dir / FOLDER / f"{FILE}.manifest.json",
    }[which]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside / "victim.gguf")
    model = download_model_file(REPO, FILE, models_dir, timeout=2)
    assert model.path.read_bytes() == DATA and not model.path.is_symlink()
    _untouched(outside)


def test_dangling_link_at_partial_path_does_not_create_its_target(fake_hub, models_dir, tmp_path):
    _serve(fake_hub)
    part = partial_path(models_dir, SHA)
    part.parent.mkdir(parents=True)
    part.symlink_to(tmp_path / "created-outside.gguf")
    assert download_model_file(REPO, FILE, models_dir, timeout=2).path.read_bytes() == DATA
    assert not (tmp_path / "created-outside.gguf").exists()


# ---- 1. manifests are untrusted ----------------------------------------------------------------


def _victim_manifest(outside: Path, **fields) -> dict:
    victim = outside / "victim.gguf"
    base = {
        "file": str(victim),
        "size": victim.stat().st_size,
        "sha256": hashlib.sha256(victim.read_bytes()).hexdigest(),
        "source": "hub",
        "repo_id": None,
        "commit": None,
        "installed_at": 0.0,
    }
    base.update(fields)
    return base


HOSTILE_MANIFESTS = {
    "absolute path, hub source": lambda o: _victim_manifest(o),
    "absolute path, copied import": lambda o: _victim_manifest(o, source="import-copy"),
    "relative path up and out": lambda o: _victim_manifest(o, file="../../outside/victim.gguf"),
    "names another file in the folder": lambda o: _victim_manifest(o, file="other.gguf"),
    "unknown source": lambda o: _victim_manifest(o, source="anything"),
    "file not a string": lambda o: _victim_manifest(o, file=["victim.gguf"]),
    "size a string": lambda o: _victim_manifest(o, size="18"),
    "size a bool": lambda o: _victim_manifest(o, size=True),
    "sha256 not hex": lambda o: _victim_manifest(o, sha256="../" * 20),
    "repo id from another folder": lambda o: _victim_manifest(o, file="victim.gguf", repo_id="../outside"),
    "not an object": lambda o: [1, 2, 3],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
def test_manifest_naming_a_file_outside_is_ignored_and_never_deleted_through(models_dir, tmp_path, case):
    outside = _outside(tmp_path)
    local = models_dir / "local"
    local.mkdir()
    (local / "victim.gguf.manifest.json").write_text(json.dumps(HOSTILE_MANIFESTS[case](outside)))
    (local / "other.gguf").write_bytes(b"precious user data")  # same size and hash as the victim
    keys = [m.key for m in list_installed(models_dir)]
    assert keys == []
    for key in ["local/victim.gguf", "local/other.gguf"]:
        with pytest.raises(InstalledModelNotFoundError):
            delete_installed(models_dir, key)
    _untouched(outside)
    assert (local / "other.gguf").exists()


def test_manifest_beside_a_link_to_outside_is_ignored(models_dir, tmp_path):
    outside = _outside(tmp_path)
    local = models_dir / "local"
    local.mkdir()
    (local / "victim.gguf").symlink_to(outside / "victim.gguf")
    (local / "victim.gguf.manifest.json").write_text(json.dumps(_victim_manifest(outside, file="victim.gguf")))
    assert list_installed(models_dir) == []
    _untouched(outside)


def test_a_referenced_import_may_point_outside_but_is_never_deleted(models_dir, tmp_path):
    outside = _outside(tmp_path)
    local = models_dir / "local"
    local.mkdir()
    manifest = _victim_manifest(outside, source="import-reference")
    (local / "victim.gguf.manifest.json").write_text(json.dumps(manifest))
    [model] = list_installed(models_dir)
    delete_installed(models_dir, model.key)
    assert list_installed(models_dir) == []
    _untouched(outside)


def test_linked_model_folder_is_not_listed_nor_deleted_through(fake_hub, models_dir, tmp_path):
    _serve(fake_hub)
    model = download_model_file(REPO, FILE, models_dir, timeout=2)
    outside = tmp_path / "elsewhere"
    (models_dir / FOLDER).rename(outside)
    (models_dir / FOLDER).symlink_to(outside, target_is_directory=True)
    assert list_installed(models_dir) == []
    with pytest.raises(InstalledModelNotFoundError):
        delete_installed(models_dir, model.key)
    assert (outside / FILE).read_bytes() == DATA


def test_fifo_manifest_does_not_block_listing(models_dir):
    local = models_dir / "local"
    local.mkdir()
    os.mkfifo(local / "piped.gguf.manifest.json")
    kind, value = _run_bounded(lambda: list_installed(models_dir), 3)
    assert (kind, value) == ("ok", [])


# ---- 2. a misbehaving Hub ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["206-from-0", "206-elsewhere"])
def test_206_that_does_not_continue_our_file_restarts_cleanly(fake_hub, models_dir, mode):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.drop_after_bytes, faults.range_mode = 100_000, mode
    with pytest.raises(DownloadInterruptedError):
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert 0 < partial_path(models_dir, SHA).stat().st_size < len(DATA)
    model = download_model_file(REPO, FILE, models_dir, retries=2, timeout=2)
    assert model.path.read_bytes() == DATA


def test_206_that_lies_about_its_start_never_installs_a_corrupt_file(fake_hub, models_dir):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.drop_after_bytes, faults.range_mode = 100_000, "206-lying"
    with pytest.raises(DownloadInterruptedError):
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    with pytest.raises((ChecksumMismatchError, HubProtocolError)):
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert list_installed(models_dir) == []
    faults.range_mode = "honor"
    assert download_model_file(REPO, FILE, models_dir, retries=1, timeout=2).path.read_bytes() == DATA


def test_empty_file_on_the_hub_is_refused(fake_hub, models_dir):
    _serve(fake_hub, {FILE: b""})
    with pytest.raises(HubProtocolError, match="empty"):
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert list_installed(models_dir) == [] and _body_requests(fake_hub) == []


def test_body_shorter_than_announced_is_detected_and_resumed(fake_hub, models_dir):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.short_by = 1000
    with pytest.raises(DownloadInterruptedError) as caught:
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert caught.value.bytes_done == len(DATA) - 1000 and list_installed(models_dir) == []
    faults.short_by = 0
    assert download_model_file(REPO, FILE, models_dir, retries=0, timeout=2).path.read_bytes() == DATA


def _cancel_after(cancel: threading.Event, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, cancel.set)
    timer.start()
    return timer


def test_stalled_body_is_cancelled_within_a_second(fake_hub, models_dir):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.stall_after_bytes = 50_000
    cancel = threading.Event()
    timer = _cancel_after(cancel, 0.5)
    started = time.monotonic()
    with pytest.raises(DownloadCancelledError) as caught:
        download_model_file(REPO, FILE, models_dir, cancel=cancel, timeout=10)
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 1.5, f"cancel took {elapsed - 0.5:.2f} s after it was asked"
    assert caught.value.bytes_done >= 50_000


def test_stalled_metadata_is_cancelled_within_a_second(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).stall_metadata_s = 30
    cancel = threading.Event()
    timer = _cancel_after(cancel, 0.5)
    started = time.monotonic()
    with pytest.raises(DownloadCancelledError):
        download_model_file(REPO, FILE, models_dir, cancel=cancel, timeout=10)
    timer.join()
    assert time.monotonic() - started < 1.5


def test_stalled_body_without_cancel_ends_as_stalled(fake_hub, models_dir):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.stall_after_bytes = 50_000
    started = time.monotonic()
    with pytest.raises(DownloadStalledError) as caught:
        download_model_file(REPO, FILE, models_dir, retries=1, timeout=1)
    assert time.monotonic() - started < 5  # (retries + 1) × timeout, plus the transfer
    assert caught.value.kind == "stalled" and caught.value.bytes_done >= 50_000
    assert partial_path(models_dir, SHA).stat().st_size == caught.value.bytes_done  # kept for resuming


def test_stalled_metadata_without_cancel_ends_as_stalled(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).stall_metadata_s = 30
    started = time.monotonic()
    with pytest.raises(DownloadStalledError):
        download_model_file(REPO, FILE, models_dir, timeout=1)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.gguf", "self"])
def test_odd_redirects_are_protocol_errors(fake_hub, models_dir, location):
    _serve(fake_hub).faults(REPO, FILE).redirect_location = location
    with pytest.raises(HubProtocolError):
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert list_installed(models_dir) == []


def _raw_errors():
    import httpx2

    request = httpx2.Request("GET", "http://127.0.0.1/x")
    return [
        httpx2.RemoteProtocolError("boom-internal: peer closed", request=request),
        httpx2.DecodingError("boom-internal: bad gzip", request=request),
        httpx2.ReadError("boom-internal: reset", request=request),
        httpx2.TooManyRedirects("boom-internal: loop", request=request),
        httpx2.UnsupportedProtocol("boom-internal: gopher"),
        httpx2.InvalidURL("boom-internal: url"),
        ValueError("boom-internal: invalid literal for int()"),
        KeyError("boom-internal"),
        OSError(errno.EIO, os.strerror(errno.EIO)),  # the OS's own words are plain; the class name is not
        RuntimeError("boom-internal: anything else"),
    ]


@pytest.mark.parametrize("error", _raw_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("stage", ["metadata", "body"])
def test_raw_client_errors_become_typed_errors_with_plain_text(fake_hub, models_dir, monkeypatch, error, stage):
    _serve(fake_hub)

    def fail(*args, **kwargs):
        raise error

    if stage == "metadata":
        monkeypatch.setattr(download, "get_hf_file_metadata", fail)
    else:
        monkeypatch.setattr(download, "get_session", lambda: type("S", (), {"stream": fail})())
    with pytest.raises(ModelFileError) as caught:
        download_model_file(REPO, FILE, models_dir, retries=0, timeout=2)
    assert "boom-internal" not in str(caught.value) and type(error).__name__ not in str(caught.value)


# ---- 3. leftovers in .partial ------------------------------------------------------------------


def _make_leftover(path: Path, kind: str, tmp_path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "link to a folder":
        (tmp_path / "a-folder").mkdir()
        path.symlink_to(tmp_path / "a-folder", target_is_directory=True)
    elif kind == "empty folder":
        path.mkdir()
    elif kind == "folder with content":
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(path))
        except OSError:  # path too long for AF_UNIX on this machine: a FIFO stands in
            os.mkfifo(path)
        finally:
            sock.close()


LEFTOVERS = ["dangling link", "link to a folder", "empty folder", "folder with content", "fifo", "socket"]


@pytest.mark.parametrize("kind", LEFTOVERS)
@pytest.mark.parametrize("where", ["partial", "sidecar", "lock"])
def test_leftovers_in_partial_never_block_nor_raise_raw_errors(fake_hub, models_dir, tmp_path, kind, where):
    _serve(fake_hub)
    part = partial_path(models_dir, SHA)
    _make_leftover(
        {"partial": part, "sidecar": part.with_suffix(".json"), "lock": part.with_suffix(".lock")}[where],
        kind,
        tmp_path,
    )
    assert _run_bounded(lambda: list_partial_downloads(models_dir), 3)[0] == "ok"
    outcome, value = _run_bounded(lambda: download_model_file(REPO, FILE, models_dir, timeout=2), 10)
    if kind == "folder with content":
        assert outcome == "error" and isinstance(value, UnsafePathError), value
        assert "folder" in str(value)
    else:
        assert outcome == "ok", value
        assert value.path.read_bytes() == DATA
    assert _run_bounded(lambda: remove_stale_partials(models_dir, older_than_s=0), 3)[0] == "ok"


@pytest.mark.parametrize("kind", LEFTOVERS)
def test_discarding_a_partial_with_a_leftover_is_clean_or_typed(models_dir, tmp_path, kind):
    _make_leftover(partial_path(models_dir, SHA), kind, tmp_path)
    outcome, value = _run_bounded(lambda: discard_partial_download(models_dir, SHA), 3)
    assert outcome == "ok" or isinstance(value, UnsafePathError), value
    assert (tmp_path / "a-folder").exists() or kind != "link to a folder"


def test_partial_folder_that_is_a_file_or_fifo_is_typed(fake_hub, models_dir):
    _serve(fake_hub)
    os.mkfifo(models_dir / ".partial")
    outcome, value = _run_bounded(lambda: download_model_file(REPO, FILE, models_dir, timeout=2), 10)
    assert outcome == "error" and isinstance(value, UnsafePathError)


# ---- 4. two app windows ------------------------------------------------------------------------

_OTHER_WINDOW = """
import sys, threading
from pathlib import Path
from app.catalog.download import download_model_file
print("started", flush=True)
download_model_file(sys.argv[1], sys.argv[2], Path(sys.argv[3]), timeout=30,
                    progress=lambda p: print("progress", p.bytes_done, flush=True))
print("finished", flush=True)
"""


def test_second_app_window_is_told_and_a_killed_one_leaves_no_stale_lock(fake_hub, models_dir):
    faults = _serve(fake_hub).faults(REPO, FILE)
    faults.seconds_per_chunk = 0.05  # ~1 s for the whole file: long enough to collide
    env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint, "PYTHONPATH": str(ROOT)}
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_WINDOW, REPO, FILE, str(models_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert other.stdout is not None
        for line in other.stdout:
            if line.startswith("progress"):
                break
        else:
            pytest.fail(f"the other window never progressed: {other.stderr.read() if other.stderr else ''}")
        with pytest.raises(DownloadInProgressError, match="another") as caught:
            download_model_file(REPO, FILE, models_dir, timeout=2)
        assert caught.value.other_process and caught.value.kind == "in_progress"
        with pytest.raises(DownloadInProgressError):
            discard_partial_download(models_dir, SHA)
        busy = sorted(p.name for p in (models_dir / ".partial").iterdir())
        assert remove_stale_partials(models_dir, older_than_s=0) == []  # its partial, note and locks stay
        assert sorted(p.name for p in (models_dir / ".partial").iterdir()) == busy
        other.kill()  # a crash: the OS drops its lock, nothing stale stays behind
        other.wait(10)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(10)
        if other.stdout:
            other.stdout.close()
        if other.stderr:
            other.stderr.close()
    kept = partial_path(models_dir, SHA).stat().st_size
    faults.seconds_per_chunk = 0.0
    model = download_model_file(REPO, FILE, models_dir, timeout=2)
    assert model.path.read_bytes() == DATA
    # resumed, not restarted (the killed window's request is logged whenever the server notices)
    assert kept > 0 and f"bytes={kept}-" in [r.range for r in _body_requests(fake_hub)]


def test_two_downloads_of_one_file_in_one_window(fake_hub, models_dir):
    _serve(fake_hub).faults(REPO, FILE).seconds_per_chunk = 0.02
    started = threading.Event()
    results: list = []

    def first():
        try:
            results.append(download_model_file(REPO, FILE, models_dir, progress=lambda p: started.set(), timeout=5))
        except BaseException as error:  # noqa: BLE001
            results.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(5)
    with pytest.raises(DownloadInProgressError) as caught:
        download_model_file(REPO, FILE, models_dir, timeout=2)
    assert not caught.value.other_process
    thread.join(10)
    assert results[0].path.read_bytes() == DATA
