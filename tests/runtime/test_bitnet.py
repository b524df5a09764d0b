"""BitNet b1.58 in the runtime: the I2_S format, exact ternary repacking, the W1.58A8
BitLinear arithmetic (exact and table modes), and whole tiny models in TQ2_0, TQ1_0
and I2_S (written by tmac_core.synth) against the numpy reference forward pass
(tests/reference/llama_numpy.py), logits and 32 greedy steps."""

import dataclasses
import json
import os
import struct
import subprocess
import sys

import gguf as gguf_py
import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference import llama_numpy
from tests.runtime.gguf_writer import GGUFWriter
from tmac_core import Engine
from tmac_core.config import config_from_gguf
from tmac_core.errors import ModelFormatError
from tmac_core.loading.dequant import dequantize, dequantize_tensor, i2_s_codes
from tmac_core.loading.gguf import GGMLType, GGUFFile, ValueType
from tmac_core.loading.repack import repack
from tmac_core.models import ARCHITECTURES, architecture, loader
from tmac_core.synth import (
    SynthSpec,
    encode_i2_s_codes,
    encode_tq1_0,
    encode_tq2_0,
    i2_s_tail,
    ternarize,
    vocabulary,
    write_synthetic,
)

pytestmark = pytest.mark.engine

TYPES = ("tq2_0", "tq1_0", "i2_s")


def tiny_config(arch: str):
    # dim and hidden_dim multiples of 256 (TQ blocks); 2B-4T's head size 64·2 = 128 halved
    return ARCHITECTURES[arch].config(
        dim=256,
        hidden_dim=512,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2 if arch == "bitnet-b1.58" else 4,  # 2B-4T: GQA; 1bitLLM: full MHA
        head_dim=64,
        vocab_size=300,
        n_ctx_train=128,
        rope_theta=500000.0 if arch == "bitnet-b1.58" else 10000.0,
        tie_embeddings=True,
    )


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """(arch, weight type) -> path of a tiny random BitNet GGUF; norms jittered so they matter."""
    folder = tmp_path_factory.mktemp("bitnet")
    out = {}
    for arch in ("bitnet-b1.58", "bitnet"):
        for wt in TYPES:
            path = folder / f"{arch}-{wt}.gguf"
            write_synthetic(path, SynthSpec(tiny_config(arch), weight_type=wt, norm_jitter=0.1, seed=3))
            out[arch, wt] = path
    return out


def dense_weights(cfg, weights):
    dense = {
        k: (K.dequantize(v) if isinstance(v, K.PackedWeight) else np.asarray(v, np.float64))
        for k, v in weights.items()
        if k != "rope.inv_freq"
    }
    return dense


# -- formats -------------------------------------------------------------------------


def test_i2_s_layout_by_hand():
    # one 128-block: element j in byte j % 32 at bits 6 - 2·(j // 32); codes 0, 1, 2 = -1, 0, +1
    codes = np.ones(128, np.uint8)  # all zero weights
    codes[1], codes[32], codes[127] = 2, 0, 2
    raw = np.zeros(32, np.uint8)
    for j, c in enumerate(codes):
        raw[j % 32] |= c << (6 - 2 * (j // 32))
    assert raw[1] == 0b10_01_01_01 and raw[0] == 0b01_00_01_01 and raw[31] == 0b01_01_01_10
    data = np.concatenate([raw, np.frombuffer(struct.pack("<f", 0.75) + bytes(28), np.uint8)])
    w = dequantize(data, GGMLType.I2_S, (128,))
    expected = np.zeros(128, np.float32)
    expected[1], expected[32], expected[127] = 0.75, -0.75, 0.75
    np.testing.assert_array_equal(w, expected)
    np.testing.assert_array_equal(encode_i2_s_codes(codes.astype(np.int8) - 1), raw)
    assert i2_s_codes(data)[1] == 0.75
    bad = data.copy()
    bad[5] |= 0b11  # a code 3: no I2_S writer emits it (the removed IQ4_NL_4_4 shares id 36)
    with pytest.raises(ValueError, match="code 3"):
        dequantize(bad, GGMLType.I2_S, (128,))
    with pytest.raises(ValueError, match="bytes do not hold"):
        dequantize(data[:-1], GGMLType.I2_S, (128,))


def test_i2_s_tensor_in_a_file_sizes_and_errors():
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, (3, 256)).astype(np.int8)
    w = GGUFWriter()
    w.add_string("general.architecture", "bitnet-b1.58")
    w.add("x", 1, ValueType.UINT32)
    good = np.concatenate([encode_i2_s_codes(t), np.frombuffer(i2_s_tail(0.5), np.uint8)])
    bad = good.copy()
    bad[0] = 0xFF
    for name, raw in (("good", good), ("bad", bad)):
        w.add_raw_tensor(name, raw, GGMLType.I2_S, (256, 3))
    with pytest.raises(ValueError, match="do not fit"):  # the 32-byte tail is part of the size
        w.add_raw_tensor("short", good[:-32], GGMLType.I2_S, (256, 3))
    f = GGUFFile.from_bytes(w.build()[0], "i2s.gguf")
    assert f.tensors["good"].nbytes == 3 * 256 // 4 + 32
    np.testing.assert_array_equal(dequantize_tensor(f, "good"), t * np.float32(0.5))
    with pytest.raises(ModelFormatError, match="'bad'.*code 3"):
        dequantize_tensor(f, "bad")
    with pytest.raises(ModelFormatError, match="'bad'.*code 3"):
        repack(f, "bad", 2, 64)


@pytest.mark.parametrize("qtype", [GGMLType.TQ1_0, GGMLType.TQ2_0])
def test_ternary_encoders_match_the_gguf_package(qtype):
    t = ternarize(np.random.default_rng(1).standard_normal(2048).astype(np.float32), 0.8)
    d = np.float32(np.float16(0.8))
    ours = (encode_tq1_0 if qtype is GGMLType.TQ1_0 else encode_tq2_0)(t, 0.8)
    theirs = gguf_py.quants.quantize(t.astype(np.float32) * d, gguf_py.GGMLQuantizationType(int(qtype)))
    np.testing.assert_array_equal(ours, theirs.reshape(-1))
    np.testing.assert_array_equal(dequantize(ours, qtype, (2048,)), t * d)


@pytest.mark.parametrize("wt", TYPES)
@pytest.mark.parametrize("bits, group", [(2, 128), (2, 64), (4, 64), (4, 32)])
def test_ternary_repack_is_exact_at_any_bits(tiny_files, wt, bits, group):
    f = GGUFFile.open(tiny_files["bitnet-b1.58", wt])
    name = "blk.1.ffn_down.weight"
    packed = repack(f, name, bits, group)
    assert (packed.bits, packed.group_size) == (bits, group)
    source = dequantize_tensor(f, name)
    assert set(np.unique(np.rint(source / np.abs(source).max()))) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(K.dequantize(packed), source)  # fp32 γ of I2_S included


def test_the_registry_runs_both_bitnet_graphs():
    b158, onebit = architecture("bitnet-b1.58"), architecture("bitnet")
    assert architecture("bitnet-25") is b158  # the 2B-4T GGUF's first upload
    assert (b158.ffn_act, b158.rope_style, b158.sub_norms, b158.act_quant) == ("relu2", "neox", True, "int8_token")
    assert (onebit.ffn_act, onebit.rope_style, onebit.sub_norms, onebit.act_quant) == (
        "silu",
        "neox",
        True,
        "int8_token",
    )


def test_synth_vocabulary_grows_past_the_byte_pairs():
    tokens, _, merges = vocabulary(3 + 256 + 65536 + 300)
    assert len(tokens) == len(set(tokens)) == 3 + 256 + 65536 + 300
    known = set(tokens[:259])
    for m in merges:  # every merge joins two tokens that exist before it
        a, b = m.split(" ")
        assert a in known and b in known
        known.add(a + b)


# -- arithmetic ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def b158_tq2(tiny_files):
    f = GGUFFile.open(tiny_files["bitnet-b1.58", "tq2_0"])
    cfg = config_from_gguf(f)
    return f, cfg, loader.load_weights(f, cfg, 2)


def test_bitlinear_exact_mode_is_the_int8_arithmetic(b158_tq2):
    _, cfg, weights = b158_tq2
    x = np.random.default_rng(2).standard_normal((7, cfg.hidden_dim)).astype(np.float32)
    x[:, 5] *= 30  # an outlier channel: most int8 values become small
    x[3] = 0.0  # an all-zero token: s = 127 / 1e-5, output 0
    ternary = dequantize_tensor(b158_tq2[0], "blk.0.ffn_down.weight").astype(np.float64)
    q, s = llama_numpy.absmax_int8(x.astype(np.float64))
    ref = (q @ ternary.T) / s  # Σ q_x·t·d / s: every term an integer times d
    exact = loader.build_runtime(cfg, weights, 8, 8, exact_activations=True).block_matmul(0, "ffn_down", x)
    table = loader.build_runtime(cfg, weights, 8, 8, exact_activations=False).block_matmul(0, "ffn_down", x)
    scale = np.abs(ref).max()
    assert np.abs(exact - ref).max() <= 1e-6 * scale  # fp32 rounding of the final scaling only
    assert not exact[3].any()
    # table mode: each 4-value sum of the int8 input rounds to 127 levels per group
    # (measured 0.3-0.6 % of the largest output here)
    err = np.abs(table - ref).max() / scale
    assert 1e-4 < err < 0.02


def load(path):
    f = GGUFFile.open(path)
    cfg = config_from_gguf(f)
    weights = loader.load_weights(f, cfg, 2)
    return cfg, weights, dense_weights(cfg, weights), weights["rope.inv_freq"]


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "bitnet"])
@pytest.mark.parametrize("wt", TYPES)
def test_tiny_bitnet_logits_match_the_reference(tiny_files, arch, wt):
    cfg, weights, dense, inv_freq = load(tiny_files[arch, wt])
    assert cfg == dataclasses.replace(tiny_config(arch), norm_eps=cfg.norm_eps)
    tokens = np.random.default_rng(4).integers(0, cfg.vocab_size, 24)
    # the runtime keeps K and V in fp16: so does the reference here
    ref = llama_numpy.forward(cfg, dense, tokens, inv_freq, np.float16)
    span = np.ptp(ref)
    got, table = (
        np.array(loader.build_runtime(cfg, weights, 32, 32, exact_activations=e).forward(tokens, 0, all_logits=True))
        for e in (True, False)
    )
    # exact mode: every block matmul is exact (test above), the output layer reads its
    # float input as int8 part plus remainder. Measured: max error 2.8e-5 of the logit
    # range; ~5e-3 from the position where an int8 rounding at a .5 boundary goes the
    # other way in fp32 than in fp64 (1 of these 6 models; the reference itself moves
    # that much under a 1e-7 perturbation of one norm: the arithmetic is discontinuous)
    assert np.abs(got - ref).max() <= 0.01 * span
    assert cosines(got, ref).min() >= 0.9998
    pick = got.argmax(1)
    assert (ref.max(1) - ref[np.arange(len(pick)), pick]).max() <= 0.01 * span  # only near-ties differ
    # table mode, measured: cosine >= 0.9981, max error 2.0-2.6 % of the range
    assert np.abs(table - ref).max() <= 0.05 * span
    assert cosines(table, ref).min() >= 0.995 and cosines(table, ref).mean() >= 0.999


@pytest.mark.parametrize("arch, wt", [("bitnet-b1.58", "tq2_0"), ("bitnet", "tq1_0"), ("bitnet-b1.58", "i2_s")])
def test_tiny_bitnet_greedy_tokens_match_the_reference(tiny_files, arch, wt):
    """32 greedy steps in exact mode, one token at a time through the KV cache, against
    the reference re-reading the whole sequence at each step."""
    cfg, weights, dense, inv_freq = load(tiny_files[arch, wt])
    prompt = list(np.random.default_rng(5).integers(0, cfg.vocab_size, 6))
    rt = loader.build_runtime(cfg, weights, 64, 32, exact_activations=True)
    token = int(np.argmax(rt.forward(prompt, 0)))
    ours = []
    for i in range(32):
        ours.append(token)
        token = int(np.argmax(rt.forward([token], len(prompt) + i)))
    seq = list(prompt)
    for _ in range(32):
        seq.append(int(llama_numpy.forward(cfg, dense, np.array(seq), inv_freq, np.float16)[-1].argmax()))
    assert ours == seq[len(prompt) :]


def test_synth_cli_writes_a_bitnet_model_the_engine_runs(tmp_path):
    path = tmp_path / "b158.gguf"
    shape = "--dim 256 --ffn 512 --layers 1 --heads 4 --kv-heads 2 --vocab 300 --rope-theta 500000"
    proc = subprocess.run(
        [sys.executable, "-m", "tmac_core", "synth", str(path), *shape.split(), "--tie-embeddings"]
        + ["--arch", "bitnet-b1.58", "--type", "tq2_0", "--json"],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["type"] == "tq2_0"
    with GGUFFile.open(path) as f:
        assert f.architecture == "bitnet-b1.58" and f.tensors["blk.0.ffn_up.weight"].ggml_type is GGMLType.TQ2_0
        assert f.tensors["token_embd.weight"].ggml_type is GGMLType.F16 and "output.weight" not in f.tensors
    engine = Engine.load(path, bits=2, use_cache=False, n_ctx=32)
    try:
        cfg = engine.config
        assert (cfg.arch, cfg.ffn_act, cfg.sub_norms, cfg.rope_theta) == ("bitnet-b1.58", "relu2", True, 500000.0)
        logits = np.array(engine.forward([1, 2, 3], 0))
        assert logits.shape == (300,) and np.isfinite(logits).all() and np.ptp(logits) > 0
    finally:
        engine.close()


@pytest.mark.parametrize("bits", [None, 2])
@pytest.mark.parametrize("arch", ["bitnet-b1.58", "bitnet"])
def test_an_i2_s_file_loads_through_the_engine_and_its_cache(tiny_files, arch, bits, tmp_path):
    """Engine.load streams matrices in row slabs; an I2_S tensor keeps its fp32 scale after its
    last block, so it is read whole (a slab lost the scale: 'cannot reshape'). The miss and the
    cache hit give the logits of the in-memory loader, bit for bit."""
    path = tiny_files[arch, "i2_s"]
    with GGUFFile.open(path) as f:
        cfg = config_from_gguf(f)
        rt = loader.build_runtime(cfg, loader.load_weights(f, cfg, bits), 64, 32, exact_activations=True)
    prompt = [1, 7, 42, 99, 5]
    expected = np.asarray(rt.forward(prompt, 0))
    for _ in ("miss", "hit"):
        engine = Engine.load(str(path), bits=bits, cache_dir=tmp_path, exact_activations=True, n_ctx=64)
        try:
            np.testing.assert_array_equal(engine.forward(prompt, 0), expected)
        finally:
            engine.close()
    with GGUFFile.open(path) as f:
        name = next(n for n, t in f.tensors.items() if t.ggml_type is GGMLType.I2_S)
        rows = f.tensors[name].n_elements // f.tensors[name].shape[0]
        assert f.rows(name, 0, rows).tensors[name] == f.tensors[name]
        with pytest.raises(ValueError, match="I2_S is read whole"):
            f.rows(name, 0, rows // 2)
