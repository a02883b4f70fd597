"""CPU matrix products through oneDNN with weights packed once, a module transform applied after loading.

On the CPU, decode is a chain of matrix-vector products that stream every
weight from memory once per step; how fast a library streams them decides the
step time. torch's `F.linear` on a float32 CPU tensor calls MKL's sgemm, which
on the AMD EPYC of our CI machine (2 cores, AVX2) runs the small-batch shapes
of decode far below the memory bandwidth. oneDNN (the library torch ships as
`mkldnn`) does better once the weight is reordered into its blocked layout,
which it can do ahead of time. Measured on that machine over all matrices of
a SmolLM2-135M step (`python benchmarks/cpu_gemm_microbench.py`, medians of
alternating passes): 1.18x faster at 1 row, 2.4x at 4 rows, 1.5x at 16 rows,
1.14x at 512 rows (prefill).

`pack_linears_for_cpu(model)` replaces every `nn.Linear` (incl. MergedLinear)
by a `PackedLinear` holding only the packed weight, so the plain weight is
freed. The output head of a tied model reads the embedding matrix, which the
embedding lookup still needs row by row; it gets a packed copy of its own
(SmolLM2: +108 MiB) because the head is the largest single product of a
decode step.

This is an engine choice like an attention backend: the model code does not
know about it, and GPU or non-float32 models never see it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ruvonvllm.config import env_flag
from ruvonvllm.layers.linear import replace_linears


@functools.cache
def onednn_available() -> bool:
    """True when torch's oneDNN linear ops exist and work here (RUVON_DISABLE_ONEDNN=1 turns them off)."""
    if env_flag("RUVON_DISABLE_ONEDNN") or not torch.backends.mkldnn.is_available():
        return False
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.eye(4))
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 4), packed, None, "none", [], "")
    except (RuntimeError, AttributeError):
        return False
    return bool(torch.equal(out, torch.ones(1, 4)))


class PackedLinear(nn.Module):
    """y = x @ W^T + b with W [out, in] float32 held in oneDNN's blocked layout (not a Parameter)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def weight_bytes(self) -> int:
        return self.out_features * self.in_features * 4

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def can_pack(model: nn.Module) -> bool:
    """Packing applies to float32 models on the CPU, where oneDNN works."""
    param = next(model.parameters())
    return param.device.type == "cpu" and param.dtype == torch.float32 and onednn_available()


def pack_linears_for_cpu(model: nn.Module) -> int:
    """Replace every nn.Linear of `model` by a PackedLinear and pack its output head; returns the bytes packed."""
    return replace_linears(model, PackedLinear)
