"""Sampler: a batch of logits -> one token per row, for rows with mixed SamplingParams.

The pipeline for each step, every stage vectorized over the batch:

1. penalties on the raw logits (repetition, presence, frequency) and the
   min_tokens mask on eos / stop tokens;
2. greedy rows take the argmax here, so temperature 0 is exactly greedy;
3. temperature, then top-k and top-p (one shared sort) and min-p;
4. sampling with the exponential race: argmax(probs / q), q ~ Exponential(1).
   The winner of the race is distributed exactly as probs (it is the Gumbel-max
   trick in disguise), it needs no cumulative sum or multinomial, and a row's
   outcome depends only on its own noise, which is what lets seeded rows draw q
   from their own generator and come out the same in any batch.

Logprobs (when some row asked) come from the raw logits, before step 1.

On CUDA, a batch without top-k, top-p or min-p takes steps 2-4 in one kernel
(fused.py): the same draw, one pass over the logits instead of six.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ruvonvllm.sampling.fused import fused_sample, fused_sample_applies
from ruvonvllm.sampling.logprobs import LogprobsTensors, gather_logprobs
from ruvonvllm.sampling.sampling_batch import SamplingBatch


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor               # [B] int64, on the logits' device
    logprobs: LogprobsTensors | None = None  # present only when some row asked for logprobs


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None,
                      top_p: torch.Tensor | None) -> torch.Tensor:
    """Set to -inf every token outside each row's top-k and top-p (nucleus) sets.

    logits [B, V]; top_k [B] (V = no cut); top_p [B] (1.0 = no cut). One sort
    serves both cuts. top-p keeps the smallest prefix of the sorted distribution
    whose mass reaches p (Holtzman et al. 2019): a token stays if the mass
    before it is still below p, so the most likely token always stays.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    if top_k is not None:
        position = torch.arange(logits.shape[-1], device=logits.device)
        sorted_logits.masked_fill_(position[None, :] >= top_k[:, None], float("-inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        # Rows with top_p == 1 are left alone: rounding in the cumsum must not cut their tail.
        cut = (mass_before >= top_p[:, None]) & (top_p[:, None] < 1.0)
        sorted_logits.masked_fill_(cut, float("-inf"))
    return logits.scatter(-1, order, sorted_logits)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the row's top probability."""
    probs = logits.softmax(dim=-1)
    threshold = min_p[:, None] * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


class Sampler:
    def __init__(self) -> None:
        # One generator per device, re-seeded for every seeded row: it never carries state across steps.
        self._generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, logits: torch.Tensor, batch: SamplingBatch) -> SamplerOutput:
        if logits.dim() != 2 or logits.shape[0] != len(batch):
            raise ValueError(f"expected logits [{len(batch)}, vocab], got {tuple(logits.shape)}")
        raw = logits.float()
        logits = raw
        if batch.penalties is not None:
            logits = batch.penalties.apply(logits)
        if batch.min_tokens_mask is not None:
            logits = batch.min_tokens_mask.apply(logits)

        if batch.all_greedy:
            token_ids = logits.argmax(dim=-1)
        elif fused_sample_applies(logits, batch):
            token_ids = fused_sample(logits, batch)  # greedy rows included
        else:
            token_ids = self._sample(logits, batch)
            if batch.any_greedy:
                token_ids = torch.where(batch.greedy, logits.argmax(dim=-1), token_ids)

        logprobs = None
        if batch.max_num_logprobs is not None:
            logprobs = gather_logprobs(torch.log_softmax(raw, dim=-1), token_ids, batch.max_num_logprobs)
        return SamplerOutput(token_ids, logprobs)

    def _sample(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        logits = logits / batch.temperature[:, None]
        if batch.top_k is not None or batch.top_p is not None:
            logits = apply_top_k_top_p(logits, batch.top_k, batch.top_p)
        if batch.min_p is not None:
            logits = apply_min_p(logits, batch.min_p)
        probs = logits.softmax(dim=-1)
        q = self._exponential_noise(probs, batch.seeds)
        return probs.div_(q).argmax(dim=-1)

    def _exponential_noise(self, probs: torch.Tensor, seeds: list[tuple[int, int]]) -> torch.Tensor:
        """q [B, V] ~ Exponential(1).

        Seeded rows draw from a generator seeded with their step seed, the rest
        from the default generator.
        """
        q = torch.empty_like(probs)
        if len(seeds) < probs.shape[0]:
            q.exponential_()
        if seeds:
            generator = self._generator(probs.device)
            vocab = probs.shape[-1]
            for row, seed in seeds:
                generator.manual_seed(seed)
                q[row] = torch.empty(vocab, dtype=probs.dtype, device=probs.device).exponential_(
                    generator=generator)
        # Exponential draws of exactly 0 would turn probs / q into inf or nan.
        return q.clamp_(min=torch.finfo(q.dtype).tiny)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device]
