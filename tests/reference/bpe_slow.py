"""A slow, readable byte-level BPE: the reference `tmac_core.tokenizer.bpe` is tested against.

Written from the GPT-2 paper's encoder (openai/gpt-2 src/encoder.py) and llama.cpp's
pre-tokenizer regexes, sharing no code with the runtime. Text -> regex pieces (each
regex in turn; matches and the gaps between them are both pieces) -> bytes -> one
printable character per byte -> merge the lowest-ranked adjacent pair until none is
left -> ids. Bytes with no token are dropped, as the `tokenizers` BPE model does.
Test-only: uses the `regex` package for \\p{L}; no Qt.
"""

from __future__ import annotations

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (regexes, ignore_merges) per tokenizer.ggml.pre, as in llama.cpp's llm_tokenizer_bpe.
PRE = {
    "gpt-2": ([GPT2], False),
    "smollm": ([r"\p{N}", GPT2], False),
    "starcoder": ([r"\p{N}", GPT2], False),
    "llama-bpe": ([LLAMA3], True),
    "qwen2": ([QWEN2], False),
    "default": ([r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"], False),
}


def bytes_to_unicode() -> dict[int, str]:
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def pre_tokenize(text: str, patterns: list[str]) -> list[str]:
    pieces = [text]
    for pattern in patterns:
        rx = regex.compile(pattern)
        out = []
        for piece in pieces:
            pos = 0
            for m in rx.finditer(piece):
                if m.start() == m.end():
                    continue
                if m.start() > pos:
                    out.append(piece[pos : m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(piece):
                out.append(piece[pos:])
        pieces = out
    return pieces


class SlowBPE:
    def __init__(
        self, vocab: dict[str, int], merges: list[tuple[str, str]], patterns: list[str], ignore_merges: bool = False
    ):
        self.vocab = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.patterns = patterns
        self.ignore_merges = ignore_merges
        self.byte_char = bytes_to_unicode()

    def bpe(self, word: str) -> list[str]:
        if self.ignore_merges and word in self.vocab:
            return [word]
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            ranked = [(r, i) for r, i in pairs if r is not None]
            if not ranked:
                break
            _, i = min(ranked)  # lowest rank, then leftmost
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in pre_tokenize(text, self.patterns):
            word = "".join(self.byte_char[b] for b in piece.encode("utf-8") if self.byte_char[b] in self.vocab)
            ids.extend(self.vocab[p] for p in self.bpe(word) if p in self.vocab)
        return ids
