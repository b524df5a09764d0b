"""Tokenizers built from GGUF metadata, the streaming detokenizer and chat templates.

The engine uses: `tokenizer_from_gguf(md)`, `tokenizer.apply_chat_template`
(or `render_chat` + `tokenizer.encode_chat`), `tokenizer.encode(text, allow_special=...)`,
`StreamingDetokenizer`, `tokenizer.decode`. No Qt, no `app`, no GGUF reader.
"""

from tmac_core.tokenizer.base import Tokenizer
from tmac_core.tokenizer.chat_template import (
    RenderedChat,
    pick_fallback,
    render_chat,
    render_template,
)
from tmac_core.tokenizer.detok import StreamingDetokenizer
from tmac_core.tokenizer.load import tokenizer_from_gguf

__all__ = [
    "Tokenizer",
    "RenderedChat",
    "StreamingDetokenizer",
    "render_chat",
    "render_template",
    "pick_fallback",
    "tokenizer_from_gguf",
]
