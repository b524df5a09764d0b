"""The C quantizer (tmac_core.loading.fastquant) against the numpy algorithm it was written
from: as small a weighted error (within 1e-4 relative, or smaller), valid codes, scales and
zeros, the same bits for any thread count and block split, every source type read in place,
a clear error for non-finite weights or bad sizes, and the same bits from the AVX, SSE2,
NEON (cross-compiled, under qemu-aarch64) and scalar builds of quantize.c."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tmac_core.loading import fastquant
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.fastquant import CLIP_GRID, quantize, quantize_bf16
from tmac_core.loading.gguf import GGUFFile


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


def make_weights(kind: str, seed: int, gs: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (48, 768)
    if kind == "normal":
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)
    return heavy_tailed(rng, shape) if kind == "heavy_tailed" else special_groups(rng, shape, gs)


def check_against_numpy(w: np.ndarray, bits: int, gs: int) -> np.ndarray:
    """Quantizes w, checks validity and the error group by group against numpy; returns zeros."""
    codes, scales, zeros = quantize(w, bits, gs, threads=1)
    check_valid(codes, scales, zeros, w, bits, gs)
    ours, ref = group_errors(w, codes, scales, zeros), group_errors(w, *numpy_quantize(w, bits, gs))
    assert ours.sum() <= ref.sum() * (1 + 1e-4)
    # group by group too, up to float32 rounding of the group's own scale (1e-12 of its
    # weighted energy): numpy fits a constant group exactly only by luck, or not at all
    g = w.astype(np.float64).reshape(ref.shape[0], ref.shape[1], gs)
    energy = ((g * g + (g * g).mean(axis=2, keepdims=True) + 1e-30) * g * g).sum(axis=2)
    assert (ours <= ref * (1 + 1e-4) + 1e-12 * energy).all()
    return zeros


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("gs", [32, 64, 128])
@pytest.mark.parametrize("kind", ["normal", "heavy_tailed", "special"])
def test_error_matches_numpy_or_better(bits, gs, kind):
    zeros = check_against_numpy(make_weights(kind, bits * 1000 + gs, gs), bits, gs)
    if kind == "normal":  # zero-mean groups keep their zero inside the code range
        assert (zeros >= 0).all() and (zeros <= (1 << bits) - 1).all()


@pytest.mark.parametrize("bits", [1, 5, 6, 8])
@pytest.mark.parametrize("kind", ["heavy_tailed", "special"])
def test_other_widths_match_numpy_or_better(bits, kind):
    check_against_numpy(make_weights(kind, bits, 64), bits, 64)


def test_weights_dequantized_from_a_grid_get_numpys_codes(smollm2):
    # a Q4_1 file's weights requantized sit on rounding ties often, and a tie broken the other
    # way moves a weight by a whole step: the C code divides like numpy, so it breaks them
    # the same way (w * (1 / s) differed here in 8 and 19 codes, and flipped top-1 tokens)
    w = dequantize_tensor(GGUFFile.open(smollm2), "blk.1.ffn_down.weight")
    w = w.reshape(-1, w.shape[-1])
    for bits, gs in ((2, 32), (4, 64)):
        ours, ref = quantize(w, bits, gs, threads=2)[0], numpy_quantize(w, bits, gs)[0]
        assert (ours != ref).sum() <= 2, (bits, gs)


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


def test_float64_is_quantized_as_its_float32_values(monkeypatch):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((9, 128)) * 0.02  # float64
    monkeypatch.setattr(fastquant, "BLOCK_VALUES", 2 * 128)  # converted block by block
    for got, want in zip(quantize(w, 4, 32, threads=2), quantize(w.astype(np.float32), 4, 32, threads=1)):
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
    with pytest.raises(ValueError, match="must be floats"):
        quantize(w.astype(np.int32), 4, 32)
    with pytest.raises(ValueError, match="uint16"):
        quantize_bf16(w, 4, 32)
    with pytest.raises(ValueError, match="threads"):
        quantize(w, 4, 32, threads=0)


# -- the same bits on every platform: this extension (AVX where the CPU has it) against the
#    scalar twin, the baseline build without AVX, and the NEON build under qemu-aarch64, all
#    compiled here from quantize.c

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "quantize.h"
/* argv[1]: int64 src_type, rows, k, bits, group_size, n_alphas; float32 alphas; the rows.
 * argv[2]: int32 rc; int64 bad; codes; scales; zeros. */
int main(int argc, char **argv) {
    int64_t h[6];
    float alphas[TMAC_Q_MAX_ALPHAS];
    FILE *f = fopen(argv[1], "rb");
    if (argc != 3 || !f || fread(h, 8, 6, f) != 6 || h[5] < 1 || h[5] > TMAC_Q_MAX_ALPHAS) return 2;
    size_t n = (size_t)(h[1] * h[2]), isz = h[0] == TMAC_Q_F32 ? 4 : 2, n_groups = n / (size_t)h[4];
    void *w = malloc(n * isz);
    uint8_t *codes = malloc(n);
    float *scales = malloc(n_groups * 4), *zeros = malloc(n_groups * 4);
    if (fread(alphas, 4, (size_t)h[5], f) != (size_t)h[5] || fread(w, isz, n, f) != n) return 2;
    fclose(f);
    int64_t bad;
    int rc = tmac_quantize_rows(w, (int)h[0], h[2], h[1], h[2], (int)h[3], h[4], alphas, (int)h[5], NULL, codes,
                                scales, zeros, &bad);
    FILE *o = fopen(argv[2], "wb");
    fwrite(&rc, 4, 1, o);
    fwrite(&bad, 8, 1, o);
    fwrite(codes, 1, n, o);
    fwrite(scales, 4, n_groups, o);
    fwrite(zeros, 4, n_groups, o);
    return fclose(o) != 0;
}
"""
LOADING = Path(fastquant.__file__).resolve().parent
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-I", str(LOADING)]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _build(tmp_path: Path, compiler: str | None, extra: list[str], name: str) -> Path:
    if compiler is None:
        if IN_CI:
            pytest.fail(f"no compiler for the {name} build on this CI machine (.ci/run installs it)")
        pytest.skip(f"no compiler for the {name} build (apt-get install gcc gcc-aarch64-linux-gnu qemu-user)")
    driver = tmp_path / "driver.c"
    driver.write_text(DRIVER)
    exe = tmp_path / f"quantize_{name}"
    cmd = [compiler, *FLAGS, *extra, str(driver), str(LOADING / "quantize.c"), "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


def _run(exe: list[str], tmp_path: Path, w: np.ndarray, src_type: int, bits: int, gs: int) -> bytes:
    m, k = w.shape
    header = np.array([src_type, m, k, bits, gs, len(CLIP_GRID)], np.int64)
    (tmp_path / "in.bin").write_bytes(header.tobytes() + CLIP_GRID.tobytes() + w.tobytes())
    subprocess.run([*exe, str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True, timeout=120)
    return (tmp_path / "out.bin").read_bytes()


def _expected(w: np.ndarray, bits: int, gs: int) -> bytes:
    codes, scales, zeros = quantize(w, bits, gs, threads=1)
    return struct.pack("<iq", 0, -1) + codes.tobytes() + scales.tobytes() + zeros.tobytes()


def _cases() -> list[tuple[np.ndarray, int, int, int]]:
    rng = np.random.default_rng(11)
    w = special_groups(rng, (24, 256), 32)
    w[1:12] = heavy_tailed(rng, (11, 256))
    return [(w, 0, 4, 32), (w, 0, 2, 64), (w.astype(np.float16).view(np.uint16), 1, 3, 128)]


def _as_input(w: np.ndarray, src_type: int) -> np.ndarray:
    return w.view(np.float16) if src_type == 1 else w


@pytest.mark.parametrize("target", ["scalar", "baseline", "neon"])
def test_every_platform_computes_the_same_bits(tmp_path, target):
    if target in ("scalar", "baseline"):  # baseline: SSE2 (or NEON) without the AVX instance
        flag = "-DTMAC_Q_SCALAR" if target == "scalar" else "-DTMAC_Q_NO_AVX"
        exe = [str(_build(tmp_path, shutil.which("cc") or shutil.which("gcc"), [flag], target))]
    else:
        qemu = shutil.which("qemu-aarch64")
        gcc = shutil.which("aarch64-linux-gnu-gcc") if qemu else None
        exe = [str(qemu), str(_build(tmp_path, gcc, ["-static"], target))]
    for w, src_type, bits, gs in _cases():
        assert _run(exe, tmp_path, w, src_type, bits, gs) == _expected(_as_input(w, src_type), bits, gs)
