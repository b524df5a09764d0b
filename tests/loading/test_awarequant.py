"""The activation-aware quantizers (loading/awarequant.py, fastquant.quantize_weighted) on a
synthetic layer whose inputs have outlier channels and correlations, as real layers do: they
must lower the layer's output error (w - q) H (w - q)^T against our plain quantizer, be
deterministic, and refuse bad input with a ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import awarequant_numpy as aq
from tmac_core.loading.fastquant import quantize, quantize_weighted

M, K, G = 96, 256, 64


@pytest.fixture(scope="module")
def layer():
    """(w (M, K), H (K, K)): inputs with log-normal channel scales and a shared component."""
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((M, K)) * 0.05).astype(np.float32)
    scale = np.exp(rng.standard_normal(K) * 1.2)
    x = rng.standard_normal((4096, K)) * scale + rng.standard_normal((4096, 1)) * scale * 0.5
    return w, x.T @ x / len(x)


def error(w, q, h):
    return aq.output_error(w, aq.dequantize(*q, G), h)


def test_importance_lowers_the_output_error(layer):
    w, h = layer
    plain = error(w, quantize(w, 2, G), h)
    weighted = error(w, quantize_weighted(w, np.diag(h).astype(np.float32), 2, G), h)
    gptq = error(w, aq.gptq(w, h, 2, G), h)
    assert weighted < 0.75 * plain
    assert gptq < weighted


def test_the_c_search_is_the_numpy_one(layer):
    """quantize_weighted (C) and awarequant.weighted (numpy float64) run one algorithm: the same
    output error to rounding, the same codes nearly everywhere."""
    w, h = layer
    c = quantize_weighted(w, np.diag(h).astype(np.float32), 2, G)
    n = aq.weighted(w, h, 2, G)
    assert error(w, c, h) == pytest.approx(error(w, n, h), rel=1e-3)
    assert np.mean(c[0] == n[0]) > 0.999


def test_deterministic_and_thread_independent(layer):
    w, h = layer
    imp = np.diag(h).astype(np.float32)
    one = quantize_weighted(w, imp, 2, G, threads=1)
    two = quantize_weighted(w, imp, 2, G, threads=2)
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a, b)
    g1, g2 = aq.gptq(w, h, 2, G), aq.gptq(w, h, 2, G)
    for a, b in zip(g1, g2, strict=True):
        assert np.array_equal(a, b)


def test_rows_are_independent(layer):
    """Any row slab quantizes as in the whole matrix (the loader may cut matrices in slabs)."""
    w, h = layer
    whole = aq.gptq(w, h, 2, G)
    part = aq.gptq(w[10:40], h, 2, G)
    for a, b in zip(whole, part, strict=True):
        assert np.array_equal(a[10:40], b)


def test_a_dead_input_channel_is_handled(layer):
    w, h = layer
    h = h.copy()
    h[5, :] = h[:, 5] = 0.0  # an input that is always zero
    codes, scales, zeros = aq.gptq(w, h, 2, G)
    assert np.isfinite(scales).all() and np.isfinite(zeros).all() and (scales > 0).all()
    assert codes.max() <= 3


@pytest.mark.parametrize(
    "imp, message",
    [
        (np.full(K - 1, 1.0, np.float32), "shape"),
        (np.full(K, np.nan, np.float32), "finite"),
        (np.full(K, -1.0, np.float32), "finite"),
        (np.concatenate([np.zeros(G, np.float32), np.ones(K - G, np.float32)]), "every group"),
    ],
)
def test_bad_importance_is_refused(layer, imp, message):
    with pytest.raises(ValueError, match=message):
        quantize_weighted(layer[0], imp, 2, G)


def test_bad_arguments_are_refused(layer):
    w, h = layer
    with pytest.raises(ValueError, match="second moment"):
        aq.gptq(w, h[:-1, :-1], 2, G)
    with pytest.raises(ValueError, match="finite"):
        aq.gptq(w, np.full_like(h, np.inf), 2, G)
    with pytest.raises(ValueError, match="group_size"):
        aq.gptq(w, h, 2, 48)
    with pytest.raises(ValueError, match="bits"):
        aq.weighted(w, h, 9, G)
    with pytest.raises(ValueError, match="2-D"):
        quantize_weighted(w[0], np.diag(h).astype(np.float32), 2, G)
    bad = w.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        quantize_weighted(bad, np.diag(h).astype(np.float32), 2, G)
