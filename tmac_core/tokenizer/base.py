"""The tokenizer interface shared by the SentencePiece and byte-level BPE vocabularies.

A `Tokenizer` is built from plain GGUF metadata (a mapping of `tokenizer.ggml.*` keys,
never a reader object) and turns text into token ids and ids back into bytes. The one
rule that matters for security lives here: special tokens (control and user-defined
types) are recognised only in text the caller vouches for (`allow_special=True`, or the
template-produced parts of a `RenderedChat`); the same strings typed by a user are
plain text. Pure Python: no Qt, no `app` imports, no GGUF reader.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from tmac_core.errors import ModelFormatError, TokenizerError
from tmac_core.tokenizer.chat_template import RenderedChat, render_chat, unmark
from tmac_core.tokenizer.detok import StreamingDetokenizer
from tmac_core.tokenizer.special import SpecialMatcher, can_be_special

# GGUF token types; the numbering is SentencePiece's ModelProto.SentencePiece.Type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Control tokens that end a turn in common chat formats. llama.cpp uses the same kind of
# text heuristic (llama-vocab.cpp, "auto-detect special tokens by text") because many
# GGUF files do not set tokenizer.ggml.eot_token_id.
_END_OF_TURN_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|eom_id|>",
        "<|end_of_text|>",
        "</s>",
    }
)

_SURROGATES = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    """True if `text` holds bytes that were not valid UTF-8 in the file.

    The GGUF reader decodes token text with errors="surrogateescape" (a GGUF string is
    bytes; llama.cpp keeps token text as raw bytes): such a token loads, its bytes stay
    exact (`.encode("utf-8", "surrogateescape")`), and it can never be produced from
    text, which is valid Unicode by the time it is encoded.
    """
    return _SURROGATES.search(text) is not None


class Metadata:
    """Typed, range-checked reads of plain GGUF metadata (key → str, int, float, bool,
    list of str, or numpy array, as tmac_core.loading.gguf gives them).

    The file is untrusted: every `tokenizer.*` value is read through one of these
    methods, and a value of the wrong type or out of range is a ModelFormatError
    naming the key, never a TypeError or ValueError from deep inside a tokenizer.
    """

    def __init__(self, md: Mapping[str, Any], path: str = "model metadata"):
        self.md, self.path = md, path

    def fail(self, key: str, reason: str) -> NoReturn:
        raise ModelFormatError(self.path, f"kv {key!r}", None, reason)

    def _get(self, key: str) -> Any:
        return self.md.get(key)

    def get_int(self, key: str, *, min_value: int = -(1 << 63), max_value: int = (1 << 63) - 1) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            self.fail(key, f"expected an integer, found {type(value).__name__}")
        if not min_value <= value <= max_value:
            self.fail(key, f"value {value} outside [{min_value}, {max_value}]")
        return int(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, (bool, np.bool_)):
            self.fail(key, f"expected a bool, found {type(value).__name__}")
        return bool(value)

    def get_str(self, key: str) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, f"expected a string, found {type(value).__name__}")
        return value

    def get_str_list(self, key: str) -> list[str] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"expected an array of strings, found {_describe(value)}")
        return list(value)

    def get_numbers(self, key: str, *, integers: bool) -> np.ndarray | None:
        """A 1-D array of integers (int64) or of finite numbers (float64)."""
        value = self._get(key)
        if value is None:
            return None
        what = "integers" if integers else "numbers"
        if not isinstance(value, (list, tuple, np.ndarray)):
            self.fail(key, f"expected an array of {what}, found {_describe(value)}")
        if any(isinstance(v, (bool, np.bool_)) for v in value[:1]) or (
            isinstance(value, np.ndarray) and value.dtype == np.bool_
        ):
            self.fail(key, f"expected an array of {what}, found an array of bools")
        try:
            arr = np.asarray(value)
        except (ValueError, OverflowError):
            self.fail(key, f"expected an array of {what}, found {_describe(value)}")
        kinds = "iu" if integers else "iuf"
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in kinds):
            self.fail(key, f"expected an array of {what}, found {_describe(value)}")
        if integers:
            if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
                self.fail(key, "an element does not fit in int64")
            return arr.astype(np.int64)
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            self.fail(key, f"element {int(np.argmin(np.isfinite(out)))} is not finite")
        return out


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}"
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value[:100]})
        return f"an array of {'/'.join(kinds) or 'nothing'}"
    return type(value).__name__


class Tokenizer(ABC):
    """Text <-> token ids for one model vocabulary.

    Build one with `tokenizer_from_gguf(md)` (tokenizer/load.py). Subclasses implement
    `_encode_fragments` (plain text only, never special tokens).
    """

    model: str = ""  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    _bytes: list[bytes]  # the bytes of each token id; a subclass fills it when it reads the vocabulary

    def __init__(self, md: Mapping[str, Any], path: str = "model metadata"):
        meta = Metadata(md, path)
        tokens = meta.get_str_list("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("tokenizer.ggml.tokens is missing or empty")
        self.tokens: list[str] = tokens
        n = len(self.tokens)
        types = meta.get_numbers("tokenizer.ggml.token_type", integers=True)
        if types is not None and len(types) != n:
            raise TokenizerError(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
        self.token_types: list[int] = [NORMAL] * n if types is None else types.tolist()
        self.warnings: list[str] = []
        n_bad = sum(map(has_surrogates, self.tokens))
        if n_bad:
            self.warnings.append(
                f"{n_bad} tokens are not valid UTF-8; they decode to their bytes, text never makes them"
            )

        def token_id(key: str) -> int | None:
            value = meta.get_int(key)
            if value is None:
                return None
            if not 0 <= value < n:
                self.warnings.append(f"{key} = {value} is outside the vocabulary; ignored")
                return None
            return value

        self.bos_id = token_id("tokenizer.ggml.bos_token_id")
        self.eos_id = token_id("tokenizer.ggml.eos_token_id")
        self.unk_id = token_id("tokenizer.ggml.unknown_token_id")
        self.pad_id = token_id("tokenizer.ggml.padding_token_id")
        self.add_bos = meta.get_bool("tokenizer.ggml.add_bos_token", self._default_add_bos())
        self.add_eos = meta.get_bool("tokenizer.ggml.add_eos_token", False)
        if self.add_bos and self.bos_id is None:
            self.warnings.append("add_bos_token is set but there is no BOS token; not adding it")
            self.add_bos = False
        if self.add_eos and self.eos_id is None:
            self.add_eos = False
        self.chat_template: str | None = meta.get_str("tokenizer.chat_template") or None

        # Strings matched as special tokens in trusted text: control and user-defined.
        # A one-character token cannot be guarded in message text (chat_template marks
        # inside the string), so it is never matched as special; nor is an over-long one
        # (tokenizer/special.py: that bound keeps matching linear in the text).
        self.special_tokens: dict[str, int] = {}
        for i, (text, ttype) in enumerate(zip(self.tokens, self.token_types)):
            if ttype in (CONTROL, USER_DEFINED) and can_be_special(text) and not has_surrogates(text):
                self.special_tokens.setdefault(text, i)
        # Leftmost-longest, so "<|im_start|>" wins over a shorter token that is its prefix.
        self._special = SpecialMatcher(self.special_tokens)

        stop = {self.eos_id} if self.eos_id is not None else set()
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            extra = token_id(key)
            if extra is not None:
                stop.add(extra)
        for text, i in self.special_tokens.items():
            if text in _END_OF_TURN_TEXTS and self.token_types[i] == CONTROL:
                stop.add(i)
        self.stop_ids: frozenset[int] = frozenset(stop)

    def _default_add_bos(self) -> bool:
        return False

    # -- encoding -------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def bos_text(self) -> str:
        return self.tokens[self.bos_id] if self.bos_id is not None else ""

    @property
    def eos_text(self) -> str:
        return self.tokens[self.eos_id] if self.eos_id is not None else ""

    def encode(self, text: str, *, allow_special: bool, add_special: bool = False) -> list[int]:
        """Token ids for `text`.

        Args:
            text: any str; lone surrogates are replaced by U+FFFD first.
            allow_special: True only for text the program itself produced (a template,
                a fixed prompt). False for anything a user typed: then "<|im_end|>" is
                the characters "<", "|", ... and never the control token.
            add_special: add BOS/EOS as the vocabulary's add_bos_token/add_eos_token say.
        """
        text = _SURROGATES.sub("\ufffd", text)
        if allow_special:
            fragments = self._split_special(text)
        else:
            fragments = [text] if text else []
        return self._finish(self._encode_fragments(fragments), add_special)

    def encode_chat(self, rendered: RenderedChat) -> list[int]:
        """Token ids for a prompt made by `render_chat`, BOS added if the model wants one.

        Special tokens are recognised in the template's own text only; message contents
        were marked at render time so that special-token strings in them stay plain text.
        """
        missing = self.special_tokens.keys() - rendered.guarded
        if missing:
            raise TokenizerError(
                "this prompt was rendered without guarding this vocabulary's special tokens "
                f"(e.g. {sorted(missing)[0]!r}); render it with Tokenizer.apply_chat_template"
            )
        fragments = [
            f if isinstance(f, int) else unmark(_SURROGATES.sub("\ufffd", f))
            for f in self._split_special(rendered.marked)
        ]
        ids = self._encode_fragments([f for f in fragments if f != ""])
        return self._finish(ids, add_special=True, eos=False)

    def apply_chat_template(
        self,
        messages: Sequence[Any],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Any] | None = None,
        **extra: Any,
    ) -> tuple[list[int], RenderedChat]:
        """Render `messages` with the model's template (or the fallback) and tokenize.

        Returns:
            (ids, rendered): `rendered.notice` is a message for the user when the
            built-in fallback template was used, else None.
        """
        rendered = render_chat(
            self.chat_template,
            messages,
            bos_token=self.bos_text,
            eos_token=self.eos_text,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            special_tokens=self._special,
            **extra,
        )
        return self.encode_chat(rendered), rendered

    def _split_special(self, text: str) -> list[str | int]:
        return [self.special_tokens[piece] if special else piece for piece, special in self._special.split(text)]

    def _finish(self, ids: list[int], add_special: bool, eos: bool = True) -> list[int]:
        # add_bos / add_eos are only ever True with their token id set (see __init__)
        bos_id, eos_id = self.bos_id, self.eos_id
        if add_special and self.add_bos and bos_id is not None and (not ids or ids[0] != bos_id):
            ids.insert(0, bos_id)
        if add_special and eos and self.add_eos and eos_id is not None:
            ids.append(eos_id)
        return ids

    @abstractmethod
    def _encode_fragments(self, fragments: Sequence[str | int]) -> list[int]:
        """Encode a list of plain-text strings and already-resolved special token ids."""

    # -- decoding -------------------------------------------------------------------

    def token_bytes(self, token_id: int, *, special: bool = False) -> bytes:
        """The raw bytes token `token_id` stands for (may be part of a UTF-8 character).

        Control tokens give b"" unless `special` is True (then their text). Subclasses
        fill `self._bytes` (one entry per id) when they read the vocabulary.
        """
        self._check_id(token_id)
        if special and self.token_types[token_id] == CONTROL:
            return self.tokens[token_id].encode("utf-8", "surrogateescape")
        return self._bytes[token_id]

    def strips_leading_space(self, token_id: int) -> bool:
        """True if a leading space of this token is dropped at the start of a decode."""
        return False

    def decode(self, ids: Iterable[int], *, special: bool = False) -> str:
        """Text for `ids`; invalid UTF-8 becomes U+FFFD. Same as streaming them."""
        detok = StreamingDetokenizer(self, special=special)
        return "".join(detok.add(i) for i in ids) + detok.finalize()

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < len(self.tokens):
            raise TokenizerError(f"token id {token_id} is outside the vocabulary of {len(self.tokens)} tokens")
