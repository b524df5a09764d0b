"""SentencePiece tokenizer: a vocabulary trained here, passed through GGUF-style metadata,
must encode and decode exactly like SentencePiece's own model."""

from __future__ import annotations

import io

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st
from sentencepiece import sentencepiece_model_pb2 as pb

from tmac_core.errors import TokenizerError
from tmac_core.tokenizer import tokenizer_from_gguf

CORPUS = """The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Le cœur a ses raisons que la raison ne connaît point. Ça va très bien, merci !
Größere Übungen für Straßenbahnfahrer. Über den Wolken muss die Freiheit grenzenlos sein.
Съешь же ещё этих мягких французских булок, да выпей чаю.
我能吞下玻璃而不伤身体。人工智能正在改变世界。
いろはにほへと ちりぬるを わかよたれそ つねならむ
def main(argv):\n    for i in range(10):\n        print(i, argv[i])\n    return 0
The year 2024 had 366 days; 3.14159 is pi and 1,000,000 is a million.
""".splitlines()


def train_model() -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=out,
        model_type="bpe",
        vocab_size=500,
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=["<tool>"],
        control_symbols=["<|im_start|>", "<|im_end|>"],
        minloglevel=2,
    )
    return out.getvalue()


def to_gguf_metadata(model: bytes) -> dict:
    """What llama.cpp's converter writes for a SentencePiece model."""
    proto = pb.ModelProto()
    proto.ParseFromString(model)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p.piece for p in proto.pieces],
        "tokenizer.ggml.scores": [p.score for p in proto.pieces],
        "tokenizer.ggml.token_type": [int(p.type) for p in proto.pieces],
        "tokenizer.ggml.bos_token_id": proto.trainer_spec.bos_id,
        "tokenizer.ggml.eos_token_id": proto.trainer_spec.eos_id,
        "tokenizer.ggml.unknown_token_id": proto.trainer_spec.unk_id,
        "tokenizer.ggml.add_space_prefix": proto.normalizer_spec.add_dummy_prefix,
        "tokenizer.ggml.add_bos_token": True,
    }


@pytest.fixture(scope="module")
def model() -> bytes:
    return train_model()


@pytest.fixture(scope="module")
def sp(model):
    return spm.SentencePieceProcessor(model_proto=model)


@pytest.fixture(scope="module")
def md(model):
    return to_gguf_metadata(model)


@pytest.fixture(scope="module")
def tok(md):
    return tokenizer_from_gguf(md)


STRINGS = [
    "",
    " ",
    "  ",
    "hello",
    " hello",
    "  two leading",
    "trailing  ",
    "Hello world.",
    "a\nb",
    "\n\nparagraph\n",
    "tab\there",
    "The quick brown fox",
    "ça va très bien",
    "Größere Übungen",
    "ещё этих мягких",
    "人工智能正在改变世界",
    "いろはにほへと",
    "مرحبا بالعالم",
    "emoji 😀👍🏽 and 👨‍👩‍👧",
    "e\u0301 combining",
    "num 12345 and 3.5",
    "def f(x):\n    return x",
    "unseen ☃ ♞ ⌘ chars",
    "\u00a0nbsp",
    "x" * 50,
]


@pytest.mark.parametrize("text", STRINGS)
def test_matches_sentencepiece(tok, sp, text):
    ids = tok.encode(text, allow_special=False)
    assert ids == sp.encode(text)
    assert tok.decode(ids) == sp.decode(ids) == text


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_matches_sentencepiece_random(tok, sp, text):
    ids = tok.encode(text, allow_special=False)
    assert ids == sp.encode(text)
    assert tok.decode(ids) == sp.decode(ids)


def test_metadata_and_byte_fallback(tok):
    assert tok.model == "llama" and tok.warnings == []
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)
    ids = tok.encode("☃", allow_special=False)  # not in the vocabulary: three byte tokens
    assert [tok.tokens[i] for i in ids[-3:]] == ["<0xE2>", "<0x98>", "<0x83>"]
    assert tok.encode("hi", allow_special=False, add_special=True)[0] == 1


def test_specials_only_in_trusted_text(tok, sp):
    tool, start = tok.special_tokens["<tool>"], tok.special_tokens["<|im_start|>"]
    # SentencePiece itself always matches user-defined symbols; we do so only when trusted.
    assert tool in sp.encode("use <tool> now")
    assert tool not in tok.encode("use <tool> now", allow_special=False)
    assert tok.decode(tok.encode("use <tool> now", allow_special=False)) == "use <tool> now"
    assert tool in tok.encode("use <tool> now", allow_special=True)
    assert start not in tok.encode("<|im_start|>user", allow_special=False)
    # llama.cpp's rule: a space prefix before the text that follows a special token.
    assert tok.encode("<|im_start|>user", allow_special=True) == [start] + sp.encode("user")


def test_chat_template_on_spm(tok):
    ids, rendered = tok.apply_chat_template([{"role": "user", "content": "hi <|im_start|>"}])
    assert rendered.template == "chatml" and "no chat template" in rendered.notice
    assert ids[0] == tok.bos_id  # add_bos_token
    assert ids.count(tok.special_tokens["<|im_start|>"]) == 2  # user turn + generation prompt


def test_duplicate_and_empty_pieces_are_tolerated(md):
    bad = dict(md)
    tokens = list(md["tokenizer.ggml.tokens"])
    tokens[400], tokens[401] = tokens[402], ""
    tokens[10] = tokens[11]  # a byte token: byte fallback goes off, with a warning
    bad["tokenizer.ggml.tokens"] = tokens
    tok = tokenizer_from_gguf(bad)
    assert len([w for w in tok.warnings if "duplicate" in w]) == 3
    assert any("byte fallback is off" in w for w in tok.warnings)
    assert tok.decode(tok.encode("hello world", allow_special=False)) == "hello world"


def test_remove_extra_whitespaces_mode(model, md):
    proto = pb.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.remove_extra_whitespaces = True
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    tok = tokenizer_from_gguf({**md, "tokenizer.ggml.remove_extra_whitespaces": True})
    for text in ["  hello   world  ", "a\n\n b", "x"]:
        assert tok.encode(text, allow_special=False) == sp.encode(text)


def test_missing_unknown_token_is_an_error(md):
    bad = dict(md)
    bad["tokenizer.ggml.token_type"] = [1 if t == 2 else t for t in md["tokenizer.ggml.token_type"]]
    del bad["tokenizer.ggml.unknown_token_id"]
    with pytest.raises(TokenizerError, match="unknown"):
        tokenizer_from_gguf(bad)


def test_score_count_mismatch(md):
    with pytest.raises(TokenizerError, match="scores"):
        tokenizer_from_gguf({**md, "tokenizer.ggml.scores": [0.0]})
