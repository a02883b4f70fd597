"""Penalties that push the model away from tokens it has already seen.

Two families, applied to the raw logits before temperature (the order vLLM uses):

- repetition_penalty (CTRL paper, Keskar et al. 2019, as HF transformers applies it):
  every token that appears in the prompt or the output so far has its logit
  divided by the penalty when positive and multiplied by it when negative, so a
  penalty > 1 always makes the token less likely.
- presence_penalty and frequency_penalty (OpenAI's API): over the output tokens
  only, subtract `presence` once if the token occurred and `frequency` per
  occurrence.

Plus min_tokens: end-of-sequence and stop tokens are forbidden (-inf) while a
sequence has produced fewer than min_tokens tokens.

Rows that did not ask for a penalty carry neutral values (1.0 / 0.0), so the
whole batch is penalized with the same few tensor ops and their logits come out
bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ruvonvllm.sampling.sampling_row import SamplingRow



def _padded(rows: list[list[int]], pad: int, device: torch.device) -> torch.Tensor:
    """[B, max_len] int64, short rows filled with `pad` (a dummy column past the vocab)."""
    width = max((len(r) for r in rows), default=0)
    table = [r + [pad] * (width - len(r)) for r in rows]
    return torch.tensor(table, dtype=torch.int64).view(len(rows), width).to(device, non_blocking=True)


def _token_counts(rows: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[B, V] int32 histogram of each row's tokens; ids >= vocab_size are ignored."""
    ids = _padded(rows, vocab_size, device).clamp_(max=vocab_size)
    counts = torch.zeros(len(rows), vocab_size + 1, dtype=torch.int32, device=device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))
    return counts[:, :vocab_size]


@dataclass
class Penalties:
    repetition: torch.Tensor        # [B] float32, 1.0 = off
    presence: torch.Tensor          # [B] float32, 0.0 = off
    frequency: torch.Tensor         # [B] float32, 0.0 = off
    output_counts: torch.Tensor     # [B, V] int32: occurrences of each token in the output
    prompt_mask: torch.Tensor | None  # [B, V] bool: token occurs in the prompt; None if no row needs it

    @classmethod
    def from_sequences(cls, seqs: list[SamplingRow], vocab_size: int,
                       device: torch.device) -> Penalties | None:
        """None when no row has a penalty, so the common case costs nothing."""
        params = [s.sampling_params for s in seqs]
        if not any(p.has_penalties for p in params):
            return None

        def column(name: str) -> torch.Tensor:
            return torch.tensor([getattr(p, name) for p in params], dtype=torch.float32).to(device)

        # Token histories are only copied for rows that use them; the others stay empty.
        outputs = [s.output_token_ids if s.sampling_params.has_penalties else [] for s in seqs]
        prompt_mask = None
        if any(p.repetition_penalty != 1.0 for p in params):
            prompts = [s.prompt_token_ids if s.sampling_params.repetition_penalty != 1.0 else []
                       for s in seqs]
            prompt_mask = _token_counts(prompts, vocab_size, device) > 0
        return cls(repetition=column("repetition_penalty"), presence=column("presence_penalty"),
                   frequency=column("frequency_penalty"),
                   output_counts=_token_counts(outputs, vocab_size, device), prompt_mask=prompt_mask)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, V] float32 -> penalized logits (a new tensor)."""
        seen = self.output_counts > 0
        if self.prompt_mask is not None:
            seen = seen | self.prompt_mask
        rep = self.repetition[:, None]
        penalized = torch.where(logits > 0, logits / rep, logits * rep)
        logits = torch.where(seen, penalized, logits)
        counts = self.output_counts.to(logits.dtype)
        occurred = (self.output_counts > 0).to(logits.dtype)
        return logits - self.frequency[:, None] * counts - self.presence[:, None] * occurred


@dataclass
class MinTokensMask:
    """(row, token id) pairs to forbid this step: eos and stop tokens of rows below min_tokens."""

    rows: torch.Tensor       # [K] int64
    token_ids: torch.Tensor  # [K] int64

    @classmethod
    def from_sequences(cls, seqs: list[SamplingRow], vocab_size: int,
                       device: torch.device) -> MinTokensMask | None:
        rows: list[int] = []
        token_ids: list[int] = []
        for row, seq in enumerate(seqs):
            if seq.num_output_tokens >= seq.sampling_params.min_tokens:
                continue
            # eos is masked even with ignore_eos: min_tokens is a floor either way.
            banned = set(seq.eos_token_ids) | set(seq.sampling_params.stop_token_ids)
            banned = sorted(t for t in banned if t < vocab_size)
            rows.extend([row] * len(banned))
            token_ids.extend(banned)
        if not rows:
            return None
        return cls(torch.tensor(rows, dtype=torch.int64).to(device),
                   torch.tensor(token_ids, dtype=torch.int64).to(device))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[self.rows, self.token_ids] = float("-inf")
        return logits
