"""Hugging Face model folders in the app: import (checked, allow-listed copy) and Hub download
(allow-listed files of a sharded repo, resumable, pickles never fetched), against the tiny
checkpoints in tests/data/hf and the fake Hub. Qt-free."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.catalog.download import discard_partial_download, download_model_folder, list_partial_downloads
from app.catalog.errors import DownloadInterruptedError, HubProtocolError, NotAGgufFileError, UnsafePathError
from app.catalog.installed import (
    delete_installed,
    folder_size_and_digest,
    import_local_folder,
    list_installed,
    verify_installed,
)
from app.catalog.inventory import find_duplicate

DATA = Path(__file__).resolve().parents[1] / "data" / "hf"
REPO, FOLDER = "tiny-org/tiny-qwen2", "tiny-qwen2"
GIT_FILES = frozenset(
    {"config.json", "generation_config.json", "tokenizer_config.json", "model.safetensors.index.json"}
)


def _qwen2_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (DATA / "qwen2").iterdir() if p.name != "reference.npz"}


def _folder(tmp_path: Path, name: str = "qwen2") -> Path:
    dest = tmp_path / "src" / name
    shutil.copytree(DATA / name, dest, ignore=shutil.ignore_patterns("reference.npz"))
    return dest


# ---- import ----------------------------------------------------------------------------------


def test_import_copies_only_the_allow_listed_files_and_lists_the_folder(tmp_path, models_dir):
    source = _folder(tmp_path)
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04 not for us")  # a pickle beside the safetensors
    (source / "README.md").write_text("hello")
    progress: list[tuple[int, int]] = []
    model = import_local_folder(models_dir, source, progress=lambda d, t: progress.append((d, t)))
    assert model.is_folder and model.path.is_dir() and model.source == "import-copy"
    copied = sorted(p.name for p in model.path.iterdir())
    assert copied == sorted(n for n in _qwen2_files())
    assert "pytorch_model.bin" not in copied and "README.md" not in copied
    assert progress[-1][0] == progress[-1][1] == model.size
    assert [m.key for m in list_installed(models_dir)] == [f"local/{model.filename}"]
    assert verify_installed(model)
    # The same content again is a duplicate (size, then the folder digest), not a second copy.
    size, digest = folder_size_and_digest(source)
    assert (size, digest) == (model.size, model.sha256)
    assert find_duplicate(list_installed(models_dir), size, lambda: digest) == model
    # The runtime reads the copy (the engine loads this very folder).
    from tmac_core import inspect_model

    assert inspect_model(model.path).arch == "qwen2"
    delete_installed(models_dir, model.key)
    assert list_installed(models_dir) == [] and not model.path.exists()


def test_a_referenced_folder_is_hashed_not_copied_and_never_deleted(tmp_path, models_dir):
    source = _folder(tmp_path, "llama")
    model = import_local_folder(models_dir, source, copy=False)
    assert model.path == source.resolve() and model.source == "import-reference"
    delete_installed(models_dir, model.key)
    assert (source / "model.safetensors").exists()


def test_a_folder_with_only_a_pickle_is_refused_before_anything_is_copied(tmp_path, models_dir):
    source = tmp_path / "src" / "pickled"
    source.mkdir(parents=True)
    shutil.copy(DATA / "llama" / "config.json", source)
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04 pickle")
    with pytest.raises(NotAGgufFileError, match="pickle"):
        import_local_folder(models_dir, source)
    assert list_installed(models_dir) == [] and not (models_dir / "local").exists()


def test_a_shard_outside_the_folder_is_refused(tmp_path, models_dir):
    source = _folder(tmp_path)
    index = json.loads((source / "model.safetensors.index.json").read_text())
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(source / "model-00002-of-00002.safetensors", outside)
    index["weight_map"] = {
        k: ("../../elsewhere.safetensors" if v.endswith("00002.safetensors") else v)
        for k, v in index["weight_map"].items()
    }
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(NotAGgufFileError, match="outside"):
        import_local_folder(models_dir, source)
    # A shard linked from outside under an allowed name is refused by the copy too.
    (source / "model-00002-of-00002.safetensors").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        from app.catalog.installed import folder_files

        folder_files(source)
    assert list_installed(models_dir) == []


# ---- download --------------------------------------------------------------------------------


def _serve(hub, extra: dict[str, bytes] | None = None):
    files = {**_qwen2_files(), "README.md": b"# tiny\n", "pytorch_model.bin": b"\x80\x04pickle", **(extra or {})}
    return hub.add_repo(REPO, files, git_files=GIT_FILES | {"README.md"})


def _bodies(hub, name: str = ""):
    return [r for r in hub.requests("GET") if "/resolve/" in r.path and name in r.path]


def test_folder_download_fetches_exactly_the_allow_listed_files_of_a_sharded_repo(fake_hub, models_dir):
    _serve(fake_hub)
    updates = []
    model = download_model_folder(REPO, FOLDER, models_dir, progress=updates.append, timeout=2)
    expected = _qwen2_files()
    assert sorted(model.files) == sorted(expected)
    for name, data in expected.items():
        assert (model.path / name).read_bytes() == data
    fetched = {r.path.rsplit("/", 1)[1] for r in _bodies(fake_hub)}
    assert fetched == set(expected)  # no README, no pickle
    assert not _bodies(fake_hub, "pytorch_model.bin")
    assert all(fake_hub.repos[REPO].commit in r.path for r in _bodies(fake_hub))
    assert updates[-1].bytes_done == updates[-1].total == model.size
    assert [m.key for m in list_installed(models_dir)] == [f"{REPO}/{FOLDER}"]
    assert verify_installed(model)
    before = len(_bodies(fake_hub))
    assert download_model_folder(REPO, FOLDER, models_dir, timeout=2).path == model.path
    assert len(_bodies(fake_hub)) == before  # installed: nothing fetched again


def test_folder_download_resumes_a_dropped_shard_where_it_stopped(fake_hub, models_dir):
    shard = "model-00002-of-00002.safetensors"
    faults = _serve(fake_hub).files[shard].faults
    faults.drop_after_bytes, faults.drops_remaining = 50_000, None
    with pytest.raises(DownloadInterruptedError):
        download_model_folder(REPO, FOLDER, models_dir, retries=0, timeout=2)
    assert list_installed(models_dir) == []
    # The card sees it as a paused download of the folder (app.workers.download_worker.pending_downloads).
    [partial] = list_partial_downloads(models_dir)
    assert (partial.repo_id, partial.filename, partial.size) == (REPO, FOLDER, sum(map(len, _qwen2_files().values())))
    assert 50_000 < partial.bytes_done < partial.size
    first = len(_bodies(fake_hub, "00001"))
    faults.drop_after_bytes = None
    model = download_model_folder(REPO, FOLDER, models_dir, timeout=2)
    assert (model.path / shard).read_bytes() == _qwen2_files()[shard]
    assert len(_bodies(fake_hub, "00001")) == first  # the finished shard was kept, not fetched again
    assert _bodies(fake_hub, shard)[-1].range == "bytes=50000-"
    assert list_partial_downloads(models_dir) == []


def test_a_paused_folder_download_can_be_discarded(fake_hub, models_dir):
    faults = _serve(fake_hub).files["model-00001-of-00002.safetensors"].faults
    faults.drop_after_bytes, faults.drops_remaining = 30_000, None
    with pytest.raises(DownloadInterruptedError):
        download_model_folder(REPO, FOLDER, models_dir, retries=0, timeout=2)
    [partial] = list_partial_downloads(models_dir)
    assert partial.path.is_dir() and partial.path.name.endswith(".incoming")
    discard_partial_download(models_dir, partial.sha256)
    assert list_partial_downloads(models_dir) == [] and not partial.path.exists()


def test_a_repo_with_pickle_weights_only_is_refused_without_fetching_them(fake_hub, models_dir):
    files = {n: d for n, d in _qwen2_files().items() if not n.endswith(".safetensors") and "index" not in n}
    fake_hub.add_repo(REPO, {**files, "pytorch_model.bin": b"\x80\x04pickle"}, git_files=GIT_FILES)
    with pytest.raises(HubProtocolError, match="pickle"):
        download_model_folder(REPO, FOLDER, models_dir, timeout=2)
    assert not _bodies(fake_hub) and list_installed(models_dir) == []


def test_a_corrupted_git_file_is_refused(fake_hub, models_dir):
    _serve(fake_hub).files["config.json"].faults.corrupt_body = True
    from app.catalog.errors import ChecksumMismatchError

    with pytest.raises(ChecksumMismatchError):
        download_model_folder(REPO, FOLDER, models_dir, timeout=2)
    assert list_installed(models_dir) == []


# ---- a folder manifest is untrusted input ------------------------------------------------------


def _installed_copy(tmp_path, models_dir):
    model = import_local_folder(models_dir, _folder(tmp_path, "llama"))
    return model, json.loads(model.manifest_path.read_text())


@pytest.mark.parametrize(
    "tamper",
    [
        "pickle-listed",
        "not-adding-up",
        "file-is-a-link",
        "file-missing",
        "folder-is-a-link",
        "path-in-a-name",
    ],
)
def test_a_tampered_folder_is_not_listed(tmp_path, models_dir, tamper):
    model, manifest = _installed_copy(tmp_path, models_dir)
    files = manifest["files"]
    if tamper == "pickle-listed":
        (model.path / "pytorch_model.bin").write_bytes(b"x")
        files["pytorch_model.bin"] = {"size": 1, "sha256": "0" * 64}
    elif tamper == "not-adding-up":
        manifest["size"] += 1
    elif tamper == "file-is-a-link":
        target = tmp_path / "elsewhere.json"
        target.write_bytes((model.path / "config.json").read_bytes())
        (model.path / "config.json").unlink()
        (model.path / "config.json").symlink_to(target)
    elif tamper == "file-missing":
        (model.path / "tokenizer.json").unlink()
    elif tamper == "folder-is-a-link":
        moved = tmp_path / "moved"
        shutil.move(model.path, moved)
        model.path.symlink_to(moved, target_is_directory=True)
    elif tamper == "path-in-a-name":
        files["../config.json"] = files.pop("config.json")
    model.manifest_path.write_text(json.dumps(manifest))
    assert list_installed(models_dir) == []


def test_deleting_a_folder_removes_only_its_listed_files(tmp_path, models_dir):
    model, _ = _installed_copy(tmp_path, models_dir)
    (model.path / "notes.txt").write_text("the user's own")
    delete_installed(models_dir, model.key)
    assert list_installed(models_dir) == []
    assert sorted(p.name for p in model.path.iterdir()) == ["notes.txt"]
