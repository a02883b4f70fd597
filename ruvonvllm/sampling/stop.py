"""Stop strings: end a sequence when its text contains one, and stream safely before that.

Stop strings live in text space, not token space: one stop string can span
several tokens, and one token can hold the end of a stop string plus more text.
So they are checked on the detokenized output after every step, and a stream
holds back any tail that might still grow into a stop string, so a client
never sees text that is taken back later.
"""

from __future__ import annotations

from typing import NamedTuple


class StopMatch(NamedTuple):
    stopped: bool
    text: str              # the output text, cut at the stop string when stopped
    stop_string: str | None  # the stop string that matched


class StopChecker:
    def __init__(self, stop_strings: list[str], include_stop_str_in_output: bool = False) -> None:
        if any(not isinstance(s, str) or not s for s in stop_strings):
            raise ValueError("stop strings must be non-empty strings")
        self.stop_strings = list(stop_strings)
        self.include_stop_str_in_output = include_stop_str_in_output
        self._max_len = max((len(s) for s in self.stop_strings), default=0)

    def check(self, text: str, num_new_chars: int | None = None) -> StopMatch:
        """Look for a stop string ending in the last num_new_chars characters of text (default: all).

        Occurrences that ended in older text were seen by earlier calls. Of the
        occurrences found, the one that completes first wins (ties: the longer),
        as if the text had arrived one character at a time.
        """
        if num_new_chars is None:
            num_new_chars = len(text)
        old_len = len(text) - num_new_chars
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self.stop_strings:
            start = text.find(stop, max(0, old_len - len(stop) + 1))
            if start < 0:
                continue
            candidate = (start + len(stop), start, stop)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        if best is None:
            return StopMatch(False, text, None)
        end, start, stop = best
        return StopMatch(True, text[:end] if self.include_stop_str_in_output else text[:start], stop)

    def stream_safe_length(self, text: str) -> int:
        """How many leading characters of text can be streamed now.

        The rest (at most max(len(stop)) - 1 characters) is a prefix of some
        stop string and might become one with the next tokens.
        """
        for start in range(max(0, len(text) - self._max_len + 1), len(text)):
            tail = text[start:]
            if any(stop.startswith(tail) for stop in self.stop_strings):
                return start
        return len(text)
