"""The real `openai` client against `tmac_core serve`'s server on the embedded model."""

from __future__ import annotations

import pytest

from tests.server.conftest import MODEL_ID

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(serve):
    openai = pytest.importorskip("openai")
    server = serve()
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def test_lists_the_loaded_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_ID]
    assert models[0].model_extra["tmac"]["n_ctx"] == 512


def test_chat_answers_paris_with_usage_and_speed(client):
    answer = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, temperature=0, max_tokens=16)
    choice = answer.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    speed = answer.model_extra["tmac"]
    assert speed["decode_tok_s"] > 0 and speed["threads"] >= 1 and speed["tier"]


def test_streamed_chat_answers_paris_then_usage(client):
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=QUESTION,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == []  # the usage-only chunk comes last
    assert all(c.usage is None for c in chunks[:-1])
    # the same greedy answer streamed and whole, with the same counts
    whole = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, temperature=0, max_tokens=16)
    assert whole.choices[0].message.content == text
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_completion_continues_text_with_max_tokens(client):
    answer = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert answer.object == "text_completion"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 4
    assert answer.choices[0].text.strip()
    streamed = client.completions.create(
        model=MODEL_ID, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == answer.choices[0].text


def test_stop_sequence_ends_the_answer_before_it(client):
    full = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, temperature=0, max_tokens=16)
    text = full.choices[0].message.content
    assert "Paris" in text
    cut = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, temperature=0, max_tokens=16, stop=["Paris"]
    )
    assert cut.choices[0].message.content == text[: text.index("Paris")]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, temperature=0, max_tokens=16, stop="Paris", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut.choices[0].message.content


def test_seed_reproduces_a_sampled_answer(client):
    ask = dict(
        model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a word."}], temperature=1.0, max_tokens=12
    )
    first = client.chat.completions.create(seed=1234, **ask).choices[0].message.content
    second = client.chat.completions.create(seed=1234, **ask).choices[0].message.content
    assert first == second
    others = {client.chat.completions.create(seed=s, **ask).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {first}) > 1  # the seed, not greedy decoding, made them equal
