"""Attention backends behind one interface, chosen by name.

Imports are lazy so that the CPU path never imports Triton.
"""

from __future__ import annotations

import torch

from ruvonvllm.attention.base import AttentionBackend, AttentionMetadata

__all__ = ["AttentionBackend", "AttentionMetadata", "get_attention_backend", "BACKEND_NAMES"]

BACKEND_NAMES = ("auto", "torch", "triton")


def get_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    """`auto` picks Triton on CUDA when it imports, the pure-torch reference otherwise."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"attention backend must be one of {BACKEND_NAMES}, got {name!r}")
    if name == "auto":
        name = "triton" if device.type == "cuda" and _triton_available() else "torch"
    if name == "torch":
        from ruvonvllm.attention.torch_backend import TorchAttentionBackend
        return TorchAttentionBackend()
    from ruvonvllm.attention.triton_backend import TritonAttentionBackend
    return TritonAttentionBackend()


def _triton_available() -> bool:
    try:
        import ruvonvllm.attention.triton_backend  # noqa: F401
    except ImportError:
        return False
    return True
