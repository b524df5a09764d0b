"""Split a chat message into prose and fenced code blocks, so each code block gets its own widget
(syntax highlighting, a Copy button) while prose goes to Qt's Markdown renderer.

Works on half-written text too: while an answer streams, an opening fence with no
closing fence yet is a code block that runs to the end. Pure Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# CommonMark fences: three or more backticks or tildes, up to three spaces of indent, an info string.
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    kind: str  # "text" (Markdown prose), "code" (fenced) or "plain" (shown as typed)
    text: str
    language: str = ""  # the fence's info word, e.g. "python"; "" when none
    closed: bool = True  # False for a code block still being streamed


def split_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    language = ""
    for line in text.split("\n"):
        if not fence:
            match = _FENCE.match(line)
            if match:
                if prose:
                    blocks.append(Block("text", "\n".join(prose)))
                    prose = []
                fence, language, code = match["fence"], match["info"], []
            else:
                prose.append(line)
            continue
        stripped = line.strip()
        if stripped and stripped[0] == fence[0] and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            blocks.append(Block("code", "\n".join(code), language))
            fence = ""
        else:
            code.append(line)
    if fence:
        blocks.append(Block("code", "\n".join(code), language, closed=False))
    elif prose and "\n".join(prose).strip():
        blocks.append(Block("text", "\n".join(prose)))
    return [b for b in blocks if b.kind == "code" or b.text.strip()]
