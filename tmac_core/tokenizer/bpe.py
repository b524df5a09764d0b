"""Byte-level BPE tokenizer (GGUF `tokenizer.ggml.model = "gpt2"`: GPT-2, Llama-3, Qwen2, SmolLM).

Built from GGUF tokens and merges with the `tokenizers` library. The pre-tokenizer
(the regex that cuts text into words before merging) is chosen by `tokenizer.ggml.pre`;
the table below follows llama.cpp's `llm_tokenizer_bpe` (src/llama-vocab.cpp), where each
entry is a list of regexes applied one after another, every match and every gap
becoming its own piece. Special tokens are never part of the `tokenizers` model: the
base class splits them out of trusted text only. No Qt, no `app`, no GGUF reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tmac_core.errors import TokenizerError
from tmac_core.tokenizer.base import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    Metadata,
    Tokenizer,
    has_surrogates,
)

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# llama.cpp spells (?i:'s|...) out as '[sS]|... for its own regex engine; `tokenizers`
# (Oniguruma) takes the original tokenizer.json form.
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BLOOM = r" ?[^(\s|.,!?…。，、।۔،)]+"

# name -> (regexes, ignore_merges, default add_bos)
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool, bool]] = {}


def _register(names: str, regexes: Sequence[str], ignore_merges: bool = False, add_bos: bool = False) -> None:
    for name in names.split():
        PRE_TOKENIZERS[name] = (tuple(regexes), ignore_merges, add_bos)


_register("default", [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"])
_register(
    "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2", [_LLAMA3], ignore_merges=True, add_bos=True
)
_register("dbrx smaug-bpe glm4 chatglm-bpe", [_LLAMA3])
_register("falcon", [r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"])
_register("starcoder refact command-r smollm codeshell exaone minerva-7b", [r"\p{N}", _GPT2])
_register(
    "gpt-2 gpt2 mpt phi-2 olmo jais trillion granite-docling exaone4 jina-es jina-de "
    "gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert roberta-bpe "
    "jina-v1-en jina-v2-code",
    [_GPT2],
)
_register("qwen2 deepseek-r1-qwen kormo megrez stablelm2 hunyuan", [_QWEN2])
_register("poro-chat bloom gpt3-finnish", [_BLOOM])
_register("viking", [_BLOOM, r"\p{N}"])
_register("tekken", [_TEKKEN], ignore_merges=True, add_bos=True)
_register("gpt-4o llama4", [_GPT4O])


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (openai/gpt-2 encoder.py)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}


def _piece_to_bytes(piece: str) -> bytes:
    out = bytearray()
    for ch in piece:
        b = _BYTE_OF_CHAR.get(ch)
        # A character outside the map cannot come from the byte-level pre-tokenizer;
        # some converted vocabularies contain them anyway, so keep them as UTF-8.
        out += bytes([b]) if b is not None else ch.encode("utf-8", "surrogateescape")
    return bytes(out)


def _split_merge(merge: str) -> tuple[str, str] | None:
    # llama.cpp splits at the first space after position 0 (a token may start with one).
    pos = merge.find(" ", 1)
    if pos < 0:
        return None
    return merge[:pos], merge[pos + 1 :]


class BpeTokenizer(Tokenizer):
    """Byte-level BPE through `tokenizers`."""

    model = "gpt2"

    def __init__(self, md: Mapping[str, Any], path: str = "model metadata"):
        meta = Metadata(md, path)
        self._pre_warning: str | None = None
        pre = meta.get_str("tokenizer.ggml.pre")
        if not pre:
            self._pre_warning = "tokenizer.ggml.pre is missing; using llama.cpp's 'default'"
            pre = "default"
        elif str(pre) not in PRE_TOKENIZERS:
            self._pre_warning = (
                f"unknown pre-tokenizer {pre!r}; using the GPT-2 regex "
                "(tokenization may differ from the model's training)"
            )
            pre = "gpt-2"
        else:
            self._pre_warning = None
        self.pre = str(pre)
        self._regexes, ignore_merges, self._add_bos_default = PRE_TOKENIZERS[self.pre]
        super().__init__(md, path)
        if self._pre_warning:
            self.warnings.append(self._pre_warning)
        self._tk = self._build(meta.get_str_list("tokenizer.ggml.merges") or [], ignore_merges)

        self._bytes: list[bytes] = []
        for text, ttype in zip(self.tokens, self.token_types):
            if ttype in (CONTROL, UNKNOWN, UNUSED):
                self._bytes.append(b"")
            elif ttype == USER_DEFINED:  # stored as plain text, not byte-mapped (llama.cpp)
                self._bytes.append(text.encode("utf-8", "surrogateescape"))
            else:
                self._bytes.append(_piece_to_bytes(text))

    def _default_add_bos(self) -> bool:
        return self._add_bos_default

    def _build(self, merge_list: list[str], ignore_merges: bool) -> Any:
        from tokenizers import Regex, models, pre_tokenizers
        from tokenizers import Tokenizer as HfTokenizer

        vocab: dict[str, int] = {}
        for i, (text, ttype) in enumerate(zip(self.tokens, self.token_types)):
            # a non-UTF-8 token cannot come out of the byte-level pre-tokenizer (and
            # `tokenizers` cannot hold it): it decodes, it is never produced
            if ttype in (NORMAL, BYTE) and not has_surrogates(text):
                vocab[text] = i
        # Bytes C0, C1 and F5..FF never occur in UTF-8 text, so only the others matter.
        missing = [b for b, c in bytes_to_unicode().items() if c not in vocab and not (b in (0xC0, 0xC1) or b >= 0xF5)]
        if missing:
            # `tokenizers` drops a byte it has no token for (llama.cpp would throw).
            self.warnings.append(
                f"no token for byte(s) {', '.join(f'0x{b:02X}' for b in missing)};"
                " those bytes are dropped when encoding"
            )
        merges: list[tuple[str, str]] = []
        bad = 0
        for m in merge_list:
            pair = _split_merge(m)
            if pair and pair[0] in vocab and pair[1] in vocab and pair[0] + pair[1] in vocab:
                merges.append(pair)
            else:
                bad += 1
        if bad:
            self.warnings.append(f"{bad} merges refer to tokens not in the vocabulary; skipped")
        if not merges:
            raise TokenizerError("tokenizer.ggml.merges is missing or empty for a gpt2 vocabulary")
        try:
            tk = HfTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
            tk.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in self._regexes]
                + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
            )
        except Exception as e:  # the library raises its own exception types
            raise TokenizerError(f"cannot build the BPE tokenizer: {e}") from e
        return tk

    def _encode_fragments(self, fragments: Sequence[str | int]) -> list[int]:
        ids: list[int] = []
        for f in fragments:
            if isinstance(f, int):
                ids.append(f)
            elif f:
                ids.extend(self._tk.encode(f, add_special_tokens=False).ids)
        return ids
