"""Streaming detokenizer: never half a UTF-8 character, exact text at the end."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime.test_tokenizer_bpe import gguf_tokenizer_metadata
from tests.runtime.test_tokenizer_spm import to_gguf_metadata, train_model
from tmac_core.tokenizer import StreamingDetokenizer, tokenizer_from_gguf

TEXTS = [
    "plain ascii",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇯🇵",
    "中文字符与日本語のかな",
    "한국어 문장",
    "e\u0301 a\u0300\u0301 combining marks",
    "Zalgo: z\u0351\u0352a\u0353l\u0354g\u0355o",
    "mixed: naïve 😀 漢字 ok",
    " leading space",
    "\n\nnewlines\n",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚𝟛",
]


@pytest.fixture(scope="module")
def bpe(smollm2_reference):
    return tokenizer_from_gguf(gguf_tokenizer_metadata(smollm2_reference))


@pytest.fixture(scope="module")
def spm_model():
    return train_model()


@pytest.fixture(scope="module")
def spm(spm_model):
    return tokenizer_from_gguf(to_gguf_metadata(spm_model))


@pytest.fixture(scope="module")
def spm_original(spm_model):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=spm_model)


def stream(tok, ids):
    detok = StreamingDetokenizer(tok)
    chunks = [detok.add(i) for i in ids]
    chunks.append(detok.finalize())
    return chunks


@pytest.mark.parametrize("kind", ["bpe", "spm"])
@pytest.mark.parametrize("text", TEXTS)
def test_every_prefix_is_whole_characters(request, kind, text):
    tok = request.getfixturevalue(kind)
    ids = tok.encode(text, allow_special=False)
    chunks = stream(tok, ids)
    assert "".join(chunks) == text == tok.decode(ids)
    for k in range(len(ids) + 1):
        # Stop after k tokens: what was shown is a prefix made of whole characters.
        shown = "".join(chunks[:k])
        assert "\ufffd" not in shown and text.startswith(shown)


def test_bpe_pieces_do_split_characters(bpe):
    # Guard against a vacuous test: SmolLM2 splits these characters across tokens.
    ids = bpe.encode("漢😀", allow_special=False)
    chunks = stream(bpe, ids)
    assert len(ids) > 2 and "" in chunks[:-1]


def test_spm_byte_fallback_and_leading_space(spm):
    ids = spm.encode("☃", allow_special=False)
    detok = StreamingDetokenizer(spm)
    out = [detok.add(i) for i in ids]
    assert out[-3:] == ["", "", "☃"]
    # The SentencePiece dummy prefix is dropped once, at the start only.
    ids = spm.encode("hello hello", allow_special=False)
    assert spm.tokens[ids[0]].startswith("\u2581")
    assert "".join(stream(spm, ids)) == "hello hello"
    raw = StreamingDetokenizer(spm, strip_leading_space=False)
    assert "".join(raw.add(i) for i in ids) == " hello hello"


def test_invalid_and_truncated_bytes(spm):
    byte = {b: spm.tokens.index(f"<0x{b:02X}>") for b in range(256)}
    detok = StreamingDetokenizer(spm)
    assert detok.add(byte[0xE2]) == ""
    assert detok.add(byte[0x41]) == "\ufffdA"  # a broken sequence, then a valid byte
    assert detok.add(byte[0xF0]) == "" and detok.add(byte[0x9F]) == ""
    assert detok.finalize() == "\ufffd"  # cut off at the end of the stream
    assert detok.text == "\ufffdA\ufffd"


def test_control_tokens_are_invisible_unless_asked(bpe):
    assert "".join(stream(bpe, [1, 9690, 2])) == "system"
    detok = StreamingDetokenizer(bpe, special=True)
    assert "".join(detok.add(i) for i in [1, 9690, 2]) == "<|im_start|>system<|im_end|>"


def _squash(text):
    # Python replaces a maximal invalid subsequence by one U+FFFD, SentencePiece each
    # byte: both are valid choices, so compare with runs of U+FFFD squashed.
    return re.sub("\ufffd+", "\ufffd", text)


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(st.lists(st.integers(0, 499), max_size=40))
def test_random_ids_match_sentencepiece_decode(spm, spm_original, ids):
    chunks = stream(spm, ids)
    assert _squash("".join(chunks)) == _squash(spm_original.decode(ids))
    for c in chunks:
        c.encode("utf-8")  # every chunk is valid text (no lone surrogates)


@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(st.lists(st.integers(0, 49151), max_size=30))
def test_random_bpe_ids_stream_equals_one_shot_decode(bpe, ids):
    chunks = stream(bpe, ids)
    whole = b"".join(bpe.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
    assert "".join(chunks) == whole
