"""RMSNorm with an optional fused residual add: `residual = x + residual; out = norm(residual)`.

Pre-norm decoders (Llama, Qwen) add each sublayer's output to the residual
stream and immediately normalize the sum for the next sublayer. Doing both in
one kernel reads the row once instead of four times, and the sum is written
back into `residual` in place, so a CUDA graph keeps one buffer for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ruvonvllm.ops import use_triton_kernels


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] -> normalized [T, N]; with `residual`, -> (norm(x + residual), x + residual).

    On CUDA the sum may be written into `residual` in place: callers pass a
    residual they own and use the returned one afterwards.
    """
    if use_triton_kernels(x):
        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_reference(x, weight, eps, residual)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float,
                       residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """HF LlamaRMSNorm's order: statistics in float32, cast back, then the weight in x's dtype."""
    if residual is not None:
        residual = x + residual
        x = residual
    if x.dtype == torch.float32:
        # The same arithmetic, in one fused CPU kernel instead of six small ones.
        out = F.rms_norm(x, weight.shape, weight, eps)
    else:
        x32 = x.float()
        variance = x32.pow(2).mean(-1, keepdim=True)
        out = weight * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)
    return out if residual is None else (out, residual)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float,
                    residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    import triton

    from ruvonvllm.ops.kernels import rms_norm_kernel
    from ruvonvllm.ops.pdl import pdl_launch_args

    hidden_size = x.shape[-1]
    rows = x.reshape(-1, hidden_size)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty_like(rows)
    if residual is not None:
        residual_rows = residual.view(-1, hidden_size)
        if not residual_rows.is_contiguous():
            raise ValueError("rms_norm: the residual must be contiguous (it is updated in place)")
    else:
        residual_rows = rows  # unused: HAS_RESIDUAL=False never touches it
    num_rows = rows.shape[0]
    if num_rows > 0:
        rms_norm_kernel[(num_rows,)](
            rows, residual_rows, weight, out,
            rows.stride(0), residual_rows.stride(0), out.stride(0),
            hidden_size, eps,
            HAS_RESIDUAL=residual is not None,
            BLOCK=triton.next_power_of_2(hidden_size), **pdl_launch_args(x.device),
        )
    out = out.view(x.shape)
    return out if residual is None else (out, residual)
