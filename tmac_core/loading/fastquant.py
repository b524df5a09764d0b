"""Our quantizer for float weights and the kernel-layout packer, in C on several threads.

The quantizer: codes, scales and zeros
for float32, float16 or bfloat16 (M, K), per group along K, with exactly the contract of
repack.py's numpy quantize() (same algorithm: a clipping search over CLIP_GRID, each
candidate refitted by weighted least squares; quantize.c says where it differs).

Rows are quantized in blocks of about BLOCK_VALUES values, each block by one C call that
releases the GIL, so a thread pool runs blocks in parallel. A block depends on its rows
only: the result is the same for any thread count. A float16 or bfloat16 matrix (an
mmapped tensor, say) is read in place, never copied to float32 as a whole.

The packer (pack.c) is loading/packer.py's, re-exported here.
Imports numpy and the kernels' thread setting: no Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from tmac_core.kernels import get_num_threads
from tmac_core.loading import _fastquant
from tmac_core.loading.packer import PACK_SPLIT_BYTES as PACK_SPLIT_BYTES
from tmac_core.loading.packer import TILE_ROWS as TILE_ROWS
from tmac_core.loading.packer import f16_peak as f16_peak
from tmac_core.loading.packer import f16_scales as f16_scales
from tmac_core.loading.packer import pack_planes as pack_planes
from tmac_core.loading.packer import pair_tiles as pair_tiles

CLIP_GRID = np.linspace(1.0, 0.55, 10, dtype=np.float32)  # shrink factors tried per group
BLOCK_VALUES = 1 << 18  # values per C call: ~10 ms of work, small enough to balance threads

Quantized = tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]
# one of _fastquant's quantize_f32 / _f16 / _bf16: (w, bits, group_size, clip grid, codes, scales, zeros) -> bad
_Kernel = Callable[[np.ndarray, int, int, NDArray[np.float32], np.ndarray, np.ndarray, np.ndarray], int]


def quantize(w: np.ndarray, bits: int, group_size: int, *, threads: int | None = None) -> Quantized:
    """Codes uint8 (M, K) in [0, 2**bits), scales float32 (M, K / group_size) > 0 and zeros
    float32 (M, K / group_size) with w ~ scales * (codes - zeros) groupwise.

    w: float32 or float16 (M, K), read in place when its rows are contiguous (a row slice
    of a bigger matrix is); other floats (float64) are converted to float32 block by block.
    threads: default the kernels' thread count (the engine's setting).
    Raises ValueError on a NaN or an infinity (naming its position) or bad sizes.
    """
    if w.dtype == np.float32:
        return _quantize(w, _fastquant.quantize_f32, bits, group_size, threads)
    if w.dtype == np.float16:
        return _quantize(w.view(np.uint16), _fastquant.quantize_f16, bits, group_size, threads)
    if np.issubdtype(w.dtype, np.floating):  # float64: converted a block at a time
        return _quantize(w, _f32_blocks, bits, group_size, threads)
    raise ValueError(f"weights must be floats, got {w.dtype} (bfloat16 bits: quantize_bf16)")


def quantize_bf16(raw: np.ndarray, bits: int, group_size: int, *, threads: int | None = None) -> Quantized:
    """quantize() for bfloat16 weights given as their uint16 bit patterns (M, K), as GGUF stores them."""
    if raw.dtype != np.uint16:
        raise ValueError(f"bfloat16 weights are passed as their uint16 bits, got {raw.dtype}")
    return _quantize(raw, _fastquant.quantize_bf16, bits, group_size, threads)


def quantize_weighted(
    w: np.ndarray, importance: NDArray[np.float32], bits: int, group_size: int, *, threads: int | None = None
) -> Quantized:
    """quantize() with each column's error weighed by importance (K,) instead of the weights'
    own magnitudes: the activation-aware search (importance = E[x_k^2] of the layer's input,
    loading/calibrate.py). w: any float (M, K), converted to float32 a block at a time.
    Raises ValueError for importances that are not finite and >= 0 with one > 0 in each group."""
    if not np.issubdtype(w.dtype, np.floating) or w.ndim != 2:
        raise ValueError(f"weights must be a 2-D float (M, K) matrix, got {w.dtype} {w.shape}")
    imp = np.ascontiguousarray(importance, dtype=np.float32)
    if imp.shape != (w.shape[-1],):
        raise ValueError(f"importance has shape {imp.shape}, expected ({w.shape[-1]},)")

    def kernel(
        block: np.ndarray,
        bits: int,
        group_size: int,
        alphas: NDArray[np.float32],
        codes: np.ndarray,
        scales: np.ndarray,
        zeros: np.ndarray,
    ) -> int:
        rows = np.ascontiguousarray(block, dtype=np.float32)
        return _fastquant.quantize_f32_weighted(rows, bits, group_size, alphas, imp, codes, scales, zeros)

    if group_size >= 1 and imp.size % group_size == 0:  # else _quantize names the bad group size
        groups = imp.reshape(-1, group_size)
        if not (np.isfinite(imp).all() and (imp >= 0).all() and (groups.max(axis=1) > 0).all()):
            raise ValueError("importance must be finite and >= 0, with a positive value in every group")
    return _quantize(w, kernel, bits, group_size, threads)


def _f32_blocks(
    w: np.ndarray,
    bits: int,
    group_size: int,
    alphas: NDArray[np.float32],
    codes: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
) -> int:
    """quantize_f32 on a block of rows of another float dtype, converted a block at a time."""
    return _fastquant.quantize_f32(w.astype(np.float32), bits, group_size, alphas, codes, scales, zeros)


def _quantize(w: np.ndarray, kernel: _Kernel, bits: int, group_size: int, threads: int | None) -> Quantized:
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D (M, K) matrix, got shape {w.shape}")
    m, k = w.shape
    if group_size < 1 or k % group_size:
        raise ValueError(f"K={k} is not a multiple of group_size={group_size}")
    if w.strides[1] != w.itemsize or w.strides[0] < 0:
        w = np.ascontiguousarray(w)  # only for strided views: a matrix as loaded is read in place
    n_threads = get_num_threads() if threads is None else threads
    if n_threads < 1:
        raise ValueError(f"threads={n_threads} must be at least 1")
    codes = np.empty((m, k), np.uint8)
    scales = np.empty((m, k // group_size), np.float32)
    zeros = np.empty((m, k // group_size), np.float32)
    step = max(1, BLOCK_VALUES // max(k, 1))
    starts = range(0, m, step)

    def block(r0: int) -> int:
        r1 = min(r0 + step, m)
        bad = kernel(w[r0:r1], bits, group_size, CLIP_GRID, codes[r0:r1], scales[r0:r1], zeros[r0:r1])
        return -1 if bad < 0 else r0 * k + bad

    if n_threads == 1 or len(starts) <= 1:
        found = [block(r0) for r0 in starts]
    else:
        with ThreadPoolExecutor(min(n_threads, len(starts)), thread_name_prefix="quantize") as pool:
            found = list(pool.map(block, starts))
    bad = next((i for i in found if i >= 0), -1)
    if bad >= 0:
        row, col = divmod(bad, k)
        raise ValueError(f"weight [{row}, {col}] is NaN or infinite: weights must be finite")
    return codes, scales, zeros
