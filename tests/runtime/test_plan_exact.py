"""tmac_core.plan's "as in the file" mode (bits=None) against what the runtime builds: a
mixed-type file (a Q4_K_M-like mix plus every other exact type and a float fallback)
plans each matrix at its source's bits, groups and scale format; the loader packs
exactly that, byte for byte (the Models page's estimate is the engine's number); the
forward pass computes with ggml's weights; and the summary the UI shows says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference import llama_numpy
from tests.runtime.kquant_writer import requantize_file
from tmac_core import Engine, inspect_model
from tmac_core.cli import main as cli_main
from tmac_core.config import config_from_gguf
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGUFFile
from tmac_core.models import ARCHITECTURES, loader
from tmac_core.plan import (
    EXACT_SOURCES,
    ModelConfig,
    TensorSpec,
    bits_per_weight,
    is_quantized,
    matrix_bytes,
    packed_bytes,
    preset_super_size,
    source_summary,
    tensor_plan,
)
from tmac_core.synth import SynthSpec, write_synthetic

# Every role of layer 0 and 1 at some exact type; ffn_down of layer 1 stays F16 (the 4-bit fallback)
MIX = {
    "token_embd": "Q8_0",
    "output": "Q6_K",
    "attn_q": ("Q4_K", "Q4_0"),
    "attn_k": ("Q5_K", "TQ2_0"),
    "attn_v": ("Q6_K", "TQ1_0"),
    "attn_output": ("Q3_K", "Q5_1"),
    "ffn_gate": ("Q2_K", "Q4_K"),
    "ffn_up": ("Q4_1", "Q6_K"),
    "ffn_down": ("Q5_0", "F16"),
}
# bits per weight of one exact matrix (rows a multiple of 64): planes plus the scale format's bytes;
# the symmetric types (layout v3's F16_SYM and SUPER_NOMIN) store one record where the others store two
BITS_PER_WEIGHT = {
    "Q2_K": 2 + (32 + 16 * 16) / 256,
    "Q3_K": 3 + (16 + 16 * 8) / 256,
    "Q4_K": 4 + (32 + 8 * 16) / 256,
    "Q5_K": 5 + (32 + 8 * 16) / 256,
    "Q6_K": 6 + (16 + 16 * 8) / 256,
    "Q4_1": 4 + 48 / 32,
    "Q5_1": 5 + 48 / 32,
    "Q4_0": 4 + 16 / 32,
    "Q5_0": 5 + 16 / 32,
    "Q8_0": 8 + 16 / 32,
    "TQ1_0": 2 + 16 / 128,
    "TQ2_0": 2 + 16 / 128,
}


def type_of(name: str, layer: int | None = None) -> str | None:
    for role, t in MIX.items():
        if f".{role}." in f".{name}":
            return t if isinstance(t, str) else t[layer or 0]
    return None


def write_model(folder, target) -> str:
    """A 2-layer model (dim 256: whole K-quant blocks; synth's tokenizer) written in float,
    each tensor requantized to target(name, layer) (None: kept in float)."""
    cfg = ARCHITECTURES["llama"].config(
        dim=256, hidden_dim=512, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=320, n_ctx_train=64
    )
    float_path = folder / "float.gguf"
    write_synthetic(float_path, SynthSpec(cfg, weight_type="f32", seed=3))

    def type_for(name: str, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 2:
            return None
        return target(name, int(name.split(".")[1]) if name.startswith("blk.") else 0)

    path = folder / "model.gguf"
    requantize_file(str(float_path), str(path), type_for)
    return str(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The model with MIX's types."""
    return write_model(tmp_path_factory.mktemp("mixed"), type_of), None


def test_exact_types_plan_their_own_format():
    cfg = ModelConfig(
        dim=256, hidden_dim=512, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=64, n_ctx_train=64
    )
    for type_name, fmt in EXACT_SOURCES.items():
        plan = tensor_plan(cfg, None, type_name)
        assert all(
            (s.bits, s.group_size, s.super_size, s.source_type) == (fmt.bits, fmt.group_size, fmt.super_size, type_name)
            for s in plan
        )
        assert all(s.act_group == min(64, s.group_size) for s in plan)
        assert bits_per_weight(cfg, None, type_name) == pytest.approx(BITS_PER_WEIGHT[type_name])
    # float and unknown sources: our 4-bit quantizer; a float output layer at 6 bits in one pass
    for source in ("F16", "BF16", "IQ4_XS"):
        plan = tensor_plan(cfg, None, source)
        out_bits = 4 if source == "IQ4_XS" else 6
        assert all(
            (s.bits, s.group_size, s.super_size, s.exact) == (out_bits if s.role == "output" else 4, 64, 0, False)
            for s in plan
        )
    # from a float source the 4-bit preset is the file mode's plan; from a quantized precise one
    # (Q8_0) the file mode runs it exactly at 8 bits, the preset's output at 6 bits
    assert tensor_plan(cfg, None, "F16") == tensor_plan(cfg, 4, "F16")
    q8_file, q8_preset = tensor_plan(cfg, None, "Q8_0"), tensor_plan(cfg, 4, "Q8_0")
    assert [(s.role, s.bits) for s in q8_preset if s.role == "output"] == [("output", 6)]
    assert [(s.role, s.bits) for s in q8_file if s.role == "output"] == [("output", 8)]
    assert (
        not is_quantized("F16")
        and not is_quantized({"a": "F32", "b": "BF16"})
        and is_quantized({"a": "F32", "b": "Q4_K"})
    )


def test_the_presets_are_unchanged_by_the_file_mode():
    cfg = ModelConfig(
        dim=256, hidden_dim=512, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, vocab_size=64, n_ctx_train=64
    )
    for source in ("Q4_K", "Q6_K", "Q8_0"):
        four = tensor_plan(cfg, 4, source)
        # a precise output matrix at 6 bits in one pass, the rest at 4
        out_bits = 4 if source == "Q4_K" else 6
        assert all((s.bits, s.super_size) == (out_bits if s.role == "output" else 4, 0) for s in four)
        two = tensor_plan(cfg, 2, source)
        assert {s.bits for s in two} == {2, 4}
    q4_0 = tensor_plan(cfg, 4, "Q4_0")
    assert all(s.group_size == 32 and s.source_type == "Q4_0" for s in q4_0)
    # Q4_1 at 4 bits: its 32-blocks with int8 sub-scales under super-blocks of up to 256 along the row
    q4_1 = tensor_plan(cfg, 4, "Q4_1")
    assert all((s.group_size, s.super_size, s.source_type) == (32, 256, "Q4_1") for s in q4_1)
    assert bits_per_weight(cfg, 4, "Q4_1") == pytest.approx(4 + 16 / 32 + 32 / 256)
    assert [preset_super_size(4, cols, "Q4_1") for cols in (576, 1536, 96, 800)] == [192, 256, 96, 160]
    assert preset_super_size(4, 576, "Q4_0") == preset_super_size(2, 576, "Q4_1") == 0


@pytest.mark.parametrize("rows, cols", [(1, 256), (65, 512), (200, 768)])
def test_matrix_bytes_of_both_scale_formats_are_the_packed_bytes(rows, cols):
    rng = np.random.default_rng(rows)
    for type_name, fmt in EXACT_SOURCES.items():
        spec = TensorSpec(
            "w", rows, cols, "attn_q", fmt.bits, fmt.group_size, min(64, fmt.group_size), 0, fmt.super_size, type_name
        )
        codes = rng.integers(0, 1 << fmt.bits, (rows, cols), dtype=np.uint8)
        if fmt.super_size:
            n_super, n_groups = cols // fmt.super_size, cols // fmt.group_size
            d = np.ones((rows, n_super), np.float16)
            sc = np.ones((rows, n_groups), np.int8)
            packed = K.pack_super(
                codes,
                d,
                d,
                sc,
                sc,
                bits=fmt.bits,
                group_size=fmt.group_size,
                super_size=fmt.super_size,
                code_offset=0.5,
            )
        else:
            packed = K.pack(
                codes, np.ones((rows, cols // fmt.group_size), np.float32), bits=fmt.bits, group_size=fmt.group_size
            )
        assert matrix_bytes(spec) == packed.nbytes, type_name


def test_the_loader_packs_the_plan_and_computes_with_ggml_weights(mixed):
    path, _ = mixed
    with GGUFFile.open(path) as f:
        cfg = config_from_gguf(f)
        types = {name: info.ggml_type.name for name, info in f.tensors.items()}
        assert set(types.values()) >= set(EXACT_SOURCES) | {"F16"}
        weights = loader.load_weights(f, cfg, None)
        plan = tensor_plan(cfg, None, types)
        packed = {n: w for n, w in weights.items() if isinstance(w, K.PackedWeight)}
        assert sorted(packed) == sorted(s.name for s in plan)  # the output is exact Q6_K
        for spec in plan:
            w = packed[spec.name]
            assert (w.m, w.k, w.bits, w.group_size, w.act_group, w.super_size, w.scale_format) == (
                spec.rows,
                spec.cols,
                spec.bits,
                spec.group_size,
                spec.act_group,
                spec.super_size,
                spec.scale_format,
            ), spec
            assert matrix_bytes(spec) == w.nbytes, spec
            assert spec.exact == (types[spec.name] != "F16")
        assert packed_bytes(plan) == sum(w.nbytes for w in packed.values())
        assert bits_per_weight(cfg, None, types) == 8 * packed_bytes(plan) / sum(s.rows * s.cols for s in plan)
        # the forward pass against numpy with ggml's own dequantization of every exact matrix
        # (the requantized F16 matrix: what we packed, the rest: what the file says)
        dense = {name: dequantize_tensor(f, name).astype(np.float64) for name in weights if name != "rope.inv_freq"}
        fallback = "blk.1.ffn_down.weight"
        dense[fallback] = K.dequantize(packed[fallback])
    tokens = np.array([1, 5, 2, 39, 7, 300, 11, 0])
    rt = loader.build_runtime(cfg, weights, n_ctx=16, max_batch=8)
    logits = np.array(rt.forward(tokens, 0, all_logits=True))
    ref = llama_numpy.forward(cfg, dense, tokens, weights["rope.inv_freq"])
    cos = (logits * ref).sum(1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999, cos


def test_the_engine_reports_what_the_plan_estimates(mixed):
    path, _ = mixed
    summary = inspect_model(path)
    engine = Engine.load(path, use_cache=False, n_ctx=32)  # bits=None: a quantized source runs as in the file
    try:
        info = engine.info
        plan = tensor_plan(summary.config, None, summary.tensor_types)
        assert info.bits is None and info.packed_bytes == packed_bytes(plan)
        assert info.bits_per_weight == pytest.approx(
            bits_per_weight(summary.config, None, summary.tensor_types), rel=1e-12
        )
    finally:
        engine.close()


def test_the_summary_says_what_each_mode_runs(mixed, capsys):
    path, _ = mixed
    summary = inspect_model(path)
    s = source_summary(summary.config, summary.tensor_types)
    assert s.quantized and not s.exact and s.requantized == ("F16",)
    mix: dict[str, int] = {}
    for spec in tensor_plan(summary.config, None, summary.tensor_types):
        mix[summary.tensor_types[spec.name]] = mix.get(summary.tensor_types[spec.name], 0) + spec.rows * spec.cols
    assert s.type_mix == mix and list(s.type_mix.values()) == sorted(mix.values(), reverse=True)
    assert set(s.bits_per_weight) == {None, 4, 2}
    for mode, bpw in s.bits_per_weight.items():
        assert bpw == bits_per_weight(summary.config, mode, summary.tensor_types)
    assert cli_main(["inspect", path, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["exact"] is False and record["requantized"] == ["F16"] and record["default_bits"] == "file"
    assert record["bits_per_weight"] == {
        "file": s.bits_per_weight[None],
        "4": s.bits_per_weight[4],
        "2": s.bits_per_weight[2],
    }
    assert cli_main(["inspect", path]) == 0
    text = capsys.readouterr().out
    assert "F16 requantized to 4 bits" in text and "--bits file" in text and "(default)" in text


def test_a_second_load_through_the_cache_computes_the_same(tmp_path):
    """SUPER weights (sub-scales beside the fp16 d/dmin) must survive the repacked-model cache
    or stay out of it: a second load computes exactly what the first did. All-Q4_1 (and a
    Q8_0 table) is the case a cache of fp16 scales alone would read back with wrong weights:
    its d/dmin have the element count of F16 scales."""
    path = write_model(tmp_path, lambda name, layer: "Q8_0" if name.startswith("token_embd") else "Q4_1")
    tokens = [1, 5, 2, 39, 7, 300, 11, 0]
    logits = []
    for _ in range(2):
        engine = Engine.load(path, cache_dir=tmp_path / "cache", n_ctx=32)
        try:
            logits.append(engine.forward(tokens, 0, all_logits=True))
        finally:
            engine.close()
    assert np.array_equal(logits[0], logits[1])
