"""Kernel (b): paged attention for decode steps (one new token per sequence).

Decode is bandwidth-bound: each new query reads its sequence's whole K/V
context once and does two small matrix-vector products with it. Two ideas keep
the memory system busy:

* GQA-aware programs. All query heads of a kv head's group read the same K/V,
  so one program owns a (sequence, kv head) pair and computes every query head
  of the group together: K/V are loaded once per group instead of once per
  query head (a 2x saving for Qwen3-0.6B's 16/8 heads, 8x for 64/8). The group
  is padded to 16 rows so tl.dot can use tensor cores.
* Split-K ("flash-decoding", Dao et al. 2023). With small batches,
  num_seqs * num_kv_heads programs cannot fill a GPU's ~132 SMs, and a long
  context makes each of them run long. So the context is cut into partitions,
  one program per (sequence, kv head, partition), each writing a partial
  result: its output normalised by its own softmax sum, plus the log of that
  sum (the log-sum-exp, "lse"). A second, tiny kernel merges the partitions:
  with weights exp(lse_p - max lse) it recovers exactly the softmax over the
  whole context.

Inside a program, keys are visited in tiles of BLOCK_N tokens with an online
softmax (Milakov & Gimelshein 2018; FlashAttention): a running max `m`, running
sum `l` and unnormalised output `acc`, rescaled whenever the max grows, all in
fp32. Exponentials are base 2 (exp2 is one hardware instruction), with
log2(e) folded into the softmax scale.

The cache is read through the block table one token at a time: token n of a
sequence lives in block `block_table[n // block_size]` at offset
`n % block_size`. Because every key row gets its own address, a tile may span
several blocks and any block size works (powers of two or not). This is also
why the kernel uses explicit pointer arithmetic and not block pointers
(tl.make_block_ptr): a block pointer describes one strided rectangle, and a
sequence's K/V is scattered across the pool.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ruvonvllm.attention.kernels.common import dot_dtype, dot_precision, interpreting
from ruvonvllm.attention.kernels.paged_kv import load_kv_tile
from ruvonvllm.ops.pdl import pdl_launch_args

LOG2E = math.log2(math.e)
# A partition shorter than this spends more time on bookkeeping than on reading K/V.
MIN_PARTITION_SIZE = 256
MAX_NUM_SPLITS = 64


# The block table's width changes from step to step outside CUDA graphs. Triton compiles a new
# variant of a kernel whenever an integer argument changes from or to a multiple of 16 (the
# first step whose longest sequence needs 64 blocks cost a 0.7 s compile mid-run on the nano
# workload): never specialize on it.
@triton.jit(do_not_specialize=["stride_table"])
def _paged_decode_kernel(
    q_ptr,                       # [num_seqs, num_heads, head_dim]: token i belongs to sequence i
    k_cache_ptr, v_cache_ptr,    # [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables_ptr,            # [num_seqs, max_blocks_per_seq] int32
    seq_lens_ptr,                # [num_seqs] int32
    out_ptr,                     # [num_seqs, num_heads, head_dim]: written without split-K
    partial_out_ptr,             # [num_seqs, num_heads, num_splits, head_dim] fp32: written with it
    partial_lse_ptr,             # [num_seqs, num_heads, num_splits] fp32
    qk_scale,                    # softmax scale * log2(e)
    stride_q_t, stride_q_h,
    stride_out_t, stride_out_h,
    stride_cache_block, stride_cache_offset, stride_cache_head,
    stride_table,
    block_size,
    GROUP: tl.constexpr,         # query heads per kv head
    BLOCK_G: tl.constexpr,       # GROUP padded to a power of two >= 16 (tl.dot's minimum)
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,       # keys per tile
    SPLIT_K: tl.constexpr,       # write partials for the merge kernel instead of the output
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_PDL: tl.constexpr,       # programmatic dependent launch (ops/pdl.py)
):
    if USE_PDL:  # everything this kernel reads was written by an earlier kernel or copy
        gdc_launch_dependents()
        gdc_wait()
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)

    seq_len = tl.load(seq_lens_ptr + seq)
    # Each sequence cuts its own context into num_splits partitions of whole tiles. Sized
    # per sequence on the device, a short context next to a long one still spreads over
    # the splits, and a CUDA graph whose num_splits was fixed for the longest possible
    # context stays correct (and parallel) for every shorter one.
    partition_size = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * partition_size
    end = tl.minimum(start + partition_size, seq_len)  # start >= end: an empty partition

    # Rows of this program = the query heads that share kv_head.
    rows = tl.arange(0, BLOCK_G)
    row_mask = rows < GROUP
    heads = kv_head * GROUP + rows
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + seq * stride_q_t + heads[:, None] * stride_q_h + dims[None, :],
                mask=row_mask[:, None], other=0.0).to(DOT_DTYPE)

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)

    table_row = block_tables_ptr + seq * stride_table
    for tile_start in range(start, end, BLOCK_N):
        positions = tile_start + tl.arange(0, BLOCK_N)
        key_mask = positions < end
        k, v = load_kv_tile(k_cache_ptr, v_cache_ptr, table_row, positions, key_mask, kv_head, dims,
                            stride_cache_block, stride_cache_offset, stride_cache_head, block_size, DOT_DTYPE)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_G, BLOCK_N]
        scores = tl.where(key_mask[None, :], scores, float("-inf"))

        # Online softmax: every tile holds at least one real key, so m_new is finite.
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp2(m - m_new)              # rescales what was accumulated under the old max
        p = tl.exp2(scores - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=DOT_PRECISION)
        m = m_new

    # An empty partition (or a padding sequence with seq_len 0) has l == 0: it yields
    # output 0 and lse -inf, which gives it weight 0 in the merge.
    has_keys = l > 0
    safe_l = tl.where(has_keys, l, 1.0)
    out = acc / safe_l[:, None]
    if SPLIT_K:
        lse = tl.where(has_keys, m + tl.log2(safe_l), float("-inf"))  # base 2, like m
        num_heads = GROUP * tl.num_programs(1)
        partial_row = (seq * num_heads + heads) * num_splits + split
        tl.store(partial_out_ptr + partial_row[:, None] * HEAD_DIM + dims[None, :], out,
                 mask=row_mask[:, None])
        tl.store(partial_lse_ptr + partial_row, lse, mask=row_mask)
    else:
        tl.store(out_ptr + seq * stride_out_t + heads[:, None] * stride_out_h + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None])


@triton.jit
def _merge_partitions_kernel(
    partial_out_ptr,             # [num_seqs, num_heads, num_splits, head_dim] fp32
    partial_lse_ptr,             # [num_seqs, num_heads, num_splits] fp32, base-2 log-sum-exp
    out_ptr,                     # [num_seqs, num_heads, head_dim]
    stride_out_t, stride_out_h,
    num_splits,
    BLOCK_S: tl.constexpr,       # num_splits rounded up to a power of two
    HEAD_DIM: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()
    seq = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, BLOCK_S)
    dims = tl.arange(0, HEAD_DIM)
    base = seq * tl.num_programs(1) + head

    valid = splits < num_splits
    lse = tl.load(partial_lse_ptr + base * num_splits + splits, mask=valid, other=float("-inf"))
    partial = tl.load(partial_out_ptr + (base * num_splits + splits)[:, None] * HEAD_DIM + dims[None, :],
                      mask=valid[:, None], other=0.0)
    # Each partial is already normalised by its own sum l_p = 2**lse_p, so weighting it by
    # l_p / sum(l) gives the softmax over the whole context. Subtracting the max lse keeps
    # exp2 in range; the max is finite unless the sequence is empty padding (seq_len 0).
    max_lse = tl.max(lse, axis=0)
    max_lse = tl.where(max_lse == float("-inf"), 0.0, max_lse)
    weights = tl.exp2(lse - max_lse)              # [BLOCK_S]; 0 for empty partitions
    total = tl.sum(weights, axis=0)
    out = tl.sum(partial * weights[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * stride_out_t + head * stride_out_h + dims, out.to(out_ptr.dtype.element_ty))


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int) -> int:
    """Enough programs to give every SM about two, without partitions shorter than MIN_PARTITION_SIZE.

    Batch 64 x 8 kv heads already makes 512 programs: no split. Batch 1 at 8k
    context makes 8: split 32 ways into 256-token partitions.
    """
    programs = num_seqs * num_kv_heads
    wanted = triton.cdiv(2 * num_sms, max(programs, 1))
    return max(1, min(wanted, triton.cdiv(max_seq_len, MIN_PARTITION_SIZE), MAX_NUM_SPLITS))


def default_block_n(head_dim: int, dtype: torch.dtype) -> int:
    """Keys per tile: 64 rows of up to 256 bytes; fewer for wider rows, to bound shared memory.

    Under the interpreter 16, so that short CPU-test contexts span several tiles.
    """
    if interpreting():
        return 16
    row_bytes = head_dim * torch.empty((), dtype=dtype).element_size()
    return 64 if row_bytes <= 256 else 32


def paged_decode_attention(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor, max_seq_len: int,
                           scale: float, out: torch.Tensor, num_splits: int,
                           workspace: tuple[torch.Tensor, torch.Tensor] | None = None,
                           block_n: int | None = None, num_warps: int = 4, num_stages: int = 2) -> None:
    """query [num_seqs, num_heads, head_dim] (one token per sequence) -> out, same shape.

    `num_splits` partitions each context (1 = no split-K). With more than one,
    `workspace` must hold at least num_seqs * num_heads * num_splits * (head_dim + 1)
    fp32 values as (partial_out, partial_lse) flat buffers; the caller owns them so
    they can be reused across layers and steps. The launch depends on no device
    value: partitions are sized per sequence inside the kernel, so `max_seq_len`
    (a host-side bound on seq_lens) only serves callers choosing num_splits, and
    the launch can be captured in a CUDA graph.
    """
    block_n = block_n or default_block_n(query.shape[2], query.dtype)
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    if num_splits > 1:
        assert workspace is not None, "split-K decode needs a workspace"
        partial_out = workspace[0][: num_seqs * num_heads * num_splits * head_dim]
        partial_lse = workspace[1][: num_seqs * num_heads * num_splits]
    else:
        partial_out = partial_lse = out  # not touched by the kernel without split-K

    _paged_decode_kernel[(num_seqs, num_kv_heads, num_splits)](
        query, k_cache, v_cache, block_tables, seq_lens, out, partial_out, partial_lse,
        scale * LOG2E,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0),
        k_cache.shape[1],
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_N=block_n, SPLIT_K=num_splits > 1,
        DOT_DTYPE=dot_dtype(query.dtype), DOT_PRECISION=dot_precision(query.dtype),
        num_warps=num_warps, num_stages=num_stages, **pdl_launch_args(query.device),
    )
    if num_splits > 1:
        _merge_partitions_kernel[(num_seqs, num_heads)](
            partial_out, partial_lse, out, out.stride(0), out.stride(1), num_splits,
            BLOCK_S=triton.next_power_of_2(num_splits), HEAD_DIM=head_dim,
            num_warps=4, **pdl_launch_args(query.device),
        )
