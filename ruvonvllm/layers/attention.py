"""The attention front-end every model uses: paged K/V cache + a backend.

A model builds one `PagedAttention` per layer and calls it with q/k/v after its
projections (and rotary). The model runner binds each layer's cache tensors and
the backend once, when the KV pool is allocated (`bind_kv_caches`), so the
model's forward signature stays `forward(input_ids, positions, attn_meta)`.
"""

from __future__ import annotations

import torch
from torch import nn

from ruvonvllm.attention.base import AttentionBackend, AttentionMetadata
from ruvonvllm.ops.kv_cache import KVCacheWrite


class PagedAttention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float) -> None:
        super().__init__()
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.backend: AttentionBackend | None = None
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor | None,
                meta: AttentionMetadata) -> torch.Tensor:
        """q [T, num_heads * head_dim], k/v [T, num_kv_heads * head_dim] -> [T, num_heads * head_dim].

        k and v None: the caller has written them into the cache already (`kv_cache_write`).
        """
        self._check_bound()
        num_tokens = q.shape[0]
        out = self.backend.forward(
            q.view(num_tokens, self.num_heads, self.head_dim),
            None if k is None else k.view(num_tokens, self.num_kv_heads, self.head_dim),
            None if v is None else v.view(num_tokens, self.num_kv_heads, self.head_dim),
            self.k_cache, self.v_cache, meta, self.scale)
        return out.reshape(num_tokens, self.num_heads * self.head_dim)

    def kv_cache_write(self, meta: AttentionMetadata) -> KVCacheWrite:
        """This layer's cache and the step's slots, for a kernel that stores K/V on its way (ops/rotary.py)."""
        self._check_bound()
        return KVCacheWrite(self.k_cache, self.v_cache, meta.slot_mapping)

    def _check_bound(self) -> None:
        if self.backend is None or self.k_cache is None:
            raise RuntimeError("PagedAttention has no KV cache bound; call bind_kv_caches first")


def paged_attention_layers(model: nn.Module) -> list[PagedAttention]:
    """The model's attention layers in execution order (module registration order)."""
    return [m for m in model.modules() if isinstance(m, PagedAttention)]


def bind_kv_caches(model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                   backend: AttentionBackend) -> None:
    layers = paged_attention_layers(model)
    if len(layers) != len(kv_caches):
        raise ValueError(f"model has {len(layers)} attention layers but {len(kv_caches)} caches were given")
    for layer, (k_cache, v_cache) in zip(layers, kv_caches):
        layer.k_cache, layer.v_cache, layer.backend = k_cache, v_cache, backend


def allocate_kv_caches(model: nn.Module, num_blocks: int, block_size: int, dtype: torch.dtype,
                       device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One K and one V tensor per layer, `[num_blocks, block_size, num_kv_heads, head_dim]`."""
    caches = []
    for layer in paged_attention_layers(model):
        shape = (num_blocks, block_size, layer.num_kv_heads, layer.head_dim)
        caches.append((torch.zeros(shape, dtype=dtype, device=device),
                       torch.zeros(shape, dtype=dtype, device=device)))
    return caches


def kv_bytes_per_token(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of K plus V one token occupies across all layers."""
    element = torch.empty((), dtype=dtype).element_size()
    return sum(2 * layer.num_kv_heads * layer.head_dim * element for layer in paged_attention_layers(model))
