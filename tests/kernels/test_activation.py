"""SwiGLU (kernels.h §activation) on every tier this machine runs: against a
float64 reference and against the generic tier, on ragged lengths (the SIMD
tail path) and on gates far into both saturated ends of the sigmoid."""

import numpy as np
import pytest

import tmac_core.kernels as K

TIERS = K.available_tiers()


def reference(gate, up):
    g = gate.astype(np.float64)
    with np.errstate(over="ignore"):  # exp(1e6) = inf: g / inf = 0, which is the limit
        return g / (1.0 + np.exp(-g)) * up.astype(np.float64)


def close(got, want, rtol):
    """Relative error per element, with an absolute floor far below any activation that matters."""
    err = np.abs(got.astype(np.float64) - want) / np.maximum(np.abs(want), 1e-30)
    return bool((err <= rtol).all()), float(err.max(initial=0.0))


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 15, 16, 17, 1536, 5632 + 5])
def test_matches_float64_reference(tier, n, rng):
    gate = (rng.standard_normal(n) * 6).astype(np.float32)
    up = rng.standard_normal(n).astype(np.float32)
    ok, worst = close(K.swiglu(gate, up, tier=tier), reference(gate, up), 1e-6)
    assert ok, f"{tier}: worst relative error {worst:.3g}"


@pytest.mark.parametrize("tier", TIERS)
def test_saturated_gates(tier):
    gate = np.array(
        [0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 86.0, 88.0, 90.0, 1e6, -80.0, -87.5, -88.5, -1e6], np.float32
    )
    up = np.full_like(gate, -1.5)
    got = K.swiglu(gate, up, tier=tier)
    want = reference(gate, up)
    big = np.abs(gate) < 80  # where silu is neither ~0 nor ~gate the relative error is checked
    assert close(got[big], want[big], 1e-6)[0]
    np.testing.assert_array_equal(got[gate >= 80], (gate * up)[gate >= 80])  # silu(g) = g in float32
    assert (np.abs(got[gate <= -80]) < 1e-30).all()  # silu(g) ~ 0, never NaN
    assert np.isfinite(got).all()


@pytest.mark.parametrize("tier", [t for t in TIERS if t != "generic"])
def test_tiers_agree_with_generic(tier, rng):
    gate = (rng.standard_normal(4099) * 4).astype(np.float32)
    up = rng.standard_normal(4099).astype(np.float32)
    want = K.swiglu(gate, up, tier="generic")
    ok, worst = close(K.swiglu(gate, up, tier=tier), want.astype(np.float64), 5e-7)
    assert ok, f"worst relative difference {worst:.3g}"


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="differ in shape"):
        K.swiglu(np.zeros(4, np.float32), np.zeros(5, np.float32))
    assert K.swiglu(np.zeros(0, np.float32), np.zeros(0, np.float32)).shape == (0,)
    out = K.swiglu(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
    assert out.shape == (2, 3)
