"""The calibration pass (loading/calibrate.py) and the 2-bit preset that uses it: its float
forward is the numpy reference's, it runs at the first load only (a cache hit does not
calibrate), its result is deterministic, its memory does not grow with the model's depth,
and a missing text or a bad call is a typed error."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tests.reference.llama_numpy import forward, rmsnorm
from tmac_core.engine import Engine
from tmac_core.loading import calibrate
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGUFFile
from tmac_core.models import ARCHITECTURES
from tmac_core.models.loader import inv_frequencies
from tmac_core.plan import tensor_plan
from tmac_core.synth import SynthSpec, write_synthetic
from tmac_core.tokenizer import tokenizer_from_gguf

TOKENS = [5, 40, 300, 7, 99]


def tiny(path, n_layers=3, weight_type="f16"):
    """A tiny random Llama with 2-bit matrices in the preset (blocks other than the first and last)."""
    cfg = ARCHITECTURES["llama"].config(
        dim=64,
        hidden_dim=128,
        n_layers=n_layers,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=320,
        n_ctx_train=64,
    )
    write_synthetic(path, SynthSpec(config=cfg, weight_type=weight_type, seed=7, norm_jitter=0.2))
    return path


@pytest.fixture(autouse=True)
def short_text(monkeypatch):
    """512 tokens of the text are plenty for these tiny models (the whole text takes minutes here)."""
    monkeypatch.setattr(calibrate, "MAX_TOKENS", 512)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("calib") / "tiny.gguf")


def test_the_float_pass_is_the_reference_forward(model):
    """Run every block, then the output head: the logits are the numpy reference's."""
    with GGUFFile.open(model) as g:
        from tmac_core.config import config_from_gguf

        cfg = config_from_gguf(g)
        seqs = np.array([[1, 5, 40, 300, 7, 99, 12, 13]])
        cal = calibrate.Calibrator(g, cfg, seqs, inv_frequencies(cfg, g))
        for layer in range(cfg.n_layers):
            cal.layer(layer)
            cal.advance()
        weights = {name: dequantize_tensor(g, name).astype(np.float64) for name in g.tensors}
        weights = {
            name: w.reshape(g.tensors[name].shape[::-1]) if w.ndim > 1 or len(g.tensors[name].shape) > 1 else w
            for name, w in weights.items()
        }
        out = weights["token_embd.weight"] if cfg.tie_embeddings else weights["output.weight"]
        ours = rmsnorm(cal.x[0].astype(np.float64), weights["output_norm.weight"], cfg.norm_eps) @ out.T
        ref = forward(cfg, weights, seqs[0], inv_frequencies(cfg, g), kv_dtype=np.float16)
    assert np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max()


def test_blocks_go_in_order(model):
    with GGUFFile.open(model) as g:
        from tmac_core.config import config_from_gguf

        cfg = config_from_gguf(g)
        seqs = np.array([[1, 2, 3, 9, 30]])
        cal = calibrate.Calibrator(g, cfg, seqs, inv_frequencies(cfg, g), full=True)
        with pytest.raises(ValueError, match="block 0"):
            cal.layer(1)
        a = cal.layer(0)
        assert cal.layer(0) is a  # asked again: not recomputed
        assert a.attn_in.shape == (64, 64) and a.ffn_down.shape == (128, 128)
        assert np.allclose(a.attn_in, a.attn_in.T) and (np.diag(a.ffn_down) >= 0).all()
        diag = calibrate.Calibrator(g, cfg, seqs, inv_frequencies(cfg, g)).layer(0)  # the default: diagonals
        for role in ("attn_q", "attn_output", "ffn_up", "ffn_down"):
            assert np.allclose(diag.importance(role), a.importance(role), rtol=1e-5)


def test_token_budget_scales_with_the_model():
    small = ARCHITECTURES["llama"].config(
        dim=576,
        hidden_dim=1536,
        n_layers=30,
        n_heads=9,
        n_kv_heads=3,
        head_dim=64,
        vocab_size=49152,
        n_ctx_train=2048,
    )
    big = ARCHITECTURES["llama"].config(
        dim=2048,
        hidden_dim=5632,
        n_layers=22,
        n_heads=32,
        n_kv_heads=4,
        head_dim=64,
        vocab_size=32000,
        n_ctx_train=2048,
    )
    assert calibrate.n_tokens_for(small, 10_000) > calibrate.n_tokens_for(big, 10_000) >= calibrate.MIN_TOKENS
    assert calibrate.n_tokens_for(small, 100) == 100  # never more than the text has
    seqs = calibrate.sequences(list(range(2000)), 1, 1500)
    assert seqs.shape == (3, 501) and (seqs[:, 0] == 1).all()  # 3 rows of 500 tokens after BOS
    assert seqs[1, 1] == 500 and seqs[2, -1] == 1499


def logits(engine):
    return np.array(engine.runtime.forward(TOKENS, 0, all_logits=True))


def test_first_load_calibrates_once_deterministically(model, tmp_path, monkeypatch):
    runs = []
    real = calibrate.AwareQuantizer.__init__

    def counting(self, *args, **kwargs):
        runs.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(calibrate.AwareQuantizer, "__init__", counting)
    first = Engine.load(model, bits=2, n_ctx=32, cache_dir=tmp_path / "a")
    assert not first.info.cache_hit and runs == [1]
    a = logits(first)
    first.close()
    again = Engine.load(model, bits=2, n_ctx=32, cache_dir=tmp_path / "a")
    assert again.info.cache_hit and runs == [1]  # the cache hit did not calibrate
    assert np.array_equal(logits(again), a)
    again.close()
    fresh = Engine.load(model, bits=2, n_ctx=32, cache_dir=tmp_path / "b")  # a second first load
    assert runs == [1, 1]
    assert np.array_equal(logits(fresh), a)
    fresh.close()
    files = [next((tmp_path / d).glob("*.tmacw")).read_bytes() for d in "ab"]
    assert files[0] == files[1]  # the repacked file, calibration included, byte for byte
    memory = Engine.load(model, bits=2, n_ctx=32, use_cache=False)  # the in-memory path agrees
    assert np.array_equal(logits(memory), a)
    memory.close()


def test_only_the_2_bit_block_matrices_are_calibrated(model):
    with GGUFFile.open(model) as g:
        from tmac_core.config import config_from_gguf

        cfg = config_from_gguf(g)
        source = {n: i.ggml_type.name for n, i in g.tensors.items()}
    chosen = [s.name for s in tensor_plan(cfg, 2, source) if calibrate.aware_matrix(s)]
    assert chosen == [
        f"blk.1.{r}.weight" for r in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    ]
    assert not any(calibrate.aware_matrix(s) for s in tensor_plan(cfg, 4, source))


def peak_bytes(path):
    """Peak traced allocation of calibrating and quantizing every aware matrix of a model."""
    with GGUFFile.open(path) as g:
        from tmac_core.config import config_from_gguf

        cfg = config_from_gguf(g)
        source = {n: i.ggml_type.name for n, i in g.tensors.items()}
        tracemalloc.start()
        try:
            aware = calibrate.AwareQuantizer(g, cfg, tokenizer_from_gguf(g.metadata), inv_frequencies(cfg, g))
            for spec in tensor_plan(cfg, 2, source):
                if calibrate.aware_matrix(spec):
                    aware.quantize(spec)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_memory_does_not_grow_with_depth(tmp_path):
    """One block's weights and statistics at a time: 12 blocks peak where 3 do (within 10%)."""
    shallow = peak_bytes(tiny(tmp_path / "3.gguf", 3))
    deep = peak_bytes(tiny(tmp_path / "12.gguf", 12))
    assert deep <= 1.1 * shallow


def test_a_missing_text_is_a_typed_error(model, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "text_path", lambda: tmp_path / "nowhere.txt")
    with pytest.raises(calibrate.CalibrationError, match="calibration text"):
        Engine.load(model, bits=2, n_ctx=32, use_cache=False)


def test_the_text_is_not_the_held_out_one():
    text = calibrate.calibration_text()
    assert "We the People" in text and "Alice" not in text


def test_advancing_on_given_weights(model):
    """advance(quantized) runs the block on the matrices given (the sequential alternative): the
    float weights themselves give the plain advance's stream, other weights another one."""
    with GGUFFile.open(model) as g:
        from tmac_core.config import config_from_gguf

        cfg = config_from_gguf(g)
        seqs = np.array([[1, 5, 40, 300, 7, 99]])
        plain = calibrate.Calibrator(g, cfg, seqs, inv_frequencies(cfg, g))
        plain.layer(0)
        same = {name: w.copy() for name, w in plain.weights.items()}
        plain.advance()
        given = calibrate.Calibrator(g, cfg, seqs, inv_frequencies(cfg, g))
        given.advance(same)
        assert given.next_layer == 1 and np.array_equal(given.x, plain.x)
        other = calibrate.Calibrator(g, cfg, seqs, inv_frequencies(cfg, g))
        other.advance({"blk.0.ffn_down.weight": same["blk.0.ffn_down.weight"] * 2})
        assert not np.allclose(other.x, plain.x)
