"""Fixtures for the app tests: a private app home, a fake Hub, a loopback-only network guard,
and Models pages (`make_page`).

Every test here gets TMAC_CHAT_HOME and HF_HOME in its own tmp_path, and any
socket connection to a non-loopback address fails, so no test can reach the
internet even by mistake. Must not import PySide6 at module level (the Qt-free
tests share it): the page fixture imports the widgets when it runs.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakehub.server import FakeHub

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and the like are local
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_loopback(address):
        raise ConnectionRefusedError(f"tests/app: network access to {address!r} is blocked (loopback only)")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_loopback(address):
        raise ConnectionRefusedError(f"tests/app: network access to {address!r} is blocked (loopback only)")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def loopback_only_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(autouse=True)
def private_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh app home and Hugging Face home per test; no token, online, no telemetry."""
    monkeypatch.setenv("TMAC_CHAT_HOME", str(tmp_path / "tmac_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # Never the developer's real password store: a test that saves a token must not write to it.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "tmac_home"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub; HF_ENDPOINT points at it. Stopped at the end of the test, whatever happens."""
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def fake_hub_with_cdn(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    hub = FakeHub(cdn_redirect=True).start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def models_page_paths():
    """The app's folders under this test's private TMAC_CHAT_HOME, created."""
    from app.paths import app_paths

    return app_paths().ensure()


@pytest.fixture
def make_page(qtbot, models_page_paths):
    """Models pages with a bandwidth figure already in settings (one test measures it for real);
    each is shut down (its downloads cancelled) after the test."""
    from app import hardware
    from app.settings import AppSettings
    from app.settings_store import SettingsStore
    from app.ui.model_manager import ModelManagerPage

    pages = []

    def make(settings=None):
        settings = settings or AppSettings(memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name())
        page = ModelManagerPage(SettingsStore(settings, models_page_paths.settings_file), models_page_paths)
        qtbot.addWidget(page)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.shutdown()
