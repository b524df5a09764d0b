"""The float reference of the end-to-end quality comparison: a GGUF's weights
dequantized to float64 (no further rounding) and run through
tests/reference/llama_numpy.py, the plain numpy forward pass the runtime is
tested against, scored with tmac_core.perplexity's own functions."""

from __future__ import annotations

import time

import numpy as np

from tests.reference import llama_numpy
from tmac_core import perplexity as ppl
from tmac_core.config import config_from_gguf
from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.gguf import GGUFFile
from tmac_core.models.loader import inv_frequencies


def float_model(path: str):
    """(config, name -> float64 array, RoPE inverse frequencies) of a GGUF file."""
    with GGUFFile.open(path) as gguf:
        cfg = config_from_gguf(gguf)
        weights = {name: dequantize_tensor(gguf, name).astype(np.float64) for name in cfg.expected_tensors()}
        inv_freq = inv_frequencies(cfg, gguf)
    return cfg, weights, inv_freq


def float_perplexity(
    path: str, tokens, ctx: int, bos_id: int | None, max_chunks: int | None = None
) -> ppl.PerplexityResult:
    cfg, weights, inv_freq = float_model(path)
    t0 = time.perf_counter()
    nlls = []
    for i in range(ppl.n_chunks(len(tokens), ctx, max_chunks)):
        chunk = ppl.chunk_tokens(tokens, i, ctx, bos_id)
        logits = llama_numpy.forward(cfg, weights, chunk, inv_freq)
        nlls.append(ppl.chunk_nll(logits, chunk))
    return ppl.summarize(nlls, ctx, len(tokens), time.perf_counter() - t0)
