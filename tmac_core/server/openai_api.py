"""OpenAI's request and response shapes: checking a request, building answers and error objects.

Requests are checked field by field before anything is queued: a parameter we do not
implement is a 400 naming it (a few are accepted at their default value only, since
clients send them unasked: n = 1, zero penalties, logprobs false, a text response
format). Responses follow the chat.completion / chat.completion.chunk / text_completion
objects; our speed figures ride in an extra "tmac" object, which clients ignore.
Plain data in, plain dicts out: no HTTP here.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tmac_core.sampling import SamplingParams
from tmac_core.server.backend import ModelCard
from tmac_core.types import Chunk

MAX_STOPS = 4  # OpenAI's limit on stop sequences
MAX_TEMPERATURE = 2.0  # OpenAI's range is [0, 2]
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# Accepted with any value (implemented, or only informational)
_CHAT_FIELDS = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "user",
    # llama-server's extensions, which editor plugins send
    "top_k",
    "min_p",
    "repeat_penalty",
}
_COMPLETION_FIELDS = (_CHAT_FIELDS - {"messages", "max_completion_tokens"}) | {"prompt"}
# Accepted only at these values: what clients send when they mean "the default"
_DEFAULT_ONLY: dict[str, tuple[object, ...]] = {
    "n": (1,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logprobs": (False,),
    "echo": (False,),
    "response_format": ({"type": "text"},),
    "parallel_tool_calls": (False, True),
    "tools": ([],),
}


class ApiError(Exception):
    """An OpenAI error object with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        type_: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type_
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True)
class ParsedRequest:
    """A checked request: what to run and how to answer."""

    chat: bool  # /v1/chat/completions (else /v1/completions)
    model: str
    params: SamplingParams
    stream: bool
    include_usage: bool
    stops: tuple[str, ...]
    messages: tuple[dict[str, str], ...] | None
    prompt: str | None


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code, param)


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float, low_open: bool) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"'{name}' must be a number.", name, "invalid_type")
    if value > high or value < low or (low_open and value == low):
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise _bad(f"'{name}' must be in {interval}, got {value}.", name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{name}' must be an integer.", name, "invalid_type")
    if value < low:
        raise _bad(f"'{name}' must be >= {low}, got {value}.", name)
    return value


def _check_fields(body: Mapping[str, Any], allowed: set[str]) -> None:
    for name, value in body.items():
        if name in allowed or value is None:
            continue
        if name in _DEFAULT_ONLY:
            if any(type(value) is type(ok) and value == ok for ok in _DEFAULT_ONLY[name]):
                continue
            raise ApiError(
                400,
                f"'{name}' = {value!r} is not supported by this server (only the default).",
                "unsupported_value",
                name,
            )
        raise ApiError(
            400, f"Unsupported parameter: '{name}' is not supported by this server.", "unsupported_parameter", name
        )


def _stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _bad("'stop' must be a non-empty string or a list of them.", "stop", "invalid_type")
    if len(stops) > MAX_STOPS:
        raise _bad(f"'stop' holds at most {MAX_STOPS} sequences.", "stop")
    return tuple(stops)


def _content(message: Mapping[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad("Only text content parts are supported (no images or audio).", f"messages[{index}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad("A message's content must be a string or a list of text parts.", f"messages[{index}].content")


def _messages(body: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list.", "messages", "invalid_type")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad("Each message must be an object.", f"messages[{i}]", "invalid_type")
        role = CHAT_ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise _bad(
                f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}; tools are not supported.",
                f"messages[{i}].role",
            )
        for key in message:
            if key not in ("role", "content", "name"):
                raise ApiError(
                    400, f"messages[{i}].{key} is not supported.", "unsupported_parameter", f"messages[{i}].{key}"
                )
        out.append({"role": role, "content": _content(message, i)})
    return tuple(out)


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("'prompt' must be a string (or a list of one string).", "prompt", "invalid_type")
    if not prompt:
        raise _bad("'prompt' is empty.", "prompt")
    return prompt


def parse_request(body: Mapping[str, Any], card: ModelCard, chat: bool) -> ParsedRequest:
    """Check a chat or completion request against the loaded model; raises ApiError."""
    _check_fields(body, _CHAT_FIELDS if chat else _COMPLETION_FIELDS)
    model = body.get("model")
    if model is None:
        model = card.id  # curl users may leave it out; there is one model
    if not isinstance(model, str):
        raise _bad("'model' must be a string.", "model", "invalid_type")
    if model != card.id:
        raise ApiError(
            404,
            f"The model '{model}' does not exist or is not loaded; this server runs '{card.id}'.",
            "model_not_found",
            "model",
        )
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false.", "stream", "invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise _bad("'stream_options' may hold only include_usage.", "stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _bad("'stream_options.include_usage' must be true or false.", "stream_options", "invalid_type")
    # chat answers run to the end of the context unless told; completions default to 16 (OpenAI's)
    max_tokens = _integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1)
    if max_tokens is None:
        max_tokens = card.n_ctx if chat else 16
    seed = _integer(body, "seed", -(2**63))
    top_k = _integer(body, "top_k", 0)
    params = SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, MAX_TEMPERATURE, False),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, True),
        top_k=40 if top_k is None else top_k,
        min_p=_number(body, "min_p", 0.05, 0.0, 1.0, False),
        repeat_penalty=_number(body, "repeat_penalty", 1.1, 0.0, 10.0, True),
        max_tokens=max_tokens,
        seed=None if seed is None else seed % 2**64,  # OpenAI's seeds may be negative
    )
    return ParsedRequest(
        chat=chat,
        model=model,
        params=params,
        stream=stream,
        include_usage=include_usage,
        stops=_stops(body),
        messages=_messages(body) if chat else None,
        prompt=None if chat else _prompt(body),
    )


# -- answers -------------------------------------------------------------------------------


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def finish_reason(engine_reason: str | None) -> str:
    """The engine's finish reason as OpenAI's: a full context is a "length" finish."""
    return "length" if engine_reason in ("length", "context_full") else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def speed(card: ModelCard, chunk: Chunk) -> dict[str, Any]:
    """Our extra field: how fast this answer ran, and on what."""
    return {
        "prompt_tok_s": round(chunk.prompt_tok_s, 2),
        "decode_tok_s": round(chunk.decode_tok_s, 2),
        "ttft_s": round(chunk.ttft_s, 4),
        "elapsed_s": round(chunk.elapsed_s, 4),
        "cached_tokens": chunk.cached_tokens,
        "threads": chunk.threads,
        "bits": "file" if card.bits is None else card.bits,
        "bits_per_weight": round(card.bits_per_weight, 3),
        "tier": card.tier,
    }


def answer(
    req: ParsedRequest, rid: str, card: ModelCard, text: str, reason: str, last: Chunk, completion_tokens: int
) -> dict[str, Any]:
    """The whole (non-streamed) chat.completion or text_completion object."""
    created = int(time.time())
    if req.chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": reason,
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        kind = "text_completion"
    return {
        "id": rid,
        "object": kind,
        "created": created,
        "model": req.model,
        "system_fingerprint": f"tmac-{card.tier}",
        "choices": [choice],
        "usage": usage(last.prompt_tokens, completion_tokens),
        "tmac": speed(card, last),
    }


def stream_chunk(
    req: ParsedRequest,
    rid: str,
    created: int,
    text: str | None,
    reason: str | None = None,
    role: bool = False,
) -> dict[str, Any]:
    """One streamed chat.completion.chunk (or text_completion) with `text` (None: no content)."""
    if req.chat:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        kind = "text_completion"
    out: dict[str, Any] = {"id": rid, "object": kind, "created": created, "model": req.model, "choices": [choice]}
    if req.include_usage:
        out["usage"] = None  # OpenAI: null on every chunk but the last, usage-only one
    return out


def usage_chunk(
    req: ParsedRequest, rid: str, created: int, card: ModelCard, last: Chunk, completion_tokens: int
) -> dict[str, Any]:
    """The usage-only chunk stream_options.include_usage asks for, after the finish."""
    return {
        "id": rid,
        "object": "chat.completion.chunk" if req.chat else "text_completion",
        "created": created,
        "model": req.model,
        "choices": [],
        "usage": usage(last.prompt_tokens, completion_tokens),
        "tmac": speed(card, last),
    }


def model_list(card: ModelCard | None) -> dict[str, Any]:
    data = []
    if card is not None:
        data.append(
            {
                "id": card.id,
                "object": "model",
                "created": card.created,
                "owned_by": "local",
                "tmac": {
                    "name": card.name,
                    "n_ctx": card.n_ctx,
                    "bits": "file" if card.bits is None else card.bits,
                    "bits_per_weight": round(card.bits_per_weight, 3),
                    "tier": card.tier,
                    "threads": card.threads,
                },
            }
        )
    return {"object": "list", "data": data}
