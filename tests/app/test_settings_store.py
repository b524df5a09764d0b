"""SettingsStore: one current AppSettings, checked changes, subscribers, and a debounced atomic save."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import app.settings_store as settings_store_module
from app.settings import AppSettings, load_settings
from app.settings_store import SettingsStore
from tmac_core.types import MAX_THREADS


@pytest.fixture
def settings_file(tmp_path):
    return tmp_path / "config" / "settings.json"


@pytest.fixture
def saves(monkeypatch):
    """Each real save, recorded (the file is still written by app.settings.save_settings)."""
    written: list[AppSettings] = []
    real = settings_store_module.save_settings

    def recording_save(settings, path):
        real(settings, path)
        written.append(settings)

    monkeypatch.setattr(settings_store_module, "save_settings", recording_save)
    return written


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_update_changes_the_current_settings_at_once_and_notifies(settings_file):
    store = SettingsStore(AppSettings(), settings_file, save_delay_s=60)
    seen = []
    store.subscribe(lambda settings, changed: seen.append((settings, changed)))
    new = store.update(temperature=0.2, theme="dark", top_k=40)  # top_k is already 40
    assert store.current is new and (new.temperature, new.theme) == (0.2, "dark")
    assert seen == [(new, frozenset({"temperature", "theme"}))]
    assert store.update(theme="dark") is new and len(seen) == 1, "no change, no notice"
    assert isinstance(store.update(temperature=1).temperature, float)  # ints become floats, as when loaded


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"n_threads": MAX_THREADS + 1}, "n_threads"),
        ({"theme": "blue"}, "theme"),
        ({"temperature": 0.5, "default_bits": 3}, "default_bits"),
        ({"hf_token": "has space"}, "hf_token"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"schema_version": 9}, "schema_version"),
    ],
)
def test_a_bad_value_raises_and_changes_nothing(settings_file, saves, changes, named):
    store = SettingsStore(AppSettings(), settings_file, save_delay_s=0.01)
    seen = []
    store.subscribe(lambda settings, changed: seen.append(changed))
    with pytest.raises(ValueError, match=named):
        store.update(**changes)
    assert store.current == AppSettings() and seen == [] and not store.pending
    time.sleep(0.05)
    assert saves == [] and not settings_file.exists()


def test_a_burst_of_changes_is_saved_once_after_the_delay(settings_file, saves):
    store = SettingsStore(AppSettings(), settings_file, save_delay_s=0.3)
    for n in range(1, 9):  # a slider dragged across eight thread counts
        store.update(n_threads=n)
    assert saves == [] and not settings_file.exists() and store.pending
    wait_for(lambda: saves)
    time.sleep(0.4)
    assert [s.n_threads for s in saves] == [8] and not store.pending
    assert load_settings(settings_file).settings == store.current


def test_flush_writes_now_and_cancels_the_delayed_save(settings_file, saves):
    store = SettingsStore(AppSettings(), settings_file, save_delay_s=0.2)
    store.update(theme="light")
    store.flush()
    assert load_settings(settings_file).settings.theme == "light" and len(saves) == 1
    time.sleep(0.3)
    assert len(saves) == 1, "the delayed save found nothing left to write"
    store.flush()
    assert len(saves) == 1, "nothing pending: no write"
    data = json.loads(settings_file.read_text())
    assert "show_perf_panel" not in data and "default_model_id" not in data


def test_unsubscribe_stops_the_notices(settings_file):
    store = SettingsStore(AppSettings(), settings_file, save_delay_s=60)
    seen = []
    unsubscribe = store.subscribe(lambda settings, changed: seen.append(changed))
    store.update(seed=1)
    unsubscribe()
    unsubscribe()  # twice is harmless
    store.update(seed=2)
    assert seen == [frozenset({"seed"})]


def test_a_failed_save_is_reported_kept_pending_and_retried(tmp_path, saves):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the config folder should be")
    store = SettingsStore(AppSettings(), blocked / "settings.json", save_delay_s=0.01)
    errors: list[OSError] = []
    reported = threading.Event()
    store.on_save_error(lambda error: (errors.append(error), reported.set()))
    store.update(theme="dark")
    assert reported.wait(5) and isinstance(errors[0], OSError) and store.pending
    with pytest.raises(OSError):
        store.flush()
    blocked.unlink()  # the user fixes the folder; the next flush saves the change
    store.flush()
    assert load_settings(blocked / "settings.json").settings.theme == "dark" and not store.pending


def test_a_store_without_a_file_keeps_settings_in_memory(saves):
    store = SettingsStore(AppSettings(), None)
    store.update(theme="dark")
    store.flush()
    assert store.current.theme == "dark" and not store.pending and saves == []


def test_changes_from_two_threads_all_arrive(settings_file):
    store = SettingsStore(AppSettings(), settings_file, save_delay_s=0.05)
    workers = [
        threading.Thread(target=lambda name=name, value=value: store.update(**{name: value}))
        for name, value in (("theme", "dark"), ("top_k", 7), ("seed", 3), ("min_p", 0.2))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.flush()
    saved = load_settings(settings_file).settings
    assert (
        (saved.theme, saved.top_k, saved.seed, saved.min_p)
        == ("dark", 7, 3, 0.2)
        == (store.current.theme, store.current.top_k, store.current.seed, store.current.min_p)
    )


def test_the_store_loads_without_qt():
    code = (
        "import sys, app.settings_store\n"
        "assert not any(m.split('.')[0] == 'PySide6' for m in sys.modules), 'PySide6 imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True, timeout=60)
