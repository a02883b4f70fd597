"""Kernel (a): write this step's new K/V rows into the paged cache.

The model produces key/value as `[num_tokens, num_kv_heads, head_dim]`; token t
must land in cache slot `slot_mapping[t]` (slot = block * block_size + offset,
see attention/base.py). One program handles one token and all its kv heads, so
each program moves two contiguous `num_kv_heads * head_dim` rows: the copy is
bandwidth-bound, and one launch replaces the two scatter ops (index_copy_) of
the torch reference. The cast to the cache's dtype happens on the way.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ruvonvllm.ops.pdl import pdl_launch_args


@triton.jit
def _store_kv_kernel(
    key_ptr, value_ptr,            # [num_tokens, num_kv_heads, head_dim]
    k_cache_ptr, v_cache_ptr,      # [num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping_ptr,              # [num_tokens] int64
    stride_key_t, stride_key_h,
    stride_value_t, stride_value_h,
    stride_cache_block, stride_cache_offset, stride_cache_head,  # shared by k_cache and v_cache
    block_size,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,         # NUM_KV_HEADS rounded up to a power of two (tl.arange needs one)
    USE_PDL: tl.constexpr,         # programmatic dependent launch (ops/pdl.py)
):
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token)
    # A negative slot marks a padding token (for example in a CUDA-graph batch): store nothing.
    # A branch rather than a term of the mask: a tile mask combined with a scalar comparison is
    # an int32 tensor, not a boolean one, in Triton's interpreter (3.9 refuses it as a mask).
    if slot >= 0:
        block = slot // block_size
        offset = slot % block_size

        heads = tl.arange(0, BLOCK_H)
        dims = tl.arange(0, HEAD_DIM)
        mask = heads[:, None] < NUM_KV_HEADS

        key = tl.load(key_ptr + token * stride_key_t + heads[:, None] * stride_key_h + dims[None, :], mask=mask)
        value = tl.load(value_ptr + token * stride_value_t + heads[:, None] * stride_value_h + dims[None, :],
                        mask=mask)

        cache_offsets = block * stride_cache_block + offset * stride_cache_offset \
            + heads[:, None] * stride_cache_head + dims[None, :]
        tl.store(k_cache_ptr + cache_offsets, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + cache_offsets, value.to(v_cache_ptr.dtype.element_ty), mask=mask)

def store_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """key/value [num_tokens, num_kv_heads, head_dim] -> cache slots `slot_mapping` (< 0: skipped)."""
    num_tokens, num_kv_heads, head_dim = key.shape
    assert k_cache.stride() == v_cache.stride(), "k_cache and v_cache must share one layout"
    assert key.stride(-1) == 1 and value.stride(-1) == 1 and k_cache.stride(-1) == 1
    if num_tokens == 0:
        return
    _store_kv_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        k_cache.shape[1],
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(num_kv_heads),
        **pdl_launch_args(key.device),
    )
