"""Log-probabilities of chosen tokens, their ranks and the top-N alternatives.

Logprobs are taken from the raw model logits, before penalties and temperature
(vLLM's default "raw logprobs"): they describe what the model predicted, not
how the sampler then bent that distribution. The tensors stay on the device
until `to_position_logprobs` turns them into the per-position dicts of the
public API, so a step that asks for logprobs costs one extra device->host copy.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass

import torch

from ruvonvllm.outputs import Logprob, PositionLogprobs

# Rows of prompt logits turned into logprobs at a time: bounds the [rows, V] temporaries.
PROMPT_LOGPROBS_CHUNK = 512


@dataclass
class LogprobsTensors:
    token_logprobs: torch.Tensor  # [B] float32: logprob of the chosen token
    token_ranks: torch.Tensor     # [B] int64: 1 + number of tokens strictly more likely
    top_ids: torch.Tensor         # [B, N] int64, most likely first
    top_logprobs: torch.Tensor    # [B, N] float32


def gather_logprobs(logprobs: torch.Tensor, token_ids: torch.Tensor, num_top: int) -> LogprobsTensors:
    """logprobs [B, V] (a log_softmax), token_ids [B] -> the chosen tokens' logprobs, ranks and top-N."""
    chosen = logprobs.gather(-1, token_ids[:, None].long())  # [B, 1]
    ranks = (logprobs > chosen).sum(-1) + 1
    top_logprobs, top_ids = logprobs.topk(num_top, dim=-1)
    return LogprobsTensors(chosen[:, 0], ranks, top_ids, top_logprobs)


def to_position_logprobs(token_ids: SequenceOf[int], logprobs: LogprobsTensors,
                         num_logprobs: SequenceOf[int | None]) -> list[PositionLogprobs | None]:
    """Host side: one dict per row (chosen token first, then its top-N), None for rows that did not ask."""
    token_lp = logprobs.token_logprobs.tolist()
    ranks = logprobs.token_ranks.tolist()
    top_ids = logprobs.top_ids.tolist()
    top_lp = logprobs.top_logprobs.tolist()
    result: list[PositionLogprobs | None] = []
    for row, num_top in enumerate(num_logprobs):
        if num_top is None:
            result.append(None)
            continue
        entry: PositionLogprobs = {int(token_ids[row]): Logprob(token_lp[row], ranks[row])}
        for rank, (tid, lp) in enumerate(zip(top_ids[row][:num_top], top_lp[row][:num_top]), start=1):
            entry.setdefault(tid, Logprob(lp, rank))
        result.append(entry)
    return result


def compute_prompt_logprobs(logits: torch.Tensor, next_token_ids: torch.Tensor | SequenceOf[int],
                            num_top: int) -> list[PositionLogprobs]:
    """Prompt logprobs: row i of logits [P, V] predicts next_token_ids[i].

    Returns P dicts (the actual next token plus the top `num_top`). The caller
    puts None in front for the first prompt token, which nothing predicts.
    """
    if not isinstance(next_token_ids, torch.Tensor):
        next_token_ids = torch.tensor(list(next_token_ids), dtype=torch.int64)
    next_token_ids = next_token_ids.to(logits.device)
    if next_token_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows but {next_token_ids.shape[0]} next tokens")
    result: list[PositionLogprobs] = []
    for start in range(0, logits.shape[0], PROMPT_LOGPROBS_CHUNK):
        rows = slice(start, start + PROMPT_LOGPROBS_CHUNK)
        logprobs = torch.log_softmax(logits[rows].float(), dim=-1)
        tokens = next_token_ids[rows]
        tensors = gather_logprobs(logprobs, tokens, num_top)
        result.extend(to_position_logprobs(tokens.tolist(), tensors, [num_top] * len(tokens)))
    return result
