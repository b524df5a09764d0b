"""Perplexity of a text, defined exactly as llama.cpp's `llama-perplexity` computes it
(tools/perplexity/perplexity.cpp, `perplexity()`), so our numbers and llama.cpp's
are comparable:

  * the whole text is tokenized once with `add_special` (a BOS first when the
    vocabulary adds one) and special-token text read as plain text;
  * it is cut into non-overlapping chunks of `ctx` tokens (n_chunks = n_tokens // ctx,
    the tail dropped; a text shorter than 2·ctx is refused);
  * each chunk starts from an empty KV cache, its first token replaced by BOS when
    the vocabulary adds one;
  * only the second half is scored: the logits at positions first = ctx // 2 ..
    ctx - 2 against the next token, i.e. ctx - 1 - ctx // 2 tokens per chunk;
  * ppl = exp(mean negative log-likelihood over all scored tokens).

numpy and tmac_core.errors only, so the benchmark's llama.cpp side and float
reference can score their logits with the same functions. No Qt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tmac_core.errors import PerplexityError

if TYPE_CHECKING:  # annotations only: this module runs on numpy and tmac_core.errors
    from tmac_core.tokenizer import Tokenizer

# forward(tokens int32 (n,), pos, all_logits), Engine.forward's shape: runs any n tokens at
# positions pos.. (pos 0: a fresh sequence); returns logits (n, vocab) when all_logits, else
# something the caller ignores (positions before ctx//2 are only context, their logits unused)
Forward = Callable[[NDArray[np.int32], int, bool], NDArray[np.float32]]


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll: float  # mean negative log-likelihood, nats per token
    nll_stderr: float  # standard error of that mean (llama.cpp prints ppl ± ppl·stderr)
    tokens_scored: int
    chunks: int
    ctx: int
    n_tokens: int  # tokens in the whole text
    seconds: float


def tokenize(tokenizer: Tokenizer, text: str) -> list[int]:
    """llama.cpp's common_tokenize(ctx, text, add_special=true, parse_special=false)."""
    if tokenizer.add_eos:
        # llama-perplexity asserts this too: an EOS after the text would be scored as text
        raise PerplexityError(
            "this vocabulary appends an end-of-sequence token to every text;"
            " llama-perplexity refuses such models and so do we"
        )
    return tokenizer.encode(text, allow_special=False, add_special=True)


def scored_per_chunk(ctx: int) -> int:
    return ctx - 1 - ctx // 2


def n_chunks(n_tokens: int, ctx: int, max_chunks: int | None = None) -> int:
    if ctx < 4:
        raise PerplexityError(f"a perplexity context must hold at least 4 tokens, got {ctx}")
    if n_tokens < 2 * ctx:
        raise PerplexityError(
            f"the text is {n_tokens} tokens; a context of {ctx} needs at least"
            f" {2 * ctx} (llama-perplexity's rule: two chunks)"
        )
    n = n_tokens // ctx
    return n if max_chunks is None else max(1, min(n, max_chunks))


def chunk_tokens(tokens: Sequence[int], index: int, ctx: int, bos_id: int | None) -> NDArray[np.int32]:
    """Tokens of chunk `index`, its first one replaced by BOS when bos_id is given."""
    chunk = np.array(tokens[index * ctx : (index + 1) * ctx], dtype=np.int32)
    if bos_id is not None:
        chunk[0] = bos_id
    return chunk


def chunk_nll(logits: NDArray[np.floating], chunk: NDArray[np.int32], offset: int = 0) -> NDArray[np.float64]:
    """Negative log-likelihoods (float64) of the scored tokens of one chunk.

    `logits` are rows of consecutive positions starting at `offset` (0: the whole
    chunk) and must cover positions ctx//2 .. ctx-2; `chunk` is the chunk's ctx tokens.
    """
    ctx = len(chunk)
    first, n = ctx // 2, scored_per_chunk(ctx)
    if offset > first or len(logits) < first - offset + n:
        raise ValueError(
            f"logits from position {offset} ({len(logits)} rows) do not cover positions {first}..{ctx - 2}"
        )
    rows = np.asarray(logits[first - offset : first - offset + n], dtype=np.float64)
    targets = chunk[first + 1 : ctx]
    top = rows.max(axis=1)
    log_z = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    return log_z - rows[np.arange(n), targets]


def summarize(nlls: Sequence[NDArray[np.float64]], ctx: int, n_tokens: int, seconds: float) -> PerplexityResult:
    every = np.concatenate(list(nlls))
    mean = float(every.mean())
    stderr = float(every.std() / math.sqrt(len(every) - 1)) if len(every) > 1 else 0.0
    return PerplexityResult(
        ppl=math.exp(mean),
        nll=mean,
        nll_stderr=stderr,
        tokens_scored=len(every),
        chunks=len(nlls),
        ctx=ctx,
        n_tokens=n_tokens,
        seconds=seconds,
    )


def perplexity(
    forward: Forward,
    tokens: Sequence[int],
    ctx: int,
    bos_id: int | None,
    *,
    max_chunks: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> PerplexityResult:
    """Run the definition above through `forward`, two calls a chunk: its first
    ctx//2 tokens as context only, then the rest with the logits of every position.

    progress(chunk_done, n_chunks, running_ppl) is called after every chunk.
    """
    total = n_chunks(len(tokens), ctx, max_chunks)
    first = ctx // 2
    t0 = time.perf_counter()
    nlls = []
    for i in range(total):
        chunk = chunk_tokens(tokens, i, ctx, bos_id)
        forward(chunk[:first], 0, False)
        logits = forward(chunk[first:], first, True)  # rows for positions first .. ctx-1
        nlls.append(chunk_nll(logits, chunk, offset=first))
        if progress is not None:
            progress(i + 1, total, math.exp(float(np.concatenate(nlls).mean())))
    return summarize(nlls, ctx, len(tokens), time.perf_counter() - t0)
