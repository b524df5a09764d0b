"""The composition root: QApplication, folders, settings, chat history, MainWindow.

`run(argv)` is what `python -m app` calls. `--self-test` runs app.self_test
instead of the normal session (offscreen when there is no display).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.application import APP_DISPLAY_NAME, make_application, missing_display

if TYPE_CHECKING:
    from app.chat.errors import CorruptDatabaseError, UnsavedTextError
    from app.chat.store import ChatStore


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="Offline chat with language models on the CPU.")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the window, load the built-in model, answer one message, print a JSON report",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="self-test time limit in seconds")
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="self-test: also write the JSON report to FILE (a windowed build has no stdout)",
    )
    return parser.parse_args(argv)


def open_store(
    path: Path, *, move_aside: Callable[[CorruptDatabaseError], bool], tell: Callable[[str], None]
) -> tuple[ChatStore, str]:
    """The chat history at `path`, and "" or a warning for the window's start-up banner.

    Never fails: when the file cannot be used (damaged, a folder or FIFO at the path, a full disk,
    read-only, locked by another program) `tell` gets the typed error's plain words and the app
    runs on an in-memory store, whose chats are not saved; nothing on disk is changed. A damaged
    file is moved aside (kept, renamed) only if `move_aside` says yes.
    """
    from app.chat.errors import ChatStoreError, CorruptDatabaseError
    from app.chat.store import IN_MEMORY, ChatStore, move_database_aside

    try:
        return ChatStore(path), ""
    except CorruptDatabaseError as error:
        problem: ChatStoreError | OSError = error
        if move_aside(error):
            try:
                move_database_aside(error.path)
                return ChatStore(path), ""
            except (ChatStoreError, OSError) as again:
                problem = again
    except ChatStoreError as error:
        problem = error
    warning = f"{problem} Chats of this session will not be saved."
    tell(warning)
    return ChatStore(IN_MEMORY), warning


def keep_unsaved(error: UnsavedTextError, folder: Path) -> str:
    """At exit, text the database could not take goes to a text file beside it (or, failing that,
    to stderr): a shown answer is never just dropped. Returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    body = "\n\n".join(f"--- message {message_id} ---\n{text}" for message_id, text in sorted(error.texts.items()))
    target = folder / f"unsaved-answers-{stamp}.txt"
    try:
        target.write_text(body + "\n", encoding="utf-8", errors="replace")
        return str(target)
    except OSError:
        print(body, file=sys.stderr)
        return "stderr"


def _ask_move_aside(error: CorruptDatabaseError) -> bool:
    from PySide6.QtWidgets import QMessageBox

    answer = QMessageBox.critical(
        None,
        APP_DISPLAY_NAME,
        f"{error}\n\nMove the damaged file aside and start with an empty history? "
        "The file is kept, renamed, so it can still be recovered.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def _tell(text: str) -> None:
    from PySide6.QtWidgets import QMessageBox

    print(f"T-MAC Chat: {text}", file=sys.stderr)
    QMessageBox.warning(None, APP_DISPLAY_NAME, text)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_test:
        from app.self_test import run_self_test

        return run_self_test(args.timeout, args.report)
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
    from app.platform_checks import check_platform

    if not check_platform():  # a dialog, not a crash, on a CPU or OS this build cannot run on
        return 3
    from app.ui.main_window import MainWindow
    from app.ui.theme import apply_theme

    apply_theme(app, loaded.settings.theme, loaded.settings.zoom)
    store, store_warning = open_store(paths.chat_db_file, move_aside=_ask_move_aside, tell=_tell)
    settings = SettingsStore(loaded.settings, paths.settings_file)  # the one store every window shares
    problems = [*loaded.problems, *([store_warning] if store_warning else [])]
    window = MainWindow(settings, paths, store, settings_problems=problems)
    window.show()
    window.start_engine()
    try:
        return app.exec()
    finally:
        close_store(store, paths.data_dir)


def close_store(store: ChatStore, folder: Path) -> None:
    """Close the history; text it could not commit is kept in a file (keep_unsaved), and said so."""
    from app.chat.errors import ChatStoreError, UnsavedTextError

    try:
        store.close()
    except UnsavedTextError as error:
        print(f"T-MAC Chat: {error} The unsaved text was written to {keep_unsaved(error, folder)}.", file=sys.stderr)
    except ChatStoreError as error:
        print(f"T-MAC Chat: {error}", file=sys.stderr)
