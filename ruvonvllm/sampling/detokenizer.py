"""Incremental detokenization: turn each step's new tokens into a text delta.

Decoding the whole output every step costs O(length) per token. Decoding only
the newest token alone is wrong twice over: a byte-level BPE token can hold
half of a UTF-8 character (an emoji often spans several tokens), and some
tokenizers (SentencePiece) decide spaces from the neighbouring tokens.

The prefix-offset / read-offset technique (Hugging Face text-generation-inference,
then vLLM) decodes a small window instead:

    tokens:   ... | prefix_offset ... read_offset | new tokens
    prefix_text = decode(tokens[prefix_offset:read_offset])   (already emitted)
    new_text    = decode(tokens[prefix_offset:])
    delta       = new_text[len(prefix_text):]

The window starts a few tokens back so the new tokens are decoded in context.
When new_text ends with U+FFFD the last character is still incomplete: nothing
is emitted and the window grows until the character is whole.
"""

from __future__ import annotations

from typing import Any

# Prompt tokens kept as decoding context for the first output tokens (vLLM uses 5 too).
INITIAL_CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        context = list(prompt_token_ids[-INITIAL_CONTEXT_TOKENS:])
        self._token_ids = context  # the context tokens followed by every output token
        self._num_context = len(context)
        self._prefix_offset = 0
        self._read_offset = len(context)
        self.output_text = ""  # every delta returned so far, concatenated

    @property
    def output_token_ids(self) -> list[int]:
        return self._token_ids[self._num_context:]

    @property
    def has_pending(self) -> bool:
        """True while some appended tokens have not been emitted (an incomplete character)."""
        return self._read_offset < len(self._token_ids)

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=self.skip_special_tokens)

    def append(self, token_ids: list[int]) -> str:
        """Add new output tokens; return the text they complete (possibly "")."""
        self._token_ids.extend(token_ids)
        return self._emit(final=False)

    def flush(self) -> str:
        """At the end of the sequence: emit whatever is held back, U+FFFD included."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if not self.has_pending:
            return ""
        prefix_text = self._decode(self._token_ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._token_ids[self._prefix_offset:])
        if not final and (len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR)):
            return ""  # nothing visible yet (a skipped special token, or a character cut in half)
        delta = new_text[len(prefix_text):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        self.output_text += delta
        return delta
