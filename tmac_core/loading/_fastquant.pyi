"""Type stub of the compiled quantizer and packer binding (_fastquant.pyx), so type checkers see its API.

Keep in step with _fastquant.pyx. Each function quantizes the rows of w into the given
arrays: codes uint8 (M, K), scales and zeros float32 (M, K / group_size), alphas float32
(the clip factors); it returns -1, or the flat index of the first NaN or infinity.
"""

import numpy as np
from numpy.typing import NDArray

MAX_BITS: int
MAX_K: int
TILE_ROWS: int

def quantize_f32(
    w: NDArray[np.float32],
    bits: int,
    group_size: int,
    alphas: NDArray[np.float32],
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    zeros: NDArray[np.float32],
) -> int: ...
def quantize_f32_weighted(
    w: NDArray[np.float32],
    bits: int,
    group_size: int,
    alphas: NDArray[np.float32],
    col_imp: NDArray[np.float32],
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    zeros: NDArray[np.float32],
) -> int: ...
def quantize_f16(
    w: NDArray[np.uint16],
    bits: int,
    group_size: int,
    alphas: NDArray[np.float32],
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    zeros: NDArray[np.float32],
) -> int: ...
def quantize_bf16(
    w: NDArray[np.uint16],
    bits: int,
    group_size: int,
    alphas: NDArray[np.float32],
    codes: NDArray[np.uint8],
    scales: NDArray[np.float32],
    zeros: NDArray[np.float32],
) -> int: ...

# the packer (pack.c): layout.py's arrays, written into the given destination
def pack_planes(codes: NDArray[np.uint8], bits: int, k_pad: int, t0: int, t1: int, out: NDArray[np.uint8]) -> int: ...
def f16_peak(s: np.ndarray, z: np.ndarray, has_zeros: bool, bits: int) -> float: ...
def f16_scales(
    s: np.ndarray, z: np.ndarray, has_zeros: bool, bits: int, tensor_scale: float, out: NDArray[np.uint16]
) -> None: ...
def pair_tiles_u16(a: NDArray[np.uint16], b: NDArray[np.uint16], out: NDArray[np.uint16]) -> None: ...
def pair_tiles_i8(a: NDArray[np.int8], b: NDArray[np.int8], out: NDArray[np.int8]) -> None: ...
