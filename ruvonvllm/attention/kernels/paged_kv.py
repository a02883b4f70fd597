"""The paged K/V read both attention kernels share: one tile of keys and values, found
through a sequence's block table.

Inlined by Triton into each kernel, so it costs nothing over writing it out twice; it
exists so that the block-table arithmetic (int64 offsets, masked loads) has one
definition that the decode and prefill kernels cannot let drift apart.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_kv_tile(k_cache_ptr, v_cache_ptr, table_row, positions, key_mask, kv_head, dims,
                 stride_cache_block, stride_cache_offset, stride_cache_head, block_size,
                 DOT_DTYPE: tl.constexpr):
    """K and V rows [BLOCK_N, HEAD_DIM] of `kv_head` at token `positions`; 0 where key_mask is off.

    table_row points at the sequence's block table row; cache tensors are
    [num_blocks, block_size, num_kv_heads, head_dim].
    """
    # Physical address of each key row, through the block table (int64: big pools overflow int32).
    blocks = tl.load(table_row + positions // block_size, mask=key_mask, other=0).to(tl.int64)
    rows_in_cache = blocks * stride_cache_block + (positions % block_size) * stride_cache_offset \
        + kv_head * stride_cache_head
    kv_offsets = rows_in_cache[:, None] + dims[None, :]
    k = tl.load(k_cache_ptr + kv_offsets, mask=key_mask[:, None], other=0.0).to(DOT_DTYPE)
    v = tl.load(v_cache_ptr + kv_offsets, mask=key_mask[:, None], other=0.0).to(DOT_DTYPE)
    return k, v
