"""Writes tiny GPTQ Llama checkpoints under tests/data/gptq/models/ with transformers' logits.

Run like make_gptq_fixtures.py (torch, transformers, safetensors, gptqmodel --no-deps):
    python tests/reference/make_gptq_models.py

Each folder is a LlamaForCausalLM checkpoint in the on-disk GPTQ format (hidden 128, ffn 256,
2 layers, 4 heads / 2 KV heads, vocab 256): fp16 embeddings, norms and lm_head, and every
q/k/v/o/gate/up/down projection as qweight/qzeros/scales/g_idx packed by GPTQModel's code
(make_gptq_fixtures.random_layer). Act-order layers share one channel order per input, as
GPTQ's does (q/k/v read one input, gate/up another), and o/down have their own.
  llama_w2g64_v2      EfficientQAT -GPTQ export style: 2-bit, group 64, asymmetric, gptq_v2,
                      config.json quantization_config as GPTQModel writes it
  llama_w4g32_v1_act  AutoGPTQ style: 4-bit, group 32, symmetric, v1, act-order, the config
                      only in quantize_config.json
  llama_w3g128_v2_act 3-bit, group 128 (per-channel where K = 128), asymmetric, v2, act-order
The reference: GPTQModel's dequantizer (convert_gptq_file) turns the file into float32
weights and transformers' LlamaForCausalLM runs them in float32 (what its GPTQ torch kernel
computes, without fp16 rounding). reference.npz holds `prompt_ids` and `logits` (float32,
one row per prompt position). The tokenizer files (gptq_tokenizer.py) let Engine.load run the
folders; the logits are over token ids.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from gptq_tokenizer import write_tokenizer
from gptqmodel.utils.model_dequant import convert_gptq_file
from make_gptq_fixtures import random_layer
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = Path(__file__).resolve().parents[1] / "data" / "gptq" / "models"
DIMS = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}
DIMS |= {"num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 128}
SCALES = {2: (0.02, 0.05), 3: (0.01, 0.03), 4: (0.005, 0.015)}
N_PROMPT = 24

# name: (bits, group, sym, checkpoint_format, act-order, config in config.json)
VARIANTS = {
    "llama_w2g64_v2": (2, 64, False, "gptq_v2", False, True),
    "llama_w4g32_v1_act": (4, 32, True, "gptq", True, False),
    "llama_w3g128_v2_act": (3, 128, False, "gptq_v2", True, True),
}


def quant_config(bits: int, group: int, sym: bool, fmt: str, act: bool, gptqmodel_style: bool) -> dict:
    config = {"bits": bits, "group_size": group, "desc_act": act, "sym": sym, "true_sequential": True}
    config |= {"damp_percent": 0.01, "static_groups": False, "quant_method": "gptq", "checkpoint_format": fmt}
    if gptqmodel_style:
        config |= {"format": fmt, "pack_dtype": "int32", "meta": {"quantizer": ["gptqmodel:7.7.0"]}}
    else:
        config |= {"model_name_or_path": None, "model_file_base_name": "model"}
    return config


def _shared_order(g_idx: torch.Tensor, order: np.ndarray | None) -> torch.Tensor:
    """g_idx for another matrix reading the same input: the same channel order as the first."""
    if order is None:
        return g_idx
    group = int((g_idx == 0).sum())
    shared = np.empty(len(order), dtype=np.int32)
    shared[order] = np.arange(len(order)) // group
    return torch.from_numpy(shared)


def write_model(name: str, seed: int) -> None:
    bits, group, sym, fmt, act, in_config = VARIANTS[name]
    rng = np.random.default_rng(seed)
    cfg = LlamaConfig(**DIMS, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, torch_dtype="float16")
    h, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    kv = h // cfg.num_attention_heads * cfg.num_key_value_heads
    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": torch.from_numpy(rng.standard_normal((v, h)).astype(np.float16)),
        "model.norm.weight": torch.from_numpy((1 + 0.1 * rng.standard_normal(h)).astype(np.float16)),
        "lm_head.weight": torch.from_numpy((0.05 * rng.standard_normal((v, h))).astype(np.float16)),
    }
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[p + norm + ".weight"] = torch.from_numpy((1 + 0.1 * rng.standard_normal(h)).astype(np.float16))
        # projections grouped by the input they read: one act-order channel order per input
        for inputs in (
            [("self_attn.q_proj", h, h), ("self_attn.k_proj", kv, h), ("self_attn.v_proj", kv, h)],
            [("self_attn.o_proj", h, h)],
            [("mlp.gate_proj", f, h), ("mlp.up_proj", f, h)],
            [("mlp.down_proj", h, f)],
        ):
            order = None
            for proj, n_out, k_in in inputs:
                gptq = random_layer(rng, bits, group, sym, fmt, act, k_in, n_out, scale_range=SCALES[bits])
                if order is None:
                    order = np.argsort(gptq["g_idx"].numpy(), kind="stable") if act else None
                    first = gptq["g_idx"]
                else:
                    gptq["g_idx"] = _shared_order(first, order)
                for part, tensor in gptq.items():
                    tensors[f"{p}{proj}.{part}"] = tensor

    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    qcfg = quant_config(bits, group, sym, fmt, act, in_config)
    config = cfg.to_dict() | {"architectures": ["LlamaForCausalLM"]}
    # what transformers 4.x wrote, as the published GPTQ / EfficientQAT checkpoints have it
    config |= {"rope_theta": cfg.rope_parameters["rope_theta"], "torch_dtype": "float16"}
    if in_config:
        config["quantization_config"] = qcfg
    else:
        (folder / "quantize_config.json").write_text(json.dumps(qcfg, indent=2) + "\n")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_tokenizer(folder)

    state = convert_gptq_file(folder / "model.safetensors", torch.float32, qcfg, "cpu")
    model = LlamaForCausalLM(LlamaConfig(**DIMS, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False))
    model.load_state_dict(state, strict=True)
    model = model.float().eval()
    prompt = rng.integers(0, v, size=N_PROMPT)
    with torch.no_grad():
        logits = model(torch.from_numpy(prompt)[None]).logits[0].numpy().astype(np.float32)
    np.savez_compressed(folder / "reference.npz", prompt_ids=prompt.astype(np.int32), logits=logits)


def main() -> int:
    torch.manual_seed(0)
    for seed, name in enumerate(VARIANTS, start=1000):
        write_model(name, seed)
    print(f"wrote {len(VARIANTS)} models to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
