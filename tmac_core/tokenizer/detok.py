"""Streaming detokenizer: token ids in, whole characters out.

One token can be a fraction of a UTF-8 character (byte-fallback tokens <0xE6>, or a
byte-level BPE piece that ends mid-character: llama.cpp #8691), so bytes are fed to an
incremental UTF-8 decoder that keeps an unfinished sequence until its last byte arrives
and replaces invalid bytes with U+FFFD (as every chat UI must: a model can emit them). What `add` returns is
always complete text; the concatenation of everything returned, plus `finalize()`,
equals `Tokenizer.decode` of the same ids. No Qt, no `app`.
"""

from __future__ import annotations

import codecs
from typing import Protocol


class _Vocab(Protocol):
    def token_bytes(self, token_id: int, *, special: bool = False) -> bytes: ...

    def strips_leading_space(self, token_id: int) -> bool: ...


class StreamingDetokenizer:
    """Incremental decoder for one stream of generated tokens.

    Args:
        tokenizer: any `Tokenizer`.
        special: render control tokens as their text (default: invisible).
        strip_leading_space: drop the leading space of the first piece when the
            vocabulary adds a space prefix (SentencePiece "▁Hello" -> "Hello"), as
            SentencePiece's own decode does.
    """

    def __init__(self, tokenizer: _Vocab, *, special: bool = False, strip_leading_space: bool = True):
        self._tok = tokenizer
        self._special = special
        self._at_start = strip_leading_space
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self.token_ids: list[int] = []

    def add(self, token_id: int) -> str:
        """Feed one token; return the text that became complete (may be "")."""
        self.token_ids.append(token_id)
        data = self._tok.token_bytes(token_id, special=self._special)
        if self._at_start and data:
            if self._tok.strips_leading_space(token_id) and data[:1] == b" ":
                data = data[1:]
            self._at_start = False
        text = self._utf8.decode(data)
        if text:
            self._parts.append(text)
        return text

    def finalize(self) -> str:
        """Flush: an unfinished UTF-8 sequence at the end becomes U+FFFD."""
        text = self._utf8.decode(b"", final=True)
        if text:
            self._parts.append(text)
        return text

    @property
    def text(self) -> str:
        """Everything returned so far."""
        return "".join(self._parts)
