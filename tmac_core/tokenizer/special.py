"""Finding special-token strings in text in time linear in the text, whatever the vocabulary.

A vocabulary decides which strings are special (control and user-defined
tokens), and a model file is untrusted input: it may mark thousands of strings
special, many of them prefixes of each other. A regular expression made of
their alternation tries every alternative at every position, so its cost grew
with text length × number of tokens, and the chat template's guard re-ran it
until nothing matched. Here the strings go into a trie once per vocabulary; a
C-speed search jumps to the positions where a special string could start, and
from each such position the walk is at most MAX_SPECIAL_CHARS steps. So a
search costs at most len(text) × MAX_SPECIAL_CHARS trie steps, and in practice
a step or two per candidate position.

Strings shorter than two characters are never special (a mark cannot be put
inside them, see chat_template), nor longer than MAX_SPECIAL_CHARS (no real
vocabulary has one; such a string is still encoded, as ordinary text). No Qt,
standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The guard character the chat template puts inside special-token strings found in message
# text, so they can no longer match (a noncharacter: never in real text; a literal one is
# doubled before marking). A string containing it is never special.
MARK = "\ufdd0"
MAX_SPECIAL_CHARS = 128


def can_be_special(text: str) -> bool:
    return 2 <= len(text) <= MAX_SPECIAL_CHARS and MARK not in text


class _TrieNode:
    """One trie position: the characters that continue a special string from here."""

    __slots__ = ("children", "ends")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.ends: str | None = None  # the special string that ends here, if one does


class SpecialMatcher:
    """Leftmost-longest matching of a fixed set of special strings."""

    def __init__(self, strings: Iterable[str]) -> None:
        self.strings: frozenset[str] = frozenset(s for s in strings if can_be_special(s))
        self._trie = _TrieNode()
        for text in self.strings:
            node = self._trie
            for ch in text:
                node = node.children.setdefault(ch, _TrieNode())
            node.ends = text
        first = "".join(sorted(self._trie.children))
        self._starts = re.compile("[" + re.escape(first) + "]") if first else None

    def __bool__(self) -> bool:
        return bool(self.strings)

    def _longest_at(self, text: str, start: int) -> str | None:
        """The longest special string that begins at `start`, or None."""
        node, found = self._trie, None
        for ch in text[start : start + MAX_SPECIAL_CHARS]:
            child = node.children.get(ch)
            if child is None:
                break
            node = child
            if node.ends is not None:
                found = node.ends
        return found

    def split(self, text: str) -> list[tuple[str, bool]]:
        """`text` cut into (piece, is_special) in order; special pieces are leftmost-longest
        and do not overlap; the pieces joined give `text` back."""
        out: list[tuple[str, bool]] = []
        if self._starts is None:
            return [(text, False)] if text else []
        plain_from = pos = 0
        while (m := self._starts.search(text, pos)) is not None:
            start = m.start()
            found = self._longest_at(text, start)
            if found is None:
                pos = start + 1
                continue
            if start > plain_from:
                out.append((text[plain_from:start], False))
            out.append((found, True))
            plain_from = pos = start + len(found)
        if plain_from < len(text):
            out.append((text[plain_from:], False))
        return out

    def mark(self, text: str) -> str:
        """`text` with MARK after the first character of every occurrence of a special string,
        overlapping ones included, so that none survives; a literal MARK is doubled first.
        One pass: an occurrence starting at p is broken by the mark at p+1, and a MARK is in no
        special string, so no new occurrence can form across the marks."""
        text = text.replace(MARK, MARK + MARK)
        if self._starts is None:
            return text
        out: list[str] = []
        done = pos = 0
        while (m := self._starts.search(text, pos)) is not None:
            start = m.start()
            pos = start + 1
            if self._longest_at(text, start) is not None:
                out.append(text[done:pos])
                out.append(MARK)
                done = pos
        out.append(text[done:])
        return "".join(out)
