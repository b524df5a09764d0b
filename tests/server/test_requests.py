"""Request checks and stop sequences, without a model (fast)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.settings import SCHEMA_VERSION, settings_from_dict
from tmac_core.server.backend import ModelCard
from tmac_core.server.openai_api import ApiError, parse_request
from tmac_core.server.stops import StopMatcher

CARD = ModelCard(id="m", name="M", n_ctx=512, bits=None, bits_per_weight=4.5, tier="generic", threads=1, created=0)
MESSAGES = [{"role": "user", "content": "hi"}]


def test_defaults_follow_openai():
    req = parse_request({"model": "m", "messages": MESSAGES}, CARD, chat=True)
    assert (req.params.temperature, req.params.top_p, req.params.max_tokens) == (1.0, 1.0, 512)
    assert not req.stream and req.stops == () and req.messages == ({"role": "user", "content": "hi"},)
    assert parse_request({"model": "m", "prompt": "x"}, CARD, chat=False).params.max_tokens == 16


def test_content_parts_developer_role_and_negative_seed():
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
        "seed": -1,
        "max_completion_tokens": 5,
    }
    req = parse_request(body, CARD, chat=True)
    assert req.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"})
    assert req.params.seed == 2**64 - 1 and req.params.max_tokens == 5


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": 1}}, "stream_options"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ],
)
def test_refused_with_the_parameter_named(extra, param):
    with pytest.raises(ApiError) as caught:
        parse_request({"model": "m", "messages": MESSAGES, **extra}, CARD, chat=True)
    assert caught.value.status == 400 and caught.value.param == param


def test_stop_split_across_chunks_is_held_back():
    stops = StopMatcher(("Paris",))
    assert stops.feed("The capital is Pa") == ("The capital is ", False)
    assert stops.feed("ris.") == ("", True)
    stops = StopMatcher(("\n\n",))
    assert stops.feed("a\n") == ("a", False)
    assert stops.feed("b") == ("\nb", False)
    assert stops.flush() == ""


@given(st.lists(st.text(alphabet="ab\n", max_size=4), max_size=12), st.sampled_from(["ab", "\n\n", "bba"]))
def test_stop_matcher_equals_cutting_the_whole_text(parts, stop):
    stops, sent, hit = StopMatcher((stop,)), [], False
    for part in parts:
        text, hit = stops.feed(part)
        sent.append(text)
        if hit:
            break
    if not hit:
        sent.append(stops.flush())
    whole = "".join(parts)
    assert "".join(sent) == (whole[: whole.index(stop)] if stop in whole else whole)


def test_settings_of_schema_5_start_with_the_server_off():
    result = settings_from_dict({"schema_version": 5, "theme": "dark"})
    settings = result.settings
    assert not result.problems and SCHEMA_VERSION >= 6
    assert (settings.server_enabled, settings.server_port, settings.server_api_key, settings.server_lan) == (
        False,
        8080,
        None,
        False,
    )
    bad = settings_from_dict({"schema_version": 6, "server_port": 70000, "server_api_key": "has space"})
    assert bad.settings.server_port == 8080 and bad.settings.server_api_key is None and len(bad.problems) == 2
