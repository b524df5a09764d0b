"""Curated catalog validation and estimates; installed-model listing, local import and delete."""

from __future__ import annotations

import copy
import json
import shutil
import struct
from collections import namedtuple

import pytest

from app.catalog.catalog import (
    DEFAULT_BANDWIDTH_BYTES_PER_S,
    default_catalog_path,
    estimate_variant,
    find_model,
    load_catalog,
    parse_catalog,
    predict_decode_tokens_per_s,
)
from app.catalog.errors import (
    CatalogError,
    DiskFullError,
    InstalledModelNotFoundError,
    NotAGgufFileError,
    UnsafePathError,
)
from app.catalog.installed import delete_installed, find_installed, import_local_gguf, list_installed, verify_installed
from tests.runtime.conftest import tiny_llama
from tmac_core import inspect_model

EXPECTED_IDS = {
    "smollm2-135m-instruct",
    "smollm2-360m-instruct",
    "smollm2-1.7b-instruct",
    "qwen2.5-0.5b-instruct",
    "qwen2.5-1.5b-instruct",
    "llama-3.2-1b-instruct",
    "llama-3.2-3b-instruct",
    "tinyllama-1.1b-chat",
    # native low-bit models: one variant each (tests/app/test_native_models_page.py)
    "bitnet-b1.58-2b-4t",
    "falcon3-1b-instruct-1.58bit",
    "llama-3-8b-instruct-efficientqat-w2g128",
    "llama-3-8b-instruct-efficientqat-w4g128",
}


def gguf_bytes(version: int = 3, body: bytes = b"\0" * 64) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, 1, 2) + body


def model_bytes(version: int = 3) -> bytes:
    """A small valid model: imports run the runtime's full check."""
    writer = tiny_llama()
    writer.version = version
    return writer.build()[0]


def test_shipped_catalog_is_valid_and_complete():
    models = load_catalog()
    assert {m.id for m in models} == EXPECTED_IDS
    for model in models:
        if model.native is not None:
            continue  # one variant each, checked with the native models
        assert [v.label for v in model.variants()] == [f"as in the file ({model.source_quant})", "4-bit", "2-bit"]
        assert model.filename.endswith(".gguf") and model.size_bytes > model.parameters // 2
        assert model.gated == model.id.startswith("llama-3.2")
    assert find_model(models, "tinyllama-1.1b-chat").config.tie_embeddings is False


def test_estimates_are_sane():
    models = [m for m in load_catalog() if m.native is None]  # native models: one variant each
    by_size = sorted(models, key=lambda m: m.parameters)
    for model in models:
        exact, four, two = (estimate_variant(v) for v in model.variants())
        # the codes alone are a floor (scales only add); the 8-bit source file is a ceiling
        assert model.parameters * 2 / 8 < two.packed_bytes < four.packed_bytes < model.size_bytes
        # as in the file: the Q8_0 file's own 8-bit codes and fp16 scales, about its size, 8.5+ bits/weight
        assert four.packed_bytes < exact.packed_bytes and 8.4 < exact.bits_per_weight < 9.6
        assert exact.decode_tokens_per_s < four.decode_tokens_per_s
        assert four.packed_bytes > model.parameters * 4 / 8
        assert two.decode_tokens_per_s > four.decode_tokens_per_s > 0
        assert four.ram_bytes > four.packed_bytes + four.kv_cache_bytes
    smallest, largest = (estimate_variant(m.variants()[0]) for m in (by_size[0], by_size[-1]))
    assert smallest.packed_bytes < largest.packed_bytes
    smol = find_model(models, "smollm2-135m-instruct")
    _, four, two = (estimate_variant(v) for v in smol.variants())
    # The embedded file: 106M Q4_1 weights keep their 32-wide blocks with int8 sub-scales under fp16
    # super-scales per 192 or 256 (≈ 4.66 bits/weight = 62 MB), and the 28M-weight Q8_0 output table
    # runs at 6 bits with fp16 scale/zero per 64 (6.5 bits/weight = 23 MB): 85 MB, 5.04 bits/weight.
    assert 80e6 < four.packed_bytes < 90e6
    # The 2-bit preset keeps the 28M-weight embedding table, attn_v and the first and last layers at 4 bits:
    # ≈ 3.1 bits/weight = 52 MB, where all-2-bit would be 42 MB and all-4-bit 76 MB.
    assert 45e6 < two.packed_bytes < 60e6


def test_speed_prediction_is_linear_in_bandwidth():
    model = find_model(load_catalog(), "qwen2.5-0.5b-instruct")
    slow = predict_decode_tokens_per_s(model, 2, 10e9)
    assert predict_decode_tokens_per_s(model, 2, 20e9) == pytest.approx(2 * slow)
    with pytest.raises(ValueError):
        predict_decode_tokens_per_s(model, 2, 0)
    assert estimate_variant(model.variants()[0], bandwidth_bytes_per_s=DEFAULT_BANDWIDTH_BYTES_PER_S).context == 2048


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.update(catalog_version=2),
        lambda d: d["models"][0].pop("repo_id"),
        lambda d: d["models"][0].update(bits=[3]),
        lambda d: d["models"][0].update(filename="../evil.gguf"),
        lambda d: d["models"][0].update(parameters=True),
        lambda d: d["models"][1].update(id=d["models"][0]["id"]),
        lambda d: d["models"][0].update(parameters=1000),
    ],
)
def test_invalid_catalog_is_rejected(breakage):
    document = json.loads(default_catalog_path().read_text())
    broken = copy.deepcopy(document)
    breakage(broken)
    with pytest.raises(CatalogError):
        parse_catalog(broken)


def test_unreadable_catalog(tmp_path):
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(CatalogError):
        load_catalog(tmp_path / "c.json")


# ---- installed models ---------------------------------------------------------------------------


def test_import_copy_lists_verifies_and_deletes(tmp_path, models_dir):
    source = tmp_path / "my model.gguf"
    source.write_bytes(model_bytes())
    done = []
    model = import_local_gguf(models_dir, source, progress=lambda d, t: done.append((d, t)))
    assert model.source == "import-copy" and model.path.parent == models_dir / "local"
    assert model.path.read_bytes() == source.read_bytes() and done[-1] == (model.size, model.size)
    assert [m.key for m in list_installed(models_dir)] == ["local/my_model.gguf"]
    assert verify_installed(model)
    second = import_local_gguf(models_dir, source)  # same name again → a distinct entry
    assert second.key == "local/my_model-2.gguf"
    delete_installed(models_dir, model.key)
    assert not model.path.exists() and [m.key for m in list_installed(models_dir)] == [second.key]
    with pytest.raises(InstalledModelNotFoundError):
        delete_installed(models_dir, model.key)


def test_import_reference_never_deletes_the_original(tmp_path, models_dir):
    source = tmp_path / "elsewhere.gguf"
    source.write_bytes(model_bytes(version=2))
    model = import_local_gguf(models_dir, source, copy=False)
    assert model.source == "import-reference" and model.path == source.resolve()
    assert find_installed(models_dir, "local/elsewhere.gguf").path == source.resolve()
    delete_installed(models_dir, model.key)
    assert source.exists() and list_installed(models_dir) == []


# the reasons are the runtime reader's (tmac_core.loading.gguf), the one GGUF parser
@pytest.mark.parametrize(
    "content,reason",
    [
        (b"PK\x03\x04" + b"\0" * 40, "not a GGUF file"),
        (gguf_bytes(version=1), "version 1"),
        (gguf_bytes(version=99), "version 99"),
        (b"GGUF\x03\0", "version"),
        (b"GGUF" + struct.pack("<IQQ", 3, 10**12, 1), "tensor count"),
        (gguf_bytes(), "kv"),  # a plausible header over garbage
    ],
)
def test_import_rejects_non_gguf(tmp_path, models_dir, content, reason):
    source = tmp_path / "bad.gguf"
    source.write_bytes(content)
    with pytest.raises(NotAGgufFileError, match=reason):
        import_local_gguf(models_dir, source)
    assert list_installed(models_dir) == []


def test_import_refuses_when_disk_is_too_small(tmp_path, models_dir, monkeypatch):
    source = tmp_path / "m.gguf"
    source.write_bytes(model_bytes())
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 90, 10))
    with pytest.raises(DiskFullError):
        import_local_gguf(models_dir, source)
    assert list_installed(models_dir) == []


def test_only_verified_complete_files_are_listed(tmp_path, models_dir):
    source = tmp_path / "ok.gguf"
    source.write_bytes(model_bytes())
    good = import_local_gguf(models_dir, source)
    repo = models_dir / "org--model-GGUF"
    repo.mkdir()
    (repo / "orphan.gguf").write_bytes(gguf_bytes())  # no manifest: not verified
    (repo / "x.gguf.incomplete").write_bytes(b"GGUF")
    (repo / "broken.gguf").write_bytes(gguf_bytes())
    (repo / "broken.gguf.manifest.json").write_text("{nope")  # corrupt manifest: skipped
    (repo / "short.gguf").write_bytes(b"GGUF")
    (repo / "short.gguf.manifest.json").write_text(
        json.dumps({"file": "short.gguf", "size": 999, "sha256": "0" * 64})
    )  # size mismatch: truncated file
    partial = models_dir / ".partial"
    partial.mkdir()
    (partial / ("a" * 64 + ".incomplete")).write_bytes(b"GGUF")
    assert [m.key for m in list_installed(models_dir)] == [good.key]
    assert inspect_model(good.path).gguf_version == 3


def test_tampered_file_fails_verification(tmp_path, models_dir):
    source = tmp_path / "t.gguf"
    source.write_bytes(model_bytes())
    model = import_local_gguf(models_dir, source)
    data = bytearray(model.path.read_bytes())
    data[-1] ^= 1
    model.path.write_bytes(bytes(data))
    assert not verify_installed(model)


# ---- imports never write outside the models folder ---------------------------------------------


@pytest.mark.parametrize(
    "original", ["CON.gguf", "x.gguf.manifest.json", "model.partial", "..gguf", "a..b.gguf", "lpt1", "-.-"]
)
def test_imported_file_gets_a_safe_name(tmp_path, models_dir, original):
    source = tmp_path / original
    source.write_bytes(model_bytes())
    model = import_local_gguf(models_dir, source)
    assert model.path.parent == models_dir / "local" and model.path.read_bytes() == source.read_bytes()
    assert not model.path.name.lower().endswith((".manifest.json", ".partial")) and ".." not in model.path.name
    assert model.path.name.split(".")[0].upper() not in {"CON", "LPT1"}
    assert [m.key for m in list_installed(models_dir)] == [model.key]


def test_import_never_writes_through_a_link(tmp_path, models_dir):
    source = tmp_path / "my.gguf"
    source.write_bytes(model_bytes())
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (models_dir / "local").mkdir()
    (models_dir / "local" / ".my.gguf.importing").symlink_to(victim)  # a leftover or a planted link
    with pytest.raises(UnsafePathError):
        import_local_gguf(models_dir, source)
    assert victim.read_bytes() == b"precious"


def test_import_into_a_linked_local_folder_is_refused(tmp_path, models_dir):
    source = tmp_path / "my.gguf"
    source.write_bytes(model_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (models_dir / "local").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        import_local_gguf(models_dir, source)
    assert list(outside.iterdir()) == []
