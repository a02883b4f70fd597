"""Matrix products with a handful of rows: decode steps at small batch (Part 20).

At batch 1 a decode step multiplies one activation row by every weight matrix:
the work is reading the weights, nothing else. cuBLAS picks kernels tuned for
bigger problems, and on a 0.6B model's small matrices (4-12 MB each) they read
0.3 to 2.1 TB/s of an H200's 4+ (benchmarks/gpu/gemv_sweep.py). The
kernel here (ops/kernels.py, `skinny_matmul_kernel`) gives each program a
strip of output columns and has it stream that strip of the weight once.

`linear` is F.linear, through the kernel for the shapes where it measured
faster (`skinny_matmul_applies`); everything else (prefill, bigger batches,
float32, the CPU) stays with F.linear. `silu_and_mul_linear` is the SwiGLU
MLP's down projection: the kernel forms silu(gate) * up as it loads its input.
layers/linear.py's `Linear` calls both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ruvonvllm.ops import use_triton_kernels
from ruvonvllm.ops.pdl import pdl_enabled, pdl_launch_args
from ruvonvllm.ops.silu_and_mul import silu_and_mul

# Where the kernel beats cuBLAS (benchmarks/gpu/gemv_sweep.py, H200, inside a CUDA graph): up to
# 4 rows, for matrices up to 2^24 elements. Qwen3-0.6B at 1 row: o_proj 12.7 -> 4.0 us, down_proj
# 7.3 -> 5.1 us; Llama-3.1-8B's o_proj 13.3 -> 11.7 us. On wide matrices (qkv, gate_up) cuBLAS is
# as fast in isolation, so those take the kernel only with programmatic dependent launch
# (ops/pdl.py), where it reads its first weight tile while the kernel before it still runs:
# qwen3-0.6b batch-1 decode 0.948 -> 0.929 ms/step (H200, `ruvon bench latency`). The output
# head and anything past 4 rows stay with cuBLAS.
MAX_ROWS = 4
MAX_WEIGHT_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class LaunchConfig:
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    use_dot: bool = False


def default_config(rows: int, out_features: int, in_features: int) -> LaunchConfig:
    """The launch for a [rows, in] x [out, in]^T product; one serves every shape the kernel
    is used on (the sweep's best for each). Four output columns per program, the reduction in
    blocks of up to 1,024: with N <= K this launches N / 4 programs (256 for a 1,024-wide
    output, two per SM of an H100/H200), each streaming 4 weight rows."""
    import triton
    return LaunchConfig(block_n=4, block_k=min(1024, triton.next_power_of_2(in_features)), num_warps=4,
                        num_stages=2)


def skinny_matmul_applies(x: torch.Tensor, weight: torch.Tensor, silu_and_mul: bool = False) -> bool:
    out_features, in_features = weight.shape
    x_features = 2 * in_features if silu_and_mul else in_features
    rows = x.numel() // x_features if in_features else 0
    return (0 < rows <= MAX_ROWS and out_features * in_features <= MAX_WEIGHT_ELEMENTS
            and weight.dtype in (torch.bfloat16, torch.float16) and x.dtype == weight.dtype
            and use_triton_kernels(x) and (out_features <= in_features or pdl_enabled(x.device)))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through the skinny kernel where it applies."""
    if skinny_matmul_applies(x, weight):
        return skinny_matmul(x, weight, bias)
    return F.linear(x, weight, bias)


def silu_and_mul_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(silu(gate) * up, weight, bias) for x [..., 2 * in_features] holding gate then up.

    Where the skinny kernel applies, it forms silu(gate) * up while loading its input:
    the SwiGLU MLP's activation costs no kernel of its own.
    """
    if skinny_matmul_applies(x, weight, silu_and_mul=True):
        return skinny_matmul(x, weight, bias, silu_and_mul=True)
    return F.linear(silu_and_mul(x), weight, bias)


def skinny_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: LaunchConfig | None = None, silu_and_mul: bool = False) -> torch.Tensor:
    """x [..., in] @ weight[out, in]^T (+ bias); with silu_and_mul, x is [..., 2 * in], gate then up."""
    import triton

    from ruvonvllm.ops.kernels import skinny_matmul_kernel

    out_features, in_features = weight.shape
    x_features = 2 * in_features if silu_and_mul else in_features
    if x.shape[-1] != x_features:
        raise ValueError(f"skinny_matmul: x has {x.shape[-1]} features, the weight needs {x_features}")
    rows = x.reshape(-1, x_features)
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
        HAS_BIAS=bias is not None, SILU_AND_MUL=silu_and_mul, USE_DOT=config.use_dot,
        BLOCK_M=block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages, **pdl_launch_args(x.device))
    return out.view(*x.shape[:-1], out_features)
