"""Every metadata key of a model, set to every wrong type and out-of-range value, loaded
through `inspect_model` and `Engine.load`: only TmacError subclasses may come out, never
a TypeError/ValueError/OverflowError/UnicodeError or a crash of the process. The loads
run in a child process, so a crash fails the test instead of killing pytest.

Also: byte-fallback (SentencePiece) vocabularies with non-UTF-8 token text load, and
NaN or infinite weights are a ModelFormatError naming the tensor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.runtime.model_mutations import DELETE, WRONG_VALUES, rewrite, write_tiny_synth
from tmac_core.errors import ModelFormatError
from tmac_core.loading.gguf import GGUFFile, ValueType

FIXED_SHA = "ab" * 32  # every mutant shares one repacked-model cache entry (weights are equal)
SPM_KEYS = (
    "tokenizer.ggml.scores",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.remove_extra_whitespaces",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.eot_token_id",
)
# byte-level pieces of a SentencePiece vocabulary; the last one is not valid UTF-8
SPM_PIECES = ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz") + ["\u2581"]

WORKER = textwrap.dedent(
    """
    import json, sys
    from tmac_core import inspect_model
    from tmac_core.engine import Engine
    from tmac_core.errors import TmacError

    cache_dir, sha = sys.argv[1], sys.argv[2]
    for path in sys.stdin.read().split():
        for what in ("inspect", "engine"):
            try:
                if what == "inspect":
                    inspect_model(path)
                else:
                    engine = Engine.load(path, bits=4, cache_dir=cache_dir, source_sha256=sha)
                    info = engine.info
                    json.dumps([info.name, info.chat_template]).encode("utf-8")  # crosses the pipe
                    engine.tokenizer.decode(range(info.vocab_size))
                    engine.close()
                result = "ok"
            except TmacError as error:
                result = type(error).__name__
            except BaseException as error:
                result = "UNTYPED " + type(error).__name__ + ": " + str(error)[:300]
            print(json.dumps([path, what, result]), flush=True)
    """
)


def _spm_changes(vocab_size: int) -> dict:
    """A SentencePiece byte-fallback vocabulary of `vocab_size` tokens, one of them not UTF-8."""
    n_pieces = vocab_size - 3 - 256
    pieces: list[str | bytes] = [*SPM_PIECES, *(f"\u2581w{i}" for i in range(n_pieces))][: n_pieces - 1]
    pieces.append(b"\xe2\x96")  # a UTF-8 sequence cut short: llama.cpp loads it as bytes
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    V = ValueType
    return {
        "tokenizer.ggml.model": ("llama", V.STRING, None),
        "tokenizer.ggml.pre": DELETE,
        "tokenizer.ggml.merges": DELETE,
        "tokenizer.ggml.tokens": ([t if isinstance(t, bytes) else t.encode() for t in tokens], V.ARRAY, V.STRING),
        "tokenizer.ggml.token_type": (types, V.ARRAY, V.INT32),
        "tokenizer.ggml.scores": (scores, V.ARRAY, V.FLOAT32),
        "tokenizer.ggml.unknown_token_id": (0, V.UINT32, None),
        "tokenizer.ggml.add_space_prefix": (True, V.BOOL, None),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(bpe, spm): the tiny synthetic model with its byte-level BPE vocabulary, and the
    same weights with a SentencePiece byte-fallback vocabulary."""
    folder = tmp_path_factory.mktemp("meta")
    bpe = folder / "bpe.gguf"
    write_tiny_synth(bpe)
    spm = folder / "spm.gguf"
    rewrite(bpe, spm, _spm_changes(320))
    return bpe, spm


def _run_worker(paths, cache_dir) -> list[tuple[str, str, str]]:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(cache_dir), FIXED_SHA],
        input="\n".join(map(str, paths)),
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    last = lines[-1] if lines else None
    assert proc.returncode == 0, (
        f"the loading process died (code {proc.returncode}) after {last}: {proc.stderr[-2000:]}"
    )
    return lines


def test_every_key_of_every_wrong_type_is_a_typed_error(models, tmp_path):
    mutants = []
    for base, label in zip(models, ("bpe", "spm")):
        with GGUFFile.open(base) as f:
            keys = [k for k in f.metadata if label == "bpe" or k.startswith("tokenizer.")]
        keys += [k for k in SPM_KEYS if k not in keys and label == "spm"]
        for key in keys:
            for name, value, vtype, etype in [*WRONG_VALUES, ("deleted", None, None, None)]:
                path = tmp_path / f"{label}-{key}-{name}.gguf"
                rewrite(base, path, {key: DELETE if vtype is None else (value, vtype, etype)})
                mutants.append(path)
    results = _run_worker([*models, *mutants], tmp_path / "cache")
    assert len(results) == 2 * (len(mutants) + 2)
    untyped = [r for r in results if r[2].startswith("UNTYPED")]
    assert not untyped, "\n".join(map(str, untyped[:20]))
    # the unmutated models load, and the fuzz reached the engine: many mutants load too
    assert [r[2] for r in results[:4]] == ["ok"] * 4
    loaded = sum(r[2] == "ok" for r in results if r[1] == "engine")
    refused = sum(r[2] == "ModelFormatError" for r in results)
    assert loaded > 50 and refused > 200, (loaded, refused)


def test_byte_fallback_vocabulary_with_non_utf8_tokens_loads(models, tmp_path):
    from tmac_core.engine import Engine

    engine = Engine.load(models[1], bits=4, use_cache=False)
    try:
        tok = engine.tokenizer
        last = tok.vocab_size - 1
        assert tok.token_bytes(last) == b"\xe2\x96"  # its exact bytes
        assert tok.decode([last]) == "\ufffd"  # invalid UTF-8 shows as U+FFFD, as any decode
        assert any("not valid UTF-8" in w for w in tok.warnings)
        text = "abc é \ufffd"  # é and U+FFFD are not pieces: byte fallback
        assert tok.decode(tok.encode(text, allow_special=False)) == text
        assert last not in tok.encode(text, allow_special=False)
        assert engine.info.name.startswith("synthetic")
    finally:
        engine.close()


def test_non_utf8_general_name_is_shown_with_replacement_characters(models, tmp_path):
    from tmac_core import inspect_model
    from tmac_core.engine import Engine

    path = tmp_path / "name.gguf"
    rewrite(models[0], path, {"general.name": (b"caf\xe9 model", ValueType.STRING, None)})
    assert inspect_model(path).name == "caf\ufffd model"
    engine = Engine.load(path, bits=4, use_cache=False)
    try:
        assert engine.info.name == "caf\ufffd model"
    finally:
        engine.close()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "tensor, weight_type, block_bytes",
    [
        ("blk.0.attn_norm.weight", "q8_0", 4),  # an F32 norm
        ("blk.1.ffn_up.weight", "q8_0", 34),  # a Q8_0 block's fp16 scale (requantized)
        ("blk.1.ffn_up.weight", "q4_0", 18),  # a Q4_0 block's fp16 scale (repacked exactly)
        ("blk.0.ffn_down.weight", "q4_1", 20),  # a Q4_1 block's fp16 minimum (repacked exactly)
    ],
)
def test_non_finite_weights_name_the_tensor(tmp_path, value, tensor, weight_type, block_bytes):
    from tmac_core.engine import Engine

    source = tmp_path / "source.gguf"
    write_tiny_synth(source, weight_type=weight_type)
    with GGUFFile.open(source) as f:
        raw = f.tensor_bytes(tensor).copy()
    at = block_bytes * 5 + (2 if weight_type == "q4_1" else 0)  # block 5: d, or m for Q4_1
    if block_bytes == 4:
        raw.view("<f4")[5] = value
    else:
        raw[at : at + 2] = np.array([value], "<f2").view(np.uint8)
    path = tmp_path / "nan.gguf"
    rewrite(source, path, {}, {tensor: raw})
    with pytest.raises(ModelFormatError, match=f"tensor '{tensor}'.*NaN or infinite"):
        Engine.load(path, bits=4, use_cache=False)
