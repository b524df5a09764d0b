"""Switching models in the real window, against the real engine process: a model that fails to load
never replaces the working one as the saved default, the last good model comes back, and the failed
card is marked in plain words (slow: each step loads the built-in model)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from app.catalog.installed import import_local_gguf  # noqa: E402
from app.settings import load_settings  # noqa: E402
from app.ui import main_window  # noqa: E402
from tests.app.live_engine import LOAD_TIMEOUT_MS  # noqa: E402
from tests.app.test_main_window import engine_cache_dir, open_window  # noqa: E402, F401 (fixtures)
from tests.app.test_model_manager import write_tiny_gguf  # noqa: E402

pytestmark = pytest.mark.engine


def broken_install(window, tmp_path):
    """An installed model (manifest and size match, so it has a card) whose content is not a model."""
    entry = import_local_gguf(window.models_page.models_dir, write_tiny_gguf(tmp_path))
    data = bytearray(entry.path.read_bytes())
    data[:4] = b"NOPE"
    entry.path.write_bytes(bytes(data))
    window.models_page.refresh()
    return entry


def test_a_model_that_fails_to_load_keeps_the_last_good_one_at_start_up_and_when_switching(
    open_window,  # noqa: F811 (fixture)
    qtbot,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setattr(main_window, "available_memory_bytes", lambda: 0)  # one model at a time: in place
    h = open_window(default_bits=2)
    window = h.window
    entry = broken_install(window, tmp_path)
    window.settings_store.update(model_source=str(entry.path))  # what an older version saved

    # Start-up: the saved model fails, the built-in one loads instead and becomes the saved default.
    failures = []
    window.client.loadFailed.connect(lambda kind, _text: failures.append(kind))
    info = h.start_engine()
    assert failures == ["model_format"] and info.bits == 4 and "smollm2" in info.name.lower()
    window.settings_store.flush()
    saved = load_settings(window.paths.settings_file).settings
    assert (saved.model_source, saved.default_bits) == ("default", 4)
    card = window.models_page.card(entry.key)
    assert card.message.level == "error" and "not a model this app can read" in card.message_label.text()
    assert card.message.details_label.text()  # the reader's finding, behind Details
    banner = window.engine_banner
    assert banner.kind == "error" and "tiny.gguf could not be loaded" in banner.label.text()
    assert "magic" not in banner.label.text()

    # Switching: choosing the broken model again brings the working one back, and saves nothing.
    with qtbot.waitSignal(window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        window.models_page.modelChosen.emit(str(entry.path), 2)
    assert blocker.args[0].bits == 4 and failures == ["model_format", "model_format"]
    window.settings_store.flush()
    saved = load_settings(window.paths.settings_file).settings
    assert (saved.model_source, saved.default_bits) == ("default", 4)
    assert window.models_page.card("default").bits == 4 and window.models_page.active_source == "default"
    h.send("Say hi.")
    assert h.wait_answer().stats.bits == 4  # the chat works on the model it fell back to


def test_with_memory_for_both_a_switch_loads_alongside_and_a_failure_changes_nothing(
    open_window,  # noqa: F811 (fixture)
    qtbot,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setattr(main_window, "available_memory_bytes", lambda: 1 << 40)
    h = open_window()
    window = h.window
    h.start_engine()
    pid = window.client.pid
    entry = broken_install(window, tmp_path)
    failures = []
    window.client.switchFailed.connect(lambda kind, _text: failures.append(kind))
    window.models_page.modelChosen.emit(str(entry.path), 4)
    assert window.client.switching and window.composer.send_button.isEnabled()  # the chat stays usable
    qtbot.waitUntil(lambda: bool(failures), timeout=LOAD_TIMEOUT_MS)
    assert failures == ["model_format"] and window.client.pid == pid and window.client.info.bits is None
    assert window.engine_banner.kind == "error" and "current model stays loaded" in window.engine_banner.label.text()
    assert window.state_label.text() == "Ready"
    card = window.models_page.card(entry.key)
    assert card.message.level == "error" and "not a model this app can read" in card.message_label.text()
    window.settings_store.flush()
    assert load_settings(window.paths.settings_file).settings.model_source == "default"
    # a model that loads takes over once ready, and is saved as the default
    with qtbot.waitSignal(window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        window.models_page.modelChosen.emit("default", 4)
        h.send("Say hi.")  # answered by the current model while the other one loads
    assert blocker.args[0].bits == 4 and window.client.pid != pid
    window.settings_store.flush()
    assert load_settings(window.paths.settings_file).settings.default_bits == 4
    assert not window.engine_banner.isVisible() or window.engine_banner.tag != "switching"
