"""GPTQ / EfficientQAT Hugging Face folders through Engine.load, "as in the file": the tiny GPTQ
Llama checkpoints of tests/data/gptq/models (tests/reference/make_gptq_models.py) against the
logits transformers recorded for them.

Three measurements, because three things can differ from the reference:
- the GPTQ layers: the engine's packed matrices, decoded (kernels.dequantize) and put back in
  input order by the stored act-order permutation, with the file's float embedding and output
  table, reproduce transformers' logits to float rounding (float64 numpy forward): the layers
  run the file's own codes, scales and zero points, no requantization.
- the file's fp16 embedding and output tables, which "as in the file" runs at 8 bits
  (plan.NATIVE_EMBEDDING_BITS) and 6 bits (plan.PRESET_OUTPUT_BITS): the same forward on
  every weight as packed.
- the runtime (int8 activation tables, fp16 KV cache, the act-order gather): the engine's logits
  against that forward on the same packed weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.reference import llama_numpy
from tests.runtime.hf_folder import st_bytes
from tests.runtime.test_gptq_model import read_safetensors
from tmac_core import Engine, inspect_model
from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.hf import HFModel
from tmac_core.models import loader
from tmac_core.plan import SCALES_SUPER, input_perm_name, packed_bytes, tensor_plan
from tmac_core.sampling import SamplingParams

pytestmark = pytest.mark.engine

MODELS = Path(__file__).resolve().parents[1] / "data" / "gptq" / "models"
MODEL_DIRS = sorted(p for p in MODELS.iterdir() if p.is_dir())
# relative L2 of our logits against transformers' at worst per position, measured 0.026 (w2g64,
# w4g32) .. 0.027 (w3g128): the 6-bit output table (plan.PRESET_OUTPUT_BITS) is most of it; with
# the earlier 4 + 4-bit one, 0.012 .. 0.014
TO_TRANSFORMERS = 0.035
LABELS = {
    "llama_w2g64_v2": "native GPTQ w2g64",
    "llama_w3g128_v2_act": "native GPTQ w3g128, act-order",
    "llama_w4g32_v1_act": "native GPTQ w4g32, act-order",
}
MESSAGES = [{"role": "user", "content": "Where did the rabbit go?"}]


def rel_l2(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Relative L2 error of each position's logits."""
    return np.sqrt(((got - want) ** 2).sum(axis=1) / (want**2).sum(axis=1))


def dense(weights: loader.Weights) -> dict[str, np.ndarray]:
    """float64 weights in input order, as the runtime computes with them."""
    out = {}
    for name, w in weights.items():
        if not isinstance(w, K.PackedWeight):
            out[name] = np.asarray(w, np.float64)
            continue
        x = K.dequantize(w)
        perm = weights.get(input_perm_name(name))
        if perm is not None:
            natural = np.empty_like(x)
            natural[:, np.asarray(perm)] = x
            x = natural
        out[name] = x
    return out


def numpy_logits(model: HFModel, w: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
    cfg = model.config
    shape = SimpleNamespace(
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        norm_eps=cfg.norm_eps,
        qkv_bias=cfg.qkv_bias,
        rope_style=cfg.rope_style,
        tie_embeddings=cfg.tie_embeddings,
        ffn_act=cfg.ffn_act,
        sub_norms=cfg.sub_norms,
        act_quant=cfg.act_quant,
    )
    return llama_numpy.forward(shape, w, tokens, w["rope.inv_freq"])


@pytest.fixture(scope="module", params=MODEL_DIRS, ids=[p.name for p in MODEL_DIRS])
def gptq_model(request):
    folder = request.param
    with np.load(folder / "reference.npz") as ref:
        tokens, want = ref["prompt_ids"], ref["logits"].astype(np.float64)
    model = HFModel.open(folder)
    weights = loader.load_weights(model, model.config, None)  # type: ignore[arg-type]
    yield folder, model, weights, tokens, want
    model.close()


def test_gptq_layers_run_the_files_own_weights(gptq_model):
    folder, model, weights, tokens, want = gptq_model
    source = {name: info.ggml_type.name for name, info in model.tensors.items()}
    plan = tensor_plan(model.config, None, source)
    gptq = [spec for spec in plan if spec.source_type and spec.source_type.startswith("GPTQ_")]
    assert len(gptq) == 7 * model.config.n_layers
    for spec in gptq:
        packed = weights[spec.name]
        assert isinstance(packed, K.PackedWeight) and packed.scale_format == SCALES_SUPER
        assert (packed.bits, packed.group_size, packed.super_size) == (spec.bits, spec.group_size, spec.super_size)
        assert (input_perm_name(spec.name) in weights) == spec.input_perm == folder.name.endswith("_act")
    assert sum(w.nbytes for w in weights.values() if isinstance(w, K.PackedWeight)) == packed_bytes(plan)
    w = dense(weights)
    w["token_embd.weight"] = dequantize_tensor(model, "token_embd.weight").astype(np.float64)
    w["output.weight"] = dequantize_tensor(model, "output.weight").astype(np.float64)
    # transformers' float32 rounding is the whole difference: measured <= 4.5e-7
    assert rel_l2(numpy_logits(model, w, tokens), want).max() <= 1e-5


def test_engine_logits_match_transformers(gptq_model):
    folder, model, weights, tokens, want = gptq_model
    as_packed = numpy_logits(model, dense(weights), tokens)
    engine = Engine.load(folder, n_ctx=64, use_cache=False)
    try:
        assert engine.bits is None and engine.info.bits is None
        got = engine.forward(tokens, 0, all_logits=True).astype(np.float64)
    finally:
        engine.close()
    # the runtime (int8 activation tables, fp16 KV cache) against the same packed weights in
    # float64: measured relative L2 8.9e-3 .. 1.03e-2 at worst per position
    assert rel_l2(got, as_packed).max() <= 1.5e-2
    # against transformers (TO_TRANSFORMERS): the 8-bit embedding and the 6-bit output table
    assert rel_l2(got, want).max() <= TO_TRANSFORMERS
    # greedy tokens: identical wherever the reference's top-2 margin is twice that error; the
    # 1..3 of 24 positions that differ have margins 0.000 .. 0.0094 (random tiny models)
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.06
    assert clear.sum() >= 12
    assert np.array_equal(got.argmax(axis=1)[clear], want.argmax(axis=1)[clear])


def test_act_order_permutation_is_what_makes_the_logits_right(gptq_model):
    folder, model, weights, tokens, want = gptq_model
    perms = [name for name in weights if name.endswith(".perm")]
    if not perms:
        pytest.skip("not an act-order checkpoint")
    with_perm = loader.build_runtime(model.config, weights, 64).forward(tokens, 0, True).astype(np.float64)
    without = {name: w for name, w in weights.items() if name not in perms}
    no_perm = loader.build_runtime(model.config, without, 64).forward(tokens, 0, True).astype(np.float64)
    # measured 0.027 (w3) / 0.0265 (w4) with the gather, 0.55 / 1.0 without it
    assert rel_l2(with_perm, want).max() <= TO_TRANSFORMERS < 0.3 < rel_l2(no_perm, want).max()
    bad = dict(weights)
    bad[perms[0]] = np.zeros_like(np.asarray(weights[perms[0]]))  # not a permutation
    with pytest.raises(Exception, match="permutation"):
        loader.build_runtime(model.config, bad, 64)


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=[p.name for p in MODEL_DIRS])
def test_inspect_model_names_the_native_format(folder):
    summary = inspect_model(folder)
    assert summary.file_type == LABELS[folder.name]
    assert summary.config.arch == "llama"
    kinds = {t for name, t in summary.tensor_types.items() if name.startswith("blk.") and "_norm" not in name}
    assert len(kinds) == 1 and kinds.pop().startswith("GPTQ_W")


def test_a_gptq_folder_chats_and_runs_the_presets(tmp_path):
    folder = MODEL_DIRS[0]
    engine = Engine.load(folder, n_ctx=64, use_cache=False)
    try:
        chunks = list(engine.stream(MESSAGES, SamplingParams(temperature=0.0, max_tokens=4)))
        assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].generated_tokens >= 1
    finally:
        engine.close()
    # bits=4: the exact float weights requantized by our quantizer, like a float checkpoint
    engine = Engine.load(folder, bits=4, n_ctx=64, use_cache=False)
    try:
        assert engine.info.bits == 4
        with np.load(folder / "reference.npz") as ref:
            got = engine.forward(ref["prompt_ids"], 0, all_logits=True).astype(np.float64)
            # measured 0.114 (the 4-bit preset requantizes the embedding too)
            assert rel_l2(got, ref["logits"].astype(np.float64)).max() <= 0.2
    finally:
        engine.close()


# -- refusals -----------------------------------------------------------------------------


def gptq_copy(tmp_path: Path, name: str = "llama_w2g64_v2") -> Path:
    dest = tmp_path / name
    shutil.copytree(MODELS / name, dest, ignore=shutil.ignore_patterns("reference.npz"))
    return dest


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data["quantization_config"] |= changes
    path.write_text(json.dumps(data))


def edit_tensors(folder: Path, edit) -> None:
    tensors = dict(read_safetensors(folder / "model.safetensors"))
    edit(tensors)
    (folder / "model.safetensors").write_bytes(st_bytes(tensors))


LAYER = "model.layers.1.mlp.up_proj"


@pytest.mark.parametrize(
    ("what", "error", "match"),
    [
        ("bits 5", UnsupportedModelError, "5-bit GPTQ"),
        ("bits text", ModelFormatError, "bits"),
        ("group 100", UnsupportedModelError, "group_size 100"),
        ("awq", UnsupportedModelError, "awq"),
        ("format marlin", UnsupportedModelError, "marlin"),
        ("sym not bool", ModelFormatError, "sym"),
        ("missing qzeros", ModelFormatError, "qzeros"),
        ("missing qweight", ModelFormatError, "qweight"),
        ("qweight as float", ModelFormatError, "dtype F32"),
        ("qweight short", ModelFormatError, "shape"),
        ("float weight too", ModelFormatError, "both"),
        ("no config", ModelFormatError, "GPTQ quantization config"),
        ("config, float layers", ModelFormatError, "no layer has qweight"),
        ("mislabelled v1", ModelFormatError, "mislabelled|not all"),
    ],
)
def test_a_bad_gptq_folder_is_a_typed_error(tmp_path, what, error, match):
    folder = gptq_copy(tmp_path, "llama_w4g32_v1_act" if what == "mislabelled v1" else "llama_w2g64_v2")
    edits = {
        "bits 5": lambda: edit_config(folder, bits=5),
        "bits text": lambda: edit_config(folder, bits="2"),
        "group 100": lambda: edit_config(folder, group_size=100),
        "awq": lambda: edit_config(folder, quant_method="awq"),
        "format marlin": lambda: edit_config(folder, checkpoint_format="marlin", format="marlin"),
        "sym not bool": lambda: edit_config(folder, sym="no"),
        "missing qzeros": lambda: edit_tensors(folder, lambda t: t.pop(f"{LAYER}.qzeros")),
        "missing qweight": lambda: edit_tensors(folder, lambda t: t.pop(f"{LAYER}.qweight")),
        "qweight as float": lambda: edit_tensors(
            folder, lambda t: t.update({f"{LAYER}.qweight": t[f"{LAYER}.qweight"].view(np.float32)})
        ),
        "qweight short": lambda: edit_tensors(
            folder, lambda t: t.update({f"{LAYER}.qweight": t[f"{LAYER}.qweight"][:-1]})
        ),
        "float weight too": lambda: edit_tensors(
            folder, lambda t: t.update({f"{LAYER}.weight": np.zeros((256, 128), np.float16)})
        ),
        "no config": lambda: edit_config_away(folder),
        "config, float layers": lambda: edit_tensors(folder, dequantize_all),
        "mislabelled v1": lambda: mislabel(folder),
    }
    edits[what]()
    with pytest.raises(error, match=match):
        Engine.load(folder, n_ctx=64, use_cache=False)


def edit_config_away(folder: Path) -> None:
    data = json.loads((folder / "config.json").read_text())
    del data["quantization_config"]
    (folder / "config.json").write_text(json.dumps(data))


def dequantize_all(tensors: dict[str, np.ndarray]) -> None:
    """Every GPTQ layer replaced by a float16 weight of its shape (values do not matter here)."""
    for name in [n for n in tensors if n.endswith(".qweight")]:
        prefix = name.removesuffix(".qweight")
        k, n = tensors[name].shape[0] * 16, tensors[name].shape[1]  # 2-bit: 16 codes a word
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            tensors.pop(f"{prefix}.{part}", None)
        tensors[f"{prefix}.weight"] = np.zeros((n, k), np.float16)


def mislabel(folder: Path) -> None:
    """The AutoGPTQ-style v1 folder labelled gptq_v2: its symmetric zero points give it away."""
    path = folder / "quantize_config.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"checkpoint_format": "gptq_v2"}))


def test_matrices_sharing_an_input_with_different_permutations_get_their_own_tables():
    """q, k and v of an act-order layer normally share one channel order (one gather, one table
    set). Give k another one (its groups reordered, which changes no weight): the runtime must
    compare the permutations, gather twice and still compute the same logits."""
    from tmac_core.models._llama import input_perms

    folder = MODELS / "llama_w4g32_v1_act"
    with np.load(folder / "reference.npz") as ref:
        tokens, want = ref["prompt_ids"], ref["logits"].astype(np.float64)
    with HFModel.open(folder) as model:
        cfg = model.config
        weights = loader.load_weights(model, cfg, None)  # type: ignore[arg-type]
        layer = model.gptq_layer("blk.0.attn_k.weight")
    assert layer.perm is not None and layer.group_size == layer.super_size
    n_groups = cfg.dim // layer.group_size
    blocks = np.arange(n_groups)[::-1]  # the groups in reverse order
    columns = (blocks[:, None] * layer.group_size + np.arange(layer.group_size)).reshape(-1)
    k_name = "blk.0.attn_k.weight"
    weights[k_name] = K.pack_super(
        layer.codes[:, columns],
        layer.d[:, blocks],
        layer.dmin[:, blocks],
        layer.sc[:, blocks],
        layer.mn[:, blocks],
        bits=layer.bits,
        group_size=layer.group_size,
        super_size=layer.super_size,
        code_offset=layer.code_offset,
    )
    weights[input_perm_name(k_name)] = layer.perm[columns]
    perms = input_perms(cfg, weights)
    assert perms["attn_q", 0] is perms["attn_v", 0] and perms["attn_k", 0] is not perms["attn_q", 0]
    assert np.array_equal(K.dequantize(weights[k_name])[:, np.argsort(layer.perm[columns])], layer.weight())
    got = loader.build_runtime(cfg, weights, 64).forward(tokens, 0, True).astype(np.float64)
    assert rel_l2(got, want).max() <= TO_TRANSFORMERS  # measured 0.0265, as with one shared order


def test_a_sharded_gptq_folder_with_a_layer_across_shards_loads(tmp_path):
    folder = gptq_copy(tmp_path)
    tensors = read_safetensors(folder / "model.safetensors")
    names = sorted(tensors)
    first = {n for n in names if n.endswith((".qweight", ".g_idx")) or "embed" in n}
    shards = {"model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": set(names) - first}
    for shard, members in shards.items():
        (folder / shard).write_bytes(st_bytes({n: tensors[n] for n in sorted(members)}))
    (folder / "model.safetensors").unlink()
    index = {"weight_map": {n: s for s, members in shards.items() for n in members}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    engine = Engine.load(folder, n_ctx=64, use_cache=False)
    try:
        with np.load(MODELS / folder.name / "reference.npz") as ref:
            got = engine.forward(ref["prompt_ids"], 0, all_logits=True).astype(np.float64)
            assert rel_l2(got, ref["logits"].astype(np.float64)).max() <= TO_TRANSFORMERS
    finally:
        engine.close()


def test_the_plan_of_gptq_layers():
    from tmac_core.plan import gptq_format, gptq_label, gptq_type, parse_gptq_type

    assert gptq_type(2, 128, False) == "GPTQ_W2G128" and gptq_type(4, -1, True) == "GPTQ_W4G-1_ACT"
    assert parse_gptq_type("GPTQ_W3G64_ACT") == (3, 64, True) and parse_gptq_type("Q4_K") is None
    assert parse_gptq_type("GPTQ_W5G128") is None and parse_gptq_type("GPTQ_W2G0") is None
    assert gptq_label("GPTQ_W4G-1") == "native GPTQ w4 per-channel"
    # grouped: G = S = group; per-channel (or a group as long as the row): S = the row
    assert (gptq_format(2, 128, 4096).group_size, gptq_format(2, 128, 4096).super_size) == (128, 128)
    assert (gptq_format(4, -1, 4096).group_size, gptq_format(4, -1, 4096).super_size) == (256, 4096)
    assert (gptq_format(3, 128, 128).group_size, gptq_format(3, 128, 128).super_size) == (128, 128)
    assert (gptq_format(4, -1, 11008).group_size, gptq_format(4, -1, 4064).group_size) == (256, 32)
    assert gptq_format(4, 100, 4000) is None and gptq_format(4, -1, 1000) is None
