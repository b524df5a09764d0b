"""Where the Hugging Face access token is kept: the OS keyring when there is one, else settings.json.

The token opens the user's Hugging Face account, so it belongs in the system's password store
(Keychain, Windows Credential Manager, Secret Service) through the `keyring` package. Where none
is available (no keyring installed, a headless Linux without Secret Service) it falls back to the
plain-text `hf_token` setting, as before, and `FALLBACK_NOTE` says so where the user pastes it.
`migrate_token` moves a token an older version saved in settings.json into the keyring once one
is available. Pure Python: must not import PySide6.
"""

from __future__ import annotations

from typing import Any, Protocol

from app.settings import AppSettings

SERVICE = "T-MAC Chat"
USERNAME = "huggingface-token"
FALLBACK_NOTE = (
    "No system password store (keyring) is available on this computer, so the token is kept in "
    "plain text in this app's settings file, as `hf auth login` does."
)


def _keyring_errors() -> tuple[type[BaseException], ...]:
    """What a keyring backend raises when it cannot serve (locked, no daemon, refused)."""
    try:
        from keyring.errors import KeyringError
    except ImportError:
        return (RuntimeError, OSError)
    return (KeyringError, RuntimeError, OSError)


class Keyring(Protocol):  # the part of the `keyring` module's API used here
    def get_password(self, service_name: str, username: str) -> str | None: ...
    def set_password(self, service_name: str, username: str, password: str) -> None: ...
    def delete_password(self, service_name: str, username: str) -> None: ...


class SettingsUpdater(Protocol):  # app.settings_store.SettingsStore
    @property
    def current(self) -> AppSettings: ...
    def update(self, **changes: Any) -> Any: ...


def system_keyring() -> Keyring | None:
    """The `keyring` module when it is installed and has a working backend, else None."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        keyring.get_password(SERVICE, USERNAME)  # the "fail" backend raises NoKeyringError here
    except _keyring_errors():
        return None
    return keyring


def load_token(settings: AppSettings, backend: Keyring | None) -> str | None:
    """The saved token: the keyring's, else the settings file's."""
    if backend is not None:
        try:
            token = backend.get_password(SERVICE, USERNAME)
        except _keyring_errors():
            token = None
        if token:
            return token
    return settings.hf_token


def save_token(token: str, store: SettingsUpdater, backend: Keyring | None) -> bool:
    """Keep `token`; True when it went to the keyring, False when to settings.json (the fallback).

    A token in the keyring is removed from settings.json, so it is never in both places.
    """
    if backend is not None:
        try:
            backend.set_password(SERVICE, USERNAME, token)
        except _keyring_errors():
            pass  # refused (locked, no daemon): the settings-file fallback below
        else:
            if store.current.hf_token is not None:
                store.update(hf_token=None)
            return True
    store.update(hf_token=token)
    return False


def migrate_token(store: SettingsUpdater, backend: Keyring | None) -> bool:
    """Move a plain-text token from settings.json into the keyring; True when one was moved."""
    token = store.current.hf_token
    if token is None or backend is None:
        return False
    return save_token(token, store, backend)
