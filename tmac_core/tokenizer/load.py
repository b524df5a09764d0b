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

# microsoft/bitnet-b1.58-2B-4T-gguf: its converter hard-codes a placeholder chat template
# ("Human: ...\n\nBITNETAssistant: ", the end-of-text token before the reply; the model loops
# on it) and writes no tokenizer.ggml.pre for its Llama-3 vocabulary. The model was trained on
# the format of its Hugging Face tokenizer_config.json, which ends each turn with <|eot_id|>
# (a stop token by name, tokenizer/base.py) and prompts with "Assistant: ".
BITNET_PLACEHOLDER_MARK = "BITNETAssistant"
BITNET_2B4T_TEMPLATE = (  # as transformers' BitNet docstring shows it: BOS, then "User: ..."
    "{{ bos_token }}{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'system' %}{{ 'System: ' + content + '<|eot_id|>' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + content + '<|eot_id|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + content + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


def corrected_metadata(md: Mapping[str, Any]) -> Mapping[str, Any]:
    """`md` with the known defects of published GGUF files repaired (the BitNet b1.58
    2B-4T placeholder template and its missing pre-tokenizer); `md` itself otherwise."""
    template = md.get("tokenizer.chat_template")
    if not (isinstance(template, str) and BITNET_PLACEHOLDER_MARK in template):
        return md
    fixed = dict(md)
    fixed["tokenizer.chat_template"] = BITNET_2B4T_TEMPLATE
    fixed.setdefault("tokenizer.ggml.pre", "llama-bpe")
    return fixed


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
    md = corrected_metadata(md)
    model = Metadata(md, path).get_str("tokenizer.ggml.model")
    cls = None if model is None else TOKENIZERS.get(model)
    if cls is None:
        raise TokenizerError(
            f"unsupported tokenizer.ggml.model {model!r} (supported: 'llama' SentencePiece, 'gpt2' byte-level BPE)"
        )
    return cls(md, path)
