"""Type stub of the compiled Llama forward pass (_llama.pyx), so type checkers see its API.

Keep in step with _llama.pyx: a signature changed there changes here.
"""

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tmac_core.config import ModelConfig
from tmac_core.kernels._kernels import PackedWeight

INT_MAX: int
MAX_BATCH: int
PHASES: tuple[str, ...]  # the forward pass's phases, as set_profiling times them

def checked_sizes(cfg: ModelConfig, n_ctx: int, max_batch: int) -> dict[str, int]: ...
def input_perms(
    cfg: ModelConfig, weights: Mapping[str, object]
) -> dict[tuple[str, int], NDArray[np.int32]]: ...  # (role, layer) -> (cols,) act-order permutation

class LlamaRuntime:
    @property
    def logits_array(self) -> NDArray[np.float32]: ...  # (max_batch, vocab)
    def __init__(
        self,
        cfg: ModelConfig,
        # matrices, float32 vectors, and "rope.inv_freq" in float64 (models/loader.py: Weights)
        weights: Mapping[str, PackedWeight | NDArray[np.float32] | NDArray[np.float64] | NDArray[np.int32]],
        n_ctx: int,
        max_batch: int = 32,
        exact_activations: bool = False,  # act_quant "int8_token" models: exact int8 tables
    ) -> None: ...
    def block_matmul(self, layer: int, role: str, x: ArrayLike) -> NDArray[np.float32]: ...  # (n, rows)
    def embedding_row(self, token: int) -> NDArray[np.float32]: ...  # (dim,)
    def set_profiling(self, on: bool) -> None: ...
    def phase_profile(self) -> tuple[dict[str, float], dict[str, int], int]: ...  # seconds, bytes/token, tokens
    def forward(self, tokens: ArrayLike, pos: int, all_logits: bool = False) -> NDArray[np.float32]:
        """(vocab,) logits of the last token, or (n, vocab) with all_logits: a view, valid until the next call."""
