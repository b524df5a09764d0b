"""Tiny GPTQ Llama checkpoints (tests/data/gptq/models, written by
tests/reference/make_gptq_models.py) give transformers' logits: through the numpy reference
forward on our unpacked weights (float64), and with every projection run by the LUT kernels
on pack_super weights, act-order inputs gathered."""

from __future__ import annotations

import json
import re
from math import prod
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference import llama_numpy
from tmac_core.loading.gptq import GPTQLinear, gptq_config, gptq_linears

MODELS = Path(__file__).resolve().parents[1] / "data" / "gptq" / "models"
MODEL_DIRS = sorted(p for p in MODELS.iterdir() if p.is_dir())
_DTYPES = {"F16": "<f2", "F32": "<f4", "I32": "<i4"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
_TOP |= {"lm_head.weight": "output.weight"}
_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q"}
_LAYER |= {"self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output"}
_LAYER |= {"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf_name: str) -> str | None:
    """Hugging Face Llama name -> GGUF name (the HF folder loader owns the full table)."""
    if hf_name in _TOP:
        return _TOP[hf_name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", hf_name)
    return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}.weight" if m and m.group(2) in _LAYER else None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The fixture's tensors (the safetensors format: u64 header length, JSON header, data)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        start = 8 + n + info["data_offsets"][0]
        count = prod(info["shape"])
        out[name] = np.frombuffer(raw, _DTYPES[info["dtype"]], count, start).reshape(info["shape"])
    return out


def load(folder: Path) -> tuple[SimpleNamespace, dict[str, np.ndarray], dict[str, GPTQLinear]]:
    config = json.loads((folder / "config.json").read_text())
    qc_path = folder / "quantize_config.json"
    cfg = gptq_config(config, json.loads(qc_path.read_text()) if qc_path.exists() else None)
    assert cfg is not None
    tensors = read_safetensors(folder / "model.safetensors")
    layers = dict(gptq_linears(tensors, cfg, gguf_name))
    floats = {}
    for hf_name, array in tensors.items():
        target = gguf_name(hf_name)
        if target is not None and target not in layers:
            floats[target] = array.astype(np.float64)
    model = SimpleNamespace(
        n_layers=config["num_hidden_layers"],
        n_heads=config["num_attention_heads"],
        n_kv_heads=config["num_key_value_heads"],
        head_dim=config["hidden_size"] // config["num_attention_heads"],
        norm_eps=config["rms_norm_eps"],
        qkv_bias=False,
        rope_style="neox",  # the checkpoint's own rotate-half order (no q/k row permutation here)
        tie_embeddings=False,
        ffn_act="silu",
        sub_norms=False,
        act_quant="none",
        inv_freq=1.0 / config["rope_theta"] ** (np.arange(0, 32, 2) / 32),
    )
    return model, floats, layers


class KernelLinear:
    """`h @ W.T` for llama_numpy.forward, computed by the kernels: gather, then GEMM."""

    __array_ufunc__ = None  # numpy defers `h @ self` to __rmatmul__

    def __init__(self, layer: GPTQLinear) -> None:
        self.packed = K.pack_super(**layer.super_args())  # type: ignore[arg-type]
        self.perm = layer.perm

    T = property(lambda self: self)  # W.T is the same kernel matrix

    def __rmatmul__(self, h: np.ndarray) -> np.ndarray:
        x = h if self.perm is None else h[:, self.perm]
        return K.gemm(self.packed, x.astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=[p.name for p in MODEL_DIRS])
def test_float64_forward_on_unpacked_weights_matches_transformers(folder: Path) -> None:
    model, weights, layers = load(folder)
    assert len(layers) == 7 * model.n_layers
    weights |= {name: layer.weight().astype(np.float64) for name, layer in layers.items()}
    with np.load(folder / "reference.npz") as ref:
        logits = llama_numpy.forward(model, weights, ref["prompt_ids"], model.inv_freq)
        want = ref["logits"].astype(np.float64)
    # transformers ran in float32: its rounding is the whole difference (measured <= 4.2e-7)
    assert np.abs(logits - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=[p.name for p in MODEL_DIRS])
def test_kernel_forward_matches_transformers(folder: Path) -> None:
    model, weights, layers = load(folder)
    weights |= {name: KernelLinear(layer) for name, layer in layers.items()}  # type: ignore[misc]
    with np.load(folder / "reference.npz") as ref:
        logits = llama_numpy.forward(model, weights, ref["prompt_ids"], model.inv_freq)
        want = ref["logits"].astype(np.float64)
    # int8 activation tables are the kernels' only approximation: relative L2 error per position
    # measured 3.4e-3 (w4), 4.5e-3 (w2), 7.3e-3 (w3) at worst; argmax 23/24 on the w4 model,
    # whose random logits span only +-2.1
    err = np.sqrt(((logits - want) ** 2).sum(axis=1) / (want**2).sum(axis=1))
    assert err.max() <= 1.5e-2
    assert (logits.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.9
