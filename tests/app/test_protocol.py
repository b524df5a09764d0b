"""The engine protocol: every message survives the JSON round trip, and bytes that are not a
valid message (garbage, truncated, unknown, mistyped, a pickle) are refused without running
anything, by the codec and by both ends of a real pipe."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pickle
import threading

import pytest

from app.workers.engine_host import EngineHost
from app.workers.protocol import (
    NOT_READY,
    CancelLoad,
    ChatLine,
    ChunkMsg,
    EngineState,
    Failed,
    Generate,
    Load,
    Loaded,
    LoadFailed,
    Progress,
    ProtocolError,
    SetThreads,
    Shutdown,
    Trimmed,
    decode_reply,
    decode_request,
    encode,
    error_kind,
)
from tests.app.live_engine import ANSWER_TIMEOUT_MS, LOAD_TIMEOUT_MS, ChunkLog, engine_cache_dir  # noqa: F401
from tmac_core.errors import ContextOverflowError, ModelFormatError, ModelLoadError
from tmac_core.sampling import SamplingParams
from tmac_core.types import Chunk, EngineInfo

CHUNK = Chunk(
    text="héllo",
    token_id=42,
    prompt_tokens=10,
    cached_tokens=3,
    generated_tokens=1,
    prompt_tok_s=120.5,
    decode_tok_s=0.0,
    ttft_s=0.25,
    elapsed_s=0.3,
    cpu_s=0.5,
    threads=2,
)
INFO = EngineInfo(
    name="SmolLM2",
    source="/m/model.gguf",
    arch="llama",
    n_params=134_515_008,
    bits=4,
    bits_per_weight=4.5,
    packed_bytes=75_000_000,
    kv_cache_bytes=11_796_480,
    n_ctx=512,
    n_ctx_train=8192,
    vocab_size=49152,
    n_layers=30,
    dim=576,
    tier="avx2",
    n_threads=2,
    chat_template="model",
    cache_hit=True,
    load_s=1.5,
)
REQUESTS = [
    Load(source="default", bits=4, n_ctx=512, n_threads=None, cache_dir="/tmp/c", source_sha256="ab" * 32),
    Load(source="/m/x.gguf", bits=2, n_ctx=None, n_threads=3, cache_dir=None, source_sha256=None),
    Generate(
        7,
        (ChatLine("system", "Be brief."), ChatLine("user", "Hi ✓")),
        SamplingParams(temperature=0.0, top_k=0, max_tokens=16, seed=2**63),
        True,
    ),
    Generate(8, (), SamplingParams(), False),
    Generate(9, (), SamplingParams(max_tokens=4), False, prompt="Once upon a time"),
    SetThreads(3),
    CancelLoad(),
    Shutdown(),
]
REPLIES = [
    Progress(0.5, "repacking to 4 bits"),
    Progress(0.5, "repacking to 4 bits", 3 << 30, 5 << 30, 41.5),
    Loaded(INFO),
    LoadFailed("model_format", "bad file"),
    ChunkMsg(7, CHUNK),
    ChunkMsg(7, dataclasses.replace(CHUNK, token_id=None, finish_reason="stop", notice="n")),
    Trimmed(7, 4, 200, 256),
    Failed(7, "context_overflow", "too long"),
]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_every_request_round_trips(message):
    data = encode(message)
    assert isinstance(data, bytes) and json.loads(data)["type"]
    again = decode_request(data)
    assert again == message
    if isinstance(message, Generate):
        assert type(again.params) is SamplingParams and type(again.messages[0] if again.messages else None) in (
            ChatLine,
            type(None),
        )


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_every_reply_round_trips(message):
    assert decode_reply(encode(message)) == message


def test_a_direction_only_decodes_its_own_messages():
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_request(encode(Progress(0.1, "x")))
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_reply(encode(Shutdown()))


def _altered(message, **changes) -> bytes:
    document = json.loads(encode(message))
    document.update(changes)
    return json.dumps(document).encode()


BAD_REPLIES = {
    "binary garbage": b"\x80\x04\xff\x00garbage",
    "empty": b"",
    "truncated": encode(ChunkMsg(1, CHUNK))[:-7],
    "not an object": b"[1, 2, 3]",
    "no type": b'{"request_id": 1}',
    "unknown type": b'{"type": "format_disk"}',
    "type not a string": b'{"type": ["chunk"]}',
    "missing field": b'{"type": "failed", "request_id": 1, "kind": "x"}',
    "unexpected field": _altered(Failed(1, "x", "y"), extra=1),
    "bool for int": _altered(Failed(1, "x", "y"), request_id=True),
    "string for float": _altered(Progress(0.5, "x"), fraction="0.5"),
    "float for int": _altered(Trimmed(1, 2, 3, 4), n_ctx=4.0),
    "huge int for float": _altered(Progress(0.5, "x"), fraction=10**400),
    "nested wrong type": _altered(ChunkMsg(1, CHUNK), chunk=dict(dataclasses.asdict(CHUNK), threads="2")),
    "nested missing field": _altered(Loaded(INFO), info={"name": "x"}),
    "nested not an object": _altered(Loaded(INFO), info="SmolLM2"),
    "deep nesting": b"[" * 100_000,
}


@pytest.mark.parametrize("data", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_malformed_bytes_are_a_protocol_error(data):
    with pytest.raises(ProtocolError):
        decode_reply(data)


def test_sampling_params_are_rebuilt_through_their_checks():
    good = Generate(1, (ChatLine("user", "hi"),), SamplingParams(), True)
    document = json.loads(encode(good))
    document["params"]["temperature"] = -1.0
    with pytest.raises(ProtocolError, match="temperature"):
        decode_request(json.dumps(document).encode())
    document["params"] = dict(json.loads(encode(good))["params"], seed="7")
    with pytest.raises(ProtocolError, match="seed"):
        decode_request(json.dumps(document).encode())
    document = json.loads(encode(good))
    document["messages"] = [{"role": "user", "content": 5}]
    with pytest.raises(ProtocolError, match="content"):
        decode_request(json.dumps(document).encode())


def test_a_plain_completion_prompt_is_type_checked():
    good = Generate(2, (), SamplingParams(), False, prompt="The sky is")
    document = json.loads(encode(good))
    assert document["prompt"] == "The sky is"
    document["prompt"] = ["The sky is"]
    with pytest.raises(ProtocolError, match="prompt"):
        decode_request(json.dumps(document).encode())
    # a completion is never also a chat: messages with a prompt are refused
    document = dict(json.loads(encode(good)), messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ProtocolError, match="plain completion"):
        decode_request(json.dumps(document).encode())


def test_a_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with pytest.raises(ProtocolError):
        decode_reply(pickle.dumps(Exploit()))
    with pytest.raises(ProtocolError):
        decode_request(pickle.dumps(("chunk", 1, CHUNK)))
    assert not marker.exists()


def test_errors_cross_as_stable_kinds():
    assert error_kind(ContextOverflowError(10, 8)) == "context_overflow"
    assert error_kind(ModelFormatError("f.gguf", "header", 0, "bad magic")) == "model_format"
    assert error_kind(ModelLoadError("missing")) == "model_load"
    assert error_kind(ValueError("bits")) == "invalid_argument"
    assert error_kind(MemoryError()) == "out_of_memory"
    assert error_kind(KeyError("x")) == "internal"


# ---- both ends of a real pipe -----------------------------------------------------------------


def _replies(conn, timeout: float = 30.0) -> list:
    replies = []
    while conn.poll(timeout):
        replies.append(decode_reply(conn.recv_bytes()))
        if isinstance(replies[-1], (Failed, LoadFailed, Loaded)):
            break
    return replies


def test_the_engine_host_skips_garbage_and_keeps_serving(caplog):
    window_end, engine_end = multiprocessing.Pipe(duplex=True)
    host = EngineHost(engine_end, threading.Event())
    runner = threading.Thread(target=host.run, daemon=True)
    runner.start()
    for data in (b"\x80\x04garbage", b'{"type": "chunk"', b'{"type": "rm_rf"}', pickle.dumps(("shutdown",))):
        window_end.send_bytes(data)
    window_end.send_bytes(encode(SetThreads(2)))  # before any model: logged and ignored
    window_end.send_bytes(encode(Generate(5, (ChatLine("user", "hi"),), SamplingParams(), True)))
    assert _replies(window_end) == [Failed(5, NOT_READY, "No model is loaded in the engine process.")]
    window_end.send_bytes(encode(Load("/nonexistent/model.gguf", 4, None, None, None, None)))
    (failed,) = _replies(window_end)
    assert isinstance(failed, LoadFailed) and failed.kind == ModelLoadError.kind and "model.gguf" in failed.message
    window_end.send_bytes(encode(Shutdown()))
    runner.join(10)
    assert not runner.is_alive()
    assert sum("malformed request" in record.getMessage() for record in caplog.records) == 4


def test_the_engine_client_skips_garbage_from_the_engine(qtbot, caplog):
    from app.workers.engine_client import EngineClient

    client = EngineClient()
    window_end, engine_end = multiprocessing.Pipe(duplex=True)
    client._conn = window_end  # the client's receiving path, fed by this test instead of a process
    client._set_state(EngineState.LOADING)
    progress, load_failures = [], []
    client.loadProgress.connect(lambda fraction, stage: progress.append((fraction, stage)))
    client.loadFailed.connect(lambda kind, message: load_failures.append((kind, message)))
    for data in BAD_REPLIES.values():
        engine_end.send_bytes(data)
    engine_end.send_bytes(pickle.dumps(("progress", 1.0, "pickled")))
    engine_end.send_bytes(encode(Progress(0.25, "reading the model file")))
    client._drain()
    assert progress == [(0.25, "reading the model file")] and load_failures == []
    assert sum("malformed message" in record.getMessage() for record in caplog.records) == len(BAD_REPLIES) + 1
    client._conn = None
    window_end.close()
    engine_end.close()


def test_the_engine_process_outlives_garbage_on_its_pipe(qtbot, engine_cache_dir):  # noqa: F811
    from app.workers.engine_client import EngineClient

    client = EngineClient(cache_dir=engine_cache_dir)
    try:
        with qtbot.waitSignal(client.loaded, timeout=LOAD_TIMEOUT_MS):
            client.load("default", 4, n_ctx=256)
        pid = client.pid
        client._conn.send_bytes(b"\x80\x04\x95garbage\x00")
        client._conn.send_bytes(pickle.dumps(("shutdown",)))
        log = ChunkLog().attach(client)
        request_id = client.generate(
            [{"role": "user", "content": "Say hi."}], SamplingParams(temperature=0.0, max_tokens=4)
        )
        qtbot.waitUntil(lambda: log.finished(request_id) or bool(log.failures), timeout=ANSWER_TIMEOUT_MS)
        assert not log.failures and not log.deaths and client.pid == pid and os.getpid() != pid
    finally:
        client.shutdown()


def test_the_engine_client_skips_load_replies_when_not_loading(qtbot, caplog):
    from app.workers.engine_client import EngineClient

    client = EngineClient()
    window_end, engine_end = multiprocessing.Pipe(duplex=True)
    client._conn = window_end
    loaded, load_failures = [], []
    client.loaded.connect(loaded.append)
    client.loadFailed.connect(lambda kind, message: load_failures.append(kind))
    for reply in (Loaded(INFO), LoadFailed("model_load", "x"), Progress(0.5, "x")):
        engine_end.send_bytes(encode(reply))
    client._drain()
    assert loaded == [] and load_failures == [] and client.info is None
    assert sum("not loading" in record.getMessage() for record in caplog.records) == 3
    client._conn = None
    window_end.close()
    engine_end.close()


def test_the_protocol_loads_neither_qt_nor_numpy():
    # Both processes import it; the window only decodes replies, which need no SamplingParams.
    from tests.test_boundaries import modules_loaded_by

    loaded = modules_loaded_by(
        "import app.workers.protocol as p\n"
        f"p.decode_reply({encode(ChunkMsg(1, CHUNK))!r})\np.decode_reply({encode(Loaded(INFO))!r})"
    )
    assert not {name for name in loaded if name.split(".")[0] in ("PySide6", "shiboken6", "numpy")}


def test_a_half_written_frame_never_blocks_the_window(qtbot):
    """An engine that hangs or dies in the middle of sending a reply leaves half a frame on the
    pipe; the window's drain must return at once and read the reply when the rest arrives."""
    import struct
    import threading

    from app.workers.engine_client import EngineClient

    client = EngineClient()
    window_end, engine_end = multiprocessing.Pipe(duplex=True)
    client._conn = window_end
    client._set_state(EngineState.LOADING)
    progress = []
    client.loadProgress.connect(lambda fraction, stage: progress.append((fraction, stage)))
    frame = encode(Progress(0.5, "repacking"))
    header = struct.pack("!i", len(frame))
    os.write(engine_end.fileno(), header + frame[:5])  # the engine stopped half way through
    drained = threading.Thread(target=client._drain, daemon=True)
    drained.start()
    drained.join(2.0)
    assert not drained.is_alive(), "the drain blocked on a half-written frame"
    assert progress == []
    os.write(engine_end.fileno(), frame[5:])
    client._drain()
    assert progress == [(0.5, "repacking")]
    client._conn = None
    window_end.close()
    engine_end.close()
