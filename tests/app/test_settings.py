"""Settings: defaults, round trip, atomic save, migration, and bad files that must never crash."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app import paths
from app.settings import SCHEMA_VERSION, AppSettings, load_settings, save_settings, settings_from_dict


@pytest.fixture
def settings_file(tmp_path):
    return tmp_path / "config" / "settings.json"


def test_missing_file_gives_defaults_without_problems(settings_file):
    result = load_settings(settings_file)
    assert result.settings == AppSettings() and result.problems == []


def test_round_trip(settings_file):
    chosen = AppSettings().replace(
        default_bits=2, n_threads=3, theme="dark", temperature=0.1, models_dir="/data/models", system_prompt="Ünïcode ✓"
    )
    save_settings(chosen, settings_file)
    result = load_settings(settings_file)
    assert result.settings == chosen and result.problems == []
    assert json.loads(settings_file.read_text())["schema_version"] == SCHEMA_VERSION


def test_save_is_atomic_and_leaves_no_temp_files(settings_file, monkeypatch):
    save_settings(AppSettings(), settings_file)
    original = settings_file.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_settings(AppSettings().replace(theme="dark"), settings_file)
    assert settings_file.read_bytes() == original
    assert [p.name for p in settings_file.parent.iterdir()] == ["settings.json"]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"", b"null"])
def test_corrupt_file_gives_defaults_and_a_problem(settings_file, content):
    settings_file.parent.mkdir(parents=True)
    settings_file.write_bytes(content)
    result = load_settings(settings_file)
    assert result.settings == AppSettings()
    assert len(result.problems) == 1 and str(settings_file) in result.problems[0]
    kept = [p for p in settings_file.parent.iterdir() if ".bad-" in p.name]
    assert kept and kept[0].read_bytes() == content  # the user's file is never lost


def test_migration_from_version_1(settings_file):
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(json.dumps({"schema_version": 1, "threads": 6, "bits": 2, "dark_mode": True}))
    result = load_settings(settings_file)
    assert (result.settings.n_threads, result.settings.default_bits, result.settings.theme) == (6, 2, "dark")
    assert result.problems == []


def test_newer_version_keeps_known_fields_and_reports(settings_file):
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 5, "theme": "light", "hologram": 1}))
    result = load_settings(settings_file)
    assert result.settings.theme == "light"
    assert len(result.problems) == 1 and "newer" in result.problems[0]


def test_bad_field_values_fall_back_one_by_one():
    result = settings_from_dict(
        {
            "schema_version": SCHEMA_VERSION,
            "default_bits": 3,
            "n_threads": "many",
            "theme": "dark",
            "temperature": True,
            "top_p": 0.5,
            "mystery": 1,
        }
    )
    assert result.settings.default_bits is None and result.settings.n_threads is None
    assert result.settings.theme == "dark" and result.settings.top_p == 0.5
    assert result.settings.temperature == AppSettings().temperature
    assert len(result.problems) == 4  # three bad values + one unknown field


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
        max_size=8,
    )
)
def test_any_json_object_loads_without_crashing(data):
    result = settings_from_dict(data)
    assert isinstance(result.settings, AppSettings)


def test_paths_follow_tmac_chat_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TMAC_CHAT_HOME", str(tmp_path / "home"))
    resolved = paths.app_paths().ensure()
    assert resolved.models_dir == tmp_path / "home" / "models" and resolved.models_dir.is_dir()
    assert resolved.settings_file.parent == tmp_path / "home" / "config"
    monkeypatch.delenv("TMAC_CHAT_HOME")
    assert "TMACChat" in str(paths.app_paths().data_dir)


def test_qt_free_zone_imports_no_pyside6():
    """The pure layers must load in a fresh interpreter without PySide6 (and the catalog UI-facing
    modules without huggingface_hub, which only download.py needs)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "import app.paths, app.settings, app.chat.store, app.chat.export, app.chat.trim\n"
        "import app.catalog.catalog, app.catalog.installed, app.catalog.errors, app.power.readers\n"
        "assert 'huggingface_hub' not in sys.modules, 'catalog/installed pulled in huggingface_hub'\n"
        "import app.catalog.download\n"
        "assert not any(m.split('.')[0] == 'PySide6' for m in sys.modules), 'PySide6 imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_a_thread_count_the_kernels_refuse_is_refused_when_read():
    """One limit everywhere: a saved count the thread pool would reject mid-answer
    (it caps at tmac_core.types.MAX_THREADS) falls back to the default when read."""
    from tmac_core.types import MAX_THREADS

    fits = settings_from_dict({"schema_version": SCHEMA_VERSION, "n_threads": MAX_THREADS})
    too_many = settings_from_dict({"schema_version": SCHEMA_VERSION, "n_threads": MAX_THREADS + 1})
    assert fits.settings.n_threads == MAX_THREADS and not fits.problems
    assert too_many.settings.n_threads is None and len(too_many.problems) == 1


def test_a_version_2_file_drops_the_fields_nothing_read_without_a_complaint(settings_file):
    """Every file saved before the settings store held show_perf_panel and default_model_id."""
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(
        json.dumps(
            {"schema_version": 2, "show_perf_panel": False, "default_model_id": None, "theme": "dark", "n_threads": 3}
        )
    )
    result = load_settings(settings_file)
    assert (result.settings.theme, result.settings.n_threads) == ("dark", 3) and result.problems == []
    assert not hasattr(result.settings, "show_perf_panel") and not hasattr(result.settings, "default_model_id")


def test_check_changes_checks_like_loading_and_names_the_bad_field():
    from app.settings import check_changes

    assert check_changes({"temperature": 1, "theme": "light"}) == {"temperature": 1.0, "theme": "light"}
    with pytest.raises(ValueError, match="'top_p'"):
        check_changes({"top_p": 0.0})
    with pytest.raises(ValueError, match="no setting called 'show_perf_panel'"):
        check_changes({"show_perf_panel": True})


def test_a_conversation_keeps_its_own_prompt_and_sampling_over_the_defaults():
    from app.settings import CONVERSATION_FIELDS, SAMPLING_FIELDS, conversation_sampling, for_conversation

    defaults = AppSettings(system_prompt="Be brief.", temperature=0.7, max_tokens=512, n_ctx=4096)
    chat = for_conversation(defaults, "Answer like a pirate.", {"temperature": 0.1, "seed": 7})
    assert (chat.system_prompt, chat.temperature, chat.seed) == ("Answer like a pirate.", 0.1, 7)
    assert chat.max_tokens == 512 and chat.n_ctx == 4096, "the rest comes from the defaults"
    # Rows written before chats kept their sampling hold {}: they run with the defaults' sampling.
    assert for_conversation(defaults, "", {}) == defaults.replace(system_prompt="")
    # A value that fails its check, or a key that is not sampling, is ignored rather than trusted.
    odd = for_conversation(defaults, "x", {"temperature": "hot", "top_k": 5, "n_threads": 9, "theme": "dark"})
    assert (odd.temperature, odd.top_k, odd.n_threads, odd.theme) == (0.7, 5, None, "system")
    assert set(conversation_sampling(chat)) == set(SAMPLING_FIELDS) and CONVERSATION_FIELDS[0] == "system_prompt"
    assert for_conversation(defaults, chat.system_prompt, conversation_sampling(chat)) == chat


def test_migration_from_version_3_renames_to_the_runtime_vocabulary(settings_file):
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(json.dumps({"schema_version": 3, "max_new_tokens": 77, "context_length": 1024, "seed": 5}))
    result = load_settings(settings_file)
    assert (result.settings.max_tokens, result.settings.n_ctx, result.settings.seed) == (77, 1024, 5)
    assert result.problems == []
