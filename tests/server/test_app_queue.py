"""The window's chats and the local server's requests on one engine: a chat waits for a server answer,
the Stop button stops the window's own answer only, and /v1/completions runs on the window's engine."""

from __future__ import annotations

import pytest

from tests.app.live_engine import ANSWER_TIMEOUT_MS, LONG_PROMPT
from tests.server.conftest import CHAT, FRANCE, MODEL_ID, post, result

pytest.importorskip("pytestqt")

from app.chat.records import COMPLETE, PARTIAL  # noqa: E402
from app.chat.store import ChatStore  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.workers.chat_session import ChatSession  # noqa: E402

pytestmark = pytest.mark.engine

SERVER_ANSWER = {**FRANCE, "messages": [{"role": "user", "content": LONG_PROMPT}], "temperature": 0, "max_tokens": 40}


def session_on(client, tmp_path):
    settings = AppSettings(temperature=0.0, seed=0, max_tokens=6, n_ctx=512)
    return ChatSession(ChatStore(tmp_path / "chats.sqlite3"), client, lambda: settings)


def start_server_answer(qtbot, client, server, pool):
    """A long server answer, running (its first tokens streamed) when this returns; its future."""
    chunks = []
    client.chunk.connect(lambda rid, chunk: chunks.append(chunk))
    future = pool.submit(post, server.server_thread.port, CHAT, SERVER_ANSWER)
    qtbot.waitUntil(lambda: len(chunks) >= 3, timeout=ANSWER_TIMEOUT_MS)
    return future


def test_a_chat_sent_during_a_server_answer_waits_then_answers(qtbot, window, pool, tmp_path):
    client, store, server = window
    store.update(server_enabled=True)
    session = session_on(client, tmp_path)
    waiting, notices, finished = [], [], []
    session.waitingChanged.connect(waiting.append)
    session.notice.connect(lambda kind, text: notices.append(kind))
    session.answerFinished.connect(finished.append)
    future = start_server_answer(qtbot, client, server, pool)
    assert session.send("Hi")
    assert waiting == [True] and notices == ["waiting"] and session.busy
    status, _, answer = result(qtbot, future)
    assert status == 200 and answer["usage"]["completion_tokens"] == 40  # never interrupted
    qtbot.waitUntil(lambda: bool(finished), timeout=ANSWER_TIMEOUT_MS)
    assert waiting == [True, False] and finished[0].state == COMPLETE and finished[0].content


def test_stop_withdraws_the_waiting_chat_and_leaves_the_server_answer(qtbot, window, pool, tmp_path):
    client, store, server = window
    store.update(server_enabled=True)
    session = session_on(client, tmp_path)
    notices, finished = [], []
    session.notice.connect(lambda kind, text: notices.append(kind))
    session.answerFinished.connect(finished.append)
    future = start_server_answer(qtbot, client, server, pool)
    assert session.send("Hi")
    session.stop()
    qtbot.waitUntil(lambda: bool(finished), timeout=5_000)
    assert finished[0].state == PARTIAL and not finished[0].content and notices == ["waiting"]  # no error shown
    status, _, answer = result(qtbot, future)
    assert status == 200 and answer["usage"]["completion_tokens"] == 40
    # the window's own answer still stops at once
    assert session.send("Tell me a long story.")
    qtbot.waitUntil(lambda: client.active_request == session.request_id, timeout=5_000)
    session.stop()
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=ANSWER_TIMEOUT_MS)
    assert finished[1].state == PARTIAL


def test_plain_completions_run_on_the_window_engine_as_on_the_command_line(qtbot, window, pool, serve):
    client, store, server = window
    store.update(server_enabled=True)
    body = {"model": MODEL_ID, "prompt": "The capital of France is", "temperature": 0, "max_tokens": 8}
    status, _, app_answer = result(qtbot, pool.submit(post, server.server_thread.port, "/v1/completions", body))
    assert status == 200, app_answer
    cli_port = serve().port
    status, _, cli_answer = result(qtbot, pool.submit(post, cli_port, "/v1/completions", body))
    assert status == 200
    assert app_answer["object"] == "text_completion" and app_answer["choices"][0]["text"].strip()
    assert app_answer["choices"][0]["text"] == cli_answer["choices"][0]["text"]
    assert app_answer["usage"] == cli_answer["usage"]
    # stop sequences end it the same way
    stop = {**body, "max_tokens": 16, "stop": [app_answer["choices"][0]["text"].split()[0]]}
    status, _, stopped = result(qtbot, pool.submit(post, server.server_thread.port, "/v1/completions", stop))
    assert status == 200 and stopped["choices"][0]["finish_reason"] == "stop", stopped
    _, _, cli_stopped = result(qtbot, pool.submit(post, cli_port, "/v1/completions", stop))
    assert stopped["choices"][0]["text"] == cli_stopped["choices"][0]["text"]
