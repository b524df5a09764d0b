"""loading/exact.py against ggml: the weights the kernels compute with, decoded exactly as the
kernels decode them (kernels/LAYOUT.md v2), equal the `gguf` package's dequantization.

Tensors are written with the `gguf` package into a real GGUF file and read back with our
reader. Where the package can quantize a type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0)
the bytes come from its quantizer; every type also gets random bytes, which are valid
blocks once their fp16 scale fields are finite (K-quants cannot be quantized by the
package, and random bytes reach every code, sub-scale and sub-block position).

The claim, type by type (the `gguf` package computes each ggml weight in fp32 with every
product exact, so its result is the real weight v rounded once to fp32):
- bit for bit, every weight: Q4_0, Q5_0, Q8_0, TQ1_0, TQ2_0 (F16 format, whenever the
  tensor's largest |d| < 2^15: the packer's power-of-two tensor scale then keeps every
  d/2 an fp16 value), and Q3_K, Q6_K (SUPER with no mins: the offset is exact);
- SUPER with mins (Q2_K, Q4_K, Q5_K, Q4_1, Q5_1): the kernel's offset
  c = fl32(kb*d*sc - dmin*mn) is the only rounding on our side, so
  |ours - ggml| <= ulp32(c)/2 + ulp32(ggml)/2 <= one fp32 ulp at max(|w|, |c|),
  and bit for bit (after rounding ours to fp32) in every group whose c is exact.
"""

from __future__ import annotations

import gguf
import gguf.quants as gq
import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import make_activations, nmse
from tests.runtime.kquant_writer import quantize as quantize_k
from tmac_core.errors import ModelFormatError
from tmac_core.loading.exact import ExactF16, ExactSuper, decompose, decompose_tensor, f16_tensor_scale
from tmac_core.loading.gguf import BLOCK_LAYOUT, GGMLType, GGUFFile
from tmac_core.loading.repack import pack_exact
from tmac_core.plan import EXACT_SOURCES

# byte offsets of each type's fp16 scale fields inside its block (ggml-common.h)
HALVES = {
    "Q4_0": (0,),
    "Q5_0": (0,),
    "Q8_0": (0,),
    "Q4_1": (0, 2),
    "Q5_1": (0, 2),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "TQ1_0": (52,),
    "TQ2_0": (64,),
}
QUANTIZABLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0")  # gguf.quants.quantize
F16_TYPES = ("Q4_0", "Q5_0", "Q8_0", "TQ1_0", "TQ2_0")
NO_MINS = ("Q3_K", "Q6_K")
# (rows, row length): one row, ragged row counts (not a multiple of the 64-row tile), several blocks
SHAPES = [(1, 256), (67, 512), (130, 768)]


def random_blocks(rng: np.random.Generator, type_name: str, m: int, k: int, wide: bool) -> np.ndarray:
    """(m, row_bytes) random blocks whose fp16 fields are finite: |d| in [2^-24, 2^15) when
    `wide` (every exponent, subnormals and zeros too), else one realistic binade per row."""
    block, block_bytes = BLOCK_LAYOUT[GGMLType[type_name]]
    raw = rng.integers(0, 256, (m * k // block, block_bytes), dtype=np.uint8)
    for at in HALVES[type_name]:
        if wide:
            h = np.ldexp(rng.uniform(-1, 1, len(raw)), rng.integers(-24, 15, len(raw)))
            h[rng.random(len(raw)) < 0.02] = 0.0
        else:
            h = np.repeat(rng.uniform(0.5, 1.0, m) * 2.0**-8, k // block) * rng.uniform(0.25, 1, len(raw))
        raw[:, at : at + 2] = h.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(m, -1)


def quantized_blocks(rng: np.random.Generator, type_name: str, m: int, k: int) -> np.ndarray:
    w = rng.standard_normal((m, k)).astype(np.float32) * rng.uniform(0.01, 0.1, (m, 1)).astype(np.float32)
    return gq.quantize(w, gguf.GGMLQuantizationType[type_name])


def write_and_read(tmp_path, type_name: str, raw: np.ndarray) -> tuple[GGUFFile, str]:
    """raw (m, row_bytes) as tensor "w" of a GGUF file written by the gguf package, opened by our reader."""
    path = tmp_path / f"{type_name}.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("w", raw, raw_dtype=gguf.GGMLQuantizationType[type_name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFFile.open(path), "w"


def kernel_decode(ex: ExactF16 | ExactSuper) -> tuple[np.ndarray, np.ndarray]:
    """The float64 weights (M, K) the kernels compute with, and the fp32 offset c per weight.

    SUPER, LAYOUT_V2 §3, in fp32: sh = (0.5f*D)*sf exactly; c = fmaf(kb*D, sf, -(Dm*mf)).
    The fma is emulated by one float64 evaluation rounded to fp32, which is the same: kb*D
    and Dm*mf are exact in fp32, and every term is a multiple of 2^-25 below 2^28 (fp16
    d >= 2^-24, kb a multiple of 1/2, |sc| <= 128), so kb*D*sf - Dm*mf is exact in float64
    and fmaf's single rounding is its rounding to fp32.
    F16 (kernels/layout.py pack_arrays): s/2 and s*((2^b-1)/2 - z) over a power-of-two
    tensor scale, rounded to fp16.
    Then w = 2*sh*q - sh*(2^b - 1) + c in float64 (exact here: the terms are again
    multiples of 2^-25 below 2^28).
    """
    q = ex.codes.astype(np.float64)
    g = np.arange(q.shape[1]) // ex.group_size
    if isinstance(ex, ExactSuper):
        u = (np.arange(q.shape[1]) // ex.group_size * ex.group_size) // ex.super_size
        per_group = np.arange(q.shape[1] // ex.group_size) * ex.group_size // ex.super_size
        d, dmin = ex.d.astype(np.float32)[:, per_group], ex.dmin.astype(np.float32)[:, per_group]
        sf, mf = ex.sc.astype(np.float32), ex.mn.astype(np.float32)
        sh = (np.float32(0.5) * d) * sf
        kbd = np.float32(ex.code_offset) * d
        c = (kbd.astype(np.float64) * sf - (dmin * mf).astype(np.float64)).astype(np.float32)
        assert u.shape == g.shape
    else:
        s, z = ex.scales.astype(np.float64), ex.zeros.astype(np.float64)
        half, offset = s / 2, s * (((1 << ex.bits) - 1) / 2 - z)
        peak = max(np.abs(half).max(), np.abs(offset).max())
        ts = 1.0 if peak == 0 else 2.0 ** (np.floor(np.log2(peak)) - 14)
        sh = (half / ts).astype(np.float16).astype(np.float64) * ts
        c = ((offset / ts).astype(np.float16).astype(np.float64) * ts).astype(np.float32)
    sh64, c64 = sh.astype(np.float64)[:, g], c.astype(np.float64)[:, g]
    return 2 * sh64 * q - sh64 * ((1 << ex.bits) - 1) + c64, c[:, g]


def exact_offsets(ex: ExactSuper) -> np.ndarray:
    """Per weight: whether the kernel's fp32 offset c is the exact kb*d*sc - dmin*mn."""
    per_group = np.arange(ex.sc.shape[1]) * ex.group_size // ex.super_size
    d, dmin = ex.d.astype(np.float64)[:, per_group], ex.dmin.astype(np.float64)[:, per_group]
    exact = ex.code_offset * d * ex.sc - dmin * ex.mn  # float64: exact (see kernel_decode)
    return np.repeat(exact.astype(np.float32) == exact, ex.group_size, axis=1)


def ggml(type_name: str, raw: np.ndarray) -> np.ndarray:
    return gq.dequantize(raw, gguf.GGMLQuantizationType[type_name])


def check_against_ggml(
    type_name: str, ex: ExactF16 | ExactSuper, raw: np.ndarray, ours: np.ndarray | None = None
) -> int:
    """Asserts the module docstring's claim for one tensor (ours: the kernels' decode of the
    packed weight; default: kernel_decode's); returns how many weights were only within the
    bound (not bit for bit)."""
    ref = ggml(type_name, raw)  # fp32 (M, K)
    emulated, c = kernel_decode(ex)
    ours = emulated if ours is None else ours
    assert ref.dtype == np.float32 and ours.shape == ref.shape
    if type_name in F16_TYPES or type_name in NO_MINS:
        assert np.array_equal(ours.astype(np.float32), ref)  # bit for bit (±0 compare equal)
        if type_name in F16_TYPES or type_name == "Q3_K":
            assert np.array_equal(ours, ref.astype(np.float64))  # even before rounding: ggml's are exact
        return 0
    assert isinstance(ex, ExactSuper)
    exact = exact_offsets(ex)
    assert np.array_equal(ours.astype(np.float32)[exact], ref[exact])
    bound = 0.5 * np.spacing(np.abs(c)).astype(np.float64) + 0.5 * np.spacing(np.abs(ref)).astype(np.float64)
    assert (np.abs(ours - ref.astype(np.float64)) <= bound).all()
    one_ulp = np.spacing(np.maximum(np.abs(ref), np.abs(c))).astype(np.float64)
    assert (np.abs(ours - ref.astype(np.float64)) <= one_ulp).all()
    return int((~exact).sum())


@pytest.mark.parametrize("type_name", sorted(EXACT_SOURCES))
@pytest.mark.parametrize("m, k", SHAPES)
def test_random_blocks_decode_to_ggml(tmp_path, type_name, m, k):
    rng = np.random.default_rng([m, k, *type_name.encode()])
    raw = random_blocks(rng, type_name, m, k, wide=True)
    f, name = write_and_read(tmp_path, type_name, raw)
    ex = decompose_tensor(f, name)
    fmt = EXACT_SOURCES[type_name]
    assert (ex.bits, ex.group_size) == (fmt.bits, fmt.group_size)
    assert isinstance(ex, ExactSuper) == bool(fmt.super_size)
    assert ex.codes.shape == (m, k) and ex.codes.dtype == np.uint8 and ex.codes.max() < 1 << ex.bits
    inexact = check_against_ggml(type_name, ex, raw)
    if type_name not in F16_TYPES + NO_MINS and m > 1:
        assert inexact > 0  # wide exponents do reach offsets fp32 must round: the bound is exercised
    f.close()


@pytest.mark.parametrize("type_name", QUANTIZABLE)
@pytest.mark.parametrize("m, k", [(3, 96), (67, 512)])
def test_gguf_quantized_tensors_decode_to_ggml(tmp_path, type_name, m, k):
    if k % BLOCK_LAYOUT[GGMLType[type_name]][0]:
        pytest.skip("row is not whole blocks of this type")
    raw = quantized_blocks(np.random.default_rng(m + k), type_name, m, k)
    f, name = write_and_read(tmp_path, type_name, raw)
    check_against_ggml(type_name, decompose_tensor(f, name), raw)
    f.close()


@pytest.mark.parametrize("type_name", ["Q4_K", "Q5_K", "Q2_K", "Q4_1"])
def test_realistic_k_quant_scales_are_almost_always_bit_exact(type_name):  # measured: all of them
    # one realistic binade of d and dmin per row: the offset c needs < 24 bits nearly always
    raw = random_blocks(np.random.default_rng(7), type_name, 64, 1024, wide=False)
    ex = decompose(raw, GGMLType[type_name], 1024)
    assert isinstance(ex, ExactSuper)
    assert check_against_ggml(type_name, ex, raw) <= raw.shape[0] * 1024 // 100


@pytest.mark.parametrize("type_name", sorted(EXACT_SOURCES))
def test_row_ranges_are_the_rows_of_the_whole(tmp_path, type_name):
    raw = random_blocks(np.random.default_rng(1), type_name, 70, 512, wide=True)
    f, name = write_and_read(tmp_path, type_name, raw)
    whole = decompose_tensor(f, name)
    parts = [decompose_tensor(f, name, (a, b)) for a, b in [(0, 1), (1, 64), (64, 70)]]
    for field in ("codes", "scales", "zeros", "d", "dmin", "sc", "mn"):
        if hasattr(whole, field):
            joined = np.concatenate([getattr(p, field) for p in parts])
            assert np.array_equal(joined.view(np.uint8), getattr(whole, field).view(np.uint8)), field
    with pytest.raises(ValueError, match="rows"):
        decompose_tensor(f, name, (60, 71))
    with pytest.raises(ValueError, match="rows"):
        decompose_tensor(f, name, (5, 5))
    f.close()


@pytest.mark.parametrize("type_name", ["Q4_K", "Q8_0", "Q6_K"])
def test_a_nan_scale_names_the_tensor(tmp_path, type_name):
    raw = random_blocks(np.random.default_rng(2), type_name, 4, 256, wide=True)
    at = HALVES[type_name][-1]
    raw[2, at : at + 2] = np.array([np.nan], np.float16).view(np.uint8)
    f, name = write_and_read(tmp_path, type_name, raw)
    with pytest.raises(ModelFormatError, match="'w'"):
        decompose_tensor(f, name)
    decompose_tensor(f, name, (0, 1))  # the rows without it are fine
    f.close()


def test_types_without_an_exact_format_and_partial_rows_are_refused():
    with pytest.raises(ValueError, match="no exact"):
        decompose(np.zeros(512, np.uint8), GGMLType.F16, 256)
    with pytest.raises(ValueError, match="whole rows"):
        decompose(np.zeros(144 * 3, np.uint8), GGMLType.Q4_K, 512)
    with pytest.raises(ValueError, match="whole rows"):
        decompose(np.zeros(34, np.uint8), GGMLType.Q8_0, 48)


@pytest.mark.parametrize("type_name", sorted(EXACT_SOURCES))
@pytest.mark.parametrize("m, k", [(1, 256), (67, 512)])
def test_packed_weights_are_what_the_decomposition_says(type_name, m, k):
    """The kernel layout's own decode (kernels.dequantize) is kernel_decode's, bit for bit,
    so the claim above holds for what the kernels hold."""
    raw = random_blocks(np.random.default_rng([m, 3, *type_name.encode()]), type_name, m, k, wide=True)
    ex = decompose(raw, GGMLType[type_name], k)
    packed = pack_exact(ex)
    fmt = EXACT_SOURCES[type_name]
    assert (packed.bits, packed.group_size, packed.super_size) == (fmt.bits, fmt.group_size, fmt.super_size)
    assert packed.scale_format == fmt.scale_format
    got = K.dequantize(packed)
    assert np.array_equal(got, kernel_decode(ex)[0])
    check_against_ggml(type_name, ex, raw, got)


TIERS = ["generic", *(t for t in K.available_tiers() if t != "generic")]
MAX_NMSE = 1e-3  # tests/kernels/test_kernels_vs_generic.py: the activation tables' int8 quantization


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("type_name", sorted(EXACT_SOURCES))
def test_gemv_matches_float64_with_ggml_weights(type_name, tier):
    """A product through the kernels equals x @ W.T in float64 with ggml's weights, within
    the activation tables' quantization (the weights themselves are exact, above)."""
    rng = np.random.default_rng([5, *type_name.encode()])
    m, k = 96, 512
    x_float = rng.standard_normal((m, k)).astype(np.float32) * 0.05
    if type_name in QUANTIZABLE:
        raw = gq.quantize(x_float, gguf.GGMLQuantizationType[type_name])
    else:  # realistic K-quant blocks (random ones have scales across 40 binades)
        raw = quantize_k(x_float, type_name)
    packed = pack_exact(decompose(raw, GGMLType[type_name], k))
    x = make_activations(rng, 3, k)
    ref = x.astype(np.float64) @ ggml(type_name, raw).astype(np.float64).T
    got = K.gemm(packed, x, tier=tier)
    assert nmse(ref, got) <= MAX_NMSE
    assert np.array_equal(K.gemv(packed, x[0], tier=tier), got[0])


@pytest.mark.parametrize("type_name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_the_k_quant_test_writer_writes_blocks_ggml_reads(type_name):
    """tests/runtime/kquant_writer.py (used above and for the perplexity comparison) is a real
    quantizer: ggml's decode of its blocks is close to the input (a wrong bit layout is ~100%)."""
    x = np.random.default_rng(9).standard_normal((4, 1024)).astype(np.float32)
    y = ggml(type_name, quantize_k(x, type_name))
    rel = {"Q2_K": 0.4, "Q3_K": 0.2, "Q4_K": 0.1, "Q5_K": 0.05, "Q6_K": 0.025}[type_name]
    assert np.sqrt(((y - x) ** 2).mean() / (x**2).mean()) <= rel


@pytest.mark.parametrize("type_name", sorted(EXACT_SOURCES))
def test_row_ranges_pack_as_the_whole_matrix(tmp_path, type_name):
    """A streaming loader packs 64-row pieces with the whole matrix's tensor_scale
    (f16_tensor_scale): each piece's weights are the whole matrix's rows, bit for bit."""
    raw = random_blocks(np.random.default_rng(4), type_name, 150, 512, wide=True)
    f, name = write_and_read(tmp_path, type_name, raw)
    whole = pack_exact(decompose_tensor(f, name))
    ts = f16_tensor_scale(f, name)
    assert (ts is None) == bool(EXACT_SOURCES[type_name].super_size)
    assert whole.tensor_scale == (1.0 if ts is None else ts)
    dense = K.dequantize(whole)
    for a, b in [(0, 64), (64, 128), (128, 150)]:
        piece = pack_exact(decompose_tensor(f, name, (a, b)), ts)
        assert piece.tensor_scale == whole.tensor_scale
        assert np.array_equal(K.dequantize(piece), dense[a:b])
    f.close()


def test_the_embedded_models_weights_are_ggmls_bit_for_bit(smollm2):
    """A real file (SmolLM2's Q4_1 matrices, realistic d and m): every packed weight equals
    the gguf package's dequantization, bit for bit, not only within the bound."""
    with GGUFFile.open(smollm2) as f:
        for name, rows in [
            ("blk.0.attn_q.weight", None),
            ("blk.29.ffn_down.weight", None),
            ("token_embd.weight", (0, 2048)),
        ]:
            info = f.tensors[name]
            ex = decompose_tensor(f, name, rows)
            ours = K.dequantize(pack_exact(ex))
            row_bytes = f.tensor_bytes(name).nbytes // int(np.prod(info.shape[1:]))
            a, b = rows or (0, ours.shape[0])
            raw = np.asarray(f.tensor_bytes(name)[a * row_bytes : b * row_bytes]).reshape(b - a, row_bytes)
            assert np.array_equal(ours.astype(np.float32), ggml(info.ggml_type.name, raw)), name
