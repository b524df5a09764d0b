"""Plain records of the chat domain: Conversation, Message, SearchHit and the message states.

Frozen dataclasses with no database handle, shared by the store, export and
the UI. Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

COMPLETE, STREAMING, PARTIAL, ERROR = "complete", "streaming", "partial", "error"
MESSAGE_STATES = (COMPLETE, STREAMING, PARTIAL, ERROR)
ROLES = ("system", "user", "assistant")
# Stats keys the UI writes: tokens, tokens_per_s, ttft_s, prompt_tokens_per_s, threads, bits, kernel_tier.


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
    stats: dict[str, Any]
    state: str


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    conversation_title: str
    message_id: int | None      # None when only the title matched
    snippet: str


def conversation_from_row(row: sqlite3.Row) -> Conversation:
    return Conversation(row["id"], row["title"], row["created"], row["updated"], row["model_id"], row["bits"],
                        row["system_prompt"], json.loads(row["sampling_json"]), row["deleted_at"])


def message_from_row(row: sqlite3.Row) -> Message:
    return Message(row["id"], row["conversation_id"], row["role"], row["content"], row["created"],
                   json.loads(row["stats_json"]), row["state"])
