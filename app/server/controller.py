"""LocalServer: the app's "Local server" switch, following the settings store.

The switch and its options (port, API key, "allow other computers on my network") are
settings (app/settings.py: server_*); this object starts the server when they say on,
restarts it when an option changes, and stops it on quit. The server itself runs on its
own thread (tmac_core.server.ServerThread) over a WindowBackend, so the window's engine
answers both the window and the server. `status` says where it listens and how busy it
is, refreshed once a second for the panel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal

from app.server.window_backend import WindowBackend
from app.settings import AppSettings
from app.settings_store import SettingsStore
from app.workers.engine_client import EngineClient

if TYPE_CHECKING:  # Starlette and Uvicorn load when the switch is first turned on, not with the window
    from tmac_core.server.run import ServerThread

SERVER_FIELDS = frozenset({"server_enabled", "server_port", "server_api_key", "server_lan"})
LOOPBACK, ALL_INTERFACES = "127.0.0.1", "0.0.0.0"
STATUS_MS = 1000


class LocalServer(QObject):
    statusChanged = Signal(str)  # a line for the user

    def __init__(self, client: EngineClient, settings_store: SettingsStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings_store = settings_store
        self.backend = WindowBackend(client, self)
        self.server_thread: ServerThread | None = None
        self.error: str | None = None  # why the last start failed
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._report)
        self._unsubscribe = settings_store.subscribe(self._on_settings)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)
        if settings_store.current.server_enabled:
            self.start()

    @property
    def running(self) -> bool:
        return self.server_thread is not None

    @property
    def url(self) -> str | None:
        return self.server_thread.url if self.server_thread is not None else None

    def start(self) -> None:
        from tmac_core.server.app import ServerConfig
        from tmac_core.server.run import ServerThread

        self.stop()
        settings = self.settings_store.current
        config = ServerConfig(
            host=ALL_INTERFACES if settings.server_lan else LOOPBACK,
            port=settings.server_port,
            api_key=settings.server_api_key or None,
        )
        try:
            self.server_thread = ServerThread(self.backend, config)
            self.error = None
        except OSError as error:  # the port is taken, the address is not ours
            self.server_thread = None
            self.error = f"Could not listen on port {settings.server_port}: {error.strerror or error}"
        self._timer.start(STATUS_MS)
        self._report()

    def stop(self) -> None:
        thread, self.server_thread = self.server_thread, None
        if thread is not None:
            self.backend.abandon()
            thread.stop()
        self._timer.stop()
        self._report()

    def close(self) -> None:
        self.stop()
        self._unsubscribe()

    def status(self) -> str:
        if self.server_thread is None:
            return self.error or "Off"
        stats = self.server_thread.server.stats
        where = self.server_thread.url
        settings = self.settings_store.current
        if settings.server_lan:
            where += " and on this computer's network address"
            if not settings.server_api_key:
                where += " (no API key: anyone on your network may use it)"
        model = self.backend.model()
        waiting = "" if model is not None else " · no model loaded yet"
        clients = "client" if stats.clients == 1 else "clients"
        return f"Serving at {where} · {stats.requests} requests served · {stats.clients} {clients} connected{waiting}"

    def _report(self) -> None:
        self.statusChanged.emit(self.status())

    def _on_settings(self, settings: AppSettings, changed: frozenset[str]) -> None:
        if not changed & SERVER_FIELDS:
            return
        if settings.server_enabled:
            self.start()
        else:
            self.stop()
