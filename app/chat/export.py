"""Export one conversation to Markdown (for reading) or JSON (for machines, with per-message stats).

Works on the plain `Conversation` / `Message` records of app.chat.records, so it
needs no database handle. Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence

from app.chat.records import AnswerStats, Conversation, Message

EXPORT_FORMAT_VERSION = 1
_ROLE_HEADINGS = {"system": "System", "user": "You", "assistant": "Assistant"}
_STATE_NOTES = {
    "partial": "(interrupted: the answer stopped early)",
    "error": "(ended with an error)",
    "streaming": "(still being written)",
}


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


_STATS_FORMATS = (
    ("generated_tokens", "{} tokens"),
    ("earlier_tokens", "continued after {} tokens"),
    ("decode_tok_s", "{:.1f} tok/s"),
    ("ttft_s", "TTFT {:.2f} s"),
    ("prompt_tok_s", "prompt {:.1f} tok/s"),
    ("threads", "{} threads"),
    ("bits", "{}-bit"),
    ("tier", "{}"),
)


def stats_line(stats: AnswerStats) -> str:
    """One short line such as `42 tokens · 17.3 tok/s · TTFT 0.21 s · 4 threads · 2-bit · avx2`."""
    parts = [fmt.format(getattr(stats, name)) for name, fmt in _STATS_FORMATS if getattr(stats, name) is not None]
    return " · ".join("1 thread" if part == "1 threads" else part for part in parts)


def to_markdown(conversation: Conversation, messages: Sequence[Message], *, include_stats: bool = True) -> str:
    lines = [f"# {conversation.title}", ""]
    meta = [f"Created {_iso(conversation.created)}"]
    if conversation.model_id:
        bits = f" ({conversation.bits}-bit)" if conversation.bits else ""
        meta.append(f"model {conversation.model_id}{bits}")
    lines += ["_" + ", ".join(meta) + "_", ""]
    if conversation.system_prompt:
        lines += ["## System prompt", "", conversation.system_prompt, ""]
    for message in messages:
        lines += [f"## {_ROLE_HEADINGS.get(message.role, message.role)}", ""]
        lines += [message.content if message.content else "_(empty)_", ""]
        note = _STATE_NOTES.get(message.state)
        if note:
            lines += [f"_{note}_", ""]
        if include_stats and message.role == "assistant" and message.stats:
            stats_line_text = stats_line(message.stats)
            if stats_line_text:
                lines += [f"<sub>{stats_line_text}</sub>", ""]
    return "\n".join(lines).rstrip() + "\n"


def to_json(conversation: Conversation, messages: Sequence[Message]) -> str:
    document = {
        "format": "tmac-chat-conversation",
        "format_version": EXPORT_FORMAT_VERSION,
        "conversation": dataclasses.asdict(conversation),
        "messages": [dict(dataclasses.asdict(message), stats=message.stats.to_json()) for message in messages],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
