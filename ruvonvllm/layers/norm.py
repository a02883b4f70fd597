"""RMSNorm (Zhang & Sennrich 2019), the normalization of the Llama family.

GPT-2 uses a plain LayerNorm; torch's `nn.LayerNorm` already matches HF's, so
it is used directly.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension.

    The statistics are taken in float32 and the result cast back before the
    weight is applied, in that order, because that is what HF's LlamaRMSNorm
    does: a bf16 model then rounds exactly like the reference.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x32 = x.float()
        variance = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(variance + self.eps)).to(input_dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
