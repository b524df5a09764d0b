"""Fit a chat history into the model's context budget by dropping whole turns, oldest first.

The system prompt is always kept and the newest turn is never split; what was
dropped is returned so the UI can tell the user ("3 older messages are not
visible to the model"). Works on anything with `.role` and `.content`
(store Messages, tmac_core ChatMessages). Pure Python: must not import PySide6
or tmac_core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Protocol, Sequence, TypeVar


class HasRoleAndContent(Protocol):
    role: str
    content: str


MessageT = TypeVar("MessageT", bound=HasRoleAndContent)


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
