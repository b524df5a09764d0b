"""app.catalog.inventory: which cards the Models page shows, their state and the actions each allows.

Pure Python: the real catalog, with installed models and partial downloads written as the
catalog modules record them; no Qt, no network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.catalog.catalog import load_catalog
from app.catalog.download import PartialDownload
from app.catalog.installed import InstalledModel
from app.catalog.inventory import (
    CATALOG,
    EMBEDDED,
    EMBEDDED_ID,
    LOCAL,
    TWO_BIT_MIN_PARAMETERS,
    CardState,
    card_actions,
    merge_inventory,
    superseded_partials,
    two_bit_warning,
)

SMOL_ID, SMOL_REPO, SMOL_FILE = (
    "smollm2-135m-instruct",
    "bartowski/SmolLM2-135M-Instruct-GGUF",
    "SmolLM2-135M-Instruct-Q8_0.gguf",
)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def installed_entry(
    models_dir: Path,
    key: str,
    *,
    source: str = "hub",
    repo_id: str | None = None,
    filename: str | None = None,
    size: int = 1234,
) -> InstalledModel:
    path = models_dir / key
    return InstalledModel(
        key=key,
        path=path,
        size=size,
        sha256="ab" * 32,
        source=source,
        repo_id=repo_id,
        filename=filename or Path(key).name,
        commit=None,
        installed_at=0.0,
        manifest_path=path.with_suffix(".json"),
    )


def partial(models_dir: Path, repo_id: str, filename: str, done: int, size: int) -> PartialDownload:
    return PartialDownload(repo_id, filename, "c0ffee", "cd" * 32, size, done, models_dir / "partial.incomplete")


@pytest.fixture
def embedded(tmp_path) -> Path:
    path = tmp_path / "embedded.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    return path


def by_id(states: list[CardState]) -> dict[str, CardState]:
    return {s.card_id: s for s in states}


def test_nothing_installed_lists_the_built_in_model_then_the_catalog(catalog, embedded):
    states = merge_inventory(catalog, [], {}, embedded)
    assert [s.card_id for s in states] == [EMBEDDED_ID] + [m.id for m in catalog]
    first = states[0]
    # no borrowed catalog shapes: the page reads the embedded file itself (test_built_in_card)
    assert (first.kind, first.source, first.download_bytes, first.model) == (EMBEDDED, "default", 104, None)
    assert first.file == embedded
    for state, model in zip(states[1:], catalog):
        assert state.kind == CATALOG and state.installed is None and state.source is None
        assert state.download_bytes == model.size_bytes and state.model is model and state.partial is None
    smol = by_id(states)[SMOL_ID]
    assert "135M parameters" in smol.subtitle and SMOL_REPO in smol.subtitle


def test_an_installed_catalog_model_a_partial_download_and_an_import(catalog, embedded, tmp_path):
    llama = next(m for m in catalog if m.gated)
    smol_entry = installed_entry(tmp_path, f"{SMOL_REPO}/{SMOL_FILE}", repo_id=SMOL_REPO, filename=SMOL_FILE)
    imported = installed_entry(tmp_path, "local/tiny.gguf", source="import-reference")
    gone = installed_entry(tmp_path, "someone/old-repo/old.gguf", repo_id="someone/old-repo")
    partials = {
        (llama.repo_id, llama.filename): partial(tmp_path, llama.repo_id, llama.filename, 40, 100),
        (SMOL_REPO, SMOL_FILE): partial(tmp_path, SMOL_REPO, SMOL_FILE, 10, 100),
    }
    states = merge_inventory(catalog, [imported, smol_entry, gone], partials, embedded)

    cards = by_id(states)
    smol = cards[SMOL_ID]
    assert smol.installed is smol_entry and smol.source == str(smol_entry.path) and smol.download_bytes == 1234
    assert smol.partial is None, "an installed model has nothing to resume, whatever is left in the partial folder"
    assert cards[llama.id].partial.bytes_done == 40 and "license" in cards[llama.id].subtitle
    # Files the catalog does not list come last, in the order they were found.
    assert [s.card_id for s in states[-2:]] == ["local/tiny.gguf", "someone/old-repo/old.gguf"]
    assert cards["local/tiny.gguf"].kind == LOCAL and cards["local/tiny.gguf"].model is None
    assert cards["local/tiny.gguf"].subtitle.startswith("imported (used where it is)")
    assert cards["someone/old-repo/old.gguf"].subtitle.startswith("from someone/old-repo")


def test_actions_follow_the_state(catalog, embedded, tmp_path):
    llama = next(m for m in catalog if m.gated)
    smol_entry = installed_entry(tmp_path, f"{SMOL_REPO}/{SMOL_FILE}", repo_id=SMOL_REPO, filename=SMOL_FILE)
    partials = {(llama.repo_id, llama.filename): partial(tmp_path, llama.repo_id, llama.filename, 40, 100)}
    cards = by_id(merge_inventory(catalog, [smol_entry], partials, embedded))
    idle = dict(downloading=False, active_source=None)

    fresh = card_actions(cards["qwen2.5-0.5b-instruct"], **idle)
    assert (fresh.download, fresh.resume, fresh.discard, fresh.use, fresh.delete) == (True, False, False, False, False)
    paused = card_actions(cards[llama.id], **idle)
    assert (paused.download, paused.resume, paused.discard, paused.cancel) == (True, True, True, False)
    running = card_actions(cards[llama.id], downloading=True, active_source=None)
    assert (running.download, running.cancel, running.discard, running.delete_allowed) == (False, True, False, False)

    installed = card_actions(cards[SMOL_ID], **idle)
    assert (installed.download, installed.use, installed.delete, installed.delete_allowed) == (False, True, True, True)
    in_use = card_actions(cards[SMOL_ID], downloading=False, active_source=str(smol_entry.path))
    assert in_use.in_use and in_use.delete and not in_use.delete_allowed

    built_in = card_actions(cards[EMBEDDED_ID], downloading=False, active_source="default")
    assert built_in.use and built_in.in_use and not built_in.delete and not built_in.download


def test_a_missing_built_in_file_cannot_be_used(catalog, tmp_path):
    state = merge_inventory(catalog, [], {}, tmp_path / "not-there.gguf")[0]
    assert state.download_bytes is None and "not-there.gguf" in state.subtitle
    assert not card_actions(state, downloading=False, active_source=None).use
    assert "missing" in merge_inventory(catalog, [], {}, None)[0].subtitle


def test_two_bit_warning_below_a_billion_parameters():
    assert two_bit_warning(None) == "" and two_bit_warning(0) == ""
    assert two_bit_warning(TWO_BIT_MIN_PARAMETERS) == "" and two_bit_warning(1_700_000_000) == ""
    warning = two_bit_warning(134_515_008)
    assert "135M parameters" in warning and "Use 4-bit" in warning and "nonsense" in warning


def test_inventory_loads_without_qt():
    code = (
        "import sys, app.catalog.inventory\n"
        "assert not any(m.split('.')[0] == 'PySide6' for m in sys.modules), 'PySide6 imported'\n"
        "assert 'huggingface_hub' not in sys.modules, 'the inventory pulled in huggingface_hub'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True, timeout=60)


def test_a_finished_download_supersedes_partials_of_other_versions_of_its_file(tmp_path):
    entry = installed_entry(tmp_path, f"{SMOL_REPO}/{SMOL_FILE}", repo_id=SMOL_REPO, filename=SMOL_FILE)
    same = partial(tmp_path, SMOL_REPO, SMOL_FILE, 10, 100)  # sha256 "cd…", not "ab…"
    current = PartialDownload(SMOL_REPO, SMOL_FILE, "c0ffee", entry.sha256, 100, 100, tmp_path / "x.incomplete")
    other = partial(tmp_path, SMOL_REPO, "other.gguf", 10, 100)
    assert superseded_partials([same, current, other], entry) == [same]
