"""Logprobs in OpenAI's two shapes, from the engine's per-position dicts.

Completions (legacy): parallel lists `tokens`, `token_logprobs`, `top_logprobs`
(one {token text: logprob} dict per position) and `text_offset`. Chat: one
entry per token with its UTF-8 bytes and a ranked `top_logprobs` list.
"""

from __future__ import annotations

from collections.abc import Callable

from ruvonvllm.api.protocol import ChatChoiceLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob
from ruvonvllm.outputs import PositionLogprobs

TokenText = Callable[[int], str]  # token id -> its text


def _top_entries(position: PositionLogprobs, num_top: int) -> list[tuple[int, float]]:
    ranked = sorted(((lp.rank, tid, lp.logprob) for tid, lp in position.items()
                     if lp.rank is not None and lp.rank <= num_top))
    return [(tid, logprob) for _, tid, logprob in ranked]


def completion_logprobs(token_text: TokenText, token_ids: list[int], positions: list[PositionLogprobs | None],
                        num_top: int, text_offset: int) -> CompletionLogprobs:
    """Legacy completions shape: parallel lists of tokens, their logprobs, top-N dicts and text offsets."""
    result = CompletionLogprobs()
    for token_id, position in zip(token_ids, positions):
        text = token_text(token_id)
        result.tokens.append(text)
        result.text_offset.append(text_offset)
        text_offset += len(text)
        if position is None:  # the first prompt token has no logprob
            result.token_logprobs.append(None)
            result.top_logprobs.append(None)
            continue
        result.token_logprobs.append(position[token_id].logprob if token_id in position else None)
        # Different ids can share a text (byte-level pieces all show as U+FFFD); the
        # dict keeps the likelier one, so the chosen token's entry is never overwritten.
        top: dict[str, float] = {}
        for tid, lp in _top_entries(position, num_top):
            top.setdefault(token_text(tid), lp)
        if token_id in position:
            top.setdefault(text, position[token_id].logprob)
        result.top_logprobs.append(top)
    return result


def chat_logprobs(token_text: TokenText, token_ids: list[int], positions: list[PositionLogprobs],
                  num_top: int) -> ChatChoiceLogprobs:
    """Chat shape: one entry per token with its bytes and the top-N alternatives."""
    content = []
    for token_id, position in zip(token_ids, positions):
        text = token_text(token_id)
        top = [TopLogprob(token=token_text(tid), logprob=lp,
                          bytes=list(token_text(tid).encode()))
               for tid, lp in _top_entries(position, num_top)]
        chosen = position.get(token_id)
        content.append(ChatTokenLogprob(token=text, logprob=chosen.logprob if chosen else float("-inf"),
                                        bytes=list(text.encode()), top_logprobs=top))
    return ChatChoiceLogprobs(content=content)
