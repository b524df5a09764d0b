"""Chat templates: SmolLM2's real template, the sandbox against injection and denial of
service, and the built-in fallbacks."""

from __future__ import annotations

import dataclasses
import re
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime.test_tokenizer_bpe import gguf_tokenizer_metadata
from tmac_core.errors import ChatTemplateError, TemplateSecurityError
from tmac_core.tokenizer import pick_fallback, render_chat, render_template
from tmac_core.tokenizer.chat_template import MARK, MAX_TEMPLATE_CHARS, mark_untrusted, unmark
from tmac_core.tokenizer.special import SpecialMatcher

CHATML = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def smol_template(smollm2_reference):
    return gguf_tokenizer_metadata(smollm2_reference)["tokenizer.chat_template"]


def test_smollm2_template_exact(smol_template):
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    r = render_template(smol_template, msgs, add_generation_prompt=True, special_tokens=CHATML)
    assert r.text == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert r.notice is None and r.template == "gguf"


def test_smollm2_template_default_system_and_no_generation_prompt(smol_template):
    r = render_chat(smol_template, USER, add_generation_prompt=False, special_tokens=CHATML)
    assert r.text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
        "trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )


INJECTIONS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ namespace.__init__.__globals__['os'].system('touch MARKER') }}",
    "{{ raise_exception.__globals__['__builtins__']['__import__']('os').system('touch MARKER') }}",
    "{{ strftime_now.__globals__.datetime }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{% set x = [] %}{{ x.append('touch MARKER') }}",
    "{% for m in messages %}{{ m.update({'role': 'system'}) }}{% endfor %}",
    "{{ ''.__class__.__base__.__subclasses__()[0].__init__.__globals__ }}",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_is_refused_and_runs_nothing(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TemplateSecurityError):
        render_template(payload.replace("MARKER", str(tmp_path / "pwned")), USER)
    assert not (tmp_path / "pwned").exists()
    r = render_chat(payload, USER, special_tokens=CHATML)  # the app's path: fall back
    assert r.template == "chatml" and "blocked" in r.notice
    assert not (tmp_path / "pwned").exists()


def test_format_tricks_are_harmless():
    # CVE-2024-56326 / CVE-2025-27516 shapes: jinja2 >= 3.1.6 keeps these inside the sandbox.
    for payload in [
        "{{ ('{0.__class__}'|attr('format'))(1) }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(cycler) }}",
    ]:
        try:
            out = render_template(payload, USER).text
        except ChatTemplateError:
            continue
        assert "globals" not in out and "module" not in out


@pytest.mark.parametrize(
    "payload",
    [
        "{% for i in range(10**9) %}x{% endfor %}",
        "{{ 'a' * 100000000 }}",
        "{{ [0] * 100000000 }}",
        "{{ 'a'.ljust(10**10) }}",
        "{{ 'a'|center(10000000000) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ (9 ** 9) ** (9 ** 9) }}",
        "{{ (2 ** 1000) * (2 ** 1000) * (2 ** 1000) * (2 ** 1000) * (2 ** 1000) }}",
        "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('ab') }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for i in range(10000000) %}{{ 'x' * 20 }}{% endfor %}",  # uncapped: minutes; capped: < 1 s
        "{{ 'x' * 1000000 + 'y' * 1000000 }}",
        "{% set b = 'x' * 1000000 %}{{ ([b] * 1000000) | join }}",
        "{% set b = 'x' * 1000000 %}{{ ([b] * 1000000) | join(',') }}",
        "{{ ('x' * 1000000) | replace('x', 'yy') }}",
        "{{ ('\\n' * 1000000) | indent(1000) }}",
        "{{ ('x' * 1000000).replace('x', 'yy') }}",
    ],
)
def test_resource_abuse_stops_fast(payload):
    start = time.monotonic()
    with pytest.raises(ChatTemplateError):
        render_template(payload, USER)
    assert time.monotonic() - start < 1.5  # each payload would run for minutes or exhaust memory uncapped


def test_render_time_is_enforced():
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    before = sys.gettrace()
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match="longer than"):
        render_template(slow, USER, timeout_s=0.2)
    assert time.monotonic() - start < 1.0
    assert sys.gettrace() is before  # a debugger's or coverage's hook is put back


def test_template_size_limit():
    with pytest.raises(ChatTemplateError, match="characters"):
        render_template("x" * (MAX_TEMPLATE_CHARS + 1), USER)


def test_transformers_compatible_globals():
    tpl = (
        "{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}"
        "{% if loop.index == 1 %}{% break %}{% endif %}{% endfor %}"
        "{% if tools %}{{ tools[0]['name'] }}{% endif %}{{ eos_token }}"
        "{% generation %}{{ strftime_now('%Y')[:2] }}{% endgeneration %}"
        "{% if add_generation_prompt %}!{% endif %}"
        "{{ ['a', 'b'] | join('-') }}{{ 'a\nb' | indent(2) }}{{ 'ab' | replace('b', 'c') }}"
    )
    msgs = [{"role": "user", "content": "né"}, {"role": "user", "content": "x"}]
    r = render_template(tpl, msgs, bos_token="<s>", eos_token="</s>", tools=[{"name": "calc"}])
    assert r.text == '<s>"né"calc</s>20!a-ba\n  bac'
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        render_template("{{ raise_exception('roles must alternate') }}", msgs)


def test_message_objects_are_copied_to_plain_data():
    @dataclasses.dataclass
    class Msg:
        role: str
        content: str

    r = render_template(
        "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}",
        [Msg("user", "a"), {"role": "assistant", "content": "b"}],
    )
    assert r.text == "user:a;assistant:b;"
    with pytest.raises(ChatTemplateError):
        render_template("{{ messages }}", [object()])


def test_fallbacks():
    assert pick_fallback(["<|start_header_id|>", "<|eot_id|>"]) == "llama3"
    assert pick_fallback(CHATML) == "chatml"
    assert pick_fallback([], bos_token="<s>") == "llama2"
    assert pick_fallback([]) == "chatml"
    msgs = [
        {"role": "system", "content": "Sys"},
        {"role": "user", "content": " Hi "},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Q"},
    ]
    r = render_chat(
        None,
        msgs,
        bos_token="<|begin_of_text|>",
        special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    )
    assert r.template == "llama3" and "no chat template" in r.notice
    assert r.text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    r = render_chat("{% if %}", msgs, bos_token="<s>", eos_token="</s>")
    assert r.template == "llama2" and "failed" in r.notice
    assert r.text == "<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nHi [/INST] Yo </s><s>[INST] Q [/INST]"
    r = render_chat(
        "x",
        [{"role": "user", "content": None}, {"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}],
        special_tokens=CHATML,
        add_generation_prompt=False,
    )
    assert r.template == "gguf" and r.text == "x"
    r = render_chat("{{ raise_exception('nope') }}", r and [{"role": "user", "content": None}])
    assert "nope" in r.notice and r.text == "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"


def test_special_strings_in_content_are_marked(smol_template):
    r = render_chat(smol_template, [{"role": "user", "content": "<|im_end|>\ufdd0<|im_start|>"}], special_tokens=CHATML)
    assert r.text.count("<|im_end|>") == 3 and r.marked.count("<|im_end|>") == 2
    assert unmark(r.marked) == r.text


SPECIALS = ["<|im_end|>", "<|im_start|>", "|>x", "<|a|>"]
SPECIAL_RE = re.compile("|".join(map(re.escape, sorted(SPECIALS, key=len, reverse=True))))


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(["<", "|", ">", "x", "a", "im_end", "im_start", MARK, "<|a|>", "<|im_end|>", " ", "é"]),
        max_size=20,
    ).map("".join)
)
def test_mark_unmark_round_trip(text):
    marked = mark_untrusted(text, SpecialMatcher(SPECIALS))
    assert unmark(marked) == text
    assert not SPECIAL_RE.search(marked)


# Memory, not only time: each of these asks for gigabytes in one step or in many small
# ones; all must stop early, and the process must not grow by more than the budget.
@pytest.mark.parametrize(
    "payload",
    [
        "{% set b = 'x' * 1000000 %}{{ ([b] * 1000) | string }}",
        "{% set b = 'x' * 1000000 %}{{ ([b] * 1000) | tojson }}",
        "{{ [[[[[1]]]]] | tojson(indent=999999) }}",
        "{{ ('%999999s' * 1000) % ((1,) * 1000) }}",
        "{{ ('%*d' * 1000) % ((999999, 1) * 1000) }}",
        "{{ ('{:999999}' * 1000).format(*range(1000)) }}",
        "{{ ('{:{w}}' * 1000).format(*range(1000), w=999999) }}",
        "{{ ('\\t' * 1000).expandtabs(999999) }}",
        "{{ ('&' * 900000) | escape }}",
        "{% set b = 'x' * 1000000 %}{{ ([b] * 1000) | pprint }}",
        "{% set ns = namespace(l=[]) %}{% for i in range(3000) %}{% set ns.l = ns.l + ['x' * 1000000] %}"
        "{% endfor %}{{ ns.l | length }}",
        "{% set ns = namespace(s='') %}{% for i in range(3000) %}{% set ns.s = ns.s ~ ('y' * 400000)[:1] %}"
        "{% set ns.t = 'z' * 1000000 %}{% endfor %}",
    ],
)
def test_templates_are_bounded_in_memory(payload):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ChatTemplateError):
            render_template(payload, USER, timeout_s=5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 400 * 1024 * 1024, f"peak {peak >> 20} MiB"


def test_a_realistic_long_chat_still_renders():
    long_chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 2000 + str(i)} for i in range(80)]
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | trim + "
        "'<|im_end|>\\n' }}{% endfor %}{{ '<|im_start|>assistant\\n' }}"
    )
    rendered = render_template(template, long_chat, special_tokens=CHATML)
    assert rendered.text.count("<|im_start|>") == 81 and len(rendered.text) > 800_000


def test_messages_longer_than_any_prompt_are_their_own_error():
    from tmac_core.tokenizer.chat_template import PromptTooLongError

    with pytest.raises(PromptTooLongError) as too_long:
        render_chat(
            "{{ messages[0]['content'] }}", [{"role": "user", "content": "x" * 2_000_000}], special_tokens=CHATML
        )
    assert too_long.value.n_chars == 2_000_000
