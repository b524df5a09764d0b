"""MainWindow: wires the chat widgets to ChatSession and EngineClient, and all of them to the SettingsStore.

Layout: a "Chat" tab (chats sidebar | banners, conversation, composer | live
performance and sampling settings) and a "Models" tab (ModelManagerPage).
Menus reach the speed sweep, the 2-bit/4-bit comparison and "About this
computer". Nothing here waits for the engine: every engine event arrives as a
signal. An engine crash shows a banner and restarts the engine once by itself
(a second crash before an answer completes leaves it to the banner's "Restart
engine"); an engine that stops answering (EngineClient.stalled) gets the same
offer.

Settings: the window, its panels, the Models page and the dialogs share one
app.settings_store.SettingsStore; each writes its changes there and follows the
changes it cares about (threads reach the engine, the theme restyles). The store
saves after a short pause; closing the window writes what is pending. A chat's own
system prompt and sampling live in its ChatStore row (the sampling panel).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.catalog.catalog import bits_label
from app.catalog.installed import list_installed
from app.catalog.inventory import EMBEDDED_ID, ModelSwitch, two_bit_warning
from app.catalog.messages import explain
from app.chat.errors import ConversationNotFoundError
from app.chat.store import ChatStore
from app.hardware import available_memory_bytes
from app.paths import AppPaths
from app.power.readers import PowerMeter
from app.server.controller import LocalServer
from app.settings import ZOOM_MAX, ZOOM_MIN, AppSettings
from app.settings_store import SettingsStore
from app.ui.about import AboutDialog
from app.ui.banner import Banner
from app.ui.chat_view import ChatView
from app.ui.compare import CompareDialog
from app.ui.composer import Composer
from app.ui.conversation_list import ConversationList
from app.ui.download_indicator import DownloadIndicator
from app.ui.input_guard import install_input_guard
from app.ui.measure import MeasureDialog
from app.ui.model_manager import ModelManagerPage
from app.ui.perf_panel import PerfPanel
from app.ui.sampling_panel import SamplingPanel, context_is_automatic
from app.ui.server_panel import ServerDialog
from app.ui.theme import apply_theme, resolve_theme
from app.workers.chat_session import ChatSession
from app.workers.engine_client import EngineClient, default_thread_count
from app.workers.engine_host import source_bytes
from app.workers.protocol import LOAD_CANCELLED, EngineState

PURGE_DELETED_AFTER_S = 7 * 86400
# Below these window widths a side panel folds away by itself, so the conversation keeps a readable
# width (at 900 px the three columns left the messages ~340 px); the View menu brings it back.
AUTO_HIDE_SIDE_BELOW = 1000
AUTO_HIDE_CHATS_BELOW = 760
AUTO_RESTART_DELAY_MS = 1500  # after a crash: time to read the banner before the engine comes back
ZOOM_STEP = 0.1  # View → Zoom in / out: 10% of the normal text size per step
STATE_TEXT = {
    EngineState.STOPPED: "Engine stopped",
    EngineState.STARTING: "Starting the engine…",
    EngineState.LOADING: "Loading the model…",
    EngineState.READY: "Ready",
    EngineState.GENERATING: "Writing…",
    EngineState.DEAD: "Engine stopped unexpectedly",
}


class FittedScrollArea(QScrollArea):
    """A vertical scroll area as tall as its content when there is room, and scrolling when there is
    not: the performance panel stays fully in view in a normal window, yet a short window (900×600)
    is not forced taller than the screen by it."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 (Qt's name)
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        # A content that grows (longer figures) asks its parent for a new layout; pass that on, so the
        # splitter gives the column the width it now needs instead of the scroll area clipping it.
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        content = self.widget()
        if content is None:
            return super().sizeHint()
        hint = content.sizeHint()
        return QSize(hint.width() + self.verticalScrollBar().sizeHint().width(), hint.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        content = self.widget()
        width = content.minimumSizeHint().width() if content is not None else 0
        return QSize(width + self.verticalScrollBar().sizeHint().width(), 120)


class MainWindow(QMainWindow):
    _settingsSaveFailed = Signal(str)  # from the settings store's save thread

    def __init__(
        self,
        settings_store: SettingsStore,
        paths: AppPaths,
        store: ChatStore,
        *,
        client: EngineClient | None = None,
        power_meter: PowerMeter | None = None,
        settings_problems: list[str] | None = None,
    ) -> None:
        super().__init__()
        app = QApplication.instance()
        if app is not None:
            install_input_guard(app)  # Tab leaves text boxes; the wheel scrolls past unfocused spin boxes
        self.setWindowTitle("T-MAC Chat")
        self.setObjectName("mainWindow")
        self.resize(1320, 840)
        self.settings_store = settings_store
        self.paths = paths
        self.store = store
        self.dark = resolve_theme(self.settings.theme) == "dark"
        self.client = client or EngineClient(self, cache_dir=paths.engine_cache_dir)
        self.session = ChatSession(store, self.client, lambda: self.settings, self)
        self.local_server = LocalServer(self.client, settings_store, self)  # on when the settings say so
        self._dialogs: list = []
        self._switch = ModelSwitch()  # which model to keep when a new one fails (see _fall_back)
        self._queued_text: str | None = None  # a message sent while the model loads
        # A side panel the user showed or hid stays that way; until then it follows the window's width.
        self._panel_chosen = {"chats": False, "side": False}
        self._auto_restart_used = False  # reset by the next answer that completes
        self._auto_restart = QTimer(self, singleShot=True, interval=AUTO_RESTART_DELAY_MS)
        self._auto_restart.timeout.connect(self._restart_after_crash)
        self._crash_reason = ""

        self._build_chat_page(power_meter)
        self.models_page = ModelManagerPage(settings_store, paths, self)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("mainTabs")
        self.tabs.setAccessibleName("Pages")
        self.tabs.addTab(self.chat_page, "Chat")
        # In a scroll area, so the Models page's widest card does not set the smallest width of the
        # whole window (the chat page folds its panels to fit; this page scrolls sideways instead).
        models_scroll = QScrollArea()
        models_scroll.setObjectName("modelsScroll")
        models_scroll.setWidgetResizable(True)
        models_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        models_scroll.setWidget(self.models_page)
        self.models_tab = models_scroll  # the tab's widget: the page sits in a scroll area
        self.tabs.addTab(models_scroll, "Models")
        self.setCentralWidget(self.tabs)
        self._build_status_bar()
        show_models = lambda: self.tabs.setCurrentWidget(self.models_tab)  # noqa: E731
        self.download_indicator = DownloadIndicator.for_page(self.models_page, self.statusBar(), show_models)
        self._build_menus()
        self._connect()

        store.purge_deleted(older_than_s=PURGE_DELETED_AFTER_S)
        self._show_startup_notes(settings_problems or [])
        recent = store.list_conversations()
        if recent:
            self.session.open_conversation(recent[0].id)
        else:
            self.conversations.refresh()
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._on_color_scheme_changed)

    # ---- building -----------------------------------------------------------------------------

    def _build_chat_page(self, power_meter: PowerMeter | None) -> None:
        self.conversations = ConversationList(self.store)
        self.engine_banner = Banner("Engine status")
        self.notice_banner = Banner("Notice")
        self.chat_view = ChatView(dark=self.dark)
        self.composer = Composer()
        self.chat_title = QLabel()
        self.chat_title.setObjectName("chatTitle")
        self.chat_title.setAccessibleName("Chat title")
        self.chat_title.setTextFormat(Qt.TextFormat.PlainText)
        self.chat_title.setMinimumWidth(1)  # a long title is cut by the header, not the window
        self.context_label = QLabel()
        self.context_label.setObjectName("contextUsage")
        self.context_label.setAccessibleName("Context used")
        self.context_label.setToolTip(
            "Tokens of the last prompt and answer / tokens the model's context holds. "
            "When a chat outgrows the context, its oldest messages are left out."
        )
        header = QWidget()
        header.setObjectName("chatHeader")
        header_layout = QHBoxLayout(header)
        header_layout.setContentsMargins(24, 6, 24, 0)
        header_layout.addWidget(self.chat_title, 1)
        header_layout.addWidget(self.context_label)
        self._context_used: int | None = None
        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.setSpacing(4)
        center_layout.addWidget(header)
        center_layout.addWidget(self.engine_banner)
        center_layout.addWidget(self.notice_banner)
        center_layout.addWidget(self.chat_view, 1)
        center_layout.addWidget(self.composer)

        self.perf_panel = PerfPanel(power_meter, self.settings_store, default_threads=default_thread_count())
        self.sampling_panel = SamplingPanel(self.settings_store, self.store)
        side = self.side_panel = QWidget()
        side.setObjectName("sidePanel")
        side.setAccessibleName("Performance and settings")
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        perf_scroll = FittedScrollArea()
        perf_scroll.setObjectName("perfScroll")
        perf_scroll.setWidget(self.perf_panel)
        perf_scroll.setAccessibleName("Performance")
        side_layout.addWidget(perf_scroll)
        settings_scroll = QScrollArea()
        settings_scroll.setWidgetResizable(True)
        settings_scroll.setWidget(self.sampling_panel)
        settings_scroll.setAccessibleName("Sampling settings")
        side_layout.addWidget(settings_scroll, 1)  # scrolls; the performance panel above always stays in view

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.conversations)
        self.splitter.addWidget(center)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, 760, 310])
        self.splitter.setChildrenCollapsible(False)
        self.chat_page = QWidget()
        self.chat_page.setObjectName("chatPage")
        page_layout = QVBoxLayout(self.chat_page)
        page_layout.setContentsMargins(0, 0, 0, 0)
        page_layout.addWidget(self.splitter)

    def _build_status_bar(self) -> None:
        self.state_label = QLabel(STATE_TEXT[EngineState.STOPPED])
        self.state_label.setAccessibleName("Engine state")
        self.model_label = QLabel()
        self.model_label.setAccessibleName("Loaded model")
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Model loading progress")
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(False)
        self.progress.hide()
        bar = self.statusBar()
        bar.addWidget(self.state_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self.new_chat_action = self._action(file_menu, "&New chat", self.new_chat, QKeySequence.StandardKey.New)
        self._action(file_menu, "&Export chat…", self.conversations.export_with_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        edit_menu = menu.addMenu("&Edit")
        self._action(edit_menu, "&Search chats", self.conversations.focus_search, QKeySequence.StandardKey.Find)
        view_menu = menu.addMenu("&View")
        self.chats_action = self._action(
            view_menu, "&Chat list", lambda on: self._choose_panel("chats", on), QKeySequence("Ctrl+Shift+L")
        )
        self.side_action = self._action(
            view_menu,
            "&Performance and settings",
            lambda on: self._choose_panel("side", on),
            QKeySequence("Ctrl+Shift+P"),
        )
        for action in (self.chats_action, self.side_action):
            action.setCheckable(True)
            action.setChecked(True)
        view_menu.addSeparator()
        for label, step, zoom_keys in (
            ("Zoom &in", ZOOM_STEP, (QKeySequence(QKeySequence.StandardKey.ZoomIn), QKeySequence("Ctrl+="))),
            ("Zoom &out", -ZOOM_STEP, (QKeySequence(QKeySequence.StandardKey.ZoomOut),)),
            ("&Actual size", 0.0, (QKeySequence("Ctrl+0"),)),
        ):
            action = self._action(view_menu, label, lambda _=False, s=step: self.zoom_by(s))
            action.setShortcuts(list(zoom_keys))
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        group = QActionGroup(self)
        for choice, label in (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark")):
            action = self._action(theme_menu, label, lambda _=False, c=choice: self.set_theme(c))
            action.setCheckable(True)
            action.setChecked(self.settings.theme == choice)
            group.addAction(action)
        engine_menu = menu.addMenu("E&ngine")
        self._action(engine_menu, "&Stop answer", self._on_composer_stop, QKeySequence(Qt.Key.Key_Escape))
        self._action(engine_menu, "&Restart engine", self.restart_engine)
        tools_menu = menu.addMenu("&Tools")
        self._action(tools_menu, "&Measure speed vs threads…", self.open_measure)
        self._action(tools_menu, "&Compare 2-bit vs 4-bit…", self.open_compare)
        self._action(
            tools_menu,
            "&Local server…",
            lambda: self._keep_open(ServerDialog(self.local_server, self.settings_store, self)),
        )
        help_menu = menu.addMenu("&Help")
        self._action(help_menu, "&About this computer…", self.open_about)
        # Ctrl+Enter sends from anywhere in the window (Enter already sends inside the prompt box).
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.composer.submit)

    def _panel(self, name: str) -> tuple[QWidget, QAction]:
        return (self.conversations, self.chats_action) if name == "chats" else (self.side_panel, self.side_action)

    def _choose_panel(self, name: str, visible: bool) -> None:
        """The user showed or hid a side panel (View menu or its shortcut)."""
        self._panel_chosen[name] = True
        self._show_panel(name, visible)

    def _show_panel(self, name: str, visible: bool) -> None:
        widget, action = self._panel(name)
        if widget.isVisibleTo(self.splitter) != visible:
            widget.setVisible(visible)
        if action.isChecked() != visible:
            action.setChecked(visible)  # checked state only; `triggered` is the user's choice

    def _fit_panels_to_width(self) -> None:
        if not hasattr(self, "side_action"):
            return  # a resize while the window is still being built
        width = self.width()
        for name, below in (("side", AUTO_HIDE_SIDE_BELOW), ("chats", AUTO_HIDE_CHATS_BELOW)):
            if not self._panel_chosen[name]:
                self._show_panel(name, width >= below)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit_panels_to_width()

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _connect(self) -> None:
        session, client = self.session, self.client
        session.conversationChanged.connect(self._on_session_conversation_changed)
        session.historyChanged.connect(self._reload_messages)
        session.messageAdded.connect(self._on_session_message_added)
        session.answerText.connect(self.chat_view.append_text)
        session.answerChunk.connect(self.perf_panel.show_chunk)
        session.answerChunk.connect(self._on_answer_chunk)
        session.answerFinished.connect(self.chat_view.finish_message)
        session.answerResumed.connect(self.chat_view.resume_message)
        session.busyChanged.connect(self._on_session_busy)
        session.notice.connect(self._on_session_notice)
        client.stateChanged.connect(self._on_client_state)
        client.loadStatus.connect(self._on_client_progress)
        self.chat_view.loading_card.cancelRequested.connect(self.client.cancel_load)
        client.loaded.connect(self._on_client_loaded)
        client.loadFailed.connect(self._on_client_load_failed)
        client.died.connect(self._on_client_died)
        client.stalled.connect(self._on_client_stalled)
        client.resumed.connect(self._on_client_resumed)
        client.switchFailed.connect(self._on_switch_failed)
        client.cacheDamaged.connect(
            lambda _detail: self.notice_banner.show_message(
                "error", "The model's prepared copy on disk was damaged, so it is being prepared again."
            )
        )
        session.answerFinished.connect(self._on_answer_finished)
        self.chat_view.continueRequested.connect(self.continue_answer)
        self.composer.sendRequested.connect(self._on_composer_send)
        self.composer.stopRequested.connect(self._on_composer_stop)
        self.chat_view.regenerateRequested.connect(session.regenerate)
        self.chat_view.editSubmitted.connect(session.edit_and_resend)
        self.chat_view.versionRequested.connect(session.show_version)
        self.chat_view.undoRequested.connect(session.undo_edit)
        session.versionShown.connect(self.chat_view.replace_message)
        session.undoOffered.connect(self.chat_view.show_undo)
        self.conversations.conversationActivated.connect(self._open_conversation)
        self.conversations.searchHitActivated.connect(self._on_search_hit)
        self.conversations.newRequested.connect(self.new_chat)
        self.conversations.conversationDeleted.connect(self._on_conversation_deleted)
        self.sampling_panel.reloadRequested.connect(self.start_engine)
        self.models_page.modelChosen.connect(self.load_model)
        self._settingsSaveFailed.connect(
            lambda text: self.statusBar().showMessage(f"Settings could not be saved: {text}", 10000)
        )
        unsubscribe = self.settings_store.subscribe(self._on_settings_changed)
        stop_errors = self.settings_store.on_save_error(lambda error: self._settingsSaveFailed.emit(str(error)))
        self.destroyed.connect(lambda *_: (unsubscribe(), stop_errors()))

    # ---- engine -------------------------------------------------------------------------------

    def start_engine(self) -> None:
        """Load the model from the settings in a fresh engine process."""
        self._load(*self._switch.request(self.settings.model_source, self.settings.default_bits))

    def load_model(self, source: str, bits: int | None) -> None:
        """Load `source` at `bits` (None: as in the file; 2 or 4: repacked)."""
        # saved as the model to load at the next start only once it has loaded (_remember_loaded)
        self._load(*self._switch.request(source, bits))
        self.tabs.setCurrentWidget(self.chat_page)

    def _load(self, source: str, bits: int | None) -> None:
        self._auto_restart.stop()
        self.engine_banner.hide()
        n_ctx = None if context_is_automatic(self.settings) else self.settings.n_ctx  # None: the engine chooses
        n_threads = self.settings.n_threads or default_thread_count()
        sha256 = self._known_sha256(source)
        exact = source in self.settings.exact_activation_models  # the model card's option
        if self._switch_alongside(source, bits, n_ctx, n_threads, sha256, exact):
            return
        self.client.load(source, bits, n_ctx=n_ctx, n_threads=n_threads, source_sha256=sha256, exact_activations=exact)

    def _switch_alongside(
        self, source: str, bits: int | None, n_ctx: int | None, n_threads: int, sha256: str | None, exact: bool
    ) -> bool:
        """Load another model in a second engine process while the current one keeps answering, when
        free memory holds both (EngineClient.switch); False: the caller loads it the usual way."""
        try:  # the new model's weights (≈ its source) plus a KV cache like the current one's
            need = source_bytes(source) + (self.client.info.kv_cache_bytes if self.client.info else 0)
        except OSError:
            return False  # a missing file: the usual load reports it
        free = available_memory_bytes()
        if not self.client.switch(
            source, bits, n_ctx, n_threads, sha256, need_bytes=need, free_bytes=free, exact_activations=exact
        ):
            return False
        name = "the built-in model" if source == EMBEDDED_ID else Path(source).name

        def cancel() -> None:
            self.client.cancel_load()

        self.engine_banner.show_message(
            "info",
            f"Loading {name}; the current model keeps answering until it is ready.",
            "Cancel",
            cancel,
            tag="switching",
        )
        return True

    def _on_switch_failed(self, kind: str, text: str) -> None:
        """The model loaded alongside did not load: the current one simply stays (nothing to reload)."""
        failed, self._switch.pending = self._switch.pending, None
        self.state_label.setText(STATE_TEXT[self.client.state])  # no longer "Loading the model…"
        if kind == LOAD_CANCELLED:
            self.engine_banner.hide()
            self.statusBar().showMessage("Loading was cancelled; the current model stays.", 10000)
            return
        if failed is not None:
            self._switch.failed_choice = failed
            self.models_page.mark_load_failed(failed[0], kind, text)
        if self.client.state == EngineState.DEAD:  # the current one died meanwhile: bring it back
            self.restart_engine()
            return
        self.engine_banner.show_message(
            "error", f"The model could not be loaded: {explain(kind, text).text} The current model stays loaded."
        )

    def _known_sha256(self, source: str) -> str | None:
        """The file's sha256 from its install manifest, so the engine need not re-read a multi-GB file.
        None for the embedded model and for a referenced import (its file is outside our folder and
        may have changed since): the engine then hashes the file itself."""
        if source == "default":
            return None
        target = Path(source).resolve()
        for model in list_installed(self.models_page.models_dir):
            if model.source != "import-reference" and model.path.resolve() == target:
                digest = model.sha256
                return digest if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None
        return None

    def restart_engine(self) -> None:
        self._auto_restart.stop()
        self.engine_banner.hide()
        if self.client.state == EngineState.STOPPED and self.client.info is None:
            self.start_engine()
        else:
            self.client.restart()

    def _on_client_state(self, state: EngineState) -> None:
        self.state_label.setText(STATE_TEXT[state])
        ready = state in (EngineState.READY, EngineState.GENERATING)
        loading = state in (EngineState.STARTING, EngineState.LOADING)
        self.composer.set_ready(ready, "" if ready else STATE_TEXT[state], can_queue=loading)
        if loading:
            self.progress.setValue(0)
            self.progress.show()
            self.chat_view.show_loading(0.0, "")
        else:
            self.progress.hide()
            self.chat_view.hide_loading()
        if state == EngineState.READY and self._queued_text is not None:
            text, self._queued_text = self._queued_text, None
            self.composer.set_queued(False)
            self._on_composer_send(text)  # the message typed while the model loaded
        elif not loading and not ready and self._queued_text is not None:
            self._cancel_queued()  # the load failed: the text stays in the box for the user

    def _on_client_progress(self, status) -> None:  # app.workers.protocol.Progress
        self.progress.setValue(int(status.fraction * 1000))
        self.state_label.setText(f"Loading the model: {status.stage}…")
        if not self.client.switching:  # a switch loads alongside: the chat stays usable, no loading card
            self.chat_view.show_load_status(status)

    def _on_client_loaded(self, info) -> None:
        if self.engine_banner.tag == "switching":
            self.engine_banner.hide()
        self._remember_loaded(info)
        self.perf_panel.set_engine_info(info)
        self.sampling_panel.mark_context_loaded(info.n_ctx, automatic=context_is_automatic(self.settings))
        self._show_context()
        threads = f"{info.n_threads} thread{'s' if info.n_threads != 1 else ''}"
        precision = f"{bits_label(info.bits)}, {info.bits_per_weight:.1f} bits/weight"
        self.model_label.setText(f"{info.name} · {precision} · {info.tier} · {threads}")
        self.models_page.set_active_model(self.settings.model_source, info.bits)
        self.perf_panel.set_threads(info.n_threads)
        # Whichever way a small model came to run at 2 bits (the Models page, saved settings), say why its
        # answers may be nonsense; in the engine banner, which stays up while chatting, and never blocks.
        warning = two_bit_warning(info.n_params, self.models_page.alternative) if info.bits == 2 else ""
        if warning:
            source = self.settings.model_source
            self.engine_banner.show_message("warning", warning, "Load at 4-bit", lambda: self.load_model(source, 4))

    def _on_client_load_failed(self, kind: str, text: str) -> None:
        if kind == LOAD_CANCELLED:
            self._after_cancelled_load()
            return
        if self._fall_back(kind, text):
            return
        self.engine_banner.show_message(
            "error",
            f"The model could not be loaded: {explain(kind, text).text}",
            "Load the built-in model",
            lambda: self.load_model("default", 4),
        )

    def _after_cancelled_load(self) -> None:
        """The user cancelled a load: not a failure (the card is not marked). The model loaded
        before comes back (from its cache file, in a second or so), else nothing is loaded."""
        cancelled, self._switch.pending = self._switch.pending, None
        previous = self._switch.last_good
        if previous is not None and previous != cancelled:
            self._load(*self._switch.request(*previous))
            self.statusBar().showMessage("Loading was cancelled; the previous model is loaded again.", 10000)
        elif cancelled is not None:
            self.engine_banner.show_message(
                "info", "Loading the model was cancelled.", "Load it", lambda: self.load_model(*cancelled)
            )

    def _on_client_died(self, reason: str) -> None:
        if self.client.switching:  # the model being loaded alongside takes over when ready (or restart then)
            self.engine_banner.show_message(
                "error",
                "The engine stopped unexpectedly; the model being loaded takes over when it is ready.",
                details=reason,
            )
            return
        if self._switch.pending is not None and self._fall_back("engine_died", reason):
            return  # it died loading a new model (out of memory, killed): the last good one is back
        # the plain sentence up front; the signal or exit code behind Details (for a bug report)
        text = f"{explain('engine_died').text} Any answer in progress was saved up to where it stopped."
        if not self._auto_restart_used:  # once; a crash again before an answer completes waits for the user
            self._auto_restart_used = True
            self._crash_reason = reason
            self._auto_restart.start()
            text += " Restarting it…"
        self.engine_banner.show_message("error", text, "Restart engine", self.restart_engine, details=reason)

    def _restart_after_crash(self) -> None:
        if self.client.state != EngineState.DEAD:
            return  # restarted or loaded meanwhile
        self.restart_engine()
        self.engine_banner.show_message(
            "info",
            "The engine stopped unexpectedly and was restarted. Your chats are fine.",
            details=self._crash_reason,
        )

    def _on_client_stalled(self, silent_s: float) -> None:
        doing = "loading the model" if self.client.state == EngineState.LOADING else "answering"
        self.engine_banner.show_message(
            "warning",
            f"The engine has not responded for {silent_s:.0f} s while {doing}. It may be stuck; "
            "restarting it keeps your chats (an answer in progress is saved up to where it stopped).",
            "Restart engine",
            self.restart_engine,
            tag="stalled",
        )

    # ---- switching models safely (app.catalog.inventory.ModelSwitch) --------------------------

    def _remember_loaded(self, info) -> None:
        """Save the model that just loaded as the one to load at the next start: never one that failed."""
        done = self._switch.loaded()
        if done is not None and (self.settings.model_source, self.settings.default_bits) != (done[0], info.bits):
            self.settings_store.update(model_source=done[0], default_bits=info.bits)

    def _fall_back(self, kind: str, detail: str) -> bool:
        """After the model being loaded failed: mark its card and reload the last good model (else the
        built-in one). False when there is nothing to fall back to (the caller shows the failure)."""
        failed = self._switch.pending
        fallback = self._switch.failed()
        if failed is None:
            return False
        self.models_page.mark_load_failed(failed[0], kind, detail)
        if fallback is None:
            return False
        self._load(*self._switch.request(*fallback))
        name = lambda source: "The built-in model" if source == EMBEDDED_ID else Path(source).name  # noqa: E731
        self.engine_banner.show_message(
            "error",
            f"{name(failed[0])} could not be loaded: {explain(kind, detail).text} "
            f"{name(fallback[0])} ({fallback[1]}-bit) is being loaded again instead; the Models page has the details.",
            "Show models",
            lambda: self.tabs.setCurrentWidget(self.models_tab),
        )
        return True

    def _on_client_resumed(self) -> None:
        if self.engine_banner.tag == "stalled" and self.engine_banner.isVisible():
            self.engine_banner.hide()

    def _on_answer_finished(self, message) -> None:
        if message.state == "complete":
            self._auto_restart_used = False  # the engine works again: a later crash may restart it once more

    def continue_answer(self, message_id: int) -> None:
        """After an answer cut at max tokens: the model goes on, appending to that answer (the draft stays)."""
        self.session.continue_answer(message_id)

    # ---- chat ---------------------------------------------------------------------------------

    def new_chat(self) -> None:
        if self.session.busy:
            self.session.stop()
        self.notice_banner.hide()
        self.session.new_conversation()
        self.composer.prompt.setFocus()

    def _open_conversation(self, conversation_id: int) -> None:
        if self.session.busy:
            self.session.stop()
        self.notice_banner.hide()
        self.session.open_conversation(conversation_id)

    def _on_search_hit(self, conversation_id: int, message_id: int) -> None:
        if conversation_id != self.session.conversation_id:
            self._open_conversation(conversation_id)
        if message_id:
            QTimer.singleShot(50, self, lambda: self.chat_view.scroll_to_message(message_id))

    def _on_conversation_deleted(self, conversation_id: int) -> None:
        if conversation_id == self.session.conversation_id:
            self.session.stop()
            self.session.open_conversation(0)

    def _on_session_conversation_changed(self, conversation_id: int) -> None:
        self.conversations.set_current(conversation_id)
        self.sampling_panel.show_conversation(conversation_id)
        self._reload_messages(conversation_id)

    def _reload_messages(self, conversation_id: int) -> None:
        messages = self.store.list_messages(conversation_id) if conversation_id else []
        self.chat_view.set_messages(messages)
        self._show_title()
        last = next((m.stats for m in reversed(messages) if m.role == "assistant" and m.stats.prompt_tokens), None)
        self._context_used = None if last is None else (last.prompt_tokens or 0) + (last.generated_tokens or 0)
        self._show_context()
        self.perf_panel.show_conversation(conversation_id, last)

    def _show_title(self) -> None:
        title = ""
        if self.session.conversation_id:
            try:
                title = self.store.get_conversation(self.session.conversation_id).title
            except ConversationNotFoundError:
                pass
        self.chat_title.setText(title or "New chat")

    def _on_answer_chunk(self, chunk) -> None:
        if chunk.finish_reason is not None:
            self._context_used = chunk.prompt_tokens + chunk.generated_tokens
            self._show_context()

    def _show_context(self) -> None:
        """ "Context 1,234 / 8,192": the last prompt and answer against what the model can see."""
        info = self.client.info
        if info is None:
            self.context_label.setText("")
            return
        used = "–" if self._context_used is None else f"{self._context_used:,}"
        self.context_label.setText(f"Context {used} / {info.n_ctx:,} tokens")
        full = self._context_used is not None and self._context_used > info.n_ctx * 0.9
        self.context_label.setProperty("full", full)
        self.context_label.style().unpolish(self.context_label)
        self.context_label.style().polish(self.context_label)

    def _on_session_message_added(self, message) -> None:
        self.chat_view.add_message(message)
        if message.role == "user":
            self.conversations.refresh()  # the first message names the chat
            self._show_title()

    def _on_session_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.chat_view.set_busy(busy)
        if busy:
            self.notice_banner.hide()
            self.perf_panel.answer_started(self.session.conversation_id)

    def _on_session_notice(self, kind: str, text: str) -> None:
        self.notice_banner.show_message(
            "info" if kind in ("trimmed", "template", "saved", "waiting") else "error", text
        )

    def _on_composer_send(self, text: str) -> None:
        self.sampling_panel.save_now()  # a system prompt still being typed applies to this message
        if self.client.state in (EngineState.STARTING, EngineState.LOADING):
            self._queued_text = text  # sent when the model is ready (_on_client_state), never dropped
            self.composer.set_queued(True)
            return
        if self.session.send(text):
            self.composer.clear()

    def _on_composer_stop(self) -> None:
        if self._queued_text is not None:
            self._cancel_queued()
        else:
            self.session.stop()

    def _cancel_queued(self) -> None:
        self._queued_text = None
        self.composer.set_queued(False)

    # ---- dialogs ------------------------------------------------------------------------------

    def _keep_open(self, dialog) -> None:
        self._dialogs.append(dialog)
        dialog.finished.connect(lambda _result: self._dialogs.remove(dialog))
        dialog.show()

    def open_measure(self) -> None:
        self._keep_open(
            MeasureDialog(self.settings_store, self.paths, self.settings.model_source, self.settings.default_bits, self)
        )

    def open_compare(self) -> None:
        self._keep_open(CompareDialog(self.settings_store, self.paths, self.settings.model_source, self))

    def open_about(self) -> None:
        self._keep_open(AboutDialog(self.settings_store, self.paths, self))

    # ---- settings and theme -------------------------------------------------------------------

    @property
    def settings(self) -> AppSettings:
        """The app's current settings (the store's; never a copy kept here)."""
        return self.settings_store.current

    def _on_settings_changed(self, settings: AppSettings, changed: frozenset[str]) -> None:
        if "n_threads" in changed and settings.n_threads:
            self.client.set_threads(settings.n_threads)  # from the slider or the speed sweep; applies mid-answer
        if "theme" in changed or "zoom" in changed:
            self._restyle()

    def set_theme(self, choice: str) -> None:
        self.settings_store.update(theme=choice)

    def zoom_by(self, step: float) -> None:
        """Text size: `step` up or down (0: back to 100%), kept within the settings' range and saved."""
        zoom = 1.0 if step == 0 else min(ZOOM_MAX, max(ZOOM_MIN, round(self.settings.zoom + step, 2)))
        if zoom != self.settings.zoom:
            self.settings_store.update(zoom=zoom)
            self.statusBar().showMessage(f"Zoom {zoom:.0%}", 2000)

    def _on_color_scheme_changed(self, _scheme) -> None:
        if self.settings.theme == "system":
            self._restyle()

    def _restyle(self) -> None:
        app = QApplication.instance()
        if not isinstance(app, QApplication):
            return  # no widgets without a QApplication; nothing to restyle
        self.dark = apply_theme(app, self.settings.theme, self.settings.zoom) == "dark"
        self.chat_view.dark = self.dark
        self._reload_messages(self.session.conversation_id)  # code blocks pick their highlight colours

    def _show_startup_notes(self, problems: list[str]) -> None:
        notes = list(problems)
        if self.store.recovered_message_ids:
            count = len(self.store.recovered_message_ids)
            notes.append(
                f"{count} answer{'s were' if count > 1 else ' was'} cut off when the app last stopped; "
                "the text written so far was kept."
            )
        if notes:
            self.notice_banner.show_message("info", " ".join(notes))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.session.close()
        try:
            self.settings_store.flush()
        except OSError as error:  # the window is going away: say it where it can still be read
            print(f"T-MAC Chat: settings could not be saved: {error}", file=sys.stderr)
        for dialog in list(self._dialogs):
            dialog.close()
        self.local_server.close()
        self.client.shutdown()
        super().closeEvent(event)
