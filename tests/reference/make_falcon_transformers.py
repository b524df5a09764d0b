"""Writes a tiny Falcon3-1.58bit-style model folder and transformers' logits for it, the
independent reference of tests/runtime/test_falcon_folder.py. Needs torch, safetensors and
a transformers with the BitNet quantizer (5.25 used); CI only reads what it wrote:

    TORCHDYNAMO_DISABLE=1 python -m tests.reference.make_falcon_transformers tests/data/falcon_tiny

Into that folder:
  * hf/: config.json + model.safetensors the way tiiuae/Falcon3-*-Instruct-1.58bit ship
    them: LlamaForCausalLM, quantization_config {quant_method "bitnet",
    modules_to_not_convert ["lm_head"]} (no linear_class: transformers' BitLinear, which
    divides, W = t / weight_scale), every q/k/v/o/gate/up/down projection packed uint8
    [out/4, in] (4 row planes a byte) with a bf16 weight_scale [1] = 1/γ; embedding, norms
    and an untied lm_head in bf16; head_dim given, GQA, θ = 1000042, eps 1e-6;
  * reference.npz: tokens (n,), transformers' float32 logits (n, vocab) for them, and
    `greedy` (32,): the tokens transformers' greedy decoding appends to `tokens`, with
    `margins` (32,): each greedy step's top-2 logit gap.

The embedding and the lm_head sit on a 4-bit grid per 64-wide group (both ends of the grid
in every group, scales with a 4-bit mantissa: every value bf16-exact), which the runtime's
4-bit packing of those matrices reproduces exactly, so what the logits compare is the graph
and the W1.58A8 arithmetic: per-token absmax int8 before every BitLinear, the division by
weight_scale, rotate_half RoPE against our permuted rows.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB, THETA = 256, 512, 2, 2, 1, 128, 64, 1000042.0
N_CTX, N_PROMPT, N_GREEDY = 128, 20, 32
# The prompt's seed. Our exact mode sits 1 % of the logit range from transformers (its fp16 KV
# cache moves int8 roundings), so identical greedy tokens are a fair test only where no step is
# a near-tie, and most random prompts have one: of seeds 1..79, only 14, 30, 50 and 54 keep every
# step's top-2 margin above 2 % of the range, and 50 is the one whose continuation is not a
# single token repeated (a random tiny model soon loops).
PROMPT_SEED = 50
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
PROJ += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def grid_matrix(rng: np.random.Generator, rows: int) -> np.ndarray:
    """(rows, DIM) float32 s·(q − 8) per 64-wide group, q in 0..15 with 0 and 15 present,
    s = m·2^-8 with m in 8..15: every value has at most 8 significant bits (bf16-exact)."""
    q = rng.integers(0, 16, (rows, DIM // 64, 64))
    q[:, :, 0], q[:, :, 1] = 0, 15
    s = rng.integers(8, 16, (rows, DIM // 64, 1)) / 256.0
    return (s * (q - 8)).reshape(rows, DIM).astype(np.float32)


def weights(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """HF tensor name -> float32 array (ternary codes t for projections), and each
    projection's weight_scale (bf16-exact, the divisor: W = t / weight_scale)."""
    rng = np.random.default_rng(seed)
    shapes = {
        "self_attn.q_proj": (HEADS * HEAD_DIM, DIM),
        "self_attn.k_proj": (KV_HEADS * HEAD_DIM, DIM),
        "self_attn.v_proj": (KV_HEADS * HEAD_DIM, DIM),
        "self_attn.o_proj": (DIM, HEADS * HEAD_DIM),
        "mlp.gate_proj": (HIDDEN, DIM),
        "mlp.up_proj": (HIDDEN, DIM),
        "mlp.down_proj": (DIM, HIDDEN),
    }
    out = {"lm_head.weight": grid_matrix(rng, VOCAB), "model.norm.weight": _bf16(1 + 0.1 * rng.standard_normal(DIM))}
    scales: dict[str, float] = {}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}."
        out[p + "input_layernorm.weight"] = _bf16(1 + 0.1 * rng.standard_normal(DIM))
        out[p + "post_attention_layernorm.weight"] = _bf16(1 + 0.1 * rng.standard_normal(DIM))
        for module, shape in shapes.items():
            name = p + module + ".weight"
            out[name] = rng.integers(-1, 2, shape).astype(np.float32)
            # onebitllms' weight_scale = 1/mean|w|: about √K / 0.8 for unit-RMS latent weights
            scales[name] = float(_bf16(np.array(rng.uniform(0.7, 1.4) * np.sqrt(shape[1]))))
    embedding = grid_matrix(rng, VOCAB)
    norm = out["model.layers.0.input_layernorm.weight"]
    for row in range(VOCAB):
        while has_rounding_tie(embedding[row] * norm):
            embedding[row] = grid_matrix(rng, 1)[0]
    out["model.embed_tokens.weight"] = embedding
    return out, scales


def has_rounding_tie(x: np.ndarray) -> bool:
    """Whether the int8 quantization of x·c (any c > 0: the RMSNorm factor) puts a value
    exactly on a half level, 127·x/max|x| = k + ½, where fp32 (transformers) and exact
    arithmetic (the float64 reference) may round apart. Grid embeddings times coarse bf16
    norm weights (values with at most 8 + 8 significant bits: their products and the
    float64 ratio are exact enough to tell) make such ties common at layer 0."""
    twice = 254.0 * np.abs(x.astype(np.float64)) / np.abs(x).max()
    nearest = np.rint(twice)
    return bool((np.abs(twice - nearest) < 1e-9)[nearest % 2 == 1].any())


def _bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to bf16 (nearest even), as float32."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def config() -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "hidden_size": DIM,
        "intermediate_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": N_CTX,
        "rms_norm_eps": 1e-6,
        "rope_theta": THETA,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "is_bitnet_config": True,
        "bos_token_id": 1,
        "eos_token_id": 11,
        "torch_dtype": "bfloat16",
        "quantization_config": {"modules_to_not_convert": ["lm_head"], "quant_method": "bitnet"},
    }


def write_folder(folder: str) -> dict[str, np.ndarray]:
    import torch
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights

    w, scales = weights()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config(), f, indent=1)
    state = {}
    for name, x in w.items():
        if name in scales:
            t = torch.from_numpy(x.astype(np.int8)).to(torch.int32)
            state[name] = pack_weights(t.clone())
            state[name + "_scale"] = torch.tensor([scales[name]], dtype=torch.bfloat16)
        else:
            state[name] = torch.from_numpy(x).to(torch.bfloat16)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return w


def transformers_reference(folder: str, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """transformers' float32 logits for `tokens`, its greedy continuation of them and each
    greedy step's top-2 margin."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens)[None]).logits[0].float().numpy()
        out = model.generate(
            torch.from_numpy(tokens)[None], max_new_tokens=N_GREEDY, do_sample=False, eos_token_id=None
        )
        every = model(out).logits[0, len(tokens) - 1 : -1].float().numpy()
    top2 = np.sort(every, axis=1)[:, -2:]
    return logits, out[0, len(tokens) :].numpy(), top2[:, 1] - top2[:, 0]


def main(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    write_folder(os.path.join(folder, "hf"))
    tokens = np.random.default_rng(PROMPT_SEED).integers(0, VOCAB, N_PROMPT).astype(np.int64)
    logits, greedy, margins = transformers_reference(os.path.join(folder, "hf"), tokens)
    np.savez_compressed(
        os.path.join(folder, "reference.npz"),
        tokens=tokens,
        logits=logits.astype(np.float32),
        greedy=greedy,
        margins=margins.astype(np.float32),
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/falcon_tiny")
