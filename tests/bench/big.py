"""The end-to-end benchmark's real-shape rows (`python -m tests.bench e2e --only big`, also in
the full run): synthetic models with the shapes of the native low-bit models users run.

  * BitNet b1.58 2B-4T's shape (dim 2560, ffn 6912, 30 layers, 20/5 heads, vocab 128256,
    tied): ours on an I2_S file of its own graph (bitnet-b1.58: sub-norms, relu²; I2_S is
    the type of 2B-4T's own GGUF, one fp32 scale per tensor) against llama.cpp TQ2_0 and
    TQ1_0 on a llama-graph file of the same shapes (llama.cpp cannot run 2B-4T's graph, nor
    I2_S, which is bitnet.cpp's). The llama file is written by tmac_core.synth as TQ2_0
    with an F16 embedding and requantized by llama_model_quantize to TQ2_0 and TQ1_0, which
    gives the tied embedding the Q6_K llama.cpp's own quantizer gives it. Decode, prompt 128 and 512.
  * Llama-3-8B's shape (dim 4096, ffn 14336, 32 layers, 32/8 heads, vocab 128256): ours on
    EfficientQAT w2g128 and w4g128 GPTQ folders (tmac_core.synth.write_gptq_folder, the
    -GPTQ export format) against llama.cpp Q2_K and Q4_0; and the issue-16 row, a Q4_K_M file
    loaded by ours from a cold repack cache (time, peak RSS) and then run by both.
    The Q4_0 file is written by synth directly; Q2_K and Q4_K_M are llama_model_quantize
    requantizations of it (allow_requantize), not of an F16 file (PEER_KQUANT_SOURCE): the
    Q4_0 file exists anyway for its own row, while the F16 route first writes 16 GB (a
    4-layer slice of the shape, 3.85 GB of F16, took 8 min to write on the shared 2-core
    machine, the whole 8B Q4_0 10 min). The source only matters for the peer's file: its
    types, layout and speed do not depend on it.
    8B rows run a short prompt and decode (PROMPT_8B, GEN_8B) so the group stays ~25 min.

Files are made once in build/bench-models and reused; each generation prints its time.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from tests.bench import e2e
from tmac_core.models import ARCHITECTURES
from tmac_core.synth import BITNET_2B4T_CONFIG, GPTQSynthSpec, SynthSpec, write_gptq_folder, write_synthetic

GROUP_2B, GROUP_8B = "BitNet-2B-4T shape", "Llama-3-8B shape"
GROUPS = (GROUP_2B, GROUP_8B)
LLAMA_2B_CONFIG = ARCHITECTURES["llama"].config(
    dim=2560,
    hidden_dim=6912,
    n_layers=30,
    n_heads=20,
    n_kv_heads=5,
    head_dim=128,
    vocab_size=128256,
    n_ctx_train=4096,
    rope_theta=500000.0,
    tie_embeddings=True,
)
LLAMA_8B_CONFIG = ARCHITECTURES["llama"].config(
    dim=4096,
    hidden_dim=14336,
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    head_dim=128,
    vocab_size=128256,
    n_ctx_train=8192,
    rope_theta=500000.0,
)
PROMPT_8B, GEN_8B, REPEATS_8B = 32, 16, 2  # tokens, tokens, measured runs after the warm-up
LONG_2B = 512
CTX_8B = 512  # both engines: the KV cache an 8B run needs here, not the 8192 the file allows
PEER_KQUANT_SOURCE = "q4_0"  # llama.cpp's Q2_K / Q4_K_M made from the synth Q4_0 file (see above)
RSS_LIMIT_8B = 6.5e9  # issue 16: an 8B Q4_K_M first load peaks under 6.5 GB ...
RSS_OVER_PACKED = 2**30  # ... and at most 1 GB above the packed weights


def _stem(c) -> str:
    return f"synth-{c.arch}-d{c.dim}-f{c.hidden_dim}-l{c.n_layers}-h{c.n_heads}-kv{c.n_kv_heads}-v{c.vocab_size}-s0"


def model_paths() -> dict[str, str]:
    """Every file or folder of the group, by key (made by prepare)."""
    m = e2e.MODELS
    s2, s8 = _stem(LLAMA_2B_CONFIG), _stem(LLAMA_8B_CONFIG)
    return {
        "b2_ternary": str(m / f"{_stem(BITNET_2B4T_CONFIG)}-i2_s.gguf"),
        "b2_tq2_0_f16embd": str(m / f"{s2}-tq2_0-f16embd.gguf"),  # intermediate: the peer's source
        "b2_tq2_0": str(m / f"{s2}-tq2_0.gguf"),
        "b2_tq1_0": str(m / f"{s2}-tq1_0.gguf"),
        "l8_w2g128": str(m / f"{s8}-gptq-w2g128"),
        "l8_w4g128": str(m / f"{s8}-gptq-w4g128"),
        "l8_q4_0": str(m / f"{s8}-q4_0.gguf"),
        "l8_q2_k": str(m / f"{s8}-q2_k.gguf"),
        "l8_q4_k_m": str(m / f"{s8}-q4_k_m.gguf"),
    }


def _timed(what: str, fn) -> float | None:
    print(f"making {what}", flush=True)
    t0 = time.perf_counter()
    try:
        fn()
    except (RuntimeError, OSError, ValueError) as e:
        print(f"  {what}: FAILED {e}", flush=True)
        return None
    seconds = time.perf_counter() - t0
    print(f"  {what}: {seconds:.0f} s", flush=True)
    return seconds


def prepare(peer: str | None) -> tuple[dict[str, str], dict[str, float]]:
    """(files that exist, by key; seconds each one made in this run took)."""
    paths = model_paths()
    made: dict[str, float | None] = {}
    e2e.MODELS.mkdir(parents=True, exist_ok=True)
    writers = {
        "b2_ternary": lambda p: write_synthetic(p, SynthSpec(BITNET_2B4T_CONFIG, weight_type="i2_s", add_bos=True)),
        "l8_w2g128": lambda p: write_gptq_folder(p, GPTQSynthSpec(LLAMA_8B_CONFIG, bits=2, add_bos=True)),
        "l8_w4g128": lambda p: write_gptq_folder(p, GPTQSynthSpec(LLAMA_8B_CONFIG, bits=4, add_bos=True)),
        "l8_q4_0": lambda p: write_synthetic(p, SynthSpec(LLAMA_8B_CONFIG, weight_type="q4_0", add_bos=True)),
    }
    for key, write in writers.items():
        if not os.path.exists(paths[key]):
            made[key] = _timed(f"{key} ({os.path.basename(paths[key])})", lambda k=key, w=write: w(paths[k]))
    if peer:
        peer_wanted = [
            ("b2_tq2_0", "b2_tq2_0_f16embd", "tq2_0"),
            ("b2_tq1_0", "b2_tq2_0_f16embd", "tq1_0"),
            ("l8_q2_k", f"l8_{PEER_KQUANT_SOURCE}", "q2_k"),
            ("l8_q4_k_m", f"l8_{PEER_KQUANT_SOURCE}", "q4_k_m"),
        ]
        if any(not os.path.exists(paths[k]) for k, src, _ in peer_wanted if src == "b2_tq2_0_f16embd"):
            src = paths["b2_tq2_0_f16embd"]
            if not os.path.exists(src):
                spec = SynthSpec(LLAMA_2B_CONFIG, weight_type="tq2_0", add_bos=True)
                made["b2_tq2_0_f16embd"] = _timed(os.path.basename(src), lambda: write_synthetic(src, spec))
        for key, src, qtype in peer_wanted:
            if not os.path.exists(paths[key]) and os.path.exists(paths[src]):
                cmd = [peer, "-m", "tests.bench.peer", "quantize", paths[src], paths[key], qtype]
                made[key] = _timed(f"{key} (llama_model_quantize {qtype})", lambda cmd=cmd: e2e.run_json(cmd))
        if all(os.path.exists(paths[k]) for k in ("b2_tq2_0", "b2_tq1_0")) and os.path.exists(
            paths["b2_tq2_0_f16embd"]
        ):
            os.unlink(paths["b2_tq2_0_f16embd"])  # the intermediate: both peer files are made from it
    files = {k: p for k, p in paths.items() if os.path.exists(p) and k != "b2_tq2_0_f16embd"}
    return files, {k: s for k, s in made.items() if s is not None}


# (group, label, engine, file key): ours runs every file as in the file (--bits file)
CONFIGS = (
    (GROUP_2B, "ours ternary (I2_S, 2B-4T graph)", "ours", "b2_ternary"),
    (GROUP_2B, "llama.cpp TQ2_0 (llama graph)", "peer", "b2_tq2_0"),
    (GROUP_2B, "llama.cpp TQ1_0 (llama graph)", "peer", "b2_tq1_0"),
    (GROUP_8B, "ours EfficientQAT w2g128 (GPTQ folder)", "ours", "l8_w2g128"),
    (GROUP_8B, "llama.cpp Q2_K", "peer", "l8_q2_k"),
    (GROUP_8B, "ours EfficientQAT w4g128 (GPTQ folder)", "ours", "l8_w4g128"),
    (GROUP_8B, "llama.cpp Q4_0", "peer", "l8_q4_0"),
    (GROUP_8B, "ours Q4_K_M (as in the file)", "ours", "l8_q4_k_m"),
    (GROUP_8B, "llama.cpp Q4_K_M", "peer", "l8_q4_k_m"),
)
# Our loads before the speed runs (which then hit the repack cache). Only the issue-16 row is
# emptied first every run: an 8B GPTQ folder's first load takes minutes on 2 busy cores, so
# theirs is measured when the cache is new (the table says hit or miss).
FIRST_LOADS = {
    "b2_ternary": "2B-4T shape, ternary I2_S",
    "l8_w2g128": "8B shape, EfficientQAT w2g128",
    "l8_w4g128": "8B shape, EfficientQAT w4g128",
    "l8_q4_k_m": "8B shape, Q4_K_M",
}
COLD_EVERY_RUN = ("l8_q4_k_m",)


def cache_dir(key: str) -> str:
    """One repack-cache folder per model, filled by its first load and hit by the speed runs."""
    return str(e2e.CACHE / "big" / key)


def ours_cmd(files: dict, key: str, *args) -> list:
    return [sys.executable, "-m", "tmac_core", "bench", files[key], "--bits", "file", "--json"] + [
        "--cache-dir",
        cache_dir(key),
        *args,
    ]


def peer_cmd(peer: str, files: dict, key: str, *args) -> list:
    return [peer, "-m", "tests.bench.peer", "bench", files[key], *args]


def runs(group: str) -> list[tuple[str, int, int, int]]:
    """(measurement name, prompt tokens, generated tokens, repeats) of a group's rows."""
    if group == GROUP_2B:
        return [("", e2e.PROMPT, e2e.GEN, 3), ("pp512", LONG_2B, 1, 2)]
    return [("", PROMPT_8B, GEN_8B, REPEATS_8B)]


def measure(files: dict, peer: str | None) -> dict:
    """results: ("load", key) our loads before the speed runs; (group, label, threads, name) the speed runs
    (name "" is the prompt + decode run); ("seconds", group) each group's measuring time."""
    out: dict = {}
    t0 = time.perf_counter()
    print(f"our loads before the speed runs ({', '.join(COLD_EVERY_RUN)}: from an empty repack cache)", flush=True)
    for key in FIRST_LOADS:
        if key not in files:
            continue
        if key in COLD_EVERY_RUN:
            shutil.rmtree(cache_dir(key), ignore_errors=True)
        cmd = ours_cmd(files, key, "--threads", 2, "--repeats", 0, "--ctx", CTX_8B)
        out[("load", key)] = e2e.attempt(f"{key} first load", lambda cmd=cmd: e2e.run_json(cmd))
    out[("seconds", "first loads")] = time.perf_counter() - t0
    for group in GROUPS:
        t0 = time.perf_counter()
        for name, prompt, gen, repeats in runs(group):
            for threads in e2e.THREADS:
                what = name or f"prompt {prompt}, decode {gen}"
                print(f"{group}, {threads} thread(s): {what}, median of {repeats}", flush=True)
                common = ["--threads", threads, "--prompt-tokens", prompt, "--gen-tokens", gen, "--repeats", repeats]
                for g, label, engine, key in CONFIGS:
                    if g != group or key not in files or (engine == "peer" and not peer):
                        continue
                    if engine == "ours":
                        ctx = CTX_8B if group == GROUP_8B else prompt + gen + 64
                        cmd = ours_cmd(files, key, "--ctx", ctx, *common)
                    else:
                        cmd = peer_cmd(peer, files, key, *common)  # type: ignore[arg-type]
                    out[(group, label, threads, name)] = e2e.attempt(
                        f"{label} {name}".rstrip(), e2e.speed_run(cmd, threads), quiet=True
                    )
        out[("seconds", group)] = time.perf_counter() - t0
    return out


# -- report -----------------------------------------------------------------------------


def _ratio_row(results: dict, name: str, group: str, ours: str, peer: str, metric: str, threads: int, run: str, need):
    a = e2e._get(results.get((group, ours, threads, run)), metric)
    b = e2e._get(results.get((group, peer, threads, run)), metric)
    r = a / b if a and b else None
    shown = f"{e2e._num(a)} vs {e2e._num(b)} tok/s = {e2e._num(r, '.2f')}×" if r else "not measured"
    return (name, shown, None if r is None else r >= need)


def checks(results: dict) -> list[tuple[str, str, bool | None]]:
    """The group's Targets lines (issue 11's ratios, issue 16's 8B first load)."""
    tern, tq2 = "ours ternary (I2_S, 2B-4T graph)", "llama.cpp TQ2_0 (llama graph)"
    w2, w4 = "ours EfficientQAT w2g128 (GPTQ folder)", "ours EfficientQAT w4g128 (GPTQ folder)"
    thr = {t: f"{t} thread{'s' * (t > 1)}" for t in e2e.THREADS}
    wanted = []  # (target, group, ours, llama.cpp, metric, threads, run, ratio needed)
    for t in e2e.THREADS:
        wanted.append(
            (f"2B-4T ternary decode ≥ 1.5× llama.cpp TQ2_0, {thr[t]}", GROUP_2B, tern, tq2, "decode", t, "", 1.5)
        )
        for run, n in (("", e2e.PROMPT), ("pp512", LONG_2B)):
            name = f"2B-4T ternary prompt ({n}) ≥ 3× llama.cpp TQ2_0, {thr[t]}"
            wanted.append((name, GROUP_2B, tern, tq2, "prompt", t, run, 3.0))
    wanted.append(("8B EfficientQAT w2g128 decode ≥ 1.5× llama.cpp Q2_K, 1 thread", GROUP_8B, w2, "llama.cpp Q2_K",
                   "decode", 1, "", 1.5))  # fmt: skip
    for t in e2e.THREADS:
        name = f"8B EfficientQAT w4g128 decode ≥ 1.2× llama.cpp Q4_0, {thr[t]}"
        wanted.append((name, GROUP_8B, w4, "llama.cpp Q4_0", "decode", t, "", 1.2))
    out = [
        _ratio_row(results, name, group, ours, peer, f"{metric}_tok_s", t, run, need)
        for name, group, ours, peer, metric, t, run, need in wanted
    ]
    r = results.get(("load", "l8_q4_k_m"))
    peak, packed = e2e._get(r, "rss_peak_bytes"), e2e._get(r, "packed_bytes")
    out.append(
        (
            "8B Q4_K_M first load (cold repack cache): peak RSS < 6.5 GB and ≤ packed + 1 GB",
            f"{r['load_s']:.0f} s, peak {peak / 1e9:.2f} GB, packed {packed / 1e9:.2f} GB"
            if peak and packed and isinstance(r, dict) and not r.get("cache_hit")
            else "not measured",
            None
            if not (peak and packed) or r.get("cache_hit")  # type: ignore[union-attr]
            else peak < RSS_LIMIT_8B and peak <= packed + RSS_OVER_PACKED,
        )
    )
    return out


def speed_table(results: dict, files: dict, bandwidth: dict) -> str:
    rows = [
        "| model | engine and file | bits/weight | threads | decode | prompt | prompt 512 | MB/token | GB/s | % BW |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, label, engine, key in CONFIGS:
        for t in e2e.THREADS:
            r, long = results.get((group, label, t, "")), results.get((group, label, t, "pp512"))
            if r is None and long is None:
                continue
            bpw = e2e._get(r, "bits_per_weight") if engine == "ours" else e2e.tensor_mix(files[key])[0]
            mb = e2e.decode_mb(engine, r, files[key]) if key in files else None
            share = e2e.bw_fraction(mb, r, bandwidth.get(t))
            rows.append(
                f"| {group} | {label} | {e2e._num(bpw, '.2f')} | {t} | {e2e._num(e2e._get(r, 'decode_tok_s'), '.2f')} "
                f"| {e2e._num(e2e._get(r, 'prompt_tok_s'), '.2f')} | {e2e._num(e2e._get(long, 'prompt_tok_s'), '.2f')} "
                f"| {e2e._num(mb)} | {e2e._num(e2e.read_gbs(mb, r))} "
                f"| {e2e._num(100 * share if share else None, '.0f')} |"
            )
    return "\n".join(rows)


def load_table(results: dict) -> str:
    rows = [
        "| model | load (s) | cache | peak RSS (VmHWM) | packed weights | peak − packed |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in FIRST_LOADS.items():
        r = results.get(("load", key))
        if not isinstance(r, dict) or "load_s" not in r:
            continue
        peak, packed = r.get("rss_peak_bytes"), r.get("packed_bytes")
        rows.append(
            f"| {name} | {r['load_s']:.1f} | {'hit' if r.get('cache_hit') else 'miss: repacked'} "
            f"| {e2e._num(peak / 1e9 if peak else None, '.2f')} GB "
            f"| {e2e._num(packed / 1e9 if packed else None, '.2f')} GB "
            f"| {e2e._num((peak - packed) / 1e9 if peak and packed else None, '.2f')} GB |"
        )
    return "\n".join(rows)


def section(results: dict, files: dict, bandwidth: dict, made: dict) -> list[str]:
    seconds = {k[1]: v for k, v in results.items() if k[0] == "seconds"}
    lines = [
        "### Real shapes: BitNet b1.58 2B-4T and Llama-3-8B (synthetic weights)",
        "",
        f"{GROUP_2B}: ours on an I2_S file (2B-4T's own GGUF type) in 2B-4T's graph (ternary, repacked "
        "exactly); llama.cpp on "
        "TQ2_0 / TQ1_0 files of a llama graph with the same shapes (its quantizer gives the tied embedding "
        f"Q6_K). Prompt {e2e.PROMPT} + decode "
        f"{e2e.GEN}, median of 3; prompt 512 (one generated token), median of 2. {GROUP_8B}: ours on EfficientQAT "
        "w2g128 / w4g128 GPTQ folders (gptq_v2, asymmetric) and a Q4_K_M file; llama.cpp on Q2_K / Q4_0 / Q4_K_M "
        f"files of the same shapes (Q2_K and Q4_K_M requantized from the Q4_0); prompt {PROMPT_8B} + decode "
        f"{GEN_8B}, median of {REPEATS_8B}, n_ctx {CTX_8B}. Ours runs every file as in the file, from a warm "
        "repack cache; MB/token, GB/s and % BW as above (the readings beside these rows: "
        f"{e2e.reader_span(results, 1, bandwidth.get(1))} on 1 thread, "
        f"{e2e.reader_span(results, 2, bandwidth.get(2))} on 2).",
        "",
        speed_table(results, files, bandwidth),
        "",
        "Our loads before the speed runs, 2 threads, `python -m tmac_core bench --repeats 0`: Q4_K_M's from an "
        "emptied repack cache every run, the others' from the cache the previous run left (a miss when it was "
        "new); the source may sit in the OS page cache. Peak RSS is the process's VmHWM:",
        "",
        load_table(results),
        "",
        "Time spent: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
        + ("; files made in this run: " + ", ".join(f"{k} {s:.0f} s" for k, s in made.items()) if made else "")
        + ".",
        "",
    ]
    return lines


e2e.REAL_SHAPES[:] = [sys.modules[__name__]]  # e2e runs this group without importing it
