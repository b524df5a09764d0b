"""GPTQ / GPTQModel / EfficientQAT linear layers -> codes and SUPER scales, exactly, in numpy.

A GPTQ linear layer (K = in_features, N = out_features, G = number of groups) is stored as
  qweight int32 (K*bits/32, N)  codes packed along K, little-endian fields
  qzeros  int32 (G, N*bits/32)  zero points packed along N
  scales  fp16  (G, N)
  g_idx   int32 (K,)            group of each input channel (k // group_size unless act-order)
and means W[k, n] = scales[g, n] * (q[k, n] - z[g, n]) with g = g_idx[k]. 3-bit codes form one
96-bit little-endian stream per 3 words (32 codes; codes 10 and 21 straddle two words).

Zero points: `checkpoint_format` "gptq_v2" stores z; "gptq" (v1, also when absent) stores z - 1,
so we add it back the way transformers' GPTQ backend (GPTQModel) loads v1 files: one word-wide
add of 0x55555555 (2-bit) or 0x11111111 (4-bit), and a per-field (stored + 1) mod 8 for 3-bit.
Every reader agrees on this unless a v1 field holds 2^bits - 1: that is a zero point of 0 that
underflowed when the file was written (the quantizer never makes z = 2^bits). Then readers
differ: exllama-derived CUDA kernels (vLLM's gptq_gemm) add 1 unmasked (z = 2^bits); AutoGPTQ's
torch path and GPTQModel's offline dequantizer (convert_gptq_file) wrap the field (z = 0, the
neighbour as stored); GPTQModel's loader, which transformers uses and we follow, carries into
the neighbour, which restores exactly what GPTQModel's own v2 -> v1 save (a word-wide
subtract) wrote. AutoGPTQ's own writer ORed the -1 in, so its higher fields are lost anyway.

Mislabelled checkpoints: v1 and v2 differ by one in every zero point, so an asymmetric layer
read with the wrong label is merely shifted and cannot be told apart. Symmetric zero points are
fixed constants, so a layer whose zero points all equal the other format's constant is refused.
EfficientQAT's `-GPTQ` exports are GPTQModel gptq_v2 files; its native checkpoints pack 3-bit
codes 10 to a word, which the 3-bit shape checks refuse.

Kernel mapping (kernels layout v2, SUPER scale format; G = S = group, sc = 1, mn = z,
d = dmin = scale, z0 = 0): w = d*sc*q - dmin*mn = scale*(q - z), exact in fp32 since scale has
11 significant bits and q - z at most 5.

Act-order (desc_act): groups are not contiguous in K, and the kernels need contiguous groups.
Putting W's columns back in natural order cannot work (neighbouring channels have different
scales), so we sort K by group once at load (a stable sort of g_idx) and return that
permutation: the kernel matrix's column i is input channel perm[i], so the runtime computes
W' @ x[perm] (one gather of K floats per input vector, shared by every matrix with the same
g_idx, e.g. q/k/v and gate/up, whose GPTQ orderings come from the same input). Each product
term is the same weight times the same activation; only the summation order differs.

Where it runs: loading/hf.py reads the parts of each layer from the folder's safetensors and
calls unpack_gptq; models/loader.gptq_weight packs the result with pack_super and stores an
act-order layer's `perm` beside it (plan.input_perm_name); models/_llama.pyx gathers the
layer's input by it before building the activation tables.

Imports numpy and tmac_core.errors only: no Qt, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from tmac_core.errors import ModelFormatError, UnsupportedModelError

SUPPORTED_BITS = (2, 3, 4)
KERNEL_GROUP_SIZES = (16, 32, 64, 128, 256)  # grouped weights the kernels run; per-channel also
FORMAT_V1 = "gptq"
FORMAT_V2 = "gptq_v2"
_KNOWN_OTHER_BITS = (1, 5, 6, 7, 8)  # GPTQModel writes these (5..7 planar only): valid, not ours
_V1_WORD_ADD = {2: 0x55555555, 4: 0x11111111}  # +1 in every field of an int32 word


@dataclass(frozen=True)
class GPTQConfig:
    """The quantization settings of a GPTQ checkpoint (checked)."""

    bits: int
    group_size: int  # -1: one group per output channel (per-channel)
    sym: bool
    desc_act: bool
    checkpoint_format: str  # FORMAT_V1 or FORMAT_V2

    @property
    def v1(self) -> bool:
        return self.checkpoint_format == FORMAT_V1


def _config_error(source: str, field: str, reason: str) -> ModelFormatError:
    return ModelFormatError(source, f"quantization_config.{field}", None, reason)


def _flag(raw: Mapping[str, object], key: str, default: bool, source: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise _config_error(source, key, f"must be true or false, got {value!r}")
    return value


def _integer(raw: Mapping[str, object], key: str, default: int | None, source: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _config_error(source, key, f"must be an integer, got {value!r}")
    return value


def _checkpoint_format(raw: Mapping[str, object], source: str) -> str:
    # GPTQModel writes both `checkpoint_format` (read by transformers) and `format`.
    named = {}
    for key in ("checkpoint_format", "format"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _config_error(source, key, f"must be a string, got {value!r}")
        named[key] = value.strip().lower()
    if len(set(named.values())) > 1:
        raise _config_error(source, "checkpoint_format", f"contradicts `format`: {named}")
    fmt = next(iter(named.values()), FORMAT_V1)  # absent: v1, as AutoGPTQ wrote it
    if fmt not in (FORMAT_V1, FORMAT_V2):
        raise UnsupportedModelError(
            f"{source}: GPTQ checkpoint format {fmt!r} is not supported (only 'gptq' and 'gptq_v2')"
        )
    return fmt


def parse_gptq_config(raw: Mapping[str, object], *, source: str = "quantize_config.json") -> GPTQConfig:
    """Checks a GPTQ quantization config (quantize_config.json, or config.json's quantization_config)."""
    if not isinstance(raw, Mapping):
        raise _config_error(source, "", f"must be an object, got {type(raw).__name__}")
    method = raw.get("quant_method", "gptq")
    if not isinstance(method, str):
        raise _config_error(source, "quant_method", f"must be a string, got {method!r}")
    if method.lower() != "gptq":
        raise UnsupportedModelError(f"{source}: quant_method {method!r} is not GPTQ")
    bits = _integer(raw, "bits", 4, source)
    if bits not in SUPPORTED_BITS:
        if bits in _KNOWN_OTHER_BITS:
            raise UnsupportedModelError(f"{source}: {bits}-bit GPTQ is not supported (2, 3 or 4 bits)")
        raise _config_error(source, "bits", f"must be 2, 3 or 4, got {bits}")
    group_size = _integer(raw, "group_size", 128, source)
    if group_size != -1 and group_size <= 0:
        raise _config_error(source, "group_size", f"must be -1 (per channel) or positive, got {group_size}")
    pack_dtype = raw.get("pack_dtype", "int32")
    if pack_dtype != "int32":
        raise UnsupportedModelError(f"{source}: GPTQ pack_dtype {pack_dtype!r} is not supported (int32 only)")
    if raw.get("dynamic"):
        raise UnsupportedModelError(f"{source}: per-module GPTQ overrides (`dynamic`) are not supported")
    return GPTQConfig(
        bits=bits,
        group_size=group_size,
        sym=_flag(raw, "sym", True, source),
        desc_act=_flag(raw, "desc_act", False, source),
        checkpoint_format=_checkpoint_format(raw, source),
    )


def gptq_config(
    config_json: Mapping[str, object] | None, quantize_config_json: Mapping[str, object] | None = None
) -> GPTQConfig | None:
    """The GPTQ config of a model folder: config.json's `quantization_config` first (as
    transformers reads it), else quantize_config.json. None when there is none, or when
    config.json names another quant_method (bitnet, awq...): the caller dispatches on it."""
    if config_json is not None and "quantization_config" in config_json:
        raw = config_json["quantization_config"]
        if not isinstance(raw, Mapping):
            raise _config_error("config.json", "", "must be an object")
        method = raw.get("quant_method", "gptq")
        if isinstance(method, str) and method.lower() != "gptq":
            return None
        return parse_gptq_config(raw, source="config.json")
    if quantize_config_json is not None:
        return parse_gptq_config(quantize_config_json, source="quantize_config.json")
    return None


@dataclass(frozen=True)
class GPTQLinear:
    """One GPTQ layer in the kernels' orientation, ready for kernels.pack_super(**super_args())."""

    codes: NDArray[np.uint8]  # (N, K): row n, kernel column i = input channel perm[i]
    d: NDArray[np.float16]  # (N, K // super_size): the GPTQ scales
    dmin: NDArray[np.float16]  # (N, K // super_size): the same scales (w = d*q - dmin*z)
    sc: NDArray[np.int8]  # (N, K // group_size): all 1
    mn: NDArray[np.int8]  # (N, K // group_size): zero points, 0..2^bits
    perm: NDArray[np.int32] | None  # (K,) input channel of each kernel column; None: identity
    bits: int
    group_size: int  # kernel group along K: the GPTQ group, or for per-channel the largest that divides K
    super_size: int  # the GPTQ group (K for per-channel: one scale per row)

    @property
    def code_offset(self) -> float:
        return (2**self.bits - 1) / 2  # kb = (2^bits - 1)/2 - z0 with z0 = 0

    def super_args(self) -> dict[str, object]:
        """Keyword arguments of tmac_core.kernels.pack_super."""
        return {
            "codes": self.codes,
            "d": self.d,
            "dmin": self.dmin,
            "sc": self.sc,
            "mn": self.mn,
            "bits": self.bits,
            "group_size": self.group_size,
            "super_size": self.super_size,
            "code_offset": self.code_offset,
        }

    def permute_rows(self, order: np.ndarray) -> GPTQLinear:
        """The same layer with output rows reordered (row i of the result is row order[i]),
        e.g. llama.cpp's q/k head permutation; every per-row parameter moves with its row."""
        n = self.codes.shape[0]
        order = np.asarray(order)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise ValueError(f"row order must be a permutation of {n} rows")
        return replace(
            self,
            codes=self.codes[order],
            d=self.d[order],
            dmin=self.dmin[order],
            sc=self.sc[order],
            mn=self.mn[order],
        )

    def weight(self) -> NDArray[np.float32]:
        """float32 (N, K) in natural input order: scale * (q - z), exact."""
        k = self.codes.shape[1]
        columns = np.arange(k)
        q_minus_z = self.codes.astype(np.float32) - self.mn.astype(np.float32)[:, columns // self.group_size]
        w = self.d.astype(np.float32)[:, columns // self.super_size] * q_minus_z
        if self.perm is None:
            return w
        natural = np.empty_like(w)
        natural[:, self.perm] = w
        return natural


def _unpack_fields(words: NDArray[np.uint32], bits: int) -> NDArray[np.uint8]:
    """(C, R) words -> (C, R * 32/bits) fields, packed along the last axis (little-endian fields)."""
    c, r = words.shape
    if bits == 3:
        # 3 words = one little-endian 96-bit stream of 32 codes, code j at bits 3j..3j+2 (codes
        # 10 and 21 straddle words). Read it as 4 runs of 3 bytes: 24 bits = 8 whole codes each.
        data = np.ascontiguousarray(words, dtype="<u4").view(np.uint8).reshape(c, r // 3, 4, 3)
        runs = data[..., 0] | (data[..., 1].astype(np.uint32) << 8) | (data[..., 2].astype(np.uint32) << 16)
        out = np.empty((c, r // 3, 4, 8), dtype=np.uint8)
        for j in range(8):
            out[..., j] = (runs >> np.uint32(3 * j)) & np.uint32(7)
        return out.reshape(c, r // 3 * 32)
    # 2/4-bit fields never straddle a byte: field j of a word is in its little-endian byte
    # j // per_byte, so every temporary is uint8 like the result.
    per_byte = 8 // bits
    mask = np.uint8(2**bits - 1)
    data = np.ascontiguousarray(words, dtype="<u4").view(np.uint8)  # (C, 4R)
    out = np.empty((c, 4 * r, per_byte), dtype=np.uint8)
    for s in range(per_byte):
        out[:, :, s] = (data >> np.uint8(bits * s)) & mask
    return out.reshape(c, r * 32 // bits)


def _format_error(name: str, field: str, reason: str) -> ModelFormatError:
    return ModelFormatError(name, field, None, reason)


def _words(name: str, field: str, array: np.ndarray) -> NDArray[np.uint32]:
    if array.dtype not in (np.dtype(np.int32), np.dtype(np.uint32)):
        raise _format_error(name, field, f"must be int32, got {array.dtype}")
    if array.ndim != 2 or array.size == 0:
        raise _format_error(name, field, f"must be a non-empty 2-D array, got shape {array.shape}")
    return np.ascontiguousarray(array).view(np.uint32)


def _zeros(name: str, cfg: GPTQConfig, words: NDArray[np.uint32]) -> NDArray[np.uint8]:
    """(G, N) zero points z from qzeros words (packed along N), v1 offset undone."""
    stored = _unpack_fields(words, cfg.bits)
    _check_zero_labels(name, cfg, stored)
    if not cfg.v1:
        return stored
    if cfg.bits == 3:
        return (stored + np.uint8(1)) & np.uint8(7)
    # wraps mod 2^32 like GPTQModel's int32 add
    return _unpack_fields(words + np.uint32(_V1_WORD_ADD[cfg.bits]), cfg.bits)


def _check_zero_labels(name: str, cfg: GPTQConfig, stored: NDArray[np.uint8]) -> None:
    """What a mislabelled checkpoint gives away. Symmetric zero points are fixed: v1 stores
    2^(bits-1) - 1 in every field, v2 stores 2^(bits-1). A layer whose fields all hold the other
    format's constant is mislabelled v1/v2 (a real asymmetric layer never has one zero everywhere).
    A v1 file read as v2 (or the reverse) with varying zeros is only shifted by one: not detectable."""
    v1_sym, v2_sym = 2 ** (cfg.bits - 1) - 1, 2 ** (cfg.bits - 1)
    own, other = (v1_sym, v2_sym) if cfg.v1 else (v2_sym, v1_sym)
    if stored.size > 1 and np.all(stored == other):
        label, looks = ("gptq (v1)", "gptq_v2") if cfg.v1 else ("gptq_v2", "gptq (v1)")
        raise _format_error(
            name,
            "qzeros",
            f"every stored zero point is {other}, the symmetric zero of {looks}, but checkpoint_format "
            f"says {label}: the checkpoint format is mislabelled",
        )
    if cfg.sym and not np.all(stored == own):
        raise _format_error(
            name, "qzeros", f"sym is true but the stored zero points are not all {own} ({cfg.checkpoint_format})"
        )


def _groups(name: str, cfg: GPTQConfig, k: int) -> tuple[int, int]:
    """(GPTQ group length along K, kernel group size). Per-channel layers (group_size -1, or a
    group as long as K) keep one scale per row as the super-block and repeat the zero point in
    the largest kernel group that divides K."""
    if cfg.group_size == -1 or cfg.group_size >= k:
        for group in reversed(KERNEL_GROUP_SIZES):
            if k % group == 0:
                return k, group
        raise UnsupportedModelError(f"{name}: K = {k} is not a multiple of {KERNEL_GROUP_SIZES[0]}")
    if k % cfg.group_size:
        raise UnsupportedModelError(
            f"{name}: group_size {cfg.group_size} does not divide K = {k} (the kernels need whole groups)"
        )
    if cfg.group_size not in KERNEL_GROUP_SIZES:
        raise UnsupportedModelError(f"{name}: group_size {cfg.group_size} is not one of {KERNEL_GROUP_SIZES}")
    return cfg.group_size, cfg.group_size


def _column_order(
    name: str, cfg: GPTQConfig, g_idx: np.ndarray | None, k: int, group: int, n_groups: int
) -> NDArray[np.int32] | None:
    """The stable sort of K by group, or None when the groups are already contiguous."""
    natural = np.arange(k, dtype=np.int64) // group
    if g_idx is None:
        if cfg.desc_act:
            raise _format_error(name, "g_idx", "desc_act is true but the layer has no g_idx")
        return None
    if g_idx.ndim != 1 or g_idx.shape[0] != k:
        raise _format_error(name, "g_idx", f"must have shape ({k},), got {g_idx.shape}")
    if not np.issubdtype(g_idx.dtype, np.integer):
        raise _format_error(name, "g_idx", f"must be integers, got {g_idx.dtype}")
    groups = g_idx.astype(np.int64)
    if groups.min() < 0 or groups.max() >= n_groups:
        raise _format_error(name, "g_idx", f"values must lie in [0, {n_groups}), got {groups.min()}..{groups.max()}")
    if np.array_equal(groups, natural):
        return None
    if not cfg.desc_act:
        raise _format_error(name, "g_idx", "desc_act is false but g_idx is not k // group_size (act-order mislabelled)")
    counts = np.bincount(groups, minlength=n_groups)
    if not np.all(counts == group):
        raise _format_error(
            name, "g_idx", f"every group must hold {group} channels, got {counts.min()}..{counts.max()}"
        )
    return np.argsort(groups, kind="stable").astype(np.int32)


def unpack_gptq(
    name: str,
    cfg: GPTQConfig,
    qweight: np.ndarray,
    qzeros: np.ndarray,
    scales: np.ndarray,
    g_idx: np.ndarray | None = None,
) -> GPTQLinear:
    """One GPTQ linear layer -> codes (N, K) and SUPER parameters; every shape, value and
    label checked (ModelFormatError / UnsupportedModelError naming the layer and tensor)."""
    bits = cfg.bits
    qweight, qzeros, scales = np.asarray(qweight), np.asarray(qzeros), np.asarray(scales)
    qw = _words(name, "qweight", qweight)
    qz = _words(name, "qzeros", qzeros)
    if scales.ndim != 2 or scales.size == 0:
        raise _format_error(name, "scales", f"must be a non-empty 2-D array, got shape {scales.shape}")
    n_groups, n = scales.shape
    if bits == 3 and qw.shape[0] % 3:
        raise _format_error(
            name,
            "qweight",
            f"3-bit rows come in threes (96-bit streams; EfficientQAT's native 10 codes a word is not GPTQ), "
            f"got {qw.shape[0]}",
        )
    k = qw.shape[0] * 32 // bits
    if qw.shape[1] != n:
        raise _format_error(name, "qweight", f"has {qw.shape[1]} columns but scales has {n}")
    if n * bits % 32 or qz.shape != (n_groups, n * bits // 32):
        want = f"({n_groups}, {n * bits / 32:g})"
        raise _format_error(name, "qzeros", f"must have shape {want} for scales {scales.shape}, got {qz.shape}")
    group, kernel_group = _groups(name, cfg, k)
    if n_groups != k // group:
        raise _format_error(name, "scales", f"must have {k // group} rows (K = {k}, group {group}), got {n_groups}")
    d = _fp16_scales(name, scales)
    perm = _column_order(name, cfg, None if g_idx is None else np.asarray(g_idx), k, group, n_groups)
    # Transposing the int32 words (not the uint8 codes) is the cheap way to rows of K.
    codes = _unpack_fields(np.ascontiguousarray(qw.T), bits)  # (N, K)
    z = _zeros(name, cfg, qz)  # (G, N)
    if perm is not None:
        codes = np.take(codes, perm, axis=1)  # (much faster than codes[:, perm] here)
    d_t = np.ascontiguousarray(d.T)
    repeat = group // kernel_group  # kernel groups per GPTQ group (1 unless per-channel)
    return GPTQLinear(
        codes=codes,
        d=d_t,
        dmin=d_t.copy(),
        sc=np.ones((n, k // kernel_group), dtype=np.int8),
        mn=np.ascontiguousarray(np.repeat(z.T, repeat, axis=1).astype(np.int8)),
        perm=perm,
        bits=bits,
        group_size=kernel_group,
        super_size=group,
    )


def _fp16_scales(name: str, scales: np.ndarray) -> NDArray[np.float16]:
    """fp16 scales; float32 input (a bf16 or fp32 file read wide) only when fp16 holds it exactly."""
    if scales.dtype == np.float16:
        half = scales
    elif scales.dtype == np.float32:
        with np.errstate(over="ignore"):
            half = scales.astype(np.float16)
        same = (half.astype(np.float32) == scales) | (np.isnan(scales) & np.isnan(half))
        if not np.all(same):
            raise UnsupportedModelError(f"{name}: scales are not exactly representable in fp16")
    else:
        raise _format_error(name, "scales", f"must be float16, got {scales.dtype}")
    if not np.all(np.isfinite(half)):
        raise _format_error(name, "scales", "holds inf or nan")
    return half


_GPTQ_PARTS = ("qweight", "qzeros", "scales", "g_idx")


def gptq_linears(
    tensors: Mapping[str, np.ndarray],
    cfg: GPTQConfig,
    gguf_name: Callable[[str], str | None],
    row_order: Callable[[str, int], np.ndarray | None] | None = None,
) -> Iterator[tuple[str, GPTQLinear]]:
    """Every GPTQ linear layer of a checkpoint, under its GGUF name, in name order.

    Args:
        tensors: Hugging Face tensor name -> array (a safetensors reader's mapping; only the
            `<prefix>.qweight/.qzeros/.scales/.g_idx` entries are read).
        cfg: the checkpoint's GPTQ config (gptq_config).
        gguf_name: Hugging Face weight name (`<prefix>.weight`) -> GGUF name, or None for a
            tensor the runtime does not use (skipped).
        row_order: GGUF name, row count -> the output-row order the runtime wants (Llama's
            q/k permutation), or None to keep the checkpoint's order.
    """
    by_prefix: dict[str, set[str]] = {}
    for name in tensors:
        prefix, _, part = name.rpartition(".")
        if part in _GPTQ_PARTS:
            by_prefix.setdefault(prefix, set()).add(part)
    for prefix in sorted(by_prefix):
        parts = by_prefix[prefix]
        missing = [part for part in ("qweight", "qzeros", "scales") if part not in parts]
        if missing:
            raise _format_error(prefix, missing[0], f"GPTQ layer has {sorted(parts)} but no {missing[0]}")
        if f"{prefix}.weight" in tensors:
            raise _format_error(prefix, "weight", "layer has both a float weight and a GPTQ qweight")
        target = gguf_name(f"{prefix}.weight")
        if target is None:
            continue
        layer = unpack_gptq(
            prefix,
            cfg,
            tensors[f"{prefix}.qweight"],
            tensors[f"{prefix}.qzeros"],
            tensors[f"{prefix}.scales"],
            tensors.get(f"{prefix}.g_idx"),
        )
        order = None if row_order is None else row_order(target, layer.codes.shape[0])
        yield target, layer if order is None else layer.permute_rows(order)
