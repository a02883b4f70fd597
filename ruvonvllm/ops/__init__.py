"""Fused elementwise operations of the decoder layers: a Triton kernel on CUDA, torch elsewhere.

An unfused Llama layer launches about 60 small kernels per token step on a GPU
(RMSNorm alone is a cast, pow, mean, add, rsqrt, two muls and a cast; rotary
is another nine per q and k). At batch 1 with CUDA graphs those launches, not
the matrix products, set the step time (benchmarks/gpu/NOTES.md). Each op here
does one of those chains in one kernel:

rms_norm.py      RMSNorm, optionally with the residual add that precedes it
rotary.py        rotary embedding of q and k in place, optionally with Qwen3's per-head q/k norm
silu_and_mul.py  the SwiGLU middle: silu(gate) * up

Each file holds the torch reference (the CPU path and the tests' ground truth)
next to its kernel. Both round like HF transformers does: statistics in float32,
results cast back to the activation dtype at the same points.
"""

from __future__ import annotations

import functools

import torch

from ruvonvllm.config import env_flag


@functools.cache
def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton_kernels(x: torch.Tensor) -> bool:
    """True for CUDA tensors when Triton imports, unless RUVON_DISABLE_FUSED_OPS=1.

    The switch exists for before/after measurements (Part 20) and to rule the
    kernels out when hunting a numerical difference.
    """
    return x.is_cuda and _triton_imports() and not fused_ops_disabled()


@functools.cache
def fused_ops_disabled() -> bool:
    return env_flag("RUVON_DISABLE_FUSED_OPS")
