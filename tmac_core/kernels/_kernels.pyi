"""Type stub of the compiled kernel binding (_kernels.pyx), so type checkers see its API.

Keep in step with _kernels.pyx and _kernels.pxd: a signature changed there changes here.
Shapes are in the .pyx docstrings; the arrays are numpy arrays of the dtypes named below.
"""

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

LAYOUT_VERSION: int
MAX_THREADS: int
TILE_ROWS: int
MAX_DIM: int
MAX_ELEMS: int
MAX_HEADS: int
ATTN_BLOCK: int
MAX_BITS: int
SCALES_F16: int
SCALES_SUPER: int
SCALES_F16_SYM: int
SCALES_SUPER_NOMIN: int
MAX_ZERO_MULT: int
GROUP_SIZES: tuple[int, ...]

def cpu_features() -> dict[str, Any]: ...
def available_tiers() -> list[str]: ...
def active_tier() -> str: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def pool_stats() -> dict[str, float]: ...  # ints but caller_wait_seconds

class PackedWeight:
    @property
    def planes(self) -> NDArray[np.uint8]: ...  # (m_pad/64, k_pad/8, bits, 64), flattened
    @property
    def scales(self) -> NDArray[np.uint16]: ...  # fp16 bits: F16 (m_pad/64, n_groups, 2, 64), SUPER n_super;
    # F16_SYM / SUPER_NOMIN: one record (.., 1, 64) instead of two
    @property
    def sub(self) -> NDArray[np.int8] | None: ...  # SUPER: (m_pad/64, n_groups, 2, 64), NOMIN (.., 1, 64), flattened
    def __init__(
        self,
        planes: ArrayLike,
        scales: ArrayLike,
        m: int,
        k: int,
        k_pad: int,
        bits: int,
        group_size: int,
        tensor_scale: float,
        *,
        scale_format: int = 0,
        sub: ArrayLike | None = None,
        super_size: int = 0,
        code_offset: float = 0.0,
        zero_mult: int = 0,
    ) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def m(self) -> int: ...
    @property
    def k(self) -> int: ...
    @property
    def m_pad(self) -> int: ...
    @property
    def k_pad(self) -> int: ...
    @property
    def bits(self) -> int: ...
    @property
    def group_size(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def tensor_scale(self) -> float: ...
    @property
    def scale_format(self) -> int: ...
    @property
    def super_size(self) -> int: ...
    @property
    def n_super(self) -> int: ...
    @property
    def code_offset(self) -> float: ...
    @property
    def zero_mult(self) -> int: ...
    @property
    def act_group(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class ActivationTables:
    @property
    def entries(self) -> NDArray[np.int8]: ...  # (n, k_pad/4, 16)
    @property
    def scales(self) -> NDArray[np.float32]: ...  # (n, k_pad/act_group)
    @property
    def sums(self) -> NDArray[np.float32]: ...  # (n, k_pad/act_group)
    @property
    def n(self) -> int: ...
    @property
    def k_pad(self) -> int: ...
    @property
    def act_group(self) -> int: ...
    def __init__(self, n: int, k_pad: int, act_group: int) -> None: ...

def build_tables(x: ArrayLike, act_group: int, tier: str | None = None) -> ActivationTables: ...
def gemm_tables(
    w: PackedWeight, t: ActivationTables, tier: str | None = None, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]: ...
def time_gemv(w: PackedWeight, x: ArrayLike, iters: int, tier: str | None = None) -> NDArray[np.float64]: ...
def attention(
    q: ArrayLike,
    k_cache: NDArray[np.uint16],
    v_cache: NDArray[np.uint16],
    pos: int,
    n_kv_heads: int,
    scale: float,
    tier: str | None = None,
) -> NDArray[np.float32]: ...
def to_fp16(x: ArrayLike) -> NDArray[np.uint16]: ...
def weight_row(w: PackedWeight, row: int) -> NDArray[np.float32]: ...
def swiglu(gate: ArrayLike, up: ArrayLike, tier: str | None = None) -> NDArray[np.float32]: ...
