"""Dequantization and quantizers against the `gguf` package (ggml's Python port) and
hand-worked blocks, plus the real SmolLM2 tensors and a speed check."""

from __future__ import annotations

import time

import gguf as gguf_py
import numpy as np
import pytest

from tmac_core.loading.dequant import dequantize, dequantize_tensor
from tmac_core.loading.gguf import BLOCK_LAYOUT, GGMLType, GGUFFile
from tmac_core.loading.gguf_write import encode_tensor, quantize_q4_0, quantize_q4_1, quantize_q8_0

# Byte positions of fp16 scale fields per type (ggml-common.h block structs).
HALF_FIELDS = {
    GGMLType.Q4_0: [0],
    GGMLType.Q4_1: [0, 2],
    GGMLType.Q5_0: [0],
    GGMLType.Q5_1: [0, 2],
    GGMLType.Q8_0: [0],
    GGMLType.Q2_K: [80, 82],
    GGMLType.Q3_K: [108],
    GGMLType.Q4_K: [0, 2],
    GGMLType.Q5_K: [0, 2],
    GGMLType.Q6_K: [208],
    GGMLType.TQ1_0: [52],
    GGMLType.TQ2_0: [64],
}


def _random_blocks(ggml_type: GGMLType, n_blocks: int, seed: int) -> np.ndarray:
    """Random bytes, with every fp16 scale set to a finite value so results compare exactly."""
    rng = np.random.default_rng(seed)
    block, block_bytes = BLOCK_LAYOUT[ggml_type]
    raw = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
    if block == 1 and ggml_type is not GGMLType.BF16:
        return (
            rng.standard_normal(n_blocks)
            .astype(np.float32 if ggml_type is GGMLType.F32 else np.float16)
            .view(np.uint8)
            .reshape(-1)
        )
    for at in HALF_FIELDS.get(ggml_type, []):
        raw[:, at : at + 2] = (rng.standard_normal((n_blocks, 1)) * 0.05).astype("<f2").view(np.uint8)
    return raw.reshape(-1)


@pytest.mark.parametrize("ggml_type", list(BLOCK_LAYOUT), ids=lambda t: t.name)
def test_matches_gguf_package_bit_for_bit(ggml_type):
    block, _ = BLOCK_LAYOUT[ggml_type]
    n_rows, blocks_per_row = 6, 3 if block > 1 else 96
    raw = _random_blocks(ggml_type, n_rows * blocks_per_row, seed=int(ggml_type))
    ours = dequantize(raw, ggml_type, (block * blocks_per_row, n_rows))
    ref = gguf_py.quants.dequantize(raw.reshape(n_rows, -1), gguf_py.GGMLQuantizationType(ggml_type))
    assert ours.dtype == np.float32 and ours.shape == (n_rows, block * blocks_per_row)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("ggml_type", [t for t in BLOCK_LAYOUT if BLOCK_LAYOUT[t][0] > 1], ids=lambda t: t.name)
def test_garbage_bytes_match_gguf_including_nan(ggml_type):
    # Fully random bytes include inf/NaN scales; ggml semantics still decide the output.
    raw = np.random.default_rng(99).integers(0, 256, 40 * BLOCK_LAYOUT[ggml_type][1], dtype=np.uint8)
    ours = dequantize(raw, ggml_type, (BLOCK_LAYOUT[ggml_type][0] * 40,))
    with np.errstate(all="ignore"):
        ref = gguf_py.quants.dequantize(raw, gguf_py.GGMLQuantizationType(ggml_type))
    np.testing.assert_array_equal(ours, ref)


def test_hand_worked_q8_0_and_q4_0():
    d = np.float16(0.5).tobytes()
    q8 = np.frombuffer(d + np.arange(-16, 16, dtype=np.int8).tobytes(), np.uint8)
    np.testing.assert_array_equal(dequantize(q8, GGMLType.Q8_0, (32,)), np.arange(-16, 16) * 0.5)
    # Q4_0: byte j holds value j (low nibble) and value j + 16 (high nibble), minus 8.
    qs = bytes((j & 15) | ((15 - j) << 4) for j in range(16))
    expected = [((j & 15) - 8) * 0.5 for j in range(16)] + [((15 - j) - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(dequantize(d + qs, GGMLType.Q4_0, (32,)), expected)


def test_hand_worked_q4_k_scale_packing():
    # Sub-block 5 (j >= 4): scale = (s[9] & 0xF) | (s[1] >> 6) << 4, min = (s[9] >> 4) | (s[5] >> 6) << 4.
    scales = bytearray(12)
    scales[1], scales[5], scales[9] = 0b11_000000, 0b10_000000, 0x5A
    block = (
        np.float16(1.0).tobytes() + np.float16(1.0).tobytes() + bytes(scales) + bytes([0x31] * 128)
    )  # every low nibble 1, high nibble 3
    out = dequantize(block, GGMLType.Q4_K, (256,))
    sub5 = out[160:192]  # sub-block 5 = high nibbles of qs[64:96]
    assert np.all(sub5 == 3 * (0xA | 3 << 4) - (0x5 | 2 << 4))
    assert np.all(out[0:32] == 0)  # sub-block 0: scale 0, min 0


def test_hand_worked_ternary_blocks():
    d = np.float16(2.0).tobytes()
    tq2 = bytes([0b00_01_10_00] * 64) + d  # crumbs 0, 2, 1, 0 → -1, +1, 0, -1
    out = dequantize(tq2, GGMLType.TQ2_0, (256,))
    assert list(out[[0, 32, 64, 96]]) == [-2.0, 2.0, 0.0, -2.0]
    # TQ1_0 stores 5 trits per byte as ceil(v * 256 / 243); all-zero trits (value -1 each).
    tq1 = bytes(52) + d
    np.testing.assert_array_equal(dequantize(tq1, GGMLType.TQ1_0, (256,)), np.full(256, -2.0))


def test_wrong_byte_count_is_a_value_error():
    with pytest.raises(ValueError, match="do not hold Q8_0"):
        dequantize(bytes(33), GGMLType.Q8_0, (32,))
    with pytest.raises(ValueError):
        dequantize(bytes(34), GGMLType.Q8_0, (16, 2))  # row not a multiple of the block


@pytest.mark.parametrize("quantize, qtype", [(quantize_q8_0, "Q8_0"), (quantize_q4_0, "Q4_0"), (quantize_q4_1, "Q4_1")])
def test_quantizers_match_ggml_rounding(quantize, qtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    x[0, :32] = 0  # all-zero block: d = 0
    x[1, :32] = np.linspace(-1, 1, 32, dtype=np.float32)  # exact .5 ties
    x[2, :32] = np.round(rng.standard_normal(32) * 4) / 2
    ref = gguf_py.quants.quantize(x, gguf_py.GGMLQuantizationType[qtype])
    np.testing.assert_array_equal(quantize(x), ref.reshape(-1))


def test_quantize_round_trip_error_is_small():
    x = np.random.default_rng(4).standard_normal((8, 128)).astype(np.float32)
    for qtype, tolerance in [
        (GGMLType.Q8_0, 0.01),
        (GGMLType.Q4_1, 0.15),
        (GGMLType.Q4_0, 0.2),
        (GGMLType.F16, 1e-3),
        (GGMLType.BF16, 1e-2),
        (GGMLType.F32, 0),
    ]:
        back = dequantize(encode_tensor(x, qtype), qtype, x.shape[::-1])
        assert np.abs(back - x).max() <= tolerance * np.abs(x).max(), qtype.name


def test_bf16_encoder_matches_gguf_package():
    x = np.random.default_rng(5).standard_normal(1000).astype(np.float32)
    x[:3] = [np.nan, np.inf, -0.0]
    ref = gguf_py.quants.quantize(x, gguf_py.GGMLQuantizationType.BF16)
    np.testing.assert_array_equal(encode_tensor(x, GGMLType.BF16), ref.view(np.uint8).reshape(-1))


def test_all_smollm2_tensors_match_gguf_package(smollm2):
    # The tensor index itself is cross-checked against gguf.GGUFReader in test_gguf_reader.
    with GGUFFile.open(smollm2) as f:
        for name, info in f.tensors.items():
            raw = f.tensor_bytes(name).reshape(*info.shape[:0:-1], -1)
            ref = gguf_py.quants.dequantize(raw, gguf_py.GGMLQuantizationType(info.ggml_type))
            np.testing.assert_array_equal(dequantize_tensor(f, name), ref, err_msg=name)
        embd = dequantize_tensor(f, "token_embd.weight")
        assert embd.shape == (49152, 576) and np.isfinite(embd).all()


def test_dequantizing_the_smollm2_embedding_is_fast(smollm2):
    with GGUFFile.open(smollm2) as f:
        timings = []
        for _ in range(2):  # the first run also faults the mapped pages in
            start = time.perf_counter()
            dequantize_tensor(f, "token_embd.weight")
            timings.append(time.perf_counter() - start)
    # Typically ~0.05 s; the bound leaves room for a loaded 2-core CI machine.
    assert min(timings) < 1.0


@pytest.mark.parametrize(
    "ggml_type", [GGMLType.Q4_1, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q3_K], ids=lambda t: t.name
)
def test_large_matrix_dequantizes_well_under_a_second(ggml_type):
    block, block_bytes = BLOCK_LAYOUT[ggml_type]
    shape = (768, 36864)  # 49152 × 576 values, K-quant friendly rows
    raw = np.random.default_rng(6).integers(0, 256, 768 * 36864 // block * block_bytes, dtype=np.uint8)
    timings = []
    for _ in range(2):  # best of two: the machine may be busy compiling
        start = time.perf_counter()
        dequantize(raw, ggml_type, shape)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 1.0
