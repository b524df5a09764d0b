"""Loading an installed model passes the sha256 its manifest recorded, so the engine process
finds the repacked copy without re-reading the file; a referenced import (a file outside the
models folder, which may have changed) is still hashed. Real window, real engine process."""

from __future__ import annotations

import pytest

from tests.app.live_engine import LOAD_TIMEOUT_MS, engine_cache_dir  # noqa: F401

pytest.importorskip("pytestqt")

from app.catalog.installed import import_local_gguf  # noqa: E402
from app.chat.store import ChatStore  # noqa: E402
from app.paths import app_paths  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.ui.main_window import MainWindow  # noqa: E402
from tmac_core.engine import default_model_path  # noqa: E402
from tmac_core.filehash import sha256_file  # noqa: E402

HASHING = "hashing the model file"


def _load(qtbot, window: MainWindow, source: str) -> tuple[object, list[str]]:
    stages: list[str] = []
    window.client.loadProgress.connect(lambda _fraction, stage: stages.append(stage))
    with qtbot.waitSignal(window.client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        window.load_model(source, 4)
    return blocker.args[0], stages


def test_an_installed_model_loads_with_its_manifest_digest(qtbot, engine_cache_dir, tmp_path):  # noqa: F811
    paths = app_paths().ensure()
    copied = import_local_gguf(paths.models_dir, default_model_path(), copy=True)
    referenced = import_local_gguf(paths.models_dir, default_model_path(), copy=False)
    assert copied.sha256 == sha256_file(copied.path)
    with ChatStore(paths.chat_db_file) as store:
        window = MainWindow(SettingsStore(AppSettings(n_ctx=256), paths.settings_file), paths, store)
        qtbot.addWidget(window)
        try:
            info, stages = _load(qtbot, window, str(copied.path))
            assert info.source == str(copied.path) and info.cache_hit is not None
            assert HASHING not in stages, stages
            info, stages = _load(qtbot, window, str(referenced.path))
            assert HASHING in stages, "a referenced file may have changed since it was imported"
            assert info.cache_hit, "same content, same repacked copy"
        finally:
            window.client.shutdown()
            window.close()
