"""The context a model gets when the user has not chosen one (Load.n_ctx None, settings n_ctx None).

As much of the model's trained context as a quarter of the free memory holds in KV cache, at most
AUTO_CTX_MAX (longer prompts take long to read on a CPU) and, where the model allows it, at least
AUTO_CTX_MIN. The engine process applies it at load (app.workers.engine_host.automatic_n_ctx) and
the Models page estimates RAM with it, so both say the same number. Pure Python: no Qt, no numpy.
"""

from __future__ import annotations

AUTO_CTX_MAX = 8192
AUTO_CTX_MIN = 2048
AUTO_CTX_STEP = 256
KV_SHARE_OF_FREE_MEMORY = 0.25
MIN_CHAT_CTX = 512  # below this no chat fits; the load then fails plainly


def choose_n_ctx(n_ctx_train: int, kv_bytes_per_token: int, free_bytes: int | None) -> int:
    """The automatic context for a model whose KV cache costs kv_bytes_per_token, with free_bytes of
    memory left once its weights are in (None: the OS does not say, so the floor)."""
    ceiling = max(16, min(n_ctx_train, AUTO_CTX_MAX))
    floor = min(ceiling, AUTO_CTX_MIN)
    if free_bytes is None:
        return floor
    affordable = int(max(free_bytes, 0) * KV_SHARE_OF_FREE_MEMORY) // max(kv_bytes_per_token, 1)
    chosen = min(ceiling, affordable) // AUTO_CTX_STEP * AUTO_CTX_STEP
    return max(min(ceiling, MIN_CHAT_CTX), chosen)
