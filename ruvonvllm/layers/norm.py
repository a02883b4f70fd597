"""RMSNorm (Zhang & Sennrich 2019), the normalization of the Llama family.

GPT-2 uses a plain LayerNorm; torch's `nn.LayerNorm` already matches HF's, so
it is used directly.
"""

from __future__ import annotations

import torch
from torch import nn

from ruvonvllm.ops.rms_norm import rms_norm


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension, optionally after adding the residual stream.

    `forward(x)` returns the normalized x. `forward(x, residual)` first forms
    the new residual stream `x + residual` and returns (its norm, it): the
    pre-norm decoder's "add, then normalize for the next sublayer" as one op,
    one fused kernel on CUDA (ruvonvllm/ops/rms_norm.py).

    The statistics are taken in float32 and the result cast back before the
    weight is applied, in that order, because that is what HF's LlamaRMSNorm
    does: a bf16 model then rounds exactly like the reference.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor,
                residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return rms_norm(x, self.weight, self.eps, residual)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
