"""Chat messages -> prompt text, with the model's Jinja template in a locked-down sandbox.

A GGUF file's `tokenizer.chat_template` is untrusted code (CVE-2024-34359 ran shell
commands from one). It is rendered only by jinja2's `ImmutableSandboxedEnvironment` with
the globals transformers exposes and nothing more, under limits on source size, render
time, output size, recursion and the size of strings the template builds. When there is
no template or it fails, a built-in one (ChatML, Llama-2 or Llama-3, picked by the
vocabulary's special tokens) is used and `RenderedChat.notice` says so. Message strings
are marked before rendering so the tokenizer can tell special-token text the template
wrote from the same text typed by a user. Pure Python: no Qt, no `app`, no tokenizer.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import functools
import json
import re
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from tmac_core.errors import ChatTemplateError, TemplateSecurityError
from tmac_core.tokenizer.special import MARK, SpecialMatcher

MAX_TEMPLATE_CHARS = 64 * 1024  # real templates are a few KiB; the largest known are ~20 KiB
MAX_OUTPUT_CHARS = 1024 * 1024  # also the cap for any one string a template builds
MAX_RENDER_BYTES = 128 * 1024 * 1024  # bytes of strings and containers one render may create in all
RENDER_TIMEOUT_S = 1.0
MAX_TEMPLATE_DEPTH = 64  # nested macro calls / template frames

# MARK (tokenizer/special.py) is a Unicode noncharacter inserted into special-token
# strings found in message text so they can no longer match. A literal MARK in the
# text is doubled, so unmark() is exact.
_UNMARK_RE = re.compile(MARK + MARK + "?")


@dataclasses.dataclass(frozen=True)
class RenderedChat:
    """One rendered prompt.

    Attributes:
        text: the prompt exactly as the template produced it (for display and logs).
        marked: the same text with MARKs inside special-token strings that came from
            message data; this is what `Tokenizer.encode_chat` reads.
        guarded: the special-token strings that were marked in message data.
        template: "gguf" for the model's own template, else the fallback's name.
        notice: None, or a sentence for the user saying why a fallback was used.
    """

    text: str
    marked: str
    guarded: frozenset[str]
    template: str
    notice: str | None = None


def unmark(text: str) -> str:
    """Remove the marks `mark_untrusted` inserted (a doubled MARK becomes one MARK)."""
    return _UNMARK_RE.sub(lambda m: MARK if len(m.group()) == 2 else "", text)


def mark_untrusted(text: str, special: SpecialMatcher) -> str:
    return special.mark(text)


# -- the sandbox -----------------------------------------------------------------------


class PromptTooLongError(ChatTemplateError):
    """The messages alone are longer than any prompt a template may render: not a template
    problem (no fallback would fit either). The engine turns it into ContextOverflowError
    with token counts."""

    def __init__(self, n_chars: int) -> None:
        super().__init__(f"the messages are {n_chars} characters; a prompt holds at most {MAX_OUTPUT_CHARS}")
        self.n_chars = n_chars


class _Raised(Exception):
    """raise_exception() was called by the template."""


class _Abort(BaseException):
    """Raised from the trace hook; BaseException so no library code can swallow it."""


def _check_len(n: int, what: str) -> None:
    if n > MAX_OUTPUT_CHARS:
        raise SecurityError(f"{what} would be {n} long (limit {MAX_OUTPUT_CHARS})")


def _check_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    # Big integer arguments are how a template asks for a huge allocation in one C call
    # ('x'.ljust(10**10), |center(10**10)), which no time limit can interrupt.
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT_CHARS:
            raise SecurityError(f"argument {value} is too large")


_WIDE_FORMAT = re.compile(r"\d{7,}")
_DIGITS = re.compile(r"\d+")


def _text_size(value: Any, limit: int = MAX_OUTPUT_CHARS, indent: int = 0) -> int:
    """An upper bound on len(str(value)) and len(json.dumps(value, indent=indent)), found
    without building either: a list holding one big string a million times is small in
    memory but not as text. Stops counting once past `limit` (so the walk is bounded too)."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        if isinstance(item, str):
            total += 6 * len(item) + 2  # JSON escapes one character as at most 6
        elif isinstance(item, dict):
            total += 2 + len(item) * (4 + indent * (depth + 1))
            stack.extend((x, depth + 1) for pair in item.items() for x in pair)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + len(item) * (2 + indent * (depth + 1))
            stack.extend((x, depth + 1) for x in item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += min(item.bit_length() // 3 + 2, 5000)
        else:
            total += 32  # float, bool, None, jinja Undefined, ...
    return total


def _format_size(fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None) -> int:
    """Upper bound on the length of fmt % args or fmt.format(*args, **kwargs): every digit
    run in the format may be a width or precision, and star or nested fields take theirs
    from the arguments, which count at their numeric value as well as their text."""
    values = [*args, *(kwargs or {}).values()]
    widths = sum(int(d) for d in _DIGITS.findall(fmt)[:10_000] if len(d) < 12)
    numbers = sum(abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 1 << 40)
    return len(fmt) + widths + numbers + sum(_text_size(v) for v in values)


# Bytes the current render has created so far (a one-element list, so the guards can add
# to it); None outside a render. A ContextVar, so concurrent renders on two threads each
# have their own.
_spent: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("tmac_template_bytes", default=None)


def _charge(value: Any) -> None:
    """Count what a template operation created against the render's memory budget. The
    budget counts everything created, freed or not: cheap (no allocation tracing), and
    bounding the total also bounds what is held at once, e.g. a loop that keeps a new
    big string each time round, which no per-operation check sees."""
    spent = _spent.get()
    if spent is None:
        return
    if isinstance(value, str):
        spent[0] += len(value) if value.isascii() else 4 * len(value)
    elif isinstance(value, (bytes, list, tuple, set, frozenset)):
        spent[0] += 8 * len(value)
    elif isinstance(value, dict):
        spent[0] += 64 * len(value)
    else:
        return
    if spent[0] > MAX_RENDER_BYTES:
        raise SecurityError(f"the template needed more than {MAX_RENDER_BYTES >> 20} MiB")


def _check_result(value: Any, what: str) -> Any:
    """After any call a template makes: no single string or container past the cap, and
    the render's total within budget. The checks before each call stop one huge
    allocation; these stop the next step and the sum of many."""
    if isinstance(value, (str, bytes, list, tuple, dict, set)):
        _check_len(len(value), what)
        _charge(value)
    return value


def _guard_call(fn: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    _check_args(args, kwargs)
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "")
    if isinstance(owner, str):
        if name in ("format", "format_map") and _WIDE_FORMAT.search(owner):
            raise SecurityError("format width is too large")
        if name == "format":
            _check_len(_format_size(owner, args, kwargs), "str.format")
        if name == "format_map" and args:
            _check_len(_format_size(owner, [args[0]]), "str.format_map")
        if name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            _check_len(len(owner) + owner.count("\t") * (size if isinstance(size, int) else 8), "str.expandtabs")
        if name == "replace" and len(args) >= 2:
            _check_len(len(owner) * max(1, len(str(args[1]))), "str.replace")
        if name == "join" and len(args) == 1:
            parts = list(args[0])
            _check_len(sum(len(str(p)) for p in parts) + len(owner) * len(parts), "str.join")


def _concat(parts: Sequence[Any]) -> str:
    strs = [str(p) for p in parts]
    _check_len(sum(map(len, strs)), "string concatenation")
    return _check_result("".join(strs), "string concatenation")


class _GuardedCodeGenerator(CodeGenerator):
    # `a ~ b` compiles to str_join(...), which the sandbox does not intercept; route it
    # through a size check so doubling a string in a recursive macro cannot exhaust RAM.
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:  # noqa: N802  (Jinja's visitor name)
        self.write("environment.tmac_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GenerationTag(Extension):
    # transformers' AssistantTracker tag; some templates use it. We only render the body.
    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    tmac_concat = staticmethod(_concat)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        seqs = (str, list, tuple)
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, seqs) and isinstance(n, int):
                    _check_len(len(seq) * n, "repetition")
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > 4096:
                    raise SecurityError("integer product is too large")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > 1024:
                raise SecurityError("exponent is too large")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if left.bit_length() * right > 4096:
                    raise SecurityError("power is too large")
        elif operator == "%" and isinstance(left, str):
            if _WIDE_FORMAT.search(left):
                raise SecurityError("format width is too large")
            values = (
                list(right.values())
                if isinstance(right, Mapping)
                else list(right)
                if isinstance(right, tuple)
                else [right]
            )
            _check_len(_format_size(left, values), "%-formatting")
        elif operator == "+" and isinstance(left, seqs) and isinstance(right, seqs):
            _check_len(len(left) + len(right), "concatenation")
        return _check_result(super().call_binop(context, operator, left, right), f"the result of {operator!r}")

    def wrap_str_format(self, value: Any) -> Any:
        # Jinja wraps str.format at attribute access (CVE-2024-56326 fix), so the width
        # check must happen here too: '{:>999999999}'.format(1) is one huge allocation.
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and _WIDE_FORMAT.search(owner):
            raise SecurityError("format width is too large")
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(owner, str):
            return wrapped
        format_map = getattr(value, "__name__", "") == "format_map"

        def sized_format(*args: Any, **kwargs: Any) -> Any:
            # Widths can also come from the arguments ('{:{w}}'.format(w=...)), and many
            # modest fields add up: bound the whole result before it is built.
            _check_len(_format_size(owner, [args[0]] if format_map and args else args, kwargs), "str.format")
            return wrapped(*args, **kwargs)

        return sized_format

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805  (Jinja's signature)
        _guard_call(__obj, args, kwargs)
        return _check_result(super().call(__context, __obj, *args, **kwargs), "a call's result")


def _guard_filter(name: str, fn: Any) -> Any:
    skip = 2 if getattr(fn, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(fn)  # keeps the jinja_pass_arg marker of context/env filters
    def guarded(*args: Any, **kwargs: Any) -> Any:
        # args[skip - 1] is the piped value (after the context a pass_* filter gets).
        _check_args(args[skip:], kwargs)
        value, rest = args[skip - 1], args[skip:]
        if name == "format" and _WIDE_FORMAT.search(str(value)):
            raise SecurityError("format width is too large")
        if name == "join":  # a list of big strings joins into a huge one
            value = [str(v) for v in value]
            sep = str(rest[0] if rest else kwargs.get("d", ""))
            _check_len(sum(map(len, value)) + len(sep) * len(value), "join")
            args = (*args[: skip - 1], value, *rest)
        if name == "replace" and len(rest) >= 2:
            _check_len(len(str(value)) * max(1, len(str(rest[1]))), "replace")
        if name == "indent" and rest and isinstance(rest[0], int):
            _check_len(len(str(value)) + str(value).count("\n") * rest[0], "indent")
        if name in _TEXT_FILTERS:
            indent = kwargs.get("indent", rest[0] if name == "tojson" and rest else 0)
            indent = indent if isinstance(indent, int) and not isinstance(indent, bool) else 0
            _check_len(_text_size(value, indent=indent) * _TEXT_FILTERS[name], f"|{name}")
        if name == "format":
            _check_len(_format_size(str(value), rest, kwargs), "|format")
        return _check_result(fn(*args, **kwargs), f"|{name}")

    return guarded


# Filters that turn any value into text, with how many characters one character of
# the value's text can become (escaping: '&' -> '&amp;'; urlize wraps a word in a link).
_TEXT_FILTERS = {
    "string": 1,
    "tojson": 1,
    "pprint": 1,
    "list": 1,
    "escape": 6,
    "e": 6,
    "forceescape": 6,
    "urlize": 12,
    "xmlattr": 6,
    "wordwrap": 2,
    "title": 1,
    "capitalize": 1,
    "upper": 3,
    "lower": 3,
    "center": 1,
    "trim": 1,
    "striptags": 1,
    "urlencode": 9,
    "safe": 1,
    "items": 1,
    "dictsort": 1,
}


def _tojson(value: Any, indent: int | None = None, **kwargs: Any) -> str:
    # transformers replaces Jinja's tojson: HTML escaping would corrupt prompts.
    return json.dumps(value, ensure_ascii=False, indent=indent, **kwargs)


def _raise_exception(message: str) -> None:
    raise _Raised(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(str(fmt)[:256])


@functools.lru_cache(maxsize=1)
def _environment() -> _Environment:
    env = _Environment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def _guarded_run(fn: Any, timeout_s: float) -> Any:
    """Run fn() with a deadline and a template-depth limit checked by a trace hook.

    Every new frame and every line of template code checks the clock; the hook is
    per-thread and the previous one (a debugger, coverage) is put back afterwards.
    The render's memory budget (_charge) is opened here too.
    """
    deadline = time.monotonic() + timeout_s
    depth = 0

    clock = time.monotonic  # the hook runs for every line of template code: keep it to a call and a compare

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal depth
        if event == "return":
            depth -= 1
        if clock() > deadline:
            raise _Abort(f"rendering took longer than {timeout_s:g} s")
        return local

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        nonlocal depth
        if clock() > deadline:
            raise _Abort(f"rendering took longer than {timeout_s:g} s")
        if frame.f_code.co_filename == "<template>":
            depth += 1
            if depth > MAX_TEMPLATE_DEPTH:
                raise _Abort(f"template recursion deeper than {MAX_TEMPLATE_DEPTH}")
            return local
        return None

    previous = sys.gettrace()
    budget = _spent.set([0])
    sys.settrace(on_call)
    try:
        return fn()
    finally:
        sys.settrace(previous)
        _spent.reset(budget)


def _to_plain(value: Any) -> Any:
    """Deep copy into dict/list/str/number/None.

    The sandbox is safest with plain data: no objects with methods reach the template.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_plain(dataclasses.asdict(value))
    if hasattr(value, "role") and hasattr(value, "content"):
        return {"role": _to_plain(value.role), "content": _to_plain(value.content)}
    raise ChatTemplateError(f"cannot pass a {type(value).__name__} to a chat template")


def _mark_all(value: Any, special: SpecialMatcher) -> Any:
    if isinstance(value, str):
        return mark_untrusted(value, special)
    if isinstance(value, dict):
        return {_mark_all(k, special): _mark_all(v, special) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_all(v, special) for v in value]
    return value


def _matcher(special_tokens: Collection[str] | SpecialMatcher) -> SpecialMatcher:
    # The tokenizer passes the matcher it built once for its vocabulary; a plain collection
    # (tests, scripts) gets one built here. One-character and over-long strings are never
    # special (tokenizer/special.py says why); the tokenizer agrees.
    return special_tokens if isinstance(special_tokens, SpecialMatcher) else SpecialMatcher(special_tokens)


def render_template(
    source: str,
    messages: Sequence[Any],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Any] | None = None,
    special_tokens: Collection[str] | SpecialMatcher = (),
    timeout_s: float = RENDER_TIMEOUT_S,
    **extra: Any,
) -> RenderedChat:
    """Render one template in the sandbox, no fallback.

    Raises:
        TemplateSecurityError: the template tried something the sandbox forbids.
        ChatTemplateError: any other failure (syntax, raise_exception, time or size limit).
    """
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ChatTemplateError(f"chat template is {len(source)} characters (limit {MAX_TEMPLATE_CHARS})")
    special = _matcher(special_tokens)
    context = {k: _mark_all(_to_plain(v), special) for k, v in extra.items()}
    context.update(
        messages=_mark_all(_to_plain(list(messages)), special),
        tools=_mark_all(_to_plain(list(tools)), special) if tools is not None else None,
        documents=None,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=bool(add_generation_prompt),
    )

    def run() -> str:
        out: list[str] = []
        size = 0
        for piece in _compile(source).generate(**context):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise ChatTemplateError(f"rendered prompt exceeds {MAX_OUTPUT_CHARS} characters")
            out.append(piece)  # the output is capped above; the budget is for what the template keeps
        return "".join(out)

    try:
        marked = _guarded_run(run, timeout_s)
    except SecurityError as e:
        raise TemplateSecurityError(f"chat template refused by the sandbox: {e}") from None
    except _Raised as e:
        raise ChatTemplateError(f"chat template raised an error: {e}") from None
    except _Abort as e:
        raise ChatTemplateError(f"chat template stopped: {e}") from None
    except ChatTemplateError:
        raise
    except RecursionError:
        raise ChatTemplateError("chat template recursed too deeply") from None
    except MemoryError:
        raise ChatTemplateError("chat template ran out of memory") from None
    except Exception as e:  # noqa: BLE001  TemplateSyntaxError, UndefinedError, TypeError, OverflowError...
        raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None
    return RenderedChat(text=unmark(marked), marked=marked, guarded=special.strings, template="gguf")


# -- built-in fallbacks ----------------------------------------------------------------

FALLBACK_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        " + message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    # Meta's Llama-2 chat format: the system prompt goes inside the first [INST].
    "llama2": (
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}"
        "{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
        "{% for message in rest %}"
        "{% if message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
        "{% else %}"
        "{{ bos_token + '[INST] ' }}"
        "{% if loop.first and system %}{{ '<<SYS>>\n' + system + '\n<</SYS>>\n\n' }}{% endif %}"
        "{{ message['content'] | trim + ' [/INST]' }}"
        "{% endif %}{% endfor %}"
    ),
}

_FALLBACK_LABELS = {"chatml": "ChatML", "llama3": "Llama-3", "llama2": "Llama-2"}


def pick_fallback(special_tokens: Collection[str], bos_token: str = "") -> str:
    """Name of the built-in template that suits a vocabulary, judged by its tokens."""
    specials = set(special_tokens)
    if {"<|start_header_id|>", "<|eot_id|>"} <= specials:
        return "llama3"
    if "<|im_start|>" in specials:
        return "chatml"
    if bos_token == "<s>":
        return "llama2"
    return "chatml"


def _content_text(content: Any) -> str:
    # Fallbacks expect strings; OpenAI-style parts lists are joined, None is "".
    if content is None:
        return ""
    if isinstance(content, (list, tuple)):
        return "".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return str(content)


def render_chat(
    template: str | None,
    messages: Sequence[Any],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Any] | None = None,
    special_tokens: Collection[str] | SpecialMatcher = (),
    **extra: Any,
) -> RenderedChat:
    """Render with the model's template, or a built-in one if it is missing or fails.

    Never raises for a bad model template: the result's `notice` explains the fallback.

    Raises:
        PromptTooLongError: the messages alone exceed MAX_OUTPUT_CHARS.
        ChatTemplateError: only if the messages themselves cannot be rendered at all.
    """
    n_chars = sum(
        len(_content_text(m.get("content")) if isinstance(m, Mapping) else _content_text(getattr(m, "content", "")))
        for m in messages
    )
    if n_chars > MAX_OUTPUT_CHARS:
        raise PromptTooLongError(n_chars)
    special = _matcher(special_tokens)
    kwargs: dict[str, Any] = dict(
        bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt, special_tokens=special
    )
    name = pick_fallback(special.strings, bos_token)
    label = _FALLBACK_LABELS[name]
    if template:
        try:
            return render_template(template, messages, tools=tools, **kwargs, **extra)
        except TemplateSecurityError as e:
            notice = (
                f"The model's chat template was blocked for safety ({e}); using the built-in {label} format instead."
            )
        except ChatTemplateError as e:
            notice = f"The model's chat template failed ({e}); using the built-in {label} format."
    else:
        notice = f"This model has no chat template; using the built-in {label} format."
    simple = []
    for m in messages:
        m = _to_plain(m)
        if not isinstance(m, dict):
            raise ChatTemplateError("each message must be a mapping with role and content")
        simple.append({"role": str(m.get("role", "user")), "content": _content_text(m.get("content"))})
    rendered = render_template(FALLBACK_TEMPLATES[name], simple, **kwargs)
    return dataclasses.replace(rendered, template=name, notice=notice)
