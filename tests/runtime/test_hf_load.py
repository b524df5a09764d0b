"""Hugging Face model folders against transformers: the tiny Llama (bf16, one file) and Qwen2
(fp16, two shards) checkpoints of tests/data/hf, with the logits and token ids transformers
produced for them (tests/reference/make_hf_fixtures.py).

Two comparisons, because two things can be wrong:
- the mapping (names, Llama's q/k permutation, biases, tied and padded embeddings, RoPE
  scaling): the numpy reference forward pass (tests/reference/llama_numpy.py, float64) on the
  weights exactly as we packed them must equal transformers' logits. The checkpoints' weights lie
  on the quantizer's grid, so packing loses nothing and the bound is float rounding.
- the runtime: the Cython forward pass on the LUT kernels, whose int8 activation tables and fp16
  KV cache add their own error, against the same logits.
"""

from __future__ import annotations

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference import llama_numpy
from tests.reference.grid import steps_off
from tests.runtime.hf_folder import DATA, copy_model, read_json, write_json
from tmac_core import Engine, inspect_model
from tmac_core.errors import UnsupportedModelError
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.hf import HFModel, config_from_hf
from tmac_core.models import loader
from tmac_core.plan import output_source
from tmac_core.sampling import SamplingParams
from tmac_core.tokenizer.hf_files import tokenizer_from_folder

pytestmark = pytest.mark.engine

MODELS = ("llama", "qwen2")
MESSAGES = [  # tests/reference/make_hf_fixtures.py MESSAGES
    {"role": "system", "content": "You are a helpful rabbit."},
    {"role": "user", "content": "Where did Alice go, and why?"},
]
ENCODE_TEXTS = [  # tests/reference/make_hf_fixtures.py ENCODE_TEXTS
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "  two spaces, tabs\tand\nnew lines\n\n  end ",
    "numbers 12345 and 3.14159, caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f600!",
    "It's, don't, we'LL, THEY'RE",
]


def reference(name: str):
    return np.load(DATA / name / "reference.npz")


@pytest.fixture(scope="module", params=[(m, b) for m in MODELS for b in (4, 2)], ids=lambda p: f"{p[0]}-{p[1]}bit")
def loaded(request):
    name, bits = request.param
    model = HFModel.open(DATA / name)
    weights = loader.load_weights(model, model.config, bits)  # type: ignore[arg-type]
    yield name, bits, model, weights
    model.close()


def dense_weights(cfg, weights):
    dense = {
        k: (K.dequantize(v) if isinstance(v, K.PackedWeight) else np.asarray(v, np.float64))
        for k, v in weights.items()
        if k != "rope.inv_freq"
    }
    return dense


def test_packed_weights_equal_the_checkpoint(loaded):
    _, bits, model, weights = loaded
    out = output_source(model.config)
    worst = 0.0
    for name, w in weights.items():
        if isinstance(w, K.PackedWeight):
            exact = dequantize_tensor(model, name).reshape(w.m, w.k)  # type: ignore[arg-type]
            if name != out or bits == 2:
                worst = max(worst, float(np.abs(K.dequantize(w) - exact).max()))
                continue
            # the output layer at 4 bits runs at 6 (plan.PRESET_OUTPUT_BITS): within about half a
            # 6-bit step of each 64-wide group's range (measured 0.504, 0.530 tied: fp16 scales)
            assert w.bits == 6 and steps_off(K.dequantize(w), exact, 6) <= 0.55
    # 2 bits: every tensor packs exactly. 4 bits: the tensors on the 2-bit grid get a scale of
    # s/5, rounded to fp16 (measured 2.3e-5 on weights up to ~1).
    assert worst <= (0.0 if bits == 2 else 5e-5)


def test_mapping_matches_transformers(loaded):
    """numpy reference on our packed weights vs transformers: measured max |Δ| 1.3e-4 (llama)
    and 1.1e-4 (qwen2) at 4 bits, 5e-5 and 1.2e-5 at 2 bits, on logits up to 14 and 9.7. The
    output layer is the checkpoint's (at 4 bits ours is 6-bit, checked above): the mapping is
    what is compared here."""
    name, _, model, weights = loaded
    ref = reference(name)
    out = output_source(model.config)
    dense = dense_weights(model.config, weights)
    dense[out] = dequantize_tensor(model, out).reshape(dense[out].shape).astype(np.float64)  # type: ignore[arg-type]
    got = llama_numpy.forward(model.config, dense, ref["prompt_ids"], weights["rope.inv_freq"])
    assert np.abs(got - ref["logits"]).max() <= 1e-3


def test_without_the_qk_permutation_llama_would_be_wrong():
    """The negative control: the same Llama weights unpermuted are far from transformers."""
    ref = reference("llama")
    with HFModel.open(DATA / "llama") as model:
        cfg = model.config
        model._permuted.clear()
        raw = {n: dequantize_tensor(model, n).astype(np.float64) for n in model.tensors}  # type: ignore[arg-type]
        got = llama_numpy.forward(cfg, raw, ref["prompt_ids"], loader.inv_frequencies(cfg))
    assert np.abs(got - ref["logits"]).max() > 5  # measured 14.3, the size of the logits themselves


def runtime_logits(cfg, weights, tokens):
    rt = loader.build_runtime(cfg, weights, n_ctx=128)
    return np.concatenate(
        [np.array(rt.forward(tokens[i : i + 32], i, all_logits=True)) for i in range(0, len(tokens), 32)]
    )


def test_runtime_logits_match_transformers(loaded):
    """The LUT runtime vs transformers. Measured (every tier gives the same bits), llama / qwen2,
    logits up to 14.0 / 9.7: at 2 bits (weights exact) max |Δ| 7.2 / 7.0 % of the largest logit,
    per-position cosine min 0.9908 / 0.9933, mean 0.9998, top-1 agreement 100 / 98.4 %: the
    runtime's int8 activation tables and fp16 KV cache (the numpy reference on the same packed
    weights is within 1.3e-4 of transformers, test_mapping_matches_transformers). At 4 bits the
    6-bit output layer adds its rounding (qwen2's is also its tied input embedding): 6.9 / 12.0 %,
    cosine min 0.9903 / 0.9748, mean 0.9997 / 0.9992, agreement 94.2 / 95.3 %."""
    name, bits, model, weights = loaded
    ref = reference(name)
    got = runtime_logits(model.config, weights, ref["prompt_ids"].astype(np.int32))
    want = ref["logits"]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= (0.985 if bits == 2 else 0.97) and cos.mean() >= 0.999
    assert np.abs(got - want).max() <= (0.1 if bits == 2 else 0.13) * np.abs(want).max()
    agree = got.argmax(1) == want.argmax(1)
    assert agree.mean() >= (0.95 if bits == 2 else 0.93)
    # where the top pick differs, transformers ranks ours within a near-tie of its own
    rows = np.flatnonzero(~agree)
    assert (want[rows, want.argmax(1)[rows]] - want[rows, got.argmax(1)[rows]] <= 0.5).all()


@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_matches_transformers(name):
    ref = reference(name)
    with HFModel.open(DATA / name) as model:
        vocab = model.config.vocab_size
    tok = tokenizer_from_folder(DATA / name, vocab)
    assert tok.vocab_size == vocab  # qwen2: 303 tokens padded to the embedding's 320
    assert not tok.warnings
    ids, rendered = tok.apply_chat_template(MESSAGES)
    assert rendered.notice is None  # the folder's own template, not the fallback
    assert ids == ref["prompt_ids"].tolist()
    expected = np.split(ref["encodings"], np.cumsum(ref["encoding_lengths"])[:-1])
    for text, want in zip(ENCODE_TEXTS, expected):
        assert tok.encode(text, allow_special=False) == want.tolist()
        assert tok.decode(want.tolist()) == text


def test_special_tokens_and_stop_ids_come_from_the_config_files():
    llama = tokenizer_from_folder(DATA / "llama", 305)
    assert llama.pre == "llama3" and llama.add_bos and llama.tokens[llama.bos_id] == "<|begin_of_text|>"
    assert {llama.tokens[i] for i in llama.stop_ids} == {"<|eot_id|>", "<|end_of_text|>"}  # generation_config
    qwen = tokenizer_from_folder(DATA / "qwen2", 320)
    assert qwen.pre == "qwen2" and not qwen.add_bos
    assert {qwen.tokens[i] for i in qwen.stop_ids} == {"<|im_end|>", "<|endoftext|>"}
    # typed text never becomes a control token
    assert qwen.encode("<|im_end|>", allow_special=False) != [qwen.special_tokens["<|im_end|>"]]


def test_sentencepiece_tokenizer_model(tmp_path):
    """A folder with tokenizer.model only (Llama-2 style): the same ids as sentencepiece itself."""
    import io

    import sentencepiece as spm

    text = (DATA.parent / "alice_ch1-2.txt").read_text(encoding="utf-8").splitlines()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=buf,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        minloglevel=2,
    )
    (tmp_path / "tokenizer.model").write_bytes(buf.getvalue())
    # Llama-2 repos also ship a tokenizer.json that is not byte-level: tokenizer.model is read instead
    llama2_json = {"model": {"type": "BPE", "byte_fallback": True, "vocab": {"<unk>": 0}, "merges": []}}
    llama2_json["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"}
    write_json(tmp_path / "tokenizer.json", llama2_json)
    (tmp_path / "tokenizer_config.json").write_text(
        '{"added_tokens_decoder": {"400": {"content": "<pad>", "special": true}}}'
    )
    tok = tokenizer_from_folder(tmp_path, 416)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert tok.model == "llama" and tok.vocab_size == 416 and tok.tokens[400] == "<pad>"
    for line in ["Alice was beginning to get very tired", "Down, down, down. 42 caf\u00e9 \u65e5\u672c"]:
        assert tok.encode(line, allow_special=False, add_special=True) == [1, *sp.encode(line)]
        assert tok.decode(sp.encode(line)) == sp.decode(sp.encode(line))


@pytest.mark.parametrize("name", MODELS)
def test_the_transformers_5_config_layout_reads_the_same(tmp_path, name):
    """transformers 5 saves rope_theta and rope_scaling inside `rope_parameters`, and `layer_types`."""
    folder = copy_model(tmp_path, name)
    data = read_json(folder / "config.json")
    rope = {"rope_theta": data.pop("rope_theta"), "rope_type": "default", **(data.pop("rope_scaling", None) or {})}
    data.update(rope_parameters=rope, layer_types=["full_attention"] * data["num_hidden_layers"])
    write_json(folder / "config.json", data)
    with HFModel.open(DATA / name) as model:
        assert config_from_hf(data, "config.json") == model.config
    data["layer_types"][1] = "sliding_attention"
    with pytest.raises(UnsupportedModelError, match="full attention"):
        config_from_hf(data, "config.json")


@pytest.mark.parametrize("name", MODELS)
def test_inspect_model_summarises_a_folder(name):
    summary = inspect_model(DATA / name)
    assert summary.config.arch == name and summary.gguf_arch == name
    assert summary.file_type == ("BF16" if name == "llama" else "F16")
    assert summary.n_params > 0 and summary.file_size > 0
    assert "blk.0.attn_q.weight" in summary.tensor_types


def test_engine_loads_a_folder_chats_and_reuses_its_cache(tmp_path):
    folder = copy_model(tmp_path, "llama")
    cache = tmp_path / "cache"
    engine = Engine.load(folder, bits=2, n_ctx=128, cache_dir=cache)
    try:
        assert engine.info.cache_hit is False and engine.info.arch == "llama" and engine.info.bits == 2
        assert engine.info.chat_template == "model"
        ids, _ = engine.render(MESSAGES)
        assert ids == reference("llama")["prompt_ids"].tolist()
        chunks = list(engine.stream(MESSAGES, SamplingParams(temperature=0.0, max_tokens=6)))
        assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].generated_tokens >= 1
        first = engine.forward(ids, 0)
    finally:
        engine.close()
    again = Engine.load(folder, bits=2, n_ctx=128, cache_dir=cache)
    try:
        assert again.info.cache_hit is True
        assert np.array_equal(again.forward(ids, 0), first)
    finally:
        again.close()
    # an edited weight file is a different model: a cache miss, not stale weights
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-2:] = b"\x80\x3f"  # the last bf16 of the file becomes 1.0
    (folder / "model.safetensors").write_bytes(bytes(data))
    third = Engine.load(folder, bits=2, n_ctx=128, cache_dir=cache)
    try:
        assert third.info.cache_hit is False
    finally:
        third.close()


def test_a_real_vocabulary_in_tokenizer_json_tokenizes_like_its_gguf_and_like_tokenizers(tmp_path, smollm2):
    """SmolLM2's 49152-token vocabulary, written as the tokenizer.json its Hugging Face repo
    has (Digits + ByteLevel pre-tokenizer, control tokens as special added tokens): our folder
    tokenizer, the GGUF tokenizer and the `tokenizers` library itself give the same ids."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from tmac_core.loading.gguf import GGUFFile
    from tmac_core.tokenizer import tokenizer_from_gguf

    with GGUFFile.open(smollm2) as f:
        md = dict(f.metadata)
    tokens, types = md["tokenizer.ggml.tokens"], list(md["tokenizer.ggml.token_type"])
    vocab = {t: i for i, t in enumerate(tokens)}  # the real file lists its special tokens in the vocab too
    merges = [tuple(m.split(" ", 1)) for m in md["tokenizer.ggml.merges"]]
    hf = HfTokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([t for t, k in zip(tokens, types) if k == 3])
    hf.save(str(tmp_path / "tokenizer.json"))
    write_json(tmp_path / "tokenizer_config.json", {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"})
    ours = tokenizer_from_folder(tmp_path, len(tokens))
    gguf = tokenizer_from_gguf(md)
    assert ours.pre in ("starcoder", "smollm") and not ours.add_bos
    text = (DATA.parent / "alice_ch1-2.txt").read_text(encoding="utf-8")[:6000]
    lines = [
        *text.split("\n\n")[:40],
        "x = 1234567 + 3.5;  tabs\t\tand  spaces  ",
        "caf\u00e9 \u65e5\u672c\u8a9e \U0001f600",
    ]
    for line in lines:
        want = hf.encode(line).ids
        assert ours.encode(line, allow_special=False) == want
        assert gguf.encode(line, allow_special=False) == want
    assert ours.special_tokens == gguf.special_tokens
