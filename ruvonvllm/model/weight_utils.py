"""Bookkeeping shared by every architecture's `load_weights`.

A model built on the meta device and materialized with `to_empty` holds
uninitialized memory, so a checkpoint that silently lacks a tensor would run
on garbage. Each model records what it loaded and calls `check_all_loaded`.
"""

from __future__ import annotations

from torch import nn

from ruvonvllm.layers.linear import MergedLinear


def shard_key(param_name: str, shard: str) -> str:
    return f"{param_name}:{shard}"


def expected_weight_keys(model: nn.Module) -> set[str]:
    """One key per parameter, or per shard of a MergedLinear parameter."""
    keys = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, MergedLinear):
                keys.update(shard_key(full, shard) for shard in module.shard_offsets)
            else:
                keys.add(full)
    return keys


def check_all_loaded(model: nn.Module, loaded: set[str]) -> None:
    missing = sorted(expected_weight_keys(model) - loaded)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"checkpoint is missing {len(missing)} weights of {type(model).__name__}: {shown}")
