"""SwiGLU's middle step: x [T, 2 * I] holding gate then up -> silu(gate) * up [T, I]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ruvonvllm.ops import use_triton_kernels

# Columns per program: 1,024 bf16 values per load keeps every lane busy without spilling.
_BLOCK = 1024


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if use_triton_kernels(x):
        return silu_and_mul_triton(x)
    return silu_and_mul_reference(x)


def silu_and_mul_reference(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul_triton(x: torch.Tensor) -> torch.Tensor:
    import triton

    from ruvonvllm.ops.kernels import silu_and_mul_kernel
    from ruvonvllm.ops.pdl import pdl_launch_args

    intermediate = x.shape[-1] // 2
    rows = x.reshape(-1, 2 * intermediate)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty(rows.shape[0], intermediate, dtype=x.dtype, device=x.device)
    if rows.shape[0] > 0:
        block = min(_BLOCK, triton.next_power_of_2(intermediate))
        silu_and_mul_kernel[(rows.shape[0], triton.cdiv(intermediate, block))](
            rows, out, rows.stride(0), out.stride(0), intermediate, BLOCK=block,
            **pdl_launch_args(x.device))
    return out.view(*x.shape[:-1], intermediate)
