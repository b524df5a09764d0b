"""Fitting a chat into the context renders the prompt once per turn: fit_prompt on its own
(exact counts, fewest turns dropped, few renders), then the engine process's Generate on the
real embedded model, counting every chat-template render."""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.chat.trim import fit_prompt, split_into_turns
from app.workers.engine_host import EngineHost
from app.workers.protocol import ChatLine, ChunkMsg, Failed, Generate, Trimmed, decode_reply
from tests.app.live_engine import engine_cache_dir  # noqa: F401  (fixture)
from tmac_core.sampling import SamplingParams


@dataclass(frozen=True)
class Msg:
    role: str
    content: str


class CountingRender:
    """A stand-in chat template: 3 tokens per message plus its words, 2 for the generation prompt."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[Msg]) -> list[int]:
        self.calls += 1
        return [0] * (2 + sum(3 + len(m.content.split()) for m in messages))


def _history(spec: list[tuple[str, int]]) -> list[Msg]:
    return [Msg("system", "be brief")] + [Msg(role, "w " * n) for role, n in spec]


def _words(message: Msg) -> int:
    return 3 + len(message.content.split())  # exact: what CountingRender adds per message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 40)), min_size=2, max_size=40),
    st.integers(20, 400),
    st.integers(1, 100),
)
def test_trimming_with_slack_frees_the_slack_and_drops_no_more(spec, budget, slack):
    history = _history(spec)
    fitted = fit_prompt(history, CountingRender(), len, budget, _words, slack=slack)
    system, turns = split_into_turns(history)
    drop = len(turns) - len(split_into_turns(fitted.kept)[1])
    if drop == 0:
        assert fitted.fits or len(turns) <= 1  # nothing to trim: the slack is not taken
    elif drop < len(turns) - 1:
        assert fitted.tokens <= budget - slack
        kept_one_more = system + [m for turn in turns[drop - 1 :] for m in turn]
        assert len(CountingRender()(kept_one_more)) > budget - slack, "dropped more turns than the slack needs"


def test_keep_from_reuses_the_previous_start_while_it_fits():
    history = _history([("user", 30), ("assistant", 30)] * 6 + [("user", 2)])
    first = fit_prompt(history, CountingRender(), len, 150, _words, slack=40)
    dropped_turns = len(split_into_turns(first.dropped)[1])
    assert first.dropped and first.tokens <= 110
    grown = history + [Msg("assistant", "w " * 10), Msg("user", "w " * 3)]
    again = fit_prompt(grown, CountingRender(), len, 150, _words, slack=40, keep_from=dropped_turns)
    assert again.dropped == first.dropped and again.fits  # the same start: the cached prefix survives
    too_long = grown + [Msg("assistant", "w " * 60), Msg("user", "w " * 3)]
    moved = fit_prompt(too_long, CountingRender(), len, 150, _words, slack=40, keep_from=dropped_turns)
    assert len(moved.dropped) > len(first.dropped) and moved.tokens <= 110  # a new step, freeing the slack again


def test_a_history_that_fits_is_rendered_once():
    render = CountingRender()
    history = _history([("user", 5), ("assistant", 9), ("user", 2)])
    fitted = fit_prompt(history, render, len, 100, _words)
    assert render.calls == 1 and fitted.kept == history and fitted.dropped == [] and fitted.fits
    assert fitted.tokens == len(fitted.prompt) == 2 + (3 + 2) + (3 + 5) + (3 + 9) + (3 + 2)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 40)), max_size=40),
    st.integers(0, 400),
    st.integers(-3, 6),
)
def test_the_fewest_oldest_turns_are_dropped(spec, budget, estimate_error):
    history = _history(spec)
    render = CountingRender()
    fitted = fit_prompt(history, render, len, budget, lambda m: max(0, _words(m) + estimate_error))
    system, turns = split_into_turns(history)
    drop = len(turns) - len(split_into_turns(fitted.kept)[1])
    assert fitted.dropped + fitted.kept[1:] == history[1:] and fitted.kept[0] is history[0]
    assert fitted.prompt == CountingRender()(fitted.kept) and fitted.tokens == len(fitted.prompt)
    if drop:
        kept_one_more = system + [m for turn in turns[drop - 1 :] for m in turn]
        assert len(CountingRender()(kept_one_more)) > budget, "dropped more turns than needed"
        assert fitted.kept[1].role == "user"
    assert fitted.fits == (fitted.tokens <= budget)
    if not fitted.fits:
        assert drop == max(len(turns) - 1, 0), "an overflow only once all but the newest turn are dropped"
    if estimate_error == 0:  # an exact estimate: the whole chat, the guess, and the turn before it
        assert render.calls <= 3


# ---- the engine process's path, on the real model ------------------------------------------------


@pytest.fixture(scope="module")
def engine(engine_cache_dir):  # noqa: F811
    from tmac_core import Engine

    engine = Engine.load("default", bits=4, n_ctx=256, cache_dir=engine_cache_dir)
    yield engine
    engine.close()


def _generate(engine, messages: list[dict], fit: bool = True, max_tokens: int = 4) -> tuple[int, list]:
    """Run one Generate through EngineHost; returns (chat-template renders, replies)."""
    window_end, engine_end = multiprocessing.Pipe(duplex=True)
    host = EngineHost(engine_end, threading.Event())
    host.engine = engine
    tokenizer = engine.tokenizer
    original = tokenizer.apply_chat_template
    calls = []
    tokenizer.apply_chat_template = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    try:
        lines = tuple(ChatLine(m["role"], m["content"]) for m in messages)
        host.generate(Generate(1, lines, SamplingParams(temperature=0.0, max_tokens=max_tokens), fit))
    finally:
        del tokenizer.apply_chat_template
    replies = []
    while window_end.poll():
        replies.append(decode_reply(window_end.recv_bytes()))
    window_end.close()
    engine_end.close()
    return len(calls), replies


def _long_chat(turns: int) -> list[dict]:
    filler = "This is an old message about gardening and tomatoes. " * 4
    messages = [{"role": "system", "content": "You are brief."}]
    for turn in range(turns):
        messages += [
            {"role": "user", "content": f"Question {turn}: {filler}"},
            {"role": "assistant", "content": f"Answer {turn}: {filler}"},
        ]
    return messages + [{"role": "user", "content": "What is 2 + 2?"}]


def test_a_fitting_turn_renders_the_prompt_once(engine):
    messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Say hi."}]
    for fit in (True, False):
        renders, replies = _generate(engine, messages, fit=fit)
        assert renders == 1, f"fit={fit}: the prompt was rendered {renders} times"
        assert all(isinstance(r, ChunkMsg) for r in replies) and replies[-1].chunk.finish_reason is not None
        assert replies[-1].chunk.prompt_tokens == engine.count_tokens(messages)


def test_a_trimmed_turn_renders_a_few_times_and_generates_from_the_fitting_ids(engine):
    messages = _long_chat(turns=12)
    renders, replies = _generate(engine, messages)
    trimmed, *chunks = replies
    assert isinstance(trimmed, Trimmed) and trimmed.dropped_messages >= 2 and trimmed.dropped_messages % 2 == 0
    assert not any(isinstance(r, Failed) for r in chunks) and chunks[-1].chunk.finish_reason is not None
    assert chunks[-1].chunk.prompt_tokens == trimmed.prompt_tokens <= 256 - 4
    # One render of the whole chat, the estimate's guess, and a turn either side of it (measured: 3);
    # generation renders nothing more.
    assert 2 <= renders <= 4, renders
    kept = [messages[0]] + messages[1 + trimmed.dropped_messages :]
    assert engine.count_tokens(kept) == trimmed.prompt_tokens
    # Trimming frees a quarter of the context (so the next turns keep the cached prefix), and no more.
    assert trimmed.prompt_tokens <= 256 - 4 - 256 // 4
    one_more = [messages[0]] + messages[1 + trimmed.dropped_messages - 2 :]
    assert engine.count_tokens(one_more) > 256 - 4 - 256 // 4, "trimming dropped more turns than it had to"


def test_the_next_turn_after_trimming_keeps_the_same_start_and_reuses_the_cache(engine):
    """Past the context, every turn used to drop one more old turn, so the prompt's start changed
    and the engine read the whole prompt again (5-6 s a turn). Now the next turns keep the start
    that the trim chose while they fit, and the engine's cached prefix is reused."""
    window_end, engine_end = multiprocessing.Pipe(duplex=True)
    host = EngineHost(engine_end, threading.Event())
    host.engine = engine
    messages = [ChatLine(m["role"], m["content"]) for m in _long_chat(turns=12)]
    replies_per_turn = []
    for turn in range(3):
        host.generate(Generate(turn + 1, tuple(messages), SamplingParams(temperature=0.0, max_tokens=4), True))
        replies = []
        while window_end.poll():
            replies.append(decode_reply(window_end.recv_bytes()))
        replies_per_turn.append(replies)
        text = "".join(r.chunk.text for r in replies if isinstance(r, ChunkMsg))
        messages += [ChatLine("assistant", text), ChatLine("user", f"And {turn}?")]
    window_end.close()
    engine_end.close()
    first_trim = next(r for r in replies_per_turn[0] if isinstance(r, Trimmed))
    for replies in replies_per_turn[1:]:
        trims = [r for r in replies if isinstance(r, Trimmed)]
        assert trims and trims[0].dropped_messages == first_trim.dropped_messages, "the start moved"
        last = [r for r in replies if isinstance(r, ChunkMsg)][-1].chunk
        assert last.cached_tokens > last.prompt_tokens // 2, (last.cached_tokens, last.prompt_tokens)


def test_messages_longer_than_any_prompt_fail_as_a_context_overflow_with_counts(engine):
    """A pasted megabyte is a prompt that does not fit, told in tokens: not a chat template
    'refused by the sandbox', and not a fallback template's failure."""
    huge = "All work and no play makes Jack a dull boy. " * 30_000  # 1.3 M characters
    _renders, replies = _generate(engine, [{"role": "user", "content": huge}])
    (failed,) = replies
    assert isinstance(failed, Failed) and failed.kind == "context_overflow"
    assert "tokens" in failed.message and "holds 256" in failed.message
    assert "sandbox" not in failed.message and "template" not in failed.message


def test_an_old_huge_message_is_trimmed_away_like_any_other(engine):
    messages = [
        {"role": "user", "content": "x " * 700_000},
        {"role": "assistant", "content": "Too long."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    _renders, replies = _generate(engine, messages)
    trimmed, *chunks = replies
    assert isinstance(trimmed, Trimmed) and trimmed.dropped_messages == 2
    assert not any(isinstance(r, Failed) for r in chunks) and chunks[-1].chunk.finish_reason is not None
