"""The C quantizer (tmac_core.loading.fastquant) against the numpy algorithm it was written
from: as small a weighted error (within 1e-4 relative, or smaller), valid codes, scales and
zeros, the same bits for any thread count and block split, every source type read in place,
and a clear error for non-finite weights or bad sizes."""

from __future__ import annotations

import numpy as np
import pytest

from tmac_core.loading import fastquant
from tmac_core.loading.fastquant import CLIP_GRID, quantize, quantize_bf16


def numpy_quantize(w: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: repack.py's numpy quantizer as the C code was written from it (a copy,
    so that this test keeps its reference once the loader calls the C version)."""
    m, k = w.shape
    qmax = (1 << bits) - 1
    g = w.astype(np.float32).reshape(m, k // group_size, group_size)
    imp = g * g + (g * g).mean(axis=2, keepdims=True) + 1e-30
    lo, hi = g.min(axis=2, keepdims=True), g.max(axis=2, keepdims=True)
    best_err = np.full(lo.shape, np.inf, np.float32)
    best_s, best_z = np.zeros_like(lo), np.zeros_like(lo)
    sw = imp.sum(axis=2, keepdims=True)
    mg = (imp * g).sum(axis=2, keepdims=True) / sw
    for alpha in CLIP_GRID:
        s = np.maximum((hi - lo) * alpha / qmax, 1e-30)
        z = np.clip(np.rint(-lo * alpha / s), 0, qmax)
        q = np.clip(np.rint(g / s + z), 0, qmax)
        mq = (imp * q).sum(axis=2, keepdims=True) / sw
        var = (imp * (q - mq) ** 2).sum(axis=2, keepdims=True)
        cov = (imp * (q - mq) * (g - mg)).sum(axis=2, keepdims=True)
        ok = var > 0
        a = np.where(ok, cov / np.where(ok, var, 1), s)
        a = np.where(a > 1e-30, a, s)
        b = np.where(ok, mg - a * mq, -s * z)
        s, z = a, -b / a
        err = (imp * (s * (np.clip(np.rint(g / s + z), 0, qmax) - z) - g) ** 2).sum(axis=2, keepdims=True)
        better = err < best_err
        best_err, best_s, best_z = (
            np.where(better, err, best_err),
            np.where(better, s, best_s),
            np.where(better, z, best_z),
        )
    q = np.clip(np.rint(g / best_s + best_z), 0, qmax)
    return q.reshape(m, k).astype(np.uint8), best_s[..., 0], best_z[..., 0]


def group_errors(w: np.ndarray, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    """Weighted squared error of each group (M, K/G), in float64, with the quantizer's weights."""
    m, n_groups = scales.shape
    g = w.astype(np.float64).reshape(m, n_groups, -1)
    imp = g * g + (g * g).mean(axis=2, keepdims=True) + 1e-30
    r = scales[..., None].astype(np.float64) * (codes.reshape(g.shape) - zeros[..., None].astype(np.float64)) - g
    return (imp * r * r).sum(axis=2)


def check_valid(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, w: np.ndarray, bits: int, gs: int) -> None:
    m, k = w.shape
    assert codes.shape == (m, k) and codes.dtype == np.uint8
    assert scales.shape == zeros.shape == (m, k // gs) and scales.dtype == zeros.dtype == np.float32
    assert int(codes.max()) < 1 << bits
    assert (scales > 0).all() and np.isfinite(scales).all() and np.isfinite(zeros).all()


def heavy_tailed(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return (rng.standard_t(2, shape) * 0.02).astype(np.float32)


def special_groups(rng: np.random.Generator, shape: tuple[int, int], gs: int) -> np.ndarray:
    """Normal weights with edge-case groups in row 0: all zero, constant (both signs), one
    outlier, float32 subnormals only, and subnormals mixed with normal values."""
    w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    w[0, 0:gs] = 0.0
    w[0, gs : 2 * gs] = 0.37
    w[0, 2 * gs : 3 * gs] = -1.5
    w[0, 3 * gs + 5] = 40.0
    w[0, 4 * gs : 5 * gs] = rng.standard_normal(gs).astype(np.float32) * np.float32(1e-40)
    w[0, 5 * gs : 6 * gs : 2] = np.float32(3e-42)
    return w


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("gs", [32, 64, 128])
@pytest.mark.parametrize("kind", ["normal", "heavy_tailed", "special"])
def test_error_matches_numpy_or_better(bits, gs, kind):
    rng = np.random.default_rng(bits * 1000 + gs)
    shape = (48, 768)
    w = {
        "normal": lambda: (rng.standard_normal(shape) * 0.02).astype(np.float32),
        "heavy_tailed": lambda: heavy_tailed(rng, shape),
        "special": lambda: special_groups(rng, shape, gs),
    }[kind]()
    codes, scales, zeros = quantize(w, bits, gs, threads=1)
    check_valid(codes, scales, zeros, w, bits, gs)
    ours, ref = group_errors(w, codes, scales, zeros), group_errors(w, *numpy_quantize(w, bits, gs))
    assert ours.sum() <= ref.sum() * (1 + 1e-4)
    # group by group too; 1e-30 absolute: groups numpy fits exactly (all zero) or gives up on
    assert (ours <= ref * (1 + 1e-4) + 1e-30).all()
    if kind == "normal":  # zero-mean groups keep their zero inside the code range
        assert (zeros >= 0).all() and (zeros <= (1 << bits) - 1).all()


def test_constant_and_zero_groups_are_exact():
    gs = 32
    w = np.zeros((2, 4 * gs), np.float32)
    w[0, gs : 2 * gs] = 0.37
    w[0, 2 * gs : 3 * gs] = -1.5
    w[1, :gs] = 65504.0  # large, but its squares must not overflow the error sums
    for bits in (2, 4):
        codes, scales, zeros = quantize(w, bits, gs, threads=1)
        check_valid(codes, scales, zeros, w, bits, gs)
        back = (scales[..., None] * (codes.reshape(2, 4, gs) - zeros[..., None])).reshape(w.shape)
        np.testing.assert_allclose(back, w, rtol=1e-6, atol=0)


def test_huge_weights_keep_their_precision():
    # |w| ~ 1e20: numpy's error sums overflow float32 there; the C code scales each group first
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((4, 256)) * 0.02).astype(np.float32)
    codes, scales, zeros = quantize(w, 4, 64, threads=1)
    big = quantize(w * np.float32(2.0**70), 4, 64, threads=1)
    np.testing.assert_array_equal(big[0], codes)
    np.testing.assert_array_equal(big[1], scales * np.float32(2.0**70))
    np.testing.assert_array_equal(big[2], zeros)


def test_same_bits_for_any_thread_count_and_block_split(monkeypatch):
    rng = np.random.default_rng(7)
    w = heavy_tailed(rng, (67, 512))
    one = quantize(w, 3, 64, threads=1)
    monkeypatch.setattr(fastquant, "BLOCK_VALUES", 3 * 512)  # 23 blocks of 3 rows, a ragged last one
    for threads in (1, 2, 3):
        for got, want in zip(quantize(w, 3, 64, threads=threads), one):
            np.testing.assert_array_equal(got, want)


def test_float16_and_bfloat16_sources_are_read_as_their_values():
    rng = np.random.default_rng(3)
    w16 = (rng.standard_normal((16, 256)) * 0.02).astype(np.float16)
    w16[0, :8] = np.float16(3e-6)  # fp16 subnormals
    w16[0, 8:16] = -np.float16(6e-8)
    w16[1, :64] = -np.float16(0.0)
    want = quantize(w16.astype(np.float32), 4, 64, threads=2)
    for got, ref in zip(quantize(w16, 4, 64, threads=2), want):
        np.testing.assert_array_equal(got, ref)
    w32 = (rng.standard_normal((16, 256)) * 0.02).astype(np.float32)
    raw = (w32.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 by truncation
    as_f32 = (raw.astype(np.uint32) << 16).view(np.float32)
    for got, ref in zip(quantize_bf16(raw, 2, 32, threads=2), quantize(as_f32, 2, 32, threads=1)):
        np.testing.assert_array_equal(got, ref)


def test_row_slices_and_strided_views():
    rng = np.random.default_rng(4)
    big = (rng.standard_normal((40, 256)) * 0.02).astype(np.float32)
    want = quantize(big, 4, 64, threads=1)
    part = quantize(big[8:24], 4, 64, threads=1)
    for got, ref in zip(part, want):
        np.testing.assert_array_equal(got, ref[8:24])
    wide = np.zeros((40, 512), np.float32)
    wide[:, ::2] = big  # a column-strided view is copied, then quantized the same way
    for got, ref in zip(quantize(wide[:, ::2], 4, 64, threads=1), want):
        np.testing.assert_array_equal(got, ref)
    single = quantize(big[5:6], 4, 64, threads=1)
    for got, ref in zip(single, want):
        np.testing.assert_array_equal(got, ref[5:6])
    empty = quantize(big[:0], 4, 64)
    assert empty[0].shape == (0, 256) and empty[1].shape == (0, 4)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_weights_are_refused_naming_the_first(bad):
    w = np.ones((300, 64), np.float32)
    w[211, 7] = bad
    w[250, 1] = bad
    with pytest.raises(ValueError, match=r"weight \[211, 7\] is NaN or infinite"):
        quantize(w, 4, 32, threads=2)
    with pytest.raises(ValueError, match=r"weight \[211, 7\]"):
        quantize(w.astype(np.float16), 4, 32, threads=1)
    raw = (w.view(np.uint32) >> 16).astype(np.uint16)
    with pytest.raises(ValueError, match=r"weight \[211, 7\]"):
        quantize_bf16(raw, 4, 32, threads=1)


def test_bad_arguments_are_refused():
    w = np.zeros((4, 96), np.float32)
    with pytest.raises(ValueError, match="multiple of group_size"):
        quantize(w, 4, 64)
    with pytest.raises(ValueError, match="bits"):
        quantize(w, 0, 32)
    with pytest.raises(ValueError, match="bits"):
        quantize(w, 9, 32)
    with pytest.raises(ValueError, match="2-D"):
        quantize(w[0], 4, 32)
    with pytest.raises(ValueError, match="float32 or float16"):
        quantize(w.astype(np.float64), 4, 32)
    with pytest.raises(ValueError, match="uint16"):
        quantize_bf16(w, 4, 32)
    with pytest.raises(ValueError, match="threads"):
        quantize(w, 4, 32, threads=0)
