"""Where a nano prefill step's time goes, and the prefill kernel's launch parameters (H100/H200).

    python benchmarks/gpu/prefill_sweep.py                 # llama-3.1-8b's shapes
    python benchmarks/gpu/prefill_sweep.py --model qwen3   # qwen3-0.6b's

A nano prefill step is one 8,192-token chunk of fresh prompts of 100-1,024
tokens. For that chunk this times, with triton.testing.do_bench (median):

1. the paged prefill kernel at its defaults and every (BLOCK_M, BLOCK_N,
   num_warps, num_stages), as achieved TFLOP/s of causal attention;
2. torch's scaled_dot_product_attention (FlashAttention on Hopper) on the same
   sequences one by one, contiguous and unpaged: a peer for the kernel;
3. the layer's four matrix products at 8,192 rows (cuBLAS), so the attention
   time can be weighed against the rest of the layer.
"""

from __future__ import annotations

import argparse
import itertools
import random

import torch
import torch.nn.functional as F
import triton.testing

from ruvonvllm.attention.kernels import paged_prefill_attention

DEVICE = torch.device("cuda")
BLOCK_SIZE, HEAD_DIM, DTYPE = 16, 128, torch.bfloat16
CHUNK_TOKENS = 8192
# (query heads, kv heads, hidden size, intermediate size)
SHAPES = {"llama": (32, 8, 4096, 14336), "qwen3": (16, 8, 1024, 3072)}


def nano_chunk_lengths(seed: int = 0) -> list[int]:
    """Prompt lengths of one 8,192-token chunk: whole prompts of 100-1,024 tokens, the last one cut."""
    rng = random.Random(seed)
    lengths: list[int] = []
    while sum(lengths) < CHUNK_TOKENS:
        lengths.append(min(rng.randint(100, 1024), CHUNK_TOKENS - sum(lengths)))
    return lengths


def causal_flops(lengths: list[int], num_heads: int) -> float:
    # QK^T and PV: 2 multiply-adds of head_dim per visible (query, key) pair and head.
    return sum(4 * HEAD_DIM * num_heads * n * (n + 1) / 2 for n in lengths)


def make_paged_case(lengths: list[int], num_heads: int, num_kv_heads: int):
    needed = [-(-n // BLOCK_SIZE) for n in lengths]
    order = torch.randperm(sum(needed), device=DEVICE).to(torch.int32)
    tables = torch.zeros(len(lengths), max(needed), dtype=torch.int32, device=DEVICE)
    offset = 0
    for row, n in enumerate(needed):
        tables[row, :n] = order[offset:offset + n]
        offset += n
    k_cache = torch.randn(sum(needed), BLOCK_SIZE, num_kv_heads, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(sum(lengths), num_heads, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    starts = torch.tensor([0] + list(itertools.accumulate(lengths)), dtype=torch.int32, device=DEVICE)
    seq_lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    return q, k_cache, v_cache, tables, starts, seq_lens


def time_kernel(lengths, num_heads, num_kv_heads) -> None:
    q, k_cache, v_cache, tables, starts, seq_lens = make_paged_case(lengths, num_heads, num_kv_heads)
    out = torch.empty_like(q)
    flops = causal_flops(lengths, num_heads)

    def bench(**launch) -> float:
        return triton.testing.do_bench(lambda: paged_prefill_attention(
            q, k_cache, v_cache, tables, starts, seq_lens, max(lengths), HEAD_DIM ** -0.5, out, **launch),
            return_mode="median")

    default_ms = bench()
    print(f"paged prefill kernel, defaults: {default_ms * 1e3:.0f} us = {flops / default_ms / 1e9:.0f} TFLOP/s")
    results = []
    for block_m, block_n, warps, stages in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4)):
        try:
            ms = bench(block_m=block_m, block_n=block_n, num_warps=warps, num_stages=stages)
        except Exception as error:  # out of shared memory or registers for big tiles x stages
            print(f"  BLOCK_M {block_m} BLOCK_N {block_n} warps {warps} stages {stages}: {type(error).__name__}")
            continue
        results.append((ms, block_m, block_n, warps, stages))
    results.sort()
    for ms, block_m, block_n, warps, stages in results[:8]:
        print(f"   BLOCK_M {block_m:3d} BLOCK_N {block_n:3d} warps {warps} stages {stages}: {ms * 1e3:7.0f} us "
              f"{flops / ms / 1e9:5.0f} TFLOP/s")

    # The peer: FlashAttention through SDPA, one contiguous sequence at a time (GQA expanded).
    group = num_heads // num_kv_heads
    dense = []
    for n in lengths:
        qs = torch.randn(1, num_heads, n, HEAD_DIM, device=DEVICE, dtype=DTYPE)
        ks = torch.randn(1, num_kv_heads, n, HEAD_DIM, device=DEVICE, dtype=DTYPE)
        dense.append((qs, ks.repeat_interleave(group, 1), torch.randn_like(ks).repeat_interleave(group, 1)))

    def sdpa() -> None:
        for qs, ks, vs in dense:
            F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)

    ms = triton.testing.do_bench(sdpa, return_mode="median")
    print(f"torch SDPA, sequence by sequence: {ms * 1e3:.0f} us = {flops / ms / 1e9:.0f} TFLOP/s")


def time_matmuls(hidden: int, intermediate: int, num_heads: int, num_kv_heads: int) -> float:
    x = torch.randn(CHUNK_TOKENS, hidden, device=DEVICE, dtype=DTYPE)
    products = {
        "qkv": (hidden, (num_heads + 2 * num_kv_heads) * HEAD_DIM),
        "o": (num_heads * HEAD_DIM, hidden),
        "gate_up": (hidden, 2 * intermediate),
        "down": (intermediate, hidden),
    }
    total = 0.0
    for name, (k, n) in products.items():
        a = x if k == hidden else torch.randn(CHUNK_TOKENS, k, device=DEVICE, dtype=DTYPE)
        w = torch.randn(n, k, device=DEVICE, dtype=DTYPE)
        ms = triton.testing.do_bench(lambda: F.linear(a, w), return_mode="median")
        total += ms
        print(f"  {name:8s} {CHUNK_TOKENS} x {k} x {n}: {ms * 1e3:6.0f} us = "
              f"{2 * CHUNK_TOKENS * k * n / ms / 1e9:4.0f} TFLOP/s")
    print(f"matrix products per layer: {total * 1e3:.0f} us")
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(SHAPES), default="llama")
    args = parser.parse_args()
    num_heads, num_kv_heads, hidden, intermediate = SHAPES[args.model]
    lengths = nano_chunk_lengths()
    print(f"{torch.cuda.get_device_name()} {args.model}: chunk of {len(lengths)} prompts, {sum(lengths)} tokens")
    time_kernel(lengths, num_heads, num_kv_heads)
    time_matmuls(hidden, intermediate, num_heads, num_kv_heads)


if __name__ == "__main__":
    main()
