"""Writes tests/data/bitnet_llamacpp: a tiny 1bitLLM/bitnet_b1_58-style float folder converted to
TQ2_0 and TQ1_0 by llama.cpp's OWN converter, and llama.cpp's logits on those files — a reference
independent of our GGUF writer, our ternarization and our graph
(tests/runtime/test_bitnet_llamacpp_converter.py). CI only reads what this writes.

Regenerate (the committed files: llama-cpp-python 0.3.36, its vendored llama.cpp 0c1e570):

    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/llref
    tar xzf /tmp/llref/llama_cpp_python-0.3.36.tar.gz -C /tmp/llref
    python3 -m venv /tmp/llref-venv      # the converter's venv: torch never enters .venv
    /tmp/llref-venv/bin/pip install torch==2.13.0 numpy sentencepiece safetensors 'protobuf<5' \\
        transformers==4.57.6
    .venv/bin/python -m tests.reference.make_bitnet_llamacpp \\
        /tmp/llref/llama_cpp_python-0.3.36/vendor/llama.cpp /tmp/llref-venv/bin/python

The project's .venv runs this script: it needs numpy, sentencepiece (to train the vocabulary) and
llama-cpp-python 0.3.36 (`import llama_cpp`, the same llama.cpp as the converter) to run the
GGUFs. The converter runs in the other venv, on the vendored tree as shipped (its own gguf-py).

Into the fixture folder:
  * tokenizer.model: a SentencePiece BPE vocabulary of VOCAB pieces (byte fallback) trained on
    tests/data/alice_ch1-2.txt; the converter requires one for arch "bitnet";
  * model-tq2_0.gguf, model-tq1_0.gguf: convert_hf_to_gguf.py --outtype tq2_0 / tq1_0 of the
    folder `write_folder` builds (float32 latent weights, seed 0; not committed, 5 MB: the
    test rebuilds it and checks its sha256);
  * reference.npz: `prompt` (llama.cpp's tokenization of PROMPT, with BOS), `tokens` (the prompt
    and llama.cpp's GREEDY_STEPS greedy tokens, the same on both files), `logits_tq2_0` and
    `logits_tq1_0` (len(tokens), VOCAB) float32: llama.cpp's logits at every position of that
    greedy run, the prompt in one batch, then one token per call (f32 K/V cache, no flash
    attention, so llama.cpp's own fp16 cache rounding is not in the way), `sha256_folder`,
    `sha256_tq2_0`, `sha256_tq1_0`, `peer_version`;
  * README.md: how these were made, the converter's version.

The folder: hidden 256, FFN 512 (multiples of 256, else the converter silently writes F16), 2
layers, 4 heads MHA, θ = 10000, SiLU, sub-norms `inner_attn_ln` / `ffn_layernorm`, tied
embedding. Projections are random normal latent weights, which both sides ternarize with the
absmean scale. The embedding is chosen to be held exactly by the converter's F16 and by our
runtime's 4-bit tied output layer: per 64-wide group s·(q − 8), q in 0..15 with both ends
present, s with 8 significant bits (so every product has at most 11 and is fp16-exact).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "bitnet_llamacpp"
CORPUS = DATA / "alice_ch1-2.txt"
DIM, HIDDEN, LAYERS, HEADS, VOCAB, THETA, CTX = 256, 512, 2, 4, 384, 10000.0, 128
PROMPT = "Alice was beginning to get very tired of sitting"
GREEDY_STEPS = 24
N_CTX = 64  # llama.cpp's context for the reference run; our tests use the same positions
OUTTYPES = ("tq2_0", "tq1_0")
PEER_VERSION = "llama-cpp-python 0.3.36 (vendored llama.cpp 0c1e570)"
GGML_TYPE_F32 = 0  # llama.cpp's K/V cache type


def config() -> dict[str, object]:
    """config.json as 1bitLLM/bitnet_b1_58-large writes it, at tiny sizes."""
    return {
        "architectures": ["BitnetForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": DIM,
        "intermediate_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "max_position_embeddings": CTX,
        "rms_norm_eps": 1e-5,
        "rope_theta": THETA,
        "tie_word_embeddings": True,
        "vocab_size": VOCAB,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "input_bits": 8,
        "weight_bits": 1,
        "torch_dtype": "float32",
    }


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The folder's float32 tensors by Hugging Face name (1bitLLM's names)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 16, (VOCAB, DIM // 64, 64))
    q[:, :, 0], q[:, :, 1] = 0, 15
    s = rng.integers(80, 241, (VOCAB, DIM // 64, 1)) * 2.0**-12  # 0.020-0.059, 8 significant bits
    t = {
        "model.embed_tokens.weight": (s * (q - 8)).reshape(VOCAB, DIM).astype(np.float32),
        "model.norm.weight": (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32),
    }
    shapes = {
        "self_attn.q_proj": (DIM, DIM),
        "self_attn.k_proj": (DIM, DIM),
        "self_attn.v_proj": (DIM, DIM),
        "self_attn.o_proj": (DIM, DIM),
        "mlp.gate_proj": (HIDDEN, DIM),
        "mlp.up_proj": (HIDDEN, DIM),
        "mlp.down_proj": (DIM, HIDDEN),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for norm, size in (
            ("input_layernorm", DIM),
            ("post_attention_layernorm", DIM),
            ("self_attn.inner_attn_ln", DIM),
            ("mlp.ffn_layernorm", HIDDEN),
        ):
            t[p + norm + ".weight"] = (1 + 0.1 * rng.standard_normal(size)).astype(np.float32)
        for proj, shape in shapes.items():
            t[p + proj + ".weight"] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    return t


def write_folder(folder: Path, tokenizer_model: Path = FIXTURE / "tokenizer.model", seed: int = 0) -> str:
    """Write the float folder (config.json, model.safetensors, tokenizer.model); return the
    sha256 of its model.safetensors."""
    from tests.runtime.hf_folder import st_bytes

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config(), indent=1))
    data = st_bytes(tensors(seed))
    (folder / "model.safetensors").write_bytes(data)
    shutil.copyfile(tokenizer_model, folder / "tokenizer.model")
    return hashlib.sha256(data).hexdigest()


def train_tokenizer(path: Path) -> None:
    """A SentencePiece BPE model of VOCAB pieces (unk 0, bos 1, eos 2, byte fallback)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.read_text(encoding="utf-8").splitlines()),
        model_writer=out,
        model_type="bpe",
        vocab_size=VOCAB,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",  # no 240 kB NFKC table in the file
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    path.write_bytes(out.getvalue())


def convert(llama_cpp_tree: Path, python: str, folder: Path, outtype: str, outfile: Path) -> None:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # leaves the vendored tree as shipped
    env.pop("NO_LOCAL_GGUF", None)  # the tree's own gguf-py, the converter's version
    subprocess.run(
        [python, str(llama_cpp_tree / "convert_hf_to_gguf.py"), str(folder), "--outtype", outtype]
        + ["--outfile", str(outfile)],
        check=True,
        env=env,
    )


def peer_logits(path: Path, prompt: list[int], greedy_steps: int) -> tuple[list[int], np.ndarray]:
    """llama.cpp's tokens (prompt + greedy continuation) and its logits at every position."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=N_CTX,
        n_batch=N_CTX,
        logits_all=True,
        n_threads=2,
        verbose=False,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        flash_attn=False,
    )
    try:
        tokens = list(prompt)
        llm.eval(tokens)
        for _ in range(greedy_steps):
            tokens.append(int(np.argmax(llm.scores[len(tokens) - 1])))
            llm.eval(tokens[-1:])
        return tokens, np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def peer_tokenize(path: Path, text: str) -> list[int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode(), add_bos=True))
    finally:
        llm.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(llama_cpp_tree: Path, converter_python: str) -> None:
    import llama_cpp

    if llama_cpp.__version__ != "0.3.36":
        sys.exit(f"llama-cpp-python {llama_cpp.__version__} is installed; the fixture is made with 0.3.36")
    FIXTURE.mkdir(exist_ok=True)
    train_tokenizer(FIXTURE / "tokenizer.model")
    results: dict[str, object] = {"peer_version": PEER_VERSION}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bitnet_b1_58-tiny"
        results["sha256_folder"] = write_folder(folder)
        for outtype in OUTTYPES:
            convert(llama_cpp_tree, converter_python, folder, outtype, FIXTURE / f"model-{outtype}.gguf")
    prompt = peer_tokenize(FIXTURE / "model-tq2_0.gguf", PROMPT)
    runs = {outtype: peer_logits(FIXTURE / f"model-{outtype}.gguf", prompt, GREEDY_STEPS) for outtype in OUTTYPES}
    tokens = runs["tq2_0"][0]
    if any(run[0] != tokens for run in runs.values()):
        sys.exit("llama.cpp's greedy tokens differ between the TQ2_0 and TQ1_0 files")
    results |= {"prompt": np.array(prompt, np.int32), "tokens": np.array(tokens, np.int32)}
    for outtype, (_, logits) in runs.items():
        results[f"logits_{outtype}"] = logits
        results[f"sha256_{outtype}"] = sha256(FIXTURE / f"model-{outtype}.gguf")
    np.savez_compressed(FIXTURE / "reference.npz", **results)  # type: ignore[arg-type]
    print(f"wrote {FIXTURE}: {len(tokens)} tokens, prompt {prompt}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2])
