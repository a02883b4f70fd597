"""Storing new K/V rows in a layer's paged cache: the pure-torch reference.

Two places store K/V: the attention backend before it attends (attention/), and the
rotary op when it fuses the store into its pass (ops/rotary.py). Both call this one
function on their reference path, so it lives here, below both; the Triton kernels
(attention/kernels/kv_write.py, the rotary kernel) are checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVCacheWrite:
    """Where a layer's new k and v rows go: its paged cache, at each token's slot (< 0: padding)."""

    k_cache: torch.Tensor       # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor  # [T] int64


def write_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store each new token's K/V at its slot. Slots < 0 mean "don't store" (padding)."""
    num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    if slot_mapping.numel() and bool((slot_mapping < 0).any()):  # padding tokens: index_copy_ can't skip
        keep = slot_mapping >= 0
        key, value, slot_mapping = key[keep], value[keep], slot_mapping[keep]
    flat_k = k_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
    flat_v = v_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
    flat_k.index_copy_(0, slot_mapping, key.to(k_cache.dtype))
    flat_v.index_copy_(0, slot_mapping, value.to(v_cache.dtype))
