"""Engine.load's exact_activations option (and the CLI's --exact-activations) on the tiny
Falcon3-1.58bit-style folder tests/data/falcon_tiny against transformers' logits: True runs
every BitLinear's int8 dot products exactly, False / the default the activation tables; a
model not trained with int8 activations refuses True before any repack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tmac_core import cli
from tmac_core.engine import Engine
from tmac_core.models import loader
from tmac_core.models.bitnet import EXACT_ACTIVATIONS_DEFAULT

pytestmark = pytest.mark.engine

DATA = Path(__file__).resolve().parent.parent / "data" / "falcon_tiny"
REF = np.load(DATA / "reference.npz")
SPAN = float(np.ptp(REF["logits"]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny folder plus a byte-level BPE tokenizer.json of its 64 tokens (the engine loads
    a tokenizer with the model; the logits under test do not depend on it)."""
    dest = tmp_path_factory.mktemp("falcon") / "hf"
    shutil.copytree(DATA / "hf", dest)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    vocab = {c: i for i, c in enumerate(chars)} | {"ab": 62}
    end = {"id": 63, "content": "<|end|>", "special": True, "normalized": False}
    end |= {"single_word": False, "lstrip": False, "rstrip": False}
    tokenizer = {
        "version": "1.0",
        "added_tokens": [end],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "vocab": vocab, "merges": ["a b"]},
    }
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer))
    return dest


def logits(engine: Engine) -> np.ndarray:
    assert engine.runtime is not None
    return np.array(engine.runtime.forward(REF["tokens"], 0, all_logits=True))


def test_the_default_is_the_measured_one_and_true_is_exact(folder, tmp_path):
    default = Engine.load(folder, n_ctx=64, cache_dir=tmp_path)
    exact = Engine.load(folder, n_ctx=64, cache_dir=tmp_path, exact_activations=True)  # a cache hit
    tables = Engine.load(folder, n_ctx=64, use_cache=False, exact_activations=False)
    assert (default.exact_activations, exact.exact_activations, tables.exact_activations) == (
        EXACT_ACTIVATIONS_DEFAULT,
        True,
        False,
    )
    assert exact.info.cache_hit and exact.config.act_quant == "int8_token"
    # the engine's runtime is build_runtime's with the option: the same logits to the bit
    weights = loader.load_weights(exact._gguf, exact.config, None)
    direct = loader.build_runtime(exact.config, weights, 64, 32, exact_activations=True)
    np.testing.assert_array_equal(logits(exact), np.array(direct.forward(REF["tokens"], 0, all_logits=True)))
    np.testing.assert_array_equal(logits(default), logits(exact if EXACT_ACTIVATIONS_DEFAULT else tables))
    # against transformers (tests/runtime/test_falcon_folder.py): measured exact 1.4 %, tables 1.6 %
    assert np.abs(logits(exact) - REF["logits"]).max() <= 0.02 * SPAN
    assert np.abs(logits(tables) - REF["logits"]).max() <= 0.04 * SPAN
    assert not np.array_equal(logits(exact), logits(tables))
    for engine in (default, exact, tables):
        engine.close()


def test_exact_activations_on_a_float_activation_model_is_refused():
    # refused as soon as the config is read: no repack of SmolLM2's weights first
    with pytest.raises(ValueError, match="int8 activations"):
        Engine.load("default", use_cache=False, exact_activations=True)


def test_the_cli_flag_reaches_engine_load(folder, capsys):
    assert cli.main(["bench", "default", "--repeats", "0", "--no-cache", "--exact-activations"]) != 0
    assert "int8 activations" in capsys.readouterr().err
    argv = ["bench", str(folder), "--repeats", "0", "--no-cache", "--ctx", "256", "--json"]
    assert cli.main([*argv, "--exact-activations"]) == 0
    assert cli.main([*argv, "--no-exact-activations"]) == 0
