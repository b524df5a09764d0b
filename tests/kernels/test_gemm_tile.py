"""The multi-token GEMM tile (gemm_tile, the prompt path) of every tier this
machine runs against its spec, one generic GEMV per token, bit for bit: bit
widths 1..8, F16, SUPER and layout v3's F16_SYM and SUPER_NOMIN scales, grouped, per-row and 16-wide groups, and
token counts that are not a multiple of the tiers' token blocks (4 on AVX-512,
2 on AVX2 and NEON) or of the 8 tokens a gemm_tile call takes. Outputs are
NaN-poisoned, so a path that skips a token or a row cannot pass. NEON and
SIMDe-emulated AVX-512 run the same tiles in tests/kernels/test_cross_tiers.py."""

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import SYM_ZEROS, make_activations, make_case, make_super_case, make_sym_case

TIERS = K.available_tiers()
TOKENS = [2, 3, 5, 8, 9, 13, 17]
# (m, k, group_size): 4+ tiles so that one thread takes every token of a tile in one item
F16_SHAPES = [(256, 128, 32), (300, 256, 64), (257, 192, 192), (256, 96, 16)]
SUPER_SHAPES = [(256, 256, 16, 256), (270, 256, 32, 256), (256, 96, 32, 32)]


def gemm_poisoned(packed, x, tier):
    tables = K.activation_tables(x, k_pad=packed.k_pad, act_group=packed.act_group, tier=tier)
    out = np.full((x.shape[0], packed.m), np.nan, dtype=np.float32)
    K.gemm_tables(packed, tables, tier, out)
    return out


def check(packed, k, n, tier, rng):
    x = make_activations(rng, n, k, "outliers")
    want = np.stack([K.gemv(packed, x[i], tier="generic") for i in range(n)])
    before = K.get_num_threads()
    for threads in (1, 2):
        K.set_num_threads(threads)
        try:
            got = gemm_poisoned(packed, x, tier)
        finally:
            K.set_num_threads(before)
        assert not np.isnan(got).any()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("m,k,group_size", F16_SHAPES)
def test_gemm_tile_f16_matches_gemv(tier, bits, m, k, group_size, rng):
    packed = make_case(rng, m, k, group_size, bits).pack()
    for n in TOKENS:
        check(packed, k, n, tier, rng)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("m,k,group_size,super_size", SUPER_SHAPES)
def test_gemm_tile_super_matches_gemv(tier, bits, m, k, group_size, super_size, rng):
    kind = "signed" if bits in (3, 6) else "kquant"
    packed = make_super_case(rng, m, k, group_size, super_size, bits, kind).pack()
    for n in (3, 9, 17):
        check(packed, k, n, tier, rng)


@pytest.mark.parametrize("tier", TIERS)
def test_gemm_tile_ternary_per_row(tier, rng):
    packed = make_case(rng, 320, 512, 512, "ternary").pack()
    for n in (2, 7, 12):
        check(packed, 512, n, tier, rng)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits,zero", SYM_ZEROS)
@pytest.mark.parametrize("m,k,group_size", F16_SHAPES)
def test_gemm_tile_sym_matches_gemv(tier, bits, zero, m, k, group_size, rng):
    packed = make_sym_case(rng, m, k, group_size, bits, zero).pack()
    for n in (3, 8, 13):
        check(packed, k, n, tier, rng)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits", [3, 6, 8])
@pytest.mark.parametrize("m,k,group_size,super_size", SUPER_SHAPES)
def test_gemm_tile_nomin_matches_gemv(tier, bits, m, k, group_size, super_size, rng):
    packed = make_super_case(rng, m, k, group_size, super_size, bits, "signed").pack(mins=False)
    for n in (3, 9, 17):
        check(packed, k, n, tier, rng)
