"""Bad requests get the right status code and an OpenAI error object, and the server stays up."""

from __future__ import annotations

import json

import pytest

from tests.server.conftest import MODEL_ID, N_CTX, chat_body, get, post

pytestmark = pytest.mark.engine

CHAT = "/v1/chat/completions"


def error_of(body) -> dict:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def port(serve):
    return serve(api_key=None, max_body_bytes=64 * 1024).port


def test_bad_json(port):
    status, _, body = post(port, CHAT, b'{"model": "x", "messages": [')
    assert status == 400 and error_of(body)["code"] == "invalid_json"
    status, _, body = post(port, CHAT, b"[1, 2]")
    assert status == 400 and error_of(body)["code"] == "invalid_json"


def test_unknown_model(port):
    status, _, body = post(port, CHAT, {**chat_body("hi"), "model": "gpt-4o"})
    error = error_of(body)
    assert status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert MODEL_ID in error["message"]  # says what it does run


def test_unsupported_parameters_are_named(port):
    for extra, name in (({"tools": [{"type": "function"}]}, "tools"), ({"n": 2}, "n"), ({"best_of": 3}, "best_of")):
        status, _, body = post(port, CHAT, chat_body("hi", **extra))
        error = error_of(body)
        assert status == 400 and error["param"] == name, (extra, body)
    # sent unasked by clients at their defaults: accepted
    status, _, body = post(port, CHAT, chat_body("hi", n=1, presence_penalty=0, frequency_penalty=0.0, max_tokens=1))
    assert status == 200, body


def test_out_of_range_values(port):
    for extra, name in (
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
    ):
        status, _, body = post(port, CHAT, chat_body("hi", **extra))
        assert status == 400 and error_of(body)["param"] == name, body


def test_oversized_body(port):
    big = json.dumps(chat_body("x" * 70_000)).encode()
    status, _, body = post(port, CHAT, big)
    assert status == 413 and error_of(body)["code"] == "request_too_large"


def test_prompt_past_the_context_names_both_counts(port):
    status, _, body = post(port, CHAT, chat_body("hello " * 600, max_tokens=4))
    error = error_of(body)
    assert status == 400 and error["code"] == "context_length_exceeded"
    numbers = [int(word) for word in error["message"].replace(".", " ").split() if word.isdigit()]
    assert N_CTX in numbers and any(n > N_CTX for n in numbers)
    # streaming too: the status comes before any event
    status, headers, body = post(port, CHAT, chat_body("hello " * 600, stream=True))
    assert status == 400 and error_of(body)["code"] == "context_length_exceeded"


def test_unknown_path_and_method(port):
    status, _, body = post(port, "/v1/embeddings", {"input": "x"})
    assert status == 404 and error_of(body)
    status, body = get(port, CHAT)
    assert status == 405 and error_of(body)


def test_api_key(serve):
    port = serve(api_key="s3cret-key").port
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        status, _, body = post(port, CHAT, chat_body("hi", max_tokens=1), headers)
        assert status == 401 and error_of(body)["code"] == "invalid_api_key"
    status, body = get(port, "/v1/models")
    assert status == 401
    status, body = get(port, "/v1/models", {"Authorization": "Bearer s3cret-key"})
    assert status == 200 and body["data"][0]["id"] == MODEL_ID
    status, _, body = post(port, CHAT, chat_body("hi", max_tokens=1), {"Authorization": "Bearer s3cret-key"})
    assert status == 200, body


def test_no_cors_unless_enabled(serve):
    import http.client

    def preflight(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "OPTIONS", CHAT, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("access-control-allow-origin")

    assert preflight(serve().port)[1] is None
    status, allowed = preflight(serve(cors_origins=("http://localhost:3000",)).port)
    assert allowed is None  # another origin still gets nothing
    conn = http.client.HTTPConnection("127.0.0.1", serve(cors_origins=("http://localhost:3000",)).port, timeout=10)
    conn.request("OPTIONS", CHAT, headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
    response = conn.getresponse()
    assert response.getheader("access-control-allow-origin") == "http://localhost:3000"


def test_server_is_healthy_after_errors(port):
    post(port, CHAT, b"garbage")
    status, body = get(port, "/health")
    assert status == 200 and body["status"] == "ok" and not body["busy"]


def test_prompts_are_logged_only_when_asked(serve, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "my-private-question-" + "x" * 8
    post(serve().port, CHAT, chat_body(secret, max_tokens=2))
    assert not any(secret in record.getMessage() for record in caplog.records)
    post(serve(log_prompts=True).port, CHAT, chat_body(secret, max_tokens=2))
    assert any(secret in record.getMessage() for record in caplog.records)
