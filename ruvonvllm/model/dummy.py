"""Random weights for a model built from a config alone (load_format="dummy").

Benchmarks of speed and memory do not need real weights, and a dummy load
skips reading gigabytes from disk. Values are filled in place on the target
device, so no second copy of the model is ever made.
"""

from __future__ import annotations

import torch
from torch import nn

from ruvonvllm.layers.norm import RMSNorm

INIT_STD = 0.02


@torch.no_grad()
def init_dummy_weights(model: nn.Module, seed: int = 0) -> None:
    """Norm scales to one, norm shifts to zero, everything else ~ N(0, 0.02).

    Small values keep activations in range, so a dummy model runs the same
    kernels on the same magnitudes as a real one (no overflow in fp16).
    """
    generators: dict[torch.device, torch.Generator] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, (RMSNorm, nn.LayerNorm)):
                param.fill_(1.0 if name == "weight" else 0.0)
                continue
            if param.device not in generators:
                generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
            param.normal_(0.0, INIT_STD, generator=generators[param.device])
