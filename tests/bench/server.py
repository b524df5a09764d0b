"""`python -m tests.bench server`: tokens/s a streaming client sees from the local server,
against the same engine answering directly, and against `python -m tmac_core bench`.

One process loads the embedded model once and serves it (ServerThread over an
EngineBackend, Uvicorn on a loopback port); REPEATS times, alternately, the engine answers
the prompt directly (Engine.stream) and a client streams the same greedy answer over HTTP
(http.client, server-sent events). Same engine, same KV-cache reuse, same positions, so
the two differ only by the server; alternating spreads a shared machine's drifting load
over both. The client's rate counts the content events after the first over the time from
the first to the last (as the engine's decode_tok_s does). `bench --json` is the raw
forward loop (argmax, no sampler, no detokenizer) in its own process. Medians. Prints a
Markdown table; llama.cpp's server is not run (llama_cpp.server needs FastAPI and
sse-starlette, which the benchmark extra does not install).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

GEN_TOKENS = 128
REPEATS = 6
THREADS = 2
MESSAGES = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]


def stream_rate(port: int) -> tuple[float, float]:
    """(client tokens/s after the first, the server's engine's own decode_tok_s)."""
    body = {"messages": MESSAGES, "temperature": 0, "max_tokens": GEN_TOKENS, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    times, engine_rate = [], 0.0
    for raw in conn.getresponse():
        line = raw.decode().strip()
        if not line.startswith("data: {"):
            continue
        event = json.loads(line[6:])
        if "tmac" in event:
            engine_rate = event["tmac"]["decode_tok_s"]
        if event["choices"] and event["choices"][0]["delta"].get("content"):
            times.append(time.perf_counter())
    conn.close()
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0, engine_rate


def main() -> int:
    from tmac_core.engine import Engine
    from tmac_core.sampling import SamplingParams
    from tmac_core.server.app import ServerConfig
    from tmac_core.server.backend import EngineBackend
    from tmac_core.server.run import ServerThread

    with tempfile.TemporaryDirectory() as cache:
        bench_cmd = [sys.executable, "-m", "tmac_core", "bench", "default", "--gen-tokens", str(GEN_TOKENS)]
        bench_cmd += ["--threads", str(THREADS), "--json", "--cache-dir", cache]
        done = subprocess.run(bench_cmd, capture_output=True, text=True, timeout=1800, check=True)
        raw = json.loads(done.stdout.strip().splitlines()[-1])["decode_tok_s"]
        engine = Engine.load("default", n_threads=THREADS, cache_dir=cache)
        params = SamplingParams(temperature=0, max_tokens=GEN_TOKENS, top_p=1.0)
        backend = EngineBackend(engine)
        server = ServerThread(backend, ServerConfig(port=0))

        def direct() -> float:
            time.sleep(0.05)  # the worker thread releases the engine just after its last chunk
            chunks = list(engine.stream(MESSAGES, params))
            return chunks[-1].decode_tok_s

        try:
            direct(), stream_rate(server.port)  # warm-up: the prompt is in the KV cache from now on
            runs = [(direct(), *stream_rate(server.port)) for _ in range(REPEATS)]
        finally:
            server.stop()
            backend.close()
            engine.close()
    alone = statistics.median(r[0] for r in runs)
    client = statistics.median(r[1] for r in runs)
    inside = statistics.median(r[2] for r in runs)
    setup = f"SmolLM2-135M, {THREADS} threads, greedy, {GEN_TOKENS} tokens, load {os.getloadavg()[0]:.1f}"
    print(f"| {setup} | decode tok/s |")
    print("|---|---|")
    print(f"| `python -m tmac_core bench` (forward loop, argmax, own process) | {raw:.1f} |")
    print(f"| Engine.stream, directly | {alone:.1f} |")
    print(f"| the server's engine (`tmac.decode_tok_s`) | {inside:.1f} |")
    print(f"| a streaming HTTP client of the server | {client:.1f} (overhead {100 * (1 - client / alone):.1f}%) |")
    print(f"runs (direct, client, server engine): {[tuple(round(x, 1) for x in r) for r in runs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
