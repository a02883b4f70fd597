"""Activation functions by their HF config names, and the gated form SwiGLU uses."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ruvonvllm.ops.silu_and_mul import silu_and_mul

# "gelu_new" is OpenAI GPT-2's tanh approximation of GELU; torch's approximate="tanh"
# computes the same formula.
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class ActAndMul(nn.Module):
    """The gated MLP's middle: x [..., 2 * I] holds gate then up; returns act(gate) * up [..., I].

    Taking the fused gate_up projection's output in one tensor lets the MLP do
    one matmul for both projections (Shazeer 2020, "GLU Variants Improve Transformer").
    """

    def __init__(self, activation: str = "silu") -> None:
        super().__init__()
        self.activation_name = activation
        self.act = get_activation(activation)

    @property
    def is_silu(self) -> bool:
        """SiLU (alias swish): the activation the fused kernels implement."""
        return self.activation_name in ("silu", "swish")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_silu:
            return silu_and_mul(x)  # one fused kernel on CUDA
        gate, up = x.chunk(2, dim=-1)
        return self.act(gate) * up

    def extra_repr(self) -> str:
        return self.activation_name
