"""Activation-aware quantizers in numpy float64: the reference and the measured alternative of
the runtime's (tmac_core.loading.fastquant.quantize_weighted, used by loading/calibrate.py).
Codes, scales and zeros in fastquant.quantize's groupwise format (w ~ scale * (code - zero) per
group along K), chosen to make the layer's output right rather than its weights, for an input
second moment H = E[x x^T] (K, K) from the calibration pass (Calibrator(full=True)). The output
error of a row r is (w_r - q_r) H (w_r - q_r)^T.

- `weighted`: the algorithm of quantize_weighted (C): per group a clipping search and a
  least-squares refit, each weight's error weighted by H's diagonal E[x_k^2] (AWQ-style).
- `gptq`: GPTQ error compensation (Frantar et al. 2022): columns quantized in order, each
  one's rounding error spread over the not-yet-quantized columns through the Cholesky factor
  of H^-1 (damped), so the later columns absorb what the earlier ones lost; each group's
  scale and zero are searched as in `weighted` on the group's compensated weights when the
  pass reaches it. On SmolLM2's 2-bit preset it gave perplexity 188.3 against the weighted
  search's 128.9 (and took minutes in numpy), so the runtime does not use it.

Rows are independent in both, so any row slab of a matrix quantizes the same.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tmac_core.loading.fastquant import CLIP_GRID

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
Quantized = tuple[NDArray[np.uint8], F32, F32]
DAMP = 0.01  # GPTQ's damping: H + DAMP * mean(diag H) * I
BLOCK = 128  # GPTQ's lazy-update block (columns)


def _check(w: np.ndarray, h: np.ndarray, bits: int, group_size: int) -> tuple[int, int]:
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D (M, K) matrix, got shape {w.shape}")
    m, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"input second moment has shape {h.shape}, expected {(k, k)}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} is outside [1, 8]")
    if group_size < 1 or k % group_size:
        raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
    if not (np.isfinite(w).all() and np.isfinite(h).all()):
        raise ValueError("weights and the input second moment must be finite")
    return m, k


def fit_groups(g: F64, imp: F64, qmax: float) -> tuple[F64, F64]:
    """(scale, zero) per row of g (M, G) minimising sum imp * (s (q - z) - g)^2 over the clipping
    search (CLIP_GRID) with a weighted least-squares refit of each candidate. imp (M, G) or (G,) > 0."""
    imp = np.broadcast_to(imp, g.shape)
    lo, hi = g.min(axis=1), g.max(axis=1)
    sw = imp.sum(axis=1)
    mg = (imp * g).sum(axis=1) / sw
    best_err = np.full(g.shape[0], np.inf)
    best_s = np.maximum((hi - lo) / qmax, 1e-30)
    best_z = np.clip(np.rint(-lo / best_s), 0, qmax)
    for a in CLIP_GRID.astype(np.float64):
        s = np.maximum((hi - lo) * a / qmax, 1e-30)
        z = np.clip(np.rint(-lo * a / s), 0, qmax)
        q = np.clip(np.rint(g / s[:, None] + z[:, None]), 0, qmax)
        mq = (imp * q).sum(axis=1) / sw
        dq = q - mq[:, None]
        var = (imp * dq * dq).sum(axis=1)
        cov = (imp * dq * (g - mg[:, None])).sum(axis=1)
        ok = var > 0
        sf = np.where(ok, cov / np.where(ok, var, 1), s)
        sf = np.where(sf > 1e-30, sf, s)
        b = np.where(ok, mg - sf * mq, -s * z)
        zf = -b / sf
        qf = np.clip(np.rint(g / sf[:, None] + zf[:, None]), 0, qmax)
        err = (imp * (sf[:, None] * (qf - zf[:, None]) - g) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, sf, best_s)
        best_z = np.where(better, zf, best_z)
    return best_s, best_z


def _codes(g: F64, s: F64, z: F64, qmax: float) -> F64:
    return np.clip(np.rint(g / s[:, None] + z[:, None]), 0, qmax)


def _importance(h: F64) -> F64:
    d = np.diag(h).astype(np.float64)
    return np.maximum(d, d.mean() * 1e-6 + 1e-30)  # a dead input still weighs a little


def weighted(w: np.ndarray, h: np.ndarray, bits: int, group_size: int) -> Quantized:
    """Groupwise codes, scales, zeros of w (M, K) with errors weighted by H's diagonal."""
    m, k = _check(w, h, bits, group_size)
    qmax = float((1 << bits) - 1)
    d = _importance(h)
    codes = np.empty((m, k), np.uint8)
    scales = np.empty((m, k // group_size), np.float32)
    zeros = np.empty_like(scales)
    for gi, c0 in enumerate(range(0, k, group_size)):
        g = w[:, c0 : c0 + group_size].astype(np.float64)
        s, z = fit_groups(g, d[c0 : c0 + group_size], qmax)
        codes[:, c0 : c0 + group_size] = _codes(g, s, z, qmax)
        scales[:, gi], zeros[:, gi] = s, z
    return codes, scales, zeros


def _inverse_cholesky(h: F64) -> F64:
    """Upper Cholesky factor U of (H + damping)^-1 (U^T U = H^-1), as GPTQ uses it."""
    k = h.shape[0]
    h = h.astype(np.float64, copy=True)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    damp = DAMP * float(np.mean(np.diag(h)))
    for _ in range(8):  # a near-singular H gets more damping until it factors
        try:
            low = np.linalg.cholesky(h + damp * np.eye(k))
            inv = np.linalg.inv(low)  # L^-1, so H^-1 = L^-T L^-1
            hinv = inv.T @ inv
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            damp *= 10
    raise ValueError("the input second moment is not positive definite, even damped")


def gptq(w: np.ndarray, h: np.ndarray, bits: int, group_size: int) -> Quantized:
    """Groupwise codes, scales, zeros of w (M, K) by GPTQ error compensation under H (K, K)."""
    m, k = _check(w, h, bits, group_size)
    qmax = float((1 << bits) - 1)
    u = _inverse_cholesky(h)  # (K, K) upper
    d = _importance(h)
    work = w.astype(np.float64, copy=True)  # (M, K): compensated weights, updated as columns are done
    codes = np.empty((m, k), np.uint8)
    scales = np.empty((m, k // group_size), np.float32)
    zeros = np.empty_like(scales)
    block = max(group_size, BLOCK // group_size * group_size)
    s = z = np.zeros(m)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = work[:, b0:b1]  # a view: updated in place
        err = np.empty((m, b1 - b0))
        for j in range(b1 - b0):
            col = b0 + j
            if col % group_size == 0:
                gi = col // group_size
                s, z = fit_groups(wb[:, j : j + group_size], d[col : col + group_size], qmax)
                scales[:, gi], zeros[:, gi] = s, z
            q = np.clip(np.rint(wb[:, j] / s + z), 0, qmax)
            codes[:, col] = q
            e = (wb[:, j] - s * (q - z)) / u[col, col]
            wb[:, j + 1 :] -= np.outer(e, u[col, col + 1 : b1])
            err[:, j] = e
        work[:, b1:] -= err @ u[b0:b1, b1:]
    return codes, scales, zeros


def output_error(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """sum over rows of (w - q) H (w - q)^T: the layer's mean squared output error times M."""
    e = np.asarray(w, np.float64) - np.asarray(q, np.float64)
    return float(np.einsum("ij,jk,ik->", e, np.asarray(h, np.float64), e))


def dequantize(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> F32:
    """w ~ scales * (codes - zeros) groupwise, float32 (M, K)."""
    s = np.repeat(scales, group_size, axis=1)
    z = np.repeat(zeros, group_size, axis=1)
    return (s * (codes.astype(np.float32) - z)).astype(np.float32)
