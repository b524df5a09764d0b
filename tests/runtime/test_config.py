"""config_from_gguf: GGUF keys → our names, hyperparameter sanity, and tensor presence
and shapes. Models come from `tiny_llama_writer` (conftest)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmac_core.config import ModelConfig, RopeScaling, config_from_gguf
from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.loading.gguf import GGUFFile, ValueType

NAN, INF = float("nan"), float("inf")


def _config(writer) -> ModelConfig:
    return config_from_gguf(GGUFFile.from_bytes(writer.build()[0], "tiny.gguf"))


def test_smollm2_config(smollm2):
    with GGUFFile.open(smollm2) as f:
        c = config_from_gguf(f)
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads) == (576, 1536, 30, 9, 3)
    assert (c.head_dim, c.vocab_size, c.n_ctx_train) == (64, 49152, 8192)
    assert c.rope_theta == 100000.0 and c.norm_eps == pytest.approx(1e-5)
    assert c.tie_embeddings and c.arch == "llama" and not c.qkv_bias
    assert c.rope_scaling is None and not c.rope_freqs


def test_tiny_llama_config(tiny_llama_writer):
    c = _config(tiny_llama_writer())
    assert c == ModelConfig(
        dim=64,
        hidden_dim=96,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=40,
        n_ctx_train=128,
        rope_theta=10000.0,
        norm_eps=pytest.approx(1e-5),
        tie_embeddings=True,
        arch="llama",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.dim = 1
    assert len(c.expected_tensors()) == 2 + 2 * 9


def test_extra_tensors_are_reported_not_rejected(tiny_llama_writer):
    w = tiny_llama_writer(shape_overrides={"blk.0.attn_sinks": (4,)})
    f = GGUFFile.from_bytes(w.build()[0])
    assert config_from_gguf(f).extra_tensors(f) == ["blk.0.attn_sinks"]


def test_untied_output_and_f16_weights(tiny_llama_writer):
    from tmac_core.loading.gguf import GGMLType

    c = _config(tiny_llama_writer(tie_embeddings=False, weight_type=GGMLType.F16))
    assert not c.tie_embeddings and "output.weight" in c.expected_tensors()


def test_qwen2_needs_biases(tiny_llama_writer):
    c = _config(tiny_llama_writer(arch="qwen2"))
    assert c.arch == "qwen2" and c.qkv_bias
    with pytest.raises(ModelFormatError, match=r"tensor 'blk.1.attn_k.bias': required tensor is missing"):
        _config(tiny_llama_writer(arch="qwen2", skip_tensors=("blk.1.attn_k.bias",)))


def test_mistral_is_llama_shaped(tiny_llama_writer):
    c = _config(tiny_llama_writer(arch="mistral"))
    assert c.arch == "llama" and c.dim == 64


def test_architecture_missing_or_unknown(tiny_llama_writer):
    with pytest.raises(ModelFormatError, match="'general.architecture': required key is missing"):
        _config(tiny_llama_writer(skip_keys=("general.architecture",)))
    with pytest.raises(
        UnsupportedModelError,
        match=r"unsupported architecture 'foo' \(supported: bitnet, bitnet-25, bitnet-b1.58, llama, llama-bitnet, "
        r"mistral, qwen2\)",
    ):
        _config(tiny_llama_writer(arch="foo"))


@pytest.mark.parametrize(
    "name", ["output_norm.weight", "token_embd.weight", "blk.1.ffn_down.weight", "blk.0.attn_norm.weight"]
)
def test_missing_tensor_is_named(tiny_llama_writer, name):
    with pytest.raises(ModelFormatError, match=f"tensor '{name}': required tensor is missing"):
        _config(tiny_llama_writer(skip_tensors=(name,)))


@pytest.mark.parametrize(
    "name, np_shape, expected",
    [
        ("token_embd.weight", (41, 64), r"has shape \[64, 41\], expected \[64, 40\]"),
        ("blk.0.attn_q.weight", (64, 32), r"has shape \[32, 64\], expected \[64, 64\]"),
        ("blk.1.attn_k.weight", (64, 64), r"expected \[64, 32\]"),
        ("blk.0.ffn_down.weight", (64, 64), r"expected \[96, 64\]"),
        ("output_norm.weight", (63,), r"has shape \[63\], expected \[64\]"),
        ("blk.0.ffn_norm.weight", (1, 64), r"has shape \[64, 1\], expected \[64\]"),
    ],
)
def test_wrong_shape_names_expected_and_found(tiny_llama_writer, name, np_shape, expected):
    with pytest.raises(ModelFormatError, match=expected) as info:
        _config(tiny_llama_writer(shape_overrides={name: np_shape}))
    assert info.value.field == f"tensor '{name}'"


@pytest.mark.parametrize(
    "key, value, vtype, match",
    [
        ("llama.block_count", 0, ValueType.UINT32, r"'llama.block_count'.*value 0 outside \[1, 1024\]"),
        ("llama.block_count", 10**9, ValueType.UINT32, "outside"),
        ("llama.block_count", "2", ValueType.STRING, "expected an integer, found STRING"),
        ("llama.attention.head_count", 0, ValueType.UINT32, "outside"),
        ("llama.attention.head_count", 3, ValueType.UINT32, "3 heads do not divide dim 64"),
        ("llama.attention.head_count_kv", 3, ValueType.UINT32, "3 kv heads do not divide 4 heads"),
        ("llama.attention.head_count_kv", 0, ValueType.UINT32, "outside"),
        ("llama.embedding_length", 0, ValueType.UINT32, "outside"),
        ("llama.embedding_length", 2**31, ValueType.UINT32, "outside"),
        ("llama.context_length", 0, ValueType.UINT32, "outside"),
        ("llama.context_length", 2**31, ValueType.UINT32, "outside"),
        ("llama.feed_forward_length", -5, ValueType.INT32, "outside"),
        ("llama.rope.freq_base", NAN, ValueType.FLOAT32, "'llama.rope.freq_base'.*not finite"),
        ("llama.rope.freq_base", INF, ValueType.FLOAT64, "not finite"),
        ("llama.rope.freq_base", -1.0, ValueType.FLOAT32, "must be positive"),
        ("llama.attention.layer_norm_rms_epsilon", NAN, ValueType.FLOAT32, "not finite"),
        ("llama.attention.layer_norm_rms_epsilon", -1e-5, ValueType.FLOAT32, "must be positive"),
        ("llama.attention.layer_norm_rms_epsilon", 0.0, ValueType.FLOAT32, "must be positive"),
        ("llama.attention.layer_norm_rms_epsilon", 2.0, ValueType.FLOAT32, "outside"),
        ("llama.vocab_size", 41, ValueType.UINT32, "says 41 but the vocabulary has 40 tokens"),
    ],
)
def test_absurd_hyperparameters_are_rejected_with_the_key(tiny_llama_writer, key, value, vtype, match):
    with pytest.raises(ModelFormatError, match=match) as info:
        _config(tiny_llama_writer(key_overrides={key: (value, vtype)}))
    assert key in info.value.field


@pytest.mark.parametrize(
    "key",
    [
        "llama.block_count",
        "llama.embedding_length",
        "llama.attention.head_count",
        "llama.context_length",
        "llama.feed_forward_length",
        "llama.attention.layer_norm_rms_epsilon",
        "tokenizer.ggml.tokens",
    ],
)
def test_required_keys(tiny_llama_writer, key):
    with pytest.raises(ModelFormatError, match=f"'{key}': required key is missing"):
        _config(tiny_llama_writer(skip_keys=(key,)))


def test_optional_keys_have_llama_defaults(tiny_llama_writer):
    c = _config(
        tiny_llama_writer(
            skip_keys=("llama.attention.head_count_kv", "llama.rope.freq_base", "llama.rope.dimension_count"),
            n_kv_heads=4,
        )
    )
    assert c.n_kv_heads == 4 and c.rope_theta == 10000.0 and c.head_dim == 16


def test_vocabulary_must_be_strings(tiny_llama_writer):
    w = tiny_llama_writer(skip_keys=("tokenizer.ggml.tokens",))
    w.add_array("tokenizer.ggml.tokens", list(range(40)), ValueType.UINT32)
    with pytest.raises(ModelFormatError, match="expected an array of STRING"):
        _config(w)


def test_llama3_rope_scaling(tiny_llama_writer):
    c = _config(
        tiny_llama_writer(
            key_overrides={
                "llama.rope.scaling.type": ("llama3", ValueType.STRING),
                "llama.rope.scaling.factor": (8.0, ValueType.FLOAT32),
                "llama.rope.scaling.low_freq_factor": (1.0, ValueType.FLOAT32),
                "llama.rope.scaling.high_freq_factor": (4.0, ValueType.FLOAT32),
                "llama.rope.scaling.original_context_length": (8192, ValueType.UINT32),
            }
        )
    )
    assert c.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 8192)
    with pytest.raises(ModelFormatError, match="must exceed low_freq_factor"):
        _config(
            tiny_llama_writer(
                key_overrides={
                    "llama.rope.scaling.type": ("llama3", ValueType.STRING),
                    "llama.rope.scaling.high_freq_factor": (0.5, ValueType.FLOAT32),
                }
            )
        )
    with pytest.raises(ModelFormatError, match="not finite"):
        _config(
            tiny_llama_writer(
                key_overrides={
                    "llama.rope.scaling.type": ("llama3", ValueType.STRING),
                    "llama.rope.scaling.factor": (NAN, ValueType.FLOAT32),
                }
            )
        )


def test_other_rope_scaling(tiny_llama_writer):
    assert (
        _config(tiny_llama_writer(key_overrides={"llama.rope.scaling.type": ("none", ValueType.STRING)})).rope_scaling
        is None
    )
    assert (
        _config(
            tiny_llama_writer(
                key_overrides={
                    "llama.rope.scaling.type": ("linear", ValueType.STRING),
                    "llama.rope.scaling.factor": (1.0, ValueType.FLOAT32),
                }
            )
        ).rope_scaling
        is None
    )
    for kind in ("linear", "yarn"):
        with pytest.raises(UnsupportedModelError, match=f"RoPE scaling type '{kind}'"):
            _config(
                tiny_llama_writer(
                    key_overrides={
                        "llama.rope.scaling.type": (kind, ValueType.STRING),
                        "llama.rope.scaling.factor": (4.0, ValueType.FLOAT32),
                    }
                )
            )


def test_rope_freqs_tensor_and_head_dim_keys(tiny_llama_writer):
    c = _config(tiny_llama_writer(shape_overrides={"rope_freqs.weight": (8,)}))
    assert c.rope_freqs
    with pytest.raises(ModelFormatError, match=r"'rope_freqs.weight'.*expected \[8\]"):
        _config(tiny_llama_writer(shape_overrides={"rope_freqs.weight": (16,)}))
    with pytest.raises(UnsupportedModelError, match="partial rotary"):
        _config(tiny_llama_writer(key_overrides={"llama.rope.dimension_count": (8, ValueType.UINT32)}))


# Fuzz the metadata and tensor index of a whole tiny model: only typed errors may escape.
@pytest.fixture(scope="module")
def tiny_model(tiny_llama_writer):
    return tiny_llama_writer(n_layers=1).build()


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_fuzz_config_only_raises_typed_errors(tiny_model, flips):
    data, layout = tiny_model
    mutated = bytearray(data)
    for position, xor in flips:  # aim at the header, metadata and tensor index
        mutated[position % layout.data_start] ^= xor
    try:
        config_from_gguf(GGUFFile.from_bytes(bytes(mutated), "fuzz.gguf"))
    except (ModelFormatError, UnsupportedModelError):
        pass
