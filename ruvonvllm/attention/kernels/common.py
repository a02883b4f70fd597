"""Small host-side helpers the three attention kernels share."""

from __future__ import annotations

import torch
import triton.language as tl

from ruvonvllm.config import env_flag

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def interpreting() -> bool:
    """True when Triton runs kernels in its numpy interpreter (TRITON_INTERPRET=1), on the CPU."""
    return env_flag("TRITON_INTERPRET")


def dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """The dtype the kernels feed to tl.dot for activations of `dtype`.

    On a GPU that is the activation dtype itself (tensor cores take bf16/fp16
    operands and accumulate in fp32). Triton 3.6's interpreter multiplies bf16
    operands of tl.dot as raw integers (triton-lang/triton#11584), so there we
    upcast bf16 to fp32: the result is what a GPU computes up to rounding.
    """
    if dtype not in _TL_DTYPES:
        raise ValueError(f"Triton attention supports float32, float16 and bfloat16, got {dtype}")
    if dtype == torch.bfloat16 and interpreting():
        return tl.float32
    return _TL_DTYPES[dtype]


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact fp32 products ("ieee"), not TF32, so fp32 tests can be tight."""
    return "ieee" if dtype == torch.float32 else "tf32"
