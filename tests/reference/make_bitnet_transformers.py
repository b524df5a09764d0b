"""Writes a tiny BitNet b1.58 2B-4T-style model and transformers' logits for it, the
independent reference of tests/runtime/test_bitnet_transformers.py. Needs torch and a
transformers with BitNetForCausalLM (5.25 used); CI only reads what it wrote:

    TORCHDYNAMO_DISABLE=1 python -m tests.reference.make_bitnet_transformers tests/data/bitnet_tiny

Into that folder:
  * hf/: config.json + model.safetensors the way microsoft/bitnet-b1.58-2B-4T ships
    them (packed uint8 [out/4, in] projections, weight_scale [1], quantization_config
    linear_class "autobitlinear": W = t · weight_scale), for a safetensors loader;
  * model.gguf: the same weights as bitnet.cpp's GGUF names them, arch bitnet-b1.58,
    projections TQ2_0 (d = the tensor's γ in every block), norms F32, embedding F32;
  * reference.npz: tokens (n,) and transformers' float32 logits (n, vocab).

The weights are chosen so both files hold them exactly: ternary codes with an
fp16-representable γ per tensor, and an embedding on a 4-bit grid per 64-wide group
(with both ends of the grid in every group), which the runtime's 4-bit packing of the
tied output layer reproduces exactly. What remains to compare is the graph and the
W1.58A8 arithmetic: relu², sub-norms, neox RoPE at θ = 500000, GQA, tied embeddings.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, THETA = 256, 512, 2, 4, 2, 48, 500000.0
PROJ = {  # GGUF name -> HF module path
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
NORMS = {  # GGUF name -> HF name
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_sub_norm": "self_attn.attn_sub_norm",
    "ffn_sub_norm": "mlp.ffn_sub_norm",
}


def weights(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """GGUF tensor name -> float32 array (numpy shape), and each projection's γ."""
    rng = np.random.default_rng(seed)
    head_dim = DIM // HEADS
    shapes = {
        "attn_q": (HEADS * head_dim, DIM),
        "attn_k": (KV_HEADS * head_dim, DIM),
        "attn_v": (KV_HEADS * head_dim, DIM),
        "attn_output": (DIM, HEADS * head_dim),
        "ffn_gate": (HIDDEN, DIM),
        "ffn_up": (HIDDEN, DIM),
        "ffn_down": (DIM, HIDDEN),
    }
    out: dict[str, np.ndarray] = {}
    gammas: dict[str, float] = {}
    # embedding: per 64-wide group (the plan's 4-bit group) s·(q − 8), q in 0..15 with
    # 0 and 15 both present
    q = rng.integers(0, 16, (VOCAB, DIM // 64, 64))
    q[:, :, 0], q[:, :, 1] = 0, 15
    s = np.float16(rng.uniform(0.02, 0.06, (VOCAB, DIM // 64, 1))).astype(np.float32)
    out["token_embd.weight"] = (s * (q - 8)).reshape(VOCAB, DIM).astype(np.float32)
    out["output_norm.weight"] = (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
    for layer in range(LAYERS):
        for role, size in (("attn_norm", DIM), ("ffn_norm", DIM), ("attn_sub_norm", DIM), ("ffn_sub_norm", HIDDEN)):
            out[f"blk.{layer}.{role}.weight"] = (1 + 0.1 * rng.standard_normal(size)).astype(np.float32)
        for role, shape in shapes.items():
            name = f"blk.{layer}.{role}.weight"
            gammas[name] = float(np.float16(rng.uniform(0.5, 1.5) / np.sqrt(shape[1])))
            out[name] = rng.integers(-1, 2, shape).astype(np.float32)  # ternary codes t; W = t·γ
    return out, gammas


def write_gguf(path: str, w: dict[str, np.ndarray], gammas: dict[str, float]) -> None:
    import dataclasses

    from tests.runtime.gguf_writer import GGUFWriter
    from tmac_core.loading.gguf import GGMLType, ValueType
    from tmac_core.plan import gguf_shapes
    from tmac_core.synth import BITNET_2B4T_CONFIG, encode_tq2_0

    cfg = dataclasses.replace(
        BITNET_2B4T_CONFIG,
        dim=DIM,
        hidden_dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=HEADS,
        n_kv_heads=KV_HEADS,
        head_dim=DIM // HEADS,
        vocab_size=VOCAB,
        n_ctx_train=128,
    )
    p = "bitnet-b1.58."
    g = GGUFWriter()
    g.add_string("general.architecture", "bitnet-b1.58")
    g.add_string("general.name", "tiny bitnet-b1.58 (tests/reference/make_bitnet_transformers.py)")
    for key, value in (
        ("block_count", LAYERS),
        ("context_length", 128),
        ("embedding_length", DIM),
        ("feed_forward_length", HIDDEN),
        ("attention.head_count", HEADS),
        ("attention.head_count_kv", KV_HEADS),
        ("rope.dimension_count", DIM // HEADS),
        ("vocab_size", VOCAB),
    ):
        g.add_uint32(p + key, value)
    g.add_float32(p + "rope.freq_base", THETA)
    g.add_float32(p + "attention.layer_norm_rms_epsilon", 1e-5)
    g.add_string("tokenizer.ggml.model", "gpt2")
    g.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(VOCAB)], ValueType.STRING)
    for name in gguf_shapes(cfg):  # file order
        x = w[name]
        if name in gammas:
            g.add_raw_tensor(
                name, encode_tq2_0(x.reshape(-1).astype(np.int8), gammas[name]), GGMLType.TQ2_0, x.shape[::-1]
            )
        else:
            g.add_tensor(name, x, GGMLType.F32)
    g.write(path)


def transformers_logits(folder: str, w: dict[str, np.ndarray], gammas: dict[str, float], tokens: np.ndarray):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    from transformers.integrations.bitnet import pack_weights

    hf = os.path.join(folder, "hf")
    os.makedirs(hf, exist_ok=True)
    config = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "vocab_size": VOCAB,
        "hidden_size": DIM,
        "intermediate_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "hidden_act": "relu2",
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": THETA,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "quantization_config": {
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "offline",
        },
    }
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    state = {
        "model.embed_tokens.weight": torch.from_numpy(w["token_embd.weight"]),
        "model.norm.weight": torch.from_numpy(w["output_norm.weight"]),
    }
    for layer in range(LAYERS):
        for role, hf_name in NORMS.items():
            state[f"model.layers.{layer}.{hf_name}.weight"] = torch.from_numpy(w[f"blk.{layer}.{role}.weight"])
        for role, hf_name in PROJ.items():
            name = f"blk.{layer}.{role}.weight"
            t = torch.from_numpy(w[name].astype(np.int8)).to(torch.int32)
            state[f"model.layers.{layer}.{hf_name}.weight"] = pack_weights(t.clone())
            state[f"model.layers.{layer}.{hf_name}.weight_scale"] = torch.tensor([gammas[name]], dtype=torch.float32)
    save_file(state, os.path.join(hf, "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens)[None]).logits[0].float().numpy()


def main(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    w, gammas = weights()
    tokens = np.random.default_rng(1).integers(0, VOCAB, 20).astype(np.int64)
    write_gguf(os.path.join(folder, "model.gguf"), w, gammas)
    logits = transformers_logits(folder, w, gammas, tokens)
    np.savez_compressed(os.path.join(folder, "reference.npz"), tokens=tokens, logits=logits.astype(np.float32))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/bitnet_tiny")
