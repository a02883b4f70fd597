"""Matrix products with a handful of rows: decode steps at small batch (Part 20).

At batch 1 a decode step multiplies one activation row by every weight matrix:
the work is reading the weights, nothing else. cuBLAS picks kernels tuned for
bigger problems, and on a 0.6B model's small matrices (2-12 MB each) they reach
about a third of the card's memory bandwidth (benchmarks/gpu/NOTES.md). The
kernel here (ops/kernels.py, `skinny_matmul_kernel`) gives each program a
strip of output columns and has it stream that strip of the weight once.

`skinny_matmul` is F.linear for at most MAX_ROWS rows of bf16/fp16 on CUDA;
everything else (prefill, big batches, float32, the CPU) goes to F.linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ruvonvllm.ops import use_triton_kernels

MAX_ROWS = 8


@dataclass(frozen=True)
class LaunchConfig:
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    use_dot: bool = False


def default_config(rows: int, out_features: int, in_features: int) -> LaunchConfig:
    """The launch configuration for a [rows, in] x [out, in]^T product (chosen with
    benchmarks/gpu/gemv_sweep.py on an H200)."""
    return LaunchConfig(block_n=16, block_k=256, num_warps=4, num_stages=3)


def skinny_matmul_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return (0 < rows <= MAX_ROWS and weight.dtype in (torch.bfloat16, torch.float16)
            and x.dtype == weight.dtype and use_triton_kernels(x))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through the skinny kernel where it applies."""
    if skinny_matmul_applies(x, weight):
        return skinny_matmul(x, weight, bias)
    return F.linear(x, weight, bias)


def skinny_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: LaunchConfig | None = None) -> torch.Tensor:
    import triton

    from ruvonvllm.ops.kernels import skinny_matmul_kernel

    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    if weight.stride(-1) != 1:
        raise ValueError("skinny_matmul needs a weight whose rows are contiguous")
    m = rows.shape[0]
    config = config or default_config(m, out_features, in_features)
    out = torch.empty(m, out_features, dtype=x.dtype, device=x.device)
    block_m = 16 if config.use_dot else triton.next_power_of_2(m)
    skinny_matmul_kernel[(triton.cdiv(out_features, config.block_n),)](
        rows, weight, bias if bias is not None else weight, out,
        m, out_features, in_features,
        rows.stride(0), weight.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, USE_DOT=config.use_dot,
        BLOCK_M=block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages)
    return out.view(*x.shape[:-1], out_features)
