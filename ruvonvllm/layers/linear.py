"""Linear layers that fuse several projections, and the shape-checked weight copy.

Checkpoints store q/k/v (and gate/up) as separate matrices; running them as one
matmul over the concatenated weight saves kernel launches and reads the input
once. `MergedLinear` remembers which rows belong to which checkpoint tensor so
loading stays a plain copy into a slice.

`replace_linears` is the hook for transforms applied after loading (the CPU's
oneDNN packing, int8 quantization): they swap the layers, not the model code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ruvonvllm.ops.skinny_matmul import linear, silu_and_mul_linear


def copy_weight(param: torch.Tensor, loaded: torch.Tensor, name: str) -> None:
    """Copy a checkpoint tensor into an allocated parameter, converting dtype and device."""
    if param.shape != loaded.shape:
        raise ValueError(f"weight {name!r} has shape {tuple(loaded.shape)}, "
                         f"the model expects {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(loaded)


class Linear(nn.Linear):
    """nn.Linear whose few-row products on a GPU may take the skinny-matmul kernel (ops/skinny_matmul.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def forward_silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """forward(silu(gate) * up) for x [..., 2 * in_features] holding gate then up: the SwiGLU
        MLP's down projection, with the activation inside its kernel where that applies."""
        return silu_and_mul_linear(x, self.weight, self.bias)


class MergedLinear(Linear):
    """One Linear whose output rows are the concatenation of named shards.

    shard_sizes {"q": 1024, "k": 256, "v": 256} gives rows [0, 1024) to q,
    [1024, 1280) to k and [1280, 1536) to v, in that order.
    """

    def __init__(self, in_features: int, shard_sizes: dict[str, int], bias: bool) -> None:
        super().__init__(in_features, sum(shard_sizes.values()), bias=bias)
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for shard, size in shard_sizes.items():
            self.shard_offsets[shard] = (offset, size)
            offset += size

    def load_shard(self, shard: str, param_name: str, loaded: torch.Tensor, name: str) -> None:
        """Copy checkpoint tensor `name` (a weight or bias of shard `shard`) into its rows."""
        offset, size = self.shard_offsets[shard]
        param = getattr(self, param_name)
        if param is None:
            raise ValueError(f"weight {name!r} is a {param_name}, but this projection has none")
        copy_weight(param.data.narrow(0, offset, size), loaded, name)


@torch.no_grad()
def replace_linears(model: nn.Module, make_layer: Callable[[torch.Tensor, torch.Tensor | None], nn.Module]) -> int:
    """Replace every nn.Linear of `model` by make_layer(weight, bias) and set its output head.

    The model provides `lm_head_weight()` and an `lm_head` (layers/lm_head.py);
    the head's layer is make_layer(head weight, None), installed with
    `lm_head.pack`. Returns the bytes the new layers hold (their `weight_bytes()`).
    """
    head = make_layer(model.lm_head_weight(), None)
    total = head.weight_bytes()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            layer = make_layer(child.weight, child.bias)
            setattr(parent, name, layer)
            total += layer.weight_bytes()
    model.lm_head.pack(head)
    return total
