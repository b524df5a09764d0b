"""Markdown prose → the HTML subset Qt's rich-text labels draw, with raw HTML OFF.

Answers are Markdown written by a model and may contain anything: `<div>`,
`<<Title>>`, a `<script>` the user asked about. Qt's own Markdown reader passes
raw HTML through, so such text vanished or swallowed what followed. Here raw
HTML is escaped and shown as the characters it is. Single line breaks stay
line breaks (poems, addresses, lists without markers), and indented text stays
prose rather than turning into a code block (fenced code is split off before
this, by app.ui.markdown_blocks, into its own widget). Links keep CommonMark's
scheme check, so `javascript:` never becomes a link. Qt-free.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt

# Qt's rich text has no CSS borders for tables: the attributes are what draws them.
_TABLE_OPEN = '<table border="1" cellspacing="0" cellpadding="4">'


@lru_cache(maxsize=1)
def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("code")  # indented code blocks: pasted indented text is prose
    return md


def prose_to_html(text: str) -> str:
    """HTML for one prose block of a message (no fenced code: that is split off first)."""
    return _renderer().render(text).replace("<table>", _TABLE_OPEN).strip()
