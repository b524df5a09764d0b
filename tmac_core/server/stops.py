"""Stop sequences over streamed text: text is released only once it cannot start a stop sequence.

A stop may arrive split across chunks ("Par" + "is"), so the tail of the text that could
still become a stop is held back until the next chunk decides it; the stop itself is
never sent, as in OpenAI's API.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to send now, whether a stop sequence was reached: the answer ends there)."""
        if not self.stops:
            return text, False
        buffer = self._held + text
        hits = [i for i in (buffer.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = 0  # the longest tail that is the start of some stop
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:k]):
                    keep = k
                    break
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """The held-back tail, at the end of the answer (no stop came)."""
        held, self._held = self._held, ""
        return held
