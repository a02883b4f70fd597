"""Launch-parameter sweep of the paged decode kernel at nano-like shapes (H100/H200).

    python benchmarks/gpu/decode_sweep.py

Qwen3-0.6B's attention (16 q / 8 kv heads, head_dim 128, bf16, block size 16)
and Llama-3.1-8B's (32 / 8). For each case, every (BLOCK_N, num_warps,
num_stages) is timed with triton.testing.do_bench (median) and reported as
achieved K/V read bandwidth; the current default is marked. Used to choose
`default_block_n` and the launch defaults in ruvonvllm/attention/kernels/decode.py.
"""

from __future__ import annotations

import argparse
import itertools
import random

import torch
import triton.testing

from ruvonvllm.attention.kernels import choose_num_splits, paged_decode_attention

DEVICE = torch.device("cuda")
BLOCK_SIZE, HEAD_DIM, DTYPE = 16, 128, torch.bfloat16


def make_case(context_lens: list[int], num_heads: int, num_kv_heads: int):
    needed = [-(-n // BLOCK_SIZE) for n in context_lens]
    order = torch.randperm(sum(needed), device=DEVICE).to(torch.int32)
    width = max(needed)
    tables = torch.zeros(len(context_lens), width, dtype=torch.int32, device=DEVICE)
    offset = 0
    for row, n in enumerate(needed):
        tables[row, :n] = order[offset:offset + n]
        offset += n
    cache_shape = (sum(needed), BLOCK_SIZE, num_kv_heads, HEAD_DIM)
    k_cache = torch.randn(cache_shape, device=DEVICE, dtype=DTYPE)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(len(context_lens), num_heads, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    seq_lens = torch.tensor(context_lens, dtype=torch.int32, device=DEVICE)
    kv_bytes = sum(context_lens) * 2 * num_kv_heads * HEAD_DIM * 2
    return q, k_cache, v_cache, tables, seq_lens, kv_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="", help="Only the cases whose name contains this, e.g. llama.")
    args = parser.parse_args()
    random.seed(0)
    sms = torch.cuda.get_device_properties(DEVICE).multi_processor_count
    cases = {
        "qwen3 b256 ctx 100-1500": ([random.randint(100, 1500) for _ in range(256)], 16, 8),
        "qwen3 b64 ctx 1k": ([1024] * 64, 16, 8),
        "llama b256 ctx 100-1500": ([random.randint(100, 1500) for _ in range(256)], 32, 8),
        "qwen3 b1 ctx 4k": ([4096], 16, 8),
    }
    print(torch.cuda.get_device_name(), "default: BLOCK_N 64, num_warps 4, num_stages 2")
    for name, (lens, num_heads, num_kv_heads) in cases.items():
        if args.cases not in name:
            continue
        q, k_cache, v_cache, tables, seq_lens, kv_bytes = make_case(lens, num_heads, num_kv_heads)
        out = torch.empty_like(q)
        splits = choose_num_splits(len(lens), num_kv_heads, max(lens), sms)
        rows = len(lens) * num_heads * splits
        workspace = (torch.empty(rows * HEAD_DIM, device=DEVICE), torch.empty(rows, device=DEVICE))
        results = []
        for block_n, warps, stages in itertools.product((16, 32, 64, 128), (2, 4, 8), (1, 2, 3, 4)):
            def run():
                paged_decode_attention(q, k_cache, v_cache, tables, seq_lens, max(lens), HEAD_DIM ** -0.5,
                                       out, splits, workspace, block_n=block_n, num_warps=warps,
                                       num_stages=stages)
            try:
                ms = triton.testing.do_bench(run, return_mode="median")
            except Exception as error:  # out of shared memory for big tiles x stages
                print(f"  {name} BLOCK_N {block_n} warps {warps} stages {stages}: {type(error).__name__}")
                continue
            results.append((ms, block_n, warps, stages))
        results.sort()
        default = next(r for r in results if r[1:] == (64, 4, 2))
        print(f"{name} (splits {splits}): default {default[0] * 1e3:.1f} us = {kv_bytes / default[0] / 1e6:.0f} GB/s")
        for ms, block_n, warps, stages in results[:6]:
            print(f"   BLOCK_N {block_n:3d} warps {warps} stages {stages}: {ms * 1e3:8.1f} us "
                  f"{kv_bytes / ms / 1e6:6.0f} GB/s")


if __name__ == "__main__":
    main()
