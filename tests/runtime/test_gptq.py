"""GPTQ layers unpack to exactly the weights GPTQModel dequantizes, for every variant.

The fixtures (tests/data/gptq/*.npz) were packed and dequantized by GPTQModel's own code
(tests/reference/make_gptq_fixtures.py): bits 2/3/4 x group 32/64/128/per-channel x sym/asym
x v1/v2 x act-order on/off, plus v1 layers whose zero points of 0 underflowed when written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tmac_core.loading.gptq import (
    FORMAT_V1,
    FORMAT_V2,
    GPTQLinear,
    gptq_config,
    parse_gptq_config,
    unpack_gptq,
)

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "gptq"
FIXTURE_FILES = sorted(FIXTURES.glob("*.npz"))


def load_fixture(stem: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{stem}.npz") as data:
        return {name: data[name] for name in data.files}


def unpack_fixture(fixture: dict[str, np.ndarray]) -> GPTQLinear:
    cfg = parse_gptq_config(json.loads(str(fixture["config"])))
    return unpack_gptq("layer", cfg, fixture["qweight"], fixture["qzeros"], fixture["scales"], fixture["g_idx"])


def test_every_variant_has_a_fixture() -> None:
    stems = {path.stem for path in FIXTURE_FILES}
    for bits in (2, 3, 4):
        for group in ("g32", "g64", "g128", "pc"):
            for sym in ("sym", "asym"):
                for fmt in ("v1", "v2"):
                    for act in ("", "_act"):
                        assert f"w{bits}{group}_{sym}_{fmt}{act}" in stems
        assert f"w{bits}g64_asym_v1_underflow" in stems


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_weights_equal_gptqmodel_dequantization_bit_for_bit(path: Path) -> None:
    fixture = load_fixture(path.stem)
    layer = unpack_fixture(fixture)
    weight = layer.weight()
    reference = fixture["reference"]
    assert weight.dtype == np.float32 and weight.shape == reference.shape
    np.testing.assert_array_equal(weight.view(np.uint32), reference.view(np.uint32))


@pytest.mark.parametrize("stem", ["w4g32_asym_v2_act", "w3g128_sym_v1_act", "w2g64_asym_v1_act"])
def test_act_order_sorts_k_by_group_and_the_product_is_unchanged(stem: str) -> None:
    fixture = load_fixture(stem)
    layer = unpack_fixture(fixture)
    assert layer.perm is not None
    g_idx = fixture["g_idx"]
    sorted_groups = g_idx[layer.perm]
    assert np.all(np.diff(sorted_groups) >= 0), "kernel columns must come group after group"
    assert np.array_equal(sorted_groups, np.arange(len(g_idx)) // layer.super_size)
    # kernel matrix (natural weights with permuted columns) times the gathered input == W @ x
    x = np.random.default_rng(0).standard_normal(len(g_idx))
    kernel_w = layer.weight()[:, layer.perm].astype(np.float64)
    np.testing.assert_allclose(kernel_w @ x[layer.perm], fixture["reference"].astype(np.float64) @ x, rtol=1e-12)


@pytest.mark.parametrize("stem", ["w4g32_asym_v2", "w2pc_sym_v1_act", "w3g64_sym_v2"])
def test_contiguous_groups_need_no_permutation(stem: str) -> None:
    assert unpack_fixture(load_fixture(stem)).perm is None


def test_per_channel_keeps_one_scale_per_row() -> None:
    fixture = load_fixture("w4pc_asym_v2")
    layer = unpack_fixture(fixture)
    n, k = fixture["reference"].shape
    assert (layer.super_size, layer.group_size) == (k, 128)
    assert layer.d.shape == (n, 1) and layer.mn.shape == (n, k // 128)
    assert np.all(layer.mn == layer.mn[:, :1]), "the row's zero point repeats in every kernel group"


def test_super_parameters_follow_the_layout() -> None:
    layer = unpack_fixture(load_fixture("w3g32_asym_v1"))
    args = layer.super_args()
    assert args["code_offset"] == 3.5 and args["super_size"] == args["group_size"] == 32
    assert np.all(layer.sc == 1) and np.array_equal(layer.d, layer.dmin)
    assert layer.codes.dtype == np.uint8 and layer.codes.max() <= 7
    assert layer.d.dtype == np.float16 and layer.mn.dtype == np.int8


def _pack_3bit_column(codes: list[int]) -> np.ndarray:
    """32 codes -> 3 int32 words, written as one 96-bit little-endian integer (independent of
    the unpacker's per-word arithmetic)."""
    stream = sum(code << (3 * j) for j, code in enumerate(codes))
    words = [(stream >> (32 * i)) & 0xFFFFFFFF for i in range(3)]
    return np.array(words, dtype=np.uint32).view(np.int32)


def test_3bit_codes_that_straddle_words() -> None:
    # codes 10 and 21 are split across words; give them every value against varied neighbours
    rng = np.random.default_rng(3)
    columns = []
    for value in range(8):
        codes = rng.integers(0, 8, size=32).tolist()
        codes[10], codes[21] = value, 7 - value
        columns.append(codes)
    columns += [[7] * 32, [0] * 32, [5] * 32]
    columns += [rng.integers(0, 8, size=32).tolist() for _ in range(32 - len(columns))]
    qweight = np.stack([_pack_3bit_column(c) for c in columns], axis=1)  # (3, 32)
    qzeros = np.zeros((1, 3), dtype=np.int32)  # v2, zero 0 everywhere
    scales = np.ones((1, 32), dtype=np.float16)
    cfg = parse_gptq_config({"bits": 3, "group_size": -1, "sym": False, "checkpoint_format": "gptq_v2"})
    layer = unpack_gptq("layer", cfg, qweight, qzeros, scales)
    assert layer.codes.tolist() == columns


def test_v1_word_add_carries_an_underflowed_zero_into_its_neighbour() -> None:
    # A 4-bit v1 word holding fields [15, 1, 3, ...]: GPTQModel wrote z = [0, 3, 4, ...] as
    # word - 0x11111111 (the borrow took one from field 1); the word-wide add restores it.
    true_zeros = [0, 3, 4, 5, 6, 7, 8, 9]
    word = sum(z << (4 * j) for j, z in enumerate(true_zeros))
    stored = (word - 0x11111111) % 2**32
    assert (stored & 0xF, (stored >> 4) & 0xF) == (15, 1)
    qzeros = np.array([[stored]], dtype=np.uint32).view(np.int32)
    qweight = np.zeros((2, 8), dtype=np.int32)  # K = 16, codes 0
    scales = np.ones((1, 8), dtype=np.float16)
    cfg = parse_gptq_config({"bits": 4, "group_size": -1, "sym": False, "checkpoint_format": "gptq"})
    layer = unpack_gptq("layer", cfg, qweight, qzeros, scales)
    assert layer.mn[:, 0].tolist() == true_zeros


def test_config_json_wins_over_quantize_config_json() -> None:
    config_json = {
        "quantization_config": {
            "quant_method": "gptq",
            "bits": 2,
            "group_size": 128,
            "sym": False,
            "checkpoint_format": "gptq_v2",
        }
    }
    quantize_config = {"bits": 4, "group_size": 32}
    cfg = gptq_config(config_json, quantize_config)
    assert cfg is not None and (cfg.bits, cfg.group_size, cfg.sym, cfg.checkpoint_format) == (2, 128, False, FORMAT_V2)
    fallback = gptq_config({"architectures": ["LlamaForCausalLM"]}, quantize_config)
    assert fallback is not None and (fallback.bits, fallback.group_size) == (4, 32)
    assert gptq_config({"architectures": ["LlamaForCausalLM"]}, None) is None
    bitnet = {"quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear"}}
    assert gptq_config(bitnet, quantize_config) is None  # another loader's checkpoint


def test_config_defaults_are_autogptqs() -> None:
    cfg = parse_gptq_config({"bits": 4, "group_size": 128})
    assert (cfg.sym, cfg.desc_act, cfg.checkpoint_format) == (True, False, FORMAT_V1)


def test_efficientqat_export_config() -> None:
    # what model_transfer/efficientqat_to_others.py saves through GPTQModel (w2g128, v2, asym)
    raw = {
        "bits": 2,
        "group_size": 128,
        "desc_act": False,
        "sym": False,
        "quant_method": "gptq",
        "checkpoint_format": "gptq_v2",
        "format": "gptq_v2",
        "pack_dtype": "int32",
        "static_groups": False,
        "true_sequential": True,
        "damp_percent": 0.01,
        "meta": {"quantizer": ["gptqmodel:0.9.9"]},
    }
    cfg = parse_gptq_config(raw, source="config.json")
    assert (cfg.bits, cfg.group_size, cfg.sym, cfg.v1) == (2, 128, False, False)
