"""llama.cpp's side of the end-to-end benchmark, through llama-cpp-python's C API.

    python -m tests.bench.peer quantize SRC DST TYPE
    python -m tests.bench.peer bench MODEL --threads N --prompt-tokens P --gen-tokens G --repeats R
    python -m tests.bench.peer ppl MODEL --tokens FILE.json --ctx 512 --threads N [--bos ID]
    python -m tests.bench.peer tokenize MODEL --file TEXT

tests/bench/e2e.py runs each measurement in its own process, as it does ours, and
reads the one JSON object printed on stdout. The procedures mirror `python -m
tmac_core bench` and tmac_core.perplexity step for step. Imports llama_cpp, numpy
and tmac_core.perplexity (pure numpy) only, so any Python with llama-cpp-python
installed runs it, not just the project's venv.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

import llama_cpp as L
import numpy as np

from tmac_core import perplexity as ppl

FTYPES = {
    "q4_0": L.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q4_1": L.LLAMA_FTYPE_MOSTLY_Q4_1,
    "q8_0": L.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q2_k": L.LLAMA_FTYPE_MOSTLY_Q2_K,
    "q3_k_m": L.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "q4_k_m": L.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q5_k_m": L.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q6_k": L.LLAMA_FTYPE_MOSTLY_Q6_K,
    "tq2_0": L.LLAMA_FTYPE_MOSTLY_TQ2_0,
    "tq1_0": L.LLAMA_FTYPE_MOSTLY_TQ1_0,
    "iq4_nl": L.LLAMA_FTYPE_MOSTLY_IQ4_NL,
}
N_BATCH = 512


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Model:
    """One model and one context: n_batch = n_ubatch = 512, n_threads = n_threads_batch,
    weights read into memory (no mmap), as our engine holds them."""

    def __init__(self, path: str, n_ctx: int, threads: int):
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.use_mmap = False
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, N_BATCH, N_BATCH
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.batch = L.llama_batch_init(N_BATCH, 0, 1)

    def clear(self) -> None:
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def decode(self, tokens, pos: int, first_output: int) -> np.ndarray:
        """Decode tokens at positions pos..; logits (n_outputs, vocab) of the
        tokens from index first_output on (a view of llama.cpp's buffer)."""
        b = self.batch
        n = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i] = int(t), pos + i, 1
            b.seq_id[i][0] = 0
            b.logits[i] = i >= first_output
        b.n_tokens = n
        if L.llama_decode(self.ctx, b) != 0:
            raise SystemExit("llama_decode failed")
        out = L.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(out, shape=(n - first_output, self.n_vocab))

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        raw = text.encode("utf-8")
        buf = (L.llama_token * (len(raw) + 16))()
        n = L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_special, False)
        return list(buf[:n])


def cmd_quantize(a) -> dict:
    qp = L.llama_model_quantize_default_params()
    qp.ftype = FTYPES[a.type]
    qp.allow_requantize = True  # SmolLM2 ships Q4_1: requantizing is the only way to other types
    qp.nthread = os.cpu_count() or 1
    t0 = time.perf_counter()
    tmp = a.dst + ".tmp"
    if L.llama_model_quantize(a.src.encode(), tmp.encode(), ctypes.byref(qp)) != 0:
        raise SystemExit(f"llama_model_quantize {a.src} -> {a.type} failed")
    os.replace(tmp, a.dst)
    return {"path": a.dst, "type": a.type, "bytes": os.path.getsize(a.dst), "seconds": time.perf_counter() - t0}


def cmd_bench(a) -> dict:
    n_ctx = max(512, a.prompt_tokens + a.gen_tokens + 1)
    m = Model(a.model, n_ctx, a.threads)
    rss = rss_bytes()
    prompt = np.random.default_rng(a.seed).integers(0, m.n_vocab, a.prompt_tokens, dtype=np.int32)

    def run_once():
        # same steps as `python -m tmac_core bench`: the prompt (in batches of n_batch
        # 512, as llama.cpp's own tools and servers feed a long one), then greedy argmax steps
        m.clear()
        t0 = time.perf_counter()
        for at in range(0, len(prompt), N_BATCH):
            part = prompt[at : at + N_BATCH]
            logits = m.decode(part, at, len(part) - 1)
        t1 = time.perf_counter()
        token = int(np.argmax(logits[-1]))
        for i in range(a.gen_tokens):
            token = int(np.argmax(m.decode([token], a.prompt_tokens + i, 0)[0]))
        t2 = time.perf_counter()
        return a.prompt_tokens / (t1 - t0), a.gen_tokens / (t2 - t1)

    run_once()  # warm-up, as llama-bench does
    runs = [run_once() for _ in range(a.repeats)]
    return {
        "prompt_tok_s": float(np.median([r[0] for r in runs])),
        "decode_tok_s": float(np.median([r[1] for r in runs])),
        "prompt_tok_s_runs": [r[0] for r in runs],
        "decode_tok_s_runs": [r[1] for r in runs],
        "rss_bytes": rss,
        "threads": a.threads,
        "n_ctx": n_ctx,
        "file_bytes": os.path.getsize(a.model),
        "system_info": L.llama_print_system_info().decode(errors="replace"),
    }


def cmd_ppl(a) -> dict:
    with open(a.tokens) as f:
        tokens = json.load(f)
    m = Model(a.model, a.ctx, a.threads)
    first = a.ctx // 2
    bos = None if a.bos < 0 else a.bos
    t0 = time.perf_counter()
    nlls = []
    for i in range(ppl.n_chunks(len(tokens), a.ctx, a.chunks)):
        chunk = ppl.chunk_tokens(tokens, i, a.ctx, bos)
        m.clear()
        nlls.append(ppl.chunk_nll(m.decode(chunk, 0, first), chunk, offset=first))
    r = ppl.summarize(nlls, a.ctx, len(tokens), time.perf_counter() - t0)
    return {
        "ppl": r.ppl,
        "nll": r.nll,
        "nll_stderr": r.nll_stderr,
        "tokens_scored": r.tokens_scored,
        "chunks": r.chunks,
        "ctx": r.ctx,
        "n_tokens": r.n_tokens,
        "seconds": r.seconds,
    }


def cmd_tokenize(a) -> dict:
    with open(a.file, encoding="utf-8") as f:
        text = f.read()
    m = Model(a.model, 64, 1)
    return {"tokens": m.tokenize(text, add_special=True)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.peer")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("type", choices=sorted(FTYPES))
    q.set_defaults(func=cmd_quantize)
    b = sub.add_parser("bench")
    b.add_argument("model")
    b.add_argument("--threads", type=int, required=True)
    b.add_argument("--prompt-tokens", type=int, default=128)
    b.add_argument("--gen-tokens", type=int, default=64)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=cmd_bench)
    r = sub.add_parser("ppl")
    r.add_argument("model")
    r.add_argument("--tokens", required=True)
    r.add_argument("--ctx", type=int, default=512)
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    r.add_argument("--chunks", type=int, default=None)
    r.add_argument("--bos", type=int, default=-1)
    r.set_defaults(func=cmd_ppl)
    t = sub.add_parser("tokenize")
    t.add_argument("model")
    t.add_argument("--file", required=True)
    t.set_defaults(func=cmd_tokenize)
    a = p.parse_args(argv)
    print(json.dumps(a.func(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
