"""The synthetic writer makes Llama 3-sized vocabularies (128,256 tokens: three-byte merges
after all byte pairs), so an 8B-shaped benchmark model has the real embedding shape."""

from __future__ import annotations

import pytest

from tmac_core.loading.gguf import GGUFFile
from tmac_core.models import ARCHITECTURES
from tmac_core.synth import MAX_VOCAB, SynthSpec, vocabulary, write_synthetic
from tmac_core.tokenizer import tokenizer_from_gguf


def test_a_llama3_sized_vocabulary_loads_and_its_three_byte_merges_are_used(tmp_path):
    tokens, types, merges = vocabulary(128256)
    assert len(tokens) == len(set(tokens)) == 128256 and len(types) == 128256
    assert len(merges) == 128256 - 3 - 256 and merges[-1].count(" ") == 1
    cfg = ARCHITECTURES["llama"].config(
        dim=64, hidden_dim=128, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=16, vocab_size=128256, n_ctx_train=64
    )
    path = tmp_path / "v128k.gguf"
    write_synthetic(path, SynthSpec(cfg, weight_type="q8_0"))
    with GGUFFile.open(path) as gguf:
        tokenizer = tokenizer_from_gguf(gguf.metadata, gguf.path)
    three = tokens.index("\u0120ab")  # " ab" (GPT-2's byte alphabet writes the space as U+0120): pair " a" + "b"
    assert tokens.index("\u0120a") < 65536 + 259 <= three  # a pair, then the three-byte merge
    text = "".join(chr(c) for c in range(32, 127)) + " ünïcödé ✓\n"
    assert tokenizer.decode(tokenizer.encode(text, allow_special=False)) == text
    assert tokenizer.encode(" ab", allow_special=False) == [three]


def test_a_vocabulary_past_three_byte_merges_is_refused():
    cfg = ARCHITECTURES["llama"].config(
        dim=64,
        hidden_dim=128,
        n_layers=1,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=MAX_VOCAB + 1,
        n_ctx_train=64,
    )
    with pytest.raises(ValueError, match="vocab_size"):
        SynthSpec(cfg).check()
