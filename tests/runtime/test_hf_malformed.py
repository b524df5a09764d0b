"""Malformed Hugging Face model folders: bad config.json, lying or escaping shard indexes,
symlinks out of the folder, pickle-only weights, broken tokenizer files. Each is a copy of a
valid tiny checkpoint (tests/data/hf) with one thing broken, and each must end in a clear
typed error from tmac_core.errors, never a crash, a hang, or a pickle being opened."""

from __future__ import annotations

import builtins
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.hf_folder import copy_model, read_everything, read_json, st_bytes, write_json
from tmac_core.errors import ModelFormatError, ModelLoadError, TokenizerError, UnsupportedModelError
from tmac_core.loading import hf
from tmac_core.loading.safetensors import SafetensorsFile

INDEX = "model.safetensors.index.json"
SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = read_json(folder / name)
        change(data)
        write_json(folder / name, data)

    return apply


def config(**values) -> Callable[[Path], None]:
    return edit_json("config.json", lambda c: c.update(values))


def drop_config(key: str) -> Callable[[Path], None]:
    return edit_json("config.json", lambda c: c.pop(key))


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return apply


def index_map(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return edit_json(INDEX, lambda index: change(index["weight_map"]))


def outside_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder.parent / name
    path.write_bytes(data)
    return path


def symlink_shard_outside(folder: Path) -> None:
    target = outside_file(folder, "elsewhere.safetensors", (folder / SHARD2).read_bytes())
    (folder / SHARD2).unlink()
    (folder / SHARD2).symlink_to(target)


def symlink_single_outside(folder: Path) -> None:
    target = outside_file(folder, "elsewhere.safetensors", (folder / "model.safetensors").read_bytes())
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(target)


def symlink_config_outside(folder: Path) -> None:
    target = outside_file(folder, "config.json", (folder / "config.json").read_bytes())
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(target)


def symlink_tokenizer_outside(folder: Path) -> None:
    target = outside_file(folder, "tokenizer.json", (folder / "tokenizer.json").read_bytes())
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(target)


def shard_via_dotdot(folder: Path) -> None:
    os.rename(folder / SHARD2, folder.parent / SHARD2)
    edit_json(
        INDEX, lambda i: i["weight_map"].update({k: f"../{SHARD2}" for k, v in i["weight_map"].items() if v == SHARD2})
    )(folder)


def pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04\x95 not opened")


def index_to_pickle(folder: Path) -> None:
    (folder / "pytorch_model-00002-of-00002.bin").write_bytes(b"\x80\x04\x95 not opened")
    index_map(lambda m: m.update({k: "pytorch_model-00002-of-00002.bin" for k, v in m.items() if v == SHARD2}))(folder)


def no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def rewrite_shard(folder: Path, name: str, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    """Rewrite one safetensors file of the folder with its tensors (as float32) changed."""
    with SafetensorsFile.open(folder / name) as f:
        tensors = {}
        for tname, info in f.tensors.items():
            raw = f.tensor_bytes(tname)
            if info.dtype == "BF16":
                tensors["bf16:" + tname] = raw.view("<u2").reshape(info.shape).copy()
            else:
                tensors[tname] = raw.view("<f2").reshape(info.shape).copy()
    change(tensors)
    (folder / name).write_bytes(st_bytes(tensors))


def move_tensor_to_shard1(folder: Path) -> None:
    """A tensor present in both shards."""
    with SafetensorsFile.open(folder / SHARD2) as f:
        name = next(iter(f.tensors))
        copy = f.tensor_bytes(name).view("<f2").reshape(f.tensors[name].shape).copy()
    rewrite_shard(folder, SHARD1, lambda t: t.update({name: copy}))


def llama(change: Callable[[dict[str, np.ndarray]], object]) -> Callable[[Path], None]:
    return lambda folder: rewrite_shard(folder, "model.safetensors", change)


def nan_weight(t: dict[str, np.ndarray]) -> None:
    w = t["bf16:model.layers.1.mlp.up_proj.weight"]
    w[3, 5] = 0x7FC0  # a bf16 NaN


def int_weight(t: dict[str, np.ndarray]) -> None:
    w = t.pop("bf16:model.layers.0.mlp.up_proj.weight")
    t["model.layers.0.mlp.up_proj.weight"] = w.astype("<i4")


def huge_header(folder: Path) -> None:
    (folder / SHARD1).write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


def tokenizer_json(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return edit_json("tokenizer.json", change)


def no_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


def config_dir(folder: Path) -> None:
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()


# (id, model copied, the change, expected error, a fragment of its message)
CASES = [
    # config.json
    ("config-missing", "llama", lambda f: (f / "config.json").unlink(), ModelLoadError, "missing"),
    ("config-not-json", "llama", write("config.json", "{hidden_size: 64"), ModelFormatError, "invalid JSON"),
    ("config-a-list", "llama", write("config.json", "[1, 2]"), ModelFormatError, "JSON object"),
    ("config-a-directory", "llama", config_dir, ModelFormatError, "not a regular file"),
    ("config-outside-via-symlink", "llama", symlink_config_outside, ModelFormatError, "outside the model folder"),
    ("no-hidden-size", "llama", drop_config("hidden_size"), ModelFormatError, "'hidden_size'"),
    ("hidden-size-string", "llama", config(hidden_size="64"), ModelFormatError, "expected an integer"),
    ("hidden-size-bool", "llama", config(hidden_size=True), ModelFormatError, "expected an integer"),
    ("hidden-size-absurd", "llama", config(hidden_size=1 << 40), ModelFormatError, "outside"),
    ("zero-layers", "llama", config(num_hidden_layers=0), ModelFormatError, "outside"),
    ("vocab-absurd", "llama", config(vocab_size=1 << 30), ModelFormatError, "outside"),
    ("kv-heads-do-not-divide", "llama", config(num_key_value_heads=3), ModelFormatError, "do not divide"),
    ("odd-head-dim", "llama", config(head_dim=15), ModelFormatError, "odd"),
    ("eps-negative", "llama", config(rms_norm_eps=-1e-5), ModelFormatError, "rms_norm_eps"),
    ("eps-string", "llama", config(rms_norm_eps="1e-5"), ModelFormatError, "expected a number"),
    ("context-too-short", "llama", config(max_position_embeddings=4), ModelFormatError, "outside"),
    ("architectures-missing", "llama", drop_config("architectures"), ModelFormatError, "architectures"),
    ("architectures-two", "llama", config(architectures=["A", "B"]), ModelFormatError, "architectures"),
    ("unknown-architecture", "llama", config(architectures=["GPT2LMHeadModel"]), UnsupportedModelError, "GPT2"),
    ("quantized", "llama", config(quantization_config={"quant_method": "awq"}), UnsupportedModelError, "quantiz"),
    ("gelu", "llama", config(hidden_act="gelu"), UnsupportedModelError, "hidden_act"),
    ("yarn-rope", "llama", config(rope_scaling={"rope_type": "yarn", "factor": 4.0}), UnsupportedModelError, "yarn"),
    ("rope-scaling-a-list", "llama", config(rope_scaling=[1]), ModelFormatError, "rope_scaling"),
    ("llama3-rope-no-factor", "llama", config(rope_scaling={"rope_type": "llama3"}), ModelFormatError, "factor"),
    ("llama-attention-bias", "llama", config(attention_bias=True), UnsupportedModelError, "biases"),
    ("qwen-sliding-window", "qwen2", config(use_sliding_window=True), UnsupportedModelError, "sliding"),
    # weights
    ("untied-without-lm-head", "qwen2", config(tie_word_embeddings=False), ModelFormatError, "output.weight"),
    (
        "tensor-missing",
        "llama",
        llama(lambda t: t.pop("bf16:model.layers.2.mlp.down_proj.weight")),
        ModelFormatError,
        "blk.2.ffn_down",
    ),
    ("shape-disagrees-with-config", "llama", config(intermediate_size=256), ModelFormatError, "expected"),
    ("int32-weight", "llama", llama(int_weight), UnsupportedModelError, "I32"),
    ("nan-weight", "llama", llama(nan_weight), ModelFormatError, "NaN"),
    ("no-weights", "llama", no_weights, ModelLoadError, "no model.safetensors"),
    ("pickle-only", "llama", pickle_only, UnsupportedModelError, "pickle"),
    ("weights-outside-via-symlink", "llama", symlink_single_outside, ModelFormatError, "outside the model folder"),
    # shards and their index
    ("missing-shard", "qwen2", lambda f: (f / SHARD2).unlink(), ModelLoadError, "missing"),
    ("shard-outside-via-dotdot", "qwen2", shard_via_dotdot, ModelFormatError, "outside the model folder"),
    ("shard-outside-via-symlink", "qwen2", symlink_shard_outside, ModelFormatError, "outside the model folder"),
    (
        "shard-absolute-path",
        "qwen2",
        index_map(lambda m: m.update({k: "/etc/passwd.safetensors" for k in m})),
        ModelFormatError,
        "relative",
    ),
    ("shard-is-a-pickle", "qwen2", index_to_pickle, UnsupportedModelError, "pickle"),
    (
        "shard-wrong-suffix",
        "qwen2",
        index_map(lambda m: m.update({k: "config.json" for k in m})),
        ModelFormatError,
        ".safetensors",
    ),
    (
        "shard-name-not-string",
        "qwen2",
        index_map(lambda m: m.update({next(iter(m)): 7})),
        ModelFormatError,
        "file name",
    ),
    ("index-not-json", "qwen2", write(INDEX, "{"), ModelFormatError, "invalid JSON"),
    ("index-without-map", "qwen2", write(INDEX, '{"metadata": {}}'), ModelFormatError, "weight_map"),
    ("index-empty-map", "qwen2", write(INDEX, '{"weight_map": {}}'), ModelFormatError, "weight_map"),
    (
        "index-lies-about-shard",
        "qwen2",
        index_map(lambda m: m.update({"model.norm.weight": SHARD2 if m["model.norm.weight"] == SHARD1 else SHARD1})),
        ModelFormatError,
        "indexed in",
    ),
    (
        "index-names-absent-tensor",
        "qwen2",
        index_map(lambda m: m.update({"model.extra.weight": SHARD1})),
        ModelFormatError,
        "not in shard",
    ),
    (
        "index-omits-a-tensor",
        "qwen2",
        index_map(lambda m: m.pop("model.norm.weight")),
        ModelFormatError,
        "not in the index",
    ),
    ("tensor-in-two-shards", "qwen2", move_tensor_to_shard1, ModelFormatError, "also in shard"),
    ("shard-huge-header", "qwen2", huge_header, ModelFormatError, "exceeds the limit"),
    # tokenizer files
    ("no-tokenizer", "llama", no_tokenizer, ModelLoadError, "no tokenizer.json"),
    ("tokenizer-not-json", "llama", write("tokenizer.json", '{"model": '), ModelFormatError, "invalid JSON"),
    ("tokenizer-no-model", "llama", tokenizer_json(lambda t: t.pop("model")), TokenizerError, "no model"),
    (
        "tokenizer-duplicate-id",
        "llama",
        tokenizer_json(lambda t: t["model"]["vocab"].update({"zzz": 5})),
        TokenizerError,
        "gives id 5",
    ),
    (
        "tokenizer-id-not-int",
        "llama",
        tokenizer_json(lambda t: t["model"]["vocab"].update({"zzz": "5"})),
        TokenizerError,
        "not a token id",
    ),
    (
        "tokenizer-bad-merge",
        "llama",
        tokenizer_json(lambda t: t["model"]["merges"].append(["a"])),
        TokenizerError,
        "merge",
    ),
    (
        "tokenizer-bad-added-token",
        "llama",
        tokenizer_json(lambda t: t["added_tokens"].append({"id": -1})),
        TokenizerError,
        "added token",
    ),
    (
        "tokenizer-unknown-pre",
        "llama",
        tokenizer_json(lambda t: t.update(pre_tokenizer={"type": "Whitespace"})),
        TokenizerError,
        "without byte-level",
    ),
    (
        "tokenizer-unknown-pre-in-sequence",
        "llama",
        tokenizer_json(lambda t: t["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Whitespace"})),
        TokenizerError,
        "Whitespace",
    ),
    (
        "tokenizer-larger-than-vocab",
        "llama",
        tokenizer_json(lambda t: t["added_tokens"].append({"id": 400, "content": "<x>", "special": True})),
        TokenizerError,
        "vocab_size",
    ),
    ("tokenizer-outside-via-symlink", "llama", symlink_tokenizer_outside, ModelFormatError, "outside the model folder"),
    (
        "tokenizer-model-garbage",
        "llama",
        lambda f: (no_tokenizer(f), write("tokenizer.model", b"\xff" * 64)(f)),
        TokenizerError,
        "SentencePiece",
    ),
    (
        "bos-not-in-vocab",
        "llama",
        edit_json("tokenizer_config.json", lambda c: c.update(bos_token="<nope>")),
        TokenizerError,
        "<nope>",
    ),
    (
        "bos-wrong-type",
        "llama",
        edit_json("tokenizer_config.json", lambda c: c.update(bos_token=3)),
        TokenizerError,
        "bos_token",
    ),
    (
        "add-bos-string",
        "llama",
        edit_json("tokenizer_config.json", lambda c: c.update(add_bos_token="yes")),
        TokenizerError,
        "add_bos_token",
    ),
    (
        "chat-template-number",
        "llama",
        edit_json("tokenizer_config.json", lambda c: c.update(chat_template=3)),
        TokenizerError,
        "chat_template",
    ),
    (
        "stop-id-string",
        "llama",
        edit_json("generation_config.json", lambda c: c.update(eos_token_id="2")),
        TokenizerError,
        "eos_token_id",
    ),
    ("generation-config-not-json", "llama", write("generation_config.json", "nope"), ModelFormatError, "invalid JSON"),
]


@pytest.mark.parametrize(("model", "change", "error", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_folder_gives_a_typed_error(tmp_path, monkeypatch, model, change, error, fragment):
    folder = copy_model(tmp_path, model)
    change(folder)
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    with pytest.raises(error) as info:
        read_everything(folder)
    assert fragment in str(info.value), str(info.value)
    assert not [p for p in opened if p.endswith(".bin")], "a pickle file was opened"


def test_a_json_file_past_its_size_limit_is_refused_unread(tmp_path, monkeypatch):
    folder = copy_model(tmp_path, "llama")
    monkeypatch.setattr(hf, "MAX_JSON_BYTES", 100)
    with pytest.raises(ModelFormatError, match="limit"):
        read_everything(folder)


def test_missing_folder_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        hf.HFModel.open(tmp_path / "absent")
