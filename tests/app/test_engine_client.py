"""EngineClient against the real engine process on the embedded SmolLM2 (spawned, no mocks).

Covers: load + streamed answer, stop mid-answer, set_threads mid-answer (the
engine's Chunk.threads changes), SIGKILL mid-answer → died + restart, load
failure, context overflow with counts, trimming a long history by whole turns, and the
local server's background requests (never stopped for the window; stop(id) per request).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.app.live_engine import ANSWER_TIMEOUT_MS, LOAD_TIMEOUT_MS, LONG_PROMPT, ChunkLog, engine_cache_dir  # noqa: F401

pytest.importorskip("pytestqt")

from app.workers.engine_client import EngineClient, describe_exit  # noqa: E402
from app.workers.protocol import NOT_READY, EngineState  # noqa: E402
from tmac_core import SamplingParams  # noqa: E402
from tmac_core.errors import ContextOverflowError, ModelLoadError  # noqa: E402

pytestmark = pytest.mark.engine

GREEDY = SamplingParams(temperature=0.0, max_tokens=16, seed=0)


@pytest.fixture
def client(qtbot, engine_cache_dir):  # noqa: F811 (fixture imported above)
    engine = EngineClient(cache_dir=engine_cache_dir)
    yield engine
    engine.shutdown()


def load(qtbot, client, **options) -> object:
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        client.load("default", 4, **{"n_ctx": 512, **options})
    assert client.state == EngineState.READY
    return blocker.args[0]


def wait_finished(qtbot, log: ChunkLog, request_id: int) -> list:
    qtbot.waitUntil(lambda: bool(log.finished(request_id) or log.failures or log.deaths), timeout=ANSWER_TIMEOUT_MS)
    assert not log.failures and not log.deaths, (log.failures, log.deaths)
    return log.of(request_id)


def test_load_then_stream_a_greedy_answer(qtbot, client):
    states = []
    client.stateChanged.connect(states.append)
    info = load(qtbot, client)
    assert (info.bits, info.n_ctx, info.arch) == (4, 512, "llama")
    assert info.tier in ("generic", "avx2", "avx512", "neon")
    log = ChunkLog().attach(client)

    request_id = client.generate([{"role": "user", "content": "What is the capital of France?"}], GREEDY)
    chunks = wait_finished(qtbot, log, request_id)

    assert len(chunks) >= 3, "the answer should arrive token by token, not in one piece"
    assert chunks[-1].finish_reason in ("stop", "length")
    assert "Paris" in log.text(request_id)
    assert chunks[-1].generated_tokens == len(chunks) - 1
    assert states[:3] == [EngineState.STARTING, EngineState.LOADING, EngineState.READY]
    assert states[-1] == EngineState.READY and EngineState.GENERATING in states


def test_the_same_greedy_prompt_gives_the_same_answer(qtbot, client):
    load(qtbot, client)
    log = ChunkLog().attach(client)
    messages = [{"role": "user", "content": "Name three colours."}]
    first = client.generate(messages, GREEDY)
    wait_finished(qtbot, log, first)
    second = client.generate(messages, GREEDY)
    wait_finished(qtbot, log, second)
    assert log.text(first) == log.text(second) != ""
    assert log.of(second)[-1].cached_tokens > 0, "the second turn should reuse the KV cache of the prompt"


def test_stop_ends_the_answer_early(qtbot, client):
    load(qtbot, client)
    log = ChunkLog().attach(client)
    request_id = client.generate(
        [{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0.0, max_tokens=400)
    )
    qtbot.waitUntil(lambda: len(log.of(request_id)) >= 3, timeout=ANSWER_TIMEOUT_MS)
    client.stop()
    chunks = wait_finished(qtbot, log, request_id)
    assert chunks[-1].finish_reason == "cancelled"
    assert chunks[-1].generated_tokens < 100
    assert client.state == EngineState.READY


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to change the thread count")
def test_set_threads_applies_during_the_answer(qtbot, client):
    load(qtbot, client, n_threads=2)
    log = ChunkLog().attach(client)
    request_id = client.generate(
        [{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0.0, max_tokens=300)
    )
    qtbot.waitUntil(lambda: len(log.of(request_id)) >= 3, timeout=ANSWER_TIMEOUT_MS)
    assert log.of(request_id)[0].threads == 2
    client.set_threads(1)
    qtbot.waitUntil(lambda: log.of(request_id)[-1].threads == 1, timeout=ANSWER_TIMEOUT_MS)
    assert not log.finished(request_id) or log.of(request_id)[-1].finish_reason != "stop", (
        "the change must land while the answer is still running"
    )
    client.set_threads(2)
    qtbot.waitUntil(lambda: log.of(request_id)[-1].threads == 2, timeout=ANSWER_TIMEOUT_MS)
    client.stop()
    chunks = wait_finished(qtbot, log, request_id)
    assert [c.threads for c in chunks].count(1) >= 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs to change the thread count")
def test_set_threads_while_loading_applies_once_loaded(qtbot, client):
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        client.load("default", 4, n_ctx=512, n_threads=2)
        assert client.state in (EngineState.STARTING, EngineState.LOADING)
        client.set_threads(1)  # the process is still starting: the engine does not exist yet
    assert blocker.args[0].n_threads == 1 and client.threads == 1
    log = ChunkLog().attach(client)
    request_id = client.generate([{"role": "user", "content": "Say hi."}], GREEDY)
    chunks = wait_finished(qtbot, log, request_id)
    assert {chunk.threads for chunk in chunks} == {1}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signal")
def test_kill_mid_answer_reports_death_and_restart_reloads(qtbot, client):
    load(qtbot, client)
    log = ChunkLog().attach(client)
    request_id = client.generate(
        [{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0.0, max_tokens=400)
    )
    qtbot.waitUntil(lambda: len(log.of(request_id)) >= 3, timeout=ANSWER_TIMEOUT_MS)
    with qtbot.waitSignal(client.died, timeout=10_000) as blocker:
        os.kill(client.pid, signal.SIGKILL)
    assert "SIGKILL" in blocker.args[0]
    assert client.state == EngineState.DEAD
    assert not log.finished(request_id)

    info = None
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        client.restart()
    info = blocker.args[0]
    assert info.n_ctx == 512 and client.state == EngineState.READY
    again = client.generate([{"role": "user", "content": "Say hi."}], GREEDY)
    qtbot.waitUntil(lambda: log.finished(again), timeout=ANSWER_TIMEOUT_MS)
    assert log.text(again).strip()


def test_generate_before_load_fails_politely(qtbot, client):
    with qtbot.waitSignal(client.failed, timeout=2000) as blocker:
        request_id = client.generate([{"role": "user", "content": "hi"}], GREEDY)
    assert blocker.args[:2] == [request_id, NOT_READY]


def test_a_missing_model_file_is_a_load_failure(qtbot, client, tmp_path):
    with qtbot.waitSignal(client.loadFailed, timeout=LOAD_TIMEOUT_MS) as blocker:
        client.load(str(tmp_path / "missing.gguf"), 4)
    kind, text = blocker.args
    assert kind == ModelLoadError.kind
    assert "missing.gguf" in text
    qtbot.waitUntil(lambda: client.state == EngineState.STOPPED, timeout=5000)


def test_context_overflow_is_reported_with_the_counts(qtbot, client):
    load(qtbot, client, n_ctx=64)
    log = ChunkLog().attach(client)
    long_text = "Please summarise this. " + "The quick brown fox jumps over the lazy dog. " * 30
    request_id = client.generate([{"role": "user", "content": long_text}], GREEDY, fit_to_context=False)
    qtbot.waitUntil(lambda: bool(log.failures), timeout=ANSWER_TIMEOUT_MS)
    failed_id, error_type, text = log.failures[0]
    assert (failed_id, error_type) == (request_id, ContextOverflowError.kind)
    assert "holds 64" in text and "tokens" in text
    assert client.state == EngineState.READY, "an overflow is the request's failure, not the engine's"


def test_a_long_history_is_trimmed_by_whole_turns(qtbot, client):
    load(qtbot, client, n_ctx=256)
    log = ChunkLog().attach(client)
    filler = "This is an old message about gardening and tomatoes. " * 6
    messages = [{"role": "system", "content": "You are brief."}]
    for turn in range(6):
        messages += [
            {"role": "user", "content": f"Question {turn}: {filler}"},
            {"role": "assistant", "content": f"Answer {turn}: {filler}"},
        ]
    messages.append({"role": "user", "content": "What is 2 + 2?"})
    request_id = client.generate(messages, SamplingParams(temperature=0.0, max_tokens=8))
    chunks = wait_finished(qtbot, log, request_id)

    assert len(log.trims) == 1
    trimmed_id, dropped, tokens, n_ctx = log.trims[0]
    assert trimmed_id == request_id and n_ctx == 256
    assert dropped >= 2 and dropped % 2 == 0, "whole turns (question + answer) are dropped"
    assert chunks[-1].prompt_tokens == tokens <= 256 - 8
    assert chunks[-1].finish_reason in ("stop", "length")


def test_describe_exit_names_signals_and_codes():
    assert describe_exit(-9).startswith("the engine process was killed by SIGKILL")
    assert describe_exit(3) == "the engine process exited with code 3"
    assert describe_exit(0xC0000005) == "the engine process crashed with code 0xC0000005"
    assert describe_exit(None) == "the engine process stopped responding"


def test_a_second_request_while_busy_waits_for_the_first_to_stop(qtbot, client):
    load(qtbot, client)
    log = ChunkLog().attach(client)
    first = client.generate([{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0.0, max_tokens=400))
    qtbot.waitUntil(lambda: len(log.of(first)) >= 2, timeout=ANSWER_TIMEOUT_MS)
    second = client.generate([{"role": "user", "content": "Say hi."}], GREEDY)
    t0 = time.monotonic()
    wait_finished(qtbot, log, second)
    assert log.of(first)[-1].finish_reason == "cancelled"
    assert log.text(second).strip() and time.monotonic() - t0 < 30


def test_a_background_answer_is_never_stopped_for_the_window_and_stop_is_per_request(qtbot, client):
    """The local server's requests (background): a window request waits behind one instead of stopping
    it, a newer window request replaces the waiting one, and stop(id) touches that request only."""
    load(qtbot, client)
    log = ChunkLog().attach(client)
    started: list[int] = []
    client.requestStarted.connect(started.append)
    background = client.generate(
        [{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0.0, max_tokens=24), background=True
    )
    qtbot.waitUntil(lambda: len(log.of(background)) >= 2, timeout=ANSWER_TIMEOUT_MS)
    first = client.generate([{"role": "user", "content": "Say hi."}], GREEDY)
    second = client.generate([{"role": "user", "content": "Say hello."}], GREEDY)
    assert not client.is_waiting(first) and client.is_waiting(second)
    withdrawn = client.generate([{"role": "user", "content": "Say bye."}], GREEDY, background=True)
    client.stop(withdrawn)  # waiting: withdrawn, the running answer goes on
    qtbot.waitUntil(lambda: log.finished(second), timeout=ANSWER_TIMEOUT_MS)
    assert [f[:2] for f in log.failures] == [(first, "superseded"), (withdrawn, "cancelled")]
    assert log.of(background)[-1].finish_reason == "length"  # all 24 tokens: never stopped
    assert started == [background, second] and log.text(second).strip()
    assert client.state == EngineState.READY


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signal")
def test_the_watchdog_reports_a_hung_engine_and_a_restart_recovers(qtbot, client):
    """A frozen engine (SIGSTOP: alive, silent) mid-answer: `stalled` within the limit, never a kill
    by the client itself; `resumed` when it speaks again; restart() replaces a hung one."""
    load(qtbot, client)
    client.stall_s = 1.0
    log = ChunkLog().attach(client)
    stalls: list[float] = []
    client.stalled.connect(stalls.append)
    request_id = client.generate(
        [{"role": "user", "content": LONG_PROMPT}], SamplingParams(temperature=0.0, max_tokens=400)
    )
    qtbot.waitUntil(lambda: len(log.of(request_id)) >= 3, timeout=ANSWER_TIMEOUT_MS)
    pid = client.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        qtbot.waitUntil(lambda: bool(stalls), timeout=5000)
        assert stalls[0] >= 1.0 and len(stalls) == 1
        assert client.state == EngineState.GENERATING and not log.deaths  # an offer, not a verdict
        with qtbot.waitSignal(client.resumed, timeout=10_000):
            os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGCONT)
    client.stop()
    qtbot.waitUntil(lambda: bool(log.finished(request_id)), timeout=ANSWER_TIMEOUT_MS)

    os.kill(pid, signal.SIGSTOP)  # hung for good this time: the user takes the offered restart
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        client.restart()
    assert client.pid != pid and client.state == EngineState.READY
    qtbot.waitUntil(lambda: not client._retired, timeout=15_000)  # the hung one is killed after its grace


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signal")
def test_the_watchdog_reports_a_load_that_makes_no_progress(qtbot, client):
    client.stall_s = 1.0
    stalls: list[float] = []
    client.stalled.connect(stalls.append)
    client.load("default", 4, n_ctx=512)
    pid = client.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        qtbot.waitUntil(lambda: bool(stalls), timeout=5000)
        assert client.state == EngineState.LOADING
    finally:
        os.kill(pid, signal.SIGCONT)
    with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
        pass


def test_a_damaged_cache_file_found_after_loading_is_reloaded_repacked(qtbot, tmp_path):
    """The engine reports Loaded before the cache file's data checksums are checked; a flipped bit found
    after is CacheDamaged, and the client loads the model again, repacked, from a rewritten file."""
    import json

    from tests.runtime.model_mutations import write_tiny_synth
    from tmac_core.loading import cache

    model = tmp_path / "tiny.gguf"
    write_tiny_synth(model, n_ctx_train=512)
    first = EngineClient(cache_dir=tmp_path / "cache")
    try:
        with qtbot.waitSignal(first.loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
            first.load(str(model), 4, n_ctx=512)
        assert not blocker.args[0].cache_hit
    finally:
        first.shutdown()
    (file,) = (tmp_path / "cache").glob("*.tmacw")
    intact = file.read_bytes()
    data = bytearray(intact)
    header = json.loads(data[int.from_bytes(data[8:16], "little") :])
    planes = next(e for e in header["entries"] if e["kind"] == "packed")["planes"]
    data[cache.DATA_START + planes["offset"] + 10] ^= 0x10
    file.write_bytes(bytes(data))

    client = EngineClient(cache_dir=tmp_path / "cache")
    try:
        loads, notices = [], []
        client.loaded.connect(loads.append)
        client.cacheDamaged.connect(notices.append)
        client.load(str(model), 4, n_ctx=512)
        qtbot.waitUntil(lambda: len(loads) == 2, timeout=2 * LOAD_TIMEOUT_MS)
        assert loads[0].cache_hit and not loads[1].cache_hit  # ready at once, then repacked
        assert len(notices) == 1 and "checksum" in notices[0]
        assert file.read_bytes() == intact  # rewritten intact
        log = ChunkLog().attach(client)
        request_id = client.generate(
            [{"role": "user", "content": "hello"}], SamplingParams(temperature=0, max_tokens=4)
        )
        assert wait_finished(qtbot, log, request_id)[-1].finish_reason in ("stop", "length")
    finally:
        client.shutdown()


def test_a_switch_loads_alongside_and_takes_over_when_ready(qtbot, client):
    """switch(): the current model answers while the next one loads in a second process; the next one
    takes over only once loaded and the answer in progress has ended."""
    first = load(qtbot, client)
    old_pid = client.pid
    loads = []
    client.loaded.connect(loads.append)
    assert not client.switch("default", 2, n_ctx=512, need_bytes=1 << 40, free_bytes=1 << 30)  # no room
    assert client.switch("default", 2, n_ctx=512, need_bytes=100 << 20, free_bytes=1 << 30)
    assert client.switching and client.state == EngineState.READY and client.pid == old_pid
    log = ChunkLog().attach(client)
    request_id = client.generate([{"role": "user", "content": "What is the capital of France?"}], GREEDY)
    chunks = wait_finished(qtbot, log, request_id)  # answered by the current model meanwhile
    assert chunks[-1].finish_reason in ("stop", "length")
    qtbot.waitUntil(lambda: bool(loads), timeout=LOAD_TIMEOUT_MS)
    assert (first.bits, loads[0].bits) == (4, 2) and client.info.bits == 2 and not client.switching
    assert client.pid != old_pid and client.state == EngineState.READY
    request_id = client.generate([{"role": "user", "content": "What is the capital of France?"}], GREEDY)
    assert wait_finished(qtbot, log, request_id)[-1].finish_reason in ("stop", "length")


def test_a_switch_that_fails_keeps_the_current_model(qtbot, client, tmp_path):
    load(qtbot, client)
    old_pid = client.pid
    failures = []
    client.switchFailed.connect(lambda kind, text: failures.append((kind, text)))
    missing = tmp_path / "missing.gguf"
    assert client.switch(str(missing), 4, n_ctx=512, need_bytes=1, free_bytes=1 << 30)
    qtbot.waitUntil(lambda: bool(failures), timeout=LOAD_TIMEOUT_MS)
    assert failures[0][0] == ModelLoadError.kind and not client.switching
    assert client.state == EngineState.READY and client.pid == old_pid and client.info.bits == 4
    log = ChunkLog().attach(client)
    request_id = client.generate([{"role": "user", "content": "Say hi."}], GREEDY)
    assert wait_finished(qtbot, log, request_id)[-1].finish_reason in ("stop", "length")
    # cancelled: the same, at once
    assert client.switch("default", 2, n_ctx=512, need_bytes=1, free_bytes=1 << 30) and client.cancel_load()
    qtbot.waitUntil(lambda: len(failures) == 2, timeout=5000)
    assert failures[1][0] == "load_cancelled" and client.pid == old_pid and client.state == EngineState.READY
