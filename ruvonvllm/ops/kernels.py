"""The Triton kernels behind ruvonvllm/ops (imported only when one runs: the CPU path never needs Triton).

The row operations are memory-bound, so each program handles whole rows (or
one head of one token) and does every step of its op in registers, in float32,
casting to the activation dtype exactly where HF's torch code rounds.

Every kernel takes USE_PDL (ops/pdl.py): when launched with programmatic
dependent launch it lets the next kernel start at once, and reads what earlier
kernels wrote only after gdc_wait().
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr,
    stride_x, stride_residual, stride_out,
    hidden_size, eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,           # hidden_size rounded up to a power of two
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        gdc_launch_dependents()
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden_size
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)  # a parameter: no kernel writes it
    if USE_PDL:
        gdc_wait()
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_residual + cols, mask=mask, other=0.0)
        # Rounded to the activation dtype, as torch's `x + residual` is, before it is normalized.
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(residual_ptr + row * stride_residual + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    variance = tl.sum(x32 * x32, axis=0) / hidden_size
    normed = (x32 * tl.rsqrt(variance + eps)).to(x_ptr.dtype.element_ty)
    out = normed.to(tl.float32) * weight.to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_qk_kernel(
    qkv_ptr,                       # [T, >= (num_q_heads + 2 * num_kv_heads) * head_dim]: q, k, v heads
    cos_sin_ptr,                   # [T, head_dim] float32: cos of each angle, then sin
    q_norm_ptr, k_norm_ptr,        # [head_dim] each; read only when QK_NORM
    slot_mapping_ptr,              # [T] int64 cache slot of each token (< 0: padding); with STORE_KV
    k_cache_ptr, v_cache_ptr,      # [num_blocks, block_size, num_kv_heads, head_dim]; with STORE_KV
    stride_qkv, stride_cos_sin,
    stride_cache_block, stride_cache_offset, stride_cache_head,
    num_q_heads, num_kv_heads, num_heads, block_size, eps,
    HALF_DIM: tl.constexpr,
    BLOCK: tl.constexpr,           # HALF_DIM rounded up to a power of two
    BLOCK_H: tl.constexpr,         # heads per program (a power of two)
    QK_NORM: tl.constexpr,
    STORE_KV: tl.constexpr,        # also write k (rotated) and v into the paged cache
    USE_PDL: tl.constexpr,
):
    # Program (token, j) takes heads j * BLOCK_H .. of one token: q heads, then k heads, then
    # (with STORE_KV) v heads, num_heads in all. Rows of the tiles below are heads.
    if USE_PDL:
        gdc_launch_dependents()
    token = tl.program_id(0)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    is_q = (heads < num_q_heads)[:, None]
    is_v = (heads >= num_q_heads + num_kv_heads)[:, None]
    dtype = qkv_ptr.dtype.element_ty
    dims = tl.arange(0, BLOCK)
    dim_mask = (dims < HALF_DIM)[None, :]
    mask = (heads < num_heads)[:, None] & dim_mask
    if QK_NORM:  # parameters: no kernel writes them, so they load before the wait
        w1 = tl.where(is_q, tl.load(q_norm_ptr + dims, mask=dims < HALF_DIM, other=0.0)[None, :],
                      tl.load(k_norm_ptr + dims, mask=dims < HALF_DIM, other=0.0)[None, :]).to(tl.float32)
        w2 = tl.where(is_q, tl.load(q_norm_ptr + HALF_DIM + dims, mask=dims < HALF_DIM, other=0.0)[None, :],
                      tl.load(k_norm_ptr + HALF_DIM + dims, mask=dims < HALF_DIM, other=0.0)[None, :]
                      ).to(tl.float32)
    if USE_PDL:
        gdc_wait()
    # Heads of a row are adjacent, q then k then v, so one formula addresses all three.
    offsets = token * stride_qkv + heads[:, None] * (2 * HALF_DIM) + dims[None, :]
    x1 = tl.load(qkv_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(qkv_ptr + offsets + HALF_DIM, mask=mask, other=0.0).to(tl.float32)
    raw1, raw2 = x1, x2            # a v head's values, which are neither normalized nor rotated

    if QK_NORM:
        # Qwen3: RMSNorm over each head's head_dim values, with q's or k's own weight.
        variance = (tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF_DIM)
        rstd = tl.rsqrt(variance + eps)[:, None]
        x1 = ((x1 * rstd).to(dtype).to(tl.float32) * w1).to(dtype).to(tl.float32)
        x2 = ((x2 * rstd).to(dtype).to(tl.float32) * w2).to(dtype).to(tl.float32)

    # HF casts cos/sin to the activation dtype and rounds each product before the sum.
    cos_sin_row = cos_sin_ptr + token * stride_cos_sin
    cos = tl.load(cos_sin_row + dims, mask=dims < HALF_DIM, other=0.0).to(dtype).to(tl.float32)[None, :]
    sin = tl.load(cos_sin_row + HALF_DIM + dims, mask=dims < HALF_DIM, other=0.0).to(dtype).to(tl.float32)[None, :]
    out1 = ((x1 * cos).to(dtype).to(tl.float32) - (x2 * sin).to(dtype).to(tl.float32)).to(dtype)
    out2 = ((x2 * cos).to(dtype).to(tl.float32) + (x1 * sin).to(dtype).to(tl.float32)).to(dtype)
    tl.store(qkv_ptr + offsets, out1, mask=mask & ~is_v)
    tl.store(qkv_ptr + offsets + HALF_DIM, out2, mask=mask & ~is_v)

    if STORE_KV:
        # The attention backend's K/V write (attention/kernels/kv_write.py), folded in: k heads
        # store their rotated values, v heads their loaded ones, each into its token's slot.
        # A padding token (slot -1) writes nothing. The test is a branch, not a term of the masks:
        # a tile mask combined with a scalar comparison is an int32 tensor, not a boolean one, in
        # Triton's interpreter (3.9 refuses it as a mask).
        slot = tl.load(slot_mapping_ptr + token)
        if slot >= 0:
            kv_heads = tl.where(is_v, heads[:, None] - num_q_heads - num_kv_heads, heads[:, None] - num_q_heads)
            rows = (slot // block_size) * stride_cache_block + (slot % block_size) * stride_cache_offset \
                + kv_heads * stride_cache_head
            store_k = mask & ~is_q & ~is_v
            store_v = mask & is_v
            cache_dtype = k_cache_ptr.dtype.element_ty
            tl.store(k_cache_ptr + rows + dims[None, :], out1.to(cache_dtype), mask=store_k)
            tl.store(k_cache_ptr + rows + HALF_DIM + dims[None, :], out2.to(cache_dtype), mask=store_k)
            tl.store(v_cache_ptr + rows + dims[None, :], raw1.to(cache_dtype), mask=store_v)
            tl.store(v_cache_ptr + rows + HALF_DIM + dims[None, :], raw2.to(cache_dtype), mask=store_v)


@triton.jit
def silu_mul(gate, up, dtype: tl.constexpr):
    """silu(gate) * up, rounded to `dtype` where torch's F.silu(gate) * up rounds."""
    gate = gate.to(tl.float32)
    activated = (gate * tl.sigmoid(gate)).to(dtype).to(tl.float32)
    return (activated * up.to(tl.float32)).to(dtype)


@triton.jit
def silu_and_mul_kernel(
    x_ptr,                         # [T, 2 * intermediate]: gate, then up
    out_ptr,                       # [T, intermediate]
    stride_x, stride_out,
    intermediate,
    BLOCK: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < intermediate
    gate = tl.load(x_ptr + token * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + token * stride_x + intermediate + cols, mask=mask, other=0.0)
    tl.store(out_ptr + token * stride_out + cols, silu_mul(gate, up, x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def skinny_matmul_kernel(
    x_ptr,                         # [M, K], M small (decode rows); [M, 2K] gate then up with SILU_AND_MUL
    w_ptr,                         # [N, K]: an nn.Linear weight, rows contiguous
    bias_ptr,                      # [N]; read only when HAS_BIAS
    out_ptr,                       # [M, N]
    M, N, K,
    stride_x, stride_w, stride_out,
    HAS_BIAS: tl.constexpr,
    SILU_AND_MUL: tl.constexpr,    # the input is silu(gate) * up, formed on the fly from x
    USE_DOT: tl.constexpr,         # tensor-core dot (BLOCK_M >= 16) or plain multiply-adds
    BLOCK_M: tl.constexpr,         # M rounded up to a power of two (16 for dot)
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    # Each program owns BLOCK_N output columns and walks the whole K dimension: it streams
    # BLOCK_N rows of the weight once, which is the only traffic that matters when M is tiny.
    if USE_PDL:
        gdc_launch_dependents()
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_x + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[:, None] * stride_w + offs_k[None, :]
    # The first weight tile is read before the wait (no kernel writes weights): with PDL that
    # read overlaps the end of the kernel before. Each iteration then loads the next tile.
    w = tl.load(w_ptrs, mask=mask_n[:, None] & (offs_k < K)[None, :], other=0.0)
    if USE_PDL:
        gdc_wait()
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        mask_x = mask_m[:, None] & ((k + offs_k) < K)[None, :]
        if SILU_AND_MUL:
            gate = tl.load(x_ptrs, mask=mask_x, other=0.0)
            up = tl.load(x_ptrs + K, mask=mask_x, other=0.0)
            x = silu_mul(gate, up, x_ptr.dtype.element_ty)
        else:
            x = tl.load(x_ptrs, mask=mask_x, other=0.0)
        if USE_DOT:
            acc += tl.dot(x, tl.trans(w))
        else:
            acc += tl.sum(x[:, None, :].to(tl.float32) * w[None, :, :].to(tl.float32), axis=2)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
        w = tl.load(w_ptrs, mask=mask_n[:, None] & ((k + BLOCK_K + offs_k) < K)[None, :], other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_out + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
