"""Continue after max tokens, in the engine process's code on the real model: the continuation is
the answer a larger max_tokens gives at temperature 0 (token for token), from the answer's own
tokens while the host still has them, from its text tokenized again otherwise, and the store
appends it to the same message."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from app.chat.errors import MessageStateError
from app.chat.records import COMPLETE, STREAMING, AnswerStats
from app.chat.store import ChatStore
from app.workers.engine_host import EngineHost
from app.workers.protocol import ChatLine, ChunkMsg, Generate, decode_reply
from tests.app.live_engine import engine_cache_dir  # noqa: F401  (fixture)
from tmac_core.sampling import SamplingParams

QUESTION = (ChatLine("user", "Write a long story about a dragon who learns to fly."),)
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.1}  # the penalty reads the history: it must match too


@pytest.fixture(scope="module")
def engine(engine_cache_dir):  # noqa: F811
    from tmac_core import Engine

    engine = Engine.load("default", bits=4, n_ctx=512, cache_dir=engine_cache_dir)
    yield engine
    engine.close()


class Host:
    """An EngineHost on one end of a real pipe, the replies read from the other."""

    def __init__(self, engine) -> None:
        self.window_end, engine_end = multiprocessing.Pipe(duplex=True)
        self.host = EngineHost(engine_end, threading.Event())
        self.host.engine = engine

    def generate(self, max_tokens: int, continue_text: str = "") -> list:
        params = SamplingParams(max_tokens=max_tokens, **GREEDY)
        self.host.generate(Generate(1, QUESTION, params, True, continue_text))
        chunks = []
        while self.window_end.poll():
            reply = decode_reply(self.window_end.recv_bytes())
            assert isinstance(reply, ChunkMsg), reply
            chunks.append(reply.chunk)
        assert chunks and chunks[-1].finish_reason is not None
        return chunks


def ids_and_text(chunks) -> tuple[list[int], str]:
    return [c.token_id for c in chunks if c.token_id is not None], "".join(c.text for c in chunks)


def test_a_continuation_is_what_a_larger_max_tokens_gives(engine):
    engine.reset()
    reference_ids, reference_text = ids_and_text(Host(engine).generate(24))
    assert len(reference_ids) == 24
    host = Host(engine)
    first = host.generate(10)
    assert first[-1].finish_reason == "length"
    first_ids, first_text = ids_and_text(first)
    more = host.generate(14, continue_text=first_text)
    more_ids, more_text = ids_and_text(more)
    assert first_ids + more_ids == reference_ids and first_text + more_text == reference_text
    # the engine went on from the cached answer: only its last token was read again
    assert more[-1].prompt_tokens - more[-1].cached_tokens == 1
    assert host.host.last_answer.ids == tuple(reference_ids) and host.host.last_answer.text == reference_text


def test_without_the_tokens_the_text_is_tokenized_again(engine):
    host = Host(engine)
    first_ids, first_text = ids_and_text(host.generate(6))
    host.host.last_answer = None  # as after a restart or another model: only the stored text is left
    more = host.generate(6, continue_text=first_text)
    assert more[-1].generated_tokens == 6 and ids_and_text(more)[1]
    assert host.host.last_answer.text == first_text + ids_and_text(more)[1]


def test_the_store_appends_the_continuation_to_the_same_message(tmp_path):
    with ChatStore(tmp_path / "chat.db") as store:
        chat = store.create_conversation("c")
        store.add_message(chat.id, "user", "hi")
        answer_id = store.begin_assistant_message(chat.id)
        store.append_partial(answer_id, "Once upon")
        store.finish_message(answer_id, AnswerStats(finish_reason="length"), COMPLETE)
        resumed = store.resume_assistant_message(answer_id)
        assert (resumed.state, resumed.content) == (STREAMING, "Once upon")
        with pytest.raises(MessageStateError):
            store.resume_assistant_message(answer_id)  # already streaming
        store.append_partial(answer_id, " a time")
        done = store.finish_message(answer_id, AnswerStats(finish_reason="stop"), COMPLETE)
        assert (done.id, done.content, done.state) == (answer_id, "Once upon a time", COMPLETE)
        assert [m.id for m in store.list_messages(chat.id)] == [answer_id - 1, answer_id]
        assert [h.message_id for h in store.search("time")] == [answer_id]
