"""`python -m tmac_core` in subprocesses (--json), on the embedded SmolLM2 and on
tiny models written by its own `synth` command; plus the perplexity definition
checked against a plain re-implementation of llama-perplexity's loop."""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tmac_core import cli as tmac_cli
from tmac_core import perplexity as ppl

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
ALICE = ROOT / "tests" / "data" / "alice_ch1-2.txt"
TINY = ["--dim", "64", "--ffn", "128", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab", "320"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("repacked")


@pytest.fixture(scope="module")
def cli(cache_dir):
    """Run the CLI; every run must be free of tracebacks, whatever its exit code."""

    def run(*args, input=None, env=None, timeout=600):
        proc = subprocess.run(
            [sys.executable, "-m", "tmac_core", *map(str, args)],
            cwd=ROOT,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TMAC_CACHE_DIR": str(cache_dir), **(env or {})},
        )
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        return proc

    return run


@pytest.fixture(scope="module")
def cli_json(cli):
    """Run with --json; returns (exit code, the one JSON object on stdout)."""

    def run(*args, **kw):
        proc = cli(*args, "--json", **kw)
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1, proc.stdout + proc.stderr
        return proc.returncode, json.loads(lines[0])

    return run


@pytest.fixture(scope="module")
def tiny(cli_json, tmp_path_factory):
    """A 0.1M-parameter Llama with an 8k declared context, written by `synth`."""
    path = tmp_path_factory.mktemp("synth") / "tiny.gguf"
    code, out = cli_json("synth", path, *TINY, "--ctx-train", 8192, "--type", "q8_0", "--seed", 5)
    assert code == 0, out
    return path, out


# -- info, synth ----------------------------------------------------------------------


def test_info_reports_tiers_and_features(cli_json):
    code, out = cli_json("info")
    assert code == 0
    assert out["active_tier"] in out["available_tiers"] and "generic" in out["available_tiers"]
    assert out["cpu_count"] >= 1 and out["default_threads"] >= 1
    assert os.path.isfile(out["default_model"])
    code, forced = cli_json("info", env={"TMAC_KERNELS": "generic"})
    assert (forced["active_tier"], forced["forced_by_env"]) == ("generic", "generic")


def test_info_with_an_impossible_tier_is_a_clean_error(cli_json):
    code, out = cli_json("info", env={"TMAC_KERNELS": "no-such-tier"})
    assert code == 2 and out["error"] == "UnsupportedCpuError" and "no-such-tier" in out["message"]


def test_synth_file_reads_back_with_an_independent_reader(tiny):
    gguf = pytest.importorskip("gguf")
    path, out = tiny
    assert out["bytes"] == os.path.getsize(path)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert sum(int(t.n_elements) for t in tensors.values()) == out["n_params"]
    assert tensors["blk.1.ffn_down.weight"].shape.tolist() == [128, 64]  # ne0 first
    assert tensors["output.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert np.all(np.asarray(tensors["blk.0.attn_norm.weight"].data) == 1.0)
    # Q8_0 blocks: int8 codes times an fp16 scale; the values must be N(0, 0.02)
    raw = np.asarray(tensors["token_embd.weight"].data).reshape(-1, 34)
    d = raw[:, :2].copy().view(np.float16).astype(np.float32)
    values = raw[:, 2:].copy().view(np.int8).astype(np.float32) * d
    assert abs(values.std() - 0.02) < 0.002 and abs(values.mean()) < 0.002
    field = reader.fields["tokenizer.ggml.tokens"]
    assert len(field.data) == 320


def test_synth_round_trip_through_the_loader(tiny):
    from tmac_core import Engine

    path, _ = tiny
    engine = Engine.load(path, bits=4, use_cache=False, n_ctx=64)
    info = engine.info
    assert (info.dim, info.n_layers, info.vocab_size, info.n_ctx_train) == (64, 2, 320, 8192)
    text = "Byte-level: any text at all, even ünïcödé ✓\n"
    ids = engine.tokenizer.encode(text, allow_special=False)
    assert engine.tokenizer.decode(ids) == text and len(ids) < len(text.encode())  # merges are used


def test_synth_refuses_bad_shapes(cli_json, tmp_path):
    code, out = cli_json("synth", tmp_path / "x.gguf", "--dim", "64", "--heads", "5")
    assert code == 2 and out["error"] == "CliError" and "heads" in out["message"]
    assert not (tmp_path / "x.gguf").exists()


# -- generate, chat -------------------------------------------------------------------


def test_generate_greedy_is_deterministic_on_the_embedded_model(cli_json):
    args = (
        "generate",
        "default",
        "--prompt",
        "Name three colours.",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--threads",
        "2",
    )
    code, a = cli_json(*args)
    assert code == 0, a
    _, b = cli_json(*args)
    assert a["text"] == b["text"] and a["text"].strip()
    assert a["finish_reason"] in ("stop", "length") and 1 <= a["generated_tokens"] <= 12
    assert a["prompt_tokens"] > 5 and a["prompt_tok_s"] > 0 and a["ttft_s"] > 0 and a["threads"] == 2


def test_generate_sampling_repeats_with_the_same_seed(cli_json, tiny):
    path, _ = tiny
    args = ("generate", path, "--prompt", "hi", "--temperature", "0.9", "--seed", "11", "--max-tokens", "24")
    runs = [cli_json(*args)[1] for _ in range(2)]
    assert runs[0]["text"] == runs[1]["text"] and runs[0]["generated_tokens"] >= 1
    other = cli_json("generate", path, "--prompt", "hi", "--temperature", "0.9", "--seed", "12", "--max-tokens", "24")[
        1
    ]
    assert other["text"] != runs[0]["text"]  # the seed is actually used


def test_generate_human_output_streams_text_and_times_on_stderr(cli, tiny):
    path, _ = tiny
    proc = cli("generate", path, "--prompt", "hi", "--temperature", "0", "--max-tokens", "5", "--system", "Be brief.")
    assert proc.returncode == 0
    assert proc.stdout.endswith("\n")
    assert "decode:" in proc.stderr and "finish: " in proc.stderr and "tok/s" in proc.stderr


def test_chat_keeps_history_and_reset_forgets_it(cli, tiny):
    path, _ = tiny
    common = ("chat", path, "--json", "--temperature", "0", "--max-tokens", "4")
    kept = cli(*common, input="first message\nsecond\n/exit\n")
    assert kept.returncode == 0
    one, two = (json.loads(line) for line in kept.stdout.splitlines())
    assert one["role"] == two["role"] == "assistant"
    assert two["prompt_tokens"] > one["prompt_tokens"] and two["cached_tokens"] > 0  # history, KV reused
    reset = cli(*common, input="first message\n/reset\nsecond\n")  # EOF ends it too
    first, second = (json.loads(line) for line in reset.stdout.splitlines())
    assert second["cached_tokens"] == 0 and second["prompt_tokens"] < two["prompt_tokens"]


def test_ctrl_c_stops_the_answer_not_the_chat(cache_dir, tiny):
    path, _ = tiny
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tmac_core",
            "chat",
            str(path),
            "--temperature",
            "0",
            "--repeat-penalty",
            "1",
            "--max-tokens",
            "100000",
            "--ctx",
            "8192",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMAC_CACHE_DIR": str(cache_dir)},
    )
    try:
        proc.stdin.write(b"tell me everything\n")
        proc.stdin.flush()
        seen, deadline = b"", time.monotonic() + 60
        while len(seen) < 16:  # past the "> " prompt: the answer is streaming
            ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no answer streamed within 60 s (got {seen!r})"
            more = os.read(proc.stdout.fileno(), 64)
            assert more, "the chat ended before answering"
            seen += more
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        out, err = proc.communicate(b"/exit\n", timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == 0, err
    assert "[stopped]" in err and "finish: cancelled" in err and "Traceback" not in err


# -- perplexity -----------------------------------------------------------------------


def reference_ppl(path, text: str, ctx: int, max_chunks: int | None = None):
    """llama-perplexity's loop written out plainly: all logits of each chunk at once."""
    from tmac_core import Engine

    engine = Engine.load(path, bits=None, use_cache=False, n_ctx=ctx)  # the CLI default: as in the file
    tok = engine.tokenizer
    tokens = tok.encode(text, allow_special=False, add_special=True)
    n_chunk = len(tokens) // ctx if max_chunks is None else min(len(tokens) // ctx, max_chunks)
    nll, count = 0.0, 0
    for i in range(n_chunk):
        chunk = list(tokens[i * ctx : (i + 1) * ctx])
        if tok.add_bos:
            chunk[0] = tok.bos_id
        logits = np.asarray(engine.score(chunk), np.float64)
        for j in range(ctx // 2, ctx - 1):
            row = logits[j]
            nll += math.log(np.exp(row - row.max()).sum()) + row.max() - row[chunk[j + 1]]
            count += 1
    return math.exp(nll / count), count, len(tokens), n_chunk


@pytest.fixture(scope="module")
def tiny_bos(cli_json, tmp_path_factory):
    """Like `tiny`, but its vocabulary adds BOS (token 1) to every text."""
    path = tmp_path_factory.mktemp("synth_bos") / "tiny_bos.gguf"
    code, out = cli_json("synth", path, *TINY, "--ctx-train", 256, "--type", "q4_0", "--add-bos", "--seed", 6)
    assert code == 0, out
    return path, out


@pytest.mark.parametrize("ctx, bos", [(32, False), (33, False), (32, True)])
def test_perplexity_follows_llama_perplexity_exactly(cli_json, tiny, tiny_bos, ctx, bos):
    path, _ = tiny_bos if bos else tiny
    text = ALICE.read_text()[:3000]
    sample = Path(path).parent / f"sample{ctx}.txt"
    sample.write_text(text)
    code, out = cli_json("perplexity", path, "--file", sample, "--ctx", ctx)
    assert code == 0, out
    assert out["bos_replaced"] is bos
    expected, count, n_tokens, n_chunk = reference_ppl(path, text, ctx)
    assert out["n_tokens"] == n_tokens and out["chunks"] == n_chunk == n_tokens // ctx
    assert out["tokens_scored"] == count == n_chunk * (ctx - 1 - ctx // 2)
    assert out["ppl"] == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(out["ppl"]) and out["ppl"] > 1
    code, limited = cli_json("perplexity", path, "--file", sample, "--ctx", ctx, "--chunks", 2)
    assert limited["chunks"] == 2 and limited["tokens_scored"] == 2 * (ctx - 1 - ctx // 2)


def test_perplexity_of_english_on_the_embedded_model_is_sane(cli_json):
    code, out = cli_json("perplexity", "default", "--file", ALICE, "--ctx", 128, "--chunks", 2)
    assert code == 0, out
    # the default --bits file: Q4_1 and Q8_0 exactly (5.5 and 9 bits per weight)
    assert out["tokens_scored"] == 2 * 63 and out["bits"] is None and out["bits_per_weight"] > 6
    # a broken forward pass scores random text at ~vocab size (49152); the model knows English
    assert 1 < out["ppl"] < 100


def test_perplexity_refuses_a_text_shorter_than_two_chunks(cli_json, tiny, tmp_path):
    path, _ = tiny
    short = tmp_path / "short.txt"
    short.write_text("Too short to score.")
    code, out = cli_json("perplexity", path, "--file", short, "--ctx", 64)
    assert code == 2 and out["error"] == "PerplexityError" and "at least 128" in out["message"]


def test_perplexity_pieces():
    assert ppl.scored_per_chunk(512) == 255 and ppl.scored_per_chunk(33) == 16
    assert ppl.n_chunks(1000, 100) == 10 and ppl.n_chunks(1000, 100, max_chunks=3) == 3
    with pytest.raises(ppl.PerplexityError):
        ppl.n_chunks(199, 100)
    chunk = ppl.chunk_tokens(list(range(10, 30)), 1, 8, bos_id=1)
    assert chunk.tolist() == [1, *range(19, 26)]
    # uniform logits: every token costs log(vocab)
    nll = ppl.chunk_nll(np.zeros((8, 50)), chunk)
    assert nll.shape == (3,) and np.allclose(nll, math.log(50))
    # logits given from the scored half only must give the same numbers
    logits = np.random.default_rng(0).standard_normal((8, 50))
    assert np.allclose(ppl.chunk_nll(logits[4:], chunk, offset=4), ppl.chunk_nll(logits, chunk))


# -- bench ----------------------------------------------------------------------------


def test_bench_reports_speeds_and_memory(cli_json, tiny):
    path, out = tiny
    code, b = cli_json(
        "bench", path, "--bits", 2, "--threads", 1, "--prompt-tokens", 40, "--gen-tokens", 8, "--repeats", 2
    )
    assert code == 0, b
    for key in ("prompt_tok_s", "decode_tok_s", "bits_per_weight", "packed_bytes", "rss_bytes", "n_params"):
        assert b[key] > 0, key
    assert (b["threads"], b["bits"], b["repeats"]) == (1, 2, 2) and b["tier"]
    assert len(b["decode_tok_s_runs"]) == 2 and b["model"].startswith("synthetic llama")
    assert b["n_params"] == out["n_params"] and b["rss_after_run_bytes"] >= b["rss_bytes"] >= b["rss_baseline_bytes"]


def test_bench_profile_splits_the_decode_by_phase(cli, cli_json, tiny, cache_dir):
    from tmac_core.models._llama import PHASES

    path, _ = tiny
    code, b = cli_json("bench", path, "--threads", 1, "--prompt-tokens", 8, "--gen-tokens", 6, "--profile")
    assert code == 0, b
    phases = b["decode_phases"]
    assert [r["phase"] for r in phases] == [*PHASES, "outside"] and b["decode_phases_tok_s"] > 0
    assert all(r["ms_per_token"] >= 0 and r["share"] >= 0 for r in phases)
    assert sum(r["share"] for r in phases) == pytest.approx(1.0, abs=1e-6)
    reads = {r["phase"]: r for r in phases if r["mb_per_token"] > 0}
    assert set(reads) == {"qkv", "attn_output", "gate_up", "down", "output"}
    assert all(r["gb_s"] > 0 for r in reads.values())
    # the synthetic model's embedding is its own matrix, read one row per token: not counted
    assert 1e6 * sum(r["mb_per_token"] for r in reads.values()) == pytest.approx(b["decode_bytes"])
    from tmac_core import Engine

    engine = Engine.load(path, cache_dir=cache_dir)
    try:
        embedding = engine._weights["token_embd.weight"].nbytes
    finally:
        engine.close()
    assert b["decode_bytes"] == b["packed_bytes"] - embedding
    human = cli("bench", path, "--prompt-tokens", 8, "--gen-tokens", 2, "--repeats", 0, "--profile")
    assert human.returncode == 0, human.stderr
    assert "decode by phase (2 tokens" in human.stdout and "gate_up" in human.stdout


def test_bench_refuses_more_tokens_than_the_context(cli_json, tiny):
    path, _ = tiny
    code, out = cli_json("bench", path, "--ctx", 64, "--prompt-tokens", 60, "--gen-tokens", 8)
    assert code == 2 and "do not fit" in out["message"]


def test_bench_human_output_with_and_without_measured_runs(cli, tiny):
    path, _ = tiny
    measured = cli("bench", path, "--prompt-tokens", 8, "--gen-tokens", 2, "--repeats", 1)
    assert measured.returncode == 0, measured.stderr
    assert "median of 1" in measured.stdout and "after the runs:" in measured.stdout
    load_only = cli("bench", path, "--repeats", 0)
    assert load_only.returncode == 0, load_only.stderr
    assert "tok/s" not in load_only.stdout and "after the runs" not in load_only.stdout
    assert "resident memory after load:" in load_only.stdout


def test_every_json_record_has_exactly_its_documented_keys(cli, cli_json, tiny):
    """What --json prints is the TypedDict its command documents (tmac_core/cli.py), key for key."""

    def keys(record: type) -> set[str]:
        return set(record.__required_keys__ | record.__optional_keys__)

    path, synth = tiny
    records = {
        "synth": (synth, tmac_cli.SynthRecord),
        "info": (cli_json("info")[1], tmac_cli.InfoRecord),
        "inspect": (cli_json("inspect", path)[1], tmac_cli.InspectRecord),
        "generate": (cli_json("generate", path, "--prompt", "hi", "--max-tokens", 2)[1], tmac_cli.GenerateRecord),
        "bench": (cli_json("bench", path, "--repeats", 0)[1], tmac_cli.BenchRecord),
        "perplexity": (
            cli_json("perplexity", path, "--file", ALICE, "--ctx", 64, "--chunks", 1)[1],
            tmac_cli.PerplexityRecord,
        ),
        "error": (cli_json("generate", path, "--prompt", "hi", "--bits", 3)[1], tmac_cli.ErrorRecord),
    }
    chat = cli("chat", path, "--json", "--max-tokens", 2, input="hello\n")
    records["chat"] = (json.loads(chat.stdout.splitlines()[0]), tmac_cli.ChatRecord)
    records["bench --profile"] = (
        cli_json("bench", path, "--prompt-tokens", 4, "--gen-tokens", 2, "--repeats", 0, "--profile")[1],
        tmac_cli.BenchRecord,
    )
    for command, (out, record) in records.items():
        assert set(out) == keys(record) - (set() if "--profile" in command else record.__optional_keys__), command
    assert all(set(r) == keys(tmac_cli.PhaseRecord) for r in records["bench --profile"][0]["decode_phases"])
    assert records["bench"][0]["prompt_tok_s"] is None and records["bench"][0]["rss_after_run_bytes"] is None


# -- bad inputs -----------------------------------------------------------------------


def test_missing_model_file(cli, cli_json, tmp_path):
    missing = tmp_path / "nope.gguf"
    code, out = cli_json("generate", missing, "--prompt", "hi")
    assert code == 2 and out["error"] == "ModelLoadError" and str(missing) in out["message"]
    proc = cli("generate", missing, "--prompt", "hi")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "nope.gguf" in proc.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_model_file(cli, cli_json, tiny, tmp_path, damage):
    path, _ = tiny
    bad = tmp_path / f"{damage}.gguf"
    data = path.read_bytes()
    bad.write_bytes(b"this is not a model file at all" * 10 if damage == "garbage" else data[: len(data) // 3])
    code, out = cli_json("bench", bad, "--no-cache")
    assert code == 2 and out["error"] == "ModelFormatError" and str(bad) in out["message"]
    proc = cli("generate", bad, "--prompt", "hi", "--no-cache")
    assert proc.returncode == 2 and proc.stderr.startswith("tmac_core: ModelFormatError:")
    assert proc.stderr.count("\n") == 1


def test_bad_arguments_and_missing_text_file(cli_json, tiny, tmp_path):
    path, _ = tiny
    code, out = cli_json("generate", path, "--prompt", "hi", "--bits", "3")
    assert code == 2 and out["error"] == "CliError" and "--bits" in out["message"]
    code, out = cli_json("perplexity", path, "--file", tmp_path / "absent.txt")
    assert code == 2 and out["error"] == "FileNotFoundError" and "absent.txt" in out["message"]
    code, out = cli_json("generate", path, "--prompt", "hi", "--ctx", "100000")
    assert code == 2 and "n_ctx" in out["message"]
    code, out = cli_json("generate", path, "--prompt", "hi", "--top-p", "0")
    assert code == 2 and "top_p" in out["message"]
