"""The one factory over the vocabulary kinds: which `Tokenizer` subclass a GGUF file asks for.

It lives apart from `base.py` because the subclasses import the base class: a factory
inside the base class had to import its own subclasses, an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tmac_core.errors import TokenizerError
from tmac_core.tokenizer.base import Metadata, Tokenizer
from tmac_core.tokenizer.bpe import BpeTokenizer
from tmac_core.tokenizer.spm import SpmTokenizer

# tokenizer.ggml.model -> the class that reads that vocabulary
TOKENIZERS: dict[str, type[Tokenizer]] = {"llama": SpmTokenizer, "gpt2": BpeTokenizer}


def tokenizer_from_gguf(md: Mapping[str, Any], path: str = "model metadata") -> Tokenizer:
    """Build the tokenizer a GGUF file describes.

    Args:
        md: GGUF key/value metadata as plain Python values (str, int, float, bool,
            lists of those). Only `tokenizer.*` keys are read.
        path: the file the metadata came from, for error messages.

    Raises:
        TokenizerError: unknown `tokenizer.ggml.model`, or a vocabulary that cannot
            be turned into a working tokenizer.
        ModelFormatError: a `tokenizer.*` value of the wrong type or out of range.
    """
    model = Metadata(md, path).get_str("tokenizer.ggml.model")
    cls = None if model is None else TOKENIZERS.get(model)
    if cls is None:
        raise TokenizerError(
            f"unsupported tokenizer.ggml.model {model!r} (supported: 'llama' SentencePiece, 'gpt2' byte-level BPE)"
        )
    return cls(md, path)
