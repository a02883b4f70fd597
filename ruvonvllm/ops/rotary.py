"""Rotary embedding of the q and k heads of a fused qkv row, in place (Su et al. 2021, "RoFormer").

The qkv projection's output row is [q heads | k heads | v heads]; q and k are
adjacent, so one pass rotates both: `num_q_heads + num_kv_heads` heads of
`head_dim` values, each rotated by its token's angles. Pairs are (i, i + head_dim/2),
HF's "rotate_half" layout. Qwen3 first RMS-normalizes every q and k head with
its own weight (q_norm, k_norm); the kernel does that in the same pass.

Given a `KVCacheWrite`, the same pass also stores the rotated k and the v heads
into the layer's paged cache, which is the attention backend's first job
otherwise (attention/kernels/kv_write.py): one kernel launch per layer fewer,
and k is written from registers instead of being read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ruvonvllm.ops import use_triton_kernels
from ruvonvllm.ops.kv_cache import KVCacheWrite, write_kv_cache


@dataclass
class RotaryAngles:
    """One step's angles, gathered once and shared by every layer."""

    cos_sin: torch.Tensor  # [T, head_dim] float32: cos of each token's angles, then sin

    @cached_property
    def cos_full(self) -> torch.Tensor:
        """[T, 1, head_dim]: cos repeated for both halves (the torch path's broadcast operand)."""
        cos, _ = self.cos_sin.chunk(2, dim=-1)
        return torch.cat((cos, cos), dim=-1).unsqueeze(1)

    @cached_property
    def sin_signed(self) -> torch.Tensor:
        """[T, 1, head_dim]: (-sin, sin), so that rotate_half(x) * sin == swap_halves(x) * sin_signed."""
        _, sin = self.cos_sin.chunk(2, dim=-1)
        return torch.cat((-sin, sin), dim=-1).unsqueeze(1)


@dataclass(frozen=True)
class QKNorm:
    """Qwen3's per-head RMSNorm weights for q and k."""

    q_weight: torch.Tensor  # [head_dim]
    k_weight: torch.Tensor  # [head_dim]
    eps: float


def writes_kv_cache(qkv: torch.Tensor) -> bool:
    """Whether rotate_qk_ on this tensor runs the kernel, which stores K/V on its way for free.

    Where it does not (the CPU, RUVON_DISABLE_FUSED_OPS=1), the attention backend stores them
    as before: its own store skips padding slots without asking the host, which a CUDA graph
    captured with the unfused ops needs.
    """
    return use_triton_kernels(qkv)


def rotate_qk_(qkv: torch.Tensor, angles: RotaryAngles, num_q_heads: int, num_kv_heads: int,
               head_dim: int, qk_norm: QKNorm | None = None, kv_write: KVCacheWrite | None = None) -> None:
    """Rotate (after normalizing, with qk_norm) the q and k heads of qkv [T, (Hq + 2 Hkv) * D] in place;
    with kv_write, also store k and v (the heads after k) in the cache."""
    if use_triton_kernels(qkv):
        rotate_qk_triton_(qkv, angles, num_q_heads, num_kv_heads, head_dim, qk_norm, kv_write)
    else:
        rotate_qk_reference_(qkv, angles, num_q_heads, num_kv_heads, head_dim, qk_norm, kv_write)


def rotate_qk_reference_(qkv: torch.Tensor, angles: RotaryAngles, num_q_heads: int, num_kv_heads: int,
                         head_dim: int, qk_norm: QKNorm | None = None,
                         kv_write: KVCacheWrite | None = None) -> None:
    num_tokens = qkv.shape[0]
    q_size, k_size = num_q_heads * head_dim, num_kv_heads * head_dim
    q = qkv[:, :q_size].view(num_tokens, num_q_heads, head_dim)
    k = qkv[:, q_size:q_size + k_size].view(num_tokens, num_kv_heads, head_dim)
    if qk_norm is not None:
        q.copy_(_head_rms_norm(q, qk_norm.q_weight, qk_norm.eps))
        k.copy_(_head_rms_norm(k, qk_norm.k_weight, qk_norm.eps))
    # q and k are adjacent in the row: rotate them as one [T, Hq + Hkv, D] view.
    heads = qkv[:, :q_size + k_size].view(num_tokens, num_q_heads + num_kv_heads, head_dim)
    x1, x2 = heads.chunk(2, dim=-1)
    swapped = torch.cat((x2, x1), dim=-1)
    # Each product rounds in x's dtype before the sum, exactly like HF's q * cos + rotate_half(q) * sin.
    heads.copy_(heads * angles.cos_full.to(qkv.dtype) + swapped * angles.sin_signed.to(qkv.dtype))
    if kv_write is not None:
        v = qkv[:, q_size + k_size:q_size + 2 * k_size].view(num_tokens, num_kv_heads, head_dim)
        write_kv_cache(k, v, kv_write.k_cache, kv_write.v_cache, kv_write.slot_mapping)


def _head_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    x32 = x.float()
    variance = x32.pow(2).mean(-1, keepdim=True)
    return weight * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)


# Up to this many tokens a program rotates one head (a decode step's few heads spread over many
# SMs: the launch batch-1 decode was measured with); beyond, HEADS_PER_PROGRAM heads. A prefill step
# of 8,192 tokens would otherwise be 8,192 x 48 programs of 128 values each for Llama-3.1-8B,
# far more programs than the data needs.
ONE_HEAD_MAX_TOKENS = 16
HEADS_PER_PROGRAM = 8


def rotate_qk_triton_(qkv: torch.Tensor, angles: RotaryAngles, num_q_heads: int, num_kv_heads: int,
                      head_dim: int, qk_norm: QKNorm | None = None,
                      kv_write: KVCacheWrite | None = None, heads_per_program: int | None = None) -> None:
    import triton

    from ruvonvllm.ops.kernels import rotary_qk_kernel
    from ruvonvllm.ops.pdl import pdl_launch_args

    if qkv.stride(-1) != 1 or angles.cos_sin.stride(-1) != 1:
        raise ValueError("rotate_qk_: qkv and the angle table need contiguous rows")
    num_tokens = qkv.shape[0]
    if num_tokens == 0:
        return
    half = head_dim // 2
    num_heads = num_q_heads + num_kv_heads
    cache_strides = (0, 0, 0)
    block_size = 1
    if kv_write is not None:
        k_cache = kv_write.k_cache
        if k_cache.stride() != kv_write.v_cache.stride() or k_cache.stride(-1) != 1:
            raise ValueError("rotate_qk_: k_cache and v_cache need one layout with contiguous head rows")
        if qkv.shape[1] < (num_q_heads + 2 * num_kv_heads) * head_dim:
            raise ValueError("rotate_qk_: storing K/V needs the v heads in qkv, after the k heads")
        num_heads += num_kv_heads  # v heads get programs too: they only copy into the cache
        cache_strides = k_cache.stride()[:3]
        block_size = k_cache.shape[1]
    if heads_per_program is None:
        heads_per_program = 1 if num_tokens <= ONE_HEAD_MAX_TOKENS else HEADS_PER_PROGRAM
    if heads_per_program & (heads_per_program - 1):
        raise ValueError(f"rotate_qk_: heads_per_program must be a power of two, got {heads_per_program}")
    rotary_qk_kernel[(num_tokens, triton.cdiv(num_heads, heads_per_program))](
        qkv, angles.cos_sin,
        qk_norm.q_weight if qk_norm else qkv, qk_norm.k_weight if qk_norm else qkv,
        kv_write.slot_mapping if kv_write else qkv,
        kv_write.k_cache if kv_write else qkv, kv_write.v_cache if kv_write else qkv,
        qkv.stride(0), angles.cos_sin.stride(0), *cache_strides,
        num_q_heads, num_kv_heads, num_heads, block_size, qk_norm.eps if qk_norm else 0.0,
        HALF_DIM=half, BLOCK=triton.next_power_of_2(half), BLOCK_H=heads_per_program,
        QK_NORM=qk_norm is not None, STORE_KV=kv_write is not None, **pdl_launch_args(qkv.device),
    )
