"""tmac_core.Engine on the real embedded SmolLM2: load and the repacked-model
cache, streaming, finish reasons, cancel, thread changes mid-answer, KV reuse,
context limits and typed errors; the token-level API (forward, score,
generate_tokens); the cache parameters on a tiny synthetic model."""

import os
import threading
import time

import numpy as np
import pytest

from tmac_core import ContextOverflowError, Engine, ModelFormatError, ModelLoadError, SamplingParams, TmacError
from tmac_core.engine import EngineBusyError
from tmac_core.loading import cache

pytestmark = pytest.mark.engine

GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("repacked")


@pytest.fixture(scope="module")
def engine(cache_dir):
    e = Engine.load("default", bits=4, cache_dir=cache_dir)
    yield e
    e.close()


def answer(engine, messages=QUESTION, params=GREEDY, cancel=None):
    chunks = list(engine.stream(messages, params, cancel=cancel))
    return "".join(c.text for c in chunks), chunks


def test_load_reports_the_model_and_fills_the_cache(engine, cache_dir):
    info = engine.info
    assert info.arch == "llama" and info.n_layers == 30 and info.dim == 576 and info.vocab_size == 49152
    assert 130e6 < info.n_params < 140e6
    # 4-bit matrices at about 5 bits with their scales, the tied Q8_0 output layer at 6 bits
    assert 5.0 < info.bits_per_weight < 6.5 and info.bits == 4
    assert info.tier in ("generic", "avx2", "avx512", "neon") and info.chat_template == "model"
    assert info.n_ctx == 4096 and info.n_ctx_train == 8192
    files = list(cache_dir.glob("*.tmacw"))
    assert len(files) == 1 and files[0].stat().st_size >= info.packed_bytes


def test_second_load_comes_from_the_cache_and_answers_the_same(engine, cache_dir):
    again = Engine.load("default", bits=4, cache_dir=cache_dir)
    try:
        assert again.info.cache_hit and again.info.load_s < engine.info.load_s
        engine.reset()
        assert answer(again)[0] == answer(engine)[0]
    finally:
        again.close()


def test_a_known_sha256_keys_the_cache_without_reading_the_file(engine, cache_dir, monkeypatch):
    """The app passes the sha256 its download manifest holds; the engine then does not re-hash."""
    from tmac_core.engine import default_model_path
    from tmac_core.filehash import sha256_file
    from tmac_core.loading import cache

    digest = sha256_file(default_model_path())
    monkeypatch.setattr(cache, "source_hash", lambda *a, **k: pytest.fail("the model file was hashed again"))
    again = Engine.load("default", bits=4, cache_dir=cache_dir, source_sha256=digest)
    try:
        assert again.info.cache_hit
    finally:
        again.close()
    with pytest.raises(ValueError, match="source_sha256"):
        Engine.load("default", bits=4, cache_dir=cache_dir, source_sha256="not-a-digest")


def test_a_damaged_cache_file_is_rebuilt(engine, cache_dir, tmp_path):
    folder = tmp_path / "c"
    first = Engine.load("default", bits=4, cache_dir=folder)
    first.close()
    (file,) = folder.glob("*.tmacw")
    data = bytearray(file.read_bytes())
    data[20:40] = b"\xff" * 20  # corrupt the JSON header
    file.write_bytes(bytes(data))
    rebuilt = Engine.load("default", bits=4, cache_dir=folder)
    try:
        assert not rebuilt.info.cache_hit
        engine.reset()
        assert answer(rebuilt)[0] == answer(engine)[0]
        key = file.name[: -len(".tmacw")]
        cache.load(file, key)  # the rewritten file is valid again
    finally:
        rebuilt.close()


def test_an_unwritable_cache_folder_still_loads(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    e = Engine.load("default", bits=4, cache_dir=blocker / "sub")
    try:
        assert not e.info.cache_hit and answer(e, params=SamplingParams(temperature=0, max_tokens=2))[0]
    finally:
        e.close()


def test_stream_text_and_counters_are_consistent(engine):
    engine.reset()
    text, chunks = answer(engine)
    final = chunks[-1]
    assert final.token_id is None and final.finish_reason in ("stop", "length")
    assert all(c.finish_reason is None and c.token_id is not None for c in chunks[:-1])
    ids = [c.token_id for c in chunks[:-1]]
    assert [c.generated_tokens for c in chunks[:-1]] == list(range(1, len(ids) + 1))
    assert text == engine.tokenizer.decode(ids) and text.strip()
    assert final.prompt_tokens == engine.count_tokens(QUESTION) and final.cached_tokens == 0
    assert final.prompt_tok_s > 0 and final.decode_tok_s > 0 and 0 < final.ttft_s <= final.elapsed_s
    assert final.cpu_s > 0 and final.threads >= 1


def test_prompt_and_decode_cpu_are_measured_apart(engine):
    """Chunk.prompt_cpu_s is the process CPU (kernel pool threads included) until the first token;
    decoding's CPU per token is far below the old figure, all CPU over the generated tokens."""
    engine.reset()
    long_question = [{"role": "user", "content": "Summarise this. " + "The river runs to the sea. " * 30}]
    _, chunks = answer(engine, long_question, SamplingParams(temperature=0, max_tokens=16))
    final = chunks[-1]
    assert final.generated_tokens >= 4 and final.prompt_tokens - final.cached_tokens > 100
    assert len({c.prompt_cpu_s for c in chunks}) == 1  # fixed at the first token
    assert 0 < final.prompt_cpu_s < final.cpu_s
    decode_per_token = (final.cpu_s - final.prompt_cpu_s) / (final.generated_tokens - 1)
    assert 0 < decode_per_token < final.cpu_s / final.generated_tokens


def test_phase_profile_times_each_phase_and_changes_no_logit(engine):
    """LlamaRuntime.set_profiling: the decode steps' time per phase, the bytes each phase's
    matrices hold, and the same logits as without the clocks."""
    from tmac_core.models._llama import PHASES

    runtime = engine.runtime
    prompt = np.arange(1, 17, dtype=np.int32)

    def decode(steps: int) -> list[np.ndarray]:
        out = [engine.forward(prompt, 0)]
        for i in range(steps):
            out.append(engine.forward([int(np.argmax(out[-1]))], len(prompt) + i))
        return out

    plain = decode(4)
    runtime.set_profiling(True)
    t0 = time.perf_counter()
    profiled = decode(4)
    wall = time.perf_counter() - t0
    runtime.set_profiling(False)
    seconds, nbytes, tokens = runtime.phase_profile()
    assert all(np.array_equal(a, b) for a, b in zip(plain, profiled, strict=True))
    assert tuple(seconds) == PHASES == tuple(nbytes) and tokens == len(prompt) + 4
    assert all(s > 0 for s in seconds.values()) and sum(seconds.values()) <= wall
    # SmolLM2 ties its embedding to the output layer: every packed matrix is read once per token
    assert sum(nbytes.values()) == engine.info.packed_bytes
    assert nbytes["attention"] == nbytes["other"] == 0 and nbytes["gate_up"] > nbytes["down"] > 0
    decode(1)  # off: the counts stay as they were
    assert runtime.phase_profile() == (seconds, nbytes, tokens)


def test_greedy_is_deterministic_and_kv_reuse_changes_nothing(engine):
    engine.reset()
    first, _ = answer(engine)
    second, chunks = answer(engine)  # same prompt again: all but one token cached
    assert second == first and chunks[-1].cached_tokens == chunks[-1].prompt_tokens - 1
    follow = QUESTION + [{"role": "assistant", "content": first}, {"role": "user", "content": "And two more?"}]
    reused, chunks = answer(engine, follow)
    assert chunks[-1].cached_tokens > 0
    engine.reset()
    fresh, chunks = answer(engine, follow)
    assert chunks[-1].cached_tokens == 0 and fresh == reused


def test_max_tokens_gives_length(engine):
    _, chunks = answer(engine, params=SamplingParams(temperature=0, max_tokens=3))
    assert chunks[-1].finish_reason == "length" and chunks[-1].generated_tokens == 3


def test_end_of_turn_gives_stop(engine):
    # a question a 135M model answers in one short sentence on every tier (the tiers' attention
    # and SwiGLU round differently, so a rambling answer may end at different lengths)
    _, chunks = answer(
        engine,
        [{"role": "user", "content": "What is the capital of France?"}],
        SamplingParams(temperature=0, max_tokens=64),
    )
    assert chunks[-1].finish_reason == "stop" and chunks[-1].generated_tokens < 64


class CancelAfter:
    """An event that turns on after `n` looks: cancel at a precise step."""

    def __init__(self, n):
        self.n, self.looks = n, 0

    def is_set(self):
        self.looks += 1
        return self.looks > self.n


def test_cancel_mid_prompt_returns_within_one_chunk(engine):
    engine.reset()
    long_prompt = [{"role": "user", "content": "word " * 200}]
    cancel = CancelAfter(2)  # two prompt chunks run, then cancel
    _, chunks = answer(engine, long_prompt, cancel=cancel)
    assert len(chunks) == 1 and chunks[0].finish_reason == "cancelled" and chunks[0].generated_tokens == 0
    assert cancel.looks == 3
    # the KV cache kept the chunks it computed: the next call reuses them
    _, chunks = answer(engine, long_prompt, SamplingParams(temperature=0, max_tokens=1))
    assert chunks[-1].cached_tokens == 64


def test_cancel_mid_answer_stops_at_the_next_token(engine):
    engine.reset()
    n_prompt_chunks = -(-engine.count_tokens(QUESTION) // 32)
    cancel = CancelAfter(n_prompt_chunks + 5)
    _, chunks = answer(engine, params=SamplingParams(temperature=0, max_tokens=100), cancel=cancel)
    assert chunks[-1].finish_reason == "cancelled" and chunks[-1].generated_tokens == 6


def test_set_threads_during_an_answer_changes_nothing_in_greedy_output(engine):
    params = SamplingParams(temperature=0, max_tokens=40, repeat_penalty=1.0)
    engine.set_threads(2)
    engine.reset()
    baseline, _ = answer(engine, params=params)
    seen = set()
    engine.reset()
    parts = []
    for i, c in enumerate(engine.stream(QUESTION, params)):
        parts.append(c.text)
        seen.add(c.threads)
        for j in range(3):  # 100+ changes over the answer
            engine.set_threads(1 + (i + j) % 2)
    engine.set_threads(2)
    assert "".join(parts) == baseline and seen == {1, 2}


def test_context_full_mid_answer(engine, cache_dir):
    n_prompt = engine.count_tokens(QUESTION)
    small = Engine.load("default", bits=4, n_ctx=n_prompt + 3, cache_dir=cache_dir)
    try:
        _, chunks = answer(small, params=SamplingParams(temperature=0, max_tokens=500))
        # 3 free positions: 3 tokens are fed back, the 4th is sampled from the last one
        assert chunks[-1].finish_reason == "context_full" and chunks[-1].generated_tokens == 4
    finally:
        small.close()


def test_prompt_longer_than_the_context_is_refused_with_counts(cache_dir):
    small = Engine.load("default", bits=4, n_ctx=32, cache_dir=cache_dir)
    try:
        msgs = [{"role": "user", "content": "tell me a story " * 20}]
        with pytest.raises(ContextOverflowError) as err:
            small.stream(msgs)  # refused at the call, before any chunk
        assert err.value.n_prompt_tokens == small.count_tokens(msgs) and err.value.n_ctx == 32
        assert str(small.count_tokens(msgs)) in str(err.value)
    finally:
        small.close()


def test_two_streams_at_once_are_refused(engine):
    first = engine.stream(QUESTION, GREEDY)
    next(first)
    with pytest.raises(EngineBusyError):
        engine.stream(QUESTION, GREEDY)
    first.close()  # abandoning a stream frees the engine
    assert answer(engine, params=SamplingParams(temperature=0, max_tokens=2))[0]


def test_bad_sources_and_arguments(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model file"):
        Engine.load(tmp_path / "missing.gguf", use_cache=False)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(200))
    with pytest.raises(ModelFormatError):
        Engine.load(bad, use_cache=False)
    with pytest.raises(ValueError, match="bits"):
        Engine.load("default", bits=3, use_cache=False)


def test_closed_engine_refuses_work(cache_dir):
    e = Engine.load("default", bits=4, cache_dir=cache_dir)
    e.close()
    with pytest.raises(TmacError, match="closed"):
        e.stream(QUESTION)


def test_2bit_preset_loads_and_answers(cache_dir):
    e = Engine.load("default", bits=2, cache_dir=cache_dir)
    try:
        assert 2.0 < e.info.bits_per_weight <= 3.5 and e.info.bits == 2
        text, chunks = answer(e)
        assert text.strip() and chunks[-1].finish_reason in ("stop", "length")
    finally:
        e.close()


def test_set_threads_is_safe_from_another_thread(engine):
    errors = []

    def hammer():
        try:
            for i in range(200):
                engine.set_threads(1 + i % 2)
        except Exception as e:  # noqa: BLE001  # pragma: no cover - the assertion below reports it
            errors.append(e)

    t = threading.Thread(target=hammer)
    t.start()
    text, _ = answer(engine, params=SamplingParams(temperature=0, max_tokens=8))
    t.join()
    engine.set_threads(2)
    assert not errors and text


def test_thread_counts_past_the_pool_limit_are_refused_before_any_answer(engine):
    from tmac_core import kernels
    from tmac_core.types import MAX_THREADS

    assert kernels.MAX_THREADS == MAX_THREADS
    with pytest.raises(ValueError, match="thread count"):
        engine.set_threads(MAX_THREADS + 1)
    with pytest.raises(ValueError, match="thread count"):
        kernels.set_num_threads(MAX_THREADS + 1)
    engine.set_threads(2)


# -- the token-level API: forward, score, generate_tokens ------------------------------

PLAIN_GREEDY = SamplingParams(temperature=0, max_tokens=12, repeat_penalty=1.0)  # pure argmax


def test_score_agrees_with_every_greedy_step_of_a_stream(engine):
    """Teacher forcing equals greedy decoding: score() over prompt + answer picks, at
    each position from the last prompt token on, the token the stream produced."""
    engine.reset()
    ids, _ = engine.render(QUESTION)
    _, chunks = answer(engine, params=PLAIN_GREEDY)
    generated = [c.token_id for c in chunks[:-1]]
    assert len(generated) >= 2
    logits = engine.score(ids + generated)
    assert logits.shape == (len(ids) + len(generated), engine.info.vocab_size) and logits.dtype == np.float32
    picks = logits[len(ids) - 1 : -1].argmax(axis=1).tolist()
    assert picks == generated
    if chunks[-1].finish_reason == "stop":  # the stop token the stream did not show
        assert int(logits[-1].argmax()) in engine.tokenizer.stop_ids


def test_forward_in_pieces_equals_score_and_leaves_a_reusable_prefix(engine):
    ids, _ = engine.render(QUESTION)
    whole = engine.score(ids)
    assert len(ids) - 3 > 32
    head = engine.forward(ids[:3], 0, all_logits=True)
    tail = engine.forward(np.asarray(ids[3:], np.int32), 3, all_logits=True)  # two GEMM chunks
    assert np.array_equal(np.concatenate([head, tail]), whole)
    last = engine.forward(ids[-1:], len(ids) - 1)  # rewrite the last position: same logits
    assert last.shape == (engine.info.vocab_size,) and np.array_equal(last, whole[-1])
    # the copy is the caller's: later calls do not change it
    engine.forward(ids[:3], 0)
    assert np.array_equal(last, whole[-1])
    # the KV cache holds what forward ran: a stream on the same prompt reuses it
    engine.forward(ids, 0)
    _, chunks = answer(engine, params=SamplingParams(temperature=0, max_tokens=1))
    assert chunks[-1].cached_tokens == len(ids) - 1


def test_forward_refusals(engine):
    engine.reset()
    engine.forward([1, 2, 3], 0)
    with pytest.raises(ValueError, match="pos"):
        engine.forward([4], 5)  # positions 3, 4 were never computed
    with pytest.raises(ValueError, match="token ids"):
        engine.forward([engine.info.vocab_size], 3)
    with pytest.raises(ValueError, match="non-empty"):
        engine.forward([], 0)
    with pytest.raises(ValueError, match="non-empty"):
        engine.forward([[1, 2]], 0)
    with pytest.raises(ContextOverflowError) as err:
        engine.forward([1] * engine.n_ctx, 3)
    assert err.value.n_ctx == engine.n_ctx
    busy = engine.stream(QUESTION, GREEDY)
    next(busy)
    with pytest.raises(EngineBusyError):
        engine.score([1, 2])
    busy.close()
    assert engine.score([1, 2]).shape == (2, engine.info.vocab_size)


@pytest.mark.parametrize(
    "params", [PLAIN_GREEDY, SamplingParams(temperature=0.8, max_tokens=16, seed=7)], ids=["greedy", "seeded"]
)
def test_generate_tokens_yields_the_ids_the_stream_puts_in_its_chunks(engine, params):
    engine.reset()
    ids, _ = engine.render(QUESTION)
    streamed = [c.token_id for c in engine.stream_tokens(ids, params)][:-1]
    engine.reset()
    generated = list(engine.generate_tokens(ids, params))
    assert generated == streamed and generated
    assert not set(generated) & engine.tokenizer.stop_ids
    # the generator holds the engine like a stream does, and cancel stops it the same way
    steps = engine.generate_tokens(ids, params)
    next(steps)
    with pytest.raises(EngineBusyError):
        engine.stream(QUESTION)
    steps.close()
    engine.reset()
    n_prompt_chunks = -(-len(ids) // 32)
    assert len(list(engine.generate_tokens(ids, params, cancel=CancelAfter(n_prompt_chunks + 2)))) == 3
    assert list(engine.generate_tokens(ids, params, cancel=CancelAfter(0))) == []


# -- the cache parameters -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 0.1M-parameter random Llama (tmac_core.synth): repacks in well under a second."""
    from tmac_core.models import ARCHITECTURES
    from tmac_core.synth import SynthSpec, write_synthetic

    config = ARCHITECTURES["llama"].config(
        dim=64, hidden_dim=128, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, vocab_size=320, n_ctx_train=4096
    )
    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    write_synthetic(path, SynthSpec(config, weight_type="q8_0", seed=5))
    return path


def cached_files(folder):
    """{name: mtime} of the cache files in `folder` (a rewrite changes the mtime)."""
    return {f.name: f.stat().st_mtime_ns for f in folder.glob("*.tmacw")}


def load_tiny(path, **kw):
    e = Engine.load(path, bits=4, n_ctx=64, **kw)
    hit = e.info.cache_hit
    e.close()
    return hit


def test_cache_dir_none_means_the_default_folder_and_a_path_means_that_folder(tiny_model, tmp_path, monkeypatch):
    default, chosen = tmp_path / "default", tmp_path / "chosen"
    monkeypatch.setenv("TMAC_CACHE_DIR", str(default))  # cache.default_cache_dir() reads it
    assert not load_tiny(tiny_model) and len(cached_files(default)) == 1
    assert load_tiny(tiny_model, cache_dir=None)
    assert not load_tiny(tiny_model, cache_dir=chosen) and cached_files(chosen).keys() == cached_files(default).keys()
    assert load_tiny(tiny_model, cache_dir=chosen)


def test_use_cache_false_reads_and_writes_no_cache_file(tiny_model, tmp_path, monkeypatch):
    default, chosen = tmp_path / "default", tmp_path / "chosen"
    monkeypatch.setenv("TMAC_CACHE_DIR", str(default))
    load_tiny(tiny_model)
    load_tiny(tiny_model, cache_dir=chosen)
    before = cached_files(default), cached_files(chosen)
    assert len(before[0]) == len(before[1]) == 1
    # both folders hold a hit: not taking it shows no read, the unchanged files show no write
    assert not load_tiny(tiny_model, use_cache=False)
    assert not load_tiny(tiny_model, cache_dir=chosen, use_cache=False)
    assert (cached_files(default), cached_files(chosen)) == before


def test_cache_dir_refuses_the_old_boolean_switch(tiny_model):
    for value in (False, True):
        with pytest.raises(TypeError, match="use_cache"):
            Engine.load(tiny_model, bits=4, cache_dir=value)


def test_a_stream_dropped_before_its_first_step_leaves_the_engine_free(engine):
    import gc

    ids, _ = engine.render(QUESTION)
    for make in (lambda: engine.stream_tokens(ids, GREEDY), lambda: engine.generate_tokens(ids, GREEDY)):
        stream = make()
        del stream
        gc.collect()
        again = engine.stream_tokens(ids, SamplingParams(temperature=0.0, max_tokens=2))  # not EngineBusyError
        assert list(again)[-1].finish_reason in ("length", "stop")
    closed = engine.stream_tokens(ids, GREEDY)
    next(closed)
    closed.close()
    assert list(engine.stream_tokens(ids, SamplingParams(temperature=0.0, max_tokens=1)))


@pytest.mark.parametrize("bad", [[-1], [49152], [1, 2, 10**9], [1.5], [True]])
def test_token_ids_outside_the_vocabulary_are_refused_before_any_work(engine, bad):
    with pytest.raises(ValueError, match="token ids"):
        engine.stream_tokens(bad)
    assert list(engine.stream_tokens([1, 2], SamplingParams(temperature=0.0, max_tokens=1)))  # not left busy
