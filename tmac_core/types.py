"""What the engine hands out: streamed chunks and a description of the loaded model.

Plain frozen dataclasses of builtins (and tmac_core.plan's ModelConfig, itself one),
so they pickle across the app's process boundary unchanged. Standard library only:
the app imports this module without loading numpy or the compiled runtime. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tmac_core.plan import ModelConfig

FINISH_REASONS = ("stop", "length", "cancelled", "context_full")

# The largest kernel thread pool (TMAC_MAX_THREADS in kernels.h; tmac_core.kernels
# asserts they agree). Here so the app can validate a thread count without
# loading the native extension.
MAX_THREADS = 256


@dataclass(frozen=True)
class Chunk:
    """One step of a streamed answer.

    Every generated token gives one chunk (text may be "" while a UTF-8
    character is incomplete). The last chunk has `finish_reason` set and
    `token_id` None; its counters and speeds are the final ones.
    """

    text: str  # new text since the previous chunk
    token_id: int | None  # the token this chunk added; None on the final chunk
    prompt_tokens: int  # tokens in the rendered prompt
    cached_tokens: int  # of those, reused from the previous turn's KV cache
    generated_tokens: int  # tokens generated so far in this answer
    prompt_tok_s: float  # prompt tokens processed per second (0 when all cached)
    decode_tok_s: float  # generated tokens per second after the first
    ttft_s: float  # seconds from the call to the first generated token
    elapsed_s: float  # seconds since the call
    cpu_s: float  # CPU seconds this process used since the call (all threads)
    threads: int  # kernel threads used for the latest token
    finish_reason: str | None = None  # one of FINISH_REASONS on the final chunk
    notice: str | None = None  # a sentence for the user (template fallback), first chunk only
    # CPU seconds (this process, all threads) until the first generated token: the prompt step.
    # cpu_s - prompt_cpu_s is decoding, the tokens after the first (as decode_tok_s counts them).
    prompt_cpu_s: float = 0.0


@dataclass(frozen=True)
class EngineInfo:
    """The loaded model and how it runs."""

    name: str  # general.name, or the file name
    source: str  # path of the GGUF file
    arch: str  # "llama", "qwen2"
    n_params: int  # weights in the model
    bits: int | None  # requested: 2 or 4, None as in the file (each matrix at its source's bits)
    bits_per_weight: float  # average over all repacked matrices (scales included)
    packed_bytes: int  # bytes of repacked matrices
    kv_cache_bytes: int  # bytes of the KV cache at n_ctx
    n_ctx: int  # context length the KV cache holds
    n_ctx_train: int  # context length the model was trained with
    vocab_size: int
    n_layers: int
    dim: int
    tier: str  # active kernel tier: generic, avx2, avx512, neon
    n_threads: int
    chat_template: str  # "model" or the name of the built-in fallback
    cache_hit: bool  # weights came from the repacked-model cache
    load_s: float  # seconds Engine.load took


@dataclass(frozen=True)
class ModelSummary:
    """A model file as the runtime reads it, before loading (tmac_core.inspect_model)."""

    path: str  # the GGUF file
    name: str  # general.name, or the file name without its suffix
    gguf_arch: str  # general.architecture as written ("mistral" runs as config.arch "llama")
    config: ModelConfig  # shapes, flags, trained context (config.n_ctx_train)
    n_params: int  # elements over all tensors
    file_size: int  # bytes
    file_type: str  # the most common tensor type by elements ("Q8_0", "Q4_1", ...)
    tensor_types: dict[str, str] = field(hash=False)  # tensor name → GGML type name (tmac_core.plan's `source`)
    gguf_version: int = 3

    @property
    def arch(self) -> str:
        return self.config.arch
