"""Programmatic dependent launch (PDL): a kernel starts while the one before it is finishing (Part 20).

A batch-1 decode step of a 0.6B model is some 300 small kernels, and most of
them move a few kilobytes: their time is fixed cost, not work. The GPU drains
one kernel (its last programs run while most SMs idle), then ramps up the next
(launch, first memory round trip). Hopper can overlap the two. A kernel
launched with the PDL attribute may start as soon as every program of the
kernel before it has called `gdc_launch_dependents`; it then runs whatever
does not depend on that kernel (loading its weights: no kernel of the step
writes them) and blocks in `gdc_wait` until the earlier kernel has finished
and its writes are visible.

Every kernel that takes `USE_PDL` follows two rules, and a kernel launched
with PDL must, or it races with its predecessor:

1. it calls `gdc_launch_dependents()` first thing (so the next kernel can
   start early) and `gdc_wait()` before it reads anything another kernel
   wrote (activations, the cache, the step's inputs);
2. it writes nothing before `gdc_wait()` (an earlier kernel may still read it).

Kernels without the attribute (cuBLAS, torch's own) are ordered as usual.
Inside a CUDA graph the attribute becomes a programmatic edge, so replays keep
the overlap. `RUVON_DISABLE_PDL=1` turns it off for before/after measurements.
"""

from __future__ import annotations

import functools

import torch

from ruvonvllm.config import env_flag


@functools.cache
def _device_supports_pdl(device_index: int) -> bool:
    major, _ = torch.cuda.get_device_capability(device_index)
    return major >= 9  # griddepcontrol exists from sm_90 (Hopper) on


def pdl_enabled(device: torch.device) -> bool:
    """True on Hopper or newer GPUs, outside Triton's interpreter, unless RUVON_DISABLE_PDL=1."""
    if device.type != "cuda" or env_flag("TRITON_INTERPRET") or env_flag("RUVON_DISABLE_PDL"):
        return False
    return _device_supports_pdl(device.index if device.index is not None else torch.cuda.current_device())


def pdl_launch_args(device: torch.device) -> dict:
    """Keyword arguments for a kernel launch: the kernel's USE_PDL constexpr and the launch
    attribute, always together (rule 1 of the module docstring)."""
    enabled = pdl_enabled(device)
    return {"USE_PDL": enabled, "launch_pdl": enabled}
