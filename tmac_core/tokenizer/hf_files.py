"""The tokenizer of a Hugging Face model folder, built on the same classes as a GGUF's.

The folder's files are turned into the `tokenizer.ggml.*` metadata llama.cpp's converter
(convert_hf_to_gguf.py) would write, and handed to `tokenizer_from_gguf`: so a folder gets the
very BpeTokenizer / SpmTokenizer, special-token matcher, chat-template sandbox and stop
tokens its GGUF conversion would, with no second implementation.

- `tokenizer.json` with a byte-level BPE model (Llama-3, Qwen2, SmolLM): vocab, merges,
  added tokens (special → control, others → user-defined), and the pre-tokenizer, named by
  matching its regexes against bpe.PRE_TOKENIZERS (llama.cpp names it by hashing a test
  tokenization instead; an unknown one falls back to GPT-2's with a warning).
- `tokenizer.model` (SentencePiece BPE: Llama-2, TinyLlama, 1bitLLM): pieces, scores and
  types as they are; added tokens past its end from tokenizer_config.json.
- `tokenizer_config.json`: bos/eos/pad tokens, add_bos_token/add_eos_token, the chat
  template (a string, a list of named templates, or `chat_template.jinja` beside it).
- `generation_config.json`: eos_token_id (one or a list) become stop tokens.
The vocabulary is padded with unused tokens up to the model's vocab_size (embeddings are
often padded, Qwen2's to 151936), as llama.cpp does. Every file is read through
tmac_core.loading.safetensors's folder rules (inside the folder, size-capped, strict JSON).
No Qt, no app code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmac_core.errors import ModelLoadError, TokenizerError
from tmac_core.loading.safetensors import confined_file, parse_json, read_small_file
from tmac_core.tokenizer.base import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Tokenizer
from tmac_core.tokenizer.bpe import _GPT2, PRE_TOKENIZERS
from tmac_core.tokenizer.load import tokenizer_from_gguf

MAX_TOKENIZER_BYTES = 256 << 20  # tokenizer.json of a 256k vocabulary is ~35 MB
MAX_CONFIG_BYTES = 16 << 20  # tokenizer_config.json with a long chat template
SPM_TYPES = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}


def _read_json(folder: Path, name: str, max_bytes: int) -> Any:
    """The parsed JSON file, or None when the folder has no such file."""
    if not (folder / name).exists() and not (folder / name).is_symlink():
        return None
    path = confined_file(folder, name, (".json",), "tokenizer file")
    return parse_json(read_small_file(path, max_bytes, name), str(path), name)


def _token_text(value: Any, what: str) -> str | None:
    """A token given as a string or as an AddedToken object {"content": ...}."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        raise TokenizerError(f"{what} must be a string or {{'content': string}}, found {type(value).__name__}")
    return value


def _pre_tokenizer_regexes(pre: Any) -> tuple[list[str], bool]:
    """The regexes a tokenizer.json pre-tokenizer splits by, in order, and whether it is byte-level."""
    if pre is None:
        return [], False
    if not isinstance(pre, dict):
        raise TokenizerError("tokenizer.json pre_tokenizer must be an object")
    kind = pre.get("type")
    if kind == "Sequence":
        parts = pre.get("pretokenizers")
        if not isinstance(parts, list):
            raise TokenizerError("tokenizer.json pre_tokenizer Sequence needs a list of pretokenizers")
        regexes: list[str] = []
        byte_level = False
        for part in parts:
            r, b = _pre_tokenizer_regexes(part)
            regexes += r
            byte_level |= b
        return regexes, byte_level
    if kind == "Split":
        pattern = pre.get("pattern")
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        if not isinstance(regex, str):
            raise TokenizerError("tokenizer.json Split pre-tokenizer needs a {'Regex': string} pattern")
        return [regex], False
    if kind == "Digits":
        return ([r"\p{N}"] if pre.get("individual_digits") else [r"\p{N}+"]), False
    if kind == "ByteLevel":
        return ([_GPT2] if pre.get("use_regex", True) else []), True
    raise TokenizerError(f"tokenizer.json pre-tokenizer {kind!r} is not supported")


def _mentions_byte_level(pre: Any) -> bool:
    """Whether a pre-tokenizer is byte-level (GPT-2 style) anywhere in its sequence; Llama-2's
    tokenizer.json (Metaspace, byte fallback) is not, and is read from tokenizer.model instead."""
    if isinstance(pre, dict):
        return pre.get("type") == "ByteLevel" or any(_mentions_byte_level(p) for p in pre.get("pretokenizers") or [])
    return False


def _pre_name(regexes: list[str], ignore_merges: bool) -> str:
    """The bpe.PRE_TOKENIZERS name with these regexes (preferring one with the same ignore_merges)."""
    names = [name for name, (r, _, _) in PRE_TOKENIZERS.items() if list(r) == regexes]
    same = [name for name in names if PRE_TOKENIZERS[name][1] == ignore_merges]
    return (same or names or ["tokenizer.json: unrecognised pre-tokenizer"])[0]


def _bpe_metadata(tj: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    vocab = model.get("vocab")
    merges = model.get("merges")
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError("tokenizer.json model.vocab must be a non-empty object")
    if not isinstance(merges, list):
        raise TokenizerError("tokenizer.json model.merges must be a list")
    tokens: dict[int, tuple[str, int]] = {}
    for text, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < (1 << 22):
            raise TokenizerError(f"tokenizer.json vocab id of {text!r} is {i!r}, not a token id")
        if i in tokens:
            raise TokenizerError(f"tokenizer.json vocab gives id {i} to {tokens[i][0]!r} and {text!r}")
        tokens[i] = (text, NORMAL)
    _add_tokens(tokens, tj.get("added_tokens") or [])
    merge_texts: list[str] = []
    for m in merges:
        if isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            merge_texts.append(f"{m[0]} {m[1]}")
        elif isinstance(m, str):
            merge_texts.append(m)
        else:
            raise TokenizerError(f"tokenizer.json merge {m!r} is neither 'a b' nor ['a', 'b']")
    regexes, _ = _pre_tokenizer_regexes(tj.get("pre_tokenizer"))
    ignore_merges = model.get("ignore_merges", False) is True
    md = _token_lists(tokens)
    md["tokenizer.ggml.model"] = "gpt2"
    md["tokenizer.ggml.merges"] = merge_texts
    md["tokenizer.ggml.pre"] = _pre_name(regexes, ignore_merges)
    return md


def _add_tokens(tokens: dict[int, tuple[str, int]], added: Any) -> None:
    """tokenizer.json `added_tokens`: special ones are control tokens, the others user-defined."""
    if not isinstance(added, list):
        raise TokenizerError("tokenizer.json added_tokens must be a list")
    for entry in added:
        if not isinstance(entry, dict):
            raise TokenizerError("tokenizer.json added_tokens entries must be objects")
        i, text = entry.get("id"), entry.get("content")
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < (1 << 22) or not isinstance(text, str):
            raise TokenizerError(f"tokenizer.json added token {entry!r} needs an integer id and a string content")
        if i in tokens and tokens[i][0] != text:
            raise TokenizerError(f"tokenizer.json added token {text!r} reuses id {i} of {tokens[i][0]!r}")
        tokens[i] = (text, CONTROL if entry.get("special") is True else USER_DEFINED)


def _token_lists(tokens: Mapping[int, tuple[str, int]]) -> dict[str, Any]:
    """Parallel token and type lists; a gap in the ids becomes an unused placeholder."""
    n = max(tokens) + 1
    texts = [f"[PAD{i}]" for i in range(n)]
    types = [UNUSED] * n
    for i, (text, kind) in tokens.items():
        texts[i], types[i] = text, kind
    return {"tokenizer.ggml.tokens": texts, "tokenizer.ggml.token_type": types}


def _spm_metadata(data: bytes, path: str, tc: Mapping[str, Any]) -> dict[str, Any]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # noqa: BLE001  protobuf's DecodeError, or its C++ parser's RuntimeError
        raise TokenizerError(f"{path}: not a SentencePiece model: {e}") from None
    if not proto.pieces:
        raise TokenizerError(f"{path}: SentencePiece model has no pieces")
    if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise TokenizerError(f"{path}: only SentencePiece BPE models are supported (Llama-2 style)")
    tokens: dict[int, tuple[str, int]] = {
        i: (p.piece, SPM_TYPES.get(p.type, NORMAL)) for i, p in enumerate(proto.pieces)
    }
    scores = [float(p.score) for p in proto.pieces]
    added = tc.get("added_tokens_decoder") or {}
    if not isinstance(added, dict):
        raise TokenizerError("tokenizer_config.json added_tokens_decoder must be an object")
    for key, entry in added.items():
        if not (isinstance(key, str) and key.isdigit() and isinstance(entry, dict)):
            raise TokenizerError(f"tokenizer_config.json added_tokens_decoder entry {key!r} is malformed")
        i = int(key)
        if i >= len(proto.pieces):
            _add_tokens(tokens, [{**entry, "id": i}])
    md = _token_lists(tokens)
    scores += [0.0] * (len(md["tokenizer.ggml.tokens"]) - len(scores))
    spec, ts = proto.normalizer_spec, proto.trainer_spec
    md.update(
        {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.add_space_prefix": bool(spec.add_dummy_prefix),
            "tokenizer.ggml.remove_extra_whitespaces": bool(spec.remove_extra_whitespaces),
        }
    )
    for key, value in (("bos", ts.bos_id), ("eos", ts.eos_id), ("unknown", ts.unk_id), ("padding", ts.pad_id)):
        if value >= 0:
            md[f"tokenizer.ggml.{key}_token_id"] = value
    md["tokenizer.ggml.add_bos_token"] = True  # SentencePiece's and llama.cpp's default
    return md


def _template(folder: Path, tc: Mapping[str, Any]) -> str | None:
    """The chat template: tokenizer_config.json's (a string or the "default" of a named list),
    else chat_template.jinja (what transformers 5 writes)."""
    value = tc.get("chat_template")
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default", next(iter(named.values()), None))
    if value is not None and not isinstance(value, str):
        raise TokenizerError("tokenizer_config.json chat_template must be a string or a list of named templates")
    if value is None and (folder / "chat_template.jinja").exists():
        path = confined_file(folder, "chat_template.jinja", (".jinja",), "chat template")
        try:
            value = read_small_file(path, MAX_CONFIG_BYTES, "chat_template.jinja").decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerError(f"{path}: not UTF-8") from None
    return value


def _stop_ids(gc: Any, n_tokens: int) -> set[int]:
    """generation_config.json eos_token_id: an id or a list of ids."""
    if gc is None:
        return set()
    value = gc.get("eos_token_id") if isinstance(gc, dict) else None
    ids = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TokenizerError(f"generation_config.json eos_token_id must be an id or a list of ids, found {value!r}")
    return {i for i in ids if 0 <= i < n_tokens}


def tokenizer_from_folder(folder: str | os.PathLike[str], vocab_size: int) -> Tokenizer:
    """The tokenizer of a Hugging Face model folder, padded to the model's `vocab_size`.

    Raises:
        TokenizerError: no usable tokenizer file, or one that does not describe a vocabulary.
        ModelFormatError: a file that is not valid JSON, too large, or outside the folder.
    """
    root = Path(folder).resolve()
    tc = _read_json(root, "tokenizer_config.json", MAX_CONFIG_BYTES) or {}
    if not isinstance(tc, dict):
        raise TokenizerError("tokenizer_config.json must be a JSON object")
    tj = _read_json(root, "tokenizer.json", MAX_TOKENIZER_BYTES)
    model = tj.get("model") if isinstance(tj, dict) else None
    if tj is not None and not isinstance(model, dict):
        raise TokenizerError("tokenizer.json has no model object")
    if model is not None and model.get("type") == "BPE" and _mentions_byte_level(tj.get("pre_tokenizer")):
        md = _bpe_metadata(tj, model)
    elif (root / "tokenizer.model").exists():
        path = confined_file(root, "tokenizer.model", (".model",), "tokenizer file")
        md = _spm_metadata(read_small_file(path, MAX_TOKENIZER_BYTES, "tokenizer.model"), str(path), tc)
    elif tj is None:
        raise ModelLoadError(f"{root}: no tokenizer.json or tokenizer.model")
    else:
        kind = model.get("type") if model is not None else None
        raise TokenizerError(
            f"{root}: tokenizer.json holds a {kind} model without byte-level pre-tokenization and there is no"
            " tokenizer.model; supported: byte-level BPE tokenizer.json, SentencePiece tokenizer.model"
        )
    texts: list[str] = md["tokenizer.ggml.tokens"]
    if len(texts) > vocab_size:
        raise TokenizerError(f"the tokenizer has {len(texts)} tokens but the model's vocab_size is {vocab_size}")
    for i in range(len(texts), vocab_size):  # llama.cpp pads with [PAD{i}] the same way
        texts.append(f"[PAD{i}]")
        md["tokenizer.ggml.token_type"].append(UNUSED)
        if "tokenizer.ggml.scores" in md:
            md["tokenizer.ggml.scores"].append(0.0)
    index = {text: i for i, text in reversed(list(enumerate(texts)))}  # first id of each text

    def token_id(key: str) -> int | None:
        text = _token_text(tc.get(key), f"tokenizer_config.json {key}")
        if text is None:
            return None
        if text not in index:
            raise TokenizerError(f"tokenizer_config.json {key} {text!r} is not in the vocabulary")
        return index[text]

    for key, gguf_key in (
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("pad_token", "padding"),
        ("unk_token", "unknown"),
    ):
        found = token_id(key)
        if found is not None:
            md[f"tokenizer.ggml.{gguf_key}_token_id"] = found
    if md["tokenizer.ggml.model"] == "gpt2":
        md["tokenizer.ggml.add_bos_token"] = _adds_bos(tj, md)
    for key in ("add_bos_token", "add_eos_token"):
        value = tc.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise TokenizerError(f"tokenizer_config.json {key} must be true or false")
            md[f"tokenizer.ggml.{key}"] = value
    template = _template(root, tc)
    if template:
        md["tokenizer.chat_template"] = template
    tokenizer = tokenizer_from_gguf(md, os.fspath(root))
    gc = _read_json(root, "generation_config.json", MAX_CONFIG_BYTES)
    tokenizer.stop_ids = tokenizer.stop_ids | _stop_ids(gc, vocab_size)
    return tokenizer


def _adds_bos(tj: Mapping[str, Any], md: dict[str, Any]) -> bool:
    """Whether tokenizer.json's post-processor puts a special token first (Llama-3's BOS);
    that token becomes the BOS when tokenizer_config.json names none."""
    procs = tj.get("post_processor")
    stack = [procs]
    while stack:
        p = stack.pop()
        if not isinstance(p, dict):
            continue
        if p.get("type") == "Sequence":
            stack.extend(reversed(p.get("processors") or []))
        elif p.get("type") == "TemplateProcessing":
            single = p.get("single")
            first = single[0] if isinstance(single, list) and single else None
            special = first.get("SpecialToken") if isinstance(first, dict) else None
            if isinstance(special, dict) and isinstance(special.get("id"), str):
                texts = md["tokenizer.ggml.tokens"]
                if "tokenizer.ggml.bos_token_id" not in md and special["id"] in texts:
                    md["tokenizer.ggml.bos_token_id"] = texts.index(special["id"])
                return True
            return False
    return False
