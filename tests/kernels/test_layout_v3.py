"""Layout version 3: the F16_SYM and SUPER_NOMIN scale formats (LAYOUT.md §Scales F16_SYM,
§Scales SUPER_NOMIN). They drop the offset / min records of symmetric sources and derive
them in the kernel, so the same weights must give the same outputs, bit for bit, as
version 2's F16 / SUPER packing, on every tier, for GEMV (one and two tokens) and the
multi-token gemm tile; and every tier must equal the generic one where version 2 has no
exact counterpart (|zero_mult| > 1). AVX-512 and NEON run these formats in
test_cross_tiers.py (SIMDe, qemu) when this CPU lacks them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import SHAPES, SUPER_SHAPES, SYM_ZEROS, make_activations, make_super_case, make_sym_case
from tmac_core.kernels import layout

TIERS = K.available_tiers()
# one token (gemv tile), two (gemv2 / gemm tile pairs), 3 and 9 (gemm tiles, odd tails)
TOKENS = (1, 2, 3, 9)


def bits_of(y: np.ndarray) -> np.ndarray:
    """float32 results as their bit patterns: equal means equal, -0 and +0 included."""
    return np.ascontiguousarray(y, dtype=np.float32).view(np.uint32)


def outputs(packed: K.PackedWeight, x: np.ndarray, tier: str) -> list[np.ndarray]:
    """GEMV of the first token and GEMM of the first 1, 2, 3, 9 tokens."""
    out = [bits_of(K.gemv(packed, x[0], tier=tier))]
    out += [bits_of(K.gemm(packed, x[:n], tier=tier)) for n in TOKENS]
    return out


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits,zero", [(4, 8), (5, 16), (8, 128), (2, 1), (3, 4), (1, 0)])
@pytest.mark.parametrize("m,k,group_size", SHAPES)
def test_sym_equals_v2_f16_bit_for_bit(tier, bits, zero, m, k, group_size, rng):
    """zero_mult = +-1 (Q4_0, Q5_0, Q8_0, ternary): version 2's fp16 c is exactly -sh or +sh."""
    case = make_sym_case(rng, m, k, group_size, bits, zero)
    v2, v3 = case.pack(symmetric=False), case.pack(symmetric=True)
    assert (v2.scale_format, v3.scale_format) == (layout.SCALES_F16, layout.SCALES_F16_SYM)
    assert v3.zero_mult == (1 << bits) - 1 - 2 * zero and abs(v3.zero_mult) == 1
    assert v3.tensor_scale == v2.tensor_scale
    assert v3.nbytes == v2.nbytes - v2.scales.nbytes // 2
    x = make_activations(rng, max(TOKENS), k, "outliers")
    for a, b in zip(outputs(v2, x, tier), outputs(v3, x, tier)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(K.dequantize(v2), K.dequantize(v3))


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits,z0", [(6, 32), (3, 4), (4, 8), (8, 128), (5, 0)])
@pytest.mark.parametrize("m,k,group_size,super_size", SUPER_SHAPES)
def test_nomin_equals_v2_super_bit_for_bit(tier, bits, z0, m, k, group_size, super_size, rng):
    """Q6_K / Q3_K: SUPER with dmin = mn = 0 and SUPER_NOMIN give the same bits, c included."""
    case = make_super_case(rng, m, k, group_size, super_size, bits, "signed")
    case.z0 = z0
    v2, v3 = case.pack(mins=True), case.pack(mins=False)
    assert (v2.scale_format, v3.scale_format) == (layout.SCALES_SUPER, layout.SCALES_SUPER_NOMIN)
    assert v3.nbytes == v2.nbytes - v2.scales.nbytes // 2 - v2.sub.nbytes // 2
    x = make_activations(rng, max(TOKENS), k, "outliers")
    for a, b in zip(outputs(v2, x, tier), outputs(v3, x, tier)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(K.dequantize(v2), K.dequantize(v3))


@pytest.mark.parametrize("tier", [t for t in TIERS if t != "generic"])
@pytest.mark.parametrize("bits,zero", SYM_ZEROS)
def test_sym_tiers_equal_generic_at_every_zero_mult(tier, bits, zero, rng):
    """|zero_mult| up to 255, where version 2's fp16 c may round and is no reference."""
    for m, k, group_size in [(130, 384, 128), (63, 96, 32), (17, 100, 100), (70, 256, 16)]:
        case = make_sym_case(rng, m, k, group_size, bits, zero)
        p = case.pack()
        x = make_activations(rng, max(TOKENS), k, "outliers")
        for a, b in zip(outputs(p, x, "generic"), outputs(p, x, tier)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bits,zero", SYM_ZEROS)
def test_sym_decodes_to_the_weights(bits, zero, rng):
    """c = zero_mult * sh is exact, so the decoded weights are the fp16 scales times (q - z)
    exactly, and the C row reader gives the same floats as the numpy spec."""
    case = make_sym_case(rng, 70, 256, 32, bits, zero)
    p = case.pack()
    deq = K.dequantize(p)
    s16 = case.scales.astype(np.float16).astype(np.float64)  # the cases' scales are fp16 values
    want = s16[:, np.arange(256) // 32] * (case.codes.astype(np.float64) - zero)
    np.testing.assert_array_equal(deq, want)
    for r in (0, 33, 69):
        np.testing.assert_array_equal(K._kernels.weight_row(p, r), deq[r].astype(np.float32))


@pytest.mark.parametrize("bits,z0", [(6, 32), (3, 4), (8, 128)])
def test_nomin_decodes_like_super(bits, z0, rng):
    case = make_super_case(rng, 70, 512, 16, 256, bits, "signed")
    case.z0 = z0
    p = case.pack(mins=False)
    deq = K.dequantize(p)
    np.testing.assert_array_equal(deq, K.dequantize(case.pack(mins=True)))
    for r in (0, 40, 69):
        np.testing.assert_array_equal(K._kernels.weight_row(p, r), deq[r].astype(np.float32))


def test_nomin_c_is_fmaf_with_negative_zero():
    """super_nomin_coeffs is super_coeffs with zero mins, sign of a zero c included."""
    d = np.array([0.5, -0.25, 0.0, 2.0**-24, 65504.0], np.float16)
    sc = np.array([3, -7, 5, 0, -128], np.int8)
    for kb in (-0.5, 7.5, 127.5, 0.0):
        sh, c = layout.super_nomin_coeffs(d, sc, kb)
        sh2, c2 = layout.super_coeffs(d, np.zeros_like(d), sc, np.zeros_like(sc), kb)
        np.testing.assert_array_equal(bits_of(sh), bits_of(sh2))
        np.testing.assert_array_equal(bits_of(c), bits_of(c2))


def test_bits_per_weight_of_symmetric_sources(rng):
    """64 rows: Q4_0 at the file's 4.5 bits per weight, Q8_0 at 8.5, Q6_K at the file's 6.5625
    (d per 256 and sc per 16: 16/256 + 8/16 over 6 bits)."""
    q4 = make_sym_case(rng, 64, 256, 32, 4, 8).pack()
    q8 = make_sym_case(rng, 64, 256, 32, 8, 128).pack()
    q6 = make_super_case(rng, 64, 512, 16, 256, 6, "signed").pack(mins=False)
    for p, want in ((q4, 4.5), (q8, 8.5), (q6, 6.5625)):
        assert 8 * p.nbytes / (p.m * p.k) == want


def test_pickle_keeps_the_format(rng):
    for p in (
        make_sym_case(rng, 70, 128, 32, 4, 8).pack(),
        make_super_case(rng, 70, 256, 16, 256, 6, "signed").pack(mins=False),
    ):
        q = pickle.loads(pickle.dumps(p))
        assert (q.scale_format, q.zero_mult, q.super_size) == (p.scale_format, p.zero_mult, p.super_size)
        np.testing.assert_array_equal(K.dequantize(q), K.dequantize(p))


def sym_parts(m=64, k=128, group_size=32, bits=4, zero=8):
    planes, sh, k_pad, group, ts, zero_mult = layout.pack_sym_arrays(
        np.zeros((m, k), np.uint8),
        np.full((m, k // group_size), 0.5, np.float32),
        zero,
        bits=bits,
        group_size=group_size,
    )
    return (planes, sh, m, k, k_pad, bits, group, ts), dict(scale_format=layout.SCALES_F16_SYM, zero_mult=zero_mult)


SYM_REFUSALS = {
    "zero_mult 0": lambda a, kw: (a, {**kw, "zero_mult": 0}),
    "zero_mult even": lambda a, kw: (a, {**kw, "zero_mult": 2}),
    "zero_mult 257": lambda a, kw: (a, {**kw, "zero_mult": 257}),
    "zero_mult -257": lambda a, kw: (a, {**kw, "zero_mult": -257}),
    "zero_mult huge": lambda a, kw: (a, {**kw, "zero_mult": 2**40}),
    "zero_mult a float": lambda a, kw: (a, {**kw, "zero_mult": 1.5}),
    "F16 with a zero_mult": lambda a, kw: (a, {**kw, "scale_format": layout.SCALES_F16}),
    "scales one short": lambda a, kw: ((a[0], a[1][:-1], *a[2:]), kw),
    "scales of two records (F16's size)": lambda a, kw: ((a[0], np.concatenate([a[1], a[1]]), *a[2:]), kw),
    "a sub buffer": lambda a, kw: (a, {**kw, "sub": np.zeros(64 * 4, np.int8)}),
    "a super_size": lambda a, kw: (a, {**kw, "super_size": 128}),
    "a code_offset": lambda a, kw: (a, {**kw, "code_offset": 0.5}),
}


@pytest.mark.parametrize("name", list(SYM_REFUSALS))
def test_sym_weight_refuses_inconsistent_fields(name):
    K.PackedWeight(*sym_parts()[0], **sym_parts()[1])  # the unchanged parts are fine
    args, kw = SYM_REFUSALS[name](*sym_parts())
    with pytest.raises((ValueError, TypeError)) as err:
        K.PackedWeight(*args, **kw)
    assert str(err.value)


def test_nomin_weight_refuses_inconsistent_fields(rng):
    case = make_super_case(rng, 64, 256, 16, 256, 6, "signed")
    p = case.pack(mins=False)
    args = (p.planes, p.scales, p.m, p.k, p.k_pad, p.bits, p.group_size, 1.0)
    kw = dict(scale_format=layout.SCALES_SUPER_NOMIN, sub=p.sub, super_size=256, code_offset=p.code_offset)
    K.PackedWeight(*args, **kw)
    for bad in (
        {**kw, "sub": None},
        {**kw, "sub": p.sub[:-1]},
        {**kw, "sub": np.concatenate([p.sub, p.sub])},  # SUPER's two records
        {**kw, "scale_format": layout.SCALES_SUPER},  # one record where SUPER has two
        {**kw, "zero_mult": -1},
    ):
        with pytest.raises(ValueError):
            K.PackedWeight(*args, **bad)


@pytest.mark.parametrize(
    "zeros,match",
    [
        (np.array([[8.0, 7.0]], np.float32), "one integer zero code"),
        (np.full((4, 2), 8.5, np.float32), "one integer zero code"),
        (np.full((4, 2), np.nan, np.float32), "one integer zero code"),
        (np.full((4, 2), -200.0, np.float32), "beyond"),
    ],
)
def test_pack_symmetric_refuses(zeros, match):
    with pytest.raises(ValueError, match=match):
        K.pack(np.zeros((4, 64), np.uint8), np.ones((4, 2), np.float32), zeros, bits=4, group_size=32, symmetric=True)


def test_pack_super_needs_both_mins_or_neither():
    base = dict(bits=6, group_size=16, super_size=64, code_offset=-0.5)
    codes, d, sc = np.zeros((4, 64), np.uint8), np.full((4, 1), 0.5, np.float32), np.ones((4, 4), np.int64)
    with pytest.raises(ValueError, match="both"):
        K.pack_super(codes, d, None, sc, np.zeros((4, 4), np.int64), **base)
    with pytest.raises(ValueError, match="both"):
        K.pack_super(codes, d, np.zeros((4, 1), np.float32), sc, None, **base)


def test_numpy_spec_and_c_packer_agree(rng):
    case = make_sym_case(rng, 70, 256, 32, 5, 16)
    a = layout.pack_sym_arrays(case.codes, case.scales, case.zeros, bits=5, group_size=32, native=True)
    b = layout.pack_sym_arrays(case.codes, case.scales, case.zeros, bits=5, group_size=32, native=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    s = make_super_case(rng, 70, 512, 16, 256, 6, "signed")
    args = (s.codes, s.d, None, s.sc, None)
    kw = dict(bits=6, group_size=16, super_size=256, code_offset=s.code_offset)
    for x, y in zip(layout.pack_super_arrays(*args, **kw), layout.pack_super_arrays(*args, **kw, native=False)):
        np.testing.assert_array_equal(x, y)
