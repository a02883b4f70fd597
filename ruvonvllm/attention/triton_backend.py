"""The Triton attention backend: the three kernels of attention/kernels/ behind the interface.

forward() is host-side glue only: validate shapes, store the new K/V (kernel
a; skipped when the model's rotary kernel has stored them), then run decode
attention (kernel b) when every sequence has exactly one new token, or the
ragged prefill kernel (c) otherwise. Grid sizes come from the
metadata's host-side fields (max_query_len, max_seq_len), so a forward never
waits on the device.

Supported: float32, float16 and bfloat16 activations (fp32 accumulation),
head_dim a power of two from 16 to 256, any GQA ratio, any block size (the
kernels address the cache token by token, so block sizes need not be powers
of two).

Split-K decode needs scratch space for partial results. One backend instance
serves every layer, and layers run one after another on one stream, so a
single workspace is shared and only grows. A runner that captures CUDA graphs
reserves it first for every shape it will capture (reserve_decode_workspace)
and keeps the returned tensors alive as long as its graphs: a later, larger
eager step may replace the backend's workspace, never the graphs' one.
"""

from __future__ import annotations

import torch

from ruvonvllm.attention.base import AttentionBackend, AttentionMetadata
from ruvonvllm.attention.kernels import (choose_num_splits, paged_decode_attention,
                                         paged_prefill_attention, store_kv_cache)
from ruvonvllm.attention.kernels.common import interpreting

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)


class TritonAttentionBackend(AttentionBackend):
    name = "triton"

    def __init__(self) -> None:
        self._partial_out: torch.Tensor | None = None   # flat fp32 split-K workspace
        self._partial_lse: torch.Tensor | None = None
        self._num_sms: dict[torch.device, int] = {}

    def forward(self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        self._check_inputs(query, key, value, k_cache, v_cache)
        if key is not None:
            store_kv_cache(key, value, k_cache, v_cache, meta.slot_mapping)

        out = torch.empty(query.shape, dtype=query.dtype, device=query.device)  # contiguous
        num_tokens = query.shape[0]
        if num_tokens == 0:
            return out
        if meta.max_query_len == 1 and num_tokens == meta.num_seqs:
            self._decode(query, k_cache, v_cache, meta, scale, out)
        else:
            paged_prefill_attention(query, k_cache, v_cache, meta.block_tables, meta.query_start_loc,
                                    meta.seq_lens, meta.max_query_len, scale, out)
        return out

    def _decode(self, query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, out: torch.Tensor) -> None:
        num_seqs, num_heads, head_dim = query.shape
        num_splits = choose_num_splits(num_seqs, k_cache.shape[2], meta.max_seq_len,
                                       self._sm_count(query.device))
        workspace = None
        if num_splits > 1:
            workspace = self._workspace(num_seqs * num_heads * num_splits, head_dim, query.device)
        paged_decode_attention(query, k_cache, v_cache, meta.block_tables, meta.seq_lens,
                               meta.max_seq_len, scale, out, num_splits, workspace)

    def reserve_decode_workspace(self, batch_sizes: list[int], num_heads: int, num_kv_heads: int,
                                 head_dim: int, max_seq_len: int,
                                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Grow the split-K workspace to what decode needs at any of these batch sizes with
        metadata whose max_seq_len is `max_seq_len`; returns it (None when no split is used)."""
        num_sms = self._sm_count(device)
        num_rows = 0
        for batch_size in batch_sizes:
            num_splits = choose_num_splits(batch_size, num_kv_heads, max_seq_len, num_sms)
            if num_splits > 1:
                num_rows = max(num_rows, batch_size * num_heads * num_splits)
        return self._workspace(num_rows, head_dim, device) if num_rows else None

    def _workspace(self, num_rows: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat fp32 buffers for num_rows partial outputs and their lse, reused while big enough."""
        if (self._partial_lse is None or self._partial_lse.device != device
                or self._partial_lse.numel() < num_rows or self._partial_out.numel() < num_rows * head_dim):
            self._partial_out = torch.empty(num_rows * head_dim, dtype=torch.float32, device=device)
            self._partial_lse = torch.empty(num_rows, dtype=torch.float32, device=device)
        return self._partial_out, self._partial_lse

    def _sm_count(self, device: torch.device) -> int:
        if device.type != "cuda":
            return 1  # the interpreter: split-K only pays off with many SMs to fill
        if device not in self._num_sms:
            self._num_sms[device] = torch.cuda.get_device_properties(device).multi_processor_count
        return self._num_sms[device]

    @staticmethod
    def _check_inputs(query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                      k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
        num_heads, head_dim = query.shape[1], query.shape[2]
        num_kv_heads = k_cache.shape[2]
        if head_dim not in SUPPORTED_HEAD_DIMS:
            raise ValueError(f"Triton attention supports head_dim in {SUPPORTED_HEAD_DIMS} "
                             f"(powers of two, for tl.arange), got {head_dim}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if key is not None and (key.shape[1:] != (num_kv_heads, head_dim) or value.shape != key.shape):
            raise ValueError(f"key/value {tuple(key.shape)} do not match the cache's "
                             f"{num_kv_heads} kv heads x {head_dim}")
        if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
            raise ValueError("k_cache and v_cache must have the same shape and layout")
        if k_cache.shape[3] != head_dim:
            raise ValueError(f"cache head_dim {k_cache.shape[3]} != query head_dim {head_dim}")
        if any(t is not None and t.stride(-1) != 1 for t in (query, key, value, k_cache)):
            raise ValueError("Triton attention needs a contiguous last (head_dim) axis")
        if query.device.type != "cuda" and not interpreting():
            raise ValueError(f"Triton attention runs on CUDA tensors (or under TRITON_INTERPRET=1), "
                             f"got {query.device}")

