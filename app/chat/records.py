"""Plain records of the chat domain: Conversation, Message, AnswerStats, SearchHit, EditUndo and the message states.

Frozen dataclasses with no database handle, shared by the store, export and
the UI. Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import typing
from dataclasses import dataclass
from typing import Any

COMPLETE, STREAMING, PARTIAL, ERROR = "complete", "streaming", "partial", "error"
MESSAGE_STATES = (COMPLETE, STREAMING, PARTIAL, ERROR)
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class AnswerStats:
    """What one answer cost and how it ended, kept with the message.

    Built from the answer's final tmac_core Chunk and the EngineInfo it ran on
    (`from_chunk`); every field is None when unknown (no token arrived, a user
    message). Stored as a JSON object of the fields that are set (`to_json`);
    `from_json` also reads the keys that rows written before this record used.
    """

    generated_tokens: int | None = None
    decode_tok_s: float | None = None  # generated tokens per second after the first
    ttft_s: float | None = None  # seconds to the first generated token
    prompt_tok_s: float | None = None  # prompt tokens processed per second
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # of the prompt, reused from the previous turn's KV cache
    threads: int | None = None  # kernel threads of the last token
    cpu_s: float | None = None  # CPU seconds of the engine process for this answer
    # cpu_s split at the first generated token: reading the prompt (and the first token's forward
    # pass) vs decoding the tokens after it. Dividing cpu_s by the generated tokens mixed the two.
    prompt_cpu_s: float | None = None
    decode_cpu_s: float | None = None
    elapsed_s: float | None = None
    finish_reason: str | None = None  # tmac_core.types.FINISH_REASONS
    bits: int | None = None
    tier: str | None = None  # the kernel tier: generic, avx2, avx512, neon
    model: str | None = None
    error: str | None = None  # why the answer failed or was cut short
    trimmed_messages: int | None = None  # older messages the model did not see
    # Continue after max tokens: the answer's tokens before this generation; the counters above are its own
    earlier_tokens: int | None = None

    @classmethod
    def from_chunk(cls, chunk: Any, info: Any = None) -> AnswerStats:
        """From a tmac_core.types.Chunk (the final one, or the last before a failure) and EngineInfo.

        Typed Any: this module must not import tmac_core, and reads only the fields named below."""
        return cls(
            generated_tokens=chunk.generated_tokens,
            decode_tok_s=round(chunk.decode_tok_s, 2),
            ttft_s=round(chunk.ttft_s, 3),
            prompt_tok_s=round(chunk.prompt_tok_s, 1),
            prompt_tokens=chunk.prompt_tokens,
            cached_tokens=chunk.cached_tokens,
            threads=chunk.threads,
            cpu_s=round(chunk.cpu_s, 3),
            prompt_cpu_s=round(chunk.prompt_cpu_s, 4),
            decode_cpu_s=round(max(0.0, chunk.cpu_s - chunk.prompt_cpu_s), 4),
            elapsed_s=round(chunk.elapsed_s, 3),
            finish_reason=chunk.finish_reason or None,
            bits=info.bits if info is not None else None,
            tier=info.tier if info is not None else None,
            model=info.name if info is not None else None,
        )

    @property
    def prompt_tokens_read(self) -> int | None:
        """Prompt tokens the engine processed (the rest came from the KV cache)."""
        if self.prompt_tokens is None:
            return None
        return max(0, self.prompt_tokens - (self.cached_tokens or 0))

    @property
    def prompt_cpu_s_per_token(self) -> float | None:
        """CPU seconds per prompt token read; None when unknown or the whole prompt was cached."""
        read = self.prompt_tokens_read
        return self.prompt_cpu_s / read if self.prompt_cpu_s is not None and read else None

    @property
    def decode_cpu_s_per_token(self) -> float | None:
        """CPU seconds per generated token after the first (the tokens decode_tok_s counts)."""
        decoded = (self.generated_tokens or 0) - 1
        return self.decode_cpu_s / decoded if self.decode_cpu_s is not None and decoded > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: Any) -> AnswerStats:
        """Read a stored object. Unknown keys (a newer app's) and values of the wrong type are skipped:
        a damaged stats line must not hide the message."""
        if not isinstance(data, dict):
            return cls()
        values: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                continue
            name = _OLD_STATS_KEYS.get(key, key)
            kind = _STATS_TYPES.get(name)
            if kind is None or isinstance(value, bool) or not isinstance(value, kind):
                continue
            values[name] = float(value) if kind is _NUMBER else value
        return cls(**values)


_NUMBER = (int, float)  # JSON may hold a float field as an integer (20.0 → 20)


def _stored_type(hint: Any) -> Any:
    (kind,) = [t for t in typing.get_args(hint) if t is not type(None)]  # X of `X | None`
    return _NUMBER if kind is float else kind


_STATS_TYPES = {name: _stored_type(hint) for name, hint in typing.get_type_hints(AnswerStats).items()}
# Keys of rows written before AnswerStats existed → its field names.
_OLD_STATS_KEYS = {
    "tokens": "generated_tokens",
    "tokens_per_s": "decode_tok_s",
    "prompt_tokens_per_s": "prompt_tok_s",
    "kernel_tier": "tier",
}


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    model_id: str | None
    bits: int | None
    system_prompt: str
    sampling: dict[str, Any]
    deleted_at: float | None = None


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created: float
    stats: AnswerStats
    state: str
    # Regenerate keeps the earlier answers of a turn as versions: `version_of` is the id of the
    # turn's first answer (None for it and for every other message), `version`/`versions` the
    # place of this one among them (1-based) and how many there are.
    version_of: int | None = None
    version: int = 1
    versions: int = 1

    @property
    def turn_id(self) -> int:
        """The id every version of this message's turn shares (its place in the conversation)."""
        return self.version_of if self.version_of is not None else self.id


@dataclass(frozen=True)
class EditUndo:
    """What an edit-and-resend changed, so it can be undone: the message's text before the edit
    and the later messages it hid (`shown`: how many of them were on screen)."""

    conversation_id: int
    message_id: int
    old_content: str
    removed_ids: tuple[int, ...]
    shown: int


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    conversation_title: str
    message_id: int | None  # None when only the title matched
    snippet: str


def conversation_from_row(row: sqlite3.Row) -> Conversation:
    return Conversation(
        row["id"],
        row["title"],
        row["created"],
        row["updated"],
        row["model_id"],
        row["bits"],
        row["system_prompt"],
        _json_object(row["sampling_json"]),
        row["deleted_at"],
    )


def message_from_row(row: sqlite3.Row) -> Message:
    return Message(
        row["id"],
        row["conversation_id"],
        row["role"],
        row["content"],
        row["created"],
        AnswerStats.from_json(_json_object(row["stats_json"])),
        row["state"],
        row["version_of"],
    )


def _json_object(text: str) -> dict[str, Any]:
    """A stored JSON object, or {} when the text is damaged: one bad field must not hide a chat."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
