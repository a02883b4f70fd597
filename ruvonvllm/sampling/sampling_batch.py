"""The sampling parameters of one step's batch, as tensors: one row per sampling sequence.

Built once per step on the host from the sequences' SamplingParams and copied
to the logits' device, so the Sampler can treat a batch with mixed settings
(greedy next to top-p next to seeded) with a handful of vectorized ops.
Each filter is None when no row uses it, so a batch of plain requests pays for
nothing it does not need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ruvonvllm.sampling.penalties import MinTokensMask, Penalties
from ruvonvllm.sampling.sampling_row import SamplingRow


def step_seed(seed: int, index: int, step: int) -> int:
    """The generator seed for one sampling step of a seeded sequence.

    A pure function of the request's seed, the sibling index (so the n outputs
    of one request differ) and the number of tokens generated so far (so the
    generator carries no state across steps: the same seed gives the same text
    whatever else shares the batch, and after a preempted sequence is recomputed).
    """
    digest = hashlib.blake2b(f"{seed}:{index}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # manual_seed takes a non-negative int64


@dataclass
class SamplingBatch:
    temperature: torch.Tensor | None  # [B] float32; 1.0 on greedy rows so nothing divides by 0
    greedy: torch.Tensor | None       # [B] bool; both None when every row is greedy (argmax needs neither)
    all_greedy: bool
    any_greedy: bool
    top_k: torch.Tensor | None       # [B] int64, vocab_size where disabled
    top_p: torch.Tensor | None       # [B] float32, 1.0 where disabled
    min_p: torch.Tensor | None       # [B] float32, 0.0 where disabled
    penalties: Penalties | None
    min_tokens_mask: MinTokensMask | None
    seeds: list[tuple[int, int]]     # (row, step seed) of every non-greedy seeded row
    num_logprobs: list[int | None]   # per row: top-N logprobs asked for, None = none

    @property
    def max_num_logprobs(self) -> int | None:
        """The widest top-N any row asked for, None when no row wants logprobs."""
        asked = [n for n in self.num_logprobs if n is not None]
        return max(asked) if asked else None

    def __len__(self) -> int:
        return len(self.num_logprobs)

    @classmethod
    def from_sequences(cls, seqs: list[SamplingRow], vocab_size: int, device: torch.device) -> SamplingBatch:
        if not seqs:
            raise ValueError("a SamplingBatch needs at least one sequence")
        params = [s.sampling_params for s in seqs]
        greedy = [p.greedy for p in params]
        if all(greedy) and not any(p.logprobs is not None or p.has_penalties or p.min_tokens for p in params):
            # The common plain-greedy batch: the sampler only takes an argmax. No host lists,
            # no copies (this runs every step, for every sequence).
            return cls(None, None, True, True, None, None, None, None, None, [], [None] * len(seqs))

        def column(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

        # Greedy rows skip temperature, filters and noise; neutral values keep them harmless.
        top_k = [p.top_k if p.top_k_enabled and not g else vocab_size for p, g in zip(params, greedy)]
        top_p = [1.0 if g else p.top_p for p, g in zip(params, greedy)]
        min_p = [0.0 if g else p.min_p for p, g in zip(params, greedy)]
        seeds = [(row, step_seed(p.seed, s.index, s.num_output_tokens))
                 for row, (s, p, g) in enumerate(zip(seqs, params, greedy))
                 if p.seed is not None and not g]
        return cls(
            temperature=column([1.0 if g else p.temperature for p, g in zip(params, greedy)], torch.float32),
            greedy=column(greedy, torch.bool),
            all_greedy=all(greedy),
            any_greedy=any(greedy),
            top_k=column(top_k, torch.int64) if any(k < vocab_size for k in top_k) else None,
            top_p=column(top_p, torch.float32) if any(p < 1.0 for p in top_p) else None,
            min_p=column(min_p, torch.float32) if any(p > 0.0 for p in min_p) else None,
            penalties=Penalties.from_sequences(seqs, vocab_size, device),
            min_tokens_mask=MinTokensMask.from_sequences(seqs, vocab_size, device),
            seeds=seeds,
            num_logprobs=[p.logprobs for p in params],
        )
