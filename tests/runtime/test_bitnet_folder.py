"""A BitNet b1.58 Hugging Face folder (microsoft/bitnet-b1.58-2B-4T's packed layout) loads
exactly: the committed tiny checkpoint tests/data/bitnet_tiny/hf (written with transformers'
logits by tests/reference/make_bitnet_transformers.py) gives the same packed weights and the
same logits as the GGUF conversion of the same weights, and matches transformers; the
weight_scale direction follows linear_class; a malformed folder is a typed error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference.grid import steps_off
from tests.runtime.hf_folder import st_bytes
from tmac_core.config import config_from_gguf
from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.loading.gguf import GGUFFile
from tmac_core.loading.hf import HFModel
from tmac_core.loading.safetensors import SafetensorsFile
from tmac_core.models import loader

pytestmark = pytest.mark.engine

DATA = Path(__file__).resolve().parent.parent / "data" / "bitnet_tiny"
REF = np.load(DATA / "reference.npz")
SCALE = "model.layers.0.mlp.down_proj.weight_scale"
PACKED = "model.layers.0.mlp.down_proj.weight"


def logits(source, cfg, bits, exact=False) -> np.ndarray:
    weights = loader.load_weights(source, cfg, bits)
    rt = loader.build_runtime(cfg, weights, 32, 32, exact_activations=exact)
    return np.array(rt.forward(REF["tokens"], 0, all_logits=True))


def copy_folder(tmp_path: Path) -> Path:
    dest = tmp_path / "hf"
    shutil.copytree(DATA / "hf", dest)
    return dest


def tensors_of(folder: Path) -> dict[str, np.ndarray]:
    with SafetensorsFile.open(folder / "model.safetensors") as f:
        dtypes = {"F32": "<f4", "U8": "u1"}
        return {n: f.tensor_bytes(n).view(dtypes[i.dtype]).reshape(i.shape).copy() for n, i in f.tensors.items()}


def rewrite(folder: Path, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    t = tensors_of(folder)
    change(t)
    (folder / "model.safetensors").write_bytes(st_bytes(t))


def set_linear_class(folder: Path, linear_class: str) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"]["linear_class"] = linear_class
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("bits", [None, 2])
def test_the_folder_loads_bit_identically_to_its_gguf_and_matches_transformers(bits):
    with HFModel.open(DATA / "hf") as folder, GGUFFile.open(DATA / "model.gguf") as gguf:
        cfg = folder.config
        assert (cfg.arch, cfg.ffn_act, cfg.sub_norms, cfg.rope_style, cfg.rope_theta, cfg.tie_embeddings) == (
            "bitnet-b1.58",
            "relu2",
            True,
            "neox",
            500000.0,
            True,
        )
        ours, theirs = loader.load_weights(folder, cfg, bits), loader.load_weights(gguf, config_from_gguf(gguf), bits)
        assert ours.keys() == theirs.keys()
        for name, w in ours.items():  # the same codes, scales and vectors: no requantization
            if isinstance(w, K.PackedWeight):
                assert (w.bits, w.tensor_scale) == (theirs[name].bits, theirs[name].tensor_scale), name
                np.testing.assert_array_equal(np.asarray(w.planes), np.asarray(theirs[name].planes), name)
                np.testing.assert_array_equal(np.asarray(w.scales), np.asarray(theirs[name].scales), name)
            else:
                np.testing.assert_array_equal(w, theirs[name], name)
        span = np.ptp(REF["logits"])
        # measured, "as in the file" (the tied F16 embedding as a 6-bit output layer): table mode
        # 3.87 %, exact mode 2.48 % of the logit range; at bits=2 (its 4-bit output layer is exact on
        # the fixture's 4-bit grid) 1.80-1.88 % and 0.92 %
        table_bound, exact_bound = (0.045, 0.03) if bits is None else (0.04, 0.02)
        for exact, bound in ((False, table_bound), (True, exact_bound)):
            a, b = logits(folder, cfg, bits, exact), logits(gguf, config_from_gguf(gguf), bits, exact)
            np.testing.assert_array_equal(a, b)
            assert np.abs(a - REF["logits"]).max() <= bound * span
            assert (a.argmax(1) == REF["logits"].argmax(1)).all()


def test_the_scale_direction_follows_linear_class(tmp_path):
    """2B-4T's autobitlinear multiplies by weight_scale; BitLinear (Falcon3-1.58bit) divides.
    Read the wrong way the logits leave the bound; a BitLinear folder storing 1/γ is right."""
    span = np.ptp(REF["logits"])
    wrong = copy_folder(tmp_path / "wrong")
    set_linear_class(wrong, "bitlinear")
    with HFModel.open(wrong) as m:
        assert np.abs(logits(m, m.config, None) - REF["logits"]).max() > 0.2 * span

    divides = copy_folder(tmp_path / "divides")
    set_linear_class(divides, "bitlinear")

    def invert(t: dict[str, np.ndarray]) -> None:
        for name in [n for n in t if n.endswith(".weight_scale")]:
            t[name] = (1.0 / t[name].astype(np.float64)).astype(np.float32)

    rewrite(divides, invert)
    with HFModel.open(divides) as m:
        out = logits(m, m.config, None)
    # 1/(1/γ) in fp32 is γ up to an ulp, carried in fp32 (I2_S path where it is not fp16-exact)
    assert np.abs(out - REF["logits"]).max() <= 0.04 * span
    assert (out.argmax(1) == REF["logits"].argmax(1)).all()


def set_tensor(name: str, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, np.ndarray]], None]:
    def change(t: dict[str, np.ndarray]) -> None:
        t[name] = value(t[name])

    return change


def drop(name: str) -> Callable[[dict[str, np.ndarray]], None]:
    def change(t: dict[str, np.ndarray]) -> None:
        del t[name]

    return change


def code_three(t: dict[str, np.ndarray]) -> None:
    t[PACKED][0, 0] = 0xFF


CASES = [
    ("packed rows", set_tensor(PACKED, lambda a: a[:-1]), ModelFormatError, "packed shape"),
    ("packed cols", set_tensor(PACKED, lambda a: a[:, :-1]), ModelFormatError, "packed shape"),
    ("unpacked float", set_tensor(PACKED, lambda a: np.zeros((256, 512), np.float32)), ModelFormatError, "dtype F32"),
    ("no scale", drop(SCALE), ModelFormatError, "weight_scale is missing"),
    ("two scales", set_tensor(SCALE, lambda a: np.ones(2, np.float32)), ModelFormatError, "one value per tensor"),
    ("int scale", set_tensor(SCALE, lambda a: np.ones(1, np.int32)), ModelFormatError, "dtype I32"),
    ("zero scale", set_tensor(SCALE, lambda a: np.zeros(1, np.float32)), ModelFormatError, "finite and positive"),
    ("nan scale", set_tensor(SCALE, lambda a: np.full(1, np.nan, np.float32)), ModelFormatError, "finite and positive"),
    ("negative scale", set_tensor(SCALE, lambda a: -a), ModelFormatError, "finite and positive"),
    ("code 3", code_three, ModelFormatError, "code 3"),
    ("scale alone", drop(PACKED), ModelFormatError, "without its weight"),
]


@pytest.mark.parametrize("change, error, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_bitnet_folder_is_a_typed_error(tmp_path, change, error, fragment):
    folder = copy_folder(tmp_path)
    rewrite(folder, change)
    with pytest.raises(error, match=fragment):
        with HFModel.open(folder) as m:
            for name in m.tensors:
                m.tensor_bytes(name)


@pytest.mark.parametrize(
    "quant, fragment",
    [
        ({"quant_method": "bitnet", "linear_class": "fancylinear"}, "linear_class"),
        ({"quant_method": "bitnet", "quantization_mode": "dynamic"}, "quantization_mode"),
        ({"quant_method": "bitnet", "architectures": ["Qwen2ForCausalLM"]}, "BitNet-packed Qwen2ForCausalLM"),
    ],
)
def test_an_unsupported_bitnet_config_is_refused(tmp_path, quant, fragment):
    folder = copy_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    if quant is not None and "architectures" in quant:  # another architecture with BitNet packing
        cfg.update(architectures=quant.pop("architectures"), hidden_act="silu")
    if quant is None:
        del cfg["quantization_config"]
    else:
        cfg["quantization_config"] = quant
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match=fragment):
        HFModel.open(folder)


def small_tokenizer(folder: Path, vocab_size: int) -> None:
    """The first `vocab_size` - 1 byte-level tokens of tests/data/hf/llama's tokenizer.json and
    one merge "A" + "B" (no special tokens): enough vocabulary for the engine to open the folder."""
    src = json.loads((DATA.parent / "hf" / "llama" / "tokenizer.json").read_text())
    vocab = {tok: i for tok, i in src["model"]["vocab"].items() if i < vocab_size - 1}
    vocab["AB"] = vocab_size - 1
    src["model"]["vocab"] = vocab
    src["model"]["merges"] = [["A", "B"]]
    src["added_tokens"] = []
    (folder / "tokenizer.json").write_text(json.dumps(src))


def test_engine_loads_the_folder_and_its_logits_are_the_gguf_paths(tmp_path):
    from tmac_core.engine import Engine

    folder = copy_folder(tmp_path)
    small_tokenizer(folder, 48)
    engine = Engine.load(folder, n_ctx=64, cache_dir=tmp_path / "cache")
    try:
        assert (engine.info.arch, engine.info.bits) == ("bitnet-b1.58", None)  # the file's own ternary codes
        out = np.asarray(engine.forward(REF["tokens"], 0, all_logits=True))
    finally:
        engine.close()
    with GGUFFile.open(DATA / "model.gguf") as gguf:
        np.testing.assert_array_equal(out, logits(gguf, config_from_gguf(gguf), None))


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_a_16_bit_weight_scale_reads_as_its_value(tmp_path, dtype):
    """2B-4T stores weight_scale in bf16: γ is the bf16 value (fp16-exact, so TQ2_0 with d = γ)."""
    folder = copy_folder(tmp_path)
    gamma = float(tensors_of(folder)[SCALE][0])
    bits16 = np.array([gamma], np.float32).view(np.uint32) >> 16  # bf16 by truncation
    as_bf16 = float((bits16 << 16).view(np.float32)[0])

    def change(t: dict[str, np.ndarray]) -> None:
        if dtype == "BF16":
            t["bf16:" + SCALE] = bits16.astype(np.uint16)
            del t[SCALE]
        else:
            t[SCALE] = t[SCALE].astype(np.float16)

    rewrite(folder, change)
    want = as_bf16 if dtype == "BF16" else gamma
    with HFModel.open(folder) as m:
        name = "blk.0.ffn_down.weight"
        assert m.tensors[name].ggml_type.name == "TQ2_0"
        w = loader.load_weights(m, m.config, None)[name]
        assert np.unique(K.dequantize(w)).tolist() == [-want, 0.0, want]


def onebitllm_folder(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny 1bitLLM/bitnet_b1_58-style folder (BitnetForCausalLM, fp32 latent weights,
    sub-norms named inner_attn_ln / ffn_layernorm, tied embeddings); its tensors."""
    rng = np.random.default_rng(seed)
    dim, hidden, layers, heads, vocab = 256, 384, 2, 4, 40
    folder.mkdir(parents=True)
    config = {
        "architectures": ["BitnetForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": dim,
        "intermediate_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "vocab_size": vocab,
        "input_bits": 8,
        "weight_bits": 1,
    }
    (folder / "config.json").write_text(json.dumps(config))
    # the embedding on the 4-bit grid of the tied output layer (as make_bitnet_transformers.py
    # does), so the runtime's output matrix is the embedding exactly
    q = rng.integers(0, 16, (vocab, dim // 64, 64))
    q[:, :, 0], q[:, :, 1] = 0, 15
    s = np.float16(rng.uniform(0.02, 0.06, (vocab, dim // 64, 1))).astype(np.float32)
    t = {
        "model.embed_tokens.weight": (s * (q - 8)).reshape(vocab, dim).astype(np.float32),
        "model.norm.weight": (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32),
    }
    shapes = {
        "self_attn.q_proj": (dim, dim),
        "self_attn.k_proj": (dim, dim),
        "self_attn.v_proj": (dim, dim),
        "self_attn.o_proj": (dim, dim),
        "mlp.gate_proj": (hidden, dim),
        "mlp.up_proj": (hidden, dim),
        "mlp.down_proj": (dim, hidden),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        for norm, size in (
            ("input_layernorm", dim),
            ("post_attention_layernorm", dim),
            ("self_attn.inner_attn_ln", dim),
            ("mlp.ffn_layernorm", hidden),
        ):
            t[p + norm + ".weight"] = (1 + 0.1 * rng.standard_normal(size)).astype(np.float32)
        for proj, shape in shapes.items():
            t[p + proj + ".weight"] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    (folder / "model.safetensors").write_bytes(st_bytes(t))
    return t


def test_a_1bitllm_float_folder_is_ternarized_at_load_with_the_absmean_scale(tmp_path):
    from tests.reference import llama_numpy

    t = onebitllm_folder(tmp_path / "1bit")
    tokens = np.random.default_rng(1).integers(0, 40, 16)
    with HFModel.open(tmp_path / "1bit") as m:
        cfg = m.config
        assert (cfg.arch, cfg.ffn_act, cfg.sub_norms, cfg.rope_style) == ("bitnet", "silu", True, "neox")
        assert m.tensors["blk.1.ffn_down.weight"].ggml_type.name == "I2_S"
        weights = loader.load_weights(m, cfg, None)
    dense = {k: K.dequantize(v) if isinstance(v, K.PackedWeight) else v for k, v in weights.items()}
    # independently: W ≈ clip(round(W / mean|W|), −1, 1) · mean|W| (1bitLLM's weight_quant)
    w = t["model.layers.1.mlp.down_proj.weight"].astype(np.float64)
    gamma = np.abs(w).mean()
    np.testing.assert_allclose(dense["blk.1.ffn_down.weight"], np.clip(np.rint(w / gamma), -1, 1) * gamma, rtol=1e-6)
    np.testing.assert_array_equal(
        dense["blk.0.attn_sub_norm.weight"], t["model.layers.0.self_attn.inner_attn_ln.weight"]
    )
    ref = llama_numpy.forward(
        cfg, {k: np.asarray(v, np.float64) for k, v in dense.items()}, tokens, weights["rope.inv_freq"], np.float16
    )
    span = np.ptp(ref)
    exact, table = (
        np.array(loader.build_runtime(cfg, weights, 32, 32, exact_activations=e).forward(tokens, 0, all_logits=True))
        for e in (True, False)
    )
    # the tied output layer is the embedding at 6 bits: within half a step of each 64-wide group's range
    # (measured 0.504: the fp16 scale's rounding)
    assert weights["token_embd.weight"].bits == 6
    assert steps_off(dense["token_embd.weight"], t["model.embed_tokens.weight"], 6) <= 0.51
    # measured: exact mode 2.4e-5, table mode 2.1 % of the logit range; the same greedy tokens
    assert np.abs(exact - ref).max() <= 1e-4 * span
    assert np.abs(table - ref).max() <= 0.04 * span
    assert (exact.argmax(1) == ref.argmax(1)).all() and (table.argmax(1) == ref.argmax(1)).all()


def test_a_1bitllm_folder_with_nan_weights_is_a_typed_error(tmp_path):
    t = onebitllm_folder(tmp_path / "1bit")
    t["model.layers.0.self_attn.q_proj.weight"][3, 5] = np.nan
    (tmp_path / "1bit" / "model.safetensors").write_bytes(st_bytes(t))
    with HFModel.open(tmp_path / "1bit") as m, pytest.raises(ModelFormatError, match="NaN or infinite"):
        m.tensor_bytes("blk.0.attn_q.weight")


def test_a_2b4t_latent_folder_is_ternarized_at_load(tmp_path):
    """2B-4T's -bf16 repo: BitNetForCausalLM with float [out, in] projections and no packed
    quantization_config; each is ternarized with transformers' online WeightQuant (absmean)."""
    folder = copy_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["quantization_config"]
    (folder / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(3)

    def latent(t: dict[str, np.ndarray]) -> None:
        for name in [n for n in t if n.endswith(".weight_scale")]:
            packed = t.pop(name[: -len("_scale")])
            del t[name]
            t["bf16:" + name[: -len("_scale")]] = rng.integers(0x3C00, 0x3D00, (packed.shape[0] * 4, packed.shape[1]))
            t["bf16:" + name[: -len("_scale")]] ^= (
                rng.integers(0, 2, packed.shape[0] * 4 * packed.shape[1]).reshape(-1, packed.shape[1]) << 15
            )  # random signs
        for n in [n for n in t if n.startswith("bf16:")]:
            t[n] = t[n].astype(np.uint16)

    rewrite(folder, latent)
    with HFModel.open(folder) as m:
        assert m.config.arch == "bitnet-b1.58" and m.tensors["blk.0.attn_q.weight"].ggml_type.name == "I2_S"
        with SafetensorsFile.open(folder / "model.safetensors") as f:
            raw = f.tensor_bytes("model.layers.0.self_attn.q_proj.weight").view("<u2").astype(np.uint32)
        w = (raw << 16).view(np.float32).astype(np.float64).reshape(256, 256)
        dense = K.dequantize(loader.load_weights(m, m.config, None)["blk.0.attn_q.weight"])
    gamma = np.abs(w).mean()
    np.testing.assert_allclose(dense, np.clip(np.rint(w / gamma), -1, 1) * gamma, rtol=1e-6)
    assert (dense == 0).any() and (dense > 0).any() and (dense < 0).any()
