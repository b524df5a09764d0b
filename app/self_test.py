"""`python -m app --self-test`: the whole app, end to end, in one run, with a JSON verdict.

Opens the real MainWindow (offscreen when there is no display), starts the
engine process on the built-in model, types a message into the composer and
presses Send, waits for the streamed answer, checks it reached the screen and
the chat database, then prints one JSON line and exits 0 (or prints
{"ok": false, "reason": ...} and exits 1). Chats and settings go to a
temporary folder, so the user's history is never touched; the repacked-model
cache is the normal one, so a second run is quick.
"""

from __future__ import annotations

import json
import os
import tempfile

from app.application import make_application, missing_display
from app.paths import HOME_ENV_VAR, app_paths

PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 32


class SelfTest:
    def __init__(self, window, app, timeout_s: float) -> None:
        from PySide6.QtCore import QTimer

        self.window, self.app = window, app
        self.exit_code: int | None = None
        self.last_chunk = None
        self.timer = QTimer(singleShot=True, interval=int(timeout_s * 1000))
        self.timer.timeout.connect(
            lambda: self.fail(f"no answer within {timeout_s:.0f} s (engine state: {window.client.state.value})")
        )
        window.client.loaded.connect(self.on_loaded)
        window.client.loadFailed.connect(lambda kind, text: self.fail(f"load failed: {kind}: {text}"))
        window.client.failed.connect(self.on_failed)
        window.client.died.connect(lambda reason: self.fail(f"engine process died: {reason}"))
        window.session.answerChunk.connect(self.on_chunk)
        window.session.answerFinished.connect(self.on_finished)

    def start(self) -> None:
        self.timer.start()
        self.window.settings_store.update(temperature=0.0, max_tokens=MAX_TOKENS, seed=0)
        self.window.start_engine()

    def on_loaded(self, _info) -> None:
        self.window.composer.prompt.setPlainText(PROMPT)
        self.window.composer.send_button.click()
        if not self.window.session.busy:
            self.fail("the composer did not send the message")

    def on_failed(self, request_id: int, kind: str, text: str) -> None:
        self.fail(f"generate failed: {kind}: {text}")

    def on_chunk(self, chunk) -> None:
        self.last_chunk = chunk

    def on_finished(self, message) -> None:
        window, chunk = self.window, self.last_chunk
        shown = window.chat_view.message_widget(message.id)
        stored = window.store.get_message(message.id)
        if chunk is None or chunk.finish_reason not in ("stop", "length"):
            return self.fail(f"the answer ended with {getattr(chunk, 'finish_reason', None)!r}")
        if not stored.content.strip():
            return self.fail("the answer is empty")
        if shown is None or shown.text != stored.content:
            return self.fail("the answer on screen differs from the stored one")
        info = window.client.info
        self.report(
            {
                "ok": True,
                "tokens": chunk.generated_tokens,
                "decode_tok_s": round(chunk.decode_tok_s, 2),
                "prompt_tok_s": round(chunk.prompt_tok_s, 1),
                "ttft_s": round(chunk.ttft_s, 3),
                "tier": info.tier,
                "threads": chunk.threads,
                "bits": info.bits,  # None: as in the file
                "bits_per_weight": round(info.bits_per_weight, 2),
                "answer": stored.content,
                "model": info.name,
                "load_s": round(info.load_s, 2),
                "finish_reason": chunk.finish_reason,
            },
            0,
        )

    def fail(self, reason: str) -> None:
        self.report({"ok": False, "reason": reason}, 1)

    def report(self, result: dict, code: int) -> None:
        if self.exit_code is not None:
            return
        self.exit_code = code
        print(json.dumps(result, ensure_ascii=False), flush=True)
        self.timer.stop()
        self.window.close()
        self.app.exit(code)


def run_self_test(timeout_s: float) -> int:
    if missing_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("TMAC_CACHE_DIR", str(app_paths().engine_cache_dir))  # the user's, before the swap
    with tempfile.TemporaryDirectory(prefix="tmac-self-test-") as home:
        os.environ[HOME_ENV_VAR] = home
        try:
            return _run_in(app_paths().ensure(), timeout_s)
        except Exception as error:  # noqa: BLE001 (a crash while building the window is a failed self-test, said as JSON)
            print(json.dumps({"ok": False, "reason": f"{type(error).__name__}: {error}"}), flush=True)
            return 1


def _run_in(paths, timeout_s: float) -> int:
    from app.chat.store import ChatStore
    from app.settings import AppSettings
    from app.settings_store import SettingsStore
    from app.ui.main_window import MainWindow
    from app.ui.theme import apply_theme

    app = make_application()
    apply_theme(app, "system")
    with ChatStore(paths.chat_db_file) as store:
        window = MainWindow(SettingsStore(AppSettings(), paths.settings_file), paths, store)
        window.show()
        test = SelfTest(window, app, timeout_s)
        test.start()
        code = app.exec()
    return test.exit_code if test.exit_code is not None else (code or 1)
