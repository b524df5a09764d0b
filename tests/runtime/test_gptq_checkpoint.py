"""A whole GPTQ checkpoint (a name -> array mapping, as a safetensors reader gives it) becomes
GPTQ layers under their GGUF names, with Llama's row reordering applied exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tmac_core.errors import ModelFormatError
from tmac_core.loading.gptq import gptq_config, gptq_linears

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "gptq"

# The Hugging Face -> GGUF names these tests use (the HF folder loader owns the full table).
NAMES = {
    "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
    "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
    "model.layers.1.self_attn.k_proj.weight": "blk.1.attn_k.weight",
    "lm_head.weight": "output.weight",
}


def _fixture(stem: str) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"{stem}.npz") as data:
        return json.loads(str(data["config"])), {name: data[name] for name in data.files}


def _checkpoint() -> tuple[dict[str, object], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Three GPTQ layers sharing one config (w4 g32 asym v2 act-order), a float embedding,
    and a quantized vision layer the runtime does not use."""
    config, act = _fixture("w4g32_asym_v2_act")
    _, plain = _fixture("w4g32_asym_v2")  # contiguous g_idx is valid under desc_act too
    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": np.zeros((8, 128), np.float16)}
    references = {}
    for prefix, data in [
        ("model.layers.0.self_attn.q_proj", act),
        ("model.layers.0.mlp.down_proj", plain),
        ("model.layers.1.self_attn.k_proj", act),
        ("visual.blocks.0.attn.qkv", plain),
    ]:
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            tensors[f"{prefix}.{part}"] = data[part]
        references[f"{prefix}.weight"] = data["reference"]
    return {"architectures": ["LlamaForCausalLM"], "quantization_config": config}, tensors, references


def test_layers_come_out_under_gguf_names_with_exact_weights() -> None:
    config_json, tensors, references = _checkpoint()
    cfg = gptq_config(config_json)
    assert cfg is not None
    layers = dict(gptq_linears(tensors, cfg, NAMES.get))
    assert sorted(layers) == ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_k.weight"]
    for hf_name, gguf in NAMES.items():
        if gguf in layers:
            np.testing.assert_array_equal(layers[gguf].weight(), references[hf_name])
    assert layers["blk.0.attn_q.weight"].perm is not None and layers["blk.0.ffn_down.weight"].perm is None


def test_row_order_moves_every_per_row_parameter() -> None:
    config_json, tensors, references = _checkpoint()
    cfg = gptq_config(config_json)
    assert cfg is not None
    order = np.random.default_rng(1).permutation(32)

    def row_order(name: str, rows: int) -> np.ndarray | None:
        return order if name == "blk.0.attn_q.weight" else None

    layers = dict(gptq_linears(tensors, cfg, NAMES.get, row_order))
    want = references["model.layers.0.self_attn.q_proj.weight"][order]
    np.testing.assert_array_equal(layers["blk.0.attn_q.weight"].weight(), want)
    np.testing.assert_array_equal(
        layers["blk.1.attn_k.weight"].weight(), references["model.layers.1.self_attn.k_proj.weight"]
    )
    with pytest.raises(ValueError, match="permutation"):
        layers["blk.0.attn_q.weight"].permute_rows(np.zeros(32, dtype=np.int64))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda t: t.pop("model.layers.0.mlp.down_proj.qzeros"), "no qzeros"),
        (lambda t: t.pop("model.layers.0.mlp.down_proj.scales"), "no scales"),
        (lambda t: t.pop("model.layers.1.self_attn.k_proj.qweight"), "no qweight"),
        (lambda t: t.update({"model.layers.2.mlp.up_proj.g_idx": np.arange(128)}), "no qweight"),
        (
            lambda t: t.update({"model.layers.0.mlp.down_proj.weight": np.zeros((32, 128), np.float16)}),
            "both a float weight",
        ),
    ],
    ids=["missing qzeros", "missing scales", "missing qweight", "orphan g_idx", "weight and qweight"],
)
def test_incomplete_or_ambiguous_layers_are_refused(
    change: Callable[[dict[str, np.ndarray]], object], fragment: str
) -> None:
    config_json, tensors, _ = _checkpoint()
    change(tensors)
    cfg = gptq_config(config_json)
    assert cfg is not None
    with pytest.raises(ModelFormatError, match=fragment):
        list(gptq_linears(tensors, cfg, NAMES.get))
