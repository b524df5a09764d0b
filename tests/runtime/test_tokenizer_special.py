"""Special-token matching: the same answers as a regex alternation, in time linear in the text.

The reference is the obvious implementation (an alternation of the escaped strings,
longest first, i.e. leftmost-longest), which was the old code and is quadratic on a
hostile vocabulary; the matcher must agree with it everywhere and stay linear.
"""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tmac_core.tokenizer.special import MARK, MAX_SPECIAL_CHARS, SpecialMatcher

SPECIALS = ["<|im_end|>", "<|im_start|>", "<|im", "|>x", "<|a|>", "aa", "aaa", "ab"]


def reference_split(text: str, specials: list[str]) -> list[tuple[str, bool]]:
    pattern = re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True))))
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(["<", "|", ">", "x", "a", "b", "im_end", "im_start", "<|im", " ", "é", MARK]), max_size=30
    ).map("".join)
)
def test_split_agrees_with_the_leftmost_longest_alternation(text):
    matcher = SpecialMatcher(SPECIALS)
    assert matcher.split(text) == reference_split(text, SPECIALS)
    assert "".join(piece for piece, _ in matcher.split(text)) == text


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(st.lists(st.sampled_from(["<", "|", ">", "x", "a", "b", "<|im_end|>", "aaa", MARK]), max_size=30).map("".join))
def test_marked_text_contains_no_special_string(text):
    marked = SpecialMatcher(SPECIALS).mark(text)
    assert not any(special in marked for special in SPECIALS)
    assert marked.replace(MARK + MARK, "\0").replace(MARK, "").replace("\0", MARK) == text


def test_one_character_and_over_long_strings_are_never_special():
    long = "<" + "x" * MAX_SPECIAL_CHARS + ">"
    matcher = SpecialMatcher(["<", long, "<|ok|>", "with" + MARK])
    assert matcher.strings == {"<|ok|>"}
    assert matcher.split("<" + long + "<|ok|>") == [("<" + long, False), ("<|ok|>", True)]
    assert not SpecialMatcher([]) and SpecialMatcher([]).split("abc") == [("abc", False)]


def best_seconds(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_a_hostile_vocabulary_costs_time_linear_in_the_text():
    """Every prefix of a long run of 'a' is special except the run itself, so at every
    position an alternation tries every string; the matcher walks at most
    MAX_SPECIAL_CHARS steps. Quadrupling the text must not cost much more than 4x."""
    specials = ["a" * n + "b" for n in range(1, MAX_SPECIAL_CHARS - 1)] + ["a" * n for n in range(2, 40)]
    matcher = SpecialMatcher(specials)
    assert len(matcher.strings) == len(specials)
    small, large = "a" * 2_000 + "c", "a" * 8_000 + "c"
    t_small = best_seconds(lambda: (matcher.split(small), matcher.mark(small)))
    t_large = best_seconds(lambda: (matcher.split(large), matcher.mark(large)))
    assert t_large < 8 * t_small + 0.05, f"{t_small:.4f}s → {t_large:.4f}s for 4x the text"
    text = "<|im_start|>user\n" + "hello world " * 20_000  # 240 k characters of ordinary text
    assert best_seconds(lambda: SpecialMatcher(SPECIALS).split(text), repeats=1) < 1.0
