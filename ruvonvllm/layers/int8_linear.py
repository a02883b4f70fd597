"""`quantization="int8"`: CPU linear layers with int8 weights and per-token int8 activations.

A decode step on the CPU streams every weight from memory once; int8 weights
are a quarter of float32's bytes. Each weight row gets its own scale
(symmetric, per output channel: `scale = max|w| / 127`), fixed at load time;
the activations are quantized on the fly with one scale per token (see
`Int8Linear.forward`), and fbgemm (inside torch, `torch.ops.quantized.linear_dynamic`)
multiplies int8 by int8 into int32 and rescales to float32. Measured on the
2-core CI machine with SmolLM2-135M: decode 2x faster than float32 at batch 1,
1.7x at batch 16 (docs/part12-quantization.md).

What it costs: results differ from float32 by the rounding of weights and
activations (about 1% of a product's magnitude), so outputs are no longer
equal to HF transformers'. Per-token scales keep a request's result independent
of the rest of its batch, as in float32.

Like the oneDNN packing (layers/cpu_gemm.py) this is a transform applied to a
loaded model; the model code does not know about it. torch has marked its
quantized-tensor API deprecated (pytorch/pytorch#184982); `int8_available()`
turns the option off with a clear error on a torch that no longer has it.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from ruvonvllm.layers.linear import replace_linears

QUANTIZATION_METHODS = ("int8",)


@functools.cache
def int8_available() -> bool:
    """True when torch's fbgemm dynamic-quantized linear ops exist and work here."""
    try:
        packed = prepack_int8(torch.eye(4))
        out = torch.ops.quantized.linear_dynamic(torch.ones(1, 4), packed, True)
    except (RuntimeError, AttributeError):
        return False
    return bool(torch.allclose(out, torch.ones(1, 4), atol=0.05))


def prepack_int8(weight: torch.Tensor, bias: torch.Tensor | None = None):
    """Per-output-channel symmetric int8 quantization of weight [out, in], packed for fbgemm."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-8).double()
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # the deprecation notice, once per matrix, says nothing new
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())


class Int8Linear(nn.Module):
    """y = x @ W^T + b with W held as packed per-channel int8 (not a Parameter)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = prepack_int8(weight)
        self.bias = None if bias is None else bias.detach().float()
        # A constant extra input row spanning [-1, 1]: see forward().
        self.anchor = torch.zeros(1, self.in_features)
        self.anchor[0, 0], self.anchor[0, -1] = 1.0, -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token activation scales on top of fbgemm's per-tensor quantization.

        fbgemm quantizes the whole input with one range, its min and max. Dividing
        each row by its own absolute maximum puts every row in [-1, 1], and the
        anchor row makes the range exactly [-1, 1] whatever the rows are: each
        token then uses the full int8 range, and its result does not depend on the
        other rows of the step. The product is linear, so multiplying the output
        rows back by their scales undoes the division.
        """
        rows = x.reshape(-1, self.in_features)
        scales = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        inputs = torch.cat((rows / scales, self.anchor), dim=0)
        # reduce_range=True keeps activations in 7 bits, which x86's int8 multiply-add
        # (vpmaddubsw, 16-bit intermediate sums) needs to never saturate.
        out = torch.ops.quantized.linear_dynamic(inputs, self.packed, True)[:-1] * scales
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def weight_bytes(self) -> int:
        return self.out_features * (self.in_features + 4)  # int8 values plus one float scale per row

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def check_quantization(method: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """A clear error for a method this engine cannot run here, before any weight is touched."""
    if method is None:
        return
    if method not in QUANTIZATION_METHODS:
        raise ValueError(f"quantization must be one of {QUANTIZATION_METHODS} or None, got {method!r}")
    if device.type != "cpu" or dtype != torch.float32:
        raise ValueError(f"quantization={method!r} runs on the CPU with dtype float32; got device "
                         f"{device.type} and dtype {str(dtype).removeprefix('torch.')}")
    if not int8_available():
        raise ValueError("quantization='int8' needs torch's fbgemm quantized ops, which this torch build lacks")


def quantize_linears_int8(model: nn.Module) -> int:
    """Replace every nn.Linear of `model` and its output head by Int8Linear; returns the bytes they hold."""
    return replace_linears(model, Int8Linear)
