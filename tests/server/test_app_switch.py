"""The app's Local server switch on the window's own engine process (spawned, real), offscreen."""

from __future__ import annotations

import socket

import pytest

from tests.app.live_engine import LONG_PROMPT
from tests.server.conftest import CHAT, FRANCE, MODEL_ID, get, post, result

pytest.importorskip("pytestqt")

from app.server.controller import LocalServer  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.workers.engine_client import EngineClient  # noqa: E402
from app.workers.protocol import EngineState  # noqa: E402
from tmac_core import SamplingParams  # noqa: E402

pytestmark = pytest.mark.engine


def test_the_switch_serves_the_loaded_model_and_stops(qtbot, window, pool):
    openai = pytest.importorskip("openai")
    from app.ui.server_panel import ServerDialog

    client, store, server = window
    dialog = ServerDialog(server, store)
    qtbot.addWidget(dialog)
    assert not server.running and dialog.status.text() == "Off"
    dialog.switch.setChecked(True)
    assert server.running and store.current.server_enabled
    url = server.url
    assert url.startswith("http://127.0.0.1:") and "Serving at" in dialog.status.text()
    assert MODEL_ID in dialog.example.toPlainText()

    def ask() -> str:
        with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as api:
            assert [m.id for m in api.models.list().data] == [MODEL_ID]
            stream = api.chat.completions.create(
                model=MODEL_ID, messages=FRANCE["messages"], temperature=0, max_tokens=16, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert "Paris" in result(qtbot, pool.submit(ask))
    assert "1 requests served" in server.status()
    port = server.server_thread.port
    status, _, body = result(qtbot, pool.submit(post, port, CHAT, {**FRANCE, "model": "llama-70b"}))
    assert status == 404 and body["error"]["code"] == "model_not_found"
    completion = {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 4}
    status, _, body = result(qtbot, pool.submit(post, port, "/v1/completions", completion))
    assert status == 200 and body["usage"]["completion_tokens"] == 4  # plain completions run on the window's engine

    dialog.switch.setChecked(False)
    assert not server.running and not store.current.server_enabled and dialog.status.text() == "Off"
    with pytest.raises(ConnectionRefusedError):
        get(port, "/health")


def test_a_server_request_waits_for_the_window_chat(qtbot, window, pool):
    client, store, server = window
    store.update(server_enabled=True)
    finishes = []
    client.chunk.connect(lambda rid, chunk: chunk.finish_reason and finishes.append((rid, chunk.finish_reason)))
    chat_id = client.generate([{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0, max_tokens=40))
    assert client.state == EngineState.GENERATING
    future = pool.submit(post, server.server_thread.port, CHAT, {**FRANCE, "temperature": 0, "max_tokens": 12})
    status, _, body = result(qtbot, future)
    assert status == 200 and "Paris" in body["choices"][0]["message"]["content"]
    assert finishes[0] == (chat_id, "length")  # the window's chat ran to its end first, uninterrupted


def test_the_key_and_a_taken_port_without_a_model(qtbot, pool):
    """No engine process: the server is up, says no model is loaded, and asks for its key."""
    client = EngineClient()
    store = SettingsStore(AppSettings(server_port=0), None)
    server = LocalServer(client, store)
    try:
        store.update(server_enabled=True, server_api_key="k3y")
        port = server.server_thread.port
        assert result(qtbot, pool.submit(get, port, "/v1/models"))[0] == 401
        status, body = result(qtbot, pool.submit(get, port, "/v1/models", {"Authorization": "Bearer k3y"}))
        assert status == 200 and body["data"] == []
        assert result(qtbot, pool.submit(get, port, "/health"))[1]["status"] == "loading"
        status, _, answer = result(qtbot, pool.submit(post, port, CHAT, FRANCE, {"Authorization": "Bearer k3y"}))
        assert status == 503 and answer["error"]["code"] == "model_not_ready"
        assert "no model loaded yet" in server.status()

        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        try:
            store.update(server_port=taken.getsockname()[1])
            assert not server.running and server.status().startswith("Could not listen on port")
        finally:
            taken.close()
    finally:
        server.close()
        client.shutdown()
