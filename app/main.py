"""The composition root: QApplication, folders, settings, chat history, MainWindow.

`run(argv)` is what `python -m app` calls. `--self-test` runs app.self_test
instead of the normal session (offscreen when there is no display).
"""

from __future__ import annotations

import argparse
import os
import sys

from app.application import APP_DISPLAY_NAME, make_application, missing_display


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="Offline chat with language models on the CPU.")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the window, load the built-in model, answer one message, print a JSON report",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="self-test time limit in seconds")
    return parser.parse_args(argv)


def open_store(paths):
    """The chat history, or None after telling the user why it cannot be opened (nothing is changed)."""
    from PySide6.QtWidgets import QMessageBox

    from app.chat.errors import ChatStoreError, CorruptDatabaseError
    from app.chat.store import ChatStore, move_database_aside

    try:
        return ChatStore(paths.chat_db_file)
    except CorruptDatabaseError as error:
        answer = QMessageBox.critical(
            None,
            APP_DISPLAY_NAME,
            f"{error}\n\nMove the damaged file aside and start with an empty history? "
            "The file is kept, renamed, so it can still be recovered.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            move_database_aside(error.path)
            return ChatStore(paths.chat_db_file)
    except ChatStoreError as error:
        QMessageBox.critical(None, APP_DISPLAY_NAME, str(error))
    return None


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_test:
        from app.self_test import run_self_test

        return run_self_test(args.timeout)
    if missing_display():
        print(
            "T-MAC Chat needs a display and none was found (DISPLAY and WAYLAND_DISPLAY are unset).\n"
            "Run it from a desktop session, or under a virtual one: xvfb-run python -m app\n"
            "To check the app without a display: python -m app --self-test",
            file=sys.stderr,
        )
        return 2

    from app.paths import app_paths
    from app.settings import load_settings
    from app.settings_store import SettingsStore

    paths = app_paths().ensure()
    loaded = load_settings(paths.settings_file)
    if loaded.settings.offline_mode:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is first imported
    app = make_application()
    from app.ui.main_window import MainWindow
    from app.ui.theme import apply_theme

    apply_theme(app, loaded.settings.theme)
    store = open_store(paths)
    if store is None:
        return 1
    settings = SettingsStore(loaded.settings, paths.settings_file)  # the one store every window shares
    window = MainWindow(settings, paths, store, settings_problems=loaded.problems)
    window.show()
    window.start_engine()
    try:
        return app.exec()
    finally:
        store.close()
