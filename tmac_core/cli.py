"""`python -m tmac_core`: the runtime from a terminal, for people and for scripts.

    info          CPU features and kernel tiers
    inspect       a model file: its tensor types and the bits per weight of each --bits mode
    generate      one answer to --prompt, streamed to stdout, timings on stderr
    chat          an interactive conversation (/reset, /exit; Ctrl+C stops an answer)
    perplexity    llama-perplexity's measure on a text file (tmac_core.perplexity)
    bench         prompt and decode tokens per second on random token ids
    synth         write a random-weight Llama GGUF (tmac_core.synth)
    serve         an OpenAI-compatible HTTP server over the model (tmac_core.server)

Every command takes --json: then stdout carries exactly one JSON object (chat: one
per answer). Errors exit with code 2 and one line naming the problem, or
{"error": type, "message": ...} with --json; never a traceback for a TmacError.
This is the one module of tmac_core that prints and exits; the library below it
does neither. Heavy imports happen inside the commands, so even a broken kernel
build is reported as an error line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn, Protocol, TypedDict

from tmac_core.errors import TmacError

if TYPE_CHECKING:  # annotations only: the commands import the runtime when they run
    import numpy as np
    from numpy.typing import NDArray

    from tmac_core.engine import Engine
    from tmac_core.models._llama import LlamaRuntime
    from tmac_core.sampling import SamplingParams
    from tmac_core.types import Chunk

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

# a command: the parsed command line in, the exit code out
Command = Callable[[argparse.Namespace], int]


# -- what --json prints: one record per command (chat: one per answer) -------------------


class ErrorRecord(TypedDict):
    error: str  # the exception's class name, "CliError" or "Interrupted"
    message: str  # one line


class InfoRecord(TypedDict):
    version: str
    arch: str | None  # the CPU architecture the kernels were built for
    cpu: str
    cpu_count: int | None
    features: list[str]  # the CPU features detected
    available_tiers: list[str]
    active_tier: str
    forced_by_env: str | None  # TMAC_KERNELS, when set
    default_threads: int
    default_model: str | None  # the embedded model's path, None when it is missing


class AnswerTimings(TypedDict):
    """The final Chunk's counters and timing (tmac_core.types.Chunk)."""

    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    prompt_tok_s: float
    decode_tok_s: float
    ttft_s: float
    elapsed_s: float
    threads: int
    finish_reason: str | None


class GenerateRecord(AnswerTimings):
    text: str
    model: str
    bits: int | None  # None: as in the file
    bits_per_weight: float
    tier: str


class InspectRecord(TypedDict):
    model: str
    source: str
    arch: str
    n_params: int
    file_size: int
    file_type: str  # the most common tensor type by elements
    type_mix: dict[str, int]  # GGML type → weights of the model's matrices stored in it
    exact: bool  # --bits file repacks every matrix without requantizing
    requantized: list[str]  # types --bits file requantizes to 4 bits (float, IQ*)
    default_bits: str  # the mode --bits defaults to for this file: "file" or "4"
    bits_per_weight: dict[str, float]  # --bits mode ("file", "4", "2") → bits per weight that runs


class ChatRecord(AnswerTimings):
    role: str  # "assistant"
    content: str


class PerplexityRecord(TypedDict):
    ppl: float
    nll: float
    nll_stderr: float
    tokens_scored: int
    chunks: int
    ctx: int
    n_tokens: int
    bos_replaced: bool
    bits: int | None
    bits_per_weight: float
    seconds: float
    tok_s: float
    model: str
    threads: int
    tier: str


class PhaseRecord(TypedDict):
    phase: str  # a LlamaRuntime PHASES name, or "outside" (Python and argmax between the steps)
    ms_per_token: float
    share: float  # of the profiled decode's wall time
    mb_per_token: float  # matrices the phase reads per token (0: none)
    gb_s: float | None  # mb_per_token / its time; None where it reads no matrix


class _BenchRun(TypedDict):
    model: str
    source: str
    n_params: int
    bits: int | None
    bits_per_weight: float
    packed_bytes: int
    decode_bytes: int  # the matrices one decoded token reads: packed_bytes but an untied embedding's
    kv_cache_bytes: int
    n_ctx: int
    rss_bytes: int
    rss_after_run_bytes: int | None  # None without measured runs
    rss_baseline_bytes: int
    rss_peak_bytes: int
    tier: str
    threads: int
    prompt_tokens: int
    gen_tokens: int
    repeats: int
    prompt_tok_s: float | None  # medians; None without measured runs
    decode_tok_s: float | None
    prompt_tok_s_runs: list[float]
    decode_tok_s_runs: list[float]
    load_s: float
    cache_hit: bool


class BenchRecord(_BenchRun, total=False):
    decode_phases: list[PhaseRecord]  # --profile only: one more run, its decode steps timed per phase
    decode_phases_tok_s: float  # that run's decode speed (with the phase clocks on)


class ServeRecord(TypedDict):
    url: str  # the OpenAI base URL: http://host:port/v1
    model: str  # what a request's "model" names
    n_ctx: int
    tier: str


class SynthRecord(TypedDict):
    path: str
    bytes: int
    n_params: int
    type: str
    seconds: float


class CliError(Exception):
    """A bad command line or input file, reported like a TmacError."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit by itself
        raise CliError(f"{self.prog}: {message}")


def _say(*parts: object, end: str = "\n") -> None:
    print(*parts, file=sys.stderr, flush=True, end=end)


def _emit(obj: Mapping[str, object]) -> None:
    print(json.dumps(obj), flush=True)


def _rss_bytes(field: str = "VmRSS") -> int:
    """Resident set size from /proc/self/status, else the peak from getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@contextlib.contextmanager
def _interrupt_sets(event: threading.Event) -> Iterator[None]:
    """Ctrl+C sets the cancel event (the engine stops within one token) instead of
    raising KeyboardInterrupt in the middle of the answer."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Progress(Protocol):
    """A progress callback for Engine.load (fraction, stage) and write_synthetic (fraction)."""

    def __call__(self, fraction: float, stage: str = "") -> None: ...


def _status_line(prefix: str) -> _Progress:
    """A progress callback redrawing one stderr line, drawn only when its text changes."""
    shown = ""

    def progress(fraction: float, stage: str = "") -> None:
        nonlocal shown
        line = f"{prefix}{stage} {100 * fraction:3.0f}%"
        if line != shown:
            shown = line
            _say(f"\r{line}\033[K", end="")

    return progress


def _load(args: argparse.Namespace, n_ctx: int | None = None) -> Engine:
    from tmac_core.engine import Engine

    # a redrawn status line belongs on terminals only, not in logs or pipes
    progress = _status_line("loading: ") if not args.json and sys.stderr.isatty() else None
    try:
        engine = Engine.load(
            args.model,
            bits=args.bits,
            n_threads=args.threads,
            n_ctx=n_ctx or args.ctx,
            progress=progress,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            exact_activations=args.exact_activations,
        )
    except ValueError as e:  # Engine.load's documented refusal of bits / n_ctx / threads
        raise CliError(str(e)) from None
    if progress:
        _say("\r\033[K", end="")
    return engine


def _timings(final: Chunk) -> AnswerTimings:
    return {
        "prompt_tokens": final.prompt_tokens,
        "cached_tokens": final.cached_tokens,
        "generated_tokens": final.generated_tokens,
        "prompt_tok_s": final.prompt_tok_s,
        "decode_tok_s": final.decode_tok_s,
        "ttft_s": final.ttft_s,
        "elapsed_s": final.elapsed_s,
        "threads": final.threads,
        "finish_reason": final.finish_reason,
    }


def _timing_line(final: Chunk) -> str:
    return (
        f"prompt: {final.prompt_tokens} tokens at {final.prompt_tok_s:.1f} tok/s"
        f" ({final.cached_tokens} cached) · decode: {final.generated_tokens} tokens at"
        f" {final.decode_tok_s:.1f} tok/s · ttft {final.ttft_s:.3f} s · {final.threads} threads"
        f" · finish: {final.finish_reason}"
    )


def _params(args: argparse.Namespace) -> SamplingParams:
    from tmac_core.sampling import SamplingParams

    try:
        return SamplingParams(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
    except ValueError as e:
        raise CliError(str(e)) from None


def _answer(
    engine: Engine, messages: Sequence[Mapping[str, str]], params: SamplingParams, echo: bool
) -> tuple[str, Chunk]:
    """Stream one answer; Ctrl+C cancels it. Returns (text, final chunk)."""
    cancel = threading.Event()
    parts: list[str] = []
    final: Chunk | None = None
    with _interrupt_sets(cancel):
        for chunk in engine.stream(messages, params, cancel=cancel):
            parts.append(chunk.text)
            if echo and chunk.text:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            if chunk.notice and echo:
                _say(f"[{chunk.notice}]")
            final = chunk
    assert final is not None, "a stream always ends with its final chunk"
    return "".join(parts), final


# -- commands -------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    import tmac_core
    from tmac_core import kernels
    from tmac_core.machine import cpu_model_name

    feats = kernels.cpu_features()
    try:
        from tmac_core.engine import default_model_path

        default_model = default_model_path()
    except TmacError:
        default_model = None
    info: InfoRecord = {
        "version": tmac_core.__version__,
        "arch": feats.get("arch"),
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "features": sorted(k for k, v in feats.items() if v is True),
        "available_tiers": list(kernels.available_tiers()),
        "active_tier": kernels.active_tier(),
        "forced_by_env": os.environ.get("TMAC_KERNELS") or None,
        "default_threads": kernels.get_num_threads(),
        "default_model": default_model,
    }
    if args.json:
        _emit(info)
    else:
        print(f"tmac_core {info['version']} on {info['cpu']} ({info['cpu_count']} logical CPUs, {info['arch']})")
        print(f"CPU features: {' '.join(info['features']) or 'none detected'}")
        forced = f", forced by TMAC_KERNELS={info['forced_by_env']}" if info["forced_by_env"] else ""
        print(f"kernel tiers: {', '.join(info['available_tiers'])} (active: {info['active_tier']}{forced})")
        print(f"default threads: {info['default_threads']}")
        print(f"embedded model: {default_model or 'missing'}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """The file's tensor types and what each --bits mode runs, without loading it."""
    from tmac_core import inspect_model, plan
    from tmac_core.engine import default_model_path

    summary = inspect_model(default_model_path() if args.model == "default" else args.model)
    source = plan.source_summary(summary.config, summary.tensor_types)
    record: InspectRecord = {
        "model": summary.name,
        "source": summary.path,
        "arch": summary.arch,
        "n_params": summary.n_params,
        "file_size": summary.file_size,
        "file_type": summary.file_type,
        "type_mix": source.type_mix,
        "exact": source.exact,
        "requantized": list(source.requantized),
        "default_bits": "file" if source.quantized else "4",
        "bits_per_weight": {plan.mode_name(mode): bpw for mode, bpw in source.bits_per_weight.items()},
    }
    if args.json:
        _emit(record)
        return 0
    total = max(sum(source.type_mix.values()), 1)
    mix = ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in source.type_mix.items())
    print(
        f"{record['model']}: {summary.arch}, {summary.n_params / 1e6:.0f}M params, {summary.file_size / 2**20:.0f} MiB"
    )
    print(f"matrix types: {mix}")
    if not source.quantized:
        print("float source: --bits file runs it at 4 bits (our quantizer)")
    elif source.exact:
        print("--bits file: every matrix exactly as in the file (no requantization)")
    else:
        print(f"--bits file: {', '.join(source.requantized)} requantized to 4 bits, the rest exactly as in the file")
    for mode, bpw in record["bits_per_weight"].items():
        default = " (default)" if mode == record["default_bits"] else ""
        print(f"  --bits {mode}: {bpw:.2f} bits/weight{default}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    params = _params(args)
    engine = _load(args)
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    text, final = _answer(engine, messages, params, echo=not args.json)
    if args.json:
        record: GenerateRecord = {
            "text": text,
            "model": engine.info.name,
            "bits": engine.bits,
            "bits_per_weight": engine.info.bits_per_weight,
            "tier": engine.info.tier,
            **_timings(final),
        }
        _emit(record)
    else:
        print(flush=True)
        _say(_timing_line(final))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tmac_core.errors import ContextOverflowError

    params = _params(args)
    engine = _load(args)
    with contextlib.suppress(ImportError):  # not on Windows: plain input() there
        import readline  # noqa: F401  (importing it gives input() line editing and history)
    system: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    if not args.json:
        info = engine.info
        _say(
            f"{info.name}: {_bits_label(info.bits)} ({info.bits_per_weight:.2f} bits/weight), {info.tier},"
            f" {info.n_threads} threads, context {info.n_ctx}."
        )
        _say("Type a message. /reset forgets the conversation, /exit quits; Ctrl+C stops an answer.")
    while True:
        try:
            line = input("" if args.json else "> ")
        except EOFError:
            break
        except KeyboardInterrupt:  # at the prompt: a fresh line, not the end of the program
            print()
            continue
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            history = list(system)
            engine.reset()
            if not args.json:
                _say("(conversation forgotten)")
            continue
        history.append({"role": "user", "content": line})
        try:
            text, final = _answer(engine, history, params, echo=not args.json)
        except ContextOverflowError as e:
            history.pop()
            if args.json:
                error: ErrorRecord = {"error": "ContextOverflowError", "message": str(e)}
                _emit(error)
            else:
                _say(f"[{e}; /reset to start over]")
            continue
        # a stopped answer stays in the history as far as it got, as the model saw it
        history.append({"role": "assistant", "content": text})
        if args.json:
            record: ChatRecord = {"role": "assistant", "content": text, **_timings(final)}
            _emit(record)
        else:
            print(flush=True)
            if final.finish_reason == "cancelled":
                _say("[stopped]")
            _say(_timing_line(final))
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    from tmac_core import perplexity as ppl

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise CliError(f"{args.file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    engine = _load(args, n_ctx=args.ctx)
    tokenizer = engine.tokenizer
    tokens = ppl.tokenize(tokenizer, text)
    bos = tokenizer.bos_id if tokenizer.add_bos else None

    def progress(done: int, total: int, running: float) -> None:
        _say(f"[{done}/{total}] ppl {running:.4f}")

    result = ppl.perplexity(
        engine.forward, tokens, args.ctx, bos, max_chunks=args.chunks, progress=None if args.json else progress
    )
    info = engine.info
    out: PerplexityRecord = {
        "ppl": result.ppl,
        "nll": result.nll,
        "nll_stderr": result.nll_stderr,
        "tokens_scored": result.tokens_scored,
        "chunks": result.chunks,
        "ctx": result.ctx,
        "n_tokens": result.n_tokens,
        "bos_replaced": bos is not None,
        "bits": info.bits,
        "bits_per_weight": info.bits_per_weight,
        "seconds": result.seconds,
        "tok_s": result.chunks * result.ctx / max(result.seconds, 1e-9),
        "model": info.name,
        "threads": info.n_threads,
        "tier": info.tier,
    }
    if args.json:
        _emit(out)
    else:
        print(
            f"PPL = {result.ppl:.4f} +/- {result.ppl * result.nll_stderr:.4f} over {result.tokens_scored}"
            f" tokens ({result.chunks} chunks of {result.ctx}; {_bits_label(info.bits)},"
            f" {info.bits_per_weight:.2f} bits/weight; {result.seconds:.1f} s)"
        )
    return 0


def _runtime(engine: Engine) -> LlamaRuntime:
    if engine.runtime is None:
        raise CliError("the engine was closed before it was measured")
    return engine.runtime


def _decode_bytes(engine: Engine) -> int:
    """Bytes of the matrices one decoded token reads (the runtime's phases): of an untied
    token embedding only a row is read, so it does not count."""
    return sum(_runtime(engine).phase_profile()[1].values())


def _decode_phases(engine: Engine, prompt: NDArray[np.int32], n_g: int) -> tuple[list[PhaseRecord], float]:
    """One more prompt + decode run with the runtime's phase clocks on for the decode steps:
    ([a record per phase, then "outside" the forward pass], that decode's tokens/s)."""
    import numpy as np

    runtime = _runtime(engine)
    n_p = len(prompt)
    token = int(np.argmax(engine.forward(prompt, 0)))
    runtime.set_profiling(True)
    t0 = time.perf_counter()
    try:
        for i in range(n_g):
            token = int(np.argmax(engine.forward([token], n_p + i)))
        wall = time.perf_counter() - t0
        seconds, nbytes, tokens = runtime.phase_profile()
    finally:
        runtime.set_profiling(False)
    records: list[PhaseRecord] = []
    for name, s in [*seconds.items(), ("outside", max(wall - sum(seconds.values()), 0.0))]:
        b = nbytes.get(name, 0)
        records.append(
            {
                "phase": name,
                "ms_per_token": 1e3 * s / max(tokens if name != "outside" else n_g, 1),
                "share": s / max(wall, 1e-9),
                "mb_per_token": b / 1e6,
                "gb_s": b * tokens / s / 1e9 if b and s > 0 else None,
            }
        )
    return records, n_g / max(wall, 1e-9)


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    baseline = _rss_bytes()  # interpreter, numpy, kernels: before any weight
    engine = _load(args)
    rss = _rss_bytes()
    info = engine.info
    n_p, n_g = args.prompt_tokens, args.gen_tokens
    if n_p + n_g + 1 > engine.n_ctx:
        raise CliError(f"{n_p} prompt + {n_g} generated tokens do not fit the context of {engine.n_ctx}")
    prompt = np.random.default_rng(args.seed).integers(0, info.vocab_size, n_p, dtype=np.int32)

    def run_once() -> tuple[float, float]:
        # the same procedure as the llama.cpp side of tests/bench/e2e.py: the prompt
        # from position 0 (the engine reads it in GEMM chunks), then greedy argmax
        # steps, no sampler
        t0 = time.perf_counter()
        logits = engine.forward(prompt, 0)
        t1 = time.perf_counter()
        token = int(np.argmax(logits))
        for i in range(n_g):
            token = int(np.argmax(engine.forward([token], n_p + i)))
        t2 = time.perf_counter()
        return n_p / (t1 - t0), n_g / max(t2 - t1, 1e-9)

    runs: list[tuple[float, float]] = []  # (prompt tok/s, decode tok/s) of each measured run
    if args.repeats > 0 and n_p > 0:
        run_once()  # warm-up: page in weights, settle the thread pool
        runs = [run_once() for _ in range(args.repeats)]
    # the weights are mapped from the repack cache and the KV cache is allocated
    # lazily, so what a running model holds shows only after it has run
    rss_run = _rss_bytes() if runs else None

    def median(xs: list[float]) -> float | None:
        return float(np.median(xs)) if xs else None

    prompt_tok_s, decode_tok_s = median([r[0] for r in runs]), median([r[1] for r in runs])
    phases = _decode_phases(engine, prompt, n_g) if args.profile else None
    out: BenchRecord = {
        "model": info.name,
        "source": info.source,
        "n_params": info.n_params,
        "bits": info.bits,
        "bits_per_weight": info.bits_per_weight,
        "packed_bytes": info.packed_bytes,
        "decode_bytes": _decode_bytes(engine),
        "kv_cache_bytes": info.kv_cache_bytes,
        "n_ctx": info.n_ctx,
        "rss_bytes": rss,
        "rss_after_run_bytes": rss_run,
        "rss_baseline_bytes": baseline,
        "rss_peak_bytes": _rss_bytes("VmHWM"),
        "tier": info.tier,
        "threads": engine.n_threads,
        "prompt_tokens": n_p,
        "gen_tokens": n_g,
        "repeats": len(runs),
        "prompt_tok_s": prompt_tok_s,
        "decode_tok_s": decode_tok_s,
        "prompt_tok_s_runs": [r[0] for r in runs],
        "decode_tok_s_runs": [r[1] for r in runs],
        "load_s": info.load_s,
        "cache_hit": info.cache_hit,
    }
    if phases is not None:
        out["decode_phases"], out["decode_phases_tok_s"] = phases
    if args.json:
        _emit(out)
    else:
        print(
            f"{info.name}: {info.n_params / 1e6:.0f}M params, {_bits_label(info.bits)} ({info.bits_per_weight:.2f}"
            f" bits/weight, {info.packed_bytes / 2**20:.0f} MiB packed), {info.tier}, {engine.n_threads} threads"
        )
        if prompt_tok_s is not None and decode_tok_s is not None:  # there were measured runs
            print(
                f"prompt ({n_p} tokens): {prompt_tok_s:.1f} tok/s · decode ({n_g} tokens):"
                f" {decode_tok_s:.1f} tok/s · median of {len(runs)}"
            )
        after = f", after the runs: {rss_run / 2**20:.0f} MiB" if rss_run is not None else ""
        print(
            f"resident memory after load: {rss / 2**20:.0f} MiB{after} (interpreter before load:"
            f" {baseline / 2**20:.0f} MiB; KV cache budget {info.kv_cache_bytes / 2**20:.0f} MiB)"
        )
        if phases is not None:
            records, tok_s = phases
            print(f"decode by phase ({n_g} tokens, one more run with the phase clocks on: {tok_s:.1f} tok/s):")
            print(f"  {'phase':<12} {'ms/token':>9} {'share':>7} {'MB/token':>9} {'GB/s':>6}")
            for r in records:
                gbs = f"{r['gb_s']:.1f}" if r["gb_s"] is not None else "-"
                print(
                    f"  {r['phase']:<12} {r['ms_per_token']:9.3f} {100 * r['share']:6.1f}%"
                    f" {r['mb_per_token']:9.1f} {gbs:>6}"
                )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model over OpenAI's API until Ctrl+C."""
    if args.parallel != 1:
        raise CliError(
            "--parallel above 1 is not supported yet: the runtime has one kernel thread pool, so"
            " requests run one at a time, in arrival order"
        )
    try:
        from tmac_core.server.app import ServerConfig
        from tmac_core.server.backend import EngineBackend
        from tmac_core.server.run import serve_forever
    except ImportError as e:
        raise CliError(f"the server needs Starlette and Uvicorn (pip install starlette uvicorn): {e}") from None
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("TMAC_API_KEY") or None,
        max_queue=args.queue,
        cors_origins=tuple(args.cors_origin or ()),
        log_prompts=args.log_prompts,
    )
    engine = _load(args)
    if config.host not in ("127.0.0.1", "::1", "localhost") and not config.api_key:
        _say(f"warning: {config.host} lets other computers use this model, and no --api-key is set")
    backend = EngineBackend(engine)
    card = backend.model()

    def ready(url: str) -> None:
        if args.json:
            record: ServeRecord = {"url": url, "model": card.id, "n_ctx": card.n_ctx, "tier": card.tier}
            _emit(record)
        _say(f"serving {card.id} at {url} (Ctrl+C stops)")

    with contextlib.suppress(KeyboardInterrupt):  # Uvicorn raises Ctrl+C again once it has shut down
        serve_forever(backend, config, ready)
    _say("server stopped")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from tmac_core.models import ARCHITECTURES
    from tmac_core.synth import GPTQSynthSpec, SynthSpec, write_gptq_folder, write_synthetic

    config = ARCHITECTURES[args.arch].config(
        dim=args.dim,
        hidden_dim=args.ffn,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=args.kv_heads,
        head_dim=args.dim // args.heads,
        vocab_size=args.vocab,
        n_ctx_train=args.ctx_train,
        rope_theta=args.rope_theta,
        tie_embeddings=args.tie_embeddings,
    )
    spec: SynthSpec | GPTQSynthSpec = (
        GPTQSynthSpec(config, bits=args.gptq_bits, group_size=args.group_size, add_bos=args.add_bos, seed=args.seed)
        if args.type == "gptq"
        else SynthSpec(config, weight_type=args.type, add_bos=args.add_bos, seed=args.seed)
    )
    try:
        spec.check()
    except ValueError as e:
        raise CliError(str(e)) from None
    progress = _status_line(f"writing {args.out}:") if not args.json and sys.stderr.isatty() else None
    t0 = time.perf_counter()
    if isinstance(spec, GPTQSynthSpec):
        size = write_gptq_folder(args.out, spec, progress)
    else:
        size = write_synthetic(args.out, spec, progress)
    out: SynthRecord = {
        "path": os.path.abspath(args.out),
        "bytes": size,
        "n_params": spec.n_params,
        "type": args.type if args.type != "gptq" else f"gptq w{args.gptq_bits}g{args.group_size}",
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        _emit(out)
    else:
        if progress:
            _say("")
        print(
            f"wrote {out['path']}: {spec.n_params / 1e6:.1f}M parameters, {args.type}, {size / 2**20:.1f} MiB"
            f" in {out['seconds']:.1f} s"
        )
    return 0


# -- the command line -------------------------------------------------------------------


def _int_at_least(minimum: int, rule: str) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, else a message naming the rule."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} {rule}")
        return value

    return parse


def _bits(text: str) -> int | None:
    """--bits: "file" (None: as in the file, Engine.load's default) or a preset."""
    if text == "file":
        return None
    if text in ("4", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not one of file, 4, 2")


def _bits_label(bits: int | None) -> str:
    return "as in the file" if bits is None else f"{bits}-bit"


_positive = _int_at_least(1, "must be at least 1")
_count = _int_at_least(0, "must not be negative")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tmac_core", description="T-MAC Chat's CPU runtime from the terminal.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, func: Command, help: str, model: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        if model:
            p.add_argument("model", help='a .gguf file, or "default" (the embedded SmolLM2-135M-Instruct)')
            p.add_argument(
                "--bits",
                type=_bits,
                default=None,
                metavar="{file,4,2}",
                help="file (default): each tensor as the file quantizes it, exactly (float files: 4);"
                " 4 or 2: our smaller/faster requantization (2 keeps the most sensitive tensors at 4)",
            )
            p.add_argument("--threads", type=_positive, default=None, help="kernel threads (default: all cores)")
            p.add_argument("--ctx", type=_positive, default=None, help="context length (KV cache size)")
            p.add_argument(
                "--cache-dir",
                default=None,
                help="repacked-model cache folder (default: the user cache, or $TMAC_CACHE_DIR)",
            )
            p.add_argument("--no-cache", action="store_true", help="repack in memory, read and write no cache")
            p.add_argument(
                "--exact-activations",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="BitNet b1.58 family only: compute each BitLinear's int8 dot products exactly, as"
                " trained (slower); default: the activation tables",
            )
        return p

    def sampling(p: argparse.ArgumentParser, max_tokens: int) -> None:
        p.add_argument("--max-tokens", type=_positive, default=max_tokens)
        p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
        p.add_argument("--top-k", type=int, default=40)
        p.add_argument("--top-p", type=float, default=0.95)
        p.add_argument("--min-p", type=float, default=0.05)
        p.add_argument("--repeat-penalty", type=float, default=1.1)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--system", default=None, help="a system message")

    command("info", cmd_info, "CPU features and kernel tiers", model=False)
    p = command("inspect", cmd_inspect, "a model's tensor types and the bits per weight of each --bits mode", False)
    p.add_argument("model", help='a .gguf file, or "default" (the embedded SmolLM2-135M-Instruct)')
    p = command("generate", cmd_generate, "answer one prompt (text on stdout, timings on stderr)")
    p.add_argument("--prompt", required=True)
    sampling(p, 256)
    p = command("chat", cmd_chat, "interactive chat (/reset, /exit; Ctrl+C stops an answer)")
    sampling(p, 512)
    p = command("perplexity", cmd_perplexity, "perplexity of a text file, as llama-perplexity defines it")
    p.add_argument("--file", required=True, help="UTF-8 text")
    p.add_argument("--chunks", type=_positive, default=None, help="score at most this many chunks")
    p.set_defaults(ctx=512)
    p = command("bench", cmd_bench, "prompt and decode speed on random token ids (medians)")
    p.add_argument("--prompt-tokens", type=_positive, default=128)
    p.add_argument("--gen-tokens", type=_positive, default=64)
    p.add_argument("--repeats", type=_count, default=3, help="measured runs after one warm-up (0: load only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt")
    p.add_argument("--profile", action="store_true", help="then one more run, its decode steps timed per phase")
    p = command("serve", cmd_serve, "an OpenAI-compatible HTTP server over the model (Ctrl+C stops)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this computer only)")
    p.add_argument("--port", type=_count, default=8080, help="TCP port (0: any free port)")
    p.add_argument("--api-key", default=None, help="require this bearer key (or set TMAC_API_KEY)")
    p.add_argument("--parallel", type=_positive, default=1, help="answers at a time (only 1 for now: in arrival order)")
    p.add_argument("--queue", type=_count, default=16, help="requests that may wait; more get 429")
    p.add_argument("--cors-origin", action="append", help="a browser origin allowed to call (repeatable)")
    p.add_argument("--log-prompts", action="store_true", help="log prompts and answers (off: never logged)")
    p = command("synth", cmd_synth, "write a random-weight Llama GGUF for benchmarks", model=False)
    p.add_argument("out", help="output .gguf path (a folder for --type gptq)")
    p.add_argument("--dim", type=_positive, default=2048)
    p.add_argument("--ffn", type=_positive, default=5632)
    p.add_argument("--layers", type=_positive, default=22)
    p.add_argument("--heads", type=_positive, default=32)
    p.add_argument("--kv-heads", type=_positive, default=4)
    p.add_argument("--vocab", type=_positive, default=49152)
    p.add_argument("--ctx-train", type=_positive, default=4096, help="the context length the file declares")
    p.add_argument(
        "--type",
        default="q4_0",
        choices=("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "tq1_0", "tq2_0", "i2_s", "gptq"),
        help="weight type; tq1_0, tq2_0 and i2_s write ternary (BitNet b1.58) weights and an F16 embedding;"
        " gptq writes a safetensors folder in EfficientQAT's -GPTQ export format (random codes)",
    )
    p.add_argument("--gptq-bits", type=int, choices=(2, 3, 4), default=2, help="--type gptq: bits per code")
    p.add_argument("--group-size", type=_positive, default=128, help="--type gptq: codes per scale along K")
    p.add_argument(
        "--arch",
        default="llama",
        choices=("llama", "bitnet-b1.58", "bitnet"),
        help="graph the file declares (bitnet-b1.58: 2B-4T's, with --dim 2560 --ffn 6912 --layers 30"
        " --heads 20 --kv-heads 5 --vocab 128256 --tie-embeddings --rope-theta 500000 --add-bos)",
    )
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--tie-embeddings", action="store_true", help="no separate output.weight")
    p.add_argument("--add-bos", action="store_true", help="the vocabulary adds a BOS token to every text")
    p.add_argument("--seed", type=int, default=0)
    return parser


def _fail(as_json: bool, kind: str, message: str) -> int:
    message = " ".join(str(message).split()) or kind  # one line, whatever the exception held
    if as_json:
        record: ErrorRecord = {"error": kind, "message": message}
        _emit(record)
    else:
        _say(f"tmac_core: error: {message}" if kind == "CliError" else f"tmac_core: {kind}: {message}")
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        command: Command = args.func  # set by build_parser for every subcommand
        return command(args)
    except CliError as e:
        return _fail(as_json, "CliError", str(e))
    except TmacError as e:
        return _fail(as_json, type(e).__name__, str(e))
    except OSError as e:  # an unreadable --file, a full disk for synth
        where = f"{e.filename}: " if e.filename else ""
        return _fail(as_json, type(e).__name__, f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        _fail(as_json, "Interrupted", "interrupted")
        return EXIT_INTERRUPTED
