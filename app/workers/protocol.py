"""The messages between the window and the engine process, and how they cross the pipe.

EngineClient (in the window's process) sends requests; EngineHost (in the engine
process) answers with replies. Each message is a frozen dataclass:

    requests (window → engine):  Load · CancelLoad · Generate · SetThreads · Shutdown
    replies  (engine → window):  Progress · Loaded · LoadFailed · ChunkMsg · Trimmed · Failed · CacheDamaged

On the pipe a message is one UTF-8 JSON object, {"type": <tag>, <field>: <value>, ...},
sent with Connection.send_bytes. Never a pickle: unpickling runs whatever code the
sender names, and the window must survive an engine process that is confused or
compromised. `decode_request` / `decode_reply` check every field's type and rebuild
the nested records (SamplingParams, Chunk, EngineInfo) field by field through their
constructors; anything else raises ProtocolError, which each side logs and survives.

Stop does not travel here: the window sets a shared Event that the engine checks
between tokens. CancelLoad does: the engine's reader thread sets the Event its load
looks at between slabs of the repack, and the load ends in LoadFailed("load_cancelled").
Failures carry a stable `kind` (tmac_core's error classes own theirs; the ones below
are the protocol's own), never a class name.

No Qt here, and numpy only once a Generate is decoded, which happens in the
engine process: the window imports this module too and decodes replies only.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from tmac_core.errors import LoadCancelledError, TmacError
from tmac_core.types import Chunk, EngineInfo

if TYPE_CHECKING:
    from tmac_core.sampling import SamplingParams

# Failure kinds that are not a tmac_core error's own (those are `error.kind`).
NOT_READY = "not_ready"  # no model is loaded (yet, or any more)
SUPERSEDED = "superseded"  # a newer request replaced this one before it started
RESTARTED = "restarted"  # the engine process was replaced mid-answer
CANCELLED = "cancelled"  # stopped while it waited its turn, before the engine saw it
INVALID_ARGUMENT = "invalid_argument"  # a ValueError: a setting out of range
OUT_OF_MEMORY = "out_of_memory"
OS_ERROR = "os_error"
INTERNAL = "internal"  # anything else: a bug
LOAD_CANCELLED = LoadCancelledError.kind  # the load ended on CancelLoad (for the window, which imports no errors)


class EngineState(enum.Enum):
    """Where the engine process is, as the window sees it."""

    STOPPED = "stopped"  # no process (before the first load, after a load failure or shutdown)
    STARTING = "starting"  # the process is being spawned
    LOADING = "loading"  # Load sent, Loaded not yet received
    READY = "ready"
    GENERATING = "generating"
    DEAD = "dead"  # the process ended unexpectedly


class ProtocolError(ValueError):
    """Bytes from the pipe that are not a valid message of the expected direction."""


def error_kind(error: BaseException) -> str:
    """The stable kind of an exception raised while loading or generating."""
    if isinstance(error, TmacError):
        return error.kind
    if isinstance(error, MemoryError):
        return OUT_OF_MEMORY
    if isinstance(error, ValueError):
        return INVALID_ARGUMENT
    if isinstance(error, OSError):
        return OS_ERROR
    return INTERNAL


@dataclass(frozen=True)
class ChatLine:
    """One message of a chat as the engine renders it."""

    role: str
    content: str


# ---- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """Load a model (a .gguf path, or "default" for the embedded one). Answered by Loaded or LoadFailed."""

    source: str
    bits: int | None  # None: as in the file (tmac_core.Engine.load); 2 or 4: repacked
    n_ctx: int | None
    n_threads: int | None
    cache_dir: str | None  # None: the engine's default repacked-model cache
    source_sha256: str | None  # the file's sha256 when the app knows it (skips a re-hash)
    exact_activations: bool = False  # exact int8 activations (models trained with them); False: the default


@dataclass(frozen=True)
class CancelLoad:
    """Stop the load in progress (applied by the engine process's reader thread). Answered by
    the load's LoadFailed with kind "load_cancelled", or by nothing if it had already ended."""


@dataclass(frozen=True)
class Generate:
    """Answer `messages`. Answered by ChunkMsgs (the last has a finish_reason) or Failed;
    with `fit`, by a Trimmed first when the oldest turns had to be dropped.

    `continue_text`: the answer so far to `messages` (one cut at max_tokens) to go on from;
    the chunks then carry only the new text. "" for a new answer.

    `prompt`: a plain completion instead of a chat (the local server's /v1/completions): this
    text is continued as is, with no chat template (`messages` is then empty and `fit` False)."""

    request_id: int
    messages: tuple[ChatLine, ...]
    params: SamplingParams
    fit: bool
    continue_text: str = ""
    prompt: str | None = None

    def __post_init__(self) -> None:
        if self.prompt is not None and (self.messages or self.fit or self.continue_text):
            raise ValueError("a plain completion (prompt) has no messages, fit or continue_text")


@dataclass(frozen=True)
class SetThreads:
    """Kernel threads from the next token on (applied by the engine process's reader thread)."""

    n: int


@dataclass(frozen=True)
class Shutdown:
    """Close the engine and end the process."""


# ---- replies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    fraction: float  # 0..1
    stage: str  # a few words for the user
    bytes_done: int = 0  # source bytes repacked so far (a first load; 0 otherwise)
    bytes_total: int = 0  # source bytes the repack reads (0 when not repacking)
    eta_s: float | None = None  # seconds the repack still needs, once the engine can tell


@dataclass(frozen=True)
class Loaded:
    info: EngineInfo


@dataclass(frozen=True)
class LoadFailed:
    kind: str
    message: str  # a sentence for the user


@dataclass(frozen=True)
class ChunkMsg:
    request_id: int
    chunk: Chunk


@dataclass(frozen=True)
class Trimmed:
    request_id: int
    dropped_messages: int  # oldest messages the model does not see
    prompt_tokens: int  # tokens of the prompt that is generated from
    n_ctx: int


@dataclass(frozen=True)
class CacheDamaged:
    """The model came from the repacked-model cache and the file's data checksums, checked after
    Loaded (Engine.check_cache), did not match: the file is discarded and the model should be loaded again."""

    message: str


@dataclass(frozen=True)
class Failed:
    request_id: int
    kind: str
    message: str  # a sentence for the user


Request = Load | CancelLoad | Generate | SetThreads | Shutdown
Reply = Progress | Loaded | LoadFailed | ChunkMsg | Trimmed | Failed | CacheDamaged

REQUEST_TYPES: dict[str, type] = {
    "load": Load,
    "cancel_load": CancelLoad,
    "generate": Generate,
    "set_threads": SetThreads,
    "shutdown": Shutdown,
}
REPLY_TYPES: dict[str, type] = {
    "progress": Progress,
    "loaded": Loaded,
    "load_failed": LoadFailed,
    "chunk": ChunkMsg,
    "trimmed": Trimmed,
    "failed": Failed,
    "cache_damaged": CacheDamaged,
}
_TAGS = {cls: tag for tag, cls in (REQUEST_TYPES | REPLY_TYPES).items()}


# ---- encoding --------------------------------------------------------------------------------


def encode(message: Request | Reply) -> bytes:
    """One message as UTF-8 JSON bytes (nested records become objects, tuples become arrays)."""
    tag = _TAGS.get(type(message))
    if tag is None:
        raise TypeError(f"not a protocol message: {type(message).__name__}")
    return json.dumps({"type": tag, **dataclasses.asdict(message)}, ensure_ascii=False).encode("utf-8")


def decode_request(data: bytes) -> Request:
    """A request from bytes the window sent; ProtocolError if they are not one."""
    return _decode(data, REQUEST_TYPES)


def decode_reply(data: bytes) -> Reply:
    """A reply from bytes the engine process sent; ProtocolError if they are not one."""
    return _decode(data, REPLY_TYPES)


def _decode(data: bytes, kinds: dict[str, type]) -> Any:
    try:
        document = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, TypeError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"not a JSON message ({error})") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"a message is a JSON object, not {type(document).__name__}")
    tag = document.pop("type", None)
    cls = kinds.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    return _record(cls, document, tag)


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        names: dict[str, Any] = {}
        if cls is Generate:  # numpy comes with it: only the engine process decodes a Generate
            from tmac_core.sampling import SamplingParams

            names["SamplingParams"] = SamplingParams
        hints = _HINTS[cls] = typing.get_type_hints(cls, localns=names)
    return hints


_HINTS: dict[type, dict[str, Any]] = {}


def _record(cls: type, fields: Any, where: str) -> Any:
    """`cls(**fields)` after checking that `fields` names exactly its fields, each of the declared type."""
    if not isinstance(fields, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(fields).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if set(fields) != set(names):
        missing, extra = sorted(set(names) - set(fields)), sorted(set(fields) - set(names))
        raise ProtocolError(f"{where}: fields do not match {cls.__name__} (missing {missing}, unexpected {extra})")
    values = {name: _value(fields[name], hints[name], f"{where}.{name}") for name in names}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:  # the record's own checks (SamplingParams ranges)
        raise ProtocolError(f"{where}: {error}") from None


def _value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _value(value, inner, where)
    if origin is tuple:  # tuple[X, ...]
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected an array, got {type(value).__name__}")
        inner = typing.get_args(hint)[0]
        return tuple(_value(item, inner, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record(hint, value, where)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            value = float(value) if ok else value
        except OverflowError:  # an integer beyond any float
            ok = False
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise ProtocolError(f"{where}: no rule for {hint!r}")  # a field type this decoder does not know
    if not ok:
        raise ProtocolError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    return value
