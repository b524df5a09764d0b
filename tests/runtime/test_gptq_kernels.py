"""GPTQ layers run through the LUT kernels without requantization.

kernels.pack_super holds exactly GPTQModel's dequantized weights (bit for bit, in the
kernel's permuted K order), and a GEMV through the kernels with the permuted input matches
the float64 product of the reference weights within the kernel tests' tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import nmse
from tests.kernels.test_kernels_vs_generic import MAX_NMSE
from tmac_core.loading.gptq import parse_gptq_config, unpack_gptq

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "gptq"
FIXTURE_FILES = sorted(FIXTURES.glob("*.npz"))


def _load(path: Path) -> tuple[K.PackedWeight, np.ndarray | None, np.ndarray]:
    with np.load(path) as data:
        cfg = parse_gptq_config(json.loads(str(data["config"])))
        layer = unpack_gptq("layer", cfg, data["qweight"], data["qzeros"], data["scales"], data["g_idx"])
        reference = data["reference"]
    return K.pack_super(**layer.super_args()), layer.perm, reference  # type: ignore[arg-type]


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_packed_weights_equal_the_reference(path: Path) -> None:
    packed, perm, reference = _load(path)
    want = reference if perm is None else reference[:, perm]
    got = K.dequantize(packed)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want.astype(np.float64))


@pytest.mark.parametrize("tier", K.available_tiers())
@pytest.mark.parametrize(
    "stem", ["w2g128_asym_v2_act", "w3g32_asym_v1_act", "w4g64_sym_v1", "w4pc_asym_v2", "w2g64_asym_v1_underflow"]
)
def test_gemv_matches_the_reference_product(stem: str, tier: str) -> None:
    packed, perm, reference = _load(FIXTURES / f"{stem}.npz")
    x = np.random.default_rng(7).standard_normal(reference.shape[1]).astype(np.float32)
    kernel_input = x if perm is None else x[perm]  # the runtime's one gather per input vector
    y = K.gemv(packed, kernel_input, tier=tier)
    want = reference.astype(np.float64) @ x.astype(np.float64)
    assert nmse(want, y) <= MAX_NMSE
    np.testing.assert_array_equal(y, K.gemv(packed, kernel_input, tier="generic"))  # tiers agree exactly
    if perm is not None:  # without the gather the product is wrong: the permutation matters
        assert nmse(want, K.gemv(packed, x, tier=tier)) > 100 * MAX_NMSE
