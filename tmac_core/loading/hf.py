"""A Hugging Face model folder (config.json + safetensors) as the weight loader sees a GGUF file.

`HFModel.open(folder)` reads `config.json` into a ModelConfig (the fields tmac_core.plan
needs, each type- and range-checked), opens `model.safetensors` or the shards a
`model.safetensors.index.json` names (tmac_core/loading/safetensors.py: headers checked, data
mapped, shards only inside the folder, pickles refused unopened), and renames every tensor
to the GGUF name the runtime uses (`model.layers.3.self_attn.q_proj.weight` →
`blk.3.attn_q.weight`). It offers the same small interface the loader uses on a GGUFFile
(`path`, `tensors` of gguf.TensorInfo in GGUF order, `tensor_bytes`, `metadata`, `close`), so
`models/loader.load_weights` and `loading/dequant.dequantize_tensor` run unchanged:
fp32/fp16/bf16 checkpoints repack to 4 or 2 bits exactly as F32/F16/BF16 GGUF files do.

Llama's q and k rows: a Hugging Face Llama checkpoint rotates pairs (i, i + head_dim/2)
(transformers' rotate_half), while our Llama graph rotates pairs (2i, 2i+1) like llama.cpp
(tmac_core/models/llama.py, rope_style "interleaved"). llama.cpp's converter
(convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of q_proj and k_proj so that
the interleaved rotation computes the same thing; `tensor_bytes` applies that permutation,
so a folder and its llama.cpp conversion give the same ModelConfig and the same packed
weights. Qwen2 runs with neox RoPE (tmac_core/models/qwen2.py) and needs no permutation.

GPTQ / GPTQModel / EfficientQAT folders (`quantization_config` in config.json, or
quantize_config.json): each projection is `<prefix>.qweight/.qzeros/.scales/.g_idx` (I32, I32,
F16, I32). Such a layer stands in `tensors` as one matrix of the GPTQ source type
(tmac_core.plan.gptq_type, e.g. "GPTQ_W2G128") and `gptq_layer(name)` unpacks it exactly
(loading/gptq.py): codes, SUPER scale parameters and, for act-order, the input permutation;
q/k rows are permuted like a float weight's. Its bytes are not a GGML tensor: `tensor_bytes`
refuses it, so nothing can dequantize it as one by mistake.

BitNet b1.58 folders (`BitNetForCausalLM`, microsoft/bitnet-b1.58-2B-4T's layout; config.json
`quantization_config.quant_method` "bitnet"): each projection is `<prefix>.weight`, uint8
(ceil(out/4), in), and `<prefix>.weight_scale`, one float. transformers' pack_weights splits the
output rows into 4 contiguous planes of R = ceil(out/4) rows: byte (r, k) holds in bits 2i..2i+1
the code t + 1 of row i·R + r (integrations/bitnet.py unpack_weights). The scale's direction is
the layer class's: linear_class "autobitlinear" (2B-4T) computes x·tᵀ·weight_scale, so
w = t·weight_scale; the default BitLinear (Falcon3-1.58bit, onebitllms) divides, w = t/weight_scale.
Such a layer stands in `tensors` as a TQ2_0 tensor when γ is fp16-exact (every 256-block's d = γ,
as a GGUF conversion writes it), else as I2_S (one fp32 γ per tensor), and `tensor_bytes` writes
it in that layout, so the loader's exact ternary path (loading/repack.py `_exact_ternary`) packs
the codes t + 1 unchanged with z = 1: no requantization. A BitNet-packed LlamaForCausalLM
(Falcon3-1.58bit, Falcon-E: lm_head kept in bf16 by modules_to_not_convert) runs as
"llama-bitnet" (models/bitnet.py); its q/k codes are permuted like a float Llama's rows.

1bitLLM folders (`BitnetForCausalLM`, arch "bitnet": SiLU, sub-norms named inner_attn_ln and
ffn_layernorm) and 2B-4T's -bf16 repo (no packed quantization_config) hold float latent
weights: each projection is ternarized at load with the absmean scale (`ternarize`, the
models' own weight_quant) and offered as I2_S with its fp32 γ.

Imports numpy, the loaders and tmac_core.plan / limits / models: no Qt, no torch, no pickle.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from tmac_core.errors import ModelFormatError, ModelLoadError, UnsupportedModelError
from tmac_core.filehash import sha256_file
from tmac_core.limits import (
    MAX_DIM,
    MAX_HEAD_DIM,
    MAX_HEADS,
    MAX_HIDDEN_DIM,
    MAX_LAYERS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
    MIN_SEQ_LEN,
)
from tmac_core.loading.gguf import GGMLType, TensorInfo
from tmac_core.loading.gptq import GPTQConfig, GPTQLinear, gptq_config, unpack_gptq
from tmac_core.loading.safetensors import (
    SafeTensorInfo,
    SafetensorsFile,
    confined_file,
    parse_json,
    pickle_files,
    read_small_file,
)
from tmac_core.models import architecture
from tmac_core.plan import ModelConfig, RopeScaling, gptq_label, gptq_type
from tmac_core.types import ModelSummary

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
QUANTIZE_CONFIG_FILE = "quantize_config.json"  # AutoGPTQ's GPTQ settings, when config.json has none
MAX_JSON_BYTES = 64 << 20  # an index of 100k tensors is ~10 MB
MAX_SHARDS = 4096
# Bump when the renaming or the q/k permutation changes what the loader gets for the same
# files: it is part of the folder's content digest, hence of the repacked-cache key.
MAPPING_VERSION = 1

# config.json `architectures[0]` → the architecture we run it as (tmac_core.models)
HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "BitNetForCausalLM": "bitnet-b1.58",  # microsoft/bitnet-b1.58-2B-4T, packed
    "BitnetForCausalLM": "bitnet",  # 1bitLLM/bitnet_b1_58-*, float latent weights
}
# each architecture's one FFN activation (config.json `hidden_act`)
HF_ACTIVATIONS = {"llama": "silu", "qwen2": "silu", "bitnet-b1.58": "relu2", "bitnet": "silu", "llama-bitnet": "silu"}
# the architectures a BitNet quantization_config may come with (a packed LlamaForCausalLM
# runs as llama-bitnet: int8 activations before every projection, models/bitnet.py)
BITNET_ARCHITECTURES = ("bitnet-b1.58", "llama-bitnet")
# BitNet quantization_config `linear_class` → whether weight_scale multiplies (True) or divides
BITNET_LINEAR_CLASSES = {"autobitlinear": True, "bitlinear": False}
BITNET_SCALE_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}
# safetensors dtypes the weight loader reads (tmac_core/loading/dequant.py)
FLOAT_DTYPES = {"F32": GGMLType.F32, "F16": GGMLType.F16, "BF16": GGMLType.BF16}
# the tensors of one GPTQ layer and the safetensors dtypes each may have (F32 scales: gptq.py
# takes them only when fp16 holds every value exactly)
GPTQ_PARTS = {"qweight": ("I32",), "qzeros": ("I32",), "scales": ("F16", "F32"), "g_idx": ("I32",)}
_NUMPY_DTYPES = {"I32": "<i4", "F16": "<f2", "F32": "<f4"}

_TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "self_attn.attn_sub_norm.weight": "attn_sub_norm.weight",
    "mlp.ffn_sub_norm.weight": "ffn_sub_norm.weight",
    "self_attn.inner_attn_ln.weight": "attn_sub_norm.weight",  # 1bitLLM's names of the sub-norms
    "mlp.ffn_layernorm.weight": "ffn_sub_norm.weight",
}
_BITNET_PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_LAYER_RE = re.compile(r"model\.layers\.(0|[1-9][0-9]{0,5})\.(.+)")


@dataclass(frozen=True)
class GPTQType:
    """A GPTQ layer's entry type in HFModel.tensors: what readers of a GGUF TensorInfo take from
    `ggml_type` is its `name` (the plan's source type); it is no GGMLType, so nothing decodes it."""

    name: str


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face Llama/Qwen2 tensor, or None if the runtime has none."""
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    m = _LAYER_RE.fullmatch(hf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        return None
    return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"


class _Config:
    """Typed, range-checked reads of config.json: every failure names the key."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data, self.path = data, path

    def fail(self, key: str, reason: str) -> NoReturn:
        raise ModelFormatError(self.path, f"{CONFIG_FILE} {key!r}", None, reason)

    def get_int(self, key: str, default: int | None = None, *, lo: int = 1, hi: int) -> int:
        value = self.data.get(key)
        if value is None:
            if default is None:
                self.fail(key, "required key is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, found {type(value).__name__}")
        if not lo <= value <= hi:
            self.fail(key, f"value {value} outside [{lo}, {hi}]")
        return value

    def get_float(self, key: str, default: float | None = None, *, hi: float = math.inf) -> float:
        value = self.data.get(key)
        if value is None:
            if default is None:
                self.fail(key, "required key is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected a number, found {type(value).__name__}")
        if not (math.isfinite(value) and 0 < value <= hi):
            self.fail(key, f"value {value} must be finite and in (0, {hi}]")
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, found {type(value).__name__}")
        return value

    def get_str(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"expected a string, found {type(value).__name__}")
        return value


def read_json_file(path: Path, what: str) -> Any:
    return parse_json(read_small_file(path, MAX_JSON_BYTES, what), str(path), what)


def _rope(cfg: _Config, rope: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """rope_theta and the Llama-3 scaling, from `rope_scaling` (transformers ≤ 4) or
    `rope_parameters` (transformers 5, which also holds rope_theta)."""
    sub = _Config(rope, cfg.path)
    theta = sub.get_float("rope_theta", cfg.get_float("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in ("default", None) or not rope:
        return theta, None
    if kind != "llama3":
        raise UnsupportedModelError(f"{cfg.path}: RoPE scaling type {kind!r} is not supported (supported: llama3)")
    low = sub.get_float("low_freq_factor")
    high = sub.get_float("high_freq_factor")
    if high <= low:
        cfg.fail("rope_scaling", f"high_freq_factor {high} must exceed low_freq_factor {low}")
    scaling = RopeScaling(
        sub.get_float("factor"), low, high, sub.get_int("original_max_position_embeddings", hi=MAX_SEQ_LEN)
    )
    return theta, scaling


def config_from_hf(data: Any, path: str) -> ModelConfig:
    """config.json → ModelConfig.

    Raises:
        UnsupportedModelError: an architecture, activation, quantization or attention variant
            this runtime does not run.
        ModelFormatError: a key is missing, mistyped or absurd.
    """
    if not isinstance(data, dict):
        raise ModelFormatError(path, CONFIG_FILE, None, f"expected a JSON object, found {type(data).__name__}")
    cfg = _Config(data, path)
    archs = data.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str):
        cfg.fail("architectures", f"expected a list of one class name, found {archs!r}")
    if archs[0] not in HF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: unsupported architecture {archs[0]!r} (supported: {', '.join(sorted(HF_ARCHITECTURES))})"
        )
    arch_name = HF_ARCHITECTURES[archs[0]]
    quant = data.get("quantization_config")
    bitnet_scale_multiplies(data, path)  # refuses a linear_class or mode we do not run
    is_bitnet = isinstance(quant, dict) and quant.get("quant_method") == "bitnet"
    if is_bitnet and arch_name == "llama":
        arch_name = "llama-bitnet"  # Falcon3-1.58bit / Falcon-E / HF1BitLLM: Llama's graph, BitLinear layers
    if is_bitnet and arch_name not in BITNET_ARCHITECTURES:
        raise UnsupportedModelError(f"{path}: BitNet-packed {archs[0]} is not supported (supported: Llama, BitNet)")
    if quant is not None and not is_bitnet and gptq_config({"quantization_config": quant}) is None:
        method = quant.get("quant_method") if isinstance(quant, dict) else None
        raise UnsupportedModelError(
            f"{path}: quantization method {method!r} is not supported (supported: gptq, bitnet)"
        )
    act = HF_ACTIVATIONS[arch_name]
    if cfg.get_str("hidden_act", act) != act:
        raise UnsupportedModelError(f"{path}: hidden_act {data['hidden_act']!r} is not supported (supported: {act})")
    if arch_name in ("llama", "llama-bitnet") and (
        cfg.get_bool("attention_bias", False) or cfg.get_bool("mlp_bias", False)
    ):
        raise UnsupportedModelError(f"{path}: Llama with attention or MLP biases is not supported")
    layer_types = data.get("layer_types") or []  # transformers 5 lists each layer's attention
    if (arch_name == "qwen2" and cfg.get_bool("use_sliding_window", False)) or not isinstance(layer_types, list):
        raise UnsupportedModelError(f"{path}: sliding-window attention is not supported")
    if any(kind != "full_attention" for kind in layer_types):
        raise UnsupportedModelError(f"{path}: layer_types {sorted(set(map(str, layer_types)))}: only full attention")
    dim = cfg.get_int("hidden_size", hi=MAX_DIM)
    n_heads = cfg.get_int("num_attention_heads", hi=MAX_HEADS)
    n_kv_heads = cfg.get_int("num_key_value_heads", n_heads, hi=MAX_HEADS)
    if n_heads % n_kv_heads:
        cfg.fail("num_key_value_heads", f"{n_kv_heads} kv heads do not divide {n_heads} heads")
    if data.get("head_dim") is None and dim % n_heads:
        cfg.fail("num_attention_heads", f"{n_heads} heads do not divide hidden_size {dim}")
    head_dim = cfg.get_int("head_dim", dim // n_heads, hi=MAX_HEAD_DIM)
    if head_dim % 2:
        cfg.fail("head_dim", f"head size {head_dim} is odd; RoPE needs pairs")
    if cfg.get_float("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedModelError(f"{path}: partial rotary embedding is not supported")
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        cfg.fail("rope_scaling", f"expected an object, found {type(rope).__name__}")
    theta, scaling = _rope(cfg, rope)
    return architecture(arch_name).config(
        dim=dim,
        hidden_dim=cfg.get_int("intermediate_size", hi=MAX_HIDDEN_DIM),
        n_layers=cfg.get_int("num_hidden_layers", hi=MAX_LAYERS),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        vocab_size=cfg.get_int("vocab_size", hi=MAX_VOCAB),
        n_ctx_train=cfg.get_int("max_position_embeddings", lo=MIN_SEQ_LEN, hi=MAX_SEQ_LEN),
        rope_theta=theta,
        norm_eps=cfg.get_float("rms_norm_eps", hi=1.0),
        rope_scaling=scaling,
        tie_embeddings=cfg.get_bool("tie_word_embeddings", False),
    )


def bitnet_scale_multiplies(data: Mapping[str, Any], path: str) -> bool | None:
    """For a config.json with a packed ("offline") BitNet quantization_config: True when
    weight_scale multiplies (linear_class "autobitlinear", 2B-4T), False when it divides (the
    default BitLinear); None for any other config, an "online" one (latent weights) included."""
    quant = data.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "bitnet":
        return None
    linear = quant.get("linear_class", "bitlinear")
    if linear not in BITNET_LINEAR_CLASSES:
        raise UnsupportedModelError(
            f"{path}: BitNet linear_class {linear!r} is not supported (supported: {', '.join(BITNET_LINEAR_CLASSES)})"
        )
    if quant.get("use_rms_norm", False) is not False:
        # transformers' opt-in RMSNorm inside each BitLinear (PR #38087): no graph here has it
        raise UnsupportedModelError(f"{path}: BitNet use_rms_norm (a norm inside every BitLinear) is not supported")
    mode = quant.get("quantization_mode", "offline")
    if mode not in ("offline", "online"):
        raise UnsupportedModelError(f"{path}: BitNet quantization_mode {mode!r} (supported: offline, online)")
    return BITNET_LINEAR_CLASSES[linear] if mode == "offline" else None  # online: latent float weights


_FLOAT_VIEWS = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def ternarize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """BitNet b1.58's absmean ternarization of latent weights (1bitLLM's utils_quant.py
    weight_quant, as llama.cpp's converter applies it): s = 1/max(mean|w|, 1e-5) in fp32,
    t = clip(round(w·s), −1, 1), w ≈ t / s. Codes t + 1 (uint8, w's shape flattened) and
    γ = 1/s in fp32. The mean is taken in float64, then rounded to fp32."""
    mean = np.float32(np.abs(w, dtype=np.float64).mean()) if w.size else np.float32(0)
    s = np.float32(1) / max(mean, np.float32(1e-5))
    codes = (np.clip(np.rint(w.reshape(-1) * s), -1, 1) + 1).astype(np.uint8)
    return codes, float(np.float32(1) / s)


def unpack_bitnet(packed: np.ndarray, rows: int) -> np.ndarray:
    """transformers' unpack_weights as codes t + 1: uint8 (ceil(rows/4), k) → uint8 (rows, k)
    in {0, 1, 2}; the byte (r, k) holds row i·R + r in bits 2i..2i+1."""
    planes = [(packed >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)]
    return np.concatenate(planes, axis=0)[:rows]


def i2_s_bytes(codes: np.ndarray, gamma: float) -> np.ndarray:
    """Codes (n,) in {0, 1, 2} (n a multiple of 128) and γ as I2_S bytes (loading/dequant.py
    i2_s_codes reads them back): element j of a 128-block in byte j % 32 at bits 6 − 2·(j // 32),
    then the fp32 γ in a 32-byte tail."""
    blocks = codes.reshape(-1, 4, 32).astype(np.uint8)
    shifts = np.array([6, 4, 2, 0], np.uint8)[None, :, None]
    body = np.bitwise_or.reduce(blocks << shifts, axis=1).reshape(-1)
    tail = np.zeros(32, np.uint8)
    tail[:4] = np.array([gamma], "<f4").view(np.uint8)
    out = np.concatenate([body, tail])
    out.flags.writeable = False
    return out


def tq2_0_bytes(codes: np.ndarray, gamma: float) -> np.ndarray:
    """Codes (n,) in {0, 1, 2} (n a multiple of 256) and an fp16-exact γ as TQ2_0 blocks
    {uint8 qs[64]; half d = γ}: element 128c + 32l + m in qs[32c + m] bits 2l..2l+1
    (ggml quantize_row_tq2_0_ref)."""
    blocks = codes.reshape(-1, 2, 4, 32).astype(np.uint8)
    qs = np.bitwise_or.reduce(blocks << (2 * np.arange(4, dtype=np.uint8))[None, None, :, None], axis=2)
    d = np.full((len(blocks), 1), gamma, "<f2").view(np.uint8)
    out = np.concatenate([qs.reshape(-1, 64), d], axis=1).reshape(-1)
    out.flags.writeable = False
    return out


def _permute_rows(raw: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute on whole rows: per head, rows (i, i + hd/2) become (2i, 2i+1)."""
    rows = raw.reshape(n_heads, 2, -1, raw.shape[-1])  # (head, half, pair, row bytes)
    out = np.ascontiguousarray(rows.swapaxes(1, 2)).reshape(-1)
    out.flags.writeable = False
    return out


class HFModel:
    """An open Hugging Face model folder: its ModelConfig and its tensors under GGUF names."""

    def __init__(
        self, folder: Path, data: dict[str, Any], shards: list[SafetensorsFile], gptq: GPTQConfig | None = None
    ) -> None:
        self.path = os.fspath(folder)
        self.gptq = gptq  # the folder's GPTQ settings, None for a float checkpoint
        self.folder = folder
        self.hf_config = data
        self.hf_architecture: str = data["architectures"][0]
        self._shards = shards
        self.file_size = sum(s.file_size for s in shards)
        self.metadata: dict[str, Any] = {"general.name": folder.name}
        self.config = config_from_hf(data, str(folder / CONFIG_FILE))
        # BitNet: whether weight_scale multiplies; each projection's packed weight and scale
        self.bitnet = bitnet_scale_multiplies(data, str(folder / CONFIG_FILE))
        self._bitnet_parts: dict[str, dict[str, tuple[SafetensorsFile, SafeTensorInfo]]] = {}
        self._bitnet_gamma: dict[str, float] = {}  # GGUF name → fp32 γ, w = (code − 1)·γ
        self.tensors: dict[str, TensorInfo] = {}
        self._where: dict[str, tuple[SafetensorsFile, str]] = {}  # GGUF name → (shard, HF name)
        self.extra: list[str] = []  # HF tensors the runtime does not use
        # GPTQ layers: GGUF name → HF prefix, and each part's (shard, HF name, info)
        self._gptq_prefix: dict[str, str] = {}
        self._gptq_parts: dict[str, dict[str, tuple[SafetensorsFile, SafeTensorInfo]]] = {}
        for shard in shards:
            for hf_name, info in shard.tensors.items():
                if self._gptq_part(shard, hf_name, info) or self._bitnet_part(shard, hf_name, info):
                    continue
                name = gguf_name(hf_name)
                if name is None:
                    self.extra.append(hf_name)
                    continue
                if info.dtype not in FLOAT_DTYPES:
                    raise UnsupportedModelError(
                        f"{shard.path}: tensor {hf_name!r} has dtype {info.dtype}; only F32, F16 and BF16"
                        " checkpoints are supported"
                    )
                if not 1 <= len(info.shape) <= 2 or 0 in info.shape:
                    raise ModelFormatError(
                        shard.path,
                        f"tensor {hf_name!r}",
                        info.offset,
                        f"shape {list(info.shape)} is not a matrix or vector",
                    )
                self.tensors[name] = TensorInfo(
                    name, FLOAT_DTYPES[info.dtype], info.shape[::-1], info.offset, info.nbytes
                )
                self._where[name] = (shard, hf_name)
        self._gptq_entries()
        self._bitnet_entries()
        self._latent = self._latent_entries()
        if gptq is not None and not self._gptq_parts:
            raise ModelFormatError(
                self.path, "quantization_config", None, "GPTQ settings, but no layer has qweight/qzeros/scales"
            )
        cfg = self.config
        self._permuted: dict[str, int] = {}  # GGUF name → head count its rows are permuted by
        if cfg.rope_style == "interleaved":  # our RoPE pairs (2i, 2i+1); the folder rotates halves
            for layer in range(cfg.n_layers):
                self._permuted[f"blk.{layer}.attn_q.weight"] = cfg.n_heads
                self._permuted[f"blk.{layer}.attn_k.weight"] = cfg.n_kv_heads
        for name, expected in cfg.expected_tensors().items():
            found = self.tensors.get(name)
            if found is None:
                hint = " (tie_word_embeddings is false)" if name == "output.weight" else ""
                raise ModelFormatError(self.path, f"tensor {name!r}", None, f"required tensor is missing{hint}")
            if found.shape != expected:
                shard, hf_name = self._where[name]
                raise ModelFormatError(
                    shard.path,
                    f"tensor {hf_name!r}",
                    found.offset,
                    f"has shape {list(found.shape[::-1])}, expected {list(expected[::-1])}",
                )

    def _gptq_part(self, shard: SafetensorsFile, hf_name: str, info: SafeTensorInfo) -> bool:
        """Collects one part of a GPTQ layer (dtype checked); False for any other tensor."""
        prefix, _, part = hf_name.rpartition(".")
        if part not in GPTQ_PARTS:
            return False
        name = gguf_name(prefix + ".weight")
        if name is None:
            return False  # a GPTQ tensor the runtime does not use: listed in `extra`
        if self.gptq is None:
            raise ModelFormatError(
                shard.path,
                f"tensor {hf_name!r}",
                info.offset,
                f"a GPTQ tensor, but neither {CONFIG_FILE} nor {QUANTIZE_CONFIG_FILE} has a GPTQ quantization config",
            )
        if info.dtype not in GPTQ_PARTS[part]:
            raise ModelFormatError(
                shard.path, f"tensor {hf_name!r}", info.offset, f"dtype {info.dtype}, expected {GPTQ_PARTS[part][0]}"
            )
        if len(info.shape) != (1 if part == "g_idx" else 2) or 0 in info.shape:
            raise ModelFormatError(shard.path, f"tensor {hf_name!r}", info.offset, f"bad shape {list(info.shape)}")
        self._gptq_prefix[name] = prefix
        self._gptq_parts.setdefault(name, {})[part] = (shard, info)
        return True

    def _bitnet_part(self, shard: SafetensorsFile, hf_name: str, info: SafeTensorInfo) -> bool:
        """Collects a BitNet projection's packed weight or weight_scale; False for any other tensor."""
        if hf_name.endswith(".weight_scale"):
            name = gguf_name(hf_name[: -len("_scale")])
            part = "weight_scale"
        else:
            name, part = gguf_name(hf_name), "weight"
        if name is None or name.split(".")[-2] not in _BITNET_PROJECTIONS:
            return False
        if self.bitnet is None:
            if part == "weight":
                return False
            raise ModelFormatError(
                shard.path,
                f"tensor {hf_name!r}",
                info.offset,
                "a weight_scale, but config.json has no BitNet quantization_config",
            )
        self._bitnet_parts.setdefault(name, {})[part] = (shard, info)
        return True

    def _bitnet_entries(self) -> None:
        """One I2_S `tensors` entry per BitNet projection, its packed shape and scale checked."""
        if self.bitnet is None:
            return
        expected = self.config.expected_tensors()
        for name, parts in self._bitnet_parts.items():
            if "weight" not in parts:
                shard, info = parts["weight_scale"]
                raise ModelFormatError(
                    shard.path, f"tensor {info.name!r}", info.offset, "a weight_scale without its weight"
                )
            shard, info = parts["weight"]
            where = (shard.path, f"tensor {info.name!r}", info.offset)
            if info.dtype != "U8":
                raise ModelFormatError(*where, f"dtype {info.dtype}; a BitNet projection is packed U8")
            cols, rows = expected[name]
            packed_shape = [-(-rows // 4), cols]
            if list(info.shape) != packed_shape:
                raise ModelFormatError(
                    *where,
                    f"packed shape {list(info.shape)}, expected {packed_shape} (4 codes a byte along the {rows} rows)",
                )
            if cols % 128:
                raise UnsupportedModelError(f"{shard.path}: {info.name!r} has {cols} columns, not a multiple of 128")
            if "weight_scale" not in parts:
                raise ModelFormatError(*where, "its weight_scale is missing")
            gamma = self._bitnet_gamma[name] = self._bitnet_scale(*parts["weight_scale"])
            # an fp16-exact γ (2B-4T's bf16 scales are) as TQ2_0, the type a GGUF conversion of the
            # same weights has, so both load bit-identically; any other γ as I2_S, kept in fp32
            if cols % 256 == 0 and float(np.float16(gamma)) == gamma:
                self.tensors[name] = TensorInfo(
                    name, GGMLType.TQ2_0, (cols, rows), info.offset, rows * cols // 256 * 66
                )
            else:
                self.tensors[name] = TensorInfo(name, GGMLType.I2_S, (cols, rows), info.offset, rows * cols // 4 + 32)
            self._where[name] = (shard, info.name)

    def _latent_entries(self) -> set[str]:
        """1bitLLM (arch "bitnet"): its float projections, ternarized at load (`ternarize`),
        stand in `tensors` as I2_S; the GGUF names of those projections."""
        # 1bitLLM, and a BitNetForCausalLM without packed weights (2B-4T's -bf16 repo)
        if not (self.config.arch == "bitnet" or (self.config.arch == "bitnet-b1.58" and self.bitnet is None)):
            return set()
        latent = set()
        for name, info in list(self.tensors.items()):
            if name.split(".")[-2] not in _BITNET_PROJECTIONS:
                continue
            cols, rows = info.shape[0], int(np.prod(info.shape[1:]))
            if cols % 128:
                shard, hf_name = self._where[name]
                raise UnsupportedModelError(f"{shard.path}: {hf_name!r} has {cols} columns, not a multiple of 128")
            self.tensors[name] = TensorInfo(name, GGMLType.I2_S, info.shape, info.offset, rows * cols // 4 + 32)
            latent.add(name)
        return latent

    def _bitnet_scale(self, shard: SafetensorsFile, info: SafeTensorInfo) -> float:
        """γ of w = t·γ from a weight_scale tensor: one positive finite float, multiplied (2B-4T)
        or divided (BitLinear) as the config's linear_class says."""
        where = (shard.path, f"tensor {info.name!r}", info.offset)
        if info.dtype not in BITNET_SCALE_DTYPES:
            raise ModelFormatError(*where, f"dtype {info.dtype}; a weight_scale is F32, F16 or BF16")
        if math.prod(info.shape) != 1 or len(info.shape) > 1:
            raise ModelFormatError(*where, f"shape {list(info.shape)}; a weight_scale is one value per tensor ([1])")
        raw = shard.tensor_bytes(info.name).view(BITNET_SCALE_DTYPES[info.dtype])
        value = float((raw.astype(np.uint32) << 16).view(np.float32)[0]) if info.dtype == "BF16" else float(raw[0])
        if not (math.isfinite(value) and value > 0):
            raise ModelFormatError(*where, f"weight_scale {value} must be finite and positive")
        gamma = float(np.float32(value if self.bitnet else 1.0 / value))
        if not (math.isfinite(gamma) and gamma > 0):
            raise ModelFormatError(*where, f"weight_scale {value} gives no finite fp32 scale")
        return gamma

    def _gptq_entries(self) -> None:
        """One `tensors` entry per GPTQ layer: GGUF shape (K, N) from qweight's (K*bits/32, N)."""
        for name, parts in self._gptq_parts.items():
            prefix = self._gptq_prefix[name]
            missing = [part for part in ("qweight", "qzeros", "scales") if part not in parts]
            if missing:
                raise ModelFormatError(self.path, f"tensor {prefix}.{missing[0]!r}", None, "GPTQ layer part is missing")
            if name in self.tensors:
                raise ModelFormatError(self.path, f"tensor {prefix!r}", None, "has both a float weight and a qweight")
            assert self.gptq is not None  # _gptq_part refuses GPTQ parts without a config
            shard, qweight = parts["qweight"]
            rows, cols = qweight.shape[1], qweight.shape[0] * 32 // self.gptq.bits
            source = gptq_type(self.gptq.bits, self.gptq.group_size, self.gptq.desc_act)
            nbytes = sum(info.nbytes for _, info in parts.values())
            self.tensors[name] = TensorInfo(
                name, cast(GGMLType, GPTQType(source)), (cols, rows), qweight.offset, nbytes
            )
            self._where[name] = (shard, f"{prefix}.qweight")

    def is_gptq_layer(self, name: str) -> bool:
        return name in self._gptq_parts

    def gptq_layer(self, name: str) -> GPTQLinear:
        """A GPTQ layer under its GGUF name, unpacked exactly (loading/gptq.py), Llama's q/k rows
        permuted like a float weight's (KeyError if not a GPTQ layer; ModelFormatError /
        UnsupportedModelError for parts gptq.py refuses)."""
        parts = self._gptq_parts[name]
        assert self.gptq is not None
        arrays = {
            part: shard.tensor_bytes(info.name).view(_NUMPY_DTYPES[info.dtype]).reshape(info.shape)
            for part, (shard, info) in parts.items()
        }
        layer = unpack_gptq(
            self._gptq_prefix[name],
            self.gptq,
            arrays["qweight"],
            arrays["qzeros"],
            arrays["scales"],
            arrays.get("g_idx"),
        )
        heads = self._permuted.get(name)
        if heads is None:
            return layer
        rows = layer.codes.shape[0]
        # _permute_rows' order: row (head, pair i, half j) of the result is row (head, half j, pair i)
        return layer.permute_rows(np.arange(rows).reshape(heads, 2, -1).swapaxes(1, 2).reshape(-1))

    @property
    def source_label(self) -> str | None:
        """ "native GPTQ w4g128" for a GPTQ folder (tmac_core.plan.gptq_label), None for a float one."""
        if self.gptq is None:
            return None
        return gptq_label(gptq_type(self.gptq.bits, self.gptq.group_size, self.gptq.desc_act))

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> HFModel:
        """Open a model folder.

        Raises:
            ModelLoadError: no such folder, or no weights in it.
            ModelFormatError: a malformed config.json, index or safetensors file; a shard
                outside the folder; the index and the shards disagree.
            UnsupportedModelError: pickle weights only; an architecture or dtype we do not run.
        """
        root = Path(folder).resolve()
        if not root.is_dir():
            raise ModelLoadError(f"{root}: not a model folder")
        data = read_json_file(confined_file(root, CONFIG_FILE, (".json",), "config"), CONFIG_FILE)
        config_from_hf(data, str(root / CONFIG_FILE))  # refuse a bad config before opening any weights
        gptq = gptq_config(data if isinstance(data, dict) else None, _quantize_config(root))
        shards = _open_shards(root)
        try:
            return cls(root, data, shards, gptq)
        except BaseException:
            for shard in shards:
                shard.close()
            raise

    def __enter__(self) -> HFModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for shard in self._shards:
            shard.close()

    def release(self, name: str) -> None:
        """Drop the pages of the source tensors behind `name` (a GPTQ layer's or a packed BitNet
        projection's parts included) from resident memory, as GGUFFile.release does."""
        sources = [(shard, info.name) for shard, info in self._gptq_parts.get(name, {}).values()]
        sources += [(shard, info.name) for shard, info in self._bitnet_parts.get(name, {}).values()]
        if name in self._where:
            sources.append(self._where[name])
        for shard, hf_name in sources:
            shard.release(hf_name)

    def tensor_bytes(self, name: str) -> np.ndarray:
        """One tensor's bytes under its GGUF name, Llama's q/k rows already permuted (KeyError if absent)."""
        info = self.tensors[name]
        if name in self._gptq_parts:
            raise UnsupportedModelError(f"{self.path}: {name} is a GPTQ layer, not a GGML tensor (gptq_layer reads it)")
        shard, hf_name = self._where[name]
        raw = shard.tensor_bytes(hf_name)
        if name in self._latent:
            dtype = self._where[name][0].tensors[hf_name].dtype
            w = raw.view(_FLOAT_VIEWS[dtype])
            w = (w.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else w.astype(np.float32)
            if not np.isfinite(w).all():
                raise ModelFormatError(shard.path, f"tensor {hf_name!r}", info.offset, "holds NaN or infinite weights")
            return i2_s_bytes(*ternarize(w))
        if name in self._bitnet_gamma:
            codes = unpack_bitnet(raw.reshape(-(-info.shape[1] // 4), info.shape[0]), info.shape[1])
            if (codes == 3).any():
                raise ModelFormatError(
                    shard.path,
                    f"tensor {hf_name!r}",
                    info.offset,
                    f"holds the code 3 ({int((codes == 3).sum())} times)",
                )
            heads = self._permuted.get(name)
            if heads is not None:  # a Llama q/k projection (one γ per tensor: rows move freely)
                codes = _permute_rows(codes, heads)
            encode = tq2_0_bytes if info.ggml_type is GGMLType.TQ2_0 else i2_s_bytes
            return encode(codes.reshape(-1), self._bitnet_gamma[name])
        heads = self._permuted.get(name)
        if heads is None:
            return raw
        return _permute_rows(raw.reshape(info.shape[1], -1), heads)

    def content_digest(self, progress: Callable[[float], None] | None = None, known: str | None = None) -> str:
        """sha256 over config.json and every weight file (by name and content) and MAPPING_VERSION:
        the repacked-cache key of a folder, as a GGUF file's own sha256 is for a file.

        known: a digest of the folder the caller already has (a download manifest's); it then
        stands for the files, and no file is read."""
        h = hashlib.sha256(f"tmac-hf-folder v{MAPPING_VERSION}\n".encode())
        if known is not None:
            h.update(known.encode())
            return h.hexdigest()
        files = [self.folder / CONFIG_FILE] + [Path(s.path) for s in self._shards]
        if (self.folder / QUANTIZE_CONFIG_FILE).is_file():  # it decides how GPTQ tensors read
            files.insert(1, self.folder / QUANTIZE_CONFIG_FILE)
        total = sum(f.stat().st_size for f in files) or 1
        done = 0
        for f in files:
            size = f.stat().st_size
            base = done

            def report(n: int, _total: int, base: int = base) -> None:
                if progress:
                    progress(min(1.0, (base + n) / total))

            h.update(f"{f.name}\0{sha256_file(f, progress=report)}\n".encode())
            done += size
        return h.hexdigest()


def _quantize_config(root: Path) -> Any:
    """quantize_config.json of the folder, parsed, or None when it has none."""
    if not ((root / QUANTIZE_CONFIG_FILE).exists() or (root / QUANTIZE_CONFIG_FILE).is_symlink()):
        return None
    path = confined_file(root, QUANTIZE_CONFIG_FILE, (".json",), "quantization config")
    return read_json_file(path, QUANTIZE_CONFIG_FILE)


def _open_shards(root: Path) -> list[SafetensorsFile]:
    """The safetensors files of the folder: model.safetensors, else those the index names."""
    if (root / SINGLE_FILE).exists() or (root / SINGLE_FILE).is_symlink():
        return [SafetensorsFile.open(confined_file(root, SINGLE_FILE, (".safetensors",), "weights"))]
    if not ((root / INDEX_FILE).exists() or (root / INDEX_FILE).is_symlink()):
        pickles = list(pickle_files(root))
        if pickles:
            raise UnsupportedModelError(
                f"{root}: the weights are pickle files ({', '.join(pickles[:3])}), which can run code when"
                " loaded and are never opened; use the model's safetensors version"
            )
        raise ModelLoadError(f"{root}: no {SINGLE_FILE} or {INDEX_FILE}")
    index_path = confined_file(root, INDEX_FILE, (".json",), "index")
    index = read_json_file(index_path, INDEX_FILE)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFormatError(str(index_path), "weight_map", None, "expected a non-empty object")
    names = sorted(set(weight_map.values()), key=str)
    if len(names) > MAX_SHARDS:
        raise ModelFormatError(str(index_path), "weight_map", None, f"{len(names)} shards, more than {MAX_SHARDS}")
    for tensor, shard_name in weight_map.items():
        if not isinstance(shard_name, str):
            raise ModelFormatError(str(index_path), f"weight_map[{tensor!r}]", None, "expected a file name")
    paths = {name: confined_file(root, name, (".safetensors",), f"{INDEX_FILE} shard") for name in names}
    if len(set(paths.values())) != len(paths):
        raise ModelFormatError(str(index_path), "weight_map", None, "two shard names are the same file")
    shards: list[SafetensorsFile] = []
    try:
        for name in names:
            shards.append(SafetensorsFile.open(paths[name]))
        _check_index(str(index_path), weight_map, dict(zip(names, shards)))
    except BaseException:
        for shard in shards:
            shard.close()
        raise
    return shards


def _check_index(index_path: str, weight_map: dict[str, str], shards: dict[str, SafetensorsFile]) -> None:
    """The index and the shards must agree on every tensor: one truth about where each lives."""
    seen: dict[str, str] = {}
    for shard_name, shard in shards.items():
        for tensor in shard.tensors:
            if tensor in seen:
                raise ModelFormatError(shard.path, f"tensor {tensor!r}", None, f"also in shard {seen[tensor]!r}")
            seen[tensor] = shard_name
    for tensor, shard_name in seen.items():
        if weight_map.get(tensor) != shard_name:
            where = "is not in the index" if tensor not in weight_map else f"is indexed in {weight_map[tensor]!r}"
            raise ModelFormatError(index_path, f"weight_map[{tensor!r}]", None, f"in shard {shard_name!r} but {where}")
    for tensor, shard_name in weight_map.items():
        if tensor not in seen:
            raise ModelFormatError(index_path, f"weight_map[{tensor!r}]", None, f"not in shard {shard_name!r}")


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    return os.path.isdir(path)


def inspect_folder(path: str | os.PathLike[str]) -> ModelSummary:
    """tmac_core.inspect_model for a folder: config, every tensor's name, dtype and shape; no data read."""
    with HFModel.open(path) as model:
        counts: dict[str, int] = {}
        for info in model.tensors.values():
            counts[info.ggml_type.name] = counts.get(info.ggml_type.name, 0) + info.n_elements
        return ModelSummary(
            path=model.path,
            name=model.folder.name,
            gguf_arch=model.config.arch,
            config=model.config,
            n_params=sum(counts.values()),
            file_size=model.file_size,
            file_type=model.source_label or (max(counts, key=counts.__getitem__) if counts else "?"),
            tensor_types={name: info.ggml_type.name for name, info in model.tensors.items()},
            gguf_version=0,
        )
