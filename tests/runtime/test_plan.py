"""tmac_core.plan against what the runtime really builds: every packed matrix's bits,
groups and bytes, the architecture registry (each registered architecture loads and
runs a tiny model), inspect_model, and the C row reader against layout.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import make_case
from tests.reference import llama_numpy
from tmac_core import inspect_model
from tmac_core.config import config_from_gguf
from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.kernels._kernels import weight_row
from tmac_core.loading.gguf import GGMLType, GGUFFile
from tmac_core.loading.repack import quantize
from tmac_core.models import ARCHITECTURES, architecture, loader
from tmac_core.plan import (
    Architecture,
    ModelConfig,
    ShapeFields,
    TensorSpec,
    gguf_shapes,
    kv_cache_bytes,
    matrix_bytes,
    n_params,
    packed_bytes,
    tensor_plan,
    vector_plan,
)


def load_tiny(writer, bits):
    f = GGUFFile.from_bytes(writer.build()[0], "tiny.gguf")
    cfg = config_from_gguf(f)
    return f, cfg, loader.load_weights(f, cfg, bits)


@pytest.mark.parametrize("bits", [None, 2, 4])
@pytest.mark.parametrize(
    "weight_type, tied", [(GGMLType.Q8_0, True), (GGMLType.F16, False), (GGMLType.Q4_0, True), (GGMLType.Q4_1, False)]
)
def test_the_plan_is_what_the_loader_packs(tiny_llama_writer, bits, weight_type, tied):
    # hidden_dim 96: ffn_down rows are not a multiple of 64, so it gets 32-wide groups
    f, cfg, weights = load_tiny(tiny_llama_writer(n_layers=4, weight_type=weight_type, tie_embeddings=tied), bits)
    source = {name: info.ggml_type.name for name, info in f.tensors.items()}
    plan = tensor_plan(cfg, bits, source)
    packed = {name: w for name, w in weights.items() if isinstance(w, K.PackedWeight)}
    assert [s.name for s in plan] and sorted(s.name for s in plan) == sorted(packed)
    for spec in plan:
        w = packed[spec.name]
        assert (w.m, w.k, w.bits, w.group_size, w.act_group) == (
            spec.rows,
            spec.cols,
            spec.bits,
            spec.group_size,
            spec.act_group,
        ), spec
        assert matrix_bytes(spec) == w.nbytes, spec
    assert packed_bytes(plan) == sum(w.nbytes for w in packed.values())
    # a precise output matrix that is requantized (a float one as in the file or at the 4-bit preset,
    # Q8_0 at the preset) runs at 6 bits in one pass; the exact Q4 repack keeps 32-wide groups
    out = "token_embd.weight" if tied else "output.weight"
    if bits == 4 or (bits is None and weight_type is GGMLType.F16):
        assert packed[out].bits == (6 if weight_type in (GGMLType.Q8_0, GGMLType.F16) else 4)
    if bits in (None, 4) and weight_type in (GGMLType.Q4_0, GGMLType.Q4_1):
        assert packed["blk.1.attn_q.weight"].group_size == 32
    if bits is None:  # each matrix at its source's bits: Q8_0 at 8, float at 4 by our quantizer
        assert packed["blk.1.attn_q.weight"].bits == {GGMLType.Q8_0: 8, GGMLType.F16: 4}.get(weight_type, 4)
    if bits == 2:  # the preset: first/last layer, attn_v and the table at 4 bits, the rest at 2
        assert packed["blk.1.attn_q.weight"].bits == 2 and packed["blk.1.attn_v.weight"].bits == 4
        assert packed["blk.0.ffn_up.weight"].bits == packed["blk.3.ffn_up.weight"].bits == 4
    vectors = {v.name for v in vector_plan(cfg)}
    assert vectors == {name for name, w in weights.items() if not isinstance(w, K.PackedWeight)} - {"rope.inv_freq"}


@pytest.mark.parametrize(
    "m, k, bits, group",
    [(1, 64, 1, 32), (70, 128, 2, 64), (130, 256, 3, 128), (64, 96, 4, 32), (5, 37, 2, "row"), (65, 200, 4, "row")],
)
def test_matrix_bytes_and_rows_follow_the_layout(rng, m, k, bits, group):
    case = make_case(rng, m, k, k if group == "row" else group, bits)
    w = case.pack()
    spec = TensorSpec("x", m, k, "attn_q", bits, w.group_size, w.act_group)
    assert matrix_bytes(spec) == w.nbytes
    dense = K.dequantize(w)
    for row in sorted({0, 1, 7, 8, 31, 32, 33, 63, m // 2, m - 1} & set(range(m))):
        np.testing.assert_array_equal(weight_row(w, row), dense[row].astype(np.float32))
    with pytest.raises(ValueError):
        weight_row(w, m)


def test_gguf_shapes_are_the_plan_in_file_order(tiny_llama_writer):
    cfg = ARCHITECTURES["qwen2"].config(
        dim=64,
        hidden_dim=96,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=40,
        n_ctx_train=128,
        tie_embeddings=False,
        rope_freqs=True,
    )
    shapes = gguf_shapes(cfg)
    assert list(shapes)[:5] == [
        "token_embd.weight",
        "output_norm.weight",
        "output.weight",
        "rope_freqs.weight",
        "blk.0.attn_norm.weight",
    ]
    assert shapes["blk.1.ffn_down.weight"] == (96, 64) and shapes["blk.0.attn_k.bias"] == (32,)
    assert shapes == cfg.expected_tensors()
    assert n_params(cfg) == sum(int(np.prod(s)) for s in shapes.values())
    assert kv_cache_bytes(cfg, 100) == 2 * 2 * 100 * 32 * 2  # K and V, layers, positions, kv_dim, fp16


def test_architecture_flags_are_decided_by_the_registry():
    assert architecture("mistral") is ARCHITECTURES["llama"]
    llama, qwen2 = architecture("llama"), architecture("qwen2")
    assert (llama.rope_style, llama.qkv_bias) == ("interleaved", False)
    assert (qwen2.rope_style, qwen2.qkv_bias) == ("neox", True)
    with pytest.raises(UnsupportedModelError, match=r"'gpt2' \(supported: bitnet, bitnet-25, bitnet-b1.58, llama,"):
        architecture("gpt2")
    with pytest.raises(ValueError):
        Architecture("x", rope_style="sideways")


def test_shape_fields_are_the_config_fields_an_architecture_does_not_decide():
    """Architecture.config's keywords (ShapeFields) and ModelConfig must not drift apart:
    every field is either the caller's (required exactly when ModelConfig has no default)
    or the architecture's flag, never both, never neither."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    decided_by_arch = {"arch"} | {f.name for f in dataclasses.fields(Architecture) if f.name != "name"}
    assert set(ShapeFields.__annotations__) == set(fields) - decided_by_arch
    no_default = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
    assert ShapeFields.__required_keys__ == no_default


@pytest.mark.parametrize("gguf_arch", sorted(ARCHITECTURES))
def test_every_registered_architecture_loads_and_runs(tiny_llama_writer, gguf_arch):
    """The one test an architecture adds to: its flags reach the config, its plan loads, and
    the forward pass agrees with the numpy reference on the same weights."""
    f, cfg, weights = load_tiny(tiny_llama_writer(arch=gguf_arch, n_layers=3), 4)
    arch = ARCHITECTURES[gguf_arch]
    assert cfg == arch.config(
        **{
            k: getattr(cfg, k)
            for k in (
                "dim",
                "hidden_dim",
                "n_layers",
                "n_heads",
                "n_kv_heads",
                "head_dim",
                "vocab_size",
                "n_ctx_train",
                "rope_theta",
                "norm_eps",
                "rope_scaling",
                "tie_embeddings",
                "rope_freqs",
            )
        }
    )
    # q and k x20: attention sharp enough that a wrong RoPE pairing (or a missing bias) shows
    # in the logits (cosine 0.84-0.96 then, against >= 0.9998 when right)
    for name in [n for n in weights if n.endswith(("attn_q.weight", "attn_k.weight"))]:
        weights[name] = K.pack(*quantize(K.dequantize(weights[name]) * 20, 4, 64), bits=4, group_size=64)
    tokens = np.array([1, 5, 2, 39, 7, 3, 11, 0])
    # int8-activation (BitNet) models in their exact mode: the reference's arithmetic, so a
    # wrong flag is not hidden in table noise
    int8 = cfg.act_quant == "int8_token"
    rt = loader.build_runtime(cfg, weights, n_ctx=16, max_batch=8, exact_activations=int8)
    logits = np.array(rt.forward(tokens, 0, all_logits=True))
    dense = {
        k: (K.dequantize(v) if isinstance(v, K.PackedWeight) else np.asarray(v, np.float64))
        for k, v in weights.items()
        if k != "rope.inv_freq"
    }
    assert weights["token_embd.weight"].bits == 6  # tied Q8_0 table at 4 bits: one 6-bit pass
    ref = llama_numpy.forward(cfg, dense, tokens, weights["rope.inv_freq"], np.float16 if int8 else np.float64)
    cos = (logits * ref).sum(1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999, cos


def test_the_runtime_refuses_flags_it_does_not_run(tiny_llama_writer):
    _, cfg, weights = load_tiny(tiny_llama_writer(), 4)
    with pytest.raises(UnsupportedModelError):
        loader.build_runtime(dataclasses.replace(cfg, ffn_act="gelu"), weights, n_ctx=16)
    with pytest.raises(UnsupportedModelError):
        loader.build_runtime(dataclasses.replace(cfg, act_quant="int4_token"), weights, n_ctx=16)
    with pytest.raises(ValueError, match="exact_activations"):  # no int8 activations to be exact about
        loader.build_runtime(cfg, weights, n_ctx=16, exact_activations=True)
    del weights["blk.1.ffn_up.weight"]
    with pytest.raises(KeyError, match="blk.1.ffn_up.weight"):
        loader.build_runtime(cfg, weights, n_ctx=16)


def test_inspect_model_summarises_the_embedded_file(smollm2):
    s = inspect_model(smollm2)
    with GGUFFile.open(smollm2) as f:
        assert s.config == config_from_gguf(f)
        assert s.tensor_types == {name: info.ggml_type.name for name, info in f.tensors.items()}
        assert s.n_params == sum(info.n_elements for info in f.tensors.values()) and s.file_size == f.file_size
    assert (s.arch, s.gguf_arch, s.gguf_version, s.file_type) == ("llama", "llama", 3, "Q4_1")
    assert s.name and s.path == smollm2 and s.tensor_types["token_embd.weight"] == "Q8_0"


def test_inspect_model_raises_the_readers_typed_errors(tmp_path, tiny_llama_writer):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + tiny_llama_writer().build()[0][4:])
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        inspect_model(bad)
    foo = tmp_path / "foo.gguf"
    foo.write_bytes(tiny_llama_writer(arch="foo").build()[0])
    with pytest.raises(UnsupportedModelError, match="foo"):
        inspect_model(foo)
