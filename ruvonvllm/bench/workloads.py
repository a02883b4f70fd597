"""Benchmark workloads: lists of (prompt token ids, max_tokens) that anyone can regenerate.

`nano_workload()` with its defaults is the workload nano-vllm's README
publishes (see shared/BENCHMARKS.md): Python's random seeded with 0, 256
prompts of randint(100, 1024) ids each randint(0, 10000), then for each request
max_tokens = randint(100, 1024). 142,827 prompt tokens and 133,966 output
tokens in all. `num_requests` and `length_scale` shrink it for CPU runs
(length_scale multiplies the four length bounds); the defaults reproduce the
published numbers exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NANO_NUM_REQUESTS = 256
NANO_PROMPT_LEN = (100, 1024)
NANO_OUTPUT_LEN = (100, 1024)
NANO_MAX_TOKEN_ID = 10000
NANO_TEMPERATURE = 0.6


@dataclass(frozen=True)
class WorkloadRequest:
    prompt_token_ids: list[int]
    max_tokens: int


def _scaled(bounds: tuple[int, int], scale: float) -> tuple[int, int]:
    low, high = max(1, round(bounds[0] * scale)), max(1, round(bounds[1] * scale))
    return low, max(low, high)


def nano_workload(num_requests: int = NANO_NUM_REQUESTS, length_scale: float = 1.0, seed: int = 0,
                  max_token_id: int = NANO_MAX_TOKEN_ID) -> list[WorkloadRequest]:
    """The nano-vllm workload, or a smaller one with the same shape.

    The draws happen in nano-vllm's order (every prompt first: its length, then its
    ids; then every max_tokens), so the defaults give its exact token counts.
    """
    if num_requests < 1:
        raise ValueError(f"num_requests must be >= 1, got {num_requests}")
    if length_scale <= 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale}")
    rng = random.Random(seed)  # the same stream as random.seed(seed) with the module functions
    prompt_low, prompt_high = _scaled(NANO_PROMPT_LEN, length_scale)
    output_low, output_high = _scaled(NANO_OUTPUT_LEN, length_scale)
    prompts = [[rng.randint(0, max_token_id) for _ in range(rng.randint(prompt_low, prompt_high))]
               for _ in range(num_requests)]
    max_tokens = [rng.randint(output_low, output_high) for _ in range(num_requests)]
    return [WorkloadRequest(p, m) for p, m in zip(prompts, max_tokens)]


def fit_to_vocab(requests: list[WorkloadRequest], vocab_size: int) -> list[WorkloadRequest]:
    """The same requests with every prompt id taken modulo vocab_size.

    The nano workload draws ids up to 10,000, more than a small test model's vocabulary.
    Wrapping the ids (rather than drawing again from a narrower range) keeps every prompt's
    length, so the token counts stay nano-vllm's.
    """
    return [WorkloadRequest([token % vocab_size for token in r.prompt_token_ids], r.max_tokens) for r in requests]


def fixed_workload(num_requests: int, prompt_len: int, output_len: int, seed: int = 0,
                   max_token_id: int = NANO_MAX_TOKEN_ID) -> list[WorkloadRequest]:
    """Every request the same shape: random prompt ids of prompt_len, exactly output_len tokens out."""
    if num_requests < 1 or prompt_len < 1 or output_len < 1:
        raise ValueError("num_requests, prompt_len and output_len must all be >= 1")
    rng = random.Random(seed)
    return [WorkloadRequest([rng.randint(0, max_token_id) for _ in range(prompt_len)], output_len)
            for _ in range(num_requests)]
