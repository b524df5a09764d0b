"""Cancelling a first load: the engine process (real, spawned) stops between slabs of the
repack, answers LoadFailed("load_cancelled") and leaves no cache file; the next load
works. The loading card shows the bytes repacked and the time left, and its Cancel asks once."""

from __future__ import annotations

import pytest

from tests.app.live_engine import LOAD_TIMEOUT_MS, engine_cache_dir  # noqa: F401

pytest.importorskip("pytestqt")

from app.ui.chat_view import LoadingCard  # noqa: E402
from app.workers.engine_client import EngineClient  # noqa: E402
from app.workers.protocol import LOAD_CANCELLED, EngineState, Progress  # noqa: E402


@pytest.mark.engine
def test_cancel_stops_a_first_load_and_leaves_no_cache_file(qtbot, tmp_path):
    client = EngineClient(cache_dir=tmp_path)
    try:
        statuses, failures = [], []
        client.loadFailed.connect(lambda kind, text: failures.append(kind))

        def on_status(status):
            statuses.append(status)
            if status.bytes_total and len([s for s in statuses if s.bytes_total]) == 1:
                assert client.cancel_load()  # as soon as the repack starts

        client.loadStatus.connect(on_status)
        client.load("default", 4, n_ctx=256)
        qtbot.waitUntil(lambda: bool(failures) or client.state == EngineState.READY, timeout=LOAD_TIMEOUT_MS)
        assert failures == [LOAD_CANCELLED]
        assert client.state == EngineState.STOPPED
        repacked = [s for s in statuses if s.bytes_total]
        assert repacked and repacked[-1].bytes_done < repacked[-1].bytes_total  # stopped mid-repack
        assert list(tmp_path.iterdir()) == []  # no cache file, no partial one
        assert not client.cancel_load()  # nothing loading now

        with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS) as loaded:
            client.load("default", 4, n_ctx=256)
        assert not loaded.args[0].cache_hit
        assert [p.suffix for p in tmp_path.iterdir()] == [".tmacw"]
    finally:
        client.shutdown()


def test_the_loading_card_shows_bytes_and_time_left_and_cancels_once(qtbot):
    card = LoadingCard()
    qtbot.addWidget(card)
    card.show_status(Progress(0.4, "repacking to 4 bits", 1_200_000_000, 4_900_000_000, 41.0))
    assert card.stage.text() == "Repacking to 4 bits: 1.20 GB of 4.90 GB · about 41 s left"
    assert card.bar.value() == 400
    card.show_status(Progress(0.1, "repacking to 4 bits", 0, 4_900_000_000, None))
    assert "time left unknown" in card.stage.text()
    asked = []
    card.cancelRequested.connect(lambda: asked.append(True))
    card.cancel_button.click()
    card.cancel_button.click()
    assert asked == [True] and not card.cancel_button.isEnabled()
    card.show_progress(0.0, "")  # the next load
    assert card.cancel_button.isEnabled()


@pytest.mark.engine
@pytest.mark.parametrize("alongside", [False, True], ids=["in-place", "alongside"])
def test_cancelling_a_model_switch_brings_the_previous_model_back(qtbot, engine_cache_dir, monkeypatch, alongside):  # noqa: F811
    """In place (memory for one model only): the previous model is loaded again from its cache file.
    Alongside (a second engine process): it never went away."""
    from app.chat.store import ChatStore
    from app.paths import app_paths
    from app.settings import AppSettings
    from app.settings_store import SettingsStore
    from app.ui import main_window
    from app.ui.main_window import MainWindow

    monkeypatch.setattr(main_window, "available_memory_bytes", lambda: 1 << 40 if alongside else 0)

    for old in engine_cache_dir.glob("*-b2-*.tmacw"):  # the 2-bit model must repack, so there is time to cancel
        old.unlink()
    paths = app_paths().ensure()
    store = ChatStore(paths.chat_db_file)
    window = MainWindow(SettingsStore(AppSettings(n_ctx=512), paths.settings_file), paths, store)
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(window.client.loaded, timeout=LOAD_TIMEOUT_MS):
            window.start_engine()
        card = window.chat_view.loading_card
        banner = window.engine_banner
        loads, switch_failures = [], []
        window.client.loaded.connect(loads.append)
        window.client.switchFailed.connect(lambda kind, _text: switch_failures.append(kind))
        old_pid = window.client.pid

        def cancel_once_repacking(status):
            if alongside and status.bytes_total and banner.tag == "switching":
                assert not card.isVisible() and window.composer.send_button.isEnabled()  # the chat stays usable
                banner.action_button.click()  # what the user does: "Cancel" on the banner
            elif not alongside and status.bytes_total and card.cancel_button.isEnabled():
                card.cancel_button.click()  # ...on the loading card

        window.client.loadStatus.connect(cancel_once_repacking)
        window.models_page.modelChosen.emit("default", 2)
        if alongside:
            qtbot.waitUntil(lambda: bool(switch_failures), timeout=LOAD_TIMEOUT_MS)
            assert switch_failures == [LOAD_CANCELLED] and not loads and window.client.pid == old_pid
            qtbot.waitUntil(lambda: not window.client._retired, timeout=10_000)  # the second process is gone
        else:
            qtbot.waitUntil(lambda: bool(loads), timeout=LOAD_TIMEOUT_MS)
            # the model loaded at start (as in the file, the default) again, from its cache file
            assert (loads[0].bits, loads[0].cache_hit) == (None, True)
        assert not list(engine_cache_dir.glob("*-b2-*.tmacw")) and not list(engine_cache_dir.glob(".partial-*"))
        assert not window.engine_banner.isVisible() or window.engine_banner.kind != "error"
        assert "as in the file" in window.model_label.text()
    finally:
        window.client.shutdown()
        store.close()
