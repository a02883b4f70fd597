"""How many KV blocks the pool gets (Part 14: the memory pool).

The pool is sized once at start-up. On CUDA the default takes a fraction of
the card's memory (vLLM's gpu_memory_utilization) minus what the weights and
a working margin already hold; on the CPU a fixed number of bytes, since
taking a fraction of the host's RAM would starve everything else on it.
"""

from __future__ import annotations

import torch

from ruvonvllm.config import CacheConfig

DEFAULT_CPU_KV_BYTES = 1 << 30  # 1 GiB: ~23k tokens of SmolLM2-135M in fp32
# Activations of the largest step, the sampler's sort and allocator slack live outside the pool.
CUDA_WORKSPACE_BYTES = 2 << 30


def num_kv_blocks(cache: CacheConfig, bytes_per_token: int, device: torch.device) -> int:
    if cache.num_blocks is not None:
        return cache.num_blocks
    bytes_per_block = bytes_per_token * cache.block_size
    if cache.kv_cache_bytes is not None:
        budget = cache.kv_cache_bytes
    elif device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        used = total - free
        budget = int(total * cache.gpu_memory_utilization) - used - CUDA_WORKSPACE_BYTES
    else:
        budget = DEFAULT_CPU_KV_BYTES
    blocks = budget // bytes_per_block
    if blocks < 1:
        raise ValueError(f"the KV cache budget ({budget / 2**20:.0f} MiB) is too small for one block of "
                         f"{cache.block_size} tokens ({bytes_per_block / 2**20:.2f} MiB); raise "
                         "kv_cache_bytes or gpu_memory_utilization")
    return int(blocks)
