"""The Triton kernels behind ruvonvllm/ops (imported only when one runs: the CPU path never needs Triton).

All three are memory-bound row operations, so each program handles whole rows
(or one head of one token) and does every step of its op in registers, in
float32, casting to the activation dtype exactly where HF's torch code rounds.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr,
    stride_x, stride_residual, stride_out,
    hidden_size, eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,           # hidden_size rounded up to a power of two
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden_size
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_residual + cols, mask=mask, other=0.0)
        # Rounded to the activation dtype, as torch's `x + residual` is, before it is normalized.
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(residual_ptr + row * stride_residual + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    variance = tl.sum(x32 * x32, axis=0) / hidden_size
    normed = (x32 * tl.rsqrt(variance + eps)).to(x_ptr.dtype.element_ty)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    out = normed.to(tl.float32) * weight.to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_qk_kernel(
    qkv_ptr,                       # [T, >= (num_q_heads + num_kv_heads) * head_dim]: q heads, then k heads
    cos_sin_ptr,                   # [T, head_dim] float32: cos of each angle, then sin
    q_norm_ptr, k_norm_ptr,        # [head_dim] each; read only when QK_NORM
    stride_qkv, stride_cos_sin,
    num_q_heads, eps,
    HALF_DIM: tl.constexpr,
    BLOCK: tl.constexpr,           # HALF_DIM rounded up to a power of two
    QK_NORM: tl.constexpr,
):
    token = tl.program_id(0)
    head = tl.program_id(1)        # 0..num_q_heads-1 are q heads, the rest k heads
    dtype = qkv_ptr.dtype.element_ty
    dims = tl.arange(0, BLOCK)
    mask = dims < HALF_DIM
    base = qkv_ptr + token * stride_qkv + head * (2 * HALF_DIM)
    x1 = tl.load(base + dims, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF_DIM + dims, mask=mask, other=0.0).to(tl.float32)

    if QK_NORM:
        # Qwen3: RMSNorm over this head's head_dim values, with q's or k's own weight.
        variance = (tl.sum(x1 * x1, axis=0) + tl.sum(x2 * x2, axis=0)) / (2 * HALF_DIM)
        rstd = tl.rsqrt(variance + eps)
        is_q = head < num_q_heads
        w1 = tl.where(is_q, tl.load(q_norm_ptr + dims, mask=mask, other=0.0),
                      tl.load(k_norm_ptr + dims, mask=mask, other=0.0)).to(tl.float32)
        w2 = tl.where(is_q, tl.load(q_norm_ptr + HALF_DIM + dims, mask=mask, other=0.0),
                      tl.load(k_norm_ptr + HALF_DIM + dims, mask=mask, other=0.0)).to(tl.float32)
        x1 = ((x1 * rstd).to(dtype).to(tl.float32) * w1).to(dtype).to(tl.float32)
        x2 = ((x2 * rstd).to(dtype).to(tl.float32) * w2).to(dtype).to(tl.float32)

    # HF casts cos/sin to the activation dtype and rounds each product before the sum.
    cos = tl.load(cos_sin_ptr + token * stride_cos_sin + dims, mask=mask, other=0.0).to(dtype).to(tl.float32)
    sin = tl.load(cos_sin_ptr + token * stride_cos_sin + HALF_DIM + dims,
                  mask=mask, other=0.0).to(dtype).to(tl.float32)
    out1 = (x1 * cos).to(dtype).to(tl.float32) - (x2 * sin).to(dtype).to(tl.float32)
    out2 = (x2 * cos).to(dtype).to(tl.float32) + (x1 * sin).to(dtype).to(tl.float32)
    tl.store(base + dims, out1.to(dtype), mask=mask)
    tl.store(base + HALF_DIM + dims, out2.to(dtype), mask=mask)


@triton.jit
def silu_and_mul_kernel(
    x_ptr,                         # [T, 2 * intermediate]: gate, then up
    out_ptr,                       # [T, intermediate]
    stride_x, stride_out,
    intermediate,
    BLOCK: tl.constexpr,
):
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < intermediate
    dtype = x_ptr.dtype.element_ty
    gate = tl.load(x_ptr + token * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + token * stride_x + intermediate + cols, mask=mask, other=0.0).to(tl.float32)
    activated = (gate * tl.sigmoid(gate)).to(dtype).to(tl.float32)
    tl.store(out_ptr + token * stride_out + cols, (activated * up).to(dtype), mask=mask)


@triton.jit
def skinny_matmul_kernel(
    x_ptr,                         # [M, K], M small (decode rows)
    w_ptr,                         # [N, K]: an nn.Linear weight, rows contiguous
    bias_ptr,                      # [N]; read only when HAS_BIAS
    out_ptr,                       # [M, N]
    M, N, K,
    stride_x, stride_w, stride_out,
    HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,         # tensor-core dot (BLOCK_M >= 16) or plain multiply-adds
    BLOCK_M: tl.constexpr,         # M rounded up to a power of two (16 for dot)
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Each program owns BLOCK_N output columns and walks the whole K dimension: it streams
    # BLOCK_N rows of the weight once, which is the only traffic that matters when M is tiny.
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_x + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[:, None] * stride_w + offs_k[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        mask_k = (k + offs_k) < K
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        if USE_DOT:
            acc += tl.dot(x, tl.trans(w))
        else:
            acc += tl.sum(x[:, None, :].to(tl.float32) * w[None, :, :].to(tl.float32), axis=2)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_out + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
