"""Layout version 2 (LAYOUT.md): 5..8-bit planes, 16- and 256-wide weight groups with
16-wide activation groups, and SUPER (K-quant style) scales. The generic tile against a
float64 model of the spec computed here from the unpacked layout and the tables (and
bit for bit against an exact rational evaluation of its fp32 epilogue); every tier bit
for bit against generic; the SUPER decode against an independent exact computation of
the spec's formula; and the refusal of every inconsistent weight or table field."""

import pickle
from fractions import Fraction

import numpy as np
import pytest

import tmac_core.kernels as K
from tests.kernels.cases import (
    BITS_V2,
    SHAPES_V2,
    SUPER_KINDS,
    SUPER_SHAPES,
    make_activations,
    make_case,
    make_super_case,
    nmse,
)
from tmac_core import plan
from tmac_core.kernels import layout

TIERS = [tier for tier in K.available_tiers() if tier != "generic"]
ALL_BITS = [1, 2, 3, 4, 5, 6, 7, 8]
GROUPS = [16, 32, 64, 128, 256, "row"]
F32_EPS = 2.0**-24  # unit roundoff of float32


def act_groups_for(group_size: int) -> list[int]:
    return [a for a in (16, 32, 64) if group_size % a == 0]


def grid():
    """(bits, group, format) of the sweep: SUPER has no per-row groups. Each case runs with
    every act group that divides its group size."""
    for bits in ALL_BITS:
        for group in GROUPS:
            for fmt in ("f16", "super"):
                if not (fmt == "super" and group == "row"):
                    yield bits, group, fmt


def v2_case(rng, bits, group, fmt, m=70):
    """A weight of the sweep: F16 with random zeros (per-row: K = 250, k_pad = 256) or SUPER with
    K-quant-style scales and S = 256."""
    if fmt == "f16":
        k = 250 if group == "row" else 256
        case = make_case(rng, m, k, k if group == "row" else group, bits)
    else:
        case = make_super_case(rng, m, 256, group, 256, bits, "kquant" if bits % 2 else "signed")
    return case, case.pack()


def coefficients(packed):
    """codes (m, k_pad) and float64 (sh, c) per (row, group) as the kernel sees them (before tensor_scale)."""
    q = layout.unpack_codes(packed.planes, packed.m, packed.k_pad, packed.k_pad, packed.bits).astype(np.int64)
    if packed.scale_format == layout.SCALES_F16:
        sh, c = layout.unpack_scales(packed.scales, packed.m, packed.k_pad, packed.group_size, 1.0)
        return q, sh, c
    d, dmin, sc, mn = layout.unpack_super(
        packed.scales, packed.sub, packed.m, packed.k_pad, packed.group_size, packed.super_size
    )
    u = np.arange(packed.n_groups) * packed.group_size // packed.super_size
    sh, c = layout.super_coeffs(d[:, u], dmin[:, u], sc, mn, packed.code_offset)
    return q, sh.astype(np.float64), c.astype(np.float64)


def accumulators(packed, tables):
    """The exact integer acc (n, m, k_pad/A) of LAYOUT.md §Accumulation, checking that both
    int16 halves (planes 0..3 and 4..7) stay in range."""
    q, _, _ = coefficients(packed)
    kgroups = packed.k_pad // 4
    e = tables.entries.astype(np.int64)  # (n, kgroups, 16)
    qg = q.reshape(packed.m, kgroups, 4)
    per_group = tables.act_group // 4
    halves = []
    for planes in (range(0, min(packed.bits, 4)), range(4, packed.bits)):
        acc = np.zeros((tables.n, packed.m, kgroups), np.int64)
        for i in planes:
            idx = (((qg >> i) & 1) << np.arange(4)).sum(axis=2)  # (m, kgroups)
            acc += (1 << (i % 4)) * e[:, np.arange(kgroups)[None, :], idx]
        half = acc.reshape(tables.n, packed.m, -1, per_group).sum(axis=3)
        assert np.abs(half).max(initial=0) <= 32767, "an int16 accumulator would overflow"
        halves.append(half)
    return halves[0] + 16 * halves[1]


def spec_model(packed, tables):
    """float64 y (n, m) of the spec, y = ts * sum_a (ls*acc*sh + xs*c), and the sum of the
    magnitudes of its terms (the scale of the kernel's fp32 rounding)."""
    _, sh, c = coefficients(packed)
    acc = accumulators(packed, tables).astype(np.float64)
    g = np.arange(packed.k_pad // tables.act_group) * tables.act_group // packed.group_size
    ls = tables.scales.astype(np.float64)[:, None, :]
    xs = tables.sums.astype(np.float64)[:, None, :]
    t1, t2 = ls * acc * sh[None, :, g], xs * c[None, :, g]
    ts = packed.tensor_scale
    return ts * (t1 + t2).sum(axis=2), ts * (np.abs(t1) + np.abs(t2)).sum(axis=2)


def run(packed, x, tier, act_group):
    tables = K.activation_tables(x, k_pad=packed.k_pad, act_group=act_group, tier=tier)
    out = np.full((x.shape[0], packed.m), np.nan, dtype=np.float32)
    K.gemm_tables(packed, tables, tier, out)
    return tables, out


@pytest.mark.parametrize("bits,group,fmt", list(grid()))
def test_generic_matches_the_spec_model(bits, group, fmt, rng):
    case, packed = v2_case(rng, bits, group, fmt)
    x = make_activations(rng, 2, case.codes.shape[1], "outliers")
    for act_group in act_groups_for(packed.group_size):
        tables, y = run(packed, x, "generic", act_group)
        ref, magnitude = spec_model(packed, tables)
        n_act = packed.k_pad // act_group
        # three fp32 roundings per act group (t, two fmas), each at most eps * the partial sums
        assert (np.abs(y - ref) <= 4 * n_act * F32_EPS * magnitude + 1e-30).all(), act_group
        # and the whole chain, table quantization included, against the weights the codes mean
        assert nmse(x.astype(np.float64) @ case.weights().T, y) <= 1e-3, act_group


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("bits,group,fmt", list(grid()))
def test_tier_matches_generic_bit_for_bit(tier, bits, group, fmt, rng):
    case, packed = v2_case(rng, bits, group, fmt)
    x = make_activations(rng, 3, case.codes.shape[1], "outliers")  # 3: a token pair and a single one
    for act_group in act_groups_for(packed.group_size):
        t_ref, y_ref = run(packed, x, "generic", act_group)
        t_got, y_got = run(packed, x, tier, act_group)
        for name in ("entries", "scales", "sums"):
            np.testing.assert_array_equal(getattr(t_got, name), getattr(t_ref, name))
        assert not np.isnan(y_got).any()
        np.testing.assert_array_equal(y_got, y_ref)


@pytest.mark.parametrize("tier", ["generic", *TIERS])
@pytest.mark.parametrize("bits", BITS_V2)
@pytest.mark.parametrize("m,k,group_size", SHAPES_V2)
def test_ragged_shapes(tier, bits, m, k, group_size, rng):
    case = make_case(rng, m, k, group_size, bits)
    packed = case.pack()
    x = make_activations(rng, 3, k, "outliers")
    _, y_ref = run(packed, x, "generic", packed.act_group)
    _, y = run(packed, x, tier, packed.act_group)
    np.testing.assert_array_equal(y, y_ref)
    assert nmse(x.astype(np.float64) @ case.weights().T, y) <= 1e-3


def super_cases():
    for m, k, g, s in SUPER_SHAPES:
        for kind in SUPER_KINDS:
            if kind == "gptq" and g != s:
                continue
            for bits in (2, 3, 4, 5, 6, 8):
                yield m, k, g, s, kind, bits


@pytest.mark.parametrize("tier", ["generic", *TIERS])
@pytest.mark.parametrize("m,k,group_size,super_size,kind,bits", list(super_cases()))
def test_super_cases(tier, m, k, group_size, super_size, kind, bits, rng):
    case = make_super_case(rng, m, k, group_size, super_size, bits, kind)
    packed = case.pack()
    assert packed.act_group == min(64, group_size)
    x = make_activations(rng, 3, k, "outliers")
    tables, y = run(packed, x, tier, packed.act_group)
    if tier == "generic":
        ref, magnitude = spec_model(packed, tables)
        assert (np.abs(y - ref) <= 4 * (k // packed.act_group) * F32_EPS * magnitude + 1e-30).all()
    else:
        np.testing.assert_array_equal(y, run(packed, x, "generic", packed.act_group)[1])
    assert nmse(x.astype(np.float64) @ case.weights().T, y) <= 1e-3


@pytest.mark.parametrize("tier", ["generic", *TIERS])
def test_gemm_rows_equal_gemv(tier, rng):
    for packed in (
        make_super_case(rng, 90, 256, 16, 256, 6, "signed").pack(),
        make_case(rng, 90, 256, 16, 8).pack(),
        make_case(rng, 90, 512, 256, 5).pack(),
    ):
        X = make_activations(rng, 9, packed.k, "outliers")
        Y = K.gemm(packed, X, tier=tier)
        for i in range(9):
            np.testing.assert_array_equal(Y[i], K.gemv(packed, X[i], tier=tier))


def test_one_16_wide_table_set_serves_every_group_size(rng):
    """A = 16 divides every G: a 64-group matrix can read the tables a Q6_K matrix needs."""
    x = make_activations(rng, 1, 256)[0]
    tables = K.activation_tables(x, act_group=16)
    wide = make_case(rng, 64, 256, 64, 4).pack()
    narrow = make_super_case(rng, 64, 256, 16, 256, 6, "signed").pack()
    for packed in (wide, narrow):
        assert not np.isnan(K.gemv(packed, tables)).any()
    with pytest.raises(ValueError):  # 32-wide tables cannot serve 16-wide groups
        K.gemv(narrow, K.activation_tables(x, act_group=32))


# ---- the SUPER epilogue, computed independently ----


def round_f32(v: Fraction) -> Fraction:
    """v rounded to the nearest float32, ties to even (exact rational arithmetic)."""
    f = np.float32(float(v))
    best = None
    for cand in (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))):
        key = (abs(Fraction(float(cand)) - v), int(np.array(cand).view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, cand)
    return Fraction(float(best[1]))


def spec_sh_c(d16, dmin16, sc, mn, code_offset):
    """sh = (0.5f * D) * sf and c = fmaf(code_offset * D, sf, -(Dm * mf)), each fp32 operation
    rounded once, in rationals."""
    D, Dm = Fraction(float(d16)), Fraction(float(dmin16))
    kb = round_f32(Fraction(code_offset))
    sh = round_f32(round_f32(Fraction(1, 2) * D) * sc)
    c = round_f32(round_f32(kb * D) * sc - round_f32(Dm * mn))
    return sh, c


def hard_super_case(rng, m, k, group_size, super_size, bits):
    """SUPER scales whose c needs the fused rounding: d, dmin spread over fp16's exponents,
    sub-scales over all of int8."""
    ns, ng = k // super_size, k // group_size
    d = (rng.uniform(1, 2, (m, ns)) * 2.0 ** rng.integers(-20, 4, (m, ns))).astype(np.float16)
    dmin = (rng.uniform(-2, 2, (m, ns)) * 2.0 ** rng.integers(-20, 4, (m, ns))).astype(np.float16)
    sc, mn = rng.integers(-128, 128, (m, ng)), rng.integers(-128, 128, (m, ng))
    codes = rng.integers(0, 1 << bits, (m, k), dtype=np.uint8)
    return codes, d, dmin, sc, mn


@pytest.mark.parametrize("bits,z0", [(4, 0), (6, 32), (3, 4), (8, 0), (5, 3), (7, 0)])
def test_super_decode_is_the_spec_formula(bits, z0, rng):
    m, k, g, s = 67, 128, 16, 64
    codes, d, dmin, sc, mn = hard_super_case(rng, m, k, g, s, bits)
    kb = ((1 << bits) - 1) / 2 - z0
    packed = K.pack_super(codes, d, dmin, sc, mn, bits=bits, group_size=g, super_size=s, code_offset=kb)
    deq = K.dequantize(packed)
    sh_np, c_np = layout.super_coeffs(d[:, np.arange(k // g) * g // s], dmin[:, np.arange(k // g) * g // s], sc, mn, kb)
    unfused_differs = False
    for r in range(m):
        row = K._kernels.weight_row(packed, r)
        for gi in range(k // g):
            u = gi * g // s
            sh, c = spec_sh_c(d[r, u], dmin[r, u], int(sc[r, gi]), int(mn[r, gi]), kb)
            assert Fraction(float(sh_np[r, gi])) == sh and Fraction(float(c_np[r, gi])) == c
            # the same c without the fused rounding: the test must be able to see the difference
            kbd = np.float32(kb) * np.float32(d[r, u])
            naive = np.float32(kbd * np.float32(sc[r, gi])) - np.float32(np.float32(dmin[r, u]) * np.float32(mn[r, gi]))
            unfused_differs |= Fraction(float(naive)) != c
            for col in range(gi * g, (gi + 1) * g):
                q = int(codes[r, col])
                w = (2.0 * float(sh) * q - float(sh) * ((1 << bits) - 1) + float(c)) * 1.0  # double, as written
                assert deq[r, col] == w
                assert row[col] == np.float32(w)
    # kb*D*sc has up to bits + 11 + 8 significant bits: past float32's 24 only from 6-bit kb on
    # (Q8-style GPTQ), where one rounding instead of two is visible
    assert unfused_differs == (bits >= 7), "the fused rounding of c was not exercised as expected"


def test_super_weights_are_the_k_quant_model(rng):
    """Decoded SUPER weights are d*sc*(q - z0) - dmin*mn up to the one rounding of c."""
    for kind, bits in (("kquant", 4), ("kquant", 5), ("signed", 6), ("signed", 3), ("gptq", 4)):
        case = make_super_case(rng, 70, 256, 32, 256 if kind != "gptq" else 32, bits, kind)
        w, exact = K.dequantize(case.pack()), case.weights()
        _, _, c = coefficients(case.pack())
        assert np.abs(w - exact).max() <= np.abs(c).max() * 2.0**-24


def fmaf_exact(a, b, c) -> Fraction:
    return round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def test_numpy_fmaf_rounds_once(rng):
    """layout._fmaf against exact rationals, on random values and on sums that land exactly
    halfway between two float32 in float64 although the exact value does not."""
    a = (rng.uniform(-2, 2, 4000) * 2.0 ** rng.integers(-30, 30, 4000)).astype(np.float32)
    b = rng.integers(-128, 128, 4000).astype(np.float32)
    c = (rng.uniform(-2, 2, 4000) * 2.0 ** rng.integers(-30, 30, 4000)).astype(np.float32)
    # crafted: a*b = 3 + 1.5 ulp, a float32 midpoint, and c = +-2^-60 below float64's resolution there:
    # float64 rounds the sum onto the midpoint, the exact value lies on c's side of it
    a[:5] = np.float32(1 + 2.0**-23)
    b[:5] = np.float32(3), np.float32(3), np.float32(-3), np.float32(-3), np.float32(1)
    c[:5] = (
        np.float32(2.0**-60),
        np.float32(-(2.0**-60)),
        np.float32(2.0**-60),
        np.float32(-(2.0**-60)),
        np.float32(-(2.0**-24)),
    )
    naive = (a[:4].astype(np.float64) * b[:4] + c[:4]).astype(np.float32)
    assert any(Fraction(float(naive[i])) != fmaf_exact(a[i], b[i], c[i]) for i in range(4)), "not a trap"
    got = layout._fmaf(a, b, c)
    for i in range(4000):
        assert Fraction(float(got[i])) == fmaf_exact(a[i], b[i], c[i]), i


# ---- a hand-worked SUPER example (LAYOUT.md §Scales SUPER) ----


def test_super_worked_example():
    """LAYOUT.md: a Q4_K-style row, d = 0.5, dmin = 0.25, sc = 3, mn = 5, z0 = 0, q = 9:
    w = 0.5*3*9 - 0.25*5 = 12.25; sh = 0.75, c = 7.5*0.5*3 - 0.25*5 = 10."""
    codes = np.zeros((1, 32), np.uint8)
    codes[0, 0] = 9
    d, dmin = np.full((1, 1), 0.5, np.float32), np.full((1, 1), 0.25, np.float32)
    sc, mn = np.full((1, 1), 3), np.full((1, 1), 5)
    packed = K.pack_super(codes, d, dmin, sc, mn, bits=4, group_size=32, super_size=32, code_offset=7.5)
    assert packed.scales[0] == 0x3800 and packed.scales[64] == 0x3400  # fp16 0.5 and 0.25, row 0
    assert packed.sub[0] == 3 and packed.sub[64] == 5
    sh, c = layout.super_coeffs(np.float16(0.5), np.float16(0.25), 3, 5, 7.5)
    assert (sh, c) == (0.75, 10.0)
    w = K.dequantize(packed)
    assert w[0, 0] == 2 * 0.75 * 9 - 0.75 * 15 + 10 == 12.25
    assert w[0, 1] == -0.75 * 15 + 10 == -1.25  # q = 0: -dmin*mn


# ---- F16 packing with a shared tensor_scale ----


def test_row_chunks_share_a_tensor_scale(rng):
    case = make_case(rng, 200, 256, 32, 6)
    whole = case.pack()
    ts = whole.tensor_scale
    parts = [
        K.pack(
            case.codes[r : r + 64],
            case.scales[r : r + 64],
            case.zeros[r : r + 64],
            bits=6,
            group_size=32,
            tensor_scale=ts,
        )
        for r in range(0, 200, 64)
    ]
    assert all(p.tensor_scale == ts for p in parts)
    np.testing.assert_array_equal(np.concatenate([K.dequantize(p) for p in parts]), K.dequantize(whole))
    assert K.pack(case.codes, case.scales, case.zeros, bits=6, group_size=32, tensor_scale=None).tensor_scale == ts


@pytest.mark.parametrize("tensor_scale", [3.0, 0.0, -2.0, float("inf"), float("nan"), 2.0**-200, 2.0**-30])
def test_a_given_tensor_scale_is_checked(tensor_scale, rng):
    case = make_case(rng, 8, 64, 32, 4)  # scales ~0.05: 2^-30 pushes sh, c past fp16's 65504
    with pytest.raises(ValueError, match="tensor_scale"):
        K.pack(case.codes, case.scales, case.zeros, bits=4, group_size=32, tensor_scale=tensor_scale)


# ---- refusals ----


def super_parts(m=64, k=256, g=16, s=256, bits=6):
    rng = np.random.default_rng(1)
    case = make_super_case(rng, m, k, g, s, bits, "signed")
    planes, supers, subs, k_pad = layout.pack_super_arrays(
        case.codes,
        case.d,
        case.dmin,
        case.sc,
        case.mn,
        bits=bits,
        group_size=g,
        super_size=s,
        code_offset=case.code_offset,
    )
    args = (planes, supers, m, k, k_pad, bits, g, 1.0)
    kw = dict(scale_format=layout.SCALES_SUPER, sub=subs, super_size=s, code_offset=case.code_offset)
    return args, kw


def test_super_parts_are_accepted():
    args, kw = super_parts()
    p = K.PackedWeight(*args, **kw)
    assert (p.scale_format, p.super_size, p.n_super, p.act_group) == (1, 256, 1, 16)
    q = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(K.dequantize(q), K.dequantize(p))
    assert (q.scale_format, q.super_size, q.code_offset) == (p.scale_format, p.super_size, p.code_offset)


def _with(index, value, args):
    a = list(args)
    a[index] = value
    return tuple(a)


REFUSALS = {
    "sub one byte short": lambda a, kw: (a, {**kw, "sub": kw["sub"][:-1]}),
    "sub one byte long": lambda a, kw: (a, {**kw, "sub": np.concatenate([kw["sub"], [0]]).astype(np.int8)}),
    "SUPER without sub": lambda a, kw: (a, {**kw, "sub": None}),
    "super_size lies (128: twice the fp16 blocks)": lambda a, kw: (a, {**kw, "super_size": 128}),
    "super_size not a multiple of group_size": lambda a, kw: (a, {**kw, "super_size": 40}),
    "super_size does not divide k_pad": lambda a, kw: (a, {**kw, "super_size": 160}),
    "super_size 0": lambda a, kw: (a, {**kw, "super_size": 0}),
    "super_size past k_pad": lambda a, kw: (a, {**kw, "super_size": 512}),
    "code_offset inf": lambda a, kw: (a, {**kw, "code_offset": float("inf")}),
    "code_offset nan": lambda a, kw: (a, {**kw, "code_offset": float("nan")}),
    "code_offset past float32": lambda a, kw: (a, {**kw, "code_offset": 1e39}),
    "scale_format 4": lambda a, kw: (a, {**kw, "scale_format": 4}),
    "F16_SYM with SUPER's sub, super_size, code_offset": lambda a, kw: (a, {**kw, "scale_format": 2, "zero_mult": 1}),
    "SUPER with a zero_mult": lambda a, kw: (a, {**kw, "zero_mult": 1}),
    "SUPER_NOMIN with SUPER's two-record sub": lambda a, kw: (a, {**kw, "scale_format": 3}),
    "scale_format -1": lambda a, kw: (a, {**kw, "scale_format": -1}),
    "F16 with a sub buffer": lambda a, kw: (a, {"sub": kw["sub"]}),
    "F16 with a super_size": lambda a, kw: (a, {"super_size": 256}),
    "F16 with a code_offset": lambda a, kw: (a, {"code_offset": 31.5}),
    "bits 9": lambda a, kw: (_with(5, 9, a), kw),
    "bits 0": lambda a, kw: (_with(5, 0, a), kw),
    "group_size 48": lambda a, kw: (_with(6, 48, a), kw),
    "group_size 8": lambda a, kw: (_with(6, 8, a), kw),
    "per-row group with k_pad % 64 != 0": lambda a, kw: (_with(6, 96, _with(4, 96, _with(3, 96, a))), kw),
    "group_size 512 (not per row)": lambda a, kw: (_with(6, 512, _with(4, 1024, a)), kw),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_packed_weight_refuses_inconsistent_fields(name):
    args, kw = REFUSALS[name](*super_parts())
    with pytest.raises(ValueError) as err:
        K.PackedWeight(*args, **kw)
    assert str(err.value)  # a message that says what is wrong


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(d=np.full((4, 1), 0.1, np.float32)), "fp16"),  # 0.1 is not an fp16 value
        (dict(d=np.full((4, 1), 1e5, np.float32)), "fp16"),  # past fp16's range
        (dict(dmin=np.full((4, 1), np.nan, np.float32)), "fp16"),
        (dict(d=np.ones((4, 1), np.int32)), "float"),
        (dict(d=np.ones((4, 2), np.float32)), "shape"),
        (dict(sc=np.full((4, 4), 128)), "int8"),
        (dict(mn=np.full((4, 4), -129)), "int8"),
        (dict(sc=np.full((4, 4), 1.0)), "integers"),
        (dict(mn=np.ones((4, 3), np.int64)), "shape"),
        (dict(super_size=48), "super_size"),
        (dict(super_size=128), "super_size"),  # does not divide K = 64
        (dict(group_size=48), "group_size"),
        (dict(code_offset=float("inf")), "code_offset"),
        (dict(bits=9), "bits"),
        (dict(codes=np.full((4, 64), 64, np.uint8)), r"\[0, 64\)"),
    ],
)
def test_pack_super_refuses(change, match):
    base = dict(
        codes=np.zeros((4, 64), np.uint8),
        d=np.full((4, 1), 0.5, np.float32),
        dmin=np.zeros((4, 1), np.float32),
        sc=np.ones((4, 4), np.int64),
        mn=np.zeros((4, 4), np.int64),
        bits=6,
        group_size=16,
        super_size=64,
        code_offset=-0.5,
    )
    base.update(change)
    with pytest.raises(ValueError, match=match):
        K.pack_super(**base)


def test_table_and_weight_act_groups_must_fit(rng):
    x = np.ones(96, np.float32)
    with pytest.raises(ValueError):
        K.activation_tables(x, act_group=8)
    with pytest.raises(ValueError):
        K.activation_tables(np.ones(40, np.float32), act_group=16)  # 40 is not a multiple of 16
    g16 = make_case(rng, 8, 96, 16, 5).pack()
    with pytest.raises(ValueError):
        K.gemv(g16, K.activation_tables(x, act_group=32))


def test_act_group_is_min_64_group_size(rng):
    for group, want in ((16, 16), (32, 32), (64, 64), (128, 64), (256, 64)):
        assert make_case(rng, 4, 256, group, 7).pack().act_group == want == plan.act_group_for(group)
        assert layout.act_group_for(group) == want
    per_row = make_case(rng, 4, 100, 100, 8).pack()
    assert per_row.group_size == 128 and per_row.act_group == 64 == plan.act_group_for(128)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_weight_row_matches_dequantize(bits, rng):
    for packed in (
        make_case(rng, 70, 160, 16, bits).pack(),
        make_super_case(rng, 70, 512, 32, 256, bits, "kquant").pack(),
    ):
        deq = K.dequantize(packed)
        for r in (0, 33, 69):
            np.testing.assert_array_equal(K._kernels.weight_row(packed, r), deq[r].astype(np.float32))
