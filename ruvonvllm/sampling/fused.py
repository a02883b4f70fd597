"""Temperature sampling in one pass over the logits, on CUDA (Part 5, made fast in Part 20).

The sampler's general path (sampler.py) divides by the temperature, takes a
softmax, draws exponential noise, divides and takes an argmax: six passes over
a [batch, vocab] float32 tensor. At the nano workload's 256 rows of Qwen3's
151,936-token vocabulary that is 0.60 ms of every step (H200,
benchmarks/gpu/sampler_microbench.py, which times the call on an otherwise
idle GPU, host time included); the fused path takes 0.30 ms. When no row uses
top-k, top-p or min-p, the same draw is one kernel: argmax(logits / T +
Gumbel noise) is distributed as softmax(logits / T) (the Gumbel-max trick; the exponential race of the
general path is the same trick, written with probabilities).

The noise comes from Triton's Philox generator keyed by (row seed, token
index). A seeded request's row seed is its step seed (sampling_batch.py), so
its text is reproducible and independent of its batch neighbours, as on the
general path; unseeded rows get seeds drawn from torch's generator. The random
stream differs from the general path's, so a seed gives a different (equally
distributed) text on CUDA than on the CPU.
"""

from __future__ import annotations

import torch

from ruvonvllm.ops import use_triton_kernels
from ruvonvllm.sampling.params import SamplingParams
from ruvonvllm.sampling.sampling_batch import SamplingBatch
from ruvonvllm.sampling.sampling_row import PlainSamplingRow

# Tokens per program: 4,096 float32 logits (16 KB) keeps loads wide and the partial winners few
# (37 per row of a 151,936-token vocabulary).
_BLOCK = 4096
_SEED_RANGE = 2**62


# Below this many rows the general path's few small kernels are quicker than the fused path's
# setup (seeds, casts, the final argmax): 0.074 vs 0.115 ms at 1 row, 0.083 vs 0.120 ms at 8,
# 0.199 vs 0.142 ms at 64, 0.604 vs 0.295 ms at 256 (H200, benchmarks/gpu/sampler_microbench.py).
MIN_ROWS = 64


def fused_sample_applies(logits: torch.Tensor, batch: SamplingBatch) -> bool:
    return (logits.shape[0] >= MIN_ROWS and batch.top_k is None and batch.top_p is None
            and batch.min_p is None and batch.temperature is not None and use_triton_kernels(logits))


def fused_sample(logits: torch.Tensor, batch: SamplingBatch, block: int = _BLOCK) -> torch.Tensor:
    """One token per row of logits [B, V] float32: greedy rows their argmax, the others a
    draw from softmax(logits / temperature). `block` (tokens per program) is for tests."""
    import triton

    from ruvonvllm.sampling.kernels import gumbel_max_partial_kernel

    rows, vocab_size = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    seeds = row_seeds(batch, rows, logits.device)
    num_blocks = triton.cdiv(vocab_size, block)
    best_score = torch.empty(rows, num_blocks, dtype=torch.float32, device=logits.device)
    best_index = torch.empty(rows, num_blocks, dtype=torch.int64, device=logits.device)
    gumbel_max_partial_kernel[(rows, num_blocks)](
        logits, 1.0 / batch.temperature, batch.greedy.to(torch.int8), seeds, best_score, best_index,
        logits.stride(0), vocab_size, num_blocks, BLOCK=block, num_warps=8)
    winner = best_score.argmax(dim=1, keepdim=True)
    return best_index.gather(1, winner).squeeze(1)


def compile_kernel(vocab_size: int, device: torch.device) -> None:
    """Launch the kernel once, on one dummy row of the real vocabulary, where it would run.

    Triton compiles a kernel at its first launch. Unlike the model's kernels,
    which graph capture and the warm-up run, this one first runs when a step
    samples MIN_ROWS rows at a temperature: on a fresh H200 machine that put a
    0.7 s compile inside the timed nano run (benchmarks/gpu/compiles_during_run.py).
    The vocabulary size, stride and block count are what Triton specializes on;
    the row count is only the grid.
    """
    logits = torch.zeros(1, vocab_size, device=device)
    if not use_triton_kernels(logits):
        return
    warm_up_row = PlainSamplingRow(SamplingParams(temperature=1.0))
    fused_sample(logits, SamplingBatch.from_sequences([warm_up_row], vocab_size, device))


def row_seeds(batch: SamplingBatch, rows: int, device: torch.device) -> torch.Tensor:
    """[rows] int64: the step seed of every seeded row, a fresh draw from torch's generator
    for the others."""
    seeds = torch.randint(0, _SEED_RANGE, (rows,), dtype=torch.int64, device=device)
    if batch.seeds:
        seeded_rows, values = zip(*batch.seeds)
        seeds[torch.tensor(seeded_rows, device=device)] = torch.tensor(
            [v % _SEED_RANGE for v in values], dtype=torch.int64, device=device)
    return seeds
