"""Kernel (c): paged attention for ragged batches with several new tokens per sequence.

One kernel covers every step that is not pure decode: whole prompts, chunks of
a long prompt (chunked prefill), prompts whose prefix came from the prefix
cache, and mixed batches where some sequences prefill while others decode.
They are all the same computation (attention/base.py): sequence i has
`query_len` new tokens at positions `context_len .. seq_len - 1`, where
`context_len = seq_len - query_len` tokens were already cached, and new token j
attends to key positions `0 .. context_len + j`.

Because kernel (a) stores the new K/V before this kernel runs, every key,
cached or new, is read through the block table: no separate path for "the
prompt's own keys" and "the prefix".

Work split, FlashAttention-2 style: one program owns a tile of BLOCK_Q new
tokens of one sequence, for one kv head and all GROUP query heads sharing it.
Its BLOCK_M = BLOCK_Q * GROUP rows are (token, head) pairs, row r being token
r // GROUP, head r % GROUP, so each K/V tile is loaded once for the whole
group. The program walks the keys in tiles of BLOCK_N with an online softmax
(running max, running sum, fp32 accumulator) and stops at the tile's last
causal position, so later tiles of long prompts do more work than early ones,
exactly as attention does. The causal mask is applied on every key tile; the
full tiles before the diagonal could skip it, a small win left out for clarity.

The grid is (num_seqs, cdiv(max_query_len, BLOCK_Q), num_kv_heads); programs
whose tile starts past their sequence's query_len return at once. That wastes
some launches on ragged batches but needs no host-side tile map, hence no
extra host->device copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ruvonvllm.attention.kernels.common import dot_dtype, dot_precision, interpreting
from ruvonvllm.attention.kernels.paged_kv import load_kv_tile
from ruvonvllm.attention.kernels.decode import LOG2E


# The block table's width changes from step to step outside CUDA graphs. Triton compiles a new
# variant of a kernel whenever an integer argument changes from or to a multiple of 16 (the
# first step whose longest sequence needs 64 blocks cost a 0.7 s compile mid-run on the nano
# workload): never specialize on it.
@triton.jit(do_not_specialize=["stride_table"])
def _paged_prefill_kernel(
    q_ptr,                       # [num_tokens, num_heads, head_dim], sequences back to back
    k_cache_ptr, v_cache_ptr,    # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables_ptr,            # [num_seqs, max_blocks_per_seq] int32
    query_start_loc_ptr,         # [num_seqs + 1] int32
    seq_lens_ptr,                # [num_seqs] int32
    out_ptr,                     # [num_tokens, num_heads, head_dim]
    qk_scale,                    # softmax scale * log2(e)
    stride_q_t, stride_q_h,
    stride_out_t, stride_out_h,
    stride_cache_block, stride_cache_offset, stride_cache_head,
    stride_table,
    block_size,
    GROUP: tl.constexpr,         # query heads per kv head
    BLOCK_M: tl.constexpr,       # rows per program: BLOCK_Q tokens x GROUP heads (+ padding)
    BLOCK_Q: tl.constexpr,       # new tokens per program, BLOCK_M // GROUP
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,       # keys per tile
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    q_tile = tl.program_id(1)
    kv_head = tl.program_id(2)

    q_start = tl.load(query_start_loc_ptr + seq)
    query_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    first_token = q_tile * BLOCK_Q
    if first_token >= query_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    context_len = seq_len - query_len

    rows = tl.arange(0, BLOCK_M)
    tokens = first_token + rows // GROUP           # index among this sequence's new tokens
    heads = kv_head * GROUP + rows % GROUP
    row_mask = (rows < BLOCK_Q * GROUP) & (tokens < query_len)
    q_positions = context_len + tokens             # absolute position of each row's token
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + (q_start + tokens)[:, None] * stride_q_t + heads[:, None] * stride_q_h + dims[None, :],
                mask=row_mask[:, None], other=0.0).to(DOT_DTYPE)

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # Causality: no row of this tile sees past its last token's position.
    kv_end = context_len + tl.minimum(first_token + BLOCK_Q, query_len)
    table_row = block_tables_ptr + seq * stride_table
    for tile_start in range(0, kv_end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        key_mask = positions < kv_end
        k, v = load_kv_tile(k_cache_ptr, v_cache_ptr, table_row, positions, key_mask, kv_head, dims,
                            stride_cache_block, stride_cache_offset, stride_cache_head, block_size, DOT_DTYPE)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
        visible = key_mask[None, :] & (positions[None, :] <= q_positions[:, None])
        scores = tl.where(visible, scores, float("-inf"))

        # Key 0 is visible to every row, so after the first tile m is finite and
        # exp2(-inf - m) below is a clean 0, never NaN.
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=DOT_PRECISION)
        m = m_new

    out = acc / l[:, None]
    tl.store(out_ptr + (q_start + tokens)[:, None] * stride_out_t + heads[:, None] * stride_out_h + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None])


def default_tiles(head_dim: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_M rows, BLOCK_N keys, num_warps) for the prefill kernel.

    On a GPU: 128 x 64 tiles for rows of up to 256 bytes (head_dim 128 in
    bf16), smaller ones for wider rows so Q, the K/V tiles of the software
    pipeline and the fp32 accumulator still fit in shared memory and registers.
    Under the interpreter: small tiles, so the short sequences of CPU tests
    still cross tile boundaries.
    """
    if interpreting():
        return 32, 16, 4
    row_bytes = head_dim * torch.empty((), dtype=dtype).element_size()
    if row_bytes <= 256:
        return 128, 64, 8
    if row_bytes <= 512:
        return 64, 32, 4
    return 32, 16, 4


def paged_prefill_attention(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            block_tables: torch.Tensor, query_start_loc: torch.Tensor,
                            seq_lens: torch.Tensor, max_query_len: int, scale: float,
                            out: torch.Tensor, block_m: int | None = None, block_n: int | None = None,
                            num_warps: int | None = None, num_stages: int = 2) -> None:
    """query [num_tokens, num_heads, head_dim] (ragged, see query_start_loc) -> out, same shape.

    `block_m` counts rows, i.e. (token, query head) pairs; it is raised to the
    group size when a group is larger. Tiles and warps default to default_tiles();
    benchmarks/gpu/prefill_sweep.py times the alternatives.
    `max_query_len` comes from the host, so launching costs no device sync.
    """
    num_seqs = seq_lens.shape[0]
    num_heads, head_dim = query.shape[1], query.shape[2]
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    default_m, default_n, default_warps = default_tiles(head_dim, query.dtype)
    block_m, block_n, num_warps = block_m or default_m, block_n or default_n, num_warps or default_warps
    block_m = max(block_m, triton.next_power_of_2(group))
    block_q = block_m // group
    grid = (num_seqs, triton.cdiv(max_query_len, block_q), num_kv_heads)
    _paged_prefill_kernel[grid](
        query, k_cache, v_cache, block_tables, query_start_loc, seq_lens, out,
        scale * LOG2E,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0),
        k_cache.shape[1],
        GROUP=group, BLOCK_M=block_m, BLOCK_Q=block_q, HEAD_DIM=head_dim, BLOCK_N=block_n,
        DOT_DTYPE=dot_dtype(query.dtype), DOT_PRECISION=dot_precision(query.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )
