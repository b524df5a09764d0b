"""ServerDialog: the "Local server" switch, its options, its status line and a copyable example.

Every control writes the settings store (server_enabled, server_port, server_api_key,
server_lan); app.server.LocalServer follows the store and starts, restarts or stops the
server, so the switch keeps its state across restarts of the app. Draws only.
"""

from __future__ import annotations

import secrets

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.server.controller import LocalServer
from app.settings_store import SettingsStore


def example_text(url: str, model: str, api_key: str | None) -> str:
    """curl and Python lines that talk to the server as it is configured."""
    key = api_key or "unused"
    auth = f' -H "Authorization: Bearer {api_key}"' if api_key else ""
    return (
        f"curl {url}/chat/completions{auth} -H 'Content-Type: application/json' \\\n"
        f'  -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "stream": true}}\'\n'
        "\n"
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{url}", api_key="{key}")\n'
        f'for chunk in client.chat.completions.create(model="{model}", stream=True,\n'
        '        messages=[{"role": "user", "content": "Hello!"}]):\n'
        '    print(chunk.choices[0].delta.content or "", end="", flush=True)\n'
    )


class ServerDialog(QDialog):
    def __init__(self, server: LocalServer, settings_store: SettingsStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Local server")
        self.server, self.settings_store = server, settings_store
        settings = settings_store.current

        self.switch = QCheckBox("Local server (OpenAI-compatible API for other programs)")
        self.switch.setChecked(settings.server_enabled)
        self.port = QSpinBox()
        self.port.setRange(1024, 65535)
        self.port.setValue(settings.server_port if settings.server_port >= 1024 else 8080)
        self.api_key = QLineEdit(settings.server_api_key or "")
        self.api_key.setPlaceholderText("none: any program on this computer may connect")
        self.api_key.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        new_key = QPushButton("New key")
        new_key.clicked.connect(lambda: self._set_key(secrets.token_urlsafe(24)))
        key_row = QHBoxLayout()
        key_row.addWidget(self.api_key, 1)
        key_row.addWidget(new_key)
        self.lan = QCheckBox("Allow other computers on my network")
        self.lan.setChecked(settings.server_lan)
        self.lan.setToolTip("Off: only programs on this computer can connect. On: set an API key too.")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.example = QPlainTextEdit()
        self.example.setReadOnly(True)
        self.example.setMinimumHeight(140)
        # code keeps its lines (a wrapped curl command reads as two commands); monospace like a terminal
        self.example.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.example.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.example.setMinimumWidth(560)
        copy = QPushButton("Copy example")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.example.toPlainText()))

        form = QFormLayout()
        form.addRow("Port", self.port)
        form.addRow("API key", key_row)
        layout = QVBoxLayout(self)
        layout.addWidget(self.switch)
        layout.addLayout(form)
        layout.addWidget(self.lan)
        layout.addWidget(self.status)
        layout.addWidget(self.example)
        layout.addWidget(copy)

        self.switch.toggled.connect(lambda on: self._update(server_enabled=on))
        self.lan.toggled.connect(lambda on: self._update(server_lan=on))
        self.port.editingFinished.connect(lambda: self._update(server_port=self.port.value()))
        self.api_key.editingFinished.connect(lambda: self._update(server_api_key=self.api_key.text().strip() or None))
        server.statusChanged.connect(self._show_status)
        self._show_status(server.status())

    def _set_key(self, key: str) -> None:
        self.api_key.setText(key)
        self._update(server_api_key=key)

    def _update(self, **changes: object) -> None:
        try:
            self.settings_store.update(**changes)
        except ValueError as error:  # a key with spaces, say: shown, not applied
            self.status.setText(str(error))

    def _show_status(self, text: str) -> None:
        self.status.setText(text)
        model = self.server.backend.model()
        url = self.server.url or f"http://127.0.0.1:{self.port.value()}/v1"
        self.example.setPlainText(
            example_text(url, model.id if model is not None else "MODEL", self.settings_store.current.server_api_key)
        )
