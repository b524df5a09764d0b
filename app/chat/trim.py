"""Fit a chat history into the model's context budget by dropping whole turns, oldest first.

The system prompt is always kept and the newest turn is never split; what was
dropped is returned so the UI can tell the user ("3 older messages are not
visible to the model"). Works on anything with `.role` and `.content`
(store Messages, the engine protocol's ChatLines). `fit_history` adds up
per-message estimates; `fit_prompt` starts from its guess and measures rendered
prompts exactly (what the engine process uses: the render that fits is the
prompt it generates from). Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class HasRoleAndContent(Protocol):
    # Read-only, so frozen records (the protocol's ChatLine) qualify too.
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


MessageT = TypeVar("MessageT", bound=HasRoleAndContent)
PromptT = TypeVar("PromptT")


@dataclass(frozen=True)
class FittedHistory(Generic[MessageT]):
    kept: list[MessageT]  # in original order, system prompt first
    dropped: list[MessageT]  # in original order; empty when everything fitted
    tokens: int  # token count of `kept`
    fits: bool  # False when even the system prompt + newest turn exceed the budget


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


def fit_history(
    messages: Sequence[MessageT], count_tokens: Callable[[MessageT], int], budget: int
) -> FittedHistory[MessageT]:
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
    kept: list[MessageT]  # in original order, system prompt first
    dropped: list[MessageT]  # in original order; empty when everything fitted
    prompt: PromptT  # render(kept), ready for generation
    tokens: int  # size(prompt)
    fits: bool  # False when even the system prompt + newest turn exceed the budget


def fit_prompt(
    messages: Sequence[MessageT],
    render: Callable[[list[MessageT]], PromptT],
    size: Callable[[PromptT], int],
    budget: int,
    estimate: Callable[[MessageT], int],
    *,
    slack: int = 0,
    keep_from: int | None = None,
) -> FittedPrompt[MessageT, PromptT]:
    """Render the history; when it is over `budget` tokens, drop the fewest oldest whole turns that fit.

    One render when everything fits (the usual turn). Otherwise `estimate` (a per-message count
    as fit_history takes, read only for the newest turns) guesses how many turns to drop, and
    exact renders from the guess find the fewest that fit, since dropping a turn never lengthens
    the prompt: with a fair estimate two or three more renders, each about the budget's size.
    The newest turn is always kept: when it alone (with the system prompt) is over budget,
    fits=False and generation reports the overflow with the real count.

    Trimming in steps, so the engine's cached prompt prefix survives the next turns:
    `keep_from` is the number of oldest turns the previous fit dropped; when the history
    still fits with that many dropped, exactly those are dropped again (the prompt then
    starts as the last one did, and the KV cache of that prefix is reused instead of the
    whole prompt being read again). Otherwise, with `slack`, turns are dropped until the
    prompt is at most `budget - slack` tokens (or only the newest turn is left), which
    leaves room for the next few turns behind the same start.
    """
    system, turns = split_into_turns(messages)
    renders: dict[int, tuple[list[MessageT], PromptT, int]] = {}

    def without_oldest(drop: int) -> tuple[list[MessageT], PromptT, int]:
        if drop not in renders:
            kept = system + [m for turn in turns[drop:] for m in turn]
            prompt = render(kept)
            renders[drop] = (kept, prompt, size(prompt))
        return renders[drop]

    def fits(drop: int) -> bool:
        return without_oldest(drop)[2] <= budget

    def fits_target(drop: int) -> bool:
        return without_oldest(drop)[2] <= target

    drop, most = 0, len(turns) - 1
    target = max(budget - max(slack, 0), 0)
    if not fits(0) and most > 0:
        if keep_from is not None and 0 < keep_from <= most and fits(keep_from):
            drop = keep_from  # the same start as the previous turn: its cached prefix is reused
        else:
            guess = len(split_into_turns(fit_history(messages, estimate, target).dropped)[1])
            drop = min(max(guess, 1), most)
            while drop < most and not fits_target(drop):  # the guess kept too much
                drop += 1
            while drop > 1 and fits_target(drop - 1):  # the guess dropped more than needed
                drop -= 1
    kept, prompt, tokens = without_oldest(drop)
    dropped = [m for turn in turns[:drop] for m in turn]
    return FittedPrompt(kept=kept, dropped=dropped, prompt=prompt, tokens=tokens, fits=tokens <= budget)
