"""bitnet.cpp's Falcon GGUFs: a "llama" file whose block projections are all I2_S runs
as "llama-bitnet" (exact int8 activations available), its table mode the very logits
of the plain Llama path; a "llama" TQ2_0 file (which llama.cpp writes from any float
Llama) stays "llama". Tiny synthetic files written by tmac_core.synth."""

import dataclasses

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference import llama_numpy
from tmac_core import Engine
from tmac_core.config import config_from_gguf, inspect_model
from tmac_core.engine import PROMPT_CHUNK
from tmac_core.loading.gguf import GGUFFile
from tmac_core.models import ARCHITECTURES, loader
from tmac_core.synth import SynthSpec, write_synthetic

pytestmark = pytest.mark.engine

TOKENS = np.random.default_rng(7).integers(0, 300, 20)


def llama_config():
    # dims multiples of 256 (TQ blocks) and of 128 (I2_S blocks); GQA as in Falcon3
    return ARCHITECTURES["llama"].config(
        dim=256,
        hidden_dim=512,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        vocab_size=300,
        n_ctx_train=128,
        rope_theta=1000042.0,
        tie_embeddings=True,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("falcon")
    out = {}
    for wt in ("i2_s", "tq2_0"):
        out[wt] = folder / f"llama-{wt}.gguf"
        write_synthetic(out[wt], SynthSpec(llama_config(), weight_type=wt, norm_jitter=0.1, seed=11))
    return out


def plain_llama_logits(path):
    """The file run as an ordinary quantized Llama (what it ran as before)."""
    with GGUFFile.open(path) as f:
        cfg = dataclasses.replace(config_from_gguf(f), arch="llama", act_quant="none")
        weights = loader.load_weights(f, cfg, None)
    runtime = loader.build_runtime(cfg, weights, 32, PROMPT_CHUNK)
    return np.array(runtime.forward(TOKENS, 0, all_logits=True)), cfg, weights


def engine_logits(path, exact):
    engine = Engine.load(path, use_cache=False, n_ctx=32, exact_activations=exact)
    try:
        return np.array(engine.forward(TOKENS, 0, all_logits=True)), engine.config, engine.exact_activations
    finally:
        engine.close()


def test_an_i2_s_llama_file_runs_as_llama_bitnet(files):
    summary = inspect_model(files["i2_s"])
    assert summary.gguf_arch == "llama"
    cfg = summary.config
    assert (cfg.arch, cfg.act_quant, cfg.sub_norms, cfg.rope_style) == (
        "llama-bitnet",
        "int8_token",
        False,
        "interleaved",
    )
    # the same shapes and hyperparameters as the file read as a plain Llama
    assert dataclasses.replace(cfg, arch="llama", act_quant="none") == dataclasses.replace(
        llama_config(), norm_eps=cfg.norm_eps
    )


def test_a_tq2_0_llama_file_stays_llama(files):
    cfg = inspect_model(files["tq2_0"]).config
    assert (cfg.arch, cfg.act_quant) == ("llama", "none")
    with pytest.raises(ValueError, match="int8"):
        Engine.load(files["tq2_0"], use_cache=False, n_ctx=32, exact_activations=True)


def test_table_mode_is_the_plain_llama_path_bit_for_bit(files):
    plain, _, _ = plain_llama_logits(files["i2_s"])
    for exact in (None, False):  # the default is the table mode
        got, cfg, used_exact = engine_logits(files["i2_s"], exact)
        assert cfg.arch == "llama-bitnet" and used_exact is False
        assert np.array_equal(got, plain)


def test_exact_mode_is_the_int8_arithmetic(files):
    plain, cfg, weights = plain_llama_logits(files["i2_s"])
    got, loaded_cfg, used_exact = engine_logits(files["i2_s"], True)
    assert used_exact is True
    dense = {
        k: (np.asarray(K.dequantize(v), np.float64) if isinstance(v, K.PackedWeight) else np.asarray(v))
        for k, v in weights.items()
        if k != "rope.inv_freq"
    }
    ref = llama_numpy.forward(loaded_cfg, dense, TOKENS, weights["rope.inv_freq"], np.float16)
    span = np.ptp(ref)
    # exact mode against the W1.58A8 arithmetic, measured: 1.4e-5 of the logit range
    # (the table mode, i.e. the plain Llama path: 5.0e-3)
    assert np.abs(got - ref).max() <= 1e-3 * span
    assert not np.array_equal(got, plain)  # the int8 step is really there
