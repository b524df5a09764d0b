"""Markdown/JSON export of a conversation, and fitting a history into a token budget by whole turns."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from app.chat.export import to_json, to_markdown
from app.chat.store import AnswerStats, ChatStore
from app.chat.trim import fit_history, split_into_turns


def _conversation(tmp_path):
    chats = ChatStore(tmp_path / "c.sqlite3")
    conversation = chats.create_conversation(
        "Eggs", model_id="smollm2-135m-instruct", bits=4, system_prompt="Be brief."
    )
    chats.add_message(conversation.id, "user", "How long to boil an egg?")
    answer = chats.begin_assistant_message(conversation.id)
    chats.append_partial(answer, "About **7 minutes**.")
    chats.finish_message(
        answer, AnswerStats(generated_tokens=9, decode_tok_s=31.25, ttft_s=0.12, threads=2, bits=4, tier="avx2")
    )
    chats.add_message(conversation.id, "user", "And soft?")
    cut = chats.begin_assistant_message(conversation.id)
    chats.append_partial(cut, "Abou")
    chats.finish_message(cut, AnswerStats(), state="partial")
    result = chats.get_conversation(conversation.id), chats.list_messages(conversation.id)
    chats.close()
    return result


def test_markdown_export(tmp_path):
    conversation, messages = _conversation(tmp_path)
    text = to_markdown(conversation, messages)
    assert text.startswith("# Eggs\n")
    assert "## System prompt\n\nBe brief." in text
    assert "## You\n\nHow long to boil an egg?" in text
    assert "About **7 minutes**." in text
    assert "9 tokens · 31.2 tok/s · TTFT 0.12 s · 2 threads · 4-bit · avx2" in text
    assert "interrupted" in text
    assert "tok/s" not in to_markdown(conversation, messages, include_stats=False)


def test_json_export_includes_stats_and_states(tmp_path):
    conversation, messages = _conversation(tmp_path)
    document = json.loads(to_json(conversation, messages))
    assert document["format"] == "tmac-chat-conversation" and document["format_version"] == 1
    assert document["conversation"]["title"] == "Eggs"
    assert [m["role"] for m in document["messages"]] == ["user", "assistant", "user", "assistant"]
    assert document["messages"][1]["stats"]["decode_tok_s"] == 31.25
    assert document["messages"][3]["state"] == "partial"


@dataclass
class Msg:
    role: str
    content: str


def _tokens(message: Msg) -> int:
    return len(message.content.split()) + 4  # +4: per-message template overhead


def _history():
    return [
        Msg("system", "be nice"),
        Msg("user", "one two"),
        Msg("assistant", "three four five"),
        Msg("user", "six"),
        Msg("assistant", "seven eight"),
        Msg("user", "nine ten eleven"),
    ]


def test_everything_fits():
    history = _history()
    fitted = fit_history(history, _tokens, 1000)
    assert fitted.kept == history and fitted.dropped == [] and fitted.fits


def test_drops_oldest_whole_turns_and_keeps_system():
    history = _history()
    # system 6, turn1 6+7=13, turn2 5+6=11, turn3 7 → 37 total
    fitted = fit_history(history, _tokens, 25)
    assert fitted.kept == [history[0], *history[3:]]
    assert fitted.dropped == history[1:3]
    assert fitted.tokens == 24 and fitted.fits


def test_newest_turn_kept_even_when_too_big():
    history = _history()
    fitted = fit_history(history, _tokens, 8)
    assert fitted.kept == [history[0], history[5]] and not fitted.fits
    assert fitted.dropped == history[1:5]


def test_history_starting_with_assistant_is_one_turn():
    system, turns = split_into_turns([Msg("assistant", "hello"), Msg("user", "hi")])
    assert system == [] and [len(t) for t in turns] == [1, 1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 30)), max_size=20), st.integers(0, 200)
)
def test_trim_invariants(spec, budget):
    history = [Msg("system", "s")] + [Msg(role, "w " * n) for role, n in spec]
    fitted = fit_history(history, _tokens, budget)
    assert fitted.kept[0] is history[0]
    assert fitted.dropped + fitted.kept[1:] == history[1:]  # a prefix is dropped, the rest kept in order
    assert fitted.tokens == sum(_tokens(m) for m in fitted.kept)
    if len(fitted.kept) > 2 or (len(fitted.kept) == 2 and fitted.dropped):
        kept_turns = split_into_turns(fitted.kept)[1]
        assert fitted.fits or len(kept_turns) == 1
    if fitted.dropped:
        assert fitted.kept[1].role == "user"  # whole turns only
