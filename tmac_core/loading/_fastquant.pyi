"""Type stub of the compiled quantizer binding (_fastquant.pyx), so type checkers see its API.

Keep in step with _fastquant.pyx. Each function quantizes the rows of w into the given
arrays: codes uint8 (M, K), scales and zeros float32 (M, K / group_size), alphas float32
(the clip factors); it returns -1, or the flat index of the first NaN or infinity.
"""

import numpy as np
from numpy.typing import NDArray

MAX_BITS: int
MAX_K: int

def quantize_f32(
    w: NDArray[np.float32],
    bits: int,
    group_size: int,
    alphas: NDArray[np.float32],
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
