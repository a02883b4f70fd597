"""Gathering a layer's K/V context through block tables on the CPU: advanced indexing vs index_select.

    python benchmarks/cpu_gather_microbench.py

SmolLM2-135M's cache shape (blocks of 16 tokens, 3 kv heads of 64), a pool of
1,456 blocks, contexts of 208 tokens (13 blocks) on scattered blocks, for 1
and 16 sequences. The measurement behind `gather_context` in
ruvonvllm/attention/torch_backend.py.
"""

from __future__ import annotations

import timeit

import torch

from ruvonvllm.attention.torch_backend import gather_context


def main() -> None:
    cache = torch.randn(1456, 16, 3, 64)
    print(f"{'sequences':>9} {'cache[tables] us':>17} {'index_select us':>16} {'speed-up':>9}")
    for num_seqs in (1, 16):
        tables = torch.randperm(1456)[:num_seqs * 13].view(num_seqs, 13).int()
        block_ids = tables.reshape(-1)
        indexing = min(timeit.repeat(lambda: cache[tables.long()], number=500, repeat=5)) / 500 * 1e6
        selecting = min(timeit.repeat(lambda: gather_context(cache, block_ids, num_seqs, 208),
                                      number=500, repeat=5)) / 500 * 1e6
        print(f"{num_seqs:9d} {indexing:17.1f} {selecting:16.1f} {indexing / selecting:8.1f}x")


if __name__ == "__main__":
    main()
