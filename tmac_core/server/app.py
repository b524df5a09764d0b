"""The ASGI application (Starlette): OpenAI's endpoints over a Backend.

    GET  /health                 {"status": "ok" | "loading", queue and request counts}
    GET  /v1/models              the loaded model
    POST /v1/chat/completions    chat, streamed (server-sent events, data: [DONE]) or whole
    POST /v1/completions         plain text continuation (no chat template)

A request is read (at most max_body_bytes), checked (openai_api.parse_request), then
queued (scheduler.Scheduler: full → 429 with Retry-After). The answer is an _Answer, a
raw ASGI response that watches for the client leaving the whole time: a client that
disconnects, queued or mid-answer, cancels its job, and the engine stops within one token.
Headers are sent only once the first token (or the failure) is known, so an error
(prompt past the context, engine gone) still gets its own status code when streaming.
The bearer key, when set, is compared with hmac.compare_digest. Nothing here logs a
prompt or an answer unless log_prompts is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tmac_core.server import openai_api as api
from tmac_core.server.backend import AnswerInterruptedError, Backend, BackendError, Job, ModelCard
from tmac_core.server.scheduler import QueueFullError, Scheduler, Ticket
from tmac_core.server.stops import StopMatcher
from tmac_core.types import Chunk

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more text than any context here holds
DEFAULT_MAX_QUEUE = 16

log = logging.getLogger("tmac_core.server")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback: other computers cannot reach it
    port: int = 8080
    api_key: str | None = None  # None: no key asked
    max_queue: int = DEFAULT_MAX_QUEUE  # requests that may wait behind the running one
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call; () = no CORS headers
    log_prompts: bool = False


@dataclass
class Stats:
    """What the app's status line shows; read from any thread."""

    requests: int = 0  # answers completed
    clients: int = 0  # requests open right now (queued or answering)


def _error(error: api.ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _backend_error(error: BackendError) -> api.ApiError:
    type_ = "invalid_request_error" if error.status < 500 else "server_error"
    return api.ApiError(error.status, str(error), error.code, None, type_)


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class _Answer:
    """The response to one queued job (ASGI); the client leaving cancels the job."""

    def __init__(self, server: Server, ticket: Ticket, req: api.ParsedRequest, card: ModelCard) -> None:
        self.server, self.ticket, self.req, self.card = server, ticket, req, card
        self.rid, self.created = api.new_id(req.chat), int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.ticket.cancel()

        watcher = asyncio.create_task(watch())
        try:
            first = await self.ticket.get()
            if isinstance(first, BackendError):
                await _error(_backend_error(first))(scope, receive, send)
            elif self.req.stream:
                await self._stream(first, send)
            else:
                await self._whole(first, send)
        except OSError:  # the client went away while we wrote
            pass
        finally:
            watcher.cancel()
            self.ticket.cancel()  # a no-op once the job has ended
            self.server.stats.clients -= 1

    async def _tokens(self, first: Chunk) -> AsyncIterator[tuple[str, Chunk | None, int]]:
        """(text to send, the final chunk when this is the end, tokens so far); a stop sequence
        ends the answer early (and cancels the job). Raises BackendError from the backend."""
        stops = StopMatcher(self.req.stops)
        chunk: Chunk | BackendError = first
        while True:
            if isinstance(chunk, BackendError):
                raise chunk
            text, hit = stops.feed(chunk.text)
            if hit:
                self.ticket.cancel()
                yield text, _as_final(chunk, "stop"), chunk.generated_tokens
                return
            if chunk.finish_reason is not None:
                if chunk.finish_reason == "cancelled":  # not by us: we return before it on a stop or a disconnect
                    raise AnswerInterruptedError("The answer was interrupted (the server is stopping).")
                yield text + stops.flush(), chunk, chunk.generated_tokens
                return
            yield text, None, chunk.generated_tokens
            chunk = await self.ticket.get()

    async def _whole(self, first: Chunk, send: Send) -> None:
        parts: list[str] = []
        try:
            async for text, final, n_tokens in self._tokens(first):
                parts.append(text)
                if final is not None:
                    body = api.answer(
                        self.req,
                        self.rid,
                        self.card,
                        "".join(parts),
                        api.finish_reason(final.finish_reason),
                        final,
                        n_tokens,
                    )
                    self.server.answered(self.req, body["choices"][0])
                    await _send_json(send, 200, body)
        except BackendError as error:
            await _send_json(send, error.status, _backend_error(error).body())

    async def _stream(self, first: Chunk, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
            }
        )
        req, rid, created = self.req, self.rid, self.created

        async def body(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        if req.chat:  # the role comes first, as OpenAI sends it
            await body(_sse(api.stream_chunk(req, rid, created, "", role=True)))
        parts: list[str] = []
        try:
            async for text, final, n_tokens in self._tokens(first):
                parts.append(text)
                if text:
                    await body(_sse(api.stream_chunk(req, rid, created, text)))
                if final is not None:
                    end = api.stream_chunk(req, rid, created, None, api.finish_reason(final.finish_reason))
                    end["tmac"] = api.speed(self.card, final)
                    await body(_sse(end))
                    if req.include_usage:
                        await body(_sse(api.usage_chunk(req, rid, created, self.card, final, n_tokens)))
                    self.server.answered(req, {"text": "".join(parts)})
        except BackendError as error:  # after the headers: OpenAI's in-stream error event
            await body(_sse(_backend_error(error).body()))
        await send({"type": "http.response.body", "body": _sse("[DONE]"), "more_body": False})


def _as_final(chunk: Chunk, reason: str) -> Chunk:
    return dataclasses.replace(chunk, finish_reason=reason, text="")


async def _send_json(send: Send, status: int, obj: dict[str, Any]) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


class Server:
    """The server's state (one backend, its queue, the counters) and its routes."""

    def __init__(self, backend: Backend, config: ServerConfig) -> None:
        self.backend, self.config = backend, config
        self.stats = Stats()
        self._scheduler: Scheduler | None = None  # made on the event loop, at the first request
        self._key = config.api_key.encode() if config.api_key else None
        if config.log_prompts and log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)  # asked for: shown even under Uvicorn's warning-level logging
            if not log.handlers:
                log.addHandler(logging.StreamHandler())

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = Scheduler(self.backend, self.config.max_queue)
        return self._scheduler

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()

    def answered(self, req: api.ParsedRequest, choice: dict[str, Any]) -> None:
        self.stats.requests += 1
        if self.config.log_prompts:
            log.info("request %s → %s", req.messages or req.prompt, choice)

    def asgi(self) -> Starlette:
        middleware = []
        if self.config.cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(self.config.cors_origins),
                    allow_methods=["GET", "POST"],
                    allow_headers=["authorization", "content-type"],
                )
            )
        return Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
            ],
            middleware=middleware,
            exception_handlers={HTTPException: self._http_error, Exception: self._internal_error},
        )

    # -- routes ------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        card = self.backend.model()
        scheduler = self.scheduler
        return JSONResponse(
            {
                "status": "ok" if card is not None else "loading",
                "model": card.id if card is not None else None,
                "busy": scheduler.running is not None,
                "queued": scheduler.queued,
                "requests_served": self.stats.requests,
                "clients": self.stats.clients,
            },
            status_code=200 if card is not None else 503,
        )

    async def models(self, request: Request) -> Response:
        try:
            self._check_key(request)
        except api.ApiError as error:
            return _error(error)
        return JSONResponse(api.model_list(self.backend.model()))

    async def chat(self, request: Request) -> Response | _Answer:
        return await self._complete(request, chat=True)

    async def completions(self, request: Request) -> Response | _Answer:
        return await self._complete(request, chat=False)

    async def _complete(self, request: Request, chat: bool) -> Response | _Answer:
        try:
            self._check_key(request)
            body = await self._read_json(request)
            card = self.backend.model()
            if card is None:
                raise api.ApiError(
                    503, "No model is loaded right now; try again shortly.", "model_not_ready", None, "server_error"
                )
            req = api.parse_request(body, card, chat)
            job = Job(model=card.id, params=req.params, messages=req.messages, prompt=req.prompt)
            try:
                ticket = self.scheduler.submit(job)
            except QueueFullError as full:
                raise api.ApiError(
                    429,
                    f"Too many requests are waiting; retry in {full.retry_after_s} s.",
                    "rate_limit_exceeded",
                    None,
                    "rate_limit_error",
                    {"Retry-After": str(full.retry_after_s)},
                ) from None
        except api.ApiError as error:
            return _error(error)
        self.stats.clients += 1  # the _Answer takes it back when it ends
        return _Answer(self, ticket, req, card)

    # -- helpers -------------------------------------------------------------------------------

    def _check_key(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of the key was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            raise api.ApiError(401, "Incorrect API key provided.", "invalid_api_key")

    async def _read_json(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        too_big = api.ApiError(413, f"The request body is larger than {limit} bytes.", "request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise too_big
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise api.ApiError(400, "The request body is not valid JSON.", "invalid_json") from None
        if not isinstance(body, dict):
            raise api.ApiError(400, "The request body must be a JSON object.", "invalid_json")
        return body

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "No such endpoint.", 405: "Method not allowed."}.get(exc.status_code, str(exc.detail))
        return _error(api.ApiError(exc.status_code, message, "not_found" if exc.status_code == 404 else None))

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        log.exception("internal error")
        return _error(
            api.ApiError(500, f"Internal error: {type(exc).__name__}", "internal_error", None, "server_error")
        )
