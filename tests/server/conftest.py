"""Fixtures for the server tests: the embedded model in this process, and servers on loopback ports.

`engine_backend` loads SmolLM2 once per session (its repacked copy in a session
folder) behind an EngineBackend; `serve(**config)` starts a ServerThread on a free
loopback port and stops it after the test. `post` and `get` speak plain HTTP
(http.client), so the tests see the exact status codes, headers and bytes. `window`
is the app side: a real engine process with the model loaded, and its LocalServer.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

N_CTX = 512  # small, so "prompt past the context" is a short request


@pytest.fixture(scope="session")
def repacked_dir(tmp_path_factory):
    """The session's repacked-model cache: only the first load repacks."""
    return tmp_path_factory.mktemp("repacked")


@pytest.fixture(scope="session")
def engine_backend(repacked_dir):
    from tmac_core.engine import Engine
    from tmac_core.server.backend import EngineBackend

    engine = Engine.load("default", n_ctx=N_CTX, cache_dir=repacked_dir)
    backend = EngineBackend(engine)
    yield backend
    backend.close()
    engine.close()


@pytest.fixture
def serve(engine_backend) -> Iterator[Callable[..., Any]]:
    from tmac_core.server.app import ServerConfig
    from tmac_core.server.run import ServerThread

    started = []

    def start(backend=None, **config) -> ServerThread:
        thread = ServerThread(backend or engine_backend, ServerConfig(host="127.0.0.1", port=0, **config))
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


def post(port: int, path: str, body: bytes | dict, headers: dict[str, str] | None = None, timeout: float = 60):
    """(status, headers, parsed JSON body or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        return response.status, dict(response.getheaders()), json.loads(raw)
    except ValueError:
        return response.status, dict(response.getheaders()), raw


def get(port: int, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, json.loads(raw)


def chat_body(content: str, **extra) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], **extra}


MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


# -- the app side: the window's engine client and its LocalServer ------------------------------

CHAT = "/v1/chat/completions"
FRANCE = {"model": MODEL_ID, "messages": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.fixture
def pool():
    """Threads for the requests: the test's own thread spins the Qt event loop, as the window does."""
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture
def window(qtbot, repacked_dir):
    """The window's engine client with the embedded model loaded, and its LocalServer (off)."""
    from app.server.controller import LocalServer
    from app.settings import AppSettings
    from app.settings_store import SettingsStore
    from app.workers.engine_client import EngineClient
    from tests.app.live_engine import LOAD_TIMEOUT_MS

    client = EngineClient(cache_dir=repacked_dir)
    store = SettingsStore(AppSettings(server_port=0), None)
    server = LocalServer(client, store)
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        client.load("default", None, n_ctx=512)
    yield client, store, server
    server.close()
    client.shutdown()


def result(qtbot, future, timeout_ms: int = 60_000):
    """The future's result, the Qt event loop running meanwhile."""
    qtbot.waitUntil(future.done, timeout=timeout_ms)
    return future.result()
