"""The attention kernel (kernels.h §attention) against a float64 reference on
the same fp16 K/V, every tier this machine runs against the generic spec, and
the properties the runtime relies on: a query's output is the same bit for bit
whether it runs alone (decode) or inside a prompt chunk, and whatever the
thread count. Also the fp32 -> fp16 rounding the KV cache stores with."""

import numpy as np
import pytest

import tmac_core.kernels as K
from tmac_core.errors import KernelError

TIERS = K.available_tiers()
B = K.ATTN_BLOCK


def reference(q, k_cache, v_cache, pos, n_kv, scale):
    """Causal softmax attention in float64; q (n, H, hd), caches fp16 bits (n_kv, n_ctx, hd)."""
    n, H, hd = q.shape
    G = H // n_kv
    k = k_cache.view(np.float16).astype(np.float64)
    v = v_cache.view(np.float16).astype(np.float64)
    out = np.empty((n, H, hd))
    for t in range(n):
        for h in range(H):
            s = k[h // G, : pos + t + 1] @ q[t, h].astype(np.float64) * scale
            a = np.exp(s - s.max())
            out[t, h] = (a / a.sum()) @ v[h // G, : pos + t + 1]
    return out


def case(rng, n, pos, H, n_kv, hd, q_scale=2.0, n_ctx=None):
    n_ctx = n_ctx or pos + n + 3
    q = (rng.standard_normal((n, H, hd)) * q_scale).astype(np.float32)
    k = K.to_fp16((rng.standard_normal((n_kv, n_ctx, hd)) * 3).astype(np.float32))
    v = K.to_fp16(rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32))
    return q, k, v


# (n, pos, heads, kv heads, head dim): one and several blocks, block edges, a
# partial last block, no grouping, wide groups, head sizes the SIMD tiers take
# (multiples of 8) and ones that fall back to the generic block
SHAPES = [
    (1, 0, 9, 3, 64),
    (1, B - 1, 9, 3, 64),
    (1, B, 9, 3, 64),
    (1, 5 * B + 17, 9, 3, 64),
    (7, B - 3, 9, 3, 64),
    (32, 2 * B - 16, 9, 3, 64),
    (1, 300, 4, 4, 128),
    (3, 150, 32, 8, 128),
    (2, 90, 16, 1, 72),
    (3, 70, 6, 2, 40),
    (2, 40, 4, 2, 6),
    (1, 10, 2, 1, 256),
]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("n,pos,H,n_kv,hd", SHAPES)
def test_attention_matches_float64_reference(tier, n, pos, H, n_kv, hd, rng):
    q, k, v = case(rng, n, pos, H, n_kv, hd)
    got = K.attention(q, k, v, pos, n_kv, hd**-0.5, tier=tier)
    ref = reference(q, k, v, pos, n_kv, hd**-0.5)
    assert got.shape == (n, H, hd) and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("tier", [t for t in TIERS if t != "generic"])
@pytest.mark.parametrize("q_scale", [0.1, 5.0, 40.0])
def test_tier_agrees_with_generic(tier, q_scale, rng):
    # sharp softmaxes (q_scale 40: scores of several hundred) stress exp and the fold
    q, k, v = case(rng, 5, 3 * B + 9, 9, 3, 64, q_scale=q_scale)
    a = K.attention(q, k, v, 3 * B + 9, 3, 0.125, tier=tier)
    g = K.attention(q, k, v, 3 * B + 9, 3, 0.125, tier="generic")
    np.testing.assert_allclose(a, g, rtol=0, atol=1e-5 * max(1.0, np.abs(g).max()))


@pytest.mark.parametrize("tier", TIERS)
def test_a_query_gives_the_same_bits_alone_or_in_a_chunk(tier, rng):
    # decode (n = 1) shares blocks out across threads and folds afterwards; a
    # prompt chunk folds inside each (token, KV head) item: same bits either way
    n, pos = 40, 2 * B + 5
    q, k, v = case(rng, n, pos, 9, 3, 64)
    chunk = K.attention(q, k, v, pos, 3, 0.125, tier=tier)
    for t in (0, 1, 27, n - 1):
        alone = K.attention(q[t : t + 1], k, v, pos + t, 3, 0.125, tier=tier)
        assert np.array_equal(alone[0], chunk[t])


@pytest.mark.parametrize("tier", TIERS)
def test_thread_count_does_not_change_a_bit(tier, rng):
    q, k, v = case(rng, 1, 7 * B + 30, 9, 3, 64)
    before = K.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 5):
            K.set_num_threads(threads)
            outs.append(K.attention(q, k, v, 7 * B + 30, 3, 0.125, tier=tier))
    finally:
        K.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_positions_after_the_query_are_never_read(rng):
    q, k, v = case(rng, 3, 100, 4, 2, 64, n_ctx=200)
    k2, v2 = k.copy(), v.copy()
    k2[:, 103:] = K.to_fp16(np.float32(np.nan))
    v2[:, 103:] = K.to_fp16(np.float32(np.inf))
    for tier in TIERS:
        assert np.array_equal(
            K.attention(q, k, v, 100, 2, 0.125, tier=tier), K.attention(q, k2, v2, 100, 2, 0.125, tier=tier)
        )


@pytest.mark.parametrize(
    "bad",
    [
        dict(pos=-1),
        dict(pos=197),  # before 0 / past the cache (n_ctx 200, n 4)
        dict(n_kv=3),  # 8 heads do not split into 3 groups
        dict(heads=34, n_kv=2),  # group of 17 > TMAC_ATTN_MAX_GROUP
        dict(hd=264),  # > TMAC_ATTN_MAX_HEAD_DIM
        dict(scale=float("nan")),
    ],
)
def test_inconsistent_sizes_are_refused(bad, rng):
    heads, n_kv, hd = bad.get("heads", 8), bad.get("n_kv", 2), bad.get("hd", 64)
    q = np.zeros((4, heads, hd), np.float32)
    kv = np.zeros((n_kv, 200, hd), np.uint16)
    with pytest.raises((ValueError, KernelError)):
        K.attention(q, kv, kv, bad.get("pos", 0), n_kv, bad.get("scale", 0.125))


def test_fp16_rounding_matches_ieee(rng):
    x = np.concatenate(
        [(rng.standard_normal(20000) * s).astype(np.float32) for s in (1e-7, 1e-5, 1, 300, 6e4)]
        + [
            np.array(
                [
                    65504,
                    65519,
                    65520,
                    1e6,
                    -0.0,
                    np.inf,
                    -np.inf,
                    2.0**-25,
                    2.0**-24 * 1.5,
                    2.0**-14,
                    2.0**-14 * (1 - 2.0**-11),
                ],
                np.float32,
            )
        ]
    )
    with np.errstate(over="ignore"):
        expect = x.astype(np.float16).view(np.uint16)
    assert np.array_equal(K.to_fp16(x), expect)
    nan = K.to_fp16(np.array([np.nan], np.float32))
    assert np.isnan(nan.view(np.float16)).all()
