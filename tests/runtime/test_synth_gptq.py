"""The synthetic GPTQ folder writer (tmac_core.synth.write_gptq_folder, the benchmark's
EfficientQAT-shaped models): the folder is a safetensors checkpoint our loader reads, and the
weights it unpacks equal scales·(code − zero) computed here from the words the writer wrote,
unpacked by this test's own bit-stream reader (not tmac_core/loading/gptq.py's)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tmac_core.engine import Engine
from tmac_core.loading.hf import HFModel
from tmac_core.models import ARCHITECTURES
from tmac_core.synth import GPTQSynthSpec, gptq_tensor_values, write_gptq_folder

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def tiny(vocab: int = 300, tie: bool = False):
    return ARCHITECTURES["llama"].config(
        dim=256,
        hidden_dim=384,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        vocab_size=vocab,
        n_ctx_train=256,
        tie_embeddings=tie,
    )


def fields(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Packed int32 words (W, C) as one little-endian bit stream down each column: field j of
    column c is bits [bits·j, bits·j + bits) of the stream. Returns (count, C) uint8."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    padded = np.concatenate([u, np.zeros((1, u.shape[1]), np.int64)])
    out = np.empty((count, u.shape[1]), np.uint8)
    for j in range(count):
        w, shift = divmod(bits * j, 32)
        pair = padded[w] | (padded[w + 1] << 32)
        out[j] = (pair >> shift) & (2**bits - 1)
    return out


def reference_weight(spec: GPTQSynthSpec, prefix: str, n: int, k: int) -> np.ndarray:
    """float32 (N, K): scales[g, n]·(q[k, n] − z[g, n]) with g = k // group (gptq_v2: z as stored)."""
    q = fields(gptq_tensor_values(spec, prefix + ".qweight"), spec.bits, k)  # (K, N)
    zeros_packed = gptq_tensor_values(spec, prefix + ".qzeros")  # (G, N·bits/32), packed along N
    z = fields(np.ascontiguousarray(zeros_packed.T), spec.bits, n).T  # (G, N)
    scales = gptq_tensor_values(spec, prefix + ".scales").astype(np.float32)  # (G, N)
    g = np.arange(k) // spec.group_size
    return (scales[g] * (q.astype(np.float32) - z[g].astype(np.float32))).T


@pytest.mark.parametrize("bits, group", [(2, 128), (4, 128), (3, 64), (2, 32)])
def test_the_loader_unpacks_exactly_the_codes_scales_and_zeros_written(tmp_path, bits, group):
    spec = GPTQSynthSpec(tiny(), bits=bits, group_size=group, seed=3)
    folder = tmp_path / "model"
    write_gptq_folder(folder, spec)
    config = json.loads((folder / "config.json").read_text())
    qc = config["quantization_config"]
    assert (qc["bits"], qc["group_size"], qc["sym"], qc["desc_act"]) == (bits, group, False, False)
    assert qc["checkpoint_format"] == qc["format"] == "gptq_v2" and qc["quant_method"] == "gptq"
    c = spec.config
    with HFModel.open(folder) as model:
        assert (model.config.dim, model.config.hidden_dim, model.config.n_layers) == (c.dim, c.hidden_dim, 2)
        assert (model.config.n_heads, model.config.n_kv_heads, model.config.vocab_size) == (4, 2, c.vocab_size)
        checked = 0
        for layer in range(c.n_layers):
            for proj, short in HF_TO_GGUF.items():
                prefix = f"model.layers.{layer}.{proj}"
                unpacked = model.gptq_layer(f"blk.{layer}.{short}.weight")
                n, k = unpacked.codes.shape
                want = reference_weight(spec, prefix, n, k)
                if short in ("attn_q", "attn_k"):  # the loader's rotate-half -> interleaved row order
                    heads = c.n_heads if short == "attn_q" else c.n_kv_heads
                    want = want[np.arange(n).reshape(heads, 2, -1).swapaxes(1, 2).reshape(-1)]
                assert unpacked.bits == bits and unpacked.super_size == group
                np.testing.assert_array_equal(unpacked.weight(), want)
                checked += 1
        assert checked == 14


def test_codes_and_zero_points_cover_every_value_and_scales_are_fp16_in_range(tmp_path):
    spec = GPTQSynthSpec(tiny(), bits=2, group_size=128)
    q = fields(gptq_tensor_values(spec, "model.layers.0.mlp.down_proj.qweight"), 2, 384)
    assert set(np.unique(q)) == {0, 1, 2, 3}
    s = gptq_tensor_values(spec, "model.layers.0.mlp.down_proj.scales")
    assert s.dtype == np.dtype("<f2") and s.shape == (3, 256) and 0.008 <= s.min() and s.max() <= 0.016
    g_idx = gptq_tensor_values(spec, "model.layers.0.mlp.down_proj.g_idx")
    np.testing.assert_array_equal(g_idx, np.arange(384) // 128)


def test_the_folder_loads_tokenizes_and_runs(tmp_path):
    spec = GPTQSynthSpec(tiny(vocab=1000, tie=True), bits=2, group_size=64, add_bos=True)
    folder = tmp_path / "model"
    size = write_gptq_folder(folder, spec)
    assert size == (folder / "model.safetensors").stat().st_size
    assert not list(tmp_path.glob("*.tmp*"))  # written under a temporary name, then renamed
    engine = Engine.load(folder, n_threads=1, n_ctx=64, use_cache=False)
    try:
        text = "hello, world 123"
        ids = engine.tokenizer.encode(text, allow_special=False)
        assert engine.tokenizer.decode(ids) == text
        logits = engine.forward(ids, 0)
        assert logits.shape == (1000,) and np.all(np.isfinite(logits))
    finally:
        engine.close()


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="bits"):
        GPTQSynthSpec(tiny(), bits=5).check()
    with pytest.raises(ValueError, match="group_size"):
        GPTQSynthSpec(tiny(), group_size=256).check()  # does not divide hidden_dim 384
    with pytest.raises(ValueError, match="llama"):
        GPTQSynthSpec(ARCHITECTURES["bitnet-b1.58"].config(**_shape())).check()


def _shape() -> dict:
    return dict(
        dim=256, hidden_dim=384, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=300, n_ctx_train=64
    )


def test_the_synth_command_writes_a_gptq_folder(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "w4"
    shape = ["--dim", "256", "--ffn", "384", "--layers", "1", "--heads", "4", "--kv-heads", "2", "--vocab", "300"]
    args = ["synth", out, *shape, "--type", "gptq", "--gptq-bits", "4", "--group-size", "64", "--json"]
    proc = subprocess.run([sys.executable, "-m", "tmac_core", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["type"] == "gptq w4g64" and record["bytes"] == (out / "model.safetensors").stat().st_size
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["bits"], qc["group_size"]) == (4, 64)
    bad = subprocess.run(
        [sys.executable, "-m", "tmac_core", "synth", str(tmp_path / "bad"), *shape, "--type", "gptq"]
        + ["--group-size", "100", "--json"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "group_size 100" in bad.stdout and not (tmp_path / "bad").exists()
