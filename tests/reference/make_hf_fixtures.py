"""Write the tiny Hugging Face model folders under tests/data/hf/ and transformers' logits for them.

Run with a Python that has torch (CPU) and transformers, from the repository root:

    /path/to/venv/bin/python tests/reference/make_hf_fixtures.py

Each folder is what `save_pretrained` writes for a real checkpoint, at toy size:
- `llama/`: LlamaForCausalLM, bf16, one model.safetensors, untied lm_head, Llama-3 RoPE
  scaling, a Llama-3-style byte-level BPE tokenizer.json with <|begin_of_text|> added by
  the post-processor, the Llama-3 chat template, two stop tokens in generation_config.json.
- `qwen2/`: Qwen2ForCausalLM, fp16, two shards and model.safetensors.index.json, q/k/v
  biases, tied embeddings, a ChatML template, and an embedding padded past the tokenizer
  (320 rows for 303 tokens), as Qwen2's real checkpoints are.

The weights lie on the grid our 4-bit quantizer represents exactly (per 64- or 32-wide
group along K: w = s·(q − z), s a power of two, integer q in 0..15 and z; tensors the bits=2
preset keeps at 2 bits use q in 0..3). So the runtime's packed weights equal the checkpoint's
up to fp16 rounding of scales, and what remains between our logits and transformers' is
the runtime's own arithmetic (int8 activation tables, fp16 KV cache). The rule of which
tensor gets 2 bits is tmac_core/plan.py's layer_bits, restated here because this script
runs outside the project's environment.

Outputs per folder: the checkpoint files, `reference.npz` with `prompt_ids` (the chat
template applied by transformers' tokenizer to MESSAGES), `logits` (float32, one row per
prompt position) and `encodings` (token ids of ENCODE_TEXTS, concatenated, with `encoding_lengths`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "hf"
TEXT = (ROOT / "tests" / "data" / "alice_ch1-2.txt").read_text(encoding="utf-8")
MESSAGES = [
    {"role": "system", "content": "You are a helpful rabbit."},
    {"role": "user", "content": "Where did Alice go, and why?"},
]
ENCODE_TEXTS = [
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "  two spaces, tabs\tand\nnew lines\n\n  end ",
    "numbers 12345 and 3.14159, caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f600!",
    "It's, don't, we'LL, THEY'RE",
]
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def bpe_tokenizer(regex: str, specials: list[str], bos: str | None, nfc: bool) -> Tokenizer:
    """A byte-level BPE of 300 learned tokens (256 bytes + merges) plus `specials`."""
    tk = Tokenizer(models.BPE(ignore_merges=bos is not None))
    if nfc:
        tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(TEXT.splitlines(), trainer)
    tk.add_special_tokens(specials)
    if bos is not None:
        tk.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tk.token_to_id(bos))]
                ),
            ]
        )
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    return tk


def layer_bits(role: str, layer: int, n_layers: int) -> int:
    """tmac_core/plan.py layer_bits at bits=2: these stay at 4 bits, the rest get 2."""
    return 4 if role in ("token_embd", "output", "attn_v") or layer in (0, n_layers - 1) else 2


def grid_matrix(rng: np.random.Generator, rows: int, cols: int, bits: int) -> np.ndarray:
    """(rows, cols) weights s·(q − z) per group along cols, each group using codes 0 and qmax."""
    group = 64 if cols % 64 == 0 else 32
    qmax = (1 << bits) - 1
    q = rng.integers(0, qmax + 1, size=(rows, cols // group, group))
    q[:, :, 0], q[:, :, 1] = 0, qmax
    q = rng.permuted(q, axis=2)
    s = 2.0 ** -rng.integers(4, 7, size=(rows, cols // group, 1))
    z = rng.integers(0, qmax + 1, size=(rows, cols // group, 1))
    return (s * (q - z)).reshape(rows, cols).astype(np.float32)


def weights(cfg: dict, rng: np.random.Generator, arch: str) -> dict[str, np.ndarray]:
    dim, hidden, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = dim // cfg["num_attention_heads"]
    q_dim, kv_dim = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    vocab = cfg["vocab_size"]
    out = {"model.embed_tokens.weight": grid_matrix(rng, vocab, dim, 4)}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = grid_matrix(rng, vocab, dim, 4)
    out["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
    shapes = {
        ("self_attn.q_proj", "attn_q"): (q_dim, dim),
        ("self_attn.k_proj", "attn_k"): (kv_dim, dim),
        ("self_attn.v_proj", "attn_v"): (kv_dim, dim),
        ("self_attn.o_proj", "attn_output"): (dim, q_dim),
        ("mlp.gate_proj", "ffn_gate"): (hidden, dim),
        ("mlp.up_proj", "ffn_up"): (hidden, dim),
        ("mlp.down_proj", "ffn_down"): (dim, hidden),
    }
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
        out[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
        for (hf, role), (rows, cols) in shapes.items():
            out[p + hf + ".weight"] = grid_matrix(rng, rows, cols, layer_bits(role, i, n_layers))
        if arch == "qwen2":
            for hf, n in (("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)):
                out[p + f"self_attn.{hf}.bias"] = (0.3 * rng.standard_normal(n)).astype(np.float32)
    return out


def write_folder(
    name: str, config: dict, tk: Tokenizer, tok_config: dict, gen_config: dict, dtype: str, shards: int
) -> None:
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(11 if name == "llama" else 12)
    tensors = weights(config, rng, config["model_type"])
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    # numpy has no bfloat16: round through torch, then store the raw 16-bit patterns
    as_dtype = {k: torch.from_numpy(v).to(torch_dtype) for k, v in tensors.items()}
    from safetensors.torch import save_file as save_torch

    names = list(as_dtype)
    if shards == 1:
        save_torch(as_dtype, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        parts = np.array_split(np.arange(len(names)), shards)
        weight_map = {}
        for j, idx in enumerate(parts):
            file = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
            part = {names[i]: as_dtype[names[i]] for i in idx}
            save_torch(part, str(folder / file), metadata={"format": "pt"})
            weight_map.update({n: file for n in part})
        total = sum(t.numel() * t.element_size() for t in as_dtype.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = {**config, "torch_dtype": dtype}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(gen_config, indent=2) + "\n")
    record_reference(folder)


def record_reference(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
    encodings = [tok.encode(t, add_special_tokens=False) for t in ENCODE_TEXTS]
    np.savez_compressed(
        folder / "reference.npz",
        prompt_ids=np.array(ids, np.int32),
        logits=logits,
        encodings=np.array([i for e in encodings for i in e], np.int32),
        encoding_lengths=np.array([len(e) for e in encodings], np.int32),
    )
    print(folder.name, "prompt", len(ids), "tokens; logits", logits.shape, "range", float(np.abs(logits).max()))


def main() -> None:
    llama_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tk = bpe_tokenizer(LLAMA3_REGEX, llama_specials, "<|begin_of_text|>", nfc=False)
    n = tk.get_vocab_size()
    llama = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": n,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": tk.token_to_id("<|begin_of_text|>"),
        "eos_token_id": tk.token_to_id("<|eot_id|>"),
    }
    write_folder(
        "llama",
        llama,
        tk,
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "chat_template": LLAMA3_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 256,
            "clean_up_tokenization_spaces": False,
        },
        {
            "bos_token_id": llama["bos_token_id"],
            "eos_token_id": [tk.token_to_id("<|end_of_text|>"), llama["eos_token_id"]],
        },
        "bfloat16",
        shards=1,
    )
    qwen_specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = bpe_tokenizer(QWEN2_REGEX, qwen_specials, None, nfc=True)
    qwen = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 320,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "bos_token_id": tk.token_to_id("<|endoftext|>"),
        "eos_token_id": tk.token_to_id("<|im_end|>"),
    }
    write_folder(
        "qwen2",
        qwen,
        tk,
        {
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": CHATML_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 256,
            "clean_up_tokenization_spaces": False,
            "add_prefix_space": False,
            "errors": "replace",
        },
        {"bos_token_id": qwen["bos_token_id"], "eos_token_id": [qwen["eos_token_id"], qwen["bos_token_id"]]},
        "float16",
        shards=2,
    )


if __name__ == "__main__":
    sys.exit(main())
