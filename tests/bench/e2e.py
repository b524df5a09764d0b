"""End-to-end benchmark: our runtime next to llama.cpp (llama-cpp-python), same run.

Speed: prompt (128 random token ids) and decode (64 greedy steps) tokens per
second, medians, at 1 and 2 threads, every measurement in a fresh process
(`python -m tmac_core bench` for ours, tests/bench/peer.py for llama.cpp),
ours and the peer alternating so that machine noise hits both:
  * SmolLM2-135M-Instruct (the embedded Q4_1 file): llama.cpp on Q4_1 and on a
    Q4_0 requantization; ours at 4 bits and at the 2-bit preset;
  * a synthetic 1.17B Llama (random weights, written as F16 by tmac_core.synth):
    llama.cpp on Q4_0, Q2_K and TQ2_0 made from it by llama_model_quantize; ours
    at 4 bits (the Q4_0 file), the 2-bit preset (the F16 file) and ternary (the
    TQ2_0 file, repacked exactly).
Quality: perplexity of SmolLM2 on tests/data/alice_ch1-2.txt, llama-perplexity's
definition (tmac_core.perplexity), the same token ids for every engine: float
(the Q4_1 file dequantized, tests/bench/ppl_reference.py), ours at 4 and 2 bits,
llama.cpp Q4_1 and Q2_K.
Memory: our resident set after a (cache-hit) load against the packed weights
plus the KV cache.
Files as downloaded: SmolLM2 Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q3_K_M and Q2_K made by
llama_model_quantize from an F16 file (the embedded Q4_1 dequantized,
tests/bench/float_gguf.py), ours as in the file (`--bits file`, exact repack) against
llama.cpp on the same file: perplexity, speed, bytes per decoded token; the same for
the synthetic 1.17B at Q4_K_M. First loads: our cold-cache loads (repack + cache
write) with their peak resident set (VmHWM of the bench process).
Real shapes (tests/bench/big.py, `--only big`): BitNet b1.58 2B-4T's shape against llama.cpp
TQ2_0 / TQ1_0, Llama-3-8B's shape as EfficientQAT w2g128 / w4g128 GPTQ folders against Q2_K /
Q4_0, and an 8B Q4_K_M first load with its peak memory.

Writes its section of docs/BENCHMARKS.md between the e2e markers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "BENCHMARKS.md"
MODELS = ROOT / "build" / "bench-models"
CACHE = MODELS / "repacked"
TEXT = ROOT / "tests" / "data" / "alice_ch1-2.txt"
START, END = "<!-- e2e:start -->", "<!-- e2e:end -->"
PROMPT, GEN, CTX = 128, 64, 512
FILE_TYPES = ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "q3_k_m", "q2_k")  # llama-quantize's names
FILES_GROUP = "SmolLM2-135M, files from F16"
PPL_RATIO = 1.01  # ours ÷ llama.cpp on the same file
DECODE_RATIO, PROMPT_RATIO = 1.3, 1.5
THREADS = (1, 2)
RSS_FACTOR = 1.15


def run_json(cmd: list, timeout: float = 3600) -> dict:
    """Run a command that prints one JSON object last on stdout; RuntimeError with its
    stderr tail if it fails."""
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{' '.join(str(c) for c in cmd[:4])}... exited {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def peer_python() -> str | None:
    """A Python that imports llama_cpp: this one (build.py installs the bench extra
    into the venv), else $TMAC_BENCH_PEER_PYTHON."""
    for python in (sys.executable, os.environ.get("TMAC_BENCH_PEER_PYTHON")):
        if python and subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
            return python
    return None


def busy_cores(window: float = 0.5) -> float:
    """Cores' worth of CPU time used by anything on the machine over `window` seconds."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


QUIET_WAIT = [180.0]  # seconds; --quiet-wait


# The real-shape group (tests/bench/big.py) builds on this module's helpers, so it registers itself
# here when imported rather than being imported by this module (no import cycle); tests/bench/__main__.py
# imports it.
REAL_SHAPES: list = []


def real_shapes():
    """The registered real-shape group module (tests.bench.big)."""
    if not REAL_SHAPES:
        raise RuntimeError("the real-shape group (tests.bench.big) is not imported: run python -m tests.bench e2e")
    return REAL_SHAPES[0]


def wait_for_quiet(max_wait: float | None = None) -> float:
    """Wait (up to max_wait s) until other work uses < 0.25 core: a 2-core machine shared
    with other jobs otherwise halves one side's numbers at random. Returns the load
    seen last, so the report can say when a number was taken on a busy machine."""
    deadline = time.monotonic() + (QUIET_WAIT[0] if max_wait is None else max_wait)
    load = busy_cores()
    while load >= 0.25 and time.monotonic() < deadline:
        time.sleep(2.0)
        load = busy_cores()
    return load


READER = "reader_gbs"  # a speed result's streaming-read bandwidth, read just before it (GB/s)


def speed_run(cmd: list, threads: int):
    """One speed measurement with the streaming-read bandwidth on `threads` threads read just
    before it (r[READER]), so its % BW is a share of the machine's rate of that minute: on this
    shared host a single reading at the start went stale, rows measured an hour later read
    105-129% of it (2026-12-07)."""

    def run() -> dict:
        from tests.bench.machine import read_bandwidth

        gbs = read_bandwidth(threads)[0]
        return {**run_json(cmd), READER: gbs}

    return run


def attempt(label: str, fn, quiet: bool = False):
    """Run one measurement; a failure is recorded and reported, not fatal for the rest."""
    load = wait_for_quiet() if quiet else None
    t0 = time.perf_counter()
    try:
        result = fn()
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        print(f"  {label}: FAILED {e}", flush=True)
        return {"error": str(e)}
    if load is not None:
        result["busy_cores_before"] = load
    busy = f", machine busy ({load:.1f} cores)" if load is not None and load >= 0.25 else ""
    print(f"  {label}: {_brief(result)} ({time.perf_counter() - t0:.0f} s{busy})", flush=True)
    return result


def _brief(r: dict) -> str:
    keys = ("prompt_tok_s", "decode_tok_s", "ppl", "bytes", "load_s")
    return ", ".join(f"{k} {r[k]:.4g}" for k in keys if isinstance(r.get(k), (int, float)))


# -- models -----------------------------------------------------------------------------


def synth_spec():
    from tmac_core.synth import SynthSpec

    return SynthSpec(weight_type="f16")


def prepare_models(peer: str | None) -> dict:
    """Paths of every file the benchmark reads, made once and kept in build/bench-models."""
    from tmac_core.engine import default_model_path
    from tmac_core.synth import write_synthetic

    MODELS.mkdir(parents=True, exist_ok=True)
    s = synth_spec()
    c = s.config
    stem = f"synth-d{c.dim}-f{c.hidden_dim}-l{c.n_layers}-h{c.n_heads}-kv{c.n_kv_heads}-v{c.vocab_size}-s{s.seed}"
    files = {
        "smol_q4_1": default_model_path(),
        "smol_f16": str(MODELS / "smollm2-135m-instruct-f16.gguf"),
        "synth_f16": str(MODELS / f"{stem}-f16.gguf"),
    }
    if not os.path.exists(files["smol_f16"]):
        from tests.bench.float_gguf import write_f16

        print("writing SmolLM2 F16 (the Q4_1 file dequantized)", flush=True)
        write_f16(files["smol_q4_1"], files["smol_f16"])
    if not os.path.exists(files["synth_f16"]):
        print(f"writing the synthetic model ({s.n_params / 1e9:.2f} B parameters, F16)", flush=True)
        write_synthetic(files["synth_f16"], s)
    wanted = [
        ("smol_q4_0", "smol_q4_1", "q4_0", "smollm2-135m-instruct-q4_0"),
        ("smol_q2_k", "smol_q4_1", "q2_k", "smollm2-135m-instruct-q2_k"),
        ("synth_q4_0", "synth_f16", "q4_0", f"{stem}-q4_0"),
        ("synth_q2_k", "synth_f16", "q2_k", f"{stem}-q2_k"),
        ("synth_tq2_0", "synth_f16", "tq2_0", f"{stem}-tq2_0"),
        ("synth_q4_k_m", "synth_f16", "q4_k_m", f"{stem}-q4_k_m"),
    ] + [(f"smolf_{t}", "smol_f16", t, f"smollm2-135m-instruct-f16-{t}") for t in FILE_TYPES]
    for key, src, qtype, name in wanted:
        path = MODELS / f"{name}.gguf"
        if not path.exists() and peer:
            attempt(
                f"llama_model_quantize {qtype} -> {path.name}",
                lambda src=src, path=path, qtype=qtype: run_json(
                    [peer, "-m", "tests.bench.peer", "quantize", files[src], path, qtype]
                ),
            )
        if path.exists():
            files[key] = str(path)
    return files


def decode_bytes(path: str) -> int:
    """Bytes of the matrices llama.cpp reads for one decoded token: every 2-D tensor but
    the token embedding (one row of it is read), which stands in for the output matrix
    when the file ties them."""
    from tmac_core.loading.gguf import GGUFFile

    with GGUFFile.open(path) as g:
        tied = "output.weight" not in g.tensors
        return sum(
            info.nbytes
            for name, info in g.tensors.items()
            if len(info.shape) == 2 and (name != "token_embd.weight" or tied)
        )


def inspect_file(path: str) -> dict:
    """`python -m tmac_core inspect --json`: the file's type mix (weights per GGML type) and
    the bits per weight each --bits mode runs."""
    return run_json([sys.executable, "-m", "tmac_core", "inspect", path, "--json"])


def tensor_mix(path: str) -> tuple[float, str]:
    """(bits per weight over the 2-D tensors, 'TYPE×count, ...') of a GGUF file."""
    from tmac_core.loading.gguf import GGUFFile

    counts: dict[str, int] = {}
    nbytes = elements = 0
    with GGUFFile.open(path) as g:
        for info in g.tensors.values():
            if len(info.shape) == 2:
                nbytes += info.nbytes
                elements += info.n_elements
                counts[info.ggml_type.name] = counts.get(info.ggml_type.name, 0) + 1
    mix = ", ".join(f"{t}×{n}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return 8.0 * nbytes / max(elements, 1), mix


# -- measurements -----------------------------------------------------------------------


def ours_cmd(*args) -> list:
    return [sys.executable, "-m", "tmac_core", *args, "--json", "--cache-dir", CACHE]


def file_label(qtype: str) -> str:
    return qtype.upper()


def speed_configs(files: dict) -> list[tuple[str, str, str, str, int | str | None]]:
    """(model group, label, engine, file key, bits); bits "file": as in the file, exactly."""
    exact = [
        (FILES_GROUP, f"{side} {file_label(t)}", engine, f"smolf_{t}", bits)
        for t in FILE_TYPES
        for side, engine, bits in (("llama.cpp", "peer", None), ("ours", "ours", "file"))
    ]
    return exact + [
        ("SmolLM2-135M", "llama.cpp Q4_1", "peer", "smol_q4_1", None),
        ("SmolLM2-135M", "llama.cpp Q4_0", "peer", "smol_q4_0", None),
        ("SmolLM2-135M", "ours 4-bit", "ours", "smol_q4_1", 4),
        ("SmolLM2-135M", "ours 2-bit preset", "ours", "smol_q4_1", 2),
        ("synthetic 1.17B", "llama.cpp Q4_0", "peer", "synth_q4_0", None),
        ("synthetic 1.17B", "llama.cpp Q2_K", "peer", "synth_q2_k", None),
        ("synthetic 1.17B", "llama.cpp TQ2_0", "peer", "synth_tq2_0", None),
        ("synthetic 1.17B", "ours 4-bit (Q4_0 file)", "ours", "synth_q4_0", 4),
        ("synthetic 1.17B", "ours 2-bit preset (F16 file)", "ours", "synth_f16", 2),
        ("synthetic 1.17B", "ours ternary (TQ2_0 file)", "ours", "synth_tq2_0", "file"),
        ("synthetic 1.17B", "llama.cpp Q4_K_M", "peer", "synth_q4_k_m", None),
        ("synthetic 1.17B", "ours Q4_K_M", "ours", "synth_q4_k_m", "file"),
    ]


def first_load_configs() -> list[tuple[str, str, str, int | str]]:
    """Cold loads measured for their time and peak memory only (not in the speed table)."""
    return [("synthetic 1.17B", "ours 4-bit (F16 file)", "synth_f16", 4)]


# Long prompts: (name, prompt tokens) measured with one generated token; "ttft" is the time to
# the first token of a reply to a 1,000-token chat history (its prompt pass: the first token
# comes from that pass's last logits), which is what a user with a long chat waits for.
LONG_PROMPTS = (("pp512", 512), ("ttft1000", 1000))


def long_prompt_pairs() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(model group, our label, llama.cpp's label, which LONG_PROMPTS) compared on long prompts;
    the labels are speed_configs' (same files, same bits)."""
    return [
        ("SmolLM2-135M", "ours 4-bit", "llama.cpp Q4_0", ("pp512",)),
        ("synthetic 1.17B", "ours 4-bit (Q4_0 file)", "llama.cpp Q4_0", ("pp512", "ttft1000")),
        ("synthetic 1.17B", "ours ternary (TQ2_0 file)", "llama.cpp TQ2_0", ("pp512",)),
    ]


def measure_long_prompts(files: dict, peer: str | None, repeats: int, groups: set[str]) -> dict:
    """speed[(group, label, threads, name)] for the long-prompt rows."""
    by_label = {(g, lab): (engine, key, bits) for g, lab, engine, key, bits in speed_configs(files)}
    prompts = dict(LONG_PROMPTS)
    out: dict = {}
    for threads in THREADS:
        for group, ours, theirs, names in long_prompt_pairs():
            if group not in groups:
                continue
            for name in names:
                n = prompts[name]
                print(f"{group}, {threads} thread(s): {name} ({n}-token prompt), median of {repeats}", flush=True)
                for label in (ours, theirs):
                    engine, key, bits = by_label[(group, label)]
                    if key not in files or (engine == "peer" and not peer):
                        continue
                    common = ["--threads", threads, "--prompt-tokens", n, "--gen-tokens", 1, "--repeats", repeats]
                    cmd = (
                        ours_cmd("bench", files[key], "--bits", bits, "--ctx", n + 64, *common)
                        if engine == "ours"
                        else [peer, "-m", "tests.bench.peer", "bench", files[key], *common]
                    )
                    out[(group, label, threads, name)] = attempt(
                        f"{label} {name}", lambda cmd=cmd: run_json(cmd), quiet=True
                    )
    return out


def measure_speed(
    files: dict, peer: str | None, repeats: int, groups: set[str], file_repeats: int, f16_load: bool
) -> tuple[dict, dict]:
    """speed[(group, label, threads)] and first_load[(group, label)] (our cache-miss loads)."""
    configs = [c for c in speed_configs(files) if c[0] in groups and c[3] in files and (c[2] == "ours" or peer)]
    first_load = {}
    print("our first loads (repack and fill the cache; a cache hit when the cache is warm)", flush=True)
    loads = [(g, lab, key, bits) for g, lab, engine, key, bits in configs if engine == "ours"]
    if f16_load and "synthetic 1.17B" in groups:
        loads += first_load_configs()
    for group, label, key, bits in loads:
        if key in files:
            first_load[(group, label)] = attempt(
                f"{group} {label}",
                lambda key=key, bits=bits: run_json(
                    ours_cmd("bench", files[key], "--bits", bits, "--threads", 2, "--repeats", 0)
                ),
            )
    speed = {}
    for group in [g for g in dict.fromkeys(c[0] for c in configs)]:
        for threads in THREADS:
            n = file_repeats if group == FILES_GROUP else repeats
            print(f"{group}, {threads} thread(s): prompt {PROMPT}, decode {GEN}, median of {n}", flush=True)
            for g, label, engine, key, bits in configs:
                if g != group:
                    continue
                common = ["--threads", threads, "--prompt-tokens", PROMPT, "--gen-tokens", GEN, "--repeats", n]
                cmd = (
                    ours_cmd("bench", files[key], "--bits", bits, *common)
                    if engine == "ours"
                    else [peer, "-m", "tests.bench.peer", "bench", files[key], *common]
                )
                speed[(group, label, threads)] = attempt(label, speed_run(cmd, threads), quiet=True)
    return speed, first_load


def measure_quality(files: dict, peer: str | None, chunks: int | None) -> dict:
    from tests.bench.ppl_reference import float_perplexity
    from tmac_core import perplexity as ppl
    from tmac_core.loading.gguf import GGUFFile
    from tmac_core.tokenizer import tokenizer_from_gguf

    with GGUFFile.open(files["smol_q4_1"]) as g:
        tokenizer = tokenizer_from_gguf(g.metadata)
    tokens = ppl.tokenize(tokenizer, TEXT.read_text(encoding="utf-8"))
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    limit = [] if chunks is None else ["--chunks", chunks]
    print(f"perplexity of SmolLM2 on {TEXT.name}: {len(tokens)} tokens, ctx {CTX}", flush=True)
    quality = {"n_tokens": len(tokens)}

    def float_ref():
        r = float_perplexity(files["smol_q4_1"], tokens, CTX, bos, chunks)
        return {
            "ppl": r.ppl,
            "nll_stderr": r.nll_stderr,
            "tokens_scored": r.tokens_scored,
            "chunks": r.chunks,
            "seconds": r.seconds,
        }

    quality["float (Q4_1 dequantized)"] = attempt("float reference", float_ref)
    for bits in (4, 2):
        quality[f"ours {bits}-bit" + (" preset" if bits == 2 else "")] = attempt(
            f"ours {bits}-bit",
            lambda bits=bits: run_json(
                ours_cmd("perplexity", files["smol_q4_1"], "--bits", bits, "--file", TEXT, "--ctx", CTX, *limit)
            ),
        )
    if peer:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(tokens, f)
        try:
            quality["peer_tokenization_matches"] = attempt(
                "llama.cpp tokenization",
                lambda: {
                    "match": run_json([peer, "-m", "tests.bench.peer", "tokenize", files["smol_q4_1"], "--file", TEXT])[
                        "tokens"
                    ]
                    == tokens
                },
            )
            for label, key in (("llama.cpp Q4_1", "smol_q4_1"), ("llama.cpp Q2_K", "smol_q2_k")):
                if key in files:
                    quality[label] = attempt(
                        label,
                        lambda key=key: run_json(
                            [
                                peer,
                                "-m",
                                "tests.bench.peer",
                                "ppl",
                                files[key],
                                "--tokens",
                                f.name,
                                "--ctx",
                                CTX,
                                "--bos",
                                -1 if bos is None else bos,
                                *limit,
                            ]
                        ),
                    )
                    quality[label]["bits_per_weight"], quality[label]["mix"] = tensor_mix(files[key])
            files_quality(quality, files, peer, f.name, bos, limit)
        finally:
            os.unlink(f.name)
    return quality


def files_quality(quality: dict, files: dict, peer: str, tokens_path: str, bos: int | None, limit: list) -> None:
    """Perplexity of the F16-made files: ours as in the file, llama.cpp on the same file,
    and llama.cpp on the F16 file itself (the float stand-in)."""

    def peer_ppl(key):
        cmd = [peer, "-m", "tests.bench.peer", "ppl", files[key], "--tokens", tokens_path, "--ctx", CTX]
        return run_json(cmd + ["--bos", -1 if bos is None else bos, *limit])

    quality["files"] = {"llama.cpp F16": attempt("llama.cpp F16 (the float stand-in)", lambda: peer_ppl("smol_f16"))}
    for t in FILE_TYPES:
        key = f"smolf_{t}"
        if key not in files:
            continue
        row = {"inspect": attempt(f"inspect {t}", lambda key=key: inspect_file(files[key]))}
        row["ours"] = attempt(
            f"ours {file_label(t)} (file)",
            lambda key=key: run_json(
                ours_cmd("perplexity", files[key], "--bits", "file", "--file", TEXT, "--ctx", CTX, *limit)
            ),
        )
        row["peer"] = attempt(f"llama.cpp {file_label(t)}", lambda key=key: peer_ppl(key))
        quality["files"][t] = row


# -- report -----------------------------------------------------------------------------


def _num(x, fmt=".1f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "—"


def _get(d: dict | None, key: str):
    return d.get(key) if isinstance(d, dict) else None


def decode_mb(engine: str, r: dict | None, path: str) -> float | None:
    """MB read per decoded token: ours, the matrices its runtime reads per token (the packed
    weights but an untied token embedding, as it reports them); llama.cpp, the file's matrices
    (decode_bytes)."""
    nbytes = _get(r, "decode_bytes") if engine == "ours" else decode_bytes(path)
    return nbytes / 1e6 if nbytes else None


def bw_fraction(mb: float | None, r: dict | None, bw: float | None) -> float | None:
    """Share of the streaming-read bandwidth that mb per token at r's decode speed is: of the reading
    taken just before r (r[READER]) where there is one, else of bw (the run's first reading)."""
    tok_s, bw = _get(r, "decode_tok_s"), _get(r, READER) or bw
    return mb * 1e6 * tok_s / (bw * 1e9) if mb and bw and tok_s else None


def read_gbs(mb: float | None, r: dict | None) -> float | None:
    """GB/s of weights that mb per token at r's decode speed reads."""
    tok_s = _get(r, "decode_tok_s")
    return mb * tok_s / 1e3 if mb and tok_s else None


def reader_span(results: dict, threads: int, fallback: float | None, groups: set[str] | None = None) -> str:
    """The streaming-read readings taken beside the speed rows on `threads` threads (of `groups`, or
    every group), as "a–b GB/s" (the run's first reading when no row has its own)."""
    seen = sorted(
        r[READER]
        for k, r in results.items()
        if isinstance(r, dict)
        and READER in r
        and len(k) >= 3
        and k[2] == threads
        and (groups is None or k[0] in groups)
    )
    if not seen:
        return f"{_num(fallback)} GB/s"
    low, high = _num(seen[0]), _num(seen[-1])
    return f"{low} GB/s" if low == high else f"{low}–{high} GB/s"


def speed_table(speed: dict, files: dict, bandwidth: dict) -> str:
    rows = [
        "| model | engine and file | bits/weight | decode 1 thr | decode 2 thr | prompt 1 thr | prompt 2 thr "
        "| MB/token | GB/s 1 thr | % BW 1 thr | GB/s 2 thr | % BW 2 thr |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, label, engine, key, _bits in speed_configs(files):
        one, two = speed.get((group, label, 1)), speed.get((group, label, 2))
        if group == FILES_GROUP or (one is None and two is None):  # those have their own table
            continue
        bpw = (
            (_get(one, "bits_per_weight") or _get(two, "bits_per_weight"))
            if engine == "ours"
            else tensor_mix(files[key])[0]
        )
        cells = [_num(_get(r, k)) for k in ("decode_tok_s", "prompt_tok_s") for r in (one, two)]
        mb = decode_mb(engine, one or two, files[key])
        cells.append(_num(mb))
        for t, r in ((1, one), (2, two)):
            share = bw_fraction(mb, r, bandwidth.get(t))
            cells += [_num(read_gbs(mb, r)), _num(100 * share if share else None, ".0f")]
        rows.append(f"| {group} | {label} | {_num(bpw, '.2f')} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def long_prompt_table(speed: dict) -> str:
    rows = [
        "| model | ours | llama.cpp | prompt | threads | ours tok/s | llama.cpp tok/s | × "
        "| ours time to first token | llama.cpp |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    prompts = dict(LONG_PROMPTS)
    for group, ours, theirs, names in long_prompt_pairs():
        for name in names:
            for t in THREADS:
                a = _get(speed.get((group, ours, t, name)), "prompt_tok_s")
                b = _get(speed.get((group, theirs, t, name)), "prompt_tok_s")
                if a is None and b is None:
                    continue
                n = prompts[name]
                rows.append(
                    f"| {group} | {ours.removeprefix('ours ')} | {theirs.removeprefix('llama.cpp ')} | {n} tokens "
                    f"| {t} | {_num(a)} | {_num(b)} | {_num(a / b if a and b else None, '.2f')} "
                    f"| {_num(n / a if a else None, '.2f')} s | {_num(n / b if b else None, '.2f')} s |"
                )
    return "\n".join(rows)


def targets(speed: dict, quality: dict, files: dict, bandwidth: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; met None when a side is missing. The speed targets are
    the ones the speed work set: ahead of the fastest CPU runtime, ratios against llama.cpp."""
    out = []

    def speed_row(name, ours, peer, metric, threads, need, long=None):
        a = _get(speed.get((*ours, threads, long) if long else (*ours, threads)), metric)
        b = _get(speed.get((*peer, threads, long) if long else (*peer, threads)), metric)
        r = a / b if a and b else None
        shown = f"{_num(a)} vs {_num(b)} tok/s = {_num(r, '.2f')}×" if r else "not measured"
        out.append((name, shown, None if r is None else r >= need))

    smol, syn = "SmolLM2-135M", "synthetic 1.17B"
    pairs = [
        ("SmolLM2 4-bit", (smol, "ours 4-bit"), (smol, "llama.cpp Q4_0"), "Q4_0"),
        ("1.17B 4-bit", (syn, "ours 4-bit (Q4_0 file)"), (syn, "llama.cpp Q4_0"), "Q4_0"),
        ("1.17B ternary", (syn, "ours ternary (TQ2_0 file)"), (syn, "llama.cpp TQ2_0"), "TQ2_0"),
    ]
    for t in THREADS:
        thr = f"{t} thread{'s' * (t > 1)}"
        for name, ours, peer, ptype in pairs:
            speed_row(f"{name} decode ≥ 1.5× llama.cpp {ptype}, {thr}", ours, peer, "decode_tok_s", t, 1.5)
        speed_row(
            f"SmolLM2 4-bit prompt ≥ 1.6× llama.cpp Q4_0, {thr}", pairs[0][1], pairs[0][2], "prompt_tok_s", t, 1.6
        )
        speed_row(
            f"1.17B 4-bit prompt (128) ≥ 1.6× llama.cpp Q4_0, {thr}", pairs[1][1], pairs[1][2], "prompt_tok_s", t, 1.6
        )
        speed_row(
            f"1.17B 4-bit prompt (512) ≥ 1.6× llama.cpp Q4_0, {thr}",
            pairs[1][1],
            pairs[1][2],
            "prompt_tok_s",
            t,
            1.6,
            long="pp512",
        )
        for label in ("ours 2-bit preset (F16 file)", "ours ternary (TQ2_0 file)"):
            speed_row(
                f"1.17B {label.removeprefix('ours ')} prompt ≥ 3× llama.cpp TQ2_0, {thr}",
                (syn, label),
                (syn, "llama.cpp TQ2_0"),
                "prompt_tok_s",
                t,
                3.0,
            )
    for group, label, engine, key, _bits in speed_configs(files):
        if group != syn or engine != "ours":
            continue
        for t, need in ((1, 0.85), (2, 0.80)):
            r = speed.get((group, label, t))
            share = bw_fraction(decode_mb(engine, r, files[key]), r, bandwidth.get(t))
            out.append(
                (
                    f"1.17B {label.removeprefix('ours ')} decode ≥ {need:.0%} of the streaming-read bandwidth, "
                    f"{t} thread{'s' * (t > 1)}",
                    f"{_num(100 * share, '.0f')}% of {_num(_get(r, READER) or bandwidth.get(t))} GB/s"
                    if share
                    else "not measured",
                    None if share is None else share >= need,
                )
            )
    four_q = quality.get("ours 4-bit")
    bpw4 = _get(four_q, "bits_per_weight") or _get(speed.get((smol, "ours 4-bit", 1)), "bits_per_weight")
    q4_0 = tensor_mix(files["smol_q4_0"])[0] if "smol_q4_0" in files else None
    out.append(
        (
            "SmolLM2 4-bit bits/weight ≤ llama.cpp's Q4_0 file",
            f"{_num(bpw4, '.2f')} vs {_num(q4_0, '.2f')} bits/weight",
            None if not (bpw4 and q4_0) else bpw4 <= q4_0,
        )
    )
    ref, four = _get(quality.get("float (Q4_1 dequantized)"), "ppl"), _get(quality.get("ours 4-bit"), "ppl")
    out.append(
        (
            "SmolLM2 4-bit perplexity within 1% of float",
            f"{_num(four, '.3f')} vs {_num(ref, '.3f')} ({_num(100 * (four / ref - 1), '+.2f')}%)"
            if four and ref
            else "not measured",
            None if not (four and ref) else four <= 1.01 * ref,
        )
    )
    two, q2k = quality.get("ours 2-bit preset"), quality.get("llama.cpp Q2_K")
    bpw2, ppl2, ppl_q2k = _get(two, "bits_per_weight"), _get(two, "ppl"), _get(q2k, "ppl")
    out.append(
        (
            "SmolLM2 2-bit preset ≤ 3 bits/weight and perplexity ≤ llama.cpp Q2_K",
            f"{_num(bpw2, '.2f')} bits/weight, ppl {_num(ppl2, '.3f')} vs {_num(ppl_q2k, '.3f')}"
            f" ({_num(_get(q2k, 'bits_per_weight'), '.2f')} bits/weight)",
            None if not (bpw2 and ppl2 and ppl_q2k) else (bpw2 <= 3.0 and ppl2 <= ppl_q2k),
        )
    )
    return out


def memory_rows(speed: dict, files: dict) -> tuple[str, list]:
    rows = [
        "| model | ours | RSS after load | RSS after the runs | interpreter before load | packed weights "
        "| KV cache (n_ctx) | after runs ÷ (packed + KV) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    checks = []
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    for group, label, engine, _key, _bits in speed_configs(files):
        r = speed.get((group, label, 1))
        if engine != "ours" or not isinstance(r, dict) or "rss_bytes" not in r:
            continue
        budget = r["packed_bytes"] + r["kv_cache_bytes"]
        rss = r.get("rss_after_run_bytes") or r["rss_bytes"]
        ratio = rss / budget
        rows.append(
            f"| {group} | {label} | {mib(r['rss_bytes'])} | {mib(rss)} | {mib(r['rss_baseline_bytes'])} | "
            f"{mib(r['packed_bytes'])} | {mib(r['kv_cache_bytes'])} ({r['n_ctx']}) | {ratio:.2f} |"
        )
        checks.append(
            (
                f"{group} {label}: RSS ≤ {RSS_FACTOR} × (packed + KV)",
                f"{mib(rss)} vs {mib(RSS_FACTOR * budget)} ({ratio:.2f}×)",
                ratio <= RSS_FACTOR,
            )
        )
    return "\n".join(rows), checks


def quality_table(quality: dict) -> str:
    rows = ["| engine | bits/weight | perplexity | ± | tokens scored | chunks |", "|---|---|---|---|---|---|"]
    for label in ("float (Q4_1 dequantized)", "ours 4-bit", "ours 2-bit preset", "llama.cpp Q4_1", "llama.cpp Q2_K"):
        r = quality.get(label)
        if not isinstance(r, dict):
            continue
        bpw = "32 (float)" if label.startswith("float") else _num(_get(r, "bits_per_weight"), ".2f")
        err = _get(r, "ppl") * _get(r, "nll_stderr") if _get(r, "ppl") and _get(r, "nll_stderr") else None
        rows.append(
            f"| {label} | {bpw} | {_num(_get(r, 'ppl'), '.3f')} | {_num(err, '.3f')} | "
            f"{_get(r, 'tokens_scored') or '—'} | {_get(r, 'chunks') or '—'} |"
        )
    return "\n".join(rows)


def first_load_section(first_load: dict) -> tuple[list[str], list]:
    """Our cold-cache loads: time and peak resident set, with the issue's bounds for the
    1.17B synthetic (≤ 10 s from a quantized file, ≤ 30 s from f16; peak ≤ packed + 1 GB)."""
    rows = [
        "| model | ours | load (s) | cache | peak RSS (VmHWM) | packed weights | peak − packed |",
        "|---|---|---|---|---|---|---|",
    ]
    checks = []
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    for (group, label), r in first_load.items():
        if not isinstance(r, dict) or "load_s" not in r:
            continue
        peak, packed = r.get("rss_peak_bytes"), r.get("packed_bytes")
        rows.append(
            f"| {group} | {label} | {r['load_s']:.1f} | {'hit' if r.get('cache_hit') else 'miss: repacked'} | "
            f"{gib(peak) if peak else '—'} | {gib(packed) if packed else '—'} | "
            f"{gib(peak - packed) if peak and packed else '—'} |"
        )
        if group != "synthetic 1.17B" or r.get("cache_hit") or not (peak and packed):
            continue
        limit = 30.0 if "F16" in label else 10.0
        checks.append(
            (
                f"1.17B first load, {label.removeprefix('ours ')}: ≤ {limit:.0f} s, peak RSS ≤ packed + 1 GB",
                f"{r['load_s']:.1f} s, {gib(peak)} vs {gib(packed + 2**30)}",
                r["load_s"] <= limit and peak <= packed + 2**30,
            )
        )
    return rows, checks


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "?"


def render(
    machine: str,
    peer: str | None,
    speed: dict,
    first_load: dict,
    quality: dict,
    files: dict,
    repeats: int,
    file_repeats: int = 3,
    bandwidth: dict | None = None,
    big_run: tuple[dict, dict, dict] | None = None,
) -> str:
    """The e2e section; big_run is (results, files, seconds each file took to make) of
    tests/bench/big.py's group, when it ran."""
    big = real_shapes()

    bandwidth = bandwidth or {}
    checks = targets(speed, quality, files, bandwidth) + files_checks(speed, quality, files)
    if big_run is not None:
        checks += big.checks(big_run[0])
    load_rows, load_checks = first_load_section(first_load)
    checks += load_checks
    mem_table, mem_checks = memory_rows(speed, files)
    checks += mem_checks
    verdict = {True: "yes", False: "no", None: "not measured"}
    lines = [
        f"## End to end — {machine}",
        "",
        f"Prompt: {PROMPT} random token ids (seed 0) in one go; decode: {GEN} greedy steps after it; "
        f"median of {repeats} runs after a warm-up, each engine in its own process, ours and llama.cpp "
        "alternating. Ours: `python -m tmac_core bench` (Engine.forward + argmax, chunks of 32 prompt "
        "tokens); llama.cpp: llama-cpp-python's C API (`tests/bench/peer.py`), n_batch 512, "
        "n_threads = n_threads_batch, weights loaded without mmap. "
        + (
            "Peer: llama-cpp-python " + _peer_version(peer) + "."
            if peer
            else "**llama-cpp-python was not available: no peer numbers in this run.**"
        ),
        "",
        busy_note(speed),
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {shown} | {verdict[met]} |" for name, shown, met in checks]
    lines += ["", "### Speed (tokens per second)", "", speed_table(speed, files, bandwidth), ""]
    table_groups = {k[0] for k in speed if isinstance(k, tuple) and len(k) >= 3 and k[0] != FILES_GROUP}
    lines += [
        f"MB/token: the matrices read per decoded token, of an untied token embedding one row (ours: "
        "the packed matrices; llama.cpp: the file's 2-D tensors), on both sides counted alike. "
        "GB/s: MB/token × decode tok/s; % BW: of "
        "the streaming-read bandwidth read just before each row's runs (`tests/bench/stream_read.c`; "
        f"{reader_span(speed, 1, bandwidth.get(1), table_groups)} on 1 thread, "
        f"{reader_span(speed, 2, bandwidth.get(2), table_groups)} on 2 "
        f"over these rows; {_num(bandwidth.get(1))} and {_num(bandwidth.get(2))} at the start of the run).",
        "",
        "### Long prompts and time to first token",
        "",
        "Prompt speed at 512 tokens, and the time to the first token of a reply to a 1,000-token chat "
        "history (its prompt pass; the first token is the argmax of that pass's last logits): random token "
        "ids, one generated token, median of the runs after a warm-up, llama.cpp feeding n_batch 512 at a time.",
        "",
        long_prompt_table(speed),
        "",
    ]
    if big_run is not None:
        lines += big.section(big_run[0], big_run[1], bandwidth, big_run[2])
    lines += files_section(speed, quality, files, bandwidth, file_repeats)
    lines += [
        "llama.cpp tensor types: "
        + "; ".join(f"{k}: {tensor_mix(v)[1]}" for k, v in files.items() if k not in ("synth_f16", "smol_f16")),
        "",
    ]
    if first_load:
        lines += [
            "### First loads (ours)",
            "",
            "Each of our configurations loaded once before the speed runs, 2 threads, in its own "
            "`python -m tmac_core bench --repeats 0` process: a miss repacks the file, streaming it into "
            "the cache file in row slabs; a hit maps the cache. Peak RSS is the process's VmHWM. Code "
            f"measured: commit {_commit()}.",
            "",
            *load_rows,
            "",
        ]
    lines += [
        "### Quality: SmolLM2-135M perplexity",
        "",
        f"`{TEXT.relative_to(ROOT)}` ({quality.get('n_tokens', '?')} tokens; Alice in Wonderland ch. I–II, "
        f"public domain), ctx {CTX}, second half of each chunk scored (llama-perplexity's definition, "
        "`tmac_core/perplexity.py`), identical token ids for every engine"
        + (
            ""
            if not isinstance(quality.get("peer_tokenization_matches"), dict)
            else " (llama.cpp's own tokenization "
            + ("matches" if quality["peer_tokenization_matches"].get("match") else "differs")
            + ")"
        )
        + ".",
        "",
        quality_table(quality),
        "",
        "### Memory (ours, 1-thread bench process, warm cache)",
        "",
        "The weights are mapped from the repack cache file and the KV cache is allocated lazily, so "
        "the resident set right after loading understates what a running model holds; the target is "
        f"checked on the resident set after the {PROMPT}+{GEN}-token runs.",
        "",
        mem_table,
        "",
    ]
    return "\n".join(lines)


def render_big(machine: str, peer: str | None, bandwidth: dict, big_run: tuple[dict, dict, dict]) -> str:
    """The e2e section of a `--only big` run: the real-shape group's Targets lines and tables."""
    big = real_shapes()

    verdict = {True: "yes", False: "no", None: "not measured"}
    lines = [
        f"## End to end (real shapes only) — {machine}",
        "",
        "Ours: `python -m tmac_core bench`; llama.cpp: llama-cpp-python's C API (`tests/bench/peer.py`), n_batch "
        "512, weights loaded without mmap. "
        + ("Peer: llama-cpp-python " + _peer_version(peer) + "." if peer else "**No peer numbers in this run.**")
        + f" Streaming-read bandwidth: {_num(bandwidth.get(1))} GB/s on 1 thread, {_num(bandwidth.get(2))} GB/s on 2.",
        "",
        busy_note({k: v for k, v in big_run[0].items() if len(k) == 4}),
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {shown} | {verdict[met]} |" for name, shown, met in big.checks(big_run[0])]
    lines += ["", *big.section(big_run[0], big_run[1], bandwidth, big_run[2])]
    return "\n".join(lines)


def _mix_text(inspect: dict | None) -> str:
    """'Q5_0 61%, Q8_0 21%, ...' by weights, from `inspect --json`."""
    mix = _get(inspect, "type_mix")
    if not isinstance(mix, dict) or not mix:
        return "—"
    total = sum(mix.values())
    return ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in sorted(mix.items(), key=lambda kv: -kv[1]))


def files_pairs(files: dict) -> list[tuple[str, str, str, str, str]]:
    """(group, name, ours label, llama.cpp label, file key) of the as-in-the-file comparisons."""
    pairs = [
        (FILES_GROUP, file_label(t), f"ours {file_label(t)}", f"llama.cpp {file_label(t)}", f"smolf_{t}")
        for t in FILE_TYPES
    ]
    pairs.append(("synthetic 1.17B", "Q4_K_M", "ours Q4_K_M", "llama.cpp Q4_K_M", "synth_q4_k_m"))
    return [p for p in pairs if p[4] in files]


def files_checks(speed: dict, quality: dict, files: dict) -> list[tuple[str, str, bool | None]]:
    out = []
    fq = quality.get("files") or {}
    for t in FILE_TYPES:
        ours, peer = _get(_get(fq, t), "ours"), _get(_get(fq, t), "peer")
        a, b = _get(ours, "ppl"), _get(peer, "ppl")
        out.append(
            (
                f"SmolLM2 {file_label(t)} file: perplexity ours (as in the file) ≤ {PPL_RATIO}× llama.cpp",
                f"{_num(a, '.3f')} vs {_num(b, '.3f')} = {_num(a / b, '.4f')}×" if a and b else "not measured",
                None if not (a and b) else a <= PPL_RATIO * b,
            )
        )
    for metric, name, need in (("decode_tok_s", "decode", DECODE_RATIO), ("prompt_tok_s", "prompt", PROMPT_RATIO)):
        for threads in THREADS:
            ratios = []
            for group, fname, ours, peer, _key in files_pairs(files):
                a = _get(speed.get((group, ours, threads)), metric)
                b = _get(speed.get((group, peer, threads)), metric)
                if a and b:
                    ratios.append((a / b, f"{'1.17B ' if group != FILES_GROUP else ''}{fname}"))
            shown = (
                f"met on {sum(r >= need for r, _ in ratios)} of {len(ratios)} files; "
                + ", ".join(f"{n} {r:.2f}×" for r, n in ratios)
                if ratios
                else "not measured"
            )
            out.append(
                (
                    f"{name} ≥ {need}× llama.cpp on the same file (ours as in the file), {threads} thr",
                    shown,
                    None if not ratios else all(r >= need for r, _ in ratios),
                )
            )
    return out


def _bw_share(nbytes: int | None, r: dict | None, bw: float | None) -> str:
    """Percent of the measured DRAM bandwidth that nbytes per decoded token takes at r's decode speed."""
    share = bw_fraction(nbytes / 1e6 if nbytes else None, r, bw)
    return _num(100 * share, ".0f") + "%" if share else "—"


def files_section(speed: dict, quality: dict, files: dict, bandwidth: dict, file_repeats: int) -> list[str]:
    fq = quality.get("files") or {}
    f16 = _get(fq.get("llama.cpp F16"), "ppl")
    lines = [
        "### Files as downloaded: ours as in the file vs llama.cpp on the same file",
        "",
        "The SmolLM2 files were made by llama.cpp's quantizer (`llama_model_quantize`, "
        "`tests/bench/peer.py quantize`) from an F16 file that is the embedded Q4_1 model dequantized with "
        "the `gguf` package (`tests/bench/float_gguf.py`): the float model SmolLM2's Q4_1 was made from "
        "is not reachable offline, so every file here is a requantization of that Q4_1 dequantization. "
        "SmolLM2's rows are 576 wide, not a multiple of the K-quants' 256-wide super-blocks, so llama.cpp "
        "falls back to other types for most of its tensors: the type mix column is the actual content "
        "(`python -m tmac_core inspect --json`, share of the matrices' weights). Ours runs each tensor at "
        "its own type, exactly (`--bits file`).",
        "",
        f"Perplexity as in the quality section below; llama.cpp on the F16 file itself: {_num(f16, '.3f')}.",
        "",
        "| file | tensor types (by weights) | bits/weight (ours, file) | perplexity ours | perplexity llama.cpp "
        f"| ours ÷ llama.cpp | ≤ {PPL_RATIO}× |",
        "|---|---|---|---|---|---|---|",
    ]
    verdict = {True: "yes", False: "no", None: "—"}
    for t in FILE_TYPES:
        row = fq.get(t)
        if not isinstance(row, dict):
            continue
        a, b = _get(row.get("ours"), "ppl"), _get(row.get("peer"), "ppl")
        bpw = _get(_get(row.get("inspect"), "bits_per_weight"), "file")
        lines.append(
            f"| {file_label(t)} | {_mix_text(row.get('inspect'))} | {_num(bpw, '.2f')} | {_num(a, '.3f')} | "
            f"{_num(b, '.3f')} | {_num(a / b if a and b else None, '.4f')} | "
            f"{verdict[None if not (a and b) else a <= PPL_RATIO * b]} |"
        )
    lines += [
        "",
        f"Speed: the procedure above, median of {file_repeats} runs for the SmolLM2 files (of the "
        "synthetic model's repeats for its Q4_K_M). MB/token: the matrices read per decoded token, of an untied "
        "token embedding one row (ours: the packed matrices; llama.cpp: the file's 2-D tensors); "
        "% BW: MB/token × decode tok/s ÷ the DRAM read bandwidth read just before each row's runs "
        f"(a C streaming read; {reader_span(speed, 1, bandwidth.get(1), {FILES_GROUP})} on 1 thread, "
        f"{reader_span(speed, 2, bandwidth.get(2), {FILES_GROUP})} on 2 over the SmolLM2 files' rows; the "
        "synthetic model's as in its speed table).",
        "",
        "| model | file | threads | decode ours | decode llama.cpp | × | prompt ours | prompt llama.cpp | × "
        "| MB/token ours | MB/token llama.cpp | % BW ours | % BW llama.cpp |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, fname, ours, peer, key in files_pairs(files):
        peer_bytes = decode_bytes(files[key])
        for threads in THREADS:
            o, p = speed.get((group, ours, threads)), speed.get((group, peer, threads))
            if o is None and p is None:
                continue
            cells = []
            for metric in ("decode_tok_s", "prompt_tok_s"):
                a, b = _get(o, metric), _get(p, metric)
                cells += [_num(a), _num(b), _num(a / b if a and b else None, ".2f")]
            ob = _get(o, "decode_bytes")
            bw = bandwidth.get(threads)
            cells += [
                _num(ob / 1e6 if ob else None),
                _num(peer_bytes / 1e6),
                _bw_share(ob, o, bw),
                _bw_share(peer_bytes, p, bw),
            ]
            lines.append(f"| {group.split(',')[0]} | {fname} | {threads} | " + " | ".join(cells) + " |")
    return lines + [""]


def busy_note(speed: dict) -> str:
    loads = [r["busy_cores_before"] for r in speed.values() if isinstance(r, dict) and "busy_cores_before" in r]
    busy = [x for x in loads if x >= 0.25]
    return (
        f"Before each speed measurement the harness waited (up to {QUIET_WAIT[0]:.0f} s) for other work on the machine "
        f"to drop below 0.25 core: {len(loads) - len(busy)} of {len(loads)} measurements started on an idle "
        "machine"
        + (f"; {len(busy)} started with {max(busy):.1f} cores busy elsewhere and may read low." if busy else ".")
    )


def _peer_version(peer: str) -> str:
    out = subprocess.run([peer, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{START}\n{section.rstrip()}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main(argv: list[str]) -> int:
    from tests.bench.machine import machine_line

    p = argparse.ArgumentParser(prog="python -m tests.bench e2e")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--file-repeats", type=int, default=3, help="repeats of the SmolLM2 files-as-downloaded rows")
    p.add_argument("--quiet-wait", type=float, default=180.0, help="longest wait for an idle machine (s)")
    p.add_argument("--no-f16-load", action="store_true", help="skip the 1.17B f16 → 4-bit first load")
    p.add_argument(
        "--only", choices=("smollm2", "files", "synth", "big"), default=None, help="one model group (development)"
    )
    p.add_argument("--no-big", action="store_true", help="skip the real-shape group (2B-4T, 8B)")
    p.add_argument("--no-long", action="store_true", help="skip the long-prompt and time-to-first-token rows")
    p.add_argument("--long-repeats", type=int, default=3, help="repeats of the long-prompt rows")
    p.add_argument("--no-quality", action="store_true", help="skip the perplexity runs (development)")
    p.add_argument("--chunks", type=int, default=None, help="perplexity chunks (default: the whole text)")
    p.add_argument("--no-doc", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    a = p.parse_args(argv)
    machine = machine_line()
    print(machine, flush=True)
    peer = peer_python()
    if peer is None:
        print("llama-cpp-python is not importable here (nor from $TMAC_BENCH_PEER_PYTHON): ours only", flush=True)
    QUIET_WAIT[0] = a.quiet_wait
    big = real_shapes()

    only_big = a.only == "big"
    files = {} if only_big else prepare_models(peer)
    with_big = a.only == "big" or (a.only is None and not a.no_big)
    big_files, big_made = big.prepare(peer) if with_big else ({}, {})
    groups = {"smollm2": {"SmolLM2-135M"}, "files": {FILES_GROUP}, "synth": {"synthetic 1.17B"}, "big": set()}.get(
        a.only, {"SmolLM2-135M", FILES_GROUP, "synthetic 1.17B"}
    )
    from tests.bench.machine import read_bandwidth

    bandwidth = {t: read_bandwidth(t)[0] for t in THREADS}
    print(f"DRAM read bandwidth: {bandwidth[1]:.1f} GB/s on 1 thread, {bandwidth[2]:.1f} GB/s on 2", flush=True)
    speed, first_load = measure_speed(files, peer, a.repeats, groups, a.file_repeats, not a.no_f16_load)
    if not a.no_long:
        speed.update(measure_long_prompts(files, peer, a.long_repeats, groups))
    quality = {} if a.no_quality or only_big else measure_quality(files, peer, a.chunks)
    big_run = None
    if with_big:
        t0 = time.perf_counter()
        big_run = (big.measure(big_files, peer), big_files, big_made)
        print(f"real-shape group measured in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    if only_big and big_run is not None:
        section = render_big(machine, peer, bandwidth, big_run)
    else:
        section = render(
            machine, peer, speed, first_load, quality, files, a.repeats, a.file_repeats, bandwidth, big_run
        )
    print("\n" + section)
    if not a.no_doc:
        write_doc(section)
        print(f"\nwritten between the e2e markers of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
