"""`python -m tests.bench server`: tokens/s a streaming client sees from the local server,
against the same model answering in-process (`generate`) and the raw `bench` loop.

The server row: `python -m tmac_core serve` on a free loopback port, one warm-up answer,
then REPEATS streamed greedy answers of GEN_TOKENS tokens read with http.client; the
client's rate counts the content events after the first over the time between the first
and the last (as the engine's decode_tok_s does). `generate --json` answers the same
prompt with the same sampling in-process: its decode tok/s is the overhead baseline.
`bench --json` is the raw forward loop (argmax, no sampler, no detokenizer). Medians.
Prints a Markdown table; llama.cpp's server is not run (llama_cpp.server needs FastAPI
and sse-starlette, which the benchmark extra does not install).
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time

GEN_TOKENS = 128
REPEATS = 5
PROMPT = "Write a long story about a dragon who learns to fly."
THREADS = "2"


def run_json(args: list[str], cache: str) -> dict:
    cmd = [sys.executable, "-m", "tmac_core", *args, "--threads", THREADS, "--json", "--cache-dir", cache]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stream_rate(port: int) -> tuple[float, int, float]:
    """(client tokens/s after the first, content events, the server's own decode_tok_s)."""
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": GEN_TOKENS,
        "stream": True,
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    times, server_rate = [], 0.0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: {"):
            continue
        event = json.loads(line[6:])
        if "tmac" in event:
            server_rate = event["tmac"]["decode_tok_s"]
        if event["choices"] and event["choices"][0]["delta"].get("content"):
            times.append(time.perf_counter())
    conn.close()
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return rate, len(times), server_rate


def main() -> int:
    with tempfile.TemporaryDirectory() as cache:
        raw = run_json(["bench", "default", "--gen-tokens", str(GEN_TOKENS), "--repeats", str(REPEATS)], cache)
        generate = ["generate", "default", "--prompt", PROMPT, "--temperature", "0", "--max-tokens", str(GEN_TOKENS)]
        serve = [sys.executable, "-m", "tmac_core", "serve", "default", "--port", "0", "--threads", THREADS]
        server = subprocess.Popen([*serve, "--cache-dir", cache], stderr=subprocess.PIPE, text=True)
        direct, runs = [], []
        try:
            line = ""
            while "serving" not in line and server.poll() is None:
                line = server.stderr.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)/v1", line)
            if not match:
                print(f"the server did not start: {line}", file=sys.stderr)
                return 1
            port = int(match.group(1))
            stream_rate(port)  # warm-up
            for _ in range(REPEATS):  # interleaved, so a shared machine's load drifts over both alike
                direct.append(run_json(generate, cache)["decode_tok_s"])
                runs.append(stream_rate(port))
        finally:
            server.terminate()
            server.wait(30)
    client = statistics.median(r[0] for r in runs)
    inside = statistics.median(r[2] for r in runs)
    in_process = statistics.median(direct)
    print(f"| path (SmolLM2-135M, {THREADS} threads, greedy, {GEN_TOKENS} tokens) | decode tok/s | vs generate |")
    print("|---|---|---|")
    print(f"| `bench` (forward loop, argmax) | {raw['decode_tok_s']:.1f} | {raw['decode_tok_s'] / in_process:.2f}× |")
    print(f"| `generate` (in-process Engine.stream) | {in_process:.1f} | 1.00× |")
    print(f"| server, as its engine measured (`tmac.decode_tok_s`) | {inside:.1f} | {inside / in_process:.2f}× |")
    print(
        f"| server, as a streaming HTTP client saw it | {client:.1f} | {client / in_process:.2f}× "
        f"(overhead {100 * (1 - client / in_process):.1f}%) |"
    )
    print(f"content events per answer: {[r[1] for r in runs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
