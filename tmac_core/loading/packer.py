"""The kernel-layout packer (pack.c) on several threads: kernels/layout.py's pack_arrays and
pack_super_arrays route their bit planes and scale tiles here, byte for byte what layout.py's
numpy spec writes (tests/runtime/test_fast_pack.py compares them over a sweep). The planes,
the bulk of a load's packing, are split by 64-row tiles over Python threads, each C call
with the GIL released.

Its own module, apart from fastquant.py, because layout.py (inside tmac_core.kernels) calls
it: it imports only numpy and the two extensions, so the kernels package and the loaders
do not import each other. No Qt.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from tmac_core.kernels._kernels import get_num_threads
from tmac_core.loading import _fastquant

TILE_ROWS = _fastquant.TILE_ROWS
PACK_SPLIT_BYTES = 1 << 20  # plane bytes below which one thread packs: a thread costs more than it saves


def threads_or_default(threads: int | None) -> int:
    n = get_num_threads() if threads is None else threads
    if n < 1:
        raise ValueError(f"threads={n} must be at least 1")
    return n


def spans(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) in `parts` contiguous spans of near-equal size (no empty one)."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def pack_planes(codes: NDArray[np.uint8], bits: int, k_pad: int, *, threads: int | None = None) -> NDArray[np.uint8]:
    """layout._pack_planes in C: the bit planes of uint8 codes (M, K), flat uint8
    (ceil(M / 64), k_pad / 8, bits, 64), rows past M and columns past K zero.

    threads: default the kernels' thread count; tiles are split between them.
    Raises ValueError on a code >= 2**bits (layout's message) or bad sizes.
    """
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"codes must be uint8 (M, K), got {codes.dtype} {codes.shape}")
    codes = np.ascontiguousarray(codes)
    m = codes.shape[0]
    tiles = -(-m // TILE_ROWS)
    per_tile = k_pad // 8 * bits * TILE_ROWS
    out = np.empty(tiles * per_tile, np.uint8)
    parts = threads_or_default(threads) if out.nbytes >= PACK_SPLIT_BYTES else 1

    def run(span: tuple[int, int]) -> int:
        t0, t1 = span
        return int(_fastquant.pack_planes(codes, bits, k_pad, t0, t1, out[t0 * per_tile : t1 * per_tile]))

    parts_of = spans(tiles, parts)
    if len(parts_of) == 1:
        found = [run(parts_of[0])]
    else:
        with ThreadPoolExecutor(len(parts_of), thread_name_prefix="pack") as pool:
            found = list(pool.map(run, parts_of))
    if any(i >= 0 for i in found):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit weights")
    return out


def _real_pair(s: np.ndarray, z: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scales and zeros broadcast to `shape`, both float32 if both are, else both float64
    (as layout.py converts them: exact either way)."""
    dtype = np.float32 if s.dtype == np.float32 and (z is None or z.dtype == np.float32) else np.float64
    sb = np.broadcast_to(np.asarray(s, dtype=dtype), shape)
    return sb, sb if z is None else np.broadcast_to(np.asarray(z, dtype=dtype), shape)


def f16_peak(scales: np.ndarray, zeros: np.ndarray | None, shape: tuple[int, int], bits: int) -> float:
    """max |s / 2|, |s * ((2**bits - 1) / 2 - z)| in float64 (layout.pack_arrays' peak).
    Raises ValueError if a scale or zero is not finite."""
    s, z = _real_pair(scales, zeros, shape)
    return float(_fastquant.f16_peak(s, z, zeros is not None, bits))


def f16_scales(
    scales: np.ndarray, zeros: np.ndarray | None, shape: tuple[int, int], bits: int, tensor_scale: float
) -> NDArray[np.uint16]:
    """layout.pack_arrays' F16 scale pairs as fp16 bits, flat uint16 (ceil(M / 64), n, 2, 64)."""
    s, z = _real_pair(scales, zeros, shape)
    out = np.empty(-(-shape[0] // TILE_ROWS) * shape[1] * 2 * TILE_ROWS, np.uint16)
    _fastquant.f16_scales(s, z, zeros is not None, bits, tensor_scale, out)
    return out


def pair_tiles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a, b), both (M, n) float16 or int8, as flat (ceil(M / 64), n, 2, 64): layout._to_tiles
    of their stack (SUPER's (d, dmin) and (sc, mn))."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    m, n = a.shape
    size = -(-m // TILE_ROWS) * n * 2 * TILE_ROWS
    if a.dtype == np.float16 and b.dtype == np.float16:
        out16 = np.empty(size, np.uint16)
        _fastquant.pair_tiles_u16(a.view(np.uint16), b.view(np.uint16), out16)
        return out16
    if a.dtype == np.int8 and b.dtype == np.int8:
        out8 = np.empty(size, np.int8)
        _fastquant.pair_tiles_i8(a, b, out8)
        return out8
    raise ValueError(f"pairs of float16 or int8, got {a.dtype} and {b.dtype}")
