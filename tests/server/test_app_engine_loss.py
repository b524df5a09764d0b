"""The app's local server when the window's engine process dies, or the window's user takes the engine."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.app.live_engine import ANSWER_TIMEOUT_MS, LOAD_TIMEOUT_MS, LONG_PROMPT
from tests.server.conftest import CHAT, FRANCE, get, post, result

pytest.importorskip("pytestqt")

from app.workers.protocol import EngineState  # noqa: E402
from tmac_core import SamplingParams  # noqa: E402

pytestmark = pytest.mark.engine


def test_engine_killed_mid_request_gives_503_then_recovers(qtbot, window, pool):
    client, store, server = window
    store.update(server_enabled=True)
    port = server.server_thread.port
    chunks = []
    client.chunk.connect(lambda rid, chunk: chunks.append(chunk))
    body = {**FRANCE, "messages": [{"role": "user", "content": LONG_PROMPT}], "temperature": 0, "max_tokens": 400}
    future = pool.submit(post, port, CHAT, body)
    qtbot.waitUntil(lambda: len(chunks) >= 3, timeout=ANSWER_TIMEOUT_MS)
    os.kill(client.pid, signal.SIGKILL)
    status, _, answer = result(qtbot, future)
    assert status == 503 and answer["error"]["type"] == "server_error", answer
    qtbot.waitUntil(lambda: client.state == EngineState.DEAD, timeout=10_000)
    status, _, answer = result(qtbot, pool.submit(post, port, CHAT, body))
    assert status == 503 and "model" in answer["error"]["message"]
    assert result(qtbot, pool.submit(get, port, "/health"))[0] == 503

    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        client.restart()
    status, _, answer = result(qtbot, pool.submit(post, port, CHAT, {**FRANCE, "temperature": 0, "max_tokens": 12}))
    assert status == 200 and "Paris" in answer["choices"][0]["message"]["content"]


def test_a_window_chat_started_mid_answer_waits_for_the_server_answer(qtbot, window, pool):
    client, store, server = window
    store.update(server_enabled=True)
    chunks = []
    client.chunk.connect(lambda rid, chunk: chunks.append((rid, chunk)))
    body = {**FRANCE, "messages": [{"role": "user", "content": LONG_PROMPT}], "temperature": 0, "max_tokens": 40}
    future = pool.submit(post, server.server_thread.port, CHAT, body)
    qtbot.waitUntil(lambda: len(chunks) >= 3, timeout=ANSWER_TIMEOUT_MS)
    server_id = chunks[0][0]
    chat_id = client.generate([{"role": "user", "content": "Hi"}], SamplingParams(temperature=0, max_tokens=4))
    assert client.is_waiting(chat_id) and client.active_request == server_id
    status, _, answer = result(qtbot, future)
    assert status == 200 and answer["choices"][0]["finish_reason"] == "length", answer
    assert answer["usage"]["completion_tokens"] == 40  # the whole answer: nothing stopped it
    qtbot.waitUntil(lambda: any(rid == chat_id and c.finish_reason for rid, c in chunks), timeout=ANSWER_TIMEOUT_MS)
    finished = [rid for rid, c in chunks if c.finish_reason]
    assert finished == [server_id, chat_id]  # arrival order, one at a time
    assert next(c for rid, c in chunks if rid == chat_id and c.finish_reason).finish_reason == "length"


def test_switching_off_mid_answer_ends_it_at_once(qtbot, window, pool):
    client, store, server = window
    store.update(server_enabled=True)
    chunks = []
    client.chunk.connect(lambda rid, chunk: chunks.append(chunk))
    body = {**FRANCE, "messages": [{"role": "user", "content": LONG_PROMPT}], "temperature": 0, "max_tokens": 400}
    future = pool.submit(post, server.server_thread.port, CHAT, body)
    qtbot.waitUntil(lambda: len(chunks) >= 3, timeout=ANSWER_TIMEOUT_MS)
    t0 = time.monotonic()
    store.update(server_enabled=False)
    assert time.monotonic() - t0 < 1.5  # the GUI thread waited only for the server's thread to end
    status, _, answer = result(qtbot, future)
    assert status == 503 and answer["error"]["code"] == "interrupted"
    qtbot.waitUntil(lambda: chunks[-1].finish_reason == "cancelled", timeout=10_000)  # the engine stopped too
    assert client.state == EngineState.READY
