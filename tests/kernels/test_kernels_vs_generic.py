"""Every kernel tier this machine can run against the generic (scalar) spec:
tables and outputs bit for bit, including padding, adversarial inputs and
GEMM; and generic against a float64 mathematical reference (NMSE <= 1e-3).
Outputs are poisoned with NaN before each call, so a tier that silently does
nothing cannot pass."""

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import BITS, SHAPES, make_activations, make_case, nmse

TIERS = [tier for tier in K.available_tiers() if tier != "generic"]
MAX_NMSE = 1e-3


def run(packed, x, tier):
    """gemm through prebuilt tables into a NaN-poisoned output buffer."""
    tables = K.activation_tables(x, k_pad=packed.k_pad, act_group=packed.act_group, tier=tier)
    out = np.full((x.shape[0], packed.m), np.nan, dtype=np.float32)
    K.gemm_tables(packed, tables, tier, out)
    return tables, out


def test_this_machine_has_a_simd_tier():
    feats = K.cpu_features()
    if feats["arch"] == "x86_64" and feats["avx2"] and feats["os_avx"]:
        assert "avx2" in K.available_tiers()
    if feats["avx512bw"] and feats["avx512vl"] and feats["os_avx512"]:
        assert "avx512" in K.available_tiers()
    if feats["arch"] == "arm64":
        assert "neon" in K.available_tiers()


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("m,k,group_size", SHAPES)
def test_tier_matches_generic_bit_for_bit(tier, bits, m, k, group_size, rng):
    case = make_case(rng, m, k, group_size, bits)
    packed = case.pack()
    x = make_activations(rng, 3, k, "outliers")
    t_ref, y_ref = run(packed, x, "generic")
    t_got, y_got = run(packed, x, tier)
    np.testing.assert_array_equal(t_got.entries, t_ref.entries)
    np.testing.assert_array_equal(t_got.scales, t_ref.scales)
    np.testing.assert_array_equal(t_got.sums, t_ref.sums)
    assert not np.isnan(y_got).any()
    np.testing.assert_array_equal(y_got, y_ref)


@pytest.mark.parametrize("tier", ["generic", *TIERS])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("zeros", [True, False])
@pytest.mark.parametrize("group_size", [32, 64, 128, "row", "tensor"])
def test_matches_float64_reference(tier, bits, zeros, group_size, rng):
    m, k = 96, 512
    gs = k if group_size in ("row", "tensor") else group_size
    case = make_case(rng, m, k, gs, bits, zeros=zeros, per_tensor=group_size == "tensor")
    x = make_activations(rng, 2, k, "outliers")
    ref = x.astype(np.float64) @ case.weights().T
    _, got = run(case.pack(), x, tier)
    assert nmse(ref, got) <= MAX_NMSE


@pytest.mark.parametrize("tier", ["generic", *TIERS])
@pytest.mark.parametrize("codes", ["zero", "max"])
@pytest.mark.parametrize("bits", BITS)
def test_extreme_codes(tier, codes, bits, rng):
    case = make_case(rng, 70, 256, 64, bits, codes=codes)
    x = make_activations(rng, 2, 256)
    ref = x.astype(np.float64) @ case.weights().T
    _, got = run(case.pack(), x, tier)
    assert nmse(ref, got) <= MAX_NMSE
    _, y_gen = run(case.pack(), x, "generic")
    np.testing.assert_array_equal(got, y_gen)


@pytest.mark.parametrize("tier", ["generic", *TIERS])
@pytest.mark.parametrize("kind", ["extreme", "zero_groups", "outliers"])
@pytest.mark.parametrize("bits", [1, 4, "ternary"])
def test_adversarial_activations(tier, kind, bits, rng):
    case = make_case(rng, 65, 512, 64, bits)
    x = make_activations(rng, 2, 512, kind)
    ref = x.astype(np.float64) @ case.weights().T
    tables, got = run(case.pack(), x, tier)
    assert np.abs(tables.entries).max() <= 127  # -128 never appears (mirror symmetry)
    assert nmse(ref, got) <= MAX_NMSE
    if kind == "zero_groups":
        assert (tables.scales[:, ::2] == 0).all() and (tables.entries.reshape(2, -1, 256)[:, ::2] == 0).all()


def test_all_zero_activations_give_exact_zero(rng):
    packed = make_case(rng, 64, 128, 64, 2).pack()
    for tier in ["generic", *TIERS]:
        _, y = run(packed, np.zeros((1, 128), np.float32), tier)
        assert (y == 0).all()


@pytest.mark.parametrize("tier", ["generic", *TIERS])
@pytest.mark.parametrize("n", [2, 3, 8, 17, 64])
def test_gemm_rows_equal_gemv(tier, n, rng):
    case = make_case(rng, 150, 256, 64, 2)
    packed = case.pack()
    X = make_activations(rng, n, 256, "outliers")
    Y = K.gemm(packed, X, tier=tier)
    assert Y.shape == (n, 150)
    for i in range(n):
        np.testing.assert_array_equal(Y[i], K.gemv(packed, X[i], tier=tier))
    ref = X.astype(np.float64) @ case.weights().T
    assert nmse(ref, Y) <= MAX_NMSE


def test_one_table_set_serves_matrices_of_mixed_bits(rng):
    """The runtime builds the tables once per input and reads them with 2- and 4-bit matrices."""
    x = make_activations(rng, 1, 512)[0]
    cases = [make_case(rng, 80, 512, 64, b) for b in (2, 4, 3, "ternary")]
    tables = K.activation_tables(x)
    for case in cases:
        packed = case.pack()
        np.testing.assert_array_equal(K.gemv(packed, tables), K.gemv(packed, x))
        assert nmse(case.weights() @ x.astype(np.float64), K.gemv(packed, tables)) <= MAX_NMSE
