"""GGUF tensors -> kernel layout (tmac_core.kernels.PackedWeight), as in the file or at 2/4 bits.

bits=None, "as in the file": every type of tmac_core.plan.EXACT_SOURCES keeps its
codes and scale fields (loading/exact.py: K-quants, Q4_0..Q8_0, TQ1_0/TQ2_0), each
tensor at its own bits; float and non-linear types are requantized at 4 bits.
bits=4 / 2, the smaller/faster presets: Q4_0 at 4 bits keeps its codes and 32-wide
groups, Q4_1 its 32-wide blocks with int8 sub-scales (SUPER format), TQ1_0/TQ2_0 at 2
bits their ternary codes; everything else is
dequantized and requantized by our own quantizer, which picks each group's scale and
zero point to minimise a weighted squared error (a clipping search, then a
least-squares refit), not plain min/max.
Imports numpy, the loaders and the kernels' packers: no Qt.
"""

from __future__ import annotations

import numpy as np

from tmac_core.errors import ModelFormatError
from tmac_core.kernels import PackedWeight, pack, pack_super
from tmac_core.loading.dequant import check_finite, dequantize_tensor, i2_s_codes
from tmac_core.loading.exact import Exact, ExactF16, decompose_tensor

# our quantizer (the importance-weighted clipping search + least-squares refit) runs in C
from tmac_core.loading.fastquant import Quantized, quantize_bf16
from tmac_core.loading.fastquant import quantize as quantize
from tmac_core.loading.gguf import GGMLType, GGUFFile
from tmac_core.plan import EXACT_GROUPS, FALLBACK_BITS, exact_format, kept_symmetric, preset_super_size


def pack_exact(ex: Exact, tensor_scale: float | None = None) -> PackedWeight:
    """An exact decomposition in the kernel layout: its own scale format, bits and groups.

    tensor_scale: for the F16 format of a matrix packed in row ranges, the whole matrix's
        (exact.f16_tensor_scale); None derives it from these rows. SUPER ignores it (1).
    A symmetric decomposition (one zero code, or no mins) packs to F16_SYM / SUPER_NOMIN.
    """
    if isinstance(ex, ExactF16):
        return pack(
            ex.codes,
            ex.scales,
            ex.zeros,
            bits=ex.bits,
            group_size=ex.group_size,
            tensor_scale=tensor_scale,
            symmetric=ex.symmetric,
        )
    return pack_super(
        ex.codes,
        ex.d,
        None if ex.symmetric else ex.dmin,
        ex.sc,
        None if ex.symmetric else ex.mn,
        bits=ex.bits,
        group_size=ex.group_size,
        super_size=ex.super_size,
        code_offset=ex.code_offset,
    )


def _q4_1_at_4_bits(gguf: GGUFFile, name: str) -> PackedWeight:
    """The 4-bit preset's Q4_1 in the SUPER format (plan.preset_super_size): per super-block of S
    weights fp16 d = max(d)/127 and dmin = max|m|/127, per 32 int8 sc = rint(d/D) and mn = rint(-m/Dm),
    then each code re-rounded to the nearest point of its block's new grid (the file's weights
    w = d*q + m are the target). Adds ~1% RMS to the weights against Q4_1's own ~8% step noise."""
    ex = decompose_tensor(gguf, name)
    assert not isinstance(ex, ExactF16)  # Q4_1 decomposes to SUPER with sc = mn = 1, dmin = -m
    m_rows, k = ex.codes.shape
    s = preset_super_size(4, k, "Q4_1")
    per, n_blocks = s // 32, k // 32
    d, neg_m = ex.d.astype(np.float32), ex.dmin.astype(np.float32)  # (M, K/32) each
    w = d[:, :, None] * ex.codes.reshape(m_rows, n_blocks, 32) - neg_m[:, :, None]  # (M, K/32, 32)
    big_d = (d.reshape(m_rows, -1, per).max(axis=2) / 127).astype(np.float16)  # (M, K/S)
    big_dmin = (np.abs(neg_m).reshape(m_rows, -1, per).max(axis=2) / 127).astype(np.float16)
    each_d = np.repeat(big_d.astype(np.float32), per, axis=1)  # (M, K/32)
    each_dmin = np.repeat(big_dmin.astype(np.float32), per, axis=1)
    sc = np.clip(np.rint(d / np.where(each_d == 0, 1, each_d)), 0, 127)
    mn = np.clip(np.rint(neg_m / np.where(each_dmin == 0, 1, each_dmin)), -127, 127)
    step = each_d * sc  # (M, K/32); 0 for a constant block, whose codes are then 0 (w = -dmin*mn)
    q = np.rint((w + (each_dmin * mn)[:, :, None]) / np.where(step == 0, 1, step)[:, :, None])
    codes = np.where(step[:, :, None] == 0, 0, np.clip(q, 0, 15)).astype(np.uint8).reshape(m_rows, k)
    return pack_super(
        codes,
        big_d,
        big_dmin,
        sc.astype(np.int8),
        mn.astype(np.int8),
        bits=4,
        group_size=32,
        super_size=s,
        code_offset=7.5,
    )


TERNARY_TYPES = (GGMLType.TQ1_0, GGMLType.TQ2_0, GGMLType.I2_S)


def _exact_ternary(gguf: GGUFFile, name: str, bits: int, group_size: int, symmetric: bool) -> PackedWeight:
    """Ternary weights t·s (t in {−1, 0, 1}) with the source's scale s: TQ's per
    256-block (so group_size must divide 256), I2_S's one per tensor (any group).

    Exact at every bits: codes t + 2^(b−1) − 1 with z = 2^(b−1) − 1 (codes 0, 1, 2 and
    z = 1 at 2 bits) make the kernel's offset term c = s·((2^b − 1)/2 − z) = s/2, as
    exact in fp16 as s/2 itself (z = 1 at 4 bits would give 6.5·s, which rounds). TQ's
    s is fp16 already. I2_S's fp32 γ would round to fp16 in the scales: its codes are
    packed with s = 1 and γ goes into tensor_scale, the fp32 multiplier the kernel
    applies once at the end (kernels/LAYOUT.md §Epilogue), so γ stays fp32. symmetric: the
    F16_SYM format (one zero code, zero_mult = +1), as the plan says (plan.kept_symmetric)."""
    info = gguf.tensors[name]
    k, m_rows = info.shape[0], int(np.prod(info.shape[1:]))
    offset = (1 << (bits - 1)) - 2  # 0 at 2 bits, 6 at 4 bits
    gamma = None
    if info.ggml_type is GGMLType.I2_S:
        try:
            flat, gamma = i2_s_codes(gguf.tensor_bytes(name))
        except ValueError as e:
            raise ModelFormatError(gguf.path, f"tensor {name!r}", info.offset, str(e)) from None
        check_finite(gguf, name, np.array([gamma], np.float32))
        codes = flat.reshape(m_rows, k)
        scales = np.full((m_rows, k // group_size), 1.0 if gamma > 0 else 0.0, np.float32)
    else:
        w = dequantize_tensor(gguf, name).reshape(m_rows, k // 256, 256)
        d = np.abs(w).max(axis=2)  # TQ scale per 256 = the nonzero magnitude
        codes = (np.rint(w / np.where(d == 0, 1, d)[:, :, None]).astype(np.int8) + 1).reshape(m_rows, k)
        scales = np.repeat(d, 256 // group_size, axis=1)  # 256-blocks split into the plan's groups
    zeros = np.full_like(scales, 1 + offset)
    packed = pack(
        (codes + offset).astype(np.uint8), scales, zeros, bits=bits, group_size=group_size, symmetric=symmetric
    )
    if gamma is None or not gamma > 0:
        return packed
    p = packed
    return PackedWeight(
        p.planes,
        p.scales,
        p.m,
        p.k,
        p.k_pad,
        p.bits,
        p.group_size,
        p.tensor_scale * gamma,
        scale_format=p.scale_format,
        zero_mult=p.zero_mult,
    )


def repack(gguf: GGUFFile, name: str, bits: int | None, group_size: int = 64) -> PackedWeight:
    """One weight matrix of the file in the kernel layout.

    bits: None for "as in the file" (exact where the type allows, else 4 bits by our
        quantizer, as tmac_core.plan.tensor_plan says), or 2 / 4 (1 and 3 also work).
    group_size: our quantizer's group (the exact paths keep the source's).
    """
    info = gguf.tensors[name]
    t = info.ggml_type
    if bits is None:
        if t is GGMLType.I2_S:  # one fp32 scale per tensor: kept exact by tensor_scale, not by exact.py
            return _exact_ternary(gguf, name, 2, group_size, kept_symmetric(t.name))
        if exact_format(t.name, info.shape[0]) is not None:
            return pack_exact(decompose_tensor(gguf, name))
        bits = FALLBACK_BITS
    if bits == 4 and t is GGMLType.Q4_0:
        return pack_exact(decompose_tensor(gguf, name))
    if bits == 4 and t is GGMLType.Q4_1:
        return _q4_1_at_4_bits(gguf, name)
    if bits >= 2 and t in TERNARY_TYPES and 256 % group_size == 0:
        # the plan keeps the ternary codes' format only where it keeps their groups (EXACT_GROUPS)
        kept = EXACT_GROUPS.get((bits, t.name)) == group_size
        return _exact_ternary(gguf, name, bits, group_size, kept and kept_symmetric(t.name))
    k = info.shape[0]
    gs = group_size if k % group_size == 0 else 32
    codes, scales, zeros = _quantize_source(gguf, name, bits, gs)
    return pack(codes, scales, zeros, bits=bits, group_size=gs)


# float types the quantizer reads in place from the mapped file: (numpy view dtype, quantizer)
_IN_PLACE = {
    GGMLType.F32: ("<f4", quantize),
    GGMLType.F16: ("<f2", quantize),
    GGMLType.BF16: ("<u2", quantize_bf16),
}


def _quantize_source(gguf: GGUFFile, name: str, bits: int, group_size: int) -> Quantized:
    """Our quantizer on one matrix: a float tensor read in place from the file (the C quantizer
    converts each group to float32 exactly as dequantize would, so the codes are the same, and
    no float32 copy of the slab is made), any other type dequantized first. A NaN or infinity
    raises dequantize_tensor's ModelFormatError naming the tensor, as before."""
    info = gguf.tensors[name]
    in_place = _IN_PLACE.get(info.ggml_type)
    raw = gguf.tensor_bytes(name).view(in_place[0]).reshape(-1, info.shape[0]) if in_place else None
    if in_place is None or raw is None or not raw.flags.aligned:  # a safetensors tensor may start anywhere
        w = dequantize_tensor(gguf, name)
        return quantize(w.reshape(-1, w.shape[-1]), bits, group_size)
    quantizer = in_place[1]
    try:
        return quantizer(raw, bits, group_size)
    except ValueError:
        dequantize_tensor(gguf, name)  # raises the file's error for a non-finite weight
        raise


def bits_per_weight(packed: PackedWeight) -> float:
    return 8.0 * packed.nbytes / (packed.m * packed.k)
