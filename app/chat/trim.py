"""Fit a chat history into the model's context budget by dropping whole turns, oldest first.

The system prompt is always kept and the newest turn is never split; what was
dropped is returned so the UI can tell the user ("3 older messages are not
visible to the model"). Works on anything with `.role` and `.content`
(store Messages, the engine protocol's ChatLines). Two ways to count:
`fit_prompt` renders candidate prompts and measures them exactly (what the engine
process uses: the render that fits is the prompt it generates from);
`fit_history` adds up per-message estimates. Pure Python: must not import PySide6
or tmac_core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Protocol, Sequence, TypeVar


class HasRoleAndContent(Protocol):
    role: str
    content: str


MessageT = TypeVar("MessageT", bound=HasRoleAndContent)
PromptT = TypeVar("PromptT")


@dataclass(frozen=True)
class FittedHistory(Generic[MessageT]):
    kept: list[MessageT]        # in original order, system prompt first
    dropped: list[MessageT]     # in original order; empty when everything fitted
    tokens: int                 # token count of `kept`
    fits: bool                  # False when even the system prompt + newest turn exceed the budget


def split_into_turns(messages: Sequence[MessageT]) -> tuple[list[MessageT], list[list[MessageT]]]:
    """Separate leading system messages; the rest is grouped so each turn starts at a user message."""
    system: list[MessageT] = []
    index = 0
    while index < len(messages) and messages[index].role == "system":
        system.append(messages[index])
        index += 1
    turns: list[list[MessageT]] = []
    for message in messages[index:]:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return system, turns


def fit_history(messages: Sequence[MessageT], count_tokens: Callable[[MessageT], int],
                budget: int) -> FittedHistory[MessageT]:
    """Keep the system prompt and as many of the newest whole turns as fit in `budget` tokens.

    `count_tokens(message)` should include the chat template's per-message overhead. The newest
    turn is always kept, even when it alone is too large: the caller then sees fits=False and
    reports a context overflow rather than silently sending a cut question.
    """
    system, turns = split_into_turns(messages)
    used = sum(count_tokens(m) for m in system)
    kept_turns: list[list[MessageT]] = []
    for turn in reversed(turns):
        cost = sum(count_tokens(m) for m in turn)
        if kept_turns and used + cost > budget:
            break
        kept_turns.append(turn)
        used += cost
    kept_turns.reverse()
    dropped_turn_count = len(turns) - len(kept_turns)
    dropped = [m for turn in turns[:dropped_turn_count] for m in turn]
    kept = system + [m for turn in kept_turns for m in turn]
    return FittedHistory(kept=kept, dropped=dropped, tokens=used, fits=used <= budget)


@dataclass(frozen=True)
class FittedPrompt(Generic[MessageT, PromptT]):
    kept: list[MessageT]        # in original order, system prompt first
    dropped: list[MessageT]     # in original order; empty when everything fitted
    prompt: PromptT             # render(kept), ready for generation
    tokens: int                 # size(prompt)
    fits: bool                  # False when even the system prompt + newest turn exceed the budget


def fit_prompt(messages: Sequence[MessageT], render: Callable[[list[MessageT]], PromptT],
               size: Callable[[PromptT], int], budget: int) -> FittedPrompt[MessageT, PromptT]:
    """Render the history; when it is over `budget` tokens, drop the fewest oldest whole turns that fit.

    One render when everything fits (the usual turn). Otherwise a binary search on how many
    turns to drop, about log2(turns) more renders, since dropping a turn never lengthens the
    prompt. The newest turn is always kept: when it alone (with the system prompt) is over
    budget, fits=False and generation reports the overflow with the real count.
    """
    system, turns = split_into_turns(messages)
    renders: dict[int, tuple[list[MessageT], PromptT, int]] = {}

    def without_oldest(drop: int) -> tuple[list[MessageT], PromptT, int]:
        if drop not in renders:
            kept = system + [m for turn in turns[drop:] for m in turn]
            prompt = render(kept)
            renders[drop] = (kept, prompt, size(prompt))
        return renders[drop]

    drop = 0
    if without_oldest(0)[2] > budget and len(turns) > 1:
        low, high = 1, len(turns) - 1       # dropping fewer than `low` turns does not fit
        drop = high                         # the most we may drop, if nothing fits
        while low <= high:
            middle = (low + high) // 2
            if without_oldest(middle)[2] <= budget:
                drop, high = middle, middle - 1
            else:
                low = middle + 1
    kept, prompt, tokens = without_oldest(drop)
    dropped = [m for turn in turns[:drop] for m in turn]
    return FittedPrompt(kept=kept, dropped=dropped, prompt=prompt, tokens=tokens, fits=tokens <= budget)
