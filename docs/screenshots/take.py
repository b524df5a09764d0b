"""The screenshot set in docs/screenshots/, taken from the real window on a real X server.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots/take.py

Opens MainWindow on the xcb platform (Xvfb: the real platform plugin, fonts and theme the
Linux desktop gets) with a throwaway home folder, loads the built-in model in its engine
process, sends two messages whose answers users have seen go wrong (HTML tags in the text,
line breaks in a poem) at temperature 0, and grabs the chat page and the Models page at 1280×800
and 900×600, the Models page scrolled to a native low-bit model's card, and the Local server
dialog. Run it after a change to what these views show and
look at every picture before committing them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent
MESSAGES = (
    "What is the difference between <div> and <span> in HTML? One sentence.",
    "Write a four-line poem about the sea.",
)
NATIVE_CARD = "bitnet-b1.58-2b-4t"  # assets/catalog.json id of the card the native-model picture shows
MAX_TOKENS = 48
TIMEOUT_MS = 420_000
SETTLE_MS = 800


class Tour:
    """Sends MESSAGES one after another once the model is loaded, then takes the pictures."""

    def __init__(self, window, app) -> None:
        from PySide6.QtCore import QTimer

        self.window, self.app = window, app
        self.pending = list(MESSAGES)
        self.code = 1
        self.watchdog = QTimer(singleShot=True, interval=TIMEOUT_MS)
        self.watchdog.timeout.connect(lambda: self.finish("timed out", 1))
        window.client.loaded.connect(lambda _info: self.send_next())
        window.client.loadFailed.connect(lambda kind, text: self.finish(f"load failed: {kind}: {text}", 1))
        # the next message once the session has settled (busy goes off after answerFinished)
        window.session.answerFinished.connect(lambda _message: QTimer.singleShot(300, self.send_next))

    def start(self) -> None:
        self.watchdog.start()
        self.window.settings_store.update(temperature=0.0, max_tokens=MAX_TOKENS, seed=0)
        self.window.start_engine()

    def send_next(self) -> None:
        from PySide6.QtCore import QTimer

        if not self.pending:
            QTimer.singleShot(500, self.shoot)  # let the last answer's layout settle
            return
        print(f"sending {self.pending[0]!r}", flush=True)
        self.window.composer.prompt.setPlainText(self.pending.pop(0))
        self.window.composer.send_button.click()

    def grab(self, name: str, width: int, height: int) -> None:
        from PySide6.QtCore import QDeadlineTimer, QEventLoop

        self.window.resize(width, height)
        # the messages re-measure their heights for the new width over several passes of the
        # event loop: a grab right after the resize shows heights for the old width
        deadline = QDeadlineTimer(SETTLE_MS)
        while not deadline.hasExpired():
            self.app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        self.window.grab().save(str(OUT / name))
        print(f"wrote {OUT / name}", flush=True)

    def shoot(self) -> None:
        from app.ui.server_panel import ServerDialog

        w = self.window
        w.tabs.setCurrentIndex(0)
        self.grab("chat-1280x800.png", 1280, 800)
        self.grab("chat-900x600.png", 900, 600)
        w.tabs.setCurrentWidget(w.models_tab)
        self.grab("models-1280x800.png", 1280, 800)
        # a native low-bit model's card (ternary weights, its own bits/weight and RAM figures),
        # scrolled to at the size it is grabbed at: the cards' positions depend on the width
        cards = w.models_page.cards_scroll.verticalScrollBar()
        cards.setValue(w.models_page.card(NATIVE_CARD).y() - 8)
        self.grab("models-native-1280x800.png", 1280, 800)
        cards.setValue(0)
        self.grab("models-900x600.png", 900, 600)
        w.tabs.setCurrentIndex(0)
        dialog = ServerDialog(w.local_server, w.settings_store, w)
        dialog.show()
        self.app.processEvents()
        dialog.grab().save(str(OUT / "local-server.png"))
        print(f"wrote {OUT / 'local-server.png'}", flush=True)
        dialog.close()
        self.finish("done", 0)

    def finish(self, text: str, code: int) -> None:
        print(text, flush=True)
        self.code = code
        self.window.close()
        self.app.exit(code)


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    sys.path.insert(0, str(OUT.parents[1]))
    from app.application import make_application
    from app.chat.store import ChatStore
    from app.paths import HOME_ENV_VAR, app_paths
    from app.settings import AppSettings
    from app.settings_store import SettingsStore
    from app.ui.main_window import MainWindow
    from app.ui.theme import apply_theme

    with tempfile.TemporaryDirectory(prefix="tmac-screenshots-") as home:
        os.environ[HOME_ENV_VAR] = home
        paths = app_paths().ensure()
        app = make_application()
        apply_theme(app, "light")
        with ChatStore(paths.chat_db_file) as store:
            window = MainWindow(SettingsStore(AppSettings(), paths.settings_file), paths, store)
            window.show()
            tour = Tour(window, app)
            tour.start()
            app.exec()
        return tour.code


if __name__ == "__main__":  # the engine process is started with multiprocessing's spawn
    sys.exit(main())
